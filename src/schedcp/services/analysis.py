# SPDX-License-Identifier: Apache-2.0
"""Workload Analysis Engine operations, cheapest first: summary -> profile -> probes, files and commands.

Tier 1 (workload_summary, workload_profile) samples /proc for a bounded window, on this host or in a
testbed's guest; tier 2 reads files under allowed roots, runs commands in a bubblewrap sandbox, and
asks the daemon for eBPF probes (the only step needing root); tier 3 (get_feedback) reports what a
deployed policy changed. watch_workload turns "poll until something happens" into a resource
subscription.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.analysis.feedback import FeedbackReport
from schedcp.analysis.profile import Characteristics, WorkloadProfile
from schedcp.errors import UsageError
from schedcp.node.observe import PROBE_KINDS
from schedcp.services import checks
from schedcp.services.models import MAX_ARG_CHARS, MAX_ARGV, TESTBED_ID_PATTERN, CutNote, RepositoryProfile
from schedcp.services.operation import Answer, Operation, Progress, Reply, budget_field

if TYPE_CHECKING:
    from schedcp.analysis.engine import Engine
    from schedcp.analysis.sandbox import SandboxPolicy
    from schedcp.services.state import ServerState
    from schedcp.services.testbed import Testbed

ProbeKind = Literal[PROBE_KINDS]  # type: ignore[valid-type]
PidArg = Annotated[int | None, Field(ge=1, le=4194304, description="A running process (its descendants count too).")]
CgroupArg = Annotated[
    str | None,
    Field(
        min_length=1,
        max_length=512,
        pattern=r"^[A-Za-z0-9_./@:+-]+$",
        description=(
            "A cgroup v2 path, absolute (/sys/fs/cgroup/...) or relative to /sys/fs/cgroup (e.g. system.slice)."
        ),
    ),
]
CommandArg = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=MAX_ARG_CHARS)]] | None,
    Field(
        min_length=1,
        max_length=MAX_ARGV,
        description=(
            "Launch this argv (no shell) in a sandbox (no network, read-only system, private /work) and watch it "
            "until it exits or duration_s passes."
        ),
    ),
]
TestbedArg = Annotated[
    str | None,
    Field(
        pattern=TESTBED_ID_PATTERN,
        description="Observe the testbed's workload in its micro-VM (start_testbed) instead of this host.",
    ),
]
Number = int | float  # as measured: counts stay integers, rates and shares are floats


# -- what an observation renders to (analysis/summarize.py; any key may be cut to fit its budget) ----
class CpuUse(Reply):
    ncpu: int | None = None
    busy_pct: list[Number] = Field(default_factory=list)
    parallelism: Number | None = None
    runq_wait_pct: Number | None = None
    slice_ms: Number | None = None


class SwitchRates(Reply):
    vol_s: Number | None = None
    invol_s: Number | None = None
    migr_s: Number | None = None


class TaskCounts(Reply):
    procs: int | None = None
    threads: int | None = None
    peak: int | None = None
    spawn_s: Number | None = None
    created: int | None = None
    life_p50_s: Number | None = None
    storm: bool | None = None


class IoUse(Reply):
    mb_s: Number | None = None
    iowait_pct: Number | None = None
    blocked: Number | None = None


class LongTailBrief(Reply):
    detected: bool
    group: int
    ratio: Number
    top_share: Number
    serial_tail_s: Number


class WorkloadSummary(Reply):
    """workload_summary's answer for a workload: its class, the goal, and the numbers behind them."""

    target: str | None = None
    wall_s: Number | None = None
    classification: str | None = Field(None, alias="class")
    goal: str | None = None
    summary: str | None = None
    evidence: list[str] | None = None
    cpu: CpuUse | None = None
    switches: SwitchRates | None = None
    tasks: TaskCounts | None = None
    io: IoUse | None = None
    psi: dict[str, Any] | None = None
    mem_mb: Number | None = None
    long_tail: LongTailBrief | None = None
    exit: int | None = None
    timed_out: bool | None = None
    next: str | None = None
    detail: str | None = None
    truncated: bool | None = None  # the renderer cut something to fit its budget


