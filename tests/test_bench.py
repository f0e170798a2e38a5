# SPDX-License-Identifier: Apache-2.0
"""Benchmarks: statistics, every guest workload really doing (and checking) its work on the host,
the harness's bookkeeping, the results page, and a smoke run of every benchmark in the micro-VM."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, run_cli
from schedcp.bench import harness, report, stats, suite, workloads
from schedcp.bench.guest import batch, build, hackbench, interactive, wakelat
from schedcp.errors import UsageError
from schedcp.trial import compare

# Smoke runs check that every benchmark works, not parallel speed-ups: single-threaded TCG avoids the
# rare guest crash multi-threaded TCG shows on sched_ext attach/detach.
os.environ.setdefault("SCHEDCP_BENCH_TCG_THREAD", "single")


def run_workload(module: str, *args: str, timeout: float = 120) -> dict:
    """Run a guest workload on the host exactly as the guest does (a fresh interpreter, -m)."""
    proc = subprocess.run(
        [sys.executable, "-m", f"schedcp.bench.guest.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-2000:] + proc.stdout[-2000:]
    result = harness.parse_output(proc.stdout)
    assert result is not None and result["workload"] == module
    assert result["ok"] is True and result["errors"] == []
    return result


# -- statistics ---------------------------------------------------------------------------------


def test_summary_of_known_values() -> None:
    s = stats.summarize([5, 1, 4, 2, 3])
    assert (s.n, s.median, s.min, s.max, s.mean) == (5, 3, 1, 5, 3)
    assert (s.q1, s.q3, s.iqr) == (2, 4, 2)
    assert s.stdev == pytest.approx(1.5811, abs=1e-4)
    even = stats.summarize([10, 20, 30, 40])
    assert even.median == 25 and even.q1 == 17.5 and even.q3 == 32.5
    single = stats.summarize([7.0])
    assert single.median == 7.0 and single.stdev == 0.0 and single.rel_spread == 0.0


def test_summary_rejects_nothing_and_non_finite() -> None:
    with pytest.raises(ValueError):
        stats.summarize([])
    with pytest.raises(ValueError):
        stats.summarize([1.0, float("nan")])
    with pytest.raises(ValueError):
        stats.quantile([1.0], 1.5)


def test_improvement_follows_the_metric_direction() -> None:
    # Lower is better: halving a latency is a 2x improvement; doubling it is 0.5x.
    assert compare.ratio(10.0, 5.0, "lower") == 2.0
    assert compare.ratio(10.0, 20.0, "lower") == 0.5
    # Higher is better: 1.5x the throughput is 1.5x better; less is worse.
    assert compare.ratio(100.0, 150.0, "higher") == 1.5
    assert compare.ratio(100.0, 80.0, "higher") == 0.8
    assert compare.ratio(0.0, 1.0, "lower") is None
    with pytest.raises(ValueError):
        compare.ratio(1.0, 1.0, "sideways")  # type: ignore[arg-type]
    assert stats.change_pct(10.0, 8.0) == pytest.approx(-20.0)
    assert stats.is_better(1.3, 1.25) and not stats.is_better(1.2, 1.25) and not stats.is_better(None)


# -- workloads: the work is really done and checked ------------------------------------------------


def test_batch_runs_every_kind_and_checks_results() -> None:
    result = run_workload("batch", "--scale", "0.1", "--tasks", "6", "--seed", "7")
    assert result["params"]["kinds"] == list(batch.KINDS)
    for kind in result["kinds"]:
        assert len(kind["completion_s"]) == 6
        assert kind["makespan_s"] == max(kind["completion_s"])
        assert kind["long_units"] > kind["short_units"]
        assert kind["long_cpu_s"] > kind["short_cpu_s"]  # the long one really did more work
    assert result["metrics"]["makespan_s"] == pytest.approx(sum(k["makespan_s"] for k in result["kinds"]), abs=1e-3)
    # The long instance is chosen by the seed, so the same seed hides it in the same place.
    again = run_workload("batch", "--scale", "0.1", "--tasks", "6", "--seed", "7", "--kinds", "zlib")
    assert again["kinds"][0]["long_index"] == result["kinds"][0]["long_index"]


@pytest.mark.parametrize("kind", batch.KINDS)
def test_batch_jobs_are_deterministic_and_self_checking(kind: str) -> None:
    digest, ok = batch.JOBS[kind](2, 5)
    assert ok
    assert batch.JOBS[kind](2, 5) == (digest, True)
    assert batch.JOBS[kind](3, 5)[0] != digest  # more work, different result


def test_batch_reports_a_wrong_result(monkeypatch: pytest.MonkeyPatch) -> None:
    real = batch.JOBS["hash"]

    def broken(units: int, seed: int) -> tuple[str, bool]:
        digest, ok = real(units, seed)
        return digest, ok and units < 5  # the long instance "fails" its own check

    monkeypatch.setitem(batch.JOBS, "hash", broken)
    report_ = batch.run_kind("hash", tasks=4, short_units=1, long_factor=10, long_index=2, seed=3)
    assert report_["errors"] == ["the long instance failed its own check"]


def test_wakelat_measures_latency_and_verifies_requests() -> None:
    result = run_workload(
        "wakelat",
        *("--seconds", "1", "--warmup", "0.2", "--messengers", "2", "--workers", "2", "--work", "20", "--check", "8"),
    )
    m = result["metrics"]
    # The rate is over the run's real length: at least --seconds, and not the whole interpreter's life.
    assert m["requests"] > 20 and 1.0 <= m["requests"] / m["rps"] < 30
    assert result["checked"] == 2 * 8  # each messenger recomputed its --check digests
    for prefix in ("wake", "request"):
        chain = [
            m[f"{prefix}_p50_us"],
            m[f"{prefix}_p90_us"],
            m[f"{prefix}_p99_us"],
            m[f"{prefix}_p999_us"],
            m[f"{prefix}_max_us"],
        ]
        assert chain == sorted(chain) and chain[0] > 0
    assert m["request_p50_us"] >= m["wake_p50_us"]  # a request ends after its worker woke


def test_percentiles_use_nearest_rank() -> None:
    values = list(range(1, 101))
    assert wakelat.percentile(values, 50) == 50
    assert wakelat.percentile(values, 99) == 99
    assert wakelat.percentile(values, 99.9) == 100
    assert wakelat.percentile([], 99) == 0.0
    assert wakelat.request_digest(1, 3) != wakelat.request_digest(2, 3)


def test_hackbench_delivers_every_message_intact() -> None:
    for ipc in ("pipe", "socket"):
        result = run_workload("hackbench", "--groups", "2", "--fds", "3", "--loops", "40", "--ipc", ipc)
        m = result["metrics"]
        assert m["messages"] == 2 * 3 * 3 * 40
        assert m["msgs_per_s"] == pytest.approx(m["messages"] / m["time_s"], rel=0.01)


def test_hackbench_receiver_detects_a_corrupt_message() -> None:
    r, w = os.pipe()
    os.write(w, hackbench.make_message(0, 0))
    bad = bytearray(hackbench.make_message(0, 1))
    bad[50] ^= 0xFF
    os.write(w, bytes(bad))
    os.write(w, hackbench.make_message(0, 1))
    os.close(w)
    assert hackbench._receiver(r, senders=1, loops=3) == 1  # one bad message among three, the rest in order
    os.close(r)


def test_interactive_reports_lateness_and_checked_batch_work() -> None:
    result = run_workload("interactive", "--seconds", "1", "--hogs", "2", "--period-ms", "5")
    m = result["metrics"]
    assert m["cycles"] > 10 and m["batch_chunks_per_s"] > 0
    assert m["late_p50_us"] <= m["late_p99_us"] <= m["late_max_us"]
    assert interactive.tick_checksum(3) != interactive.tick_checksum(4)


def test_build_compiles_links_and_verifies_the_program(tmp_path: Path) -> None:
    result = run_workload("build", "--files", "6", "--heavy", "1", "--jobs", "2", "--workdir", str(tmp_path))
    assert set(result["metrics"]) == {"build_s", "compile_cpu_s"} and len(result["checksum"]) == 16
    assert list(tmp_path.iterdir()) == []  # the build directory is cleaned up
    # The Python model of the program agrees with gcc only if the project is what we think it is:
    # a different seed gives a different program and checksum.
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    assert build.generate(str(tmp_path / "a"), 6, 1, 1) == result["checksum"]
    assert build.generate(str(tmp_path / "b"), 6, 1, 2) != result["checksum"]
    makefile = (tmp_path / "a" / "Makefile").read_text()
    assert "gen_0.o" in makefile and "-o $@ $(OBJS)" in makefile


# -- harness bookkeeping ------------------------------------------------------------------------


def test_rounds_rotate_so_every_arm_takes_every_position() -> None:
    arms = [harness.Arm(n) for n in ("eevdf", "a", "b")]
    orders = [[a.name for a in harness.round_order(arms, r)] for r in range(3)]
    assert orders == [["eevdf", "a", "b"], ["a", "b", "eevdf"], ["b", "eevdf", "a"]]
    for pos in range(3):
        assert sorted(o[pos] for o in orders) == ["a", "b", "eevdf"]


def test_config_parsing_and_validation() -> None:
    assert harness.parse_configs(["ljf:slice_us=5000", "ljf:horizon_ms=10", "fifo:direct_idle=false"]) == {
        "ljf": {"slice_us": "5000", "horizon_ms": "10"},
        "fifo": {"direct_idle": "false"},
    }
    with pytest.raises(UsageError):
        harness.parse_configs(["slice_us=5000"])
    with pytest.raises(UsageError):
        harness.prepare_arms(["fifo"], {"ljf": {"slice_us": "1"}}, kernel=None)
    with pytest.raises(UsageError):
        harness.prepare_arms(["fifo", "fifo"], {}, kernel=None)


def test_parse_output_takes_the_last_result_line() -> None:
    out = 'noise\n{"not": "a result"}\n{"workload": "x", "metrics": {"a": 1}}\ntrailing text\n'
    assert harness.parse_output(out) == {"workload": "x", "metrics": {"a": 1}}
    assert harness.parse_output("nothing here") is None


def _record(arm: str, status: str, **metrics: float) -> dict:
    return {"arm": arm, "status": status, "metrics": metrics, **({"error": status} if status != "ok" else {})}


def test_summaries_count_only_ok_runs_and_compare_with_eevdf() -> None:
    bench = workloads.get("wakelat")
    arms = [harness.Arm("eevdf"), harness.Arm("fast"), harness.Arm("broken")]
    records = [
        _record("eevdf", "ok", wake_p99_us=10_000, rps=100),
        _record("eevdf", "ok", wake_p99_us=12_000, rps=110),
        _record("eevdf", "ok", wake_p99_us=14_000, rps=90),
        _record("fast", "ok", wake_p99_us=4_000, rps=120),
        _record("fast", "ok", wake_p99_us=6_000, rps=100),
        _record("fast", "ejected", wake_p99_us=1, rps=10_000),  # must not count
        _record("broken", "ejected"),
    ]
    summary = harness.summarize_arms(bench, arms, records)
    fast = summary["fast"]
    assert fast["ok"] == 2 and fast["statuses"] == {"ejected": 1, "ok": 2}
    assert fast["metrics"]["wake_p99_us"]["median"] == 5_000
    assert fast["metrics"]["wake_p99_us"]["improvement"] == pytest.approx(12_000 / 5_000)
    assert fast["metrics"]["rps"]["improvement"] == pytest.approx(110 / 100)
    assert summary["broken"]["metrics"] == {} and summary["broken"]["ok"] == 0
    verdict = harness.evaluate_targets(bench, summary)
    assert verdict["arm"] == "fast" and verdict["met"] is True
    assert [t["met"] for t in verdict["targets"]] == [True, True]


def test_results_page_and_chart_render(tmp_path: Path) -> None:
    bench = workloads.get("batch")
    arms = [harness.Arm("eevdf"), harness.Arm("ljf_batch")]
    records = [
        _record("eevdf", "ok", makespan_s=10.0, mean_completion_s=5.0),
        _record("ljf_batch", "ok", makespan_s=7.5, mean_completion_s=6.0),
        _record("ljf_batch", "ejected"),
    ]
    summary = harness.summarize_arms(bench, arms, records)
    result = {
        "benchmark": "batch",
        "title": bench.title,
        "description": bench.description,
        "workload": {"module": "batch", "args": list(bench.args), "seeded": True},
        "metrics": [
            {"key": m.key, "label": m.label, "unit": m.unit, "direction": m.direction, "primary": m.primary}
            for m in bench.metrics
        ],
        "arms": [a.describe() for a in arms],
        "runs": 1,
        "summary": summary,
        "evaluation": harness.evaluate_targets(bench, summary),
    }
    doc = {"runs": 1, "machine": {"target": "vm", "vcpus": 2, "accel": "tcg"}, "benchmarks": [result]}
    page = report.render_markdown(doc, {"batch": "img/bench-batch.png"})
    assert "| ljf_batch | 7.5 s (1.33×)" in page
    assert "MET by ljf_batch: makespan_s 1.33×" in page
    assert "1/2 ok (1 ejected)" in page and "![batch](img/bench-batch.png)" in page
    from schedcp.bench import plot

    png = plot.plot_benchmark(result, tmp_path / "c.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- CLI ----------------------------------------------------------------------------------------


def test_cli_lists_benchmarks_and_rejects_unknown_ones() -> None:
    listed = run_cli("bench", "--list", "--json")
    assert listed.returncode == 0
    names = [b["name"] for b in json.loads(listed.stdout)]
    assert names == list(workloads.BENCHMARKS)
    bad = run_cli("bench", "nosuch")
    assert bad.returncode == 2 and "unknown benchmark" in bad.stderr


@pytest.mark.skipif(Path("/sys/kernel/sched_ext/state").exists(), reason="this host has sched_ext")
def test_local_target_refuses_a_host_without_sched_ext() -> None:
    proc = run_cli("bench", "hackbench", "--target", "local", "--smoke")
    assert proc.returncode == 1
    assert "has no sched_ext" in proc.stderr and "--target vm" in proc.stderr


# -- in the micro-VM: every benchmark end to end, tiny sizes ---------------------------------------


@pytest.mark.vm
def test_every_default_image_benchmark_runs_and_ejections_are_reported(unstable_kernel) -> None:
    # Our own workloads; the real-tool benchmarks have their own smoke run (test_bench_real.py).
    benches = [b for b in workloads.BENCHMARKS.values() if b.image_variant == "default" and b.tool is None]
    doc = suite.run_suite(benches, policies=["fifo", "stall"], configs={}, runs=1, smoke=True, watchdog_ms=3000)
    assert doc["machine"]["vcpus"] == 2 and doc["machine"]["kernel"] == unstable_kernel.release
    assert [r["benchmark"] for r in doc["benchmarks"]] == [b.name for b in benches]
    for result in doc["benchmarks"]:
        summary = result["summary"]
        assert summary["eevdf"]["ok"] == 1 and summary["fifo"]["ok"] == 1, result["benchmark"]
        fifo_run = next(r for r in result["records"] if r["arm"] == "fifo")
        assert fifo_run["counters"]["nr_dispatched"] > 0  # the policy really scheduled the workload
        # The stalling scheduler is ejected by the watchdog mid-run: reported, never counted.
        assert summary["stall"]["statuses"] == {"ejected": 1}, result["benchmark"]
        assert "runnable task stall" in summary["stall"]["errors"][0]
        assert summary["stall"]["metrics"] == {}
        # The factor is EEVDF's run against fifo's, in the metric's own direction (>1: fifo better).
        primary, direction = result["metrics"][0]["key"], result["metrics"][0]["direction"]
        eevdf_run = next(r for r in result["records"] if r["arm"] == "eevdf")
        base, mine = eevdf_run["metrics"][primary], fifo_run["metrics"][primary]
        want = base / mine if direction == "lower" else mine / base
        cell = summary["fifo"]["metrics"][primary]
        assert cell["improvement"] == pytest.approx(want) and cell["paired_improvement"] == pytest.approx(want)


@pytest.mark.vm
def test_parallel_build_benchmark_in_the_build_image(unstable_kernel) -> None:
    doc = suite.run_suite([workloads.get("build-gen")], policies=["ljf_batch"], configs={}, runs=1, smoke=True)
    assert doc["machine"]["image_variant"] == "build"
    result = doc["benchmarks"][0]
    checksums = set()
    for arm in ("eevdf", "ljf_batch"):
        assert result["summary"][arm]["ok"] == 1, result["summary"][arm]
        run = next(r for r in result["records"] if r["arm"] == arm)
        assert "build_s" in run["metrics"], run
        checksums.add(run["details"]["checksum"])
    # Same seed, same program: the build gives the same result under either scheduler.
    assert len(checksums) == 1 and len(checksums.pop()) == 16


@pytest.mark.vm
def test_wakeboost_hand_off_is_a_tunable_that_really_hands_off(unstable_kernel) -> None:
    # Two configurations of one policy in one boot: the labelled arm turns hand-off on.
    doc = suite.run_suite(
        [workloads.get("wakelat")],
        policies=["wakeboost", "wakeboost@on"],
        configs={"wakeboost@on": {"handoff": "true"}},
        runs=1,
        smoke=True,
    )
    result = doc["benchmarks"][0]
    runs = {r["arm"]: r for r in result["records"] if r["arm"] != "eevdf"}
    assert runs["wakeboost"]["status"] == "ok" and runs["wakeboost@on"]["status"] == "ok"
    assert runs["wakeboost"]["counters"]["nr_handoff"] == 0
    # Messengers wake workers whose bursts are many times their own cost per wakeup, with both
    # CPUs busy most of the time: most requests are handed off.
    assert runs["wakeboost@on"]["counters"]["nr_handoff"] > 0.2 * runs["wakeboost@on"]["metrics"]["rps"]
    assert runs["wakeboost@on"]["details"]["errors"] == []


def test_paired_ratios_compare_arms_within_each_round() -> None:
    bench = workloads.get("batch")
    arms = [harness.Arm("eevdf"), harness.Arm("p")]
    # The machine got twice as slow in round 1; within each round the policy is 1.25x better.
    records = [
        {**_record("eevdf", "ok", makespan_s=10.0), "round": 0},
        {**_record("p", "ok", makespan_s=8.0), "round": 0},
        {**_record("eevdf", "ok", makespan_s=20.0), "round": 1},
        {**_record("p", "ok", makespan_s=16.0), "round": 1},
        {**_record("p", "ejected"), "round": 2},
        {**_record("eevdf", "ok", makespan_s=9.0), "round": 2},
    ]
    cell = harness.summarize_arms(bench, arms, records)["p"]["metrics"]["makespan_s"]
    assert cell["pairs"] == 2 and cell["paired_wins"] == 2
    assert cell["paired_improvement"] == pytest.approx(1.25)


def test_the_least_disturbed_attempt_counts_and_the_others_are_kept_as_noisy() -> None:
    attempts = [
        {**_record("p", "ok", makespan_s=20.0), "host_steal": 0.6},
        {**_record("p", "ok", makespan_s=11.0), "host_steal": 0.1},
        {**_record("p", "ok", makespan_s=12.0), "host_steal": 0.3},
    ]
    kept = harness.pick_attempt(attempts)
    assert [a["status"] for a in kept] == ["noisy", "ok", "noisy"]
    assert "60%" in kept[0]["error"]
    failed = [_record("p", "ejected"), {**_record("p", "ok", makespan_s=9.0), "host_steal": 0.5}]
    assert [a["status"] for a in harness.pick_attempt(failed)] == ["ejected", "ok"]
