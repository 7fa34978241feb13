"""Quiet hours in the tenant's zone at their edges (midnight, month and year ends, a zone with DST), stable
holdout buckets, the mass-send month, the ledger's transitions, and the lift's interval."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from siyu.engagement import ledger
from siyu.engagement.attribution import lift
from siyu.engagement.rules import Settings, bucket, held_out, month_start, quiet_until

SH = Settings()  # 21:00–09:00 Asia/Shanghai


def sh(y: int, mo: int, d: int, h: int, mi: int = 0, s: int = 0) -> datetime:
    """A Shanghai wall-clock time as UTC (UTC+8, no DST)."""
    return datetime(y, mo, d, h, mi, s, tzinfo=UTC) - timedelta(hours=8)


@pytest.mark.parametrize(("at", "opens"), [
    (sh(2026, 6, 10, 20, 59, 59), None),  # the last second before quiet hours
    (sh(2026, 6, 10, 21, 0), sh(2026, 6, 11, 9, 0)),  # the first second of them
    (sh(2026, 6, 10, 23, 59, 59), sh(2026, 6, 11, 9, 0)),
    (sh(2026, 6, 11, 0, 0), sh(2026, 6, 11, 9, 0)),  # after midnight: the same morning
    (sh(2026, 6, 11, 8, 59, 59), sh(2026, 6, 11, 9, 0)),
    (sh(2026, 6, 11, 9, 0), None),  # the window opens
    (sh(2026, 6, 30, 22, 30), sh(2026, 7, 1, 9, 0)),  # month end
    (sh(2026, 2, 28, 21, 0), sh(2026, 3, 1, 9, 0)),  # February's end (not a leap year)
    (sh(2028, 2, 28, 21, 0), sh(2028, 2, 29, 9, 0)),  # a leap year
    (sh(2026, 12, 31, 23, 0), sh(2027, 1, 1, 9, 0)),  # year end
])
def test_quiet_hours_in_shanghai(at: datetime, opens: datetime | None) -> None:
    assert quiet_until(SH, at) == opens


def test_quiet_hours_that_do_not_wrap_and_none_at_all() -> None:
    lunch = Settings(quiet_start=12 * 60, quiet_end=13 * 60 + 30)
    assert quiet_until(lunch, sh(2026, 6, 10, 12, 15)) == sh(2026, 6, 10, 13, 30)
    assert quiet_until(lunch, sh(2026, 6, 10, 13, 30)) is None
    assert quiet_until(lunch, sh(2026, 6, 10, 11, 59)) is None
    assert quiet_until(Settings(quiet_start=0, quiet_end=0), sh(2026, 6, 10, 3, 0)) is None


def test_quiet_hours_follow_the_tenants_zone_across_dst() -> None:
    berlin = Settings(timezone="Europe/Berlin", quiet_start=21 * 60, quiet_end=9 * 60)
    # The night DST starts (2026-03-29, 02:00 → 03:00): 9:00 local is 07:00 UTC the next morning.
    assert quiet_until(berlin, datetime(2026, 3, 28, 21, 30, tzinfo=UTC)) == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    # The night it ends (2026-10-25): 9:00 local is 08:00 UTC.
    assert quiet_until(berlin, datetime(2026, 10, 24, 20, 30, tzinfo=UTC)) == datetime(2026, 10, 25, 8, 0, tzinfo=UTC)


def test_holdout_buckets_are_stable_and_even() -> None:
    assert bucket(1, "journey:3", 42) == bucket(1, "journey:3", 42)
    assert bucket(1, "journey:3", 42) != bucket(1, "journey:4", 42) or bucket(1, "journey:3", 43) != bucket(1, "journey:4", 43)
    held = sum(held_out(10, 1, "journey:3", c) for c in range(20_000))
    assert 1_800 < held < 2_200  # about 10 %
    assert not any(held_out(0, 1, "journey:3", c) for c in range(1000))


def test_the_mass_send_month_is_chinas() -> None:
    assert month_start(datetime(2026, 11, 30, 16, 0, tzinfo=UTC)) == datetime(2026, 11, 30, 16, 0, tzinfo=UTC)
    assert month_start(datetime(2026, 11, 30, 15, 59, tzinfo=UTC)).month == 11


def test_transitions_only_move_forward() -> None:
    ledger.check(("scheduled",), "due")
    ledger.check(("due",), "sending")
    ledger.check(("sending",), "waiting_for_rep")
    ledger.check(("waiting_for_rep",), "not_sent")
    for frm, to in [("sent", "sending"), ("skipped", "scheduled"), ("due", "scheduled"), ("sending", "due"),
                    ("held_out", "sent"), ("scheduled", "sent"), ("waiting_for_rep", "sending"),
                    ("unknown", "sent"), ("failed", "sending"), ("not_sent", "sent")]:
        with pytest.raises(ledger.IllegalTransition):
            ledger.check((frm,), to)
    assert set(ledger.FINAL).isdisjoint(ledger.TRANSITIONS)  # nothing leaves a final state


def test_lift_and_its_interval() -> None:
    lf = lift(60, 1000, 40, 1000)
    assert lf is not None
    assert lf.difference == pytest.approx(0.02)
    assert lf.low < 0.02 < lf.high and lf.high - lf.low == pytest.approx(2 * 1.96 * ((0.06 * 0.94 + 0.04 * 0.96) / 1000) ** 0.5)
    assert lf.relative == pytest.approx(0.5)
    assert lift(1, 10, 0, 0) is None
