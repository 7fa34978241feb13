"""Token buckets in Redis, one per (tenant, linked account), so one tenant's bulk sending cannot starve
another tenant's replies; within an account, bulk work draws from a smaller share so interactive replies
keep headroom. Daily quotas per API are counted too, so Siyu stops before WeChat answers 45009.

The bucket is a Lua script (atomic across processes). It takes the current time as an argument:
production passes the clock, tests pass a simulated one.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from redis.asyncio import Redis

# Refill `rate` tokens per second up to `burst`; take `cost` if available. Returns 0 when granted, else
# the milliseconds to wait before enough tokens are there.
_BUCKET = """
local key = KEYS[1]
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now_ms = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local state = redis.call('HMGET', key, 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil then tokens = burst; ts = now_ms end
if now_ms > ts then
  tokens = math.min(burst, tokens + (now_ms - ts) * rate / 1000)
  ts = now_ms
end
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', key, 'tokens', tokens, 'ts', ts)
redis.call('PEXPIRE', key, math.ceil(burst * 1000 / rate) + 60000)
return wait
"""

BEIJING = timezone(timedelta(hours=8))

# Requests per minute per account come from SIYU_WECHAT_RATE_PER_MINUTE (settings). WeCom documents
# 10,000 per corp per API per minute; WeChat publishes no per-minute figure for OA/MP (only daily quotas
# and the 45011 answer), so 6,000 is Siyu's default there.
BULK_SHARE = 0.8  # bulk sends may use 80% of an account's rate; replies always keep the rest

# Daily quotas of a new Official Account (WeChat's API-limits page); WeChat resets them at midnight
# Beijing time. Other endpoints are not counted.
DAILY_QUOTAS = {
    "cgi-bin/message/custom/send": 500_000,
    "cgi-bin/message/template/send": 100_000,
    "cgi-bin/message/mass/sendall": 100,
    "cgi-bin/message/mass/send": 100,
    "cgi-bin/qrcode/create": 100_000,
    "cgi-bin/user/info": 5_000_000,
    "cgi-bin/user/get": 500,
    "cgi-bin/menu/create": 1000,
}


@dataclass(frozen=True)
class Limits:
    per_minute: int

    @property
    def rate(self) -> float:
        return self.per_minute / 60.0

    @property
    def burst(self) -> float:
        return max(1.0, self.rate * 2)  # two seconds' worth


class RateLimiter:
    def __init__(self, redis: Redis, limits: dict[str, Limits] | None = None) -> None:
        self.redis = redis
        if limits is None:
            from siyu.core.settings import get_settings

            limits = {k: Limits(v) for k, v in get_settings().wechat_rate_per_minute}
        self.limits = limits
        self._script = redis.register_script(_BUCKET)

    def _key(self, tenant_id: int, channel: str, app_id: str, bulk: bool) -> str:
        return f"siyu:wx:bucket:{tenant_id}:{channel}:{app_id}{':bulk' if bulk else ''}"

    async def try_acquire(self, tenant_id: int, channel: str, app_id: str, *, bulk: bool = False,
                          now_ms: int | None = None, cost: int = 1) -> int:
        """0 when granted, else milliseconds to wait. Bulk work must pass both its own bucket and the
        account's."""
        limits = self.limits[channel]
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        if bulk:
            wait = int(await self._script(keys=[self._key(tenant_id, channel, app_id, True)],
                                          args=[limits.rate * BULK_SHARE, limits.burst * BULK_SHARE, now_ms, cost]))
            if wait:
                return wait
        return int(await self._script(keys=[self._key(tenant_id, channel, app_id, False)],
                                      args=[limits.rate, limits.burst, now_ms, cost]))

    async def acquire(self, tenant_id: int, channel: str, app_id: str, *, bulk: bool = False,
                      max_wait: float = 30.0) -> None:
        """Wait for a token (bounded); raises TimeoutError when the account stays saturated."""
        deadline = time.monotonic() + max_wait
        while True:
            wait_ms = await self.try_acquire(tenant_id, channel, app_id, bulk=bulk)
            if wait_ms == 0:
                return
            if time.monotonic() + wait_ms / 1000 > deadline:
                raise TimeoutError(f"rate limit of {channel} {app_id} saturated for {max_wait} s")
            await asyncio.sleep(wait_ms / 1000)

    async def count_daily(self, app_id: str, endpoint: str, now: datetime | None = None) -> int | None:
        """Count one call against the endpoint's daily quota. Returns the calls left after it, None when
        the endpoint has no tracked quota, and -1 when the quota is used up (the call must not be made)."""
        quota = DAILY_QUOTAS.get(endpoint)
        if quota is None:
            return None
        day = (now or datetime.now(BEIJING)).astimezone(BEIJING).strftime("%Y%m%d")
        key = f"siyu:wx:quota:{app_id}:{endpoint}:{day}"
        pipe = self.redis.pipeline()
        pipe.incr(key)
        pipe.expire(key, 2 * 86400)
        used, _ = await pipe.execute()
        if int(used) > quota:
            await self.redis.decr(key)  # a refused call does not use quota
            return -1
        return quota - int(used)
