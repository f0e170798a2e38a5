# SPDX-License-Identifier: Apache-2.0
"""A long-tail batch suite: for each kind of job, 39 short instances and 1 long one start together.

    python3 -m schedcp_workloads.batch --kinds zlib,hash,sort,logs,matrix --scale 1.0

Kinds of job (all real work, each checked):

* ``zlib``   generate pseudo-text, compress it, decompress it and compare;
* ``hash``   checksum a generated buffer record by record (sha256, md5, crc32), recheck in one pass;
* ``sort``   sort generated records, check order and that the key multiset is unchanged;
* ``logs``   generate access-log lines, parse and aggregate them, compare with the generator's tallies;
* ``matrix`` chain integer matrix products modulo a prime, verify the last one with Freivalds' test.

Each kind runs as its own batch of ``--tasks`` processes (default 40), one kind after the other.
Every process is forked from the same parent with the same argv and waits on its own pipe; the
parent then releases them all at once by writing each one its work size. Which instance is the long
one is drawn at random (or from ``--seed``), so nothing visible from outside (name, arguments,
environment, PID or wake order) tells it apart: a scheduler has to recognise it by behaviour.

Per kind the report has the makespan (release to last exit), the mean completion time, when the
short ones were all done and when the long one was. The headline ``makespan_s`` is the sum over
kinds. All short instances must produce the same digest, equal to a reference the parent computes
after the timed part; the long instance must pass its own check. Any mismatch exits with status 1.
"""

from __future__ import annotations

import argparse
import functools
import gc
import hashlib
import itertools
import json
import os
import random
import struct
import sys
import time
import zlib
from collections.abc import Callable

from .proc import fork_child, read_all, read_exact

# Work of one *short* instance at --scale 1, in units. A unit of any kind costs about 1 ms of CPU on
# a modern host core (about 10 ms under the micro-VM's TCG), so kinds are comparable.
SHORT_UNITS = 10
KINDS = ("zlib", "hash", "sort", "logs", "matrix")
_SIZE = struct.Struct("<Q")
_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "scheduler",
    "kernel",
    "queue",
    "slice",
    "vtime",
    "dispatch",
    "enqueue",
    "runnable",
    "latency",
    "throughput",
    "batch",
    "worker",
    "request",
    "reply",
    "cache",
    "memory",
    "page",
]
_PRIME = 2_147_483_647
_MATRIX_N = 22


def _digest(*parts: object) -> str:
    return hashlib.sha256(repr(parts).encode()).hexdigest()[:16]


def job_zlib(units: int, seed: int) -> tuple[str, bool]:
    rng = random.Random(seed)
    text = " ".join(rng.choices(_WORDS, k=2500 * units)).encode()
    packed = zlib.compressobj(6)
    out = [packed.compress(text[i : i + 16384]) for i in range(0, len(text), 16384)]
    blob = b"".join(out) + packed.flush()
    ok = zlib.decompress(blob) == text
    return _digest(len(text), zlib.crc32(text), len(blob), zlib.adler32(blob)), ok


def job_hash(units: int, seed: int) -> tuple[str, bool]:
    data = random.Random(seed).randbytes(96_000 * units)
    sha, md5, crc = hashlib.sha256(), hashlib.md5(), 0
    record_digests = hashlib.sha1()
    for off in range(0, len(data), 256):  # a checksum per 256-byte record, as an integrity scanner would
        record = data[off : off + 256]
        sha.update(record)
        md5.update(record)
        crc = zlib.crc32(record, crc)
        record_digests.update(hashlib.blake2s(record, digest_size=8).digest())
    ok = sha.digest() == hashlib.sha256(data).digest() and crc == zlib.crc32(data)
    return _digest(sha.hexdigest(), md5.hexdigest(), crc, record_digests.hexdigest()), ok