class SystemView(Reply):
    """The whole system's view (no pid, cgroup or command): load, CPU use, pressure, top processes."""

    target: Literal["system"] | None = None
    ncpu: int | None = None
    busy_pct: list[Number] | None = None  # per CPU
    iowait_pct: list[Number] | None = None  # per CPU
    load: list[Number] | None = None
    procs: int | None = None
    threads: int | None = None
    forks_s: Number | None = None
    ctxt_s: Number | None = None
    runnable_avg: Number | None = None
    blocked_avg: Number | None = None
    mem_avail_mb: Number | None = None
    top: list[dict[str, Any]] | None = None
    psi_some_pct: dict[str, Number | None] | None = None
    psi: dict[str, Any] | str | None = None
    detail: str | None = None
    truncated: bool | None = None


class ProfileView(Reply):
    """workload_profile's answer (detail profile or full): the Workload Profile with phases, groups
    and top tasks; full adds the task table, the time series and the raw window."""

    profile_id: str
    profile_uri: str
    keywords: list[str] | None = None
    for_repository: RepositoryProfile
    target: str | None = None
    source: str | None = None
    duration_s: Number | None = None
    summary: str | None = None
    goal: str | None = None
    goal_rationale: str | None = None
    characteristics: Characteristics | None = None
    metrics: dict[str, Number] | None = None
    phases: list[dict[str, Number]] | None = None
    groups: list[dict[str, Number]] | None = None
    lifetimes: dict[str, int] | None = None
    top_tasks: list[dict[str, Any]] | None = None
    probe: dict[str, Any] | None = None
    system: dict[str, Any] | None = None
    series_cols: list[str] | None = None
    series: list[list[Number]] | None = None
    totals: dict[str, Any] | None = None
    rusage: dict[str, Any] | None = None
    sampling: dict[str, Any] | None = None
    stdout_tail: str | None = None
    detail: str | None = None
    truncated: bool | None = None


class ProfileRecord(Reply):
    """workload_profile's answer with detail='record': the typed profile planners work from."""

    profile_id: str
    for_repository: RepositoryProfile
    profile: WorkloadProfile


SUMMARY_BYTES = 1536
RECORD_BYTES = 8192
TO_PROFILE = "workload_profile gives the full picture"


def _engine(state: ServerState) -> Engine:
    from schedcp.analysis.engine import Engine

    return state.service("analysis_engine", Engine)


def _only_testbed(pid: int | None, cgroup: str | None, command: list[str] | None) -> None:
    if any(x is not None for x in (pid, cgroup, command)):
        raise UsageError("testbed_id observes the testbed's workload", "drop pid, cgroup and command")


def _in_testbed(
    state: ServerState,
    testbed_id: str,
    refresh: bool = False,
    interval_s: float = 0.1,
    probe: list[str] | None = None,
) -> Testbed:
    tb = state.testbeds.get(testbed_id)
    with tb.lock:
        tb.observe(refresh=refresh, interval_s=interval_s, probe=probe)
    return tb


def observe_host(
    engine: Engine,
    *,
    pids: Sequence[int] = (),
    cgroup: str | None = None,
    command: list[str] | None = None,
    duration_s: float,
    probe: list[str] | None = None,
    sandbox: SandboxPolicy | None = None,
    top: int = 5,
) -> dict[str, Any]:
    """One observation of this host: process trees, a cgroup, a command (in ``sandbox`` when given), or
    with none of them the whole system. The MCP operations and ``schedcp analyze`` both observe here;
    each face checks its own untrusted input first."""
    if sum(bool(x) for x in (pids, cgroup, command)) > 1:
        raise UsageError("give at most one target: pid, cgroup or command", "omit all three for a system-wide view")
    if pids:
        return engine.observe_pids(list(pids), duration_s=duration_s, probe=probe)
    if cgroup:
        return engine.observe_cgroup(cgroup, duration_s=duration_s, probe=probe)
    if command:
        return engine.observe_command(command, duration_s=duration_s, probe=probe, sandbox=sandbox)
    return engine.observe_system(duration_s=min(duration_s, 60.0), top=top)


