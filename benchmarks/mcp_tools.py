# SPDX-License-Identifier: Apache-2.0
"""What each MCP tool costs an agent: bytes returned per tool and detail level, and call latency.

    .venv/bin/python benchmarks/mcp_tools.py                 # non-VM tools, prints a Markdown report
    .venv/bin/python benchmarks/mcp_tools.py --vm            # also verify_scheduler (needs root for the
                                                             # daemon) and run_in_vm, summary and full
    .venv/bin/python benchmarks/mcp_tools.py --out docs/mcp-benchmark.json

Drives a real `schedcp mcp` over stdio with the SDK's client, exactly as an agent would, against a
fresh repository in a temporary data directory. Bytes are the JSON text the model reads (the
structured copy mirrors it). Latency is client-side wall time per call over `--calls` calls
(p50/p99), after one warm-up call per case so model loading and first-use seeding are excluded;
VM-backed tools are measured once per detail level (bytes and wall time);
cold start is reported separately. Tools whose run time is their own observation window
(workload_summary, workload_profile, run_probe) are listed with that window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import anyio  # noqa: E402
from mcp import Client  # noqa: E402

from schedcp.server.testing import call, isolated_env, stdio_params  # noqa: E402

PROFILE = {
    "summary": "parallel batch of CPU-bound jobs started together",
    "goal": "makespan",
    "characteristics": {"classification": "cpu_bound"},
}


def cases(tmp: Path, source: str) -> list[tuple[str, str, Any]]:
    """(tool, label, args or a callable i -> args) for every tool and detail level measured."""
    counter = iter(range(10**6))
    return [
        ("workload_summary", "system, 0.2 s window", {"duration_s": 0.2}),
        (
            "workload_profile",
            "command, 1 s window, profile",
            {"command": [sys.executable, "-c", "sum(range(2_000_000))"], "duration_s": 1},
        ),
        (
            "workload_profile",
            "command, 1 s window, full",
            {"command": [sys.executable, "-c", "sum(range(2_000_000))"], "duration_s": 1, "detail": "full"},
        ),
        ("read_file", "/proc/loadavg", {"path": "/proc/loadavg"}),
        ("read_file", "/proc/cpuinfo, default 4 KB", {"path": "/proc/cpuinfo"}),
        ("read_file", "/proc/cpuinfo, max_bytes 16384", {"path": "/proc/cpuinfo", "max_bytes": 16384}),
        ("run_sandboxed", "echo (bwrap)", {"argv": ["echo", "hello"]}),
        ("run_sandboxed", "ps -e, default 4 KB", {"argv": ["ps", "-e", "-o", "pid,comm,args"]}),
        ("get_feedback", "empty history", {"workload_key": "bench"}),
        ("search_schedulers", "k=5, default 4 KB", {"query": "parallel build, minimise makespan"}),
        (
            "search_schedulers",
            "k=10, max_bytes 1024",
            {"query": "interactive latency under load", "k": 10, "max_bytes": 1024},
        ),
        (
            "search_schedulers",
            "k=10, max_bytes 16384",
            {"query": "interactive latency under load", "k": 10, "max_bytes": 16384},
        ),
        ("get_scheduler", "summary", {"name": "fifo"}),
        ("get_scheduler", "full, max_bytes 16384", {"name": "fifo", "detail": "full", "max_bytes": 16384}),
        ("list_primitives", "all", {}),
        ("list_primitives", "query, k=3", {"query": "keep long tasks from starving", "k": 3}),
        ("list_primitives", "one snippet, max_bytes 16384", {"name": "aging", "max_bytes": 16384}),
        (
            "add_scheduler",
            "new candidate",
            lambda i: {
                "name": f"bench_{next(counter)}",
                "source": source,
                "parent": "fifo",
                "description": "A fifo copy the benchmark adds to time the repository write path.",
            },
        ),
        (
            "record_result",
            "one result",
            lambda i: {
                "policy": "fifo",
                "profile": PROFILE,
                "metrics": {"makespan_s": 9.0 + i % 3},
                "baseline": {"makespan_s": 10.0},
            },
        ),
        (
            "promote_scheduler",
            "promote/demote",
            lambda i: {
                "name": "locality",
                "direction": "demote" if i % 2 == 0 else "promote",
                "to": "candidate" if i % 2 == 0 else "verified",
                "reason": "benchmark status flip",
            },
        ),
        ("get_scheduler", "error: unknown name", {"name": "no_such_policy"}),
        ("read_file", "error: path traversal", {"path": "/proc/../etc/shadow"}),
    ]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(env: dict[str, str], calls: int, with_vm: bool) -> dict[str, Any]:
    started = time.perf_counter()
    async with Client(stdio_params(env), mode="legacy", read_timeout_seconds=1800) as client:
        tools = (await client.list_tools()).tools
        cold = time.perf_counter() - started
        listing = sum(len(json.dumps(t.model_dump(mode="json", by_alias=True, exclude_none=True))) for t in tools)
        source = (await client.read_resource("schedcp://scheduler/fifo/source")).contents[0].text
        rows = []
        for tool, label, args in cases(Path(tempfile.gettempdir()), source):
            make = args if callable(args) else (lambda _i, a=args: a)
            await call(client, tool, make(-1))  # warm-up: first-use loading is not per-call cost
            times, sizes, errors = [], [], 0
            n = calls if tool not in ("workload_profile",) else max(3, calls // 10)
            for i in range(n):
                t0 = time.perf_counter()
                is_error, _data, text = await call(client, tool, make(i))
                times.append((time.perf_counter() - t0) * 1000)
                sizes.append(len(text.encode()))
                errors += is_error
            rows.append(
                {
                    "tool": tool,
                    "case": label,
                    "calls": n,
                    "bytes_max": max(sizes),
                    "bytes_median": int(statistics.median(sizes)),
                    "p50_ms": round(pct(times, 0.5), 1),
                    "p99_ms": round(pct(times, 0.99), 1),
                    "errors": errors,
                }
            )
            print(
                f"  {tool:<18} {label:<32} {rows[-1]['bytes_max']:>6} B  p50 {rows[-1]['p50_ms']:>7} ms",
                file=sys.stderr,
            )
        vm_rows = []
        if with_vm:
            for detail in ("summary", "full"):
                t0 = time.perf_counter()
                is_error, _data, text = await call(
                    client, "verify_scheduler", {"scheduler": "fifo", "detail": detail, "max_bytes": 16384}
                )
                vm_rows.append(
                    {
                        "tool": "verify_scheduler",
                        "case": f"fifo through the daemon, {detail}",
                        "bytes": len(text.encode()),
                        "wall_s": round(time.perf_counter() - t0, 1),
                        "error": is_error,
                    }
                )
            for detail in ("summary", "full"):
                t0 = time.perf_counter()
                is_error, _data, text = await call(
                    client,
                    "run_in_vm",
                    {
                        "workload": "pingpong",
                        "workload_args": ["--seconds", "1"],
                        "scheduler": "fifo",
                        "detail": detail,
                        "max_bytes": 16384,
                    },
                )
                vm_rows.append(
                    {
                        "tool": "run_in_vm",
                        "case": f"pingpong 1 s vs EEVDF, {detail}",
                        "bytes": len(text.encode()),
                        "wall_s": round(time.perf_counter() - t0, 1),
                        "error": is_error,
                    }
                )
    return {
        "cold_start_s": round(cold, 2),
        "tools": len(tools),
        "tools_list_bytes": listing,
        "rows": rows,
        "vm_rows": vm_rows,
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"Measured {result['date']} on {result['host']} ({result['cpus']} CPUs), {result['calls']} calls per case, "
        "stdio transport, client-side wall time.",
        "",
        f"- `tools/list`: {result['tools']} tools, {result['tools_list_bytes']} bytes of schema and description.",
        f"- cold start (spawn to first `tools/list` answer): {result['cold_start_s']} s.",
        "",
        "| tool | case | bytes (max) | p50 ms | p99 ms |",
        "|---|---|---:|---:|---:|",
    ]
    for r in result["rows"]:
        lines.append(f"| `{r['tool']}` | {r['case']} | {r['bytes_max']} | {r['p50_ms']} | {r['p99_ms']} |")
    if result["vm_rows"]:
        lines += ["", "| tool | case | bytes | wall s |", "|---|---|---:|---:|"]
        for r in result["vm_rows"]:
            lines.append(f"| `{r['tool']}` | {r['case']} | {r['bytes']} | {r['wall_s']} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=30)
    parser.add_argument("--vm", action="store_true", help="also measure run_in_vm (one VM boot per detail level)")
    parser.add_argument("--out", type=Path, help="write the raw results as JSON here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="mcp-bench-") as tmp:
        env = isolated_env(Path(tmp))
        if args.vm:  # verification needs the privileged daemon (run this as root)
            from schedcp.daemon.testing import running_daemon

            with running_daemon(Path(tmp) / "daemon") as daemon:
                env["SCHEDCP_DAEMON_SOCKET"] = str(daemon.path)
                result = anyio.run(measure, env, args.calls, args.vm)
        else:
            result = anyio.run(measure, env, args.calls, args.vm)
    result.update(
        {
            "date": time.strftime("%Y-%m-%d"),
            "host": platform.node() or "host",
            "cpus": os.cpu_count(),
            "calls": args.calls,
        }
    )
    if args.out:
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    sys.stdout.write(markdown(result))
    bad = [r for r in result["rows"] if r["errors"] and not r["case"].startswith("error")]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
