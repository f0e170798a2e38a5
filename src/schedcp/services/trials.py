# SPDX-License-Identifier: Apache-2.0
"""run_trial: measure a built candidate against EEVDF in a testbed's boot, interleaved rounds.

Round r runs the testbed's workload under EEVDF and under the candidate, in alternating order, and
checks after every run that the kernel kept the policy. The record (medians, goal metric, per-round
ratios, the boot id checked at the end) is kept by the server as ``schedcp://run/{trial_id}`` and
is what ``record_result(trial_id=...)`` stores: the numbers never pass through an agent.

The measuring itself is the trial core's; this module only binds it to testbeds and ids.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from schedcp.errors import UsageError
from schedcp.services.models import BUILD_ID_PATTERN, TRIAL_ID_PATTERN, Goal, TestbedId, Trial, TrialRecord
from schedcp.services.operation import Operation, Progress

if TYPE_CHECKING:
    from schedcp.server.state import ServerState

WATCHDOG_MS = 10000


def _core() -> Any:
    """The trial core. Until the shared ``schedcp.trial`` core takes over interleaved comparisons,
    the measuring code is the one sched-agent has used (agent/trial.py); it is reached only here."""
    from schedcp.agent import trial

    return trial


def goal_alias(goal: str, metric: str) -> str | None:
    return _core().goal_alias(goal, metric)


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
    measure = getattr(tb.session, "measure", None) or _core().run_trial
    with tb.lock:
        tb.progress = progress
        raw = measure(
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


OPERATIONS = [Operation("run_trial", RunTrialInput, run_trial, kind="compute", max_bytes=8192)]
