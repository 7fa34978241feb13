"""Redis clients, built from REDIS_URL (or the embedded server)."""

from __future__ import annotations

from arq.connections import RedisSettings
from redis.asyncio import Redis

from siyu.core.embedded import redis_url


def connect() -> Redis:
    return Redis.from_url(redis_url(), decode_responses=False, health_check_interval=30)


def arq_settings() -> RedisSettings:
    """arq's connection settings (the web app enqueues, the worker consumes)."""
    return RedisSettings.from_dsn(redis_url())
