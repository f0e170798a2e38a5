# SPDX-License-Identifier: Apache-2.0
"""An interactive task among batch CPU hogs: how late does it wake, and how much batch work gets done?

    python3 -m schedcp_workloads.interactive --hogs 4 --period-ms 5 --seconds 6

The hogs (``--hogs`` processes, default two per CPU) compute SHA-256 chains in fixed-size chunks
for the whole run. The interactive process, like an editor or a game loop, sleeps ``--period-ms``,
does a small piece of work (a short chain) and sleeps again; each time it measures how much later
than asked it got the CPU back. A good desktop-style scheduler keeps that lateness small without
taking much from the batch.

Reported: the interactive task's lateness p50/p90/p99/p99.9/max (microseconds) and its completed
cycles, and the batch throughput in chunks per second. Every hog reports its chunk count and the
digest of its last chunk, which the parent recomputes; the interactive task checks its own work.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from .proc import fork_child, read_all
from .wakelat import latency_summary, request_digest

_CHUNK_LINKS = 200  # SHA-256 links per hog chunk
_TICK_LINKS = 20  # work the interactive task does per wakeup


def _hog(hid: int, deadline: float, fd: int) -> None:
    chunks, digest = 0, b""
    while time.monotonic() < deadline:
        digest = request_digest((hid << 32) | chunks, _CHUNK_LINKS)
        chunks += 1
    os.write(fd, json.dumps({"hog": hid, "chunks": chunks, "last": digest.hex()}).encode() + b"\n")


def _interactive(period_s: float, deadline: float, fd: int) -> None:
    late: list[int] = []
    acc = 0
    while time.monotonic() < deadline:
        asked = time.monotonic_ns()
        time.sleep(period_s)
        late.append(max(0, time.monotonic_ns() - asked - int(period_s * 1e9)))
        acc ^= int.from_bytes(request_digest(len(late), _TICK_LINKS), "little")
    os.write(fd, json.dumps({"late": late, "acc": acc}).encode())


def tick_checksum(cycles: int) -> int:
    """What the interactive task's accumulator must be after `cycles` wakeups."""
    acc = 0
    for cycle in range(1, cycles + 1):
        acc ^= int.from_bytes(request_digest(cycle, _TICK_LINKS), "little")
    return acc


def _spawn(fn, *args) -> tuple[int, int]:
    """Fork fn(*args, write_end); returns the child's pid and the read end of its report pipe."""
    r, w = os.pipe()
    pid = fork_child(lambda: fn(*args, w), close=(r,))
    os.close(w)
    return pid, r


def _collect(pid: int, fd: int) -> bytes:
    data = read_all(fd)
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"child {pid} failed")
    return data


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="interactive", description=__doc__.splitlines()[0])
    ap.add_argument("--hogs", type=int, default=2 * (os.cpu_count() or 1))
    ap.add_argument("--period-ms", type=float, default=5.0, help="the interactive task's sleep per cycle")
    ap.add_argument("--seconds", type=float, default=6.0)
    args = ap.parse_args(argv)
    if not (0 <= args.hogs <= 256 and 0.1 <= args.period_ms <= 1000 and 0.2 <= args.seconds <= 3600):
        ap.error("--hogs 0..256 --period-ms 0.1..1000 --seconds 0.2..3600")
    start = time.monotonic()
    deadline = start + args.seconds
    hogs = [_spawn(_hog, hid, deadline) for hid in range(args.hogs)]
    inter = _spawn(_interactive, args.period_ms / 1000, deadline)
    errors = []
    try:
        reports = [json.loads(_collect(pid, fd)) for pid, fd in hogs]
        tick = json.loads(_collect(*inter))
    except (RuntimeError, ValueError) as exc:
        reports, tick = [], {"late": [], "acc": 0}
        errors.append(str(exc))
    elapsed = time.monotonic() - start
    for rep in reports:
        if (
            rep["chunks"]
            and request_digest((rep["hog"] << 32) | (rep["chunks"] - 1), _CHUNK_LINKS).hex() != (rep["last"])
        ):
            errors.append(f"hog {rep['hog']} reported a wrong digest")
    if tick["acc"] != tick_checksum(len(tick["late"])):
        errors.append("the interactive task's checksum is wrong")
    chunks = sum(rep["chunks"] for rep in reports)
    metrics = {"batch_chunks_per_s": round(chunks / elapsed, 2), "cycles": len(tick["late"])}
    metrics |= latency_summary(tick["late"], "late")
    result = {"workload": "interactive", "ok": not errors, "metrics": metrics, "params": vars(args), "errors": errors}
    print(json.dumps(result), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
