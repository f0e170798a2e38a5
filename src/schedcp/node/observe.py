# SPDX-License-Identifier: Apache-2.0
"""Raw workload observation for the node agent: /proc sampling, tracefs probes, bounded file reads.

Standard library only, relative imports only: this file runs on the host as ``schedcp.node.observe``
and inside the micro-VM guest as ``schedcp_node.observe`` (python3.13, nothing else installed).
It collects numbers and keeps every answer bounded; turning them into judgements ("cpu_bound",
"long tail", a goal) happens on the control plane in ``schedcp.analysis``.

Operations (served by the node agent through ``OPS``):

* ``observe_run``    launch an argv (never a shell), sample its process tree until it exits
* ``observe_pids``   sample existing PID trees or a cgroup for a fixed window
  (both also count every task the tree creates from the fork/exit tracepoints, ``ForkCounter``,
  and take each exited task's final counters from the kernel's taskstats, ``TaskExitStats``)
* ``observe_system`` system-wide snapshot over a short window (per-CPU use, PSI, top processes)
* ``probe``          scheduler tracepoints through tracefs (run-queue/wakeup latency, runtime,
                     off-CPU time, migrations) for a bounded time
* ``read_file_safe`` read a file or list a directory under allowed roots only
* ``observe_caps``   which facilities this node has (PSI, schedstat, tracefs, ...)
"""

from __future__ import annotations

import ctypes
import fnmatch
import os
import random
import re
import signal
import socket
import stat
import struct
import subprocess
import threading
import time
from collections import deque
from typing import Any

from .protocol import NodeError

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
NCPU = os.cpu_count() or 1

MIN_INTERVAL_S = 0.02
MAX_DURATION_S = 600.0
DEFAULT_MAX_TASKS = 300
MAX_TASKS_CAP = 2000
MAX_SERIES_POINTS = 120
MAX_LIFETIMES = 4000
OUTPUT_TAIL_BYTES = 2048
# The sampler stretches its interval so that reading /proc never costs more than ~5% of one CPU.
SAMPLER_CPU_SHARE = 0.05
# ... but never by so much that short-lived tasks slip through unseen (emulated guests are slow).
MAX_STRETCHED_INTERVAL_S = 0.3


# ---------------------------------------------------------------------------------------------
# small readers
# ---------------------------------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read()
    except OSError:
        return None


def boottime() -> float:
    """Seconds since boot on the clock /proc start times use (CLOCK_BOOTTIME)."""
    return time.clock_gettime(getattr(time, "CLOCK_BOOTTIME", time.CLOCK_MONOTONIC))


def cpu_times() -> dict[str, list[int]]:
    """Per-CPU jiffies from /proc/stat: {"cpu0": [user, nice, system, idle, iowait, irq, softirq, steal]}."""
    out: dict[str, list[int]] = {}
    for line in (_read("/proc/stat") or "").splitlines():
        if line.startswith("cpu"):
            parts = line.split()
            out[parts[0]] = [int(x) for x in parts[1:9]] + [0] * max(0, 8 - len(parts[1:9]))
    return out


def stat_counters() -> dict[str, int]:
    """System counters from /proc/stat: processes (forks since boot), ctxt, procs_running/blocked."""
    out: dict[str, int] = {}
    for line in (_read("/proc/stat") or "").splitlines():
        key, _, rest = line.partition(" ")
        if key in ("processes", "ctxt", "procs_running", "procs_blocked", "btime"):
            try:
                out[key] = int(rest.split()[0])
            except (ValueError, IndexError):
                pass
    return out


def loadavg() -> list[float]:
    parts = (_read("/proc/loadavg") or "").split()
    try:
        return [float(x) for x in parts[:3]]
    except ValueError:
        return []


def pressure() -> dict[str, Any]:
    """PSI from /proc/pressure/{cpu,io,memory}; {"available": False, "reason": ...} when absent."""
    if not os.path.isdir("/proc/pressure"):
        return {"available": False, "reason": "no /proc/pressure (kernel without CONFIG_PSI, or psi=0)"}
    out: dict[str, Any] = {"available": True}
    for res in ("cpu", "io", "memory"):
        text = _read(f"/proc/pressure/{res}")
        if text is None:
            out[res] = None
            continue
        entry: dict[str, dict[str, float]] = {}
        for line in text.splitlines():
            kind, *fields = line.split()
            values: dict[str, float] = {}
            for f in fields:
                k, _, v = f.partition("=")
                try:
                    values[k] = float(v)
                except ValueError:
                    continue
            entry[kind] = values
        out[res] = entry
    if all(out.get(r) is None for r in ("cpu", "io", "memory")):
        return {"available": False, "reason": "/proc/pressure exists but cannot be read (PSI disabled?)"}
    return out


def meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    for line in (_read("/proc/meminfo") or "").splitlines():
        key, _, rest = line.partition(":")
        if key in ("MemTotal", "MemAvailable", "SwapTotal", "SwapFree", "Dirty"):
            try:
                out[key] = int(rest.split()[0])
            except (ValueError, IndexError):
                pass
    return out


def _parse_stat(text: str) -> tuple[str, list[str]] | None:
    """Split /proc/PID/stat into (comm, fields after comm); comm may contain spaces and parens."""
    lpar, rpar = text.find("("), text.rfind(")")
    if lpar < 0 or rpar < 0:
        return None
    return text[lpar + 1 : rpar], text[rpar + 2 :].split()


