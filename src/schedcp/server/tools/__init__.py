# SPDX-License-Identifier: Apache-2.0
"""The tool set: every service-layer operation as an MCP tool. Names are a stable API; see schedcp.server.app."""

from __future__ import annotations

from mcp.server.mcpserver.tools import Tool

from schedcp.services.state import ServerState


def all_tools(state: ServerState) -> list[Tool]:
    from schedcp.server.tools import operations

    return operations.tools(state)
