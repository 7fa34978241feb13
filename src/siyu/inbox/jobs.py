"""Jobs of the inbox. They take ids, are registered by name, and are safe to run twice: sends go through the
send-once ledger under the message's own key, transitions re-check the state under the row lock."""

from __future__ import annotations

import logging
from typing import Any
from zoneinfo import ZoneInfo

from arq.worker import Retry

from siyu.core import clock, db, effects
from siyu.inbox import actions, handoff, routing
from siyu.inbox import conversations as convs
from siyu.inbox.config import get_settings
from siyu.timeline import services as timeline
from siyu.wechat.holds import while_suspended  # a suspended tenant's sends wait for reactivation
from siyu.wechat.outbound import (
    Delivery,
    deliver_owner_task,
    deliver_subscribe,
    deliver_template,
    deliver_text,
    runtime_of,
)
from siyu.wechat.services import count_hit, keyword_rule

log = logging.getLogger("siyu.inbox.jobs")

NOTICE_MIN_ROOM = 3  # tell the customer only when the window keeps this many replies for the rep



def _retry(ctx: dict[str, Any], what: str, exc: Exception) -> Retry:
    tries = int(ctx.get("job_try", 1))
    log.warning("%s failed (try %s): %r", what, tries, exc)
    return Retry(defer=min(60, 2 ** tries))


async def handle_inbound(ctx: dict[str, Any], event_ids: list[int]) -> int:
    """Stored callbacks whose identities contacts has resolved → conversations (see `handoff`)."""
    try:
        return await handoff.handle_inbound(event_ids)
    except Exception as exc:
        if "job_try" not in ctx:
            raise
        raise _retry(ctx, f"inbox events {event_ids[:5]}", exc) from exc


@while_suspended("inbox.send_message")
async def send_message(ctx: dict[str, Any], tenant_id: int, message_id: int) -> str:
    """Send a rep's reply once (the ledger key is the message's), then mark it sent or failed, live."""
    row = await db.fetchrow(
        "SELECT m.id, m.body, m.status, c.id AS conversation, c.channel, c.open_kfid, c.identity, "
        "i.external_id FROM inbox_message m JOIN inbox_conversation c ON c.tenant = m.tenant AND c.id = m.conversation "
        "JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity WHERE m.tenant = $1 AND m.id = $2",
        tenant_id, message_id)
    if row is None or row["status"] != "sending":
        return "nothing to send"
    delivery = await deliver_text(runtime_of(ctx), tenant_id, row["channel"], row["external_id"], row["body"],
                                  f"inbox:msg:{message_id}", open_kfid=row["open_kfid"])
    return await _settle(ctx, tenant_id, message_id, row["conversation"], delivery,
                         timeline_event=(row["channel"], row["identity"], {"msg_type": "text", "Content": row["body"]}))


@while_suspended("inbox.send_owner_task")
async def send_owner_task(ctx: dict[str, Any], tenant_id: int, message_id: int, owner_id: int) -> str:
    """Create the WeCom 1:1 task for a rep's message (`actions.do_send_via_owner`) once, then mark the
    message sent (the task exists; the member confirms it in WeCom) or failed with the reason, live."""
    row = await db.fetchrow(
        "SELECT m.body, m.status, m.created_at, m.conversation, o.staff_userid, i.external_id, "
        "i.id AS owner_identity FROM inbox_message m "
        "JOIN owner o ON o.tenant = m.tenant AND o.id = $3 JOIN identity i ON i.tenant = o.tenant AND i.id = o.identity "
        "WHERE m.tenant = $1 AND m.id = $2 AND m.msg_type = 'wecom_task'", tenant_id, message_id, owner_id)
    if row is None or row["status"] != "sending":
        return "nothing to send"
    delivery = await deliver_owner_task(runtime_of(ctx), tenant_id, row["staff_userid"], row["external_id"],
                                        row["body"], f"inbox:task:{message_id}")
    return await _settle(ctx, tenant_id, message_id, row["conversation"], delivery, timeline_event=(
        "wecom", row["owner_identity"], {"msg_type": "text", "Content": row["body"], "via": "wecom_task",
                                         "user_id": row["staff_userid"]}))


