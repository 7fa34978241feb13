"""Redis clients, built from REDIS_URL (or the embedded server)."""

from __future__ import annotations

import json
from typing import Any

from arq import ArqRedis, create_pool
from arq.connections import RedisSettings
from redis.asyncio import Redis

from siyu.core.embedded import redis_url


def connect() -> Redis:
    return Redis.from_url(redis_url(), decode_responses=False, health_check_interval=30)


def arq_settings() -> RedisSettings:
    """arq's connection settings (the web app enqueues, the worker consumes)."""
    return RedisSettings.from_dsn(redis_url())


def _dump_job(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def _load_job(raw: bytes) -> dict[str, Any]:
    return dict(json.loads(raw))


# Jobs travel as JSON, not pickle: they carry only ids and plain values, any process (or tool) can read
# the queue, and nothing on Redis can make a worker unpickle code.
JOB_SERIALIZATION: dict[str, Any] = {"job_serializer": _dump_job, "job_deserializer": _load_job}


async def arq_pool() -> ArqRedis:
    """The pool that enqueues jobs (the web app, jobs that enqueue jobs, tools and tests)."""
    return await create_pool(arq_settings(), **JOB_SERIALIZATION)
