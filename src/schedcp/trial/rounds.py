# SPDX-License-Identifier: Apache-2.0
"""EEVDF against policies in one boot: one measured run of an arm, and interleaved rounds of them.

An *arm* is EEVDF (the kernel's default class, no policy) or a policy with its tunables. One run of
an arm (``run_arm``) is the unit every trial is made of:

* EEVDF: check that no scheduler is attached, run the workload, check that none attached meanwhile
  (``contaminated`` otherwise).
* A policy: attach -> run -> judge -> detach (``attached``). A policy the kernel ejected or
  replaced during the run is ``ejected`` with the kernel's reason, whatever its numbers say (also
  when the kernel logged it enabled and ejected it before the node confirmed the attach: that run
  has no workload result); one that never attached is ``attach_failed`` with the verifier's or the
  kernel's reason.
* Either way the workload's own verdict: ``timeout`` (over its deadline) or ``failed`` (non-zero
  exit), and the kernel's context switches across the run.

``run_rounds`` runs every arm once per round, in an order rotated by one each round (E P, P E, ...
for two arms), after one unmeasured warm-up run of the first arm, so neither slow drift of the
machine nor a cold guest favours a side. The server's ``run_in_vm``, the agent's trials and the
benchmark harness (which adds seeds per round and repeats disturbed runs on top) all use these.
A dead guest (``guest_timeout``/``guest_lost``) is never a verdict on the policy: it is raised.
A node that runs whole arms itself (``ArmRunner``: the daemon's node, reached by ``DaemonNode``)
gets the arm as one call and answers with the same ``ArmRun``.

A policy is one of our objects (``Arm.policy``) or an installed scheduler binary (``Arm.external``,
a command line the repository's catalog entry validated): the binary is started on the node, its
scheduler must enable, and stopping it must leave the kernel's default (``trial/external.py``);
everything else about the run is the same. A binary without a partial-switch flag cannot run a
partial arm (``attach_failed``, code ``external_no_partial``; the daemon's node, whose arms are
always partial, refuses such an arm outright).
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

from schedcp.errors import SchedcpError, UsageError
from schedcp.repository.external import ExternalCommand
from schedcp.trial import external as trial_external
from schedcp.trial.attached import AttachedPolicy, failure_detail, load
from schedcp.trial.models import KernelEvent, Policy, RunResult, SchedExtState, ejections, events_from
from schedcp.trial.node import GUEST_DEAD, NodeClient, NodeOpError

BASELINE = "eevdf"
T = TypeVar("T")
Status = Literal["ok", "attach_failed", "ejected", "contaminated", "timeout", "failed"]


@dataclass
class Arm:
    """One side of a comparison: EEVDF (no policy), one of our policies with tunables, or an
    installed scheduler binary (``external``: its validated command line, tunables included)."""

    name: str
    policy: Policy | None = None
    config: dict[str, Any] = field(default_factory=dict)
    external: ExternalCommand | None = None

    @property
    def is_baseline(self) -> bool:
        return self.policy is None and self.external is None


@dataclass
class ArmRun:
    """One run of one arm, judged. ``round`` is -1 for the warm-up run."""

    arm: str
    round: int = -1
    position: int = 0
    status: Status = "ok"
    error: str | None = None
    error_code: str | None = None  # the node's code when the policy did not attach
    next_step: str = ""
    run: RunResult | None = None
    ops_name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, int] = field(default_factory=dict)
    events: list[KernelEvent] = field(default_factory=list)  # sched_ext kernel events of this run
    ejections: list[KernelEvent] = field(default_factory=list)
    state_after: SchedExtState | None = None
    stayed: bool | None = None  # a policy run: did the kernel keep the scheduler through it?
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for a node that runs whole arms elsewhere (the daemon) to answer with."""
        out: dict[str, Any] = {k: getattr(self, k) for k in _PLAIN_FIELDS}
        out["run"] = self.run.model_dump() if self.run is not None else None
        out["events"] = [e.model_dump() for e in self.events]
        out["ejections"] = [e.model_dump() for e in self.ejections]
        out["state_after"] = self.state_after.model_dump() if self.state_after is not None else None
        return out

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ArmRun:
        rec = cls(str(raw["arm"]), **{k: raw[k] for k in _PLAIN_FIELDS if k in raw and k != "arm"})
        rec.run = RunResult.model_validate(raw["run"]) if raw.get("run") else None
        rec.events = events_from(raw.get("events"))
        rec.ejections = events_from(raw.get("ejections"))
        rec.state_after = SchedExtState.model_validate(raw["state_after"]) if raw.get("state_after") else None
        return rec


