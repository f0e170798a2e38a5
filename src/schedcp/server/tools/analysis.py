# SPDX-License-Identifier: Apache-2.0
"""Workload Analysis Engine tools, cheapest first: summary -> profile -> probes, files and commands.

Tier 1 (workload_summary, workload_profile) samples /proc for a bounded window; tier 2 reads files
under allowed roots, runs commands in a bubblewrap sandbox, and asks the daemon for eBPF probes
(the only step needing root); tier 3 (get_feedback) reports what a deployed policy changed.
watch_workload turns "poll until something happens" into a resource subscription.

No ``from __future__ import annotations``: the probe kinds are read from the engine at runtime.
"""

import secrets
import threading
from typing import Annotated, Any, Literal

from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult
from pydantic import Field

from schedcp.errors import UsageError
from schedcp.server import budget, checks
from schedcp.server.state import ServerState
from schedcp.server.tooling import COMPUTE, READ, WRITE, MaxBytes, make_tool

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
    list[Annotated[str, Field(min_length=1, max_length=checks.MAX_ARG_CHARS)]] | None,
    Field(
        min_length=1,
        max_length=checks.MAX_ARGV,
        description=(
            "Launch this argv (no shell) in a sandbox (no network, read-only system, private /work) and watch it "
            "until it exits or duration_s passes."
        ),
    ),
]
TestbedArg = Annotated[
    str | None,
    Field(
        pattern=r"^tb-[0-9a-f]{12}$",
        description="Observe the testbed's workload in its micro-VM (start_testbed) instead of this host.",
    ),
]
RefreshArg = Annotated[
    bool, Field(description="With testbed_id: run the workload again instead of reusing the last observation.")
]
IntervalArg = Annotated[
    float,
    Field(ge=0.02, le=0.5, description="With testbed_id: sampling interval; smaller sees shorter-lived tasks."),
]
SUMMARY_BYTES = 1536


def only_one(pid: int | None, cgroup: str | None, command: list[str] | None) -> None:
    if any(x is not None for x in (pid, cgroup, command)):
        raise UsageError("testbed_id observes the testbed's workload", "drop pid, cgroup and command")


def _profile_budget(detail: str) -> int:
    from schedcp.analysis.budget import BUDGETS

    return BUDGETS[detail]


