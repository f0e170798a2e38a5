# SPDX-License-Identifier: Apache-2.0
"""The benchmark registry: which guest workload each benchmark runs, with which arguments, what it
measures, which policies it is compared with by default, and the published target it chases.

Default arguments are sized for the micro-VM (2 vCPUs under TCG, roughly 30 times slower than a
host core for Python and gcc): each run takes 5-20 s, so a complete comparison of every benchmark
fits in about 25 minutes. ``smoke`` arguments make a run take a second or two, for tests.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from schedcp.bench.stats import Direction
from schedcp.errors import UsageError


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    direction: Direction
    primary: bool = False


@dataclass(frozen=True)
class Target:
    """A goal for the best policy: improvement factor on `metric` >= `at_least` (see stats.improvement)."""

    metric: str
    at_least: float
    source: str  # where the goal comes from


@dataclass(frozen=True)
class Benchmark:
    name: str
    module: str  # file in src/schedcp/bench/guest without .py
    title: str
    description: str
    args: tuple[str, ...]
    smoke_args: tuple[str, ...]
    metrics: tuple[Metric, ...]
    policies: tuple[str, ...]
    image_variant: str = "default"
    timeout_s: float = 300.0
    seed_option: str | None = None  # the workload's option for a per-round seed (paired rounds)
    targets: tuple[Target, ...] = field(default_factory=tuple)
    configs: dict[str, dict[str, str]] = field(default_factory=dict)  # default tunables per policy
    rationale: str = ""  # why a policy can win here (mechanism, not results: the page is regenerated)

    def metric(self, key: str) -> Metric:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(key)

    @property
    def primary(self) -> list[Metric]:
        return [m for m in self.metrics if m.primary]


BENCHMARKS: dict[str, Benchmark] = {}


def _register(bench: Benchmark) -> None:
    BENCHMARKS[bench.name] = bench


_register(
    Benchmark(
        name="batch",
        module="batch",
        title="Long-tail batch (39 short + 1 long per kind)",
        description="Five kinds of job (zlib, hashing, sorting, log aggregation, matrix chain), each run as 40 "
        "processes released together, one with 25x the work of the others and indistinguishable "
        "from outside. Metric: end-to-end time (sum of the per-kind makespans).",
        args=("--scale", "0.5"),
        smoke_args=("--scale", "0.02", "--tasks", "8", "--kinds", "zlib,matrix"),
        metrics=(
            Metric("makespan_s", "makespan", "s", "lower", primary=True),
            Metric("mean_completion_s", "mean completion", "s", "lower"),
            *(
                Metric(f"makespan_{k}_s", f"makespan {k}", "s", "lower")
                for k in ("zlib", "hash", "sort", "logs", "matrix")
            ),
        ),
        policies=("ljf_batch", "ljf", "fifo"),
        seed_option="--seed",
        rationale=(
            "Why a policy can win: with S the short jobs' total work, L the long job and 2 CPUs, fair sharing "
            "gives every job the same rate, so the long job has done almost nothing when the short ones finish "
            "(at about S/2) and then runs alone: makespan ≈ S/2 + L. The lower bound is max(L, (S + L)/2). No "
            "policy can tell the long job apart before it has run longer than a short one, so a policy that runs "
            "jobs to completion in order of attained CPU time (`ljf_batch`) finds it after, on average, half the "
            "short jobs; it also switches far less often than fair sharing, which saves CPU time per job. `ljf` "
            "(the library's longest-job-first with 100 ms aging) and `fifo` (round robin, 5 ms slices) are the "
            "comparison points: their aging and slicing make them time-share again."
        ),
        targets=(Target("makespan_s", 1.25, "paper: ~20% lower end-to-end time with longest-job-first"),),
    )
)

_register(
    Benchmark(
        name="wakelat",
        module="wakelat",
        title="Wakeup latency (schbench-style)",
        description="2 messenger processes each wake 4 worker processes through pipes every round; each "
        "request is a chain of SHA-256 (about 1 ms under TCG). Latency from the send to the worker "
        "running (wakeup) and to the reply (request), and requests per second.",
        args=("--seconds", "6"),
        smoke_args=("--seconds", "1", "--warmup", "0.2"),
        metrics=(
            Metric("wake_p99_us", "wakeup p99", "us", "lower", primary=True),
            Metric("rps", "throughput", "req/s", "higher", primary=True),
            Metric("request_p99_us", "request p99", "us", "lower", primary=True),
            Metric("wake_p50_us", "wakeup p50", "us", "lower"),
            Metric("wake_p999_us", "wakeup p99.9", "us", "lower"),
            Metric("request_p50_us", "request p50", "us", "lower"),
        ),
        policies=("wakeboost@handoff", "wakeboost", "fifo"),
        configs={"wakeboost@handoff": {"handoff": "true"}},
        rationale=(
            "Why a policy can win: a messenger writes its requests one after another, and under fair sharing a "
            "worker it woke waits for the CPU behind the messenger and behind every worker woken before it; each "
            "request costs about the same, so first come, first served is the order with the shortest worst wait,"
            " and preempting a worker mid-request only delays everyone behind it (`wakeboost`, `fifo`). "
            "`wakeboost@handoff` goes further: when no CPU is idle, a worker woken by a messenger takes the "
            "messenger's CPU at once, and the messenger queues behind every woken worker, so it hands out its "
            "next request exactly when a CPU can start it. The waiting moves from the requests to the messenger, "
            "which is not measured as latency but does bound throughput, so requests per second is the check that"
            " no work was lost; each hand-off costs two extra context switches, which is why it is a tunable, off"
            " by default (it slows hackbench)."
        ),
        targets=(
            Target("wake_p99_us", 2.0, "paper: schbench p99 latency 2.11x better"),
            Target("rps", 0.97, "no throughput loss (paper: 1.60x higher)"),
        ),
    )
)

_register(
    Benchmark(
        name="build",
        module="build",
        title="Parallel C build (make -j4, gcc -O2)",
        description="A generated C project of 32 modules with header dependencies and 2 heavy translation "
        "units, built from scratch with make -j4 and gcc 14 at -O2, then linked and run; the program's "
        "checksum is verified. Metric: wall time of make.",
        args=("--files", "32", "--heavy", "2", "--jobs", "4"),
        smoke_args=("--files", "4", "--heavy", "0", "--jobs", "2"),
        metrics=(
            Metric("build_s", "build time", "s", "lower", primary=True),
            Metric("compile_cpu_s", "compiler CPU time", "s", "lower"),
        ),
        policies=("ljf_batch", "fifo", "vtime"),
        image_variant="build",
        rationale=(
            "Why a policy can win: with make -j4 on 2 CPUs, four compilers are runnable at once; fair sharing "
            "switches between them every few milliseconds, and each switch costs cache (and, in this emulator, "
            "software-TLB) refills. Running each compiler to completion while make itself, a light task, still "
            "gets a CPU at once to start the next job keeps both CPUs busy with fewer switches. The critical "
            "path (the heavy units and the final link) is not something a scheduler can shorten."
        ),
        timeout_s=600.0,
        targets=(Target("build_s", 1.0, "paper: kernel build 1.79x faster"),),
    )
)

_register(
    Benchmark(
        name="hackbench",
        module="hackbench",
        title="hackbench (pipes, 2 groups x 5 senders x 5 receivers)",
        description="Groups of sender and receiver processes exchange 100-byte messages over pipes; every "
        "message is checked. Metric: time for all messages.",
        args=("--groups", "2", "--fds", "5", "--loops", "1000"),
        smoke_args=("--groups", "1", "--fds", "2", "--loops", "20"),
        metrics=(
            Metric("time_s", "time", "s", "lower", primary=True),
            Metric("msgs_per_s", "messages/s", "msg/s", "higher"),
        ),
        policies=("wakeboost", "fifo", "vtime"),
        rationale=(
            "Why a policy can win or lose: every message wakes a receiver and may block a sender, so the run is "
            "a storm of very short bursts. Cheap wakeups (an idle CPU taken directly, no preemption between "
            "peers) help; batching a sender's writes before the receiver runs helps throughput more than "
            "prompt wakeups do."
        ),
    )
)

_register(
    Benchmark(
        name="interactive",
        module="interactive",
        title="Interactive task among CPU hogs",
        description="4 CPU-bound hog processes plus an interactive process that sleeps 5 ms, works briefly and "
        "measures how late it woke. Metrics: the interactive p99 lateness and batch throughput.",
        args=("--seconds", "5", "--hogs", "4"),
        smoke_args=("--seconds", "1", "--hogs", "2"),
        metrics=(
            Metric("late_p99_us", "interactive p99 lateness", "us", "lower", primary=True),
            Metric("batch_chunks_per_s", "batch throughput", "chunks/s", "higher", primary=True),
            Metric("late_p50_us", "interactive p50 lateness", "us", "lower"),
            Metric("late_max_us", "interactive max lateness", "us", "lower"),
        ),
        policies=("wakeboost", "latency", "vtime"),
        rationale=(
            "Why a policy can win: the interactive task needs about a millisecond of CPU every 5 ms; the hogs "
            "would take all of it. Its lateness is the time until a CPU is freed for it, so a policy that "
            "recognises the short-burst task and cuts a hog's slice the moment it wakes keeps lateness near one "
            "context switch, at a small cost in batch throughput (the extra switches)."
        ),
    )
)


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {name!r}", f"choose one of {', '.join(BENCHMARKS)} or all")
    return BENCHMARKS[name]


def select(names: list[str]) -> list[Benchmark]:
    """Benchmarks by name; "all" expands to every registered one, in registry order."""
    if not names or "all" in names:
        return list(BENCHMARKS.values())
    return [get(n) for n in dict.fromkeys(names)]
