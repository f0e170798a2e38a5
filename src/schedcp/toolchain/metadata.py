# SPDX-License-Identifier: Apache-2.0
"""Scheduler metadata: what each policy is for and which tunables it takes.

Every library scheduler ``<name>.bpf.c`` has a ``<name>.toml`` beside it. Tunables are
``const volatile`` globals in the object's read-only data; the loader writes validated values there
before load, so no recompilation is needed. Stats are plain global counters (u64) in .bss/.data.

    name = "vtime"
    title = "Weighted virtual-time fairness"
    description = "..."
    workloads = ["mixed interactive and batch", ...]
    tags = ["fairness", "vtime"]
    min_kernel = "6.12"
    [[tunables]]
    name = "slice_us"      # the C variable: const volatile u64 slice_us = 5000;
    type = "u64"           # u8 u16 u32 u64 s32 s64 bool str
    default = 5000
    min = 100
    max = 100000
    unit = "us"
    description = "..."
    [[stats]]
    name = "nr_enqueued"   # the C variable: u64 nr_enqueued;
    description = "..."
    [wait_bound]           # optional: this policy makes tasks wait on purpose, at most this long
    tunable = "max_wait_us"
    slack_ms = 1000        # what the aging rule adds on top (a few slices), plus jitter

A declared wait bound is a claim the gates hold the policy to, not a waiver: every watchdog that
watches the policy is raised to twice the bound (``watchdog_floor_ms``), and the verifier's
dynamic stage allows tasks to wait up to the bound and no longer. The bound can never exceed
``MAX_WAIT_BOUND_S`` for any value of the tunable, so a policy (or an agent writing its metadata)
cannot declare its way past the kernel's watchdog.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schedcp.errors import UsageError
from schedcp.paths import schedulers_dir

TunableType = Literal["u8", "u16", "u32", "u64", "s32", "s64", "bool", "str"]
TYPE_SIZES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "s32": 4, "s64": 8, "bool": 1}
TYPE_LIMITS = {
    "u8": (0, 2**8 - 1),
    "u16": (0, 2**16 - 1),
    "u32": (0, 2**32 - 1),
    "u64": (0, 2**64 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "s64": (-(2**63), 2**63 - 1),
    "bool": (0, 1),
}


class Tunable(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$")
    type: TunableType
    default: int | bool | str
    min: int | None = None
    max: int | None = None
    max_len: int | None = Field(default=None, ge=1, le=256)  # for str: the C array size
    unit: str = ""
    description: str = Field(min_length=3, max_length=600)

    @model_validator(mode="after")
    def _check(self) -> Tunable:
        if self.type == "str":
            if self.max_len is None or not isinstance(self.default, str):
                raise ValueError(f"str tunable {self.name} needs a string default and max_len")
            return self
        lo, hi = TYPE_LIMITS[self.type]
        self.min = lo if self.min is None else self.min
        self.max = hi if self.max is None else self.max
        if not lo <= self.min <= self.max <= hi:
            raise ValueError(f"tunable {self.name}: range {self.min}..{self.max} does not fit {self.type}")
        if not self.min <= int(self.default) <= self.max:
            raise ValueError(f"tunable {self.name}: default {self.default} outside {self.min}..{self.max}")
        return self

    def coerce(self, value: Any) -> int | str:
        """Validate one user-supplied value (string from a CLI flag, or JSON) against the declaration."""
        if self.type == "str":
            text = str(value)
            if len(text.encode()) >= (self.max_len or 1) or "\x00" in text:
                raise UsageError(
                    f"{self.name}: {text!r} is longer than {(self.max_len or 1) - 1} bytes",
                    f"shorten it to at most {(self.max_len or 1) - 1} bytes",
                )
            return text
        if self.type == "bool":
            if isinstance(value, bool):
                return int(value)
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return 1
            if text in ("0", "false", "no", "off"):
                return 0
            raise UsageError(f"{self.name}: {value!r} is not a boolean", "use true or false")
        try:
            number = int(str(value).strip().replace("_", ""), 0) if not isinstance(value, int) else value
        except ValueError as exc:
            raise UsageError(f"{self.name}: {value!r} is not an integer", f"give an integer for {self.name}") from exc
        if isinstance(value, bool) or not (self.min or 0) <= number <= (self.max or 0):
            raise UsageError(
                f"{self.name}={value} is outside the allowed range {self.min}..{self.max}",
                f"pick a value in {self.min}..{self.max}{(' ' + self.unit) if self.unit else ''}",
            )
        return number


# The longest wait any policy may declare, whatever its tunable is set to. Twice this (the watchdog
# floor) stays below the kernel's 30 s cap on the sched_ext watchdog.
MAX_WAIT_BOUND_S = 10.0


class WaitBound(BaseModel):
    """A policy's declared bound on how long a runnable task may wait: a tunable (in microseconds)
    plus a fixed slack."""

    model_config = ConfigDict(extra="forbid")
    tunable: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$")
    slack_ms: int = Field(default=1000, ge=0, le=5000)


class Stat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$")
    description: str = Field(min_length=3, max_length=400)


class SchedulerMeta(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{1,31}$")
    title: str = Field(min_length=3, max_length=120)
    description: str = Field(min_length=20, max_length=4000)
    workloads: list[str] = Field(default_factory=list, max_length=30)
    tags: list[str] = Field(default_factory=list, max_length=30)
    min_kernel: str = Field(default="6.12", pattern=r"^\d+\.\d+$")
    tunables: list[Tunable] = Field(default_factory=list, max_length=40)
    stats: list[Stat] = Field(default_factory=list, max_length=40)
    wait_bound: WaitBound | None = None
    source_file: str = ""

    @model_validator(mode="after")
    def _unique(self) -> SchedulerMeta:
        names = [t.name for t in self.tunables]
        if len(names) != len(set(names)):
            raise ValueError("tunable names must be unique")
        if self.wait_bound is not None:
            declared = next((t for t in self.tunables if t.name == self.wait_bound.tunable), None)
            if declared is None or declared.type not in ("u32", "u64") or declared.unit != "us":
                raise ValueError(f"wait_bound.tunable {self.wait_bound.tunable!r} must name a u32/u64 tunable in us")
            longest = (declared.max or 0) / 1e6 + self.wait_bound.slack_ms / 1000
            if longest > MAX_WAIT_BOUND_S:
                raise ValueError(
                    f"wait_bound: {declared.name} up to {declared.max} us plus {self.wait_bound.slack_ms} ms "
                    f"exceeds {MAX_WAIT_BOUND_S:g} s; lower the tunable's max"
                )
        return self

    def wait_bound_s(self, config: dict[str, Any] | None = None) -> float | None:
        """The declared longest wait of a runnable task under `config` (defaults for the rest), or
        None when the policy declares none (then the gates' own bounds apply)."""
        if self.wait_bound is None:
            return None
        tunable = self.tunable(self.wait_bound.tunable)
        value = (config or {}).get(tunable.name, tunable.default)
        return int(tunable.coerce(value)) / 1e6 + self.wait_bound.slack_ms / 1000

    def watchdog_floor_ms(self, config: dict[str, Any] | None = None) -> int:
        """The shortest sched_ext watchdog that leaves the declared wait room (twice the bound), or
        0 when nothing is declared."""
        bound = self.wait_bound_s(config)
        return 0 if bound is None else int(min(30000, round(2000 * bound)))

    def tunable(self, name: str) -> Tunable:
        for t in self.tunables:
            if t.name == name:
                return t
        known = ", ".join(t.name for t in self.tunables) or "none"
        raise UsageError(f"{self.name} has no tunable {name!r}", f"known tunables: {known}")

    def validate_config(self, config: dict[str, Any]) -> dict[str, int | str]:
        return {key: self.tunable(key).coerce(value) for key, value in config.items()}

    @property
    def source_path(self) -> Path:
        return library_dir() / (self.source_file or f"{self.name}.bpf.c")


def library_dir() -> Path:
    return schedulers_dir() / "library"


def load_meta(path: Path) -> SchedulerMeta:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise UsageError(f"cannot read metadata {path}: {exc}", "fix the TOML syntax") from exc
    data.setdefault("source_file", f"{path.stem}.bpf.c")
    try:
        return SchedulerMeta.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"invalid metadata {path.name}: {where}: {first['msg']}", "fix the field") from exc


def library() -> list[SchedulerMeta]:
    return [load_meta(p) for p in sorted(library_dir().glob("*.toml"))]


def get(name: str) -> SchedulerMeta:
    path = library_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(m.name for m in library()) or "none yet"
        raise UsageError(f"unknown scheduler {name!r}", f"library schedulers: {known}")
    return load_meta(path)


def parse_assignments(items: list[str]) -> dict[str, str]:
    """Parse ["slice_us=5000", ...] from the command line."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"bad tunable assignment {item!r}", "use NAME=VALUE, e.g. slice_us=5000")
        out[key.strip()] = value.strip()
    return out
