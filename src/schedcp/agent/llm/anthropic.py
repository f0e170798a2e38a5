# SPDX-License-Identifier: Apache-2.0
"""Anthropic Messages API backend, through the official ``anthropic`` SDK.

Wire format: the system prompt is a top-level field; tools are {name, description, input_schema};
the reply's content is a list of blocks, ``text`` and ``tool_use`` {id, name, input}; tool results
go back as ``tool_result`` blocks inside a *user* turn, all results of one assistant turn together.

Prompt caching: an agent sends the same system prompt and tools every turn and a conversation that
only grows, so three cache breakpoints (``cache_control: ephemeral``) sit on the system prompt, the
last tool and the newest message; each turn then reads the previous turn's prefix from the cache.
Cache reads and writes come back in ``usage`` and are counted and priced separately.
"""

from __future__ import annotations

import json
import os
from typing import Any

import httpx2

from schedcp.agent.llm import ChatResponse, Message, ProviderError, ToolCall, ToolDef, Usage
from schedcp.agent.llm.sdk import CountingClient, Settings, provider_error, require_key

DEFAULT_BASE = "https://api.anthropic.com"
STOP_REASONS = {"tool_use": "tool_use", "end_turn": "end", "stop_sequence": "end", "max_tokens": "max_tokens"}
CACHE: dict[str, Any] = {"type": "ephemeral"}


def build_request(
    model: str, system: str, messages: list[Message], tools: list[ToolDef], max_tokens: int, *, cache: bool = True
) -> dict[str, Any]:
    wire: list[dict[str, Any]] = []
    for msg in messages:
        if msg.role == "tool":
            block: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id, "content": msg.text}
            if msg.is_error:
                block["is_error"] = True
            # Results of one assistant turn share one user turn; the API wants roles to alternate.
            if (
                wire
                and wire[-1]["role"] == "user"
                and isinstance(wire[-1]["content"], list)
                and all(b.get("type") == "tool_result" for b in wire[-1]["content"])
            ):
                wire[-1]["content"].append(block)
            else:
                wire.append({"role": "user", "content": [block]})
        elif msg.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if msg.text:
                blocks.append({"type": "text", "text": msg.text})
            for call in msg.tool_calls:
                args = call.arguments if call.arguments is not None else {}
                blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": args})
            wire.append({"role": "assistant", "content": blocks or [{"type": "text", "text": "(no reply)"}]})
        else:
            if wire and wire[-1]["role"] == "user":
                # A nudge right after tool results: append as a text block of the same turn.
                content = wire[-1]["content"]
                if isinstance(content, str):
                    wire[-1]["content"] = [{"type": "text", "text": content}]
                wire[-1]["content"].append({"type": "text", "text": msg.text})
            else:
                wire.append({"role": "user", "content": msg.text})
    if cache and wire:
        last = wire[-1]
        if isinstance(last["content"], str):
            last["content"] = [{"type": "text", "text": last["content"]}]
        last["content"][-1] = {**last["content"][-1], "cache_control": CACHE}
    payload: dict[str, Any] = {"model": model, "max_tokens": max_tokens, "messages": wire}
    if system:
        payload["system"] = [{"type": "text", "text": system, **({"cache_control": CACHE} if cache else {})}]
    if tools:
        payload["tools"] = [{"name": t.name, "description": t.description, "input_schema": t.parameters} for t in tools]
        if cache:
            payload["tools"][-1]["cache_control"] = CACHE
    return payload


def parse_response(doc: dict[str, Any], model: str) -> ChatResponse:
    content = doc.get("content")
    if not isinstance(content, list):
        raise ProviderError(
            "anthropic returned an unexpected response: no content list",
            "check the base URL and model",
            status=200,
            code="llm_bad_response",
        )
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            raw = block.get("input")
            ok = isinstance(raw, dict)
            calls.append(
                ToolCall(
                    id=str(block.get("id") or f"toolu_{len(calls)}"),
                    name=str(block.get("name") or ""),
                    arguments=raw if ok else None,
                    raw_arguments=json.dumps(raw),
                    parse_error=None if ok else "the tool input is not a JSON object",
                )
            )
    usage = doc.get("usage") or {}
    return ChatResponse(
        text="\n".join(t for t in texts if t),
        tool_calls=calls,
        usage=Usage(
            input_tokens=int(usage.get("input_tokens") or 0),
            output_tokens=int(usage.get("output_tokens") or 0),
            cache_read_tokens=int(usage.get("cache_read_input_tokens") or 0),
            cache_write_tokens=int(usage.get("cache_creation_input_tokens") or 0),
        ),
        stop_reason=STOP_REASONS.get(str(doc.get("stop_reason")), str(doc.get("stop_reason"))),
        model=str(doc.get("model") or model),
    )


class AnthropicModel:
    provider = "anthropic"
    offline = False

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        transport: httpx2.BaseTransport | None = None,
        settings: Settings | None = None,
        cache: bool = True,
    ) -> None:
        import anthropic

        self.model = model
        self.name = f"anthropic:{model}"
        self.cache = cache
        key = api_key if api_key is not None else require_key("ANTHROPIC_API_KEY", "Anthropic")
        self.base = (base_url or os.environ.get("ANTHROPIC_BASE_URL") or DEFAULT_BASE).rstrip("/")
        settings = settings or Settings.from_env()
        self.http = CountingClient(settings, transport)
        self.client = anthropic.Anthropic(
            api_key=key, base_url=self.base, max_retries=settings.max_retries, http_client=self.http.http
        )

    @property
    def attempts(self) -> int:
        return self.http.attempts

    def chat(
        self, system: str, messages: list[Message], tools: list[ToolDef], *, max_tokens: int = 2048
    ) -> ChatResponse:
        import anthropic

        payload = build_request(self.model, system, messages, tools, max_tokens, cache=self.cache)
        try:
            reply = self.client.messages.create(**payload)
        except anthropic.AnthropicError as exc:
            raise provider_error("anthropic", exc, "ANTHROPIC_API_KEY", self.base) from exc
        doc = reply.model_dump(mode="json", warnings=False)  # a malformed tool input stays as sent
        resp = parse_response(doc, self.model)
        resp.request_bytes = len(json.dumps(payload, separators=(",", ":")).encode())
        resp.response_bytes = len(json.dumps(doc, separators=(",", ":")).encode())
        return resp

    def close(self) -> None:
        self.http.close()
