# SPDX-License-Identifier: Apache-2.0
"""The three stages that need the kernel: verifier load, dynamic correctness, performance.

They share one micro-VM boot: load without attaching (the kernel's BPF verifier), run the
correctness load (and the caller's workload) under EEVDF as the baseline, then attach with a short
watchdog and run the same under the scheduler. The baseline comes first because its numbers also
calibrate the dynamic stage's timing bounds to how fast this host is right now. A guest that
stops answering is killed by the testbed (``guest_timeout``); we turn that into a finding and skip
what is left.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schedcp.errors import SchedcpError
from schedcp.node.runner import WORKLOAD_USER
from schedcp.toolchain.metadata import SchedulerMeta
from schedcp.toolchain.scx_loader import LoaderOptions
from schedcp.trial.attached import effective_watchdog_ms
from schedcp.trial.attached import load as load_policy
from schedcp.trial.models import KernelEvent, Policy, ejections
from schedcp.trial.node import GUEST_DEAD, NodeClient, NodeOpError
from schedcp.verifier import load, performance
from schedcp.verifier.kernellog import diagnose
from schedcp.verifier.report import Finding, StageName, StageResult

# Ten times shorter than the kernel's 30 s default so stalls show up within the load, but not
# shorter: weight-proportional policies legitimately keep a nice-19 kernel thread waiting ~2.5 s
# when eight nice-0 hogs share two CPUs (seen with the library's vtime policy).
DEFAULT_TIMEOUT_MS = 3000
WORKLOAD_TIMEOUT_S = 60.0
# The caller's workload runs as the guest's unprivileged user: it cannot rewrite the measurement
# script or touch the processes that measure (they stay root's), so it cannot forge the evidence.
# What the kernel's disable reasons mean for the author of the scheduler.
_REASON_HINTS = {
    "runnable task stall": "a runnable task was not run within the watchdog timeout: some enqueue path parks tasks "
    "where no CPU dispatches from, or a priority/vtime rule starves them",
    "runtime error": "the kernel caught an invalid operation (see the detail line): e.g. a DSQ that was never "
    "created, an invalid CPU in SCX_DSQ_LOCAL_ON, vtime ordering on a built-in DSQ",
    "scx_bpf_error": "the scheduler called scx_bpf_error(); the detail line has its message",
}


@dataclass
class VmPlan:
    object_path: Path
    source_name: str
    meta: SchedulerMeta | None
    config: dict[str, Any]
    include_dir: Path | None
    seconds: float = 5.0
    timeout_ms: int | None = DEFAULT_TIMEOUT_MS  # None: keep the scheduler's own watchdog
    workload: list[str] | None = None
    perf_threshold: float = performance.DEFAULT_THRESHOLD
    loader: LoaderOptions | None = None  # scx loader options (.rodata values, struct_ops choice)

    @property
    def policy(self) -> Policy:
        return Policy(
            name=self.source_name,
            object_path=self.object_path,
            meta=self.meta,
            include_dir=self.include_dir,
            loader=self.loader,
        )


@dataclass
class VmOutcome:
    events: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    alive: bool = True


def _status(findings: list[Finding]) -> str:
    if any(f.severity == "error" for f in findings):
        return "failed"
    return "warned" if any(f.severity == "warning" for f in findings) else "passed"


def _hang_finding(stage: StageName, exc: SchedcpError) -> Finding:
    return Finding(
        id="guest-unresponsive",
        stage=stage,
        severity="error",
        message=f"the guest stopped answering during the {stage} stage: {exc.cause}",
        hint="the scheduler (or the workload) hung the machine; check for loops and stalls",
        evidence=[line for line in exc.next_step.splitlines()[-6:] if line.strip()],
    )


class VmStages:
    def __init__(
        self,
        node: NodeClient,
        plan: VmPlan,
        progress: Callable[[str], None] = lambda _m: None,
        host_cpu: Callable[[], float] | None = None,
    ) -> None:
        self.node = node
        self.host_cpu = host_cpu
        self.plan = plan
        self.progress = progress
        self.out = VmOutcome()
        self._scheduler_load: dict[str, Any] | None = None
        self._scheduler_workload: dict[str, Any] | None = None
        self._baseline_load: dict[str, Any] | None = None
        self._baseline_workload: dict[str, Any] | None = None
        self.baseline_s = 0.0

    def run_stage(self, name: StageName, body: Callable[[], tuple[list[Finding], dict[str, Any], str]]) -> StageResult:
        """Run one stage body, converting a dead guest into a failed stage."""
        t0 = time.monotonic()
        try:
            findings, details, summary = body()
        except SchedcpError as exc:
            if exc.code not in GUEST_DEAD and not isinstance(exc, NodeOpError):
                raise
            if exc.code in GUEST_DEAD:
                self.out.alive = False
                findings, details, summary = [_hang_finding(name, exc)], {}, "guest unresponsive"
            else:
                findings = [
                    Finding(
                        id="node-error",
                        stage=name,
                        severity="error",
                        message=f"node operation failed: {exc.cause}",
                        hint=exc.next_step,
                    )
                ]
                details, summary = {}, "node error"
        return StageResult(
            name=name,
            status=_status(findings),
            duration_s=round(time.monotonic() - t0, 3),
            summary=summary,
            findings=findings,
            details=details,
        ).bounded()

    # -- kernel verifier --------------------------------------------------------------------------
    def kernel_verifier(self) -> StageResult:
        return self.run_stage("kernel_verifier", self._kernel_verifier)

    def _kernel_verifier(self) -> tuple[list[Finding], dict[str, Any], str]:
        self.progress("loading into the kernel (BPF verifier)")
        try:
            loaded = load_policy(self.node, self.plan.policy, config=self.plan.config, attach=False)
        except NodeOpError as exc:
            log = exc.details.get("verifier_log") or exc.details.get("log") or []
            diag = diagnose(log, self.plan.source_name, fallback_cause=exc.cause)
            ours = (
                diag.source_file is None
                or self.plan.source_name.endswith(diag.source_file)
                or diag.source_file.endswith(self.plan.source_name)
            )
            where = f" at {diag.source_file}:{diag.source_line}" if diag.source_line else ""
            finding = Finding(
                id="kv-rejected",
                stage="kernel_verifier",
                severity="error",
                message=f"the kernel rejected {diag.program or 'the program'}{where}: {diag.error}",
                line=diag.source_line if ours else None,
                code=diag.source_code,
                function=diag.program,
                hint=diag.hint,
                evidence=diag.excerpt[-12:],
            )
            details = {
                "error": diag.error,
                "program": diag.program,
                "source_file": diag.source_file,
                "source_line": diag.source_line,
                "instruction": diag.instruction,
                "node_error": exc.code,
            }
            return [finding], details, f"rejected: {diag.error}"
        loaded.detach()
        return [], {"ops_name": loaded.ops_name}, f"accepted ({loaded.ops_name})"

    # -- dynamic ----------------------------------------------------------------------------------
    def dynamic(self) -> StageResult:
        result = self.run_stage("dynamic", self._dynamic)
        # The EEVDF baseline runs first (its numbers set the timing bounds) but is performance work.
        result.duration_s = round(max(0.0, result.duration_s - self.baseline_s), 3)
        return result

    def _baseline(self, script: str) -> None:
        """The load (and workload) under EEVDF, before anything is attached, in this same boot.

        `script` is the load script's path in the guest, as load.upload() returned it.
        """
        plan = self.plan
        t0 = time.monotonic()
        self.progress(f"running the load under EEVDF for {self.load_seconds:g}s (baseline)")
        self._baseline_load = load.run(self.node, script, self.load_seconds, self.host_cpu).get("load")
        if plan.workload:
            self.progress("running the workload under EEVDF")
            self._baseline_workload = self.node.run(plan.workload, WORKLOAD_TIMEOUT_S, user=WORKLOAD_USER).as_dict()
        self.baseline_s = time.monotonic() - t0

    @property
    def wait_bound_s(self) -> float | None:
        """The policy's declared longest wait under this configuration (metadata ``wait_bound``)."""
        return self.plan.meta.wait_bound_s(self.plan.config) if self.plan.meta else None

    @property
    def load_seconds(self) -> float:
        """How long the correctness load runs: at least twice a declared wait bound, so a task
        that waits the whole bound still shows progress (and one that waits longer shows up)."""
        bound = self.wait_bound_s
        return self.plan.seconds if bound is None else max(self.plan.seconds, round(2 * bound, 1))

    def _dynamic(self) -> tuple[list[Finding], dict[str, Any], str]:
        plan = self.plan
        script = load.upload(self.node)
        self._baseline(script)
        bounds = load.Bounds.for_declared_wait(self.wait_bound_s)
        watchdog = effective_watchdog_ms(plan.policy, plan.config, plan.timeout_ms)
        declared = f" (declared wait bound {self.wait_bound_s:g}s)" if self.wait_bound_s is not None else ""
        self.progress(
            f"attaching with a {watchdog} ms watchdog{declared}"
            if watchdog
            else "attaching with the scheduler's own watchdog"
        )
        try:
            pol = load_policy(self.node, plan.policy, config=plan.config, watchdog_ms=plan.timeout_ms)
        except NodeOpError as exc:
            events = exc.kernel_events
            self.out.events += [e.as_dict() for e in events]
            return [_ejection_finding(events, exc.cause, when="at attach")], {"node_error": exc.code}, "did not enable"
        self.progress(f"running the correctness load for {self.load_seconds:g}s")
        run = load.run(self.node, script, self.load_seconds, self.host_cpu)
        self._scheduler_load = run.get("load")
        findings: list[Finding] = []
        details: dict[str, Any] = {"load_wall_s": run.get("wall_s")}
        if plan.workload and run.get("load") is not None:
            self.progress("running the workload under the scheduler")
            self._scheduler_workload = self.node.run(plan.workload, WORKLOAD_TIMEOUT_S, user=WORKLOAD_USER).as_dict()
        health = pol.check()
        state = health.state
        try:
            counters = pol.counters()
        except SchedcpError:
            counters = {}
        ejected = not health.stayed
        if ejected:
            findings.append(_ejection_finding(health.ejections, f"state is {state.state}", when="during the load"))
        baseline = load.summary(self._baseline_load)
        findings += load.judge(run, self.load_seconds, bounds=bounds, baseline=baseline)
        pol.detach()
        self.out.events += [e.as_dict() for e in pol.events if not e.is_own_detach]
        summary_now = load.summary(run.get("load"))
        self.out.metrics["scheduler"] = summary_now
        self.out.metrics["eevdf"] = baseline
        self.out.metrics["counters"] = dict(list(counters.items())[:32])
        details.update(
            {
                "state_after_load": state.state,
                "scx_events": _nonzero(state.events),
                "bounds": asdict(bounds.relative_to(baseline)),
                "watchdog_ms": pol.watchdog_ms,
                "declared_wait_bound_s": self.wait_bound_s,
            }
        )
        summary = (
            "ejected by the kernel"
            if ejected
            else (
                f"stayed enabled; {summary_now.get('context_switches') or 0} context switches, "
                f"max wait {summary_now.get('max_gap_s', 0):.2f}s"
            )
        )
        return findings, details, summary

    # -- performance ------------------------------------------------------------------------------
    def performance(self) -> StageResult:
        result = self.run_stage("performance", self._performance)
        result.duration_s = round(result.duration_s + self.baseline_s, 3)
        return result

    def _performance(self) -> tuple[list[Finding], dict[str, Any], str]:
        plan = self.plan
        baseline = load.summary(self._baseline_load)
        if not baseline:
            return (
                [
                    Finding(
                        id="perf-baseline-failed",
                        stage="performance",
                        severity="warning",
                        message="the load failed under EEVDF, so nothing was compared",
                        hint="retry; this points at the test machine, not the scheduler",
                    )
                ],
                {},
                "no baseline",
            )
        findings, table = performance.compare(baseline, load.summary(self._scheduler_load), plan.perf_threshold)
        details: dict[str, Any] = {"threshold": plan.perf_threshold, "load": table}
        if plan.workload and self._scheduler_workload is not None and self._baseline_workload is not None:
            wl_findings, wl_table = performance.compare_workload(
                self._baseline_workload, self._scheduler_workload, plan.perf_threshold
            )
            findings += wl_findings
            details["workload"] = wl_table
            self.out.metrics["workload"] = wl_table
        busy = table.get("cpu_busy", {})
        summary = f"CPU use {busy.get('scheduler', 0):.0%} vs EEVDF {busy.get('eevdf', 0):.0%}" if busy else "compared"
        return findings, details, summary


def _nonzero(counters: dict[str, int] | None) -> dict[str, int]:
    return {k: v for k, v in (counters or {}).items() if v and "BYPASS_DURATION" not in k}


def _ejection_finding(events: list[KernelEvent], fallback: str, *, when: str) -> Finding:
    ejected = ejections(events)
    if ejected:
        ev = ejected[-1]
        reason = ev.reason or "unknown reason"
        detail = [d for d in ev.detail if d]
        hint = next((h for key, h in _REASON_HINTS.items() if key in reason), "see the kernel's detail lines")
        message = f"the kernel ejected the scheduler {when}: {reason}" + (f" ({detail[0]})" if detail else "")
        return Finding(
            id="dyn-ejected", stage="dynamic", severity="error", message=message, hint=hint, evidence=detail[:6]
        )
    return Finding(
        id="dyn-not-enabled",
        stage="dynamic",
        severity="error",
        message=f"the scheduler did not stay enabled {when}: {fallback}",
        hint="check ops.init (it must return 0) and the kernel events",
        evidence=[fallback],
    )
