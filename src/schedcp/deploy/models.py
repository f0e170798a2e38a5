# SPDX-License-Identifier: Apache-2.0
"""The deployment's vocabulary: requests, states, canary targets, trips, status, stories.

Everything a client sends to the deploy path, and everything the daemon answers, is one of these
models; the store keeps them as JSON, the CLI and the MCP tools print them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

TOKEN_ID_PATTERN = r"^[0-9a-f]{24}$"
EXTERNAL_NAME_PATTERN = r"^[a-z][a-z0-9_.-]{1,63}$"  # a catalog entry's name (repository NAME_PATTERN)
DEPLOYMENT_ID_PATTERN = r"^dep-[0-9a-f]{12}$"
MAX_CONFIG_KEYS = 64
MAX_CGROUP_CHARS = 256
MAX_COMM_CHARS = 128
MAX_EXIT_DUMP_CHARS = 2000
MAX_CONFIG_VALUE_CHARS = 256

GoalMetric = Literal["wait_share", "cpu_rate"]
# Which way is better for each goal metric (the feedback channel's vocabulary).
GOAL_DIRECTIONS: dict[str, Literal["lower", "higher"]] = {"wait_share": "lower", "cpu_rate": "higher"}


class DeployState(StrEnum):
    requested = "requested"
    token_checked = "token_checked"
    baseline = "baseline"
    canary = "canary"
    promoted = "promoted"
    partial = "partial"  # the canary kept for good (--stay-partial)
    rolled_back = "rolled_back"
    failed = "failed"
    refused = "refused"
    retired = "retired"  # replaced by a later deployment
    interrupted = "interrupted"  # the daemon restarted and the kernel no longer ran it
    displaced = "displaced"  # someone else's scheduler replaced it


ACTIVE_STATES = frozenset({DeployState.baseline, DeployState.canary, DeployState.promoted, DeployState.partial})
GOOD_STATES = frozenset({DeployState.promoted, DeployState.partial})


class CanaryTarget(BaseModel):
    """Exactly one of: a PID (and its descendants), a cgroup path, a comm regular expression."""

    model_config = ConfigDict(extra="forbid")
    pid: int | None = Field(None, gt=1, lt=1 << 22)
    cgroup: str | None = Field(None, min_length=1, max_length=MAX_CGROUP_CHARS)
    comm: str | None = Field(None, min_length=1, max_length=MAX_COMM_CHARS)

    @field_validator("cgroup")
    @classmethod
    def _cgroup(cls, v: str | None) -> str | None:
        if v is not None and ("\x00" in v or ".." in v.split("/")):
            raise ValueError("cgroup must be a path without '..' or NUL")
        return v

    @field_validator("comm")
    @classmethod
    def _comm(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                re.compile(v)
            except re.error as exc:
                raise ValueError(f"comm is not a regular expression: {exc}") from exc
        return v

    @model_validator(mode="after")
    def _one(self) -> CanaryTarget:
        if sum(x is not None for x in (self.pid, self.cgroup, self.comm)) != 1:
            raise ValueError("give exactly one canary target: pid, cgroup or comm")
        return self

    def node_args(self) -> dict[str, Any]:
        """The target as the node's canary operations take it."""
        if self.pid is not None:
            return {"pids": [self.pid]}
        if self.cgroup is not None:
            return {"cgroup": self.cgroup}
        return {"comm": self.comm}

    def describe(self) -> str:
        if self.pid is not None:
            return f"pid {self.pid} and its children"
        if self.cgroup is not None:
            return f"cgroup {self.cgroup}"
        return f"processes named /{self.comm}/"


ConfigValue = int | str | bool