class Watches:
    """Workload watches of this server: our ids, the analysis subscription ids, their topics."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_id: dict[str, int] = {}


def tools(state: ServerState) -> list[Tool]:
    from schedcp.node.observe import PROBE_KINDS

    ProbeKind = Literal[PROBE_KINDS]  # type: ignore[valid-type]
    watches = Watches()

    def engine():
        from schedcp.analysis.engine import Engine

        return state.service("analysis_engine", Engine)

    def in_testbed(testbed_id: str, refresh: bool = False, interval_s: float = 0.1, probe: list[str] | None = None):
        tb = state.testbeds.get(testbed_id)
        with tb.lock:
            tb.observe(refresh=refresh, interval_s=interval_s, probe=probe)
        return tb

    def observe(pid: int | None, cgroup: str | None, command: list[str] | None, duration_s: float) -> dict[str, Any]:
        if sum(x is not None for x in (pid, cgroup, command)) > 1:
            raise UsageError("give at most one target: pid, cgroup or command", "omit all three for a system-wide view")
        eng = engine()
        if pid is not None:
            return eng.observe_pids([pid], duration_s=duration_s)
        if cgroup is not None:
            return eng.observe_cgroup(checks.safe_path(cgroup, "cgroup", absolute=False), duration_s=duration_s)
        if command is not None:
            from schedcp.analysis.sandbox import SandboxPolicy

            policy = SandboxPolicy(timeout_s=duration_s + 5)
            return eng.observe_command(checks.argv(command, "command"), duration_s=duration_s, sandbox=policy)
        return eng.observe_system(duration_s=min(duration_s, 60.0))

    def workload_summary(
        pid: PidArg = None,
        cgroup: CgroupArg = None,
        command: CommandArg = None,
        duration_s: Annotated[float, Field(ge=0.2, le=60, description="Observation window in seconds.")] = 2.0,
        testbed_id: TestbedArg = None,
        refresh: RefreshArg = False,
        interval_s: IntervalArg = 0.1,
        max_bytes: MaxBytes = SUMMARY_BYTES,
    ) -> CallToolResult:
        """The cheapest first look (about 1.5 KB): what a workload is doing to the CPUs.

        Give a pid, a cgroup, or a command to launch and watch; with none, the whole system. Returns the
        workload's class (cpu_bound, latency_sensitive, ...), the suggested goal, and the dozen numbers
        behind them (CPU use, run-queue wait, slices, churn). Ask workload_profile only if this leaves
        a question open. With testbed_id: the testbed's workload, run to completion once in its guest."""
        if testbed_id is not None:
            only_one(pid, cgroup, command)
            tb = in_testbed(testbed_id, refresh, interval_s)
            return budget.respond(tb.render("summary"), max_bytes, hint="workload_profile gives the full picture")
        raw = observe(pid, cgroup, command, duration_s)
        return budget.respond(
            engine().render(raw, "summary"), max_bytes, hint="workload_profile gives the full picture"
        )

    def workload_profile(
        pid: PidArg = None,
        cgroup: CgroupArg = None,
        command: CommandArg = None,
        duration_s: Annotated[float, Field(ge=0.5, le=120, description="Observation window in seconds.")] = 5.0,
        detail: Annotated[
            Literal["profile", "full", "record"],
            Field(
                description=(
                    "profile (about 4 KB): the Workload Profile with per-CPU use, phases and top tasks. "
                    "full (about 16 KB): adds the task table and time series. record (about 3 KB): the typed "
                    "WorkloadProfile planners work from (as 'profile'), with for_repository."
                )
            ),
        ] = "profile",
        testbed_id: TestbedArg = None,
        max_bytes: Annotated[
            int | None,
            Field(
                ge=budget.MIN_MAX_BYTES,
                le=budget.LIMIT_MAX_BYTES,
                description=(
                    "Byte bound of the answer; default is the level's budget (4096 for profile, 16384 for full)."
                ),
            ),
        ] = None,
    ) -> CallToolResult:
        """The Workload Profile a planner works from: a one-paragraph description, the optimisation goal with
        its rationale, search keywords and the measured characteristics.

        'for_repository' is ready to pass as the profile of record_result; 'keywords' suit search_schedulers.
        The complete profile stays available as the resource schedcp://profile/{profile_id}. With
        testbed_id: the testbed's last observation (observed once if none yet)."""
        eng = engine()
        if testbed_id is not None:
            only_one(pid, cgroup, command)
            tb = in_testbed(testbed_id)
            raw = tb.raw or {}
        else:
            raw = observe(pid, cgroup, command, duration_s)
        if raw.get("kind") == "system":
            if detail == "record":
                raise UsageError("a system-wide view has no workload profile record", "give a pid, cgroup or command")
            doc = eng.render(raw, detail)
            return budget.respond(doc, max_bytes or _profile_budget(detail))
        prof = eng.profile(raw)
        doc = eng.render(raw, "profile" if detail == "record" else detail)
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
        if detail == "record":
            doc = {"profile_id": profile_id, "for_repository": for_repo, "profile": prof.model_dump(mode="json")}
            return budget.respond(doc, max_bytes or 8192, hint="ask with a larger max_bytes for the whole record")
        doc = {
            "profile_id": profile_id,
            "profile_uri": f"schedcp://profile/{profile_id}",
            "keywords": prof.keywords[:12],
            "for_repository": for_repo,
            **doc,
        }
        return budget.respond(
            doc,
            max_bytes or _profile_budget(detail) + 1024,
            hint=f"the complete profile is the resource schedcp://profile/{profile_id}",
        )

    def run_probe(
        kind: Annotated[
            ProbeKind,
            Field(
                description=(
                    "runqlat: run-queue wait per wakeup; wakeup: wakeup-to-run latency; "
                    "runtime: on/off-CPU time per task; "
                    "migrations: CPU moves and pairs."
                )
            ),
        ],
        duration_s: Annotated[float, Field(ge=0.5, le=30, description="How long the probe stays attached.")] = 2.0,
        pid: Annotated[int | None, Field(ge=1, le=4194304, description="Only this process tree; omit for all.")] = None,
        testbed_id: Annotated[
            str | None,
            Field(
                pattern=r"^tb-[0-9a-f]{12}$",
                description="Run the testbed's workload once more in its guest with this probe attached (no daemon).",
            ),
        ] = None,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Attach a scheduler tracepoint probe (eBPF/tracefs) for a bounded time and get latency histograms
        and percentiles. Needs the SchedCP daemon (root); this server itself stays unprivileged.

        Use after a summary shows run-queue wait or latency worth explaining."""
        if testbed_id is not None:
            if pid is not None:
                raise UsageError("pid does not apply to a testbed probe", "drop pid: the testbed's workload is probed")
            tb = in_testbed(testbed_id, refresh=True, probe=[kind])
            doc = tb.render("profile")
            probe = doc.get("probe") or (tb.raw or {}).get("probe") or {"available": False}
            return budget.respond({"testbed_id": testbed_id, "probe": probe, "summary": doc.get("summary")}, max_bytes)
        result = state.daemon().probe(kind, duration_s, pid)
        return budget.respond(result, max_bytes)

    def read_file(
        path: Annotated[
            str,
            Field(
                min_length=1,
                max_length=4096,
                description=(
                    "Absolute path under /proc or /sys (or under workload_pid's working directory). Directories list "
                    "their entries."
                ),
            ),
        ],
        offset: Annotated[int, Field(ge=0, le=1 << 30, description="Byte offset to start from (for paging).")] = 0,
        workload_pid: Annotated[
            int | None,
            Field(
                ge=1,
                le=4194304,
                description=("Also allow files under this process's working directory (its sources, configs)."),
            ),
        ] = None,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Read a file (or list a directory) through the sandboxed reader: symlinks are resolved and must stay
        inside the allowed roots; secrets such as /proc/*/environ, /proc/kcore and memory files are refused.

        Long files are paged: the answer gives next_offset when there is more."""
        from schedcp.analysis.sandbox import SafeReader

        clean = checks.safe_path(path, "path")
        reader = SafeReader()
        if workload_pid is not None:
            reader = reader.with_workload_cwd(workload_pid)
        text_budget = max(256, max_bytes - 400)
        got = reader.read(clean, max_bytes=text_budget, offset=offset)
        if got.get("type") == "file" and got.get("truncated"):
            got["next_offset"] = offset + int(got.get("bytes", 0))
            got["truncated"] = {"note": f"more follows; call again with offset={got['next_offset']}"}
        else:
            got.pop("truncated", None)
        return budget.respond(got, max_bytes)

    def run_sandboxed(
        argv: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=checks.MAX_ARG_CHARS)]],
            Field(
                min_length=1,
                max_length=checks.MAX_ARGV,
                description=(
                    "Program and arguments, exec'd directly (never through a shell), e.g. ['perf', 'stat', '-e', "
                    "'task-clock', 'sleep', '1'] or ['cat', '/proc/schedstat']."
                ),
            ),
        ],
        timeout_s: Annotated[float, Field(ge=0.1, le=120, description="Killed after this many seconds.")] = 30.0,
        stdin: Annotated[str | None, Field(max_length=65536, description="Text fed to the command's stdin.")] = None,
        memory_mb: Annotated[int, Field(ge=16, le=4096, description="Address-space limit per process.")] = 1024,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Run a command in a sandbox: bubblewrap with no network, a read-only view of the system, a small
        private /work, an unprivileged user and time/memory/process/output limits. For profiling tools
        (perf stat, pidstat, top -b -n1, strace -c) and for building or inspecting code.

        Output is cut to fit max_bytes; the complete output is the resource schedcp://run/{run_id}."""
        from schedcp.analysis.sandbox import SandboxPolicy
        from schedcp.analysis.sandbox import run_sandboxed as run

        result = run(checks.argv(argv), SandboxPolicy(timeout_s=timeout_s, memory_mb=memory_mb), stdin=stdin)
        run_id = state.artifacts.put("run", {"kind": "sandboxed", **result})
        head: dict[str, Any] = {k: result[k] for k in ("exit_code", "signal", "timed_out", "wall_s") if k in result}
        stdout, stderr = result.get("stdout", ""), result.get("stderr", "")
        doc = {
            **head,
            "run_id": run_id,
            "stdout_bytes": len(stdout.encode()),
            "stderr_bytes": len(stderr.encode()),
            "stdout": stdout,
            "stderr": stderr,
            "limits": result.get("limits"),
        }
        if result.get("truncated"):
            doc["output_truncated_by_sandbox"] = "the command wrote more than the sandbox keeps (64 KiB)"
        return budget.respond(doc, max_bytes, hint=f"the complete output is the resource schedcp://run/{run_id}")

    def get_feedback(
        deployment_id: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=200,
                pattern=r"^[A-Za-z0-9_.:-]+$",
                description="What this deployment changed, metric by metric.",
            ),
        ] = None,
        workload_key: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=200,
                description=("History of every deployment measured on this workload, newest first."),
            ),
        ] = None,
        metric: Annotated[str | None, Field(min_length=1, max_length=64, description="Only this metric.")] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="History rows.")] = 20,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Tier-3 feedback: how a deployed policy changed the workload's metrics against its baseline
        (improvement_pct is positive when better, whatever the metric's direction), or the history of
        deployments on one workload."""
        from schedcp.analysis.feedback import FeedbackStore

        if (deployment_id is None) == (workload_key is None):
            raise UsageError(
                "give exactly one of deployment_id or workload_key",
                "deployment_id for one deployment, workload_key for the history",
            )
        store = state.service("feedback", FeedbackStore, lambda s: s.close())
        if deployment_id is not None:
            report = store.for_deployment(deployment_id)
            if report is None:
                raise UsageError(
                    f"no feedback recorded for deployment {deployment_id!r}",
                    "feedback appears once a deployment has been measured",
                    code="not_found",
                )
            return budget.respond(report.model_dump(mode="json"), max_bytes)
        assert workload_key is not None
        rows = store.history(workload_key, metric, limit)
        return budget.respond({"workload_key": workload_key, "metric": metric, "rows": rows}, max_bytes)

    def watch_workload(
        kind: Annotated[
            Literal["process_appears", "cgroup_active", "behaviour_change"],
            Field(
                description=(
                    "process_appears: a process whose name matches comm starts. cgroup_active: the cgroup starts using "
                    "CPU. behaviour_change: CPU use or context-switch rate of the target shifts (a phase change)."
                )
            ),
        ],
        comm: Annotated[
            str | None,
            Field(
                min_length=1,
                max_length=64,
                pattern=r"^[A-Za-z0-9_.:*?\[\]-]+$",
                description="Process-name glob, e.g. 'postgres*'.",
            ),
        ] = None,
        cgroup: CgroupArg = None,
        pids: Annotated[
            list[Annotated[int, Field(ge=1, le=4194304)]] | None,
            Field(min_length=1, max_length=64, description="Processes to watch for behaviour_change."),
        ] = None,
        poll_s: Annotated[float, Field(ge=0.1, le=60, description="How often to look.")] = 0.5,
        rel_threshold: Annotated[
            float,
            Field(gt=0, le=100, description=("behaviour_change: relative change that counts as material (0.5 = 50%).")),
        ] = 0.5,
        hold: Annotated[int, Field(ge=1, le=100, description="Polls beyond the threshold needed to confirm.")] = 3,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Be told when to re-analyse instead of polling: watch for a workload appearing or changing phase.

        Returns a resource URI (schedcp://events/watch/{watch_id}). Subscribe to it (resources/subscribe, or
        subscriptions/listen) to get a notification per event, then read it for the events. The watch ends
        with unwatch_workload or when this server stops."""
        from schedcp.analysis.events import WatchSpec

        if cgroup is not None:
            checks.safe_path(cgroup, "cgroup", absolute=False)
        spec = WatchSpec(
            kind=kind, comm=comm, cgroup=cgroup, pids=pids, poll_s=poll_s, rel_threshold=rel_threshold, hold=hold
        )
        watcher = state.service("event_watcher", _watcher, lambda w: w.close())
        watch_id = f"w-{secrets.token_hex(6)}"
        topic = f"watch/{watch_id}"
        uri = state.events.open_topic(topic)

        def forward(event: Any) -> None:
            state.events.publish(topic, event.kind, {"at": event.at, **event.detail})

        try:
            sid = watcher.subscribe(spec, forward)
        except Exception:
            state.events.close_topic(topic)
            raise
        with watches.lock:
            watches.by_id[watch_id] = sid
        return budget.respond(
            {
                "watch_id": watch_id,
                "resource_uri": uri,
                "kind": kind,
                "target": {"comm": comm, "cgroup": cgroup, "pids": pids},
            },
            max_bytes,
        )

    def unwatch_workload(
        watch_id: Annotated[str, Field(pattern=r"^w-[0-9a-f]{8,32}$", description="As watch_workload returned it.")],
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Stop a workload watch started with watch_workload; its event resource goes away with it."""
        with watches.lock:
            sid = watches.by_id.pop(watch_id, None)
        if sid is None:
            raise UsageError(f"no active watch {watch_id!r}", "watch ids come from watch_workload", code="not_found")
        state.service("event_watcher", _watcher, lambda w: w.close()).unsubscribe(sid)
        state.events.close_topic(f"watch/{watch_id}")
        return budget.respond({"watch_id": watch_id, "stopped": True}, max_bytes)

    return [
        make_tool(workload_summary, COMPUTE),
        make_tool(workload_profile, COMPUTE),
        make_tool(run_probe, COMPUTE),
        make_tool(read_file, READ),
        make_tool(run_sandboxed, COMPUTE),
        make_tool(get_feedback, READ),
        make_tool(watch_workload, WRITE),
        make_tool(unwatch_workload, WRITE),
    ]


def _watcher() -> Any:
    from schedcp.analysis.events import EventWatcher

    return EventWatcher()