def observe(
    state: ServerState, pid: int | None, cgroup: str | None, command: list[str] | None, duration_s: float
) -> dict[str, Any]:
    """An agent's observation of this host: a command runs in the sandbox, paths are checked."""
    from schedcp.analysis.sandbox import SandboxPolicy

    return observe_host(
        _engine(state),
        pids=[pid] if pid is not None else [],
        cgroup=checks.safe_path(cgroup, "cgroup", absolute=False) if cgroup is not None else None,
        command=checks.argv(command, "command") if command is not None else None,
        duration_s=duration_s,
        sandbox=SandboxPolicy(timeout_s=duration_s + 5),
    )


# -- workload_summary ---------------------------------------------------------------------------------
class HostTarget(BaseModel):
    """What to observe on this host: a process tree, a cgroup, a command; none of them: the system."""

    model_config = ConfigDict(extra="forbid")
    pid: PidArg = None
    cgroup: CgroupArg = None
    command: CommandArg = None


class SummaryInput(HostTarget):
    duration_s: float = Field(2.0, ge=0.2, le=60, description="Observation window in seconds.")
    testbed_id: TestbedArg = None
    refresh: bool = Field(
        False, description="With testbed_id: run the workload again instead of reusing the last observation."
    )
    interval_s: float = Field(
        0.1, ge=0.02, le=0.5, description="With testbed_id: sampling interval; smaller sees shorter-lived tasks."
    )


def _view(doc: dict[str, Any]) -> WorkloadSummary | SystemView:
    return SystemView.model_validate(doc) if doc.get("target") == "system" else WorkloadSummary.model_validate(doc)


def workload_summary(state: ServerState, args: SummaryInput, _progress: Progress) -> WorkloadSummary | SystemView:
    """The cheapest first look (about 1.5 KB): what a workload is doing to the CPUs.

    Give a pid, a cgroup, or a command to launch and watch; with none, the whole system. Returns the
    workload's class (cpu_bound, latency_sensitive, ...), the suggested goal, and the dozen numbers
    behind them (CPU use, run-queue wait, slices, churn). Ask workload_profile only if this leaves
    a question open. With testbed_id: the testbed's workload, run to completion once in its guest."""
    if args.testbed_id is not None:
        _only_testbed(args.pid, args.cgroup, args.command)
        return _view(_in_testbed(state, args.testbed_id, args.refresh, args.interval_s).render("summary"))
    raw = observe(state, args.pid, args.cgroup, args.command, args.duration_s)
    return _view(_engine(state).render(raw, "summary"))


# -- workload_profile ---------------------------------------------------------------------------------
class ProfileInput(HostTarget):
    duration_s: float = Field(5.0, ge=0.5, le=120, description="Observation window in seconds.")
    detail: Literal["profile", "full", "record"] = Field(
        "profile",
        description=(
            "profile (about 4 KB): the Workload Profile with per-CPU use, phases and top tasks. "
            "full (about 16 KB): adds the task table and time series. record (about 3 KB): the typed "
            "WorkloadProfile planners work from (as 'profile'), with for_repository."
        ),
    )
    testbed_id: TestbedArg = None
    max_bytes: int | None = budget_field(
        None, "Byte bound of the answer; default is the level's budget (4096 for profile, 16384 for full)."
    )


def _level_budget(detail: str) -> int:
    from schedcp.analysis.budget import BUDGETS

    return BUDGETS[detail]


