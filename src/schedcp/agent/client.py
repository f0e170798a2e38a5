# SPDX-License-Identifier: Apache-2.0
"""sched-agent's only door to SchedCP: an MCP client session, used synchronously.

    with SchedcpClient.in_memory() as c:            # `schedcp optimize`: a server in this process
    with SchedcpClient.stdio(["schedcp", "mcp"]) as c:   # or a remote one, over stdio ...
    with SchedcpClient.http(url, token) as c:        # ... or streamable HTTP
        reply = c.call("search_schedulers", {"query": "batch makespan"})

Whatever the transport, the agents speak JSON-RPC through the official SDK's ``Client`` with the
tool names and schemas any outside agent sees. The agents are synchronous code, so the session
lives in an event loop on a background thread (anyio's blocking portal) and ``call`` waits for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, ExitStack
from dataclasses import dataclass
from typing import Any

from schedcp.errors import SchedcpError, UsageError

CALL_TIMEOUT_S = 3600.0  # a trial of three rounds of a long workload under TCG stays well below this


@dataclass
class ToolReply:
    """One tool call's answer: the text the agent reads, its JSON, and the error it carries, if any."""

    name: str
    text: str
    is_error: bool
    data: dict[str, Any] | None

    def error(self) -> SchedcpError:
        """The server's 'error (CODE): cause / next: step' as a SchedcpError."""
        head, _, rest = self.text.partition("\n")
        code, cause = "error", head
        if head.startswith("error (") and ")" in head:
            code, _, cause = head[len("error (") :].partition("): ")
        step = rest.removeprefix("next: ") if rest.startswith("next: ") else rest
        return SchedcpError(cause.strip() or f"{self.name} failed", step.strip(), code=code or "error")

    def value(self) -> dict[str, Any]:
        if self.is_error:
            raise self.error()
        if self.data is None:
            raise SchedcpError(f"{self.name} answered with something that is not JSON", "report this", code="internal")
        return self.data


@dataclass
class ToolSpec:
    name: str
    description: str
    input_schema: dict[str, Any]


class SchedcpClient:
    def __init__(
        self, connect: Callable[[], AbstractAsyncContextManager[Any]], *, where: str, state: Any = None
    ) -> None:
        self._connect = connect
        self.where = where  # "in-memory", "stdio: ...", "http: URL"
        self.state = state  # the in-process server's ServerState (in-memory only)
        self._stack: ExitStack | None = None
        self._portal: Any = None
        self._client: Any = None
        self._tools: dict[str, ToolSpec] | None = None
        self.calls = 0

    # -- transports ---------------------------------------------------------------------------------
    @classmethod
    def in_memory(cls, server: Any, state: Any = None) -> SchedcpClient:
        """A SchedCP server object in this process (the caller builds it: `schedcp optimize` does),
        reached over the SDK's in-memory transport: real JSON-RPC messages, no sockets."""
        from mcp import Client

        return cls(lambda: Client(server, mode="legacy"), where="in-memory", state=state)

    @classmethod
    def stdio(cls, argv: list[str], env: dict[str, str] | None = None) -> SchedcpClient:
        from mcp import Client, StdioServerParameters

        if not argv:
            raise UsageError("the server command is empty", "e.g. --server 'schedcp mcp'")
        params = StdioServerParameters(command=argv[0], args=argv[1:], env=env)
        return cls(lambda: Client(params, mode="legacy"), where=f"stdio: {' '.join(argv)[:80]}")

    @classmethod
    def http(cls, url: str, token: str | None = None) -> SchedcpClient:
        from contextlib import asynccontextmanager

        from mcp import Client
        from mcp.client.streamable_http import streamable_http_client
        from mcp.shared._httpx_utils import create_mcp_http_client

        @asynccontextmanager
        async def connect() -> Any:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            async with (
                create_mcp_http_client(headers=headers) as http,
                Client(streamable_http_client(url, http_client=http), mode="legacy") as client,
            ):
                yield client

        return cls(connect, where=f"http: {url}")

    @classmethod
    def remote(cls, server: str) -> SchedcpClient:
        """``http(s)://...``: streamable HTTP (token from SCHEDCP_MCP_TOKEN); anything else: a command
        that serves MCP on stdio, e.g. 'schedcp mcp' or 'ssh host schedcp mcp'."""
        import os
        import shlex

        if server.startswith(("http://", "https://")):
            return cls.http(server, os.environ.get("SCHEDCP_MCP_TOKEN") or None)
        return cls.stdio(shlex.split(server))

    # -- lifecycle ----------------------------------------------------------------------------------
    def open(self) -> SchedcpClient:
        from anyio.from_thread import start_blocking_portal

        if self._stack is not None:
            return self
        stack = ExitStack()
        try:
            self._portal = stack.enter_context(start_blocking_portal())
            self._client = stack.enter_context(self._portal.wrap_async_context_manager(self._connect()))
        except BaseException as exc:
            stack.close()
            if isinstance(exc, SchedcpError):
                raise
            raise SchedcpError(
                f"could not open an MCP session with SchedCP ({self.where}): {type(exc).__name__}: {exc}"[:400],
                "check the --server command or URL; `schedcp mcp` must start there",
                code="mcp_connect",
            ) from exc
        self._stack = stack
        return self

    def close(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def __enter__(self) -> SchedcpClient:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls --------------------------------------------------------------------------------------
    def tools(self) -> dict[str, ToolSpec]:
        """tools/list, once per session."""
        if self._tools is None:
            self.open()
            listed = self._portal.call(self._client.list_tools)
            self._tools = {
                t.name: ToolSpec(t.name, t.description or "", dict(t.input_schema or {})) for t in listed.tools
            }
        return self._tools

    def call(self, name: str, arguments: dict[str, Any]) -> ToolReply:
        """tools/call; a failed call is a reply with is_error, never an exception (the transport
        failing is one: SchedcpError code mcp_transport)."""
        import anyio

        self.open()

        async def go() -> Any:
            with anyio.fail_after(CALL_TIMEOUT_S):
                return await self._client.call_tool(name, arguments)

        try:
            result = self._portal.call(go)
        except Exception as exc:
            raise SchedcpError(
                f"the MCP call {name} failed in transport ({self.where}): {type(exc).__name__}: {exc}"[:400],
                "is the SchedCP server still running? see its log",
                code="mcp_transport",
            ) from exc
        self.calls += 1
        text = "".join(getattr(c, "text", "") for c in result.content or [])
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        return ToolReply(name, text, bool(result.is_error), data if isinstance(data, dict) else None)

    @property
    def repository_path(self) -> str | None:
        """Where results went, when the server runs in this process and opened its repository."""
        repo = self.state.opened("repository") if self.state is not None else None
        return str(repo.store.path) if repo is not None else None
