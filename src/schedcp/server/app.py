# SPDX-License-Identifier: Apache-2.0
"""Assemble the SchedCP MCP server: tools, resources, subscriptions, one error convention.

The tool set is the stable API agents program against; names do not change. The deployment tools
(``deploy_scheduler``, ``deployment_status``, ``rollback``) reach the daemon's deploy path, with the
same checks as ``schedcp deploy`` (``schedcp.services.deploy``). Every tool is a service-layer
operation (``schedcp.services.operation.registry``); this module adds no tool of its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.subscriptions import InMemorySubscriptionBus
from mcp_types import CallToolResult, InputRequiredResult

from schedcp import __version__
from schedcp.server import resources
from schedcp.server.budget import error_result
from schedcp.server.calllog import CallLog
from schedcp.server.events import Notifier
from schedcp.server.tooling import failure
from schedcp.services.state import ServerOptions, ServerState

DEPLOY_TOOL_NAMES = ("deploy_scheduler", "deployment_status", "rollback")

INSTRUCTIONS = """\
SchedCP lets you observe workloads, find or write sched_ext CPU schedulers, verify them and try
them in a disposable micro-VM, without root. Start cheap and ask for detail only when needed:
workload_summary -> workload_profile -> run_probe. Look for an existing policy before writing one:
best_config, list_antipatterns, search_schedulers, get_scheduler, list_primitives. Check new code
with verify_scheduler (a pass returns a deployment token id), measure it with run_in_vm against the
default EEVDF scheduler, and record what you learned with record_result. To optimise one workload
over several candidates, hold one boot: start_testbed, observe it (testbed_id), then per candidate
check_candidate -> build_scheduler -> run_trial -> record_result(trial_id), and stop_testbed.
Every answer is compact JSON within max_bytes (default 4096); a 'truncated' field says what was cut
and how to get more. Errors say what went wrong and what to do next."""


class SchedcpMCP(MCPServer):
    """MCPServer with our argument and error conventions applied to every tool call."""

    def __init__(self, state: ServerState, tools: list[Tool], **kwargs: Any) -> None:
        self.schedcp_state = state
        self.notifier = Notifier()  # resource-updated notifications for the state's event logs
        state.events.listen(self.notifier)
        self._tools = {t.name: t for t in tools}
        self.call_log = CallLog(state.options.call_log)
        super().__init__(tools=tools, **kwargs)

    async def call_tool(
        self,
        name: str,
        arguments: dict[str, Any],
        context: Context | None = None,
    ) -> CallToolResult | InputRequiredResult:
        """Every call, refused or not, is logged (see calllog.py)."""
        started = time.monotonic()
        result = await self._call_tool(name, arguments, context)
        self.call_log.record(name, arguments if isinstance(arguments, dict) else {}, result, started)
        return result

    async def _call_tool(
        self, name: str, arguments: dict[str, Any], context: Context | None
    ) -> CallToolResult | InputRequiredResult:
        tool = self._tools.get(name)
        if tool is None:
            return error_result(
                f"there is no tool named {name!r}", f"use one of: {', '.join(sorted(self._tools))}", "unknown_tool"
            )
        if not isinstance(arguments, dict):
            return error_result("arguments must be a JSON object", "pass named arguments", "invalid_arguments")
        allowed = set(tool.parameters.get("properties", {}))
        unknown = sorted(set(arguments) - allowed)
        if unknown:
            shown = ", ".join(repr(k[:40]) for k in unknown[:5])
            return error_result(
                f"{name} has no argument(s) {shown}",
                f"valid arguments: {', '.join(sorted(allowed)) or 'none'}",
                "invalid_arguments",
            )
        try:
            return await super().call_tool(name, arguments, context)
        except ToolError as exc:
            return failure(name, exc)


def build_server(state: ServerState | None = None) -> SchedcpMCP:
    from schedcp.server.tools import all_tools

    state = state or ServerState(ServerOptions())
    bus = InMemorySubscriptionBus()

    @asynccontextmanager
    async def lifespan(_server: MCPServer) -> AsyncIterator[dict[str, Any]]:
        server.notifier.bind(asyncio.get_running_loop(), bus)
        try:
            yield {}
        finally:
            state.close()

    server = SchedcpMCP(
        state,
        all_tools(state),
        name="schedcp",
        title="SchedCP",
        version=__version__,
        instructions=INSTRUCTIONS,
        description="Observe workloads, find, verify and trial sched_ext CPU schedulers, safely and without root.",
        lifespan=lifespan,
        subscriptions=bus,
        log_level="WARNING",
        warn_on_duplicate_tools=True,
    )
    resources.register(server, state, server.notifier)
    return server
