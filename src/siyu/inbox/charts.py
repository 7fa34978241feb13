"""Charts as geometry for inline SVG, drawn on the server: no chart library, nothing from a CDN, and the
page works without JavaScript. Each mark carries the words for its `<title>` (the numbers on hover); the
templates (`inbox/manager_charts.html`) only place what is computed here."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from siyu.core.i18n import N_, gettext

WIDTH = 900
HEIGHT = 240
MARGIN_LEFT = 64
MARGIN_RIGHT = 16
MARGIN_TOP = 16
MARGIN_BOTTOM = 36
COUNT_STEPS = tuple(m * 10 ** e for e in range(0, 7) for m in (1, 2, 5))
DURATION_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400,
                  172800, 432000, 864000)


def duration_text(seconds: float) -> str:
    """A wait or a handling time in words a manager reads at a glance: 45 s, 3 min 20 s, 2 h 5 min, 1 d 4 h."""
    s = max(0, round(seconds))
    if s < 60:
        return gettext(N_("{n} s")).format(n=s)
    if s < 600:
        m, r = divmod(s, 60)
        return gettext(N_("{m} min {s} s")).format(m=m, s=r) if r else gettext(N_("{n} min")).format(n=m)
    minutes = round(s / 60)
    if minutes < 60:
        return gettext(N_("{n} min")).format(n=minutes)
    h, m = divmod(minutes, 60)
    if h < 24:
        return gettext(N_("{h} h {m} min")).format(h=h, m=m) if m else gettext(N_("{n} h")).format(n=h)
    d, h = divmod(round(s / 3600), 24)
    return gettext(N_("{d} d {h} h")).format(d=d, h=h) if h else gettext(N_("{n} d")).format(n=d)


def count_text(value: float) -> str:
    return f"{value:,.0f}"


def nice_max(value: float, steps: Sequence[int], ticks: int = 4) -> tuple[float, float]:
    """The axis top and tick step: the smallest step from `steps` that covers `value` in `ticks` steps."""
    value = max(value, 0.0)
    for step in steps:
        if step * ticks >= value:
            top = step * max(1, math.ceil(value / step))
            return float(top), float(step)
    step = steps[-1]
    return float(step * math.ceil(value / step)), float(step)


@dataclass(frozen=True)
class Tick:
    pos: float
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    title: str
    tone: str = "bar"  # bar | back | ok | busy | full (the templates map tones to colours)
    label: str = ""


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    title: str


@dataclass(frozen=True)
class Line:
    name: str
    tone: str
    path: str  # an SVG path; a day without data breaks the line
    points: list[Point]


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    left: float
    right: float
    top: float
    bottom: float
    y_ticks: list[Tick] = field(default_factory=list)
    x_ticks: list[Tick] = field(default_factory=list)
    bars: list[Bar] = field(default_factory=list)
    lines: list[Line] = field(default_factory=list)
    row_labels: list[Tick] = field(default_factory=list)  # horizontal bars: the name beside each row
    horizontal: bool = False

    @property
    def empty(self) -> bool:
        return not self.bars and not any(line.points for line in self.lines)


def _frame(title: str, height: int = HEIGHT, top: int = MARGIN_TOP) -> Chart:
    return Chart(title, WIDTH, height, MARGIN_LEFT, WIDTH - MARGIN_RIGHT, top, height - MARGIN_BOTTOM)


def _y_ticks(chart: Chart, top: float, step: float, fmt: Callable[[float], str]) -> list[Tick]:
    span = chart.bottom - chart.top
    n = round(top / step) if step else 0
    return [Tick(chart.bottom - span * (k * step / top if top else 0), fmt(k * step)) for k in range(n + 1)]


def _slots(chart: Chart, labels: Sequence[str]) -> tuple[float, list[Tick]]:
    width = (chart.right - chart.left) / max(1, len(labels))
    return width, [Tick(chart.left + width * (i + 0.5), label) for i, label in enumerate(labels)]


def bar_chart(title: str, labels: Sequence[str], values: Sequence[float], titles: Sequence[str],
              fmt: Callable[[float], str] = count_text) -> Chart:
    """One bar per label (days), counts on the y axis."""
    chart = _frame(title)
    top, step = nice_max(max(values, default=0) or 1, COUNT_STEPS)
    width, x_ticks = _slots(chart, labels)
    span = chart.bottom - chart.top
    bars = []
    for tick, value, words in zip(x_ticks, values, titles, strict=True):
        h = span * value / top
        bars.append(Bar(tick.pos - width * 0.35, chart.bottom - h, width * 0.7, h, words,
                        label=fmt(value) if value else ""))
    return replace(chart, y_ticks=_y_ticks(chart, top, step, fmt), x_ticks=x_ticks, bars=bars)


def line_chart(title: str, labels: Sequence[str], series: Sequence[tuple[str, str, Sequence[float | None],
                                                                          Sequence[str]]],
               fmt: Callable[[float], str] = duration_text, steps: Sequence[int] = DURATION_STEPS) -> Chart:
    """Lines over the labels (days): each series is (name, tone, values, titles); None leaves a gap. The
    legend sits above the plot."""
    chart = _frame(title, top=MARGIN_TOP + 12)
    highest = max((v for _, _, values, _ in series for v in values if v is not None), default=0.0)
    top, step = nice_max(highest or 1, steps)
    _, x_ticks = _slots(chart, labels)
    span = chart.bottom - chart.top
    lines = []
    for name, tone, values, titles in series:
        points, path, pen_down = [], [], False
        for tick, value, words in zip(x_ticks, values, titles, strict=True):
            if value is None:
                pen_down = False
                continue
            y = chart.bottom - span * value / top
            path.append(f"{'L' if pen_down else 'M'}{tick.pos:.1f} {y:.1f}")
            points.append(Point(round(tick.pos, 1), round(y, 1), words))
            pen_down = True
        lines.append(Line(name, tone, " ".join(path), points))
    return replace(chart, y_ticks=_y_ticks(chart, top, step, fmt), x_ticks=x_ticks, lines=lines)


ROW = 22


def load_chart(title: str, rows: Sequence[tuple[str, int, int, str]]) -> Chart:
    """One row per rep: their capacity as a pale bar, what they hold now over it. Rows are
    (name, assigned, capacity, title)."""
    height = MARGIN_TOP + MARGIN_BOTTOM + ROW * max(1, len(rows))
    chart = Chart(title, WIDTH, height, 150, WIDTH - 56, MARGIN_TOP, height - MARGIN_BOTTOM, horizontal=True)
    top, step = nice_max(max((max(a, c) for _, a, c, _ in rows), default=0) or 1, COUNT_STEPS)
    span = chart.right - chart.left
    bars, names = [], []
    for i, (name, assigned, capacity, words) in enumerate(rows):
        y = chart.top + ROW * i + 4
        share = assigned / capacity if capacity > 0 else 1.0
        tone = "full" if share >= 1 else "busy" if share >= 0.8 else "ok"
        bars.append(Bar(chart.left, y, span * capacity / top, ROW - 8, words, "back"))
        bars.append(Bar(chart.left, y, span * assigned / top, ROW - 8, words, tone, f"{assigned}/{capacity}"))
        names.append(Tick(y + (ROW - 8) / 2, name))
    ticks = [Tick(chart.left + span * k * step / top, count_text(k * step)) for k in range(round(top / step) + 1)]
    return replace(chart, x_ticks=ticks, bars=bars, row_labels=names)
