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
    kind: str = ""  # what it measures, for comparing policies across benchmarks: see KINDS
    tool: str | None = None  # the real third-party tool it runs (None: our own workload)
    packages: tuple[str, ...] = ()  # Debian stable packages the guest needs (testbed/extras.py)
    sources: tuple[str, ...] = ()  # Debian source packages unpacked into the guest at /work/src/NAME
    in_suite: bool = True  # part of `all` (our re-creations of tools that exist for real are not)

    def metric(self, key: str) -> Metric:
        for m in self.metrics:
            if m.key == key:
                return m
        raise KeyError(key)

    @property
    def primary(self) -> list[Metric]:
        return [m for m in self.metrics if m.primary]


BENCHMARKS: dict[str, Benchmark] = {}
KINDS = ("wakeup latency", "throughput", "makespan")
# Beside every ratio (the harness also counts each run's context switches): under emulation a
# switch costs far more than on hardware, and CPU time shows work a policy saved or added.
CPU = Metric("cpu_s", "CPU time used", "s", "lower")


def _register(bench: Benchmark) -> None:
    BENCHMARKS[bench.name] = bench


_register(
    Benchmark(
        name="batch",
        module="batch",
        kind="makespan",
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
        kind="wakeup latency",
        in_suite=False,  # our re-creation; the suite runs the real tool
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
        name="build-gen",
        module="build",
        kind="makespan",
        in_suite=False,  # our re-creation; the suite runs the real tool
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
        kind="throughput",
        in_suite=False,  # our re-creation; the suite runs the real tool
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
        kind="wakeup latency",
        in_suite=False,  # our re-creation; the suite runs the real tool
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


# -- benchmarks on real tools (Debian stable packages, run by schedcp_workloads.realtool) ----------
LATENCY_POLICIES = ("wakeboost@handoff", "wakeboost", "fifo")
THROUGHPUT_POLICIES = ("wakeboost", "fifo", "vtime")
PERF = ("linux-perf",)
RT = ("rt-tests",)


def _real(
    name: str,
    tool: str,
    scenario: tuple[str, ...],
    smoke: tuple[str, ...],
    metrics: tuple[Metric, ...],
    *,
    kind: str,
    packages: tuple[str, ...],
    title: str,
    description: str,
    policies: tuple[str, ...] = THROUGHPUT_POLICIES,
    rationale: str = "",
    **more,
) -> None:
    _register(
        Benchmark(
            name=name,
            module="realtool",
            title=title,
            description=description,
            args=scenario,
            smoke_args=smoke,
            metrics=(*metrics, CPU),
            policies=policies,
            kind=kind,
            tool=tool,
            packages=packages,
            rationale=rationale,
            configs={"wakeboost@handoff": {"handoff": "true"}} if "wakeboost@handoff" in policies else {},
            **more,
        )
    )


_real(
    "rt-hackbench",
    "hackbench (rt-tests)",
    ("hackbench", "--", "-g", "4", "-f", "10", "-l", "200"),
    ("hackbench", "--", "-g", "1", "-f", "4", "-l", "20"),
    (Metric("time_s", "time", "s", "lower", primary=True),),
    kind="throughput",
    packages=RT,
    title="hackbench (rt-tests): 4 groups of 10 senders x 10 receivers, processes and sockets",
    description="rt-tests' hackbench: groups of sender and receiver processes exchange 100-byte messages "
    "over socket pairs, 200 loops. Metric: hackbench's own time for all messages.",
    rationale="Every message wakes a receiver and may block a sender: a storm of very short bursts. "
    "Cheap wakeups and fewer preemptions between peers help; batching a sender's writes before its "
    "receivers run (fewer switches) helps more than prompt wakeups.",
)
_real(
    "perf-messaging",
    "perf bench sched messaging (linux-perf)",
    ("perf", "--", "bench", "sched", "messaging", "-t", "-g", "4", "-l", "100"),
    ("perf", "--", "bench", "sched", "messaging", "-t", "-g", "1", "-l", "10"),
    (Metric("time_s", "time", "s", "lower", primary=True),),
    kind="throughput",
    packages=PERF,
    title="perf bench sched messaging: 4 groups, threads",
    description="perf's port of hackbench with threads instead of processes (-t), 4 groups of 20 sender "
    "and receiver threads over socket pairs, 100 loops. Metric: perf's total time.",
    rationale="The same message storm as hackbench between threads of one process: no address-space "
    "change on a switch, so what a policy saves in switches is worth less here than under hackbench.",
)
_real(
    "perf-pipe",
    "perf bench sched pipe (linux-perf)",
    ("perf", "--", "bench", "sched", "pipe", "-l", "50000"),
    ("perf", "--", "bench", "sched", "pipe", "-l", "2000"),
    (
        Metric("op_latency_us", "round trip", "us", "lower", primary=True),
        Metric("ops_per_s", "round trips/s", "ops/s", "higher"),
    ),
    kind="wakeup latency",
    packages=PERF,
    policies=LATENCY_POLICIES,
    title="perf bench sched pipe: two processes ping-pong over pipes",
    description="perf bench sched pipe: two processes pass a token back and forth through a pair of "
    "pipes 50,000 times; each round trip is two wakeups. Metric: microseconds per round trip.",
    rationale="A pure wakeup-latency chain: the waker blocks right after waking its partner. Running the "
    "woken task on the waker's CPU (or at once on an idle one) is all that matters; a hand-off that "
    "puts the wakee on the waker's CPU fits this pattern exactly.",
)
_real(
    "cyclictest",
    "cyclictest (rt-tests) beside stress-ng CPU hogs",
    ("cyclictest", "--hogs", "2", "--", "-t", "2", "-i", "1000", "-D", "6"),
    ("cyclictest", "--hogs", "1", "--", "-t", "1", "-i", "2000", "-D", "1"),
    (
        Metric("wake_p99_us", "wakeup p99", "us", "lower", primary=True),
        Metric("hog_bogo_ops_per_s", "hog throughput", "bogo ops/s", "higher", primary=True),
        Metric("wake_p50_us", "wakeup p50", "us", "lower"),
        Metric("wake_p999_us", "wakeup p99.9", "us", "lower"),
        Metric("wake_max_us", "wakeup max", "us", "lower"),
    ),
    kind="wakeup latency",
    packages=(*RT, "stress-ng"),
    policies=LATENCY_POLICIES,
    title="cyclictest: timer wakeup latency beside 2 CPU hogs",
    description="rt-tests' cyclictest: 2 normal-priority (SCHED_OTHER, so the policy schedules them) "
    "threads sleep 1 ms and measure how late they wake, for 6 s, while 2 stress-ng CPU hogs keep both "
    "vCPUs busy. Metrics: wakeup latency percentiles from cyclictest's histogram, and the hogs' "
    "throughput (stress-ng's bogo ops/s), so latency bought with lost work shows.",
    rationale="A woken timer thread finds both CPUs busy with hogs: its latency is how soon a policy "
    "preempts a hog (or how short the hogs' slices are). Preempting sooner costs the hogs switches.",
)
_real(
    "stress-cpu",
    "stress-ng --cpu",
    ("stress-ng", "--", "--cpu", "4", "--cpu-method", "int64", "--timeout", "6s", "--metrics-brief"),
    ("stress-ng", "--", "--cpu", "2", "--cpu-method", "int64", "--timeout", "1s", "--metrics-brief"),
    (Metric("bogo_ops_per_s", "throughput", "bogo ops/s", "higher", primary=True),),
    kind="throughput",
    packages=("stress-ng",),
    title="stress-ng --cpu 4: oversubscribed CPU throughput",
    description="stress-ng's CPU stressor, 4 workers on 2 vCPUs for 6 s (int64 arithmetic method). "
    "Metric: stress-ng's bogo operations per second of real time.",
    rationale="Pure CPU-bound work with twice as many workers as CPUs: the only thing a scheduler can "
    "change is how often it switches between them (longer slices, fewer switches, more work done).",
)
_real(
    "stress-switch",
    "stress-ng --switch",
    ("stress-ng", "--", "--switch", "4", "--timeout", "6s", "--metrics-brief"),
    ("stress-ng", "--", "--switch", "1", "--timeout", "1s", "--metrics-brief"),
    (Metric("bogo_ops_per_s", "switch rate", "bogo ops/s", "higher", primary=True),),
    kind="throughput",
    packages=("stress-ng",),
    title="stress-ng --switch 4: context-switch throughput",
    description="stress-ng's switch stressor: 4 pairs of processes force context switches by passing "
    "messages through pipes, for 6 s. Metric: stress-ng's bogo ops/s (switch round trips).",
    rationale="The policy's own switch path is the workload: direct dispatch to the waker's or an idle "
    "CPU and a short queue decide the rate.",
)
_real(
    "sysbench-threads",
    "sysbench threads",
    ("sysbench", "--", "threads", "--threads=8", "--time=6", "run"),
    ("sysbench", "--", "threads", "--threads=2", "--time=1", "run"),
    (
        Metric("events_per_s", "throughput", "events/s", "higher", primary=True),
        Metric("lat_p95_ms", "latency p95", "ms", "lower", primary=True),
        Metric("lat_avg_ms", "latency avg", "ms", "lower"),
    ),
    kind="throughput",
    packages=("sysbench",),
    title="sysbench threads: 8 threads yielding around shared mutexes",
    description="sysbench's thread scheduler benchmark: 8 threads repeatedly lock a mutex, yield and "
    "unlock, for 6 s. Metrics: events per second and the 95th percentile event latency.",
    rationale="sched_yield-heavy: what a policy does when a task yields (requeue behind the others or "
    "run it again) decides both throughput and latency.",
)
_real(
    "sysbench-cpu",
    "sysbench cpu",
    ("sysbench", "--", "cpu", "--threads=4", "--time=6", "run"),
    ("sysbench", "--", "cpu", "--threads=2", "--time=1", "run"),
    (
        Metric("events_per_s", "throughput", "events/s", "higher", primary=True),
        Metric("lat_p95_ms", "latency p95", "ms", "lower", primary=True),
    ),
    kind="throughput",
    packages=("sysbench",),
    title="sysbench cpu: 4 threads computing primes on 2 vCPUs",
    description="sysbench's CPU benchmark: 4 threads compute primes (each event is one short "
    "calculation), for 6 s on 2 vCPUs. Metrics: events per second and the 95th percentile event "
    "latency, which grows when a thread waits for a CPU mid-event.",
    rationale="Oversubscribed short CPU events: long slices raise throughput (fewer switches) and the "
    "latency of the events that wait a whole slice; round robin with short slices does the opposite.",
)
_register(
    Benchmark(
        name="build",
        module="realtool",
        title="Parallel build of Lua 5.4 (Debian's source, make -j4, gcc -O2)",
        description="The Lua 5.4 interpreter and compiler from Debian stable's source package, built "
        "from a fresh copy of the tree with its own Makefile (`make -j4 posix`: 33 C files, gcc 14 at "
        "-O2, a static library and two programs), then the built `lua` must run. The paper's kernel build "
        "scaled to what emulation allows. Metric: wall time of make.",
        args=("build", "--source", "/work/src/lua5.4", "--jobs", "4", "--program", "src/lua", "--", "posix"),
        # Smoke: two of the real translation units (the whole build takes minutes under emulation).
        smoke_args=("build", "--source", "/work/src/lua5.4", "--jobs", "2", "--", "-C", "src", "lzio.o", "lctype.o"),
        metrics=(Metric("build_s", "build time", "s", "lower", primary=True), CPU),
        policies=("ljf_batch", "fifo", "vtime"),
        image_variant="build",
        kind="makespan",
        tool="make + gcc (Debian)",
        packages=("linux-libc-dev",),  # the kernel headers glibc's <errno.h> includes
        sources=("lua5.4",),
        timeout_s=900.0,
        rationale=(
            "Why a policy can win: with make -j4 on 2 CPUs, four compilers are runnable at once; fair sharing "
            "switches between them every few milliseconds, and each switch costs cache (and, in this emulator, "
            "software-TLB) refills. Running each compiler to completion while make itself, a light task, still "
            "gets a CPU at once to start the next job keeps both CPUs busy with fewer switches. The critical "
            "path (the largest files and the final links) is not something a scheduler can shorten."
        ),
        targets=(Target("build_s", 1.0, "paper: kernel build 1.79x faster"),),
    )
)


def get(name: str) -> Benchmark:
    if name not in BENCHMARKS:
        raise UsageError(f"unknown benchmark {name!r}", f"choose one of {', '.join(BENCHMARKS)} or all")
    return BENCHMARKS[name]


def select(names: list[str]) -> list[Benchmark]:
    """Benchmarks by name; "all" expands to every registered one, in registry order."""
    if not names or "all" in names:
        return [b for b in BENCHMARKS.values() if b.in_suite]
    return [get(n) for n in dict.fromkeys(names)]
