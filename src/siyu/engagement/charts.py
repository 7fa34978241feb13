"""The results charts as geometry for inline SVG, drawn on the server (no chart library, no CDN, works without
JavaScript): horizontal bars (the funnel, sends by channel, skips by reason) and the conversion rate of the
people sent a message against the held-out ones, with the 95 % interval of the difference. Each mark carries
its words for `<title>` (the numbers on hover); `engagement/_chart.html` only places them."""

from __future__ import annotations

from dataclasses import dataclass

from siyu.core.i18n import N_, gettext
from siyu.engagement.attribution import Figures

WIDTH = 640
ROW = 26
LABEL = 170  # the narrowest label column
MAX_LABEL = 300
RIGHT = 90


@dataclass(frozen=True)
class Bar:
    y: float
    width: float
    label: str
    value: str
    title: str
    tone: str  # sent | skip | fail | held | conv


@dataclass(frozen=True)
class BarChart:
    title: str
    bars: list[Bar]
    height: int
    width: int = WIDTH
    label_width: int = LABEL


def text_width(text: str) -> float:
    """About how wide a label is at the charts' 12 px: a CJK character is a full em, Latin about half (the
    SVG cannot measure its text on the server, and a label wider than its column is cut off at the left)."""
    return sum(12.0 if ord(c) >= 0x2E80 else 6.8 for c in text)


def bar_chart(title: str, items: list[tuple[str, float, str]], fmt: str = "{:,.0f}") -> BarChart:
    """Rows of (label, value, tone), each bar scaled to the largest value; the label column as wide as the
    longest label (within bounds)."""
    top = max([v for _, v, _ in items] or [0]) or 1
    label_width = int(min(MAX_LABEL, max([LABEL] + [text_width(label) + 16 for label, _, _ in items])))
    span = WIDTH - label_width - RIGHT
    bars = [Bar(8 + n * ROW, span * v / top, label, fmt.format(v), f"{label}: {fmt.format(v)}", tone)
            for n, (label, v, tone) in enumerate(items)]
    return BarChart(title, bars, 16 + ROW * max(1, len(items)), label_width=label_width)


def funnel(f: Figures) -> BarChart:
    converted = f.conversions
    return bar_chart(gettext(N_("From targeted to converted")), [
        (gettext(N_("Targeted")), f.targeted, "sent"),
        (gettext(N_("Sent")), f.sent, "sent"),
        (gettext(N_("Held out")), f.held_out, "held"),
        (gettext(N_("Skipped")), f.by_state["skipped"], "skip"),
        (gettext(N_("Failed or not sent")), f.by_state["failed"] + f.by_state["not_sent"] + f.by_state["unknown"],
         "fail"),
        (gettext(N_("Converted after a send")), converted, "conv")])


CARRIERS = {"oa_window": N_("Official Account reply window"), "mp_window": N_("Mini Program reply window"),
            "kf_window": N_("微信客服 reply window"), "wecom_task": N_("WeCom 1:1 through the rep"),
            "mp_subscribe": N_("Mini Program subscription message"), "oa_template": N_("Official Account template"),
            "oa_mass": N_("Official Account mass send")}


def by_channel(f: Figures) -> BarChart:
    return bar_chart(gettext(N_("Sent, by channel")),
                     [(gettext(CARRIERS.get(k, k)), v, "sent") for k, v in f.sent_by_channel.most_common()])


@dataclass(frozen=True)
class LiftChart:
    title: str
    sent_rate: float
    held_rate: float
    sent_width: float
    held_width: float
    ci_low_x: float
    ci_high_x: float
    zero_x: float
    words: str
    width: int = WIDTH
    height: int = 120
    label_width: int = LABEL


def lift_chart(f: Figures) -> LiftChart | None:
    """The two conversion rates as bars, and below them the difference with its interval on an axis that
    shows zero: an interval that crosses zero is no proof the message worked."""
    lf = f.lift()
    if lf is None or f.rate is None or f.held_out_rate is None:
        return None
    span = WIDTH - LABEL - RIGHT
    top = max(f.rate, f.held_out_rate, 0.0001)
    reach = max(abs(lf.low), abs(lf.high), 0.0001)

    def at(d: float) -> float:
        return LABEL + span / 2 + span / 2 * d / reach

    words = gettext(N_("{diff:+.1f} points ({low:+.1f} to {high:+.1f}, 95 %)")).format(
        diff=lf.difference * 100, low=lf.low * 100, high=lf.high * 100)
    return LiftChart(gettext(N_("Conversion: sent against held out")), f.rate, f.held_out_rate, span * f.rate / top,
                     span * f.held_out_rate / top, at(lf.low), at(lf.high), at(0), words)