_PLAIN_FIELDS = (
    "arm",
    "round",
    "position",
    "status",
    "error",
    "error_code",
    "next_step",
    "ops_name",
    "config",
    "counters",
    "stayed",
    "warnings",
)


@runtime_checkable
class ArmRunner(Protocol):
    """A node that runs a whole arm itself (attach, run, judge, detach as one operation): the SchedCP
    daemon, which loads only objects it verified and switches only the workload's tasks."""

    def run_arm(
        self, arm: Arm, argv: list[str], *, timeout_s: float, watchdog_ms: int | None, partial: bool
    ) -> ArmRun: ...


def rotate(arms: list[T], round_index: int) -> list[T]:
    """Arms rotated by the round number: every arm takes every position equally often."""
    k = round_index % len(arms)
    return arms[k:] + arms[:k]


def run_arm(
    node: NodeClient,
    arm: Arm,
    argv: list[str],
    *,
    timeout_s: float,
    watchdog_ms: int | None = None,
    partial: bool = False,
    read_counters: bool = True,
    around: Callable[[], AbstractContextManager[Any]] | None = None,
) -> ArmRun:
    """One measured run of one arm; never raises for a scheduler or workload failure.

    ``around`` wraps just the workload (the bench harness samples the host's CPU steal there).
    Raises SchedcpError when the guest dies, or (code ``bench_state``) when a scheduler is found
    attached before an EEVDF run."""
    if isinstance(node, ArmRunner) and around is None:
        return node.run_arm(arm, argv, timeout_s=timeout_s, watchdog_ms=watchdog_ms, partial=partial)
    rec = ArmRun(arm.name, config=dict(arm.external.config if arm.external else arm.config))
    wrap = around or nullcontext
    if arm.is_baseline:
        before = node.state()
        if not before.idle:
            raise SchedcpError(
                f"sched_ext is {before.state} before an EEVDF run",
                "a scheduler was left attached; restart the target",
                code="bench_state",
            )
        node.events()  # drop older kernel-log events: only this run's count
        with wrap():
            rec.run = node.run(argv, timeout_s, count_switches=True, sched_ext=partial)
        rec.state_after = node.state()
        rec.events = node.events()
        if not rec.state_after.idle or any(e.kind == "enabled" for e in rec.events):
            rec.status, rec.error = "contaminated", "a sched_ext scheduler was attached during an EEVDF run"
    else:
        try:
            pol = _attach(node, arm, watchdog_ms=watchdog_ms, partial=partial)
        except NodeOpError as exc:
            rec.events = exc.kernel_events
            rec.ejections = ejections(rec.events)
            enabled = ejected_while_enabling(exc)
            if enabled is not None:
                # The kernel enabled it and ejected it before the node could confirm the attach
                # (a stalling policy can starve the node's own poll): an ejection, not a failed attach.
                rec.ops_name, rec.stayed, rec.status = enabled, False, "ejected"
                rec.error = "; ".join(e.describe() for e in rec.ejections[:2])
                return rec
            detail = failure_detail(exc)
            rec.status, rec.error_code, rec.next_step = "attach_failed", exc.code, exc.next_step
            rec.error = exc.cause + (f" — {detail}" if detail else "")
            return rec
        except UsageError as exc:  # an arm the node cannot run this way (no partial-switch flag)
            rec.status, rec.error_code, rec.next_step, rec.error = "attach_failed", exc.code, exc.next_step, exc.cause
            return rec
        try:
            rec.ops_name, rec.config = pol.ops_name, dict(pol.config)
            with wrap():
                rec.run = pol.run(argv, timeout_s)
            health = pol.check()
            rec.state_after, rec.ejections, rec.stayed = health.state, health.ejections, health.stayed
            if health.stayed:
                if read_counters:
                    try:
                        rec.counters = pol.counters()
                    except NodeOpError as exc:
                        rec.warnings.append(f"counters: {exc.cause}")
            else:
                rec.status, rec.error = "ejected", health.reason
        finally:
            pol.close()
            rec.events = [e for e in pol.events if not e.is_own_detach]
        if pol.detach_error is not None:
            if pol.detach_error.code in GUEST_DEAD:
                raise pol.detach_error
            rec.warnings.append(f"detach: {pol.detach_error.cause}")
    assert rec.run is not None
    if rec.run.timed_out:
        rec.status, rec.error = "timeout", f"the workload ran over {timeout_s:.0f}s"
    elif rec.status == "ok" and rec.run.exit_code != 0:
        rec.status, rec.error = "failed", f"exit {rec.run.exit_code}: {rec.run.stderr.strip()[-300:]}"
    return rec


