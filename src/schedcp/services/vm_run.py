# SPDX-License-Identifier: Apache-2.0
"""run_in_vm: measure a policy against EEVDF in a throwaway micro-VM, no root and no deployment.

This is the agent's safe playground before any deployment: the guest is a throwaway QEMU machine
(TCG, no root needed), so a policy that stalls or crashes costs a few seconds, not a host. Both runs
happen in the same boot, so the comparison sees the same kernel, memory layout and noise. One boot
per call, which is right for a one-off comparison (an optimisation run over several candidates
holds one boot instead: testbed.py). Here are the operation's arguments, the workload choice shared
with verify_scheduler, the run itself (build, boot, rotated rounds) and the answer; the complete
run is kept as ``schedcp://run/{run_id}``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.errors import SchedcpError, UsageError
from schedcp.services import checks, workloads
from schedcp.services.checks import MAX_CONFIG_KEYS
from schedcp.services.models import MAX_ARG_CHARS, MAX_ARGV, MAX_SOURCE_BYTES, Scalar
from schedcp.services.operation import Answer, Operation, Progress, Reply
from schedcp.services.repository import library_source, repo_meta
from schedcp.services.vmgate import VmGate
from schedcp.testbed import kernel as kernel_mod
from schedcp.testbed.vm import MicroVM, VMConfig
from schedcp.toolchain import build, headers, metadata
from schedcp.trial import compare
from schedcp.trial.models import Policy
from schedcp.trial.rounds import BASELINE, Arm, ArmRun, run_arm, run_rounds

if TYPE_CHECKING:
    from schedcp.services.state import ServerState

KernelSpec = Annotated[
    str,
    Field(
        pattern=r"^[a-z0-9][a-z0-9.+-]{0,40}$",
        description=(
            "Test kernel: 'unstable' (7.2, newest kfuncs), '6.19' or 'backports' (7.3); must be set up already."
        ),
    ),
]
Argv = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=MAX_ARG_CHARS)]] | None,
    Field(
        min_length=1,
        max_length=MAX_ARGV,
        description=(
            "A program and its arguments run in the guest (busybox, python3), e.g. ['sh', '-c', 'yes > /dev/null & "
            "sleep 2; kill %1']. Exec'd directly; give each word as its own element."
        ),
    ),
]
WorkloadArgs = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=128)]],
    Field(max_length=32, description="Options for the built-in workload, e.g. ['--seconds', '2']."),
]
# The built-in guest workloads, read from the shipped files (a new one needs no change here).
WorkloadName = Literal[tuple(workloads.builtin())]  # type: ignore[valid-type]
WORKLOAD_DESCRIPTION = "A built-in workload (prints its metrics as JSON)."


def workload_argv(workload: str | None, workload_args: list[str], argv: list[str] | None) -> tuple[list[str], str]:
    """The command to run and its label; exactly one of a built-in workload or an argv."""

    if (workload is None) == (argv is None):
        raise UsageError(
            "give exactly one of workload (a built-in name) or argv (a command)",
            f"built-in workloads: {', '.join(workloads.builtin())}",
        )
    if workload is not None:
        return workloads.argv_for(workload, workload_args), workload
    if workload_args:
        raise UsageError("workload_args only applies to a built-in workload", "put the arguments in argv")
    assert argv is not None
    return checks.argv(argv), argv[0]


class RunInVmInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    workload: WorkloadName | None = Field(  # type: ignore[valid-type]
        None,
        description=f"{WORKLOAD_DESCRIPTION} " + " ".join(f"{n}: {d}" for n, d in workloads.builtin().items()),
    )
    workload_args: WorkloadArgs = Field(default_factory=list)
    argv: Argv = None
    scheduler: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_.-]{1,63}$",
        description=(
            "A library or repository scheduler by name (see search_schedulers). Omit both scheduler and source "
            "to run under EEVDF only."
        ),
    )
    source: str | None = Field(
        None,
        min_length=20,
        max_length=MAX_SOURCE_BYTES,
        description="Complete sched_ext BPF C source to build and try (at most 256 KiB).",
    )
    config: dict[str, Scalar] = Field(
        default_factory=dict,
        max_length=MAX_CONFIG_KEYS,
        description="Tunables for a named scheduler, e.g. {'slice_us': 3000}.",
    )
    compare_baseline: bool = Field(True, description="Also run the workload under EEVDF in the same boot and compare.")
    repeats: int = Field(
        1, ge=1, le=5, description="Runs per side, alternating EEVDF and the policy; metrics are medians."
    )
    warmup: bool = Field(
        True, description="First run the workload once unmeasured, so neither side pays a cold guest's caches."
    )
    timeout_s: float = Field(120, ge=1, le=600, description="Limit per workload run, in seconds.")
    partial: bool = Field(
        False, description="Schedule only the workload's tasks with the policy (SCX_OPS_SWITCH_PARTIAL)."
    )
    watchdog_ms: int = Field(
        10000,
        ge=100,
        le=30000,
        description="sched_ext watchdog: a task runnable this long without running ejects the policy.",
    )
    kernel: KernelSpec = "unstable"
    detail: Literal["summary", "full"] = Field(
        "summary", description="full adds per-run output tails and the policy's counters."
    )


# -- the run ----------------------------------------------------------------------------------------
TAIL_CHARS = 1500


@dataclass
class RunRequest:
    argv: list[str]
    workload: str  # label for reports: a built-in name or the program
    scheduler: str | None = None  # library or repository name
    source: str | None = None  # submitted C source
    config: dict[str, Any] = field(default_factory=dict)
    kernel: str = kernel_mod.DEFAULT_SPEC
    baseline: bool = True
    repeats: int = 1
    timeout_s: float = 120.0
    partial: bool = False
    watchdog_ms: int | None = 10000
    warmup: bool = True
    image_variant: str = "default"  # "build" carries make and gcc for the parallel-build workload


@dataclass
class Prepared:
    name: str
    object_path: Path
    meta: metadata.SchedulerMeta | None
    source_sha256: str


def prepare(req: RunRequest, kernel: kernel_mod.Kernel, repository: Callable[[], Any]) -> Prepared | None:
    """Compile the policy for the kernel before any VM boots: build errors cost no boot."""
    include = headers.kernel_include_dir(kernel)
    if req.source is not None:
        result = build.build(
            Path("submitted.bpf.c"),
            include,
            target=kernel.release,
            source_text=req.source,
            source_name="submitted.bpf.c",
        )
        if req.config:
            raise UsageError(
                "config was given for submitted source, which declares no tunable metadata",
                "drop config, or add the policy with add_scheduler (with tunables) and run it by name",
            )
        return Prepared("submitted", result.object_path, None, result.source_sha256)
    if req.scheduler is None:
        return None
    path = library_source(req.scheduler)
    if path is not None:
        toml = path.with_suffix("").with_suffix(".toml")
        meta = metadata.load_meta(toml) if toml.is_file() else None
        result = build.build(path, include, target=kernel.release)
    else:
        repo = repository()
        info = repo.show(req.scheduler)
        if info.get("kind") == "external":
            raise UsageError(
                f"{req.scheduler} is an upstream binary, which the test VM does not carry",
                "try a BPF policy from our library or one added with add_scheduler",
            )
        meta = repo_meta(info)
        result = build.build(
            Path(f"{req.scheduler}.bpf.c"),
            include,
            target=kernel.release,
            source_text=repo.source(req.scheduler),
            source_name=f"{req.scheduler}.bpf.c",
        )
    if req.config:
        if meta is None:
            raise UsageError(f"{req.scheduler} declares no tunables", "drop config")
        meta.validate_config(req.config)
    return Prepared(req.scheduler, result.object_path, meta, result.source_sha256)


def _run_doc(rec: ArmRun) -> dict[str, Any]:
    """One run as the stored document shows it: verdict, metrics, context switches, output tails."""
    run = rec.run
    assert run is not None, "only runs that attached are documented"
    return {
        "exit_code": run.exit_code,
        "timed_out": run.timed_out,
        "wall_s": round(run.wall_s, 3),
        "context_switches": run.context_switches,
        "metrics": workloads.parse_metrics(run.stdout) or {"run_wall_s": float(run.wall_s)},
        "stdout_tail": run.stdout[-TAIL_CHARS:],
        "stderr_tail": run.stderr[-TAIL_CHARS:],
    }


def _side(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The per-side medians: each metric, and the kernel's context switches per run."""
    switches = [r["context_switches"] for r in runs if r.get("context_switches") is not None]
    return {
        "runs": runs,
        "metrics": compare.median_metrics([r["metrics"] for r in runs]),
        "context_switches": statistics.median(switches) if switches else None,
    }


