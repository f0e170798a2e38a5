# SPDX-License-Identifier: Apache-2.0
"""Tier 2 profiling tools: perf stat, pidstat, strace -c and a top-like snapshot.

Each tool is run with an argv list (no shell), a hard time limit and bounded output, and its text
is parsed into a small dict. A missing tool or facility gives {"available": false, "reason": ...}
rather than an exception, so an agent can move on to another tool.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

import psutil

from schedcp.errors import UsageError
from schedcp.node import observe

MAX_TOOL_S = 60.0
TOOL_OUTPUT_CAP = 64 * 1024
PERF_EVENTS = ("task-clock", "context-switches", "cpu-migrations", "page-faults", "cycles", "instructions")


def _check_duration(duration_s: float) -> float:
    d = float(duration_s)
    if not 0.1 <= d <= MAX_TOOL_S:
        raise UsageError(f"duration_s={duration_s} is out of range", f"use 0.1..{MAX_TOOL_S:.0f}")
    return d


def _check_pids(pids: list[int]) -> list[int]:
    if not pids or len(pids) > 64:
        raise UsageError("give 1..64 pids", "e.g. --pid 1234")
    out = []
    for p in pids:
        if isinstance(p, bool) or not isinstance(p, int) or p <= 0:
            raise UsageError(f"invalid pid {p!r}", "pass positive integers")
        if not os.path.isdir(f"/proc/{p}"):
            raise UsageError(f"no process with pid {p}", "list processes with the top tool")
        out.append(p)
    return out


def _tree(pids: list[int], limit: int = 64) -> list[int]:
    """The given processes and their descendants: tools attached to a parent alone miss its workers."""
    return sorted(observe.TreeTracker(_check_pids(pids)).refresh())[:limit]


def _run(argv: list[str], timeout_s: float, *, interrupt_after: float | None = None) -> dict[str, Any]:
    """Run a tool; optionally SIGINT it after `interrupt_after` seconds (tools that print on exit)."""
    proc = subprocess.Popen(
        argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    out, err = observe._Tail(TOOL_OUTPUT_CAP // 2), observe._Tail(TOOL_OUTPUT_CAP // 2)
    readers = [
        threading.Thread(target=observe._drain, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=observe._drain, args=(proc.stderr, err), daemon=True),
    ]
    for t in readers:
        t.start()
    timed_out = False
    if interrupt_after is not None:
        try:
            proc.wait(timeout=interrupt_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    for t in readers:
        t.join(timeout=5)
    return {"code": proc.returncode, "stdout": out.text(), "stderr": err.text(), "timed_out": timed_out}


def _missing(tool: str, package: str) -> dict[str, Any]:
    return {"available": False, "tool": tool, "reason": f"{tool} is not installed (apt-get install {package})"}


# -- perf stat ------------------------------------------------------------------------------------
def parse_perf_csv(text: str) -> dict[str, Any]:
    counters: dict[str, Any] = {}
    unsupported: list[str] = []
    for line in text.splitlines():
        parts = line.split(",")
        if len(parts) < 3 or line.startswith("#"):
            continue
        value, _unit, event = parts[0].strip(), parts[1].strip(), parts[2].strip()
        event = event.split(":")[0]
        if not event:
            continue
        if value.startswith("<not supported"):
            unsupported.append(event)
            continue
        if value.startswith("<not counted"):
            counters[event] = 0  # enabled but the task never ran during the window
            continue
        try:
            counters[event] = float(value) if "." in value else int(value)
        except ValueError:
            continue
    return {"counters": counters, "not_supported": unsupported}


def perf_stat(pids: list[int] | None = None, duration_s: float = 1.0, argv: list[str] | None = None) -> dict[str, Any]:
    """Software (and, where supported, hardware) counters for pids over a window, or for a command."""
    exe = shutil.which("perf")
    if exe is None:
        return _missing("perf", "linux-perf")
    duration_s = _check_duration(duration_s)
    base = [exe, "stat", "-x", ",", "-e", ",".join(PERF_EVENTS)]
    if argv:
        from schedcp.analysis.sandbox import validate_argv

        cmd = [*base, "--", *validate_argv(argv)]
        t0 = time.monotonic()
        res = _run(cmd, duration_s + 5, interrupt_after=duration_s)
        duration_s = round(time.monotonic() - t0, 3)
    else:
        pids = _tree(list(pids or []))
        cmd = [*base, "-p", ",".join(str(p) for p in pids), "--", "sleep", str(duration_s)]
        res = _run(cmd, duration_s + 10)
    parsed = parse_perf_csv(res["stderr"])
    if not parsed["counters"]:
        return {"available": False, "tool": "perf", "reason": res["stderr"].strip()[-300:] or "no counters"}
    c = parsed["counters"]
    task_ms = float(c.get("task-clock", 0.0))
    out: dict[str, Any] = {"available": True, "tool": "perf stat", "duration_s": duration_s, **parsed}
    if task_ms:
        out["derived"] = {
            "cpus_used": round(task_ms / 1000 / duration_s, 3),
            "ctx_switches_per_cpu_s": round(c.get("context-switches", 0) / (task_ms / 1000), 1),
            "migrations_per_cpu_s": round(c.get("cpu-migrations", 0) / (task_ms / 1000), 1),
        }
    return out


# -- pidstat --------------------------------------------------------------------------------------
def parse_pidstat(text: str) -> list[dict[str, Any]]:
    header: list[str] | None = None
    rows: list[dict[str, Any]] = []
    for line in text.splitlines():
        if line.startswith("#"):
            header = line.lstrip("#").split()
            continue
        if header is None or not line.strip() or line.startswith("Linux"):
            continue
        parts = line.split()
        if len(parts) < len(header):
            continue
        row: dict[str, Any] = {}
        values = [*parts[: len(header) - 1], " ".join(parts[len(header) - 1 :])]
        for key, value in zip(header, values, strict=True):
            try:
                row[key] = float(value) if re.fullmatch(r"-?\d+\.\d+", value) else int(value)
            except ValueError:
                row[key] = value
        rows.append(row)
    return rows


def pidstat(pids: list[int], duration_s: float = 2.0) -> dict[str, Any]:
    """Per-process CPU % and context-switch rates (sysstat's pidstat -u -w), one-second reports."""
    exe = shutil.which("pidstat")
    if exe is None:
        return _missing("pidstat", "sysstat")
    pids = _tree(pids)
    count = max(1, round(_check_duration(duration_s)))
    res = _run([exe, "-h", "-u", "-w", "-p", ",".join(str(p) for p in pids), "1", str(count)], count + 10)
    rows = parse_pidstat(res["stdout"])
    keep = ("PID", "%usr", "%system", "%wait", "%CPU", "CPU", "cswch/s", "nvcswch/s", "Command")
    return {
        "available": True,
        "tool": "pidstat",
        "duration_s": count,
        "rows": [{k: r[k] for k in keep if k in r} for r in rows[-len(pids) * count :][:40]],
    }


# -- strace -c ------------------------------------------------------------------------------------
def parse_strace_summary(text: str, top: int = 12) -> dict[str, Any]:
    rows = []
    total = None
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 5 or not re.fullmatch(r"\d+\.\d+", parts[0]):
            continue
        name = parts[-1]
        try:
            calls = int(parts[3])
        except ValueError:
            continue
        errors = int(parts[4]) if len(parts) == 6 and parts[4].isdigit() else 0
        entry: dict[str, Any] = {
            "syscall": name,
            "time_pct": float(parts[0]),
            "seconds": float(parts[1]),
            "calls": calls,
            "errors": errors,
        }
        if name == "total":
            total = entry
        else:
            rows.append(entry)
    rows.sort(key=lambda r: r["time_pct"], reverse=True)
    return {"syscalls": rows[:top], "total": total}


def strace_summary(
    pids: list[int] | None = None, duration_s: float = 2.0, argv: list[str] | None = None, sandboxed: bool = True
) -> dict[str, Any]:
    """strace -c -f: syscall counts and time, attached to pids for a window or around a command.

    ptrace slows the traced program a lot; keep the window short. A command runs in the sandbox
    unless sandboxed=False.
    """
    exe = shutil.which("strace")
    if exe is None:
        return _missing("strace", "strace")
    duration_s = _check_duration(duration_s)
    if argv:
        from schedcp.analysis.sandbox import SandboxPolicy, bwrap_prefix, validate_argv

        cmd = validate_argv(argv)
        if sandboxed:
            cmd = bwrap_prefix(SandboxPolicy(timeout_s=duration_s)) + cmd
        res = _run([exe, "-c", "-f", "-qq", "--", *cmd], duration_s + 5, interrupt_after=duration_s)
    else:
        pids = _tree(list(pids or []))
        flags = [x for p in pids for x in ("-p", str(p))]
        res = _run([exe, "-c", "-f", "-qq", *flags], duration_s + 10, interrupt_after=duration_s)
    summary = parse_strace_summary(res["stderr"])
    if summary["total"] is None and not summary["syscalls"]:
        if res["stderr"].strip():
            return {"available": False, "tool": "strace", "reason": res["stderr"].strip()[-300:]}
        summary["note"] = "no system calls during the window (pure CPU work, or the process slept throughout)"
    return {"available": True, "tool": "strace -c", "duration_s": duration_s, **summary}


# -- top ------------------------------------------------------------------------------------------
def top_snapshot(n: int = 10, interval_s: float = 0.5, pids: list[int] | None = None) -> dict[str, Any]:
    """A top-like table: the n busiest processes over interval_s (psutil), plus system CPU use."""
    if not 1 <= int(n) <= 100 or not 0.05 <= float(interval_s) <= 10:
        raise UsageError("n must be 1..100 and interval_s 0.05..10", "e.g. n=10, interval_s=0.5")
    procs = []
    for p in psutil.process_iter(["pid", "name"]):
        if pids and p.pid not in pids:
            continue
        try:
            p.cpu_percent(None)
            procs.append(p)
        except psutil.Error:
            continue
    psutil.cpu_percent(None, percpu=True)
    time.sleep(float(interval_s))
    per_cpu = psutil.cpu_percent(None, percpu=True)
    rows = []
    for p in procs:
        try:
            with p.oneshot():
                rows.append(
                    {
                        "pid": p.pid,
                        "name": p.info["name"][:24],
                        "cpu_pct": p.cpu_percent(None),
                        "status": p.status(),
                        "threads": p.num_threads(),
                        "nice": p.nice(),
                        "rss_mb": round(p.memory_info().rss / 2**20, 1),
                        "cpu_num": p.cpu_num(),
                    }
                )
        except psutil.Error:
            continue
    rows.sort(key=lambda r: r["cpu_pct"], reverse=True)
    load = os.getloadavg()
    return {
        "available": True,
        "tool": "top",
        "interval_s": interval_s,
        "cpu_pct": per_cpu,
        "load": [round(x, 2) for x in load],
        "procs": len(rows),
        "top": rows[: int(n)],
    }
