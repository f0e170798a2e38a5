# SPDX-License-Identifier: Apache-2.0
"""The agent loop over MCP, driven by a scripted model and by the built-in agents.

Every SchedCP call goes through a real MCP client session (the SDK's in-memory transport to a real
``schedcp`` server object) and shows up in the server's call log. Real parts: the policy repository
(a temporary SQLite file with the real embedding model), the workload observation (the real
long-tail batch run and sampled on this host), the builds (clang for the test kernel), the static
checks, and a second server process over stdio for the replay. Only the testbed's micro-VM is a
stand-in here (a session object the test hands the server, unreachable over MCP): observation runs
on this host and trials return fixed measurements; tests/test_agent_vm.py runs the real one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest
from mcp import Client
from pydantic import BaseModel, ConfigDict

from schedcp.agent import prompts, roles, rules
from schedcp.agent.client import SchedcpClient
from schedcp.agent.cost import CostMeter, PriceTable
from schedcp.agent.driver import AgentError, run_llm_agent
from schedcp.agent.llm import ProviderError, ToolCall
from schedcp.agent.llm.scripted import ScriptedModel, Turn
from schedcp.agent.loop import OptimizeOptions, Optimizer
from schedcp.agent.models import RoundResult, Trial
from schedcp.agent.toolbox import Tool, ToolBox
from schedcp.analysis.engine import LocalNode
from schedcp.errors import UsageError
from schedcp.repository.service import RepositoryService
from schedcp.server import calllog
from schedcp.server.app import build_server
from schedcp.services.models import TargetSpec
from schedcp.services.state import ServerOptions, ServerState
from schedcp.testbed import kernel as kernel_mod

LONGTAIL = [sys.executable, "-m", "schedcp.bench.guest.longtail"]


class HostSession:
    """The testbed's guest, stood in by this host: observation runs here, trials are scripted."""

    kernel_spec = "unstable"
    cpus = 2
    boot_id = "host-test"
    restarts = 0
    boot_s = None
    accel = None
    ready = True
    error = None

    def __init__(self, ratio) -> None:
        self.kernel = kernel_mod.cached("unstable")
        self.vm = SimpleNamespace(node=LocalNode())
        self.ratio = ratio
        self.trials: list[tuple[str, dict[str, Any]]] = []

    def start(self) -> None:
        pass

    def close(self) -> None:
        pass

    def discard(self) -> None:
        pass

    def measure(self, _session, _target, built, config, goal, *, rounds, watchdog_ms, progress) -> Trial:
        self.trials.append((built.name, dict(config)))
        ratio = self.ratio(built.name, config)
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


class Run:
    """An optimiser wired to an in-process SchedCP server whose testbed is a HostSession."""

    def __init__(self, tmp: Path, measure=ljf_measure, model=None, iterations: int = 2, goal: str = "auto") -> None:
        self.session = HostSession(measure)
        self.log = tmp / "calls.jsonl"
        self.state = ServerState(
            ServerOptions(
                repo_db=tmp / "repo.db",
                artifacts_root=tmp / "data" / "mcp",
                call_log=self.log,
                testbed_session=lambda _k, _c, _p: self.session,
            )
        )
        self.client = SchedcpClient.in_memory(build_server(self.state), self.state)
        opts = OptimizeOptions(target=TargetSpec(argv=LONGTAIL, timeout_s=120), goal=goal, iterations=iterations)
        self.optimizer = Optimizer(opts, client=self.client, model=model)

    def run(self) -> dict[str, Any]:
        return self.optimizer.run()