@while_suspended("inbox.send_template_notice")
async def send_template_notice(ctx: dict[str, Any], tenant_id: int, message_id: int) -> str:
    """Send a rep's service notice (`actions.do_send_template_notice`) once, as the tenant's template for
    the channel (an OA template message, or an MP subscription message using one of the customer's
    consents); then mark the message sent or failed with the reason, live."""
    row = await db.fetchrow(
        "SELECT m.body, m.status, m.msg_type, m.created_at, m.conversation, c.identity, c.channel, i.external_id, "
        "t.timezone FROM inbox_message m JOIN tenant t ON t.id = m.tenant "
        "JOIN inbox_conversation c ON c.tenant = m.tenant AND c.id = m.conversation "
        "JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity "
        "WHERE m.tenant = $1 AND m.id = $2 AND m.msg_type IN ('template', 'subscribe')", tenant_id, message_id)
    if row is None or row["status"] != "sending":
        return "nothing to send"
    notice = (await get_settings(tenant_id)).notice_for(row["channel"])
    if notice is None or notice.kind != row["msg_type"]:  # the admin removed the template meanwhile
        delivery = Delivery(0, "refused", None, "no_template")
        return await _settle(ctx, tenant_id, message_id, row["conversation"], delivery, ("", 0, {}))
    data = {notice.text_key: row["body"]}
    if notice.time_key:
        data[notice.time_key] = f"{row['created_at'].astimezone(ZoneInfo(row['timezone'])):%Y-%m-%d %H:%M}"
    key = f"inbox:template:{message_id}"
    if notice.kind == "subscribe":
        delivery = await deliver_subscribe(runtime_of(ctx), tenant_id, row["channel"], row["external_id"],
                                           notice.template_id, data, key)
    else:
        delivery = await deliver_template(runtime_of(ctx), tenant_id, row["external_id"], notice.template_id, data,
                                          key)
    return await _settle(ctx, tenant_id, message_id, row["conversation"], delivery, timeline_event=(
        row["channel"], row["identity"], {"msg_type": notice.kind, "Content": row["body"],
                                          "template_id": notice.template_id}))


async def _settle(ctx: dict[str, Any], tenant_id: int, message_id: int, conversation_id: int, delivery: Delivery,
                  timeline_event: tuple[str, int, dict[str, Any]]) -> str:
    """A rep's message after its one send: retried later when WeChat was busy, else marked sent (with its
    timeline event) or failed with the reason, and the thread updated live."""
    if delivery.state == "retryable" and int(ctx.get("job_try", 5)) < 5:
        raise Retry(defer=min(60, 2 ** int(ctx.get("job_try", 1))))
    if delivery.state == "pending":  # another run is sending it right now; that run settles it
        return "pending"
    sent = delivery.state == "sent"
    error = "" if sent else (delivery.reason if delivery.reason in actions.TASK_FAILURES
                             else str(delivery.errcode if delivery.errcode is not None else "unknown"))
    async with db.transaction():
        done = await db.fetchrow(
            "UPDATE inbox_message SET status = $3::varchar, error = $4, outbound_id = $5, "
            "sent_at = CASE WHEN $3::varchar = 'sent' THEN now() END WHERE tenant = $1 AND id = $2 AND status = 'sending' "
            "RETURNING created_at", tenant_id, message_id, "sent" if sent else "failed", error,
            delivery.outbound_id or None)
        if done is None:
            return "settled before"
        if sent:
            channel, identity_id, payload = timeline_event
            await timeline.append(tenant_id, None, "message_out", channel, done["created_at"],
                                  {**payload, "conversation": conversation_id}, f"inbox:msg:{message_id}",
                                  identity_id=identity_id)
        conv = await convs.fetch_row(tenant_id, conversation_id)
        await convs.announce(conv, f"sent:{message_id}" if sent else f"failed:{message_id}")
    return delivery.state


