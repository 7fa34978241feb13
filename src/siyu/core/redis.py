"""Redis clients, built from REDIS_URL (or the embedded server)."""

from __future__ import annotations

from redis.asyncio import Redis

from siyu.core.embedded import redis_url


def connect() -> Redis:
    return Redis.from_url(redis_url(), decode_responses=False, health_check_interval=30)
