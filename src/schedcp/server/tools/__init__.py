# SPDX-License-Identifier: Apache-2.0
"""The tool set, one module per service. Names are a stable API; see schedcp.server.app."""

from __future__ import annotations

from mcp.server.mcpserver.tools import Tool

from schedcp.server.state import ServerState


def all_tools(state: ServerState) -> list[Tool]:
    from schedcp.server.tools import analysis, deploy, operations, repository, testbed, verifier

    out: list[Tool] = []
    for module in (analysis, repository, verifier, testbed, operations, deploy):
        out.extend(module.tools(state))
    return out
