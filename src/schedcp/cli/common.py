# SPDX-License-Identifier: Apache-2.0
"""Shared CLI plumbing: JSON or human output, and errors as one line plus a next step."""

from __future__ import annotations

import json
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
