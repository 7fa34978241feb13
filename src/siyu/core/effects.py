"""Side effects of a `do_*` service: jobs to enqueue and live updates to publish, run after its
transaction commits (never for a rolled-back change), through the process's arq pool.

The composition roots install the pool once (the web app's lifespan, the worker's startup); services call
`enqueue` / `publish` inside their transaction. Outside a transaction the effect runs at once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from arq import ArqRedis

from siyu.core import db

log = logging.getLogger("siyu.core.effects")

_pool: ArqRedis | None = None


def install(pool: ArqRedis) -> None:
    global _pool
    _pool = pool


def uninstall(pool: ArqRedis | None = None) -> None:
    global _pool
    if pool is None or _pool is pool:
        _pool = None


def pool() -> ArqRedis:
    if _pool is None:
        raise RuntimeError("no arq pool installed: the composition root calls siyu.core.effects.install()")
    return _pool


async def _now_or_after_commit(effect: Callable[[], Awaitable[Any]]) -> None:
    if db.in_transaction():
        db.on_commit(effect)
    else:
        await effect()


async def enqueue(name: str, *args: Any, job_id: str, defer_by: float | None = None, queue: str | None = None) -> None:
    """Enqueue the job `name` after commit (on `queue`, or the default one). `job_id` is required: it is what
    makes a retried service or a re-run job queue the work once."""
    async def effect() -> None:
        await pool().enqueue_job(name, *args, _job_id=job_id, _defer_by=defer_by, _queue_name=queue)

    await _now_or_after_commit(effect)


async def publish(channel: str, message: dict[str, Any]) -> None:
    """Publish a live update on a Redis channel after commit (every web process relays it). The update is
    a hint (browsers re-read what changed through their scoped pages, and resync after a reconnect), so
    it is sent in the background: the caller's answer does not wait for Redis. `flush` waits for those
    still on their way."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)

    async def effect() -> None:
        target = pool()
        task = asyncio.get_running_loop().create_task(_send(target, channel, data))
        _in_flight.add(task)
        task.add_done_callback(_in_flight.discard)

    await _now_or_after_commit(effect)


_in_flight: set[asyncio.Task[None]] = set()


async def _send(target: ArqRedis, channel: str, data: str) -> None:
    try:
        await target.publish(channel, data)
    except Exception:  # the change is committed; a lost hint is repaired by the browser's next resync
        log.exception("live update on %s failed", channel)


async def flush() -> None:
    """Wait for the live updates still on their way (composition roots call it before closing Redis)."""
    while _in_flight:
        await asyncio.gather(*list(_in_flight), return_exceptions=True)
