# SPDX-License-Identifier: Apache-2.0
"""`schedcp daemon`: run the privileged daemon (as root) in the foreground."""

from __future__ import annotations

import os
from pathlib import Path

import typer

from schedcp.cli.common import err_console, fail
from schedcp.errors import SchedcpError


def _daemon(
    socket_path: Path | None = typer.Option(None, "--socket", help="Unix socket path (default: runtime dir)."),
    allow_uid: list[int] = typer.Option([], "--allow-uid", help="Non-root uid allowed to connect (repeatable)."),
) -> None:
    """Run the privileged SchedCP daemon in the foreground (root; systemd-friendly)."""
    from schedcp.daemon.server import DaemonConfig, default_socket, serve

    config = DaemonConfig(socket_path=socket_path or default_socket(), allowed_uids=set(allow_uid))
    if os.geteuid() != 0:
        err_console.print("[yellow]warning:[/] not running as root; privileged operations will fail")
    try:
        serve(config, ready=lambda: err_console.print(f"schedcp daemon listening on {config.socket_path}"))
    except SchedcpError as exc:
        raise fail(exc) from None


def register(app: typer.Typer) -> None:
    app.command("daemon")(_daemon)