def workload_profile(state: ServerState, args: ProfileInput, _progress: Progress) -> Answer:
    """The Workload Profile a planner works from: a one-paragraph description, the optimisation goal with
    its rationale, search keywords and the measured characteristics.

    'for_repository' is ready to pass as the profile of record_result; 'keywords' suit search_schedulers.
    The complete profile stays available as the resource schedcp://profile/{profile_id}. With
    testbed_id: the testbed's last observation (observed once if none yet)."""
    eng = _engine(state)
    if args.testbed_id is not None:
        _only_testbed(args.pid, args.cgroup, args.command)
        raw = _in_testbed(state, args.testbed_id).raw or {}
    else:
        raw = observe(state, args.pid, args.cgroup, args.command, args.duration_s)
    if raw.get("kind") == "system":
        if args.detail == "record":
            raise UsageError("a system-wide view has no workload profile record", "give a pid, cgroup or command")
        return Answer(SystemView.model_validate(eng.render(raw, args.detail)), _level_budget(args.detail))
    prof = eng.profile(raw)
    doc = eng.render(raw, "profile" if args.detail == "record" else args.detail)
    ch = prof.characteristics
    for_repo = {
        "summary": prof.summary[:2000],
        "goal": prof.goal,
        "characteristics": {
            "classification": ch.classification,
            "batch": ch.batch,
            "keywords": prof.keywords[:12],
            **ch.sched.model_dump(),
        },
    }
    profile_id = state.artifacts.put(
        "profile",
        {"profile": prof.model_dump(mode="json"), "for_repository": for_repo, "full": eng.render(raw, "full")},
    )
    if args.detail == "record":
        record = ProfileRecord.model_validate(
            {"profile_id": profile_id, "for_repository": for_repo, "profile": prof.model_dump(mode="json")}
        )
        return Answer(record, RECORD_BYTES, "ask with a larger max_bytes for the whole record")
    doc = {
        "profile_id": profile_id,
        "profile_uri": f"schedcp://profile/{profile_id}",
        "keywords": prof.keywords[:12],
        "for_repository": for_repo,
        **doc,
    }
    return Answer(
        ProfileView.model_validate(doc),
        _level_budget(args.detail) + 1024,
        f"the complete profile is the resource schedcp://profile/{profile_id}",
    )


# -- run_probe --------------------------------------------------------------------------------------
class ProbeInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: ProbeKind = Field(
        description=(
            "runqlat: run-queue wait per wakeup; wakeup: wakeup-to-run latency; runtime: on/off-CPU time per task; "
            "migrations: CPU moves and pairs."
        )
    )
    duration_s: float = Field(2.0, ge=0.5, le=30, description="How long the probe stays attached.")
    pid: int | None = Field(None, ge=1, le=4194304, description="Only this process tree; omit for all.")
    testbed_id: str | None = Field(
        None,
        pattern=TESTBED_ID_PATTERN,
        description="Run the testbed's workload once more in its guest with this probe attached (no daemon).",
    )


class LatencyHistogram(Reply):
    """A latency distribution in microseconds: percentiles and log2 buckets (upper bound -> count)."""

    count: int
    hist_us: dict[str, int] | None = None
    approx: str | None = None  # bpftrace: what the buckets are
    p50_us: Number | None = None
    p90_us: Number | None = None
    p99_us: Number | None = None
    max_us: Number | None = None
    mean_us: Number | None = None


class ProbeResult(Reply):
    """A probe's result (the daemon's on this host, the node's in a guest): whether it attached and
    with which backend, then per kind its histogram (runqlat, wakeup) or table (runtime, migrations),
    and with tracefs the trace's own counters."""

    events: int | None = None
    tasks: int | None = None
    kinds: list[str] | None = None
    runqlat: LatencyHistogram | None = None
    wakeup: LatencyHistogram | None = None
    runtime: dict[str, Any] | None = None  # on/off-CPU totals and the top tasks
    migrations: dict[str, Any] | None = None  # total and the busiest CPU pairs
    available: bool
    backend: str | None = None
    reason: str | None = None  # why it did not attach
    duration_s: Number | None = None
    trace_bytes: int | None = None
    lost_events: int | None = None
    dropped_bytes: int | None = None
    parse_cpu_s: Number | None = None
    target: str | dict[str, Any] | None = None  # "system", or the pids and cgroup traced
    bpftrace_unavailable: str | None = None  # why tracefs was used instead


class TestbedProbe(Reply):
    """run_probe in a testbed: the probe's brief and the workload's summary line."""

    __test__ = False
    testbed_id: str
    probe: dict[str, Any]
    summary: str | None


