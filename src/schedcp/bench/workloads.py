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


_register(Benchmark(
    name="batch",
    module="batch",
    title="Long-tail batch (39 short + 1 long per kind)",
    description="Five kinds of job (zlib, hashing, sorting, log aggregation, matrix chain), each run as 40 "
                "processes released together, one with 25x the work of the others and indistinguishable "
                "from outside. Metric: end-to-end time (sum of the per-kind makespans).",
    args=("--scale", "0.25"),
    smoke_args=("--scale", "0.02", "--tasks", "8", "--kinds", "zlib,matrix"),
    metrics=(
        Metric("makespan_s", "makespan", "s", "lower", primary=True),
        Metric("mean_completion_s", "mean completion", "s", "lower"),
        *(Metric(f"makespan_{k}_s", f"makespan {k}", "s", "lower")
          for k in ("zlib", "hash", "sort", "logs", "matrix")),
    ),
    policies=("ljf_batch", "ljf", "fifo"),
    seed_option="--seed",
    targets=(Target("makespan_s", 1.25, "paper: ~20% lower end-to-end time with longest-job-first"),),
))

_register(Benchmark(
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
    policies=("wakeboost", "latency", "fifo"),
    targets=(
        Target("wake_p99_us", 2.0, "paper: schbench p99 latency 2.11x better"),
        Target("rps", 0.97, "no throughput loss (paper: 1.60x higher)"),
    ),
))

_register(Benchmark(
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
    timeout_s=600.0,
    targets=(Target("build_s", 1.0, "paper: kernel build 1.79x faster"),),
))

_register(Benchmark(
    name="hackbench",
    module="hackbench",
    title="hackbench (pipes, 2 groups x 5 senders x 5 receivers)",
    description="Groups of sender and receiver processes exchange 100-byte messages over pipes; every "
                "message is checked. Metric: time for all messages.",
    args=("--groups", "2", "--fds", "5", "--loops", "300"),
    smoke_args=("--groups", "1", "--fds", "2", "--loops", "20"),
    metrics=(
        Metric("time_s", "time", "s", "lower", primary=True),
        Metric("msgs_per_s", "messages/s", "msg/s", "higher"),
    ),
    policies=("wakeboost", "fifo", "vtime"),
))

_register(Benchmark(
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
))


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {name!r}", f"choose one of {', '.join(BENCHMARKS)} or all")
    return BENCHMARKS[name]


def select(names: list[str]) -> list[Benchmark]:
    """Benchmarks by name; "all" expands to every registered one, in registry order."""
    if not names or "all" in names:
        return list(BENCHMARKS.values())
    return [get(n) for n in dict.fromkeys(names)]
