# SPDX-License-Identifier: Apache-2.0
"""Reading real tools' output (bench/guest/toolparse.py) and user-named metrics (bench/usermetric.py).

The fixtures in tests/data/realtools are output of Debian stable's rt-tests, linux-perf, stress-ng and
sysbench, captured in the micro-VM."""

from __future__ import annotations

from pathlib import Path

import pytest

from schedcp.bench.guest import toolparse
from schedcp.bench.usermetric import MetricSpec, output_metrics
from schedcp.errors import UsageError

DATA = Path(__file__).parent / "data" / "realtools"


def text(name: str) -> str:
    return (DATA / f"{name}.txt").read_text()


def test_each_tool_report_becomes_metrics():
    assert toolparse.parse("hackbench", text("hackbench")) == {"time_s": 1.955}
    assert toolparse.parse("/usr/bin/perf", text("perf-messaging")) == {"time_s": 1.893}
    assert toolparse.parse("perf", text("perf-pipe")) == {
        "time_s": 0.11,
        "op_latency_us": 55.1465,
        "ops_per_s": 18133.0,
    }
    stress = toolparse.parse("stress-ng", text("stress-ng"))
    assert stress["bogo_ops_per_s"] == stress["cpu_bogo_ops_per_s"] == 79.8
    assert stress["cpu_cpu_s"] == pytest.approx(6.03)
    sb = toolparse.parse("sysbench", text("sysbench-threads"))
    assert sb["lat_p95_ms"] == 74.46 and sb["events"] == 178
    assert sb["events_per_s"] == pytest.approx(178 / 2.0308, rel=1e-3)
    cyc = toolparse.parse("cyclictest", text("cyclictest"))
    assert cyc["wake_max_us"] == 4800 and cyc["wake_cycles"] == 3125
    assert toolparse.parse("unknown-tool", text("hackbench")) == {}
    assert toolparse.parse("hackbench", "garbage") == {}


def test_histogram_percentiles_count_overflows_at_the_max():
    hist = "\n".join(
        [
            "# Histogram",
            *(f"{us:06d} {n:06d}" for us, n in ((10, 50), (20, 40), (30, 9))),
            "# Total: 000000099",
            "# Histogram Overflows: 00001",
            "# Max Latencys: 00000900",
        ]
    )
    got = toolparse.histogram_percentiles(hist)
    assert got["wake_p50_us"] == 10
    assert got["wake_p99_us"] == 30
    assert got["wake_p999_us"] == 900  # the one overflow sample is beyond the buckets
    assert got["wake_max_us"] == 900 and got["wake_samples"] == 100


def test_user_metric_from_a_regex_or_a_json_field():
    spec = MetricSpec.parse(r"p99=(\d+)", "lower")
    assert (spec.name, spec.direction) == ("p99", "lower")
    assert spec.extract("p99=10\nother\np99=12\n") == 12.0  # the last report wins
    assert spec.extract("nothing here") is None
    named = MetricSpec.parse(r"rate: (?P<req_rate>[\d.,]+)", "higher")
    assert named.name == "req_rate" and named.extract("", "rate: 1,234.5") == 1234.5
    js = MetricSpec.parse("json:latency.p99", None)
    assert (js.name, js.direction) == ("latency_p99", "lower")
    assert js.extract('log\n{"latency": {"p99": 7.5}}\n') == 7.5
    assert js.extract('{"latency": {"p50": 1}}') is None


def test_bad_user_metrics_get_clear_errors():
    with pytest.raises(UsageError, match="not a valid regex"):
        MetricSpec.parse("p99=(\\d+", "lower")
    with pytest.raises(UsageError, match="exactly one"):
        MetricSpec.parse(r"(\d+) (\d+)", "lower")
    with pytest.raises(UsageError, match="lower or higher"):
        MetricSpec.parse(r"widgets=(\d+)", None)
    with pytest.raises(UsageError, match="should match pattern"):
        MetricSpec.parse("json:a..b", "lower")


def test_workload_metrics_prefers_named_then_own_line_then_tool():
    own = '{"workload": "x", "metrics": {"makespan_s": 2.0}}'
    assert output_metrics(["python3"], own, "", 3.0) == {"makespan_s": 2.0, "run_wall_s": 3.0}
    got = output_metrics(["stress-ng", "--cpu", "4"], "", text("stress-ng"), 3.1)
    assert got["bogo_ops_per_s"] == 79.8 and got["run_wall_s"] == 3.1
    spec = MetricSpec.parse(r"Time: ([\d.]+)", "lower")
    got = output_metrics(["hackbench"], text("hackbench"), "", 2.5, spec)
    assert got["time"] == 1.955 and got["time_s"] == 1.955


def test_a_nested_quantifier_is_refused_before_it_can_backtrack():
    with pytest.raises(UsageError, match="exponential"):
        MetricSpec.parse(r"lat=((?:\d+)+)ms", "lower")
    with pytest.raises(UsageError, match="exponential"):
        MetricSpec.parse(r"(?:x*)*=(\d+)", "lower")


def test_optimize_reports_bad_metric_options_before_anything_starts():
    import json

    from conftest import run_cli

    res = run_cli("optimize", "--lower-is-better", "--json", "--", "true", timeout=120)
    assert res.returncode == 2 and "add --metric" in json.loads(res.stdout)["next_step"]
    res = run_cli("optimize", "--metric", "p99=(\\d+", "--json", "--", "true", timeout=120)
    assert res.returncode == 2 and "not a valid regex" in json.loads(res.stdout)["cause"]
    res = run_cli("optimize", "--with", "/etc/hostname", "--server", "schedcp mcp", "--json", "--", "true")
    assert res.returncode == 2 and "drop --server" in json.loads(res.stdout)["next_step"]


def test_goal_metric_takes_the_named_metric_then_the_tools_headline():
    from schedcp.trial.compare import goal_metric

    stress = ["bogo_ops_per_s", "cpu_bogo_ops", "cpu_cpu_s", "makespan_s", "run_wall_s"]
    # stress-ng runs for a fixed time: no fairness metric, so its throughput, not its wall time
    assert goal_metric("fairness", stress) == ("bogo_ops_per_s", "higher")
    assert goal_metric("throughput", ["run_wall_s"]) == ("run_wall_s", "lower")
    assert goal_metric("throughput", [*stress, "p99"], named=("p99", "lower")) == ("p99", "lower")
    assert goal_metric("throughput", stress, named=("p99", "lower")) == ("bogo_ops_per_s", "higher")
