# SPDX-License-Identifier: Apache-2.0
"""Tier 1 (and the tracefs probe) inside the micro-VM guest: one boot for all of these tests."""

from __future__ import annotations

import pytest

from schedcp.analysis import budget
from schedcp.analysis.engine import Engine
from schedcp.testbed import kernel
from schedcp.testbed.vm import MicroVM, VMConfig

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def guest(unstable_kernel: kernel.Kernel):
    with MicroVM(VMConfig(cpus=2), kernel=unstable_kernel) as vm:
        yield Engine.for_vm(vm)


def _wl(name: str, *args: str) -> list[str]:
    return ["python3", "-m", f"schedcp_workloads.{name}", *args]


def test_guest_caps_report_facilities(guest: Engine) -> None:
    caps = guest.node.call("observe_caps")
    assert caps["schedstat"] and caps["psi"] and caps["tracefs"]
    assert caps["ncpu"] == 2


def test_guest_longtail_batch(guest: Engine) -> None:
    raw = guest.observe_command(_wl("longtail", "--short-ms", "30", "--long-factor", "40"), duration_s=60)
    prof = guest.profile(raw)
    lt = prof.characteristics.long_tail
    assert raw["exit_code"] == 0, raw["stderr_tail"]
    # The fork events count all 40 workers; the sampler (which the sibling analysis below uses) can
    # miss a short one that finishes between two samples under emulation (TCG).
    assert raw["forks"]["tasks_created"] == 40 and raw["procs_seen"] >= 38
    assert lt is not None and lt.detected and lt.group_size >= 36 and lt.ratio_max_median >= 5, (lt, raw["exit_stats"])
    assert prof.goal == "makespan" and prof.source == "vm"
    assert budget.size(guest.render(raw, "summary")) <= budget.BUDGETS["summary"]


def test_guest_cpupool_and_pingpong_shapes(guest: Engine) -> None:
    pool = guest.profile(guest.observe_command(_wl("cpupool", "--workers", "4", "--work-ms", "200"), duration_s=60))
    assert pool.characteristics.classification == "cpu_bound", pool.characteristics.evidence
    assert pool.characteristics.sched.parallelism > 0.7  # wall includes a slow interpreter start under TCG
    ping = guest.profile(guest.observe_command(_wl("pingpong", "--seconds", "3"), duration_s=60))
    assert ping.characteristics.classification == "latency_sensitive", ping.characteristics.evidence
    assert ping.goal == "p99_latency"
    raw = guest.observe_command(_wl("pingpong", "--seconds", "1"), duration_s=60, probe=["runqlat", "wakeup"])
    probe = raw["probe"]
    assert probe["available"] and probe["backend"] == "tracefs"
    assert probe["wakeup"]["count"] > 100 and probe["runqlat"]["count"] >= probe["wakeup"]["count"]


def test_guest_forkstorm(guest: Engine) -> None:
    # 3 s: on a loaded host the emulated guest forked only ~20 children in 1.5 s, the fewest the
    # storm rule judges.
    raw = guest.observe_command(_wl("forkstorm", "--seconds", "3"), duration_s=60)
    prof = guest.profile(raw)
    c = prof.characteristics.churn
    # Every child is counted from the kernel's fork events, however short it lived: the count is
    # the workload's own, not what happened to be alive at a /proc sample (which missed most).
    assert c.counted_by == "fork_events" and raw["forks"]["complete"], raw["forks"]
    assert c.tasks_created == prof.metrics["app_spawned"] == raw["forks"]["exited"], c
    assert c.short_lived_storm, c
    assert c.lifetime_p50_s is not None and c.lifetime_p50_s < 0.5 and c.turnover is not None and c.turnover >= 4
    sysdoc = guest.render(guest.observe_system(0.3), "summary")
    assert sysdoc["ncpu"] == 2 and "psi_some_pct" in sysdoc
