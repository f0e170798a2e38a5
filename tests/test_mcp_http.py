# SPDX-License-Identifier: Apache-2.0
"""The MCP server over real streamable HTTP: bearer-token auth, both protocol eras, and many
concurrent clients writing to and reading from one repository without corrupting it."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import anyio
import httpx2
import pytest

from schedcp.daemon.records import VerificationRecords
from schedcp.paths import schedulers_dir
from schedcp.repository.store import sha256_text
from schedcp.server.testing import call, free_port, http_client, http_server, isolated_env, schedcp_exe

TOKEN = "mcp-test-token-3b1f0c9e5a7d4e21"
PROFILE = {
    "summary": "parallel batch of equal CPU-bound jobs",
    "goal": "makespan",
    "characteristics": {"classification": "cpu_bound"},
}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    env = isolated_env(tmp_path_factory.mktemp("mcp-http"))
    with http_server(env, TOKEN) as url:
        yield url, env


def test_unauthenticated_and_wrong_token_get_401(server):
    url, _ = server
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
    }
    accept = {"accept": "application/json, text/event-stream"}
    for headers in (
        {},
        {"authorization": "Bearer wrong-token-0000000000"},
        {"authorization": f"Basic {TOKEN}"},
        {"authorization": TOKEN},
    ):
        reply = httpx2.post(url, json=init, headers={**accept, **headers})
        assert reply.status_code == 401, headers
        assert reply.headers["www-authenticate"].startswith("Bearer")
        assert reply.json()["error"] == "unauthorized"
    ok = httpx2.post(url, json=init, headers={**accept, "authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200


def test_oversized_request_bodies_are_refused(server):
    url, _ = server
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": "add_scheduler", "arguments": {"source": "x" * (2 * 1024 * 1024)}},
    }
    reply = httpx2.post(
        url, json=body, headers={"authorization": f"Bearer {TOKEN}", "accept": "application/json, text/event-stream"}
    )
    assert reply.status_code == 413


def test_sdk_client_without_token_cannot_connect(server):
    url, _ = server

    async def main():
        async with http_client(url, None) as client:
            await client.list_tools()

    with pytest.raises(BaseException) as exc:  # the SDK surfaces the 401 from inside its task group
        anyio.run(main)
    assert "401" in repr(exc.value) or "Unauthorized" in repr(exc.value) or exc.type is not AssertionError


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_authenticated_client_works_in_both_eras(server, mode):
    url, _ = server

    async def main():
        async with http_client(url, TOKEN, mode=mode) as client:
            tools = {t.name for t in (await client.list_tools()).tools}
            got = await call(client, "get_scheduler", {"name": "fifo"})
            bad = await call(client, "get_scheduler", {"name": "x;y"})
            return client.protocol_version, tools, got, bad

    version, tools, got, bad = anyio.run(main)
    assert version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    assert {"search_schedulers", "run_in_vm", "verify_scheduler", "workload_summary"} <= tools
    assert not got[0] and got[1]["name"] == "fifo"
    assert bad[0] and bad[2].startswith("error (invalid_arguments)")


def test_eight_concurrent_sessions_keep_the_repository_consistent(server):
    url, env = server
    sessions, rounds = 8, 3
    # The copies are fifo byte for byte; the daemon passed that source (what its verify op records),
    # so the promotions below rest on evidence. The server runs as root and reads the records itself.
    fifo = (schedulers_dir() / "library" / "fifo.bpf.c").read_text()
    VerificationRecords(Path(env["SCHEDCP_DATA_DIR"])).add(
        sha256_text(fifo), {"verdict": "pass", "object_sha256": "ef" * 32}, "test-token", peer_uid=0
    )

    async def worker(i: int, errors: list[str]) -> None:
        mode = "legacy" if i % 2 else "auto"
        async with http_client(url, TOKEN, mode=mode) as client:
            source = (await client.read_resource("schedcp://scheduler/fifo/source")).contents[0].text
            name = f"conc_{i}"
            steps = [
                (
                    "add_scheduler",
                    {
                        "name": name,
                        "source": source,
                        "parent": "fifo",
                        "description": f"Concurrent-write test policy number {i}, a fifo copy.",
                    },
                )
            ]
            for r in range(rounds):
                steps += [
                    (
                        "record_result",
                        {
                            "policy": name,
                            "profile": PROFILE,
                            "metrics": {"makespan_s": 10.0 - r},
                            "baseline": {"makespan_s": 10.5},
                        },
                    ),
                    (
                        "record_result",
                        {
                            "policy": "fifo",
                            "profile": PROFILE,
                            "metrics": {"makespan_s": 11.0},
                            "baseline": {"makespan_s": 10.0},
                            "notes": f"session {i} round {r}",
                        },
                    ),
                    ("search_schedulers", {"query": "concurrent write test fifo copy", "k": 3}),
                    ("get_scheduler", {"name": f"conc_{(i + 1) % sessions}", "detail": "full"}),
                ]
            steps.append(("promote_scheduler", {"name": name, "reason": f"session {i} measured a win"}))
            for tool, args in steps:
                is_error, _data, text = await call(client, tool, args)
                # Another session's policy may not exist yet; that is the only acceptable error.
                if is_error and not (tool == "get_scheduler" and "no policy named" in text):
                    errors.append(f"session {i} {tool}: {text}")

    async def main() -> list[str]:
        errors: list[str] = []
        async with anyio.create_task_group() as tg:
            for i in range(sessions):
                tg.start_soon(worker, i, errors)
        return errors

    errors = anyio.run(main)
    assert errors == []

    db = sqlite3.connect(env["SCHEDCP_REPO_DB"])
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("PRAGMA foreign_key_check").fetchall() == []
        ids = dict(db.execute("SELECT name, id FROM policies WHERE name = 'fifo' OR name LIKE 'conc_%'").fetchall())
        assert {f"conc_{i}" for i in range(sessions)} <= set(ids)
        per_policy = dict(db.execute("SELECT policy_id, COUNT(*) FROM results GROUP BY policy_id").fetchall())
        assert per_policy[ids["fifo"]] >= sessions * rounds
        for i in range(sessions):
            assert per_policy[ids[f"conc_{i}"]] == rounds
        statuses = {n: s for n, s in db.execute("SELECT name, status FROM policies WHERE name LIKE 'conc_%'")}
        assert set(statuses.values()) == {"verified"}
    finally:
        db.close()


def test_refuses_to_listen_off_loopback_without_a_token(tmp_path):
    env = {**isolated_env(tmp_path), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [schedcp_exe(), "mcp", "--http", f"0.0.0.0:{free_port()}"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 2
    said = " ".join(out.stderr.split())  # undo the terminal's line wrapping
    assert "without a token" in said and "SCHEDCP_MCP_TOKEN" in said


def test_off_loopback_bind_with_token_requires_it(tmp_path):
    with http_server(isolated_env(tmp_path), TOKEN, host="0.0.0.0") as url:
        local = url.replace("0.0.0.0", "127.0.0.1")
        assert httpx2.get(local).status_code == 401

        async def main():
            async with http_client(local, TOKEN) as client:
                return len((await client.list_tools()).tools)

        assert anyio.run(main) >= 16


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_every_loopback_address_refuses_to_start_without_a_token(tmp_path, host):
    """Replay: `mcp --http` on a loopback address other than 127.0.0.1 ran with no token at all."""
    env = {**isolated_env(tmp_path), "PATH": "/usr/bin:/bin"}
    bind = f"[{host}]:{free_port()}" if ":" in host else f"{host}:{free_port()}"
    out = subprocess.run([schedcp_exe(), "mcp", "--http", bind], capture_output=True, text=True, env=env, timeout=60)
    said = " ".join(out.stderr.split())  # undo the terminal's line wrapping
    assert out.returncode == 2 and "without a token" in said and "Traceback" not in out.stderr


INIT = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}},
}
ACCEPT = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


@pytest.mark.parametrize("host", ["127.0.0.2", "::1", "localhost"])
def test_token_host_and_origin_are_checked_on_every_loopback_address(tmp_path, host):
    """Replay: on 127.0.0.2 or ::1 the server ran with no token and no Host/Origin checks, so a
    local user or a DNS-rebound web page could call the tools."""
    port = free_port()
    with http_server(isolated_env(tmp_path), TOKEN, host=host, port=port) as url:
        assert httpx2.post(url, json=INIT, headers=ACCEPT).status_code == 401
        auth = {**ACCEPT, "authorization": f"Bearer {TOKEN}"}
        rebound = httpx2.post(url, json=INIT, headers={**auth, "host": f"attacker.example:{port}"})
        assert rebound.status_code == 421
        other_port = httpx2.post(url, json=INIT, headers={**auth, "host": f"127.0.0.1:{port + 1}"})
        assert other_port.status_code == 421
        cross = httpx2.post(url, json=INIT, headers={**auth, "origin": "http://attacker.example"})
        assert cross.status_code == 403
        same = f"http://{'[::1]' if host == '::1' else host}:{port}"
        assert httpx2.post(url, json=INIT, headers={**auth, "origin": same}).status_code == 200
        assert httpx2.post(url, json=INIT, headers=auth).status_code == 200
