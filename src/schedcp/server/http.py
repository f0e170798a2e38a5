# SPDX-License-Identifier: Apache-2.0
"""Streamable HTTP transport with bearer-token authentication and Host/Origin checks.

Every address needs a token, loopback included: the tools read files, run commands in a sandbox
and boot VMs, and on a shared machine any local user (and, through DNS rebinding, any web page a
local browser opens) can reach a loopback port. The token is compared in constant time (SHA-256
digests through ``hmac.compare_digest``, so neither content nor length leaks through timing).

Host and Origin are checked on every address too (the MCP SDK turns its check on by itself only
for 127.0.0.1, localhost and ::1; we hand it an explicit allow-list for whatever we bind): the
Host must name the bound address and port (or, for a wildcard bind, one of this machine's
addresses or ``--allow-host`` names), and a browser's Origin must be one of those.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from schedcp.errors import UsageError

MIN_TOKEN_CHARS = 16
MAX_BODY_BYTES = 1024 * 1024  # a 256 KiB source, JSON-escaped, with room to spare
MCP_PATH = "/mcp"


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{MCP_PATH}"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_endpoint(text: str) -> Endpoint:
    """HOST:PORT, [V6]:PORT, :PORT or PORT (the last two bind 127.0.0.1)."""
    text = text.strip()
    host, port_text = "127.0.0.1", text
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or text[end + 1 : end + 2] != ":":
            raise UsageError(f"bad --http value {text!r}", "use [IPV6]:PORT, e.g. [::1]:8765")
        host, port_text = text[1:end], text[end + 2 :]
    elif ":" in text:
        host, _, port_text = text.rpartition(":")
        host = host or "127.0.0.1"
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"bad port in --http {text!r}", "use HOST:PORT, e.g. 127.0.0.1:8765") from None
    if not 1 <= port <= 65535:
        raise UsageError(f"port {port} is out of range", "use 1..65535")
    if host != "localhost":
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise UsageError(
                f"--http host {host!r} is not an IP address", "give an address to bind, e.g. 127.0.0.1 or 0.0.0.0"
            ) from None
    return Endpoint(host, port)


def check_token(token: str | None, endpoint: Endpoint) -> str:
    if token is None or not token.strip():
        where = "a loopback address" if endpoint.loopback else endpoint.host
        raise UsageError(
            f"refusing to serve HTTP on {where} without a token: any local user, or a web page through DNS "
            "rebinding, could use the tools",
            "set SCHEDCP_MCP_TOKEN (e.g. export SCHEDCP_MCP_TOKEN=$(openssl rand -hex 32)) or pass --token",
        )
    token = token.strip()
    if len(token) < MIN_TOKEN_CHARS or any(c.isspace() for c in token):
        raise UsageError(
            f"the MCP token must be at least {MIN_TOKEN_CHARS} characters without spaces",
            "generate one: export SCHEDCP_MCP_TOKEN=$(openssl rand -hex 32)",
        )
    return token


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def allowed_hosts(endpoint: Endpoint, extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """Host header values accepted for this bind: the bound address, its loopback names, and for a
    wildcard bind every address of this machine plus its host name; ``extra`` names are added."""
    names = {endpoint.host, *extra}
    if endpoint.loopback:
        names.add("localhost")
    if endpoint.host in ("0.0.0.0", "::"):
        import socket

        import psutil

        names |= {"localhost", socket.gethostname()}
        for addrs in psutil.net_if_addrs().values():
            for addr in addrs:
                if addr.family in (socket.AF_INET, socket.AF_INET6):
                    names.add(addr.address.split("%", 1)[0])
    return sorted(_host_port(name, endpoint.port) for name in names if name)


def transport_security(endpoint: Endpoint, extra_hosts: list[str] | tuple[str, ...] = ()) -> Any:
    from mcp.server.transport_security import TransportSecuritySettings

    hosts = allowed_hosts(endpoint, extra_hosts)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"{scheme}://{h}" for h in hosts for scheme in ("http", "https")],
    )


class BearerAuth:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>``."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self._digest = hashlib.sha256(token.encode()).digest()

    def allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        values = [v for k, v in headers if k.lower() == b"authorization"]
        if len(values) != 1:
            return False
        scheme, _, presented = values[0].strip().partition(b" ")
        presented_digest = hashlib.sha256(presented.strip()).digest()
        return hmac.compare_digest(presented_digest, self._digest) and scheme.lower() == b"bearer"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.allowed(list(scope.get("headers", []))):
            body = json.dumps(
                {
                    "error": "unauthorized",
                    "cause": "missing or wrong bearer token",
                    "next_step": "send 'Authorization: Bearer <SCHEDCP_MCP_TOKEN>'",
                }
            ).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", b'Bearer realm="schedcp"'),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


def asgi_app(server: Any, endpoint: Endpoint, token: str, extra_hosts: list[str] | tuple[str, ...] = ()) -> ASGIApp:
    app = server.streamable_http_app(
        streamable_http_path=MCP_PATH,
        host=endpoint.host,
        max_request_body_size=MAX_BODY_BYTES,
        transport_security=transport_security(endpoint, extra_hosts),
    )
    return BearerAuth(app, token)


def serve(server: Any, endpoint: Endpoint, token: str, extra_hosts: list[str] | tuple[str, ...] = ()) -> None:
    import uvicorn

    config = uvicorn.Config(
        asgi_app(server, endpoint, token, extra_hosts),
        host=endpoint.host,
        port=endpoint.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    uvicorn.Server(config).run()
