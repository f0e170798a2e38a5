# SPDX-License-Identifier: Apache-2.0
"""Smoke run of every real-tool benchmark: the Debian packages install into the guest, each tool runs
with short arguments in one shared boot, and its own output becomes the benchmark's metrics (plus
context switches and CPU time). EEVDF only: attaching policies is covered by test_bench's smoke run.
"""

from __future__ import annotations

import pytest

from schedcp.bench import suite, workloads
from schedcp.bench.guest import realtool

REAL = [b for b in workloads.BENCHMARKS.values() if b.tool is not None]


def test_every_suite_benchmark_but_the_long_tail_batch_runs_a_real_tool():
    suite_names = {b.name for b in workloads.select(["all"])}
    ours = {b.name for b in workloads.BENCHMARKS.values() if b.tool is None and b.in_suite}
    assert ours == {"batch"}
    assert {b.name for b in REAL} <= suite_names
    kinds = {b.kind for b in REAL}
    assert kinds == set(workloads.KINDS)
    for bench in REAL:
        assert bench.module == "realtool"
        assert bench.args[0] in (*realtool.TOOLS, "cyclictest", "build")
        assert bench.packages or bench.sources, bench.name
        assert "cpu_s" in {m.key for m in bench.metrics}


def test_extras_cover_every_package_and_source_tree(monkeypatch, tmp_path):
    monkeypatch.setattr(suite.sources, "source_tree", lambda name, _say=None: tmp_path)
    extras = suite.guest_extras(REAL)
    assert extras is not None
    assert set(extras.packages) == {p for b in REAL for p in b.packages}
    assert [f.guest for f in extras.files] == ["/work/src/lua5.4"]


@pytest.mark.vm
def test_every_real_tool_benchmark_runs_in_one_boot(monkeypatch):
    monkeypatch.setenv("SCHEDCP_BENCH_TCG_THREAD", "single")
    doc = suite.run_suite(REAL, policies=[], configs={}, runs=1, smoke=True)
    assert doc["machine"]["extras"]["packages"], doc["machine"]
    assert len(doc["benchmarks"]) == len(REAL)
    for result in doc["benchmarks"]:
        name = result["benchmark"]
        assert "error" not in result, (name, result.get("error"), result.get("console_tail", "")[-800:])
        (record,) = [r for r in result["records"] if r["arm"] == "eevdf"]
        assert record["status"] == "ok", (name, record.get("error"))
        bench = workloads.get(name)
        for metric in bench.primary:
            assert record["metrics"][metric.key] > 0, (name, metric.key, record["metrics"])
        assert record["context_switches"] > 0, name
        assert record["details"]["tool"] == bench.args[0]
