# SPDX-License-Identifier: Apache-2.0
"""verify_scheduler: the Execution Verifier, reached only through the privileged daemon.

The daemon builds, statically checks, loads (kernel verifier), runs and measures the policy in the
micro-VM, and on a pass signs a deployment token with a key only it holds. This server gets the
report and the token's id, never the key or the token itself.

No ``from __future__ import annotations``: parameter types are built at runtime (see testbed.py).
"""

from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult
from pydantic import Field

from schedcp.errors import UsageError
from schedcp.server import budget, checks
from schedcp.server.resources import scheduler_source
from schedcp.server.state import ServerState
from schedcp.server.tooling import COMPUTE, MaxBytes, make_tool
from schedcp.server.tools.testbed import Argv, KernelSpec, Scalar, WorkloadArgs, _workload_param, workload_argv

SEVERITY = {"error": 0, "warning": 1, "info": 2}
SUMMARY_FINDINGS = 8


def summarise(report: dict[str, Any], token_id: str | None, report_id: str) -> dict[str, Any]:
    stages = [{k: s.get(k) for k in ("name", "status", "summary", "duration_s")} for s in report.get("stages", [])]
    findings = [f for s in report.get("stages", []) for f in s.get("findings", [])]
    findings.sort(key=lambda f: (SEVERITY.get(f.get("severity", "info"), 3), f.get("line") or 0))
    brief = [
        {k: f[k] for k in ("stage", "id", "severity", "message", "line", "code", "hint") if f.get(k)}
        for f in findings[:SUMMARY_FINDINGS]
    ]
    out: dict[str, Any] = {
        "verdict": report.get("verdict"),
        "reason": report.get("reason"),
        "scheduler": report.get("scheduler"),
        "kernel": report.get("kernel"),
        "config": report.get("config"),
        "stages": stages,
        "findings": brief,
        "findings_total": len(findings),
        "metrics": report.get("metrics", {}),
        "token_id": token_id,
        "report_id": report_id,
        "report_uri": f"schedcp://report/{report_id}",
    }
    if token_id:
        out["next"] = "passed: measure it with run_in_vm, save it with add_scheduler; deployment uses token_id"
    else:
        out["next"] = "failed: fix the first error finding (line and hint given) and verify again"
    return out


def tools(state: ServerState) -> list[Tool]:
    WorkloadName = _workload_param(describe=False)

    async def verify_scheduler(
        source: Annotated[
            str | None,
            Field(
                min_length=20,
                max_length=checks.MAX_SOURCE_BYTES,
                description=("Complete sched_ext BPF C source (at most 256 KiB)."),
            ),
        ] = None,
        scheduler: Annotated[
            str | None,
            Field(
                pattern=r"^[a-z][a-z0-9_.-]{1,63}$",
                description=("Verify a repository or library scheduler by name instead of submitting source."),
            ),
        ] = None,
        config: Annotated[
            dict[str, Scalar],
            Field(
                max_length=checks.MAX_CONFIG_KEYS,
                description=("Tunable values the policy will run with; the token is bound to them."),
            ),
        ] = {},  # noqa: B006
        kernel: KernelSpec = "unstable",
        workload: WorkloadName = None,  # type: ignore[valid-type]  # a Literal built from the workload list
        workload_args: WorkloadArgs = [],  # noqa: B006
        argv: Argv = None,
        detail: Annotated[
            Literal["summary", "full"],
            Field(description=("summary: verdict, stages and the most severe findings. full: the whole report.")),
        ] = "summary",
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Check a scheduler before it may run anywhere: build, static analysis for starvation/unfairness,
        the kernel's eBPF verifier, a correctness run and a performance run in the micro-VM.

        A pass returns token_id (a signed, single-use deployment token held by the daemon). A failure
        returns findings with the line, the evidence and a fix hint. Takes about a minute; the full
        report is the resource schedcp://report/{report_id}."""
        if (source is None) == (scheduler is None):
            raise UsageError(
                "give exactly one of source (C code) or scheduler (a name)",
                "pass the C text as source, or a library/repository name as scheduler",
            )
        if source is not None:
            text, name = checks.source_text(source), "submitted.bpf.c"
        else:
            assert scheduler is not None
            text, name = (
                await anyio.to_thread.run_sync(lambda: scheduler_source_or_error(state, scheduler)),
                f"{scheduler}.bpf.c",
            )
        command = None
        if workload is not None or argv is not None:
            command, _ = workload_argv(workload, workload_args, argv)
        elif workload_args:
            raise UsageError("workload_args needs workload", "name a built-in workload")
        result = await anyio.to_thread.run_sync(
            lambda: state.daemon().verify(text, name, checks.config_dict(config), kernel=kernel, workload=command)
        )
        report = dict(result.get("report") or {})
        report.pop("token", None)  # the bearer token stays with the daemon; agents use its id
        token_id = result.get("token_id")
        report_id = state.artifacts.put("report", {"token_id": token_id, "report": report})
        if detail == "full":
            data = {
                "token_id": token_id,
                "report_id": report_id,
                "report_uri": f"schedcp://report/{report_id}",
                "report": report,
            }
        else:
            data = summarise(report, token_id, report_id)
        return budget.respond(data, max_bytes, hint=f"the whole report is the resource schedcp://report/{report_id}")

    return [make_tool(verify_scheduler, COMPUTE)]


def scheduler_source_or_error(state: ServerState, name: str) -> str:
    from mcp.server.mcpserver.exceptions import ResourceNotFoundError

    try:
        return scheduler_source(state, name)
    except ResourceNotFoundError as exc:
        raise UsageError(str(exc), "find names with search_schedulers") from None
