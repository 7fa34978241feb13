"""Jobs of the WeChat gateway. They take ids, are registered by name and are safe to run twice."""

from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

from siyu.core.clock import now
from siyu.wechat import consents, holds, media, protocol, windows
from siyu.wechat.outbound import runtime_of, settle_stale
from siyu.wechat.protocol import Account
from siyu.wechat.services import record_inbound
from siyu.wechat.tables import InboundEvent, KfCursor

log = logging.getLogger("siyu.wechat.jobs")

SWEEP_AFTER_SECONDS = 30
SWEEP_BATCH = 500
KF_LOCK_SECONDS = 120
RESUME_BATCH = 256  # events per job when a reactivated tenant's waiting events are handed over

RESUME_JOB = "wechat.resume_tenant"  # enqueued by name by tenants.do_set_tenant_status on reactivation

_EVENT_COLUMNS = (
    InboundEvent.id, InboundEvent.tenant, InboundEvent.channel, InboundEvent.channel_account, InboundEvent.kind,
    InboundEvent.external_id, InboundEvent.occurred_at, InboundEvent.processed_at,
    InboundEvent.tenant.status.as_alias("tenant_status"),
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
    racing the batch) are skipped. Every step is idempotent, so a crash midway is safe to repeat.

    A suspended tenant's events are left unprocessed (no reply window, contact, conversation, bot answer or
    routing comes of them); `resume_tenant` hands them over when the tenant is reactivated."""
    rows = await InboundEvent.select(*_EVENT_COLUMNS).where(InboundEvent.id.is_in(event_ids))
    if not rows:
        return None
    todo = [r for r in rows if r["processed_at"] is None and r["tenant_status"] != "suspended"]
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
    media_ids = [r["id"] for r in todo if r["kind"] == "message"]
    if media_ids:  # customers' pictures, voice and videos: fetched from WeChat by their media id, once each
        rows = await InboundEvent.select(
            InboundEvent.id, InboundEvent.tenant, InboundEvent.channel, InboundEvent.external_id,
            InboundEvent.msg_type, InboundEvent.payload,
        ).where(InboundEvent.id.is_in(media_ids) & InboundEvent.msg_type.is_in(list(media.MEDIA_TYPES))).output(
            load_json=True)
        for tenant_id, row_id in await media.note_inbound(
                [{**r, "details": (r["payload"] or {}).get("details") or {}} for r in rows]):
            await media.enqueue_fetch(ctx["redis"], tenant_id, row_id)
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
                for raw in page.get("msg_list", []):
                    msg = protocol.replace_unstorable(raw)  # a NUL in a customer's text must not fail the sync
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
    """Enqueue events that were stored but never processed (Redis was down, a worker died), except a
    suspended tenant's, which wait for its reactivation; enqueue again the sends held for tenants active
    again (should their reactivation's job have been lost); and mark sends that died mid-call as unknown."""
    rows = await InboundEvent.select(InboundEvent.id).where(
        InboundEvent.processed_at.is_null()
        & (InboundEvent.received_at < now() - timedelta(seconds=SWEEP_AFTER_SECONDS))
        & (InboundEvent.tenant.status != "suspended")
    ).order_by(InboundEvent.received_at).limit(SWEEP_BATCH)
    redis = ctx["redis"]
    for r in rows:
        await redis.enqueue_job("wechat.process_inbound", r["id"], _job_id=f"wechat.inbound:{r['id']}")
    if rows:
        log.info("sweeper re-enqueued %s inbound events", len(rows))
    released = await holds.release(redis)
    if released:
        log.info("sweeper re-enqueued %s sends held while their tenants were suspended", released)
    await settle_stale()  # sends whose run died: asked WeChat → unknown (never sent again), never asked → retry
    await media.sweep(redis)  # media whose fetch job was lost, or that WeChat no longer keeps
    return len(rows)


async def resume_tenant(ctx: dict[str, Any], tenant_id: int) -> dict[str, int]:
    """A reactivated tenant: hand the events that waited to the worker (in batches, oldest first; each is
    processed once, as always), then the sends held meanwhile. Safe to run twice; does nothing while the
    tenant is (again) suspended."""
    if await holds.tenant_suspended(tenant_id):
        return {"events": 0, "sends": 0}
    redis = ctx["redis"]
    run = str(ctx.get("job_id") or now().timestamp())  # a second reactivation queues its own batches
    last, events = 0, 0
    while True:
        ids = [r["id"] for r in await InboundEvent.select(InboundEvent.id).where(
            (InboundEvent.tenant == tenant_id) & InboundEvent.processed_at.is_null() & (InboundEvent.id > last)
        ).order_by(InboundEvent.id).limit(RESUME_BATCH)]
        if not ids:
            break
        await redis.enqueue_job("wechat.process_inbound_batch", ids, _job_id=f"wechat.inbound-resume:{ids[0]}:{run}")
        events += len(ids)
        last = ids[-1]
    sends = await holds.release(redis, tenant_id)
    log.info("tenant %s reactivated: %s waiting events and %s held sends handed over", tenant_id, events, sends)
    return {"events": events, "sends": sends}
