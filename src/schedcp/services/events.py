# SPDX-License-Identifier: Apache-2.0
"""Event logs of one serving process: workload watches and the circuit breaker, as bounded topics.

Each topic (``watch/{id}``, ``breaker``) is a bounded log an agent reads as a resource such as
``schedcp://events/breaker``. Operations publish to it (``watch_workload``'s watcher, the deploy
path's breaker hook); how a client hears that a log changed is the face's business: the MCP server
attaches a listener that sends resource-updated notifications (``schedcp.server.events``). The log
holds at most ``max_events`` per topic and ``MAX_TOPICS`` topics, so an absent client never makes
the process buffer more.

``publish`` is safe to call from any thread: analysis callbacks and the deploy path's breaker run
outside any event loop.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from typing import Any, Protocol

URI_PREFIX = "schedcp://events/"
BREAKER_TOPIC = "breaker"
MAX_EVENTS_PER_TOPIC = 200
MAX_TOPICS = 256


def topic_uri(topic: str) -> str:
    return URI_PREFIX + topic


class EventListener(Protocol):
    """Told (by URI) when a topic got an event and when a topic went away; must not block."""

    def updated(self, uri: str) -> None: ...
    def dropped(self, uri: str) -> None: ...


class EventHub:
    def __init__(self, max_events: int = MAX_EVENTS_PER_TOPIC) -> None:
        self._lock = threading.Lock()
        self._logs: dict[str, deque[dict[str, Any]]] = {}
        self._seq: dict[str, int] = {}
        self._max = max_events
        self._listeners: list[EventListener] = []

    def listen(self, listener: EventListener) -> None:
        with self._lock:
            self._listeners.append(listener)

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
        for listener in self._listeners:
            listener.dropped(topic_uri(topic))

    def has_topic(self, topic: str) -> bool:
        with self._lock:
            return topic in self._logs

    def publish(self, topic: str, kind: str, data: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if topic not in self._logs:
                self._logs[topic] = deque(maxlen=self._max)
                self._seq[topic] = 0
            self._seq[topic] += 1
            event = {"seq": self._seq[topic], "time": round(time.time(), 3), "kind": kind, "data": data}
            self._logs[topic].append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            listener.updated(topic_uri(topic))
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
