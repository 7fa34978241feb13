"""What reps and managers do in the inbox: reply, note, take, transfer, resolve, reopen, snooze, presence.

Each `do_*` runs in one transaction, scoped by the viewer (out of scope answers like missing), and leaves
its side effects (the send job, live updates) for after commit. A reply is recorded as `sending` and sent
by the `inbox.send_message` job through the send-once ledger, so a double click or a re-run job never
sends it twice; its status turns `sent`, `failed` (with the reason in words) or `unknown` (WeChat may have
delivered it) live. Only a person sends an `unknown` message again (`do_send_again`): a new message
under a new ledger key, audited.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from siyu.core import clock, db, effects
from siyu.core.errors import Conflict, Forbidden, InvalidInput, NotFound
from siyu.core.i18n import N_
from siyu.inbox import conversations as convs
from siyu.inbox import routing
from siyu.inbox.config import get_settings
from siyu.inbox.conversations import Viewer
from siyu.tenants.services import Actor, record_audit
from siyu.wechat import consents, errors, media, windows

REPLY_MAX = 2000  # WeChat takes 2048 bytes of text per customer-service message; Chinese is 3 bytes a character
PRESENCES = ("online", "away", "offline")

NOT_THEIR_CONTACT = "not_their_contact"  # stored as a failed WeCom task's error
OUTCOME_UNKNOWN = "outcome_unknown"


def failure(error: str) -> errors.Words:
    """A message's stored error (WeChat's errcode or one of Siyu's reasons) in the reader's language: what
    happened, what to do, and whether trying again can help (`siyu.wechat.errors`, the one table)."""
    return errors.describe_stored(error)


def retry_helps(message: dict[str, Any]) -> bool:
    """A failed message that trying again can deliver (WeChat busy, a limit, the network): the thread offers
    "Try again". Not one WeChat refused for good (the window, the customer's choice)."""
    return message["status"] == "failed" and message["direction"] == "out" and errors.of_stored(
        message["error"] or "").retry


async def drain_soon(tenant_id: int, why: str) -> None:
    """A rep has room now (went online, resolved, snoozed): route the waiting conversations after commit."""
    await effects.enqueue("inbox.drain", tenant_id, job_id=f"inbox.drain:{tenant_id}:{why}:{clock.now().timestamp()}")


async def _mine_to_act_on(tenant_id: int, viewer: Viewer, conversation_id: int) -> dict[str, Any]:
    await convs.get_conversation(tenant_id, viewer, conversation_id)  # NotFound when out of scope
    return await convs.lock(tenant_id, conversation_id)


def _require_holder(conv: dict[str, Any], viewer: Viewer) -> None:
    if conv["assignee"] != viewer.staff_id and not viewer.is_manager:
        raise Forbidden(N_("Only the rep who has this conversation (or a manager) can do that."))


async def _outgoing(tenant_id: int, conversation_id: int, viewer: Viewer, msg_type: str, body: str,
                    author_label: str | None = None, at: datetime | None = None, via_owner: int | None = None,
                    media_ref: int | None = None) -> int:
    """A message to the customer in the thread, `sending` until its job settles it; returns its id."""
    row = await db.fetchrow(
        "INSERT INTO inbox_message (tenant, conversation, direction, author, author_label, msg_type, body, "
        "status, source_key, created_at, via_owner, media_ref) VALUES ($1, $2, 'out', $3, $4, $5::varchar, $6, "
        "'sending', $5::varchar || ':' || gen_random_uuid()::text, COALESCE($7, now()), $8, $9) RETURNING id",
        tenant_id, conversation_id, viewer.staff_id, author_label or viewer.name, msg_type, body, at, via_owner,
        media_ref)
    return int(row["id"])


async def _queue_alternative(tenant_id: int, viewer: Viewer, locked: dict[str, Any], msg_type: str, body: str,
                             author_label: str, audit: dict[str, Any], job: str,
                             via_owner: int | None = None) -> int:
    """One of the alternatives to a reply (held conversation, already checked): the message in the thread,
    the audit entry, and its send job after commit, once."""
    message_id = await _outgoing(tenant_id, locked["id"], viewer, msg_type, body, author_label,
                                 via_owner=via_owner)
    await record_audit(Actor(viewer.staff_id, viewer.name), tenant_id, f"conversation.{msg_type}", "conversation",
                       locked["id"], {**audit, "message": message_id})
    await effects.enqueue(job, tenant_id, message_id, job_id=f"{job}:{message_id}")
    await convs.announce(locked, "message")
    return message_id


async def _held(tenant_id: int, viewer: Viewer, conversation_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The conversation as the viewer sees it (with its contact and external id; NotFound out of scope) and
    its locked row, when the viewer holds it or manages."""
    conv = await convs.get_conversation(tenant_id, viewer, conversation_id)
    locked = await convs.lock(tenant_id, conversation_id)
    _require_holder(locked, viewer)
    return conv, locked


def _text(raw: str, field: str = "text") -> str:
    clean = (raw or "").strip()
    if not clean or len(clean) > REPLY_MAX or len(clean.encode()) > 2048:
        raise InvalidInput.one(field, N_("Write 1 to {max} characters (WeChat takes 2048 bytes)."), max=REPLY_MAX)
    return clean


async def window_for(tenant_id: int, conv: dict[str, Any]) -> windows.WindowState:
    """The reply window towards the conversation's person (rows read with `CONVERSATION_COLUMNS` carry
    their external id; a bare conversation row needs it looked up)."""
    external_id = conv.get("external_id")
    if external_id is None:
        row = await db.fetchrow("SELECT external_id FROM identity WHERE tenant = $1 AND id = $2",
                                tenant_id, conv["identity"])
        external_id = row["external_id"]
    return await windows.state(tenant_id, conv["channel"], external_id)


async def do_reply(tenant_id: int, viewer: Viewer, conversation_id: int, text: str) -> int:
    """Queue a reply to the customer; returns the message id. Refused before anything is written when
    WeChat would refuse it (window closed, quota used)."""
    body = _text(text)
    async with db.transaction():
        conv = await _mine_to_act_on(tenant_id, viewer, conversation_id)
        return await _queue_reply(tenant_id, viewer, conv, body)


async def _queue_reply(tenant_id: int, viewer: Viewer, conv: dict[str, Any], body: str, msg_type: str = "text",
                       media_ref: int | None = None) -> int:
    """A reply (a text, or a picture: `media_ref`) in the locked conversation (taking it when it waits or was
    closed): the message, the conversation's times, and the send job after commit."""
    conversation_id = conv["id"]
    if conv["status"] in ("bot", "queued", "resolved"):
        # Writing to a waiting or closed conversation takes it (one owner at a time).
        await routing.hold_seats(tenant_id, viewer.staff_id, conv["assignee"])
        if conv["status"] == "resolved":
            conv = await convs.transition(conv, "bot", actor_label=viewer.name)
        conv = await convs.transition(conv, "assigned", assignee=viewer.staff_id, rule="manual",
                                      actor_label=viewer.name)
    else:
        _require_holder(conv, viewer)
    if conv["status"] == "snoozed":
        # Replying ends the snooze; the rep keeps it, so its assignment and first-response time stay.
        await routing.hold_seats(tenant_id, conv["assignee"])
        conv = await convs.transition(conv, "assigned", assignee=conv["assignee"], actor_label=viewer.name)
    state = await window_for(tenant_id, conv)
    if not state.can_send:
        raise Conflict(errors.explain(state.refusal or 45015).summary, field="text")
    now = clock.now()
    message_id = await _outgoing(tenant_id, conversation_id, viewer, msg_type, body, at=now, media_ref=media_ref)
    updated = await db.fetchrow(
        "UPDATE inbox_conversation SET last_message_at = $3, preview = $4, unread = 0, "
        "first_response_at = CASE WHEN status = 'assigned' THEN COALESCE(first_response_at, $3) "
        "ELSE first_response_at END, updated_at = now() WHERE tenant = $1 AND id = $2 RETURNING *",
        tenant_id, conversation_id, now, (body or f"[{msg_type}]")[:convs.PREVIEW_MAX])
    await db.execute("UPDATE inbox_assignment SET first_response_at = COALESCE(first_response_at, $3) "
                     "WHERE tenant = $1 AND conversation = $2 AND ended_at IS NULL", tenant_id, conversation_id, now)
    await effects.enqueue("inbox.send_message", tenant_id, message_id, job_id=f"inbox.send:{message_id}")
    await convs.announce(dict(updated), "message")
    return message_id


async def do_send_image(tenant_id: int, viewer: Viewer, conversation_id: int, data: bytes, filename: str = "") -> int:
    """Send the customer a picture (JPG or PNG, within the channel's limit; a 400 naming `image` otherwise), as a
    reply: refused before anything is kept when WeChat would refuse it (the window), then kept in the media
    store, recorded with its message in one transaction, and sent by `inbox.send_message` (upload to WeChat,
    then the image message). Returns the message id."""
    conv = await convs.get_conversation(tenant_id, viewer, conversation_id)  # out of scope: 404 first
    state = await window_for(tenant_id, conv)
    if not state.can_send:
        raise Conflict(errors.explain(state.refusal or 45015).summary, field="image")
    blob = await media.put_upload(tenant_id, conv["channel"], data)
    async with db.transaction():
        locked = await _mine_to_act_on(tenant_id, viewer, conversation_id)
        media_ref = await media.record_upload(tenant_id, conv["channel"], conv["external_id"], blob, filename)
        return await _queue_reply(tenant_id, viewer, locked, "", msg_type="image", media_ref=media_ref)


async def do_send_again(tenant_id: int, viewer: Viewer, conversation_id: int, message_id: int) -> int:
    """Send a message once more, because the rep chose to (Siyu never does by itself): one whose outcome is
    unknown ("Send again": WeChat may have it), or one that failed for a reason trying again can help with
    ("Try again": WeChat was busy, a limit, the network). A new message, so a new ledger key, with the same
    content and the same way (reply, picture, service notice, WeCom task), under today's rules (the window, a
    consent, the owner). Audited; the old message points at the new one, so it goes again once however often
    the button is pressed. Returns the new message's id."""
    async with db.transaction():
        conv = await _mine_to_act_on(tenant_id, viewer, conversation_id)
        old = await db.fetchrow(
            "SELECT id, direction, msg_type, body, status, error, resent_as, via_owner, media_ref FROM inbox_message "
            "WHERE tenant = $1 AND conversation = $2 AND id = $3 AND direction = 'out' FOR UPDATE",
            tenant_id, conversation_id, message_id)
        if old is None:
            raise NotFound()
        if old["status"] == "failed" and not retry_helps(dict(old)):
            raise Conflict(N_("Trying again cannot help with this message: WeChat refused it for a reason that "
                              "stays. The reply box shows the other ways to reach the customer."))
        if old["status"] not in ("unknown", "failed"):
            raise Conflict(N_("Only a message that may not have been delivered can be sent again."))
        if old["resent_as"] is not None:
            raise Conflict(N_("This message was sent again already."))
        if old["msg_type"] == "text":
            new_id = await _queue_reply(tenant_id, viewer, conv, old["body"])
        elif old["msg_type"] == "image":
            new_id = await _queue_reply(tenant_id, viewer, conv, old["body"], msg_type="image",
                                        media_ref=old["media_ref"])
        else:
            _require_holder(conv, viewer)
            new_id = await _queue_same_way(tenant_id, viewer, conv, dict(old))
        await db.execute("UPDATE inbox_message SET resent_as = $3 WHERE tenant = $1 AND id = $2",
                         tenant_id, message_id, new_id)
        action = "conversation.send_again" if old["status"] == "unknown" else "conversation.try_again"
        await record_audit(Actor(viewer.staff_id, viewer.name), tenant_id, action, "conversation",
                           conversation_id, {"message": message_id, "new": new_id, "type": old["msg_type"]})
    return new_id


async def _queue_same_way(tenant_id: int, viewer: Viewer, conv: dict[str, Any], old: dict[str, Any]) -> int:
    """A service notice or a WeCom task once more, checked as the first one was."""
    if old["msg_type"] == "wecom_task":
        view = await convs.get_conversation(tenant_id, viewer, conv["id"])
        owner = next((o for o in await wecom_owners(tenant_id, int(view["contact"])) if o["id"] == old["via_owner"]),
                     None)
        if owner is None:
            raise Conflict(N_("The WeCom rep it went through is no longer this customer's contact."))
        return await _queue_alternative(tenant_id, viewer, conv, "wecom_task", old["body"], owner["label"],
                                        {"owner": owner["staff_userid"]}, "inbox.send_owner_task",
                                        via_owner=owner["id"])
    notice = (await get_settings(tenant_id)).notice_for(conv["channel"])
    if notice is None or notice.kind != old["msg_type"]:
        raise Conflict(N_("No service-notice template yet: a tenant admin sets it in the inbox settings."))
    if notice.kind == "subscribe":
        external_id = (await convs.get_conversation(tenant_id, viewer, conv["id"]))["external_id"]
        if not await consents.remaining(tenant_id, conv["channel"], external_id, notice.template_id):
            raise Conflict(N_("This customer has no consent left for the subscription message: they give one "
                              "each time they allow it in the Mini Program."))
    return await _queue_alternative(tenant_id, viewer, conv, notice.kind, old["body"], viewer.name,
                                    {"template_id": notice.template_id}, "inbox.send_template_notice")


async def do_note(tenant_id: int, viewer: Viewer, conversation_id: int, text: str) -> int:
    """An internal note in the thread: never sent to the customer."""
    body = _text(text)
    async with db.transaction():
        conv = await _mine_to_act_on(tenant_id, viewer, conversation_id)
        row = await db.fetchrow(
            "INSERT INTO inbox_message (tenant, conversation, direction, author, author_label, msg_type, body, "
            "status, source_key, created_at) VALUES ($1, $2, 'note', $3, $4, 'text', $5, 'noted', "
            "'note:' || gen_random_uuid()::text, now()) RETURNING id",
            tenant_id, conversation_id, viewer.staff_id, viewer.name, body)
        await convs.announce(conv, "note")
    return int(row["id"])


async def wecom_owners(tenant_id: int, contact_id: int) -> list[dict[str, Any]]:
    """The WeCom members who added this contact (active), each with the Siyu rep's name where there is one
    (`label`), their remark and the customer's external_userid: the contact panel's sales reps, and who can
    write to the customer 1:1 from WeCom when WeChat's reply window is closed."""
    rows = await db.fetch(
        "SELECT o.id, o.staff_userid, o.remark, i.external_id, s.id AS staff_id, "
        "COALESCE(NULLIF(s.name, ''), s.email) AS rep "
        "FROM owner o JOIN identity i ON i.tenant = o.tenant AND i.id = o.identity AND i.channel = 'wecom' "
        "LEFT JOIN inbox_agent a ON a.tenant = o.tenant AND a.wecom_userid = o.staff_userid AND a.wecom_userid <> '' "
        "LEFT JOIN staff s ON s.tenant = a.tenant AND s.id = a.staff AND s.is_active "
        "WHERE o.tenant = $1 AND o.contact = $2 AND o.removed_at IS NULL ORDER BY o.added_at, o.id",
        tenant_id, contact_id)
    return [{**dict(r), "label": r["rep"] or r["staff_userid"]} for r in rows]


async def do_send_via_owner(tenant_id: int, viewer: Viewer, conversation_id: int, owner_id: int, text: str) -> int:
    """Write to the customer 1:1 through a WeCom member who added them (the legal way when the reply
    window is closed): WeChat creates a task the member confirms in the WeCom client. Returns the message
    id; the send runs after commit, once (`jobs.send_owner_task`)."""
    body = _text(text)
    async with db.transaction():
        conv, locked = await _held(tenant_id, viewer, conversation_id)
        owner = next((o for o in await wecom_owners(tenant_id, int(conv["contact"])) if o["id"] == owner_id), None)
        if owner is None:
            raise InvalidInput.one("owner", N_("Choose a WeCom rep who added this customer."))
        return await _queue_alternative(tenant_id, viewer, locked, "wecom_task", body, owner["label"],
                                        {"owner": owner["staff_userid"]}, "inbox.send_owner_task",
                                        via_owner=owner_id)


async def do_send_template_notice(tenant_id: int, viewer: Viewer, conversation_id: int, text: str) -> int:
    """Send the customer the tenant's notice template for the conversation's channel, with the rep's short
    text in its keyword: the legal way when the reply window is closed. On the Official Account a template
    message; on the Mini Program a one-time subscription message, which needs a consent the customer gave
    (counted by `siyu.wechat.consents`). Returns the message id; the send runs after commit, once
    (`jobs.send_template_notice`)."""
    settings = await get_settings(tenant_id)
    async with db.transaction():
        conv, locked = await _held(tenant_id, viewer, conversation_id)
        notice = settings.notice_for(conv["channel"])
        if conv["channel"] not in ("oa", "mp"):
            raise Conflict(N_("Service notices go through the Official Account or the Mini Program only."))
        if notice is None:
            raise Conflict(N_("No service-notice template yet: a tenant admin sets it in the inbox settings."))
        clean = " ".join((text or "").split())
        if not clean or len(clean) > notice.text_max:
            raise InvalidInput.one("text", N_("A service notice takes 1 to {max} characters."), max=notice.text_max)
        if notice.kind == "subscribe" and not await consents.remaining(tenant_id, conv["channel"],
                                                                      conv["external_id"], notice.template_id):
            raise Conflict(N_("This customer has no consent left for the subscription message: they give one "
                              "each time they allow it in the Mini Program."))
        return await _queue_alternative(tenant_id, viewer, locked, notice.kind, clean, viewer.name,
                                        {"template_id": notice.template_id}, "inbox.send_template_notice")


async def do_assign(tenant_id: int, viewer: Viewer, conversation_id: int, staff_id: int) -> dict[str, Any]:
    """Take a conversation (staff_id = yourself) or, as a manager, give it to a rep (a transfer). A manual
    choice may go past the rep's capacity; routing never does."""
    async with db.transaction():
        conv = await _mine_to_act_on(tenant_id, viewer, conversation_id)
        if staff_id != viewer.staff_id and not viewer.is_manager and conv["assignee"] != viewer.staff_id:
            raise Forbidden(N_("Only managers can give a conversation to someone else."))
        target = await db.fetchrow("SELECT id FROM staff WHERE tenant = $1 AND id = $2 AND is_active "
                                   "AND role IN ('agent', 'tenant_admin')", tenant_id, staff_id)
        if target is None:
            raise InvalidInput.one("staff_id", N_("Choose an active rep of this brand."))
        if conv["assignee"] == staff_id and conv["status"] == "assigned":
            return conv
        await routing.hold_seats(tenant_id, staff_id, conv["assignee"])
        if conv["status"] == "resolved":
            conv = await convs.transition(conv, "bot", actor_label=viewer.name)
        reason = "transferred" if conv["assignee"] == viewer.staff_id else "reassigned"
        return await convs.transition(conv, "assigned", assignee=staff_id, rule="manual", actor_label=viewer.name,
                                      end_reason=reason)


async def do_transfer_to_team(tenant_id: int, viewer: Viewer, conversation_id: int, team_id: int) -> dict[str, Any]:
    """Send a conversation back to the queue of one team; routed at once if one of them has room."""
    async with db.transaction():
        conv = await _mine_to_act_on(tenant_id, viewer, conversation_id)
        _require_holder(conv, viewer)
        if await db.fetchrow("SELECT 1 FROM team WHERE tenant = $1 AND id = $2", tenant_id, team_id) is None:
            raise InvalidInput.one("team_id", N_("Choose a team of this brand."))
        await db.execute("UPDATE inbox_conversation SET teams = $3 WHERE tenant = $1 AND id = $2",
                         tenant_id, conversation_id, [team_id])
        conv["teams"] = [team_id]
        queued = await convs.transition(conv, "queued", reason="manual", actor_label=viewer.name,
                                        end_reason="transferred", keep_queue_time=False)
        contact_id = await convs.contact_of(tenant_id, conv["identity"])
        return await routing.assign_next(queued, contact_id, exclude=(viewer.staff_id,)) or queued


async def do_resolve(tenant_id: int, viewer: Viewer, conversation_id: int) -> dict[str, Any]:
    async with db.transaction():
        conv = await _mine_to_act_on(tenant_id, viewer, conversation_id)
        if conv["status"] == "resolved":
            return conv
        if conv["status"] in convs.HOLDING:
            _require_holder(conv, viewer)
        done = await convs.transition(conv, "resolved", actor_label=viewer.name, end_reason="resolved")
        await drain_soon(tenant_id, f"c{done['id']}")
        return done


async def do_reopen(tenant_id: int, viewer: Viewer, conversation_id: int) -> dict[str, Any]:
    """A resolved conversation back to the rep who reopens it."""
    async with db.transaction():
        conv = await _mine_to_act_on(tenant_id, viewer, conversation_id)
        if conv["status"] != "resolved":
            raise Conflict(N_("Only a resolved conversation can be reopened."))
        await routing.hold_seats(tenant_id, viewer.staff_id, conv["assignee"])
        conv = await convs.transition(conv, "bot", actor_label=viewer.name)
        return await convs.transition(conv, "assigned", assignee=viewer.staff_id, rule="reopen",
                                      actor_label=viewer.name)


SNOOZE_CHOICES = {"1h": timedelta(hours=1), "4h": timedelta(hours=4), "1d": timedelta(days=1),
                  "3d": timedelta(days=3)}


async def do_snooze(tenant_id: int, viewer: Viewer, conversation_id: int, until: datetime | str) -> dict[str, Any]:
    """Put a conversation aside until a time (or until the customer writes); the rep keeps it."""
    if isinstance(until, str):
        if until not in SNOOZE_CHOICES:
            raise InvalidInput.one("until", N_("Choose one of: {choices}."), choices=", ".join(SNOOZE_CHOICES))
        until = clock.now() + SNOOZE_CHOICES[until]
    if until <= clock.now():
        raise InvalidInput.one("until", N_("Choose a time in the future."))
    async with db.transaction():
        conv = await _mine_to_act_on(tenant_id, viewer, conversation_id)
        if conv["status"] != "assigned":
            raise Conflict(N_("Only an assigned conversation can be snoozed."))
        _require_holder(conv, viewer)
        done = await convs.transition(conv, "snoozed", assignee=conv["assignee"], snoozed_until=until,
                                      actor_label=viewer.name)
        await drain_soon(tenant_id, f"c{done['id']}")
        return done


async def do_set_presence(tenant_id: int, staff_id: int, presence: str, actor: Actor,
                          wecom_userid: str | None = None) -> None:
    """Online / away / offline (and the rep's WeCom UserID, which makes them the owner of the customers
    they added). Going online drains the queue."""
    if presence not in PRESENCES:
        raise InvalidInput.one("presence", N_("Choose one of: {choices}."), choices=", ".join(PRESENCES))
    if wecom_userid is not None and len(wecom_userid) > 64:
        raise InvalidInput.one("wecom_userid", N_("Use 1 to {max} characters."), max=64)
    async with db.transaction():
        if await db.fetchrow("SELECT 1 FROM staff WHERE tenant = $1 AND id = $2", tenant_id, staff_id) is None:
            raise NotFound()
        before = await db.fetchrow("SELECT presence FROM inbox_agent WHERE tenant = $1 AND staff = $2",
                                   tenant_id, staff_id)
        await db.execute(
            "INSERT INTO inbox_agent (tenant, staff, presence, presence_at, wecom_userid) "
            "VALUES ($1, $2, $3, now(), COALESCE($4, '')) ON CONFLICT (tenant, staff) DO UPDATE SET "
            "presence = EXCLUDED.presence, presence_at = CASE WHEN inbox_agent.presence = EXCLUDED.presence "
            "THEN inbox_agent.presence_at ELSE now() END, wecom_userid = COALESCE($4, inbox_agent.wecom_userid)",
            tenant_id, staff_id, presence, wecom_userid)
        if before is None or before["presence"] != presence:
            await record_audit(actor, tenant_id, "inbox.presence", "staff", staff_id,
                               {"presence": [before["presence"] if before else None, presence]})
            await effects.publish(convs.live_channel(tenant_id), {"event": "presence", "staff": staff_id,
                                                                  "presence": presence})
        if presence == "online":
            await drain_soon(tenant_id, f"s{staff_id}")


ALERTS = ("sound", "desktop")


async def alerts_of(tenant_id: int, staff_id: int) -> dict[str, bool]:
    """How the inbox tells this rep about new work: {"sound": …, "desktop": …} (both on until switched)."""
    row = await db.fetchrow("SELECT alert_sound, alert_desktop FROM inbox_agent WHERE tenant = $1 AND staff = $2",
                            tenant_id, staff_id)
    return {"sound": bool(row["alert_sound"]) if row else True, "desktop": bool(row["alert_desktop"]) if row else True}


async def do_set_alert(tenant_id: int, staff_id: int, alert: str, on: bool) -> dict[str, bool]:
    """Switch one of a rep's own alerts on or off (kept per rep, so every browser they sign in to follows)."""
    if alert not in ALERTS:
        raise InvalidInput.one("alert", N_("Choose one of: {choices}."), choices=", ".join(ALERTS))
    async with db.transaction():
        if await db.fetchrow("SELECT 1 FROM staff WHERE tenant = $1 AND id = $2", tenant_id, staff_id) is None:
            raise NotFound()
        await db.execute(
            f"INSERT INTO inbox_agent (tenant, staff, presence, presence_at, wecom_userid, alert_{alert}) "
            f"VALUES ($1, $2, 'offline', now(), '', $3) ON CONFLICT (tenant, staff) DO UPDATE SET alert_{alert} = $3",
            tenant_id, staff_id, on)
    return await alerts_of(tenant_id, staff_id)


async def presence_of(tenant_id: int, staff_id: int) -> str:
    row = await db.fetchrow("SELECT presence FROM inbox_agent WHERE tenant = $1 AND staff = $2", tenant_id, staff_id)
    return str(row["presence"]) if row else "offline"


async def do_mark_read(tenant_id: int, viewer: Viewer, conversation_id: int) -> bool:
    """The rep who has the conversation looked at it: its unread count starts again from 0 (their other tabs
    and their manager's list follow live). Others looking change nothing."""
    async with db.transaction():
        row = await db.fetchrow(
            "UPDATE inbox_conversation SET unread = 0 WHERE tenant = $1 AND id = $2 AND assignee = $3 AND unread > 0 "
            "RETURNING *", tenant_id, conversation_id, viewer.staff_id)
        if row is not None:
            await convs.announce(dict(row), "read")
    return row is not None
