# SPDX-License-Identifier: Apache-2.0
"""Typed inputs and outputs the service operations share (the contract behind every MCP tool).

Anything an agent sends or gets back here is a pydantic model: MCP tool schemas are generated from
these, the CLI builds them, and sched-agent parses tool answers back into them. Plain data only:
importing this module pulls in no server, VM or repository code.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.bench.usermetric import MetricSpec
from schedcp.services.operation import Reply

NAME_PATTERN = r"^[a-z][a-z0-9_.-]{1,63}$"
TESTBED_ID_PATTERN = r"^tb-[0-9a-f]{12}$"
TRIAL_ID_PATTERN = r"^tri-[0-9a-f]{16}$"
BUILD_ID_PATTERN = r"^bld-[0-9a-f]{16}$"
MAX_ARGV = 64
MAX_ARG_CHARS = 512
MAX_SOURCE_BYTES = 256 * 1024
MAX_RUN_S = 600.0

Scalar = int | float | bool | str
PolicyName = Annotated[str, Field(pattern=NAME_PATTERN, description="Scheduler name as the repository lists it.")]
Goal = Literal["makespan", "p99_latency", "throughput", "fairness"]
TestbedId = Annotated[
    str, Field(pattern=TESTBED_ID_PATTERN, description="A testbed (one micro-VM boot) from start_testbed.")
]
ArgvItem = Annotated[str, Field(min_length=1, max_length=MAX_ARG_CHARS)]
PackageName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9+.-]{0,99}$", description="A Debian package name.")]


class CutNote(Reply):
    """Said where a domain service marked a cut answer with ``truncated: true``: what was left out
    and how to get it."""

    note: str


class TargetSpec(BaseModel):
    """What to run: a built-in guest workload or a command, run to completion in the guest."""

    model_config = ConfigDict(extra="forbid")
    workload: str | None = Field(
        None,
        pattern=r"^[a-z][a-z0-9_]{0,39}$",
        description="A built-in guest workload (longtail, batch, wakelat, ...; run_in_vm lists them).",
    )
    workload_args: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=32, description="Options for the built-in workload, e.g. ['--tasks', '20']."
    )
    argv: list[ArgvItem] | None = Field(
        None,
        min_length=1,
        max_length=MAX_ARGV,
        description="Or a program and its arguments, exec'd in the guest (no shell), e.g. ['python3', '-m', ...].",
    )
    timeout_s: float = Field(180.0, ge=1, le=MAX_RUN_S, description="Seconds one run of the workload may take.")
    packages: list[PackageName] = Field(
        default_factory=list,
        max_length=16,
        description="Debian stable packages the guest needs for the command, e.g. ['stress-ng'] (with dependencies).",
    )
    metric: MetricSpec | None = Field(
        None,
        description="The goal metric, read from the command's output (a regex with one group, or a JSON field) "
        "and its direction; default: the goal's metric among those the workload reports, else wall time.",
    )


class Target(BaseModel):
    """A resolved target: the exact argv the guest runs, and a label for reports."""

    label: str
    argv: list[str]
    builtin: str | None = None
    workload_args: list[str] = Field(default_factory=list)
    timeout_s: float = 180.0
    packages: list[str] = Field(default_factory=list)
    metric: MetricSpec | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "label": self.label,
            "argv": self.argv,
            "builtin": self.builtin,
            "timeout_s": self.timeout_s,
        }
        if self.packages:
            out["packages"] = self.packages
        if self.metric is not None:
            out["metric"] = self.metric.model_dump(exclude_none=True)
        return out


class TestbedInfo(BaseModel):
    """One held micro-VM boot and what has been done in it."""

    __test__ = False  # not a pytest class
    testbed_id: str
    target: Target
    kernel: str
    kernel_release: str = ""
    cpus: int = 2
    state: Literal["booting", "ready", "failed", "closed"]
    boot_id: str = ""
    boot_s: float | None = None
    accel: str | None = None
    restarts: int = 0
    node: str = "vm"  # vm (the server's micro-VM), daemon or local (the SchedCP daemon's node)
    observations: int = 0
    trials: int = 0
    error: str | None = None


class RepositoryProfile(BaseModel):
    """The small workload shape the repository matches results and antipatterns by
    (workload_profile's ``for_repository``)."""

    model_config = ConfigDict(extra="forbid")
    summary: str = Field(min_length=3, max_length=2000, description="One paragraph: what the workload is and does.")
    characteristics: dict[str, Any] = Field(
        default_factory=dict, max_length=40, description="Numbers and labels behind the summary (small, flat)."
    )
    goal: str = Field(
        pattern=r"^[a-z][a-z0-9_]{1,40}$", description="What was optimised: makespan, p99_latency, throughput, ..."
    )


class CandidateSpec(BaseModel):
    """A policy to try: configure an existing one, or new code (patch/compose)."""

    model_config = ConfigDict(extra="forbid")
    policy: str = Field(pattern=NAME_PATTERN, description="Existing policy (configure) or the new policy's name.")
    level: Literal["configure", "patch", "compose"] = Field(
        "configure",
        description="configure: an existing policy with tunables; patch: changed source of a parent; "
        "compose: new source.",
    )
    config: dict[str, int | bool | str] = Field(
        default_factory=dict, max_length=40, description="Tunable values (configure only)."
    )
    source: str | None = Field(
        None, max_length=MAX_SOURCE_BYTES, description="Complete BPF C source (patch/compose only)."
    )
    parent: str | None = Field(None, pattern=NAME_PATTERN, description="The policy a patch changes.")


class CandidateCheck(BaseModel):
    """check_candidate's answer: the candidate can be built and tried (refusals are errors)."""

    ok: bool = True
    policy: str
    level: Literal["configure", "patch", "compose"]
    kind: str  # bpf, generated (external policies are refused)


class Finding(BaseModel):
    id: str = ""
    severity: str = "info"
    message: str = ""
    line: int | None = None
    hint: str | None = None


class BuildInfo(BaseModel):
    """The outcome of build_scheduler: a compiled object (kept in the testbed for run_trial) and the
    verifier's static analysis, or the compiler's diagnostics."""

    ok: bool
    build_id: str | None = None
    name: str
    kernel_release: str = ""
    object_sha256: str = ""
    source_sha256: str = ""
    config: dict[str, Any] = Field(default_factory=dict)
    stage: Literal["build", "static", "done"] = "done"
    error: str | None = None
    diagnostics: list[str] = Field(default_factory=list)
    static_errors: int = 0
    findings: list[Finding] = Field(default_factory=list)


class RoundResult(BaseModel):
    round: int
    order: list[str]  # e.g. ["eevdf", "policy"]
    eevdf: dict[str, float]
    policy: dict[str, float]
    ratio: float | None  # >1: the policy beat EEVDF on the goal metric this round
    # The kernel's context switches across each side's run ("eevdf", "policy"), whole guest.
    context_switches: dict[str, int] = Field(default_factory=dict)


class Trial(BaseModel):
    """A candidate measured against EEVDF in one boot, interleaved. Numbers come from the measuring
    code only; no agent writes them."""

    ok: bool
    error: str | None = None
    boot_id: str = ""
    same_boot: bool = True
    metric: str = ""
    direction: Literal["lower", "higher"] = "lower"
    rounds: list[RoundResult] = Field(default_factory=list)
    baseline: dict[str, float] = Field(default_factory=dict)  # median per metric under EEVDF
    policy: dict[str, float] = Field(default_factory=dict)  # median per metric under the candidate
    baseline_value: float | None = None
    policy_value: float | None = None
    ratio: float | None = None
    consistent: bool = False  # the policy won at least two rounds in three
    ops_name: str = ""
    stayed_enabled: bool = True
    ejections: list[dict[str, Any]] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=dict)
    # Median context switches of the whole guest across a run, per side ("eevdf", "policy"): a policy
    # that wins by switching far more (or less) than EEVDF shows it here.
    context_switches: dict[str, float] = Field(default_factory=dict)
    guest_crash: bool = False  # the guest died (not a policy verdict)
    attempts: int = 1


class TrialRecord(BaseModel):
    """A trial as the server keeps it: what was measured, on what, and the measurement."""

    trial_id: str
    testbed_id: str
    policy: str
    config: dict[str, Any] = Field(default_factory=dict)
    object_sha256: str = ""
    source_sha256: str = ""
    goal: str
    kernel_release: str = ""
    trial: Trial
