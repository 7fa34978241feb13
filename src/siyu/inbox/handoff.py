"""Inbound messages become conversation messages, the bot answers what its keyword rules know, and hands a
conversation to a human.

The bot: on the Official Account its keyword rules answer as passive replies (at the gateway, inside
WeChat's 5 seconds); on the Mini Program and WeCom 微信客服, which have no passive replies, the same rules
answer as a customer-service message (`jobs.bot_reply`, once per customer message, only while the
conversation is still the bot's).

Handoff triggers (per tenant, `config`): a handoff keyword (人工, 客服, 转人工, human, agent by default), a menu
button marked "talk to a human", N consecutive messages the bot could not answer, a VIP tag on the contact,
or an API call. A handoff queues the conversation and routes it at once; the customer is told what happens
next (their place in the queue, or the rep's name) when the reply window has room to spare.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from siyu.core import clock, db, effects
from siyu.core.errors import NotFound
from siyu.inbox import conversations as convs
from siyu.inbox import routing
from siyu.inbox.config import InboxSettings, asks_for_a_human, get_settings
from siyu.tenants.services import Actor, record_audit
from siyu.wechat.events import load_normalized
from siyu.wechat.services import keyword_rule, passive_rule

log = logging.getLogger("siyu.inbox.handoff")

REASONS = ("keyword", "menu", "unanswered", "vip", "api", "manual", "follow_up")


async def conversation_for(tenant_id: int, identity_id: int, channel: str, open_kfid: str = "") -> dict[str, Any]:
    """The identity's conversation, created in `bot` state on first contact, locked."""
    await db.execute(
        "INSERT INTO inbox_conversation (tenant, identity, channel, open_kfid, status, teams, vip, handoff_reason, "
        "unanswered, unread, preview, created_at, updated_at) "
        "VALUES ($1, $2, $3, $4, 'bot', '{}', false, '', 0, 0, '', now(), now()) "
        "ON CONFLICT (tenant, identity) DO NOTHING", tenant_id, identity_id, channel, open_kfid)
    row = await db.fetchrow("SELECT * FROM inbox_conversation WHERE tenant = $1 AND identity = $2 FOR UPDATE",
                            tenant_id, identity_id)
    return dict(row)


async def is_vip(tenant_id: int, contact_id: int, settings: InboxSettings) -> bool:
    if not settings.vip_tag_ids:
        return False
    row = await db.fetchrow("SELECT 1 FROM contact_tag WHERE tenant = $1 AND contact = $2 AND tag = ANY($3::int[])",
                            tenant_id, contact_id, list(settings.vip_tag_ids))
    return row is not None


async def handoff_locked(conv: dict[str, Any], reason: str, actor_label: str = "bot") -> dict[str, Any]:
    """Queue a locked conversation for a human and try to route it now. Returns the row as it ends."""
    tenant_id = conv["tenant"]
    if conv["status"] in ("queued", "assigned", "snoozed"):
        return conv  # a human has it, or it is waiting for one already
    settings = await get_settings(tenant_id)
    contact_id = await convs.contact_of(tenant_id, conv["identity"])
    teams = await routing.serving_teams(tenant_id, conv["channel"], contact_id)
    vip = await is_vip(tenant_id, contact_id, settings)
    await db.execute("UPDATE inbox_conversation SET teams = $3, vip = $4 WHERE tenant = $1 AND id = $2",
                     tenant_id, conv["id"], teams, vip)
    conv = {**conv, "teams": teams, "vip": vip}
    queued = await convs.transition(conv, "queued", reason=reason, actor_label=actor_label)
    # The handoff's timeline event has locked the identity's contact for this transaction, and an identity
    # cannot move while its contact is locked: if the assignment finds the identity still on `contact_id`
    # (it checks), that contact is the locked one and its event is written in the assigning statement.
    assigned = await routing.assign_next(queued, contact_id, contact_locked=True)
    final = assigned or queued
    if settings.notify_customer:
        ref = final.get("assignment_id") or int(final["queued_at"].timestamp())
        await effects.enqueue("inbox.notify_customer", tenant_id, conv["id"], str(ref),
                              job_id=f"inbox.notify:{conv['id']}:{ref}")
    return final


