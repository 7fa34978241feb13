"""The narrow door other domains use to stored inbound events: contacts resolves identities from them,
and erases a person's callbacks when the person asks (or unfollows). Plain dicts: callers depend on these
keys, not on the gateway's tables."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from siyu.core import db
from siyu.wechat import media
from siyu.wechat.tables import InboundEvent


async def load_normalized(event_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The events with these ids, oldest first: id, tenant, channel (oa | mp | wecom), kind (protocol's
    normalised kind), msg_type, external_id (openid / external_userid), occurred_at, received_at (when
    Siyu stored it), details."""
    if not event_ids:
        return []
    rows = await InboundEvent.select(
        InboundEvent.id, InboundEvent.tenant, InboundEvent.channel, InboundEvent.kind, InboundEvent.msg_type,
        InboundEvent.external_id, InboundEvent.occurred_at, InboundEvent.received_at, InboundEvent.payload,
    ).where(InboundEvent.id.is_in(list(event_ids))).order_by(
        InboundEvent.occurred_at, InboundEvent.id).output(load_json=True)
    return [{"id": r["id"], "tenant": r["tenant"], "channel": r["channel"], "kind": r["kind"],
             "msg_type": r["msg_type"], "external_id": r["external_id"], "occurred_at": r["occurred_at"],
             "received_at": r["received_at"], "details": dict((r["payload"] or {}).get("details") or {})} for r in rows]


# The parts of a stored callback that say nothing about the person: what happened, when, through which
# button, QR scene or rep. Everything else (what they wrote, sent, where they were) goes on erasure.
NON_PERSONAL_FIELDS = ("ToUserName", "MsgType", "Event", "EventKey", "CreateTime", "MsgId", "ChangeType",
                       "State", "UserID", "AgentID", "OpenKfId", "open_kfid", "msgtype", "send_time", "origin")
NON_PERSONAL_DETAILS = ("scene", "key", "state", "user_id", "change_type", "source", "origin", "open_kfid",
                        "event_type")


async def erase_personal_payloads(tenant_id: int, channel: str, external_id: str,
                                  until: datetime | None = None) -> int:
    """Strip the stored callbacks of one person (on one channel) down to their non-personal fields: an
    unfollow (those received up to `until`) or a data-subject erasure (all). Callbacks still waiting for
    processing are left alone (the jobs need them; they are erased by the timeline's erasure once there).
    Returns how many were erased; a second run erases none."""
    status = await db.execute(
        "UPDATE wechat_inbound_event SET payload = jsonb_build_object("
        "  'erased', true,"
        "  'fields', COALESCE((SELECT jsonb_object_agg(key, value) FROM jsonb_each(payload->'fields') "
        "             WHERE key = ANY($5::text[])), '{}'::jsonb),"
        "  'details', COALESCE((SELECT jsonb_object_agg(key, value) FROM jsonb_each(payload->'details') "
        "             WHERE key = ANY($6::text[])), '{}'::jsonb)) "
        "WHERE tenant = $1 AND channel = $2 AND external_id = $3 AND processed_at IS NOT NULL "
        "AND ($4::timestamptz IS NULL OR occurred_at <= $4) AND NOT payload ? 'erased'",
        tenant_id, channel, external_id, until, list(NON_PERSONAL_FIELDS), list(NON_PERSONAL_DETAILS))
    erased = int(status.split()[-1])
    # What Siyu sent them: the send-once ledger keeps its keys, states and times (nothing is sent twice),
    # not the words. Sends that may still go out keep theirs until they settle.
    await db.execute(
        "UPDATE wechat_outbound SET payload = jsonb_strip_nulls(jsonb_build_object('erased', true, "
        "'open_kfid', payload->'open_kfid')) "
        "WHERE tenant = $1 AND channel = $2 AND external_id = $3 AND state IN ('sent', 'failed', 'unknown') "
        "AND ($4::timestamptz IS NULL OR created_at <= $4) AND NOT payload ? 'erased'",
        tenant_id, channel, external_id, until)
    # And the pictures, voice and videos they sent or were sent: rows and files.
    await media.erase_person(tenant_id, channel, external_id, until)
    return erased
