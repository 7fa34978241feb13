"""Token buckets in Redis: the rate holds within 5 %, tenants do not starve each other, bulk work leaves
headroom for replies, and daily quotas stop calls before WeChat would. The clock is simulated, so the
figures are exact and the tests never depend on the machine's speed."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from siyu.wechat.ratelimit import BEIJING, BULK_SHARE, DAILY_QUOTAS, Admission, Limits, RateLimiter


async def granted_over(limiter: RateLimiter, tenant: int, seconds: float, step_ms: int = 5, *,
                       bulk: bool = False, start_ms: int = 1_000_000, app_id: str = "wxapp") -> int:
    granted = 0
    t = start_ms
    while t < start_ms + seconds * 1000:
        if await limiter.try_acquire(tenant, "oa", app_id, bulk=bulk, now_ms=t) == 0:
            granted += 1
        t += step_ms
    return granted


async def test_the_bucket_holds_its_rate_within_five_percent(redis: Any) -> None:
    limiter = RateLimiter(redis, {"oa": Limits(per_minute=3000)})  # 50 per second, burst 100
    granted = await granted_over(limiter, 1, seconds=20)
    expected = 50 * 20 + 100  # the rate over 20 s plus the initial burst
    assert abs(granted - expected) / expected <= 0.05, granted
    # And over the next 20 s, with the burst spent, the steady rate alone.
    steady = await granted_over(limiter, 1, seconds=20, start_ms=1_020_000)
    assert abs(steady - 1000) / 1000 <= 0.05, steady


async def test_a_busy_tenant_does_not_starve_another(redis: Any) -> None:
    limiter = RateLimiter(redis, {"oa": Limits(per_minute=600)})  # 10/s
    hog = await granted_over(limiter, 1, seconds=5, step_ms=1)  # tries 1000 times a second
    quiet = await granted_over(limiter, 2, seconds=5, step_ms=200)  # 5 requests a second
    assert hog <= 10 * 5 + 20 + 1
    assert quiet == 25  # every request of the quiet tenant went through


async def test_bulk_work_leaves_room_for_replies(redis: Any) -> None:
    limiter = RateLimiter(redis, {"oa": Limits(per_minute=600)})  # 10/s
    t0 = 5_000_000
    bulk = replies = 0
    for i in range(10_000):  # 10 s of a bulk job hammering, and a reply every 500 ms
        t = t0 + i
        if await limiter.try_acquire(1, "oa", "wx1", bulk=True, now_ms=t) == 0:
            bulk += 1
        if i % 500 == 0 and await limiter.try_acquire(1, "oa", "wx1", now_ms=t) == 0:
            replies += 1
    assert replies == 20  # none of the replies waited
    assert bulk <= 10 * 10 * BULK_SHARE + 20 * BULK_SHARE + 1


async def test_wait_time_is_reported(redis: Any) -> None:
    limiter = RateLimiter(redis, {"oa": Limits(per_minute=60)})  # 1/s, burst 2
    assert await limiter.try_acquire(1, "oa", "wx", now_ms=0) == 0
    assert await limiter.try_acquire(1, "oa", "wx", now_ms=0) == 0
    wait = await limiter.try_acquire(1, "oa", "wx", now_ms=0)
    assert 900 <= wait <= 1000


async def test_daily_quota_is_counted_and_stops_before_wechat_would(redis: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(DAILY_QUOTAS, "cgi-bin/message/mass/sendall", 3)
    limiter = RateLimiter(redis)
    day = datetime(2026, 11, 21, 23, 59, tzinfo=BEIJING)
    left = [await limiter.count_daily("wx1", "cgi-bin/message/mass/sendall", day) for _ in range(4)]
    assert left == [2, 1, 0, -1]
    assert await limiter.count_daily("wx2", "cgi-bin/message/mass/sendall", day) == 2  # per account
    next_day = datetime(2026, 11, 22, 0, 1, tzinfo=BEIJING)
    assert await limiter.count_daily("wx1", "cgi-bin/message/mass/sendall", next_day) == 2  # Beijing midnight
    assert await limiter.count_daily("wx1", "cgi-bin/unknown", day) is None


async def test_one_round_trip_counts_the_day_takes_a_token_and_reads_the_access_token(redis: Any,
                                                                                      monkeypatch: Any) -> None:
    monkeypatch.setitem(DAILY_QUOTAS, "cgi-bin/message/custom/send", 2)
    limiter = RateLimiter(redis, {"oa": Limits(per_minute=600)})
    await redis.set("siyu:test:token", "ACCESS-1")
    day = datetime(2026, 11, 21, 12, 0, tzinfo=BEIJING)
    first = await limiter.try_admit(1, "oa", "wxq", "cgi-bin/message/custom/send", "siyu:test:token",
                                    now_ms=0, now=day)
    assert first == Admission(left=1, token="ACCESS-1")
    second = await limiter.try_admit(1, "oa", "wxq", "cgi-bin/message/custom/send", now_ms=0, now=day)
    assert second == Admission(left=0, token=None)  # no token asked for: none read
    assert await limiter.try_admit(1, "oa", "wxq", "cgi-bin/message/custom/send", now_ms=0, now=day) == -1
    # An endpoint without a daily quota counts nothing; a token that is not cached reads as None.
    assert await limiter.try_admit(1, "oa", "wxq", "cgi-bin/user/info2", "siyu:test:none", now_ms=0) == \
        Admission(left=None, token=None)


async def test_a_call_that_must_wait_for_the_rate_uses_none_of_the_daily_quota(redis: Any, monkeypatch: Any) -> None:
    monkeypatch.setitem(DAILY_QUOTAS, "cgi-bin/message/mass/send", 3)
    limiter = RateLimiter(redis, {"oa": Limits(per_minute=60)})  # 1/s, burst 2
    day = datetime(2026, 11, 21, 12, 0, tzinfo=BEIJING)
    granted = [await limiter.try_admit(1, "oa", "wxr", "cgi-bin/message/mass/send", now_ms=0, now=day)
               for _ in range(5)]
    assert [g.left if isinstance(g, Admission) else "wait" for g in granted] == [2, 1, "wait", "wait", "wait"]
    later = await limiter.try_admit(1, "oa", "wxr", "cgi-bin/message/mass/send", now_ms=1000, now=day)
    assert later == Admission(left=0, token=None)  # the three waits counted nothing


async def test_bulk_work_takes_from_its_share_and_the_account_together_or_not_at_all(redis: Any) -> None:
    limiter = RateLimiter(redis, {"oa": Limits(per_minute=60)})  # account 1/s burst 2; bulk 0.8/s burst 1.6
    assert await limiter.try_acquire(1, "oa", "wxb", now_ms=0) == 0  # replies empty the account's bucket
    assert await limiter.try_acquire(1, "oa", "wxb", now_ms=0) == 0
    assert await limiter.try_acquire(1, "oa", "wxb", bulk=True, now_ms=0) > 0
    assert await limiter.try_acquire(1, "oa", "wxb", bulk=True, now_ms=500) > 0
    # The account refilled one token; the bulk share lost nothing to the refused tries, so it can pay too.
    assert await limiter.try_acquire(1, "oa", "wxb", bulk=True, now_ms=1000) == 0
