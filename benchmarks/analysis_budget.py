# SPDX-License-Identifier: Apache-2.0
"""Bytes per tier for representative workloads, and probe overhead on a CPU-bound pool.

.venv/bin/python benchmarks/analysis_budget.py
"""

from __future__ import annotations

import statistics
import sys
import time

from schedcp.analysis import budget, probes
from schedcp.analysis.engine import Engine

PY = sys.executable
WORKLOADS = {
    "longtail": ["longtail"],
    "cpupool": ["cpupool", "--workers", "4", "--work-ms", "300"],
    "pingpong": ["pingpong", "--seconds", "1.5"],
    "forkstorm": ["forkstorm", "--seconds", "1.5"],
}


def main() -> None:
    eng = Engine()
    print("| workload | summary B | profile B | full B | probe B |")
    for name, args in WORKLOADS.items():
        raw = eng.observe_command([PY, "-m", "schedcp.bench.guest." + args[0], *args[1:]], duration_s=60)
        sizes = [budget.size(eng.render(raw, d)) for d in ("summary", "profile", "full")]
        pb = budget.size(probes.run_probe(["runqlat"], 0.5, backend="tracefs"))
        print(f"| {name} | {sizes[0]} ({sizes[0] // 4} tok) | {sizes[1]} | {sizes[2]} | {pb} |")
    pool = [PY, "-m", "schedcp.bench.guest.cpupool", "--workers", "2", "--work-ms", "400"]
    for label, kinds in (("none", None), ("tracefs", ["runqlat", "runtime"]), ("bpftrace", ["runqlat", "runtime"])):
        walls = []
        for _ in range(5):
            t = time.monotonic()
            eng.observe_command(pool, duration_s=60, probe=kinds, probe_backend=label if kinds else "auto")
            walls.append(time.monotonic() - t)
        print(f"probe {label}: median wall {statistics.median(walls):.3f}s")


if __name__ == "__main__":
    main()