def job_sort(units: int, seed: int) -> tuple[str, bool]:
    rng = random.Random(seed)
    n = 460 * units
    records = [(rng.getrandbits(30), rng.choice(_WORDS), i) for i in range(n)]
    key_sum = sum(r[0] for r in records)
    by_key = sorted(records)
    by_word = sorted(records, key=lambda r: (r[1], -r[0]))
    ok = (
        all(a <= b for a, b in itertools.pairwise(by_key))
        and all((a[1], -a[0]) <= (b[1], -b[0]) for a, b in itertools.pairwise(by_word))
        and sum(r[0] for r in by_key) == key_sum
        and len(by_key) == n
    )
    step = max(1, n // 16)
    return _digest(by_key[::step], by_word[::step]), ok


def job_logs(units: int, seed: int) -> tuple[str, bool]:
    rng = random.Random(seed)
    services = ["api", "auth", "db", "cache", "search", "billing"]
    levels = ["INFO", "INFO", "INFO", "WARN", "ERROR"]
    truth_count: dict[str, int] = {}
    truth_latency: dict[str, int] = {}
    lines = []
    for i in range(400 * units):
        svc, lvl = rng.choice(services), rng.choice(levels)
        latency = rng.randint(1, 900)
        http_status = 500 if lvl == "ERROR" else 200
        stamp = f"2025-01-01T00:{i // 60 % 60:02d}:{i % 60:02d}"
        lines.append(f"{stamp} {lvl} {svc} {latency}ms {http_status} /v1/{svc}/{i % 97}")
        truth_count[svc] = truth_count.get(svc, 0) + 1
        truth_latency[svc] = truth_latency.get(svc, 0) + latency
    text = "\n".join(lines)
    del lines
    count: dict[str, int] = {}
    errors: dict[str, int] = {}
    latencies: dict[str, list[int]] = {}
    for line in text.split("\n"):
        _ts, lvl, svc, lat, status, _path = line.split(" ")
        count[svc] = count.get(svc, 0) + 1
        if lvl == "ERROR" or status.startswith("5"):
            errors[svc] = errors.get(svc, 0) + 1
        latencies.setdefault(svc, []).append(int(lat[:-2]))
    summary = {}
    for svc, values in sorted(latencies.items()):
        values.sort()
        summary[svc] = (count[svc], errors.get(svc, 0), values[len(values) // 2], values[len(values) * 95 // 100])
    ok = count == truth_count and all(sum(latencies[s]) == truth_latency[s] for s in truth_count)
    return _digest(sorted(summary.items())), ok


def _matmul(a: list[list[int]], b: list[list[int]]) -> list[list[int]]:
    cols = list(zip(*b, strict=True))
    return [[sum(x * y for x, y in zip(row, col, strict=True)) % _PRIME for col in cols] for row in a]


def _matvec(a: list[list[int]], v: list[int]) -> list[int]:
    return [sum(x * y for x, y in zip(row, v, strict=True)) % _PRIME for row in a]


def job_matrix(units: int, seed: int) -> tuple[str, bool]:
    rng = random.Random(seed)
    n = _MATRIX_N
    step = [[rng.randrange(_PRIME) for _ in range(n)] for _ in range(n)]
    acc = [[int(i == j) for j in range(n)] for i in range(n)]
    prev = acc
    for _ in range(units):
        prev, acc = acc, _matmul(acc, step)
    probe = [rng.randrange(_PRIME) for _ in range(n)]  # Freivalds: acc·v == prev·(step·v)
    ok = _matvec(acc, probe) == _matvec(prev, _matvec(step, probe))
    return _digest(acc[0], acc[-1]), ok


JOBS: dict[str, Callable[[int, int], tuple[str, bool]]] = {
    "zlib": job_zlib,
    "hash": job_hash,
    "sort": job_sort,
    "logs": job_logs,
    "matrix": job_matrix,
}


def _child(kind: str, seed: int, size_fd: int, result_fd: int) -> int:
    raw = read_exact(size_fd, _SIZE.size)
    if len(raw) != _SIZE.size:
        return 3
    units = _SIZE.unpack(raw)[0]
    t0, c0 = time.monotonic(), time.process_time()
    digest, ok = JOBS[kind](units, seed)
    t1, c1 = time.monotonic(), time.process_time()
    line = json.dumps({"pid": os.getpid(), "start": t0, "end": t1, "cpu": c1 - c0, "digest": digest, "ok": ok})
    os.write(result_fd, line.encode() + b"\n")  # one write below PIPE_BUF: atomic
    return 0


def run_kind(kind: str, tasks: int, short_units: int, long_factor: float, long_index: int, seed: int) -> dict:
    """Fork the batch, release it at once, collect per-task times; returns the kind's report."""
    long_units = max(short_units + 1, round(short_units * long_factor))
    result_r, result_w = os.pipe()
    # Keep the collector away from the parent's objects in the children: otherwise every child
    # writes to (and so copies) every page holding them, a fixed cost that dwarfs short jobs.
    gc.collect()
    gc.freeze()
    size_fds: list[int] = []
    index_of: dict[int, int] = {}
    for idx in range(tasks):
        r, w = os.pipe()
        pid = fork_child(functools.partial(_child, kind, seed, r, result_w), close=(*size_fds, w, result_r))
        os.close(r)
        size_fds.append(w)
        index_of[pid] = idx
    os.close(result_w)
    start = time.monotonic()
    for idx, w in enumerate(size_fds):
        os.write(w, _SIZE.pack(long_units if idx == long_index else short_units))
        os.close(w)
    reports: dict[int, dict] = {}
    for line in read_all(result_r).splitlines():
        rec = json.loads(line)
        reports[index_of[rec["pid"]]] = rec
    failed = []
    while index_of:
        pid, status = os.wait()
        finished = index_of.pop(pid, None)
        if finished is not None and (os.waitstatus_to_exitcode(status) != 0 or finished not in reports):
            failed.append(finished)
    if failed:
        raise RuntimeError(f"{kind}: instances {sorted(failed)} exited without a result")
    done = [reports[i]["end"] - start for i in range(tasks)]
    shorts = [i for i in range(tasks) if i != long_index]
    reference, ref_ok = JOBS[kind](short_units, seed)  # after the timed part: it must not skew it
    errors = []
    if not ref_ok:
        errors.append("reference run failed its own check")
    bad = [i for i in shorts if reports[i]["digest"] != reference or not reports[i]["ok"]]
    if bad:
        errors.append(f"short instances {bad} produced a wrong result")
    if not reports[long_index]["ok"]:
        errors.append("the long instance failed its own check")
    return {
        "kind": kind,
        "makespan_s": round(max(done), 4),
        "mean_completion_s": round(sum(done) / tasks, 4),
        "short_done_s": round(max(done[i] for i in shorts), 4),
        "long_done_s": round(done[long_index], 4),
        "long_start_s": round(reports[long_index]["start"] - start, 4),
        "long_cpu_s": round(reports[long_index]["cpu"], 4),
        "short_cpu_s": round(sum(reports[i]["cpu"] for i in shorts) / len(shorts), 4),
        "long_index": long_index,
        "short_units": short_units,
        "long_units": long_units,
        "completion_s": [round(t, 4) for t in done],
        "errors": errors,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="batch", description=__doc__.splitlines()[0])
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"comma-separated subset of {','.join(KINDS)}")
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies every job's work")
    ap.add_argument("--tasks", type=int, default=40, help="instances per kind (one of them long)")
    ap.add_argument("--long-factor", type=float, default=25.0, help="the long instance does this much more work")
    ap.add_argument("--seed", type=int, default=None, help="picks the long instances (default: random)")
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown or not kinds:
        ap.error(f"unknown kinds {unknown}; choose from {','.join(KINDS)}")
    if not 0 < args.scale <= 100 or not 2 <= args.tasks <= 256 or not 1 < args.long_factor <= 1000:
        ap.error("--scale 0..100, --tasks 2..256, --long-factor 1..1000")
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "little")
    rng = random.Random(seed)
    per_kind = []
    wall0 = time.monotonic()
    for kind in kinds:
        short_units = max(1, round(SHORT_UNITS * args.scale))
        per_kind.append(run_kind(kind, args.tasks, short_units, args.long_factor, rng.randrange(args.tasks), seed))
    wall = time.monotonic() - wall0
    errors = [f"{k['kind']}: {e}" for k in per_kind for e in k["errors"]]
    metrics: dict[str, float] = {
        "makespan_s": round(sum(k["makespan_s"] for k in per_kind), 4),
        "mean_completion_s": round(sum(k["mean_completion_s"] for k in per_kind) / len(per_kind), 4),
        "long_done_s": round(sum(k["long_done_s"] for k in per_kind), 4),
        "wall_s": round(wall, 4),
    }
    for k in per_kind:
        metrics[f"makespan_{k['kind']}_s"] = k["makespan_s"]
    result = {
        "workload": "batch",
        "ok": not errors,
        "metrics": metrics,
        "params": {
            "kinds": kinds,
            "scale": args.scale,
            "tasks": args.tasks,
            "long_factor": args.long_factor,
            "seed": seed,
        },
        "kinds": per_kind,
        "errors": errors,
    }
    print(json.dumps(result), flush=True)
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
