# SPDX-License-Identifier: Apache-2.0
"""Model backends: request/response translation, the HTTP layer against a real local server,
errors, and the scripted model going through the same code."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from schedcp.agent.llm import Message, ProviderError, ToolCall, ToolDef, make_model, parse_spec
from schedcp.agent.llm import anthropic as anth
from schedcp.agent.llm import openai as oai
from schedcp.agent.llm.scripted import ScriptedModel, ScriptExhausted, Turn
from schedcp.agent.llm.sdk import Settings
from schedcp.errors import NotReadyError, UsageError

TOOLS = [
    ToolDef(
        "lookup",
        "Find a thing.",
        {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"], "additionalProperties": False},
    )
]


def conversation() -> list[Message]:
    return [
        Message.user("find ljf"),
        Message.assistant(
            "looking",
            [
                ToolCall("c1", "lookup", {"q": "ljf"}, '{"q": "ljf"}'),
                ToolCall("c2", "lookup", None, '{"q": ', parse_error="bad json"),
            ],
        ),
        Message.tool_result("c1", '{"found": true}'),
        Message.tool_result("c2", '{"error": "bad json"}', is_error=True),
        Message.user("now finish"),
    ]


# -- Anthropic wire format ------------------------------------------------------------------------
def test_anthropic_request_groups_tool_results_in_one_user_turn() -> None:
    req = anth.build_request("m", "be brief", conversation(), TOOLS, 512, cache=False)
    assert req["system"] == [{"type": "text", "text": "be brief"}] and req["max_tokens"] == 512 and req["model"] == "m"
    assert req["tools"][0] == {"name": "lookup", "description": "Find a thing.", "input_schema": TOOLS[0].parameters}
    cached = anth.build_request("m", "be brief", conversation(), TOOLS, 512)
    # Cache breakpoints: system prompt, last tool, newest message (the stable prefix of the next turn).
    assert cached["system"][0]["cache_control"] == {"type": "ephemeral"}
    assert cached["tools"][-1]["cache_control"] == {"type": "ephemeral"}
    assert cached["messages"][-1]["content"][-1]["cache_control"] == {"type": "ephemeral"}
    assert json.dumps(cached).count("cache_control") == 3
    roles = [m["role"] for m in req["messages"]]
    assert roles == ["user", "assistant", "user"]  # strictly alternating
    assistant = req["messages"][1]["content"]
    assert assistant[0] == {"type": "text", "text": "looking"}
    assert assistant[1] == {"type": "tool_use", "id": "c1", "name": "lookup", "input": {"q": "ljf"}}
    assert assistant[2]["input"] == {}  # unparseable arguments are replayed as an empty object
    results = req["messages"][2]["content"]
    assert [b["type"] for b in results] == ["tool_result", "tool_result", "text"]
    assert results[0] == {"type": "tool_result", "tool_use_id": "c1", "content": '{"found": true}'}
    assert results[1]["is_error"] is True and "is_error" not in results[0]
    assert results[2]["text"] == "now finish"


def test_anthropic_response_parsing() -> None:
    doc = {
        "content": [
            {"type": "text", "text": "ok"},
            {"type": "tool_use", "id": "toolu_1", "name": "lookup", "input": {"q": "x"}},
            {"type": "tool_use", "id": "toolu_2", "name": "lookup", "input": "not an object"},
        ],
        "stop_reason": "tool_use",
        "model": "claude-x",
        "usage": {
            "input_tokens": 120,
            "output_tokens": 30,
            "cache_read_input_tokens": 100,
            "cache_creation_input_tokens": 7,
        },
    }
    resp = anth.parse_response(doc, "m")
    assert resp.text == "ok" and resp.stop_reason == "tool_use" and resp.model == "claude-x"
    assert resp.tool_calls[0].arguments == {"q": "x"} and resp.tool_calls[0].parse_error is None
    assert resp.tool_calls[1].arguments is None and "not a JSON object" in resp.tool_calls[1].parse_error
    assert resp.usage.as_dict() == {
        "input_tokens": 120,
        "output_tokens": 30,
        "cache_read_tokens": 100,
        "cache_write_tokens": 7,
    }
    with pytest.raises(ProviderError, match="unexpected response"):
        anth.parse_response({"type": "message"}, "m")


# -- OpenAI wire format ---------------------------------------------------------------------------
def test_openai_request_keeps_raw_arguments_and_separate_tool_messages() -> None:
    req = oai.build_request("gpt", "be brief", conversation(), TOOLS, 256)
    msgs = req["messages"]
    assert msgs[0] == {"role": "system", "content": "be brief"}
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "tool", "tool", "user"]
    calls = msgs[2]["tool_calls"]
    assert calls[0]["function"] == {"name": "lookup", "arguments": '{"q": "ljf"}'}
    assert calls[1]["function"]["arguments"] == '{"q": '  # replayed exactly as the model sent it
    assert msgs[3] == {"role": "tool", "tool_call_id": "c1", "content": '{"found": true}'}
    assert req["tools"][0]["type"] == "function" and req["tools"][0]["function"]["parameters"] == TOOLS[0].parameters
    assert req["max_tokens"] == 256
    assert "max_completion_tokens" in oai.build_request("g", "", [], [], 9, token_field="max_completion_tokens")


def test_openai_response_parsing_flags_bad_arguments() -> None:
    doc = {
        "model": "gpt-x",
        "choices": [
            {
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "a", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}},
                        {"id": "b", "type": "function", "function": {"name": "lookup", "arguments": '{"q": '}},
                        {"id": "c", "type": "function", "function": {"name": "lookup", "arguments": '["q"]'}},
                        {"id": "d", "type": "function", "function": {"name": "lookup", "arguments": ""}},
                    ],
                },
            }
        ],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "prompt_tokens_details": {"cached_tokens": 40}},
    }
    resp = oai.parse_response(doc, "m")
    a, b, c, d = resp.tool_calls
    assert a.arguments == {"q": "x"} and resp.stop_reason == "tool_use" and resp.text == ""
    assert b.arguments is None and "not valid JSON" in (b.parse_error or "") and b.raw_arguments == '{"q": '
    assert c.arguments is None and "JSON object" in (c.parse_error or "")
    assert d.arguments == {}
    assert (resp.usage.input_tokens, resp.usage.output_tokens, resp.usage.cache_read_tokens) == (50, 5, 40)
    with pytest.raises(ProviderError):
        oai.parse_response({"choices": []}, "m")


# -- a real HTTP server on 127.0.0.1 --------------------------------------------------------------
class Provider:
    """A tiny provider: replies from a queue of (status, body, headers, delay); records requests."""

    def __init__(self) -> None:
        self.replies: list[tuple[int, dict[str, Any], dict[str, str], float]] = []
        self.seen: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                headers = {k.lower(): v for k, v in self.headers.items()}
                outer.seen.append({"path": self.path, "headers": headers, "json": json.loads(body)})
                status, doc, headers, delay = outer.replies.pop(0) if outer.replies else (500, {}, {}, 0.0)
                time.sleep(delay)
                data = json.dumps(doc).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def provider():
    p = Provider()
    yield p
    p.close()


ANTHROPIC_OK = {
    "type": "message",
    "role": "assistant",
    "model": "claude-test",
    "stop_reason": "end_turn",
    "content": [{"type": "text", "text": "hello"}],
    "usage": {"input_tokens": 11, "output_tokens": 2},
}
OPENAI_OK = {
    "model": "gpt-test",
    "choices": [{"finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 1},
}


def fast(attempts: int = 3, timeout: float = 10.0) -> Settings:
    return Settings(timeout_s=timeout, connect_timeout_s=2.0, max_retries=attempts - 1)


FAST_RETRY = {"retry-after-ms": "10"}  # the SDKs honour the provider's retry hint


def test_anthropic_over_http_retries_429_then_succeeds(provider: Provider) -> None:
    provider.replies = [
        (
            429,
            {"type": "error", "error": {"type": "rate_limit_error", "message": "slow down"}},
            {"retry-after": "0.2"},
            0,
        ),
        (200, ANTHROPIC_OK | {"usage": {**ANTHROPIC_OK["usage"], "cache_read_input_tokens": 7}}, {}, 0.0),
    ]
    model = anth.AnthropicModel("claude-test", api_key="sk-test", base_url=provider.url, settings=fast())
    started = time.monotonic()
    resp = model.chat("sys", [Message.user("hi")], TOOLS, max_tokens=64)
    assert time.monotonic() - started >= 0.2  # Retry-After honoured by the SDK
    assert resp.text == "hello" and resp.usage.input_tokens == 11 and resp.request_bytes > 0
    assert resp.usage.cache_read_tokens == 7
    assert model.attempts == 2
    first = provider.seen[0]
    assert first["path"] == "/v1/messages"
    assert "sk-test" in (first["headers"].get("x-api-key") or first["headers"]["authorization"])
    assert first["headers"]["anthropic-version"]  # the SDK's own API version
    assert first["json"]["tools"][0]["name"] == "lookup" and first["json"]["system"][0]["text"] == "sys"


def test_openai_over_http_with_bearer_and_5xx_retry(provider: Provider) -> None:
    provider.replies = [
        (503, {"error": {"message": "busy", "type": "server_error"}}, FAST_RETRY, 0.0),
        (200, OPENAI_OK, {}, 0.0),
    ]
    model = oai.OpenAIModel("gpt-test", api_key="sk-o", base_url=provider.url + "/v1", settings=fast())
    resp = model.chat("sys", [Message.user("hi")], [], max_tokens=32)
    assert resp.text == "hi" and model.attempts == 2
    assert provider.seen[0]["path"] == "/v1/chat/completions"
    assert provider.seen[0]["headers"]["authorization"] == "Bearer sk-o"
    assert provider.seen[0]["json"]["max_tokens"] == 32  # compatible servers get max_tokens


def test_http_errors_are_clear_and_not_retried_when_pointless(provider: Provider) -> None:
    provider.replies = [
        (401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}}, {}, 0.0)
    ]
    model = anth.AnthropicModel("m", api_key="bad", base_url=provider.url, settings=fast())
    with pytest.raises(ProviderError) as info:
        model.chat("", [Message.user("hi")], [])
    assert info.value.code == "llm_auth" and info.value.status == 401
    assert "invalid x-api-key" in info.value.cause and "ANTHROPIC_API_KEY" in info.value.next_step
    assert model.attempts == 1

    provider.replies = [(500, {"error": {"message": "boom"}}, FAST_RETRY, 0.0)] * 3
    model = oai.OpenAIModel("m", api_key="k", base_url=provider.url, settings=fast(attempts=3))
    with pytest.raises(ProviderError) as info:
        model.chat("", [Message.user("hi")], [])
    assert info.value.code == "llm_server_error" and "gave up" in info.value.cause and "boom" in info.value.cause
    assert model.attempts == 3

    provider.replies = [(400, {"error": {"message": "tools.0: bad schema", "type": "invalid_request_error"}}, {}, 0.0)]
    with pytest.raises(ProviderError, match="bad schema") as info:
        model.chat("", [Message.user("hi")], [])
    assert info.value.code == "llm_bad_request"


def test_http_timeout_and_unreachable(provider: Provider) -> None:
    provider.replies = [(200, ANTHROPIC_OK, {}, 1.5)]
    model = anth.AnthropicModel("m", api_key="k", base_url=provider.url, settings=fast(attempts=1, timeout=0.3))
    with pytest.raises(ProviderError) as info:
        model.chat("", [Message.user("hi")], [])
    assert info.value.code == "llm_timeout"
    dead = anth.AnthropicModel("m", api_key="k", base_url="http://127.0.0.1:9", settings=fast(attempts=2))
    with pytest.raises(ProviderError) as info:
        dead.chat("", [Message.user("hi")], [])
    assert info.value.code == "llm_unreachable" and dead.attempts == 2


# -- configuration --------------------------------------------------------------------------------
def test_model_specs_and_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    assert parse_spec("builtin") == ("builtin", None)
    assert parse_spec("anthropic:claude-x") == ("anthropic", "claude-x")
    assert parse_spec("OpenAI") == ("openai", None)
    assert make_model("builtin") is None
    for bad in ("gemini", "builtin:foo", "openai:has space"):
        with pytest.raises(UsageError):
            parse_spec(bad)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(NotReadyError) as info:
        make_model("anthropic")
    assert info.value.code == "llm_no_key" and "--model builtin" in info.value.next_step
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-x")
    monkeypatch.setenv("SCHEDCP_ANTHROPIC_MODEL", "claude-env")
    assert make_model("anthropic").name == "anthropic:claude-env"
    assert make_model("anthropic:claude-cli").name == "anthropic:claude-cli"
    # A local OpenAI-compatible server needs no key; the official endpoint does.
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    local = make_model("openai:llama")
    assert local.name == "openai:llama" and local.token_field == "max_tokens"
    monkeypatch.delenv("OPENAI_BASE_URL")
    with pytest.raises(NotReadyError):
        make_model("openai")


# -- the scripted model ---------------------------------------------------------------------------
@pytest.mark.parametrize("flavor", ["anthropic", "openai"])
def test_scripted_model_round_trips_through_the_backend(flavor: str) -> None:
    model = ScriptedModel(
        [
            Turn(text="thinking", calls=[("lookup", {"q": "a"}), ("lookup", '{"q": oops')]),
            lambda request: Turn(text=f"saw {len(request['messages'])} messages"),
            Turn(status=429, error="slow"),
            Turn(text="after retry", input_tokens=5, output_tokens=3),
        ],
        flavor=flavor,
    )
    first = model.chat("sys", [Message.user("go")], TOOLS)
    assert first.text == "thinking" and [c.name for c in first.tool_calls] == ["lookup", "lookup"]
    assert first.tool_calls[0].arguments == {"q": "a"}
    assert first.tool_calls[1].arguments is None and first.tool_calls[1].parse_error
    assert first.usage.input_tokens > 0 and first.stop_reason == "tool_use"
    history = [
        Message.user("go"),
        Message.assistant(first.text, first.tool_calls),
        Message.tool_result(first.tool_calls[0].id, "{}"),
        Message.tool_result(first.tool_calls[1].id, '{"error":"bad"}', is_error=True),
    ]
    second = model.chat("sys", history, TOOLS)
    expected = 3 if flavor == "anthropic" else 5  # tool results: one user turn vs one message each (+system)
    assert second.text == f"saw {expected} messages"
    third = model.chat("sys", [Message.user("again")], [])  # the 429 is retried inside the backend
    assert third.text == "after retry" and third.usage.output_tokens == 3
    assert len(model.requests) == 4 and model.remaining == 0
    with pytest.raises(ScriptExhausted):
        model.chat("sys", [Message.user("more")], [])
