# SPDX-License-Identifier: Apache-2.0
"""One chat-model interface for every agent, whatever answers behind it.

    model = make_model("anthropic:claude-sonnet-4-5")      # or "openai:gpt-4.1", "openai" (OPENAI_BASE_URL)
    reply = model.chat(system, [Message.user("...")], tools=[ToolDef(...)], max_tokens=2048)
    reply.text, reply.tool_calls, reply.usage

Messages and tool calls are provider-neutral here; each backend translates them to its provider's
request and sends it with the provider's official SDK (``anthropic``, ``openai``), which owns the
HTTP: timeouts, retries with backoff and Retry-After, typed errors. The scripted model used by
tests serves provider-shaped JSON to those same SDK clients through a mock HTTP transport, so what
the tests drive is what runs against a real API.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from schedcp.errors import SchedcpError, UsageError

Role = Literal["user", "assistant", "tool"]


@dataclass(frozen=True)
class ToolDef:
    """A tool as the model sees it: a name, what it is for, and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass
class ToolCall:
    """A request from the model to call a tool.

    ``arguments`` is None when the model sent something that is not a JSON object; ``raw_arguments``
    keeps the original text so the conversation can be replayed to the provider exactly.
    """

    id: str
    name: str
    arguments: dict[str, Any] | None
    raw_arguments: str = ""
    parse_error: str | None = None


@dataclass
class Message:
    role: Role
    text: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)  # assistant turns only
    tool_call_id: str | None = None  # tool results only
    is_error: bool = False  # tool results only

    @classmethod
    def user(cls, text: str) -> Message:
        return cls("user", text)

    @classmethod
    def assistant(cls, text: str, tool_calls: list[ToolCall] | None = None) -> Message:
        return cls("assistant", text, list(tool_calls or []))

    @classmethod
    def tool_result(cls, call_id: str, text: str, is_error: bool = False) -> Message:
        return cls("tool", text, tool_call_id=call_id, is_error=is_error)


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    def add(self, other: Usage) -> None:
        self.input_tokens += other.input_tokens
        self.output_tokens += other.output_tokens
        self.cache_read_tokens += other.cache_read_tokens
        self.cache_write_tokens += other.cache_write_tokens

    def as_dict(self) -> dict[str, int]:
        return {
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cache_read_tokens": self.cache_read_tokens,
            "cache_write_tokens": self.cache_write_tokens,
        }


@dataclass
class ChatResponse:
    text: str
    tool_calls: list[ToolCall]
    usage: Usage
    stop_reason: str  # "tool_use", "end", "max_tokens", or the provider's own word
    model: str
    request_bytes: int = 0
    response_bytes: int = 0


class ProviderError(SchedcpError):
    """A failed model call; ``status`` is the HTTP status (0 for transport failures)."""

    def __init__(self, cause: str, next_step: str, *, status: int, code: str = "llm_error") -> None:
        super().__init__(cause, next_step, code=code)
        self.status = status


class ChatModel(Protocol):
    """What an agent needs from a model. ``name`` is "provider:model" for reports."""

    name: str
    offline: bool

    def chat(
        self, system: str, messages: list[Message], tools: list[ToolDef], *, max_tokens: int = 2048
    ) -> ChatResponse: ...


DEFAULT_MODELS = {"anthropic": "claude-sonnet-4-5", "openai": "gpt-4.1"}
PROVIDERS = ("builtin", "anthropic", "openai")


def parse_spec(spec: str) -> tuple[str, str | None]:
    """'builtin' | 'anthropic[:MODEL]' | 'openai[:MODEL]' -> (provider, model or None)."""
    provider, _, model = (spec or "builtin").strip().partition(":")
    provider = provider.lower()
    if provider not in PROVIDERS:
        raise UsageError(
            f"unknown model backend {spec!r}",
            "use builtin, anthropic[:MODEL] or openai[:MODEL] (OpenAI-compatible endpoints too)",
        )
    if provider == "builtin" and model:
        raise UsageError("the built-in planner takes no model name", "use --model builtin")
    if model and (len(model) > 100 or any(c.isspace() for c in model)):
        raise UsageError(f"model name {model[:40]!r} is not valid", "e.g. anthropic:claude-sonnet-4-5")
    return provider, model or None


def make_model(spec: str, **kwargs: Any) -> ChatModel | None:
    """A chat model for ``spec``, or None for the built-in (rule and retrieval based) agents."""
    provider, model = parse_spec(spec)
    if provider == "builtin":
        return None
    if provider == "anthropic":
        from schedcp.agent.llm.anthropic import AnthropicModel

        return AnthropicModel(
            model or os.environ.get("SCHEDCP_ANTHROPIC_MODEL") or DEFAULT_MODELS["anthropic"], **kwargs
        )
    from schedcp.agent.llm.openai import OpenAIModel

    return OpenAIModel(model or os.environ.get("SCHEDCP_OPENAI_MODEL") or DEFAULT_MODELS["openai"], **kwargs)


__all__ = [
    "ChatModel",
    "ChatResponse",
    "Message",
    "ProviderError",
    "ToolCall",
    "ToolDef",
    "Usage",
    "make_model",
    "parse_spec",
]