@while_suspended("inbox.bot_reply")
async def bot_reply(ctx: dict[str, Any], tenant_id: int, message_id: int) -> str:
    """The bot answers a customer's message on the Mini Program or WeCom 微信客服 with its keyword rule's
    reply (a customer-service message: those channels have no passive replies). Once: the ledger key is
    the customer message's; nothing is sent when a person has taken the conversation meanwhile."""
    row = await db.fetchrow(
        "SELECT m.body, m.direction, c.id AS conversation, c.status, c.channel, c.open_kfid, "
        "c.identity, i.external_id FROM inbox_message m JOIN inbox_conversation c ON c.tenant = m.tenant "
        "AND c.id = m.conversation JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity "
        "WHERE m.tenant = $1 AND m.id = $2", tenant_id, message_id)
    if row is None or row["direction"] != "in":
        return "nothing to answer"
    if row["status"] != "bot":
        return "a person has it"
    rule = await keyword_rule(tenant_id, row["body"])
    if rule is None:
        return "no rule"
    reply = str(rule["reply"])
    delivery = await deliver_text(runtime_of(ctx), tenant_id, row["channel"], row["external_id"], reply,
                                  f"inbox:bot:{message_id}", open_kfid=row["open_kfid"])
    if delivery.state == "retryable" and int(ctx.get("job_try", 3)) < 3:
        raise Retry(defer=min(60, 2 ** int(ctx.get("job_try", 1))))
    if delivery.state != "sent":
        log.info("the bot's answer to message %s was not sent: %s %s", message_id, delivery.state, delivery.reason)
        return delivery.state
    async with db.transaction():  # a re-run after a crash here records what was sent, once
        if not await _bot_line(tenant_id, row["conversation"], reply, f"bot:{message_id}", delivery.outbound_id):
            return "recorded before"
        await timeline.append(tenant_id, None, "message_out", row["channel"], clock.now(),
                              {"msg_type": "text", "Content": reply, "conversation": row["conversation"], "by": "bot"},
                              f"inbox:bot:{message_id}", identity_id=row["identity"])
        conv = await db.fetchrow(
            "UPDATE inbox_conversation SET last_message_at = GREATEST(last_message_at, now()), updated_at = now() "
            "WHERE tenant = $1 AND id = $2 RETURNING *", tenant_id, row["conversation"])
        await count_hit(tenant_id, int(rule["id"]))
        await convs.announce(dict(conv), "message")
    return "sent"


NOTICES = {
    "queued": {"zh_CN": "已为您转接人工客服，您前面还有 {n} 位，请稍候。",
               "en": "A person from our team will answer you shortly. {n} ahead of you in the queue."},
    "assigned": {"zh_CN": "您好，{name} 将为您服务。",
                 "en": "Hello, {name} from our team will help you now."},
}


@while_suspended("inbox.notify_customer")
async def notify_customer(ctx: dict[str, Any], tenant_id: int, conversation_id: int, ref: str) -> str:
    """Tell the customer what happens next (queue place or the rep's name), once per handoff or
    assignment, and only when the reply window keeps enough room for the rep's own replies."""
    settings = await get_settings(tenant_id)
    if not settings.notify_customer:
        return "off"
    conv = await convs.get_conversation(tenant_id, None, conversation_id)
    if conv["status"] not in ("queued", "assigned"):
        return "not waiting"
    window = await actions.window_for(tenant_id, conv)
    if not window.can_send or window.remaining < NOTICE_MIN_ROOM:
        return "no room"
    lang = "en" if (conv["language"] or "").startswith("en") else "zh_CN"
    if conv["status"] == "queued":
        ahead = await routing.queue_position(tenant_id, conv)
        text = NOTICES["queued"][lang].format(n=ahead)
    else:
        text = NOTICES["assigned"][lang].format(name=conv["assignee_name"] or conv["assignee_email"].split("@")[0])
    delivery = await deliver_text(runtime_of(ctx), tenant_id, conv["channel"], conv["external_id"], text,
                                  f"inbox:notice:{conversation_id}:{ref}", open_kfid=conv["open_kfid"])
    # Recorded whenever it went out (also by a re-run after a crash between the send and this line), once.
    if delivery.state == "sent" and await _bot_line(tenant_id, conversation_id, text,
                                                    f"notice:{conversation_id}:{ref}", delivery.outbound_id):
        await convs.announce(await convs.fetch_row(tenant_id, conversation_id), "message")
    return delivery.state