def _status_fields(text: str, keys: tuple[str, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in keys:
            try:
                out[key] = int(rest.split()[0])
            except (ValueError, IndexError):
                pass
    return out


def _migrations(text: str | None) -> int | None:
    if not text:
        return None
    m = re.search(r"^se\.nr_migrations\s*:\s*(\d+)", text, re.M)
    return int(m.group(1)) if m else None


def read_task(pid: int, tid: int, *, with_sched: bool = True) -> dict[str, Any] | None:
    """One thread's scheduler-relevant counters; None if it vanished."""
    base = f"/proc/{pid}/task/{tid}"
    raw = _read(f"{base}/stat")
    parsed = _parse_stat(raw) if raw else None
    if parsed is None:
        return None
    comm, f = parsed
    try:
        # f[0] is field 3 (state); field N is f[N-3].
        task: dict[str, Any] = {
            "comm": comm,
            "state": f[0],
            "ppid": int(f[1]),
            "cpu_ticks": int(f[11]) + int(f[12]),
            "start": int(f[19]) / CLK_TCK,
            "cpu": int(f[36]) if len(f) > 36 else None,
            "blkio_ticks": int(f[39]) if len(f) > 39 else 0,
        }
    except (IndexError, ValueError):
        return None
    ss = (_read(f"{base}/schedstat") or "").split()
    if len(ss) >= 3:
        task["run_ns"], task["wait_ns"], task["slices"] = int(ss[0]), int(ss[1]), int(ss[2])
    else:
        task["run_ns"] = task["cpu_ticks"] * 1_000_000_000 // CLK_TCK
        task["wait_ns"], task["slices"] = None, None
    st = _status_fields(_read(f"{base}/status") or "", ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"))
    task["vcs"] = st.get("voluntary_ctxt_switches", 0)
    task["ivcs"] = st.get("nonvoluntary_ctxt_switches", 0)
    task["migrations"] = _migrations(_read(f"{base}/sched")) if with_sched else None
    return task


def read_process_extras(pid: int) -> dict[str, int]:
    """Process-wide numbers (memory, I/O bytes) that are the same for every thread."""
    st = _status_fields(_read(f"/proc/{pid}/status") or "", ("VmRSS", "VmHWM", "Threads"))
    io = _status_fields(_read(f"/proc/{pid}/io") or "", ("read_bytes", "write_bytes"))
    return {
        "rss_kb": st.get("VmRSS", 0),
        "hwm_kb": st.get("VmHWM", 0),
        "read_bytes": io.get("read_bytes", 0),
        "write_bytes": io.get("write_bytes", 0),
    }


def _list_ints(path: str) -> list[int]:
    try:
        return [int(n) for n in os.listdir(path) if n.isdigit()]
    except OSError:
        return []


def _ppid_of(pid: int) -> int | None:
    raw = _read(f"/proc/{pid}/stat")
    parsed = _parse_stat(raw) if raw else None
    if parsed is None:
        return None
    try:
        return int(parsed[1][1])
    except (IndexError, ValueError):
        return None


def cmdline(pid: int, limit: int = 160) -> str:
    raw = _read(f"/proc/{pid}/cmdline") or ""
    return raw.replace("\x00", " ").strip()[:limit]


# ---------------------------------------------------------------------------------------------
# cgroups
# ---------------------------------------------------------------------------------------------
CGROUP_ROOT = "/sys/fs/cgroup"


def resolve_cgroup(path: str) -> str:
    """A cgroup directory under /sys/fs/cgroup (v2, or a v1 hierarchy) holding cgroup.procs."""
    if not isinstance(path, str) or not path or "\x00" in path or len(path) > 1024:
        raise NodeError("bad_cgroup", "cgroup must be a non-empty path", "e.g. /sys/fs/cgroup/system.slice")
    if ".." in path.split("/"):
        raise NodeError("bad_cgroup", f"cgroup path {path!r} contains '..'", "use a plain cgroup path")
    candidates = (
        [path]
        if path.startswith(CGROUP_ROOT)
        else [
            os.path.join(CGROUP_ROOT, path.lstrip("/")),
            os.path.join(CGROUP_ROOT, "unified", path.lstrip("/")),
            os.path.join(CGROUP_ROOT, "cpu", path.lstrip("/")),
            os.path.join(CGROUP_ROOT, "pids", path.lstrip("/")),
        ]
    )
    root = os.path.realpath(CGROUP_ROOT)
    for cand in candidates:
        real = os.path.realpath(cand)
        if (real == root or real.startswith(root + "/")) and os.path.isfile(os.path.join(real, "cgroup.procs")):
            return real
    raise NodeError("no_cgroup", f"no cgroup at {path!r}", f"list the cgroups under {CGROUP_ROOT}")


def cgroup_pids(path: str) -> list[int]:
    text = _read(os.path.join(path, "cgroup.procs")) or ""
    return [int(x) for x in text.split() if x.isdigit()]


def cgroup_cpu_usec(path: str) -> int | None:
    """Cumulative CPU of a cgroup: cpu.stat usage_usec (v2) or cpuacct.usage (v1, ns)."""
    text = _read(os.path.join(path, "cpu.stat"))
    if text:
        m = re.search(r"^usage_usec (\d+)", text, re.M)
        if m:
            return int(m.group(1))
    text = _read(os.path.join(path, "cpuacct.usage"))
    if text and text.strip().isdigit():
        return int(text.strip()) // 1000
    return None


# ---------------------------------------------------------------------------------------------
# the process-tree sampler
# ---------------------------------------------------------------------------------------------
class TreeTracker:
    """Which PIDs belong to the workload: roots, their descendants, and/or a cgroup's members.

    Each sample lists /proc once and reads the parent of PIDs it has not seen before, so the cost
    per sample grows with the number of *new* processes, not with the size of the system.
    """

    def __init__(self, roots: list[int], cgroup: str | None = None, follow_children: bool = True) -> None:
        self.members: set[int] = set(roots)
        self.cgroup = cgroup
        self.follow = follow_children
        self._foreign: set[int] = set()

    def refresh(self) -> set[int]:
        alive = set(_list_ints("/proc"))
        if self.cgroup:
            self.members.update(cgroup_pids(self.cgroup))
        if self.follow:
            new = sorted(alive - self.members - self._foreign)
            # Ascending PID order usually visits parents before children; repeat once for the rest.
            for _ in range(2):
                pending = []
                for pid in new:
                    ppid = _ppid_of(pid)
                    if ppid in self.members:
                        self.members.add(pid)
                    elif ppid is not None:
                        pending.append(pid)
                new = pending
            self._foreign.update(new)
        self._foreign &= alive
        return self.members & alive


class Sampler:
    """Samples every thread of the tracked tree; keeps first/last counters per task and a series."""

    def __init__(self, tracker: TreeTracker, *, interval_s: float, max_tasks: int, exclude: set[int]) -> None:
        self.tracker = tracker
        self.interval_s = max(MIN_INTERVAL_S, float(interval_s))
        self.max_tasks = max(1, min(int(max_tasks), MAX_TASKS_CAP))
        self.exclude = exclude
        self.t0 = boottime()
        self.tasks: dict[int, dict[str, Any]] = {}  # tid -> record
        self.procs: dict[int, dict[str, Any]] = {}  # pid -> process record
        self.series: list[list[float]] = []
        self.samples = 0
        self.cost_s = 0.0
        self.light_cost_s = 0.0
        self._last_full = -1e9
        self.peak_alive = 0
        self._prev_tot: tuple[int, int] | None = None
        self._prev_t: float | None = None
        self.live_tids: set[int] = set()  # threads alive at the latest sample

    def sample(self, full: bool = True) -> None:
        """A full sample reads every task; a light one only records tasks not seen before.

        Light samples run at the requested interval even when full ones are stretched, so
        short-lived processes are still discovered (with their start time) on slow machines.
        """
        c0 = time.process_time()
        now = boottime()
        pids = self.tracker.refresh() - self.exclude
        if not full:
            pids = {p for p in pids if p not in self.procs}
            for pid in pids:
                tids = _list_ints(f"/proc/{pid}/task")
                if not tids:
                    continue
                self.procs[pid] = {"pid": pid, "first": now, "last": now, "cmd": cmdline(pid), "threads": len(tids)}
                self.procs[pid].update(read_process_extras(pid))
                for tid in tids:
                    task = read_task(pid, tid)
                    if task is not None:
                        self._record(pid, tid, task, now)
                        self.live_tids.add(tid)
            self.light_cost_s += time.process_time() - c0
            return
        alive_tids = 0
        self.live_tids = set()
        states = {"R": 0, "D": 0}
        tot_run, tot_cs = 0, 0
        with_sched = self.samples % 2 == 0  # /proc/PID/sched is the largest file; every other sample
        for pid in pids:
            tids = _list_ints(f"/proc/{pid}/task")
            proc = self.procs.get(pid)
            if proc is None and tids:
                proc = self.procs[pid] = {"pid": pid, "first": now, "cmd": cmdline(pid), "threads": 0}
            if proc is None:
                continue
            proc["last"] = now
            proc["threads"] = max(proc["threads"], len(tids))
            if "rss_kb" not in proc or self.samples % 5 == 0:  # memory and I/O move slowly
                proc.update(read_process_extras(pid))
            for tid in tids:
                task = read_task(pid, tid, with_sched=with_sched or tid not in self.tasks)
                if task is None:
                    continue
                alive_tids += 1
                self.live_tids.add(tid)
                self._record(pid, tid, task, now)
                if task["state"] in states:
                    states[task["state"]] += 1
                rec = self.tasks[tid]
                tot_run += rec["last"]["run_ns"]
                tot_cs += rec["last"]["vcs"] + rec["last"]["ivcs"]
        for rec in self.tasks.values():
            if rec["last_seen"] != now:
                # Exited tasks keep contributing their final counters so deltas stay monotonic.
                tot_run += rec["last"]["run_ns"]
                tot_cs += rec["last"]["vcs"] + rec["last"]["ivcs"]
        self.peak_alive = max(self.peak_alive, alive_tids)
        t_rel = now - self.t0
        if self._prev_tot is not None and self._prev_t is not None:
            dt = max(now - self._prev_t, 1e-6)
            self.series.append(
                [
                    round(t_rel, 3),
                    round((tot_run - self._prev_tot[0]) / 1e9 / dt, 3),  # CPUs busy with the workload
                    round((tot_cs - self._prev_tot[1]) / dt, 1),  # context switches per second
                    alive_tids,
                    states["R"],
                    states["D"],
                ]
            )
        self._prev_tot, self._prev_t = (tot_run, tot_cs), now
        self.samples += 1
        self.cost_s += time.process_time() - c0

    def _record(self, pid: int, tid: int, task: dict[str, Any], now: float) -> None:
        rec = self.tasks.get(tid)
        if rec is None:
            rec = self.tasks[tid] = {
                "pid": pid,
                "tid": tid,
                "comm": task["comm"],
                "ppid": task["ppid"],
                "start": task["start"],
                "first_seen": now,
                "first": task,
                "states": {},
            }
        if task.get("migrations") is None and rec.get("last"):
            task["migrations"] = rec["last"].get("migrations")
        rec["last"], rec["last_seen"] = task, now
        rec["comm"] = task["comm"]
        rec["states"][task["state"]] = rec["states"].get(task["state"], 0) + 1

    def tick(self) -> bool:
        """Sample: fully when the (possibly stretched) interval has passed, lightly otherwise."""
        now = time.monotonic()
        full = now - self._last_full >= self.next_sleep() - 1e-3
        if full:
            self._last_full = now
        self.sample(full=full)
        return full

    def next_sleep(self) -> float:
        # Self-limiting: if a sample is expensive (thousands of tasks), sample less often.
        per_sample = self.cost_s / max(self.samples, 1)
        stretched = min(per_sample / SAMPLER_CPU_SHARE, max(MAX_STRETCHED_INTERVAL_S, 2 * per_sample))
        return max(self.interval_s, stretched)

    def final_exit_times(self, end: float) -> None:
        """Tasks gone before the end exited somewhere between their last sample and the next one."""
        for rec in self.tasks.values():
            rec["exited"] = rec["last_seen"] < end - 1e-9
        for proc in self.procs.values():
            proc["exited"] = proc["last"] < end - 1e-9

    def apply_exits(self, exits: dict[int, dict[str, int]]) -> int:
        """Replace the last sampled counters of exited tasks with the kernel's final ones.

        A task's counters were read at its last sample, up to an interval (more on a starved
        machine) before it exited; the CPU it used after that was lost. Returns how many were fixed.
        """
        fixed = 0
        for tid, final in exits.items():
            rec = self.tasks.get(tid)
            if rec is None or not rec.get("exited"):
                continue
            last = dict(rec["last"])
            for key in EXIT_COUNTERS:
                if final[key] >= (last.get(key) or 0):  # counters only grow: else the tid was reused
                    last[key] = final[key]
            rec["last"] = last
            rec["exit_at"] = rec["start"] + final["elapsed_us"] / 1e6
            fixed += 1
        return fixed

    def report(self, window_start: float) -> dict[str, Any]:
        """Bounded task list (largest CPU users first) plus totals over all tasks."""
        rows = []
        totals = {"run_ns": 0, "wait_ns": 0, "slices": 0, "vcs": 0, "ivcs": 0, "migrations": 0, "blkio_ticks": 0}
        boot_now = boottime()
        half = self.interval_s / 2
        for rec in self.tasks.values():
            first, last = rec["first"], rec["last"]
            # Tasks born inside the window count from zero; older ones count from our first look.
            born_inside = rec["start"] >= window_start - 1.0 / CLK_TCK
            base = None if born_inside else first
            row = {
                "pid": rec["pid"],
                "tid": rec["tid"],
                "ppid": rec["ppid"],
                "comm": rec["comm"][:32],
                "start_s": round(rec["start"] - self.t0, 3),
                "end_s": round(
                    (rec["exit_at"] if "exit_at" in rec else rec["last_seen"] + (half if rec.get("exited") else 0.0))
                    - self.t0,
                    3,
                ),
                "born_inside": born_inside,
                "exited": bool(rec.get("exited")),
                "states": rec["states"],
            }
            for key in ("run_ns", "wait_ns", "slices", "vcs", "ivcs", "migrations", "blkio_ticks"):
                lv = last.get(key)
                if lv is None:
                    row[key] = None
                    continue
                bv = base.get(key) if base else 0
                row[key] = max(0, lv - (bv or 0))
                totals[key] += row[key]
            rows.append(row)
        rows.sort(key=lambda r: r["run_ns"] or 0, reverse=True)
        lifetimes = []
        for proc in self.procs.values():
            tid_rec = self.tasks.get(proc["pid"])
            if tid_rec and tid_rec["start"] >= window_start - 1.0 / CLK_TCK and proc.get("exited"):
                lifetimes.append(round(proc["last"] + half - tid_rec["start"], 4))
        rss = sum(p.get("rss_kb", 0) for p in self.procs.values() if not p.get("exited"))
        return {
            "tasks": rows[: self.max_tasks],
            "tasks_dropped": max(0, len(rows) - self.max_tasks),
            "totals": totals,
            "procs_seen": len(self.procs),
            "threads_seen": len(self.tasks),
            "peak_alive": self.peak_alive,
            "alive_at_end": sum(1 for p in self.procs.values() if not p.get("exited")),
            "lifetimes_s": lifetimes[:MAX_LIFETIMES],
            "memory": {
                "rss_kb_end": rss,
                "peak_hwm_kb": max((p.get("hwm_kb", 0) for p in self.procs.values()), default=0),
            },
            "io": {
                "read_bytes": sum(p.get("read_bytes", 0) for p in self.procs.values()),
                "write_bytes": sum(p.get("write_bytes", 0) for p in self.procs.values()),
            },
            "processes": _top_processes(self.procs, self.tasks, 8),
            "series": _downsample(self.series, MAX_SERIES_POINTS),
            "samples": self.samples,
            "interval_s": self.interval_s,
            "sampler_cpu_s": round(self.cost_s + self.light_cost_s, 4),
            "clock_boot_s": round(boot_now, 3),
        }


def _top_processes(procs: dict[int, dict[str, Any]], tasks: dict[int, dict[str, Any]], n: int) -> list[dict]:
    by_pid: dict[int, int] = {}
    for rec in tasks.values():
        by_pid[rec["pid"]] = by_pid.get(rec["pid"], 0) + rec["last"]["run_ns"]
    top = sorted(procs.values(), key=lambda p: by_pid.get(p["pid"], 0), reverse=True)[:n]
    return [{"pid": p["pid"], "cmd": p["cmd"], "threads": p["threads"], "run_ns": by_pid.get(p["pid"], 0)} for p in top]


def _downsample(series: list[list[float]], limit: int) -> list[list[float]]:
    """Merge neighbouring points (averaging rates, max of counts) until at most `limit` remain."""
    if len(series) <= limit:
        return series
    step = -(-len(series) // limit)
    out = []
    for i in range(0, len(series), step):
        chunk = series[i : i + step]
        n = len(chunk)
        out.append(
            [
                chunk[-1][0],
                round(sum(c[1] for c in chunk) / n, 3),
                round(sum(c[2] for c in chunk) / n, 1),
                max(c[3] for c in chunk),
                max(c[4] for c in chunk),
                max(c[5] for c in chunk),
            ]
        )
    return out


class SystemWindow:
    """System-wide counters at the start and end of a window, and the difference between them."""

    def __init__(self) -> None:
        self.t0 = time.monotonic()
        self.cpu0 = cpu_times()
        self.stat0 = stat_counters()
        self.psi0 = pressure()
        self.running: list[int] = []
        self.blocked: list[int] = []

    def tick(self) -> None:
        st = stat_counters()
        self.running.append(st.get("procs_running", 0))
        self.blocked.append(st.get("procs_blocked", 0))

    def finish(self) -> dict[str, Any]:
        wall = max(time.monotonic() - self.t0, 1e-6)
        cpu1, stat1, psi1 = cpu_times(), stat_counters(), pressure()
        per_cpu, iowait = [], []
        for name in sorted((k for k in cpu1 if k != "cpu"), key=lambda s: int(s[3:] or 0)):
            a, b = self.cpu0.get(name), cpu1[name]
            if a is None:
                continue
            d = [y - x for x, y in zip(a, b, strict=False)]
            total = sum(d) or 1
            per_cpu.append(round(100.0 * (total - d[3] - d[4]) / total, 1))
            iowait.append(round(100.0 * d[4] / total, 1))
        mem = meminfo()
        out: dict[str, Any] = {
            "ncpu": NCPU,
            "wall_s": round(wall, 3),
            "cpu_busy_pct": per_cpu,
            "iowait_pct": iowait,
            "loadavg": loadavg(),
            "forks": stat1.get("processes", 0) - self.stat0.get("processes", 0),
            "ctxt": stat1.get("ctxt", 0) - self.stat0.get("ctxt", 0),
            "procs_running_avg": round(sum(self.running) / len(self.running), 2) if self.running else None,
            "procs_blocked_avg": round(sum(self.blocked) / len(self.blocked), 2) if self.blocked else None,
            "mem_total_mb": mem.get("MemTotal", 0) // 1024,
            "mem_available_mb": mem.get("MemAvailable", 0) // 1024,
            "psi": _psi_window(self.psi0, psi1, wall),
        }
        return out


def _psi_window(a: dict[str, Any], b: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """Stall percentages over the window (from the `total` counters) plus the kernel's avg10."""
    if not b.get("available"):
        return {"available": False, "reason": b.get("reason", "unavailable")}
    out: dict[str, Any] = {"available": True}
    for res in ("cpu", "io", "memory"):
        ra, rb = a.get(res) or {}, b.get(res) or {}
        entry = {}
        for kind in ("some", "full"):
            if kind in rb:
                total_a = (ra.get(kind) or {}).get("total", rb[kind].get("total", 0))
                entry[kind] = {
                    "window_pct": round(max(0.0, rb[kind].get("total", 0) - total_a) / (wall_s * 1e6) * 100, 2),
                    "avg10": rb[kind].get("avg10"),
                }
        out[res] = entry or None
    return out


# ---------------------------------------------------------------------------------------------
# launching a command
# ---------------------------------------------------------------------------------------------
class _Tail:
    """Keeps the first and last bytes of a stream without ever holding more than 2 * cap."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.head = b""
        self.tail: deque[bytes] = deque()
        self.tail_len = 0
        self.total = 0

    def feed(self, data: bytes) -> None:
        self.total += len(data)
        if len(self.head) < self.cap:
            take = self.cap - len(self.head)
            self.head += data[:take]
            data = data[take:]
        if data:
            self.tail.append(data)
            self.tail_len += len(data)
            while self.tail_len - len(self.tail[0]) >= self.cap:
                self.tail_len -= len(self.tail.popleft())

    def text(self) -> str:
        tail = b"".join(self.tail)[-self.cap :]
        omitted = self.total - len(self.head) - len(tail)
        sep = f"\n... [{omitted} bytes omitted] ...\n".encode() if omitted > 0 else b""
        return (self.head + sep + tail).decode(errors="replace")


def _drain(stream: Any, tail: _Tail) -> None:
    try:
        while True:
            chunk = stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536)
            if not chunk:
                return
            tail.feed(chunk)
    except (OSError, ValueError):
        return


def _validate_argv(argv: Any) -> list[str]:
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise NodeError("bad_argv", "argv must be a non-empty list of strings", "pass the command as a list")
    if any("\x00" in a for a in argv) or len(argv) > 4096 or sum(len(a) for a in argv) > 256 * 1024:
        raise NodeError("bad_argv", "argv has a NUL byte or is too large", "pass a plain, short argv list")
    return argv


def _bounded(value: Any, lo: float, hi: float, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise NodeError("bad_args", f"{name} must be a number", f"use {lo}..{hi}") from exc
    if not lo <= v <= hi:
        raise NodeError("bad_args", f"{name}={v} is out of range", f"use {lo}..{hi}")
    return v


def observe_run(
    argv: list[str],
    duration_s: float = 30.0,
    interval_s: float = 0.1,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    max_tasks: int = DEFAULT_MAX_TASKS,
    probe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run argv (no shell) in its own session, sample its tree until it exits or duration_s passes.

    `probe` optionally attaches tracefs tracepoints for the whole run, following the tree:
    {"kinds": ["runqlat", ...]}; its results appear under "probe".
    """
    argv = _validate_argv(argv)
    duration_s = _bounded(duration_s, 0.1, MAX_DURATION_S, "duration_s")
    interval_s = _bounded(interval_s, MIN_INTERVAL_S, 10.0, "interval_s")
    full_env = dict(os.environ)
    if env:
        if not isinstance(env, dict):
            raise NodeError("bad_args", "env must be an object of strings", "")
        full_env.update({str(k): str(v) for k, v in env.items()})
    session = TraceSession.start(probe) if probe else None
    forks = ForkTracer()
    exits = TaskExitStats()
    sysw = SystemWindow()
    window_start = boottime()
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env=full_env,
            start_new_session=True,
        )
    except FileNotFoundError as exc:
        forks.finish()
        exits.close()
        if session:
            session.close()
        raise NodeError("not_found", f"command not found: {argv[0]}", "check the program name and PATH") from exc
    except OSError as exc:
        forks.finish()
        exits.close()
        if session:
            session.close()
        raise NodeError("exec_failed", f"cannot run {argv[0]}: {exc}", "check the command and cwd") from exc
    outs = {"stdout": _Tail(OUTPUT_TAIL_BYTES), "stderr": _Tail(OUTPUT_TAIL_BYTES)}
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, outs["stdout"]), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, outs["stderr"]), daemon=True),
    ]
    for t in readers:
        t.start()
    if stdin is not None and proc.stdin is not None:
        threading.Thread(target=_feed_stdin, args=(proc.stdin, stdin.encode()), daemon=True).start()
    # Every descendant is created by a fork event of the root or of a descendant: tracking the root
    # before the first drain makes the count exact for the whole tree.
    forks.track({proc.pid})
    tracker = TreeTracker([proc.pid])
    sampler = Sampler(tracker, interval_s=interval_s, max_tasks=max_tasks, exclude=set())
    status, rusage, timed_out = None, None, False
    try:
        while True:
            if sampler.tick():
                sysw.tick()
            forks.drain()
            exits.drain(sampler.tasks)
            if session:
                session.track(tracker.members | set(sampler.tasks))
                session.drain()
            pid, status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start >= duration_s:
                timed_out = True
                break
            time.sleep(sampler.interval_s)
    finally:
        wall = time.monotonic() - start
        if status is None or timed_out:
            _kill_group(proc.pid)
            _, status, rusage = os.wait4(proc.pid, 0)
        else:
            _kill_group(proc.pid)  # stragglers the command left behind in its session
        proc.returncode = os.waitstatus_to_exitcode(status)
        forks_out = forks.finish()
        exits_out = exits.finish(sampler.tasks)
        probe_out = session.finish() if session else None
    for t in readers:
        t.join(timeout=2)
    sampler.final_exit_times(boottime())
    exits_out["applied"] = sampler.apply_exits(exits.exits)
    code = proc.returncode
    out: dict[str, Any] = {
        "kind": "run",
        "argv": argv[:16],
        "root_pid": proc.pid,
        "exit_code": code if code >= 0 else 128 - code,
        "signal": -code if code < 0 else None,
        "timed_out": timed_out,
        "wall_s": round(wall, 4),
        "rusage": {
            "cpu_s": round(rusage.ru_utime + rusage.ru_stime, 4),
            "vcs": rusage.ru_nvcsw,
            "ivcs": rusage.ru_nivcsw,
            "maxrss_kb": rusage.ru_maxrss,
        }
        if rusage is not None
        else None,
        "stdout_tail": outs["stdout"].text(),
        "stderr_tail": outs["stderr"].text(),
        "system": sysw.finish(),
        "forks": forks_out,
        "exit_stats": exits_out,
    }
    out.update(sampler.report(window_start))
    if probe_out is not None:
        out["probe"] = probe_out
    return out


