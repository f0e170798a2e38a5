# SPDX-License-Identifier: Apache-2.0
"""The correctness load: run it in the guest, summarise it, and judge what each task saw.

The guest side is ``guest/verifyload.py`` (stdlib only), uploaded at run time. Judging is a pure
function of its JSON output, so the bounds are unit-testable without a VM. The bounds are far
looser than what EEVDF or any sane sched_ext policy achieves on a 2-CPU TCG guest, and the timing
ones are widened further by what EEVDF itself showed in the same boot: on the shared development
host (load average 6-15 from other VMs) EEVDF had task gaps up to 1.7 s and wakeup p99 up to
400 ms. Crossing them means starvation or gross unfairness, not noise. Unequal shares between
equal tasks are only an error when starvation-grade (under 15%); milder ones are a warning, since
a policy such as longest-job-first is unequal on purpose.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from schedcp.verifier.report import Finding, Severity

GUEST_SCRIPT = Path(__file__).with_name("guest") / "verifyload.py"
GUEST_NAME = "verifier/verifyload.py"


@dataclass(frozen=True)
class Bounds:
    max_gap_s: float = 2.0  # longest time any task may go without running
    late_start_s: float = 1.5  # how long the late starter may wait for its first run
    min_equal_share: float = 0.15  # least/most CPU among equal-nice hogs: below is starvation-grade
    warn_equal_share: float = 0.4  # below this, unequal shares are reported (a policy may intend it)
    min_late_share: float = 0.1  # late starter's CPU rate relative to an equal hog's
    max_wakeup_p99_ms: float = 2000.0  # above: an error (waking tasks are effectively starved)
    warn_wakeup_p99_ms: float = 750.0  # above: a warning (few samples make p99 noisy on a busy host)
    # A policy that declares its longest wait is unequal on purpose; the progress bound (max_gap_s,
    # the declared wait) is what rules out starvation, so unequal shares are reported as warnings.
    shares_are_warnings: bool = False

    @classmethod
    def for_declared_wait(cls, wait_bound_s: float | None) -> Bounds:
        """The bounds for a policy that declares its longest wait (``SchedulerMeta.wait_bound``):
        tasks may go without CPU up to the declared bound, not beyond; a declaration never
        tightens the default."""
        if wait_bound_s is None:
            return cls()
        return cls(
            max_gap_s=max(cls.max_gap_s, wait_bound_s),
            late_start_s=max(cls.late_start_s, wait_bound_s),
            shares_are_warnings=True,
        )

    def relative_to(self, baseline: dict[str, Any] | None) -> Bounds:
        """Widen the timing bounds when EEVDF itself was slow in this boot (a busy host stalls vCPUs)."""
        if not baseline:
            return self
        return replace(
            self,
            max_gap_s=max(self.max_gap_s, 2 * (baseline.get("max_gap_s") or 0.0)),
            max_wakeup_p99_ms=max(self.max_wakeup_p99_ms, 8 * (baseline.get("wakeup_p99_ms") or 0.0)),
            warn_wakeup_p99_ms=max(self.warn_wakeup_p99_ms, 4 * (baseline.get("wakeup_p99_ms") or 0.0)),
            late_start_s=max(self.late_start_s, 2 * (baseline.get("late_first_progress_s") or 0.0)),
        )


HOG_PREFIXES = ("equal", "nice", "late")


def upload(node) -> str:
    return node.put_file(GUEST_NAME, GUEST_SCRIPT.read_bytes())


def run(node, script: str, seconds: float, host_cpu: Callable[[], float] | None = None) -> dict[str, Any]:
    """Run the load once; returns the node's run result with the parsed JSON under "load".

    `host_cpu` reads the CPU time the VM process has used on the host; the difference over the run
    lets the work rate be normalised by how much CPU the guest actually got (the host may be busy).
    """
    before = host_cpu() if host_cpu else None
    result = node.run(["python3", script, "--seconds", f"{seconds:g}"], seconds * 3 + 20).as_dict()
    if before is not None and host_cpu is not None:
        result["host_cpu_s"] = round(host_cpu() - before, 3)
    parsed = None
    if result.get("exit_code") == 0 and not result.get("timed_out"):
        try:
            parsed = json.loads(result.get("stdout") or "")
        except ValueError:
            parsed = None
    if parsed is not None and "host_cpu_s" in result:
        parsed["host_cpu_s"] = result["host_cpu_s"]
    return {**result, "load": parsed}


def summary(load: dict[str, Any] | None) -> dict[str, Any]:
    """A few comparable numbers (higher work/trips/forks is better, lower latency is better)."""
    if not load:
        return {}
    tasks = load.get("tasks", {})
    seconds = float(load.get("seconds") or 1)
    hogs = [t for n, t in tasks.items() if n.startswith(HOG_PREFIXES) and "chunks" in t]
    sleepers = [t for n, t in tasks.items() if n.startswith("sleeper") and "wakeups" in t]
    work = sum(t["chunks"] for t in hogs)
    host = load.get("host_cpu_s")
    return {
        "cpu_busy": load.get("cpu_busy"),
        "work_per_s": round(work / seconds, 1),
        "work_per_host_cpu_s": round(work / host, 1) if host else None,
        "wakeup_p99_ms": max((t["lat_p99_ms"] for t in sleepers), default=None),
        "wakeup_p50_ms": max((t["lat_p50_ms"] for t in sleepers), default=None),
        "wakeups": sum(t["wakeups"] for t in sleepers),
        "pingpong_per_s": round(tasks.get("pingpong", {}).get("round_trips", 0) / seconds, 1),
        "forks_per_s": round(tasks.get("forker", {}).get("forks", 0) / seconds, 1),
        "max_gap_s": max((t.get("max_gap_s", 0.0) for t in tasks.values()), default=0.0),
        "late_first_progress_s": tasks.get("late", {}).get("first_progress_s"),
        "context_switches": load.get("context_switches"),
    }


def _finding(
    fid: str, message: str, hint: str, evidence: list[str] | None = None, severity: Severity = "error"
) -> Finding:
    return Finding(
        id=fid,
        stage="dynamic",
        severity=severity,
        message=message,
        hint=hint,
        evidence=evidence or [],
    )


def judge(
    run_result: dict[str, Any], seconds: float, bounds: Bounds = Bounds(), baseline: dict[str, Any] | None = None
) -> list[Finding]:
    """Findings about progress, fairness and wakeup latency from one run under the scheduler.

    `baseline` is the summary() of the same load under EEVDF in the same boot; timing bounds are
    widened by it, so a slow host does not turn into a verdict against the scheduler.
    """
    bounds = bounds.relative_to(baseline)
    load = run_result.get("load")
    if load is None:
        why = "timed out" if run_result.get("timed_out") else f"exited with {run_result.get('exit_code')}"
        tail = (run_result.get("stderr") or "").strip().splitlines()[-3:]
        return [
            _finding(
                "dyn-load-failed",
                f"the correctness load {why} under the scheduler",
                "the scheduler starved the load or made the guest unusably slow; check for tasks that are "
                "queued but never dispatched",
                tail,
            )
        ]
    tasks: dict[str, dict[str, Any]] = load.get("tasks", {})
    out: list[Finding] = []
    silent = sorted(n for n, t in tasks.items() if "error" in t)
    if silent:
        out.append(
            _finding(
                "dyn-starvation",
                f"{len(silent)} task(s) never reported back: {', '.join(silent)}",
                "some tasks were never scheduled; every enqueued task must reach a DSQ that a CPU drains",
                [f"{n}: {tasks[n]['error']}" for n in silent],
            )
        )
    stalled = sorted(
        (t.get("max_gap_s", 0.0), n)
        for n, t in tasks.items()
        if "error" not in t and t.get("max_gap_s", 0.0) > bounds.max_gap_s
    )
    if stalled:
        worst_gap, worst = stalled[-1]
        out.append(
            _finding(
                "dyn-starvation",
                f"{len(stalled)} task(s) went without CPU for over {bounds.max_gap_s:g}s "
                f"(worst: {worst}, {worst_gap:.2f}s)",
                "a runnable task must run within a bounded time: check priorities without aging, vtime credit, "
                "and tasks parked where no CPU looks",
                [f"{n}: longest wait {g:.2f}s" for g, n in reversed(stalled)],
            )
        )
    hogs = {n: t for n, t in tasks.items() if n.startswith(HOG_PREFIXES) and "chunks" in t}
    never = sorted(n for n, t in hogs.items() if t["chunks"] == 0)
    if never:
        out.append(
            _finding(
                "dyn-starvation",
                f"CPU-bound task(s) {', '.join(never)} never ran",
                "every runnable task must eventually be dispatched",
            )
        )
    late = hogs.get("late")
    if late and late["chunks"] and late.get("first_progress_s", 0.0) > bounds.late_start_s:
        out.append(
            _finding(
                "dyn-starvation",
                f"a task started halfway through waited {late['first_progress_s']:.2f}s for its first run",
                "new tasks need a fair starting point (e.g. start their vtime at the current global vtime)",
            )
        )
    out += _fairness(hogs, bounds)
    sleepers = {n: t for n, t in tasks.items() if n.startswith("sleeper") and "wakeups" in t}
    slow = sorted((t["lat_p99_ms"], n) for n, t in sleepers.items() if t["lat_p99_ms"] > bounds.warn_wakeup_p99_ms)
    if slow:
        severe = slow[-1][0] > bounds.max_wakeup_p99_ms
        limit = bounds.max_wakeup_p99_ms if severe else bounds.warn_wakeup_p99_ms
        out.append(
            _finding(
                "dyn-wakeup-latency",
                f"wakeup latency p99 of {slow[-1][0]:.0f} ms (bound {limit:.0f} ms) for {slow[-1][1]}",
                "waking tasks wait too long: use shorter slices, dispatch wakers to idle CPUs (select_cpu), or preempt "
                "long-running tasks",
                [f"{n}: p99 {v:.1f} ms" for v, n in slow],
                severity="error" if severe else "warning",
            )
        )
    if tasks.get("pingpong", {}).get("round_trips", 1) == 0:
        out.append(
            _finding(
                "dyn-starvation",
                "the pipe ping-pong pair made no progress",
                "tasks woken by other tasks must be enqueued and dispatched",
            )
        )
    return out


def _fairness(hogs: dict[str, dict[str, Any]], bounds: Bounds) -> list[Finding]:
    out: list[Finding] = []
    equal = {n: t for n, t in hogs.items() if n.startswith("equal")}
    rates = {n: t["cpu_s"] / max(t.get("run_s") or 0.0, 1e-3) for n, t in equal.items()}
    if len(rates) < 2 or max(rates.values()) <= 0:
        return out
    lo, hi = min(rates.values()), max(rates.values())
    if lo / hi < bounds.warn_equal_share:
        severe = lo / hi < bounds.min_equal_share and not bounds.shares_are_warnings
        out.append(
            _finding(
                "dyn-unfair",
                f"tasks with equal nice got very different CPU: the least got {lo / hi:.0%} of the most "
                f"(bound {bounds.min_equal_share if severe else bounds.warn_equal_share:.0%})",
                "equal-weight tasks should share the CPU evenly: avoid decisions keyed on pid/comm and give every task "
                "the same slice for the same weight (fine to ignore if the policy favours long jobs on purpose)",
                [f"{n}: {equal[n]['cpu_s']:.2f}s CPU" for n in sorted(equal)],
                severity="error" if severe else "warning",
            )
        )
    late = hogs.get("late")
    mean_equal = sum(rates.values()) / len(rates)
    if late and late.get("run_s") and mean_equal > 0:
        share = late["cpu_s"] / late["run_s"] / mean_equal
        if share < bounds.min_late_share:
            out.append(
                _finding(
                    "dyn-unfair",
                    f"a task started halfway through got {share:.0%} of an equal task's CPU rate",
                    "new tasks must not be penalised for starting late (check how their vtime is initialised)"
                    + (
                        "; a warning only: the policy declares a wait bound, which the progress check enforces"
                        if bounds.shares_are_warnings
                        else ""
                    ),
                    severity="warning" if bounds.shares_are_warnings else "error",
                )
            )
    return out
