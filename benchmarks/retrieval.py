# SPDX-License-Identifier: Apache-2.0
"""Retrieval quality and latency of the policy repository (a benchmark, not a test).

    .venv/bin/python benchmarks/retrieval.py [--scale 10000] [--out docs/repository-benchmark.md]

Quality: natural-language queries written the way an agent states a need (a workload and a goal),
each with the policies a scheduler expert would accept in the top 3. For keyword-only (FTS5/BM25),
embedding-only (MiniLM cosine) and hybrid ranking it reports recall@3 (share of the acceptable
policies found in the top 3, out of at most 3) and MRR (reciprocal rank of the first acceptable
policy within the top 10). Expected names that are not in the catalog (the BPF library grows)
are dropped; a query left with none is skipped and listed.

Latency: end-to-end search (query embedding, FTS5, cosine over all candidates, explanation) with
`scale` synthetic generated policies in a temporary database.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from schedcp.repository.models import PolicyInput  # noqa: E402
from schedcp.repository.service import RepositoryService, policy_text  # noqa: E402

QUERIES: list[tuple[str, set[str]]] = [
    (
        "Workload: parallel kernel build with make -j on 2 CPUs. Goal: minimise makespan; a few very long "
        "link steps dominate the end.",
        {"ljf", "scx_rusty"},
    ),
    (
        "Many short compiler processes mixed with a couple of long-running ones; I want lower average completion time.",
        {"sjf"},
    ),
    (
        "The interactive desktop gets laggy while a background compile runs; keep UI threads responsive.",
        {"scx_bpfland", "latency", "scx_lavd"},
    ),
    ("Game frame times jitter whenever shader compilation runs in the background.", {"scx_lavd", "scx_bpfland"}),
    (
        "memcached server: p99 latency for small GET requests matters more than throughput.",
        {"latency", "sjf", "scx_flash"},
    ),
    ("Audio production with tight buffer deadlines, we must avoid xruns.", {"edf", "scx_flash", "latency"}),
    (
        "Container host where each tenant cgroup should get CPU in proportion to its cpu.weight.",
        {"scx_flatcg", "vtime"},
    ),
    ("Protect a postgres database from batch analytics jobs running on the same machine.", {"layered", "scx_layered"}),
    (
        "HPC MPI job that is sensitive to OS noise; turn timer ticks off on the compute cores.",
        {"scx_tickless", "scx_central", "central"},
    ),
    ("VM host running vCPU threads that should run undisturbed for long stretches.", {"central", "scx_central"}),
    (
        "Large multi-socket NUMA server running throughput batch jobs; balance load across LLC domains.",
        {"scx_rusty", "scx_p2dq"},
    ),
    ("Data-parallel compute with long-running worker threads that benefit from warm caches.", {"locality", "scx_nest"}),
    ("I need a simple baseline scheduler to compare other policies against.", {"fifo", "scx_simple"}),
    (
        "Fair sharing that respects nice values on a machine with mixed interactive and batch work.",
        {"vtime", "scx_simple"},
    ),
    ("Lightly loaded web server; keep the work on a few cores so they can turbo.", {"scx_nest", "scx_lavd"}),
    ("Laptop on battery: save power while keeping the desktop usable.", {"scx_lavd", "scx_flash"}),
    ("Map-reduce job where the stragglers decide when the whole batch finishes.", {"ljf"}),
    ("Soft real-time periodic tasks, each with its own deadline.", {"edf"}),
    ("Message passing benchmark like hackbench: lots of short wakeups through pipes.", {"scx_flash", "latency"}),
    ("Handheld gaming device like the Steam Deck: smooth play and good battery life.", {"scx_lavd"}),
    (
        "The operator knows the job classes and wants matching rules on cgroup and command name with a CPU "
        "budget per class.",
        {"scx_layered", "layered"},
    ),
    (
        "General purpose server with several last-level caches, mixed request serving and batch load.",
        {"scx_p2dq", "scx_rusty"},
    ),
    (
        "Throughput benchmark of identical independent jobs; the order they run in does not matter.",
        {"fifo", "scx_simple", "locality"},
    ),
    ("Request/response service where short requests wait behind CPU-bound background computation.", {"sjf", "latency"}),
    (
        "Consolidated server running several applications that each need a fixed share of the CPU.",
        {"layered", "scx_layered", "scx_flatcg"},
    ),
    (
        "Network-heavy box: per-CPU kernel threads handling interrupts should be prioritised.",
        {"scx_bpfland", "scx_rusty"},
    ),
    ("I want one housekeeping CPU to make all the scheduling decisions for the others.", {"central", "scx_central"}),
    ("Video playback and other multimedia should not stutter under load.", {"scx_bpfland", "scx_lavd", "edf"}),
    ("Batch of jobs with heavy-tailed sizes; minimise the total completion time of the batch.", {"ljf"}),
    ("Reduce average response time for the many short processes a build system spawns.", {"sjf"}),
    ("Cache-sensitive throughput: keep each task on the CPU where its data already is.", {"locality"}),
    (
        "Hybrid big/little laptop CPU; put latency-critical work on the performance cores.",
        {"scx_lavd", "scx_flash", "scx_bpfland"},
    ),
    (
        "Developer workstation compiling in the background while the IDE and terminal must stay snappy.",
        {"scx_bpfland", "latency", "scx_lavd"},
    ),
    ("Weighted fair sharing between users' cgroups without the overhead of a nested hierarchy.", {"scx_flatcg"}),
    (
        "Goal p99_latency. Workload: RPC server with bursty requests on a mostly idle machine.",
        {"latency", "scx_nest", "scx_flash"},
    ),
]

MODES = ("keyword", "embedding", "hybrid")


def evaluate(svc: RepositoryService) -> tuple[dict[str, dict[str, float]], list[dict], list[str]]:
    names = {row["name"] for row in svc.store.db.conn.execute("SELECT name FROM policies")}
    per_query, skipped = [], []
    for query, expected in QUERIES:
        relevant = expected & names
        if not relevant:
            skipped.append(query)
            continue
        entry: dict = {"query": query, "relevant": sorted(relevant)}
        for mode in MODES:
            ranked = [
                r["name"] for r in svc.search(query, k=10, mode=mode, status="any", budget_bytes=1_000_000)["results"]
            ]
            hits3 = len(relevant & set(ranked[:3]))
            first = next((i + 1 for i, n in enumerate(ranked) if n in relevant), None)
            entry[mode] = {
                "top3": ranked[:3],
                "recall3": hits3 / min(len(relevant), 3),
                "rr": 1.0 / first if first else 0.0,
            }
        per_query.append(entry)
    # The hybrid weights were chosen on the even-indexed queries ("tuning"); the odd-indexed half
    # was held out, so its numbers show what the tuning is worth on queries it never saw.
    splits = {"all": per_query, "tuning half": per_query[0::2], "held-out half": per_query[1::2]}
    summary = {
        split: {
            mode: {
                "recall@3": statistics.mean(q[mode]["recall3"] for q in items),
                "mrr": statistics.mean(q[mode]["rr"] for q in items),
            }
            for mode in MODES
        }
        for split, items in splits.items()
        if items
    }
    return summary, per_query, skipped


ARCHETYPES = [
    "weighted vtime",
    "global FIFO",
    "earliest deadline first",
    "round robin",
    "shortest job first",
    "longest job first",
    "per-CPU queues with stealing",
    "central dispatcher",
    "wakeup-rate boost",
    "cgroup weight sharing",
    "core packing",
    "tickless slices",
    "pick-two balancing",
    "layered shares",
]
WORKLOADS = [
    "kernel builds",
    "memcached",
    "postgres",
    "video encoding",
    "game rendering",
    "audio mixing",
    "map-reduce",
    "web serving",
    "CI runners",
    "ML data loading",
    "RPC fan-out",
    "log compaction",
    "container hosts",
    "VM hosts",
    "HPC solvers",
    "desktop sessions",
    "stream processing",
]
GOALS = [
    "lower p99 latency",
    "shorter makespan",
    "higher throughput",
    "stable frame times",
    "fairness",
    "lower power",
    "less jitter",
    "better cache locality",
]
TWISTS = [
    "with a short slice",
    "with aging",
    "with SMT awareness",
    "with NUMA awareness",
    "with a starvation guard",
    "with sleeper credit capped",
    "with idle CPU preference",
    "with dynamic slices",
    "with kthread priority",
]


def synthetic(count: int, distinct: int = 1000, seed: int = 7) -> list[PolicyInput]:
    """`count` generated policies built from `distinct` different descriptions.

    Names, kernels and sources differ per policy; descriptions repeat about count/distinct times,
    so the model only has to embed `distinct` texts (identical text, identical vector) while search
    still scores every one of the `count` rows.
    """
    rng = random.Random(seed)
    variants = []
    for _ in range(distinct):
        arch, twist, goal = rng.choice(ARCHETYPES), rng.choice(TWISTS), rng.choice(GOALS)
        variants.append((arch, twist, rng.sample(WORKLOADS, 2), goal))
    out = []
    for i in range(count):
        arch, twist, loads, goal = variants[i % distinct]
        out.append(
            PolicyInput(
                name=f"syn_{i:05d}",
                kind="generated",
                title=f"{arch} {twist}"[:120],
                description=f"Generated variant: {arch} {twist}, tuned for {loads[0]} and {loads[1]} "
                f"where the goal is {goal}.",
                workloads=loads,
                tags=[arch.split()[0].lower(), goal.split()[-1]],
                min_kernel=rng.choice(["6.12", "6.13", "6.19", "7.1"]),
                source=f"/* synthetic {i} */\nconst volatile u64 slice_us = {rng.randint(100, 20000)};\n",
            )
        )
    return out


def latency(scale: int, queries: int = 200) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        svc = RepositoryService(Path(tmp) / "scale.db")  # seeds the real catalog first
        policies = synthetic(scale)
        t0 = time.perf_counter()
        texts = sorted({policy_text(p) for p in policies})
        by_text = dict(zip(texts, svc.embed(texts), strict=True))
        vectors = [by_text[policy_text(p)] for p in policies]
        embed_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for p, vec in zip(policies, vectors, strict=True):
            svc.store.insert_policy(p, origin="benchmark", actor="benchmark", reason="synthetic", embedding=vec)
        insert_s = time.perf_counter() - t0
        total = svc.store.count("policies")
        distinct = len(texts)
        texts = [q for q, _ in QUERIES]
        t0 = time.perf_counter()
        svc.search(texts[0], k=5)  # first query loads the embedding matrix into the cache
        cold_ms = (time.perf_counter() - t0) * 1000
        timings = {"hybrid": [], "keyword": []}
        for mode in timings:
            for i in range(queries):
                t0 = time.perf_counter()
                svc.search(texts[i % len(texts)], k=5, mode=mode, kernel="7.0")
                timings[mode].append((time.perf_counter() - t0) * 1000)
        db_bytes = (Path(tmp) / "scale.db").stat().st_size
        load = " / ".join(f"{x:.1f}" for x in os.getloadavg())
        svc.close()

    def pct(values: list[float], q: float) -> float:
        ordered = sorted(values)
        return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]

    return {
        "policies": total,
        "distinct_texts": distinct,
        "queries": queries,
        "embed_s": embed_s,
        "insert_s": insert_s,
        "cold_ms": cold_ms,
        "db_mib": db_bytes / (1 << 20),
        "load": load,
        **{f"{mode}_p50_ms": pct(v, 0.50) for mode, v in timings.items()},
        **{f"{mode}_p99_ms": pct(v, 0.99) for mode, v in timings.items()},
    }


def report(summary: dict, per_query: list[dict], skipped: list[str], lat: dict, catalog: int) -> str:
    lines = [
        "# Policy repository: retrieval benchmark",
        "",
        "Produced by `benchmarks/retrieval.py` (run it to regenerate this file). Queries are written the way",
        "an agent states a need; each lists the policies an expert would accept in the top 3. The catalog is",
        f"whatever `schedcp repo seed` installs at run time ({catalog} policies: our BPF library and the",
        "upstream scx catalog).",
        "",
        f"Host: {platform.machine()}, Python {platform.python_version()}, "
        f"{len(per_query)} queries evaluated, {len(skipped)} skipped.",
        "",
        "## Quality",
        "",
        "| queries | ranking | recall@3 | MRR |",
        "| --- | --- | --- | --- |",
    ]
    sizes = {"all": len(per_query), "tuning half": len(per_query[0::2]), "held-out half": len(per_query[1::2])}
    for split, modes in summary.items():
        for mode in MODES:
            lines.append(
                f"| {split} ({sizes[split]}) | {mode} | {modes[mode]['recall@3']:.3f} | {modes[mode]['mrr']:.3f} |"
            )
    lines += [
        "",
        "recall@3: share of a query's acceptable policies found in the top 3 (out of at most 3), averaged.",
        "MRR: mean reciprocal rank of the first acceptable policy within the top 10 (0 when absent).",
        "keyword = FTS5 BM25 with field weights over stop-word-filtered terms; embedding = cosine of",
        "all-MiniLM-L6-v2 vectors (numpy forward pass); hybrid = 0.6 x keyword + 0.4 x cosine, each divided",
        "by the best candidate's value for that query.",
        "",
        "How the hybrid was tuned: four ways of normalising the cosine (min-max, divide by max, above-median,",
        "z-score) and cosine weights 0.2-0.6 were compared on the tuning half only; dividing by the max with",
        "weight 0.4 was best there and stable across weights. The held-out half was not looked at while",
        "choosing. No query-specific rules, synonyms or boosts exist; the column weights (name 4, title 3,",
        "workloads 2.5, tags 2, description 1.5, tunables 0.6, code 0.15) were set before the benchmark existed.",
        "Keyword scores are divided by max(best bm25, 5): when the best keyword match is one incidental word,",
        "keywords do not get their full weight. That floor came from a hand-written query outside this set",
        '("my Steam Deck stutters"-style requests) and did not change the tuning-half numbers when it was chosen.',
        "",
        f"## Latency at {lat['policies']:,} stored policies",
        "",
        "| search | p50 | p99 |",
        "| --- | --- | --- |",
        f"| hybrid (embed query + BM25 + cosine + explain) | {lat['hybrid_p50_ms']:.1f} ms "
        f"| {lat['hybrid_p99_ms']:.1f} ms |",
        f"| keyword only | {lat['keyword_p50_ms']:.1f} ms | {lat['keyword_p99_ms']:.1f} ms |",
        "",
        f"{lat['queries']} queries per mode (the {len(QUERIES)} benchmark queries in turn) with a kernel filter,"
        f" after one cold query ({lat['cold_ms']:.0f} ms, loads the embedding snapshot). The synthetic"
        f" policies share {lat['distinct_texts']:,} distinct descriptions (embedding those took"
        f" {lat['embed_s']:.0f} s); inserting them one transaction each took {lat['insert_s']:.0f} s and"
        f" the database is {lat['db_mib']:.0f} MiB. Every search scores all rows that pass the filters."
        f" Load average during the run: {lat['load']}. The machine is shared (2 cores, other engineers'"
        " VMs and compilers), so treat the numbers as an upper bound.",
        "",
        "## Per query (top 3)",
        "",
        "| query | acceptable | keyword | embedding | hybrid |",
        "| --- | --- | --- | --- | --- |",
    ]
    for q in per_query:

        def cell(mode: str, entry: dict = q) -> str:
            return ", ".join(f"**{n}**" if n in entry["relevant"] else n for n in entry[mode]["top3"])

        lines.append(
            f"| {q['query'][:90]} | {', '.join(q['relevant'])} | {cell('keyword')} | "
            f"{cell('embedding')} | {cell('hybrid')} |"
        )
    if skipped:
        lines += ["", "Skipped (no expected policy in the catalog): " + "; ".join(skipped)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=int, default=10_000, help="synthetic policies for the latency run")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "repository-benchmark.md")
    parser.add_argument("--quality-only", action="store_true", help="skip the latency run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        svc = RepositoryService(Path(tmp) / "quality.db")
        catalog = svc.store.count("policies")
        summary, per_query, skipped = evaluate(svc)
        svc.close()
    print(json.dumps(summary, indent=2))
    if args.quality_only:
        return
    lat = latency(args.scale)
    print(json.dumps(lat, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report(summary, per_query, skipped, lat, catalog))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
