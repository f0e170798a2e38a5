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

from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.agent import prompts, rules
from schedcp.agent.base import Agent
from schedcp.agent.execution import trial_brief
from schedcp.agent.models import Candidate, Decision, Execution, Lesson, Scalar, Verdict
from schedcp.agent.planning import repository_profile
from schedcp.agent.toolbox import Tool, ToolBox
from schedcp.analysis.profile import WorkloadProfile
from schedcp.errors import SchedcpError, UsageError

IMPROVED = 1.03  # the goal metric must beat EEVDF by 3% in the median, and in two rounds of three
REGRESSED = 0.97


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


def _neutral_reason(ex: Execution) -> str:
    t = ex.trial
    if t is None or t.ratio is None:
        return "no usable measurement"
    if t.ratio >= IMPROVED:
        rounds = ", ".join(f"x{r.ratio}" for r in t.rounds)
        return f"the rounds disagreed ({rounds}), so x{t.ratio} is not a clear win"
    return f"within noise of EEVDF (x{t.ratio})"


@dataclass
class LearnState:
    execution: Execution
    profile: WorkloadProfile
    recorded: dict[str, Any] | None = None
    promoted: dict[str, Any] | None = None
    antipattern: dict[str, Any] | None = None
    decision: Decision | None = None
    notes: list[str] = field(default_factory=list)