def last_tool_results(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The tool_result blocks of the newest user turn of an Anthropic request."""
    content = request["messages"][-1]["content"]
    return [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]


def tool_names(request: dict[str, Any]) -> set[str]:
    return {t["name"] for t in request.get("tools", [])}


def build_id_then(rounds: int = 2):
    """A scripted step that runs the trial on the build the previous turn made."""

    def step(request: dict[str, Any]) -> Turn:
        built = json.loads(last_tool_results(request)[-1]["content"])
        assert built["ok"], built
        return Turn(calls=[("run_trial", {"build_id": built["build_id"], "goal": "makespan", "rounds": rounds})])

    return step


# -- the whole loop, driven by a scripted model -----------------------------------------------------
def test_scripted_model_drives_all_four_agents_over_mcp(tmp_path: Path) -> None:
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
        Turn(calls=[("best_config", {}), ("list_antipatterns", {})]),
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
        # Execution 1: a trial before any build is refused by the agent; build, then the trial.
        Turn(calls=[("run_trial", {"build_id": "bld-0000000000000000", "goal": "makespan"})]),
        expect_error(
            "build_scheduler",
            Turn(calls=[("build_scheduler", {"scheduler": "ljf", "config": {"max_wait_us": 100_000}})]),
        ),
        build_id_then(),
        Turn(calls=[("submit_execution", {"note": "measured"})]),
        # Learning 1: promotion before recording is refused; record (numbers from the trial), promote, tune.
        Turn(calls=[("promote_scheduler", {"name": "ljf", "reason": "it won"})]),
        expect_error(
            "record",
            Turn(
                calls=[
                    ("record_result", {"notes": "first"}),
                    ("promote_scheduler", {"name": "ljf", "reason": "won every round"}),
                ]
            ),
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
        Turn(calls=[("build_scheduler", {"scheduler": "ljf", "config": {"max_wait_us": 400_000}})]),
        build_id_then(),
        Turn(calls=[("submit_execution", {"note": "done"})]),
        Turn(
            calls=[
                ("record_result", {}),
                ("record_antipattern", {"note": "a 400 ms aging bound let short jobs wait behind the long one"}),
            ]
        ),
        Turn(calls=[("submit_decision", {"action": "stop", "reason": "the first configuration was best"})]),
    ]
    model = ScriptedModel(script, flavor="anthropic")
    run = Run(tmp_path, model=model)
    result = run.run()
    assert model.remaining == 0 and result["fallbacks"] == []
    assert result["model"] == "scripted:anthropic" and result["goal"] == "makespan"
    assert result["profile"]["keywords"] == ["long-tail", "batch"]

    # Each agent saw only its role's MCP tools (under their MCP names) and its own finish tool.
    systems = {r["system"][0]["text"]: tool_names(r) for r in model.requests}
    assert systems[prompts.OBSERVATION] == {*roles.ROLE_TOOLS["observation"], "submit_profile"}
    assert systems[prompts.PLANNING] == {*roles.ROLE_TOOLS["planning"], "submit_plan"}
    assert systems[prompts.LEARNING] == {*roles.ROLE_TOOLS["learning"], "submit_decision"}
    # Prompt caching: the system prompt, the last tool and the newest message carry a breakpoint.
    req = model.requests[-1]
    assert req["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert req["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert req["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}

    first, second = result["iterations"]
    assert first["candidate"]["config"] == {"max_wait_us": 100_000}
    assert first["lesson"]["verdict"] == "improved" and first["lesson"]["recorded"]["beat_baseline"]
    assert first["lesson"]["recorded"]["trial_id"] == first["execution"]["trial_id"]
    promoted = first["lesson"]["promoted"]
    assert {k: promoted[k] for k in ("name", "from", "to")} == {"name": "ljf", "from": "verified", "to": "production"}
    # Production rests on the trial SchedCP measured itself, not on anything the agent said.
    assert promoted["evidence"]["kind"] == "measured_trials" and promoted["evidence"]["measured_by"] == ["run_trial"]
    assert second["candidate"]["config"] == {"max_wait_us": 400_000} and second["candidate"]["origin"] == "adapted"
    assert second["lesson"]["antipattern"]["note"].startswith("sched-agent: ljf(max_wait_us=400000)")
    assert [s["name"] for s in first["execution"]["stages"]] == ["build", "static", "kernel_verifier", "trial"]
    assert result["best"]["config"] == {"max_wait_us": 100_000} and result["best"]["ratio"] == 1.3

    cost = result["cost"]["agents"]
    assert {a: cost[a]["llm_calls"] for a in roles.AGENT_ROLES} == {
        "observation": 3,
        "planning": 3,
        "execution": 7,
        "learning": 5,
    }
    # Planning's refused plan counts twice: check_candidate refused the knob, so submit_plan refused the plan.
    assert {a: cost[a]["tool_errors"] for a in roles.AGENT_ROLES} == {
        "observation": 1,
        "planning": 2,
        "execution": 1,
        "learning": 1,
    }
    assert result["cost"]["total"]["input_tokens"] > 0 and result["cost"]["total"]["bytes_read"] > 0
    assert [p["phase"] for p in result["cost"]["phases"]] == ["plan", "iteration 1", "iteration 2"]

    # Every SchedCP call the agents made reached the server as an MCP tool call, and nothing else did.
    logged = calllog.read(run.log)
    assert len(logged) == result["schedcp"]["tool_calls"]
    assert {e["tool"] for e in logged} <= {t for names in roles.ROLE_TOOLS.values() for t in names}
    assert [e["tool"] for e in logged if e["tool"] == "run_trial"] == ["run_trial", "run_trial"]
    assert run.session.trials == [("ljf", {"max_wait_us": 100_000}), ("ljf", {"max_wait_us": 400_000})]

    with RepositoryService(tmp_path / "repo.db") as repo:
        hist = repo.history("ljf")
        assert hist["status"] == "production" and len(hist["results"]) == 2
        assert {json.dumps(r["config"], sort_keys=True) for r in hist["results"]} == {
            '{"max_wait_us": 100000}',
            '{"max_wait_us": 400000}',
        }
        assert any("400 ms aging bound" in a["note"] for a in hist["antipatterns"])


# -- the built-in agents, the call log, a replay, and learning across runs ----------------------------
def repository_records(db: Path) -> dict[str, Any]:
    """What a run leaves in the repository, without ids and times."""
    with RepositoryService(db) as repo:
        out: dict[str, Any] = {}
        for name in ("ljf", "ljf_batch"):
            h = repo.history(name)
            out[name] = {
                "status": h["status"],
                "results": sorted(
                    (json.dumps(r["config"], sort_keys=True), r["metrics"]["makespan_s"], r["baseline"]["makespan_s"])
                    for r in h["results"]
                ),
                "antipatterns": sorted(a["note"] for a in h["antipatterns"]),
                "moves": [(m["from_status"], m["to_status"]) for m in h["status_log"]],
            }
        return out


def replay(log: list[dict[str, Any]], run: Run, root: Path) -> None:
    """Send the logged calls, in order, from a plain MCP client (the SDK's, none of sched-agent's
    code) to a fresh server with its own repository and the same kind of testbed. Ids the first run
    was handed (testbed, builds, trials) are mapped to the ones this run is handed, as any client
    replaying a transcript would."""
    fresh = Run(root, measure=run.session.ratio)
    ids: dict[str, str] = {}

    async def go() -> None:
        async with Client(build_server(fresh.state), mode="legacy") as client:
            for entry in log:
                result = await client.call_tool(entry["tool"], calllog.substitute(entry["arguments"], ids))
                text = result.content[0].text
                assert bool(result.is_error) == (not entry["ok"]), (entry, text)
                if not result.is_error:
                    answer = json.loads(text)
                    ids.update({old: answer[k] for k, old in entry["ids"].items() if k in answer})

    anyio.run(go)


def test_builtin_loop_over_mcp_is_logged_replayable_and_reused(tmp_path: Path) -> None:
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

    run = Run(tmp_path, measure=measure, iterations=4)
    result = run.run()
    assert result["model"] == "builtin" and result["goal"] == "makespan"
    assert result["cost"]["total"]["input_tokens"] == 0 and result["cost"]["price"]["usd"] == 0.0
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

    # The server's log holds every SchedCP call, in order: the loop's testbed, then the agents' calls.
    logged = calllog.read(run.log)
    assert (
        len(logged)
        == result["schedcp"]["tool_calls"]
        == result["cost"]["total"]["tool_calls"]
        - sum(
            a["tools"].get(f, 0)
            for a in result["cost"]["agents"].values()
            for f in a["tools"]
            if f.startswith("submit_")
        )
    )
    assert logged[0]["tool"] == "start_testbed" and logged[-1]["tool"] == "stop_testbed"
    assert [e["seq"] for e in logged] == list(range(1, len(logged) + 1))
    tools = [e["tool"] for e in logged]
    assert tools.count("run_trial") == 4 and tools.count("record_result") == 4
    # The only refusals: promoting ljf again once it is at the top status (the agent notes it and goes on).
    assert [(e["tool"], e["code"]) for e in logged if not e["ok"]] == [("promote_scheduler", "usage")] * 2

    # The same calls from an outside MCP client leave the same records.
    replay(logged, run, tmp_path / "replay")
    assert repository_records(tmp_path / "replay" / "repo.db") == repository_records(tmp_path / "repo.db")

    again = Run(tmp_path, measure=measure, iterations=1).run()
    first = again["plan"]["candidates"][0]
    assert first["origin"] == "history" and first["config"]["max_wait_us"] == waits[1]
    assert again["iterations"][0]["candidate"]["config"]["max_wait_us"] == waits[1]


def test_each_agent_is_refused_tools_outside_its_role(tmp_path: Path) -> None:
    run = Run(tmp_path)
    meter = CostMeter()
    with run.client as client:
        every = set(client.tools())
        for role in roles.AGENT_ROLES:
            box = ToolBox(role, client, meter)
            offered = {d.name for d in box.definitions()}
            assert offered == set(roles.ROLE_TOOLS[role])
            for name in sorted(every - offered)[:6]:
                with pytest.raises(UsageError) as info:
                    box.call(name)
                assert info.value.code == "role_refused" and role in info.value.cause
                out = box.invoke(ToolCall("x", name, {}))
                assert out.is_error and "no tool named" in out.content
    # None of those refusals reached the server.
    assert not run.log.exists() or not calllog.read(run.log)


def test_model_outage_falls_back_to_builtin_agents(tmp_path: Path) -> None:
    # Every call fails with HTTP 500 (retried by the SDK): each agent gives up on the model and its
    # built-in version does the step; the run still measures and records.
    model = ScriptedModel([Turn(status=500, error="overloaded")] * 12, flavor="openai", max_attempts=3)
    result = Run(tmp_path, model=model, iterations=1).run()
    assert [f["agent"] for f in result["fallbacks"]] == ["observation", "planning", "execution", "learning"]
    assert all("HTTP 500" in f["reason"] for f in result["fallbacks"])
    assert result["cost"]["total"]["http_attempts"] == 12  # every attempt the SDK made, retries included
    assert result["iterations"][0]["lesson"]["recorded"]["policy"] == "ljf_batch"  # the plan's first choice


def test_a_builtin_agent_taking_over_does_not_repeat_work(tmp_path: Path) -> None:
    # The model measures and records, then loops until its turn caps; the built-in agents finish
    # the steps without running the trial or recording the result a second time.
    script = [
        Turn(calls=[("workload_summary", {})]),
        Turn(calls=[("submit_profile", {"goal": "makespan", "rationale": "batch with a long tail"})]),
        Turn(calls=[("submit_plan", {"candidates": [{"policy": "ljf", "rationale": "long job first"}]})]),
        Turn(calls=[("build_scheduler", {"scheduler": "ljf"})]),
        build_id_then(),
        *[Turn(calls=[("get_scheduler", {"name": "ljf"})])] * 8,
        Turn(calls=[("record_result", {})]),
        *[Turn(calls=[("record_result", {})])] * 7,
    ]
    model = ScriptedModel(script)
    run = Run(tmp_path, model=model, iterations=1)
    result = run.run()
    assert model.remaining == 0
    assert [f["agent"] for f in result["fallbacks"]] == ["execution", "learning"]
    assert "did not finish within" in result["fallbacks"][0]["reason"]
    assert run.session.trials == [("ljf", {})]  # measured once
    lesson = result["iterations"][0]["lesson"]
    assert lesson["verdict"] == "improved" and lesson["promoted"]["to"] == "production"
    with RepositoryService(tmp_path / "repo.db") as repo:
        assert len(repo.history("ljf")["results"]) == 1  # recorded once


def test_bad_credentials_stop_the_run(tmp_path: Path) -> None:
    model = ScriptedModel([Turn(status=401, error="invalid x-api-key")], flavor="anthropic")
    with pytest.raises(ProviderError) as info:
        Run(tmp_path, model=model).run()
    assert info.value.code == "llm_auth"


# -- tool boxes and the turn loop ---------------------------------------------------------------------
class EchoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    word: str
    times: int = 1


class DoneArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    answer: str


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    root = tmp_path_factory.mktemp("client")
    state = ServerState(ServerOptions(repo_db=root / "repo.db", artifacts_root=root / "mcp"))
    with SchedcpClient.in_memory(build_server(state), state) as c:
        yield c


def echo_box(meter: CostMeter, client: SchedcpClient) -> ToolBox:
    def echo(a: EchoArgs) -> dict[str, Any]:
        if a.word == "refuse":
            raise UsageError("the service refused", "ask for something else")
        return {"echo": a.word * a.times}

    return ToolBox(
        "observation",
        client,
        meter,
        local=[
            Tool("echo", "Repeat a word.", EchoArgs, echo, max_bytes=600),
            Tool("done", "Finish.", DoneArgs, lambda a: {"answer": a.answer}, finish=True),
        ],
    )


def test_toolbox_turns_every_bad_call_into_a_message(client: SchedcpClient) -> None:
    meter = CostMeter()
    box = echo_box(meter, client)
    schema = next(d for d in box.definitions() if d.name == "echo").parameters
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
    cost = meter.of("observation")
    assert cost.tool_calls == 6 and cost.tool_errors == 5 and cost.bytes_read >= len(big.content)
    with pytest.raises(UsageError):
        box.call("echo", word="refuse")


def test_turn_cap_and_nudges(client: SchedcpClient) -> None:
    meter = CostMeter()
    looping = ScriptedModel([Turn(calls=[("echo", {"word": "again"})])] * 3)
    with pytest.raises(AgentError) as info:
        run_llm_agent(looping, "test", "sys", "task", echo_box(meter, client), meter, max_turns=3)
    assert info.value.code == "agent_turn_cap" and meter.of("test").llm_calls == 3

    chatty = ScriptedModel([Turn(text="I think...")] * 3)
    with pytest.raises(AgentError) as info:
        run_llm_agent(chatty, "test", "sys", "task", echo_box(meter, client), meter)
    assert info.value.code == "agent_no_finish"
    # The nudge asks for the finish tool by name.
    nudge = chatty.requests[1]["messages"][-1]
    assert nudge["role"] == "user" and nudge["content"][-1]["text"] == (
        "Continue with the tools. When you are done, call done with your result."
    )

    fixed = ScriptedModel(
        [Turn(calls=[("done", '{"answer": ')]), Turn(calls=[("done", {"answer": "42"})])], flavor="openai"
    )
    assert run_llm_agent(fixed, "test", "sys", "task", echo_box(meter, client), meter) == {"answer": "42"}
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


def test_price_table_prices_tokens_and_takes_overrides(tmp_path: Path) -> None:
    counts = {"input_tokens": 1_000_000, "output_tokens": 100_000, "cache_read_tokens": 2_000_000}
    table = PriceTable.load()
    priced = table.price(counts, "anthropic:claude-sonnet-4-5-20250929")  # dated names match their family
    assert priced["priced_as"] == "anthropic:claude-sonnet-4-5" and priced["usd"] == pytest.approx(3 + 1.5 + 0.6)
    assert table.price(counts, "openai:some-local-model")["usd"] is None
    own = tmp_path / "prices.toml"
    own.write_text('[models."openai:some-local-model"]\ninput = 0.1\noutput = 0.2\n')
    mine = PriceTable.load(own)
    assert mine.price(counts, "openai:some-local-model")["usd"] == pytest.approx(0.1 + 0.02)
    assert mine.price(counts, "anthropic:claude-sonnet-4-5")["usd"] == priced["usd"]  # the rest stays
    bad = tmp_path / "bad.json"
    bad.write_text('{"models": {"x": {"input": -1, "output": 1}}}')
    with pytest.raises(UsageError, match="not valid"):
        PriceTable.load(bad)
