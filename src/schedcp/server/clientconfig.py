# SPDX-License-Identifier: Apache-2.0
"""Ready-to-paste MCP client configuration pointing at this installation.

    schedcp mcp --print-config claude-code      # .mcp.json (project) for Claude Code
    schedcp mcp --print-config claude-desktop   # claude_desktop_config.json
    schedcp mcp --print-config cursor           # .cursor/mcp.json
    schedcp mcp --print-config generic          # command/args/env for any stdio client

With ``--http HOST:PORT`` the entries point at the streamable HTTP endpoint instead, with the token
taken from the SCHEDCP_MCP_TOKEN environment variable at the client side (never written out).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from schedcp.errors import UsageError
from schedcp.server.http import Endpoint

CLIENTS = ("claude-code", "claude-desktop", "cursor", "generic")
SERVER_NAME = "schedcp"
# Settings a client-launched server should inherit from the shell that printed the config.
PASSED_ENV = (
    "SCHEDCP_DATA_DIR",
    "SCHEDCP_CACHE_DIR",
    "SCHEDCP_REPO_DB",
    "SCHEDCP_DAEMON_SOCKET",
    "SCHEDCP_RUNTIME_DIR",
)


def executable() -> tuple[str, list[str]]:
    """This install's ``schedcp`` console script, or the interpreter running our CLI module."""
    beside = Path(sys.executable).with_name("schedcp")
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside), ["mcp"]
    return str(Path(sys.executable).resolve()), ["-m", "schedcp.cli.main", "mcp"]


def stdio_entry() -> dict[str, Any]:
    command, args = executable()
    env = {k: os.environ[k] for k in PASSED_ENV if os.environ.get(k)}
    return {"command": command, "args": args, "env": env}


def config_for(client: str, endpoint: Endpoint | None = None) -> dict[str, Any]:
    if client not in CLIENTS:
        raise UsageError(f"unknown client {client!r}", f"use one of: {', '.join(CLIENTS)}")
    if endpoint is None:
        entry = stdio_entry()
        if client == "claude-code":
            return {"mcpServers": {SERVER_NAME: {"type": "stdio", **entry}}}
        if client in ("claude-desktop", "cursor"):
            return {"mcpServers": {SERVER_NAME: entry}}
        return {"name": SERVER_NAME, "transport": "stdio", **entry}
    auth = {"Authorization": "Bearer ${SCHEDCP_MCP_TOKEN}"}
    if client == "claude-code":
        return {"mcpServers": {SERVER_NAME: {"type": "http", "url": endpoint.url, "headers": auth}}}
    if client == "cursor":  # Cursor spells environment references ${env:NAME}
        return {
            "mcpServers": {
                SERVER_NAME: {"url": endpoint.url, "headers": {"Authorization": "Bearer ${env:SCHEDCP_MCP_TOKEN}"}}
            }
        }
    if client == "claude-desktop":
        raise UsageError(
            "claude_desktop_config.json only launches local stdio servers",
            "drop --http: Claude Desktop starts `schedcp mcp` itself",
        )
    return {"name": SERVER_NAME, "transport": "streamable-http", "url": endpoint.url, "headers": auth}
