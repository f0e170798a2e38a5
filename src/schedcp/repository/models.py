# SPDX-License-Identifier: Apache-2.0
"""Validated shapes of what goes into the policy repository.

Everything an agent hands the repository passes through one of these models first, so the store
only ever sees bounded, well-typed values. Limits are deliberately tight: a repository that agents
write to must not grow megabyte descriptions or thousand-entry tag lists.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schedcp.errors import UsageError

Kind = Literal["bpf", "external", "generated"]
Status = Literal["candidate", "verified", "production", "deprecated"]
KINDS: tuple[str, ...] = ("bpf", "external", "generated")
STATUSES: tuple[str, ...] = ("candidate", "verified", "production", "deprecated")

MAX_SOURCE_BYTES = 256 * 1024
MAX_JSON_BYTES = 16 * 1024  # profiles, configurations and metrics are small dicts, not logs
NAME_PATTERN = r"^[a-z][a-z0-9_.-]{1,63}$"
KERNEL_PATTERN = r"^\d{1,2}\.\d{1,3}$"
ValueType = Literal["u8", "u16", "u32", "u64", "s32", "s64", "bool", "str", "int", "float", "enum", "cpumask"]


def kernel_code(version: str) -> int:
    """ "6.12" -> 6012, so "min kernel <= target" is an integer comparison in SQL."""
    major, _, minor = version.partition(".")
    return int(major) * 1000 + int(minor or 0)


def _bounded_json(value: Any, what: str) -> Any:
    try:
        text = json.dumps(value, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{what} is not JSON-serialisable: {exc}") from exc
    if len(text.encode()) > MAX_JSON_BYTES:
        raise ValueError(f"{what} is larger than {MAX_JSON_BYTES} bytes as JSON")
    return value


class TunableSpec(BaseModel):
    """One knob of a policy and how it reaches the scheduler: a CLI flag or a rodata variable."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$")
    type: ValueType
    default: int | float | bool | str | None = None
    min: int | float | None = None
    max: int | float | None = None
    choices: list[str] | None = Field(default=None, max_length=32)
    max_len: int | None = Field(default=None, ge=1, le=256)  # str variables: the C array size
    unit: str = Field(default="", max_length=16)
    description: str = Field(min_length=3, max_length=600)
    flag: str | None = Field(default=None, pattern=r"^-{1,2}[A-Za-z0-9][A-Za-z0-9-]{0,63}$")
    variable: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
    # An external scheduler's flag that makes it schedule only SCHED_EXT tasks (SCX_OPS_SWITCH_PARTIAL):
    # what a deployment's canary and a partial trial arm pass; never set through a configuration.
    switch_partial: Literal[True] | None = None

    @model_validator(mode="after")
    def _check(self) -> TunableSpec:
        if (self.flag is None) == (self.variable is None):
            raise ValueError(f"tunable {self.name}: give exactly one of flag (CLI) or variable (BPF global)")
        if self.switch_partial and (self.flag is None or self.type != "bool"):
            raise ValueError(f"tunable {self.name}: a partial-switch tunable is a bool command-line flag")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"tunable {self.name}: min {self.min} is above max {self.max}")
        if self.type == "enum" and not self.choices:
            raise ValueError(f"tunable {self.name}: an enum needs choices")
        return self

    @property
    def maps_to(self) -> str:
        return f"flag {self.flag}" if self.flag else f"variable {self.variable}"


class PolicyInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    kind: Kind = "generated"
    title: str = Field(default="", max_length=120)
    description: str = Field(min_length=20, max_length=4000)
    workloads: list[str] = Field(default_factory=list, max_length=30)
    tags: list[str] = Field(default_factory=list, max_length=30)
    tunables: list[TunableSpec] = Field(default_factory=list, max_length=60)
    min_kernel: str = Field(default="6.12", pattern=KERNEL_PATTERN)
    source: str | None = None
    binary: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
    upstream: str = Field(default="", max_length=300)
    status: Status = "candidate"
    parent: str | None = Field(default=None, pattern=NAME_PATTERN)

    @field_validator("workloads")
    @classmethod
    def _workloads(cls, items: list[str]) -> list[str]:
        for item in items:
            if not 2 <= len(item) <= 200:
                raise ValueError("each workload is 2..200 characters")
        return items

    @field_validator("tags")
    @classmethod
    def _tags(cls, items: list[str]) -> list[str]:
        out = []
        for item in items:
            tag = item.strip().lower()
            if not 1 <= len(tag) <= 40 or not all(c.isalnum() or c in "-_ ." for c in tag):
                raise ValueError(f"tag {item!r}: 1..40 letters, digits, '-', '_', '.' or spaces")
            if tag not in out:
                out.append(tag)
        return out

    @field_validator("source")
    @classmethod
    def _source(cls, text: str | None) -> str | None:
        if text is None:
            return None
        if len(text.encode("utf-8", "surrogatepass")) > MAX_SOURCE_BYTES:
            raise ValueError(f"source is larger than {MAX_SOURCE_BYTES // 1024} KiB")
        if "\x00" in text:
            raise ValueError("source contains NUL bytes")
        return text

    @model_validator(mode="after")
    def _by_kind(self) -> PolicyInput:
        names = [t.name for t in self.tunables]
        if len(names) != len(set(names)):
            raise ValueError("tunable names must be unique")
        if self.kind == "external":
            if not self.binary:
                raise ValueError("an external policy names its binary")
            if any(t.variable for t in self.tunables):
                raise ValueError("external tunables map to command-line flags, not variables")
        else:
            if not self.source or not self.source.strip():
                raise ValueError(f"a {self.kind} policy needs its source text")
            if any(t.flag for t in self.tunables):
                raise ValueError("BPF tunables map to rodata variables, not flags")
        if self.parent == self.name:
            raise ValueError("a policy cannot be its own parent")
        return self


class WorkloadProfile(BaseModel):
    """What ran and what mattered: the key the learning endpoints match results by."""

    model_config = ConfigDict(extra="allow")
    summary: str = Field(min_length=3, max_length=2000)
    characteristics: dict[str, Any] = Field(default_factory=dict)
    goal: str = Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")

    @model_validator(mode="after")
    def _size(self) -> WorkloadProfile:
        _bounded_json(self.model_dump(), "workload profile")
        return self


Scalar = int | float | bool | str


class ResultInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policy: str = Field(pattern=NAME_PATTERN)
    config: dict[str, Scalar] = Field(default_factory=dict, max_length=60)
    profile: WorkloadProfile
    metrics: dict[str, float] = Field(min_length=1, max_length=60)
    baseline: dict[str, float] = Field(default_factory=dict, max_length=60)
    directions: dict[str, Literal["lower", "higher"]] = Field(default_factory=dict, max_length=60)
    host_fingerprint: str = Field(default="", max_length=64)
    kernel_release: str = Field(default="", max_length=100)
    notes: str = Field(default="", max_length=1000)

    @field_validator("metrics", "baseline")
    @classmethod
    def _finite(cls, values: dict[str, float]) -> dict[str, float]:
        for key, value in values.items():
            if not 1 <= len(key) <= 64:
                raise ValueError(f"metric name {key!r} must be 1..64 characters")
            if value != value or value in (float("inf"), float("-inf")):
                raise ValueError(f"metric {key} is not a finite number")
        return values

    @field_validator("config")
    @classmethod
    def _config(cls, values: dict[str, Scalar]) -> dict[str, Scalar]:
        return _bounded_json(values, "configuration")


def parse(model: type[BaseModel], data: Any, what: str) -> Any:
    """Validate with a one-line, user-facing error instead of pydantic's multi-line report."""
    if isinstance(data, model):
        return data
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or what
        raise UsageError(f"invalid {what}: {where}: {first['msg']}", f"fix {where} and retry") from exc