def run_probe(state: ServerState, args: ProbeInput, _progress: Progress) -> ProbeResult | TestbedProbe:
    """Attach a scheduler tracepoint probe (eBPF/tracefs) for a bounded time and get latency histograms
    and percentiles. Needs the SchedCP daemon (root); this server itself stays unprivileged.

    Use after a summary shows run-queue wait or latency worth explaining."""
    if args.testbed_id is not None:
        if args.pid is not None:
            raise UsageError("pid does not apply to a testbed probe", "drop pid: the testbed's workload is probed")
        tb = _in_testbed(state, args.testbed_id, refresh=True, probe=[args.kind])
        doc = tb.render("profile")
        probe = doc.get("probe") or (tb.raw or {}).get("probe") or {"available": False}
        return TestbedProbe(testbed_id=args.testbed_id, probe=probe, summary=doc.get("summary"))
    return ProbeResult.model_validate(state.daemon().probe(args.kind, args.duration_s, args.pid))


# -- read_file ----------------------------------------------------------------------------------------
class ReadFileInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    path: str = Field(
        min_length=1,
        max_length=4096,
        description=(
            "Absolute path under /proc or /sys (or under workload_pid's working directory). Directories list "
            "their entries."
        ),
    )
    offset: int = Field(0, ge=0, le=1 << 30, description="Byte offset to start from (for paging).")
    workload_pid: int | None = Field(
        None,
        ge=1,
        le=4194304,
        description="Also allow files under this process's working directory (its sources, configs).",
    )
    max_bytes: int = budget_field()


class FileRead(Reply):
    """A page of a file (text from offset; next_offset when more follows) or a directory's entries."""

    path: str
    resolved: str
    type: Literal["file", "dir"]
    offset: int | None = None
    text: str | None = None
    bytes: int | None = None
    entries: list[str] | None = None
    truncated: CutNote | None = None
    next_offset: int | None = None
    count: int | None = None


def read_file(_state: ServerState, args: ReadFileInput, _progress: Progress) -> FileRead:
    """Read a file (or list a directory) through the sandboxed reader: symlinks are resolved and must stay
    inside the allowed roots; secrets such as /proc/*/environ, /proc/kcore and memory files are refused.

    Long files are paged: the answer gives next_offset when there is more."""
    from schedcp.analysis.sandbox import SafeReader

    clean = checks.safe_path(args.path, "path")
    reader = SafeReader()
    if args.workload_pid is not None:
        reader = reader.with_workload_cwd(args.workload_pid)
    text_budget = max(256, args.max_bytes - 400)
    got = reader.read(clean, max_bytes=text_budget, offset=args.offset)
    if got.get("type") == "file" and got.get("truncated"):
        got["next_offset"] = args.offset + int(got.get("bytes", 0))
        got["truncated"] = {"note": f"more follows; call again with offset={got['next_offset']}"}
    else:
        got.pop("truncated", None)
    return FileRead.model_validate(got)


# -- run_sandboxed ------------------------------------------------------------------------------------
class SandboxedInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    argv: list[Annotated[str, Field(min_length=1, max_length=MAX_ARG_CHARS)]] = Field(
        min_length=1,
        max_length=MAX_ARGV,
        description=(
            "Program and arguments, exec'd directly (never through a shell), e.g. ['perf', 'stat', '-e', "
            "'task-clock', 'sleep', '1'] or ['cat', '/proc/schedstat']."
        ),
    )
    timeout_s: float = Field(30.0, ge=0.1, le=120, description="Killed after this many seconds.")
    stdin: str | None = Field(None, max_length=65536, description="Text fed to the command's stdin.")
    memory_mb: int = Field(1024, ge=16, le=4096, description="Address-space limit per process.")


class SandboxedRun(BaseModel):
    """A sandboxed command's outcome; the complete output is kept as schedcp://run/{run_id}."""

    exit_code: int | None = None
    signal: int | None = None
    timed_out: bool = False
    wall_s: float | None = None
    run_id: str
    stdout_bytes: int
    stderr_bytes: int
    stdout: str
    stderr: str
    limits: dict[str, Any] | None = None
    output_truncated_by_sandbox: str | None = None


