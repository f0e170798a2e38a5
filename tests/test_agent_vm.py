# SPDX-License-Identifier: Apache-2.0
"""`schedcp optimize --demo` end to end: the real test kernel, the real trial, a real repository."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from conftest import qemu_children, run_cli
from schedcp.repository.service import RepositoryService


@pytest.mark.vm
def test_optimize_demo_measures_a_policy_against_eevdf_in_one_boot(tmp_path: Path) -> None:
    db = tmp_path / "repo.db"
    res = run_cli(
        "optimize",
        "--demo",
        "--json",
        "--iterations",
        "1",
        "--rounds",
        "2",
        timeout=420,
        env={"SCHEDCP_REPO_DB": str(db)},
    )
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["target"]["builtin"] == "longtail" and doc["model"] == "builtin"
    assert "[observation]" in res.stderr and "[   learning]" in res.stderr  # the narrative went to stderr

    # The observation saw the long tail and the planner chose longest-job-first for makespan.
    assert doc["goal"] == "makespan"
    assert [c["policy"] for c in doc["plan"]["candidates"][:2]] == ["ljf_batch", "ljf"]

    (it,) = doc["iterations"]
    ex = it["execution"]
    assert [s["name"] for s in ex["stages"]] == ["build", "static", "kernel_verifier", "trial"], ex
    trial = ex["trial"]
    assert trial["ok"] and trial["ops_name"] == "ljf_batch" and trial["stayed_enabled"]
    # Both sides ran in the same guest boot, interleaved, and each round measured both.
    assert trial["same_boot"] and trial["boot_id"] == doc["vm"]["boot_id"] != ""
    assert [r["order"] for r in trial["rounds"]] == [["eevdf", "policy"], ["policy", "eevdf"]]
    for r in trial["rounds"]:
        assert r["eevdf"]["tasks"] == r["policy"]["tasks"] == 40
    # Shorter is better: the ratio is EEVDF's median makespan over the policy's, from these rounds.
    eevdf = statistics.median(r["eevdf"]["makespan_s"] for r in trial["rounds"])
    policy = statistics.median(r["policy"]["makespan_s"] for r in trial["rounds"])
    assert trial["metric"] == "makespan_s" and trial["ratio"] == pytest.approx(eevdf / policy, rel=1e-3)
    assert trial["counters"].get("nr_dispatched", 0) > 0  # the policy really scheduled tasks

    recorded = it["lesson"]["recorded"]
    assert recorded["policy"] == "ljf_batch" and recorded["primary_metric"] == "makespan_s"
    assert doc["repository"] == str(db)
    with RepositoryService(db) as repo:
        (row,) = repo.history("ljf_batch")["results"]
    assert row["id"] == recorded["id"] and row["baseline"]["makespan_s"] == trial["baseline"]["makespan_s"]
    assert row["metrics"]["makespan_s"] == trial["policy"]["makespan_s"]
    assert doc["cost"]["total"]["tool_calls"] >= 8 and doc["cost"]["total"]["input_tokens"] == 0
    assert not qemu_children()


@pytest.mark.vm
def test_failures_in_the_guest(unstable_kernel, tmp_path: Path) -> None:
    """In one session: a scheduler the verifier pipeline refuses, one the static analysis stops,
    and a guest that panics mid-trial (sysrq crash, only in that boot), after which the session boots
    a fresh guest and measures again there."""
    from schedcp.agent.candidates import build
    from schedcp.agent.cost import CostMeter
    from schedcp.agent.execution import ExecutionAgent
    from schedcp.agent.learning import LearningAgent
    from schedcp.agent.models import Candidate
    from schedcp.agent.session import Target, VmSession
    from schedcp.agent.tools import Services
    from schedcp.agent.trial import run_trial
    from schedcp.analysis.derive import build_profile
    from schedcp.paths import schedulers_dir

    flag = "/tmp/schedcp-node/crash-this-boot"
    script = (
        f"if [ -e {flag} ]; then echo c > /proc/sysrq-trigger; fi; "
        "exec python3 -m schedcp_workloads.longtail --tasks 6 --short-ms 20 --long-factor 4"
    )
    target = Target("crashy", ["sh", "-c", script], None, 120.0)
    testing = schedulers_dir() / "testing"
    with VmSession("unstable", 2) as session:
        session.start()
        svc = Services(session, target, repo_db=tmp_path / "repo.db")
        meter = CostMeter()
        executor = ExecutionAgent(svc, meter, None, rounds=1)

        refused = executor.run(
            Candidate(
                policy="agent-reject",
                level="compose",
                rationale="must be refused",
                source=(testing / "reject.bpf.c").read_text(),
            ),
            "makespan",
        )
        stages = {s.name: s for s in refused.stages}
        assert not refused.ok and stages["build"].status == "passed" and stages["static"].status == "passed"
        # New code goes through the Execution Verifier's pipeline, whose kernel-verifier stage refuses it.
        assert stages["verifier"].status == "failed" and refused.trial is None
        assert "kernel_verifier" in stages["verifier"].summary, stages["verifier"]
        assert svc.show("agent-reject")["status"] == "candidate"  # new code is kept, as a candidate
        # Loaded directly into the session's guest, the kernel's verifier gives its reason.
        stored = build(Candidate(policy="agent-reject", rationale="stored"), unstable_kernel, svc.repository)
        direct = run_trial(session, target, stored, {}, "makespan", rounds=1)
        assert not direct.ok and "did not load/attach" in direct.error and "map_value_or_null" in direct.error

        raw = {"kind": "run", "argv": target.argv, "wall_s": 1.0, "tasks": [], "system": {"ncpu": 2}}
        lesson = LearningAgent(svc, meter).run(
            build_profile(raw, "vm"), refused, session=[], remaining=[], iterations_left=1
        )
        assert lesson.verdict == "failed" and lesson.recorded is None
        assert "verifier" in lesson.antipattern["note"] and lesson.decision.action == "stop"

        stalled = executor.run(
            Candidate(
                policy="agent-stall",
                level="compose",
                rationale="never dispatches",
                source=(testing / "stall.bpf.c").read_text(),
            ),
            "makespan",
        )
        assert not stalled.ok and stalled.trial is None
        assert [s.status for s in stalled.stages] == ["passed", "failed"] and "never consumed" in stalled.error

        built = build(Candidate(policy="fifo", rationale="test policy"), unstable_kernel, svc.repository)
        first_boot = session.vm and session.boot_id
        session.vm.node.put_file("crash-this-boot", b"1")
        trial = run_trial(session, target, built, {}, "makespan", rounds=1)
        assert session.restarts == 1 and trial.attempts == 2
        assert trial.ok and not trial.guest_crash and trial.same_boot
        assert trial.boot_id and trial.boot_id != first_boot
        assert trial.rounds[0].eevdf["makespan_s"] > 0 and trial.rounds[0].policy["makespan_s"] > 0
        svc.close()
    assert not qemu_children()
