"""One-time subscription consents (订阅消息): the customer taps "allow" in a popup and WeChat lets the
account send that template to them once. WeChat has no API that says how many are left, so Siyu counts
them: each `accept` in a `subscribe_msg_popup_event` push adds one (once per callback, whatever retries
and re-runs do), each send takes one before calling WeChat (so Siyu refuses what WeChat would refuse with
43101), a send WeChat did not take gives it back, and a 43101 from WeChat sets the count to zero.
Reservations are single conditional UPDATEs, safe under concurrency, as the reply windows'.
"""

from __future__ import annotations

from typing import Any

from siyu.core import db


async def note_inbound(events: list[dict[str, Any]]) -> int:
    """Count the consents in stored `subscription_consent` events (each with its `id`, `tenant`, `channel`,
    `external_id` and `payload.details.templates`). Returns how many were new."""
    added = 0
    for event in events:
        templates = ((event.get("payload") or {}).get("details") or {}).get("templates") or []
        for k, item in enumerate(templates):
            if item.get("status") != "accept" or not item.get("template_id") or not event.get("external_id"):
                continue
            async with db.transaction():
                grant = await db.fetchrow(
                    "INSERT INTO wechat_consent_grant (tenant, source_key, created_at) VALUES ($1, $2, now()) "
                    "ON CONFLICT (tenant, source_key) DO NOTHING RETURNING id",
                    event["tenant"], f"wechat:{event['id']}:{k}")
                if grant is None:
                    continue  # counted before
                await db.execute(
                    "INSERT INTO wechat_subscribe_consent (tenant, channel, external_id, template_id, remaining, "
                    "updated_at) VALUES ($1, $2, $3, $4, 1, now()) ON CONFLICT (tenant, channel, external_id, "
                    "template_id) DO UPDATE SET remaining = wechat_subscribe_consent.remaining + 1, updated_at = now()",
                    event["tenant"], event["channel"], event["external_id"], str(item["template_id"])[:64])
                added += 1
    return added


async def remaining(tenant_id: int, channel: str, external_id: str, template_id: str) -> int:
    row = await db.fetchrow(
        "SELECT remaining FROM wechat_subscribe_consent WHERE tenant = $1 AND channel = $2 AND external_id = $3 "
        "AND template_id = $4", tenant_id, channel, external_id, template_id)
    return int(row["remaining"]) if row else 0


async def reserve(tenant_id: int, channel: str, external_id: str, template_id: str) -> bool:
    """Take one consent for a send; False when none is left (WeChat would answer 43101)."""
    row = await db.fetchrow(
        "UPDATE wechat_subscribe_consent SET remaining = remaining - 1, updated_at = now() WHERE tenant = $1 "
        "AND channel = $2 AND external_id = $3 AND template_id = $4 AND remaining > 0 RETURNING remaining",
        tenant_id, channel, external_id, template_id)
    return row is not None


async def release(tenant_id: int, channel: str, external_id: str, template_id: str) -> None:
    """Give back a consent a send took when WeChat did not take the message."""
    await db.execute(
        "UPDATE wechat_subscribe_consent SET remaining = remaining + 1, updated_at = now() WHERE tenant = $1 "
        "AND channel = $2 AND external_id = $3 AND template_id = $4", tenant_id, channel, external_id, template_id)


async def clear(tenant_id: int, channel: str, external_id: str, template_id: str) -> None:
    """WeChat answered 43101: whatever Siyu counted, none is left."""
    await db.execute(
        "UPDATE wechat_subscribe_consent SET remaining = 0, updated_at = now() WHERE tenant = $1 AND channel = $2 "
        "AND external_id = $3 AND template_id = $4", tenant_id, channel, external_id, template_id)
