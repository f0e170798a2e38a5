# SPDX-License-Identifier: Apache-2.0
"""run_in_vm: measure a policy against EEVDF in a throwaway micro-VM, no root and no deployment.

No ``from __future__ import annotations`` here: the workload parameter's type is built at runtime
from the shipped workloads, and the SDK must see it as a real object, not a string.
"""

from typing import Annotated, Any, Literal

import anyio
import anyio.from_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult
from pydantic import Field

from schedcp.errors import UsageError
from schedcp.server import budget, checks, vmrun, workloads
from schedcp.server.state import ServerState
from schedcp.server.tooling import COMPUTE, MaxBytes, make_tool

Scalar = int | float | bool | str
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
    list[Annotated[str, Field(min_length=1, max_length=checks.MAX_ARG_CHARS)]] | None,
    Field(
        min_length=1,
        max_length=checks.MAX_ARGV,
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


def _workload_param(describe: bool = True) -> Any:
    names = tuple(workloads.builtin())
    listing = (
        " ".join(f"{n}: {d}" for n, d in workloads.builtin().items())
        if describe
        else "The same built-in workloads as run_in_vm."
    )
    return Annotated[
        Literal[names] | None,
        Field(description=f"A built-in workload (prints its metrics as JSON). {listing}"),
    ]


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


def tools(state: ServerState) -> list[Tool]:
    WorkloadName = _workload_param()

    async def run_in_vm(
        ctx: Context,
        workload: WorkloadName = None,  # type: ignore[valid-type]  # a Literal built from the workload list
        workload_args: WorkloadArgs = [],  # noqa: B006
        argv: Argv = None,
        scheduler: Annotated[
            str | None,
            Field(
                pattern=r"^[a-z][a-z0-9_.-]{1,63}$",
                description=(
                    "A library or repository scheduler by name (see search_schedulers). Omit both scheduler and source "
                    "to run under EEVDF only."
                ),
            ),
        ] = None,
        source: Annotated[
            str | None,
            Field(
                min_length=20,
                max_length=checks.MAX_SOURCE_BYTES,
                description=("Complete sched_ext BPF C source to build and try (at most 256 KiB)."),
            ),
        ] = None,
        config: Annotated[
            dict[str, Scalar],
            Field(
                max_length=checks.MAX_CONFIG_KEYS,
                description=("Tunables for a named scheduler, e.g. {'slice_us': 3000}."),
            ),
        ] = {},  # noqa: B006
        compare_baseline: Annotated[
            bool, Field(description=("Also run the workload under EEVDF in the same boot and compare."))
        ] = True,
        repeats: Annotated[
            int,
            Field(ge=1, le=5, description=("Runs per side, alternating EEVDF and the policy; metrics are medians.")),
        ] = 1,
        warmup: Annotated[
            bool,
            Field(description=("First run the workload once unmeasured, so neither side pays a cold guest's caches.")),
        ] = True,
        timeout_s: Annotated[float, Field(ge=1, le=600, description="Limit per workload run, in seconds.")] = 120,
        partial: Annotated[
            bool, Field(description=("Schedule only the workload's tasks with the policy (SCX_OPS_SWITCH_PARTIAL)."))
        ] = False,
        watchdog_ms: Annotated[
            int,
            Field(
                ge=100,
                le=30000,
                description=("sched_ext watchdog: a task runnable this long without running ejects the policy."),
            ),
        ] = 10000,
        kernel: KernelSpec = "unstable",
        detail: Annotated[
            Literal["summary", "full"], Field(description=("full adds per-run output tails and the policy's counters."))
        ] = "summary",
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Try a scheduler safely: boot the sched_ext test kernel in a micro-VM, run a workload under EEVDF and
        under the policy, and compare the metrics. No root, no effect on this machine.

        Give a built-in workload (or an argv) and a scheduler name or C source. Takes roughly 10 s plus the
        workload's run time; one VM runs at a time per server (others queue briefly, then get 'busy').
        If the policy is ejected by the kernel (stall, runtime error) the answer says so with the reason."""
        argv_list, label = workload_argv(workload, workload_args, argv)
        if scheduler is not None and source is not None:
            raise UsageError("give scheduler (a name) or source (C code), not both", "drop one of them")
        if source is not None:
            checks.source_text(source)
        req = vmrun.RunRequest(
            argv=argv_list,
            workload=label,
            scheduler=scheduler,
            source=source,
            config=checks.config_dict(config),
            kernel=kernel,
            baseline=compare_baseline,
            repeats=repeats,
            timeout_s=timeout_s,
            partial=partial,
            watchdog_ms=watchdog_ms,
            warmup=warmup,
            image_variant="build" if workload == "build" else "default",
        )
        steps = iter(range(1, 100))

        def progress(message: str) -> None:
            try:
                anyio.from_thread.run(ctx.report_progress, next(steps), None, message)
            except Exception:  # progress is a courtesy; a closed stream must not fail the run
                pass

        doc = await anyio.to_thread.run_sync(lambda: vmrun.run(req, state.vm, state.repository, progress))
        run_id = state.artifacts.put("run", doc)
        return budget.respond(
            vmrun.summarise(doc, run_id, detail),
            max_bytes,
            hint=f"the complete run is the resource schedcp://run/{run_id}",
        )

    return [make_tool(run_in_vm, COMPUTE)]
