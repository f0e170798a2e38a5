# SPDX-License-Identifier: Apache-2.0
"""A batch with a long tail: N CPU-bound processes started together, one much longer than the rest.

    python3 -m schedcp_workloads.longtail --tasks 40 --short-ms 50 --long-factor 20

Every worker is forked from the same parent with the same argv, and learns how much to compute
only through its own pipe once all workers exist, so nothing visible from the outside (name,
arguments, environment, PID order) tells the long one apart. Which index is long is drawn from
``--seed``. A makespan-aware scheduler should start the long job early; a fair one lets it start
late and finish alone. The last line is ``{"workload": "longtail", "metrics": {...}}``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import struct
import sys
import time

from .cpupool import iters_per_ms, spin

_WORK = struct.Struct("<Q")


def _worker(read_fd: int) -> None:
    data = b""
    while len(data) < _WORK.size:
        chunk = os.read(read_fd, _WORK.size - len(data))
        if not chunk:
            os._exit(2)
        data += chunk
    os.close(read_fd)
    spin(_WORK.unpack(data)[0])
    os._exit(0)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="longtail", description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=40)
    ap.add_argument("--short-ms", type=float, default=50.0, help="CPU work of each short task")
    ap.add_argument("--long-factor", type=float, default=20.0, help="the long task does this many times more")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args(argv)
    if not 2 <= args.tasks <= 512 or not 0 < args.short_ms <= 60_000 or not 1 <= args.long_factor <= 1000:
        ap.error("--tasks 2..512, --short-ms 0..60000, --long-factor 1..1000")
    per_ms = iters_per_ms()
    short = int(per_ms * args.short_ms)
    long_index = random.Random(args.seed).randrange(args.tasks)
    work = [int(short * args.long_factor) if i == long_index else short for i in range(args.tasks)]
    pipes: list[int] = []
    pids: dict[int, int] = {}
    for idx in range(args.tasks):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            for other in pipes:
                os.close(other)
            os.close(w)
            try:
                _worker(r)
            finally:
                os._exit(1)
        os.close(r)
        pipes.append(w)
        pids[pid] = idx
    start = time.monotonic()  # the batch starts when the workers learn their work, all at once
    for w, amount in zip(pipes, work, strict=True):
        os.write(w, _WORK.pack(amount))
        os.close(w)
    done: dict[int, float] = {}
    while pids:
        pid, _status = os.wait()
        finished = pids.pop(pid, None)
        if finished is not None:
            done[finished] = time.monotonic() - start
    times = sorted(done.values())
    metrics = {
        "makespan_s": round(times[-1], 4),
        "mean_completion_s": round(sum(times) / len(times), 4),
        "short_done_s": round(max(t for i, t in done.items() if i != long_index), 4),
        "long_done_s": round(done[long_index], 4),
        "tasks": args.tasks,
    }
    print(json.dumps({"workload": "longtail", "metrics": metrics}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
