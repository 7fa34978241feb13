"""Jobs of the WeChat gateway. They take ids, are registered by name and are safe to run twice."""

from __future__ import annotations

import logging
import secrets
from typing import Any

from siyu.core.clock import now
from siyu.wechat import consents, protocol, windows
from siyu.wechat.outbound import runtime_of, settle_stale
from siyu.wechat.protocol import Account
from siyu.wechat.services import record_inbound
from siyu.wechat.tables import InboundEvent, KfCursor

log = logging.getLogger("siyu.wechat.jobs")

SWEEP_AFTER_SECONDS = 30
SWEEP_BATCH = 500
KF_LOCK_SECONDS = 120



_EVENT_COLUMNS = (
    InboundEvent.id, InboundEvent.tenant, InboundEvent.channel, InboundEvent.channel_account, InboundEvent.kind,
    InboundEvent.external_id, InboundEvent.occurred_at, InboundEvent.processed_at,
)


async def process_inbound(ctx: dict[str, Any], event_id: int) -> str:
    """Do the work behind one stored callback (the sweeper's unit). Safe to run twice."""
    done = await _process(ctx, [event_id])
    if done is None:
        return "missing"
    return "processed" if done else "already processed"


async def process_inbound_batch(ctx: dict[str, Any], event_ids: list[int]) -> int:
    """The gateway's unit: the events one group commit stored. Returns how many this run processed."""
    return await _process(ctx, event_ids) or 0


async def _process(ctx: dict[str, Any], event_ids: list[int]) -> int | None:
    """Each event is marked processed exactly once; events already processed (a second run, the sweeper
    racing the batch) are skipped. Every step is idempotent, so a crash midway is safe to repeat."""
    rows = await InboundEvent.select(*_EVENT_COLUMNS).where(InboundEvent.id.is_in(event_ids))
    if not rows:
        return None
    todo = [r for r in rows if r["processed_at"] is None]
    if not todo:
        return 0
    ids = [r["id"] for r in todo]
    # Opening a reply window is idempotent: a later run sees the same or a newer window.
    await windows.note_inbound_many([(r["tenant"], r["channel"], r["external_id"], r["kind"], r["occurred_at"])
                                     for r in todo])
    consent_ids = [r["id"] for r in todo if r["kind"] == "subscription_consent"]
    if consent_ids:  # counted once per callback, so a repeat of this step adds nothing
        await consents.note_inbound(await InboundEvent.select(
            InboundEvent.id, InboundEvent.tenant, InboundEvent.channel, InboundEvent.external_id, InboundEvent.payload,
        ).where(InboundEvent.id.is_in(consent_ids)).output(load_json=True))
    kf_ids = [r["id"] for r in todo if r["kind"] == "kf_notification"]
    if kf_ids:
        for row in await InboundEvent.select(InboundEvent.id, InboundEvent.tenant, InboundEvent.channel_account,
                                             InboundEvent.payload).where(InboundEvent.id.is_in(kf_ids)).output(
                load_json=True):
            details = row["payload"].get("details", {})
            await ctx["redis"].enqueue_job("wechat.kf_sync", row["tenant"], row["channel_account"],
                                           details.get("open_kfid", ""), details.get("sync_token", ""),
                                           _job_id=f"wechat.kf_sync:{row['id']}")
    # Identity resolution and the timeline belong to the contacts domain: one job per batch, enqueued by
    # name so that wechat never imports it. Enqueued before the events are marked processed: if Redis
    # refuses, this job fails and is retried (or swept), instead of leaving events no contact ever sees.
    # The job id keeps a re-run of this batch from queueing a second copy.
    await ctx["redis"].enqueue_job("contacts.resolve_inbound", ids, _job_id=f"contacts.resolve:{ids[0]}")
    done = await InboundEvent.update({InboundEvent.processed_at: now(), InboundEvent.last_error: "",
                                      InboundEvent.attempts: InboundEvent.attempts + 1}).where(
        InboundEvent.id.is_in(ids) & InboundEvent.processed_at.is_null()).returning(InboundEvent.id)
    return len(done)


async def kf_sync(ctx: dict[str, Any], tenant_id: int, account_id: int | None, open_kfid: str,
                  sync_token: str) -> int:
    """Fetch 微信客服 messages after the stored cursor until WeChat has no more, store each once, keep
    the cursor. One sync per open_kfid at a time: a notification that arrives meanwhile marks the
    account dirty and the running sync goes round once more."""
    redis = ctx["redis"]
    lock_key = f"siyu:kf:lock:{tenant_id}:{open_kfid}"
    dirty_key = f"siyu:kf:dirty:{tenant_id}:{open_kfid}"
    await redis.set(dirty_key, sync_token or "1", ex=600)
    mine = secrets.token_hex(8)
    if not await redis.set(lock_key, mine, nx=True, ex=KF_LOCK_SECONDS):
        return 0  # the running sync will see the dirty flag
    stored = 0
    try:
        client = await runtime_of(ctx).client(tenant_id, "wecom")
        while await redis.getdel(dirty_key) is not None:
            cursor_row = await KfCursor.select(KfCursor.cursor).where(
                (KfCursor.tenant == tenant_id) & (KfCursor.open_kfid == open_kfid)).first()
            cursor = cursor_row["cursor"] if cursor_row else ""
            while True:
                page = await client.kf_sync_msg(open_kfid, cursor, token=sync_token)
                account = Account(tenant_id, account_id or 0, "wecom", "", "", "", "safe", "xml")
                for msg in page.get("msg_list", []):
                    event = protocol.normalize_kf(msg)
                    recorded = await record_inbound(account, event, msg)
                    if recorded.is_new:
                        stored += 1
                        await redis.enqueue_job("wechat.process_inbound", recorded.event_id,
                                                _job_id=f"wechat.inbound:{recorded.event_id}")
                cursor = str(page.get("next_cursor") or cursor)
                await KfCursor.raw(
                    "INSERT INTO wechat_kf_cursor (tenant, open_kfid, cursor, synced_at) VALUES ({}, {}, {}, now()) "
                    "ON CONFLICT (tenant, open_kfid) DO UPDATE SET cursor = EXCLUDED.cursor, synced_at = now()",
                    tenant_id, open_kfid, cursor)
                await redis.expire(lock_key, KF_LOCK_SECONDS)
                if not page.get("has_more"):
                    break
    finally:
        if (await redis.get(lock_key)) in (mine, mine.encode()):
            await redis.delete(lock_key)
    return stored


async def sweep_inbound(ctx: dict[str, Any]) -> int:
    """Enqueue events that were stored but never processed (Redis was down, a worker died), and mark
    sends that died mid-call as unknown."""
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
    await settle_stale()  # sends whose run died: asked WeChat → unknown (never sent again), never asked → retry
    return len(rows)
