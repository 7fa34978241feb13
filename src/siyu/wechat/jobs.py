"""Jobs of the WeChat gateway. They take ids, are registered by name and are safe to run twice."""

from __future__ import annotations

import logging
from typing import Any

from siyu.core.clock import now
from siyu.wechat.tables import InboundEvent

log = logging.getLogger("siyu.wechat.jobs")

SWEEP_AFTER_SECONDS = 30
SWEEP_BATCH = 500


async def process_inbound(ctx: dict[str, Any], event_id: int) -> str:
    """Do the work behind one stored callback. Marks the event processed exactly once; a second run
    (arq retries, the sweeper) finds it processed and stops."""
    row = await InboundEvent.select(InboundEvent.id, InboundEvent.kind, InboundEvent.processed_at).where(
        InboundEvent.id == event_id).first()
    if row is None:
        return "missing"
    if row["processed_at"] is not None:
        return "already processed"
    await InboundEvent.update({InboundEvent.attempts: InboundEvent.attempts + 1}).where(InboundEvent.id == event_id)
    # Identity resolution, timelines and conversations hook in here as those domains arrive.
    done = await InboundEvent.update({InboundEvent.processed_at: now(), InboundEvent.last_error: ""}).where(
        (InboundEvent.id == event_id) & InboundEvent.processed_at.is_null()).returning(InboundEvent.id)
    return "processed" if done else "already processed"


async def sweep_inbound(ctx: dict[str, Any]) -> int:
    """Enqueue events that were stored but never processed (Redis was down, a worker died)."""
    rows = await InboundEvent.raw(
        "SELECT id FROM wechat_inbound_event WHERE processed_at IS NULL "
        "AND received_at < now() - make_interval(secs => {}) ORDER BY received_at LIMIT {}",
        SWEEP_AFTER_SECONDS, SWEEP_BATCH,
    )
    redis = ctx["redis"]
    for r in rows:
        await redis.enqueue_job("wechat.process_inbound", r["id"], _job_id=f"wechat.inbound:{r['id']}")
    if rows:
        log.info("sweeper re-enqueued %s inbound events", len(rows))
    return len(rows)
