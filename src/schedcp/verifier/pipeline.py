# SPDX-License-Identifier: Apache-2.0
"""The Execution Verifier pipeline: build → static → kernel verifier → dynamic → performance.

Stops at the first stage that fails (unless `keep_going`), always returns a Report, and signs a
single-use deployment token only when every stage ran and passed. Caller mistakes (unknown file,
bad tunables) raise UsageError before any work; everything the *scheduler* gets wrong — including
not being a scheduler at all, disallowed includes, oversize sources, hanging the guest — is a
failed verdict with a reason.
"""

from __future__ import annotations

import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from schedcp.errors import SchedcpError, UsageError
from schedcp.testbed import kernel as kernel_mod
from schedcp.testbed.extras import GuestExtras
from schedcp.testbed.vm import MicroVM, VMConfig
from schedcp.toolchain import build as build_mod
from schedcp.toolchain import headers, metadata, scx_headers, scx_loader, scx_source, scx_userspace
from schedcp.verifier import keys, performance, tokens
from schedcp.verifier.report import STAGE_ORDER, Finding, Report, StageName, StageResult, Verdict
from schedcp.verifier.static.kernelfacts import from_include_dir
from schedcp.verifier.static.sandboxed import StaticAnalysisError, run_static
from schedcp.verifier.vmstages import DEFAULT_TIMEOUT_MS, VmPlan, VmStages

MAX_WORKLOAD_CHARS = 1000
MAX_GUEST_CRASH_RETRIES = 1
_OOPS_MARKERS = ("Oops:", "Kernel panic", "BUG: kernel NULL", "general protection fault")
MAX_WORKLOAD_ARGS = 64


@dataclass
class VerifyOptions:
    target: str
    config: dict[str, str] = field(default_factory=dict)
    workload: str | None = None
    kernel: str = kernel_mod.DEFAULT_SPEC
    seconds: float = 5.0
    # None: SchedCP's short watchdog for our own policies, the scheduler's own (its ops.timeout_ms, else
    # the kernel's default) for scx-style sources, so the kernel judges them as it would in use.
    timeout_ms: int | None = None
    perf_threshold: float = performance.DEFAULT_THRESHOLD
    keep_going: bool = False
    static_only: bool = False
    issue_token: bool = True
    token_ttl_s: int = tokens.DEFAULT_TTL_S
    key_path: Path | None = None
    # Tunable declarations to validate `config` against, when the source has no <name>.toml beside
    # it (a submission to the daemon); None keeps whatever metadata sits beside the source.
    meta: metadata.SchedulerMeta | None = None
    # Packages and host files for the workload (testbed/extras.py). Set by the local CLI only: the
    # daemon never takes host paths from a client.
    extras: GuestExtras | None = None
    # scx-style loading (toolchain/scx_loader.py): .rodata values by name, the struct_ops map to
    # attach when the object has several, and a user's scx include dir instead of the kernel's.
    rodata: dict[str, str] = field(default_factory=dict)
    struct_ops: str | None = None
    scx_include: str | None = None

    def validate(self) -> None:
        if not 1.0 <= self.seconds <= 60.0:
            raise UsageError(f"--seconds {self.seconds} is out of range", "use 1..60 seconds of load")
        if self.timeout_ms is not None and not 500 <= self.timeout_ms <= 30000:
            raise UsageError(f"--watchdog-ms {self.timeout_ms} is out of range", "use 500..30000")
        if not 0.01 <= self.perf_threshold <= 5.0:
            raise UsageError(f"--perf-threshold {self.perf_threshold} is out of range", "use e.g. 0.25 for 25%")
        if not 60 <= self.token_ttl_s <= tokens.MAX_TTL_S:
            raise UsageError(f"--token-ttl {self.token_ttl_s} is out of range", f"use 60..{tokens.MAX_TTL_S}")


def parse_workload(command: str | None) -> list[str] | None:
    """Split a workload command into argv (never run through a shell)."""
    if command is None or not command.strip():
        return None
    if len(command) > MAX_WORKLOAD_CHARS or "\x00" in command:
        raise UsageError("--workload is too long or contains NUL", f"keep it under {MAX_WORKLOAD_CHARS} characters")
    try:
        argv = shlex.split(command)
    except ValueError as exc:
        raise UsageError(f"--workload cannot be parsed: {exc}", "quote arguments properly") from exc
    if not argv or len(argv) > MAX_WORKLOAD_ARGS:
        raise UsageError(
            "--workload must be a command with at most 64 arguments",
            "e.g. --workload \"python3 -c 'print(sum(range(10**7)))'\"",
        )
    return argv


@dataclass
class _Source:
    name: str
    path: Path
    meta: metadata.SchedulerMeta | None
    files: scx_source.SourceSet


