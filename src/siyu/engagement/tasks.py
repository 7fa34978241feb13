"""1:1 tasks through a customer's WeCom rep: WeChat sends nothing until the rep confirms the task in the WeCom
client, and pushes no result, so Siyu asks (`get_groupmsg_send_result`) about each waiting row at most once a
minute: sent, not sent (no longer their contact; the customer's monthly receive limit), or still waiting. A
task the rep has not confirmed within three days is recorded as not sent."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from siyu.core import clock
from siyu.core.errors import NotFound, WeChatError
from siyu.engagement import ledger
from siyu.timeline import services as timeline
from siyu.wechat import outbound, owner_tasks

log = logging.getLogger("siyu.engagement.tasks")

ASK_EVERY_SECONDS = 60
DEADLINE = timedelta(days=3)


async def poll(runtime: outbound.WeChatRuntime, limit: int = 200, ask_every: float = ASK_EVERY_SECONDS) -> int:
    """Ask about the waiting tasks least recently asked about; returns how many rows were settled."""
    now = clock.now()
    settled = 0
    for row in await ledger.waiting_for_rep(now, ask_every, limit):
        try:
            # The ledger row records WeChat's answer (one writer of the task columns, shared with the inbox).
            result = await owner_tasks.poll_owner_task(runtime, row.tenant, row.outbound_key)
        except (WeChatError, NotFound) as exc:
            log.info("task of delivery %s: %r; asked again later", row.id, exc)
            continue
        if result is not None and result.status == "sent":
            at = result.sent_at or now
            moved = await ledger.transition(row, "waiting_for_rep", "sent", now, sent_at=at)
            if moved is not None:
                settled += 1
                await timeline.append(row.tenant, row.contact, "broadcast_sent", "wecom", at,
                                      {"source": row.source, "step": row.step, "delivery": row.id,
                                       "carrier": "wecom_task", "rep": row.sender}, f"engagement:{row.id}")
        elif result is not None and result.status == "not_sent":
            settled += await _not_sent(row, result.reason, now)
        elif now - (row.counted_at or now) > DEADLINE:
            settled += await _not_sent(row, "rep_did_not_confirm", now)
    return settled


async def _not_sent(row: ledger.Row, reason: str, now: datetime) -> int:
    moved = await ledger.transition(row, "waiting_for_rep", "not_sent", now, reason=reason)
    if moved is None:
        return 0
    await timeline.append(row.tenant, row.contact, "broadcast_failed", "wecom", now,
                          {"source": row.source, "step": row.step, "delivery": row.id, "carrier": "wecom_task",
                           "reason": reason}, f"engagement:{row.id}")
    return 1
