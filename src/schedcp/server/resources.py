# SPDX-License-Identifier: Apache-2.0
"""Resources: the full documents behind tool summaries, and the event logs clients subscribe to.

    schedcp://scheduler/{name}/source   C source of a repository or library scheduler
    schedcp://report/{report_id}        a complete verification report (JSON)
    schedcp://profile/{profile_id}      a complete workload profile (JSON)
    schedcp://run/{run_id}              a complete run_in_vm result, with outputs (JSON)
    schedcp://events/breaker            circuit-breaker trips of deployments (JSON event log)
    schedcp://events/watch/{watch_id}   events of one workload watch (JSON event log)

Documents never change once written; only ``schedcp://events/...`` resources do, and those are the
ones a client may subscribe to.
"""

from __future__ import annotations

import json
import re
from typing import Any

from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from schedcp.errors import SchedcpError
from schedcp.server.events import Notifier
from schedcp.services.artifacts import check_id
from schedcp.services.events import BREAKER_TOPIC, URI_PREFIX
from schedcp.services.state import ServerState

_WATCH_ID = re.compile(r"^w-[0-9a-f]{8,32}$")


def scheduler_source(state: ServerState, name: str) -> str:
    """The source resource: the service's lookup, its refusal as MCP's "not found"."""
    from schedcp.services.repository import scheduler_source as lookup

    try:
        return lookup(state, name)
    except SchedcpError as exc:
        raise ResourceNotFoundError(exc.cause) from None


def _document(state: ServerState, kind: str, artifact_id: str) -> str:
    try:
        check_id(artifact_id)
    except SchedcpError as exc:
        raise ResourceNotFoundError(exc.cause) from None
    doc = state.artifacts.get(kind, artifact_id)
    if doc is None:
        raise ResourceNotFoundError(f"no {kind} with id {artifact_id!r} (ids come from tool answers; old ones expire)")
    return json.dumps(doc, indent=1, default=str)


def register(server: MCPServer, state: ServerState, notifier: Notifier) -> None:
    @server.resource(
        "schedcp://scheduler/{name}/source",
        name="scheduler_source",
        mime_type="text/x-c",
        description="C source of a scheduler in the repository or the shipped library.",
    )
    def _source(name: str) -> str:
        return scheduler_source(state, name)

    @server.resource(
        "schedcp://report/{report_id}",
        name="verification_report",
        mime_type="application/json",
        description="The complete verification report behind a verify_scheduler answer.",
    )
    def _report(report_id: str) -> str:
        return _document(state, "report", report_id)

    @server.resource(
        "schedcp://profile/{profile_id}",
        name="workload_profile",
        mime_type="application/json",
        description="The complete workload profile behind a workload_profile answer.",
    )
    def _profile(profile_id: str) -> str:
        return _document(state, "profile", profile_id)

    @server.resource(
        "schedcp://run/{run_id}",
        name="vm_run",
        mime_type="application/json",
        description="The complete run_in_vm result, including the workload's output.",
    )
    def _run(run_id: str) -> str:
        return _document(state, "run", run_id)

    @server.resource(
        URI_PREFIX + BREAKER_TOPIC,
        name="breaker_events",
        mime_type="application/json",
        description="Circuit-breaker trips: a deployment reverted because the workload got worse. "
        "Subscribe to be notified.",
    )
    def _breaker() -> str:
        return json.dumps(state.events.read(BREAKER_TOPIC))

    @server.resource(
        URI_PREFIX + "watch/{watch_id}",
        name="watch_events",
        mime_type="application/json",
        description="Events of one workload watch (workload appeared, phase change). Subscribe to be "
        "notified; each notification means new events are here.",
    )
    def _watch(watch_id: str) -> str:
        topic = f"watch/{watch_id}"
        if not _WATCH_ID.match(watch_id) or not state.events.has_topic(topic):
            raise ResourceNotFoundError(f"no active watch {watch_id!r} in this server (watches end with the server)")
        return json.dumps(state.events.read(topic))

    _register_legacy_subscriptions(server, notifier)


def _register_legacy_subscriptions(server: MCPServer, notifier: Notifier) -> None:
    """resources/subscribe for 2025-era clients; 2026 clients use subscriptions/listen instead.

    MCPServer serves subscriptions/listen itself but has no public hook for the older
    resources/subscribe request, so it is added on the low-level server it wraps.
    """

    def _check(uri: str) -> str:
        if not uri.startswith(URI_PREFIX):
            raise MCPError(INVALID_PARAMS, f"{uri} never changes; only {URI_PREFIX}... resources can be subscribed to")
        return uri

    async def subscribe(ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
        notifier.subscribe_session(_check(str(params.uri)), ctx.session)
        return EmptyResult()

    async def unsubscribe(ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
        notifier.unsubscribe_session(str(params.uri), ctx.session)
        return EmptyResult()

    lowlevel = server._lowlevel_server
    lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
    lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)
