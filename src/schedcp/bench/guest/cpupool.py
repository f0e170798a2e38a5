# SPDX-License-Identifier: Apache-2.0
"""A pool of CPU-bound worker processes: the archetype of a throughput workload.

    python3 -m schedcp_workloads.cpupool --workers 4 --work-ms 500

Each worker burns a fixed, calibrated amount of CPU (``--work-ms``) or spins for a fixed time
(``--seconds``). Workers never sleep or talk to each other, so any waiting they do is run-queue wait.
The last line is ``{"workload": "cpupool", "metrics": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

_CALIBRATION_ITERS = 200_000


def spin(iterations: int) -> int:
    """Pure-CPU loop; returns a value so the work cannot be skipped."""
    acc = 0
    for i in range(iterations):
        acc = (acc + i * i) & 0xFFFFFFFF
    return acc


def iters_per_ms() -> float:
    """Loop iterations per millisecond of CPU time on this machine (best of three short runs)."""
    best = 0.0
    for _ in range(3):
        t0 = time.thread_time()
        spin(_CALIBRATION_ITERS)
        dt = max(time.thread_time() - t0, 1e-6)
        best = max(best, _CALIBRATION_ITERS / (dt * 1000.0))
    return best


def spin_for(seconds: float) -> int:
    """Spin until `seconds` of wall time have passed; returns iterations done."""
    done, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        spin(10_000)
        done += 10_000
    return done


def run_pool(workers: int, iterations: int | None, seconds: float | None) -> list[tuple[int, float]]:
    """Fork the workers, wait for all; returns (iterations, finish time) per worker."""
    start = time.monotonic()
    pids: dict[int, int] = {}
    for idx in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                if seconds:
                    spin_for(seconds)
                else:
                    spin(iterations or 0)
            finally:
                os._exit(0)
        pids[pid] = idx
    finished: list[tuple[int, float]] = []
    while pids:
        pid, _status = os.wait()
        if pids.pop(pid, None) is not None:
            finished.append((iterations or 0, time.monotonic() - start))
    return finished


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cpupool", description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    group = ap.add_mutually_exclusive_group()
    group.add_argument("--work-ms", type=float, default=None, help="CPU work per worker (calibrated)")
    group.add_argument("--seconds", type=float, default=None, help="spin for this wall time instead")
    args = ap.parse_args(argv)
    if not 1 <= args.workers <= 512:
        ap.error("--workers must be 1..512")
    work_ms = args.work_ms if args.work_ms is not None or args.seconds is not None else 500.0
    iterations = int(iters_per_ms() * work_ms) if work_ms is not None and args.seconds is None else None
    start = time.monotonic()
    finished = run_pool(args.workers, iterations, args.seconds)
    wall = time.monotonic() - start
    metrics = {"wall_s": round(wall, 4), "workers": args.workers}
    if iterations is not None:
        metrics["work_ms_per_worker"] = work_ms
        metrics["throughput_tasks_per_s"] = round(len(finished) / wall, 3)
    print(json.dumps({"workload": "cpupool", "metrics": metrics}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
