# SPDX-License-Identifier: Apache-2.0
"""Measure the deploy path (docs/deploy.md) on a daemon that owns a micro-VM node.

    .venv/bin/python benchmarks/deploy.py --trips 10 [--json results.json]

* trip-to-restore: a policy that errors in production (comm_trap) is deployed and promoted, then
  tripped by starting a process named trap-me; the breaker's own ``restore_s`` (from the trip
  decision to sysfs confirming the last known good, minimal) and where it went, over N trips;
* the breaker's overhead on the workload: the workload's CPU progress (two busy processes,
  schedstat run time per second) with the daemon idle and while the daemon samples it (the
  baseline phase: same scheduler, EEVDF, plus the breaker's node calls), and the node agent's own
  CPU in the guest in both windows;
* the daemon's CPU and memory on the host, at rest and while watching a promoted policy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil

from schedcp.deploy.testing import WORKLOAD, Daemon

CONFIG = """
[deploy]
window_s = 4
baseline_s = 15
tick_s = 0.5
watchdog_ms = 3000
max_trips = 100
"""
PROBE = (
    "r=0; for p in $(pidof lag-work); do r=$((r + $(cut -d' ' -f1 /proc/$p/schedstat))); done; echo $r; "
    "a=$(ps -o pid,args | grep '[s]chedcp_node' | head -1 | awk '{print $1}'); "
    "echo $(( $(cut -d' ' -f14 /proc/$a/stat) + $(cut -d' ' -f15 /proc/$a/stat) ))"
)


def log(message: str) -> None:
    print(f"· {message}", file=sys.stderr, flush=True)


def guest_counters(d: Daemon) -> tuple[float, float, float]:
    """(host time, workload run seconds, node agent CPU seconds)."""
    out = d.json("node", "run", "--", "sh", "-c", PROBE)
    run_ns, agent_ticks = (int(x) for x in out["stdout"].split())
    return time.monotonic(), run_ns / 1e9, agent_ticks / 100.0


def window(d: Daemon, seconds: float) -> dict[str, float]:
    proc = psutil.Process(d.proc.pid) if d.proc else None
    cpu0 = sum(proc.cpu_times()[:2]) if proc else 0.0
    t0, run0, agent0 = guest_counters(d)
    time.sleep(seconds)
    t1, run1, agent1 = guest_counters(d)
    cpu1 = sum(proc.cpu_times()[:2]) if proc else 0.0
    wall = t1 - t0
    return {
        "wall_s": round(wall, 2),
        "workload_cpu_per_s": round((run1 - run0) / wall, 3),
        "node_agent_cpu_share": round((agent1 - agent0) / wall, 3),
        "daemon_cpu_share": round((cpu1 - cpu0) / wall, 4),
        "daemon_rss_mb": round(proc.memory_info().rss / 2**20, 1) if proc else 0.0,
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trips", type=int, default=10)
    parser.add_argument("--window", type=float, default=12.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="schedcp-deploy-bench-"))
    root.chmod(0o755)
    d = Daemon(root, config=CONFIG)
    results: dict[str, Any] = {"trips": []}
    try:
        log("booting the daemon's VM node")
        d.start()
        d.cli("node", "run", "--", "sh", "-c", WORKLOAD)
        log(f"at rest, {args.window}s")
        results["rest"] = window(d, args.window)
        log("deploying minimal; measuring during its baseline (the breaker sampling, EEVDF running)")
        dep = d.json("deploy", d.sign("minimal"), "--canary-comm", "^lag-work$", "--goal", "cpu_rate")
        time.sleep(1.0)
        results["sampling"] = window(d, min(args.window, 12.0))
        d.wait_for("promotion", lambda s: (s.get("active") or {}).get("state") == "promoted", timeout=300)
        log(f"minimal promoted ({dep['id']}); watching, {args.window}s")
        results["watching"] = window(d, args.window)
        for i in range(args.trips):
            trap = d.json(
                "deploy",
                d.sign("comm_trap"),
                "--canary-comm",
                "^lag-work$",
                "--goal",
                "cpu_rate",
                "--override-refusal",
                "--wait",
                ok=None,
            )
            if trap["state"] != "promoted":
                log(f"trip {i + 1}: comm_trap ended {trap['state']} before the trap ({trap.get('reason')})")
                continue
            d.cli("node", "run", "--", "sh", "-c", "echo -n trap-me > /proc/self/comm; sleep 0.2; echo woke")
            status = d.wait_for(
                "the trip", lambda s, dep_id=trap["id"]: s["trips"] and s["trips"][0]["deployment_id"] == dep_id
            )
            trip = status["trips"][0]
            results["trips"].append(
                {"signal": trip["signal"], "restore_s": trip["restore_s"], "steps": trip["restore_steps"]}
            )
            log(f"trip {i + 1}: {trip['signal']}, restored {trip['restored_to']} in {trip['restore_s']}s")
    finally:
        d.kill(signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)
    restore = sorted(t["restore_s"] for t in results["trips"])
    if restore:
        results["restore_s"] = {
            "n": len(restore),
            "min": restore[0],
            "median": round(statistics.median(restore), 3),
            "p90": restore[min(len(restore) - 1, int(0.9 * len(restore)))],
            "max": restore[-1],
            "median_steps": {
                k: round(statistics.median(t["steps"][k] for t in results["trips"]), 3)
                for k in ("detach_s", "load_s", "confirm_s")
            },
        }
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
