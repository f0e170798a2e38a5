# SPDX-License-Identifier: Apache-2.0
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
Every task renames itself ``ml_<task>`` (its comm), so comm-based policies can tell them apart.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import select
import signal
import struct
import sys
import time
from collections.abc import Callable

# One slot per task in the shared page (all u64, ns); written by that task only, read at the end.
SLOT = struct.Struct("<9Q")
FIELDS = (
    "progress",
    "max_gap_ns",
    "lat_count",
    "lat_mean_ns",
    "lat_p50_ns",
    "lat_p99_ns",
    "lat_max_ns",
    "done",
    "started_ns",
)
START = struct.Struct("<Q")  # the run's start time (CLOCK_MONOTONIC ns) in front of the slots
GRACE_S = 3.0
SPIN = 2000  # loop iterations per progress step: short enough to spot gaps of a few ms


class Slot:
    """A child's view of its counters. The first step always happens, however late, so a task
    that got no CPU before the deadline shows up as one huge gap rather than as silence."""

    def __init__(self, shm: mmap.mmap, index: int) -> None:
        self.shm = shm
        self.off = START.size + index * SLOT.size
        self.values = [0] * len(FIELDS)
        self.last_ns = 0

    def begin(self, start_ns: int) -> None:
        self.last_ns = time.monotonic_ns()
        self.values[8] = max(0, self.last_ns - start_ns)
        self.values[1] = self.values[8]  # waiting to start counts as a gap

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
            self.values[2:7] = [n, sum(samples) // n, samples[n // 2], samples[min(n - 1, n * 99 // 100)], samples[-1]]
        self.values[7] = 1
        SLOT.pack_into(self.shm, self.off, *self.values)


def hog(slot: Slot, deadline: float) -> None:
    x = 0
    while True:
        for i in range(SPIN):
            x += i
        slot.step()
        if time.monotonic() >= deadline:
            break
    slot.latencies([])


def late_hog(slot: Slot, deadline: float, start: float) -> None:
    """Sleeps through the first half, then competes as a brand-new CPU-bound task."""
    time.sleep(max(0.0, start + (deadline - start) / 2 - time.monotonic()))
    slot.begin(int(start * 1e9))
    slot.values[1] = 0  # the planned sleep is not starvation
    hog(slot, deadline)


def sleeper(slot: Slot, deadline: float) -> None:
    late: list[int] = []
    while True:
        t0 = time.monotonic_ns()
        time.sleep(0.001)
        late.append(max(0, time.monotonic_ns() - t0 - 1_000_000))
        slot.step()
        if time.monotonic() >= deadline:
            break
    slot.latencies(late)


def fork_storm(slot: Slot, deadline: float) -> None:
    while True:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        slot.step()
        if time.monotonic() >= deadline:
            break
    slot.latencies([])


def ping(slot: Slot, deadline: float, rd: int, wr: int) -> None:
    trips: list[int] = []
    while True:
        t0 = time.monotonic_ns()
        os.write(wr, b"p")
        if not os.read(rd, 1):
            break
        trips.append(time.monotonic_ns() - t0)
        slot.step()
        if time.monotonic() >= deadline:
            break
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


_LIBC: list = []


def set_comm(name: str) -> None:
    """Rename the calling process (prctl PR_SET_NAME); best effort, the load works without it.
    The parent calls it once before forking, so children do not each pay for loading ctypes."""
    try:
        import ctypes

        if not _LIBC:
            _LIBC.append(ctypes.CDLL(None, use_errno=True))
        _LIBC[0].prctl(15, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)
    except (ImportError, OSError, AttributeError):
        pass


def spawn(
    shm: mmap.mmap,
    idx: int,
    name: str,
    nice: int,
    pipes: tuple[int, int, int],
    seconds: float,
    body: Callable[[Slot, float], None],
    close: tuple[int, ...] = (),
) -> int:
    """Fork a task that reports ready and then waits for the common start signal, so slow forks
    and process setup under an emulator do not eat into its measured time."""
    go_rd, go_wr, ready_wr = pipes
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        for fd in (go_wr, *close):
            os.close(fd)
        set_comm(f"ml_{name}")
        if nice:
            os.nice(nice)
        os.write(ready_wr, b"r")
        os.close(ready_wr)
        os.read(go_rd, 1)  # EOF once every task is ready
        start_ns = START.unpack_from(shm, 0)[0]
        slot = Slot(shm, idx)
        slot.begin(start_ns)
        body(slot, start_ns / 1e9 + seconds)
    except BaseException:
        code = 1
    os._exit(code)


TASKS: list[tuple[str, str, int]] = [
    ("hog_nice0", "hog", 0),
    ("hog_nice5", "hog", 5),
    ("hog_nice10", "hog", 10),
    ("ping", "pingpong", 0),
    ("pong", "pingpong", 0),
    ("sleeper", "sleeper", 0),
    ("fork_storm", "fork", 0),
    ("late_hog", "late", 0),
]


def run(seconds: float, starve_s: float) -> dict:
    shm = mmap.mmap(-1, START.size + SLOT.size * len(TASKS))
    go_rd, go_wr = os.pipe()
    ready_rd, ready_wr = os.pipe()
    set_comm("ml_main")
    a_rd, a_wr = os.pipe()  # ping -> pong
    b_rd, b_wr = os.pipe()  # pong -> ping
    bodies: dict[str, tuple[Callable[[Slot, float], None], tuple[int, ...]]] = {
        "ping": (lambda slot, dl: ping(slot, dl, b_rd, a_wr), (a_rd, b_wr)),
        "pong": (lambda slot, dl: pong(slot, dl, a_rd, b_wr), (a_wr, b_rd)),
        "sleeper": (sleeper, ()),
        "fork_storm": (fork_storm, ()),
        "late_hog": (lambda slot, dl: late_hog(slot, dl, dl - seconds), ()),
    }
    pids: dict[int, int] = {}
    for idx, (name, _kind, nice) in enumerate(TASKS):
        body, close = bodies.get(name, (hog, ()))
        pids[idx] = spawn(shm, idx, name, nice, (go_rd, go_wr, ready_wr), seconds, body, close)
    for fd in (a_rd, a_wr, b_rd, b_wr, go_rd, ready_wr):
        os.close(fd)
    _await_ready(ready_rd, len(TASKS), time.monotonic() + 60)
    start = time.monotonic()
    START.pack_into(shm, 0, int(start * 1e9))
    os.close(go_wr)  # start signal

    exit_codes = _reap(pids, start + seconds + GRACE_S)
    out_tasks = []
    starved = []
    for idx, (name, kind, nice) in enumerate(TASKS):
        values = dict(zip(FIELDS, SLOT.unpack_from(shm, START.size + idx * SLOT.size), strict=True))
        entry = {
            "name": name,
            "kind": kind,
            "nice": nice,
            "started_s": round(values["started_ns"] / 1e9, 3),
            "progress": values["progress"],
            "max_gap_ms": round(values["max_gap_ns"] / 1e6, 3),
            "finished": bool(values["done"]),
            "exit_code": exit_codes.get(idx),
        }
        if values["lat_count"]:
            entry["latency_us"] = {k: round(values[f"lat_{k}_ns"] / 1e3, 1) for k in ("mean", "p50", "p99", "max")}
            entry["latency_us"]["count"] = values["lat_count"]
        if values["progress"] == 0 or values["max_gap_ns"] > starve_s * 1e9:
            starved.append(name)
        out_tasks.append(entry)
    return {
        "seconds": seconds,
        "wall_s": round(time.monotonic() - start, 3),
        "starve_s": starve_s,
        "tasks": out_tasks,
        "starved": starved,
        "ok": not starved,
    }


def _await_ready(fd: int, count: int, deadline: float) -> None:
    """Wait until every child said ready (or died: EOF), bounded by the deadline."""
    got = 0
    while got < count and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        chunk = os.read(fd, count)
        if not chunk:
            break
        got += len(chunk)
    os.close(fd)


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
            print(
                f"{t['name']:<11} progress={t['progress']:<8} max_gap={t['max_gap_ms']:>9.1f}ms "
                f"{'p99=' + str(lat['p99']) + 'us' if lat else ''}"
            )
        print("starved:", ", ".join(report["starved"]) or "none")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
