"""Small statistics helpers, and the one way every figure is printed: median (min–max) over reps."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): with 20 samples p99 is the maximum, as it should be,
    rather than an interpolation that pretends to know more than the samples do."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def p50(values: Sequence[float]) -> float:
    return statistics.median(values) if values else math.nan


def p99(values: Sequence[float]) -> float:
    return percentile(values, 99)


class Figure:
    """One measured quantity over interleaved repetitions: one value per repetition."""

    def __init__(self, values: Sequence[float] | None = None) -> None:
        self.values: list[float] = list(values or [])

    def add(self, value: float) -> None:
        self.values.append(value)

    @property
    def median(self) -> float:
        return p50(self.values)

    def fmt(self, fmt: str = "{:.1f}", unit: str = "") -> str:
        if not self.values:
            return "n/a"
        med, lo, hi = self.median, min(self.values), max(self.values)
        return f"{fmt.format(med)}{unit} ({fmt.format(lo)}–{fmt.format(hi)})"


def ratio_figure(top: Figure, bottom: Figure) -> Figure:
    """Per-repetition ratio: repetition i of both ran back to back, so drift cancels."""
    return Figure([t / b for t, b in zip(top.values, bottom.values, strict=False) if b])


def interleaved(reps: int, variants: Sequence[str]) -> list[tuple[int, str]]:
    """A,B,C,A,B,C,…: slow drift of the machine (thermal, page cache, other tenants) hits all."""
    return [(rep, v) for rep in range(reps) for v in variants]


def ms(seconds: float) -> float:
    return seconds * 1000.0


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def verdict(value: float, target: float, better: Callable[[float, float], bool]) -> str:
    return "met" if better(value, target) else "**missed**"
