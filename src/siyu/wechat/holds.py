"""Suspended tenants are really suspended: nothing is sent for them until they are reactivated.

A job that sends for a tenant (a rep's reply, the bot's answer, a notice) is wrapped by `while_suspended`:
while its tenant is suspended, the job is kept in `wechat_held_job` (by name and arguments, once) instead
of run, so no ledger row is claimed and nothing reaches WeChat. On reactivation (`wechat.resume_tenant`)
and, as a safety net, on every inbound sweep, the held jobs of active tenants are enqueued again under
their own names; the sends stay exactly-once through the ledger's idempotency keys.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from siyu.core import db
from siyu.core.clock import now
from siyu.core.errors import NotFound
from siyu.tenants.services import get_tenant
from siyu.wechat.tables import HeldJob

log = logging.getLogger("siyu.wechat.holds")

HELD = "held: the tenant is suspended"
RELEASE_BATCH = 1000

Job = Callable[..., Awaitable[Any]]


async def tenant_suspended(tenant_id: int) -> bool:
    try:
        return (await get_tenant(tenant_id)).status == "suspended"
    except NotFound:  # gone: the job finds nothing to send and says so itself
        return False


async def hold_if_suspended(tenant_id: int, job: str, args: list[Any]) -> bool:
    """True (and the job kept, once) when the tenant is suspended: the caller then does nothing."""
    if not await tenant_suspended(tenant_id):
        return False
    await db.execute(
        "INSERT INTO wechat_held_job (tenant, job, args, held_at) VALUES ($1, $2, $3::jsonb, $4) "
        "ON CONFLICT (tenant, job, args) DO NOTHING", tenant_id, job, json.dumps(args), now())
    log.info("%s%s held: tenant %s is suspended", job, tuple(args), tenant_id)
    return True


def while_suspended(job: str) -> Callable[[Job], Job]:
    """For an arq job `fn(ctx, tenant_id, *args)` registered as `job` that sends for the tenant."""
    def wrap(fn: Job) -> Job:
        @functools.wraps(fn)
        async def gated(ctx: dict[str, Any], tenant_id: int, *args: Any) -> Any:
            if await hold_if_suspended(tenant_id, job, list(args)):
                return HELD
            return await fn(ctx, tenant_id, *args)
        return gated
    return wrap


async def release(redis: Any, tenant_id: int | None = None) -> int:
    """Enqueue again the held jobs of active tenants (of this one only, when given), oldest first; each is
    forgotten once enqueued. Returns how many."""
    released = 0
    while True:
        query = HeldJob.select(HeldJob.id, HeldJob.tenant, HeldJob.job, HeldJob.args).where(
            HeldJob.tenant.status != "suspended")
        if tenant_id is not None:
            query = query.where(HeldJob.tenant == tenant_id)
        rows = await query.order_by(HeldJob.id).limit(RELEASE_BATCH).output(load_json=True)
        for row in rows:
            # The id makes a second release of the same row (a crash before the delete) queue it once.
            await redis.enqueue_job(row["job"], row["tenant"], *row["args"], _job_id=f"{row['job']}:held:{row['id']}")
            await HeldJob.delete().where(HeldJob.id == row["id"])
        released += len(rows)
        if len(rows) < RELEASE_BATCH:
            return released
