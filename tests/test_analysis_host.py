# SPDX-License-Identifier: Apache-2.0
"""Tier 1 and Tier 2 of the analysis engine on the host, against workloads with known shapes."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import kill_tree, run_cli, wait_for_children
from schedcp.analysis import budget, probes, tools
from schedcp.analysis.engine import Engine
from schedcp.errors import UsageError

PY = sys.executable
WL = "schedcp.bench.guest."


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine()


def _run(engine: Engine, *args: str, **kw):
    return engine.observe_command([PY, "-m", WL + args[0], *args[1:]], duration_s=60, **kw)


def test_longtail_batch_is_identified_with_makespan_goal(engine: Engine) -> None:
    raw = _run(engine, "longtail")
    prof = engine.profile(raw)
    ch = prof.characteristics
    assert raw["exit_code"] == 0 and raw["procs_seen"] == 41
    assert ch.long_tail is not None and ch.long_tail.detected
    assert ch.long_tail.group_size == 40
    assert ch.long_tail.ratio_max_median >= 6
    assert ch.long_tail.top_share >= 0.15
    assert ch.classification == "cpu_bound"
    assert prof.goal == "makespan"
    assert "long tail" in prof.summary and "40" in prof.summary
    assert "makespan_s" in prof.metrics and "app_makespan_s" in prof.metrics
    for detail in ("summary", "profile", "full"):
        doc = engine.render(raw, detail)
        assert budget.size(doc) <= budget.BUDGETS[detail], detail
    summary = engine.render(raw, "summary")
    assert summary["long_tail"]["detected"] and summary["goal"] == "makespan"


def test_cpu_pool_is_cpu_bound_without_long_tail(engine: Engine) -> None:
    raw = _run(engine, "cpupool", "--workers", "4", "--work-ms", "300")
    prof = engine.profile(raw)
    ch = prof.characteristics
    assert ch.classification == "cpu_bound", ch.evidence
    assert ch.long_tail is not None and ch.long_tail.group_size == 4 and not ch.long_tail.detected
    assert ch.sched.runnable_share >= 0.7
    assert ch.sched.voluntary_share is not None and ch.sched.voluntary_share < 0.5
    assert prof.goal == "makespan"  # a batch that ends on its own


def test_pingpong_is_latency_sensitive(engine: Engine) -> None:
    raw = _run(engine, "pingpong", "--seconds", "1.5")
    prof = engine.profile(raw)
    ch = prof.characteristics
    assert ch.classification == "latency_sensitive", ch.evidence
    assert ch.sched.mean_slice_ms is not None and ch.sched.mean_slice_ms < 1.0
    assert prof.goal == "p99_latency"
    assert "app_latency_p99_us" in prof.metrics


def test_forkstorm_is_a_short_lived_storm(engine: Engine) -> None:
    raw = _run(engine, "forkstorm", "--seconds", "1.5", "--concurrency", "4")
    prof = engine.profile(raw)
    c = prof.characteristics.churn
    assert c.short_lived_storm, c
    assert c.lifetime_p50_s is not None and c.lifetime_p50_s < 0.5
    assert c.forks_per_s_system >= 100
    assert prof.goal == "makespan"
    assert budget.size(engine.render(raw, "summary")) <= budget.BUDGETS["summary"]


# The workloads below run far longer than the test needs (and are killed at its end), so a slow,
# shared machine cannot see them finish mid-observation.


def test_observe_existing_pids_and_system(engine: Engine) -> None:
    proc = subprocess.Popen([PY, "-m", WL + "cpupool", "--workers", "2", "--seconds", "60"])
    try:
        wait_for_children(proc.pid, 2)
        raw = engine.observe_pids([proc.pid], duration_s=1.0)
        assert raw["kind"] == "pids" and raw["procs_seen"] == 3
        assert engine.profile(raw).characteristics.classification == "cpu_bound"
        sysdoc = engine.render(engine.observe_system(0.5), "summary")
        assert sysdoc["ncpu"] >= 1 and len(sysdoc["busy_pct"]) == sysdoc["ncpu"]
        assert "psi_some_pct" in sysdoc or str(sysdoc["psi"]).startswith("unavailable")
    finally:
        kill_tree(proc)
    with pytest.raises(UsageError):
        engine.observe_pids([2**22 + 7], duration_s=0.2)


def test_tracefs_probe_runs_with_a_launched_command(engine: Engine) -> None:
    raw = _run(
        engine,
        "pingpong",
        "--seconds",
        "1",
        probe=["runqlat", "wakeup", "runtime", "migrations"],
        probe_backend="tracefs",
    )
    p = raw["probe"]
    assert p["available"] and p["backend"] == "tracefs"
    assert p["runqlat"]["count"] > 1000 and p["wakeup"]["count"] > 1000
    assert p["runqlat"]["p50_us"] <= p["runqlat"]["p99_us"] <= p["runqlat"]["max_us"]
    assert sum(p["runqlat"]["hist_us"].values()) == p["runqlat"]["count"]
    assert len(p["runtime"]["top"]) >= 2 and p["runtime"]["top"][0]["switches_in"] > 100
    assert budget.size(engine.render(raw, "profile")) <= budget.BUDGETS["profile"]


def test_bpftrace_probe_on_existing_pids() -> None:
    proc = subprocess.Popen([PY, "-m", WL + "pingpong", "--seconds", "60"], stdout=subprocess.DEVNULL)
    try:
        wait_for_children(proc.pid, 2)  # the ping and the pong process
        out = probes.run_probe(["runqlat", "wakeup", "runtime", "migrations"], 1.0, [proc.pid], backend="bpftrace")
    finally:
        kill_tree(proc)
    assert out["available"], out.get("reason")
    assert out["backend"] == "bpftrace"
    assert out["wakeup"]["count"] > 100
    assert out["runqlat"]["count"] >= out["wakeup"]["count"] * 0.5
    assert any(r["on_cpu_ms"] > 0 for r in out["runtime"]["top"])
    # Two maps counted separately in the kernel agree (2 CPUs: at most 2 pairs, none truncated).
    pairs = out["migrations"]["pairs"]
    assert out["migrations"]["total"] == sum(pairs.values())
    assert all(a != b and 0 <= int(a) < os.cpu_count() for a, b in (k.split(">") for k in pairs)), pairs


def test_bpftrace_system_wide_and_bad_kind() -> None:
    out = probes.run_probe(["runqlat"], 0.5, backend="bpftrace")
    assert out["available"] and out["runqlat"]["count"] > 0
    with pytest.raises(UsageError):
        probes.run_probe(["kprobe:foo"], 0.5)


def test_profiling_tools() -> None:
    proc = subprocess.Popen([PY, "-m", WL + "cpupool", "--workers", "2", "--seconds", "60"], stdout=subprocess.DEVNULL)
    try:
        workers = wait_for_children(proc.pid, 2)
        perf = tools.perf_stat([proc.pid], 0.5)
        assert perf["available"] and perf["counters"]["task-clock"] > 0
        assert "cycles" in perf["not_supported"] or "cycles" in perf["counters"]
        ps = tools.pidstat([proc.pid], 1.0)
        assert ps["available"] and any(r.get("%CPU", 0) > 0 for r in ps["rows"])
        st = tools.strace_summary([proc.pid], 0.5)
        assert st["available"]
        top = tools.top_snapshot(5, 0.3)
        cpu = [r["cpu_pct"] for r in top["top"]]
        assert 1 <= len(cpu) <= 5 and cpu == sorted(cpu, reverse=True)
        # Restricted to the pool: the two spinning workers, and the parent that only waits for them.
        pool = {r["pid"]: r for r in tools.top_snapshot(5, 0.3, pids=[proc.pid, *(w.pid for w in workers)])["top"]}
        assert set(pool) == {proc.pid, *(w.pid for w in workers)}
        assert min(pool[w.pid]["cpu_pct"] for w in workers) > pool[proc.pid]["cpu_pct"], pool
    finally:
        kill_tree(proc)
    st = tools.strace_summary(argv=["ls", "/"], duration_s=3)
    assert st["available"] and any(r["syscall"] in ("openat", "getdents64") for r in st["syscalls"])


def test_cli_analyze_longtail_within_budget() -> None:
    res = run_cli("analyze", "--json", "--", PY, "-m", WL + "longtail")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    assert len(res.stdout.encode()) <= budget.BUDGETS["summary"]
    assert doc["goal"] == "makespan" and doc["long_tail"]["detected"]
    text = run_cli("analyze", "--", PY, "-m", WL + "longtail")
    assert text.returncode == 0 and "long tail" in text.stdout and "makespan" in text.stdout


def test_cli_rejects_bad_input_fast() -> None:
    res = run_cli("analyze", "--detail", "huge", "--", "true")
    assert res.returncode == 2
    res = run_cli("analyze", "--pid", "1", "--cgroup", "x")
    assert res.returncode == 2
    res = run_cli("analyze", "--json", "--", "/nonexistent/prog")
    err = json.loads(res.stdout)
    assert res.returncode == 2 and err["error"] == "not_found" and "/nonexistent/prog" in err["cause"], res.stdout
    assert err["next_step"] and "Traceback" not in res.stderr
