# SPDX-License-Identifier: Apache-2.0
"""hackbench-style messaging storm: groups of sender and receiver processes over pipes or sockets.

    python3 -m schedcp_workloads.hackbench --groups 2 --fds 5 --loops 50 [--ipc pipe|socket]

Each group has ``--fds`` senders and as many receivers. Every sender writes ``--loops`` 100-byte
messages to every receiver of its group; each receiver reads until it has all of them. Senders
block when a receiver's buffer is full, receivers block when it is empty, so the run is a storm
of short wakeups and context switches: it measures how cheaply a scheduler moves small tasks.

Messages carry the sender, a sequence number and a checksum; a receiver checks that each sender's
messages arrive complete, in order and intact. The report is the time from release to the last
receiver finishing, and messages per second; a lost or corrupt message exits with status 1.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import socket
import sys
import time
import zlib
from collections.abc import Callable

from .proc import fork_child

_MSG = 100


def make_message(sender: int, seq: int) -> bytes:
    body = (sender.to_bytes(4, "little") + seq.to_bytes(4, "little")) * 11  # 88 bytes
    return body + zlib.crc32(body).to_bytes(4, "little") + b"\0" * (_MSG - 92)


def _channel(ipc: str) -> tuple[int, int]:
    """(read end, write end) of one receiver's inbox; both keep 100-byte message boundaries."""
    if ipc == "pipe":
        return os.pipe()  # writes <= PIPE_BUF are atomic, so messages never interleave
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    return a.detach(), b.detach()


def _receiver(fd: int, senders: int, loops: int) -> int:
    """Read every message for this receiver; returns the number of bad ones."""
    next_seq = [0] * senders
    bad = 0
    buf = b""
    for _ in range(senders * loops):
        while len(buf) < _MSG:
            chunk = os.read(fd, 64 * _MSG)
            if not chunk:
                return bad + 1
            buf += chunk
        msg, buf = buf[:_MSG], buf[_MSG:]
        sender, seq = int.from_bytes(msg[:4], "little"), int.from_bytes(msg[4:8], "little")
        if sender >= senders or seq != next_seq[sender] or msg != make_message(sender, seq):
            bad += 1
        else:
            next_seq[sender] += 1
    return bad


def _receiver_status(fd: int, senders: int, loops: int) -> int:
    """The receiver's exit status: its count of bad messages, capped to fit an exit code."""
    return min(_receiver(fd, senders, loops), 100)


def _sender(sid: int, fds: list[int], loops: int) -> None:
    for seq in range(loops):
        msg = make_message(sid, seq)
        for fd in fds:
            os.write(fd, msg)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="hackbench", description=__doc__.splitlines()[0])
    ap.add_argument("--groups", type=int, default=2)
    ap.add_argument("--fds", type=int, default=5, help="senders (and receivers) per group")
    ap.add_argument("--loops", type=int, default=50, help="messages from each sender to each receiver")
    ap.add_argument("--ipc", choices=("pipe", "socket"), default="pipe")
    args = ap.parse_args(argv)
    if not (1 <= args.groups <= 64 and 1 <= args.fds <= 64 and 1 <= args.loops <= 100_000):
        ap.error("--groups 1..64 --fds 1..64 --loops 1..100000")
    gate_r, gate_w = os.pipe()  # every child waits here, so the storm starts at once
    pids: list[int] = []
    for _group in range(args.groups):
        inbox = [_channel(args.ipc) for _ in range(args.fds)]
        reads = [r for r, _ in inbox]
        writes = [w for _, w in inbox]

        def gated(fn: Callable[[], int | None]) -> Callable[[], int | None]:
            def run() -> int | None:
                os.close(gate_w)
                os.read(gate_r, 1)
                return fn()

            return run

        for r in reads:
            pids.append(
                fork_child(
                    gated(functools.partial(_receiver_status, r, args.fds, args.loops)),
                    [fd for fd in reads if fd != r] + writes,
                )
            )
        for sid in range(args.fds):
            pids.append(fork_child(gated(functools.partial(_sender, sid, writes, args.loops)), reads))
        for fd in reads + writes:
            os.close(fd)
    os.close(gate_r)
    start = time.monotonic()
    os.close(gate_w)  # EOF on the gate releases everyone
    failures = 0
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        failures += os.waitstatus_to_exitcode(status) != 0
    elapsed = time.monotonic() - start
    messages = args.groups * args.fds * args.fds * args.loops
    errors = [f"{failures} processes reported lost or corrupt messages"] if failures else []
    result = {
        "workload": "hackbench",
        "ok": not errors,
        "metrics": {"time_s": round(elapsed, 6), "msgs_per_s": round(messages / elapsed, 1), "messages": messages},
        "params": vars(args),
        "errors": errors,
    }
    print(json.dumps(result), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
