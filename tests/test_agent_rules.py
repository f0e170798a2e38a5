# SPDX-License-Identifier: Apache-2.0
"""The built-in planner's decisions, tunable derivation, adaptation and outcome judgement."""

from __future__ import annotations

import pytest

from schedcp.agent import rules
from schedcp.agent.learning import verdict_of
from schedcp.agent.models import Candidate, Execution, RoundResult, Trial
from schedcp.analysis.profile import (
    Characteristics,
    Churn,
    LongTail,
    SchedNumbers,
    WorkloadProfile,
    choose_goal,
    describe,
    keywords_for,
)
from schedcp.services.trials import goal_alias
from schedcp.toolchain import metadata
from schedcp.trial.compare import consistent, goal_metric, ratio

LIBRARY = {m.name for m in metadata.library()}


def profile(
    classification: str = "cpu_bound",
    *,
    tail: tuple[float, float] | None = None,
    storm: bool = False,
    burst_ms: float = 20.0,
    runq_wait: float = 30.0,
    batch: bool = True,
    evidence: list[str] | None = None,
    goal: str | None = None,
) -> WorkloadProfile:
    sched = SchedNumbers(
        cpu_s=10.0,
        parallelism=1.9,
        runnable_parallelism=3.0,
        runq_wait_pct=runq_wait,
        wait_ms_per_cpu_s=300.0,
        mean_slice_ms=burst_ms,
        vcs_per_s=500.0,
        ivcs_per_s=50.0,
        voluntary_share=0.5,
        migrations_per_s=10.0,
        runnable_share=0.8,
        blocked_share=0.0,
    )
    churn = Churn(
        procs_seen=41,
        threads_seen=41,
        peak_alive_threads=40,
        spawn_rate_seen=80.0 if storm else 5.0,
        forks_per_s_system=120.0 if storm else 5.0,
        lifetime_p50_s=0.05 if storm else 1.5,
        short_lived_storm=storm,
    )
    lt = None
    if tail is not None:
        med, top = tail
        lt = LongTail(
            detected=top / med >= 4,
            group_size=40,
            spawner_pid=1,
            median_cpu_ms=med,
            max_cpu_ms=top,
            ratio_max_median=round(top / med, 1),
            top_share=0.3,
            serial_tail_s=1.0,
            all_finished=True,
        )
    ch = Characteristics(
        classification=classification,
        evidence=evidence or [],
        sched=sched,
        churn=churn,  # type: ignore[arg-type]
        long_tail=lt,
        batch=batch,
        cpu_busy_pct=[95.0, 90.0],
    )
    chosen, why = choose_goal(ch)
    g = goal or chosen
    return WorkloadProfile(
        target="cmd: test",
        source="vm",
        duration_s=5.0,
        summary=describe(ch, g),
        goal=g,  # type: ignore[arg-type]
        goal_rationale=why,
        keywords=keywords_for(ch, g),
        characteristics=ch,
    )


def plan_for(p: WorkloadProfile, **kw) -> list[Candidate]:
    kw.setdefault("history", None)
    kw.setdefault("antipatterns", [])
    kw.setdefault("search_hits", [])
    kw.setdefault("available", LIBRARY)
    return rules.build_plan(p, **kw).candidates


def assert_valid(cands: list[Candidate]) -> None:
    """Every planned configuration is accepted by the policy's own metadata."""
    for c in cands:
        assert c.policy in LIBRARY
        metadata.get(c.policy).validate_config(dict(c.config))


def test_nice_rounding() -> None:
    assert [rules.nice(x) for x in (1089, 300, 130, 7, 60_500, 0)] == [1000, 200, 100, 5, 50_000, 0]


def test_long_tail_makespan_gets_ljf_with_tunables_from_measured_runtimes() -> None:
    p = profile(tail=(121.0, 1089.0))
    assert p.goal == "makespan"
    cands = plan_for(p)
    assert [c.policy for c in cands][:4] == ["ljf_batch", "ljf", "fifo", "locality"]
    assert cands[0].origin == cands[1].origin == "rules"
    assert cands[1].config == {"horizon_ms": 1000, "max_wait_us": 100_000, "slice_us": 20_000}
    # Shorter jobs give a shorter horizon, aging bound and slice: the numbers follow the workload.
    small = plan_for(profile(tail=(10.0, 300.0)))[1]
    assert small.policy == "ljf" and small.config == {"horizon_ms": 200, "max_wait_us": 20_000, "slice_us": 5_000}
    assert "300 ms" in small.rationale
    assert_valid(cands)
    assert_valid([small])


