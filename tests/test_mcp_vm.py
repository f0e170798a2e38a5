# SPDX-License-Identifier: Apache-2.0
"""MCP tools that boot the real sched_ext test kernel: the agent's whole loop, using MCP calls only.

Three VM boots in all: the daemon's verification, the measured comparison against EEVDF, and a
submitted-source trial with an argv command.
"""

from __future__ import annotations

import json
import sys

import anyio
import pytest
from mcp import Client

from schedcp.daemon.testing import running_daemon
from schedcp.paths import schedulers_dir
from schedcp.server.testing import call, isolated_env, stdio_params

pytestmark = pytest.mark.vm


def test_agent_loop_summary_search_verify_then_measure_against_eevdf(tmp_path, unstable_kernel):
    """Done-when: workload_summary -> search_schedulers -> verify_scheduler -> run_in_vm vs EEVDF."""
    with running_daemon(tmp_path / "daemon") as daemon:
        env = isolated_env(tmp_path, SCHEDCP_DAEMON_SOCKET=str(daemon.path))
        longtail = ["--tasks", "12", "--short-ms", "40", "--long-factor", "12"]

        async def agent(client: Client) -> dict:
            steps: dict = {}
            # 1. Observe: what does this batch do to the CPUs? (host, sandboxed)
            is_error, summary, text = await call(
                client,
                "workload_summary",
                {"command": [sys.executable, "-m", "schedcp.bench.guest.longtail", *longtail], "duration_s": 20},
            )
            assert not is_error, text
            steps["summary"] = summary
            # 2. Plan: reuse a policy from the repository that suits the class and goal.
            query = f"{summary['summary']} {summary['class'].replace('_', ' ')}, goal {summary['goal']}"[:900]
            is_error, found, text = await call(client, "search_schedulers", {"query": query, "k": 8, "kind": "bpf"})
            assert not is_error, text
            steps["search"] = found
            candidates = [r["name"] for r in found["results"] if r["usable"] and r["kind"] == "bpf"]
            assert candidates, found
            # 3. Verify through the daemon: report plus a token id on pass, never the key. Like an agent,
            #    move on to the next candidate when one fails (each attempt is one VM boot).
            steps["attempts"] = []
            for choice in candidates[:3]:
                is_error, verdict, text = await call(client, "verify_scheduler", {"scheduler": choice})
                assert not is_error, text
                steps["attempts"].append({k: verdict[k] for k in ("scheduler", "verdict", "reason")})
                if verdict["verdict"] == "pass":
                    break
            steps["choice"], steps["verify"] = choice, verdict
            report = json.loads((await client.read_resource(verdict["report_uri"])).contents[0].text)
            steps["report"] = report
            if verdict["verdict"] != "pass":
                return steps
            # 4. Measure in the micro-VM against EEVDF, same boot.
            is_error, run, text = await call(
                client,
                "run_in_vm",
                {"workload": "longtail", "workload_args": longtail, "scheduler": choice, "compare_baseline": True},
            )
            assert not is_error, text
            steps["run"] = run
            # 5. Learn: record the measured outcome.
            metrics = {k: v for k, v in run["scheduler"]["metrics"].items() if isinstance(v, float)}
            baseline = {k: v for k, v in run["baseline"]["metrics"].items() if k in metrics}
            is_error, recorded, text = await call(
                client,
                "record_result",
                {
                    "policy": choice,
                    "metrics": metrics,
                    "baseline": baseline,
                    "profile": {
                        "summary": summary["summary"],
                        "goal": summary["goal"],
                        "characteristics": {"classification": summary["class"]},
                    },
                },
            )
            assert not is_error, text
            steps["recorded"] = recorded
            # 6. The daemon's pass is evidence: a copy of exactly that source may become verified, and the
            #    object the verifier built is bound to it (a reason alone would be refused).
            source = (await client.read_resource(f"schedcp://scheduler/{choice}/source")).contents[0].text
            copy = {"name": f"{choice}_copy", "source": source, "description": f"An unchanged copy of {choice}."}
            is_error, _, text = await call(client, "add_scheduler", copy)
            assert not is_error, text
            reason = {"reason": "the daemon verified this exact source"}
            steps["promote"] = await call(client, "promote_scheduler", {"name": f"{choice}_copy", **reason})
            return steps

        async def main() -> dict:
            async with Client(stdio_params(env), mode="legacy", read_timeout_seconds=1200) as client:
                return await agent(client)

        steps = anyio.run(main)

    # A batch of CPU-bound jobs with a 12x straggler: the analysis must say so, not merely answer.
    assert steps["summary"]["class"] == "cpu_bound" and steps["summary"]["goal"] == "makespan"
    verify = steps["verify"]
    assert verify["verdict"] == "pass", json.dumps(steps["attempts"])
    assert verify["token_id"]
    assert "token" not in steps["report"]["report"] and "private" not in json.dumps(steps["report"]).lower()
    assert {s["name"] for s in verify["stages"]} >= {"build", "static", "kernel_verifier"}
    run = steps["run"]
    assert run["scheduler"]["name"] == steps["choice"] and run["scheduler"]["stayed_enabled"] is True
    assert run["baseline"]["exit_codes"] == [0] and run["scheduler"]["exit_codes"] == [0]
    compared = run["comparison"]["metrics"]
    assert "makespan_s" in compared or any("wall" in m for m in compared), compared
    judged = [m for m in compared.values() if m["ratio"] is not None]
    assert judged and all(m["eevdf"] > 0 and m["scheduler"] > 0 for m in judged)
    assert steps["recorded"]["policy"] == steps["choice"]
    is_error, promoted, text = steps["promote"]
    assert not is_error and (promoted["from"], promoted["to"]) == ("candidate", "verified"), text
    assert promoted["evidence"]["object_sha256"] == steps["report"]["report"]["object_sha256"]


