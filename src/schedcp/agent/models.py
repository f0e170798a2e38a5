# SPDX-License-Identifier: Apache-2.0
"""What the agents hand each other: structured, validated, JSON-ready.

Observation -> ``WorkloadProfile`` (schedcp.analysis.profile) -> Planning -> ``Plan`` of
``Candidate``s -> Execution -> ``Execution`` with a ``Trial`` -> Learning -> ``Lesson`` with the
next ``Decision``. Numbers in a Trial come from the measuring code only; no agent writes them.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.services.models import RoundResult, Trial  # measured by SchedCP's run_trial

__all__ = ["Candidate", "Decision", "Execution", "Iteration", "Lesson", "Plan", "RoundResult", "Stage", "Trial"]

Level = Literal["configure", "patch", "compose"]
Origin = Literal["rules", "history", "search", "model", "adapted"]
Scalar = int | bool | str
NAME_PATTERN = r"^[a-z][a-z0-9_.-]{1,63}$"
MAX_SOURCE_CHARS = 256 * 1024


class Candidate(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str = Field(pattern=NAME_PATTERN, description="Existing policy (configure) or the new policy's name.")
    level: Level = "configure"
    config: dict[str, Scalar] = Field(default_factory=dict, max_length=40)
    source: str | None = Field(default=None, max_length=MAX_SOURCE_CHARS)
    parent: str | None = Field(default=None, pattern=NAME_PATTERN)
    rationale: str = Field(min_length=3, max_length=600)
    origin: Origin = "rules"

    def key(self) -> str:
        return f"{self.policy}:{json.dumps(self.config, sort_keys=True)}"

    def label(self) -> str:
        cfg = ", ".join(f"{k}={v}" for k, v in sorted(self.config.items()))
        return f"{self.policy}({cfg})" if cfg else self.policy

    def spec(self) -> dict[str, Any]:
        """The candidate as check_candidate takes it."""
        return self.model_dump(include={"policy", "level", "config", "source", "parent"}, exclude_none=True)

    def brief(self) -> dict[str, Any]:
        out = self.model_dump(exclude={"source"})
        if self.source is not None:
            out["source_bytes"] = len(self.source.encode())
        return out


class Plan(BaseModel):
    goal: str
    candidates: list[Candidate]
    notes: list[str] = Field(default_factory=list)


class Stage(BaseModel):
    name: str
    status: Literal["passed", "failed", "skipped"]
    summary: str = ""


class Execution(BaseModel):
    candidate: Candidate
    stages: list[Stage] = Field(default_factory=list)
    trial: Trial | None = None
    ok: bool = False
    error: str | None = None
    note: str = ""
    object_sha256: str = ""
    trial_id: str | None = None  # SchedCP's record of the trial (record_result takes it)


Action = Literal["stop", "next_candidate", "tune"]
Verdict = Literal["improved", "neutral", "regressed", "failed"]


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")
    action: Action
    config: dict[str, Scalar] = Field(default_factory=dict, max_length=40)
    reason: str = Field(default="", max_length=600)


class Lesson(BaseModel):
    verdict: Verdict
    recorded: dict[str, Any] | None = None
    promoted: dict[str, Any] | None = None
    antipattern: dict[str, Any] | None = None
    decision: Decision
    notes: list[str] = Field(default_factory=list)


class Iteration(BaseModel):
    n: int
    candidate: dict[str, Any]
    execution: Execution
    lesson: Lesson | None = None
    cost: dict[str, Any] = Field(default_factory=dict)  # this iteration's share (agent/cost.py)
