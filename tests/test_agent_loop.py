# SPDX-License-Identifier: Apache-2.0
"""The agent loop driven by a scripted model and by the built-in agents.

Real parts: the policy repository (a temporary SQLite file with the real embedding model), the
workload observation (the real long-tail batch run and sampled on this host), the builds (clang
for the test kernel) and the static checks. Only the micro-VM trial is replaced by fixed
measurements here; tests/test_agent_vm.py runs the real one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from schedcp.agent import prompts, rules
from schedcp.agent.cost import CostMeter
from schedcp.agent.driver import AgentError, run_llm_agent
from schedcp.agent.llm import ToolCall
from schedcp.agent.llm.http import ProviderError
from schedcp.agent.llm.scripted import ScriptedModel, Turn
from schedcp.agent.loop import OptimizeOptions, Optimizer
from schedcp.agent.models import RoundResult, Trial
from schedcp.agent.session import Target
from schedcp.agent.toolbox import Tool, ToolBox
from schedcp.agent.tools import Services
from schedcp.errors import UsageError
from schedcp.repository.service import RepositoryService
from schedcp.testbed import kernel as kernel_mod

LONGTAIL = [sys.executable, "-m", "schedcp.bench.guest.longtail"]


class HostSession:
    """Stands in for the VM session: the observation runs on this host, trials are scripted."""

    boot_id = "host-test"
    boot_s = None
    accel = None
    restarts = 0

    def __init__(self) -> None:
        self.kernel = kernel_mod.cached("unstable")

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass


class HostServices(Services):
    def __init__(self, db: Path, measure) -> None:
        super().__init__(HostSession(), Target("longtail", LONGTAIL, None, 120.0), repo_db=db)  # type: ignore[arg-type]
        self.measure = measure
        self.trials: list[tuple[str, dict[str, Any]]] = []

    def observe(self, *, refresh: bool = False, interval_s: float = 0.1, probe: list[str] | None = None):
        if self._raw is None or refresh:
            from schedcp.analysis.engine import Engine

            self._raw = Engine().observe_command(self.target.argv, duration_s=60, interval_s=interval_s)
            self.observations += 1
        return self._raw

    def trial(self, built, config, goal, rounds):  # type: ignore[override]
        self.trials.append((built.name, dict(config)))
        ratio = self.measure(built.name, config)
        base, value = 10.0, round(10.0 / ratio, 4)
        return Trial(
            ok=True,
            boot_id="host-test",
            metric="makespan_s",
            direction="lower",
            rounds=[
                RoundResult(
                    round=i + 1,
                    order=["eevdf", "policy"] if i % 2 == 0 else ["policy", "eevdf"],
                    eevdf={"makespan_s": base},
                    policy={"makespan_s": value},
                    ratio=ratio,
                )
                for i in range(rounds)
            ],
            baseline={"makespan_s": base, "run_wall_s": base + 1},
            policy={"makespan_s": value, "run_wall_s": value + 1},
            baseline_value=base,
            policy_value=value,
            ratio=ratio,
            consistent=ratio > 1.0,
            ops_name=built.name,
        )


def ljf_measure(name: str, config: dict[str, Any]) -> float:
    if name != "ljf":
        return 0.9
    wait = config.get("max_wait_us", 100_000)
    return 1.1 if wait >= 400_000 else 1.5 if wait >= 200_000 else 1.3


def optimizer(db: Path, model=None, iterations: int = 2, goal: str = "auto", measure=ljf_measure) -> Optimizer:
    services = HostServices(db, measure)
    opts = OptimizeOptions(target=services.target, goal=goal, iterations=iterations, rounds=2)
    return Optimizer(opts, model=model, services=services)


def last_tool_results(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of the newest user turn of an Anthropic request."""
    content = request["messages"][-1]["content"]
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def tool_names(request: dict[str, Any]) -> set[str]:
    return {t["name"] for t in request.get("tools", [])}


