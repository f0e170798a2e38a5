# SPDX-License-Identifier: Apache-2.0
"""Correctness and performance load for the verifier's dynamic stage (runs in the guest).

Standard library only: the control plane uploads this file into the micro-VM and runs it with
``python3 verifyload.py --seconds N``. It starts a mix of tasks that together exercise the paths a
broken sched_ext scheduler gets wrong, and prints one JSON object describing what each task saw:

* CPU hogs at several nice levels (the ``equal`` group shares one nice level, so fairness among
  equal tasks can be judged; the others show whether low-priority tasks still progress);
* sleepers that wake every couple of milliseconds and measure how late they wake;
* a pipe ping-pong pair (a storm of wakeups between two tasks);
* a late starter that only begins halfway through, when the others have built up history;
* a fork/exit storm (task creation and teardown, i.e. ops.enable/init_task/exit_task).

Progress is recorded as the longest gap between two completed work chunks: a task that the
scheduler forgets shows a gap of seconds even when the watchdog later rescues it.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import signal
import sys
import time

CHUNK_ITERS = 400


def _spin_chunk() -> None:
    x = 0
    for i in range(CHUNK_ITERS):
        x += i * i
    if x < 0:  # never true; keeps the loop from looking dead to readers
        print(x)


class Progress:
    """Counts completed steps and the longest wait between two of them (how long the task stalled)."""

    def __init__(self) -> None:
        self.began = self.last = time.monotonic()
        self.steps = 0
        self.max_gap = 0.0
        self.first: float | None = None

    def step(self) -> float:
        now = time.monotonic()
        self.steps += 1
        if self.first is None:
            self.first = now - self.began
        self.max_gap = max(self.max_gap, now - self.last)
        self.last = now
        return now


def hog(deadline: float, start_at: float) -> dict:
    """Burn CPU in small chunks; report how many, the CPU time, and the longest stall."""
    while time.monotonic() < start_at:
        time.sleep(min(0.05, max(0.0, start_at - time.monotonic())))
    cpu0 = time.process_time()
    progress = Progress()
    while True:
        _spin_chunk()
        if progress.step() >= deadline:
            break
    return {
        "chunks": progress.steps,
        "cpu_s": round(time.process_time() - cpu0, 4),
        "run_s": round(progress.last - progress.began, 4),
        "max_gap_s": round(progress.max_gap, 4),
        "first_progress_s": round(progress.first or 0.0, 4),
    }


def sleeper(deadline: float, period_s: float) -> dict:
    """Sleep briefly in a loop and measure how late each wakeup is (the scheduling delay)."""
    lat: list[float] = []
    progress = Progress()
    while True:
        t0 = time.monotonic()
        if t0 >= deadline:
            break
        time.sleep(period_s)
        lat.append(max(0.0, progress.step() - t0 - period_s))
    lat.sort()
    return {
        "wakeups": len(lat),
        "lat_p50_ms": round(_pct(lat, 50) * 1e3, 3),
        "lat_p99_ms": round(_pct(lat, 99) * 1e3, 3),
        "lat_max_ms": round((lat[-1] if lat else 0.0) * 1e3, 3),
        "max_gap_s": round(progress.max_gap, 4),
    }


def pingpong(deadline: float) -> dict:
    """Two tasks bouncing a byte through pipes: every round trip is two wakeups."""
    a_r, a_w = os.pipe()
    b_r, b_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(a_w)
        os.close(b_r)
        try:
            while True:
                data = os.read(a_r, 1)
                if not data or data == b"q":
                    break
                os.write(b_w, b"x")
        finally:
            os._exit(0)
    os.close(a_r)
    os.close(b_w)
    progress = Progress()
    while True:
        now = time.monotonic()
        if now >= deadline:
            break
        os.write(a_w, b"x")
        ready, _, _ = select.select([b_r], [], [], max(0.01, deadline - now + 2.0))
        if not ready:
            break
        os.read(b_r, 1)
        progress.step()
    os.write(a_w, b"q")
    os.waitpid(pid, 0)
    return {"round_trips": progress.steps, "max_gap_s": round(progress.max_gap, 4)}


def fork_storm(deadline: float) -> dict:
    """Create and reap short-lived processes as fast as possible."""
    worst = 0.0
    progress = Progress()
    while True:
        t0 = time.monotonic()
        if t0 >= deadline:
            break
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        worst = max(worst, progress.step() - t0)
    return {"forks": progress.steps, "worst_fork_ms": round(worst * 1e3, 3), "max_gap_s": round(progress.max_gap, 4)}


def _pct(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    idx = min(len(values) - 1, max(0, round(pct / 100 * (len(values) - 1))))
    return values[idx]


def _spawn(name: str, nice: int, fn, *args) -> tuple[int, int, str]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        code = 0
        try:
            if nice:
                os.nice(nice)
            result = fn(*args)
            result["nice"] = nice
            os.write(w, json.dumps(result).encode())
        except BaseException as exc:  # report, never hang the parent
            os.write(w, json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    return pid, r, name


def plan(seconds: float, equal_hogs: int) -> list[tuple[str, int, str, tuple]]:
    """(task name, nice, kind, extra args) for every task in the load."""
    tasks: list[tuple[str, int, str, tuple]] = []
    tasks += [(f"equal{i}", 0, "hog", (0.0,)) for i in range(equal_hogs)]
    tasks += [("nice5", 5, "hog", (0.0,)), ("nice10", 10, "hog", (0.0,))]
    tasks += [("late", 0, "hog", (seconds / 2,))]
    tasks += [("sleeper0", 0, "sleeper", (0.002,)), ("sleeper1", -5, "sleeper", (0.005,))]
    tasks += [("pingpong", 0, "pingpong", ()), ("forker", 0, "fork", ())]
    return tasks


def run(seconds: float, equal_hogs: int) -> dict:
    t0 = time.monotonic()
    deadline = t0 + seconds
    children = []
    for name, nice, kind, extra in plan(seconds, equal_hogs):
        if kind == "hog":
            children.append(_spawn(name, nice, hog, deadline, t0 + extra[0]))
        elif kind == "sleeper":
            children.append(_spawn(name, nice, sleeper, deadline, extra[0]))
        elif kind == "pingpong":
            children.append(_spawn(name, nice, pingpong, deadline))
        else:
            children.append(_spawn(name, nice, fork_storm, deadline))
    results: dict[str, dict] = {}
    buffers = {r: b"" for _, r, _ in children}
    names = {r: name for _, r, name in children}
    # Children that never report (starved for good) must not hang us: give them a grace period.
    hard_deadline = deadline + max(5.0, seconds)
    open_fds = set(buffers)
    while open_fds and time.monotonic() < hard_deadline:
        ready, _, _ = select.select(list(open_fds), [], [], 0.5)
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                buffers[fd] += chunk
            else:
                open_fds.discard(fd)
    for pid, fd, name in children:
        if fd in open_fds:
            results[name] = {"error": "no report before the deadline (task starved or hung)"}
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        else:
            try:
                results[name] = json.loads(buffers[fd].decode() or "{}")
            except ValueError:
                results[name] = {"error": "unreadable report"}
        os.close(fd)
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = (usage.ru_utime + usage.ru_stime) / (seconds * (os.cpu_count() or 1))
    return {
        "version": 1,
        "seconds": seconds,
        "elapsed_s": round(time.monotonic() - t0, 3),
        "cpus": os.cpu_count(),
        "context_switches": usage.ru_nvcsw + usage.ru_nivcsw,
        # Share of the machine's CPU time the load used: low when CPUs sat idle while tasks waited.
        "cpu_busy": round(busy, 4),
        "tasks": {n: results.get(n, {"error": "missing"}) for n in names.values()},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--equal-hogs", type=int, default=3)
    args = parser.parse_args(argv)
    if not 0.5 <= args.seconds <= 120 or not 1 <= args.equal_hogs <= 16:
        parser.error("--seconds must be 0.5..120 and --equal-hogs 1..16")
    json.dump(run(args.seconds, args.equal_hogs), sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