def test_other_goals_pick_their_policies() -> None:
    storm = plan_for(profile(storm=True))
    assert storm[0].policy == "fifo" and storm[0].config["direct_idle"] is True
    latency = plan_for(profile("latency_sensitive", burst_ms=0.3, batch=False))
    assert [c.policy for c in latency] == ["wakeboost", "fifo", "latency"]
    assert latency[0].config == {"handoff": True}
    assert latency[2].config == {"fast_slice_us": 500, "max_burst_us": 1000}  # from the 300 us bursts
    fair = plan_for(profile(runq_wait=60.0, evidence=["groups: 2 commands each >=20% CPU"], batch=False))
    assert fair[0].policy == "vtime"
    throughput = plan_for(profile(batch=False))
    assert throughput[0].policy == "vtime"
    cpu_batch = plan_for(profile())
    assert profile().goal == "makespan" and cpu_batch[0].policy == "ljf_batch"
    for cands in (storm, latency, fair, throughput, cpu_batch):
        assert_valid(cands)
        assert len(cands) <= rules.MAX_CANDIDATES


def test_history_goes_first_only_when_it_clearly_won() -> None:
    p = profile(tail=(50.0, 1000.0))
    best = {
        "policy": "ljf",
        "config": {"max_wait_us": 200_000},
        "expected_ratio": 1.4,
        "primary_metric": "makespan_s",
        "results": 3,
        "best_similarity": 0.93,
    }
    cands = plan_for(p, history={"best": best})
    assert cands[0].origin == "history" and cands[0].config == {"max_wait_us": 200_000}
    assert "1.40x" in cands[0].rationale
    ljf = [c for c in cands[1:] if c.policy == "ljf"]
    assert ljf and ljf[0].origin == "rules"  # a different config is still planned
    weak = plan_for(p, history={"best": best | {"expected_ratio": 1.01}})
    assert weak[0].origin == "rules"
    # The same (policy, config) from history and rules is planned once.
    same = plan_for(p, history={"best": best | {"config": rules.ljf_config(50.0, 1000.0)}})
    assert [c.key() for c in same].count(same[0].key()) == 1 and same[0].origin == "history"


def test_antipatterns_unavailable_policies_and_search_hits() -> None:
    p = profile(tail=(50.0, 1000.0))
    first = plan_for(p)[1]
    assert first.policy == "ljf"
    note = {"policy": "ljf", "note": f"sched-agent: {first.label()} — makespan_s 1.3x worse than EEVDF"}
    cands = plan_for(p, antipatterns=[note])
    assert cands[-1].key() == first.key() and [c.policy for c in cands[:2]] == ["ljf_batch", "fifo"]
    plan = rules.build_plan(p, history=None, antipatterns=[note], search_hits=[], available=LIBRARY)
    assert any("antipattern" in n for n in plan.notes)
    # A note about another configuration of the same policy does not demote this one.
    other = {"policy": "ljf", "note": "sched-agent: ljf(max_wait_us=1000) — worse"}
    assert plan_for(p, antipatterns=[other])[1].key() == first.key()
    # Policies that are not runnable here are skipped; a usable BPF search hit is the last resort.
    hits = [
        {"name": "scx_rusty", "kind": "external", "usable": False},
        {"name": "sjf", "kind": "bpf", "usable": True, "title": "Shortest job first"},
    ]
    cands = plan_for(p, available=LIBRARY - {"fifo"}, search_hits=hits)
    assert "fifo" not in [c.policy for c in cands] and "scx_rusty" not in [c.policy for c in cands]
    assert cands[-1].policy == "sjf" and cands[-1].origin == "search"


def test_tuning_turns_one_knob_within_its_range() -> None:
    tunables = [t.model_dump() for t in metadata.get("ljf").tunables]
    c = Candidate(policy="ljf", config={"max_wait_us": 100_000, "horizon_ms": 1000}, rationale="test")
    assert rules.tuned(c, tunables) == {"max_wait_us": 200_000, "horizon_ms": 1000}
    assert rules.tuned(c, tunables, factor_sign=-1) == {"max_wait_us": 50_000, "horizon_ms": 1000}
    at_max = c.model_copy(update={"config": {"max_wait_us": 2_000_000}})
    assert rules.tuned(at_max, tunables) is None  # no room left
    assert rules.tuned(Candidate(policy="ljf", rationale="defaults"), tunables) == {"max_wait_us": 200_000}
    assert rules.tuned(Candidate(policy="central", rationale="test"), []) is None
    patch = Candidate(policy="ljf2", level="patch", source="x" * 30, parent="ljf", rationale="test")
    assert rules.tuned(patch, tunables) is None