# -- the whole loop, driven by a scripted model -----------------------------------------------------
def test_scripted_model_drives_all_four_agents(tmp_path: Path) -> None:
    def expect_error(containing: str, then: Turn):
        def step(request: dict[str, Any]) -> Turn:
            results = last_tool_results(request)
            assert results and results[-1].get("is_error"), results
            assert containing in results[-1]["content"], results[-1]["content"]
            return then

        return step

    script = [
        # Observation: cheap summary, one invalid submission, then a valid one.
        Turn(calls=[("workload_summary", {})]),
        Turn(calls=[("submit_profile", {"goal": "fastest", "rationale": "because"})]),
        expect_error(
            "goal",
            Turn(
                calls=[
                    (
                        "submit_profile",
                        {
                            "goal": "makespan",
                            "rationale": "the batch ends when its longest task does",
                            "keywords": ["long-tail", "batch"],
                        },
                    )
                ]
            ),
        ),
        # Planning: history and antipatterns in one turn; a plan with a bad tunable is refused.
        Turn(calls=[("best_config", {}), ("antipatterns", {})]),
        Turn(
            calls=[
                (
                    "submit_plan",
                    {"candidates": [{"policy": "ljf", "config": {"bogus_knob": 1}, "rationale": "long job first"}]},
                )
            ]
        ),
        expect_error(
            "bogus_knob",
            Turn(
                calls=[
                    (
                        "submit_plan",
                        {
                            "candidates": [
                                {"policy": "ljf", "config": {"max_wait_us": 100_000}, "rationale": "long job first"},
                                {"policy": "fifo", "config": {"slice_us": 20_000}, "rationale": "long slices"},
                            ]
                        },
                    )
                ]
            ),
        ),
        # Execution 1: trial before build is refused, then the stages in order.
        Turn(calls=[("run_trial", {"rounds": 2})]),
        expect_error("build_candidate", Turn(calls=[("build_candidate", {}), ("static_check", {})])),
        Turn(calls=[("run_trial", {"rounds": 2})]),
        Turn(calls=[("submit_execution", {"note": "measured"})]),
        # Learning 1: promotion before recording is refused; record, promote, tune.
        Turn(calls=[("promote_policy", {"reason": "it won"})]),
        expect_error(
            "record",
            Turn(calls=[("record_result", {"notes": "first"}), ("promote_policy", {"reason": "won every round"})]),
        ),
        Turn(
            calls=[
                (
                    "submit_decision",
                    {"action": "tune", "config": {"max_wait_us": 400_000}, "reason": "push the aging bound"},
                )
            ]
        ),
        # Execution 2 and Learning 2: the tuned variant is worse than its parent.
        Turn(calls=[("build_candidate", {}), ("static_check", {}), ("run_trial", {"rounds": 2})]),
        Turn(calls=[("submit_execution", {"note": "done"})]),
        Turn(
            calls=[
                ("record_result", {}),
                ("annotate_antipattern", {"note": "a 400 ms aging bound let short jobs wait behind the long one"}),
            ]
        ),
        Turn(calls=[("submit_decision", {"action": "stop", "reason": "the first configuration was best"})]),
    ]
    model = ScriptedModel(script, flavor="anthropic")
    db = tmp_path / "repo.db"
    result = optimizer(db, model=model).run()
    assert model.remaining == 0 and result["fallbacks"] == []
    assert result["model"] == "scripted:anthropic" and result["goal"] == "makespan"
    assert result["profile"]["keywords"] == ["long-tail", "batch"]

    # Each agent saw only its own tools and its own system prompt.
    systems = {r["system"]: tool_names(r) for r in model.requests}
    assert systems[prompts.OBSERVATION] == {
        "workload_summary",
        "workload_profile",
        "observe_again",
        "run_probe",
        "submit_profile",
    }
    assert "record_result" in systems[prompts.LEARNING] and "record_result" not in systems[prompts.PLANNING]
    assert "run_trial" not in systems[prompts.PLANNING]

    first, second = result["iterations"]
    assert first["candidate"]["config"] == {"max_wait_us": 100_000}
    assert first["lesson"]["verdict"] == "improved" and first["lesson"]["recorded"]["beat_baseline"]
    assert first["lesson"]["promoted"] == {"name": "ljf", "from": "verified", "to": "production"}
    assert second["candidate"]["config"] == {"max_wait_us": 400_000} and second["candidate"]["origin"] == "adapted"
    assert second["lesson"]["antipattern"]["note"].startswith("sched-agent: ljf(max_wait_us=400000)")
    assert [s["name"] for s in first["execution"]["stages"]] == ["build", "static", "kernel_verifier", "trial"]
    assert result["best"]["config"] == {"max_wait_us": 100_000} and result["best"]["ratio"] == 1.3

    cost = result["cost"]["agents"]
    assert {a: cost[a]["llm_calls"] for a in cost} == {"observation": 3, "planning": 3, "execution": 6, "learning": 5}
    assert {a: cost[a]["tool_errors"] for a in cost} == {"observation": 1, "planning": 1, "execution": 1, "learning": 1}
    assert result["cost"]["total"]["input_tokens"] > 0 and result["cost"]["total"]["bytes_read"] > 0

    with RepositoryService(db) as repo:
        hist = repo.history("ljf")
        assert hist["status"] == "production" and len(hist["results"]) == 2
        assert {json.dumps(r["config"], sort_keys=True) for r in hist["results"]} == {
            '{"max_wait_us": 100000}',
            '{"max_wait_us": 400000}',
        }
        assert any("400 ms aging bound" in a["note"] for a in hist["antipatterns"])


