"""`schedcp optimize --demo` end to end: the real test kernel, the real trial, a real repository."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import qemu_children, run_cli
from schedcp.repository.service import RepositoryService


@pytest.mark.vm
def test_optimize_demo_measures_a_policy_against_eevdf_in_one_boot(tmp_path: Path) -> None:
    db = tmp_path / "repo.db"
    res = run_cli("optimize", "--demo", "--json", "--iterations", "1", "--rounds", "2", timeout=420,
                  env={"SCHEDCP_REPO_DB": str(db)})
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    assert doc["target"]["builtin"] == "longtail" and doc["model"] == "builtin"
    assert "[observation]" in res.stderr and "[   learning]" in res.stderr  # the narrative went to stderr

    # The observation saw the long tail and the planner chose longest-job-first for makespan.
    assert doc["goal"] == "makespan"
    assert doc["plan"]["candidates"][0]["policy"] == "ljf"

    (it,) = doc["iterations"]
    ex = it["execution"]
    assert [s["name"] for s in ex["stages"]] == ["build", "static", "kernel_verifier", "trial"], ex
    trial = ex["trial"]
    assert trial["ok"] and trial["ops_name"] == "ljf" and trial["stayed_enabled"]
    # Both sides ran in the same guest boot, interleaved, and each round measured both.
    assert trial["same_boot"] and trial["boot_id"] == doc["vm"]["boot_id"] != ""
    assert [r["order"] for r in trial["rounds"]] == [["eevdf", "policy"], ["policy", "eevdf"]]
    for r in trial["rounds"]:
        assert r["eevdf"]["makespan_s"] > 0 and r["policy"]["makespan_s"] > 0
        assert r["eevdf"]["tasks"] == r["policy"]["tasks"] == 40
    assert trial["metric"] == "makespan_s" and trial["ratio"] > 0
    assert trial["counters"].get("nr_dispatched", 0) > 0  # the policy really scheduled tasks

    recorded = it["lesson"]["recorded"]
    assert recorded["policy"] == "ljf" and recorded["primary_metric"] == "makespan_s"
    assert doc["repository"] == str(db)
    with RepositoryService(db) as repo:
        (row,) = repo.history("ljf")["results"]
    assert row["id"] == recorded["id"] and row["baseline"]["makespan_s"] == trial["baseline"]["makespan_s"]
    assert row["metrics"]["makespan_s"] == trial["policy"]["makespan_s"]
    assert doc["cost"]["total"]["tool_calls"] >= 8 and doc["cost"]["total"]["input_tokens"] == 0
    assert not qemu_children()


@pytest.mark.vm
def test_a_guest_that_dies_mid_trial_is_replaced_and_the_trial_repeated(unstable_kernel, tmp_path: Path) -> None:
    """The guest panics during the first trial (sysrq crash, only in that boot): the session boots a
    fresh guest and measures again there; the outcome says so and is not held against the policy."""
    from schedcp.agent.candidates import build
    from schedcp.agent.models import Candidate
    from schedcp.agent.session import Target, VmSession
    from schedcp.agent.trial import run_trial

    flag = "/tmp/schedcp-node/crash-this-boot"
    script = (f"if [ -e {flag} ]; then echo c > /proc/sysrq-trigger; fi; "
              "exec python3 -m schedcp_workloads.longtail --tasks 6 --short-ms 20 --long-factor 4")
    target = Target("crashy", ["sh", "-c", script], None, 120.0)
    with RepositoryService(tmp_path / "repo.db") as repo, VmSession("unstable", 2) as session:
        built = build(Candidate(policy="fifo", rationale="test policy"), unstable_kernel, repo)
        first_boot = session.vm and session.boot_id
        session.vm.node.put_file("crash-this-boot", b"1")
        trial = run_trial(session, target, built, {}, "makespan", rounds=1)
        assert session.restarts == 1 and trial.attempts == 2
        assert trial.ok and not trial.guest_crash and trial.same_boot
        assert trial.boot_id and trial.boot_id != first_boot
        assert trial.rounds[0].eevdf["makespan_s"] > 0 and trial.rounds[0].policy["makespan_s"] > 0
    assert not qemu_children()
