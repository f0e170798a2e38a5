# SPDX-License-Identifier: Apache-2.0
"""Execution agent: build, check, verify and measure one candidate.

Stages, cheapest first: build for the target kernel (clang, readable diagnostics) -> the
verifier's scheduler-specific static analysis -> for new code, the Execution Verifier's whole
pipeline in its own micro-VM -> the kernel's BPF verifier (the load in the session's guest) -> a
trial: the workload under EEVDF and under the candidate in the same boot, interleaved (trial.py).
A candidate carrying source (patch/compose) may be revised by an LLM after a failed build or
check; the built-in agent runs the stages once. New code is saved in the repository as a
'candidate' policy once it builds and passes the static checks.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schedcp.agent import prompts
from schedcp.agent.base import Agent
from schedcp.agent.candidates import Built, diagnostics
from schedcp.agent.models import Candidate, Execution, Stage, Trial
from schedcp.agent.toolbox import Tool
from schedcp.errors import SchedcpError, UsageError

MAX_TRIALS = 2


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReviseArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source: str = Field(min_length=20, max_length=256 * 1024, description="The complete corrected C source.")


class TrialArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    rounds: int = Field(2, ge=1, le=3, description="Interleaved EEVDF/candidate rounds in one boot.")


class SubmitArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field("", max_length=600, description="One line for the Learning agent.")


def _wins(trial: Trial) -> int:
    return sum(1 for r in trial.rounds if (r.ratio or 0) > 1.0)


def trial_brief(trial: Trial) -> dict[str, Any]:
    """What an agent needs from a trial (the full record stays in the run's result)."""
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
        self._state: dict[str, Any] | None = None

    def tools(self, state: dict[str, Any]) -> list[Tool]:
        svc = self.services

        def stage(name: str, status: str, summary: str) -> None:
            state["stages"] = [s for s in state["stages"] if s.name != name]
            state["stages"].append(Stage(name=name, status=status, summary=summary[:400]))  # type: ignore[arg-type]

        def build(_: NoArgs) -> dict[str, Any]:
            cand: Candidate = state["candidate"]
            try:
                built: Built = svc.build(cand)
            except SchedcpError as exc:
                diags = diagnostics(exc)
                stage("build", "failed", f"{exc.cause} {' | '.join(diags[:2])}")
                state["built"] = None
                raise UsageError(
                    f"build failed: {exc.cause}" + (f"; {' | '.join(diags[:4])}" if diags else ""),
                    "fix the source (revise_source) or give up (submit_execution)",
                ) from exc
            state["built"] = built
            stage("build", "passed", f"built for {svc.kernel_release} ({built.object_sha256[:12]})")
            return {"ok": True, "object_sha256": built.object_sha256, "kernel": svc.kernel_release}

        def static(_: NoArgs) -> dict[str, Any]:
            built: Built | None = state.get("built")
            if built is None:
                raise UsageError("nothing is built yet", "call build_candidate first")
            findings = svc.static_findings(built.source, dict(state["candidate"].config))
            errors = [f for f in findings if f.get("severity") == "error"]
            state["static_ok"] = not errors
            stage(
                "static",
                "failed" if errors else "passed",
                f"{len(errors)} error(s), {len(findings) - len(errors)} other finding(s)"
                + (f": {errors[0].get('message')}" if errors else ""),
            )
            if not errors:
                self._register_generated(state)
            return {"errors": len(errors), "findings": findings}

        def verify(_: NoArgs) -> dict[str, Any]:
            cand: Candidate = state["candidate"]
            if cand.source is None:
                raise UsageError(
                    "library and repository policies are verified already; this is for new code", "run the trial"
                )
            if not state.get("static_ok"):
                raise UsageError("build and static-check the candidate first", "call build_candidate, static_check")
            report = svc.verify_source(cand)
            state["verified"] = report["verdict"] == "pass"
            failed = next((st for st in report["stages"] if st["status"] == "failed"), None)
            stage(
                "verifier",
                "passed" if state["verified"] else "failed",
                f"pipeline {report['verdict']}: {report['reason']}"
                + (f" (stage {failed['name']}: {failed['summary']})" if failed else ""),
            )
            return report

        def revise(args: ReviseArgs) -> dict[str, Any]:
            cand: Candidate = state["candidate"]
            if cand.source is None:
                raise UsageError(
                    "this candidate configures an existing policy; there is no source to revise",
                    "run the trial, or give up with submit_execution",
                )
            state["candidate"] = svc.validate(cand.model_copy(update={"source": args.source}))
            state["built"], state["static_ok"], state["verified"] = None, False, False
            return {"ok": True, "source_bytes": len(args.source.encode()), "next": "build_candidate"}

        def trial(args: TrialArgs) -> dict[str, Any]:
            built: Built | None = state.get("built")
            if built is None or not state.get("static_ok"):
                raise UsageError(
                    "the candidate must build and pass static_check first", "call build_candidate and static_check"
                )
            if state["candidate"].source is not None and not state.get("verified"):
                raise UsageError("new code must pass verify_candidate before its trial", "call verify_candidate")
            if state["trials"] >= MAX_TRIALS:
                raise UsageError(f"only {MAX_TRIALS} trials per candidate", "call submit_execution")
            state["trials"] += 1
            cand: Candidate = state["candidate"]
            result = svc.trial(built, dict(cand.config), state["goal"], args.rounds)
            state["trial"] = result
            attached = bool(result.ops_name)  # set once the kernel accepted and attached the program
            if attached:
                stage("kernel_verifier", "passed", f"loaded and attached as {result.ops_name}")
            elif result.guest_crash:
                stage("kernel_verifier", "skipped", "the guest died before the program was loaded")
            else:
                stage("kernel_verifier", "failed", result.error or "not attached")
            if result.ok:
                stage(
                    "trial",
                    "passed",
                    f"{result.metric}: EEVDF {result.baseline_value} vs {result.policy_value} (x{result.ratio})",
                )
            elif attached:
                stage("trial", "failed", result.error or "failed")
            return trial_brief(result)

        def submit(args: SubmitArgs) -> dict[str, Any]:
            state["note"] = args.note
            return {"accepted": True}

        return [
            Tool("build_candidate", "Compile the candidate for the target kernel.", NoArgs, build),
            Tool(
                "static_check",
                "Scheduler-specific static analysis (starvation, DSQ misuse, slices, kfuncs).",
                NoArgs,
                static,
            ),
            Tool(
                "verify_candidate",
                "New code only: the Execution Verifier's full pipeline (build, static, kernel "
                "verifier, correctness and performance runs in its own micro-VM). Required before its trial.",
                NoArgs,
                verify,
            ),
            Tool(
                "revise_source",
                "Replace the candidate's source (patch/compose candidates only).",
                ReviseArgs,
                revise,
                max_bytes=512,
            ),
            Tool(
                "run_trial",
                "Load the candidate in the micro-VM (kernel verifier) and measure the workload under "
                "EEVDF and under it, interleaved in one boot.",
                TrialArgs,
                trial,
            ),
            Tool("submit_execution", "Finish, with a one-line note.", SubmitArgs, submit, max_bytes=256, finish=True),
        ]

    def _register_generated(self, state: dict[str, Any]) -> None:
        cand: Candidate = state["candidate"]
        if cand.source is None or state.get("registered"):
            return
        try:
            existing = self.services.show(cand.policy)
        except SchedcpError:
            existing = None
        if existing is None:
            description = f"{cand.level} by sched-agent for {self.services.target.label}: {cand.rationale}"
            self.services.add_generated(cand, description.ljust(20, "."))
            self.say(f"saved {cand.policy} in the repository as a candidate policy")
        state["registered"] = True

    def run(self, candidate: Candidate, goal: str) -> Execution:
        # A built-in agent taking over from a model (loop.py) continues from what was already done.
        if self._state is None or self._state["key"] != (candidate.key(), candidate.source):
            self._state = {
                "key": (candidate.key(), candidate.source),
                "candidate": candidate,
                "goal": goal,
                "stages": [],
                "built": None,
                "static_ok": False,
                "verified": False,
                "trials": 0,
                "trial": None,
                "note": "",
            }
        state = self._state
        box = self.toolbox(self.tools(state))
        with self.meter.timed(self.name):
            if self.model is None:
                self._builtin(box, state)
            else:
                self.drive(box, prompts.execution_task(candidate.brief(), goal, self.rounds))
        trial: Trial | None = state["trial"]
        built: Built | None = state.get("built")
        ex = Execution(
            candidate=state["candidate"],
            stages=state["stages"],
            trial=trial,
            ok=bool(trial and trial.ok),
            note=state["note"],
            object_sha256=built.object_sha256 if built else "",
        )
        if not ex.ok:
            failed = next((s for s in ex.stages if s.status == "failed"), None)
            ex.error = (trial.error if trial and trial.error else None) or (
                f"{failed.name}: {failed.summary}" if failed else "the candidate was not measured"
            )
        self._narrate_result(ex)
        return ex

    def _builtin(self, box: Any, state: dict[str, Any]) -> None:
        if state["trial"] is not None:
            return  # measured already (a model got that far before handing over)
        try:
            if state["built"] is None:
                box.call("build_candidate")
            found = box.call("static_check")
        except SchedcpError as exc:
            state["note"] = exc.cause
            return
        if found.get("errors"):
            state["note"] = "static analysis found errors; not run"
            return
        needs_verifier = state["candidate"].source is not None and not state.get("verified")
        if needs_verifier and box.call("verify_candidate").get("verdict") != "pass":
            state["note"] = "the verifier pipeline refused it; not run"
            return
        box.call("run_trial", rounds=self.rounds)
        state["note"] = "built, checked and measured by the built-in execution agent"

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
