# SPDX-License-Identifier: Apache-2.0
"""Turning raw benchmark metrics into improvement ratios a repository can compare.

A ratio above 1.0 always means "better than the baseline", whatever the metric's direction, so
results from different goals and units can be ranked with one rule (``schedcp.trial.compare``).
The primary metric is the one the workload profile's goal names; a result beats its baseline when
that ratio clears a small margin, so noise-level differences are not recorded as wins.
"""

from __future__ import annotations

import hashlib
import math
import os
import platform
from dataclasses import dataclass

from schedcp.trial.compare import direction, ratios

# `direction` is the trial core's one rule, importable from here for the repository's callers.
__all__ = ["WIN_MARGIN", "Outcome", "direction", "host_fingerprint", "judge", "primary_metric"]

WIN_MARGIN = 1.01  # a result "beats its baseline" when the goal metric improves by more than 1 %


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
    known = ratios(metrics, baseline, explicit)
    primary = primary_metric(goal, list(known))
    if primary is not None:
        value: float | None = known[primary]
    elif known:
        # No metric matches the goal: fall back to the geometric mean of all known ratios.
        primary = "geomean"
        value = round(math.exp(sum(math.log(r) for r in known.values() if r > 0) / len(known)), 6)
    else:
        value = None
    return Outcome(known, primary, value, bool(value is not None and value > WIN_MARGIN))


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
