"""Jobs of the inbox. They take ids, are registered by name, and are safe to run twice: sends go through the
send-once ledger under the message's own key, transitions re-check the state under the row lock.

Every message to a customer (a rep's reply, a service notice, a WeCom task, the bot's answer, a notice of
what happens next) is a thread line in `sending` before WeChat is asked, and ends as its ledger row ends:
`sent`, `failed` (the reason in words) or `unknown` (WeChat may have delivered it: never sent again
automatically; the rep may send it again). Only what WeChat certainly did not take is retried; after the
last try it fails. The sweep looks after lines still `sending` whose job was lost or died."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from arq.worker import Retry

from siyu.core import clock, db, effects
from siyu.core.errors import WeChatError
from siyu.inbox import actions, handoff, routing
from siyu.inbox import conversations as convs
from siyu.inbox.config import get_settings
from siyu.timeline import services as timeline
from siyu.wechat import outbound, owner_tasks
from siyu.wechat.holds import tenant_suspended, while_suspended  # a suspended tenant's sends wait
from siyu.wechat.outbound import (
    Delivery,
    deliver_image,
    deliver_owner_task,
    deliver_subscribe,
    deliver_template,
    deliver_text,
    runtime_of,
)
from siyu.wechat.services import count_hit, keyword_rule

log = logging.getLogger("siyu.inbox.jobs")

NOTICE_MIN_ROOM = 3  # tell the customer only when the window keeps this many replies for the rep
SEND_TRIES = 5  # inbox.send_message, inbox.send_owner_task, inbox.send_template_notice
BOT_TRIES = 3  # inbox.bot_reply, inbox.notify_customer
MAX_DEFER = 120  # seconds; WeChat asking for longer (45009: tomorrow) fails the message with the reason
SWEEP_SENDING_AFTER = 120  # a line still sending this long: its job is looked after
SWEEP_GIVE_UP_AFTER = 1800  # a line never sent this long after it was written fails (nothing went out)


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


@dataclass(frozen=True)
class _Send:
    """One thread line's send: the ledger key and recipient (to give up on it), how to send it, and what
    the timeline records once it is sent."""

    tenant_id: int
    message_id: int
    conversation_id: int
    channel: str
    external_id: str
    key: str
    kind: str  # the ledger's: custom | kf | template | subscribe | wecom_task
    deliver: Callable[[], Awaitable[Delivery]]
    timeline_event: tuple[str, int, dict[str, Any]] | None = None  # channel, identity, payload
    timeline_key: str = ""


async def _send(ctx: dict[str, Any], job: _Send, tries: int,
                on_sent: Callable[[], Awaitable[None]] | None = None) -> str:
    """Send once through the ledger and settle the line. WeChat certainly did not take it: tried again
    later while tries remain (not before WeChat's own `retry_after`), else it fails for good."""
    delivery = await job.deliver()
    if delivery.state == "retry":
        job_try = int(ctx.get("job_try", tries))
        if job_try < tries and delivery.retry_after <= MAX_DEFER:
            log.info("send %s not taken (%s %s); try %s of %s", job.key, delivery.reason, delivery.errcode,
                     job_try, tries)
            raise Retry(defer=max(min(60, 2 ** job_try), delivery.retry_after))
        given_up = await outbound.give_up(job.tenant_id, job.channel, job.external_id, job.key, job.kind,
                                          f"gave up after {job_try} tries")
        # The line shows the last reason WeChat gave (busy, rate limited, unreachable) when there is one.
        delivery = given_up if given_up.state != "failed" else Delivery(
            given_up.outbound_id, "failed", delivery.errcode, delivery.reason or "gave_up")
    if delivery.state == "pending":  # another run is sending it right now; that run settles it
        return "pending"
    return await _settle(job, delivery, on_sent)


def _error_of(delivery: Delivery) -> str:
    """What the line keeps of why it was not sent: WeChat's errcode when it answered one, else Siyu's reason
    (both have their words in `siyu.wechat.errors`)."""
    if delivery.state == "sent":
        return ""
    if delivery.errcode is not None:
        return str(delivery.errcode)
    return delivery.reason or ("outcome_unknown" if delivery.state == "unknown" else "unknown")


async def _settle(job: _Send, delivery: Delivery, on_sent: Callable[[], Awaitable[None]] | None = None) -> str:
    """The line takes its send's final state (sent, failed with the reason, unknown), with the timeline
    event when sent, and the thread updates live. Once: a line already settled is left alone."""
    status = delivery.state if delivery.state in outbound.FINAL else "failed"
    async with db.transaction():
        done = await db.fetchrow(
            "UPDATE inbox_message SET status = $3::varchar, error = $4, outbound_id = $5, "
            "sent_at = CASE WHEN $3::varchar = 'sent' THEN now() END WHERE tenant = $1 AND id = $2 "
            "AND status = 'sending' RETURNING created_at", job.tenant_id, job.message_id, status,
            _error_of(delivery), delivery.outbound_id or None)
        if done is None:
            return "settled before"
        if status == "sent":
            if job.timeline_event is not None:
                channel, identity_id, payload = job.timeline_event
                await timeline.append(job.tenant_id, None, "message_out", channel, done["created_at"],
                                      {**payload, "conversation": job.conversation_id},
                                      job.timeline_key or f"inbox:msg:{job.message_id}", identity_id=identity_id)
            if on_sent is not None:
                await on_sent()
        conv = await convs.fetch_row(job.tenant_id, job.conversation_id)
        await convs.announce(conv, f"{status}:{job.message_id}")
    return status


@while_suspended("inbox.send_message")
async def send_message(ctx: dict[str, Any], tenant_id: int, message_id: int) -> str:
    """Send a rep's reply once (the ledger key is the message's), then mark it sent, failed or unknown, live."""
    row = await db.fetchrow(
        "SELECT m.id, m.body, m.status, m.msg_type, m.media_ref, c.id AS conversation, c.channel, c.open_kfid, "
        "c.identity, i.external_id FROM inbox_message m JOIN inbox_conversation c ON c.tenant = m.tenant "
        "AND c.id = m.conversation JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity "
        "WHERE m.tenant = $1 AND m.id = $2", tenant_id, message_id)
    if row is None or row["status"] != "sending":
        return "nothing to send"
    key = f"inbox:msg:{message_id}"
    if row["msg_type"] == "image" and row["media_ref"] is not None:  # a rep's picture
        return await _send(ctx, _Send(
            tenant_id, message_id, row["conversation"], row["channel"], row["external_id"], key,
            "kf" if row["channel"] == "wecom" else "custom",
            lambda: deliver_image(runtime_of(ctx), tenant_id, row["channel"], row["external_id"], row["media_ref"],
                                  key, open_kfid=row["open_kfid"]),
            (row["channel"], row["identity"], {"msg_type": "image", "media": row["media_ref"]})), SEND_TRIES)
    return await _send(ctx, _Send(
        tenant_id, message_id, row["conversation"], row["channel"], row["external_id"], key,
        "kf" if row["channel"] == "wecom" else "custom",
        lambda: deliver_text(runtime_of(ctx), tenant_id, row["channel"], row["external_id"], row["body"], key,
                             open_kfid=row["open_kfid"]),
        (row["channel"], row["identity"], {"msg_type": "text", "Content": row["body"]})), SEND_TRIES)


@while_suspended("inbox.send_owner_task")
async def send_owner_task(ctx: dict[str, Any], tenant_id: int, message_id: int, owner_id: int | None = None) -> str:
    """Create the WeCom 1:1 task for a rep's message (`actions.do_send_via_owner`) once, then mark the
    message sent (the task exists; the member confirms it in WeCom), failed with the reason, or unknown,
    live. The owner is the message's own (`via_owner`); `owner_id` is for jobs queued before it was kept."""
    row = await db.fetchrow(
        "SELECT m.body, m.status, m.created_at, m.conversation, o.staff_userid, i.external_id, "
        "i.id AS owner_identity FROM inbox_message m "
        "LEFT JOIN owner o ON o.tenant = m.tenant AND o.id = COALESCE(m.via_owner, $3) "
        "LEFT JOIN identity i ON i.tenant = o.tenant AND i.id = o.identity "
        "WHERE m.tenant = $1 AND m.id = $2 AND m.msg_type = 'wecom_task'", tenant_id, message_id, owner_id)
    if row is None or row["status"] != "sending":
        return "nothing to send"
    key = f"inbox:task:{message_id}"
    if row["staff_userid"] is None:  # the owner row is gone: nobody to send it through
        job = _Send(tenant_id, message_id, row["conversation"], "wecom", "", key, "wecom_task",
                    lambda: outbound.give_up(tenant_id, "wecom", "", key, "wecom_task", "the WeCom owner is gone"))
        given_up = await job.deliver()
        return await _settle(job, given_up if given_up.state != "failed" else Delivery(
            given_up.outbound_id, "failed", None, actions.NOT_THEIR_CONTACT))
    async def waiting() -> None:  # the task exists: now it waits for the rep to confirm it in WeCom
        await db.execute("UPDATE inbox_message SET delivery = 'waiting' WHERE tenant = $1 AND id = $2 "
                         "AND delivery = ''", tenant_id, message_id)

    return await _send(ctx, _Send(
        tenant_id, message_id, row["conversation"], "wecom", row["external_id"], key, "wecom_task",
        lambda: deliver_owner_task(runtime_of(ctx), tenant_id, row["staff_userid"], row["external_id"],
                                   row["body"], key),
        ("wecom", row["owner_identity"], {"msg_type": "text", "Content": row["body"], "via": "wecom_task",
                                          "user_id": row["staff_userid"]})), SEND_TRIES, waiting)


async def media_ready(ctx: dict[str, Any], tenant_id: int, media_row_id: int, source_event: int | None = None) -> int:
    """A picture, voice or video arrived in (or failed to reach) Siyu's store: the threads that show it refresh,
    live. Returns how many conversations were told."""
    rows = await db.fetch(
        "SELECT DISTINCT conversation FROM inbox_message WHERE tenant = $1 AND (media_ref = $2 "
        "OR ($3::bigint IS NOT NULL AND source_key = 'wechat:' || $3::bigint))", tenant_id, media_row_id, source_event)
    for r in rows:
        await convs.announce(await convs.fetch_row(tenant_id, int(r["conversation"])), f"media:{media_row_id}")
    return len(rows)


TASK_DELIVERY = {"waiting": "waiting", "sent": "delivered", "not_sent": "not_delivered"}


async def check_owner_task(ctx: dict[str, Any], tenant_id: int, message_id: int) -> str:
    """Ask WeChat what became of the WeCom task a message went out as (`owner_tasks.poll_owner_task`: waiting
    for the rep, sent, or not sent and why) and mirror it on the message, live when it changed. Safe to run
    twice; WeChat busy or unreachable: the sweep asks again when the next question is due."""
    row = await db.fetchrow("SELECT conversation, delivery FROM inbox_message WHERE tenant = $1 AND id = $2 "
                            "AND msg_type = 'wecom_task' AND status = 'sent'", tenant_id, message_id)
    if row is None or row["delivery"] in ("delivered", "not_delivered"):
        return "nothing to ask"
    try:
        result = await owner_tasks.poll_owner_task(runtime_of(ctx), tenant_id, f"inbox:task:{message_id}")
    except WeChatError as exc:
        log.info("task of message %s: %r; asked again when due", message_id, exc)
        return "asked later"
    if result is None:
        return "no task"
    delivery = TASK_DELIVERY[result.status]
    async with db.transaction():
        changed = await db.fetchrow(
            "UPDATE inbox_message SET delivery = $3::varchar, error = CASE WHEN $3::varchar = 'not_delivered' "
            "THEN $4 ELSE error END WHERE tenant = $1 AND id = $2 AND delivery IS DISTINCT FROM $3::varchar "
            "AND delivery NOT IN ('delivered', 'not_delivered') RETURNING id", tenant_id, message_id, delivery,
            result.reason)
        if changed is not None:
            await convs.announce(await convs.fetch_row(tenant_id, int(row["conversation"])), f"task:{message_id}")
    return delivery


async def sweep_owner_tasks() -> int:
    """The inbox's WeCom tasks whose next question is due (`owner_tasks.due`): one check job each."""
    due = await owner_tasks.due("inbox:task:")
    for task in due:
        message_id = int(task.key.rsplit(":", 1)[1])
        await effects.enqueue("inbox.check_owner_task", task.tenant_id, message_id,
                              job_id=f"inbox.task-check:{message_id}:{task.checks}")
    return len(due)


@while_suspended("inbox.send_template_notice")
async def send_template_notice(ctx: dict[str, Any], tenant_id: int, message_id: int) -> str:
    """Send a rep's service notice (`actions.do_send_template_notice`) once, as the tenant's template for
    the channel (an OA template message, or an MP subscription message using one of the customer's
    consents); then mark the message sent, failed with the reason, or unknown, live."""
    row = await db.fetchrow(
        "SELECT m.body, m.status, m.msg_type, m.created_at, m.conversation, c.identity, c.channel, i.external_id, "
        "t.timezone FROM inbox_message m JOIN tenant t ON t.id = m.tenant "
        "JOIN inbox_conversation c ON c.tenant = m.tenant AND c.id = m.conversation "
        "JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity "
        "WHERE m.tenant = $1 AND m.id = $2 AND m.msg_type IN ('template', 'subscribe')", tenant_id, message_id)
    if row is None or row["status"] != "sending":
        return "nothing to send"
    key = f"inbox:template:{message_id}"
    notice = (await get_settings(tenant_id)).notice_for(row["channel"])
    if notice is None or notice.kind != row["msg_type"]:  # the admin removed the template meanwhile
        job = _Send(tenant_id, message_id, row["conversation"], row["channel"], row["external_id"], key,
                    row["msg_type"], lambda: outbound.give_up(tenant_id, row["channel"], row["external_id"], key,
                                                              row["msg_type"], "the notice template was removed"))
        given_up = await job.deliver()
        return await _settle(job, given_up if given_up.state != "failed" else Delivery(
            given_up.outbound_id, "failed", None, "no_template"))
    data = {notice.text_key: row["body"]}
    if notice.time_key:
        data[notice.time_key] = f"{row['created_at'].astimezone(ZoneInfo(row['timezone'])):%Y-%m-%d %H:%M}"

    def deliver() -> Awaitable[Delivery]:
        if notice.kind == "subscribe":
            return deliver_subscribe(runtime_of(ctx), tenant_id, row["channel"], row["external_id"],
                                     notice.template_id, data, key)
        return deliver_template(runtime_of(ctx), tenant_id, row["external_id"], notice.template_id, data, key)

    return await _send(ctx, _Send(
        tenant_id, message_id, row["conversation"], row["channel"], row["external_id"], key, notice.kind, deliver,
        (row["channel"], row["identity"], {"msg_type": notice.kind, "Content": row["body"],
                                           "template_id": notice.template_id})), SEND_TRIES)


@while_suspended("inbox.bot_reply")
async def bot_reply(ctx: dict[str, Any], tenant_id: int, message_id: int) -> str:
    """The bot answers a customer's message on the Mini Program or WeCom 微信客服 with its keyword rule's
    reply (a customer-service message: those channels have no passive replies). Once: the ledger key is
    the customer message's; nothing is sent when a person has taken the conversation before the bot's
    line was written."""
    row = await db.fetchrow(
        "SELECT m.body, m.direction, c.id AS conversation, c.status, c.channel, c.open_kfid, "
        "c.identity, i.external_id FROM inbox_message m JOIN inbox_conversation c ON c.tenant = m.tenant "
        "AND c.id = m.conversation JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity "
        "WHERE m.tenant = $1 AND m.id = $2", tenant_id, message_id)
    if row is None or row["direction"] != "in":
        return "nothing to answer"
    line = await _line(tenant_id, f"bot:{message_id}")
    rule: dict[str, Any] | None = None
    if line is None:
        if row["status"] != "bot":
            return "a person has it"
        rule = await keyword_rule(tenant_id, row["body"])
        if rule is None:
            return "no rule"
        line = await _bot_line(tenant_id, row["conversation"], str(rule["reply"]), f"bot:{message_id}")
    if line["status"] != "sending":
        return "recorded before"
    reply = str(line["body"])
    key = f"inbox:bot:{message_id}"

    async def sent() -> None:
        await db.execute("UPDATE inbox_conversation SET last_message_at = GREATEST(last_message_at, now()), "
                         "updated_at = now() WHERE tenant = $1 AND id = $2", tenant_id, row["conversation"])
        hit = rule or await keyword_rule(tenant_id, row["body"])  # a re-run: the rule that answers it now
        if hit is not None:
            await count_hit(tenant_id, int(hit["id"]))

    return await _send(ctx, _Send(
        tenant_id, int(line["id"]), row["conversation"], row["channel"], row["external_id"], key,
        "kf" if row["channel"] == "wecom" else "custom",
        lambda: deliver_text(runtime_of(ctx), tenant_id, row["channel"], row["external_id"], reply, key,
                             open_kfid=row["open_kfid"]),
        (row["channel"], row["identity"], {"msg_type": "text", "Content": reply, "by": "bot"}), key),
        BOT_TRIES, sent)


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
    line = await _line(tenant_id, f"notice:{conversation_id}:{ref}")
    conv = await convs.get_conversation(tenant_id, None, conversation_id)
    if line is None:
        settings = await get_settings(tenant_id)
        if not settings.notify_customer:
            return "off"
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
            text = NOTICES["assigned"][lang].format(
                name=conv["assignee_name"] or conv["assignee_email"].split("@")[0])
        line = await _bot_line(tenant_id, conversation_id, text, f"notice:{conversation_id}:{ref}")
    if line["status"] != "sending":
        return "recorded before"
    text, key = str(line["body"]), f"inbox:notice:{conversation_id}:{ref}"
    return await _send(ctx, _Send(
        tenant_id, int(line["id"]), conversation_id, conv["channel"], conv["external_id"], key,
        "kf" if conv["channel"] == "wecom" else "custom",
        lambda: deliver_text(runtime_of(ctx), tenant_id, conv["channel"], conv["external_id"], text, key,
                             open_kfid=conv["open_kfid"])), BOT_TRIES)


async def _line(tenant_id: int, source_key: str) -> dict[str, Any] | None:
    row = await db.fetchrow("SELECT id, status, body FROM inbox_message WHERE tenant = $1 AND source_key = $2",
                            tenant_id, source_key)
    return dict(row) if row else None


async def _bot_line(tenant_id: int, conversation_id: int, text: str, source_key: str) -> dict[str, Any]:
    """What the bot is sending, in the thread before WeChat is asked (`sending`), once per key: a re-run
    finds the line and settles it, whatever happened to it."""
    await db.execute(
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, "
        "source_key, created_at) VALUES ($1, $2, 'out', 'bot', 'text', $3, 'sending', $4, now()) "
        "ON CONFLICT (tenant, source_key) DO NOTHING", tenant_id, conversation_id, text, source_key)
    line = await _line(tenant_id, source_key)
    assert line is not None
    return line


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
        # The rep who let it pass comes after every rep who did not (routing orders by SLA misses since it
        # was queued), and gets it again only when all eligible reps have missed it. The
        # requeue's timeline event locked the identity's contact (see `handoff.handoff_locked`).
        moved = await routing.assign_next(queued, contact_id, actor_label="sla", contact_locked=True)
    return "reassigned" if moved else "requeued"


async def drain(ctx: dict[str, Any], tenant_id: int) -> int:
    """Route the tenant's waiting conversations while reps have room."""
    return await routing.drain(tenant_id)


def _send_of(m: dict[str, Any]) -> tuple[str, str, str, tuple[Any, ...]]:
    """A thread line's ledger key and kind, and the job (with its arguments) that sends and settles it."""
    tenant, source, text_kind = m["tenant"], str(m["source_key"]), "kf" if m["channel"] == "wecom" else "custom"
    if source.startswith("bot:"):
        customer_message = int(source.split(":", 1)[1])
        return f"inbox:{source}", text_kind, "inbox.bot_reply", (tenant, customer_message)
    if source.startswith("notice:"):
        _, conversation, ref = source.split(":", 2)
        return f"inbox:{source}", text_kind, "inbox.notify_customer", (tenant, int(conversation), ref)
    if m["msg_type"] == "wecom_task":
        return f"inbox:task:{m['id']}", "wecom_task", "inbox.send_owner_task", (tenant, m["id"])
    if m["msg_type"] in ("template", "subscribe"):
        return f"inbox:template:{m['id']}", m["msg_type"], "inbox.send_template_notice", (tenant, m["id"])
    return f"inbox:msg:{m['id']}", text_kind, "inbox.send_message", (tenant, m["id"])


async def sweep_sends() -> dict[str, int]:
    """Lines still `sending` well after they were written: their job was lost (Redis) or died. Stale ledger
    rows are settled first (asked WeChat → unknown; never asked → free again). A line whose send is final
    gets its job again, which settles it; one never sent is sent by that job, or, past the deadline, fails
    for good first (nothing went out). A send a run holds right now is left to it."""
    await outbound.settle_stale()
    rows = await db.fetch(
        "SELECT m.tenant, m.id, m.msg_type, m.source_key, c.channel, i.external_id, "
        "m.created_at < now() - make_interval(secs => $2) AS overdue FROM inbox_message m "
        "JOIN inbox_conversation c ON c.tenant = m.tenant AND c.id = m.conversation "
        "JOIN identity i ON i.tenant = c.tenant AND i.id = c.identity "
        "WHERE m.status = 'sending' AND m.created_at < now() - make_interval(secs => $1) "
        "ORDER BY m.created_at LIMIT 500", SWEEP_SENDING_AFTER, SWEEP_GIVE_UP_AFTER)
    by_tenant: dict[int, list[dict[str, Any]]] = {}
    for r in rows:
        by_tenant.setdefault(int(r["tenant"]), []).append(dict(r))
    minute = int(clock.now().timestamp()) // 60
    queued = failed = 0
    for tenant_id, lines in by_tenant.items():
        if await tenant_suspended(tenant_id):  # its sends are held, not lost: reactivation sends them
            continue
        sends = {id(m): _send_of(m) for m in lines}
        ledger = await outbound.ledger_rows(tenant_id, [key for key, *_ in sends.values()])
        for m in lines:
            key, kind, job, args = sends[id(m)]
            held = ledger.get(key)
            if held is not None and held.state in ("queued", "sending"):
                continue
            if m["overdue"] and (held is None or held.state == "retry"):
                external_id = "" if kind == "wecom_task" else m["external_id"]
                channel = "wecom" if kind == "wecom_task" else m["channel"]
                await outbound.give_up(tenant_id, channel, external_id, key, kind,
                                       f"not sent within {SWEEP_GIVE_UP_AFTER // 60} minutes of being written")
                failed += 1
            await effects.enqueue(job, *args, job_id=f"inbox.sweep-send:{m['id']}:{minute}")
            queued += 1
    if queued:
        log.warning("%s messages were still sending; their jobs run again (%s given up)", queued, failed)
    return {"sends": queued, "sends_given_up": failed}


async def sweep(ctx: dict[str, Any]) -> dict[str, int]:
    """Twice a minute: wake snoozed conversations that are due, send assignments past their SLA without a
    first reply to `sla_check`, drain every queue that has waiting conversations (a lost drain job must
    not strand anyone), look after messages still sending (`sweep_sends`), and ask about the WeCom tasks whose
    next question is due (`sweep_owner_tasks`)."""
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
    return {"woke": woke, "sla": len(late), "assigned": drained, **await sweep_sends(),
            "task_checks": await sweep_owner_tasks()}