def is_follow_up(conv: dict[str, Any]) -> bool:
    """The customer writes after a person resolved their conversation: it is resolved, or back with the bot
    because an auto-reply answered their first follow-up (it keeps the time it was resolved)."""
    return conv["status"] == "resolved" or (conv["status"] == "bot" and conv["resolved_at"] is not None
                                            and conv["last_assignee"] is not None)


async def _back_to_a_person(conv: dict[str, Any], contact_id: int, reason: str) -> dict[str, Any]:
    """A follow-up reaches a person: the rep who resolved it when they can take it now (online, below
    capacity), otherwise the queue and routing (the contact's own rep, then whoever served them recently,
    then the least busy)."""
    back = await routing.return_to(conv, contact_id, conv["last_assignee"])
    if back is not None:
        return back
    return await handoff_locked(conv, reason, actor_label="customer")


async def _passive_line(conv: dict[str, Any], event: dict[str, Any], rule: dict[str, Any] | None) -> None:
    """The Official Account's passive reply to this callback (the gateway answered it inside WeChat's
    5 seconds), as a sent line of the bot's in the thread, at the time of the callback; once per callback."""
    if rule is None:
        return
    reply = str(rule["reply"])
    added = await db.fetchrow(
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, "
        "source_key, created_at, sent_at) VALUES ($1, $2, 'out', 'bot', 'text', $3, 'sent', $4, $5, $5) "
        "ON CONFLICT (tenant, source_key) DO NOTHING RETURNING id",
        conv["tenant"], conv["id"], reply, f"passive:{event['id']}", _when(event))
    if added is not None:
        await db.execute(
            "UPDATE inbox_conversation SET last_message_at = GREATEST(COALESCE(last_message_at, $3), $3), "
            "preview = CASE WHEN preview = '' THEN $4 ELSE preview END, updated_at = now() "
            "WHERE tenant = $1 AND id = $2", conv["tenant"], conv["id"], event["occurred_at"],
            reply[:convs.PREVIEW_MAX])


def _when(event: dict[str, Any]) -> datetime:
    """A callback's place in the thread: when it reached Siyu, within the second WeChat gives for it
    (CreateTime has whole seconds: the message was sent in the second that follows it). Never the second's
    start, which would put "还在吗？" before the "Resolved" a rep clicked earlier that second; never later
    than the second's end (a retry delivered late); and not the time it is processed: callbacks that arrive
    together are processed by jobs that may finish in any order."""
    received = event.get("received_at")
    latest = event["occurred_at"] + timedelta(microseconds=999_999)
    return min(received, latest) if received is not None else event["occurred_at"]


def _body(event: dict[str, Any]) -> str:
    details = event["details"]
    if event["msg_type"] == "text":
        return str(details.get("Content") or "")
    for key in ("Title", "Label", "Url", "Recognition"):
        if details.get(key):
            return str(details[key])
    return ""


