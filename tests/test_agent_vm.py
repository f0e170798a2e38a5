# SPDX-License-Identifier: Apache-2.0
"""`schedcp optimize --demo` end to end over MCP: the real test kernel, the real trial, a real repository.

Two boots in all: the demo run (agents -> in-memory MCP -> the server's testbed), and the same tool
sequence replayed from an outside MCP client against a `schedcp mcp` process over stdio.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client

from conftest import qemu_children, run_cli
from schedcp.agent import roles
from schedcp.repository.evidence import is_win
from schedcp.repository.service import RepositoryService
from schedcp.server import calllog
from schedcp.server.testing import isolated_env, stdio_params


def records(db: Path, policy: str) -> dict[str, Any]:
    with RepositoryService(db) as repo:
        h = repo.history(policy)
    return {
        "status": h["status"],
        "configs": sorted(json.dumps(r["config"], sort_keys=True) for r in h["results"]),
        "metrics": sorted(sorted(r["metrics"]) for r in h["results"]),
        "antipatterns": len(h["antipatterns"]),
    }


def replay_over_stdio(log: list[dict[str, Any]], root: Path) -> list[dict[str, Any]]:
    """Every logged call, in order, from the SDK's plain client to a spawned `schedcp mcp`; ids the
    first run was handed (testbed, build, trial) are mapped to the ones this server hands out.

    Every call succeeds or fails as it did the first time, except a promotion to production: that
    rests on the replay's own trial (a new boot measures anew), so it succeeds exactly when that trial
    is a win by the repository's rule, and is otherwise refused for want of evidence."""
    env = isolated_env(root)
    ids: dict[str, str] = {}
    answers: list[dict[str, Any]] = []
    last_trial: dict[str, Any] | None = None

    async def go() -> None:
        nonlocal last_trial
        async with Client(stdio_params(env), mode="legacy", read_timeout_seconds=1800) as client:
            for entry in log:
                result = await client.call_tool(entry["tool"], calllog.substitute(entry["arguments"], ids))
                text = result.content[0].text
                expect_ok = entry["ok"]
                if entry["tool"] == "promote_scheduler" and entry["ok"] and last_trial is not None:
                    t = last_trial["trial"]
                    expect_ok = is_win(
                        ok=t["ok"], stayed_enabled=t["stayed_enabled"], ratio=t["ratio"], consistent=t["consistent"]
                    )
                    assert expect_ok or "no_evidence" in text, text[:500]
                assert bool(result.is_error) == (not expect_ok), (entry["tool"], text[:500])
                if not result.is_error:
                    answer = json.loads(text)
                    answers.append({"tool": entry["tool"], **answer})
                    if entry["tool"] == "run_trial":
                        last_trial = answer
                    ids.update({old: answer[k] for k, old in entry["ids"].items() if k in answer})

    anyio.run(go)
    return answers


