"""Background jobs, run by a real arq worker (burst mode) against the test Redis."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from arq.connections import ArqRedis
from arq.worker import Worker

from siyu import worker as siyu_worker
from siyu.core.clock import now
from siyu.core.redis import JOB_SERIALIZATION, arq_pool
from siyu.tenants import services as svc
from siyu.tenants import staff as staff_svc
from siyu.tenants.tables import Invitation

PURGE = "tenants.purge_expired_invitations"
# arq's own Worker.close() calls redis-py's deprecated close(); not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Call to deprecated close:DeprecationWarning")


@pytest.fixture
async def queue() -> AsyncIterator[ArqRedis]:
    pool = await arq_pool()
    yield pool
    await pool.aclose()


async def run_worker() -> int:
    """Run every queued job with the worker's registered functions; returns how many completed."""
    w = Worker(functions=siyu_worker.FUNCTIONS, redis_settings=siyu_worker.redis_settings(), burst=True, **JOB_SERIALIZATION,
               handle_signals=False, poll_delay=0.05)
    try:
        return await w.run_check()  # raises when a job failed
    finally:
        await w.close()


async def invitation(tenant_id: int, email: str, expired_days_ago: float, accepted: bool = False,
                     revoked: bool = False) -> int:
    inv_id, _ = await staff_svc.do_invite(svc.Actor.cli(), tenant_id, {"email": email, "role": "agent"})
    changes: dict[Any, Any] = {Invitation.expires_at: now() - timedelta(days=expired_days_ago)}
    if accepted:
        changes[Invitation.accepted_at] = now() - timedelta(days=expired_days_ago + 1)
    if revoked:
        changes[Invitation.revoked_at] = now() - timedelta(days=expired_days_ago + 1)
    await Invitation.update(changes).where(Invitation.id == inv_id)
    return inv_id


async def remaining() -> set[str]:
    return {r["email"] for r in await Invitation.select(Invitation.email)}


async def test_purge_expired_invitations_deletes_only_old_unused_ones(queue: ArqRedis) -> None:
    acme = await svc.do_create_tenant(svc.Actor.cli(), {"slug": "acme", "name": "Acme"})
    globex = await svc.do_create_tenant(svc.Actor.cli(), {"slug": "globex", "name": "Globex"})
    await invitation(acme.id, "old@acme.test", expired_days_ago=45)
    await invitation(globex.id, "old@globex.test", expired_days_ago=31)
    await invitation(acme.id, "old-revoked@acme.test", expired_days_ago=60, revoked=True)
    await invitation(acme.id, "old-accepted@acme.test", expired_days_ago=90, accepted=True)
    await invitation(acme.id, "recently-expired@acme.test", expired_days_ago=29)
    await invitation(acme.id, "open@acme.test", expired_days_ago=-7)  # still valid for a week
    kept = {"old-accepted@acme.test", "recently-expired@acme.test", "open@acme.test"}

    first = await queue.enqueue_job(PURGE)
    assert first is not None
    assert await run_worker() == 1
    assert await first.result(timeout=5) == 3
    assert await remaining() == kept

    # Running it again is harmless: the same invitations remain.
    second = await queue.enqueue_job(PURGE)
    assert second is not None
    assert await run_worker() == 1
    assert await second.result(timeout=5) == 0
    assert await remaining() == kept


async def test_purge_with_nothing_to_do(queue: ArqRedis) -> None:
    job = await queue.enqueue_job(PURGE)
    assert job is not None
    assert await run_worker() == 1
    assert await job.result(timeout=5) == 0


def test_every_job_has_a_stable_name() -> None:
    names = [f.name for f in siyu_worker.FUNCTIONS]
    assert PURGE in names
    assert len(names) == len(set(names))
    assert all("." in n for n in names), "jobs are registered as <domain>.<job>"


async def test_jobs_travel_as_json_not_pickle(redis: Any) -> None:
    import json

    pool = await arq_pool()
    try:
        await pool.enqueue_job("tenants.purge_expired_invitations", _job_id="json-check")
    finally:
        await pool.aclose()
    raw = await redis.get("arq:job:json-check")
    job = json.loads(raw)
    assert job["f"] == "tenants.purge_expired_invitations" and job["a"] == []