async def _customer_message(conv: dict[str, Any], event: dict[str, Any], contact_id: int,
                            settings: InboxSettings) -> dict[str, Any] | None:
    """A customer's message into their conversation (and what the bot and routing do about it); the
    conversation as it ends, or None when this message was handled before. The caller announces it."""
    tenant_id = conv["tenant"]
    body = _body(event)
    added = await db.fetchrow(
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, "
        "source_key, created_at) VALUES ($1, $2, 'in', '', $3, $4, 'received', $5, $6) "
        "ON CONFLICT (tenant, source_key) DO NOTHING RETURNING id",
        tenant_id, conv["id"], event["msg_type"] or "text", body, f"wechat:{event['id']}", _when(event))
    if added is None:
        return None  # handled before (a re-run job)
    preview = (body or f"[{event['msg_type']}]")[:convs.PREVIEW_MAX]
    row = await db.fetchrow(
        "UPDATE inbox_conversation SET last_message_at = GREATEST(COALESCE(last_message_at, $3), $3), "
        "last_inbound_at = GREATEST(COALESCE(last_inbound_at, $3), $3), preview = $4, "
        "unread = unread + CASE WHEN status IN ('assigned', 'snoozed') THEN 1 ELSE 0 END, "
        "open_kfid = COALESCE(NULLIF($5, ''), open_kfid), updated_at = now() "
        "WHERE tenant = $1 AND id = $2 RETURNING *",
        tenant_id, conv["id"], event["occurred_at"], preview, str(event["details"].get("open_kfid") or ""))
    conv = dict(row)
    if conv["channel"] == "oa":  # what the gateway answered, in the thread after the message it answers
        await _passive_line(conv, event, await passive_rule(tenant_id, "message", event["msg_type"] or "",
                                                            event["details"], conv["status"] in convs.WITH_A_HUMAN))
    if conv["status"] == "snoozed":  # the customer wrote: the snooze ends, back to the rep who holds it
        await routing.hold_seats(tenant_id, conv["assignee"])
        return await convs.transition(conv, "assigned", assignee=conv["assignee"], actor_label="customer")
    if conv["status"] not in ("bot", "resolved"):
        return conv
    text = body if event["msg_type"] == "text" else ""
    vip = await is_vip(tenant_id, contact_id, settings)
    wants_a_human = bool(text) and asks_for_a_human(settings, text)
    answered = bool(text) and await keyword_rule(tenant_id, text) is not None
    if is_follow_up(conv) and (vip or wants_a_human or not answered):
        return await _back_to_a_person(conv, contact_id, "vip" if vip else "keyword" if wants_a_human else "follow_up")
    if conv["status"] == "resolved":
        # A follow-up an auto-reply answered (the customer has their answer): the bot keeps it, and says so
        # in the thread; their next message the bot cannot answer goes to a person at once (`is_follow_up`).
        conv = await convs.transition(conv, "bot", actor_label="customer", reason="auto_reply")
    if vip:
        return await handoff_locked(conv, "vip")
    if wants_a_human:
        return await handoff_locked(conv, "keyword")
    if answered and conv["channel"] != "oa":
        # The OA's gateway answered with a passive reply already; the Mini Program and WeCom 微信客服 have
        # none, so the bot sends the rule's reply as a customer-service message (after commit, once).
        await effects.enqueue("inbox.bot_reply", tenant_id, int(added["id"]), job_id=f"inbox.bot:{added['id']}")
    unanswered = 0 if answered else conv["unanswered"] + 1
    await db.execute("UPDATE inbox_conversation SET unanswered = $3 WHERE tenant = $1 AND id = $2",
                     tenant_id, conv["id"], unanswered)
    conv["unanswered"] = unanswered
    if settings.unanswered_limit and unanswered >= settings.unanswered_limit:
        return await handoff_locked(conv, "unanswered")
    return conv


async def _servicer_message(conv: dict[str, Any], event: dict[str, Any]) -> None:
    """A 微信客服 servicer wrote from the WeCom client: it shows in the thread, and counts as a reply."""
    tenant_id = conv["tenant"]
    added = await db.fetchrow(
        "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, status, "
        "source_key, created_at, sent_at) VALUES ($1, $2, 'out', $3, $4, $5, 'sent', $6, $7, $7) "
        "ON CONFLICT (tenant, source_key) DO NOTHING RETURNING id",
        tenant_id, conv["id"], str(event["details"].get("servicer_userid") or "WeCom"), event["msg_type"] or "text",
        _body(event), f"wechat:{event['id']}", _when(event))
    if added is None:
        return
    row = await db.fetchrow(
        "UPDATE inbox_conversation SET last_message_at = GREATEST(COALESCE(last_message_at, $3), $3), "
        "first_response_at = CASE WHEN status IN ('assigned', 'snoozed') THEN COALESCE(first_response_at, $3) "
        "ELSE first_response_at END, "
        "updated_at = now() WHERE tenant = $1 AND id = $2 RETURNING *", tenant_id, conv["id"], event["occurred_at"])
    await convs.announce(dict(row), "message")


