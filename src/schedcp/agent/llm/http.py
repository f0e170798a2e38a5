# SPDX-License-Identifier: Apache-2.0
"""The HTTP part every provider shares: one JSON POST with timeouts, retries and readable errors.

Retried: 408, 409, 429, 5xx (and Anthropic's 529 "overloaded"), and transport failures (refused
connections, timeouts). Retry-After is honoured up to a cap; otherwise the wait doubles from one
second. Anything else (400 bad request, 401/403 bad key, 404 unknown model) fails at once with the
provider's own message, because retrying cannot fix it.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from schedcp.agent.llm import ChatResponse, Message, ToolDef
from schedcp.errors import NotReadyError, SchedcpError

RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 529})
MAX_RETRY_AFTER_S = 30.0
MAX_ERROR_CHARS = 300


@dataclass
class HttpSettings:
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_attempts: int = 4
    backoff_s: float = 1.0

    @classmethod
    def from_env(cls) -> HttpSettings:
        s = cls()
        raw = os.environ.get("SCHEDCP_LLM_TIMEOUT_S")
        if raw:
            try:
                s.timeout_s = min(max(float(raw), 1.0), 900.0)
            except ValueError:
                pass
        raw = os.environ.get("SCHEDCP_LLM_RETRIES")
        if raw and raw.isdigit():
            s.max_attempts = min(max(int(raw) + 1, 1), 10)
        return s


class ProviderError(SchedcpError):
    """A failed model call; ``status`` is the HTTP status (0 for transport failures)."""

    def __init__(
        self, cause: str, next_step: str, *, status: int, code: str = "llm_error", retry_after: float | None = None
    ) -> None:
        super().__init__(cause, next_step, code=code)
        self.status = status
        self.retry_after = retry_after


def provider_message(body: bytes) -> str:
    """The human part of a provider's error body (both providers nest it under "error")."""
    try:
        doc = json.loads(body)
    except ValueError:
        return body.decode("utf-8", "replace").strip()[:MAX_ERROR_CHARS]
    err = doc.get("error") if isinstance(doc, dict) else None
    if isinstance(err, dict):
        kind = err.get("type") or err.get("code") or ""
        msg = str(err.get("message") or "")
        return (f"{kind}: {msg}" if kind else msg)[:MAX_ERROR_CHARS]
    if isinstance(err, str):
        return err[:MAX_ERROR_CHARS]
    return json.dumps(doc)[:MAX_ERROR_CHARS]


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("retry-after")
    if not value:
        return None
    try:
        return min(max(float(value), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        return None


class JsonPoster:
    """POSTs JSON to one endpoint; owns the httpx client (a transport can be injected for tests)."""

    def __init__(
        self,
        provider: str,
        url: str,
        headers: dict[str, str],
        *,
        settings: HttpSettings | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        key_env: str = "",
    ) -> None:
        self.provider = provider
        self.url = url
        self.settings = settings or HttpSettings.from_env()
        self.key_env = key_env
        self._sleep = sleep
        timeout = httpx.Timeout(self.settings.timeout_s, connect=self.settings.connect_timeout_s)
        self.client = httpx.Client(headers=headers, timeout=timeout, transport=transport)
        self.attempts = 0  # total HTTP attempts made, retries included (reported in costs)

    def close(self) -> None:
        self.client.close()

    def post(self, payload: dict[str, Any]) -> tuple[dict[str, Any], int, int]:
        """Returns (decoded JSON, request bytes, response bytes)."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        last: ProviderError | None = None
        for attempt in range(self.settings.max_attempts):
            if attempt:
                wait = self.settings.backoff_s * (2 ** (attempt - 1))
                if last is not None and last.retry_after is not None:
                    wait = last.retry_after
                self._sleep(wait)
            self.attempts += 1
            try:
                resp = self.client.post(self.url, content=body, headers={"content-type": "application/json"})
            except httpx.TimeoutException as exc:
                last = ProviderError(
                    f"{self.provider} did not answer within {self.settings.timeout_s:.0f}s ({type(exc).__name__})",
                    "retry later or raise SCHEDCP_LLM_TIMEOUT_S",
                    status=0,
                    code="llm_timeout",
                )
                continue
            except httpx.TransportError as exc:
                last = ProviderError(
                    f"cannot reach {self.provider} at {self.url}: {exc}",
                    "check the network and the base URL; --model builtin works offline",
                    status=0,
                    code="llm_unreachable",
                )
                continue
            if resp.status_code == 200:
                try:
                    doc = resp.json()
                except ValueError as exc:
                    raise ProviderError(
                        f"{self.provider} returned a body that is not JSON",
                        "check the base URL points at the API, not a web page",
                        status=200,
                        code="llm_bad_response",
                    ) from exc
                if not isinstance(doc, dict):
                    raise ProviderError(
                        f"{self.provider} returned JSON that is not an object",
                        "check the base URL",
                        status=200,
                        code="llm_bad_response",
                    )
                return doc, len(body), len(resp.content)
            message = provider_message(resp.content)
            error = self._status_error(resp.status_code, message)
            if resp.status_code not in RETRY_STATUS:
                raise error
            error.retry_after = _retry_after(resp)
            last = error
        assert last is not None
        last.cause = f"{last.cause} (gave up after {self.settings.max_attempts} attempts)"
        raise last

    def _status_error(self, status: int, message: str) -> ProviderError:
        where = f"{self.provider} answered HTTP {status}"
        if status in (401, 403):
            return ProviderError(
                f"{where}: the API key was refused ({message})",
                f"check {self.key_env or 'the API key'}",
                status=status,
                code="llm_auth",
            )
        if status == 404:
            return ProviderError(
                f"{where}: {message}", "check the model name and the base URL", status=status, code="llm_not_found"
            )
        if status == 429:
            return ProviderError(
                f"{where}: rate limited ({message})",
                "wait a minute, or lower the request rate",
                status=status,
                code="llm_rate_limited",
            )
        if status >= 500:
            return ProviderError(
                f"{where}: provider error ({message})", "retry later", status=status, code="llm_server_error"
            )
        return ProviderError(
            f"{where}: {message}", "the request was rejected; see the message", status=status, code="llm_bad_request"
        )


def require_key(env: str, provider: str) -> str:
    key = os.environ.get(env, "").strip()
    if not key:
        raise NotReadyError(
            f"{env} is not set, so the {provider} backend cannot be used",
            f"export {env}=... or run with --model builtin (offline, no key needed)",
            code="llm_no_key",
        )
    return key


def bad_response(provider: str, what: str) -> ProviderError:
    return ProviderError(
        f"{provider} returned an unexpected response: {what}",
        "check the base URL and model; the endpoint may not speak this API",
        status=200,
        code="llm_bad_response",
    )


class HttpChatModel:
    """A ChatModel over one JSON endpoint: subclasses translate requests and responses."""

    offline = False
    provider = ""
    model = ""

    def _connect(
        self,
        url: str,
        headers: dict[str, str],
        key_env: str,
        *,
        transport: httpx.BaseTransport | None,
        settings: HttpSettings | None,
        sleep: Callable[[float], None] | None,
    ) -> None:
        extra = {"sleep": sleep} if sleep is not None else {}
        self.http = JsonPoster(
            self.provider, url, headers, settings=settings, transport=transport, key_env=key_env, **extra
        )

    def build_request(
        self, system: str, messages: list[Message], tools: list[ToolDef], max_tokens: int
    ) -> dict[str, Any]:
        raise NotImplementedError

    def parse_response(self, doc: dict[str, Any]) -> ChatResponse:
        raise NotImplementedError

    def chat(
        self, system: str, messages: list[Message], tools: list[ToolDef], *, max_tokens: int = 2048
    ) -> ChatResponse:
        doc, sent, got = self.http.post(self.build_request(system, messages, tools, max_tokens))
        resp = self.parse_response(doc)
        resp.request_bytes, resp.response_bytes = sent, got
        return resp

    def close(self) -> None:
        self.http.close()
