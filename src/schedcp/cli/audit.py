# SPDX-License-Identifier: Apache-2.0
"""`schedcp audit`: check the daemon's audit log (keyed chain, anchor) and read its tail.

Reads the files directly (root, or whoever can read the daemon's state directory), so it works
while the daemon is stopped, which is when an investigation usually happens.
"""

from __future__ import annotations

from pathlib import Path

import typer

from schedcp.cli.common import JsonOption, console, emit, fail
from schedcp.errors import SchedcpError

audit_app = typer.Typer(help="The daemon's tamper-evident audit log.", invoke_without_command=True)

StateOption = typer.Option(None, "--state-dir", help="The daemon's state directory (default: /var/lib/schedcp).")


def _paths(state_dir: Path | None):
    from schedcp.daemon.audit import AuditPaths
    from schedcp.paths import data_dir

    return AuditPaths.under(state_dir or data_dir())


@audit_app.callback()
def stories(
    ctx: typer.Context,
    deployment: str | None = typer.Option(None, "--deployment", help="Only this deployment (dep-...)."),
    as_json: bool = JsonOption,
) -> None:
    """Without a subcommand: each deployment's story from token to outcome (asks the daemon)."""
    if ctx.invoked_subcommand is None:
        from schedcp.cli.deploy import print_stories

        print_stories(as_json, deployment)


@audit_app.command("verify")
def verify(state_dir: Path | None = StateOption, as_json: bool = JsonOption) -> None:
    """Check every entry's mac and link and the end against the anchor; exit 1 when anything is off."""
    from schedcp.daemon.audit import verify_log

    try:
        verdict = verify_log(_paths(state_dir))
    except (SchedcpError, PermissionError) as exc:
        err = exc if isinstance(exc, SchedcpError) else SchedcpError(str(exc), "run as root", code="permission")
        raise fail(err, as_json) from None

    def render(v) -> None:
        anchor = f"anchor at seq {v.anchor.seq}" if v.anchor else "no anchor"
        if v.ok:
            console.print(f"[green]intact[/]: {v.entries} entries, last seq {v.last_seq}, {anchor}", highlight=False)
        else:
            console.print(f"[bold red]TAMPERED or damaged[/]: {v.entries} entries, {anchor}", highlight=False)
            for problem in v.problems[:50]:
                console.print(f"  - {problem}", highlight=False)

    emit(verdict.model_dump(), as_json, lambda _d: render(verdict))
    if not verdict.ok:
        raise typer.Exit(1)


@audit_app.command("tail")
def tail(
    n: int = typer.Option(20, "-n", min=1, max=500, help="How many entries."),
    state_dir: Path | None = StateOption,
    as_json: bool = JsonOption,
) -> None:
    """The newest entries of the audit log."""
    from schedcp.daemon.audit import AuditLog

    try:
        log = AuditLog(_paths(state_dir), create=False)
        entries = [e.model_dump() for e in log.tail(n)]
    except (SchedcpError, PermissionError) as exc:
        err = exc if isinstance(exc, SchedcpError) else SchedcpError(str(exc), "run as root", code="permission")
        raise fail(err, as_json) from None

    def render(items: list[dict]) -> None:
        for e in items:
            who = f" uid {e['peer_uid']}" if e.get("peer_uid") is not None else ""
            outcome = f" {e['outcome']}" if e.get("outcome") else ""
            console.print(f"{e['seq']:>6} {e['ts']:.3f} {e['event']} {e['phase']}{outcome}{who}", highlight=False)

    emit(entries, as_json, render)


def register(app: typer.Typer) -> None:
    app.add_typer(audit_app, name="audit")
