# SPDX-License-Identifier: Apache-2.0
"""Execution agent: get one candidate built, checked, verified (new code) and measured, over MCP.

Stages, cheapest first: ``build_scheduler`` compiles for the testbed's kernel and runs the
verifier's static analysis (no VM) -> for new code, ``verify_scheduler`` (the Execution Verifier's
whole pipeline, through the daemon) -> ``run_trial``: the kernel's BPF verifier loads it in the
testbed's guest and the workload runs under EEVDF and under it, interleaved, in the same boot.
New code is saved with ``add_scheduler`` as a 'candidate' policy once it builds and passes the
static checks. A model may rebuild with corrected source after a failed build or check; the
built-in agent runs the stages once. The agent keeps typed state (``ExecState``) from the answers
it gets; its tools refuse a trial before a passing build (and, for new code, verification).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schedcp.agent import prompts
from schedcp.agent.base import Agent
from schedcp.agent.models import Candidate, Execution, Stage, Trial
from schedcp.agent.toolbox import Tool
from schedcp.errors import SchedcpError, UsageError
from schedcp.services.models import BuildInfo, TrialRecord

MAX_TRIALS = 2


class SubmitArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=600, description="One line for the Learning agent.")


@dataclass
class ExecState:
    candidate: Candidate
    goal: str
    stages: list[Stage] = field(default_factory=list)
    build: BuildInfo | None = None
    verified: bool = False
    trials: int = 0
    trial: Trial | None = None
    trial_id: str | None = None
    note: str = ""
    registered: bool = False

    def stage(self, name: str, status: str, summary: str) -> None:
        self.stages = [s for s in self.stages if s.name != name]
        self.stages.append(Stage(name=name, status=status, summary=summary[:400]))

    @property
    def key(self) -> tuple[str, str | None]:
        return self.candidate.key(), self.candidate.source


def _wins(trial: Trial) -> int:
    return sum(1 for r in trial.rounds if (r.ratio or 0) > 1.0)


def trial_brief(trial: Trial) -> dict[str, Any]:
    """What an agent needs from a trial (the full record stays in SchedCP as schedcp://run/{trial_id})."""
    out: dict[str, Any] = {
        "ok": trial.ok,
        "error": trial.error,
        "metric": trial.metric,
        "direction": trial.direction,
        "eevdf": trial.baseline_value,
        "candidate": trial.policy_value,
        "ratio": trial.ratio,
        "consistent": trial.consistent,
        "rounds": [{"order": r.order, "ratio": r.ratio} for r in trial.rounds],
        "same_boot": trial.same_boot,
        "stayed_enabled": trial.stayed_enabled,
    }
    if trial.ejections:
        out["ejections"] = trial.ejections[:2]
    return out


class ExecutionAgent(Agent):
    name = "execution"
    system = prompts.EXECUTION
    max_turns = 10
    max_tokens = 8192  # a patch or a composed policy is written as one tool argument

    def __init__(self, *args: Any, rounds: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rounds = rounds
        self._state: ExecState | None = None

    # -- what the answers teach the agent (observers) and what it refuses (guards) -------------------
    def _built(self, st: ExecState, args: dict[str, Any], data: dict[str, Any]) -> None:
        info = BuildInfo.model_validate(data)
        if args.get("source") is not None and st.candidate.source is not None:
            st.candidate = st.candidate.model_copy(update={"source": args["source"]})  # a revision
            st.verified = False
        st.build = info
        if info.stage == "build":
            st.stage("build", "failed", f"{info.error} {' | '.join(info.diagnostics[:2])}")
            return
        st.stage("build", "passed", f"built for {info.kernel_release} ({info.object_sha256[:12]})")
        errors = [f for f in info.findings if f.severity == "error"]
        st.stage(
            "static",
            "failed" if errors else "passed",
            f"{len(errors)} error(s), {len(info.findings) - len(errors)} other finding(s)"
            + (f": {errors[0].message}" if errors else ""),
        )
        if not errors:
            self._register_generated(st)

    def _verified(self, st: ExecState, _args: dict[str, Any], data: dict[str, Any]) -> None:
        st.verified = data.get("verdict") == "pass"
        failed = next((s for s in data.get("stages") or [] if s.get("status") == "failed"), None)
        st.stage(
            "verifier",
            "passed" if st.verified else "failed",
            f"pipeline {data.get('verdict')}: {data.get('reason')}"
            + (f" (stage {failed.get('name')}: {failed.get('summary')})" if failed else ""),
        )

    def _measured(self, st: ExecState, _args: dict[str, Any], data: dict[str, Any]) -> None:
        record = TrialRecord.model_validate(data)
        result = record.trial
        st.trial, st.trial_id = result, record.trial_id
        attached = bool(result.ops_name)  # set once the kernel accepted and attached the program
        if attached:
            st.stage("kernel_verifier", "passed", f"loaded and attached as {result.ops_name}")
        elif result.guest_crash:
            st.stage("kernel_verifier", "skipped", "the guest died before the program was loaded")
        else:
            st.stage("kernel_verifier", "failed", result.error or "not attached")
        if result.ok:
            st.stage(
                "trial",
                "passed",
                f"{result.metric}: EEVDF {result.baseline_value} vs {result.policy_value} (x{result.ratio})",
            )
        elif attached:
            st.stage("trial", "failed", result.error or "failed")

    def _before_trial(self, st: ExecState, args: dict[str, Any]) -> None:
        if st.build is None or not st.build.ok or args.get("build_id") != st.build.build_id:
            raise UsageError(
                "the candidate must build and pass the static checks first, and the trial must use that build",
                "call build_scheduler, then run_trial with its build_id",
            )
        if st.candidate.source is not None and not st.verified:
            raise UsageError("new code must pass verify_scheduler before its trial", "call verify_scheduler")
        if st.trials >= MAX_TRIALS:
            raise UsageError(f"only {MAX_TRIALS} trials per candidate", "call submit_execution")
        st.trials += 1

    def _register_generated(self, st: ExecState) -> None:
        """New code that builds and passes the static checks is kept in the repository as a candidate."""
        cand = st.candidate
        if cand.source is None or st.registered:
            return
        try:
            self._box.call("get_scheduler", name=cand.policy)
            exists = True
        except SchedcpError:
            exists = False
        if not exists:
            description = f"{cand.level} by sched-agent for {self.testbed.target.label}: {cand.rationale}"
            self._box.call(
                "add_scheduler",
                name=cand.policy,
                source=cand.source,
                description=description.ljust(20, "."),
                title=cand.rationale[:120],
                tags=["sched-agent", cand.level],
                workloads=[self.testbed.target.label[:200]],
                **({"parent": cand.parent} if cand.parent else {}),
            )
            self.say(f"saved {cand.policy} in the repository as a candidate policy")
        st.registered = True

    # -- running --------------------------------------------------------------------------------------
    def run(self, candidate: Candidate, goal: str) -> Execution:
        # A built-in agent taking over from a model (loop.py) continues from what was already done.
        if self._state is None or self._state.key != (candidate.key(), candidate.source):
            self._state = ExecState(candidate=candidate, goal=goal)
        st = self._state

        def submit(args: SubmitArgs) -> dict[str, Any]:
            st.note = args.note
            return {"accepted": True}

        self._box = self.toolbox(
            [Tool("submit_execution", "Finish, with a one-line note.", SubmitArgs, submit, max_bytes=256, finish=True)],
            guards={"run_trial": lambda a: self._before_trial(st, a)},
            observers={
                "build_scheduler": lambda a, d: self._built(st, a, d),
                "verify_scheduler": lambda a, d: self._verified(st, a, d),
                "run_trial": lambda a, d: self._measured(st, a, d),
            },
        )
        with self.meter.timed(self.name):
            if self.model is None:
                self._builtin(st)
            else:
                self.drive(
                    self._box,
                    prompts.execution_task(candidate.brief(), goal, self.rounds, self.testbed.testbed_id),
                )
        return self._result(st)

    def _result(self, st: ExecState) -> Execution:
        trial = st.trial
        ex = Execution(
            candidate=st.candidate,
            stages=st.stages,
            trial=trial,
            ok=bool(trial and trial.ok),
            note=st.note,
            object_sha256=st.build.object_sha256 if st.build else "",
            trial_id=st.trial_id,
        )
        if not ex.ok:
            failed = next((s for s in ex.stages if s.status == "failed"), None)
            ex.error = (trial.error if trial and trial.error else None) or (
                f"{failed.name}: {failed.summary}" if failed else "the candidate was not measured"
            )
        self._narrate_result(ex)
        return ex

    def _build_args(self, cand: Candidate) -> dict[str, Any]:
        if cand.source is not None:
            return {"source": cand.source, "name": cand.policy}
        return {"scheduler": cand.policy, "config": dict(cand.config)}

    def _builtin(self, st: ExecState) -> None:
        box = self._box
        if st.trial is not None:
            return  # measured already (a model got that far before handing over)
        try:
            if st.build is None or not st.build.ok:
                box.call("build_scheduler", **self._build_args(st.candidate))
        except SchedcpError as exc:
            st.stage("build", "failed", exc.cause)
            st.note = exc.cause
            return
        assert st.build is not None
        if not st.build.ok:
            st.note = "static analysis found errors; not run" if st.build.stage == "static" else "the build failed"
            return
        if st.candidate.source is not None and not st.verified:
            try:
                box.call("verify_scheduler", source=st.candidate.source)
            except SchedcpError as exc:
                st.stage("verifier", "failed", exc.cause)
            if not st.verified:
                st.note = "the verifier pipeline refused it (or could not run); not run"
                return
        box.call("run_trial", build_id=st.build.build_id, goal=st.goal, rounds=self.rounds)
        st.note = "built, checked and measured by the built-in execution agent"

    def _narrate_result(self, ex: Execution) -> None:
        for s in ex.stages:
            self.say(f"{s.name}: {s.status} — {s.summary}")
        t = ex.trial
        if t is not None and t.ok:
            rounds = ", ".join(f"r{r.round} {'/'.join(r.order)} x{r.ratio}" for r in t.rounds)
            self.say(
                f"{t.metric} under EEVDF {t.baseline_value} vs {ex.candidate.label()} {t.policy_value} "
                f"→ ratio {t.ratio} (won {_wins(t)} of {len(t.rounds)} rounds; {rounds}; "
                f"same boot {t.boot_id[:8]})"
            )
        elif ex.error:
            self.say(f"failed: {ex.error}")
