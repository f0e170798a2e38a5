# SPDX-License-Identifier: Apache-2.0
"""Shared CLI plumbing: JSON or human output, and errors as one line plus a next step."""

from __future__ import annotations

import errno
import json
import sqlite3
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console

from schedcp.errors import SchedcpError, UsageError

console = Console()
err_console = Console(stderr=True)

JsonOption = typer.Option(False, "--json", help="Print machine-readable JSON instead of text.")


def emit(data: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    if as_json or render is None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        render(data)


def fail(exc: SchedcpError, as_json: bool = False) -> typer.Exit:
    """Report an error without a traceback; usage errors exit 2, everything else 1."""
    if as_json:
        sys.stdout.write(json.dumps(exc.to_dict(), indent=2) + "\n")
    else:
        err_console.print(f"[bold red]error:[/] {exc.cause}", highlight=False)
        if exc.next_step:
            err_console.print(f"[bold]next:[/] {exc.next_step}", highlight=False)
    return typer.Exit(2 if isinstance(exc, UsageError) or exc.code == "usage" else 1)


def progress(message: str) -> None:
    err_console.print(f"[dim]·[/] {message}", highlight=False)


def explain(exc: BaseException) -> SchedcpError | None:
    """Failures the environment causes (bad bytes in an argument, a damaged database, a full disk)
    as one line and a next step; None for anything else, which is a bug and keeps its traceback."""
    if isinstance(exc, UnicodeError):
        return UsageError(
            "an argument is not valid UTF-8 text", "pass arguments as UTF-8 (check the terminal's locale)"
        )
    if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.ProgrammingError):
        from schedcp.sqlite_wal import explain_error

        return explain_error(exc, "a SchedCP database")
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        where = f" writing {exc.filename}" if exc.filename else ""
        return SchedcpError(
            f"no space left{where} ({exc.strerror})", "free disk space (or raise the quota) and retry", code="disk_full"
        )
    return None
