# SPDX-License-Identifier: Apache-2.0
"""A model that replays a script, through a real backend's request and response code.

    model = ScriptedModel([
        Turn(calls=[("workload_summary", {})]),
        lambda request: Turn(calls=[("submit_profile", {...})]),   # may look at what was sent
    ], flavor="anthropic")

Each turn is encoded as the provider's JSON (an Anthropic message or an OpenAI chat completion)
and served by an ``httpx2.MockTransport`` to an ordinary ``AnthropicModel``/``OpenAIModel``, whose
official SDK client sends the request; so the request building, the SDK's HTTP handling (status
codes, retries) and the response parsing that run in tests are the ones that run against the real
API. ``requests`` keeps every payload sent. Error turns ask the SDK to retry after 1 ms
(``retry-after-ms``) unless the turn sets its own headers, so retry tests do not sleep.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx2

from schedcp.agent.llm import ChatResponse, Message, ToolDef
from schedcp.agent.llm.sdk import Settings
from schedcp.errors import SchedcpError

Flavor = Literal["anthropic", "openai"]


@dataclass
class Turn:
    """One scripted reply. ``calls`` items are (tool name, arguments); arguments given as a string
    are sent verbatim (to script malformed JSON). ``status`` other than 200 sends an error body."""

    text: str = ""
    calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    input_tokens: int | None = None  # None: estimated from the request size
    output_tokens: int | None = None
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    status: int = 200
    error: str = "scripted error"
    headers: dict[str, str] = field(default_factory=dict)


Step = Turn | Callable[[dict[str, Any]], Turn]


class ScriptExhausted(SchedcpError):
    def __init__(self, n: int) -> None:
        super().__init__(
            f"the scripted model ran out of turns after {n}",
            "add turns to the script (the agent asked for more than the test expected)",
            code="script_exhausted",
        )


def _maybe_json(args: dict[str, Any] | str) -> Any:
    if not isinstance(args, str):
        return args
    try:
        return json.loads(args)
    except ValueError:
        return args


def _encode_anthropic(turn: Turn, ids: itertools.count, usage: dict[str, int]) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if turn.text:
        content.append({"type": "text", "text": turn.text})
    for name, args in turn.calls:
        # The Messages API always sends an object; a string here scripts a malformed input.
        content.append({"type": "tool_use", "id": f"toolu_{next(ids):04d}", "name": name, "input": _maybe_json(args)})
    return {
        "id": f"msg_{next(ids):04d}",
        "type": "message",
        "role": "assistant",
        "model": "scripted",
        "content": content,
        "stop_reason": "tool_use" if turn.calls else "end_turn",
        "stop_sequence": None,
        "usage": {
            "input_tokens": usage["in"],
            "output_tokens": usage["out"],
            "cache_read_input_tokens": turn.cache_read_tokens,
            "cache_creation_input_tokens": turn.cache_write_tokens,
        },
    }


def _encode_openai(turn: Turn, ids: itertools.count, usage: dict[str, int]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": turn.text or None}
    if turn.calls:
        message["tool_calls"] = [
            {
                "id": f"call_{next(ids):04d}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for name, args in turn.calls
        ]
    return {
        "id": f"chatcmpl-{next(ids):04d}",
        "object": "chat.completion",
        "model": "scripted",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if turn.calls else "stop"}],
        "usage": {
            "prompt_tokens": usage["in"],
            "completion_tokens": usage["out"],
            "total_tokens": usage["in"] + usage["out"],
            "prompt_tokens_details": {"cached_tokens": turn.cache_read_tokens},
        },
    }


class ScriptedModel:
    """A ChatModel for tests and offline replays; see the module docstring."""

    offline = True

    def __init__(self, script: list[Step], flavor: Flavor = "anthropic", *, max_attempts: int = 3) -> None:
        self.script = list(script)
        self.flavor = flavor
        self.requests: list[dict[str, Any]] = []
        self.name = f"scripted:{flavor}"
        self._next = 0
        self._ids = itertools.count(1)
        transport = httpx2.MockTransport(self._serve)
        settings = Settings(timeout_s=5.0, max_retries=max_attempts - 1)
        if flavor == "anthropic":
            from schedcp.agent.llm.anthropic import AnthropicModel

            self.backend: Any = AnthropicModel(
                "scripted",
                api_key="test-key",
                base_url="http://scripted.invalid",
                transport=transport,
                settings=settings,
            )
        else:
            from schedcp.agent.llm.openai import OpenAIModel

            self.backend = OpenAIModel(
                "scripted",
                api_key="test-key",
                base_url="http://scripted.invalid/v1",
                transport=transport,
                settings=settings,
            )

    @property
    def remaining(self) -> int:
        return len(self.script) - self._next

    @property
    def attempts(self) -> int:
        return int(self.backend.attempts)

    def _serve(self, request: httpx2.Request) -> httpx2.Response:
        payload = json.loads(request.content)
        self.requests.append(payload)
        if self._next >= len(self.script):
            # Answer like a provider would, so the backend raises its ordinary error path.
            return httpx2.Response(
                400,
                json={"error": {"type": "script_exhausted", "message": f"no scripted turn left after {self._next}"}},
            )
        step = self.script[self._next]
        self._next += 1
        turn = step(payload) if callable(step) else step
        if turn.status != 200:
            kind = {429: "rate_limit_error", 401: "authentication_error"}.get(turn.status, "api_error")
            return httpx2.Response(
                turn.status,
                headers=turn.headers or {"retry-after-ms": "1"},
                json={"type": "error", "error": {"type": kind, "message": turn.error}},
            )
        usage = {
            "in": turn.input_tokens if turn.input_tokens is not None else max(1, len(request.content) // 4),
            "out": turn.output_tokens
            if turn.output_tokens is not None
            else max(1, (len(turn.text) + len(json.dumps(turn.calls))) // 4),
        }
        encode = _encode_anthropic if self.flavor == "anthropic" else _encode_openai
        return httpx2.Response(200, json=encode(turn, self._ids, usage))

    def chat(
        self, system: str, messages: list[Message], tools: list[ToolDef], *, max_tokens: int = 2048
    ) -> ChatResponse:
        try:
            return self.backend.chat(system, messages, tools, max_tokens=max_tokens)
        except SchedcpError as exc:
            if "script_exhausted" in exc.cause:
                raise ScriptExhausted(self._next) from exc
            raise

    def close(self) -> None:
        self.backend.close()