class LearningAgent(Agent):
    name = "learning"
    system = prompts.LEARNING
    max_turns = 8

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._state: LearnState | None = None

    # -- guards: the tools hold the agent to the measurements -----------------------------------------
    def _before_record(self, st: LearnState, args: dict[str, Any]) -> None:
        ex = st.execution
        if st.recorded:
            raise UsageError("this result is already recorded", "promote, annotate, or decide")
        if not ex.ok or ex.trial is None or ex.trial_id is None:
            raise UsageError(
                "there is no measurement to record (the candidate failed before or during its trial)",
                "write an antipattern note instead (record_antipattern)",
            )
        if args.get("trial_id") != ex.trial_id or any(args.get(k) for k in ("metrics", "baseline", "policy")):
            raise UsageError(
                f"record this iteration's trial only: trial_id {ex.trial_id}, no numbers of your own",
                "call record_result with trial_id and notes",
            )

    def _before_promote(self, st: LearnState, args: dict[str, Any]) -> None:
        if st.promoted:
            raise UsageError("already promoted in this iteration", "decide what to do next")
        if args.get("name") != st.execution.candidate.policy or args.get("direction", "promote") != "promote":
            raise UsageError(
                f"only {st.execution.candidate.policy} (this iteration's candidate) may be promoted here",
                "promote that policy, or decide",
            )
        if verdict_of(st.execution) != "improved":
            raise UsageError(
                f"promotion needs a consistent improvement of at least {IMPROVED:.2f}x on the goal metric",
                "record the result and move on",
            )
        if not st.recorded:
            raise UsageError("record the result first", "call record_result")

    def _before_antipattern(self, st: LearnState, args: dict[str, Any]) -> None:
        if st.antipattern:
            raise UsageError("one antipattern note per iteration", "decide what to do next")
        cand = st.execution.candidate
        note = str(args.get("note") or "")
        if not note.startswith("sched-agent: "):
            args["note"] = f"sched-agent: {cand.label()} — {note}"[:1000]
        if "policy" not in args:
            try:
                self._box.call("get_scheduler", name=cand.policy)
                args["policy"] = cand.policy
            except SchedcpError:
                pass  # new code that never made it into the repository

    def tools(self, st: LearnState) -> list[Tool]:
        ex = st.execution
        cand = ex.candidate

        def decide(args: DecisionArgs) -> dict[str, Any]:
            if ex.ok and not st.recorded:
                raise UsageError("record the measured result before deciding", "call record_result")
            if args.action == "tune":
                if not args.config or args.config == cand.config:
                    raise UsageError("tune needs new tunable values for the same policy", "give config")
                if cand.level != "configure":
                    raise UsageError("only configured policies can be tuned here", "use next_candidate or stop")
                self._box.call("check_candidate", **cand.model_copy(update={"config": dict(args.config)}).spec())
            elif args.config:
                raise UsageError("config only goes with action tune", "drop config")
            st.decision = Decision(action=args.action, config=dict(args.config), reason=args.reason)
            return {"accepted": True, "action": args.action}

        return [
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
        if self._state is None or self._state.execution is not ex:
            self._state = LearnState(execution=ex, profile=profile)
        st = self._state
        rprof = repository_profile(profile)

        def keep(attr: str) -> Any:
            return lambda _a, d: setattr(st, attr, d)

        self._box: ToolBox = self.toolbox(
            self.tools(st),
            bound={"profile": rprof, **({"trial_id": ex.trial_id} if ex.trial_id else {})},
            guards={
                "record_result": lambda a: self._before_record(st, a),
                "promote_scheduler": lambda a: self._before_promote(st, a),
                "record_antipattern": lambda a: self._before_antipattern(st, a),
            },
            observers={
                "record_result": keep("recorded"),
                "promote_scheduler": keep("promoted"),
                "record_antipattern": keep("antipattern"),
            },
        )
        box = self._box
        verdict = verdict_of(ex)
        with self.meter.timed(self.name):
            if self.model is None:
                self._builtin(box, st, verdict, session, remaining, iterations_left)
            else:
                outcome = {
                    "verdict_by_rule": verdict,
                    "stages": [s.model_dump() for s in ex.stages],
                    "trial": trial_brief(ex.trial) if ex.trial else None,
                    "trial_id": ex.trial_id,
                    "error": ex.error,
                    "session_so_far": session[-6:],
                }
                self.drive(
                    box,
                    prompts.learning_task(
                        ex.candidate.brief(), outcome, [c.brief() for c in remaining], iterations_left
                    ),
                )
        if ex.ok and not st.recorded:
            # Every measurement is kept, even when a model forgot to record it.
            box.call("record_result", trial_id=ex.trial_id, notes="recorded by the loop")
        decision = st.decision or Decision(action="next_candidate", reason="no decision was made")
        lesson = Lesson(
            verdict=verdict,
            recorded=st.recorded,
            promoted=st.promoted,
            antipattern=st.antipattern,
            decision=decision,
            notes=st.notes,
        )
        self._tell(lesson)
        return lesson

    def _builtin(
        self,
        box: ToolBox,
        st: LearnState,
        verdict: Verdict,
        session: list[dict[str, Any]],
        remaining: list[Candidate],
        iterations_left: int,
    ) -> None:
        ex = st.execution
        t = ex.trial
        if ex.ok and not st.recorded:
            box.call("record_result", trial_id=ex.trial_id, notes=f"verdict {verdict}")
        judged = bool(st.promoted or st.antipattern)  # a model did it before handing over
        if judged:
            st.notes.append("promotion/antipattern already handled before the hand-over")
        elif verdict == "improved" and t is not None:
            try:
                won = sum(1 for r in t.rounds if (r.ratio or 0) > 1.0)
                box.call(
                    "promote_scheduler",
                    name=ex.candidate.policy,
                    reason=f"{t.metric} {t.ratio:.2f}x better than EEVDF (median), won {won} of "
                    f"{len(t.rounds)} interleaved rounds in one boot (trial {ex.trial_id})",
                )
            except SchedcpError as exc:  # already at the top status, or the repository refused
                st.notes.append(f"not promoted: {exc.cause}")
        elif verdict == "failed" and t is not None and t.guest_crash:
            st.notes.append(
                "the guest died during the trial (an emulation or kernel fault, not a policy verdict); "
                "no antipattern written"
            )
        elif verdict in ("regressed", "failed"):
            what = (
                f"{t.metric} {1 / t.ratio:.2f}x worse than EEVDF"
                if verdict == "regressed" and t and t.ratio
                else f"failed: {ex.error}"
            )
            box.call("record_antipattern", note=f"{what} on this kind of workload")
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
                tunables = self._box.call("get_scheduler", name=cand.policy).get("tunables") or []
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