def run(
    req: RunRequest, gate: VmGate, repository: Callable[[], Any], progress: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    """Measure in one boot. With a baseline the sides alternate in rotated rounds (EEVDF first, then
    the policy first, ...) after one unmeasured warm-up run under EEVDF, so neither side pays the
    cold caches of a fresh guest or the machine's slow drift. The policy is attached for each of its
    runs and detached after it; once the kernel ejects it, later runs would only measure EEVDF again."""
    k = kernel_mod.cached(req.kernel)
    progress(f"building for {k.release}")
    prepared = prepare(req, k, repository)
    doc: dict[str, Any] = {
        "workload": req.workload,
        "argv": req.argv,
        "kernel": k.release,
        "repeats": req.repeats,
        "partial": req.partial,
    }
    arms = [Arm(BASELINE)] if req.baseline else []
    if prepared is not None:
        policy = Policy(
            name=prepared.name,
            object_path=prepared.object_path,
            meta=prepared.meta,
            include_dir=headers.kernel_include_dir(k),
        )
        arms.append(Arm(prepared.name, policy, dict(req.config)))

    def announce(arm: Arm, r: int) -> None:
        side = "EEVDF baseline" if arm.is_baseline else arm.name
        progress(f"{side} run {r + 1}/{req.repeats}")

    common: dict[str, Any] = {"timeout_s": req.timeout_s, "watchdog_ms": req.watchdog_ms, "partial": req.partial}
    with gate.slot() as waited:
        doc["queued_s"] = round(waited, 2)
        progress("booting the micro-VM")
        with MicroVM(VMConfig(cpus=2, kernel=req.kernel, image_variant=req.image_variant)) as vm:
            assert vm.node is not None
            doc["boot_s"] = round(vm.boot_s or 0.0, 2)
            doc["accel"] = vm.accel.name if vm.accel else None
            if req.warmup and (req.baseline or req.repeats > 1):
                progress("warm-up run (not measured)")
                warm = run_arm(vm.node, Arm(BASELINE), req.argv, **common)
                doc["warmup_exit_code"] = warm.run.exit_code if warm.run else None
            rounds = run_rounds(
                vm.node,
                arms,
                req.argv,
                req.repeats,
                warmup=False,
                stop=lambda rec: rec.status == "attach_failed" or rec.stayed is False,
                before_run=announce,
                **common,
            )
    if rounds.stopped is not None and rounds.stopped.status == "attach_failed":
        failed = rounds.stopped
        raise SchedcpError(
            f"{failed.arm} did not attach: {(failed.error or '')[:800]}",
            failed.next_step or "fix the scheduler (verify_scheduler gives a full report) and retry",
            code=failed.error_code or "attach_failed",
        )
    if req.baseline:
        doc["baseline"] = {"scheduler": "EEVDF (kernel default)", **_side([_run_doc(r) for r in rounds.of(BASELINE)])}
    if prepared is not None:
        mine = rounds.of(prepared.name)
        last = mine[-1] if mine else None
        doc["scheduler"] = {
            "name": prepared.name,
            "ops_name": last.ops_name if last else "",
            "config": last.config if last else {},
            "source_sha256": prepared.source_sha256,
            "stayed_enabled": bool(last and last.stayed),
            "state_after": last.state_after.as_dict() if last and last.state_after else {},
            "ejections": [e.as_dict() for r in mine for e in r.ejections][:5],
            "counters": last.counters if last else {},
            **_side([_run_doc(r) for r in mine if r.run is not None]),  # not one ejected while enabling
            "measured_at": round(time.time(), 3),
        }
    if req.baseline and prepared is not None:
        doc["comparison"] = compare.table(doc["baseline"]["metrics"], doc["scheduler"]["metrics"])
    return doc


class RunOutput(Reply):
    exit_code: int | None
    wall_s: float
    stdout_tail: str
    stderr_tail: str


class SideBrief(Reply):
    """One side of a run_in_vm comparison: EEVDF (baseline) or the policy (scheduler)."""

    name: str | None = None
    ops_name: str | None = None
    config: dict[str, Any] | None = None
    stayed_enabled: bool | None = None
    ejections: list[dict[str, Any]] | None = None
    context_switches: int | float | None = None
    exit_codes: list[int | None]
    timed_out: bool | None = None
    metrics: dict[str, int | float]
    counters: dict[str, Any] | None = None
    runs: list[RunOutput] | None = None  # detail='full'


class MetricComparison(Reply):
    eevdf: int | float
    scheduler: int | float
    ratio: float | None
    better: str


class Comparison(Reply):
    metrics: dict[str, MetricComparison]
    scheduler_better: int
    eevdf_better: int
    note: str


class RunSummary(Reply):
    """run_in_vm's answer: verdicts and median metrics per side; outputs stay in the stored run."""

    run_id: str
    run_uri: str
    workload: str | None = None
    kernel: str | None = None
    boot_s: float | None = None
    accel: str | None = None
    queued_s: float | None = None
    baseline: SideBrief | None = None
    scheduler: SideBrief | None = None
    comparison: Comparison | None = None


def summarise(doc: dict[str, Any], run_id: str, detail: str) -> RunSummary:
    """What the agent sees first: verdicts and median metrics; outputs stay in the stored run."""
    out: dict[str, Any] = {
        "run_id": run_id,
        "run_uri": f"schedcp://run/{run_id}",
        **{k: doc[k] for k in ("workload", "kernel", "boot_s", "accel", "queued_s") if k in doc},
    }
    for key in ("baseline", "scheduler"):
        part = doc.get(key)
        if not part:
            continue
        brief = {
            k: part[k]
            for k in ("name", "ops_name", "config", "stayed_enabled", "ejections", "context_switches")
            if k in part
        }
        brief["exit_codes"] = [r["exit_code"] for r in part["runs"]]
        if any(r["timed_out"] for r in part["runs"]):
            brief["timed_out"] = True
        brief["metrics"] = part["metrics"]
        if detail == "full":
            brief["counters"] = part.get("counters")
            brief["runs"] = [
                {k: r[k] for k in ("exit_code", "wall_s", "stdout_tail", "stderr_tail")} for r in part["runs"]
            ]
        out[key] = brief
    if "comparison" in doc:
        out["comparison"] = doc["comparison"]
    return RunSummary.model_validate(out)


# -- the operation ----------------------------------------------------------------------------------
def run_in_vm(state: ServerState, args: RunInVmInput, progress: Progress) -> Answer:
    """Try a scheduler safely: boot the sched_ext test kernel in a micro-VM, run a workload under EEVDF and
    under the policy, and compare the metrics. No root, no effect on this machine.

    Give a built-in workload (or an argv) and a scheduler name or C source. Takes roughly 10 s plus the
    workload's run time; one VM runs at a time per server (others queue briefly, then get 'busy').
    If the policy is ejected by the kernel (stall, runtime error) the answer says so with the reason."""

    argv_list, label = workload_argv(args.workload, list(args.workload_args), args.argv)
    if args.scheduler is not None and args.source is not None:
        raise UsageError("give scheduler (a name) or source (C code), not both", "drop one of them")
    if args.source is not None:
        checks.source_text(args.source)
    req = RunRequest(
        argv=argv_list,
        workload=label,
        scheduler=args.scheduler,
        source=args.source,
        config=checks.config_dict(dict(args.config)),
        kernel=args.kernel,
        baseline=args.compare_baseline,
        repeats=args.repeats,
        timeout_s=args.timeout_s,
        partial=args.partial,
        watchdog_ms=args.watchdog_ms,
        warmup=args.warmup,
        image_variant="build" if args.workload == "build" else "default",
    )
    doc: dict[str, Any] = run(req, state.vm, state.repository, progress)
    run_id = state.artifacts.put("run", doc)
    return Answer(summarise(doc, run_id, args.detail), more=f"the complete run is the resource schedcp://run/{run_id}")


OPERATIONS = [Operation("run_in_vm", RunInVmInput, run_in_vm, RunSummary, kind="compute")]
