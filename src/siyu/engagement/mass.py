"""OA mass sends: the deliveries that chose the mass channel in one slot (same source, step and 10 seconds)
go out as one `message/mass/send` to their openids, with the batch's own `clientmsgid`, through the send-once
ledger. The batch settles its rows: sent, failed or unknown together. WeChat's `MASSSENDJOBFINISH` push gives
the batch's totals afterwards (aggregates only; Siyu's own count of 4 a person a month is what keeps people
under WeChat's cap).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timedelta
from typing import Any

from siyu.contacts.reach import reach_of
from siyu.core import clock, db, effects
from siyu.engagement import lane, ledger
from siyu.engagement.ledger import Row
from siyu.timeline import services as timeline
from siyu.wechat import outbound

log = logging.getLogger("siyu.engagement.mass")

SLOT_SECONDS = 10
SEND_JOB = "engagement.send_mass"
MAX_RECIPIENTS = 10_000  # WeChat's touser limit


def clientmsgid(batch_id: int) -> str:
    return f"siyu-mass-{batch_id}"


async def join(tenant_id: int, row: Row, text: str, now: datetime) -> int:
    """The open batch of this row's slot (made if needed), counting the row in; inside the caller's
    transaction, which moves the row to `sending` with it. A batch already leaving takes no more rows: the row
    goes into a batch of its own slot suffix."""
    slot = f"{row.source_kind}:{row.source_id}:{row.step}:{int(now.timestamp()) // SLOT_SECONDS}"
    closes = datetime.fromtimestamp((int(now.timestamp()) // SLOT_SECONDS + 1) * SLOT_SECONDS, now.tzinfo)
    for n in range(100):
        key = slot if n == 0 else f"{slot}:{n}"
        got = await db.fetchrow(
            "INSERT INTO engagement_mass_batch (tenant, slot_key, state, recipients, text, msg_id, closes_at, result, "
            "created_at) VALUES ($1, $2, 'collecting', 1, $3, '', $4, '{}'::jsonb, $5) "
            "ON CONFLICT (tenant, slot_key) DO UPDATE SET recipients = engagement_mass_batch.recipients + 1 "
            "WHERE engagement_mass_batch.state = 'collecting' AND engagement_mass_batch.recipients < $6 "
            "RETURNING id, (xmax = 0) AS created", tenant_id, key, text[:2000], closes, now, MAX_RECIPIENTS)
        if got is not None:
            if got["created"]:
                await effects.enqueue(SEND_JOB, tenant_id, int(got["id"]), job_id=f"engagement:mass:{got['id']}",
                                      defer_by=max(0.0, (closes - now).total_seconds()) + 1, queue=lane.queue())
            return int(got["id"])
    raise RuntimeError(f"no open mass batch for {slot}")


async def send(runtime: outbound.WeChatRuntime, tenant_id: int, batch_id: int) -> str:
    """Send one closed batch once; safe to run again (the ledger key and WeChat's clientmsgid both hold)."""
    now = clock.now()
    async with db.transaction():
        b = await db.fetchrow("SELECT id, state, text, closes_at FROM engagement_mass_batch WHERE tenant = $1 "
                              "AND id = $2 FOR UPDATE", tenant_id, batch_id)
        if b is None or b["state"] not in ("collecting", "sending"):
            return "settled"
        if b["state"] == "collecting":
            if b["closes_at"] > now:
                return "open"
            await db.execute("UPDATE engagement_mass_batch SET state = 'sending' WHERE id = $1", batch_id)
    rows = [r for r in await _rows(tenant_id, batch_id) if r.state == "sending"]
    reach = await reach_of(tenant_id, [r.contact for r in rows])
    targets: dict[int, str] = {}
    for r in rows:
        ident = reach[r.contact].identity("oa") if r.contact in reach else None
        if ident is None:
            await ledger.transition(r, "sending", "skipped", now, reason="not_following",
                                    skips=[*r.skips, {"channel": "mass", "reason": "not_following"}])
        else:
            targets[r.id] = ident.external_id
    openids = sorted(set(targets.values()))
    if len(openids) < 2:  # WeChat's mass/send takes 2 to 10,000 openids
        for r in rows:
            if r.id in targets:
                await ledger.transition(r, "sending", "skipped", now, reason="mass_needs_two",
                                        skips=[*r.skips, {"channel": "mass", "reason": "mass_needs_two"}])
        await _settle_batch(batch_id, "failed", "")
        return "too_few"
    delivery = await outbound.deliver_mass(runtime, tenant_id, openids, b["text"], f"engagement:mass:{batch_id}",
                                           clientmsgid(batch_id))
    state = {"refused": "failed", "retryable": "retry"}.get(delivery.state, delivery.state)
    ids = list(targets)
    if state == "sent":
        msg_id = await outbound.mass_msg_id(tenant_id, f"engagement:mass:{batch_id}")
        sent = await ledger.transition_many(ids, "sending", "sent", now, tenant_id=tenant_id, sent_at=now,
                                            wechat_ref=msg_id)
        await _settle_batch(batch_id, "sent", msg_id, now)
        for r in sent:
            await timeline.append(tenant_id, r.contact, "broadcast_sent", "oa", now,
                                  {"source": r.source, "step": r.step, "delivery": r.id, "carrier": "oa_mass",
                                   "text": b["text"]}, f"engagement:{r.id}")
        return "sent"
    if state == "retry":
        await effects.enqueue(SEND_JOB, tenant_id, batch_id, job_id=f"engagement:mass:{batch_id}:{int(now.timestamp())}",
                              defer_by=max(60, getattr(delivery, "retry_after", 0) or 0), queue=lane.queue())
        return "retry"
    if state == "pending":
        return "pending"
    final = "unknown" if state == "unknown" else "failed"
    await ledger.transition_many(ids, "sending", final, now, tenant_id=tenant_id,
                                 reason=(delivery.reason or "refused")[:40], errcode=delivery.errcode)
    await _settle_batch(batch_id, final, "")
    return final


async def _rows(tenant_id: int, batch_id: int) -> list[Row]:
    ids = [int(r["id"]) for r in await db.fetch(
        "SELECT id FROM engagement_delivery WHERE tenant = $1 AND batch = $2", tenant_id, batch_id)]
    return await ledger.by_ids(ids)


async def _settle_batch(batch_id: int, state: str, msg_id: str, at: datetime | None = None) -> None:
    await db.execute("UPDATE engagement_mass_batch SET state = $2, msg_id = $3, sent_at = $4 WHERE id = $1",
                     batch_id, state, msg_id, at)


async def finished(tenant_id: int, details: dict[str, Any], at: datetime) -> bool:
    """WeChat's MASSSENDJOBFINISH push for one of our batches: its totals, kept on the batch."""
    msg_id = str(details.get("msg_id") or "")
    if not msg_id:
        return False
    row = await db.fetchrow(
        "UPDATE engagement_mass_batch SET result = $3::jsonb, finished_at = $4 WHERE tenant = $1 AND msg_id = $2 "
        "RETURNING id", tenant_id, msg_id, json.dumps(details), at)
    return row is not None


async def due_batches(now: datetime, limit: int = 100) -> list[tuple[int, int]]:
    """Batches whose slot closed (a second past) and that are still waiting: (tenant, id), for the sweeper."""
    rows = await db.fetch(
        "SELECT tenant, id FROM engagement_mass_batch WHERE state IN ('collecting', 'sending') AND closes_at < $1 "
        "ORDER BY closes_at LIMIT $2", now - timedelta(seconds=30), limit)
    return [(int(r["tenant"]), int(r["id"])) for r in rows]
