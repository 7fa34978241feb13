"""Stored callbacks are processed by the worker once, and the sweeper rescues what was never queued."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from arq.worker import Worker

from siyu import worker as worker_root
from siyu.core.clock import now
from siyu.core.redis import JOB_SERIALIZATION, arq_pool
from siyu.tenants import services as tenants
from siyu.wechat.tables import InboundEvent
from tests.conftest import OA, Client, TenantFixture
from tests.wechat_payloads import Sender, text


async def run_worker() -> Worker:
    w = Worker(functions=worker_root.FUNCTIONS, redis_settings=worker_root.redis_settings(), burst=True, **JOB_SERIALIZATION,
               handle_signals=False, poll_delay=0.05, max_jobs=10)
    await w.main()
    await w.close()
    return w


@pytest.fixture
async def oa(acme: TenantFixture) -> Sender:
    await tenants.do_link_channel(tenants.Actor.cli(), acme.id, "oa", OA)
    return Sender("acme", "oa", OA["app_id"], OA["token"], OA["aes_key"], "safe")


async def test_worker_processes_each_stored_event_once(client: Client, oa: Sender, app: Any) -> None:
    for i in range(5):
        cb = oa.callback(text(f"o{i}", "hi", 100 + i))
        for _ in range(2):  # a retry for each
            await client.post(cb.url, content=cb.body)
    await app.state.ingestor.settle()
    w = await run_worker()
    # One batch job per sequential callback, the contacts job each batch enqueues, the inbox and re-engagement
    # jobs each contacts job enqueues, and the profile enrichment each new OA identity gets (contacts.enrich_identity).
    assert w.jobs_complete == 25 and w.jobs_failed == 0
    rows = await InboundEvent.select(InboundEvent.processed_at, InboundEvent.attempts)
    assert len(rows) == 5 and all(r["processed_at"] is not None and r["attempts"] == 1 for r in rows)


async def test_running_the_job_twice_has_the_same_effect(client: Client, oa: Sender, redis: Any) -> None:
    from siyu.wechat.jobs import process_inbound

    cb = oa.callback(text("o1", "hi", 1))
    await client.post(cb.url, content=cb.body)
    [row] = await InboundEvent.select(InboundEvent.id)
    pool = await arq_pool()
    try:
        ctx = {"redis": pool}
        assert await process_inbound(ctx, row["id"]) == "processed"
        first = await InboundEvent.select(InboundEvent.processed_at, InboundEvent.attempts).first()
        assert await process_inbound(ctx, row["id"]) == "already processed"
        assert await InboundEvent.select(InboundEvent.processed_at, InboundEvent.attempts).first() == first
        assert await process_inbound(ctx, 987654321) == "missing"
    finally:
        await pool.aclose()
    # The contacts job was queued once, by name, for the event.
    assert await redis.keys("arq:job:contacts.resolve:*") == [f"arq:job:contacts.resolve:{row['id']}".encode()]


async def test_sweeper_enqueues_events_that_never_reached_the_queue(client: Client, oa: Sender, app: Any,
                                                                   redis: Any) -> None:
    async def redis_down(ids: list[int]) -> None:
        raise ConnectionError("redis down")

    real, app.state.ingestor._enqueue = app.state.ingestor._enqueue, redis_down
    try:
        for i in range(3):
            cb = oa.callback(text(f"o{i}", "lost?", 200 + i))
            assert (await client.post(cb.url, content=cb.body)).text == "success"
        await app.state.ingestor.settle()
    finally:
        app.state.ingestor._enqueue = real
    # Only events older than the grace period are swept (a fresh one is probably being processed).
    await InboundEvent.update({InboundEvent.received_at: now() - timedelta(minutes=5)}).where(
        InboundEvent.external_id.is_in(["o0", "o1"]))
    pool = await arq_pool()
    try:
        from siyu.wechat.jobs import sweep_inbound

        assert await sweep_inbound({"redis": pool}) == 2
        assert await sweep_inbound({"redis": pool}) == 2  # queued twice, but arq keeps one job per event id
        assert len(await redis.keys("arq:job:wechat.inbound:*")) == 2
    finally:
        await pool.aclose()
    w = await run_worker()
    assert w.jobs_complete == 10  # the two swept events, their contacts, inbox, re-engagement and enrichment jobs
    pending = await InboundEvent.select(InboundEvent.external_id).where(InboundEvent.processed_at.is_null())
    assert [r["external_id"] for r in pending] == ["o2"]