# -- the built-in agents, and learning across runs --------------------------------------------------
def test_builtin_loop_adapts_and_the_next_run_reuses_history(tmp_path: Path) -> None:
    db = tmp_path / "repo.db"
    first_wait: list[int] = []

    def measure(name: str, config: dict[str, Any]) -> float:
        """On this imagined host the planner's first choice (ljf_batch) loses; ljf helps, its first
        tuning step helps more, the second step less (relative to the configuration the planner
        derived from this host's measurements)."""
        if name != "ljf":
            return 0.9
        wait = config.get("max_wait_us", 100_000)
        first_wait[:] = first_wait or [wait]
        return {first_wait[0]: 1.3, rules.nice(2 * first_wait[0]): 1.5}.get(wait, 1.1)

    opt = optimizer(db, iterations=4, measure=measure)
    result = opt.run()
    assert result["model"] == "builtin" and result["goal"] == "makespan"
    assert result["cost"]["total"]["input_tokens"] == 0 and result["cost"]["total"]["tool_calls"] > 5
    plan = result["plan"]["candidates"]
    assert [c["policy"] for c in plan[:2]] == ["ljf_batch", "ljf"] and plan[0]["origin"] == "rules"
    its = result["iterations"]
    # The loss is remembered as an antipattern and the loop moves on to the next candidate.
    assert its[0]["candidate"]["policy"] == "ljf_batch" and its[0]["lesson"]["antipattern"] is not None
    its = its[1:]
    waits = [it["candidate"]["config"].get("max_wait_us") for it in its]
    # Tuned twice (1-2-5 steps) while it kept improving.
    assert waits[1] == rules.nice(2 * waits[0]) and waits[2] == rules.nice(2 * waits[1]) > waits[1]
    assert [it["candidate"]["origin"] for it in its] == ["rules", "adapted", "adapted"]
    assert its[0]["lesson"]["promoted"]["to"] == "production" and its[1]["lesson"]["promoted"] is None
    assert result["best"]["config"]["max_wait_us"] == waits[1] and result["best"]["ratio"] == 1.5
    assert its[2]["lesson"]["decision"]["action"] == "stop"
    steps = [n["message"] for n in result["narrative"] if n["agent"] == "observation"]
    assert steps[0].startswith("summary (") and any(s.startswith("goal: makespan") for s in steps)

    again = optimizer(db, iterations=1, measure=measure).run()
    first = again["plan"]["candidates"][0]
    assert first["origin"] == "history" and first["config"]["max_wait_us"] == waits[1]
    assert again["iterations"][0]["candidate"]["config"]["max_wait_us"] == waits[1]


def test_model_outage_falls_back_to_builtin_agents(tmp_path: Path) -> None:
    # Every call fails with HTTP 500 (retried three times by the backend): each agent gives up on the
    # model and its built-in version does the step; the run still measures and records.
    model = ScriptedModel([Turn(status=500, error="overloaded")] * 12, flavor="openai", max_attempts=3)
    result = optimizer(tmp_path / "repo.db", model=model, iterations=1).run()
    assert [f["agent"] for f in result["fallbacks"]] == ["observation", "planning", "execution", "learning"]
    assert all("HTTP 500" in f["reason"] for f in result["fallbacks"])
    assert result["iterations"][0]["lesson"]["recorded"]["policy"] == "ljf_batch"  # the plan's first choice


def test_a_builtin_agent_taking_over_does_not_repeat_work(tmp_path: Path) -> None:
    # The model measures and records, then loops until its turn caps; the built-in agents finish
    # the steps without running the trial or recording the result a second time.
    script = [
        Turn(calls=[("workload_summary", {})]),
        Turn(calls=[("submit_profile", {"goal": "makespan", "rationale": "batch with a long tail"})]),
        Turn(calls=[("submit_plan", {"candidates": [{"policy": "ljf", "rationale": "long job first"}]})]),
        Turn(calls=[("build_candidate", {}), ("static_check", {}), ("run_trial", {"rounds": 2})]),
        *[Turn(calls=[("static_check", {})])] * 9,
        Turn(calls=[("record_result", {})]),
        *[Turn(calls=[("record_result", {})])] * 7,
    ]
    model = ScriptedModel(script)
    db = tmp_path / "repo.db"
    opt = optimizer(db, model=model, iterations=1)
    result = opt.run()
    assert model.remaining == 0
    assert [f["agent"] for f in result["fallbacks"]] == ["execution", "learning"]
    assert "did not finish within" in result["fallbacks"][0]["reason"]
    assert opt.services.trials == [("ljf", {})]  # measured once
    lesson = result["iterations"][0]["lesson"]
    assert lesson["verdict"] == "improved" and lesson["promoted"]["to"] == "production"
    with RepositoryService(db) as repo:
        assert len(repo.history("ljf")["results"]) == 1  # recorded once


