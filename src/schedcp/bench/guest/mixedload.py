"""A short mixed workload that tells whether a scheduler lets every kind of task make progress.

Runs in the guest (stdlib only) as ``python3 -m schedcp_workloads.mixedload --seconds 3 --json``:

* CPU hogs at nice 0, 5 and 10 (separate processes), so weights matter;
* a pipe ping-pong pair, the archetype of a task that wakes often and runs briefly;
* a sleeper that asks for 1 ms naps and measures how late it wakes (wakeup latency);
* a fork/exit storm, which stresses task creation and teardown paths of the scheduler;
* a late starter: a hog that appears half-way through, so policies that favour tasks which
  already ran (or already waited) must still let a newcomer in.

Each task writes its counters into a shared anonymous mapping as it goes, so a task that is
starved, stuck or killed still reports what it managed. The report lists per-task progress, the
longest gap between two progress steps (a starvation signal) and latency percentiles.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import signal
import struct
import sys
import time
from collections.abc import Callable

# One slot per task in the shared page: progress, max gap, then latency summary (all u64 ns).
SLOT = struct.Struct("<8Q")
FIELDS = ("progress", "max_gap_ns", "lat_count", "lat_mean_ns", "lat_p50_ns", "lat_p99_ns", "lat_max_ns", "done")
GRACE_S = 3.0
SPIN = 2000  # loop iterations per progress step: short enough to spot gaps of a few ms


class Slot:
    """A child's view of its counters; written by exactly one process, read after it ends."""

    def __init__(self, shm: mmap.mmap, index: int) -> None:
        self.shm = shm
        self.off = index * SLOT.size
        self.values = [0] * len(FIELDS)
        self.last_ns = time.monotonic_ns()

    def step(self, n: int = 1) -> None:
        now = time.monotonic_ns()
        self.values[0] += n
        self.values[1] = max(self.values[1], now - self.last_ns)
        self.last_ns = now
        SLOT.pack_into(self.shm, self.off, *self.values)

    def latencies(self, samples: list[int]) -> None:
        if samples:
            samples.sort()
            n = len(samples)
            self.values[2:7] = [n, sum(samples) // n, samples[n // 2], samples[min(n - 1, n * 99 // 100)],
                                samples[-1]]
        self.values[7] = 1
        SLOT.pack_into(self.shm, self.off, *self.values)


def hog(slot: Slot, deadline: float) -> None:
    x = 0
    while time.monotonic() < deadline:
        for i in range(SPIN):
            x += i
        slot.step()
    slot.latencies([])


def sleeper(slot: Slot, deadline: float) -> None:
    late: list[int] = []
    while time.monotonic() < deadline:
        t0 = time.monotonic_ns()
        time.sleep(0.001)
        late.append(max(0, time.monotonic_ns() - t0 - 1_000_000))
        slot.step()
    slot.latencies(late)


def fork_storm(slot: Slot, deadline: float) -> None:
    while time.monotonic() < deadline:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        slot.step()
    slot.latencies([])


def ping(slot: Slot, deadline: float, rd: int, wr: int) -> None:
    trips: list[int] = []
    while time.monotonic() < deadline:
        t0 = time.monotonic_ns()
        os.write(wr, b"p")
        if not os.read(rd, 1):
            break
        trips.append(time.monotonic_ns() - t0)
        slot.step()
    os.close(wr)  # tells pong to stop
    slot.latencies(trips)


def pong(slot: Slot, deadline: float, rd: int, wr: int) -> None:
    while os.read(rd, 1):
        try:
            os.write(wr, b"q")
        except BrokenPipeError:
            break
        slot.step()
    slot.latencies([])


def spawn(fn: Callable[..., None], slot: Slot, deadline: float, nice: int = 0, *args: int,
          close: tuple[int, ...] = ()) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for fd in close:
            os.close(fd)
        if nice:
            os.nice(nice)
        slot.last_ns = time.monotonic_ns()
        fn(slot, deadline, *args)
    except BaseException:
        code = 1
    os._exit(code)


