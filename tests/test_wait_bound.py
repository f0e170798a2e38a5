# SPDX-License-Identifier: Apache-2.0
"""A policy's declared wait bound (metadata ``[wait_bound]``) is one claim every gate holds it to:
the verifier lets tasks wait up to it and no longer, and every watchdog on the policy is raised to
twice it. A declaration can never reach past the cap, whatever the metadata or the tunable says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from schedcp.toolchain import metadata
from schedcp.toolchain.metadata import MAX_WAIT_BOUND_S, SchedulerMeta
from schedcp.trial.attached import effective_watchdog_ms
from schedcp.trial.models import Policy
from schedcp.verifier import load
from schedcp.verifier.vmstages import VmPlan, VmStages


def _meta(tunable: dict[str, Any], bound: dict[str, Any] | None) -> SchedulerMeta:
    return SchedulerMeta.model_validate(
        {
            "name": "waiter",
            "title": "waits on purpose",
            "description": "a policy that keeps runnable tasks waiting by design",
            "tunables": [
                {"type": "u64", "default": 2_000_000, "min": 0, "unit": "us", "description": "wait"} | tunable
            ],
            "wait_bound": bound,
        }
    )


def test_the_library_policy_that_waits_on_purpose_declares_it() -> None:
    ljf_batch = metadata.get("ljf_batch")
    assert ljf_batch.wait_bound is not None and ljf_batch.wait_bound.tunable == "max_wait_us"
    default_us = int(ljf_batch.tunable("max_wait_us").default)
    assert ljf_batch.wait_bound_s() == pytest.approx(default_us / 1e6 + 1.0)
    assert ljf_batch.watchdog_floor_ms() == round(2000 * ljf_batch.wait_bound_s())
    # The configured value counts, not only the default; and it is range-checked like any tunable.
    assert ljf_batch.wait_bound_s({"max_wait_us": "1000000"}) == pytest.approx(2.0)
    with pytest.raises(Exception, match="outside the allowed range"):
        ljf_batch.wait_bound_s({"max_wait_us": str(60_000_000)})
    # Policies that declare nothing keep the gates' own bounds.
    assert metadata.get("vtime").wait_bound_s() is None and metadata.get("vtime").watchdog_floor_ms() == 0


@pytest.mark.parametrize(
    ("tunable", "bound", "why"),
    [
        ({"name": "max_wait_us"}, {"tunable": "other_us"}, "must name a u32/u64 tunable in us"),
        ({"name": "max_wait_us", "unit": "ms"}, {"tunable": "max_wait_us"}, "must name a u32/u64 tunable in us"),
        ({"name": "max_wait_us", "type": "s64"}, {"tunable": "max_wait_us"}, "must name a u32/u64 tunable in us"),
        # No max: the tunable could be set to hours, so the declaration would be unbounded.
        ({"name": "max_wait_us"}, {"tunable": "max_wait_us"}, "exceeds"),
        ({"name": "max_wait_us", "max": 9_500_000}, {"tunable": "max_wait_us", "slack_ms": 1000}, "exceeds"),
        (
            {"name": "max_wait_us", "max": 1_000_000},
            {"tunable": "max_wait_us", "slack_ms": 60000},
            "less than or equal",
        ),
    ],
)
def test_a_declaration_cannot_reach_past_the_cap(tunable: dict[str, Any], bound: dict[str, Any], why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        _meta(tunable, bound)


def test_the_largest_declaration_keeps_the_watchdog_under_the_kernels_cap() -> None:
    meta = _meta({"name": "max_wait_us", "max": 9_000_000}, {"tunable": "max_wait_us", "slack_ms": 1000})
    assert meta.wait_bound_s({"max_wait_us": 9_000_000}) == MAX_WAIT_BOUND_S
    assert meta.watchdog_floor_ms({"max_wait_us": 9_000_000}) <= 30000


def test_every_watchdog_is_raised_to_twice_the_declared_bound(tmp_path: Path) -> None:
    meta = _meta({"name": "max_wait_us", "max": 5_000_000}, {"tunable": "max_wait_us", "slack_ms": 500})
    policy = Policy(name="waiter", object_path=tmp_path / "w.bpf.o", meta=meta)
    assert effective_watchdog_ms(policy, {}, 3000) == 5000  # (2 s + 0.5 s) x 2
    assert effective_watchdog_ms(policy, {"max_wait_us": 4_000_000}, 3000) == 9000
    assert effective_watchdog_ms(policy, {}, 20000) == 20000  # never lowered
    assert effective_watchdog_ms(policy, {}, None) is None  # the scheduler's own watchdog stays
    plain = Policy(name="plain", object_path=tmp_path / "p.bpf.o", meta=metadata.get("vtime"))
    assert effective_watchdog_ms(plain, {}, 3000) == 3000


def _run(gap_s: float) -> dict[str, Any]:
    tasks = {f"equal{i}": {"chunks": 200, "cpu_s": 1.0, "max_gap_s": 0.1} for i in range(4)}
    tasks["equal1"]["max_gap_s"] = gap_s
    return {"exit_code": 0, "load": {"seconds": 10.0, "cpu_busy": 0.98, "tasks": tasks}}


def test_the_verifier_allows_the_declared_wait_and_no_longer() -> None:
    bounds = load.Bounds.for_declared_wait(5.0)
    assert bounds.max_gap_s == 5.0 and load.Bounds.for_declared_wait(None) == load.Bounds()
    assert bounds.late_start_s == 5.0  # a newcomer may wait the declared bound too (4.0 s seen for ljf_batch)
    assert load.Bounds.for_declared_wait(0.5).max_gap_s == load.Bounds().max_gap_s  # never tightened
    assert load.judge(_run(4.6), 10.0, bounds=bounds) == []
    over = load.judge(_run(5.6), 10.0, bounds=bounds)
    assert [f.id for f in over] == ["dyn-starvation"] and "over 5s" in over[0].message
    # Without the declaration the same 4.6 s wait is starvation.
    assert [f.id for f in load.judge(_run(4.6), 10.0)] == ["dyn-starvation"]


def test_the_correctness_load_runs_at_least_twice_the_declared_bound(tmp_path: Path) -> None:
    meta = metadata.get("ljf_batch")
    plan = VmPlan(object_path=tmp_path / "x.bpf.o", source_name="ljf_batch", meta=meta, config={}, include_dir=None)
    stages = VmStages.__new__(VmStages)
    stages.plan = plan
    assert stages.wait_bound_s == meta.wait_bound_s()
    assert stages.load_seconds == max(plan.seconds, round(2 * (meta.wait_bound_s() or 0), 1))
    stages.plan = VmPlan(object_path=tmp_path / "y.bpf.o", source_name="vtime", meta=None, config={}, include_dir=None)
    assert stages.wait_bound_s is None and stages.load_seconds == stages.plan.seconds


def test_the_daemon_keeps_a_library_sources_declaration_without_config() -> None:
    """A library scheduler submitted to the daemon byte for byte (as verify_scheduler does by name)
    brings its metadata even with no config: otherwise its declared wait bound would be lost and the
    verifier would hold ljf_batch to the 2 s default (it did: a 3.2 s stall ejected it)."""
    from schedcp.daemon import verify_service

    text = metadata.get("ljf_batch").source_path.read_text()
    found = verify_service.library_meta(text)
    assert found is not None and found.name == "ljf_batch" and found.wait_bound_s() is not None
    assert verify_service.library_meta(text + "\n// changed\n") is None


def test_a_declared_bound_makes_unequal_shares_warnings_not_starvation() -> None:
    """A policy that declares its longest wait is unequal on purpose (ljf_batch serves the job with
    the most CPU first, so a late starter got 4% of an equal task's rate in the verifier): with the
    bound enforced by the progress check, shares are reported, not refused. Without a declaration
    the same shares stay starvation-grade errors."""
    run = _run(1.0)
    run["load"]["tasks"]["equal2"]["cpu_s"] = 0.1  # 10% of the others: starvation-grade
    run["load"]["tasks"]["late"] = {"chunks": 3, "cpu_s": 0.02, "run_s": 5.0, "max_gap_s": 4.0}
    for task in run["load"]["tasks"].values():
        task.setdefault("run_s", 10.0)
    plain = load.judge(run, 10.0)
    assert {(f.id, f.severity) for f in plain} == {("dyn-unfair", "error"), ("dyn-starvation", "error")}
    declared = load.judge(run, 10.0, bounds=load.Bounds.for_declared_wait(5.0))
    assert [(f.id, f.severity) for f in declared] == [("dyn-unfair", "warning"), ("dyn-unfair", "warning")]
    assert "declares a wait bound" in declared[1].hint