def test_bad_credentials_stop_the_run(tmp_path: Path) -> None:
    model = ScriptedModel([Turn(status=401, error="invalid x-api-key")], flavor="anthropic")
    with pytest.raises(ProviderError) as info:
        optimizer(tmp_path / "repo.db", model=model).run()
    assert info.value.code == "llm_auth"


# -- tool boxes and the turn loop ---------------------------------------------------------------------
class EchoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str
    times: int = 1


class DoneArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str


def echo_box(meter: CostMeter) -> ToolBox:
    def echo(a: EchoArgs) -> dict[str, Any]:
        if a.word == "refuse":
            raise UsageError("the service refused", "ask for something else")
        return {"echo": a.word * a.times}

    return ToolBox(
        "test",
        [
            Tool("echo", "Repeat a word.", EchoArgs, echo, max_bytes=600),
            Tool("done", "Finish.", DoneArgs, lambda a: {"answer": a.answer}, finish=True),
        ],
        meter,
    )


def test_toolbox_turns_every_bad_call_into_a_message() -> None:
    meter = CostMeter()
    box = echo_box(meter)
    schema = box.definitions()[0].parameters
    assert schema["additionalProperties"] is False and "title" not in schema and schema["required"] == ["word"]
    cases = [
        (ToolCall("1", "nope", {}), "no tool named 'nope'"),
        (ToolCall("2", "echo", None, '{"word": ', parse_error="not valid JSON"), "could not read the arguments"),
        (ToolCall("3", "echo", {"word": "a", "extra": 1}), "extra: Extra inputs are not permitted"),
        (ToolCall("4", "echo", {"times": "many"}), "invalid arguments for echo"),
        (ToolCall("5", "echo", {"word": "refuse"}), "the service refused (next: ask for something else)"),
    ]
    for call, text in cases:
        out = box.invoke(call)
        assert out.is_error and text in json.loads(out.content)["error"], out.content
    big = box.invoke(ToolCall("6", "echo", {"word": "x", "times": 5000}))
    assert not big.is_error and len(big.content.encode()) <= 600  # answers are cut to the tool's budget
    cost = meter.of("test")
    assert cost.tool_calls == 6 and cost.tool_errors == 5 and cost.bytes_read >= len(big.content)
    with pytest.raises(UsageError):
        box.call("echo", word="refuse")


def test_turn_cap_and_nudges() -> None:
    meter = CostMeter()
    looping = ScriptedModel([Turn(calls=[("echo", {"word": "again"})])] * 3)
    with pytest.raises(AgentError) as info:
        run_llm_agent(looping, "test", "sys", "task", echo_box(meter), meter, max_turns=3)
    assert info.value.code == "agent_turn_cap" and meter.of("test").llm_calls == 3

    chatty = ScriptedModel([Turn(text="I think...")] * 3)
    with pytest.raises(AgentError) as info:
        run_llm_agent(chatty, "test", "sys", "task", echo_box(meter), meter)
    assert info.value.code == "agent_no_finish"
    # The nudge asks for the finish tool by name.
    assert chatty.requests[1]["messages"][-1] == {
        "role": "user",
        "content": "Continue with the tools. When you are done, call done with your result.",
    }

    fixed = ScriptedModel(
        [Turn(calls=[("done", '{"answer": ')]), Turn(calls=[("done", {"answer": "42"})])], flavor="openai"
    )
    assert run_llm_agent(fixed, "test", "sys", "task", echo_box(meter), meter) == {"answer": "42"}
    assert fixed.requests[1]["messages"][-1]["role"] == "tool"
    assert "not valid JSON" in fixed.requests[1]["messages"][-1]["content"]


def test_cli_refuses_bad_options_before_booting_anything() -> None:
    from conftest import run_cli

    cases = [
        (["--demo", "--model", "gemini"], "unknown model backend"),
        (["--demo", "--iterations", "0"], "--iterations 0 is out of range"),
        (["--demo", "--goal", "speed"], "unknown goal"),
        (["--workload", "nope"], "unknown workload"),
        (["--demo", "--", "ls"], "--demo picks its own workload"),
        ([], "nothing to optimise"),
    ]
    for args, cause in cases:
        res = run_cli("optimize", "--json", *args, timeout=60)
        assert res.returncode == 2, (args, res.stdout, res.stderr)
        doc = json.loads(res.stdout)
        assert cause in doc["cause"] and doc["next_step"], doc
    res = run_cli("optimize", "--demo", "--model", "anthropic", "--json", timeout=60, env={"ANTHROPIC_API_KEY": ""})
    assert res.returncode == 1 and json.loads(res.stdout)["error"] == "llm_no_key"