def run_sandboxed(state: ServerState, args: SandboxedInput, _progress: Progress) -> Answer:
    """Run a command in a sandbox: bubblewrap with no network, a read-only view of the system, a small
    private /work, an unprivileged user and time/memory/process/output limits. For profiling tools
    (perf stat, pidstat, top -b -n1, strace -c) and for building or inspecting code.

    Output is cut to fit max_bytes; the complete output is the resource schedcp://run/{run_id}."""
    from schedcp.analysis.sandbox import SandboxPolicy
    from schedcp.analysis.sandbox import run_sandboxed as run

    result = run(
        checks.argv(args.argv), SandboxPolicy(timeout_s=args.timeout_s, memory_mb=args.memory_mb), stdin=args.stdin
    )
    run_id = state.artifacts.put("run", {"kind": "sandboxed", **result})
    stdout, stderr = result.get("stdout", ""), result.get("stderr", "")
    out = SandboxedRun(
        **{k: result[k] for k in ("exit_code", "signal", "timed_out", "wall_s") if k in result},
        run_id=run_id,
        stdout_bytes=len(stdout.encode()),
        stderr_bytes=len(stderr.encode()),
        stdout=stdout,
        stderr=stderr,
        limits=result.get("limits"),
        output_truncated_by_sandbox=(
            "the command wrote more than the sandbox keeps (64 KiB)" if result.get("truncated") else None
        ),
    )
    return Answer(out, more=f"the complete output is the resource schedcp://run/{run_id}")


# -- get_feedback -------------------------------------------------------------------------------------
class FeedbackInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    deployment_id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=r"^[A-Za-z0-9_.:-]+$",
        description="What this deployment changed, metric by metric.",
    )
    workload_key: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="History of every deployment measured on this workload, newest first.",
    )
    metric: str | None = Field(None, min_length=1, max_length=64, description="Only this metric.")
    limit: int = Field(20, ge=1, le=200, description="History rows.")


class FeedbackHistory(BaseModel):
    workload_key: str
    metric: str | None = None
    rows: list[dict[str, Any]] = Field(default_factory=list)


def get_feedback(state: ServerState, args: FeedbackInput, _progress: Progress) -> FeedbackReport | FeedbackHistory:
    """Tier-3 feedback: how a deployed policy changed the workload's metrics against its baseline
    (improvement_pct is positive when better, whatever the metric's direction), or the history of
    deployments on one workload."""
    from schedcp.analysis.feedback import FeedbackStore

    if (args.deployment_id is None) == (args.workload_key is None):
        raise UsageError(
            "give exactly one of deployment_id or workload_key",
            "deployment_id for one deployment, workload_key for the history",
        )
    store = state.service("feedback", FeedbackStore, lambda s: s.close())
    if args.deployment_id is not None:
        report = store.for_deployment(args.deployment_id)
        if report is None:
            raise UsageError(
                f"no feedback recorded for deployment {args.deployment_id!r}",
                "feedback appears once a deployment has been measured",
                code="not_found",
            )
        return report
    assert args.workload_key is not None
    rows = store.history(args.workload_key, args.metric, args.limit)
    return FeedbackHistory(workload_key=args.workload_key, metric=args.metric, rows=rows)


