# SPDX-License-Identifier: Apache-2.0
"""Planning agent: from a Workload Profile to an ordered list of candidate policies.

Decision hierarchy: configure an existing policy (cheapest, proven code) -> patch one -> compose a
new one from primitives. It consults the repository first (past results on similar workloads,
antipatterns, semantic search) so known answers are reused and known mistakes are not repeated.
The built-in planner (rules.py) configures library policies only; LLM planners may also submit
patched or composed source, which the Execution agent builds and verifies like any other.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.agent import prompts, rules
from schedcp.agent.base import Agent
from schedcp.agent.models import NAME_PATTERN, Candidate, Plan, Scalar
from schedcp.agent.toolbox import Tool
from schedcp.analysis.profile import WorkloadProfile
from schedcp.errors import SchedcpError, UsageError


class CandidateArg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str = Field(
        pattern=NAME_PATTERN, description="Existing policy to configure, or a NEW name for patch/compose."
    )
    level: Literal["configure", "patch", "compose"] = "configure"
    config: dict[str, Scalar] = Field(default_factory=dict, description="Tunable values (configure only).")
    source: str | None = Field(None, max_length=256 * 1024, description="Complete BPF C source (patch/compose).")
    parent: str | None = Field(None, pattern=NAME_PATTERN, description="The policy a patch changes.")
    rationale: str = Field(min_length=3, max_length=600)


class PlanArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    candidates: list[CandidateArg] = Field(min_length=1, max_length=rules.MAX_CANDIDATES)
    notes: str = Field("", max_length=600)


def repository_profile(profile: WorkloadProfile) -> dict[str, Any]:
    """The profile in the small shape the repository matches results and antipatterns by."""
    ch = profile.characteristics
    traits: dict[str, Any] = {
        "classification": ch.classification,
        "batch": ch.batch,
        "keywords": profile.keywords[:12],
        "parallelism": ch.sched.parallelism,
        "runq_wait_pct": ch.sched.runq_wait_pct,
        "mean_slice_ms": ch.sched.mean_slice_ms,
    }
    if ch.long_tail is not None:
        traits["long_tail"] = ch.long_tail.detected
        traits["tail_ratio"] = ch.long_tail.ratio_max_median
    if ch.churn.short_lived_storm:
        traits["short_lived_storm"] = True
    return {"summary": profile.summary[:2000], "goal": profile.goal, "characteristics": traits}


class PlanningAgent(Agent):
    name = "planning"
    system = prompts.PLANNING
    max_turns = 12
    max_tokens = 8192  # a patch or a composed policy is written as one tool argument

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.plan: Plan | None = None
        self.profile: WorkloadProfile | None = None

    def tools(self, profile: WorkloadProfile, box_ref: list[Any]) -> list[Tool]:
        def submit(args: PlanArgs) -> dict[str, Any]:
            cands: list[Candidate] = []
            problems: list[str] = []
            for i, c in enumerate(args.candidates):
                try:
                    cand = Candidate(**c.model_dump(), origin="model")
                    box_ref[0].call("check_candidate", **cand.spec())
                    cands.append(cand)
                except SchedcpError as exc:
                    problems.append(f"candidates[{i}] ({c.policy}): {exc.cause}")
                except ValueError as exc:
                    problems.append(f"candidates[{i}] ({c.policy}): {exc}")
            if problems:
                raise UsageError(
                    "the plan was not accepted: " + "; ".join(problems)[:700],
                    "fix those candidates and call submit_plan again",
                )
            self.plan = Plan(goal=profile.goal, candidates=cands, notes=[args.notes] if args.notes else [])
            return {"accepted": True, "candidates": [c.label() for c in cands]}

        return [
            Tool(
                "submit_plan",
                "Finish: 1-4 candidates, best first. Each is checked with check_candidate (policy exists and "
                "runs in the VM, tunables in range, source present for patch/compose).",
                PlanArgs,
                submit,
                max_bytes=1024,
                finish=True,
            ),
        ]

    def run(self, profile: WorkloadProfile, iterations: int) -> Plan:
        self.profile = profile
        box_ref: list[Any] = []
        box = self.toolbox(self.tools(profile, box_ref), bound={"profile": repository_profile(profile)})
        box_ref.append(box)
        with self.meter.timed(self.name):
            if self.model is None:
                self._builtin(box, profile)
            else:
                task = prompts.planning_task(
                    repository_profile(profile) | {"goal_rationale": profile.goal_rationale, "long_tail": _lt(profile)},
                    iterations,
                )
                self.drive(box, task)
        assert self.plan is not None
        for note in self.plan.notes:
            self.say(note)
        for i, c in enumerate(self.plan.candidates, 1):
            self.say(f"candidate {i}: {c.label()} [{c.level}, {c.origin}] — {c.rationale}")
        return self.plan

    def _builtin(self, box: Any, profile: WorkloadProfile) -> None:
        history = box.call("best_config")  # the profile is bound (repository_profile)
        notes = box.call("list_antipatterns").get("antipatterns") or []
        query = f"{profile.summary} Keywords: {', '.join(profile.keywords)}"[:1000]
        hits = box.call("search_schedulers", query=query, k=4).get("results") or []
        self.say(
            f"repository: {history.get('considered_results', 0)} past result(s) with goal {profile.goal}, "
            f"{len(notes)} antipattern note(s), search top hit "
            f"{hits[0]['name'] if hits else 'none'}"
        )
        available = {h["name"] for h in hits if h.get("usable") and h.get("kind") in ("bpf", "generated")}
        # Rule candidates name library policies; look each up once (cheap) to know it is runnable.
        wanted = [*rules.rule_candidates(profile), rules.history_candidate(history.get("best"))]
        for cand in wanted:
            if cand is None or cand.policy in available:
                continue
            try:
                info = box.call("get_scheduler", name=cand.policy)
            except SchedcpError:
                continue
            if info.get("usable") and info.get("kind") in ("bpf", "generated") and info.get("status") != "deprecated":
                available.add(cand.policy)
        plan = rules.build_plan(profile, history=history, antipatterns=notes, search_hits=hits, available=available)
        box.call(
            "submit_plan",
            candidates=[c.model_dump(exclude={"origin"}) for c in plan.candidates],
            notes="; ".join(plan.notes)[:600],
        )
        assert self.plan is not None
        # Keep the built-in's provenance (history/rules/search) rather than "model".
        self.plan = plan


def _lt(profile: WorkloadProfile) -> dict[str, Any] | None:
    lt = profile.characteristics.long_tail
    return lt.model_dump() if lt is not None else None
