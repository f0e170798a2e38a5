# SPDX-License-Identifier: Apache-2.0
"""MCP server building blocks: budgets, argument checks, HTTP auth, client configs, events, VM gate.

The end-to-end behaviour (real stdio and HTTP servers driven by the SDK's client) is in
test_mcp_stdio.py, test_mcp_http.py and test_mcp_vm.py; these tests pin the pieces those rely on.
"""

from __future__ import annotations

import json
import threading
import time
import warnings

import anyio
import mcp_types as types
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mcp import Client

from schedcp.errors import SchedcpError, UsageError
from schedcp.server import budget, clientconfig
from schedcp.server import http as http_mod
from schedcp.server.app import DEPLOY_TOOL_NAMES, build_server
from schedcp.services import checks
from schedcp.services.artifacts import ArtifactStore
from schedcp.services.events import EventHub
from schedcp.services.state import ServerOptions, ServerState
from schedcp.services.vmgate import VmGate

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=300),
    lambda children: st.lists(children, max_size=30) | st.dictionaries(st.text(max_size=12), children, max_size=12),
    max_leaves=400,
)


@settings(max_examples=100, deadline=None)
@given(
    data=st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=12),
    limit=st.integers(min_value=budget.MIN_MAX_BYTES, max_value=8192),
)
def test_fit_always_respects_the_budget(data, limit):
    out = budget.fit(data, limit)
    assert budget.size(out) <= limit
    if budget.size(data) <= limit:
        assert out == data  # nothing is touched when it already fits
    else:
        assert "truncated" in out and "note" in out["truncated"]


def test_fit_halves_the_largest_list_and_says_so():
    data = {"query": "x", "results": [{"name": f"policy{i}", "text": "y" * 200} for i in range(50)]}
    out = budget.fit(data, 2048)
    assert budget.size(out) <= 2048
    assert out["query"] == "x"
    assert 0 < len(out["results"]) < 50
    assert any(c.startswith("results: kept") for c in out["truncated"]["cut"])
    assert out["results"][0] == data["results"][0]  # the head (best hits) survives


def test_error_results_have_cause_and_next_step():
    res = budget.error_result("thing broke", "do this", "bad")
    assert res.is_error
    assert res.content[0].text == "error (bad): thing broke\nnext: do this"


@pytest.mark.parametrize("path", ["/proc/../etc/shadow", "../x", "/sys/../../root", "/proc/\x00x", "/proc/a\nb"])
def test_safe_path_refuses_traversal_and_control_characters(path):
    with pytest.raises(UsageError):
        checks.safe_path(path)


def test_safe_path_normalises_and_requires_absolute():
    assert checks.safe_path("/proc//loadavg") == "/proc/loadavg"
    with pytest.raises(UsageError, match="not absolute"):
        checks.safe_path("proc/loadavg")
    assert checks.safe_path("system.slice", absolute=False) == "system.slice"


@pytest.mark.parametrize("argv", [["ls -l"], ["sh;rm", "-rf"], ["$(id)"], ["-rf"], [""], ["a\x00b"], ["`id`"]])
def test_argv_refuses_shell_lines_and_junk(argv):
    with pytest.raises(UsageError):
        checks.argv(argv)


def test_argv_passes_metacharacters_inside_arguments_untouched():
    # Arguments are exec'd, never shell-parsed, so "a;b" is just a string to the program.
    assert checks.argv(["echo", "a;b", "$HOME"]) == ["echo", "a;b", "$HOME"]


def test_config_dict_bounds_keys_values_and_types():
    assert checks.config_dict({"slice_us": 5000, "direct": True}) == {"slice_us": 5000, "direct": True}
    for bad in (
        {"Bad-Key": 1},
        {"x": {"nested": 1}},
        {"x": "a;rm -rf /"},
        {"x": "y" * 300},
        {f"k{i}": i for i in range(41)},
    ):
        with pytest.raises(UsageError):
            checks.config_dict(bad)


def test_source_text_cap_is_256_kib():
    checks.source_text("x" * checks.MAX_SOURCE_BYTES)
    with pytest.raises(UsageError, match="262144"):
        checks.source_text("x" * (checks.MAX_SOURCE_BYTES + 1))


