# SPDX-License-Identifier: Apache-2.0
"""Turning raw benchmark metrics into improvement ratios a repository can compare.

A ratio above 1.0 always means "better than the baseline", whatever the metric's direction, so
results from different goals and units can be ranked with one rule. The primary metric is the one
the workload profile's goal names; a result beats its baseline when that ratio clears a small
margin, so noise-level differences are not recorded as wins.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
from dataclasses import dataclass

WIN_MARGIN = 1.01  # a result "beats its baseline" when the goal metric improves by more than 1 %

# Checked in this order: names that clearly mean "lower is better" first, because throughput-like
# words also appear inside them ("requests_latency"); weak unit suffixes last.
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
)
_LOWER_WEAK = ("time", "seconds", "secs", "_s", "_ms", "_us", "_ns", "cost", "energy", "joules", "power")


def direction(metric: str, explicit: dict[str, str] | None = None) -> str | None:
    """'lower', 'higher' or None (unknown) for a metric name."""
    if explicit and metric in explicit:
        return explicit[metric]
    name = metric.lower()
    if any(token in name for token in _LOWER_STRONG):
        return "lower"
    if any(token in name for token in _HIGHER):
        return "higher"
    if any(token in name for token in _LOWER_WEAK):
        return "lower"
    return None


def improvement_ratios(
    metrics: dict[str, float], baseline: dict[str, float], explicit: dict[str, str] | None = None
) -> dict[str, float]:
    """metric -> ratio (>1 is better) for metrics present in both with a known direction."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        base = baseline.get(name)
        way = direction(name, explicit)
        if base is None or way is None:
            continue
        if way == "lower" and value > 0 and base > 0:
            out[name] = base / value
        elif way == "higher" and base > 0 and value >= 0:
            out[name] = value / base
    return {k: round(v, 6) for k, v in out.items()}


def primary_metric(goal: str, names: list[str]) -> str | None:
    """The metric a goal refers to: exact name, else every goal word appears in the metric name."""
    if goal in names:
        return goal
    want = set(goal.split("_"))
    for name in sorted(names):
        if want <= set(name.lower().split("_")):
            return name
    for name in sorted(names):
        if goal in name.lower():
            return name
    return None


@dataclass(frozen=True)
class Outcome:
    ratios: dict[str, float]
    primary: str | None
    primary_ratio: float | None
    beat_baseline: bool


def judge(
    goal: str, metrics: dict[str, float], baseline: dict[str, float], explicit: dict[str, str] | None = None
) -> Outcome:
    ratios = improvement_ratios(metrics, baseline, explicit)
    primary = primary_metric(goal, list(ratios))
    if primary is not None:
        value: float | None = ratios[primary]
    elif ratios:
        # No metric matches the goal: fall back to the geometric mean of all known ratios.
        primary = "geomean"
        value = round(math.exp(sum(math.log(r) for r in ratios.values() if r > 0) / len(ratios)), 6)
    else:
        value = None
    return Outcome(ratios, primary, value, bool(value is not None and value > WIN_MARGIN))


def host_fingerprint() -> str:
    """A stable, non-identifying id of the hardware a result was measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError):
        pages = 0
    text = f"{platform.machine()}|{model}|{os.cpu_count()}|{pages // (1 << 30)}GiB"
    return hashlib.sha256(text.encode()).hexdigest()[:16]
