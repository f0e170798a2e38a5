# SPDX-License-Identifier: Apache-2.0
"""Telling MCP clients that an event log changed: the server's listener on ``state.events``.

The logs themselves (topics, bounds, publishing from any thread) are the service layer's
(``schedcp.services.events``). This listener turns each new event into a resource-updated
notification to every client that subscribed to that resource, over both protocol eras the SDK
speaks: ``subscriptions/listen`` streams (2026-07-28) through the server's subscription bus, and
``resources/subscribe`` sessions (2025 clients such as today's Claude Code) directly. The
notification carries only the URI; the client reads the resource to get the events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus

log = logging.getLogger("schedcp.server.events")


class Notifier:
    """An ``EventListener`` that delivers on the server's event loop, from whichever thread published."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bus: SubscriptionBus | None = None
        self._sessions: dict[str, list[Any]] = {}  # uri -> legacy ServerSession objects

    def bind(self, loop: asyncio.AbstractEventLoop, bus: SubscriptionBus) -> None:
        """Called once the server's event loop runs; before that, events are only logged."""
        self._loop = loop
        self._bus = bus

    # -- EventListener ---------------------------------------------------------------------------
    def updated(self, uri: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            loop.create_task(self._deliver(uri))
        else:
            asyncio.run_coroutine_threadsafe(self._deliver(uri), loop)

    def dropped(self, uri: str) -> None:
        with self._lock:
            self._sessions.pop(uri, None)

    async def _deliver(self, uri: str) -> None:
        if self._bus is not None:
            await self._bus.publish(ResourceUpdated(uri=uri))
        with self._lock:
            sessions = list(self._sessions.get(uri, ()))
        for session in sessions:
            try:
                await session.send_resource_updated(uri)
            except Exception as exc:  # a gone client must not stop delivery to the others
                log.info("dropping a resource subscriber of %s: %s", uri, exc)
                self.unsubscribe_session(uri, session)

    # -- legacy resources/subscribe ------------------------------------------------------------
    def subscribe_session(self, uri: str, session: Any) -> None:
        key = _connection_of(session)
        with self._lock:
            subscribers = self._sessions.setdefault(uri, [])
            if not any(_connection_of(s) is key for s in subscribers):
                subscribers.append(session)

    def unsubscribe_session(self, uri: str, session: Any) -> None:
        key = _connection_of(session)
        with self._lock:
            subscribers = self._sessions.get(uri, [])
            self._sessions[uri] = [s for s in subscribers if _connection_of(s) is not key]


def _connection_of(session: Any) -> Any:
    """The client connection behind a per-request ServerSession.

    The SDK builds a new ServerSession for every request, so two requests of one client are told
    apart from two clients only by the connection object they share (a private attribute in SDK
    2.x; falling back to the session itself keeps this working if it moves).
    """
    return getattr(session, "_connection", session)
