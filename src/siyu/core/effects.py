"""Side effects of a `do_*` service: jobs to enqueue and live updates to publish, run after its
transaction commits (never for a rolled-back change), through the process's arq pool.

The composition roots install the pool once (the web app's lifespan, the worker's startup); services call
`enqueue` / `publish` inside their transaction. Outside a transaction the effect runs at once.
"""

from __future__ import annotations

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


async def enqueue(name: str, *args: Any, job_id: str, defer_by: float | None = None) -> None:
    """Enqueue the job `name` after commit. `job_id` is required: it is what makes a retried service or
    a re-run job queue the work once."""
    async def effect() -> None:
        await pool().enqueue_job(name, *args, _job_id=job_id, _defer_by=defer_by)

    await _now_or_after_commit(effect)


async def publish(channel: str, message: dict[str, Any]) -> None:
    """Publish a live update on a Redis channel after commit (every web process relays it)."""
    data = json.dumps(message, separators=(",", ":"), ensure_ascii=False)

    async def effect() -> None:
        await pool().publish(channel, data)

    await _now_or_after_commit(effect)
