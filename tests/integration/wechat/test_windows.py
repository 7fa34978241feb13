"""Reply windows: Siyu knows before calling WeChat whether it will accept a message, at the edges."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from siyu.wechat import windows
from tests.conftest import TenantFixture, batch_sizes

T0 = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)


async def test_a_message_opens_five_replies_for_48_hours(acme: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0)
    slots = [await windows.reserve(acme.id, "oa", "o1", T0 + timedelta(minutes=i)) for i in range(6)]
    assert slots == ["user"] * 5 + [45047]
    # A new message re-opens a fresh quota.
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0 + timedelta(hours=1))
    assert await windows.reserve(acme.id, "oa", "o1", T0 + timedelta(hours=1, seconds=1)) == "user"


async def test_the_48_hour_edge(acme: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0)
    just_inside = T0 + timedelta(hours=48) - timedelta(seconds=1)
    assert (await windows.state(acme.id, "oa", "o1", just_inside)).can_send
    after = T0 + timedelta(hours=48, seconds=1)
    st = await windows.state(acme.id, "oa", "o1", after)
    assert not st.can_send and st.refusal == 45015
    assert await windows.reserve(acme.id, "oa", "o1", after) == 45015


async def test_follow_scan_and_click_open_three_messages_for_a_minute(acme: TenantFixture) -> None:
    for kind in ("follow", "scan", "menu_click"):
        who = f"o-{kind}"
        await windows.note_inbound(acme.id, "oa", who, kind, T0)
        got = [await windows.reserve(acme.id, "oa", who, T0 + timedelta(seconds=10)) for _ in range(4)]
        assert got == ["event", "event", "event", 45047], kind
        assert await windows.reserve(acme.id, "oa", who, T0 + timedelta(seconds=61)) == 45015


async def test_a_click_does_not_open_the_48_hour_quota(acme: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "oa", "o1", "menu_click", T0)
    assert await windows.reserve(acme.id, "oa", "o1", T0 + timedelta(minutes=2)) == 45015


async def test_a_send_counts_against_every_open_window(acme: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0)
    await windows.note_inbound(acme.id, "oa", "o1", "follow", T0)
    got = [await windows.reserve(acme.id, "oa", "o1", T0 + timedelta(seconds=5)) for _ in range(6)]
    assert got == ["event+user"] * 5 + [45047]  # 5 in all, not 3 + 5
    await windows.release(acme.id, "oa", "o1", "event+user")
    assert await windows.reserve(acme.id, "oa", "o1", T0 + timedelta(seconds=6)) == "event+user"


async def test_mini_program_session_enter_allows_two_per_minute(acme: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "mp", "oMp", "session_enter", T0)
    got = [await windows.reserve(acme.id, "mp", "oMp", T0 + timedelta(seconds=1)) for _ in range(3)]
    assert got == ["event", "event", 45047]


async def test_wecom_kf_customer_message_allows_five_in_48_hours(acme: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "wecom", "wmX", "message", T0)
    got = [await windows.reserve(acme.id, "wecom", "wmX", T0 + timedelta(hours=47)) for _ in range(6)]
    assert got == ["user"] * 5 + [45047]
    assert await windows.reserve(acme.id, "wecom", "wmY", T0) == 45015  # never wrote


async def test_a_late_retry_never_shrinks_a_window(acme: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0 + timedelta(hours=10))
    assert await windows.reserve(acme.id, "oa", "o1", T0 + timedelta(hours=10, minutes=1)) == "user"
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0)  # an older event processed late
    st = await windows.state(acme.id, "oa", "o1", T0 + timedelta(hours=57))
    assert st.can_send and st.remaining == 4  # still the newer window, with its count


async def test_release_gives_a_slot_back(acme: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0)
    for _ in range(5):
        await windows.reserve(acme.id, "oa", "o1", T0)
    await windows.release(acme.id, "oa", "o1", "user")
    assert await windows.reserve(acme.id, "oa", "o1", T0) == "user"


async def test_concurrent_reservations_never_exceed_the_quota(acme: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0)
    results = await asyncio.gather(*[windows.reserve(acme.id, "oa", "o1", T0) for _ in range(20)])
    assert sorted(map(str, results)).count("user") == 5
    assert results.count(45047) == 15


async def test_reservations_arriving_together_share_a_statement_and_keep_each_quota(
        acme: TenantFixture, monkeypatch: Any) -> None:
    """Three people, seven reservations each, all at once: one batch (a round per repeat of a window), five
    replies each and the other two refused as WeChat would (45047)."""
    people = ["o1", "o2", "o3"]
    for who in people:
        await windows.note_inbound(acme.id, "oa", who, "message", T0)
    sizes = batch_sizes(monkeypatch, windows._reservations)
    results = await asyncio.gather(*[windows.reserve(acme.id, "oa", who, T0) for who in people for _ in range(7)])
    for n, who in enumerate(people):
        mine = results[n * 7:(n + 1) * 7]
        assert mine.count("user") == 5 and mine.count(45047) == 2, who
        assert (await windows.state(acme.id, "oa", who, T0)).remaining == 0
    assert sizes == [21]


async def test_windows_are_per_tenant(acme: TenantFixture, globex: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0)
    assert await windows.reserve(globex.id, "oa", "o1", T0) == 45015


async def test_many_windows_read_at_once_read_as_one_at_a_time(acme: TenantFixture, globex: TenantFixture) -> None:
    await windows.note_inbound(acme.id, "oa", "open", "message", T0)
    await windows.note_inbound(acme.id, "oa", "used", "follow", T0)
    for _ in range(3):
        await windows.reserve(acme.id, "oa", "used", T0 + timedelta(seconds=1))
    await windows.note_inbound(acme.id, "oa", "old", "message", T0 - timedelta(days=3))
    await windows.note_inbound(globex.id, "oa", "theirs", "message", T0)  # another tenant's: reads closed here
    people = ["open", "used", "old", "never", "theirs"]
    at = T0 + timedelta(seconds=2)
    many = await windows.states(acme.id, "oa", people, at)
    assert many == {p: await windows.state(acme.id, "oa", p, at) for p in people}
    assert [many[p].can_send for p in people] == [True, False, False, False, False]
    assert (many["used"].refusal, many["old"].refusal) == (45047, 45015)
    assert await windows.states(acme.id, "oa", [], at) == {}


async def test_a_reservation_records_its_slot_on_the_send_in_the_same_statement(acme: TenantFixture) -> None:
    """The window is counted and the send learns which slot it took together: no moment where a dead run
    leaves the window counted and the send unable to give it back."""
    from siyu.core import db

    sends = [int((await db.fetchrow(
        "INSERT INTO wechat_outbound (tenant, channel, external_id, idempotency_key, kind, payload, state, "
        "window_slot, reason, errmsg, wechat_msgid, attempts, created_at, claimed_at) VALUES ($1, 'oa', 'o1', $2, "
        "'custom', '{}'::jsonb, 'queued', '', '', '', '', 1, now(), now()) RETURNING id", acme.id, f"k{n}"))["id"])
        for n in range(2)]
    await windows.note_inbound(acme.id, "oa", "o1", "message", T0)
    await windows.note_inbound(acme.id, "oa", "o1", "follow", T0)
    assert await windows.reserve(acme.id, "oa", "o1", T0 + timedelta(seconds=5), outbound_id=sends[0]) == "event+user"
    assert await windows.reserve(acme.id, "oa", "o1", T0 + timedelta(minutes=5), outbound_id=sends[1]) == "user"
    slots = {r["id"]: r["window_slot"] for r in await db.fetch(
        "SELECT id, window_slot FROM wechat_outbound WHERE id = ANY($1::bigint[])", sends)}
    assert slots == {sends[0]: "event+user", sends[1]: "user"}
    # A refusal records nothing.
    await db.execute("UPDATE wechat_outbound SET window_slot = '' WHERE id = $1", sends[1])
    assert await windows.reserve(acme.id, "oa", "o1", T0 + timedelta(days=3), outbound_id=sends[1]) == 45015
    assert (await db.fetchrow("SELECT window_slot FROM wechat_outbound WHERE id = $1", sends[1]))["window_slot"] == ""
