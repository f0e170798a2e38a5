# SPDX-License-Identifier: Apache-2.0
"""The deploy policy: who may deploy, the canary window, the breaker's thresholds.

Read from the ``[deploy]`` table of the daemon's TOML config file (``packaging/schedcp.toml.example``
is a commented example). Unknown keys are refused, so a typo never silently leaves a default.
"""

from __future__ import annotations

import grp
import pwd
import re
import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from schedcp.deploy.models import EXTERNAL_NAME_PATTERN
from schedcp.errors import UsageError


class DeployPolicy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # Who may deploy and roll back (root always may). Names or numbers; anyone the daemon lets
    # connect may read status and the story.
    deploy_users: list[int | str] = Field(default_factory=list)
    deploy_groups: list[int | str] = Field(default_factory=list)
    # Who may run trial arms on the node (schedcp optimize --target local): granted explicitly, since
    # a trial holds the node (no deploy meanwhile) and attaches a verified policy to its workload.
    trial_users: list[int | str] = Field(default_factory=list)
    trial_groups: list[int | str] = Field(default_factory=list)
    # Installed scheduler binaries that may be deployed (``schedcp deploy --external NAME``), by their
    # entry in the repository's catalog. No token covers a binary (its BPF is loaded by the binary
    # itself, past the verifier), so this list is the operator's decision, and empty by default.
    external_allow: list[str] = Field(default_factory=list, max_length=64)
    # Where the binaries are installed (absolute, root-owned directories nobody else may write);
    # empty: /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin on the node. A VM
    # node gets the allowed binaries found here copied into its image (it rehearses this host).
    external_path: list[str] = Field(default_factory=list, max_length=16)
    # The canary.
    window_s: float = Field(default=30.0, ge=1.0, le=86400.0)
    baseline_s: float = Field(default=5.0, ge=1.0, le=600.0)
    tick_s: float = Field(default=0.5, ge=0.1, le=10.0)
    watchdog_ms: int = Field(default=5000, ge=500, le=30000)
    # The goal metric's noise threshold: median +/- max(k * 1.4826 * MAD, rel_margin * |median|, abs_margin).
    mad_k: float = Field(default=4.0, ge=1.0, le=50.0)  # standard errors of the compared medians (breaker.noise)
    rel_margin: float = Field(default=0.5, ge=0.0, le=10.0)
    abs_margin: float = Field(default=0.05, ge=0.0)
    consecutive_bad: int = Field(default=3, ge=1, le=100)
    smooth: int = Field(default=5, ge=1, le=50)  # ticks in the rolling median the threshold judges
    min_baseline_samples: int = Field(default=4, ge=2, le=1000)
    # Crash-loop cap.
    max_trips: int = Field(default=3, ge=1, le=100)
    trip_window_s: float = Field(default=3600.0, ge=10.0)
    # Keep watching after promotion (a promoted policy is watched until replaced or rolled back).
    watch_after_promotion: bool = True

    @field_validator("external_allow")
    @classmethod
    def _names(cls, names: list[str]) -> list[str]:
        for name in names:
            if not re.fullmatch(EXTERNAL_NAME_PATTERN, name):
                raise ValueError(f"{name!r} is not a catalog entry's name")
        return names

    @field_validator("external_path")
    @classmethod
    def _dirs(cls, dirs: list[str]) -> list[str]:
        for d in dirs:
            if not d.startswith("/") or "\x00" in d or ".." in d.split("/"):
                raise ValueError(f"{d!r} is not an absolute directory")
        return dirs

    @model_validator(mode="after")
    def _check(self) -> DeployPolicy:
        if self.baseline_s < self.tick_s * self.min_baseline_samples:
            raise ValueError(
                f"baseline_s {self.baseline_s} is too short for {self.min_baseline_samples} samples of {self.tick_s}s"
            )
        return self

    def deploy_uids(self) -> set[int]:
        return {_uid(u) for u in self.deploy_users}

    def deploy_gids(self) -> set[int]:
        return {_gid(g) for g in self.deploy_groups}

    def trial_uids(self) -> set[int]:
        return {_uid(u) for u in self.trial_users}

    def trial_gids(self) -> set[int]:
        return {_gid(g) for g in self.trial_groups}


def _uid(value: int | str) -> int:
    if isinstance(value, int):
        return value
    try:
        return pwd.getpwnam(value).pw_uid
    except KeyError:
        raise UsageError(f"an unknown user {value!r} is named in [deploy]", "fix the daemon's config file") from None


def _gid(value: int | str) -> int:
    if isinstance(value, int):
        return value
    try:
        return grp.getgrnam(value).gr_gid
    except KeyError:
        raise UsageError(f"an unknown group {value!r} is named in [deploy]", "fix the daemon's config file") from None


def load_policy(path: Path | None) -> DeployPolicy:
    """The ``[deploy]`` table of a TOML file (defaults when no file is given)."""
    if path is None:
        return DeployPolicy()
    try:
        data: dict[str, Any] = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError(f"no config file at {path}", "see packaging/schedcp.toml.example") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not valid TOML: {exc}", "fix the file") from None
    try:
        policy = DeployPolicy.model_validate(data.get("deploy") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise UsageError(f"{path}: [deploy] {where}: {first['msg']}", "fix the file") from None
    policy.deploy_uids()
    policy.deploy_gids()
    policy.trial_uids()
    policy.trial_gids()
    return policy
