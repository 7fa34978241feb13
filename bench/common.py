"""What the benchmarks share: progress lines, percentiles, timing a call beside its baseline, and the
report's rows (figure, target, Siyu, baseline, ratio, met)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any


def sayer(name: str) -> Callable[[str], None]:
    def say(msg: str) -> None:
        print(f"[{name}] {msg}", flush=True)
    return say


def pct(values: Sequence[float], p: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


@dataclass
class Row:
    figure: str
    target: str
    siyu: float | None  # None: only the baseline is a figure (a floor)
    raw: float | None
    unit: str
    met: bool | None

    def line(self) -> str:
        ratio = f"{self.siyu / self.raw:.2f}" if self.raw and self.siyu is not None else "—"
        siyu = f"{self.siyu:,.2f} {self.unit}" if self.siyu is not None else "—"
        raw = f"{self.raw:,.2f} {self.unit}" if self.raw is not None else "—"
        met = "—" if self.met is None else ("met" if self.met else "NOT met")
        return f"{self.figure:<58} {self.target:<9} {siyu:>16} {raw:>14} {ratio:>6}  {met}"


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    t0 = time.perf_counter()
    await call()
    return (time.perf_counter() - t0) * 1000


async def interleaved(pairs: Sequence[tuple[Callable[[], Awaitable[Any]], Callable[[], Awaitable[Any]]]]
                      ) -> tuple[list[float], list[float]]:
    """Time each (Siyu, baseline) pair back to back, alternating which goes first, so drift and noise from
    elsewhere on the machine fall on both alike."""
    service: list[float] = []
    raw: list[float] = []
    for n, (a, b) in enumerate(pairs):
        if n % 2:
            raw.append(await timed(b))
            service.append(await timed(a))
        else:
            service.append(await timed(a))
            raw.append(await timed(b))
    return service, raw
