# SPDX-License-Identifier: Apache-2.0
"""Learning agent: turn a measured outcome into repository knowledge and the next move.

It records every measured trial (metrics, EEVDF baseline, configuration, workload profile) so
later plans can reuse it; promotes a policy one status step only on a clear, consistent win;
writes an antipattern note on a regression or a failure; and decides the next iteration: stop,
move to the next planned candidate, or tune the same policy (in-session adaptation). The tools
hold it to the measurements: it cannot record numbers that were not measured or promote a policy
that did not win.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.agent import prompts, rules
from schedcp.agent.base import Agent
from schedcp.agent.execution import trial_brief
from schedcp.agent.models import Candidate, Decision, Execution, Lesson, Scalar, Verdict
from schedcp.agent.planning import repository_profile
from schedcp.agent.toolbox import Tool
from schedcp.agent.trial import goal_alias
from schedcp.analysis.profile import WorkloadProfile
from schedcp.errors import SchedcpError, UsageError

IMPROVED = 1.03  # the goal metric must beat EEVDF by 3% in the median, and in two rounds of three
REGRESSED = 0.97


class NotesArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    notes: str = Field("", max_length=600, description="What a later agent should know about this result.")


class ReasonArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field(min_length=3, max_length=400)


class NoteArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=5, max_length=800, description="The lesson: what went wrong, on what workload.")


class DecisionArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Literal["stop", "next_candidate", "tune"]
    config: dict[str, Scalar] = Field(default_factory=dict, description="New tunable values (tune only).")
    reason: str = Field(min_length=3, max_length=600)


def verdict_of(ex: Execution) -> Verdict:
    t = ex.trial
    if not ex.ok or t is None or t.ratio is None:
        return "failed"
    if t.ratio >= IMPROVED and t.consistent:
        return "improved"
    if t.ratio < REGRESSED:
        return "regressed"
    return "neutral"


def result_input(ex: Execution, profile: WorkloadProfile, kernel_release: str, notes: str) -> dict[str, Any]:
    """The repository record of a trial: medians under the candidate and under EEVDF."""
    t = ex.trial
    assert t is not None
    metrics, baseline = dict(t.policy), dict(t.baseline)
    alias = goal_alias(profile.goal, t.metric)
    if alias and alias not in metrics:  # so the repository judges the same metric the trial did
        metrics[alias], baseline[alias] = metrics[t.metric], baseline[t.metric]
    directions = {t.metric: t.direction} | ({alias: t.direction} if alias else {})
    keep = sorted(metrics)[:60]
    return {
        "policy": ex.candidate.policy,
        "config": dict(ex.candidate.config),
        "profile": repository_profile(profile),
        "metrics": {k: metrics[k] for k in keep},
        "baseline": {k: baseline[k] for k in keep if k in baseline},
        "directions": directions,
        "kernel_release": kernel_release[:100],
        "notes": (f"sched-agent trial: {len(t.rounds)} interleaved round(s), boot {t.boot_id[:8]}. {notes}")[:1000],
    }


def _neutral_reason(ex: Execution) -> str:
    t = ex.trial
    if t is None or t.ratio is None:
        return "no usable measurement"
    if t.ratio >= IMPROVED:
        rounds = ", ".join(f"x{r.ratio}" for r in t.rounds)
        return f"the rounds disagreed ({rounds}), so x{t.ratio} is not a clear win"
    return f"within noise of EEVDF (x{t.ratio})"


class LearningAgent(Agent):
    name = "learning"
    system = prompts.LEARNING
    max_turns = 8

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state: dict[str, Any] | None = None

    def tools(self, state: dict[str, Any]) -> list[Tool]:
        svc = self.services
        ex: Execution = state["execution"]
        profile: WorkloadProfile = state["profile"]
        cand = ex.candidate

        def record(args: NotesArgs) -> dict[str, Any]:
            if state.get("recorded"):
                raise UsageError("this result is already recorded", "promote, annotate, or decide")
            if not ex.ok or ex.trial is None:
                raise UsageError(
                    "there is no measurement to record (the candidate failed before or during its trial)",
                    "write an antipattern note instead",
                )
            state["recorded"] = svc.record_result(result_input(ex, profile, svc.kernel_release, args.notes))
            return state["recorded"]

        def promote(args: ReasonArgs) -> dict[str, Any]:
            if state.get("promoted"):
                raise UsageError("already promoted in this iteration", "decide what to do next")
            if verdict_of(ex) != "improved":
                raise UsageError(
                    f"promotion needs a consistent improvement of at least {IMPROVED:.2f}x on the goal metric",
                    "record the result and move on",
                )
            if not state.get("recorded"):
                raise UsageError("record the result first", "call record_result")
            state["promoted"] = svc.promote(cand.policy, args.reason)
            return state["promoted"]

        def annotate(args: NoteArgs) -> dict[str, Any]:
            if state.get("antipattern"):
                raise UsageError("one antipattern note per iteration", "decide what to do next")
            note = f"sched-agent: {cand.label()} — {args.note}"[:1000]
            try:
                svc.show(cand.policy)
                policy: str | None = cand.policy
            except SchedcpError:
                policy = None  # new code that never made it into the repository
            state["antipattern"] = svc.annotate(note, policy, repository_profile(profile))
            return state["antipattern"]

        def decide(args: DecisionArgs) -> dict[str, Any]:
            if ex.ok and not state.get("recorded"):
                raise UsageError("record the measured result before deciding", "call record_result")
            if args.action == "tune":
                if not args.config or args.config == cand.config:
                    raise UsageError("tune needs new tunable values for the same policy", "give config")
                if cand.level != "configure":
                    raise UsageError("only configured policies can be tuned here", "use next_candidate or stop")
                svc.validate(cand.model_copy(update={"config": dict(args.config)}))
            elif args.config:
                raise UsageError("config only goes with action tune", "drop config")
            state["decision"] = Decision(action=args.action, config=dict(args.config), reason=args.reason)
            return {"accepted": True, "action": args.action}

        return [
            Tool(
                "record_result",
                "Store this trial (medians under the candidate and under EEVDF) in the repository.",
                NotesArgs,
                record,
            ),
            Tool(
                "promote_policy",
                "Move the policy one status step up; only after a consistent improvement.",
                ReasonArgs,
                promote,
            ),
            Tool(
                "annotate_antipattern",
                "Remember a mistake for this policy and this kind of workload.",
                NoteArgs,
                annotate,
            ),
            Tool(
                "submit_decision",
                "Finish: stop, next_candidate, or tune (new config for this policy).",
                DecisionArgs,
                decide,
                max_bytes=256,
                finish=True,
            ),
        ]

    def run(
        self,
        profile: WorkloadProfile,
        ex: Execution,
        *,
        session: list[dict[str, Any]],
        remaining: list[Candidate],
        iterations_left: int,
    ) -> Lesson:
        # A built-in agent taking over from a model (loop.py) must not record or promote twice.
        if self._state is None or self._state["execution"] is not ex:
            self._state = {"execution": ex, "profile": profile}
        state = self._state
        box = self.toolbox(self.tools(state))
        verdict = verdict_of(ex)
        with self.meter.timed(self.name):
            if self.model is None:
                self._builtin(box, ex, verdict, session, remaining, iterations_left)
            else:
                outcome = {
                    "verdict_by_rule": verdict,
                    "stages": [s.model_dump() for s in ex.stages],
                    "trial": trial_brief(ex.trial) if ex.trial else None,
                    "error": ex.error,
                    "session_so_far": session[-6:],
                }
                self.drive(
                    box,
                    prompts.learning_task(
                        ex.candidate.brief(), outcome, [c.brief() for c in remaining], iterations_left
                    ),
                )
        if ex.ok and not state.get("recorded"):
            # Every measurement is kept, even when a model forgot to record it.
            state["recorded"] = self.services.record_result(
                result_input(ex, profile, self.services.kernel_release, "recorded by the loop")
            )
        decision = state.get("decision") or Decision(action="next_candidate", reason="no decision was made")
        lesson = Lesson(
            verdict=verdict,
            recorded=state.get("recorded"),
            promoted=state.get("promoted"),
            antipattern=state.get("antipattern"),
            decision=decision,
            notes=state.get("notes", []),
        )
        self._tell(lesson)
        return lesson

    def _builtin(
        self,
        box: Any,
        ex: Execution,
        verdict: Verdict,
        session: list[dict[str, Any]],
        remaining: list[Candidate],
        iterations_left: int,
    ) -> None:
        t = ex.trial
        state = self._state or {}
        if ex.ok and not state.get("recorded"):
            box.call("record_result", notes=f"verdict {verdict}")
        judged = bool(state.get("promoted") or state.get("antipattern"))  # a model did it before handing over
        notes = state.setdefault("notes", [])
        if judged:
            notes.append("promotion/antipattern already handled before the hand-over")
        elif verdict == "improved":
            try:
                won = sum(1 for r in t.rounds if (r.ratio or 0) > 1.0)
                box.call(
                    "promote_policy",
                    reason=f"{t.metric} {t.ratio:.2f}x better than EEVDF (median), won {won} of "
                    f"{len(t.rounds)} interleaved rounds in one boot",
                )
            except SchedcpError as exc:  # already at the top status, or the repository refused
                notes.append(f"not promoted: {exc.cause}")
        elif verdict == "failed" and t is not None and t.guest_crash:
            notes.append(
                "the guest died during the trial (an emulation or kernel fault, not a policy verdict); "
                "no antipattern written"
            )
        elif verdict in ("regressed", "failed"):
            what = (
                f"{t.metric} {1 / t.ratio:.2f}x worse than EEVDF"
                if verdict == "regressed" and t and t.ratio
                else f"failed: {ex.error}"
            )
            box.call("annotate_antipattern", note=f"{what} on this kind of workload")
        box.call("submit_decision", **self._decide(ex, verdict, session, remaining, iterations_left))

    def _decide(
        self,
        ex: Execution,
        verdict: Verdict,
        session: list[dict[str, Any]],
        remaining: list[Candidate],
        iterations_left: int,
    ) -> dict[str, Any]:
        cand = ex.candidate
        if iterations_left <= 0:
            return {"action": "stop", "reason": "no trial slots left"}
        parent_ratio = None
        if cand.origin == "adapted" and len(session) >= 2:
            parent_ratio = session[-2].get("ratio")
        better_than_parent = parent_ratio is None or (ex.trial and (ex.trial.ratio or 0) > parent_ratio)
        if verdict == "improved" and better_than_parent:
            try:
                tunables = self.services.show(cand.policy).get("tunables") or []
            except SchedcpError:
                tunables = []
            config = rules.tuned(cand, tunables)
            if config is not None:
                knob = rules.TUNE_KNOBS[cand.policy][0]
                return {
                    "action": "tune",
                    "config": config,
                    "reason": f"it helped; try {knob}={config[knob]} (was {cand.config.get(knob, 'default')})",
                }
        if remaining:
            why = {
                "improved": "the tuned variant did not beat its parent"
                if not better_than_parent
                else "no knob left to turn",
                "neutral": _neutral_reason(ex),
                "regressed": "it was worse than EEVDF",
                "failed": "it failed",
            }[verdict]
            return {"action": "next_candidate", "reason": f"{why}; try {remaining[0].label()}"}
        return {"action": "stop", "reason": "no candidates left"}

    def _tell(self, lesson: Lesson) -> None:
        r = lesson.recorded
        if r:
            self.say(
                f"recorded result #{r.get('id')} for {r.get('policy')}: {r.get('primary_metric')} "
                f"x{r.get('primary_ratio')} vs EEVDF (beat baseline: {r.get('beat_baseline')})"
            )
        if lesson.promoted:
            p = lesson.promoted
            self.say(f"promoted {p.get('name')}: {p.get('from')} → {p.get('to')}")
        if lesson.antipattern:
            self.say(f"antipattern noted: {lesson.antipattern.get('note')}")
        for note in lesson.notes:
            self.say(note)
        d = lesson.decision
        self.say(
            f"verdict {lesson.verdict}; next: {d.action}" + (f" {d.config}" if d.config else "") + f" — {d.reason}"
        )
