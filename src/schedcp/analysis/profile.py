# SPDX-License-Identifier: Apache-2.0
"""The Workload Profile: what the planner and the repository consume.

A profile says in one paragraph what the workload is, carries the numbers behind that judgement,
and names one optimisation goal with the reason it was chosen. Everything in it is derived from a
raw observation (``schedcp.node.observe``) by ``schedcp.analysis.derive``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

Goal = Literal["makespan", "p99_latency", "throughput", "fairness"]
Classification = Literal["cpu_bound", "latency_sensitive", "io_bound", "mixed", "idle"]


class LongTail(BaseModel):
    """Runtime spread among sibling tasks that started together (a batch)."""

    detected: bool
    group_size: int
    spawner_pid: int
    median_cpu_ms: float
    max_cpu_ms: float
    ratio_max_median: float = Field(description="max / median CPU time among the siblings")
    top_share: float = Field(description="share of the group's CPU time used by its largest task")
    serial_tail_s: float = Field(description="time at the end of the batch with fewer tasks alive than CPUs")
    all_finished: bool


class Churn(BaseModel):
    procs_seen: int
    threads_seen: int
    peak_alive_threads: int
    spawn_rate_seen: float = Field(description="workload processes seen per second")
    forks_per_s_system: float = Field(description="system-wide forks per second during the window")
    lifetime_p50_s: float | None = None
    lifetime_p90_s: float | None = None
    lifetime_max_s: float | None = None
    short_lived_storm: bool
    counted_by: Literal["fork_events", "sampling"] = Field(
        "sampling",
        description="fork_events: every task the workload created was counted from the kernel's fork/exit "
        "tracepoints (lifetimes exact); sampling: only tasks alive at a /proc sample were seen",
    )
    tasks_created: int | None = Field(None, description="tasks (processes and threads) the workload created")
    create_rate_per_s: float | None = Field(None, description="tasks created per second while it was creating them")
    turnover: float | None = Field(
        None, description="tasks created per peak of concurrently alive created tasks: ~1 for a batch, large for churn"
    )
    mean_alive: float | None = Field(
        None, description="average number of created tasks alive while creating: ~0 for an occasional helper"
    )


class SchedNumbers(BaseModel):
    cpu_s: float
    parallelism: float = Field(description="average CPUs busy with the workload")
    runnable_parallelism: float = Field(description="average tasks running or waiting for a CPU")
    runq_wait_pct: float = Field(description="share of runnable time spent waiting in a run queue")
    wait_ms_per_cpu_s: float = Field(description="run-queue wait per second of CPU time")
    mean_slice_ms: float | None = Field(description="CPU time per timeslice (burst length)")
    vcs_per_s: float
    ivcs_per_s: float
    voluntary_share: float | None
    migrations_per_s: float | None
    runnable_share: float = Field(description="share of alive task-time spent running or waiting for a CPU")
    blocked_share: float = Field(description="share of samples in uninterruptible (D) sleep")


class Characteristics(BaseModel):
    classification: Classification
    evidence: list[str]
    sched: SchedNumbers
    churn: Churn
    long_tail: LongTail | None = None
    batch: bool = Field(description="a launched command that finished: completion time matters")
    io_mb_per_s: float = 0.0
    rss_mb: float = 0.0
    cpu_busy_pct: list[float] = []
    iowait_pct: float = 0.0
    psi: dict[str, float | str] = {}


class WorkloadProfile(BaseModel):
    target: str
    source: Literal["host", "vm"] = "host"
    duration_s: float
    summary: str = Field(description="natural-language description for the planner")
    goal: Goal
    goal_rationale: str
    keywords: list[str] = Field(description="terms for searching the policy repository")
    characteristics: Characteristics
    metrics: dict[str, float] = Field(
        default_factory=dict, description="baseline metrics for the feedback channel (same names later)"
    )


def choose_goal(ch: Characteristics) -> tuple[Goal, str]:
    """Pick one optimisation goal from the characteristics, with the reason in one sentence."""
    lt = ch.long_tail
    if lt is not None and lt.detected:
        return "makespan", (
            f"one of {lt.group_size} sibling tasks needs {lt.ratio_max_median:.0f}x the median CPU time; "
            "the batch finishes only when it does, so run it early (longest job first) to cut completion time"
        )
    if ch.churn.short_lived_storm:
        return "makespan", (
            "many short-lived processes (build- or script-like); creation and placement cost decide total time"
        )
    if ch.classification == "latency_sensitive":
        return "p99_latency", (
            "tasks sleep and wake often and run briefly; what matters is how fast they get a CPU after waking"
        )
    if ch.classification == "cpu_bound" and _competing_groups(ch):
        return "fairness", "several groups compete for CPU with heavy run-queue wait; share it evenly"
    if ch.classification == "cpu_bound" and ch.batch:
        return "makespan", "a CPU-bound batch that ends on its own; finishing sooner is the aim"
    if ch.classification == "io_bound":
        return "throughput", "tasks mostly wait for I/O; keep devices and CPUs busy rather than re-order CPU work"
    return "throughput", "long-running CPU work; maximise work done per second and limit switching overhead"


def _competing_groups(ch: Characteristics) -> bool:
    return ch.sched.runq_wait_pct >= 40 and any(e.startswith("groups:") for e in ch.evidence)


def keywords_for(ch: Characteristics, goal: Goal) -> list[str]:
    words = [ch.classification.replace("_", "-"), goal.replace("_", "-")]
    if ch.long_tail is not None and ch.long_tail.detected:
        words += ["long-tail", "batch", "longest-job-first"]
    if ch.churn.short_lived_storm:
        words += ["fork-storm", "short-lived"]
    if ch.sched.parallelism >= 1.5:
        words.append("parallel")
    if ch.batch:
        words.append("batch")
    return sorted(set(words))


def describe(ch: Characteristics, goal: Goal) -> str:
    """One paragraph an agent can read instead of the numbers."""
    s, c = ch.sched, ch.churn
    kind = {
        "cpu_bound": "CPU-bound",
        "latency_sensitive": "latency-sensitive (sleep/wake)",
        "io_bound": "I/O-bound",
        "mixed": "mixed",
        "idle": "mostly idle",
    }[ch.classification]
    parts = []
    lt = ch.long_tail
    if lt is not None and lt.detected:
        parts.append(f"Batch of {lt.group_size} {kind} processes started together")
        parts.append(
            f"one runs ~{lt.ratio_max_median:.0f}x longer than the median "
            f"({lt.max_cpu_ms:.0f} vs {lt.median_cpu_ms:.0f} ms CPU, {lt.top_share:.0%} of the group's CPU) "
            "(long tail)"
        )
        if lt.serial_tail_s > 0.05:
            parts.append(f"it runs alone for the last {lt.serial_tail_s:.1f}s with CPUs idle")
    elif c.short_lived_storm:
        life = f", median life {c.lifetime_p50_s * 1000:.0f} ms" if c.lifetime_p50_s is not None else ""
        if c.tasks_created is not None:
            count = f"{c.tasks_created} created, {c.create_rate_per_s or 0:.0f}/s{life}"
        else:
            count = f"{c.procs_seen} seen, {c.spawn_rate_seen:.0f}+/s{life}"
        parts.append(f"Storm of short-lived processes ({count}), {kind} overall")
    elif lt is not None and lt.group_size >= 4 and ch.batch:
        parts.append(f"Batch of {lt.group_size} {kind} processes started together, similar runtimes")
    else:
        parts.append(f"{kind[0].upper() + kind[1:]} workload of {c.procs_seen} process(es), {c.threads_seen} thread(s)")
    parts.append(f"uses {s.parallelism:.1f} CPUs on average, {s.runq_wait_pct:.0f}% of runnable time waiting")
    if ch.classification == "latency_sensitive" and s.mean_slice_ms is not None:
        parts.append(f"bursts of ~{s.mean_slice_ms * 1000:.0f} us, {s.vcs_per_s:.0f} voluntary switches/s")
    return "; ".join(parts) + f". Goal: {goal}."
