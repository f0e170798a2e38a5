# SPDX-License-Identifier: Apache-2.0
"""run_in_vm: measure a policy against EEVDF in a throwaway micro-VM, no root and no deployment.

One boot per call, which is right for a one-off comparison (an optimisation run over several
candidates holds one boot instead: testbed.py). The running itself is ``schedcp.server.vmrun``;
this module is the operation: its arguments, the workload choice shared with verify_scheduler,
and where the complete run is kept.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.errors import UsageError
from schedcp.server import workloads
from schedcp.server.checks import MAX_CONFIG_KEYS
from schedcp.services.models import MAX_ARG_CHARS, MAX_ARGV, MAX_SOURCE_BYTES, Scalar
from schedcp.services.operation import Answer, Operation, Progress

if TYPE_CHECKING:
    from schedcp.server.state import ServerState

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
    from schedcp.server import checks

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


def run_in_vm(state: ServerState, args: RunInVmInput, progress: Progress) -> Answer:
    """Try a scheduler safely: boot the sched_ext test kernel in a micro-VM, run a workload under EEVDF and
    under the policy, and compare the metrics. No root, no effect on this machine.

    Give a built-in workload (or an argv) and a scheduler name or C source. Takes roughly 10 s plus the
    workload's run time; one VM runs at a time per server (others queue briefly, then get 'busy').
    If the policy is ejected by the kernel (stall, runtime error) the answer says so with the reason."""
    from schedcp.server import checks, vmrun

    argv_list, label = workload_argv(args.workload, list(args.workload_args), args.argv)
    if args.scheduler is not None and args.source is not None:
        raise UsageError("give scheduler (a name) or source (C code), not both", "drop one of them")
    if args.source is not None:
        checks.source_text(args.source)
    req = vmrun.RunRequest(
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
    doc: dict[str, Any] = vmrun.run(req, state.vm, state.repository, progress)
    run_id = state.artifacts.put("run", doc)
    return Answer(
        vmrun.summarise(doc, run_id, args.detail), more=f"the complete run is the resource schedcp://run/{run_id}"
    )


OPERATIONS = [Operation("run_in_vm", RunInVmInput, run_in_vm, kind="compute")]