def run(seconds: float, starve_s: float) -> dict:
    tasks: list[tuple[str, str, int]] = [
        ("hog_nice0", "hog", 0), ("hog_nice5", "hog", 5), ("hog_nice10", "hog", 10),
        ("ping", "pingpong", 0), ("pong", "pingpong", 0), ("sleeper", "sleeper", 0),
        ("fork_storm", "fork", 0), ("late_hog", "late", 0),
    ]
    shm = mmap.mmap(-1, SLOT.size * len(tasks))
    start = time.monotonic()
    deadline = start + seconds
    pids: dict[int, int] = {}
    a_rd, a_wr = os.pipe()  # ping -> pong
    b_rd, b_wr = os.pipe()  # pong -> ping
    for idx, (name, kind, nice) in enumerate(tasks):
        slot = Slot(shm, idx)
        if kind == "hog":
            pids[idx] = spawn(hog, slot, deadline, nice)
        elif name == "ping":
            pids[idx] = spawn(ping, slot, deadline, 0, b_rd, a_wr, close=(a_rd, b_wr))
        elif name == "pong":
            pids[idx] = spawn(pong, slot, deadline, 0, a_rd, b_wr, close=(a_wr, b_rd))
        elif kind == "sleeper":
            pids[idx] = spawn(sleeper, slot, deadline)
        elif kind == "fork":
            pids[idx] = spawn(fork_storm, slot, deadline)
    for fd in (a_rd, a_wr, b_rd, b_wr):
        os.close(fd)
    late_idx = len(tasks) - 1
    late_start = start + seconds / 2
    time.sleep(max(0.0, late_start - time.monotonic()))
    pids[late_idx] = spawn(hog, Slot(shm, late_idx), deadline)
    started = {idx: 0.0 for idx in pids}
    started[late_idx] = round(time.monotonic() - start, 3)

    exit_codes = _reap(pids, deadline + GRACE_S)
    out_tasks = []
    starved = []
    for idx, (name, kind, nice) in enumerate(tasks):
        values = dict(zip(FIELDS, SLOT.unpack_from(shm, idx * SLOT.size), strict=True))
        entry = {
            "name": name, "kind": kind, "nice": nice, "started_s": started[idx],
            "progress": values["progress"], "max_gap_ms": round(values["max_gap_ns"] / 1e6, 3),
            "finished": bool(values["done"]), "exit_code": exit_codes.get(idx),
        }
        if values["lat_count"]:
            entry["latency_us"] = {k: round(values[f"lat_{k}_ns"] / 1e3, 1) for k in ("mean", "p50", "p99", "max")}
            entry["latency_us"]["count"] = values["lat_count"]
        if values["progress"] == 0 or values["max_gap_ns"] > starve_s * 1e9:
            starved.append(name)
        out_tasks.append(entry)
    return {
        "seconds": seconds, "wall_s": round(time.monotonic() - start, 3), "starve_s": starve_s,
        "tasks": out_tasks, "starved": starved, "ok": not starved,
    }


def _reap(pids: dict[int, int], deadline: float) -> dict[int, int | None]:
    """Wait for every child; kill the ones still running at the deadline (they count as starved)."""
    codes: dict[int, int | None] = {}
    pending = dict(pids)
    while pending and time.monotonic() < deadline:
        for idx, pid in list(pending.items()):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                codes[idx] = os.waitstatus_to_exitcode(status)
                del pending[idx]
        time.sleep(0.02)
    for idx, pid in pending.items():
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        codes[idx] = None
    return codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mixedload", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--starve-s", type=float, default=2.0, help="a gap longer than this counts as starvation")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if not 0.2 <= args.seconds <= 600:
        parser.error("--seconds must be within 0.2..600")
    report = run(args.seconds, args.starve_s)
    if args.json:
        print(json.dumps(report))
    else:
        for t in report["tasks"]:
            lat = t.get("latency_us", {})
            print(f"{t['name']:<11} progress={t['progress']:<8} max_gap={t['max_gap_ms']:>9.1f}ms "
                  f"{'p99=' + str(lat['p99']) + 'us' if lat else ''}")
        print("starved:", ", ".join(report["starved"]) or "none")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
