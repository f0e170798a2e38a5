# SPDX-License-Identifier: Apache-2.0
"""run_trial: measure a built candidate against EEVDF in a testbed's boot, interleaved rounds.

Round r runs the testbed's workload under EEVDF and under the candidate, in alternating order
(EEVDF first in odd rounds, the candidate first in even ones) so slow drift in the guest does not
favour either side; the candidate is attached for each of its runs and judged after it by the
trial core (``schedcp.trial.rounds``). A policy the kernel ejected (stall, runtime error) has
failed, whatever its numbers say. This module adds what a goal needs: the metric that stands for
it, medians, per-round ratios, whether the candidate won consistently, the kernel's context
switches on each side, and a fresh boot when the guest itself dies.

The record (and the boot id checked at the end) is kept by the server as ``schedcp://run/{trial_id}``
and is what ``record_result(trial_id=...)`` stores: the numbers never pass through an agent.
"""

from __future__ import annotations

import secrets
import statistics
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from schedcp.errors import SchedcpError, UsageError
from schedcp.services.models import (
    BUILD_ID_PATTERN,
    TRIAL_ID_PATTERN,
    Goal,
    RoundResult,
    Target,
    TestbedId,
    Trial,
    TrialRecord,
)
from schedcp.services.operation import Operation, Progress
from schedcp.services.testbed import VerifyingSession
from schedcp.trial import compare
from schedcp.trial.models import Policy, RunResult
from schedcp.trial.rounds import BASELINE, GUEST_DEAD, Arm, ArmRun, run_rounds

if TYPE_CHECKING:
    from schedcp.services.build import Built
    from schedcp.services.state import ServerState
    from schedcp.services.testbed import GuestSession

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


def workload_metrics(run: RunResult, target: Target | None = None) -> dict[str, float]:
    """The run's metrics (bench/usermetric.py: the user's named metric, the workload's JSON line or a
    known tool's report), plus its wall time (also as makespan_s if it has none)."""
    from schedcp.bench.usermetric import output_metrics

    argv = list(target.argv if target is not None else run.argv)
    metrics = output_metrics(argv, run.stdout, run.stderr, run.wall_s, target.metric if target else None)
    metrics.setdefault("makespan_s", metrics[compare.RUN_WALL])
    return metrics


def measure(
    session: GuestSession,
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
        raise UsageError(f"rounds={rounds} is out of range", "use 1..3")
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
    session: GuestSession,
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
    if isinstance(session, VerifyingSession):  # the daemon's node loads only what the daemon verified
        try:
            policy = session.verified_policy(built, dict(config), policy)
        except SchedcpError as exc:
            if exc.code != "not_verified":
                raise
            trial.error = exc.cause
            return
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
    pairs = [(pair[BASELINE], pair[built.name]) for _r, pair in sorted(by_round.items())]
    raw = [
        (
            ["eevdf", "policy"] if base.position == 0 else ["policy", "eevdf"],
            workload_metrics(_ran(base), target),
            workload_metrics(_ran(mine_run), target),
            _switches(base, mine_run),
        )
        for base, mine_run in pairs
    ]
    trial.baseline = compare.median_metrics([e for _o, e, _p, _c in raw])
    trial.policy = compare.median_metrics([p for _o, _e, p, _c in raw])
    named = target.metric
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
            round=i + 1,
            order=o,
            eevdf=e,
            policy=p,
            ratio=_rounded(compare.ratio(e.get(metric), p.get(metric), way)),
            context_switches=c,
        )
        for i, (o, e, p, c) in enumerate(raw)
    ]
    trial.context_switches = _median_switches([c for _o, _e, _p, c in raw])
    trial.consistent = compare.consistent([rr.ratio for rr in trial.rounds])
    trial.same_boot = bool(boot_id) and session.current_boot_id() == boot_id
    trial.ok = True


def _switches(base: ArmRun, mine: ArmRun) -> dict[str, int]:
    """The kernel's context switches across each side's run of a round (sides the node counted)."""
    out: dict[str, int] = {}
    for side, rec in (("eevdf", base), ("policy", mine)):
        if rec.run is not None and rec.run.context_switches is not None:
            out[side] = rec.run.context_switches
    return out


def _median_switches(rounds: list[dict[str, int]]) -> dict[str, float]:
    sides = {side for r in rounds for side in r}
    return {side: float(statistics.median(r[side] for r in rounds if side in r)) for side in sorted(sides)}


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


