# SPDX-License-Identifier: Apache-2.0
"""verify_scheduler: the Execution Verifier, reached only through the privileged daemon.

The daemon builds, statically checks, loads (kernel verifier), runs and measures the policy in the
micro-VM, and on a pass signs a deployment token with a key only it holds. This service gets the
report and the token's id, never the key or the token itself; the whole report is kept as
``schedcp://report/{report_id}``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.errors import UsageError
from schedcp.services import checks
from schedcp.services.checks import MAX_CONFIG_KEYS
from schedcp.services.models import MAX_SOURCE_BYTES, Scalar
from schedcp.services.operation import Answer, Operation, Progress
from schedcp.services.repository import scheduler_source
from schedcp.services.vm_run import WORKLOAD_DESCRIPTION, Argv, KernelSpec, WorkloadArgs, WorkloadName, workload_argv

if TYPE_CHECKING:
    from schedcp.services.state import ServerState

SEVERITY = {"error": 0, "warning": 1, "info": 2}
SUMMARY_FINDINGS = 8


class VerifyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str | None = Field(
        None,
        min_length=20,
        max_length=MAX_SOURCE_BYTES,
        description="Complete sched_ext BPF C source (at most 256 KiB).",
    )
    scheduler: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_.-]{1,63}$",
        description="Verify a repository or library scheduler by name instead of submitting source.",
    )
    config: dict[str, Scalar] = Field(
        default_factory=dict,
        max_length=MAX_CONFIG_KEYS,
        description="Tunable values the policy will run with; the token is bound to them.",
    )
    rodata: dict[str, str] = Field(
        default_factory=dict,
        max_length=MAX_CONFIG_KEYS,
        description="scx-style sources: const volatile NAME=VALUE their own loader would set; bound into the "
        "token as rodata.NAME (repeat them in deploy_scheduler's config).",
    )
    struct_ops: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$",
        description="The struct_ops map to attach when the object defines several (bound into the token).",
    )
    kernel: KernelSpec = "unstable"
    workload: WorkloadName | None = Field(  # type: ignore[valid-type]
        None, description=f"{WORKLOAD_DESCRIPTION} The same built-in workloads as run_in_vm."
    )
    workload_args: WorkloadArgs = Field(default_factory=list)
    argv: Argv = None
    detail: Literal["summary", "full"] = Field(
        "summary", description="summary: verdict, stages and the most severe findings. full: the whole report."
    )


class StageBrief(BaseModel):
    name: str | None = None
    status: str | None = None
    summary: str | None = None
    duration_s: float | None = None


class VerificationSummary(BaseModel):
    """The verdict, each stage in a line, the most severe findings, and the token's id on a pass."""

    verdict: str | None = None
    reason: str | None = None
    scheduler: str | None = None
    kernel: str | None = None
    config: dict[str, Any] | None = None
    stages: list[StageBrief] = Field(default_factory=list)
    findings: list[dict[str, Any]] = Field(default_factory=list)
    findings_total: int = 0
    metrics: dict[str, Any] = Field(default_factory=dict)
    token_id: str | None = None
    report_id: str
    report_uri: str
    next: str


class VerificationReport(BaseModel):
    """The whole report (detail='full')."""

    token_id: str | None = None
    report_id: str
    report_uri: str
    report: dict[str, Any]


def summarise(report: dict[str, Any], token_id: str | None, report_id: str) -> VerificationSummary:
    stages = [
        StageBrief.model_validate({k: s.get(k) for k in StageBrief.model_fields}) for s in report.get("stages", [])
    ]
    findings = [f for s in report.get("stages", []) for f in s.get("findings", [])]
    findings.sort(key=lambda f: (SEVERITY.get(f.get("severity", "info"), 3), f.get("line") or 0))
    brief = [
        {k: f[k] for k in ("stage", "id", "severity", "message", "line", "code", "hint") if f.get(k)}
        for f in findings[:SUMMARY_FINDINGS]
    ]
    if token_id:
        step = "passed: measure it with run_in_vm, save it with add_scheduler; deployment uses token_id"
    else:
        step = "failed: fix the first error finding (line and hint given) and verify again"
    return VerificationSummary(
        verdict=report.get("verdict"),
        reason=report.get("reason"),
        scheduler=report.get("scheduler"),
        kernel=report.get("kernel"),
        config=report.get("config"),
        stages=stages,
        findings=brief,
        findings_total=len(findings),
        metrics=report.get("metrics", {}),
        token_id=token_id,
        report_id=report_id,
        report_uri=f"schedcp://report/{report_id}",
        next=step,
    )


def verify_scheduler(state: ServerState, args: VerifyInput, _progress: Progress) -> Answer:
    """Check a scheduler before it may run anywhere: build, static analysis for starvation/unfairness,
    the kernel's eBPF verifier, a correctness run and a performance run in the micro-VM.

    A pass returns token_id (a signed, single-use deployment token held by the daemon). A failure
    returns findings with the line, the evidence and a fix hint. Takes about a minute; the full
    report is the resource schedcp://report/{report_id}."""

    if (args.source is None) == (args.scheduler is None):
        raise UsageError(
            "give exactly one of source (C code) or scheduler (a name)",
            "pass the C text as source, or a library/repository name as scheduler",
        )
    if args.source is not None:
        text, name = checks.source_text(args.source), "submitted.bpf.c"
    else:
        assert args.scheduler is not None
        text, name = scheduler_source(state, args.scheduler), f"{args.scheduler}.bpf.c"
    command = None
    if args.workload is not None or args.argv is not None:
        command, _ = workload_argv(args.workload, list(args.workload_args), args.argv)
    elif args.workload_args:
        raise UsageError("workload_args needs workload", "name a built-in workload")
    result = state.daemon().verify(
        text,
        name,
        checks.config_dict(dict(args.config)),
        kernel=args.kernel,
        workload=command,
        rodata=dict(args.rodata),
        struct_ops=args.struct_ops,
    )
    report = dict(result.get("report") or {})
    report.pop("token", None)  # the bearer token stays with the daemon; agents use its id
    token_id = result.get("token_id")
    report_id = state.artifacts.put("report", {"token_id": token_id, "report": report})
    more = f"the whole report is the resource schedcp://report/{report_id}"
    if args.detail == "full":
        full = VerificationReport(
            token_id=token_id, report_id=report_id, report_uri=f"schedcp://report/{report_id}", report=report
        )
        return Answer(full, more=more)
    return Answer(summarise(report, token_id, report_id), more=more)


OPERATIONS = [
    Operation(
        "verify_scheduler", VerifyInput, verify_scheduler, VerificationSummary | VerificationReport, kind="compute"
    )
]
