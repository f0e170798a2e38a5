# SPDX-License-Identifier: Apache-2.0
"""Event logs behind resources, and the notifications that tell clients to re-read them.

Each topic (a workload watch, the circuit breaker) is a bounded log exposed as a resource such as
``schedcp://events/breaker``. Publishing an event appends to the log and sends a resource-updated
notification to every client that subscribed to that resource, over both protocol eras the SDK
speaks: ``subscriptions/listen`` streams (2026-07-28) through the server's subscription bus, and
``resources/subscribe`` sessions (2025 clients such as today's Claude Code) directly. The
notification carries only the URI; the client reads the resource to get the events, so a slow or
absent client never makes the server buffer more than the log holds.

``publish`` is safe to call from any thread: analysis callbacks and the deploy path's breaker run
outside the server's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from typing import Any

from mcp.server.subscriptions import ResourceUpdated, SubscriptionBus

log = logging.getLogger("schedcp.server.events")

URI_PREFIX = "schedcp://events/"
BREAKER_TOPIC = "breaker"
MAX_EVENTS_PER_TOPIC = 200
MAX_TOPICS = 256


def topic_uri(topic: str) -> str:
    return URI_PREFIX + topic


class EventHub:
    def __init__(self, max_events: int = MAX_EVENTS_PER_TOPIC) -> None:
        self._lock = threading.Lock()
        self._logs: dict[str, deque[dict[str, Any]]] = {}
        self._seq: dict[str, int] = {}
        self._max = max_events
        self._loop: asyncio.AbstractEventLoop | None = None
        self._bus: SubscriptionBus | None = None
        self._sessions: dict[str, list[Any]] = {}  # uri -> legacy ServerSession objects

    # -- wiring ------------------------------------------------------------------------------
    def bind(self, loop: asyncio.AbstractEventLoop, bus: SubscriptionBus) -> None:
        """Called once the server's event loop runs; before that, events are only logged."""
        self._loop = loop
        self._bus = bus

    def open_topic(self, topic: str) -> str:
        with self._lock:
            if topic not in self._logs:
                if len(self._logs) >= MAX_TOPICS:
                    # Forget the topic that has been quiet longest; its watch is long abandoned.
                    oldest = min(self._logs, key=lambda t: self._logs[t][-1]["time"] if self._logs[t] else 0.0)
                    self._drop_locked(oldest)
                self._logs[topic] = deque(maxlen=self._max)
                self._seq[topic] = 0
        return topic_uri(topic)

    def close_topic(self, topic: str) -> None:
        with self._lock:
            self._drop_locked(topic)

    def _drop_locked(self, topic: str) -> None:
        self._logs.pop(topic, None)
        self._seq.pop(topic, None)
        self._sessions.pop(topic_uri(topic), None)

    def has_topic(self, topic: str) -> bool:
        with self._lock:
            return topic in self._logs

    # -- publishing --------------------------------------------------------------------------
    def publish(self, topic: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if topic not in self._logs:
                self._logs[topic] = deque(maxlen=self._max)
                self._seq[topic] = 0
            self._seq[topic] += 1
            event = {"seq": self._seq[topic], "time": round(time.time(), 3), "kind": kind, "data": data}
            self._logs[topic].append(event)
        self._schedule(topic_uri(topic))
        return event

    def breaker_tripped(self, **info: Any) -> dict[str, Any]:
        """The hook the deploy path calls when a circuit breaker reverts a deployment."""
        return self.publish(BREAKER_TOPIC, "breaker_tripped", info)

    def read(self, topic: str, since: int = 0, limit: int = 50) -> dict[str, Any]:
        with self._lock:
            events = [e for e in self._logs.get(topic, ()) if e["seq"] > since]
            last = self._seq.get(topic, 0)
        return {
            "uri": topic_uri(topic),
            "last_seq": last,
            "events": events[-limit:],
            "omitted": max(0, len(events) - limit),
        }

    # -- delivery ----------------------------------------------------------------------------
    def _schedule(self, uri: str) -> None:
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
