# SPDX-License-Identifier: Apache-2.0
"""An installed upstream scheduler as something SchedCP can run: its catalog entry, and the exact
command line a configuration becomes.

The repository's ``external`` entries (``catalog/upstream.json``) name each binary and the flags
its tunables map to. This is the one place a configuration becomes arguments for such a binary:
every key must be a tunable the entry declares, every value must fit the tunable's type, range or
choices, and each value is joined to its flag (``--slice-us=5000``, ``-s5000``) so no value can be
read as another option. No free-form argument from an agent ever reaches the binary.

Only the catalog shipped with SchedCP is read here, never the repository database: agents may add
``external`` entries to the database, and what the daemon starts as root must not be theirs to
describe. The partial-switch flag (``switch_partial`` in the entry) is never set by a
configuration: the canary and partial trial arms add it themselves.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from schedcp.errors import UsageError
from schedcp.repository.catalog_sources import CATALOG_FILE, upstream_policies
from schedcp.repository.models import TunableSpec
from schedcp.toolchain.metadata import TYPE_LIMITS

# The C integer types' ranges (the same as a BPF tunable's), and "int" for a flag of no fixed width.
INT_RANGES = {k: v for k, v in TYPE_LIMITS.items() if k != "bool"} | {"int": TYPE_LIMITS["s64"]}
_TEXT = re.compile(r"^[A-Za-z0-9_.,:+][A-Za-z0-9_.,:+-]{0,127}$")  # never starts with '-'
_CPUMASK = re.compile(r"^(0x)?[0-9a-fA-F]{1,256}$")
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


@dataclass(frozen=True)
class ExternalCommand:
    """A validated command line for an installed scheduler: what the trial core and the deploy
    controller start on a node (``trial/external.py``)."""

    name: str  # the catalog entry
    binary: str
    args: tuple[str, ...] = ()
    partial_args: tuple[str, ...] = ()  # empty: the binary has no partial-switch flag
    config: dict[str, int | float | str | bool] = field(default_factory=dict)  # canonical, as validated
    search: tuple[str, ...] = ()  # where the node looks for the binary (empty: its system directories)

    @property
    def has_partial(self) -> bool:
        return bool(self.partial_args)

    def argv(self, *, partial: bool) -> list[str]:
        """The arguments for an all-tasks or a partial (SCHED_EXT tasks only) run."""
        if partial and not self.partial_args:
            raise UsageError(
                f"{self.name} declares no partial-switch flag, so it cannot run on some tasks only",
                "deploy it to all tasks (--all-tasks) or choose a scheduler with a partial-switch flag",
                code="external_no_partial",
            )
        return [*self.args, *(self.partial_args if partial else ())]


@dataclass(frozen=True)
class ExternalEntry:
    name: str
    binary: str
    tunables: dict[str, TunableSpec]
    title: str = ""

    @property
    def partial_flag(self) -> str | None:
        for t in self.tunables.values():
            if t.switch_partial:
                return t.flag
        return None

    def command(self, config: dict[str, Any]) -> ExternalCommand:
        """``config`` checked against this entry and turned into arguments; UsageError names the
        first key or value that does not fit."""
        args: list[str] = []
        canonical: dict[str, int | float | str | bool] = {}
        for key in sorted(config):
            spec = self.tunables.get(key)
            if spec is None or spec.flag is None:
                known = ", ".join(sorted(k for k, t in self.tunables.items() if not t.switch_partial)) or "none"
                raise UsageError(
                    f"{self.name} has no tunable {key!r} (its tunables: {known})",
                    f"use only the flags the repository declares for {self.name}: `schedcp repo show {self.name}`",
                    code="external_bad_config",
                )
            if spec.switch_partial:
                raise UsageError(
                    f"{key} is {self.name}'s partial-switch flag, which the canary sets, not a configuration",
                    "drop it: a canary runs partial, a promoted deployment on all tasks (--stay-partial keeps it)",
                    code="external_bad_config",
                )
            value = _value(self.name, spec, config[key])
            canonical[key] = value
            if spec.type == "bool":
                if value:
                    args.append(spec.flag)
                continue
            text = _format(value)
            args.append(f"{spec.flag}={text}" if spec.flag.startswith("--") else f"{spec.flag}{text}")
        partial = self.partial_flag
        return ExternalCommand(
            name=self.name,
            binary=self.binary,
            args=tuple(args),
            partial_args=(partial,) if partial else (),
            config=canonical,
        )


def _format(value: int | float | str | bool) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _bad(entry: str, spec: TunableSpec, raw: Any, why: str) -> UsageError:
    return UsageError(
        f"{entry}: {spec.name}={str(raw)[:60]!r} is not valid: {why}",
        f"give {spec.name} a value that fits its declaration ({spec.type}"
        + (f", {spec.min}..{spec.max}" if spec.min is not None or spec.max is not None else "")
        + ")",
        code="external_bad_config",
    )


def _value(entry: str, spec: TunableSpec, raw: Any) -> int | float | str | bool:
    """One value checked against its tunable's type, range and choices (strings from a command line
    are parsed the same way as typed JSON values)."""
    kind = spec.type
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str) and raw.lower() in _TRUE + _FALSE:
            return raw.lower() in _TRUE
        raise _bad(entry, spec, raw, "expected true or false")
    if kind in INT_RANGES:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            raise _bad(entry, spec, raw, "expected an integer")
        if isinstance(raw, str):
            if not re.fullmatch(r"-?[0-9]{1,20}", raw.strip()):
                raise _bad(entry, spec, raw, "expected an integer")
            raw = int(raw.strip())
        lo, hi = INT_RANGES[kind]
        lo = max(lo, math.ceil(spec.min)) if spec.min is not None else lo
        hi = min(hi, math.floor(spec.max)) if spec.max is not None else hi
        if not lo <= raw <= hi:
            raise _bad(entry, spec, raw, f"outside {lo}..{hi}")
        return int(raw)
    if kind == "float":
        if isinstance(raw, bool):
            raise _bad(entry, spec, raw, "expected a number")
        try:
            number = float(raw) if isinstance(raw, int | float) or re.fullmatch(r"[-+0-9.eE]{1,32}", str(raw)) else None
        except ValueError:
            number = None
        if number is None or not math.isfinite(number):
            raise _bad(entry, spec, raw, "expected a finite number")
        if (spec.min is not None and number < spec.min) or (spec.max is not None and number > spec.max):
            raise _bad(entry, spec, raw, f"outside {spec.min}..{spec.max}")
        return number
    if not isinstance(raw, str):
        raise _bad(entry, spec, raw, "expected text")
    if kind == "enum":
        if raw not in (spec.choices or []):
            raise _bad(entry, spec, raw, f"one of {', '.join(spec.choices or [])}")
        return raw
    if kind == "cpumask":
        if not _CPUMASK.fullmatch(raw):
            raise _bad(entry, spec, raw, "expected a hexadecimal CPU mask")
        return raw
    limit = spec.max_len or 128
    if len(raw) > limit or not _TEXT.fullmatch(raw):
        raise _bad(entry, spec, raw, f"up to {limit} letters, digits and _ . , : + - (not starting with -)")
    return raw


@cache
def _catalog(path: Path) -> dict[str, ExternalEntry]:
    policies, _problems = upstream_policies(path)
    out: dict[str, ExternalEntry] = {}
    for p in policies:
        if p.kind == "external" and p.binary:
            out[p.name] = ExternalEntry(p.name, p.binary, {t.name: t for t in p.tunables}, p.title)
    return out


def catalog(path: Path = CATALOG_FILE) -> dict[str, ExternalEntry]:
    """The shipped catalog's external entries by name."""
    return dict(_catalog(path))


def entry(name: str, path: Path = CATALOG_FILE) -> ExternalEntry:
    found = _catalog(path).get(name)
    if found is None:
        raise UsageError(
            f"the repository's catalog has no external scheduler {name!r}",
            f"one of: {', '.join(sorted(_catalog(path)))}",
            code="external_unknown",
        )
    return found