@pytest.mark.vm
def test_optimize_demo_over_mcp_measures_against_eevdf_in_one_boot_and_replays(tmp_path: Path) -> None:
    db, log = tmp_path / "repo.db", tmp_path / "calls.jsonl"
    res = run_cli(
        "optimize",
        "--demo",
        "--json",
        "--iterations",
        "1",
        "--rounds",
        "2",
        "--call-log",
        str(log),
        timeout=900,
        env={"SCHEDCP_REPO_DB": str(db), "SCHEDCP_DATA_DIR": str(tmp_path / "data")},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["target"]["builtin"] == "longtail" and doc["model"] == "builtin"
    assert doc["schedcp"]["server"] == "in-memory"
    assert "[observation]" in res.stderr and "[   learning]" in res.stderr  # the narrative went to stderr

    # The observation saw the long tail and the planner chose longest-job-first for makespan.
    assert doc["goal"] == "makespan"
    assert [c["policy"] for c in doc["plan"]["candidates"][:2]] == ["ljf_batch", "ljf"]

    (it,) = doc["iterations"]
    ex = it["execution"]
    assert [s["name"] for s in ex["stages"]] == ["build", "static", "kernel_verifier", "trial"], ex
    trial = ex["trial"]
    assert trial["ok"] and trial["ops_name"] == "ljf_batch" and trial["stayed_enabled"], (trial["error"], ex["stages"])
    # Both sides ran in the testbed's one boot, interleaved, and each round measured both.
    assert trial["same_boot"] and trial["boot_id"] == doc["vm"]["boot_id"] != ""
    assert [r["order"] for r in trial["rounds"]] == [["eevdf", "policy"], ["policy", "eevdf"]]
    for r in trial["rounds"]:
        assert r["eevdf"]["tasks"] == r["policy"]["tasks"] == 40
    # Shorter is better: the ratio is EEVDF's median makespan over the policy's, from these rounds.
    eevdf = statistics.median(r["eevdf"]["makespan_s"] for r in trial["rounds"])
    policy = statistics.median(r["policy"]["makespan_s"] for r in trial["rounds"])
    assert trial["metric"] == "makespan_s" and trial["ratio"] == pytest.approx(eevdf / policy, rel=1e-3)
    # The kernel's context switches on each side of every round, and their medians in the trial.
    assert all(r["context_switches"]["eevdf"] > 0 and r["context_switches"]["policy"] > 0 for r in trial["rounds"])
    assert set(trial["context_switches"]) == {"eevdf", "policy"}
    assert trial["counters"].get("nr_dispatched", 0) > 0  # the policy really scheduled tasks

    recorded = it["lesson"]["recorded"]
    assert recorded["policy"] == "ljf_batch" and recorded["primary_metric"] == "makespan_s"
    assert recorded["trial_id"] == ex["trial_id"]
    assert doc["repository"] == str(db)
    with RepositoryService(db) as repo:
        (row,) = repo.history("ljf_batch")["results"]
    assert row["id"] == recorded["id"] and row["baseline"]["makespan_s"] == trial["baseline"]["makespan_s"]
    assert row["metrics"]["makespan_s"] == trial["policy"]["makespan_s"]
    assert doc["cost"]["total"]["input_tokens"] == 0 and doc["cost"]["price"]["usd"] == 0.0
    assert it["cost"]["tool_calls"] >= 3 and it["cost"]["wall_s"] > 0

    # Every SchedCP call was an MCP tool call in the server's log, within the agents' roles.
    logged = calllog.read(log)
    assert len(logged) == doc["schedcp"]["tool_calls"] >= 8
    assert {e["tool"] for e in logged} <= {t for names in roles.ROLE_TOOLS.values() for t in names}
    assert [e["tool"] for e in logged][:2] == ["start_testbed", "workload_summary"]
    assert logged[-1]["tool"] == "stop_testbed" and all(e["ok"] for e in logged if e["tool"] != "get_scheduler")
    assert not qemu_children()

    # An outside client replaying the sequence over stdio gets the same kind of records (its own
    # measurements: a new boot measures anew) in its own repository.
    answers = replay_over_stdio(logged, tmp_path / "replay")
    (rerun,) = [a for a in answers if a["tool"] == "run_trial"]
    assert rerun["trial"]["ok"] and rerun["policy"] == "ljf_batch" and rerun["trial"]["same_boot"]
    replayed, first = records(tmp_path / "replay" / "data" / "repository.db", "ljf_batch"), records(db, "ljf_batch")
    t = rerun["trial"]
    if is_win(ok=t["ok"], stayed_enabled=t["stayed_enabled"], ratio=t["ratio"], consistent=t["consistent"]):
        assert replayed == first
    else:  # the replay's own trial did not earn production, whatever the first run's did
        assert replayed["status"] != "production" and {**replayed, "status": first["status"]} == first
    assert not qemu_children()


@pytest.mark.vm
def test_failures_in_the_guest_over_mcp(unstable_kernel, tmp_path: Path) -> None:
    """In one testbed, all through MCP: a scheduler the verifier pipeline (the daemon) refuses, one the
    static analysis stops, and a guest that panics mid-trial (sysrq crash, only in that boot), after
    which the testbed boots a fresh guest and measures again there."""
    from schedcp.agent.client import SchedcpClient
    from schedcp.agent.cost import CostMeter
    from schedcp.agent.execution import ExecutionAgent
    from schedcp.agent.learning import LearningAgent
    from schedcp.agent.models import Candidate
    from schedcp.agent.toolbox import ToolBox
    from schedcp.analysis.derive import build_profile
    from schedcp.daemon.testing import running_daemon
    from schedcp.paths import schedulers_dir
    from schedcp.server.app import build_server
    from schedcp.services.models import TestbedInfo
    from schedcp.services.state import ServerOptions, ServerState

    flag = "/tmp/schedcp-node/crash-this-boot"
    script = (
        f"if [ -e {flag} ]; then echo c > /proc/sysrq-trigger; fi; "
        "exec python3 -m schedcp_workloads.longtail --tasks 6 --short-ms 20 --long-factor 4"
    )
    testing = schedulers_dir() / "testing"
    with running_daemon(tmp_path / "daemon") as daemon:
        state = ServerState(
            ServerOptions(
                repo_db=tmp_path / "repo.db",
                artifacts_root=tmp_path / "mcp",
                daemon_socket=daemon.path,
                call_log=tmp_path / "calls.jsonl",
            )
        )
        meter = CostMeter()
        with SchedcpClient.in_memory(build_server(state), state) as client:
            loop = ToolBox("loop", client, meter)
            tb = TestbedInfo.model_validate(
                loop.call("start_testbed", target={"argv": ["sh", "-c", script], "timeout_s": 120})
            )
            executor = ExecutionAgent(client, tb, meter, None, rounds=1)

            def compose(name: str, why: str) -> Any:
                source = (testing / f"{name}.bpf.c").read_text()
                candidate = Candidate(policy=f"agent-{name}", level="compose", rationale=why, source=source)
                return executor.run(candidate, "makespan")

            refused = compose("reject", "must be refused")
            stages = {s.name: s for s in refused.stages}
            assert not refused.ok and stages["build"].status == "passed" and stages["static"].status == "passed"
            # New code goes through the Execution Verifier's pipeline, whose kernel-verifier stage refuses it.
            assert stages["verifier"].status == "failed" and refused.trial is None
            assert "kernel_verifier" in stages["verifier"].summary, stages["verifier"]
            execution = ToolBox("execution", client, meter, bound={"testbed_id": tb.testbed_id})
            assert execution.call("get_scheduler", name="agent-reject")["status"] == "candidate"  # kept
            # Loaded directly into the testbed's guest, the kernel's verifier gives its reason.
            built = execution.call("build_scheduler", scheduler="agent-reject")
            direct = execution.call("run_trial", build_id=built["build_id"], goal="makespan", rounds=1)["trial"]
            assert not direct["ok"] and "did not load/attach" in direct["error"]
            assert "map_value_or_null" in direct["error"]

            raw = {"kind": "run", "argv": ["sh"], "wall_s": 1.0, "tasks": [], "system": {"ncpu": 2}}
            lesson = LearningAgent(client, tb, meter).run(
                build_profile(raw, "vm"), refused, session=[], remaining=[], iterations_left=1
            )
            assert lesson.verdict == "failed" and lesson.recorded is None
            assert "verifier" in lesson.antipattern["note"] and lesson.decision.action == "stop"

            stalled = compose("stall", "never dispatches")
            assert not stalled.ok and stalled.trial is None
            assert [s.status for s in stalled.stages] == ["passed", "failed"], stalled.stages
            assert "never consumed" in (stalled.error or ""), stalled.error

            built = execution.call("build_scheduler", scheduler="fifo")
            first_boot = loop.call("testbed_status", testbed_id=tb.testbed_id)["boot_id"]
            state.testbeds.get(tb.testbed_id).session.vm.node.put_file("crash-this-boot", b"1")
            trial = execution.call("run_trial", build_id=built["build_id"], goal="makespan", rounds=1)["trial"]
            after = loop.call("testbed_status", testbed_id=tb.testbed_id)
            assert after["restarts"] == 1 and trial["attempts"] == 2
            assert trial["ok"] and not trial["guest_crash"] and trial["same_boot"]
            assert trial["boot_id"] and trial["boot_id"] != first_boot
            first = trial["rounds"][0]
            assert first["ratio"] == pytest.approx(
                first["eevdf"]["makespan_s"] / first["policy"]["makespan_s"], rel=1e-2
            )
            loop.call("stop_testbed", testbed_id=tb.testbed_id)
    assert not qemu_children()
