# SPDX-License-Identifier: Apache-2.0
"""Sleep/wake ping-pong between process pairs over pipes: the archetype of a latency-sensitive load.

    python3 -m schedcp_workloads.pingpong --pairs 1 --seconds 2

Each round a "ping" process writes one byte and blocks until its "pong" partner echoes it, so both
sides sleep almost all the time and run for microseconds per wakeup. The round-trip time is the
latency an application would see. The last line is ``{"workload": "pingpong", "metrics": {...}}``
with rounds per second and round-trip percentiles.
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import time

_RESULT = struct.Struct("<Qddd")  # rounds, p50_us, p99_us, max_us


def _pong(rd: int, wr: int) -> None:
    while True:
        b = os.read(rd, 1)
        if not b or b == b"q":
            os._exit(0)
        os.write(wr, b)


def _ping(rd: int, wr: int, seconds: float, out: int) -> None:
    rtts: list[float] = []
    end = time.monotonic() + seconds
    while True:
        t0 = time.perf_counter()
        os.write(wr, b"x")
        os.read(rd, 1)
        rtts.append(time.perf_counter() - t0)
        if t0 > 0 and len(rtts) % 64 == 0 and time.monotonic() >= end:
            break
    os.write(wr, b"q")
    rtts.sort()
    n = len(rtts)
    os.write(out, _RESULT.pack(n, rtts[n // 2] * 1e6, rtts[min(n - 1, int(n * 0.99))] * 1e6, rtts[-1] * 1e6))
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="pingpong", description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args(argv)
    if not 1 <= args.pairs <= 64 or not 0 < args.seconds <= 600:
        ap.error("--pairs 1..64, --seconds 0..600")
    results_r, results_w = os.pipe()
    children = []
    start = time.monotonic()
    for _ in range(args.pairs):
        a_r, a_w = os.pipe()  # ping -> pong
        b_r, b_w = os.pipe()  # pong -> ping
        pid = os.fork()
        if pid == 0:
            os.close(results_r)
            _pong(a_r, b_w)
        children.append(pid)
        pid = os.fork()
        if pid == 0:
            os.close(results_r)
            _ping(b_r, a_w, args.seconds, results_w)
        children.append(pid)
        for fd in (a_r, a_w, b_r, b_w):
            os.close(fd)
    os.close(results_w)
    for pid in children:
        os.waitpid(pid, 0)
    wall = time.monotonic() - start
    rows = []
    while True:
        data = os.read(results_r, _RESULT.size)
        if len(data) < _RESULT.size:
            break
        rows.append(_RESULT.unpack(data))
    rounds = sum(r[0] for r in rows)
    metrics = {
        "wall_s": round(wall, 4),
        "rounds": rounds,
        "throughput_rounds_per_s": round(rounds / wall, 1),
        "latency_p50_us": round(max((r[1] for r in rows), default=0.0), 1),
        "latency_p99_us": round(max((r[2] for r in rows), default=0.0), 1),
        "latency_max_us": round(max((r[3] for r in rows), default=0.0), 1),
    }
    print(json.dumps({"workload": "pingpong", "metrics": metrics}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
