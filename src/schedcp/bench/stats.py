# SPDX-License-Identifier: Apache-2.0
"""Robust summaries of repeated benchmark runs and direction-aware comparisons against a baseline.

Benchmarks on a shared, emulated machine are noisy, so we report the median with its spread
(min/max and the interquartile range) rather than a mean, and compare medians. A comparison is an
*improvement factor*: how many times better the policy is than the baseline, whichever way "better"
points (``schedcp.trial.compare.ratio``, the one definition). So 2.0 always means "twice as
good" and 0.8 always means "worse", and tables never need a legend for direction.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from schedcp.trial.compare import Direction

__all__ = ["Direction", "Summary", "change_pct", "format_factor", "is_better", "quantile", "summarize"]


@dataclass(frozen=True)
class Summary:
    n: int
    median: float
    mean: float
    min: float
    max: float
    q1: float
    q3: float
    stdev: float

    @property
    def iqr(self) -> float:
        return self.q3 - self.q1

    @property
    def rel_spread(self) -> float:
        """(max - min) / median: a quick noise figure; 0 for a single run."""
        return (self.max - self.min) / self.median if self.median else 0.0

    def to_dict(self) -> dict[str, float]:
        return {k: round(v, 6) if isinstance(v, float) else v for k, v in asdict(self).items()}


def quantile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation quantile (the same rule as numpy's default) of sorted data."""
    if not sorted_values:
        raise ValueError("quantile of no values")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is outside 0..1")
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def summarize(values: list[float]) -> Summary:
    clean = sorted(float(v) for v in values)
    if not clean:
        raise ValueError("cannot summarise zero runs")
    if any(math.isnan(v) or math.isinf(v) for v in clean):
        raise ValueError("values must be finite numbers")
    n = len(clean)
    mean = sum(clean) / n
    stdev = math.sqrt(sum((v - mean) ** 2 for v in clean) / (n - 1)) if n > 1 else 0.0
    return Summary(
        n, quantile(clean, 0.5), mean, clean[0], clean[-1], quantile(clean, 0.25), quantile(clean, 0.75), stdev
    )


def change_pct(baseline: float, value: float) -> float | None:
    """Raw relative change of the value against the baseline, in percent (sign = direction of change)."""
    if baseline == 0:
        return None
    return (value - baseline) / baseline * 100.0


def is_better(factor: float | None, at_least: float = 1.0) -> bool:
    return factor is not None and factor >= at_least


def format_factor(factor: float | None) -> str:
    return "n/a" if factor is None else f"{factor:.2f}×"
