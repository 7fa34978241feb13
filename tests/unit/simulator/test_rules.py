"""The simulator's pure rules: identifiers, reply windows, the mass-send month, one-time codes, cursors."""

from __future__ import annotations

import calendar

import pytest

from siyu.simulator import rules
from siyu.simulator.rules import Window

T0 = 1_700_000_000.0
OUT, USED = rules.OA_OUT_OF_WINDOW, rules.OA_QUOTA_USED


def sends(w: Window, now: float, n: int) -> list[int]:
    return [w.consume(now, OUT, USED) for _ in range(n)]


def test_nothing_open_is_out_of_window() -> None:
    assert Window().consume(T0, OUT, USED) == 45015


def test_message_window_five_in_48_hours() -> None:
    w = Window()
    w.open("message", T0, rules.MESSAGE_WINDOW)
    assert sends(w, T0 + 1, 6) == [0, 0, 0, 0, 0, 45047]
    assert w.check(T0 + 48 * 3600, OUT, USED) == 45047  # still open, but used up
    assert w.check(T0 + 48 * 3600 + 1, OUT, USED) == 45015


def test_the_48_hour_edge_is_inclusive() -> None:
    w = Window()
    w.open("message", T0, rules.MESSAGE_WINDOW)
    assert w.consume(T0 + 48 * 3600, OUT, USED) == 0
    assert w.consume(T0 + 48 * 3600 + 1, OUT, USED) == 45015


def test_a_new_message_gives_a_fresh_quota() -> None:
    w = Window()
    w.open("message", T0, rules.MESSAGE_WINDOW)
    sends(w, T0, 5)
    w.open("message", T0 + 10, rules.MESSAGE_WINDOW)
    assert sends(w, T0 + 11, 6) == [0, 0, 0, 0, 0, 45047]


def test_event_window_three_in_a_minute() -> None:
    w = Window()
    w.open("event", T0, rules.EVENT_WINDOW)
    assert sends(w, T0 + 59, 4) == [0, 0, 0, 45047]
    assert w.consume(T0 + 61, OUT, USED) == 45015


def test_grants_never_add_up_but_a_later_click_adds_a_minute() -> None:
    w = Window()
    w.open("event", T0, rules.EVENT_WINDOW)
    w.open("message", T0, rules.MESSAGE_WINDOW)
    assert sends(w, T0 + 1, 6) == [0, 0, 0, 0, 0, 45047]
    w.open("event", T0 + 120, rules.EVENT_WINDOW)  # a menu click after the 5 are used
    assert sends(w, T0 + 121, 4) == [0, 0, 0, 45047]


def test_close_ends_everything() -> None:
    w = Window()
    w.open("message", T0, rules.MESSAGE_WINDOW)
    w.close()
    assert w.consume(T0, OUT, USED) == 45015


def test_kf_codes_are_separate() -> None:
    w = Window()
    assert w.consume(T0, rules.KF_OUT_OF_WINDOW, rules.KF_QUOTA_USED) == 95018
    w.open("message", T0, rules.KF_WINDOW)
    assert [w.consume(T0, rules.KF_OUT_OF_WINDOW, rules.KF_QUOTA_USED) for _ in range(6)][-1] == 95001


def test_ids_are_deterministic_and_shaped_like_wechats() -> None:
    a = rules.openid("wx1", "alice")
    assert a == rules.openid("wx1", "alice") and a.startswith("o") and len(a) == 28
    assert a != rules.openid("wx2", "alice") and a != rules.openid("wx1", "bob")
    u = rules.unionid("brand", "alice")
    assert u.startswith("o") and len(u) == 28 and u != rules.unionid("other", "alice")
    e = rules.external_userid("ww1", "alice")
    assert e.startswith("wm") and len(e) == 32
    assert rules.original_id("wx1").startswith("gh_") and len(rules.original_id("wx1")) == 15
    assert rules.open_kfid("ww1").startswith("wk") and len(rules.open_kfid("ww1")) == 32
    assert rules.nickname("alice") == rules.nickname("alice")


def test_mass_cap_counts_natural_months_in_china() -> None:
    counts: dict[str, int] = {}
    # 2024-01-31 16:30 UTC is already 2024-02-01 00:30 in Shanghai
    feb_in_china = calendar.timegm((2024, 1, 31, 16, 30, 0))
    jan_in_china = calendar.timegm((2024, 1, 31, 15, 30, 0))
    assert rules.month_key(jan_in_china) == "2024-01" and rules.month_key(feb_in_china) == "2024-02"
    assert [rules.mass_allowed(counts, jan_in_china) for _ in range(5)] == [True] * 4 + [False]
    assert rules.mass_allowed(counts, feb_in_china)


def test_one_time_codes() -> None:
    def err(issued: float | None, used: bool, now: float) -> int:
        return rules.one_time_code_error(issued, used, now, 20, unknown=1, spent=2, expired=3)

    assert err(None, False, T0) == 1
    assert err(T0, True, T0) == 2
    assert err(T0, False, T0 + 20) == 0
    assert err(T0, False, T0 + 20.5) == 3


def test_cursors_round_trip_and_reject_junk() -> None:
    assert rules.decode_cursor(rules.encode_cursor(42)) == 42
    assert rules.decode_cursor("") == 0
    assert rules.decode_cursor("4gw7MepFLfgF2VC5npN") is None
    assert rules.decode_cursor("!!") is None


@pytest.mark.parametrize(("url", "ok"), [
    ("http://127.0.0.1:8000/wechat/acme/oa", True), ("http://localhost/x", True), ("https://[::1]:8443/x", True),
    ("http://127.8.9.10/x", True), ("http://10.0.0.1/x", False), ("http://example.com/x", False),
    ("ftp://127.0.0.1/x", False), ("http://127.0.0.1.nip.io/x", False), ("not a url", False), ("", False)])
def test_only_loopback_callbacks(url: str, ok: bool) -> None:
    assert rules.is_loopback_url(url) is ok
