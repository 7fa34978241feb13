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
from typing import Any

from redis.asyncio import Redis

# One round trip decides a call (a send costs one Redis command, not four):
# 1. the endpoint's daily quota (KEYS[1], '' when it has none): used up → {-1};
# 2. the buckets (KEYS[2] the bulk share, '' for a reply; KEYS[3] the account's; '' skips one): each refills
#    `rate` tokens per second up to `burst`; the call needs `cost` from every bucket, and takes them from all
#    or from none → {milliseconds to wait} when one is short;
# 3. granted: the call is counted against the day and the account's cached access token is read (KEYS[4],
#    '' for none) → {0, calls left today (-2: no quota), token or nil}.
# Times come in as an argument: production passes the clock, tests a simulated one.
_ADMIT = """
local now = tonumber(ARGV[7])
local cost = tonumber(ARGV[8])
local quota = tonumber(ARGV[1])
if KEYS[1] ~= '' then
  local used = tonumber(redis.call('GET', KEYS[1]) or '0')
  if used + 1 > quota then return {-1} end
end
local wait = 0
local buckets = {}
local specs = {{KEYS[2], ARGV[3], ARGV[4]}, {KEYS[3], ARGV[5], ARGV[6]}}
for _, spec in ipairs(specs) do
  if spec[1] ~= '' then
    local rate = tonumber(spec[2])
    local burst = tonumber(spec[3])
    local state = redis.call('HMGET', spec[1], 'tokens', 'ts')
    local tokens = tonumber(state[1])
    local ts = tonumber(state[2])
    if tokens == nil then tokens = burst; ts = now end
    if now > ts then
      tokens = math.min(burst, tokens + (now - ts) * rate / 1000)
      ts = now
    end
    if tokens < cost then wait = math.max(wait, math.ceil((cost - tokens) * 1000 / rate)) end
    buckets[#buckets + 1] = {spec[1], tokens, ts, rate, burst}
  end
end
for _, b in ipairs(buckets) do
  local tokens = b[2]
  if wait == 0 then tokens = tokens - cost end
  redis.call('HSET', b[1], 'tokens', tokens, 'ts', b[3])
  redis.call('PEXPIRE', b[1], math.ceil(b[5] * 1000 / b[4]) + 60000)
end
if wait > 0 then return {wait} end
local left = -2
if KEYS[1] ~= '' then
  left = quota - redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
end
local token = false
if KEYS[4] ~= '' then token = redis.call('GET', KEYS[4]) end
return {0, left, token}
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


class DailyQuotaUsed(Exception):
    """The endpoint's daily quota is used up (counted by Siyu): the call must not be made."""


@dataclass(frozen=True)
class Admission:
    left: int | None  # calls of the endpoint left today after this one (None: no quota counted)
    token: str | None  # the account's cached access token, when one was asked for and is there


class RateLimiter:
    def __init__(self, redis: Redis, limits: dict[str, Limits] | None = None) -> None:
        self.redis = redis
        if limits is None:
            from siyu.core.settings import get_settings

            limits = {k: Limits(v) for k, v in get_settings().wechat_rate_per_minute}
        self.limits = limits
        self._script = redis.register_script(_ADMIT)

    def _key(self, tenant_id: int, channel: str, app_id: str, bulk: bool) -> str:
        return f"siyu:wx:bucket:{tenant_id}:{channel}:{app_id}{':bulk' if bulk else ''}"

    @staticmethod
    def _quota_key(app_id: str, endpoint: str, now: datetime | None) -> tuple[str, int]:
        quota = DAILY_QUOTAS.get(endpoint)
        if quota is None:
            return "", 0
        day = (now or datetime.now(BEIJING)).astimezone(BEIJING).strftime("%Y%m%d")
        return f"siyu:wx:quota:{app_id}:{endpoint}:{day}", quota

    async def _run(self, quota: tuple[str, int], buckets: tuple[str, str], limits: Limits | None,
                   token_key: str, now_ms: int, cost: int) -> list[Any]:
        rate, burst = (limits.rate, limits.burst) if limits else (1.0, 1.0)
        return list(await self._script(
            keys=[quota[0], buckets[0], buckets[1], token_key],
            args=[quota[1], 2 * 86400, rate * BULK_SHARE, burst * BULK_SHARE, rate, burst, now_ms, cost]))

    async def try_admit(self, tenant_id: int, channel: str, app_id: str, endpoint: str = "", token_key: str = "",
                        *, bulk: bool = False, now_ms: int | None = None, now: datetime | None = None,
                        cost: int = 1) -> int | Admission:
        """One Redis round trip: the daily quota, the buckets (bulk work must pass both its own share and the
        account's), and the cached token. An Admission when granted (counted), else the milliseconds to wait,
        or -1 when the endpoint's daily quota is used up (nothing is counted then)."""
        limits = self.limits[channel]
        buckets = (self._key(tenant_id, channel, app_id, True) if bulk else "",
                   self._key(tenant_id, channel, app_id, False))
        got = await self._run(self._quota_key(app_id, endpoint, now), buckets, limits, token_key,
                              now_ms if now_ms is not None else int(time.time() * 1000), cost)
        if int(got[0]) != 0:
            return int(got[0])
        token = got[2] if len(got) > 2 else None
        return Admission(None if int(got[1]) == -2 else int(got[1]),
                         token.decode() if isinstance(token, bytes) else token)

    async def admit(self, tenant_id: int, channel: str, app_id: str, endpoint: str, token_key: str = "", *,
                    bulk: bool = False, max_wait: float = 30.0) -> Admission:
        """Wait for the buckets (bounded): raises DailyQuotaUsed, or TimeoutError when the account stays
        saturated."""
        deadline = time.monotonic() + max_wait
        while True:
            got = await self.try_admit(tenant_id, channel, app_id, endpoint, token_key, bulk=bulk)
            if isinstance(got, Admission):
                return got
            if got == -1:
                raise DailyQuotaUsed(endpoint)
            if time.monotonic() + got / 1000 > deadline:
                raise TimeoutError(f"rate limit of {channel} {app_id} saturated for {max_wait} s")
            await asyncio.sleep(got / 1000)

    async def try_acquire(self, tenant_id: int, channel: str, app_id: str, *, bulk: bool = False,
                          now_ms: int | None = None, cost: int = 1) -> int:
        """The buckets alone: 0 when granted, else milliseconds to wait."""
        got = await self.try_admit(tenant_id, channel, app_id, bulk=bulk, now_ms=now_ms, cost=cost)
        return 0 if isinstance(got, Admission) else got

    async def count_daily(self, app_id: str, endpoint: str, now: datetime | None = None) -> int | None:
        """The daily quota alone: count one call. Returns the calls left after it, None when the endpoint has
        no tracked quota, and -1 when the quota is used up (the call must not be made; nothing is counted)."""
        quota = self._quota_key(app_id, endpoint, now)
        if not quota[0]:
            return None
        got = await self._run(quota, ("", ""), None, "", int(time.time() * 1000), 1)
        return -1 if int(got[0]) == -1 else int(got[1])
