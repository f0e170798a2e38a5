# SPDX-License-Identifier: Apache-2.0
"""`schedcp mcp`: serve SchedCP's tools to AI agents over MCP (stdio, or streamable HTTP)."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer

from schedcp.cli.common import err_console, fail
from schedcp.errors import SchedcpError


def mcp(
    http: str | None = typer.Option(
        None,
        "--http",
        metavar="HOST:PORT",
        help="Serve streamable HTTP at http://HOST:PORT/mcp instead of stdio (loopback unless a host is given).",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="SCHEDCP_MCP_TOKEN",
        show_envvar=True,
        help="Bearer token HTTP clients must send (required with --http). Prefer the environment variable.",
    ),
    allow_host: list[str] = typer.Option(
        [],
        "--allow-host",
        metavar="NAME",
        help="Another Host name HTTP clients may use (a DNS name or proxy); the bound address is always allowed.",
    ),
    print_config: str | None = typer.Option(
        None,
        "--print-config",
        metavar="CLIENT",
        help="Print client configuration JSON for claude-code, claude-desktop, cursor or generic, then exit.",
    ),
    daemon_socket: Path | None = typer.Option(
        None,
        "--daemon-socket",
        envvar="SCHEDCP_DAEMON_SOCKET",
        help="The privileged daemon's socket (verification and probes go through it).",
    ),
    vm_queue: int = typer.Option(
        2, "--vm-queue", min=0, max=16, help="run_in_vm calls that may wait while one VM runs; more get 'busy'."
    ),
    call_log: Path | None = typer.Option(
        None,
        "--call-log",
        envvar="SCHEDCP_MCP_CALL_LOG",
        help="Append a JSON line per tool call (tool, arguments, result code, ids, bytes, ms) to this file.",
    ),
) -> None:
    """Serve the SchedCP tools over the Model Context Protocol (no root needed)."""
    from schedcp.server import clientconfig
    from schedcp.server import http as http_mod

    try:
        endpoint = http_mod.parse_endpoint(http) if http else None
        if print_config is not None:
            sys.stdout.write(json.dumps(clientconfig.config_for(print_config, endpoint), indent=2) + "\n")
            return
        if endpoint is not None:
            token = http_mod.check_token(token, endpoint)
        _serve(endpoint, token, daemon_socket, vm_queue, allow_host, call_log)
    except SchedcpError as exc:
        raise fail(exc) from None


def _serve(
    endpoint,
    token: str | None,
    daemon_socket: Path | None,
    vm_queue: int,
    allow_host: list[str] | None = None,
    call_log: Path | None = None,
) -> None:
    from schedcp.server import http as http_mod
    from schedcp.server.app import build_server
    from schedcp.services.state import ServerOptions, ServerState

    if os.geteuid() == 0:
        err_console.print(
            "[yellow]note:[/] schedcp mcp needs no root; privileged work goes through the daemon", highlight=False
        )
    state = ServerState(ServerOptions(daemon_socket=daemon_socket, vm_queue=vm_queue, call_log=call_log))
    server = build_server(state)
    if endpoint is None:
        from schedcp.server import stdio

        stdio.run(server)
        return
    assert token is not None  # check_token refused to go on without one
    err_console.print(f"schedcp MCP server at {endpoint.url} (token required)", highlight=False)
    http_mod.serve(server, endpoint, token, allow_host or [])


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp)
