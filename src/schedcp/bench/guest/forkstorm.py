# SPDX-License-Identifier: Apache-2.0
"""A storm of short-lived processes: fork (optionally exec), do a little work, exit.

    python3 -m schedcp_workloads.forkstorm --seconds 2 --concurrency 4 --work-us 200

Like a build system or a shell script in a loop: task creation and teardown dominate, and most
processes live far shorter than any sampling interval. ``--exec PROGRAM`` makes each child exec a
program (for example ``true``) instead of returning to Python. The last line is
``{"workload": "forkstorm", "metrics": {...}}`` with the number of processes and their rate.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time

from .cpupool import iters_per_ms, spin


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="forkstorm", description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--work-us", type=float, default=200.0, help="CPU work per child")
    ap.add_argument("--exec", dest="program", default=None, help="exec this program in each child")
    args = ap.parse_args(argv)
    if not 0 < args.seconds <= 600 or not 1 <= args.concurrency <= 256 or not 0 <= args.work_us <= 1e6:
        ap.error("--seconds 0..600, --concurrency 1..256, --work-us 0..1e6")
    program = shutil.which(args.program) if args.program else None
    if args.program and program is None:
        ap.error(f"program not found: {args.program}")
    iterations = int(iters_per_ms() * args.work_us / 1000.0)
    start = time.monotonic()
    end = start + args.seconds
    alive, spawned = 0, 0
    while time.monotonic() < end or alive:
        while alive < args.concurrency and time.monotonic() < end:
            pid = os.fork()
            if pid == 0:
                try:
                    spin(iterations)
                    if program:
                        os.execv(program, [program])
                finally:
                    os._exit(0)
            alive += 1
            spawned += 1
        os.wait()
        alive -= 1
    wall = time.monotonic() - start
    metrics = {"wall_s": round(wall, 4), "spawned": spawned, "throughput_spawns_per_s": round(spawned / wall, 1)}
    print(json.dumps({"workload": "forkstorm", "metrics": metrics}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