def ejected_while_enabling(exc: NodeOpError) -> str | None:
    """The scheduler's name when a refused attach was really an ejection: the kernel logged it
    enabled and then disabled it for a reason of its own (watchdog, runtime error). None otherwise."""
    if exc.code != "not_enabled":
        return None
    enabled = [e.scheduler for e in exc.kernel_events if e.kind == "enabled" and e.scheduler]
    if not enabled or not ejections(exc.kernel_events, enabled[-1]):
        return None
    return enabled[-1]


def _attach(node: NodeClient, arm: Arm, *, watchdog_ms: int | None, partial: bool) -> AttachedPolicy:
    """The arm's policy attached on the node: our object loaded, or the installed binary started.
    (A binary keeps its own watchdog: its flags, not ours, set it.)"""
    if arm.external is not None:
        return trial_external.start(node, arm.external, partial=partial)
    assert arm.policy is not None
    return load(node, arm.policy, config=arm.config, watchdog_ms=watchdog_ms, partial=partial)


@dataclass
class Rounds:
    """The runs of ``run_rounds``: the warm-up (not measured) and the measured ones, in order."""

    warmup: ArmRun | None
    runs: list[ArmRun]
    stopped: ArmRun | None = None  # the run that stopped the rounds early, if one did

    def of(self, arm: str) -> list[ArmRun]:
        return [r for r in self.runs if r.arm == arm]


def run_rounds(
    node: NodeClient,
    arms: list[Arm],
    argv: list[str],
    rounds: int,
    *,
    timeout_s: float,
    watchdog_ms: int | None = None,
    partial: bool = False,
    warmup: bool = True,
    stop: Callable[[ArmRun], bool] = lambda run: not run.ok,
    before_run: Callable[[Arm, int], None] = lambda _arm, _round: None,
) -> Rounds:
    """Every arm once per round, rotated each round, after a warm-up run of the first arm; stops at
    the first run for which ``stop`` is true (default: any run that is not ok)."""

    def one(arm: Arm) -> ArmRun:
        return run_arm(node, arm, argv, timeout_s=timeout_s, watchdog_ms=watchdog_ms, partial=partial)

    out = Rounds(one(arms[0]) if warmup and arms else None, [])
    for r in range(rounds):
        for position, arm in enumerate(rotate(arms, r)):
            before_run(arm, r)
            rec = one(arm)
            rec.round, rec.position = r, position
            out.runs.append(rec)
            if stop(rec):
                out.stopped = rec
                return out
    return out