# -- watch_workload / unwatch_workload ------------------------------------------------------------------
class Watches:
    """Workload watches of one server: our ids -> the event watcher's subscription ids."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[str, int] = {}


def _watches(state: ServerState) -> Watches:
    return state.service("workload_watches", Watches)


def _watcher(state: ServerState) -> Any:
    from schedcp.analysis.events import EventWatcher

    return state.service("event_watcher", EventWatcher, lambda w: w.close())


class WatchInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["process_appears", "cgroup_active", "behaviour_change"] = Field(
        description=(
            "process_appears: a process whose name matches comm starts. cgroup_active: the cgroup starts using "
            "CPU. behaviour_change: CPU use or context-switch rate of the target shifts (a phase change)."
        )
    )
    comm: str | None = Field(
        None,
        min_length=1,
        max_length=64,
        pattern=r"^[A-Za-z0-9_.:*?\[\]-]+$",
        description="Process-name glob, e.g. 'postgres*'.",
    )
    cgroup: CgroupArg = None
    pids: list[Annotated[int, Field(ge=1, le=4194304)]] | None = Field(
        None, min_length=1, max_length=64, description="Processes to watch for behaviour_change."
    )
    poll_s: float = Field(0.5, ge=0.1, le=60, description="How often to look.")
    rel_threshold: float = Field(
        0.5, gt=0, le=100, description="behaviour_change: relative change that counts as material (0.5 = 50%)."
    )
    hold: int = Field(3, ge=1, le=100, description="Polls beyond the threshold needed to confirm.")


class WatchTarget(BaseModel):
    comm: str | None = None
    cgroup: str | None = None
    pids: list[int] | None = None


class WatchStarted(BaseModel):
    watch_id: str
    resource_uri: str
    kind: str
    target: WatchTarget


def watch_workload(state: ServerState, args: WatchInput, _progress: Progress) -> WatchStarted:
    """Be told when to re-analyse instead of polling: watch for a workload appearing or changing phase.

    Returns a resource URI (schedcp://events/watch/{watch_id}). Subscribe to it (resources/subscribe, or
    subscriptions/listen) to get a notification per event, then read it for the events. The watch ends
    with unwatch_workload or when this server stops."""
    from schedcp.analysis.events import WatchSpec

    if args.cgroup is not None:
        checks.safe_path(args.cgroup, "cgroup", absolute=False)
    spec = WatchSpec(
        kind=args.kind,
        comm=args.comm,
        cgroup=args.cgroup,
        pids=args.pids,
        poll_s=args.poll_s,
        rel_threshold=args.rel_threshold,
        hold=args.hold,
    )
    watches = _watches(state)
    watch_id = f"w-{secrets.token_hex(6)}"
    topic = f"watch/{watch_id}"
    uri = state.events.open_topic(topic)

    def forward(event: Any) -> None:
        state.events.publish(topic, event.kind, {"at": event.at, **event.detail})

    try:
        sid = _watcher(state).subscribe(spec, forward)
    except Exception:
        state.events.close_topic(topic)
        raise
    with watches.lock:
        watches.by_id[watch_id] = sid
    return WatchStarted(
        watch_id=watch_id,
        resource_uri=uri,
        kind=args.kind,
        target=WatchTarget(comm=args.comm, cgroup=args.cgroup, pids=args.pids),
    )


class UnwatchInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    watch_id: str = Field(pattern=r"^w-[0-9a-f]{8,32}$", description="As watch_workload returned it.")


class WatchStopped(BaseModel):
    watch_id: str
    stopped: bool = True


def unwatch_workload(state: ServerState, args: UnwatchInput, _progress: Progress) -> WatchStopped:
    """Stop a workload watch started with watch_workload; its event resource goes away with it."""
    watches = _watches(state)
    with watches.lock:
        sid = watches.by_id.pop(args.watch_id, None)
    if sid is None:
        raise UsageError(f"no active watch {args.watch_id!r}", "watch ids come from watch_workload", code="not_found")
    _watcher(state).unsubscribe(sid)
    state.events.close_topic(f"watch/{args.watch_id}")
    return WatchStopped(watch_id=args.watch_id)


OPERATIONS = [
    Operation(
        "workload_summary",
        SummaryInput,
        workload_summary,
        WorkloadSummary | SystemView,
        kind="compute",
        max_bytes=SUMMARY_BYTES,
        more=TO_PROFILE,
    ),
    Operation(
        "workload_profile", ProfileInput, workload_profile, ProfileView | ProfileRecord | SystemView, kind="compute"
    ),
    Operation("run_probe", ProbeInput, run_probe, ProbeResult | TestbedProbe, kind="compute"),
    Operation("read_file", ReadFileInput, read_file, FileRead, kind="read"),
    Operation("run_sandboxed", SandboxedInput, run_sandboxed, SandboxedRun, kind="compute"),
    Operation("get_feedback", FeedbackInput, get_feedback, FeedbackReport | FeedbackHistory, kind="read"),
    Operation("watch_workload", WatchInput, watch_workload, WatchStarted, kind="write"),
    Operation("unwatch_workload", UnwatchInput, unwatch_workload, WatchStopped, kind="write"),
]
