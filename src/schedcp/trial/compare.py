# SPDX-License-Identifier: Apache-2.0
"""Comparing a policy with EEVDF: which way a metric is better, the ratio, and what rounds say.

One rule everywhere: a **ratio above 1.0 means the policy did better** than the baseline, whichever
way the metric points (baseline/value for lower-is-better metrics such as makespan or latency,
value/baseline for higher-is-better ones such as throughput). So 2.0 is "twice as good" and 0.8
is "worse" in every table, report and repository record, without a legend.

A metric's direction comes from the caller when it knows it (a benchmark declares it), otherwise
from its name through the one word list below. Rounds of a trial run EEVDF and the policy back to
back, so a ratio *within* a round cancels slow drift of the machine; the median of those paired
ratios and how often the policy won are reported beside the ratio of medians.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel

Direction = Literal["lower", "higher"]

# Checked in this order. Names that clearly mean "lower is better" first, because throughput-like
# words also appear inside them ("requests_latency", "ctx_switches_per_s"); weak unit suffixes last.
_LOWER_STRONG = (
    "latency",
    "makespan",
    "duration",
    "elapsed",
    "wall",
    "p50",
    "p90",
    "p95",
    "p99",
    "p999",
    "jitter",
    "stall",
    "wait",
    "delay",
    "miss",
    "tail",
    "response_time",
    "runtime",
    "completion",
    "error",
    "fail",
    "drop",
    "loss",
    "timeout",
    "switches",
    "migrations",
)
_HIGHER = (
    "throughput",
    "ops",
    "rps",
    "qps",
    "iops",
    "bandwidth",
    "bogo",
    "per_s",
    "per_sec",
    "fps",
    "score",
    "rate",
    "requests",
    "transactions",
    "events",
    "speedup",
    "goodput",
    "rounds",
    "iterations",
)
_LOWER_WEAK = ("time", "seconds", "secs", "_s", "_ms", "_us", "_ns", "cost", "energy", "joules", "power")
# Relative differences smaller than this are reported as "the same".
SAME_WITHIN = 0.02


def direction(metric: str, explicit: dict[str, str] | None = None) -> Direction | None:
    """'lower', 'higher' or None (the name does not tell) for a metric."""
    if explicit and metric in explicit:
        way = explicit[metric]
        if way not in ("lower", "higher"):
            raise ValueError(f"direction for {metric} must be 'lower' or 'higher', not {way!r}")
        return way  # type: ignore[return-value]
    name = metric.lower()
    if any(token in name for token in _LOWER_STRONG):
        return "lower"
    if any(token in name for token in _HIGHER):
        return "higher"
    if any(token in name for token in _LOWER_WEAK):
        return "lower"
    return None


# Preferred metric names per goal, most specific first; the workload's own metrics win over wall time.
_GOAL_METRICS: dict[str, list[tuple[str, ...]]] = {
    "makespan": [("makespan",), ("build_s",), ("time_s",), ("wall_s",)],
    "p99_latency": [("p99", "lat"), ("p99", "wake"), ("p99",), ("p90",), ("latency",)],
    "throughput": [("throughput",), ("per_s",), ("rps",), ("ops",)],
    "fairness": [("fair",), ("jain",), ("p99",)],
}
# Every run reports its wall time under this name: the judge of last resort.
RUN_WALL = "run_wall_s"


def goal_metric(goal: str, names: Iterable[str], named: tuple[str, Direction] | None = None) -> tuple[str, Direction]:
    """(metric, direction) that stands for a goal among the metrics a workload reports; a metric the
    user named (``--metric``) stands for every goal when the runs report it."""
    names = list(names)
    if named is not None and named[0] in names:
        return named
    ordered = sorted(n for n in names if n not in (RUN_WALL, "tasks"))
    # The goal's own metric first; failing that, the workload's headline metric for another goal (a
    # tool that runs for a fixed time, like stress-ng --timeout, has a constant wall time).
    fallbacks = [g for g in ("throughput", "p99_latency", "makespan") if g != goal]
    for wanted in (goal, *fallbacks):
        for needed in _GOAL_METRICS.get(wanted, []):
            for name in ordered:
                low = name.lower()
                way = direction(name)
                if way and all(part in low for part in needed) and "p999" not in low:
                    return name, way
    return RUN_WALL, "lower"


def ratio(baseline: float | None, value: float | None, way: Direction) -> float | None:
    """How many times better `value` is than `baseline` (>1 better, <1 worse); None if undefined.

    Undefined: a missing value, a baseline <= 0, a negative value, or a zero for a lower-is-better
    metric (infinitely better). Zero of a higher-is-better metric is a ratio of 0 (nothing done)."""
    if way not in ("lower", "higher"):
        raise ValueError(f"direction must be 'lower' or 'higher', not {way!r}")
    if baseline is None or value is None or baseline <= 0 or value < 0:
        return None
    if way == "lower":
        return baseline / value if value > 0 else None
    return value / baseline


def ratios(
    values: dict[str, float], baseline: dict[str, float], explicit: dict[str, str] | None = None, ndigits: int = 6
) -> dict[str, float]:
    """metric -> ratio (>1 better) for metrics present on both sides with a known direction."""
    out: dict[str, float] = {}
    for name, value in values.items():
        way = direction(name, explicit)
        r = ratio(baseline.get(name), value, way) if way else None
        if r is not None:
            out[name] = round(r, ndigits)
    return out


def round_ratios(pairs: Iterable[tuple[float | None, float | None]], way: Direction) -> list[float | None]:
    """Per-round ratios from (baseline, policy) values measured back to back in each round."""
    return [ratio(b, v, way) for b, v in pairs]


def consistent(round_ratio: Sequence[float | None]) -> bool:
    """The policy won at least two rounds in three (every round when there are one or two)."""
    wins = sum(1 for r in round_ratio if r is not None and r > 1.0)
    return bool(round_ratio) and 3 * wins >= 2 * len(round_ratio)


class PairedRounds(BaseModel):
    """What the per-round ratios say: their median, how many rounds the policy won, of how many."""

    median: float | None
    wins: int
    pairs: int


def paired(round_ratio: Sequence[float | None]) -> PairedRounds:
    known = [r for r in round_ratio if r is not None]
    return PairedRounds(
        median=statistics.median(known) if known else None, wins=sum(r > 1.0 for r in known), pairs=len(known)
    )


def median_metrics(runs: Sequence[dict[str, float]], ndigits: int = 6) -> dict[str, float]:
    """Per metric, the median over the runs that reported it."""
    names = sorted(set().union(*runs)) if runs else []
    return {n: round(statistics.median(r[n] for r in runs if n in r), ndigits) for n in names}


def table(baseline: dict[str, float], policy: dict[str, float]) -> dict[str, Any]:
    """Every metric both sides reported: both values, the ratio, and who was better (2 % = the same)."""
    known = ratios(policy, baseline)
    rows: dict[str, Any] = {}
    for name in baseline:
        if name not in policy:
            continue
        r = known.get(name)
        if r is None:
            verdict = "unknown direction" if direction(name) is None else "n/a"
        elif r > 1 + SAME_WITHIN:
            verdict = "scheduler"
        elif r < 1 - SAME_WITHIN:
            verdict = "baseline"
        else:
            verdict = "same (within 2%)"
        rows[name] = {"eevdf": baseline[name], "scheduler": policy[name], "ratio": r, "better": verdict}
    return {
        "metrics": rows,
        "scheduler_better": sum(1 for r in rows.values() if r["better"] == "scheduler"),
        "eevdf_better": sum(1 for r in rows.values() if r["better"] == "baseline"),
        "note": "ratio > 1 means the scheduler beat EEVDF on that metric (direction inferred from its name)",
    }
