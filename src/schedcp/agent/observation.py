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
ProbeKind = Literal["runqlat", "wakeup", "runtime", "migrations"]


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProfileArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    detail: Literal["profile", "full"] = Field(
        "profile", description="profile (~4 KB): full Workload Profile, phases, groups, top tasks; full (~16 KB)."
    )


class ObserveAgainArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    interval_s: float = Field(0.05, ge=0.02, le=0.5, description="Sampling interval; smaller sees shorter tasks.")


class ProbeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kinds: list[ProbeKind] = Field(min_length=1, max_length=4, description="Tracepoint probes to attach.")


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
    def tools(self) -> list[Tool]:
        svc = self.services

        def summary(_: NoArgs) -> dict[str, Any]:
            return svc.render("summary")

        def profile(args: ProfileArgs) -> dict[str, Any]:
            self.drilled.append(f"detail={args.detail}")
            return svc.render(args.detail)

        def observe_again(args: ObserveAgainArgs) -> dict[str, Any]:
            self.drilled.append(f"re-observed every {args.interval_s}s")
            svc.observe(refresh=True, interval_s=args.interval_s)
            return svc.render("summary")

        def probe(args: ProbeArgs) -> dict[str, Any]:
            self.drilled.append(f"probes {','.join(args.kinds)}")
            raw = svc.observe(refresh=True, probe=list(args.kinds))
            doc = svc.render("profile")
            return {
                "probe": doc.get("probe") or raw.get("probe") or {"available": False},
                "summary": doc.get("summary"),
            }

        def submit(args: SubmitArgs) -> dict[str, Any]:
            prof = svc.profile()
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
                "workload_summary",
                "The cheapest view (~1.5 KB) of the workload, observed once under EEVDF in the "
                "guest: class, suggested goal, CPU use, run-queue wait, slices, churn, long-tail check.",
                NoArgs,
                summary,
                max_bytes=1800,
            ),
            Tool(
                "workload_profile",
                "More detail on the same observation (no re-run): the full Workload Profile "
                "with phases, sibling groups and top tasks.",
                ProfileArgs,
                profile,
                max_bytes=16384,
            ),
            Tool(
                "observe_again",
                "Run the workload again with finer sampling (costs a full run); use when the "
                "summary looks like it missed short-lived processes.",
                ObserveAgainArgs,
                observe_again,
                max_bytes=1800,
            ),
            Tool(
                "run_probe",
                "Run the workload again with scheduler tracepoint probes (costs a full run): "
                "run-queue latency, wakeup latency, per-task runtime, migrations.",
                ProbeArgs,
                probe,
            ),
            Tool(
                "submit_profile",
                "Finish: accept the engine's profile, optionally restating the summary, goal and keywords.",
                SubmitArgs,
                submit,
                max_bytes=1024,
                finish=True,
            ),
        ]

    # -- running --------------------------------------------------------------------------------
    def run(self) -> WorkloadProfile:
        box = self.toolbox(self.tools())
        with self.meter.timed(self.name):
            if self.model is None:
                self._builtin(box)
            else:
                task = prompts.observation_task(self.services.target.as_dict(), self.goal_override)
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
                s = box.call("observe_again", interval_s=0.05)
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