def test_submitted_source_runs_an_argv_and_reports_counters(tmp_path, unstable_kernel):
    source = (schedulers_dir() / "testing" / "minimal.bpf.c").read_text()
    env = isolated_env(tmp_path)
    argv = ["sh", "-c", "i=0; while [ $i -lt 30000 ]; do i=$((i+1)); done; echo counted $i"]

    async def main():
        async with Client(stdio_params(env), mode="legacy", read_timeout_seconds=900) as client:
            broken = await call(client, "run_in_vm", {"argv": ["true"], "source": "this is not C at all; struct_ops"})
            progress: list[str] = []

            async def on_progress(_done: float, _total: float | None, message: str | None) -> None:
                progress.append(message or "")

            result = await client.call_tool(
                "run_in_vm",
                {
                    "argv": argv,
                    "source": source,
                    "compare_baseline": False,
                    "detail": "full",
                    "max_bytes": 8192,
                },
                progress_callback=on_progress,
            )
            text = result.content[0].text
            ok = (bool(result.is_error), None if result.is_error else json.loads(text), text)
            full = json.loads((await client.read_resource(ok[1]["run_uri"])).contents[0].text) if not ok[0] else None
            return broken, ok, progress, full

    broken, ok, progress, full = anyio.run(main)
    assert any("booting" in m for m in progress) and any("attaching" in m or "run 1/1" in m for m in progress)
    assert broken[0] and "build_failed" in broken[2]  # refused at compile time, before any VM boots
    is_error, data, text = ok
    assert not is_error, text
    assert len(text.encode()) <= 8192
    sched = data["scheduler"]
    assert sched["name"] == "submitted" and sched["ops_name"] == "minimal" and sched["stayed_enabled"]
    assert sched["exit_codes"] == [0]
    assert sched["counters"]["nr_enqueued"] > 0
    assert "counted 30000" in sched["runs"][0]["stdout_tail"]
    assert "baseline" not in data and "comparison" not in data
    assert full["scheduler"]["runs"][0]["exit_code"] == 0 and full["argv"] == argv
