# SPDX-License-Identifier: Apache-2.0
"""What both providers' official SDK clients share here: settings, the HTTP client, error mapping.

The SDKs do the HTTP work (timeouts, retries of 408/409/429/5xx and connection failures with
exponential backoff that honours Retry-After). We give them an ``httpx2`` client of our own for
two reasons: counting every attempt the SDK makes (retries included, for the cost report), and
letting tests serve scripted provider answers through a mock transport to the unmodified SDK.
Their typed exceptions become one ``ProviderError`` with a cause and a next step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import httpx2

from schedcp.agent.llm import ProviderError
from schedcp.errors import NotReadyError

MAX_ERROR_CHARS = 300


@dataclass
class Settings:
    timeout_s: float = 120.0
    connect_timeout_s: float = 10.0
    max_retries: int = 3

    @classmethod
    def from_env(cls) -> Settings:
        s = cls()
        raw = os.environ.get("SCHEDCP_LLM_TIMEOUT_S")
        if raw:
            try:
                s.timeout_s = min(max(float(raw), 1.0), 900.0)
            except ValueError:
                pass
        raw = os.environ.get("SCHEDCP_LLM_RETRIES")
        if raw and raw.isdigit():
            s.max_retries = min(int(raw), 9)
        return s


class CountingClient:
    """An httpx2 client for an SDK, counting the requests it sends (a transport may be injected)."""

    def __init__(self, settings: Settings, transport: httpx2.BaseTransport | None = None) -> None:
        self.attempts = 0

        def count(_request: httpx2.Request) -> None:
            self.attempts += 1

        timeout = httpx2.Timeout(settings.timeout_s, connect=settings.connect_timeout_s)
        self.http = httpx2.Client(timeout=timeout, transport=transport, event_hooks={"request": [count]})

    def close(self) -> None:
        self.http.close()


def require_key(env: str, provider: str) -> str:
    key = os.environ.get(env, "").strip()
    if not key:
        raise NotReadyError(
            f"{env} is not set, so the {provider} backend cannot be used",
            f"export {env}=... or run with --model builtin (offline, no key needed)",
            code="llm_no_key",
        )
    return key


def _message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        nested = body.get("error")
        err: dict[str, Any] = nested if isinstance(nested, dict) else body
        kind = err.get("type") or err.get("code") or ""
        msg = str(err.get("message") or "")
        if msg:
            return (f"{kind}: {msg}" if kind else msg)[:MAX_ERROR_CHARS]
    return str(getattr(exc, "message", None) or exc)[:MAX_ERROR_CHARS]


def provider_error(provider: str, exc: Exception, key_env: str, url: str) -> ProviderError:
    """Map an SDK exception (anthropic.* or openai.*, same class names) to a ProviderError."""
    kind = type(exc).__name__
    status = int(getattr(exc, "status_code", 0) or 0)
    where = f"{provider} answered HTTP {status}" if status else provider
    msg = _message(exc)
    if kind in ("APITimeoutError",):
        return ProviderError(
            f"{provider} did not answer in time ({msg})",
            "retry later or raise SCHEDCP_LLM_TIMEOUT_S",
            status=0,
            code="llm_timeout",
        )
    if kind in ("APIConnectionError",):
        return ProviderError(
            f"cannot reach {provider} at {url}: {msg}",
            "check the network and the base URL; --model builtin works offline",
            status=0,
            code="llm_unreachable",
        )
    if status in (401, 403):
        return ProviderError(
            f"{where}: the API key was refused ({msg})", f"check {key_env}", status=status, code="llm_auth"
        )
    if status == 404:
        return ProviderError(
            f"{where}: {msg}", "check the model name and the base URL", status=status, code="llm_not_found"
        )
    if status == 429:
        return ProviderError(
            f"{where}: rate limited ({msg}); gave up after the SDK's retries",
            "wait a minute, or lower the request rate",
            status=status,
            code="llm_rate_limited",
        )
    if status >= 500:
        return ProviderError(
            f"{where}: provider error ({msg}); gave up after the SDK's retries",
            "retry later",
            status=status,
            code="llm_server_error",
        )
    if status:
        return ProviderError(
            f"{where}: {msg}", "the request was rejected; see the message", status=status, code="llm_bad_request"
        )
    return ProviderError(
        f"{provider} returned an unexpected response: {msg}",
        "check the base URL and model; the endpoint may not speak this API",
        status=200,
        code="llm_bad_response",
    )
