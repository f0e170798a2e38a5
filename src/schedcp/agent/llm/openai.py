# SPDX-License-Identifier: Apache-2.0
"""OpenAI Chat Completions backend, through the official ``openai`` SDK, for OpenAI and compatible
servers (OPENAI_BASE_URL: vLLM, llama.cpp, Ollama, a gateway).

Wire format: the system prompt is the first message; tools are {type: function, function: {name,
description, parameters}}; the reply is ``choices[0].message`` with ``tool_calls`` whose
``function.arguments`` is a JSON *string* (which a model can get wrong, so it is parsed here and a
failure is reported back to the model); each result is its own ``role: tool`` message. OpenAI
caches long prompt prefixes by itself; cached input tokens come back in ``usage`` and are counted.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx2

from schedcp.agent.llm import ChatResponse, Message, ProviderError, ToolCall, ToolDef, Usage
from schedcp.agent.llm.sdk import CountingClient, Settings, provider_error, require_key

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
    except json.JSONDecodeError as exc:
        return None, text, f"the arguments are not valid JSON ({exc.msg} at position {exc.pos})"
    if not isinstance(value, dict):
        return None, text, "the arguments must be a JSON object"
    return value, text, None


def parse_response(doc: dict[str, Any], model: str) -> ChatResponse:
    choices = doc.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise _bad("no choices")
    message = choices[0].get("message")
    if not isinstance(message, dict):
        raise _bad("choice without a message")
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


def _bad(what: str) -> ProviderError:
    return ProviderError(
        f"openai returned an unexpected response: {what}",
        "check the base URL and model",
        status=200,
        code="llm_bad_response",
    )


class OpenAIModel:
    provider = "openai"
    offline = False

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        transport: httpx2.BaseTransport | None = None,
        settings: Settings | None = None,
    ) -> None:
        import openai

        self.model = model
        self.name = f"openai:{model}"
        self.base = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE).rstrip("/")
        if api_key is None:
            # Local compatible servers often need no key; the official endpoint always does.
            api_key = (
                require_key("OPENAI_API_KEY", "OpenAI")
                if self.base == DEFAULT_BASE
                else os.environ.get("OPENAI_API_KEY", "") or "none"
            )
        # OpenAI's newer models refuse max_tokens; compatible servers mostly only know max_tokens.
        self.token_field = "max_completion_tokens" if self.base == DEFAULT_BASE else "max_tokens"
        settings = settings or Settings.from_env()
        self.http = CountingClient(settings, transport)
        self.client = openai.OpenAI(
            api_key=api_key, base_url=self.base, max_retries=settings.max_retries, http_client=self.http.http
        )

    @property
    def attempts(self) -> int:
        return self.http.attempts

    def chat(
        self, system: str, messages: list[Message], tools: list[ToolDef], *, max_tokens: int = 2048
    ) -> ChatResponse:
        import openai

        payload = build_request(self.model, system, messages, tools, max_tokens, token_field=self.token_field)
        try:
            reply = self.client.chat.completions.create(**payload)
        except openai.OpenAIError as exc:
            raise provider_error("openai", exc, "OPENAI_API_KEY", self.base) from exc
        doc = reply.model_dump(mode="json", warnings=False)  # a malformed tool input stays as sent
        resp = parse_response(doc, self.model)
        resp.request_bytes = len(json.dumps(payload, separators=(",", ":")).encode())
        resp.response_bytes = len(json.dumps(doc, separators=(",", ":")).encode())
        return resp

    def close(self) -> None:
        self.http.close()