# -- the operation ----------------------------------------------------------------------------------
class RunTrialInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    testbed_id: TestbedId
    build_id: str = Field(pattern=BUILD_ID_PATTERN, description="From build_scheduler with this testbed_id.")
    goal: Goal = Field(description="Picks the metric judged (makespan, a p99 latency, a rate, or wall time).")
    rounds: int = Field(2, ge=1, le=3, description="Interleaved EEVDF/candidate rounds in the testbed's boot.")
    watchdog_ms: int = Field(
        WATCHDOG_MS, ge=100, le=30000, description="sched_ext watchdog: a task runnable this long ejects the policy."
    )


def run_trial(state: ServerState, args: RunTrialInput, progress: Progress) -> TrialRecord:
    """Load a built candidate in the testbed's guest (the kernel's BPF verifier runs here) and measure
    the testbed's workload under EEVDF and under it, interleaved (EEVDF first in odd rounds, the
    candidate first in even ones), in the same boot. A policy the kernel ejects has failed whatever its
    numbers say. If the guest itself dies, a fresh boot measures again once (attempts says so).

    Returns the trial record: medians per metric on both sides, the goal metric's ratio (>1 = better
    than EEVDF), per-round ratios, whether it won consistently, the boot id. Keep trial_id for
    record_result."""
    tb = state.testbeds.get(args.testbed_id)
    entry = tb.builds.get(args.build_id)
    if entry is None:
        raise UsageError(
            f"no build {args.build_id!r} in testbed {tb.id}",
            "build it with build_scheduler(testbed_id=...) first",
            code="not_found",
        )
    built, config = entry
    # A stand-in session (tests; never reachable over MCP) may measure by itself.
    measuring = getattr(tb.session, "measure", None) or measure
    with tb.lock:
        tb.progress = progress
        raw = measuring(
            tb.session,
            tb.target,
            built,
            config,
            args.goal,
            rounds=args.rounds,
            watchdog_ms=args.watchdog_ms,
            progress=progress,
        )
    trial = Trial.model_validate(raw.model_dump() if isinstance(raw, BaseModel) else raw)
    record = TrialRecord(
        trial_id=f"tri-{secrets.token_hex(8)}",
        testbed_id=tb.id,
        policy=built.name,
        config=config,
        object_sha256=built.object_sha256,
        source_sha256=built.source_sha256,
        goal=args.goal,
        kernel_release=tb.kernel_release,
        trial=trial,
    )
    tb.add_trial(record)
    state.artifacts.put("run", {"kind": "trial", **record.model_dump(mode="json")}, record.trial_id)
    keep_as_evidence(state, record, tb.target.label)
    return record


def keep_as_evidence(state: ServerState, record: TrialRecord, workload: str) -> None:
    """The repository's measured-trial record (what ``production`` rests on): written here, by the
    code that measured, never by an agent."""
    from schedcp.repository.evidence import MeasuredTrial, is_win

    t = record.trial
    if not record.source_sha256 or len(record.source_sha256) != 64:
        return
    state.repository().record_measured_trial(
        MeasuredTrial(
            source_sha256=record.source_sha256,
            policy=record.policy[:64],
            measured_by="run_trial",
            kernel=record.kernel_release[:128],
            workload=str(workload)[:300],
            config={k: v for k, v in record.config.items() if isinstance(v, int | float | bool | str)},
            metric=t.metric or None,
            ratio=t.ratio,
            beat_baseline=is_win(ok=t.ok, stayed_enabled=t.stayed_enabled, ratio=t.ratio, consistent=t.consistent),
            stayed_enabled=t.stayed_enabled,
            boot_id=t.boot_id[:64] or None,
            detail={"trial_id": record.trial_id, "rounds": [r.ratio for r in t.rounds], "goal": record.goal},
        )
    )


def stored_trial(state: ServerState, trial_id: str) -> TrialRecord:
    """A trial this server (or an earlier process with the same data directory) measured."""
    import re

    if not re.match(TRIAL_ID_PATTERN, trial_id):
        raise UsageError(f"{trial_id!r} is not a trial id", "trial ids come from run_trial")
    doc = state.artifacts.get("run", trial_id)
    if doc is None or doc.get("kind") != "trial":
        raise UsageError(f"no trial {trial_id!r} is stored", "trial ids come from run_trial", code="not_found")
    return TrialRecord.model_validate({k: v for k, v in doc.items() if k != "kind"})


OPERATIONS = [Operation("run_trial", RunTrialInput, run_trial, TrialRecord, kind="compute", max_bytes=8192)]
