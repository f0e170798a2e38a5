# SPDX-License-Identifier: Apache-2.0
"""Learning endpoints: results and ratios, best configuration, promotion rules, antipatterns, lineage."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schedcp.errors import SchedcpError, UsageError
from schedcp.repository.evidence import is_win
from schedcp.repository.outcomes import judge, primary_metric
from schedcp.repository.service import RepositoryService
from schedcp.repository.store import sha256_text
from schedcp.trial.compare import direction, ratios
from test_repository_fixtures import GENERATED_SOURCE, daemon_passed, daemon_records, generated, open_service, profile


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RepositoryService]:
    yield from open_service(tmp_path)


BUILD = profile(
    "Parallel kernel compilation with make -j on 2 CPUs, many short compiler processes",
    "makespan",
    cpu_bound=True,
    tasks="short-lived",
    parallelism=2,
)
SIMILAR_BUILD = profile("Building a C project with make -j2: lots of brief gcc processes", "makespan")
SERVER = profile("memcached key-value server answering small GET requests from many clients", "p99_latency")


def test_directions_and_ratios() -> None:
    assert direction("makespan_s") == "lower"
    assert direction("p99_latency_us") == "lower"
    assert direction("ops_per_s") == "higher"
    assert direction("requests_latency_ms") == "lower"
    assert direction("error_rate") == "lower"
    assert direction("widgets") is None
    assert direction("widgets", {"widgets": "higher"}) == "higher"
    got = ratios(
        {"makespan_s": 8.0, "throughput": 150.0, "widgets": 3}, {"makespan_s": 10.0, "throughput": 100.0, "widgets": 2}
    )
    assert got == {"makespan_s": 1.25, "throughput": 1.5}
    assert primary_metric("p99_latency", ["latency_p99_us", "throughput"]) == "latency_p99_us"
    assert primary_metric("makespan", ["makespan_s"]) == "makespan_s"
    # Noise-level gains are not wins; an unmatched goal falls back to the geometric mean.
    assert not judge("makespan", {"makespan_s": 9.95}, {"makespan_s": 10.0}).beat_baseline
    fallback = judge("frobnication", {"makespan_s": 5.0, "ops": 200.0}, {"makespan_s": 10.0, "ops": 100.0})
    assert fallback.primary == "geomean" and fallback.primary_ratio == pytest.approx(2.0)


def test_record_result_derives_improvement(service: RepositoryService) -> None:
    out = service.record_result(
        {
            "policy": "scx_rusty",
            "config": {"slice_us_underutil": 10000},
            "profile": BUILD,
            "metrics": {"makespan_s": 40.0, "cpu_util": 0.97},
            "baseline": {"makespan_s": 50.0, "cpu_util": 0.9},
            "kernel_release": "7.2.13",
        }
    )
    assert out["primary_metric"] == "makespan_s"
    assert out["primary_ratio"] == pytest.approx(1.25)
    assert out["beat_baseline"] is True
    history = service.history("scx_rusty")
    assert history["summary"] == {"results": 1, "wins": 1, "best_ratio": pytest.approx(1.25)}
    entry = history["results"][0]
    assert entry["config"] == {"slice_us_underutil": 10000}
    assert entry["kernel"] == "7.2.13" and len(entry["host"]) == 16
    assert entry["improvement"] == {"makespan_s": 1.25}


def test_record_result_rejects_bad_input(service: RepositoryService) -> None:
    base = {"policy": "scx_rusty", "profile": BUILD, "metrics": {"makespan_s": 1.0}}
    with pytest.raises(UsageError, match="no policy named"):
        service.record_result({**base, "policy": "does_not_exist"})
    with pytest.raises(UsageError, match="metrics"):
        service.record_result({**base, "metrics": {}})
    with pytest.raises(UsageError, match="finite"):
        service.record_result({**base, "metrics": {"makespan_s": float("nan")}})
    with pytest.raises(UsageError, match="goal"):
        service.record_result({**base, "profile": {"summary": "x y z", "characteristics": {}, "goal": "Fast!"}})
    with pytest.raises(UsageError, match="larger than"):
        service.record_result({**base, "profile": {**BUILD, "characteristics": {"blob": "x" * 20000}}})
    assert service.store.count("results") == 0


def test_best_config_prefers_similar_workloads_and_real_gains(service: RepositoryService) -> None:
    def record(policy: str, cfg: dict, prof: dict, value: float, base: float, metric: str = "makespan_s") -> None:
        service.record_result(
            {"policy": policy, "config": cfg, "profile": prof, "metrics": {metric: value}, "baseline": {metric: base}}
        )

    record("scx_rusty", {"slice_us_underutil": 10000}, BUILD, 40.0, 50.0)  # 1.25x on builds
    record("scx_rusty", {"slice_us_underutil": 10000}, SIMILAR_BUILD, 42.0, 50.0)
    record("scx_simple", {}, BUILD, 48.0, 50.0)  # small gain
    record("scx_lavd", {}, BUILD, 60.0, 50.0)  # a regression
    record("scx_flash", {"slice_us": 500}, SERVER, 100.0, 300.0, "p99_latency_us")  # other goal

    best = service.best_config(
        profile("compile a large C++ code base with make -j, finish as soon as possible", "makespan")
    )
    assert best["best"]["policy"] == "scx_rusty"
    assert best["best"]["config"] == {"slice_us_underutil": 10000}
    assert best["best"]["results"] == 2 and best["best"]["wins"] == 2
    names = [c["policy"] for c in best["candidates"]]
    assert "scx_lavd" not in names  # made things worse on average
    assert "scx_flash" not in names  # different goal
    latency = service.best_config(profile("key-value cache server, many small requests", "p99_latency"))
    assert latency["best"]["policy"] == "scx_flash"
    unrelated = service.best_config(profile("render a 3D scene on the GPU", "makespan"), min_similarity=0.9)
    assert unrelated["best"] is None


def test_deprecated_policies_are_not_recommended(service: RepositoryService) -> None:
    service.record_result(
        {"policy": "scx_rusty", "profile": BUILD, "metrics": {"makespan_s": 30.0}, "baseline": {"makespan_s": 50.0}}
    )
    service.set_status("scx_rusty", "deprecated", reason="replaced by a better policy")
    assert service.best_config(BUILD)["best"] is None


def _measured(ratio: float, *, stayed: bool = True) -> dict:
    return {
        "source_sha256": sha256_text(GENERATED_SOURCE),
        "policy": "gen_fifo",
        "measured_by": "run_trial",
        "kernel": "7.2.13",
        "workload": "build",
        "metric": "makespan_s",
        "ratio": ratio,
        "beat_baseline": is_win(ok=True, stayed_enabled=stayed, ratio=ratio, consistent=ratio > 1),
        "stayed_enabled": stayed,
    }


def test_promotion_rules_and_log(service: RepositoryService, tmp_path: Path) -> None:
    service.add_policy(generated("gen_fifo"))
    assert service.show("gen_fifo")["status"] == "candidate"
    with pytest.raises(SchedcpError, match="no passing verification") as info:
        service.promote("gen_fifo", reason="built and passed the VM smoke test")  # a claim, not evidence
    assert info.value.code == "no_evidence"
    daemon_passed(daemon_records(tmp_path), GENERATED_SOURCE, object_sha256="cd" * 32)
    moved = service.promote("gen_fifo", reason="built and passed the VM smoke test")
    assert (moved["from"], moved["to"]) == ("candidate", "verified")
    assert moved["evidence"]["kind"] == "verification" and service.show("gen_fifo")["object_sha256"] == "cd" * 32
    with pytest.raises(SchedcpError, match="no trial measured by SchedCP") as info:
        service.promote("gen_fifo", reason="looks good")
    assert info.value.code == "no_evidence"
    service.record_result(
        {"policy": "gen_fifo", "profile": BUILD, "metrics": {"makespan_s": 45.0}, "baseline": {"makespan_s": 50.0}}
    )  # a reported win teaches the planner but is not evidence
    with pytest.raises(SchedcpError, match="no trial measured"):
        service.promote("gen_fifo", reason="looks good")
    service.record_measured_trial(_measured(1.0))  # a tie is not a win
    service.record_measured_trial(_measured(1.5, stayed=False))  # nor is a policy the kernel ejected
    with pytest.raises(SchedcpError, match="2 measured trial"):
        service.promote("gen_fifo", reason="looks good")
    service.record_measured_trial(_measured(1.11))
    assert service.promote("gen_fifo", reason="10% faster builds", actor="agent-7")["to"] == "production"
    with pytest.raises(UsageError, match="top status"):
        service.promote("gen_fifo", reason="again")
    with pytest.raises(UsageError, match="not an allowed transition"):
        service.set_status("gen_fifo", "candidate", reason="skip a level")
    with pytest.raises(UsageError, match="reason"):
        service.demote("gen_fifo", reason="")
    assert service.demote("gen_fifo", reason="regressed on 7.3")["to"] == "verified"
    assert service.demote("gen_fifo", to="deprecated", reason="superseded")["to"] == "deprecated"
    with pytest.raises(UsageError, match="not an allowed transition"):
        service.set_status("gen_fifo", "production", reason="straight back")
    assert service.promote("gen_fifo", reason="retry after fix")["to"] == "candidate"
    log = service.history("gen_fifo")["status_log"]
    assert [e["to_status"] for e in reversed(log)] == [
        "candidate",
        "verified",
        "production",
        "verified",
        "deprecated",
        "candidate",
    ]
    assert log[3]["actor"] == "agent-7" and log[3]["reason"] == "10% faster builds"


def test_antipatterns_attach_to_policies_and_profiles(service: RepositoryService) -> None:
    service.annotate_antipattern("Long slices starve the UI thread; frame times doubled.", policy="scx_central")
    service.annotate_antipattern(
        "FIFO without aging starved the long compile jobs for minutes.", profile=BUILD, actor="agent"
    )
    with pytest.raises(UsageError, match="needs a policy"):
        service.annotate_antipattern("a note with no anchor")
    with pytest.raises(UsageError, match="no policy named"):
        service.annotate_antipattern("note for a ghost", policy="ghost_policy")
    with pytest.raises(UsageError, match=r"5\.\.1000"):
        service.annotate_antipattern("x" * 1001, policy="scx_central")
    assert service.show("scx_central")["antipatterns"][0]["note"].startswith("Long slices")
    similar = service.antipatterns(profile=SIMILAR_BUILD)
    assert [a["note"][:4] for a in similar] == ["FIFO"]
    assert service.antipatterns(profile=SERVER) == []
    # best_config surfaces notes about similar workloads alongside its answer.
    service.record_result(
        {"policy": "scx_rusty", "profile": BUILD, "metrics": {"makespan_s": 30.0}, "baseline": {"makespan_s": 50.0}}
    )
    assert any(a["note"].startswith("FIFO") for a in service.best_config(SIMILAR_BUILD)["antipatterns"])


def test_lineage_of_patched_and_generated_policies(service: RepositoryService) -> None:
    service.add_policy(generated("gen_a"), parent="vtime" if service.store.policy("vtime") else "scx_simple")
    service.add_policy(generated("gen_b"), parent="gen_a")
    service.add_policy(generated("gen_c"), parent="gen_b")
    service.add_policy(generated("gen_b2"), parent="gen_a")
    lineage = service.lineage("gen_c")
    assert [a["name"] for a in lineage["ancestors"]][:2] == ["gen_b", "gen_a"]
    down = service.lineage("gen_a")["descendants"]
    assert {(d["name"], d["parent_name"], d["depth"]) for d in down} == {
        ("gen_b", "gen_a", 1),
        ("gen_b2", "gen_a", 1),
        ("gen_c", "gen_b", 2),
    }
    assert service.show("gen_a")["children"] == ["gen_b", "gen_b2"]
    assert service.show("gen_c")["parent"] == "gen_b"
    with pytest.raises(UsageError, match="own parent"):
        service.add_policy(generated("selfish"), parent="selfish")
