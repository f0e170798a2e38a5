# SPDX-License-Identifier: Apache-2.0
"""Tier 2: scheduler tracepoint probes attached on demand for a bounded time.

Two backends give the same result shape:

* ``bpftrace`` (host only): aggregation happens in the kernel, so the probe costs little even at
  100k events/s. Tracepoints only (kprobes are unavailable on these hosts).
* ``tracefs`` (host and micro-VM guest, stdlib only; ``schedcp.node.observe.probe``): the kernel
  formats events into a private ftrace instance and user space parses them after the window.

Result (per kind): runqlat / wakeup -> {count, p50_us, p90_us, p99_us, max_us, hist_us};
runtime -> per-task on-CPU and off-CPU time; migrations -> total and CPU pairs. Each probe that
cannot run says why ({"available": false, "reason": ...}) instead of failing the whole call.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
from typing import Any

from schedcp.errors import SchedcpError, UsageError
from schedcp.node import observe

KINDS = observe.PROBE_KINDS
MAX_PROBE_S = 120.0
MAX_TRACKED_PIDS = 256
ATTACH_TIMEOUT_S = 30.0
OUTPUT_CAP = 4 * 1024 * 1024


def validate_kinds(kinds: list[str] | None) -> list[str]:
    kinds = list(kinds or KINDS)
    bad = [k for k in kinds if k not in KINDS]
    if bad:
        raise UsageError(f"unknown probe kind(s) {bad}", f"choose from {list(KINDS)}")
    return kinds


def _filter(expr: str, tracked: bool) -> str:
    return f"@track[{expr}]" if tracked else f"{expr} != 0"


def bpftrace_script(kinds: list[str], pids: list[int] | None = None, follow_tid: int | None = None) -> str:
    """Generate the probe program. Only integers we validated are interpolated into it."""
    tracked = bool(pids) or follow_tid is not None
    lines: list[str] = []
    if pids:
        inits = " ".join(f"@track[{int(p)}] = 1;" for p in pids[:MAX_TRACKED_PIDS])
        lines.append(f"BEGIN {{ {inits} }}")
    if tracked:
        cond = f"@track[args->parent_pid] || args->parent_pid == {int(follow_tid or -1)}"
        lines.append(f"tracepoint:sched:sched_process_fork /{cond}/ {{ @track[args->child_pid] = 1; }}")
    want_q = "runqlat" in kinds
    want_w = "wakeup" in kinds
    want_rt = "runtime" in kinds
    if want_q or want_w:
        body = ("@qt[args->pid] = nsecs; " if want_q else "") + ("@wk[args->pid] = nsecs;" if want_w else "")
        lines.append(
            "tracepoint:sched:sched_wakeup, tracepoint:sched:sched_wakeup_new "
            f"/{_filter('args->pid', tracked)}/ {{ {body} }}"
        )
    if want_q or want_w or want_rt:
        prev = []
        if want_q:
            # Still runnable when switched out (preempted): it waits in the queue from now.
            prev.append("if ((args->prev_state & 0x7f) == 0) { @qt[$p] = nsecs; }")
        if want_rt:
            prev.append("$s = @on[$p]; if ($s) { @oncpu_us[$p] = sum((nsecs - $s) / 1000); delete(@on[$p]); }")
            prev.append("@off[$p] = nsecs;")
        nxt = []
        if want_q:
            nxt.append("$q = @qt[$n]; if ($q) { @runqlat_us = hist((nsecs - $q) / 1000); delete(@qt[$n]); }")
        if want_w:
            nxt.append("$w = @wk[$n]; if ($w) { @wakeup_us = hist((nsecs - $w) / 1000); delete(@wk[$n]); }")
        if want_rt:
            nxt.append("$o = @off[$n]; if ($o) { @offcpu_us[$n] = sum((nsecs - $o) / 1000); delete(@off[$n]); }")
            nxt.append("@on[$n] = nsecs; @switches[$n] = count();")
        lines.append(
            "tracepoint:sched:sched_switch { $p = args->prev_pid; $n = args->next_pid; "
            f"if ({_filter('$p', tracked)}) {{ {' '.join(prev)} }} "
            f"if ({_filter('$n', tracked)}) {{ {' '.join(nxt)} }} }}"
        )
    if "migrations" in kinds:
        lines.append(
            f"tracepoint:sched:sched_migrate_task /{_filter('args->pid', tracked)}/ "
            "{ @migr[args->orig_cpu, args->dest_cpu] = count(); @migr_total = count(); }"
        )
    end = ["print(@runqlat_us);" if want_q else "", "print(@wakeup_us);" if want_w else ""]
    if want_rt:
        end += ["print(@oncpu_us, 8);", "print(@offcpu_us, 8);"]
    if "migrations" in kinds:
        end += ["print(@migr, 8);", "print(@migr_total);"]
    used = [
        m
        for m in (
            "@track",
            "@qt",
            "@wk",
            "@on",
            "@off",
            "@switches",
            "@runqlat_us",
            "@wakeup_us",
            "@oncpu_us",
            "@offcpu_us",
            "@migr",
            "@migr_total",
        )
        if m + "[" in "".join(lines) or m + " =" in "".join(lines)
    ]
    # Clear everything so bpftrace does not dump whole maps (bounded output).
    end.append(" ".join(f"clear({m});" for m in used))
    lines.append("END { " + " ".join(e for e in end if e) + " }")
    return "\n".join(lines) + "\n"


def _hist_summary(buckets: list[dict[str, Any]]) -> dict[str, Any]:
    """p50/p90/p99 from log2 buckets are upper bounds of the bucket holding that rank."""
    hist = {str(int(b.get("min", 0))): int(b.get("count", 0)) for b in buckets if b.get("count")}
    total = sum(hist.values())
    out: dict[str, Any] = {"count": total, "hist_us": hist, "approx": "log2 bucket upper bounds"}
    for q, name in ((0.5, "p50_us"), (0.9, "p90_us"), (0.99, "p99_us"), (1.0, "max_us")):
        need, seen = q * total, 0
        value = 0.0
        for b in buckets:
            seen += int(b.get("count", 0))
            if seen >= need and b.get("count"):
                value = float(b.get("max", b.get("min", 0)))
                break
        out[name] = value
    return out


def parse_bpftrace_json(text: str, kinds: list[str]) -> dict[str, Any]:
    maps: dict[str, Any] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("type") in ("hist", "map", "stats") and isinstance(msg.get("data"), dict):
            for k, v in msg["data"].items():
                if k in maps and isinstance(maps[k], dict) and isinstance(v, dict):
                    maps[k].update(v)
                elif k not in maps:
                    # First print only: at exit bpftrace dumps the maps END cleared again, and a
                    # cleared count reads 0 (the migrations total came back 0 beside 4 in pairs).
                    maps[k] = v
    out: dict[str, Any] = {"kinds": kinds}
    if "runqlat" in kinds:
        out["runqlat"] = _hist_summary(maps.get("@runqlat_us") or [])
    if "wakeup" in kinds:
        out["wakeup"] = _hist_summary(maps.get("@wakeup_us") or [])
    if "runtime" in kinds:
        on, off = maps.get("@oncpu_us") or {}, maps.get("@offcpu_us") or {}
        tids = sorted(on, key=lambda t: on[t], reverse=True)[:8]
        out["runtime"] = {
            "top": [
                {"tid": int(t), "on_cpu_ms": round(on[t] / 1000, 2), "off_cpu_ms": round(off.get(t, 0) / 1000, 2)}
                for t in tids
            ]
        }
    if "migrations" in kinds:
        total = maps.get("@migr_total")
        pairs = maps.get("@migr") or {}
        out["migrations"] = {
            "total": int(total) if isinstance(total, int | float) else sum(pairs.values()),
            "pairs": {k.replace(",", ">"): v for k, v in list(pairs.items())[:8]},
        }
    return out


class BpftraceProbe:
    """A running bpftrace process; start() returns once its probes are attached."""

    def __init__(self, kinds: list[str], pids: list[int] | None = None, follow_tid: int | None = None) -> None:
        self.kinds = validate_kinds(kinds)
        self.pids = [int(p) for p in (pids or [])][:MAX_TRACKED_PIDS]
        self.follow_tid = follow_tid
        self.proc: subprocess.Popen[bytes] | None = None
        self._out = observe._Tail(OUTPUT_CAP)
        self._err = observe._Tail(16384)
        self.started = 0.0
        self.reason = ""

    def start(self) -> bool:
        exe = shutil.which("bpftrace")
        if exe is None:
            self.reason = "bpftrace is not installed (apt-get install bpftrace)"
            return False
        if os.geteuid() != 0:
            self.reason = "bpftrace needs root"
            return False
        tracefs, why = observe._mount_tracefs()
        if tracefs is None:
            self.reason = why
            return False
        script = bpftrace_script(self.kinds, self.pids, self.follow_tid)
        self.proc = subprocess.Popen(
            [exe, "-f", "json", "-e", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        readers = [
            threading.Thread(target=observe._drain, args=(self.proc.stdout, self._out), daemon=True),
            threading.Thread(target=observe._drain, args=(self.proc.stderr, self._err), daemon=True),
        ]
        for t in readers:
            t.start()
        self._readers = readers
        deadline = time.monotonic() + ATTACH_TIMEOUT_S
        while time.monotonic() < deadline:
            if b"attached_probes" in self._out.head:
                self.started = time.monotonic()
                return True
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.reason = "bpftrace did not attach: " + _clean_err(self._err.text())
        self._kill()
        return False

    def _kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()

    def stop(self) -> dict[str, Any]:
        if self.proc is None or not self.started:
            return {"available": False, "backend": "bpftrace", "reason": self.reason or "not started"}
        duration = time.monotonic() - self.started
        self.proc.send_signal(signal.SIGINT)  # bpftrace runs END and prints the maps
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._kill()
        for t in self._readers:
            t.join(timeout=5)
        out = parse_bpftrace_json(self._out.text(), self.kinds)
        out.update({"available": True, "backend": "bpftrace", "duration_s": round(duration, 3)})
        return out


def _clean_err(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip() and "RLIMIT_MEMLOCK" not in ln]
    return " | ".join(lines)[-300:] or "no error output"


def expand_tree(pids: list[int]) -> list[int]:
    """The given processes, their descendants and all their threads (bpftrace tracks thread ids)."""
    members = observe.TreeTracker(list(pids)).refresh()
    tids: set[int] = set(members)
    for pid in members:
        tids.update(observe._list_ints(f"/proc/{pid}/task"))
    return sorted(tids)[:MAX_TRACKED_PIDS]


def run_probe(
    kinds: list[str] | None = None,
    duration_s: float = 2.0,
    pids: list[int] | None = None,
    backend: str = "auto",
    node: Any = None,
) -> dict[str, Any]:
    """Attach the probe for duration_s and return its result.

    backend: "bpftrace" (host), "tracefs" (stdlib, also what the guest uses), or "auto" (bpftrace
    if it attaches, else tracefs with the bpftrace reason recorded). `node` is a NodeClient for a
    remote node (the micro-VM); then only tracefs is available.
    """
    kinds = validate_kinds(kinds)
    if not 0.05 <= float(duration_s) <= MAX_PROBE_S:
        raise UsageError(f"duration_s={duration_s} is out of range", f"use 0.05..{MAX_PROBE_S:.0f}")
    pids = [int(p) for p in (pids or [])]
    if backend not in ("auto", "bpftrace", "tracefs"):
        raise UsageError(f"unknown backend {backend!r}", "use auto, bpftrace or tracefs")
    if node is not None:
        if backend == "bpftrace":
            return {
                "available": False,
                "backend": "bpftrace",
                "reason": "bpftrace is not in the guest image; use backend tracefs",
            }
        args = {"kinds": kinds, "duration_s": duration_s, "pids": pids or None}
        return node.call("probe", args, timeout_s=duration_s + 60)
    note = None
    if backend in ("auto", "bpftrace"):
        bp = BpftraceProbe(kinds, pids=expand_tree(pids) if pids else None)
        if bp.start():
            time.sleep(duration_s)
            return bp.stop()
        if backend == "bpftrace":
            return {"available": False, "backend": "bpftrace", "reason": bp.reason}
        note = bp.reason
    try:
        out = observe.probe(kinds=kinds, duration_s=duration_s, pids=pids or None)
    except observe.NodeError as exc:
        raise SchedcpError(exc.cause, exc.next_step, code=exc.code) from exc
    if note:
        out["bpftrace_unavailable"] = note
    return out