def _resolve(target: str) -> _Source:
    files = scx_source.resolve_source_set(target)
    path = files.main
    toml = path.with_name(path.name.removesuffix(".bpf.c").removesuffix(".c") + ".toml")
    meta = metadata.load_meta(toml) if toml.is_file() else None
    return _Source(files.name, path, meta, files)


def _validated_config(meta: metadata.SchedulerMeta | None, config: dict[str, str]) -> dict[str, int | str]:
    if not config:
        return {}
    if meta is None:
        raise UsageError(
            "--config was given but this scheduler has no metadata declaring tunables",
            "add a <name>.toml next to the source, or drop --config",
        )
    return meta.validate_config(config)


class Pipeline:
    def __init__(self, opts: VerifyOptions, progress: Callable[[str], None] | None = None) -> None:
        opts.validate()
        self.opts = opts
        self.progress = progress or (lambda _m: None)
        self.workload = parse_workload(opts.workload)
        self.source = _resolve(opts.target)
        if opts.meta is not None:
            self.source.meta = opts.meta
        self.config = _validated_config(self.source.meta, opts.config)
        self.stages: list[StageResult] = []
        self.timings: dict[str, float] = {}
        self.metrics: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.object_sha: str | None = None
        self.source_sha: str | None = None
        self.scx: scx_headers.ScxHeaders | None = None
        self.loader: scx_loader.LoaderOptions | None = None
        self.needs_userspace: str | None = None
        # What the scx path chose (headers, generic loader steps): kept apart from the VM stages'
        # metrics, which replace self.metrics wholesale, and merged into the report.
        self.loader_notes: dict[str, Any] = {}

    # -- helpers ---------------------------------------------------------------------------------
    def _add(self, stage: StageResult) -> bool:
        """Record a stage; True when the pipeline may continue."""
        self.stages.append(stage)
        self.timings[stage.name] = stage.duration_s
        return stage.status != "failed" or self.opts.keep_going

    def _fail_stage(self, name: StageName, finding: Finding, t0: float, summary: str) -> StageResult:
        return StageResult(
            name=name, status="failed", duration_s=round(time.monotonic() - t0, 3), summary=summary, findings=[finding]
        )

    # -- stages ----------------------------------------------------------------------------------
    def _build(self, include_dir: Path, release: str) -> tuple[StageResult, build_mod.BuildResult | None, str]:
        t0 = time.monotonic()
        path = self.source.path
        size = path.stat().st_size
        if size > build_mod.MAX_SOURCE_BYTES:
            return (
                self._fail_stage(
                    "build",
                    Finding(
                        id="build-rejected-input",
                        stage="build",
                        severity="error",
                        message=f"the source is {size} bytes, over the {build_mod.MAX_SOURCE_BYTES}-byte limit",
                        hint="a scheduler should be a few hundred lines; remove generated or pasted code",
                    ),
                    t0,
                    "input refused",
                ),
                None,
                "",
            )
        text = path.read_bytes().decode(errors="replace")
        try:
            result = scx_source.build_sources(self.source.files, include_dir=include_dir, target=release, scx=self.scx)
        except build_mod.BuildError as exc:
            main = (path.name, "<source>")
            findings = [
                Finding(
                    id="build-disallowed-include"
                    if "not allowed" in d.message or "outside the allowed" in d.message
                    else "build-error",
                    stage="build",
                    severity="error",
                    # Diagnostics in a header beside the source (or an scx header) name their file.
                    message=d.message if d.file in main else f"{d.file}:{d.line}: {d.message}",
                    line=d.line if d.file in main else None,
                    code=_line(text, d.line) if d.file in main else None,
                    hint=exc.next_step,
                )
                for d in exc.diagnostics[:10]
            ]
            if not findings:
                findings = [
                    Finding(id="build-error", stage="build", severity="error", message=exc.cause, hint=exc.next_step)
                ]
            return (
                StageResult(
                    name="build",
                    status="failed",
                    duration_s=round(time.monotonic() - t0, 3),
                    summary=exc.cause,
                    findings=findings,
                ).bounded(),
                None,
                text,
            )
        except UsageError as exc:
            return (
                self._fail_stage(
                    "build",
                    Finding(
                        id="build-rejected-input",
                        stage="build",
                        severity="error",
                        message=exc.cause,
                        hint=exc.next_step,
                    ),
                    t0,
                    "input refused",
                ),
                None,
                text,
            )
        self.object_sha, self.source_sha = result.object_sha256, result.source_sha256
        findings = [
            Finding(
                id="build-warning",
                stage="build",
                severity="warning",
                message=w.message,
                line=w.line,
                code=_line(text, w.line),
                hint="clang warns here; check the logic",
            )
            for w in result.warnings[:10]
        ]
        stage = StageResult(
            name="build",
            status="warned" if findings else "passed",
            duration_s=round(time.monotonic() - t0, 3),
            findings=findings,
            summary=f"object {result.object_sha256[:12]} ({'cached' if result.cached else 'compiled'})",
        )
        return stage, result, text

    def _userspace(self, needs: scx_userspace.UserspaceNeeds) -> Finding | None:
        """A finding when the program needs its userspace half for more than SchedCP's loader does."""
        self.loader_notes["loader"] = {"generic": needs.generic}
        summary = needs.summary(set(self.opts.rodata))
        if not summary:
            return None
        self.needs_userspace = summary
        return Finding(
            id="needs-userspace",
            stage="static",
            severity="error",
            message=summary,
            hint="SchedCP fills the scx enums, CPU counts and exit info itself; .rodata values can be given "
            "with --rodata NAME=VALUE, anything else needs the scheduler's own userspace loader",
        )

    def _static(self, text: str, include_dir: Path, release: str, obj: Path | None = None) -> StageResult:
        """The static rules and the userspace-half check, both in the sandbox (verifier/static/sandboxed.py)."""
        t0 = time.monotonic()
        facts = from_include_dir(include_dir, release)  # our own generated header: read here
        try:
            out = run_static(
                text,
                kernel=facts,
                config=self.config,
                sources=self.source.files,
                include_dirs=self.scx.include_dirs if self.scx is not None else (),
                obj=obj,
            )
        except StaticAnalysisError as exc:
            finding = Finding(
                id=exc.finding_id, stage="static", severity="error", message=exc.cause, hint=exc.next_step
            )
            return self._fail_stage("static", finding, t0, exc.cause)
        findings = list(out.findings)
        userspace = self._userspace(out.userspace) if out.userspace is not None else None
        if userspace is not None:
            findings.insert(0, userspace)
        errors = sum(f.severity == "error" for f in findings)
        warnings = sum(f.severity == "warning" for f in findings)
        status = "failed" if errors else ("warned" if warnings else "passed")
        return StageResult(
            name="static",
            status=status,
            duration_s=round(time.monotonic() - t0, 3),
            findings=findings,
            omitted_findings=out.omitted_findings,
            summary=f"{errors} error(s), {warnings} warning(s) from {out.facts['rules_run']} rules",
            details={k: v for k, v in out.facts.items() if k != "functions"},
        ).bounded()

    # -- the run ---------------------------------------------------------------------------------
    def run(self) -> Report:
        started = time.monotonic()
        kernel = kernel_mod.cached(self.opts.kernel)
        include_dir = headers.kernel_include_dir(kernel)
        self.scx = scx_source.scx_headers_for(self.source.files, kernel, scx_include=self.opts.scx_include)
        if self.scx is not None:
            self.progress(f"scx headers: {self.scx.origin}" + (f" ({self.scx.note})" if self.scx.note else ""))
            self.loader_notes["scx_headers"] = {
                "origin": self.scx.origin,
                "exact": self.scx.exact,
                "note": self.scx.note,
            }
        self.progress(f"building {self.source.path.name} for {kernel.release}")
        stage, built, text = self._build(include_dir, kernel.release)
        self.built = built  # the verified object, for callers that keep it (the daemon's deploy store)
        go = self._add(stage) and built is not None
        if go:
            assert built is not None
            self.loader = scx_loader.options_for(
                built.object_path, rodata=self.opts.rodata, struct_ops=self.opts.struct_ops, kernel=kernel
            )
            self.progress("static analysis")
            go = self._add(self._static(text, include_dir, kernel.release, built.object_path))
        if self.needs_userspace:
            go = False
        if go and not self.opts.static_only:
            assert built is not None
            self._vm_stages(kernel, include_dir, built)
        self.timings["total"] = round(time.monotonic() - started, 3)
        return self._report(kernel.release)

    def _vm_stages(self, kernel, include_dir: Path, built: build_mod.BuildResult) -> None:
        plan = VmPlan(
            object_path=built.object_path,
            source_name=self.source.path.name,
            meta=self.source.meta,
            config=dict(self.config),
            include_dir=include_dir,
            seconds=self.opts.seconds,
            timeout_ms=self._watchdog_ms(),
            workload=self.workload,
            perf_threshold=self.opts.perf_threshold,
            loader=self.loader,
        )
        kept = list(self.stages)
        for attempt in range(1 + MAX_GUEST_CRASH_RETRIES):
            self.stages = list(kept)
            crash = self._vm_attempt(kernel, plan)
            if crash is None:
                return
            # A BPF scheduler cannot crash the kernel; an oops is the emulator or the kernel (under TCG,
            # jump-label patching occasionally trips an int3 oops while sched_ext enables). Retry once.
            self.metrics.setdefault("guest_crashes", []).append(crash)
            if attempt < MAX_GUEST_CRASH_RETRIES:
                self.progress(f"the guest kernel crashed ({crash}); retrying in a fresh VM")

    def _vm_attempt(self, kernel, plan: VmPlan) -> str | None:
        """Run the VM stages in one boot; returns the oops line when the guest kernel crashed."""
        self.progress(f"booting the {kernel.release} micro-VM")
        t0 = time.monotonic()
        vm = MicroVM(VMConfig(cpus=2, kernel=self.opts.kernel, extras=self.opts.extras), kernel=kernel)
        try:
            vm.start()
        except SchedcpError as exc:
            oops = _kernel_oops(vm.console_tail(200))
            if oops is not None and len(self.metrics.get("guest_crashes", [])) < MAX_GUEST_CRASH_RETRIES:
                return f"during boot: {oops}"
            raise SchedcpError(
                f"the verification VM did not boot: {exc.cause}", exc.next_step, code="vm_failed"
            ) from exc
        self.timings["vm_boot"] = round(time.monotonic() - t0, 3)
        crashes = self.metrics.get("guest_crashes", [])
        try:
            node = vm.node
            assert node is not None  # start() returned, so the guest has answered hello on this node
            stages = VmStages(node, plan, self.progress, _host_cpu(vm))
            for step in (stages.kernel_verifier, stages.dynamic, stages.performance):
                if not self._add(step()) or not stages.out.alive:
                    break
            self.events = stages.out.events
            self.metrics = {**stages.out.metrics, **({"guest_crashes": crashes} if crashes else {})}
        finally:
            vm.stop()
        if stages.out.alive:
            return None
        return _kernel_oops(vm.console_tail(200))

    def _report(self, release: str) -> Report:
        ran = {s.name for s in self.stages}
        skipped = [StageResult(name=n, status="skipped") for n in STAGE_ORDER if n not in ran]
        stages = sorted(self.stages + skipped, key=lambda s: STAGE_ORDER.index(s.name))
        failed = [s for s in stages if s.status == "failed"]
        verdict: Verdict = "fail" if failed else "pass"
        if self.needs_userspace:
            # Not a verdict on the program: it cannot run as the kernel would see it without its loader.
            verdict, reason = "needs_userspace", self.needs_userspace
        elif failed:
            first = failed[0]
            top = next((f for f in first.findings if f.severity == "error"), None)
            reason = f"{first.name}: {top.message if top else first.summary}"
        elif skipped:
            reason = f"{len(ran)} stage(s) passed; {', '.join(s.name for s in skipped)} not run (no token)"
        else:
            reason = "all 5 stages passed"
        report = Report(
            verdict=verdict,
            reason=reason,
            scheduler=self.source.name,
            source_sha256=self.source_sha,
            object_sha256=self.object_sha,
            kernel=release,
            config={**self.config, **self._loader_config()},
            stages=stages,
            kernel_events=self.events,
            metrics={**self.metrics, **self.loader_notes},
            timings=self.timings,
        ).bounded()
        if verdict == "pass" and not skipped and self.opts.issue_token and self.object_sha:
            key = keys.load_or_create(self.opts.key_path)
            report.token = tokens.issue_token(
                key,
                scheduler=self.source.name,
                object_sha256=self.object_sha,
                config={**self.config, **self._loader_config()},
                report_digest=report.digest(),
                kernel=release,
                ttl_s=self.opts.token_ttl_s,
            )
        return report

    def _watchdog_ms(self) -> int | None:
        """The watchdog for the dynamic stage (see VerifyOptions.timeout_ms)."""
        if self.opts.timeout_ms is not None:
            return self.opts.timeout_ms
        return None if self.source.files.style == "scx" else DEFAULT_TIMEOUT_MS

    def _loader_config(self) -> dict[str, int | str]:
        """What the loader must repeat at deploy time: .rodata values and the struct_ops choice."""
        out: dict[str, int | str] = {f"rodata.{k}": v for k, v in sorted(self.opts.rodata.items())}
        if self.opts.struct_ops:
            out["struct_ops"] = self.opts.struct_ops
        return out


def _host_cpu(vm: MicroVM) -> Callable[[], float] | None:
    """CPU seconds the VM's QEMU process has used on the host, for normalising work rates."""
    if vm.proc is None:
        return None
    try:
        proc = psutil.Process(vm.proc.pid)
    except psutil.Error:
        return None

    def read() -> float:
        times = proc.cpu_times()
        return times.user + times.system

    return read


def _kernel_oops(console: str) -> str | None:
    for line in console.splitlines():
        if any(marker in line for marker in _OOPS_MARKERS):
            return line.strip()[-160:]
    return None


def _line(text: str, line: int | None) -> str | None:
    if not line:
        return None
    lines = text.split("\n")
    return lines[line - 1].strip() if 1 <= line <= len(lines) else None


def verify(opts: VerifyOptions, progress: Callable[[str], None] | None = None) -> Report:
    return Pipeline(opts, progress).run()
