# SPDX-License-Identifier: Apache-2.0
"""Measure a candidate against EEVDF for a goal: the trial core's rounds, judged on the goal's metric.

Round r runs the workload under EEVDF and under the candidate, in alternating order (EEVDF first
in odd rounds, the candidate first in even ones) so slow drift in the guest does not favour either
side; the candidate is attached for each of its runs and judged after it (``schedcp.trial.rounds``).
A policy the kernel ejected (stall, runtime error) has failed, whatever its numbers say. This
module adds what a goal needs: the metric that stands for it, medians, per-round ratios and
whether the candidate won consistently, and a fresh boot when the guest itself dies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schedcp.agent.candidates import Built
from schedcp.agent.models import RoundResult, Trial
from schedcp.agent.session import Target, VmSession
from schedcp.errors import SchedcpError
from schedcp.trial import compare
from schedcp.trial.models import Policy, RunResult
from schedcp.trial.rounds import BASELINE, GUEST_DEAD, Arm, ArmRun, run_rounds

__all__ = ["GUEST_DEAD", "WATCHDOG_MS", "crash_reason", "goal_alias", "run_trial", "workload_metrics"]

WATCHDOG_MS = 10000


def goal_alias(goal: str, metric: str) -> str | None:
    """A name the repository's judge maps to the goal, when the metric's own name does not."""
    from schedcp.repository.outcomes import primary_metric

    if primary_metric(goal, [metric]) == metric:
        return None
    if "per_s" in metric:
        return f"{goal}_per_s"
    unit = metric.rsplit("_", 1)[-1] if "_" in metric else ""
    return f"{goal}_{unit}" if unit in ("s", "ms", "us", "ns") else goal


def crash_reason(text: str) -> str:
    """The telling line of a guest console tail (a panic or an oops), if there is one."""
    lines = [ln.strip() for ln in text.splitlines()]
    for key in ("Kernel panic", "BUG:", "RIP:", "Oops", "watchdog"):
        for ln in lines:
            if key in ln:
                return ln[:200]
    return ""


def workload_metrics(run: RunResult, target: Any = None) -> dict[str, float]:
    """The run's metrics (bench/usermetric.py: the user's named metric, the workload's JSON line or a
    known tool's report), plus its wall time (also as makespan_s if it has none)."""
    from schedcp.bench.usermetric import output_metrics

    argv = list(getattr(target, "argv", None) or run.argv)
    metrics = output_metrics(argv, run.stdout, run.stderr, run.wall_s, getattr(target, "metric", None))
    metrics.setdefault("makespan_s", metrics[compare.RUN_WALL])
    return metrics


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
        progress(f"the guest died ({(trial.error or '')[:120]}); measuring again in a fresh boot")


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
    from schedcp.toolchain import headers

    node = session.vm.node
    boot_id = trial.boot_id = session.boot_id
    policy = Policy(
        name=built.name,
        object_path=built.object_path,
        meta=built.meta,
        include_dir=headers.kernel_include_dir(session.kernel),
    )
    arms = [Arm(BASELINE), Arm(built.name, policy, dict(config))]

    def announce(arm: Arm, r: int) -> None:
        progress(f"round {r + 1}/{rounds}: workload under {'EEVDF' if arm.is_baseline else built.name}")

    done = run_rounds(
        node,
        arms,
        target.argv,
        rounds,
        timeout_s=target.timeout_s,
        watchdog_ms=watchdog_ms,
        warmup=False,
        before_run=announce,
    )
    mine = done.of(built.name)
    if mine:
        trial.ops_name = mine[-1].ops_name
    if done.stopped is not None:
        _failed(done.stopped, built.name, trial)
        return
    trial.counters = mine[-1].counters
    by_round: dict[int, dict[str, ArmRun]] = {}
    for rec in done.runs:
        by_round.setdefault(rec.round, {})[rec.arm] = rec
    raw = [
        (
            ["eevdf", "policy"] if pair[BASELINE].position == 0 else ["policy", "eevdf"],
            workload_metrics(_ran(pair[BASELINE]), target),
            workload_metrics(_ran(pair[built.name]), target),
        )
        for _r, pair in sorted(by_round.items())
    ]
    trial.baseline = compare.median_metrics([e for _o, e, _p in raw])
    trial.policy = compare.median_metrics([p for _o, _e, p in raw])
    named = getattr(target, "metric", None)
    if named is not None and named.name not in trial.baseline:
        raise SchedcpError(
            f"the metric {named.name!r} was not found in the workload's output under EEVDF",
            "check --metric against what the program prints (stdout and stderr are searched)",
            code="workload_failed",
        )
    metric, way = compare.goal_metric(
        goal, sorted(set(trial.baseline) & set(trial.policy)), named=(named.name, named.direction) if named else None
    )
    trial.metric, trial.direction = metric, way
    trial.baseline_value, trial.policy_value = trial.baseline.get(metric), trial.policy.get(metric)
    trial.ratio = _rounded(compare.ratio(trial.baseline_value, trial.policy_value, way))
    trial.rounds = [
        RoundResult(
            round=i + 1, order=o, eevdf=e, policy=p, ratio=_rounded(compare.ratio(e.get(metric), p.get(metric), way))
        )
        for i, (o, e, p) in enumerate(raw)
    ]
    trial.consistent = compare.consistent([rr.ratio for rr in trial.rounds])
    trial.same_boot = bool(boot_id) and session.current_boot_id() == boot_id
    trial.ok = True


def _ran(rec: ArmRun) -> RunResult:
    assert rec.run is not None
    return rec.run


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _failed(rec: ArmRun, name: str, trial: Trial) -> None:
    """Why the rounds stopped early: raised for EEVDF (the workload is broken), kept in the trial otherwise."""
    if rec.arm == BASELINE:
        run = rec.run
        if run is not None and rec.status in ("failed", "timeout"):
            raise SchedcpError(
                f"the workload itself failed under EEVDF ({run.failure()}): {run.stderr[-200:]}",
                "fix the command; it must run to completion in the guest",
                code="workload_failed",
            )
        raise SchedcpError(rec.error or f"the EEVDF run was {rec.status}", "retry in a fresh testbed", code=rec.status)
    if rec.status == "attach_failed":
        trial.error = f"{name} did not load/attach: {(rec.error or '')[:700]}"
    elif rec.stayed is False:
        trial.stayed_enabled = False
        trial.ejections = [e.as_dict() for e in rec.ejections[:3]]
        why = "; ".join(e.describe() for e in rec.ejections[:2])
        state = rec.state_after.state if rec.state_after else None
        trial.error = f"the kernel ejected {name} during the run" + (f" ({why})" if why else f" (state {state})")
    else:
        run = rec.run
        trial.error = f"the workload failed under {name} ({run.failure() if run else rec.status})"