def _feed_stdin(pipe: Any, data: bytes) -> None:
    try:
        pipe.write(data)
        pipe.close()
    except OSError:
        pass


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _validate_pids(pids: Any) -> list[int]:
    if pids is None:
        return []
    if not isinstance(pids, list) or len(pids) > 256:
        raise NodeError("bad_args", "pids must be a list of at most 256 integers", "")
    out = []
    for p in pids:
        if isinstance(p, bool) or not isinstance(p, int) or p <= 0:
            raise NodeError("bad_args", f"invalid pid {p!r}", "pass positive integers")
        out.append(p)
    return out


def observe_pids(
    pids: list[int] | None = None,
    cgroup: str | None = None,
    duration_s: float = 3.0,
    interval_s: float = 0.1,
    include_children: bool = True,
    max_tasks: int = DEFAULT_MAX_TASKS,
    probe: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Sample existing processes (and their descendants) or a cgroup's members for a window."""
    roots = _validate_pids(pids)
    cg = resolve_cgroup(cgroup) if cgroup else None
    if not roots and not cg:
        raise NodeError("bad_args", "give pids or a cgroup", 'e.g. {"pids": [1234]}')
    missing = [p for p in roots if not os.path.isdir(f"/proc/{p}")]
    if missing and len(missing) == len(roots) and not cg:
        raise NodeError("no_such_process", f"no process with pid {missing[0]}", "list processes with top")
    duration_s = _bounded(duration_s, 0.1, MAX_DURATION_S, "duration_s")
    interval_s = _bounded(interval_s, MIN_INTERVAL_S, 10.0, "interval_s")
    tracker = TreeTracker(roots, cgroup=cg, follow_children=bool(include_children))
    session = TraceSession.start(probe) if probe else None
    forks = ForkTracer() if include_children else None
    exits = TaskExitStats()
    sysw = SystemWindow()
    window_start = boottime()
    sampler = Sampler(tracker, interval_s=interval_s, max_tasks=max_tasks, exclude={os.getpid()})
    start = time.monotonic()
    try:
        while True:
            if sampler.tick():
                sysw.tick()
            if forks:
                # Tasks that existed before the window (and cgroup members found since) are known
                # from /proc only; what they create from now on comes from the fork events.
                forks.track(sampler.live_tids)
                forks.drain()
            exits.drain(sampler.tasks)
            if session:
                session.track(tracker.members | set(sampler.tasks))
                session.drain()
            if time.monotonic() - start >= duration_s:
                break
            time.sleep(min(sampler.interval_s, max(0.0, duration_s - (time.monotonic() - start))))
    finally:
        forks_out = forks.finish() if forks else None
        exits_out = exits.finish(sampler.tasks)
        probe_out = session.finish() if session else None
    sampler.final_exit_times(boottime())
    exits_out["applied"] = sampler.apply_exits(exits.exits)
    out: dict[str, Any] = {
        "kind": "cgroup" if cg and not roots else "pids",
        "pids": roots[:16],
        "cgroup": cg,
        "wall_s": round(time.monotonic() - start, 4),
        "missing_pids": missing[:16],
        "system": sysw.finish(),
        "exit_stats": exits_out,
    }
    if forks_out is not None:
        out["forks"] = forks_out
    out.update(sampler.report(window_start))
    if probe_out is not None:
        out["probe"] = probe_out
    return out


def _all_process_cpu() -> dict[int, tuple[int, str]]:
    out: dict[int, tuple[int, str]] = {}
    for pid in _list_ints("/proc"):
        raw = _read(f"/proc/{pid}/stat")
        parsed = _parse_stat(raw) if raw else None
        if parsed is None:
            continue
        try:
            out[pid] = (int(parsed[1][11]) + int(parsed[1][12]), parsed[0])
        except (IndexError, ValueError):
            continue
    return out


def observe_system(duration_s: float = 1.0, top: int = 5) -> dict[str, Any]:
    """System-wide window: per-CPU busy/iowait, load, PSI, fork and switch rates, top CPU users."""
    duration_s = _bounded(duration_s, 0.05, 60.0, "duration_s")
    top = int(_bounded(top, 0, 50, "top"))
    sysw = SystemWindow()
    before = _all_process_cpu()
    steps = max(1, int(duration_s / 0.1))
    for _ in range(steps):
        time.sleep(duration_s / steps)
        sysw.tick()
    after = _all_process_cpu()
    out = sysw.finish()
    wall = out["wall_s"]
    users = []
    for pid, (ticks, comm) in after.items():
        delta = ticks - before.get(pid, (0, ""))[0] if pid in before else ticks
        if delta > 0:
            users.append((delta, pid, comm))
    users.sort(reverse=True)
    out["kind"] = "system"
    out["nprocs"] = len(after)
    out["top"] = [
        {"pid": pid, "comm": comm[:32], "cpu_pct": round(100.0 * d / CLK_TCK / wall, 1)} for d, pid, comm in users[:top]
    ]
    out["nthreads"] = _count_threads()
    return out


def _count_threads() -> int | None:
    text = _read("/proc/loadavg") or ""
    m = re.search(r"\d+/(\d+)", text)
    return int(m.group(1)) if m else None


# ---------------------------------------------------------------------------------------------
# tracefs probes (scheduler tracepoints, parsed in user space; no bpftrace needed)
# ---------------------------------------------------------------------------------------------
TRACEFS_CANDIDATES = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
PROBE_KINDS = ("runqlat", "wakeup", "runtime", "migrations")
MAX_TRACE_BYTES = 96 * 1024 * 1024
_EVENT_RE = re.compile(rb"^\s*.+?-(\d+)\s+(?:\(\s*[\d-]+\)\s+)?\[(\d+)\]\s+(?:\S+\s+)?(\d+\.\d+):\s+(\w+):\s(.*)$")
_KV_RE = re.compile(rb"(\w+)=(\S*)")
# sched_switch, anchored on the fields that follow each comm: a task name (up to 15 bytes, any text,
# even " ==> " or "prev_pid=1") cannot move the split or supply a pid, so it cannot hide its switches.
_SWITCH_RE = re.compile(
    rb"^prev_comm=(.*?) prev_pid=(\d+) prev_prio=-?\d+ prev_state=(\S+) ==> "
    rb"next_comm=(.*?) next_pid=(\d+) next_prio=-?\d+$"
)
_session_counter = 0


def _mount_tracefs() -> tuple[str | None, str]:
    for path in TRACEFS_CANDIDATES:
        if os.path.isdir(os.path.join(path, "events", "sched")):
            return path, ""
    target = TRACEFS_CANDIDATES[0]
    if not os.path.isdir(target):
        return None, f"{target} does not exist (kernel without tracefs)"
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        rc = libc.mount(b"tracefs", target.encode(), b"tracefs", 0, None)
        if rc != 0:
            return None, f"cannot mount tracefs at {target}: {os.strerror(ctypes.get_errno())}"
    except (OSError, AttributeError) as exc:
        return None, f"cannot mount tracefs: {exc}"
    if os.path.isdir(os.path.join(target, "events", "sched")):
        return target, ""
    return None, "tracefs has no sched tracepoints (CONFIG_TRACEPOINTS off?)"


def _write(path: str, value: str) -> bool:
    try:
        with open(path, "w") as fh:
            fh.write(value)
        return True
    except OSError:
        return False


class _TraceInstance:
    """A private ftrace instance with some tracepoints enabled and its trace_pipe open.

    Private instances leave the system's own trace buffer alone and let several observations run
    at once. ``events`` are "system/name" pairs; missing optional ones are skipped, a missing
    ``required`` one makes the instance unavailable with a reason.
    """

    def __init__(self, events: tuple[str, ...], required: tuple[str, ...], buffer_kb: int) -> None:
        global _session_counter
        self.events = events
        self.enabled: set[str] = set()
        self.available = False
        self.reason = ""
        self.fd: int | None = None
        self.path: str | None = None
        root, reason = _mount_tracefs()
        if root is None:
            self.reason = reason
            return
        _session_counter += 1
        inst = os.path.join(root, "instances", f"schedcp-{os.getpid()}-{_session_counter}")
        try:
            os.mkdir(inst)
        except OSError as exc:
            self.reason = f"cannot create a tracefs instance: {exc.strerror}"
            return
        self.path = inst
        clocks = _read(os.path.join(inst, "trace_clock")) or ""
        for clock in ("mono", "global"):
            if clock in clocks.replace("[", " ").replace("]", " ").split():
                _write(os.path.join(inst, "trace_clock"), clock)
                break
        _write(os.path.join(inst, "buffer_size_kb"), str(buffer_kb))
        _write(os.path.join(inst, "options", "overwrite"), "0")
        for ev in events:
            if _write(os.path.join(inst, "events", ev, "enable"), "1"):
                self.enabled.add(ev)
        missing = [ev for ev in required if ev not in self.enabled]
        if missing:
            self.reason = f"cannot enable tracepoints {missing}"
            self.close()
            return
        try:
            self.fd = os.open(os.path.join(inst, "trace_pipe"), os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            self.reason = f"cannot open trace_pipe: {exc.strerror}"
            self.close()
            return
        _write(os.path.join(inst, "tracing_on"), "1")
        self.available = True

    def read(self) -> list[bytes]:
        """Everything the kernel has buffered so far (non-blocking)."""
        chunks: list[bytes] = []
        while self.fd is not None:
            try:
                chunk = os.read(self.fd, 1 << 20)
            except OSError:  # BlockingIOError included: nothing more for now
                break
            if not chunk:
                break
            chunks.append(chunk)
        return chunks

    def stop(self) -> None:
        if self.path:
            _write(os.path.join(self.path, "tracing_on"), "0")

    def lost_events(self) -> int:
        lost = 0
        if not self.path:
            return 0
        for cpu_dir in _safe_listdir(os.path.join(self.path, "per_cpu")):
            text = _read(os.path.join(self.path, "per_cpu", cpu_dir, "stats")) or ""
            for key in ("overrun", "dropped events"):
                m = re.search(rf"^{key}: (\d+)", text, re.M)
                if m:
                    lost += int(m.group(1))
        return lost

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None
        if self.path:
            _write(os.path.join(self.path, "tracing_on"), "0")
            for ev in self.events:
                _write(os.path.join(self.path, "events", ev, "enable"), "0")
            try:
                os.rmdir(self.path)
            except OSError:
                pass
            self.path = None


class TraceSession:
    """The sched tracepoints in a private instance, drained while the workload runs.

    Events are copied out of the kernel while they happen (the per-CPU buffers are bounded) and
    parsed afterwards, so parsing cost does not land inside the measured window.
    """

    EVENTS = ("sched_switch", "sched_wakeup", "sched_wakeup_new", "sched_migrate_task", "sched_process_fork")

    def __init__(self, kinds: list[str], buffer_kb: int, system_wide: bool) -> None:
        self.kinds = kinds
        self.system_wide = system_wide
        self.chunks: list[bytes] = []
        self.bytes = 0
        self.dropped_bytes = 0
        self.tracked: set[int] = set()
        self.started = time.monotonic()
        self.trace = _TraceInstance(
            tuple(f"sched/{ev}" for ev in self.EVENTS), ("sched/sched_switch", "sched/sched_wakeup"), buffer_kb
        )
        self.available = self.trace.available
        self.reason = self.trace.reason

    @classmethod
    def start(cls, spec: dict[str, Any] | None, *, system_wide: bool = False) -> TraceSession:
        spec = spec or {}
        kinds = spec.get("kinds") or list(PROBE_KINDS)
        if not isinstance(kinds, list) or any(k not in PROBE_KINDS for k in kinds):
            raise NodeError("bad_probe", f"probe kinds must be among {list(PROBE_KINDS)}", 'e.g. ["runqlat"]')
        buffer_kb = int(_bounded(spec.get("buffer_kb", 8192), 256, 65536, "buffer_kb"))
        return cls(list(kinds), buffer_kb, system_wide)

    def track(self, members: set[int]) -> None:
        """Remember the workload's processes; their threads are added when events are parsed."""
        self.tracked |= members

    def drain(self) -> None:
        for chunk in self.trace.read():
            if self.bytes + len(chunk) > MAX_TRACE_BYTES:
                self.dropped_bytes += len(chunk)
                continue
            self.chunks.append(chunk)
            self.bytes += len(chunk)

    def close(self) -> None:
        self.trace.close()

    def finish(self, top: int = 8) -> dict[str, Any]:
        duration = time.monotonic() - self.started
        if not self.available:
            self.close()
            return {"available": False, "backend": "tracefs", "reason": self.reason}
        self.trace.stop()
        self.drain()
        lost = self.trace.lost_events()
        self.close()
        parse_start = time.process_time()
        result = analyse_events(b"".join(self.chunks), self.kinds, None if self.system_wide else self.tracked, top)
        result.update(
            {
                "available": True,
                "backend": "tracefs",
                "duration_s": round(duration, 3),
                "trace_bytes": self.bytes,
                "lost_events": lost,
                "dropped_bytes": self.dropped_bytes,
                "parse_cpu_s": round(time.process_time() - parse_start, 3),
            }
        )
        return result


CLONE_THREAD = 0x10000
FORK_BUFFER_KB = 512
MAX_FORK_LIFETIMES = 200_000  # lifetimes kept for percentiles; beyond this, a uniform sample
FORK_LIFETIMES_SHIPPED = 1000
_FORK_RE = re.compile(rb" pid=(\d+) child_comm=.* child_pid=(\d+)$")
_EXIT_RE = re.compile(rb" pid=(\d+) prio=-?\d+(?: group_dead=\w+)?$")
_NEWTASK_RE = re.compile(rb"^pid=(\d+) comm=.* clone_flags=([0-9a-fA-F]+) oom_score_adj=-?\d+$")


class ForkCounter:
    """Every task a tree creates, counted from the kernel's fork and exit tracepoints' text.

    Sampling /proc finds a child only if it is alive at some sample, so a process that lives a few
    milliseconds (a fork storm, a build's compiler drivers, a shell loop) is usually missed however
    short the interval, and a slow machine misses more. The kernel emits ``sched_process_fork`` for
    every clone and ``sched_process_exit`` for every exit: following the tracked tree through those
    events counts creation exactly and gives each child's lifetime to the microsecond. Lines are
    parsed as they arrive (a few per task), so memory stays bounded by the live tasks.

    Field patterns are anchored on the fixed parts of each event's format: a task name (at most
    15 bytes, chosen by the workload) cannot contain one, so it cannot forge a pid.
    """

    def __init__(self, flags_known: bool = True) -> None:
        self.flags_known = flags_known  # task_newtask enabled: threads can be told from processes
        self.tracked: set[int] = set()
        self.born: dict[int, float] = {}  # tid -> fork time, for created tasks still alive
        self.is_thread: dict[int, bool] = {}  # from task_newtask, until the matching fork event
        self.created = 0
        self.threads_created = 0
        self.exited = 0
        self.peak_alive = 0
        self.first_fork: float | None = None
        self.last_fork: float | None = None
        self.last_event: float | None = None
        self.alive_area = 0.0  # integral of the number of live created tasks over time
        self.lifetimes: list[float] = []
        self.lifetimes_total = 0
        self._sample = random.Random(0)
        self._partial = b""

    def track(self, tids: set[int]) -> None:
        """Tasks of the workload known from /proc (roots, threads that existed before the window)."""
        self.tracked |= tids

    def feed(self, chunk: bytes) -> None:
        lines = (self._partial + chunk).split(b"\n")
        self._partial = lines.pop()
        for line in lines:
            self._parse(line)

    def flush(self) -> None:
        if self._partial:
            self._parse(self._partial)
            self._partial = b""

    def _parse(self, line: bytes) -> None:
        m = _EVENT_RE.match(line)
        if not m:
            return
        name, body = m.group(4), m.group(5)
        if name == b"task_newtask":
            nt = _NEWTASK_RE.match(body)
            if nt and int(m.group(1)) in self.tracked:  # the header names the creating task
                self.is_thread[int(nt.group(1))] = bool(int(nt.group(2), 16) & CLONE_THREAD)
            return
        ts = float(m.group(3))
        if name == b"sched_process_fork":
            fk = _FORK_RE.search(body)
            if not fk:
                return
            parent, child = int(fk.group(1)), int(fk.group(2))
            thread = self.is_thread.pop(child, False)
            if parent not in self.tracked:
                return
            self._advance(ts)
            self.tracked.add(child)
            self.born[child] = ts
            self.created += 1
            self.threads_created += thread
            self.peak_alive = max(self.peak_alive, len(self.born))
            self.first_fork = ts if self.first_fork is None else self.first_fork
            self.last_fork = ts
        elif name == b"sched_process_exit":
            ex = _EXIT_RE.search(body)
            if not ex:
                return
            tid = int(ex.group(1))
            self.tracked.discard(tid)  # the tid may be reused by an unrelated task
            if tid in self.born:
                self._advance(ts)
            started = self.born.pop(tid, None)
            if started is not None:
                self.exited += 1
                self._keep_lifetime(max(0.0, ts - started))

    def _advance(self, ts: float) -> None:
        if self.last_event is not None:
            self.alive_area += len(self.born) * max(0.0, ts - self.last_event)
        self.last_event = ts

    def _keep_lifetime(self, life: float) -> None:
        self.lifetimes_total += 1
        if len(self.lifetimes) < MAX_FORK_LIFETIMES:
            self.lifetimes.append(life)
            return
        slot = self._sample.randrange(self.lifetimes_total)  # reservoir sampling keeps it uniform
        if slot < MAX_FORK_LIFETIMES:
            self.lifetimes[slot] = life

    def report(self) -> dict[str, Any]:
        lives = sorted(self.lifetimes)
        step = max(1, -(-len(lives) // FORK_LIFETIMES_SHIPPED))
        return {
            "tasks_created": self.created,
            "threads_created": self.threads_created if self.flags_known else None,
            "exited": self.exited,
            "alive_at_end": len(self.born),
            "peak_alive": self.peak_alive,
            "span_s": round((self.last_fork or 0.0) - (self.first_fork or 0.0), 6),
            # Average number of created tasks alive from the first creation to the last event: how
            # continuously the tree has children (a storm keeps some; a trickle mostly has none).
            "mean_alive": round(self.alive_area / (self.last_event - self.first_fork), 3)
            if self.first_fork is not None and self.last_event is not None and self.last_event > self.first_fork
            else 0.0,
            "lifetime_p50_s": round(_pct(lives, 0.5), 6) if lives else None,
            "lifetime_p90_s": round(_pct(lives, 0.9), 6) if lives else None,
            "lifetime_max_s": round(lives[-1], 6) if lives else None,
            "lifetimes_s": [round(x, 6) for x in lives[::step]],
            "lifetimes_total": self.lifetimes_total,
        }


class ForkTracer:
    """A ``ForkCounter`` fed from a private tracefs instance while the workload runs."""

    EVENTS = ("sched/sched_process_fork", "sched/sched_process_exit", "task/task_newtask")

    def __init__(self, buffer_kb: int = FORK_BUFFER_KB) -> None:
        self.trace = _TraceInstance(self.EVENTS, self.EVENTS[:2], buffer_kb)
        self.counter = ForkCounter(flags_known="task/task_newtask" in self.trace.enabled)

    def track(self, tids: set[int]) -> None:
        self.counter.track(tids)

    def drain(self) -> None:
        for chunk in self.trace.read():
            self.counter.feed(chunk)

    def finish(self) -> dict[str, Any]:
        if not self.trace.available:
            self.trace.close()
            return {"available": False, "source": "tracefs", "reason": self.trace.reason}
        self.trace.stop()
        self.drain()
        self.counter.flush()
        lost = self.trace.lost_events()
        self.trace.close()
        return {
            "available": True,
            "source": "tracefs",
            **self.counter.report(),
            "lost_events": lost,
            "complete": lost == 0,
        }


# taskstats: the kernel's own accounting of each task, sent over generic netlink when it exits.
NETLINK_GENERIC = 16
_NLMSG = struct.Struct("=IHHII")  # len, type, flags, seq, pid
_GENL = struct.Struct("=BBH")  # cmd, version, reserved
_NLA = struct.Struct("=HH")  # len, type
NLMSG_ERROR, GENL_ID_CTRL, CTRL_CMD_GETFAMILY, CTRL_ATTR_FAMILY_ID, CTRL_ATTR_FAMILY_NAME = 2, 0x10, 3, 1, 2
NLM_F_REQUEST, NLM_F_ACK = 1, 4
TASKSTATS_CMD_GET, TASKSTATS_CMD_ATTR_REGISTER_CPUMASK, TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK = 1, 3, 4
TASKSTATS_TYPE_PID, TASKSTATS_TYPE_STATS, TASKSTATS_TYPE_AGGR_PID = 1, 3, 4
# Offsets in struct taskstats (linux/taskstats.h; the struct only grows, these hold since version 8):
# cpu_count = run_delay's slices, cpu_delay_total = run-queue wait, cpu_run_virtual_total = the
# scheduler's sum_exec_runtime (the same three numbers as /proc/PID/task/TID/schedstat).
_TS_U64 = {"slices": 16, "wait_ns": 24, "run_ns": 72, "elapsed_us": 144, "vcs": 272, "ivcs": 280}
_TS_AC_PID, _TS_MIN_SIZE = 128, 288
EXIT_COUNTERS = ("run_ns", "wait_ns", "slices", "vcs", "ivcs")
MAX_PENDING_EXITS = 20_000
EXIT_RCVBUF = 8 << 20


def _nla(kind: int, data: bytes) -> bytes:
    size = _NLA.size + len(data)
    return _NLA.pack(size, kind) + data + b"\0" * (-size % 4)


def _nlas(buf: bytes) -> list[tuple[int, bytes]]:
    out, i = [], 0
    while i + _NLA.size <= len(buf):
        size, kind = _NLA.unpack_from(buf, i)
        if size < _NLA.size:
            break
        out.append((kind & 0x3FFF, buf[i + _NLA.size : i + size]))
        i += (size + 3) & ~3
    return out


class TaskExitStats:
    """The final counters of every task that exits while a workload is observed (taskstats).

    The sampler reads a task's counters at each sample, so what a task did between its last sample
    and its exit is lost: on a starved machine a second of CPU. The kernel sends each exiting task's
    own totals to registered listeners (CAP_NET_ADMIN); they replace the stale last sample.
    Exits of tasks not (yet) known to belong to the workload wait in a bounded pending table.
    """

    def __init__(self) -> None:
        self.available = False
        self.reason = ""
        self.lost = 0
        self.exits: dict[int, dict[str, int]] = {}
        self._pending: dict[int, dict[str, int]] = {}
        self._sock: socket.socket | None = None
        self._mask = (_read("/sys/devices/system/cpu/possible") or "").strip()
        self._family = 0
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_GENERIC)
        except OSError as exc:
            self.reason = f"no generic netlink: {exc.strerror}"
            return
        try:
            sock.bind((0, 0))
            for opt in (getattr(socket, "SO_RCVBUFFORCE", 33), socket.SO_RCVBUF):
                try:
                    sock.setsockopt(socket.SOL_SOCKET, opt, EXIT_RCVBUF)
                    break
                except OSError:
                    continue
            sock.settimeout(5.0)
            self._sock = sock
            self._family = self._resolve_family()
            self._request(TASKSTATS_CMD_ATTR_REGISTER_CPUMASK)
            sock.setblocking(False)
            self.available = True
        except OSError as exc:
            self.reason = f"taskstats unavailable: {exc.strerror or exc}"
            self.close()

    def _send(self, kind: int, cmd: int, payload: bytes, seq: int) -> None:
        assert self._sock is not None
        body = _GENL.pack(cmd, 1, 0) + payload
        self._sock.send(_NLMSG.pack(_NLMSG.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK, seq, 0) + body)

    def _answer(self, seq: int) -> bytes:
        """The reply to request `seq` (exit messages of other tasks may arrive first: kept)."""
        assert self._sock is not None
        for _ in range(10_000):
            data = self._sock.recv(1 << 16)
            for kind, body, msg_seq in self._messages(data):
                if msg_seq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", body)[0]
                    if err:
                        raise OSError(err, os.strerror(err))
                return body  # the data reply, or the acknowledgement of a request that has none
            if self._family:
                self._keep(data)
        raise OSError(0, "no answer from the kernel")

    def _request(self, attr: int) -> None:
        self._send(self._family, TASKSTATS_CMD_GET, _nla(attr, self._mask.encode() + b"\0"), attr)
        self._answer(attr)

    def _resolve_family(self) -> int:
        self._send(GENL_ID_CTRL, CTRL_CMD_GETFAMILY, _nla(CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"), 1)
        body = self._answer(1)
        for kind, value in _nlas(body[_GENL.size :]):
            if kind == CTRL_ATTR_FAMILY_ID:
                return int(struct.unpack_from("=H", value)[0])
        raise OSError(0, "no TASKSTATS family (kernel without CONFIG_TASKSTATS)")

    @staticmethod
    def _messages(data: bytes) -> list[tuple[int, bytes, int]]:
        out, i = [], 0
        while i + _NLMSG.size <= len(data):
            size, kind, _flags, seq, _pid = _NLMSG.unpack_from(data, i)
            if size < _NLMSG.size:
                break
            out.append((kind, data[i + _NLMSG.size : i + size], seq))
            i += (size + 3) & ~3
        return out

    def _keep(self, data: bytes) -> None:
        for kind, body, _seq in self._messages(data):
            if kind != self._family:
                continue
            for outer, nested in _nlas(body[_GENL.size :]):
                if outer != TASKSTATS_TYPE_AGGR_PID:
                    continue
                for inner, ts in _nlas(nested):
                    if inner != TASKSTATS_TYPE_STATS or len(ts) < _TS_MIN_SIZE:
                        continue
                    tid = struct.unpack_from("=I", ts, _TS_AC_PID)[0]
                    stats = {k: struct.unpack_from("=Q", ts, off)[0] for k, off in _TS_U64.items()}
                    self._pending[tid] = stats
                    if len(self._pending) > MAX_PENDING_EXITS:
                        del self._pending[next(iter(self._pending))]

    def drain(self, ours: dict[int, Any]) -> None:
        """Read what the kernel sent; keep the exits of tasks in `ours` (tid-keyed)."""
        while self._sock is not None:
            try:
                data = self._sock.recv(1 << 16)
            except BlockingIOError:
                break
            except OSError:  # ENOBUFS: the kernel dropped messages while we were away
                self.lost += 1
                continue
            self._keep(data)
        for tid in [t for t in self._pending if t in ours]:
            self.exits[tid] = self._pending.pop(tid)

    def close(self) -> None:
        if self._sock is None:
            return
        if self.available:
            try:
                self._sock.setblocking(True)
                self._sock.settimeout(2.0)
                self._request(TASKSTATS_CMD_ATTR_DEREGISTER_CPUMASK)
            except OSError:
                pass  # closing the socket unregisters it too, at the kernel's next send
        self._sock.close()
        self._sock = None

    def finish(self, ours: dict[int, Any]) -> dict[str, Any]:
        self.drain(ours)
        self.close()
        if not self.available:
            return {"available": False, "source": "taskstats", "reason": self.reason}
        return {"available": True, "source": "taskstats", "exits": len(self.exits), "overruns": self.lost}


def _safe_listdir(path: str) -> list[str]:
    try:
        return sorted(os.listdir(path))
    except OSError:
        return []


def log2_hist(values_us: list[float]) -> dict[str, int]:
    """Power-of-two microsecond buckets, keyed by the bucket's lower bound ("0", "1", "2", "4", ...)."""
    hist: dict[int, int] = {}
    for v in values_us:
        b = 0 if v < 1 else 1 << (int(v).bit_length() - 1)
        hist[b] = hist.get(b, 0) + 1
    return {str(k): hist[k] for k in sorted(hist)}


def _pct(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return 0.0
    idx = min(len(sorted_vals) - 1, max(0, round(q * (len(sorted_vals) - 1))))
    return sorted_vals[idx]


def _dist(values_us: list[float]) -> dict[str, Any]:
    vals = sorted(values_us)
    return {
        "count": len(vals),
        "p50_us": round(_pct(vals, 0.5), 1),
        "p90_us": round(_pct(vals, 0.9), 1),
        "p99_us": round(_pct(vals, 0.99), 1),
        "max_us": round(vals[-1], 1) if vals else 0.0,
        "mean_us": round(sum(vals) / len(vals), 1) if vals else 0.0,
        "hist_us": log2_hist(vals),
    }


def analyse_events(data: bytes, kinds: list[str], tracked_pids: set[int] | None, top: int = 8) -> dict[str, Any]:
    """Turn sched tracepoint text into latency distributions and per-task times.

    tracked_pids None means system-wide (idle excluded). Otherwise events are kept for the tracked
    processes and any task forked from them during the trace.
    """
    tracked = None if tracked_pids is None else set(tracked_pids)
    runnable_since: dict[int, float] = {}  # tid -> when it became runnable (wakeup or preemption)
    woken_at: dict[int, float] = {}  # tid -> when it was woken (wakeup latency only)
    on_since: dict[int, float] = {}
    off_since: dict[int, float] = {}
    runq_us: list[float] = []
    wake_us: list[float] = []
    per_task: dict[int, list[float]] = {}  # tid -> [on_cpu_us, off_cpu_us, switches_in, migrations]
    comms: dict[int, str] = {}
    migr_total = 0
    migr_pairs: dict[str, int] = {}
    events = 0

    def want(tid: int) -> bool:
        return tid != 0 and (tracked is None or tid in tracked)

    for line in data.split(b"\n"):
        m = _EVENT_RE.match(line)
        if not m:
            continue
        events += 1
        ts = float(m.group(3)) * 1e6
        name, body = m.group(4), m.group(5)
        if name == b"sched_switch":
            sw = _SWITCH_RE.match(body)
            if not sw:
                continue
            prev_comm, prev_pid, prev_state, next_comm, next_pid = sw.groups()
            ppid_, npid = int(prev_pid), int(next_pid)
            if want(ppid_):
                t = per_task.setdefault(ppid_, [0.0, 0.0, 0, 0])
                if ppid_ in on_since:
                    t[0] += ts - on_since.pop(ppid_)
                off_since[ppid_] = ts
                if prev_state.startswith(b"R"):
                    runnable_since[ppid_] = ts  # preempted: still runnable, waiting in the queue
                comms[ppid_] = prev_comm.decode(errors="replace")
            if want(npid):
                t = per_task.setdefault(npid, [0.0, 0.0, 0, 0])
                t[2] += 1
                on_since[npid] = ts
                if npid in off_since:
                    t[1] += ts - off_since.pop(npid)
                if npid in runnable_since:
                    runq_us.append(ts - runnable_since.pop(npid))
                if npid in woken_at:
                    wake_us.append(ts - woken_at.pop(npid))
                comms[npid] = next_comm.decode(errors="replace")
        elif name in (b"sched_wakeup", b"sched_wakeup_new"):
            kv = dict(_KV_RE.findall(body))
            try:
                tid = int(kv[b"pid"])
            except (KeyError, ValueError):
                continue
            if want(tid) and tid not in on_since:
                runnable_since.setdefault(tid, ts)
                woken_at.setdefault(tid, ts)
        elif name == b"sched_migrate_task":
            kv = dict(_KV_RE.findall(body))
            try:
                tid = int(kv[b"pid"])
            except (KeyError, ValueError):
                continue
            if want(tid):
                migr_total += 1
                per_task.setdefault(tid, [0.0, 0.0, 0, 0])[3] += 1
                pair = f"{int(kv.get(b'orig_cpu', b'-1'))}>{int(kv.get(b'dest_cpu', b'-1'))}"
                migr_pairs[pair] = migr_pairs.get(pair, 0) + 1
        elif name == b"sched_process_fork" and tracked is not None:
            fk = _FORK_RE.search(body)  # anchored: a task name cannot forge the parent (see ForkCounter)
            if fk and int(fk.group(1)) in tracked:
                tracked.add(int(fk.group(2)))
    out: dict[str, Any] = {"events": events, "tasks": len(per_task), "kinds": kinds}
    if "runqlat" in kinds:
        out["runqlat"] = _dist(runq_us)
    if "wakeup" in kinds:
        out["wakeup"] = _dist(wake_us)
    if "runtime" in kinds:
        rows = sorted(per_task.items(), key=lambda kv: kv[1][0], reverse=True)
        out["runtime"] = {
            "on_cpu_ms_total": round(sum(v[0] for v in per_task.values()) / 1000, 2),
            "off_cpu_ms_total": round(sum(v[1] for v in per_task.values()) / 1000, 2),
            "top": [
                {
                    "tid": tid,
                    "comm": comms.get(tid, "?")[:24],
                    "on_cpu_ms": round(v[0] / 1000, 2),
                    "off_cpu_ms": round(v[1] / 1000, 2),
                    "switches_in": v[2],
                }
                for tid, v in rows[:top]
            ],
        }
    if "migrations" in kinds:
        pairs = sorted(migr_pairs.items(), key=lambda kv: kv[1], reverse=True)
        out["migrations"] = {"total": migr_total, "pairs": dict(pairs[:top])}
    return out


def probe(
    kinds: list[str] | None = None,
    duration_s: float = 2.0,
    pids: list[int] | None = None,
    cgroup: str | None = None,
    include_children: bool = True,
    buffer_kb: int = 8192,
) -> dict[str, Any]:
    """Attach the sched tracepoints for duration_s, for some PID trees, a cgroup, or system-wide."""
    roots = _validate_pids(pids)
    cg = resolve_cgroup(cgroup) if cgroup else None
    duration_s = _bounded(duration_s, 0.05, 120.0, "duration_s")
    system_wide = not roots and not cg
    session = TraceSession.start({"kinds": kinds or list(PROBE_KINDS), "buffer_kb": buffer_kb}, system_wide=system_wide)
    tracker = None if system_wide else TreeTracker(roots, cgroup=cg, follow_children=bool(include_children))
    deadline = time.monotonic() + duration_s
    try:
        while True:
            if tracker is not None:
                members = tracker.refresh()
                session.track(members)
                for pid in members:
                    session.track(set(_list_ints(f"/proc/{pid}/task")))
            session.drain()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            time.sleep(min(0.1, left))
    finally:
        out = session.finish()
    out["target"] = "system" if system_wide else ({"pids": roots[:16], "cgroup": cg})
    return out


# ---------------------------------------------------------------------------------------------
# bounded, rooted file reading
# ---------------------------------------------------------------------------------------------
DEFAULT_READ_ROOTS = ("/proc", "/sys")
READ_CAP = 1 << 20
# Inside the allowed roots, some files are secrets or raw memory: never readable through here.
DENY_PATTERNS = (
    "/proc/kcore",
    "/proc/kmsg",
    "/proc/kallsyms",
    "/proc/keys",
    "/proc/key-users",
    "/proc/sysrq-trigger",
    "/proc/*/environ",
    "/proc/*/mem",
    "/proc/*/pagemap",
    "/proc/*/task/*/environ",
    "/proc/*/task/*/mem",
    "/proc/*/task/*/pagemap",
    "/proc/*/auxv",
    "/proc/*/task/*/auxv",
    "/sys/firmware/*",
    "/sys/kernel/security/*",
    "/sys/kernel/debug/*",
    "/sys/kernel/tracing/trace_pipe",
    "/sys/kernel/tracing/per_cpu/*",
    "/sys/kernel/tracing/instances/*/trace_pipe",
    "/proc/*/fd/*",
    "/proc/*/task/*/fd/*",
    "/proc/*/map_files/*",
    "/sys/fs/bpf/*",
)


def _check_roots(roots: Any) -> list[str]:
    if roots is None:
        return list(DEFAULT_READ_ROOTS)
    if not isinstance(roots, list) or not roots or len(roots) > 16:
        raise NodeError("bad_args", "roots must be a non-empty list of at most 16 absolute paths", "")
    out = []
    for r in roots:
        if not isinstance(r, str) or not r.startswith("/") or "\x00" in r:
            raise NodeError("bad_args", f"root {r!r} is not an absolute path", "")
        real = os.path.realpath(r)
        if real == "/":
            raise NodeError("bad_args", "'/' cannot be an allowed root", "allow specific directories")
        out.append(real)
    return out


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _open_nofollow(real: str) -> int:
    """Open an already-resolved path one component at a time, refusing any symlink on the way.

    realpath() has removed every symlink; if one appears now (a race), O_NOFOLLOW makes the open fail
    instead of following it outside the allowed roots.
    """
    parts = [p for p in real.split("/") if p]
    fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for i, part in enumerate(parts):
            last = i == len(parts) - 1
            flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
            if not last:
                flags |= os.O_DIRECTORY
            nfd = os.open(part, flags, dir_fd=fd)
            os.close(fd)
            fd = nfd
        return fd
    except BaseException:
        os.close(fd)
        raise


def read_file_safe(
    path: str, roots: list[str] | None = None, max_bytes: int = 65536, offset: int = 0
) -> dict[str, Any]:
    """Read (or list) `path` if, after resolving every symlink, it lies inside one of `roots`."""
    if not isinstance(path, str) or not path or "\x00" in path or len(path) > 4096:
        raise NodeError("bad_path", "path must be a non-empty string without NUL bytes", "")
    if not path.startswith("/"):
        raise NodeError("bad_path", f"{path!r} is not absolute", "give an absolute path such as /proc/loadavg")
    if ".." in path.split("/"):
        raise NodeError("path_traversal", f"{path!r} contains '..'", "use a direct path inside an allowed root")
    allowed = _check_roots(roots)
    max_bytes = int(_bounded(max_bytes, 1, READ_CAP, "max_bytes"))
    offset = int(_bounded(offset, 0, 1 << 40, "offset"))
    real = os.path.realpath(path)
    if not any(_within(real, r) for r in allowed):
        raise NodeError(
            "outside_roots",
            f"{path!r} resolves to {real!r}, outside the allowed roots",
            f"read only under {allowed}",
        )
    if any(fnmatch.fnmatchcase(real, pat) or real == pat for pat in DENY_PATTERNS):
        raise NodeError("denied", f"{real!r} is not readable through the analysis engine", "pick another file")
    try:
        fd = _open_nofollow(real)
    except FileNotFoundError as exc:
        raise NodeError("not_found", f"no such file: {path}", "check the path") from exc
    except OSError as exc:
        raise NodeError("unreadable", f"cannot open {path}: {exc.strerror}", "check the path") from exc
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            names = sorted(os.listdir(fd))
            return {
                "path": path,
                "resolved": real,
                "type": "dir",
                "entries": names[:500],
                "truncated": len(names) > 500,
                "count": len(names),
            }
        if not stat.S_ISREG(st.st_mode):
            raise NodeError("not_regular", f"{path} is not a regular file", "read regular files only")
        if offset:
            os.lseek(fd, offset, os.SEEK_SET)
        chunks, got = [], 0
        while got <= max_bytes:
            chunk = os.read(fd, min(65536, max_bytes + 1 - got))
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        data = b"".join(chunks)
    except BlockingIOError as exc:
        raise NodeError("unreadable", f"{path} would block", "read regular files only") from exc
    except OSError as exc:
        raise NodeError("unreadable", f"cannot read {path}: {exc.strerror}", "check the path") from exc
    finally:
        os.close(fd)
    return {
        "path": path,
        "resolved": real,
        "type": "file",
        "offset": offset,
        "text": data[:max_bytes].decode(errors="replace"),
        "bytes": min(len(data), max_bytes),
        "truncated": len(data) > max_bytes,
    }


# ---------------------------------------------------------------------------------------------
# capabilities
# ---------------------------------------------------------------------------------------------
def observe_caps() -> dict[str, Any]:
    tracefs, reason = _mount_tracefs()
    ss = (_read("/proc/self/schedstat") or "").split()
    return {
        "ncpu": NCPU,
        "psi": pressure().get("available", False),
        "schedstat": len(ss) == 3,
        "sched_migrations": _migrations(_read("/proc/self/sched")) is not None,
        "tracefs": tracefs,
        "tracefs_reason": reason or None,
        "cgroup2": os.path.isfile(os.path.join(CGROUP_ROOT, "cgroup.controllers")),
        "root": os.geteuid() == 0,
    }


OPS = {
    "observe_run": observe_run,
    "observe_pids": observe_pids,
    "observe_system": observe_system,
    "probe": probe,
    "read_file_safe": read_file_safe,
    "observe_caps": observe_caps,
}
