# SPDX-License-Identifier: Apache-2.0
"""Start real `schedcp mcp` servers and talk to them with the SDK's own client (tests, benchmarks).

params = stdio_params(env)                       # spawn over stdio
async with Client(params, mode="legacy") as c: ...
with http_server(env, token) as url:             # spawn --http on a free loopback port
    async with http_client(url, token) as c: ...
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx2
from mcp import Client, StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp_types import TextContent


def schedcp_exe() -> str:
    return str(Path(sys.executable).with_name("schedcp"))


def isolated_env(root: Path, **extra: str) -> dict[str, str]:
    """Environment for a server whose state lives under ``root`` only."""
    env = {
        "SCHEDCP_DATA_DIR": str(root / "data"),
        "SCHEDCP_REPO_DB": str(root / "data" / "repository.db"),
        "SCHEDCP_DAEMON_SOCKET": str(root / "no-daemon.sock"),
        "SCHEDCP_RUNTIME_DIR": str(root / "run"),
    }
    for key in ("SCHEDCP_CACHE_DIR", "XDG_CACHE_HOME", "SCHEDCP_CLANG", "SCHEDCP_DEBIAN_MIRROR"):
        if os.environ.get(key):  # where the test kernels and the toolchain are (stdio clients pass few vars)
            env[key] = os.environ[key]
    env.update(extra)
    return env


def stdio_params(env: dict[str, str]) -> StdioServerParameters:
    return StdioServerParameters(command=schedcp_exe(), args=["mcp"], env=env)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def http_server(
    env: dict[str, str], token: str | None, host: str = "127.0.0.1", port: int | None = None
) -> Iterator[str]:
    """Run `schedcp mcp --http` in a subprocess; yields its URL once it answers."""
    port = port or free_port()
    full_env = {**os.environ, **env}
    full_env.pop("SCHEDCP_MCP_TOKEN", None)
    if token:
        full_env["SCHEDCP_MCP_TOKEN"] = token
    bind = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    proc = subprocess.Popen(
        [schedcp_exe(), "mcp", "--http", bind],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://{bind}/mcp"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx2.get(url, timeout=2)
                break
            except httpx2.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"schedcp mcp --http did not start: {err[-800:]}") from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.asynccontextmanager
async def http_client(url: str, token: str | None, mode: str = "legacy", **kwargs: Any) -> AsyncIterator[Client]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        create_mcp_http_client(headers=headers) as http,
        Client(streamable_http_client(url, http_client=http), mode=mode, **kwargs) as client,
    ):
        yield client


async def call(client: Client, tool: str, args: dict[str, Any] | None = None) -> tuple[bool, Any, str]:
    """(is_error, parsed JSON or None, raw text) of one tool call."""
    result = await client.call_tool(tool, args or {})
    first = result.content[0] if result.content else None
    text = first.text if isinstance(first, TextContent) else ""
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    return bool(result.is_error), data, text
