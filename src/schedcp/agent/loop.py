# SPDX-License-Identifier: Apache-2.0
"""sched-agent's loop: Observation -> Planning -> (Execution -> Learning) x N, in one VM boot.

    with SchedcpClient.in_memory(build_server(state), state) as client:   # or .remote("schedcp mcp")
        result = Optimizer(OptimizeOptions(target=TargetSpec(workload="longtail")), client=client).run()

The loop holds one SchedCP testbed (start_testbed ... stop_testbed) and every agent works in it
through MCP, with its own context and only its role's tools; they exchange only the structured
products in ``models.py``. With ``model="builtin"`` all four agents are deterministic and offline;
with an LLM backend each agent is driven by the model, and an agent that cannot finish (turn cap,
provider outage) is replaced by its built-in counterpart for that step, which the result reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from schedcp.agent.client import SchedcpClient
from schedcp.agent.cost import CostMeter, PriceTable
from schedcp.agent.driver import AgentError
from schedcp.agent.execution import ExecutionAgent
from schedcp.agent.learning import LearningAgent
from schedcp.agent.llm import ChatModel, ProviderError, make_model
from schedcp.agent.models import Candidate, Execution, Iteration, Lesson, Plan
from schedcp.agent.observation import ObservationAgent
from schedcp.agent.planning import PlanningAgent, repository_profile
from schedcp.agent.toolbox import ToolBox
from schedcp.errors import UsageError
from schedcp.services.models import TargetSpec, TestbedInfo

GOALS = ("auto", "makespan", "p99_latency", "throughput", "fairness")
NODES = ("vm", "daemon", "local")
# Provider errors a fallback cannot paper over: the user has to fix the configuration.
FATAL_PROVIDER_CODES = ("llm_auth", "llm_not_found", "llm_no_key")


@dataclass
class OptimizeOptions:
    target: TargetSpec
    goal: str = "auto"
    model: str = "builtin"
    iterations: int = 2
    rounds: int = 2
    cpus: int = 2
    kernel: str = "unstable"
    prices: Path | None = None  # a price table overriding the shipped one (JSON or TOML)
    extra: dict[str, Any] = field(default_factory=dict)
    # Where trials run: vm (the server's micro-VM), daemon (the SchedCP daemon's node), local (the
    # daemon's node when it is this host): start_testbed's `node`.
    node: str = "vm"

    def validate(self) -> None:
        if self.goal not in GOALS:
            raise UsageError(f"unknown goal {self.goal!r}", f"use one of: {', '.join(GOALS)}")
        if not 1 <= self.iterations <= 10:
            raise UsageError(f"--iterations {self.iterations} is out of range", "use 1..10")
        if not 1 <= self.rounds <= 3:
            raise UsageError(f"--rounds {self.rounds} is out of range", "use 1..3")
        if self.node not in NODES:
            raise UsageError(f"--target {self.node} is not a place trials run", f"use one of: {', '.join(NODES)}")
        if not 1 <= self.cpus <= 64:
            raise UsageError(f"--cpus {self.cpus} is out of range", "use 1..64")


class Optimizer:
    def __init__(
        self,
        options: OptimizeOptions,
        *,
        client: SchedcpClient,
        model: ChatModel | None = None,
        narrate: Callable[[str, str], None] = lambda _a, _m: None,
        progress: Callable[[str], None] = lambda _m: None,
    ) -> None:
        options.validate()
        self.options = options
        self.model = model if model is not None else make_model(options.model)
        self.prices = PriceTable.load(options.prices)
        self.meter = CostMeter()
        self.progress = progress
        self.narrative: list[dict[str, str]] = []
        self.fallbacks: list[dict[str, str]] = []
        self._narrate_cb = narrate
        self.client = client
        self.testbed: TestbedInfo | None = None

    def narrate(self, agent: str, message: str) -> None:
        self.narrative.append({"agent": agent, "message": message})
        self._narrate_cb(agent, message)

    def _agent(self, cls: type, **kwargs: Any) -> Any:
        assert self.testbed is not None
        return cls(self.client, self.testbed, self.meter, self.model, self.narrate, **kwargs)

    def _with_fallback(self, agent: Any, call: Callable[[Any], Any]) -> Any:
        """Run an agent; if its model cannot finish, the built-in version of the agent does the step."""
        try:
            return call(agent)
        except (AgentError, ProviderError) as exc:
            if agent.model is None or exc.code in FATAL_PROVIDER_CODES:
                raise
            self.fallbacks.append({"agent": agent.name, "reason": exc.cause})
            self.narrate(agent.name, f"model failed ({exc.cause}); the built-in {agent.name} agent takes over")
            agent.model = None
            return call(agent)

    def run(self) -> dict[str, Any]:
        opts = self.options
        t0 = time.monotonic()
        box = ToolBox("loop", self.client, self.meter)
        with self.client:
            self.testbed = TestbedInfo.model_validate(
                box.call(
                    "start_testbed",
                    target=opts.target.model_dump(exclude_none=True),
                    kernel=opts.kernel,
                    cpus=opts.cpus,
                    **({"node": opts.node} if opts.node != "vm" else {}),
                )
            )
            self.progress(f"testbed {self.testbed.testbed_id}: booting {opts.kernel} for {self.testbed.target.label}")
            try:
                obs = self._agent(ObservationAgent, goal_override=None if opts.goal == "auto" else opts.goal)
                profile = self._with_fallback(obs, lambda a: a.run())
                planner = self._agent(PlanningAgent)
                plan: Plan = self._with_fallback(planner, lambda a: a.run(profile, opts.iterations))
                self.meter.close_phase("plan")
                iterations = self._iterate(profile, plan)
                self.testbed = TestbedInfo.model_validate(
                    box.call("testbed_status", testbed_id=self.testbed.testbed_id)
                )
            finally:
                try:
                    box.call("stop_testbed", testbed_id=self.testbed.testbed_id)
                except Exception:  # the run's own error matters more than a failed shutdown
                    pass
            return self._result(profile, plan, iterations, time.monotonic() - t0)

    def _iterate(self, profile: Any, plan: Plan) -> list[Iteration]:
        opts = self.options
        queue: list[Candidate] = list(plan.candidates)
        done: list[Iteration] = []
        log: list[dict[str, Any]] = []
        tried: set[str] = set()
        for n in range(1, opts.iterations + 1):
            while queue and queue[0].key() in tried:
                queue.pop(0)
            if not queue:
                self.narrate("loop", "no candidates left")
                break
            cand = queue.pop(0)
            tried.add(cand.key())
            self.narrate("loop", f"iteration {n}/{opts.iterations}: {cand.label()}")
            executor = self._agent(ExecutionAgent, rounds=opts.rounds)
            ex: Execution = self._with_fallback(executor, partial(_execute, candidate=cand, goal=profile.goal))
            learner = self._agent(LearningAgent)
            log_entry = {"candidate": ex.candidate.label(), "ratio": ex.trial.ratio if ex.trial else None, "ok": ex.ok}
            lesson: Lesson = self._with_fallback(
                learner,
                partial(
                    _learn,
                    profile=profile,
                    execution=ex,
                    session=[*log, log_entry],
                    remaining=list(queue),
                    iterations_left=opts.iterations - n,
                ),
            )
            log.append(log_entry | {"verdict": lesson.verdict})
            cost = self.prices.price(self.meter.close_phase(f"iteration {n}"), self._model_name())
            done.append(Iteration(n=n, candidate=ex.candidate.brief(), execution=ex, lesson=lesson, cost=cost))
            action = lesson.decision
            if action.action == "stop":
                break
            if action.action == "tune":
                queue.insert(
                    0,
                    ex.candidate.model_copy(
                        update={
                            "config": dict(action.config),
                            "origin": "adapted",
                            "rationale": action.reason[:600] or "tuned",
                        }
                    ),
                )
        return done

    def _result(self, profile: Any, plan: Plan, iterations: list[Iteration], wall_s: float) -> dict[str, Any]:
        measured = [(it, it.execution.trial) for it in iterations if it.execution.ok and it.execution.trial is not None]
        # Clear wins (consistent across rounds) rank above larger but inconsistent ratios.
        top = max(
            measured,
            key=lambda pair: (
                pair[0].lesson is not None and pair[0].lesson.verdict == "improved",
                pair[1].ratio or 0.0,
            ),
            default=None,
        )
        best_doc = None
        if top is not None:
            best, t = top
            best_doc = {
                "policy": best.execution.candidate.policy,
                "config": best.execution.candidate.config,
                "label": best.execution.candidate.label(),
                "metric": t.metric,
                "eevdf": t.baseline_value,
                "policy_value": t.policy_value,
                "ratio": t.ratio,
                "consistent": t.consistent,
                "beat_eevdf": bool(t.ratio and t.ratio > 1.0),
                "verdict": best.lesson.verdict if best.lesson else None,
            }
        tb = self.testbed
        assert tb is not None
        return {
            "target": tb.target.as_dict(),
            "model": self._model_name(),
            "kernel": tb.kernel_release,
            "schedcp": {"server": self.client.where, "testbed_id": tb.testbed_id, "tool_calls": self.client.calls},
            "vm": {
                "boot_s": tb.boot_s,
                "accel": tb.accel,
                "cpus": tb.cpus,
                "boot_id": tb.boot_id,
                "restarts": tb.restarts,
            },
            "goal": profile.goal,
            "profile": {
                "summary": profile.summary,
                "goal": profile.goal,
                "goal_rationale": profile.goal_rationale,
                "keywords": profile.keywords,
                "for_repository": repository_profile(profile),
            },
            "plan": {"candidates": [c.brief() for c in plan.candidates], "notes": plan.notes},
            "iterations": [it.model_dump(mode="json") for it in iterations],
            "best": best_doc,
            "repository": self.client.repository_path,
            "cost": self._cost(),
            "fallbacks": self.fallbacks,
            "narrative": self.narrative,
            "wall_s": round(wall_s, 1),
        }

    def _model_name(self) -> str:
        return self.model.name if self.model is not None else "builtin"

    def _cost(self) -> dict[str, Any]:
        report = self.meter.report()
        report["total"]["http_attempts"] = getattr(self.model, "attempts", 0)
        report["backend"] = self._model_name()
        report["price"] = self.prices.price(report["total"], self._model_name())
        report["prices_from"] = self.prices.source
        return report


def _execute(agent: ExecutionAgent, *, candidate: Candidate, goal: str) -> Execution:
    return agent.run(candidate, goal)


def _learn(agent: LearningAgent, *, profile: Any, execution: Execution, **kwargs: Any) -> Lesson:
    return agent.run(profile, execution, **kwargs)


def optimize(options: OptimizeOptions, client: SchedcpClient, **kwargs: Any) -> dict[str, Any]:
    return Optimizer(options, client=client, **kwargs).run()