@pytest.mark.parametrize(
    ("text", "host", "port", "loopback"),
    [
        ("8765", "127.0.0.1", 8765, True),
        (":9000", "127.0.0.1", 9000, True),
        ("127.0.0.1:1", "127.0.0.1", 1, True),
        ("[::1]:8080", "::1", 8080, True),
        ("0.0.0.0:8765", "0.0.0.0", 8765, False),
        ("localhost:80", "localhost", 80, True),
        ("10.1.2.3:443", "10.1.2.3", 443, False),
    ],
)
def test_parse_endpoint(text, host, port, loopback):
    ep = http_mod.parse_endpoint(text)
    assert (ep.host, ep.port, ep.loopback) == (host, port, loopback)


@pytest.mark.parametrize("text", ["host:abc", "1.2.3.4:0", "1.2.3.4:70000", "example.com:80", "[::1]8080"])
def test_parse_endpoint_rejects(text):
    with pytest.raises(UsageError):
        http_mod.parse_endpoint(text)


def test_token_required_on_every_address_and_must_be_strong():
    remote, local = http_mod.parse_endpoint("0.0.0.0:1"), http_mod.parse_endpoint("127.0.0.1:1")
    for endpoint in (remote, local, http_mod.parse_endpoint("127.0.0.2:1"), http_mod.parse_endpoint("[::1]:1")):
        with pytest.raises(UsageError, match="without a token"):
            http_mod.check_token(None, endpoint)
    with pytest.raises(UsageError, match="at least"):
        http_mod.check_token("short", local)
    assert http_mod.check_token("k" * 20, remote) == "k" * 20


def test_bearer_auth_accepts_only_the_exact_token():
    auth = http_mod.BearerAuth(app=None, token="s3cret-token-0123456789")  # type: ignore[arg-type]
    assert auth.allowed([(b"authorization", b"Bearer s3cret-token-0123456789")])
    assert auth.allowed([(b"Authorization", b"bearer s3cret-token-0123456789")])
    for headers in (
        [],
        [(b"authorization", b"Bearer s3cret-token-012345678")],
        [(b"authorization", b"Basic s3cret-token-0123456789")],
        [(b"authorization", b"s3cret-token-0123456789")],
        [(b"authorization", b"Bearer s3cret-token-0123456789"), (b"authorization", b"Bearer x")],
    ):
        assert not auth.allowed(headers)


@pytest.mark.parametrize("client", clientconfig.CLIENTS)
def test_print_config_points_at_this_install(client):
    cfg = json.loads(json.dumps(clientconfig.config_for(client)))
    entry = cfg["mcpServers"]["schedcp"] if "mcpServers" in cfg else cfg
    assert entry["command"].endswith("schedcp") or entry["args"][:2] == ["-m", "schedcp.cli.main"]
    assert entry["args"][-1] == "mcp"
    http_cfg = (
        None
        if client == "claude-desktop"
        else clientconfig.config_for(client, http_mod.parse_endpoint("127.0.0.1:8765"))
    )
    if http_cfg is not None:
        text = json.dumps(http_cfg)
        assert "http://127.0.0.1:8765/mcp" in text and "SCHEDCP_MCP_TOKEN" in text


def test_claude_desktop_http_config_is_refused_with_a_reason():
    with pytest.raises(UsageError, match="stdio"):
        clientconfig.config_for("claude-desktop", http_mod.parse_endpoint("8765"))


