"""Redis clients, built from REDIS_URL (or the embedded server).

Every client has a connect and a read timeout (SIYU_REDIS_TIMEOUT): a Redis that is down or hangs makes the
command fail within that time, so a page answers with an error and a job is retried, instead of waiting
for ever. None of them needs Redis to be up when it is built.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from arq import ArqRedis
from arq.connections import RedisSettings
from redis.asyncio import Redis
from redis.exceptions import RedisError

from siyu.core.embedded import redis_url
from siyu.core.settings import get_settings

# What a Redis that is down, restarting or hanging raises (redis-py's ConnectionError and TimeoutError are
# RedisErrors; a refused or reset socket can surface as the builtin OSError; a timeout around a call as
# asyncio's).
REDIS_DOWN: tuple[type[BaseException], ...] = (RedisError, OSError, asyncio.TimeoutError)


def _client_options() -> dict[str, Any]:
    timeout = get_settings().redis_timeout
    return {"socket_connect_timeout": timeout, "socket_timeout": timeout, "health_check_interval": 30,
            "retry_on_timeout": False}


def connect() -> Redis:
    """The web process's client: sessions, login throttling, rate buckets, live updates."""
    return Redis.from_url(redis_url(), decode_responses=False, **_client_options())


def arq_settings() -> RedisSettings:
    """arq's connection settings (burst workers in tests and tools)."""
    settings = RedisSettings.from_dsn(redis_url())
    settings.conn_timeout = max(1, round(get_settings().redis_timeout))
    return settings


def _dump_job(data: dict[str, Any]) -> bytes:
    return json.dumps(data, separators=(",", ":"), default=str).encode()


def _load_job(raw: bytes) -> dict[str, Any]:
    return dict(json.loads(raw))


# Jobs travel as JSON, not pickle: they carry only ids and plain values, any process (or tool) can read
# the queue, and nothing on Redis can make a worker unpickle code.
JOB_SERIALIZATION: dict[str, Any] = {"job_serializer": _dump_job, "job_deserializer": _load_job}


async def arq_pool() -> ArqRedis:
    """The pool that enqueues jobs (the web app, the worker, jobs that enqueue jobs, tools and tests).

    Unlike arq's `create_pool`, it does not ping (and retry) first: the web process starts, and answers
    WeChat's callbacks from PostgreSQL, while Redis is down."""
    pool = ArqRedis.from_url(redis_url(), **_client_options())
    pool.job_serializer = JOB_SERIALIZATION["job_serializer"]
    pool.job_deserializer = JOB_SERIALIZATION["job_deserializer"]
    return pool