def check_config_keys(v: dict[str, ConfigValue]) -> dict[str, ConfigValue]:
    """A configuration's shape as a client sends it (the daemon checks the values against the object):
    tunables, and for an scx-style source what it was verified with (``rodata.NAME``, ``struct_ops``)."""
    if len(v) > MAX_CONFIG_KEYS:
        raise ValueError(f"at most {MAX_CONFIG_KEYS} tunables")
    for key, value in v.items():
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,63}|rodata\.[A-Za-z][A-Za-z0-9_]{0,63}|struct_ops", key):
            raise ValueError(f"bad configuration key {key!r} (a tunable, rodata.NAME or struct_ops)")
        if key == "struct_ops" and not (isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,63}", value)):
            raise ValueError("struct_ops names one of the object's struct_ops maps")
        if isinstance(value, str) and (len(value) > MAX_CONFIG_VALUE_CHARS or "\x00" in value):
            raise ValueError(f"the value of {key} is too long or holds NUL")
    return v


class DeployRequest(BaseModel):
    """What ``schedcp deploy`` and the ``deploy_scheduler`` tool send to the daemon.

    ``token_id`` names a token the daemon stored when it verified the object; ``token`` is a token's
    full text (one issued elsewhere with the same key); ``external`` names an installed scheduler
    binary by its entry in the repository's catalog (allowed by the operator instead of a token):
    exactly one of the three. ``all_tasks`` (external binaries only) deploys without a canary, for
    a binary that has no partial-switch flag."""

    model_config = ConfigDict(extra="forbid")
    token_id: str | None = Field(None, pattern=TOKEN_ID_PATTERN)
    token: str | None = Field(None, min_length=16, max_length=4096, pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
    external: str | None = Field(None, pattern=EXTERNAL_NAME_PATTERN)
    config: dict[str, ConfigValue] = Field(default_factory=dict)
    canary: CanaryTarget | None = None
    all_tasks: bool = False
    window_s: float | None = Field(None, ge=1.0, le=86400.0)
    goal: GoalMetric = "wait_share"
    stay_partial: bool = False
    override_refusal: bool = False

    @model_validator(mode="after")
    def _one_token(self) -> DeployRequest:
        if sum(x is not None for x in (self.token_id, self.token, self.external)) != 1:
            raise ValueError("give exactly one of token_id, token and external")
        if self.all_tasks:
            if self.external is None:
                raise ValueError("all_tasks is for installed binaries; a verified object always starts with a canary")
            if self.canary is not None or self.stay_partial:
                raise ValueError("all_tasks deploys without a canary: drop the canary target and stay_partial")
        elif self.canary is None:
            raise ValueError("give a canary target (pid, cgroup or comm)")
        return self

    _config = field_validator("config")(check_config_keys)

    @property
    def token_label(self) -> str:
        if self.external is not None:
            return f"external {self.external}"
        return self.token_id or f"token …{(self.token or '')[-8:]}"

    def target_text(self) -> str:
        return self.canary.describe() if self.canary is not None else "all tasks"


class Artefact(BaseModel):
    """What a deployment runs, as the refusal list and last-known-good name it: a verified object,
    or (``kind="external"``) an installed binary, its sha256 the node computed from the file."""

    model_config = ConfigDict(extra="forbid")
    scheduler: str
    object_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    config: dict[str, ConfigValue | float] = Field(default_factory=dict)
    kernel: str
    kind: Literal["object", "external"] = "object"
    binary: str | None = None  # external: the program name the catalog entry gives

    @property
    def key(self) -> str:
        from schedcp.verifier.tokens import config_digest

        return f"{self.object_sha256}:{config_digest(self.config)}:{self.kernel}"


class Sample(BaseModel):
    """One tick of the goal metric on the canary's tasks."""

    t: float  # the node's boot clock
    value: float | None  # None when the target had no runnable time in the tick
    tasks: int = 0


class Threshold(BaseModel):
    """The breaker's line for the goal metric, derived from the baseline's noise."""

    metric: GoalMetric
    direction: Literal["lower", "higher"]
    median: float
    mad: float
    margin: float
    limit: float  # a sample worse than this is bad
    samples: int

    def bad(self, value: float) -> bool:
        return value > self.limit if self.direction == "lower" else value < self.limit


class ExitRecord(BaseModel):
    """The scheduler's own record of why it exited (scx ``UEI``: ``struct user_exit_info``), as the
    node read it back from the object before closing it; bounded for the store and the audit log."""

    kind: int
    kind_name: str = ""
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    exit_cpu: int | None = None
    dump: str = ""

    @classmethod
    def from_node(cls, raw: Any) -> ExitRecord | None:
        if not isinstance(raw, dict) or not isinstance(raw.get("kind"), int):
            return None
        fields = {k: raw[k] for k in cls.model_fields if k in raw}
        for key, cap in (("kind_name", 64), ("reason", 400), ("message", 400), ("dump", MAX_EXIT_DUMP_CHARS)):
            if isinstance(fields.get(key), str):
                fields[key] = fields[key][:cap]
        return cls.model_validate(fields)

    def describe(self) -> str:
        from schedcp.toolchain.scx_loader import exit_summary

        return exit_summary(self.model_dump())


class Trip(BaseModel):
    """Why the breaker opened, and how long the restore took."""

    deployment_id: str
    at: float
    signal: Literal["ejection", "error_exit", "stall", "metric", "left", "process_exit", "operator"]
    reason: str
    phase: DeployState
    kernel_events: list[dict[str, Any]] = Field(default_factory=list)
    samples: list[Sample] = Field(default_factory=list)
    threshold: Threshold | None = None
    restored_to: str = ""  # "default" or the scheduler name of the last known good
    restore_s: float | None = None
    restore_steps: dict[str, float] = Field(default_factory=dict)  # detach_s, load_s, confirm_s, standby
    restore_error: str | None = None
    exit_info: ExitRecord | None = None  # the scheduler's own exit record, when it keeps one (UEI)


class Transition(BaseModel):
    at: float
    state: DeployState
    note: str = ""
    data: dict[str, Any] = Field(default_factory=dict)


class Held(BaseModel):
    """The policy the daemon holds on the node right now (persisted, checked against sysfs on start)."""

    deployment_id: str
    artefact: Artefact
    handle: int
    ops_name: str
    enable_seq: int | None
    partial: bool


class Deployment(BaseModel):
    id: str = Field(pattern=DEPLOYMENT_ID_PATTERN)
    created: float
    peer_uid: int
    request: DeployRequest
    artefact: Artefact | None = None
    state: DeployState
    ops_name: str | None = None
    handle: int | None = None
    enable_seq: int | None = None
    threshold: Threshold | None = None
    canary_started: float | None = None
    canary_until: float | None = None
    promoted_at: float | None = None
    ended_at: float | None = None
    reason: str = ""
    last_samples: list[Sample] = Field(default_factory=list)
    canary_tasks: int = 0
    # What the breaker restores if this deployment trips (the last known good when it started).
    previous: LastKnownGood | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


class LastKnownGood(BaseModel):
    """What the breaker puts back: a proven deployment's artefact, or the kernel's default."""

    deployment_id: str | None = None
    artefact: Artefact | None = None
    partial: bool = False
    canary: CanaryTarget | None = None

    @property
    def name(self) -> str:
        return self.artefact.scheduler if self.artefact else "default"


class BreakerStatus(BaseModel):
    latched: bool
    trips_in_window: int
    max_trips: int
    trip_window_s: float
    refused_keys: int


class NodeView(BaseModel):
    """What the kernel actually runs, read from sysfs through the node."""

    kind: str
    kernel: str
    state: str | None
    ops: str | None
    enable_seq: int | None
    switch_all: int | None


class DeployStatus(BaseModel):
    node: NodeView
    active: Deployment | None
    last_known_good: LastKnownGood
    breaker: BreakerStatus
    trips: list[Trip]
    canary_progress: dict[str, Any] = Field(default_factory=dict)
    reconcile: list[str] = Field(default_factory=list)


class Story(BaseModel):
    """One deployment from token to outcome, as ``schedcp audit`` tells it."""

    deployment: Deployment
    transitions: list[Transition]
    trips: list[Trip]


Deployment.model_rebuild()
