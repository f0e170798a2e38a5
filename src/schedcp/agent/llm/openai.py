# SPDX-License-Identifier: Apache-2.0
"""OpenAI Chat Completions backend (POST {base}/chat/completions), for OpenAI and compatible servers.

Wire format: the system prompt is the first message; tools are {type: function, function: {name,
description, parameters}}; the reply is ``choices[0].message`` with ``tool_calls`` whose
``function.arguments`` is a JSON *string* (which a model can get wrong, so it is parsed here and a
failure is reported back to the model); each result is its own ``role: tool`` message.
OPENAI_BASE_URL points it at any compatible server (vLLM, llama.cpp, Ollama, a gateway).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import httpx

from schedcp.agent.llm import ChatResponse, Message, ToolCall, ToolDef, Usage
from schedcp.agent.llm.http import HttpChatModel, HttpSettings, bad_response, require_key

DEFAULT_BASE = "https://api.openai.com/v1"
STOP_REASONS = {"tool_calls": "tool_use", "function_call": "tool_use", "stop": "end", "length": "max_tokens"}


def build_request(
    model: str,
    system: str,
    messages: list[Message],
    tools: list[ToolDef],
    max_tokens: int,
    *,
    token_field: str = "max_tokens",
) -> dict[str, Any]:
    wire: list[dict[str, Any]] = []
    if system:
        wire.append({"role": "system", "content": system})
    for msg in messages:
        if msg.role == "tool":
            wire.append({"role": "tool", "tool_call_id": msg.tool_call_id, "content": msg.text})
        elif msg.role == "assistant":
            item: dict[str, Any] = {"role": "assistant", "content": msg.text or None}
            if msg.tool_calls:
                item["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": c.raw_arguments or json.dumps(c.arguments or {})},
                    }
                    for c in msg.tool_calls
                ]
            wire.append(item)
        else:
            wire.append({"role": "user", "content": msg.text})
    payload: dict[str, Any] = {"model": model, "messages": wire, token_field: max_tokens}
    if tools:
        payload["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools
        ]
    return payload


def _parse_arguments(raw: Any) -> tuple[dict[str, Any] | None, str, str | None]:
    if isinstance(raw, dict):  # some compatible servers send an object, not a string
        return raw, json.dumps(raw), None
    text = raw if isinstance(raw, str) else ""
    if not text.strip():
        return {}, text, None
    try:
        value = json.loads(text)
    except ValueError as exc:
        return None, text, f"the arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(value, dict):
        return None, text, "the arguments must be a JSON object"
    return value, text, None


def parse_response(doc: dict[str, Any], model: str) -> ChatResponse:
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise bad_response("openai", "no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise bad_response("openai", "choice without a message")
    calls: list[ToolCall] = []
    for i, raw in enumerate(message.get("tool_calls") or []):
        if not isinstance(raw, dict):
            continue
        fn = raw.get("function") or {}
        args, text, error = _parse_arguments(fn.get("arguments"))
        calls.append(
            ToolCall(
                id=str(raw.get("id") or f"call_{i}"),
                name=str(fn.get("name") or ""),
                arguments=args,
                raw_arguments=text,
                parse_error=error,
            )
        )
    usage = doc.get("usage") or {}
    details = usage.get("prompt_tokens_details") or {}
    reason = str(choices[0].get("finish_reason"))
    return ChatResponse(
        text=str(message.get("content") or ""),
        tool_calls=calls,
        usage=Usage(
            input_tokens=int(usage.get("prompt_tokens") or 0),
            output_tokens=int(usage.get("completion_tokens") or 0),
            cache_read_tokens=int(details.get("cached_tokens") or 0),
        ),
        stop_reason=STOP_REASONS.get(reason, reason),
        model=str(doc.get("model") or model),
    )


class OpenAIModel(HttpChatModel):
    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        transport: httpx.BaseTransport | None = None,
        settings: HttpSettings | None = None,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.model = model
        self.name = f"openai:{model}"
        base = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE).rstrip("/")
        if api_key is None:
            # Local compatible servers often need no key; the official endpoint always does.
            api_key = (
                require_key("OPENAI_API_KEY", "OpenAI")
                if base == DEFAULT_BASE
                else os.environ.get("OPENAI_API_KEY", "")
            )
        # OpenAI's newer models refuse max_tokens; compatible servers mostly only know max_tokens.
        self.token_field = "max_completion_tokens" if base == DEFAULT_BASE else "max_tokens"
        self._connect(
            f"{base}/chat/completions",
            {"authorization": f"Bearer {api_key}"} if api_key else {},
            "OPENAI_API_KEY",
            transport=transport,
            settings=settings,
            sleep=sleep,
        )

    def build_request(
        self, system: str, messages: list[Message], tools: list[ToolDef], max_tokens: int
    ) -> dict[str, Any]:
        return build_request(self.model, system, messages, tools, max_tokens, token_field=self.token_field)

    def parse_response(self, doc: dict[str, Any]) -> ChatResponse:
        return parse_response(doc, self.model)
