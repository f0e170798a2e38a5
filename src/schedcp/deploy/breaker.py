# SPDX-License-Identifier: Apache-2.0
"""The circuit breaker's judgement, without I/O: the goal metric, its noise threshold, the trip rules.

The metric comes from schedstat counters of the canary's threads (``node/canary.py``), differenced
per tick over threads seen in both ticks:

* ``wait_share`` = wait / (run + wait): of the time the target wanted a CPU, the share it waited;
* ``cpu_rate``   = run / wall: CPU seconds per second the target got.

The threshold is the baseline's median moved by the largest of ``k`` standard errors of the
compared statistic (see :func:`noise`: one tick's sigma is 1.4826·MAD of the baseline), a relative
margin and an absolute margin, so a quiet baseline (MAD near 0) does not make every wobble a
regression. A trip needs the rolling median of ``smooth`` ticks to be bad ``consecutive_bad`` times
in a row.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field

from schedcp.deploy.config import DeployPolicy
from schedcp.deploy.models import GOAL_DIRECTIONS, GoalMetric, Sample, Threshold
from schedcp.errors import SchedcpError

MAD_TO_SIGMA = 1.4826
MEDIAN_SE = math.sqrt(math.pi / 2)  # a sample median's standard error, in sigmas times sqrt(n)


@dataclass
class Counters:
    """One ``canary_sample`` answer: the node's clock and run/wait nanoseconds per thread."""

    t: float
    tasks: dict[str, tuple[int, int]]
    procs: list[int] = field(default_factory=list)

    @classmethod
    def from_node(cls, raw: dict[str, object]) -> Counters:
        tasks_raw = raw.get("tasks")
        tasks: dict[str, tuple[int, int]] = {}
        if isinstance(tasks_raw, dict):
            for tid, pair in tasks_raw.items():
                if isinstance(pair, list) and len(pair) == 2:
                    tasks[str(tid)] = (int(pair[0]), int(pair[1]))
        t = raw.get("t")
        procs_raw = raw.get("procs")
        procs = [int(p) for p in procs_raw if isinstance(p, int)] if isinstance(procs_raw, list) else []
        return cls(float(t) if isinstance(t, int | float) else 0.0, tasks, procs)


def metric_value(metric: GoalMetric, before: Counters, after: Counters) -> Sample:
    """The goal metric over the tick between two samples (threads present in both)."""
    run = wait = 0
    common = before.tasks.keys() & after.tasks.keys()
    for tid in common:
        r0, w0 = before.tasks[tid]
        r1, w1 = after.tasks[tid]
        run += max(0, r1 - r0)
        wait += max(0, w1 - w0)
    wall = after.t - before.t
    value: float | None
    if metric == "wait_share":
        value = wait / (run + wait) if run + wait > 0 else None
    else:
        value = run / 1e9 / wall if wall > 0 and common else None
    return Sample(t=after.t, value=None if value is None else round(value, 6), tasks=len(common))


def threshold(metric: GoalMetric, samples: list[Sample], policy: DeployPolicy) -> Threshold:
    """The line a canary sample must not cross, from the baseline's median and MAD."""
    values = [s.value for s in samples if s.value is not None]
    if len(values) < policy.min_baseline_samples:
        raise SchedcpError(
            f"the baseline has {len(values)} usable samples of {metric}, fewer than {policy.min_baseline_samples}",
            "make sure the canary's target is running and busy during the baseline, or raise baseline_s",
            code="baseline_too_short",
        )
    median = statistics.median(values)
    mad = statistics.median(abs(v - median) for v in values)
    margin = max(
        policy.mad_k * noise(mad, len(values), policy.smooth), policy.rel_margin * abs(median), policy.abs_margin
    )
    direction = GOAL_DIRECTIONS[metric]
    limit = median + margin if direction == "lower" else median - margin
    return Threshold(
        metric=metric,
        direction=direction,
        median=round(median, 6),
        mad=round(mad, 6),
        margin=round(margin, 6),
        limit=round(limit, 6),
        samples=len(values),
    )


def noise(mad: float, baseline_n: int, smooth: int) -> float:
    """The standard error of what the breaker compares: the rolling median of ``smooth`` ticks minus
    the baseline's median of ``baseline_n`` ticks. MAD·1.4826 estimates one tick's sigma; a median of
    n samples has a standard error of about sqrt(pi/2)·sigma/sqrt(n), and the two medians add."""
    sigma = MAD_TO_SIGMA * mad
    return MEDIAN_SE * sigma * math.sqrt(1.0 / max(1, smooth) + 1.0 / max(1, baseline_n))


@dataclass
class MetricWatch:
    """The rolling median of the last ``smooth`` ticks against the threshold; ``feed`` says when
    ``consecutive_bad`` such medians in a row were bad (one noisy tick cannot trip it)."""

    threshold: Threshold
    consecutive_bad: int
    smooth: int = 1
    recent: deque[Sample] = field(default_factory=lambda: deque(maxlen=20))
    bad_run: int = 0

    def feed(self, sample: Sample) -> bool:
        self.recent.append(sample)
        if sample.value is None:
            return False  # an idle tick says nothing either way
        values = [s.value for s in self.recent if s.value is not None][-self.smooth :]
        if len(values) < self.smooth:
            return False
        if self.threshold.bad(statistics.median(values)):
            self.bad_run += 1
        else:
            self.bad_run = 0
        return self.bad_run >= self.consecutive_bad


def trips_in_window(trip_times: list[float], *, since_reset: float, now: float, window_s: float) -> int:
    """Trips that count toward the crash-loop cap: inside the window and after the last operator reset."""
    return sum(1 for t in trip_times if t > since_reset and now - t <= window_s)
