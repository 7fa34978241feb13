"""The narrow read other domains use to see stored inbound events (contacts resolves identities from
them). Plain dicts: callers depend on these keys, not on the gateway's tables."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from siyu.wechat.tables import InboundEvent


async def load_normalized(event_ids: Sequence[int]) -> list[dict[str, Any]]:
    """The events with these ids, oldest first: id, tenant, channel (oa | mp | wecom), kind (protocol's
    normalised kind), msg_type, external_id (openid / external_userid), occurred_at, details."""
    if not event_ids:
        return []
    rows = await InboundEvent.select(
        InboundEvent.id, InboundEvent.tenant, InboundEvent.channel, InboundEvent.kind, InboundEvent.msg_type,
        InboundEvent.external_id, InboundEvent.occurred_at, InboundEvent.payload,
    ).where(InboundEvent.id.is_in(list(event_ids))).order_by(
        InboundEvent.occurred_at, InboundEvent.id).output(load_json=True)
    return [{"id": r["id"], "tenant": r["tenant"], "channel": r["channel"], "kind": r["kind"],
             "msg_type": r["msg_type"], "external_id": r["external_id"], "occurred_at": r["occurred_at"],
             "details": dict((r["payload"] or {}).get("details") or {})} for r in rows]
