# SPDX-License-Identifier: Apache-2.0
"""The circuit breaker's judgement, without I/O: the goal metric, its noise threshold, the trip rules.

The metric comes from schedstat counters of the canary's threads (``node/canary.py``), differenced
per tick:

* ``wait_share`` = wait / (run + wait) over threads seen in both ticks: of the time the target
  wanted a CPU, the share it waited;
* ``cpu_rate``   = CPU seconds per second the target got, its jobs that ended during the tick
  included: the live threads' run time plus, per process, the CPU of its reaped children
  (``cutime + cstime``). A process that was reaped by a process the tick still sees has its last
  seen counters taken back, because its whole CPU time now shows in its parent's, so nothing is
  counted twice and a job that lived and died between two samples is not lost. Counting only
  threads seen in both ticks instead would favour schedulers that keep many jobs alive at once:
  one that runs short jobs to completion (50 ms each, a 500 ms tick) would have most of its work
  fall between samples and look starved. A reap that races a sample (the parent read before it,
  the child after) moves the child's time from one tick to the next, so one tick can read low
  (even below zero) and the next high by the same amount; the rolling median absorbs such a pair,
  and the sum over ticks stays exact.

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
    """One ``canary_sample`` answer: the node's clock, run/wait nanoseconds per thread (``owner``:
    each thread's process) and per process its parent and its reaped children's CPU nanoseconds."""

    t: float
    tasks: dict[str, tuple[int, int]]
    procs: list[int] = field(default_factory=list)
    owner: dict[str, int] = field(default_factory=dict)
    reaped: dict[int, tuple[int, int]] = field(default_factory=dict)  # pid -> (ppid, children's CPU ns)

    @classmethod
    def from_node(cls, raw: dict[str, object]) -> Counters:
        tasks_raw = raw.get("tasks")
        tasks: dict[str, tuple[int, int]] = {}
        owner: dict[str, int] = {}
        if isinstance(tasks_raw, dict):
            for tid, row in tasks_raw.items():
                if isinstance(row, list) and len(row) in (2, 3):
                    tasks[str(tid)] = (int(row[0]), int(row[1]))
                    if len(row) == 3:
                        owner[str(tid)] = int(row[2])
        reaped: dict[int, tuple[int, int]] = {}
        reaped_raw = raw.get("reaped")
        if isinstance(reaped_raw, dict):
            for pid, pair in reaped_raw.items():
                if str(pid).isdigit() and isinstance(pair, list) and len(pair) == 2:
                    reaped[int(pid)] = (int(pair[0]), int(pair[1]))
        t = raw.get("t")
        procs_raw = raw.get("procs")
        procs = [int(p) for p in procs_raw if isinstance(p, int)] if isinstance(procs_raw, list) else []
        return cls(float(t) if isinstance(t, int | float) else 0.0, tasks, procs, owner, reaped)


def metric_value(metric: GoalMetric, before: Counters, after: Counters) -> Sample:
    """The goal metric over the tick between two samples (see the module docstring)."""
    common = before.tasks.keys() & after.tasks.keys()
    wall = after.t - before.t
    value: float | None
    if metric == "wait_share":
        run = wait = 0
        for tid in common:
            r0, w0 = before.tasks[tid]
            r1, w1 = after.tasks[tid]
            run += max(0, r1 - r0)
            wait += max(0, w1 - w0)
        value = wait / (run + wait) if run + wait > 0 else None
    else:
        cpu_ns = _cpu_ns(before, after)
        value = cpu_ns / 1e9 / wall if wall > 0 and (common or after.tasks) else None
    return Sample(t=after.t, value=None if value is None else round(value, 6), tasks=len(common))


def _cpu_ns(before: Counters, after: Counters) -> int:
    """CPU nanoseconds the target used between two samples, ended jobs included.

    The target's CPU so far is the sum of its live threads' run time and its processes' reaped
    children's time. Each sample sees part of it; the difference is taken over what both can
    account for: everything ``after`` sees (a thread or process it sees for the first time was born
    or found during the tick, and brings what it had used), minus what ``before`` saw of it. A
    process ``before`` saw and ``after`` does not was reaped: if its parent is one ``after`` sees,
    its whole time moved into that parent's reaped counter, so its last seen counters are taken
    back; otherwise (its parent is not part of the target) it is simply no longer counted. A thread
    that ended inside a process that lives on is dropped the same way (its time stays in the
    process, which exposes no per-thread remainder). A chain counts too: a worker reaped by a job
    that the shell reaped in the same tick ended up in the shell's counter."""
    gone = {pid for pid in before.reaped if pid not in after.reaped}
    moved = {pid for pid in gone if _reaped_into(pid, before, after)}
    used = sum(r for r, _w in after.tasks.values()) + sum(c for _p, c in after.reaped.values())
    for tid, (r0, _w0) in before.tasks.items():
        if tid in after.tasks or before.owner.get(tid) in moved:
            used -= r0
    for pid, (_ppid, c0) in before.reaped.items():
        if pid in after.reaped or pid in moved:
            used -= c0
    # Not clamped: a reap that races a sample (the parent read before it, the child after) moves
    # the child's time to the next tick, which reads high by what this one reads low; clamping would
    # turn that into CPU time counted twice. The breaker's rolling median absorbs the pair.
    return used


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


def _reaped_into(pid: int, before: Counters, after: Counters) -> bool:
    """Did a process that ``after`` no longer sees end up in the counter of one it does, through
    parents that ended in the same tick?"""
    for _ in range(len(before.reaped) + 1):  # parent chains are finite; this bounds a corrupt one
        parent = before.reaped[pid][0]
        if parent in after.reaped:
            return True
        if parent not in before.reaped:
            return False
        pid = parent
    return False