def test_event_hub_is_bounded_and_thread_safe():
    hub = EventHub(max_events=20)
    threads = [
        threading.Thread(target=lambda n=n: [hub.publish("t", "k", {"n": n, "i": i}) for i in range(50)])
        for n in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = hub.read("t", limit=100)
    assert got["last_seq"] == 200
    assert len(got["events"]) == 20
    assert [e["seq"] for e in got["events"]] == list(range(181, 201))
    assert hub.read("t", since=195)["events"][0]["seq"] == 196


def test_vm_gate_serialises_and_refuses_beyond_the_queue():
    gate = VmGate(max_waiting=1, wait_s=30)
    inside = threading.Event()
    release = threading.Event()
    order: list[str] = []

    def holder():
        with gate.slot():
            order.append("first")
            inside.set()
            release.wait(10)

    def waiter():
        with gate.slot():
            order.append("second")

    t1 = threading.Thread(target=holder)
    t1.start()
    inside.wait(5)
    t2 = threading.Thread(target=waiter)
    t2.start()
    deadline = time.monotonic() + 5
    while gate.status()["waiting"] != 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(SchedcpError, match="busy") as exc, gate.slot():
        pass
    assert exc.value.code == "busy"
    release.set()
    t1.join(5)
    t2.join(5)
    assert order == ["first", "second"]
    assert gate.status()["busy"] is False


def test_artifact_store_roundtrip_and_id_checks(tmp_path):
    store = ArtifactStore(tmp_path)
    ident = store.put("report", {"verdict": "pass"})
    assert store.get("report", ident) == {"verdict": "pass"}
    assert store.get("report", "rep-doesnotexist") is None
    for bad in ("../../etc/passwd", "a", "x/y", ""):
        with pytest.raises(UsageError):
            store.get("report", bad)


def test_breaker_hook_notifies_subscribed_clients_in_process(tmp_path, monkeypatch):
    """The deploy path's hook reaches a 2025-era subscriber as notifications/resources/updated."""
    monkeypatch.setenv("SCHEDCP_DATA_DIR", str(tmp_path))
    state = ServerState(ServerOptions(artifacts_root=tmp_path / "mcp"))
    server = build_server(state)
    uri = "schedcp://events/breaker"

    async def main() -> list[str]:
        updated: list[str] = []
        got = anyio.Event()

        async def on_message(message) -> None:
            if isinstance(message, types.ServerNotification) and message.method == "notifications/resources/updated":
                updated.append(str(message.params.uri))
                got.set()

        async with Client(server, mode="legacy", message_handler=on_message) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert set(DEPLOY_TOOL_NAMES) <= names
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                await client.subscribe_resource(uri)
            # The deploy path runs in another thread; the hook must be safe to call from there.
            await anyio.to_thread.run_sync(
                lambda: state.events.breaker_tripped(
                    deployment_id="dep-1", policy="fifo", reason="p99 latency +40% for 3 windows"
                )
            )
            with anyio.fail_after(10):
                await got.wait()
            body = json.loads((await client.read_resource(uri)).contents[0].text)
            assert body["events"][-1]["data"]["policy"] == "fifo"
            assert body["events"][-1]["kind"] == "breaker_tripped"
        return updated

    assert anyio.run(main) == [uri]


def test_documented_config_snippets_are_valid_and_match_print_config():
    """docs/mcp.md shows the same shapes --print-config prints (paths aside)."""
    import re
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "mcp.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)```", doc, re.S)]
    assert len(blocks) >= 4
    printed = [clientconfig.config_for(c) for c in ("claude-code", "claude-desktop")]
    endpoint = http_mod.parse_endpoint("127.0.0.1:8765")
    printed += [clientconfig.config_for(c, endpoint) for c in ("claude-code", "cursor")]

    def shape(cfg):
        entry = cfg["mcpServers"]["schedcp"]
        return sorted(entry), entry.get("type"), entry.get("args"), entry.get("url"), entry.get("headers")

    documented = [shape(b) for b in blocks if "mcpServers" in b]
    for cfg in printed:
        assert shape(cfg) in documented, shape(cfg)


def test_every_tool_is_a_service_operation_and_the_cli_face_gets_the_same_answer(tmp_path):
    """The server offers exactly the service layer's operations (nothing registered beside them), each
    tool's schema is its input model's fields plus the budget, and calling an operation in process (the
    CLI's way) gives the value the MCP tool returns."""
    from schedcp.services.operation import by_name, registry

    state = ServerState(ServerOptions(repo_db=tmp_path / "repo.db", artifacts_root=tmp_path / "a"))
    server = build_server(state)

    async def go():
        async with Client(server, mode="legacy") as client:
            tools = (await client.list_tools()).tools
            reply = await client.call_tool("check_candidate", {"policy": "fifo"})
            return tools, json.loads(reply.content[0].text)

    try:
        tools, over_mcp = anyio.run(go)
        ops = registry()
        assert [t.name for t in tools] == [op.name for op in ops]
        for tool, op in zip(tools, ops, strict=True):
            assert set(tool.input_schema["properties"]) == set(op.input.model_fields) | {"max_bytes"}, op.name
        in_process = by_name("check_candidate").call(state, {"policy": "fifo"})
        assert (
            in_process.model_dump(mode="json")
            == over_mcp
            == {
                "ok": True,
                "policy": "fifo",
                "level": "configure",
                "kind": "bpf",
            }
        )
    finally:
        state.close()


def test_agent_package_imports_nothing_from_the_server():
    """sched-agent is an MCP client like any other: no module under schedcp.agent imports schedcp.server."""
    import ast
    from pathlib import Path

    import schedcp.agent

    root = Path(schedcp.agent.__file__).parent
    offenders = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.name}: {n}" for n in names if n == "schedcp.server" or n.startswith("schedcp.server.")
            ]
    assert offenders == []
