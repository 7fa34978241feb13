"""Chart geometry for the manager view: axes that cover the data with round steps, gaps for days without
data, bars and rows where the numbers say, durations in words."""

from __future__ import annotations

import pytest

from siyu.core import i18n
from siyu.inbox import charts


@pytest.fixture(autouse=True)
def english() -> object:
    token = i18n.set_locale("en")
    yield
    i18n._current.reset(token)


@pytest.mark.parametrize(("seconds", "words"), [
    (0, "0 s"), (44.6, "45 s"), (60, "1 min"), (200, "3 min 20 s"), (610, "10 min"), (3599, "1 h"),
    (3600, "1 h"), (7500, "2 h 5 min"), (86400, "1 d"), (100800, "1 d 4 h")])
def test_durations_in_words(seconds: float, words: str) -> None:
    assert charts.duration_text(seconds) == words


def test_durations_in_chinese() -> None:
    i18n.set_locale("zh_CN")
    assert charts.duration_text(200) == "3 分 20 秒"
    assert charts.duration_text(7500) == "2 小时 5 分"


@pytest.mark.parametrize(("value", "steps", "top", "step"), [
    (0, charts.COUNT_STEPS, 1, 1), (3, charts.COUNT_STEPS, 3, 1), (7, charts.COUNT_STEPS, 8, 2),
    (37, charts.COUNT_STEPS, 40, 10), (408, charts.DURATION_STEPS, 480, 120), (2640, charts.DURATION_STEPS, 2700, 900)])
def test_axis_tops_are_round_and_cover_the_data(value: float, steps: tuple[int, ...], top: float, step: float) -> None:
    assert charts.nice_max(value, steps) == (top, step)
    assert top >= value and (top / step) <= 4 or value == 0


def test_a_line_breaks_where_a_day_has_no_data() -> None:
    chart = charts.line_chart("t", ["a", "b", "c", "d"], [("median", "median", [60, None, 120, 90], ["1", "", "3", "4"])])
    [line] = chart.lines
    assert line.path.count("M") == 2 and line.path.count("L") == 1  # a, then c–d
    assert [p.title for p in line.points] == ["1", "3", "4"]
    ys = {p.title: p.y for p in line.points}
    assert ys["3"] < ys["4"] < ys["1"]  # higher values sit higher (smaller y)
    assert chart.y_ticks[0].pos == chart.bottom and chart.y_ticks[-1].pos == pytest.approx(chart.top)
    assert chart.y_ticks[-1].label == "2 min"


def test_bars_stand_on_the_axis_with_their_heights_in_proportion() -> None:
    chart = charts.bar_chart("t", ["a", "b", "c"], [2, 0, 4], ["two", "none", "four"])
    a, b, c = chart.bars
    assert a.y + a.height == pytest.approx(chart.bottom) and c.height == pytest.approx(2 * a.height)
    assert b.height == 0 and [x.title for x in chart.bars] == ["two", "none", "four"]
    assert not chart.empty and charts.bar_chart("t", ["a"], [0], ["z"]).bars[0].height == 0


def test_load_rows_show_capacity_behind_what_is_held() -> None:
    chart = charts.load_chart("t", [("Li", 3, 10, "Li: 3 of 10"), ("Wang", 10, 10, "Wang: 10 of 10")])
    back, held, back2, held2 = chart.bars
    assert (back.tone, held.tone, held2.tone) == ("back", "ok", "full")
    assert held.width == pytest.approx(back.width * 0.3) and held2.width == pytest.approx(back2.width)
    assert [r.label for r in chart.row_labels] == ["Li", "Wang"] and held.label == "3/10"
