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


class RoundResult(BaseModel):
    round: int
    order: list[str]  # e.g. ["eevdf", "policy"]
    eevdf: dict[str, float]
    policy: dict[str, float]
    ratio: float | None  # >1: the policy beat EEVDF on the goal metric this round


class Trial(BaseModel):
    ok: bool
    error: str | None = None
    boot_id: str = ""
    same_boot: bool = True
    metric: str = ""
    direction: Literal["lower", "higher"] = "lower"
    rounds: list[RoundResult] = Field(default_factory=list)
    baseline: dict[str, float] = Field(default_factory=dict)  # median per metric under EEVDF
    policy: dict[str, float] = Field(default_factory=dict)  # median per metric under the candidate
    baseline_value: float | None = None
    policy_value: float | None = None
    ratio: float | None = None
    consistent: bool = False  # the policy won at least two rounds in three (trial.consistent)
    ops_name: str = ""
    stayed_enabled: bool = True
    ejections: list[dict[str, Any]] = Field(default_factory=list)
    counters: dict[str, int] = Field(default_factory=dict)
    guest_crash: bool = False  # the guest died (not a policy verdict); see trial.run_trial
    attempts: int = 1


class Execution(BaseModel):
    candidate: Candidate
    stages: list[Stage] = Field(default_factory=list)
    trial: Trial | None = None
    ok: bool = False
    error: str | None = None
    note: str = ""
    object_sha256: str = ""


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