@pytest.mark.parametrize(
    ("goal", "names", "want"),
    [
        (
            "makespan",
            ["makespan_s", "mean_completion_s", "long_done_s", "run_wall_s", "tasks"],
            ("makespan_s", "lower"),
        ),
        ("makespan", ["build_s", "compile_cpu_s", "run_wall_s"], ("build_s", "lower")),
        (
            "p99_latency",
            ["request_p99_us", "wake_p99_us", "wake_p999_us", "rps", "run_wall_s"],
            ("wake_p99_us", "lower"),
        ),
        ("p99_latency", ["latency_p50_us", "latency_p99_us", "throughput_rounds_per_s"], ("latency_p99_us", "lower")),
        ("throughput", ["msgs_per_s", "time_s", "run_wall_s"], ("msgs_per_s", "higher")),
        ("throughput", ["checksum_ok", "run_wall_s"], ("run_wall_s", "lower")),
    ],
)
def test_goal_metric(goal: str, names: list[str], want: tuple[str, str]) -> None:
    assert goal_metric(goal, names) == want


def test_goal_alias_and_ratio() -> None:
    assert goal_alias("makespan", "makespan_s") is None
    assert goal_alias("p99_latency", "wake_p99_us") == "p99_latency_us"
    assert goal_alias("throughput", "msgs_per_s") == "throughput_per_s"
    assert goal_alias("throughput", "rps") == "throughput"
    assert ratio(10.0, 5.0, "lower") == 2.0 and ratio(10.0, 5.0, "higher") == 0.5
    assert ratio(0.0, 5.0, "lower") is None and ratio(None, 1.0, "lower") is None


def _execution(ratios: list[float], ok: bool = True) -> Execution:
    rounds = [
        RoundResult(round=i + 1, order=["eevdf", "policy"], eevdf={}, policy={}, ratio=r) for i, r in enumerate(ratios)
    ]
    mid = sorted(ratios)[len(ratios) // 2] if ratios else None
    trial = Trial(ok=ok, rounds=rounds, ratio=mid, consistent=consistent(ratios), metric="makespan_s")
    return Execution(candidate=Candidate(policy="ljf", rationale="test"), trial=trial, ok=ok)


def test_consistency_needs_two_rounds_in_three() -> None:
    assert consistent([1.2, 0.9, 1.1]) and consistent([1.1])
    assert not consistent([1.2, 0.9]) and not consistent([1.2, 0.9, 0.95]) and not consistent([])
    assert not consistent([1.2, None, None])


def test_verdicts() -> None:
    assert verdict_of(_execution([1.4, 1.3])) == "improved"
    assert verdict_of(_execution([1.4, 0.9, 1.3])) == "improved"  # one noisy round of three is tolerated
    assert verdict_of(_execution([0.6, 2.5])) == "neutral"  # big median, rounds disagree
    assert verdict_of(_execution([1.01, 1.02])) == "neutral"
    assert verdict_of(_execution([0.8, 0.9])) == "regressed"
    assert verdict_of(_execution([], ok=False)) == "failed"


def test_every_agent_tool_schema_is_self_contained_and_provider_safe(tmp_path) -> None:
    """What each role's model is shown: its SchedCP tools (MCP schemas, nested models inlined) and
    its finish tool, all closed and compact."""
    import json
    import re

    from schedcp.agent import roles
    from schedcp.agent.client import SchedcpClient
    from schedcp.agent.cost import CostMeter
    from schedcp.agent.toolbox import ToolBox
    from schedcp.server.app import build_server
    from schedcp.services.state import ServerOptions, ServerState

    state = ServerState(ServerOptions(repo_db=tmp_path / "repo.db", artifacts_root=tmp_path / "mcp"))
    with SchedcpClient.in_memory(build_server(state), state) as client:  # tools are only listed
        for role in roles.AGENT_ROLES:
            for d in ToolBox(role, client, CostMeter()).definitions():
                assert re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", d.name)
                text = json.dumps(d.parameters)
                assert "$ref" not in text and "$defs" not in text, (role, d.name)
                assert d.parameters["type"] == "object" and d.parameters["additionalProperties"] is False
                assert len(text) < 8000 and 10 <= len(d.description) <= 2000, (role, d.name, len(text))