async def handle_inbound(event_ids: list[int]) -> int:
    """The inbox's part of stored callbacks (after contacts resolved their identities): customer messages
    into conversations (with the bot's handoff rules), servicer messages, "talk to a human" menu clicks.
    Returns how many messages this run added; a second run adds none."""
    added = 0
    settings_by_tenant: dict[int, InboxSettings] = {}
    for event in await load_normalized(event_ids):
        kind = event["kind"]
        is_customer = kind == "message" and (event["channel"] != "wecom" or "origin" in event["details"])
        if not (is_customer or kind in ("kf_servicer_message", "menu_click", "follow")) or not event["external_id"]:
            continue
        tenant_id = event["tenant"]
        if tenant_id not in settings_by_tenant:
            settings_by_tenant[tenant_id] = await get_settings(tenant_id)
        settings = settings_by_tenant[tenant_id]
        # A follow or a menu tap the Official Account answered (a welcome, a button's reply) shows in the
        # thread too: the customer saw it.
        passive = None
        if kind in ("follow", "menu_click") and event["channel"] == "oa":
            passive = await passive_rule(tenant_id, kind, "", event["details"], False)
        asks = kind == "menu_click" and event["details"].get("key") in settings.handoff_menu_keys
        if kind in ("follow", "menu_click") and not asks and passive is None:
            continue
        identity = await db.fetchrow(
            "SELECT id, contact FROM identity WHERE tenant = $1 AND channel = $2 AND external_id = $3",
            tenant_id, event["channel"], event["external_id"])
        if identity is None:
            log.warning("inbound event %s has no identity yet; contacts resolves it first", event["id"])
            continue
        async with db.transaction():
            conv = await conversation_for(tenant_id, int(identity["id"]), event["channel"],
                                          str(event["details"].get("open_kfid") or ""))
            if is_customer:
                done = await _customer_message(conv, event, int(identity["contact"]), settings)
                if done is not None:
                    added += 1
                    if done["status"] == "assigned" and conv["status"] not in convs.HOLDING:
                        # Given to a rep because of this message (a handoff, a follow-up): it waits unread
                        # for them, as a message into a conversation they held would.
                        done = dict(await db.fetchrow(
                            "UPDATE inbox_conversation SET unread = unread + 1 WHERE tenant = $1 AND id = $2 "
                            "RETURNING *", tenant_id, done["id"]))
                    # A customer's message, as it ends (its rep is alerted: `live.alert_for`).
                    await convs.announce({**done, "previous_assignee": None}, "message:in")
            elif kind == "kf_servicer_message":
                await _servicer_message(conv, event)
            else:
                what = ({"event": "menu_handoff"} if asks else {"event": "followed"} if kind == "follow"
                        else {"event": "menu_click", "key": str(event["details"].get("key") or "")[:64]})
                marker = await db.fetchrow(
                    "INSERT INTO inbox_message (tenant, conversation, direction, author_label, msg_type, body, "
                    "status, source_key, created_at) VALUES ($1, $2, 'system', 'customer', 'event', $5, "
                    "'noted', $3, $4) ON CONFLICT (tenant, source_key) DO NOTHING "
                    "RETURNING id", tenant_id, conv["id"], f"wechat:{event['id']}", _when(event),
                    json.dumps(what, ensure_ascii=False))
                if marker is None:
                    continue  # handled before (a re-run job)
                await db.execute("UPDATE inbox_conversation SET last_message_at = GREATEST(COALESCE("
                                 "last_message_at, $3), $3) WHERE tenant = $1 AND id = $2",
                                 tenant_id, conv["id"], event["occurred_at"])
                await _passive_line(conv, event, passive)
                if asks and is_follow_up(conv):
                    await _back_to_a_person(conv, int(identity["contact"]), "menu")
                elif asks:
                    await handoff_locked(conv, "menu", actor_label="customer")
                else:
                    await convs.announce(conv, "message")
    return added


async def do_handoff(tenant_id: int, identity_id: int, reason: str = "api", actor_label: str = "api",
                     actor: Actor | None = None) -> dict[str, Any]:
    """Hand a person's conversation to a human on request (the API, an agent): created if needed. With
    an `actor`, the request is written to the audit log."""
    async with db.transaction():
        identity = await db.fetchrow("SELECT channel FROM identity WHERE tenant = $1 AND id = $2",
                                     tenant_id, identity_id)
        if identity is None:
            raise NotFound()
        conv = await conversation_for(tenant_id, identity_id, identity["channel"])
        if conv["last_message_at"] is None:
            await db.execute("UPDATE inbox_conversation SET last_message_at = $3 WHERE tenant = $1 AND id = $2",
                             tenant_id, conv["id"], clock.now())
        done = await handoff_locked(conv, reason, actor_label=actor_label)
        if actor is not None:
            await record_audit(actor, tenant_id, "conversation.handoff", "conversation", conv["id"],
                               {"reason": reason, "status": done["status"]})
        return done
