# SPDX-License-Identifier: Apache-2.0
"""Our own argument checks, on top of the JSON schemas: agents are careless, some are hostile.

The schemas already bound types, lengths and ranges. These checks cover what a schema cannot say
well: a path must not climb out of where it points, a name must not smuggle shell syntax, a
configuration dict must stay small and flat, an argv must be a list of plain words.
"""

from __future__ import annotations

import re
from pathlib import PurePosixPath
from typing import Any

from schedcp.errors import UsageError

MAX_SOURCE_BYTES = 256 * 1024
MAX_CONFIG_KEYS = 40
MAX_ARGV = 64
MAX_ARG_CHARS = 512
# Characters a shell would treat specially. Argv elements never reach a shell, but names, paths and
# patterns that are not argv must not carry them at all: they only ever mean an injection attempt.
SHELL_META = set(";|&$`<>(){}[]!*?~'\"\\\n\r\t\x00")
_CONFIG_KEY = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")


def no_shell_meta(value: str, what: str) -> str:
    bad = sorted({c for c in value if c in SHELL_META or ord(c) < 0x20})
    if bad:
        shown = " ".join(repr(c) for c in bad[:5])
        raise UsageError(
            f"{what} contains characters that are not allowed: {shown}",
            f"give {what} as a plain value without shell syntax or control characters",
        )
    return value


def safe_path(value: str, what: str = "path", *, absolute: bool = True) -> str:
    """A normalised path with no '..' parts, no NUL, no control characters."""
    if not value or len(value) > 4096:
        raise UsageError(f"{what} must be 1..4096 characters", f"give a valid {what}")
    if "\x00" in value or any(ord(c) < 0x20 for c in value):
        raise UsageError(f"{what} contains control characters", f"give a plain {what}")
    parts = PurePosixPath(value).parts
    if ".." in parts:
        raise UsageError(
            f"{what} {value!r} climbs out of its directory with '..'", f"give the {what} without '..' components"
        )
    if absolute and not value.startswith("/"):
        raise UsageError(f"{what} {value!r} is not absolute", f"give an absolute {what}, e.g. /proc/loadavg")
    return str(PurePosixPath(value))


def source_text(value: str) -> str:
    size = len(value.encode("utf-8", "surrogatepass"))
    if size > MAX_SOURCE_BYTES:
        raise UsageError(
            f"the source is {size} bytes, more than the {MAX_SOURCE_BYTES}-byte limit",
            "shrink the scheduler; keep helpers in the shared header instead of inlining them",
        )
    if "\x00" in value:
        raise UsageError("the source contains NUL bytes", "send plain C text")
    return value


def config_dict(value: dict[str, Any] | None, what: str = "config") -> dict[str, int | float | bool | str]:
    """A small flat mapping of tunable names to scalar values."""
    if not value:
        return {}
    if len(value) > MAX_CONFIG_KEYS:
        raise UsageError(f"{what} has {len(value)} keys; at most {MAX_CONFIG_KEYS} are allowed", f"trim {what}")
    out: dict[str, int | float | bool | str] = {}
    for key, item in value.items():
        if not _CONFIG_KEY.match(key):
            raise UsageError(
                f"{what} key {key!r} is not a valid tunable name",
                "tunable names are lowercase C identifiers, e.g. slice_us",
            )
        if isinstance(item, str):
            if len(item) > 256:
                raise UsageError(f"{what}.{key} is longer than 256 characters", "shorten the value")
            no_shell_meta(item, f"{what}.{key}")
        elif not isinstance(item, int | float | bool):
            raise UsageError(
                f"{what}.{key} must be a number, boolean or short string", "give scalar tunable values only"
            )
        out[key] = item
    return out


def argv(value: list[str], what: str = "argv") -> list[str]:
    """An argument vector: plain words passed to exec, never to a shell."""
    if not value:
        raise UsageError(f"{what} is empty", "give the program and its arguments as a list, e.g. ['sleep', '1']")
    if len(value) > MAX_ARGV:
        raise UsageError(f"{what} has {len(value)} elements; at most {MAX_ARGV}", "shorten the command")
    for i, item in enumerate(value):
        if not isinstance(item, str) or not item or len(item) > MAX_ARG_CHARS:
            raise UsageError(
                f"{what}[{i}] must be a non-empty string of at most {MAX_ARG_CHARS} characters",
                "give each argument as its own string",
            )
        if "\x00" in item or "\n" in item:
            raise UsageError(f"{what}[{i}] contains NUL or newline characters", "remove control characters")
    program = value[0]
    if program.startswith("-"):
        raise UsageError(f"{what}[0] {program!r} looks like an option, not a program", "put the program first")
    if any(c.isspace() for c in program) or any(c in SHELL_META for c in program):
        raise UsageError(
            f"{what}[0] {program!r} is not a program name (it holds spaces or shell syntax)",
            "argv is not a shell line: give each word as its own element, e.g. ['ls', '-l', '/proc']",
        )
    return list(value)
