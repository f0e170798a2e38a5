# SPDX-License-Identifier: Apache-2.0
"""What the repository has learned, as operations: past winners, antipatterns, recorded results.

``best_config`` and ``list_antipatterns`` answer "what worked / what went wrong on workloads like
this one" (similarity of workload profiles, same goal); ``record_antipattern`` stores a lesson;
``record_result`` stores a measured outcome. Given a ``trial_id``, ``record_result`` takes every
number from the trial the server measured itself (medians under the policy and under EEVDF, the
goal metric and its direction) and none from the caller: an agent can add notes, never numbers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.errors import UsageError
from schedcp.services import checks
from schedcp.services.models import NAME_PATTERN, TRIAL_ID_PATTERN, RepositoryProfile, Scalar, TrialRecord
from schedcp.services.operation import Operation, Progress, Reply
from schedcp.services.repository import AntipatternNote, RecordedAntipattern

if TYPE_CHECKING:
    from schedcp.services.state import ServerState

AGENT_ACTOR = "mcp-agent"


class BestConfigInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: RepositoryProfile = Field(description="The workload: workload_profile's for_repository field.")
    k: int = Field(3, ge=1, le=20, description="How many (policy, configuration) pairs to return.")
    min_similarity: float = Field(0.5, ge=0.0, le=1.0, description="Ignore results on less similar workloads.")


class ConfigCandidate(Reply):
    """A (policy, configuration) pair that beat EEVDF on similar workloads with the same goal."""

    policy: str
    config: dict[str, Any]
    expected_ratio: float
    primary_metric: str | None
    best_similarity: float
    results: int
    wins: int
    score: float
    closest_workload: str


class BestConfig(Reply):
    """best_config's answer: the best pair, the ranked candidates and the relevant antipatterns."""

    goal: str
    considered_results: int
    min_similarity: float
    best: ConfigCandidate | None
    candidates: list[ConfigCandidate]
    antipatterns: list[AntipatternNote]


def best_config(state: ServerState, args: BestConfigInput, _progress: Progress) -> BestConfig:
    """The policy and tunables that beat EEVDF on workloads like this one, with the same goal,
    from recorded results (similarity-weighted mean improvement), plus antipattern warnings.

    Reusing a proven configuration is the cheapest plan: ask this before search_schedulers."""
    found = state.repository().best_config(args.profile.model_dump(), k=args.k, min_similarity=args.min_similarity)
    return BestConfig.model_validate(found)


class AntipatternsInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: RepositoryProfile | None = Field(
        None, description="Notes whose workload resembles this one (workload_profile's for_repository)."
    )
    policy: str | None = Field(None, pattern=NAME_PATTERN, description="Notes attached to this policy.")
    limit: int = Field(10, ge=1, le=50, description="At most this many notes, most relevant first.")


class AntipatternList(Reply):
    count: int
    antipatterns: list[AntipatternNote]


def list_antipatterns(state: ServerState, args: AntipatternsInput, _progress: Progress) -> AntipatternList:
    """Recorded mistakes: what a policy did badly on which kind of workload. Give a profile (notes on
    similar workloads and on the policies named) and/or a policy name."""
    if args.profile is None and args.policy is None:
        raise UsageError("give a profile, a policy, or both", "e.g. profile=workload_profile's for_repository")
    found = state.repository().antipatterns(
        policy=args.policy, profile=args.profile.model_dump() if args.profile else None, limit=args.limit
    )
    return AntipatternList(count=len(found), antipatterns=[AntipatternNote.model_validate(a) for a in found])


class RecordAntipatternInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = Field(min_length=5, max_length=1000, description="The lesson: what went wrong, on what workload.")
    policy: str | None = Field(None, pattern=NAME_PATTERN, description="The policy it is about (if stored).")
    profile: RepositoryProfile | None = Field(None, description="The workload it happened on.")


def record_antipattern(state: ServerState, args: RecordAntipatternInput, _progress: Progress) -> RecordedAntipattern:
    """Remember a mistake so later plans avoid it: a note on a policy, a workload, or both."""
    note = state.repository().annotate_antipattern(
        args.note,
        policy=args.policy,
        profile=args.profile.model_dump() if args.profile else None,
        actor=AGENT_ACTOR,
    )
    return RecordedAntipattern.model_validate(note)


class RecordResultInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    profile: RepositoryProfile = Field(
        description="The workload measured: workload_profile's for_repository field has exactly this shape."
    )
    trial_id: str | None = Field(
        None,
        pattern=TRIAL_ID_PATTERN,
        description="Record a trial this server measured (run_trial): policy, configuration and every number "
        "come from it. Then omit policy, metrics, baseline, directions and config.",
    )
    policy: str | None = Field(None, pattern=NAME_PATTERN, description="Without trial_id: the policy measured.")
    metrics: dict[str, float] = Field(
        default_factory=dict,
        max_length=60,
        description="Without trial_id: measured under the policy, e.g. {'makespan_s': 41.2, 'p99_us': 830}.",
    )
    baseline: dict[str, float] = Field(
        default_factory=dict,
        max_length=60,
        description="Without trial_id: the same metrics under the default scheduler (EEVDF).",
    )
    directions: dict[str, Literal["lower", "higher"]] = Field(
        default_factory=dict,
        max_length=60,
        description="Which way is better per metric, when the name does not make it obvious.",
    )
    config: dict[str, Scalar] = Field(default_factory=dict, max_length=40, description="Tunables the run used.")
    notes: str = Field("", max_length=1000, description="Anything a later agent should know.")


def result_from_trial(record: TrialRecord, profile: dict[str, Any], notes: str) -> dict[str, Any]:
    """The repository record of a trial: medians under the candidate and under EEVDF."""
    from schedcp.services.trials import goal_alias

    t = record.trial
    if not t.ok or not t.metric:
        raise UsageError(
            f"trial {record.trial_id} has no measurement to record ({t.error or 'it failed'})",
            "record an antipattern instead",
        )
    metrics, baseline = dict(t.policy), dict(t.baseline)
    alias = goal_alias(str(profile.get("goal") or record.goal), t.metric)
    if alias and alias not in metrics:  # so the repository judges the same metric the trial did
        metrics[alias], baseline[alias] = metrics[t.metric], baseline[t.metric]
    directions = {t.metric: t.direction} | ({alias: t.direction} if alias else {})
    keep = sorted(metrics)[:60]
    return {
        "policy": record.policy,
        "config": dict(record.config),
        "profile": profile,
        "metrics": {k: metrics[k] for k in keep},
        "baseline": {k: baseline[k] for k in keep if k in baseline},
        "directions": directions,
        "kernel_release": record.kernel_release[:100],
        "notes": (
            f"trial {record.trial_id}: {len(t.rounds)} interleaved round(s) against EEVDF in boot "
            f"{t.boot_id[:8]}. {notes}"
        )[:1000],
    }


class RecordedResult(Reply):
    """record_result's answer: the stored result's id and how the repository judged it."""

    id: int
    policy: str
    goal: str
    improvement: dict[str, float]  # metric -> ratio over the baseline (>1: better)
    primary_metric: str | None
    primary_ratio: float | None
    beat_baseline: bool
    trial_id: str | None = None


def record_result(state: ServerState, args: RecordResultInput, _progress: Progress) -> RecordedResult:
    """Store a measured outcome of a policy on a workload, so later searches and plans learn from it.

    With trial_id the server records its own measurement; otherwise give policy, metrics and baseline.
    Returns the computed improvement over the baseline and whether the policy beat it."""

    profile = args.profile.model_dump()
    if args.trial_id is not None:
        given = [k for k in ("policy", "metrics", "baseline", "directions", "config") if getattr(args, k)]
        if given:
            raise UsageError(
                f"with trial_id the numbers come from the trial; drop {', '.join(given)}",
                "pass only profile, trial_id and notes",
            )
        from schedcp.services.trials import stored_trial

        data = result_from_trial(stored_trial(state, args.trial_id), profile, args.notes)
    else:
        if args.policy is None or not args.metrics:
            raise UsageError("give trial_id, or policy and metrics", "trial ids come from run_trial")
        data = {
            "policy": args.policy,
            "profile": profile,
            "metrics": args.metrics,
            "baseline": args.baseline,
            "directions": args.directions,
            "config": checks.config_dict(args.config),
            "notes": args.notes,
        }
    out = state.repository().record_result(data)
    if args.trial_id is not None:
        out["trial_id"] = args.trial_id
    return RecordedResult.model_validate(out)


OPERATIONS = [
    Operation("best_config", BestConfigInput, best_config, BestConfig, kind="compute"),
    Operation("list_antipatterns", AntipatternsInput, list_antipatterns, AntipatternList, kind="read"),
    Operation("record_result", RecordResultInput, record_result, RecordedResult, kind="write"),
    Operation("record_antipattern", RecordAntipatternInput, record_antipattern, RecordedAntipattern, kind="write"),
]
