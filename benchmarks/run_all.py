# SPDX-License-Identifier: Apache-2.0
"""Regenerate docs/benchmarks.md: every scheduler benchmark against EEVDF in one micro-VM boot.

    .venv/bin/python benchmarks/run_all.py            # all benchmarks, 5 runs per arm (an hour or more here)
    .venv/bin/python benchmarks/run_all.py --runs 3 --only perf-pipe,cyclictest --merge

Writes docs/benchmarks.md, docs/img/bench-*.png, docs/img/bench-overview.png and the raw results in
benchmarks/results/latest.json. Progress goes to stderr. The same run is available as
`schedcp bench all --runs 5 --write-docs`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from schedcp.bench import report, suite, workloads
from schedcp.errors import SchedcpError

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "latest.json"


def merge_results(old: dict, new: dict) -> dict:
    """`old` with the benchmarks in `new` replaced (or added), in registry order."""
    fresh = {r["benchmark"]: r for r in new["benchmarks"]}
    merged = [fresh.pop(r["benchmark"], r) for r in old.get("benchmarks", [])] + list(fresh.values())
    order = list(workloads.BENCHMARKS)
    merged.sort(key=lambda r: order.index(r["benchmark"]) if r["benchmark"] in order else len(order))
    return {
        **new,
        "started": min(old.get("started", new["started"]), new["started"]),
        "benchmarks": merged,
        "merged": True,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5, help="measured runs per policy and benchmark")
    ap.add_argument("--only", default="all", help="comma-separated benchmarks (default: all)")
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--kernel", default="unstable")
    ap.add_argument(
        "--host-nice",
        type=int,
        default=-19,
        help="host priority of the VM's threads (shields it from other load on a shared host)",
    )
    ap.add_argument(
        "--max-steal",
        type=float,
        default=0.2,
        help="repeat a run (twice at most) when the host held the vCPUs back more than this",
    )
    ap.add_argument(
        "--merge",
        action="store_true",
        help="replace only the benchmarks run now in benchmarks/results/latest.json, keep the others",
    )
    ap.add_argument(
        "--from-json",
        type=Path,
        default=None,
        help="re-render the page from saved results (e.g. benchmarks/results/latest.json); runs nothing",
    )
    args = ap.parse_args(argv)
    benches = workloads.select([n.strip() for n in args.only.split(",") if n.strip()])
    command = "python benchmarks/run_all.py" + (f" --runs {args.runs}" if args.runs != 5 else "")
    if args.only != "all":
        command += f" --only {args.only}"
    t0 = time.monotonic()

    def say(message: str) -> None:
        print(f"[{time.monotonic() - t0:7.1f}s] {message}", file=sys.stderr, flush=True)

    if args.from_json is not None:
        doc = json.loads(args.from_json.read_text())
        for key, path in report.write_docs(doc, REPO, " ".join(doc.get("command", [command]))).items():
            say(f"wrote {key}: {path.relative_to(REPO)}")
        return 0
    try:
        doc = suite.run_suite(
            benches,
            policies=None,
            configs={},
            runs=args.runs,
            cpus=args.cpus,
            kernel_spec=args.kernel,
            host_nice=args.host_nice,
            max_steal=args.max_steal,
            say=say,
            command=command.split(),
        )
    except SchedcpError as exc:
        print(f"error: {exc.cause}\nnext: {exc.next_step}", file=sys.stderr)
        return 1
    if args.merge:
        doc = merge_results(json.loads(RESULTS.read_text()), doc)
        command = "python benchmarks/run_all.py"
        doc["command"] = command.split()  # the page's regenerate command is the full run
    written = report.write_docs(doc, REPO, command)
    for key, path in written.items():
        say(f"wrote {key}: {path.relative_to(REPO)}")
    for result in doc["benchmarks"]:
        line = report.evaluation_line(result) if "summary" in result else f"FAILED: {result.get('error')}"
        say(f"{result['benchmark']}: {line}")
    return 0 if all("summary" in r for r in doc["benchmarks"]) else 1


if __name__ == "__main__":
    sys.exit(main())
