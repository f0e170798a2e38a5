# SPDX-License-Identifier: Apache-2.0
"""Wakeup latency under load, in the style of schbench: messengers wake workers, workers compute.

    python3 -m schedcp_workloads.wakelat --messengers 2 --workers 4 --work 40 --seconds 8

Every messenger and every worker is its own process (threads would share the GIL, which hides the
scheduler). A messenger stamps a request with CLOCK_MONOTONIC and writes it to each of its workers'
pipes; each worker, blocked in read(), wakes, notes the time it got the CPU, does a fixed amount of
work for the request (a chain of SHA-256 over the request number, ``--work`` links), and replies
with its digest. The messenger waits for all its workers' replies, then sends the next round. So
the load is a burst of wakeups every round, with more runnable workers than CPUs.

Reported: wakeup latency (send -> the worker running) and request latency (send -> the reply
written) as p50/p90/p99/p99.9 in microseconds, and requests per second. After the timed part every
messenger recomputes a sample of the digests it received; a wrong one exits with status 1.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import os
import random
import struct
import sys
import time
from collections.abc import Sequence

from .proc import fork_child, read_all, read_exact, write_all

# request: seq, send time; reply: worker, seq, send, wake, done, digest (8 bytes).
_REQ = struct.Struct("<QQ")
_REPLY = struct.Struct("<IQQQQ8s")
PERCENTILES = (50, 90, 99, 99.9)


def request_digest(seq: int, links: int) -> bytes:
    """The work of one request: a SHA-256 chain; deterministic, so the messenger can check it."""
    h = seq.to_bytes(8, "little")
    for _ in range(links):
        h = hashlib.sha256(h).digest()
    return h[:8]


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of an already sorted list (0 for an empty list)."""
    if not sorted_values:
        return 0.0
    rank = max(1, -(-len(sorted_values) * pct // 100))  # ceil(n * pct / 100)
    return sorted_values[min(len(sorted_values), int(rank)) - 1]


def latency_summary(values_ns: list[int], prefix: str) -> dict[str, float]:
    """p50/p90/p99/p99.9, mean and max of a list of nanosecond latencies, in microseconds."""
    values = sorted(values_ns)
    out = {f"{prefix}_p{str(p).replace('.', '')}_us": round(percentile(values, p) / 1000, 1) for p in PERCENTILES}
    out[f"{prefix}_mean_us"] = round(sum(values) / len(values) / 1000, 1) if values else 0.0
    out[f"{prefix}_max_us"] = round(values[-1] / 1000, 1) if values else 0.0
    return out


def _worker(wid: int, req_fd: int, reply_fd: int, links: int) -> None:
    while True:
        raw = read_exact(req_fd, _REQ.size)
        woke = time.monotonic_ns()
        if len(raw) < _REQ.size:
            return
        seq, sent = _REQ.unpack(raw)
        digest = request_digest(seq, links)
        os.write(reply_fd, _REPLY.pack(wid, seq, sent, woke, time.monotonic_ns(), digest))


def _messenger(mid: int, workers: int, links: int, deadline_ns: int, out_fd: int, sample: int) -> None:
    reply_r, reply_w = os.pipe()
    req_fds: list[int] = []
    for wid in range(workers):
        r, w = os.pipe()
        fork_child(functools.partial(_worker, wid, r, reply_w, links), close=(w, reply_r, *req_fds))
        os.close(r)
        req_fds.append(w)
    os.close(reply_w)
    wake: list[int] = []
    request: list[int] = []
    received: list[tuple[int, bytes]] = []
    seq = mid << 40
    while time.monotonic_ns() < deadline_ns:
        for w in req_fds:
            seq += 1
            os.write(w, _REQ.pack(seq, time.monotonic_ns()))
        for _ in req_fds:
            raw = read_exact(reply_r, _REPLY.size)
            if len(raw) < _REPLY.size:
                raise RuntimeError("a worker died")
            _wid, rseq, sent, woke, done, digest = _REPLY.unpack(raw)
            wake.append(woke - sent)
            request.append(done - sent)
            received.append((rseq, digest))
    for w in req_fds:
        os.close(w)  # workers see EOF and exit
    for _ in req_fds:
        os.wait()
    checked = random.Random(mid).sample(received, min(sample, len(received)))
    bad = sum(request_digest(s, links) != d for s, d in checked)
    report = {"wake": wake, "request": request, "checked": len(checked), "bad": bad}
    write_all(out_fd, json.dumps(report).encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="wakelat", description=__doc__.splitlines()[0])
    ap.add_argument("--messengers", type=int, default=2)
    ap.add_argument("--workers", type=int, default=4, help="workers per messenger")
    ap.add_argument("--work", type=int, default=40, help="SHA-256 links per request (CPU work)")
    ap.add_argument("--seconds", type=float, default=8.0, help="how long to run")
    ap.add_argument("--warmup", type=float, default=0.5, help="seconds whose samples are dropped")
    ap.add_argument("--check", type=int, default=64, help="digests each messenger recomputes")
    args = ap.parse_args(argv)
    if not (
        1 <= args.messengers <= 64
        and 1 <= args.workers <= 64
        and 1 <= args.work <= 100_000
        and 0.1 <= args.seconds <= 3600
        and 0 <= args.warmup < args.seconds
        and 0 <= args.check <= 10_000
    ):
        ap.error("--messengers 1..64 --workers 1..64 --work 1..100000 --seconds 0.1..3600, warmup < seconds")
    start_ns = time.monotonic_ns()
    deadline = start_ns + int(args.seconds * 1e9)
    pipes: dict[int, int] = {}
    for mid in range(args.messengers):
        r, w = os.pipe()
        pid = fork_child(
            functools.partial(_messenger, mid, args.workers, args.work, deadline, w, args.check),
            close=(r, *pipes.values()),
        )
        os.close(w)
        pipes[pid] = r
    reports = []
    for pid, r in pipes.items():
        data = read_all(r)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != 0 or not data:
            print(json.dumps({"workload": "wakelat", "ok": False, "errors": ["a messenger failed"]}), flush=True)
            return 1
        reports.append(json.loads(data))
    elapsed = (time.monotonic_ns() - start_ns) / 1e9
    # Drop the warm-up: the first rounds include process start-up. Samples are in send order.
    wake, request = [], []
    for rep in reports:
        skip = int(len(rep["wake"]) * args.warmup / args.seconds)
        wake += rep["wake"][skip:]
        request += rep["request"][skip:]
    total = sum(len(rep["request"]) for rep in reports)
    bad = sum(rep["bad"] for rep in reports)
    errors = [f"{bad} request digests were wrong"] if bad else []
    metrics = {"rps": round(total / elapsed, 1), "requests": total}
    metrics |= latency_summary(wake, "wake")
    metrics |= latency_summary(request, "request")
    result = {
        "workload": "wakelat",
        "ok": not errors,
        "metrics": metrics,
        "params": vars(args),
        "checked": sum(rep["checked"] for rep in reports),
        "errors": errors,
    }
    print(json.dumps(result), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
