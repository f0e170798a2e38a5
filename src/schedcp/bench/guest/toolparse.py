# SPDX-License-Identifier: Apache-2.0
"""Read the numbers that real benchmark tools print: hackbench, perf bench, stress-ng, sysbench,
cyclictest.

Standard library only: the same module runs in the guest (``schedcp_workloads.toolparse``, used by
the real-tool benchmarks) and on the host (``schedcp.bench.guest.toolparse``, used when a user
optimises one of these tools directly and names no metric). Metric names say their direction and
unit the way the rest of SchedCP reads them (``*_us`` lower, ``*_per_s`` higher).

The formats parsed are those of Debian stable's packages (rt-tests 2.6, linux-perf 6.12,
stress-ng 0.19, sysbench 1.0.20); each parser returns {} for text it does not recognise.
"""

from __future__ import annotations

import os
import re

_NUM = r"([0-9]+(?:\.[0-9]+)?)"


def hackbench(text: str) -> dict[str, float]:
    """``Time: 1.955`` -> time_s."""
    found = re.findall(rf"^Time:\s*{_NUM}\s*$", text, flags=re.M)
    return {"time_s": float(found[-1])} if found else {}


def perf_bench(text: str) -> dict[str, float]:
    """perf bench sched messaging/pipe: ``Total time: 1.893 [sec]``, ``55.1 usecs/op``, ``18133 ops/sec``."""
    out: dict[str, float] = {}
    m = re.findall(rf"Total time:\s*{_NUM}\s*\[sec\]", text)
    if m:
        out["time_s"] = float(m[-1])
    m = re.findall(rf"^\s*{_NUM}\s+usecs/op", text, flags=re.M)
    if m:
        out["op_latency_us"] = float(m[-1])
    m = re.findall(rf"^\s*{_NUM}\s+ops/sec", text, flags=re.M)
    if m:
        out["ops_per_s"] = float(m[-1])
    return out


_STRESS_ROW = re.compile(
    r"^stress-ng: (?:metrc|info):\s+\[\d+\]\s+([a-z][a-z0-9-]*)\s+(\d+)" + rf"\s+{_NUM}" * 5 + r"\s*$",
    flags=re.M,
)


def stress_ng(text: str) -> dict[str, float]:
    """--metrics-brief rows (stressor, bogo ops, real/usr/sys time, bogo ops/s real and usr+sys).

    Per stressor ``{name}_bogo_ops_per_s``; with one stressor also plain ``bogo_ops_per_s``."""
    out: dict[str, float] = {}
    rows = _STRESS_ROW.findall(text)
    for name, ops, _real, usr, sys_, per_s, _per_cpu in rows:
        key = name.replace("-", "_")
        out[f"{key}_bogo_ops"] = float(ops)
        out[f"{key}_bogo_ops_per_s"] = float(per_s)
        out[f"{key}_cpu_s"] = round(float(usr) + float(sys_), 3)
    if len(rows) == 1:
        out["bogo_ops_per_s"] = float(rows[0][5])
    return out


def sysbench(text: str) -> dict[str, float]:
    """sysbench 1.0 general statistics and latency block."""
    out: dict[str, float] = {}
    fields = {
        "events": rf"total number of events:\s*{_NUM}",
        "total_time_s": rf"total time:\s*{_NUM}s",
        "lat_min_ms": rf"^\s*min:\s*{_NUM}",
        "lat_avg_ms": rf"^\s*avg:\s*{_NUM}",
        "lat_max_ms": rf"^\s*max:\s*{_NUM}",
        "lat_p95_ms": rf"^\s*95th percentile:\s*{_NUM}",
        "cpu_events_per_s": rf"events per second:\s*{_NUM}",
    }
    for key, pattern in fields.items():
        m = re.search(pattern, text, flags=re.M)
        if m:
            out[key] = float(m.group(1))
    if out.get("events") and out.get("total_time_s"):
        out["events_per_s"] = round(out["events"] / out["total_time_s"], 3)
    return out


_CYCLIC_ROW = re.compile(r"^T:\s*\d+\s*\(\s*\d+\)\s*P:\s*\d+.*?C:\s*(\d+).*?Avg:\s*(\d+)\s+Max:\s*(\d+)", re.M)


def cyclictest(text: str) -> dict[str, float]:
    """Per-thread summary lines (``T: 0 (219) P: 0 I:1000 C: 1853 Min: 3 Act: 3908 Avg: 413 Max: 4800``):
    cycles, mean of the thread averages and the overall maximum, in microseconds."""
    rows = [(int(c), int(a), int(m)) for c, a, m in _CYCLIC_ROW.findall(text)]
    if not rows:
        return {}
    cycles = sum(r[0] for r in rows)
    return {
        "wake_cycles": float(cycles),
        "wake_avg_us": round(sum(r[0] * r[1] for r in rows) / max(cycles, 1), 1),
        "wake_max_us": float(max(r[2] for r in rows)),
    }


def histogram_percentiles(text: str, percentiles: tuple[float, ...] = (50, 99, 99.9)) -> dict[str, float]:
    """Percentiles of a cyclictest histogram (``--histfile``: ``us count [count ...]`` per line; the
    ``# Histogram Overflows`` line counts samples beyond the last bucket, taken as the max)."""
    counts: dict[int, int] = {}
    overflow = 0
    max_seen = 0
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# Histogram Overflows:"):
            overflow = sum(int(x) for x in re.findall(r"\d+", line.split(":", 1)[1]))
        elif line.startswith("# Max Latencys:") or line.startswith("# Max Latencies:"):
            max_seen = max([int(x) for x in re.findall(r"\d+", line.split(":", 1)[1])] or [0])
        elif line and line[0].isdigit():
            parts = line.split()
            counts[int(parts[0])] = counts.get(int(parts[0]), 0) + sum(int(x) for x in parts[1:])
    total = sum(counts.values()) + overflow
    if not total:
        return {}
    out: dict[str, float] = {"wake_max_us": float(max_seen)} if max_seen else {}
    ordered = sorted(counts.items())
    for p in percentiles:
        need = total * p / 100.0
        acc = 0
        value = float(max_seen or (ordered[-1][0] if ordered else 0))
        for us, n in ordered:
            acc += n
            if acc >= need:
                value = float(us)
                break
        label = f"{p:g}".replace(".", "")
        out[f"wake_p{label}_us"] = value
    out["wake_samples"] = float(total)
    return out


PARSERS = {
    "hackbench": hackbench,
    "perf": perf_bench,
    "stress-ng": stress_ng,
    "sysbench": sysbench,
    "cyclictest": cyclictest,
}


def parse(program: str, text: str) -> dict[str, float]:
    """Metrics from a known tool's output (program is argv[0], a path or a name); {} otherwise."""
    parser = PARSERS.get(os.path.basename(program))
    return parser(text) if parser else {}