async def _bot_line(tenant_id: int, conversation_id: int, text: str, source_key: str, outbound_id: int) -> bool:
    """What the bot sent, in the thread; False when it was recorded before (the key is the send's)."""
    added = await db.fetchrow(
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, "
        "source_key, created_at, sent_at, outbound_id) VALUES ($1, $2, 'out', 'bot', 'text', $3, 'sent', $4, "
        "now(), now(), $5) ON CONFLICT (tenant, source_key) DO NOTHING RETURNING id",
        tenant_id, conversation_id, text, source_key, outbound_id)
    return added is not None


async def sla_check(ctx: dict[str, Any], tenant_id: int, assignment_id: int) -> str:
    """An assignment without a first reply after the SLA: back to the queue (keeping its place), and on to
    the next rep."""
    settings = await get_settings(tenant_id)
    async with db.transaction():
        a = await db.fetchrow("SELECT conversation, staff, assigned_at, first_response_at, ended_at "
                              "FROM inbox_assignment WHERE tenant = $1 AND id = $2", tenant_id, assignment_id)
        if a is None or a["ended_at"] is not None or a["first_response_at"] is not None:
            return "answered or ended"
        if (clock.now() - a["assigned_at"]).total_seconds() < settings.sla_minutes * 60 - 1:
            return "not due"
        conv = await convs.lock(tenant_id, a["conversation"])
        if conv["status"] != "assigned" or conv["assignee"] != a["staff"] or conv["first_response_at"] is not None:
            return "changed"
        contact_id = await convs.contact_of(tenant_id, conv["identity"])
        queued = await convs.transition(conv, "queued", reason="sla", actor_label="sla", end_reason="sla",
                                        keep_queue_time=True)
        # The rep who let it pass is not chosen again (routing skips SLA misses since it was queued). The
        # requeue's timeline event locked the identity's contact (see `handoff.handoff_locked`).
        moved = await routing.assign_next(queued, contact_id, actor_label="sla", contact_locked=True)
    return "reassigned" if moved else "requeued"


async def drain(ctx: dict[str, Any], tenant_id: int) -> int:
    """Route the tenant's waiting conversations while reps have room."""
    return await routing.drain(tenant_id)


async def sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Twice a minute: wake snoozed conversations that are due, send assignments past their SLA without a
    first reply to `sla_check`, and drain every queue that has waiting conversations (a lost drain job must
    not strand anyone)."""
    woke = 0
    for row in await db.fetch("SELECT tenant, id FROM inbox_conversation WHERE status = 'snoozed' "
                              "AND snoozed_until <= now() ORDER BY snoozed_until LIMIT 500"):
        async with db.transaction():
            conv = await convs.lock(row["tenant"], row["id"])
            if conv["status"] != "snoozed":
                continue
            await routing.hold_seats(conv["tenant"], conv["assignee"])
            await convs.transition(conv, "assigned", assignee=conv["assignee"], actor_label="snooze")
            woke += 1
    late = await db.fetch(
        "SELECT a.tenant, a.id FROM inbox_conversation c JOIN inbox_assignment a ON a.tenant = c.tenant "
        "AND a.conversation = c.id AND a.ended_at IS NULL LEFT JOIN inbox_settings s ON s.tenant = c.tenant "
        "WHERE c.status = 'assigned' AND c.first_response_at IS NULL "
        "AND c.assigned_at <= now() - make_interval(mins => COALESCE(s.sla_minutes, 5)) ORDER BY c.assigned_at LIMIT 500")
    minute = int(clock.now().timestamp()) // 60
    for row in late:
        await effects.enqueue("inbox.sla_check", row["tenant"], row["id"], job_id=f"inbox.sla:{row['id']}:{minute}")
    drained = 0
    for row in await db.fetch("SELECT DISTINCT tenant FROM inbox_conversation WHERE status = 'queued'"):
        drained += await routing.drain(int(row["tenant"]))
    return {"woke": woke, "sla": len(late), "assigned": drained}
