# SPDX-License-Identifier: Apache-2.0
"""Observation agent: what is this workload, and what should be optimised?

It starts with the cheapest view (a ~1.5 KB summary of one observed run) and pays for more only
when the summary leaves the answer open: the ~4 KB profile, a re-observation with finer sampling
(short-lived children can slip between samples), or tracepoint probes for latency questions.
Its product is a ``WorkloadProfile``: the analysis engine's numbers, with a description and goal
that the agent may restate, and the user's goal when one was given.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.agent import prompts
from schedcp.agent.base import Agent
from schedcp.agent.toolbox import Tool
from schedcp.analysis.profile import WorkloadProfile

Goal = Literal["makespan", "p99_latency", "throughput", "fairness"]


class SubmitArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rationale: str = Field(min_length=3, max_length=600, description="Why this description and goal.")
    summary: str | None = Field(
        None, min_length=10, max_length=1500, description="Your description of the workload; omit to keep the engine's."
    )
    goal: Goal | None = Field(None, description="Optimisation goal; omit to keep the engine's suggestion.")
    keywords: list[str] | None = Field(None, max_length=12, description="Search terms for the policy repository.")


class ObservationAgent(Agent):
    name = "observation"
    system = prompts.OBSERVATION
    max_turns = 10

    def __init__(self, *args: Any, goal_override: str | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.goal_override = goal_override
        self.profile: WorkloadProfile | None = None
        self.drilled: list[str] = []

    # -- tools ----------------------------------------------------------------------------------
    def tools(self, box_ref: list[Any]) -> list[Tool]:
        def submit(args: SubmitArgs) -> dict[str, Any]:
            # The engine's typed profile of the testbed's observation, fetched over MCP like any answer.
            record = box_ref[0].call("workload_profile", detail="record", max_bytes=16384)
            prof = WorkloadProfile.model_validate(record["profile"])
            update: dict[str, Any] = {}
            if args.summary:
                update["summary"] = args.summary
            if args.goal and args.goal != prof.goal:
                update["goal"], update["goal_rationale"] = args.goal, args.rationale
            if args.keywords:
                update["keywords"] = [k.strip().lower()[:40] for k in args.keywords if k.strip()][:12]
            if self.goal_override:
                update["goal"] = self.goal_override
                update["goal_rationale"] = "set by the user (--goal)"
            self.profile = prof.model_copy(update=update)
            return {"accepted": True, "goal": self.profile.goal, "summary": self.profile.summary[:300]}

        return [
            Tool(
                "submit_profile",
                "Finish: accept the engine's profile of the testbed's workload, optionally restating the "
                "summary, goal and keywords.",
                SubmitArgs,
                submit,
                max_bytes=1024,
                finish=True,
            ),
        ]

    # -- running --------------------------------------------------------------------------------
    def run(self) -> WorkloadProfile:
        box_ref: list[Any] = []
        box = self.toolbox(self.tools(box_ref))
        box_ref.append(box)
        with self.meter.timed(self.name):
            if self.model is None:
                self._builtin(box)
            else:
                task = prompts.observation_task(
                    self.testbed.target.as_dict(), self.testbed.testbed_id, self.goal_override
                )
                self.drive(box, task)
        assert self.profile is not None
        p = self.profile
        self.say(f"profile: {p.summary}")
        self.say(f"goal: {p.goal} — {p.goal_rationale}")
        return p

    def _builtin(self, box: Any) -> None:
        s = box.call("workload_summary")
        self.say(f"summary ({len(_json(s))} B): class {s.get('class')}, suggested goal {s.get('goal')}")
        question = ambiguous_summary(s)
        if question:
            self.say(f"summary is ambiguous ({question}); asking for the profile")
            p = box.call("workload_profile", detail="profile")
            missed = missed_children(p)
            if missed:
                self.say(f"{missed}; observing again with finer sampling")
                s = box.call("workload_summary", refresh=True, interval_s=0.05)
                self.say(f"re-observed: class {s.get('class')}, suggested goal {s.get('goal')}")
        else:
            self.say("summary is clear; no deeper profiling needed")
        box.call("submit_profile", rationale="built-in observation: engine profile accepted")


def _json(doc: Any) -> str:
    import json

    return json.dumps(doc, separators=(",", ":"))


def ambiguous_summary(s: dict[str, Any]) -> str | None:
    """Why a summary does not settle the plan (None when it does)."""
    klass, tasks = s.get("class"), s.get("tasks") or {}
    lt = s.get("long_tail") or {}
    if klass in ("mixed", "idle"):
        return f"class {klass}"
    if lt and not lt.get("detected") and (lt.get("ratio") or 0) >= 2:
        return f"borderline long tail (max/median {lt.get('ratio')}x)"
    if klass == "cpu_bound" and s.get("goal") == "throughput" and (tasks.get("procs") or 0) >= 4 and not lt:
        return "several processes but no sibling-group analysis in the summary"
    return None


def missed_children(p: dict[str, Any]) -> str | None:
    """The sampler saw fewer processes than the system forked during the run: it missed some."""
    ch = p.get("characteristics") or {}
    churn = ch.get("churn") or {}
    forks = float(churn.get("forks_per_s_system") or 0.0) * float(p.get("duration_s") or 0.0)
    seen = int(churn.get("procs_seen") or 0)
    if forks >= 4 and seen < forks / 2:
        return f"the system forked ~{forks:.0f} processes but the sampler saw {seen}"
    return None
