# SPDX-License-Identifier: Apache-2.0
"""Measure a candidate against EEVDF: same boot, interleaved rounds, the goal's metric.

Round r runs the workload under EEVDF and under the candidate, in alternating order (EEVDF first
in odd rounds, the candidate first in even ones) so slow drift in the guest does not favour either
side. The candidate is attached before and detached after each of its runs, and after every run
the kernel's sched_ext state is checked: a policy the kernel ejected (stall, runtime error) has
failed, whatever its numbers say.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

from schedcp.agent.candidates import Built
from schedcp.agent.models import RoundResult, Trial
from schedcp.agent.session import Target, VmSession
from schedcp.errors import SchedcpError

WATCHDOG_MS = 10000

# Preferred metric names per goal, most specific first; the workload's own metrics win over wall time.
_PREFER: dict[str, list[tuple[str, ...]]] = {
    "makespan": [("makespan",), ("build_s",), ("time_s",), ("wall_s",)],
    "p99_latency": [("p99", "lat"), ("p99", "wake"), ("p99",), ("p90",), ("latency",)],
    "throughput": [("throughput",), ("per_s",), ("rps",), ("ops",)],
    "fairness": [("fair",), ("jain",), ("p99",)],
}


def goal_metric(goal: str, names: list[str]) -> tuple[str, str]:
    """(metric, 'lower'|'higher') that stands for the goal among the metrics a workload reports."""
    from schedcp.repository.outcomes import direction

    ordered = sorted(n for n in names if n not in ("run_wall_s", "tasks"))
    for needed in _PREFER.get(goal, []):
        for name in ordered:
            low = name.lower()
            if all(part in low for part in needed) and "p999" not in low and direction(name):
                return name, direction(name) or "lower"
    # Nothing goal-specific: the workload's wall time (every run has it).
    return "run_wall_s", "lower"


def goal_alias(goal: str, metric: str) -> str | None:
    """A name the repository's judge maps to the goal, when the metric's own name does not."""
    from schedcp.repository.outcomes import primary_metric

    if primary_metric(goal, [metric]) == metric:
        return None
    if "per_s" in metric:
        return f"{goal}_per_s"
    unit = metric.rsplit("_", 1)[-1] if "_" in metric else ""
    return f"{goal}_{unit}" if unit in ("s", "ms", "us", "ns") else goal


def ratio_of(direction: str, baseline: float | None, value: float | None) -> float | None:
    """>1 means the candidate did better, whichever way the metric points."""
    if baseline is None or value is None or baseline <= 0 or value <= 0:
        return None
    return round(baseline / value if direction == "lower" else value / baseline, 4)


def consistent(ratios: list[float | None]) -> bool:
    """The candidate won at least two rounds in three (every round when there are one or two)."""
    wins = sum(1 for r in ratios if r is not None and r > 1.0)
    return bool(ratios) and 3 * wins >= 2 * len(ratios)


def _median(runs: list[dict[str, float]]) -> dict[str, float]:
    names = set().union(*runs) if runs else set()
    return {n: round(statistics.median(r[n] for r in runs if n in r), 6) for n in sorted(names)}


def _attach_failure(name: str, exc: Any) -> str:
    from schedcp.toolchain.verifier_log import summarize as _verifier_summary

    log = exc.details.get("verifier_log") or []
    ejected = [e for e in exc.details.get("kernel_events") or [] if e.get("kind") == "disabled"]
    detail = _verifier_summary(log) or "; ".join(
        f"{e.get('reason')}: {' / '.join(e.get('detail', [])[:2])}" for e in ejected
    )
    return f"{name} did not load/attach: {exc.cause}" + (f" — {detail[:500]}" if detail else "")


GUEST_DEAD = ("guest_timeout", "guest_lost")


def crash_reason(text: str) -> str:
    """The telling line of a guest console tail (a panic or an oops), if there is one."""
    lines = [ln.strip() for ln in text.splitlines()]
    for key in ("Kernel panic", "BUG:", "RIP:", "Oops", "watchdog"):
        for ln in lines:
            if key in ln:
                return ln[:200]
    return ""


def run_trial(
    session: VmSession,
    target: Target,
    built: Built,
    config: dict[str, Any],
    goal: str,
    *,
    rounds: int = 2,
    watchdog_ms: int = WATCHDOG_MS,
    retries: int = 1,
    progress: Callable[[str], None] = lambda _m: None,
) -> Trial:
    """Measure; if the guest itself dies (a kernel panic or hang under emulation), boot a fresh guest and
    measure again, up to ``retries`` times. A BPF scheduler cannot crash the kernel by design (the
    verifier and sched_ext's fallback see to that), so a dead guest is not held against the policy."""
    if not 1 <= rounds <= 3:
        raise SchedcpError(f"rounds={rounds} is out of range", "use 1..3", code="usage")
    attempt = 0
    while True:
        attempt += 1
        trial = Trial(ok=False)
        try:
            _measure(session, target, built, config, goal, trial, rounds, watchdog_ms, progress)
        except SchedcpError as exc:
            if exc.code not in GUEST_DEAD:
                raise
            session.discard()
            trial.ok, trial.guest_crash = False, True
            why = crash_reason(exc.next_step)
            trial.error = f"the guest crashed or hung during the trial ({exc.cause})" + (f": {why}" if why else "")
        trial.attempts = attempt
        if not trial.guest_crash or attempt > retries:
            return trial
        progress(f"the guest died ({trial.error[:120]}); measuring again in a fresh boot")


def _measure(
    session: VmSession,
    target: Target,
    built: Built,
    config: dict[str, Any],
    goal: str,
    trial: Trial,
    rounds: int,
    watchdog_ms: int,
    progress: Callable[[str], None],
) -> None:
    from schedcp.testbed.vm import NodeOpError
    from schedcp.toolchain import attach as attach_mod
    from schedcp.toolchain import headers

    vm = session.vm
    node = vm.node
    include = headers.kernel_include_dir(session.kernel)
    boot_id = trial.boot_id = session.boot_id
    eevdf_runs: list[dict[str, float]] = []
    policy_runs: list[dict[str, float]] = []
    raw_rounds: list[tuple[list[str], dict[str, float], dict[str, float]]] = []
    counters: dict[str, int] = {}
    for r in range(rounds):
        order = ["eevdf", "policy"] if r % 2 == 0 else ["policy", "eevdf"]
        got: dict[str, dict[str, float]] = {}
        for side in order:
            if side == "eevdf":
                progress(f"round {r + 1}/{rounds}: workload under EEVDF")
                run = session.run_workload(target)
                if run["exit_code"] != 0 or run["timed_out"]:
                    raise SchedcpError(
                        f"the workload itself failed under EEVDF (exit {run['exit_code']}"
                        f"{', timed out' if run['timed_out'] else ''}): {run['stderr_tail'][-200:]}",
                        "fix the command; it must run to completion in the guest",
                        code="workload_failed",
                    )
                got[side] = run["metrics"]
                continue
            progress(f"round {r + 1}/{rounds}: workload under {built.name}")
            node.events()  # drop older kernel events so only this run's are judged
            try:
                attached = attach_mod.attach(
                    node, built.object_path, meta=built.meta, config=config, timeout_ms=watchdog_ms, include_dir=include
                )
            except NodeOpError as exc:
                trial.error = _attach_failure(built.name, exc)
                return
            trial.ops_name = attached.ops_name
            run = session.run_workload(target)
            state = node.state()
            events = attached.kernel_events + node.events()
            ejected = [e for e in events if e.get("kind") == "disabled"]
            enabled = state.get("state") == "enabled" and (
                not attached.ops_name or state.get("ops") == attached.ops_name
            )
            if enabled:
                try:
                    counters = attach_mod.read_counters(node, attached)
                finally:
                    attach_mod.detach(node, attached)
            if ejected or not enabled:
                trial.stayed_enabled = False
                trial.ejections = ejected[:3]
                why = "; ".join(f"{e.get('reason')}: {' / '.join(e.get('detail', [])[:2])}" for e in ejected[:2])
                trial.error = f"the kernel ejected {built.name} during the run" + (
                    f" ({why})" if why else f" (state {state.get('state')})"
                )
                return
            if run["exit_code"] != 0 or run["timed_out"]:
                trial.error = (
                    f"the workload failed under {built.name} (exit {run['exit_code']}"
                    f"{', timed out' if run['timed_out'] else ''})"
                )
                return
            got[side] = run["metrics"]
        eevdf_runs.append(got["eevdf"])
        policy_runs.append(got["policy"])
        raw_rounds.append((order, got["eevdf"], got["policy"]))
    trial.counters = counters
    common = sorted(set(_median(eevdf_runs)) & set(_median(policy_runs)))
    metric, way = goal_metric(goal, common)
    trial.metric, trial.direction = metric, way  # type: ignore[assignment]
    trial.baseline, trial.policy = _median(eevdf_runs), _median(policy_runs)
    trial.baseline_value, trial.policy_value = trial.baseline.get(metric), trial.policy.get(metric)
    trial.ratio = ratio_of(way, trial.baseline_value, trial.policy_value)
    trial.rounds = [
        RoundResult(round=i + 1, order=o, eevdf=e, policy=p, ratio=ratio_of(way, e.get(metric), p.get(metric)))
        for i, (o, e, p) in enumerate(raw_rounds)
    ]
    trial.consistent = consistent([rr.ratio for rr in trial.rounds])
    after = session.current_boot_id()
    trial.same_boot = bool(boot_id) and after == boot_id
    trial.ok = True
