# SPDX-License-Identifier: Apache-2.0
"""The MCP server over real stdio: `.venv/bin/schedcp mcp` spawned and driven by the SDK's client.

Covers the tool list and its schemas, every non-VM tool against the real services (repository in a
temp SQLite file, the analysis engine on this host), output budgets, hostile and malformed
arguments, resources, and resource-update notifications for workload watches.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import anyio
import jsonschema
import mcp_types as types
import pytest
from mcp import Client, StdioServerParameters

from schedcp.server.app import DEPLOY_TOOL_NAMES
from schedcp.server.testing import call, isolated_env, schedcp_exe, stdio_params

EXPECTED_TOOLS = {
    "workload_summary",
    "workload_profile",
    "run_probe",
    "read_file",
    "run_sandboxed",
    "get_feedback",
    "watch_workload",
    "unwatch_workload",
    "search_schedulers",
    "get_scheduler",
    "list_primitives",
    "record_result",
    "promote_scheduler",
    "add_scheduler",
    "verify_scheduler",
    "run_in_vm",
    "deploy_scheduler",
    "deployment_status",
    "rollback",
    # The service layer's operations (schedcp.services): what sched-agent needs, for every agent.
    "best_config",
    "list_antipatterns",
    "record_antipattern",
    "start_testbed",
    "testbed_status",
    "stop_testbed",
    "check_candidate",
    "build_scheduler",
    "run_trial",
}
PROFILE = {
    "summary": "CPU-bound parallel batch of similar jobs started together",
    "goal": "makespan",
    "characteristics": {"classification": "cpu_bound", "parallelism": 1.9},
}


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    return isolated_env(tmp_path_factory.mktemp("mcp-stdio"))


def session(env: dict[str, str], fn, mode: str = "legacy", **client_kwargs):
    """Run ``fn(client)`` against a freshly spawned stdio server; returns what it returns."""

    async def main():
        async with Client(stdio_params(env), mode=mode, **client_kwargs) as client:
            return await fn(client)

    return anyio.run(main)


def assert_tool_error(is_error: bool, text: str, *fragments: str) -> None:
    assert is_error, text
    assert text.startswith("error ("), text
    assert "\nnext: " in text, text
    assert "Traceback" not in text and 'File "' not in text, text
    assert len(text) <= 2000
    for fragment in fragments:
        assert fragment in text, text


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_tool_list_names_schemas_and_annotations(env, mode):
    async def fn(client: Client):
        return client.protocol_version, (await client.list_tools()).tools

    version, tools = session(env, fn, mode=mode)
    assert version == ("2025-11-25" if mode == "legacy" else "2026-07-28")
    names = {t.name for t in tools}
    assert names == EXPECTED_TOOLS
    assert set(DEPLOY_TOOL_NAMES) <= names  # the deploy path, through the daemon
    for tool in tools:
        schema = tool.input_schema
        jsonschema.Draft202012Validator.check_schema(schema)
        assert schema["type"] == "object" and schema["additionalProperties"] is False, tool.name
        assert len(tool.description) > 60, tool.name
        for pname, prop in schema["properties"].items():
            assert prop.get("description"), f"{tool.name}.{pname} has no description"
        assert tool.annotations is not None and tool.annotations.read_only_hint is not None
        validator = jsonschema.Draft202012Validator(schema)
        assert not validator.is_valid({**{r: "x" for r in schema.get("required", [])}, "no_such_argument": 1})
    by_name = {t.name: t for t in tools}
    assert by_name["add_scheduler"].annotations.read_only_hint is False
    assert by_name["get_scheduler"].annotations.read_only_hint is True
    src = by_name["add_scheduler"].input_schema["properties"]["source"]
    assert src["maxLength"] == 256 * 1024


def test_every_non_vm_tool_answers_within_budget(env):
    async def fn(client: Client):
        out = {}
        out["summary"] = await call(client, "workload_summary", {"duration_s": 0.5})
        out["summary_cmd"] = await call(
            client, "workload_summary", {"command": [sys.executable, "-c", "sum(range(3_000_000))"], "duration_s": 3}
        )
        out["profile"] = await call(
            client,
            "workload_profile",
            {
                "command": [sys.executable, "-c", "import time; [sum(range(200000)) for _ in range(20)]"],
                "duration_s": 4,
            },
        )
        out["search"] = await call(client, "search_schedulers", {"query": "parallel batch, minimise makespan", "k": 3})
        out["get"] = await call(client, "get_scheduler", {"name": "fifo"})
        out["get_full"] = await call(client, "get_scheduler", {"name": "fifo", "detail": "full", "max_bytes": 16384})
        out["prims"] = await call(client, "list_primitives", {})
        out["prim_query"] = await call(client, "list_primitives", {"query": "starvation of long tasks", "k": 2})
        out["prim_one"] = await call(client, "list_primitives", {"name": "aging", "max_bytes": 16384})
        out["read"] = await call(client, "read_file", {"path": "/proc/loadavg"})
        out["sandboxed"] = await call(client, "run_sandboxed", {"argv": ["sh", "-c", "echo hello; id -u"]})
        out["feedback"] = await call(client, "get_feedback", {"workload_key": "never-measured"})
        source = (await client.read_resource("schedcp://scheduler/fifo/source")).contents[0].text
        out["add"] = await call(
            client,
            "add_scheduler",
            {
                "name": "fifo_agent_copy",
                "source": source,
                "parent": "fifo",
                "description": "A copy of fifo saved by an agent to exercise the write path of the repository.",
                "tags": ["fifo", "test"],
                "tunables": [
                    {
                        "name": "slice_us",
                        "type": "u64",
                        "default": 5000,
                        "min": 100,
                        "max": 1000000,
                        "description": "slice length",
                    }
                ],
            },
        )
        out["record"] = await call(
            client,
            "record_result",
            {
                "policy": "fifo_agent_copy",
                "profile": PROFILE,
                "metrics": {"makespan_s": 9.0},
                "baseline": {"makespan_s": 10.0},
                "config": {"slice_us": 5000},
            },
        )
        out["promote"] = await call(
            client,
            "promote_scheduler",
            {"name": "fifo_agent_copy", "reason": "beat EEVDF by 10% on the batch in the micro-VM"},
        )
        out["demote"] = await call(
            client,
            "promote_scheduler",
            {
                "name": "fifo_agent_copy",
                "direction": "demote",
                "reason": "regressed interactive latency",
                "antipattern": "a global FIFO makes interactive tasks wait behind every CPU hog",
            },
        )
        out["get_copy"] = await call(client, "get_scheduler", {"name": "fifo_agent_copy", "detail": "full"})
        out["profile_doc"] = json.loads((await client.read_resource(out["profile"][1]["profile_uri"])).contents[0].text)
        return out

    out = session(env, fn)
    for key, (is_error, data, text) in out.items():
        if key == "profile_doc":
            continue
        assert not is_error or key == "promote", f"{key}: {text}"
        assert isinstance(data, dict) or key == "promote", key
        limit = 16384 if key in ("get_full", "prim_one") else (1536 if key.startswith("summary") else 5120)
        assert len(text.encode()) <= limit, f"{key} returned {len(text.encode())} bytes"
    assert out["summary"][1]["target"] == "system"
    # The command's summary is about that command (the system one above is about the system).
    cmd = out["summary_cmd"][1]
    assert cmd["target"] == f"cmd: {sys.executable} -c sum(range(3_000_000))", cmd["target"]
    assert cmd["class"] in ("cpu_bound", "latency_sensitive", "io_bound", "mixed", "idle")
    prof = out["profile"][1]
    assert prof["profile_id"].startswith("pro-") and prof["for_repository"]["goal"]
    assert out["profile_doc"]["profile"]["summary"] == prof["for_repository"]["summary"]
    assert [r["name"] for r in out["search"][1]["results"]]
    assert out["get"][1]["name"] == "fifo" and out["get"][1]["source_uri"] == "schedcp://scheduler/fifo/source"
    assert "status_log" in out["get_full"][1] and "status_log" not in out["get"][1]
    assert out["prims"][1]["count"] >= 5
    assert "snippet" in out["prim_one"][1]
    assert out["read"][1]["text"].count(" ") >= 4
    assert out["sandboxed"][1]["stdout"] == "hello\n65534\n"  # ran as nobody inside the sandbox
    assert out["feedback"][1]["rows"] == []
    assert out["add"][1]["status"] == "candidate"
    assert out["record"][1]["beat_baseline"] is True
    # A reported win and a reason are not evidence: promotion needs the daemon's verification record.
    assert out["promote"][0] and "no_evidence" in out["promote"][2], out["promote"][2]
    assert out["demote"][1]["to"] == "deprecated" and out["demote"][1]["antipattern"]["policy"] == "fifo_agent_copy"
    copy = out["get_copy"][1]
    assert copy["parent"] == "fifo" and copy["results"] and copy["antipatterns"]


def test_budgets_cut_with_a_note_and_paging_reaches_everything(env, tmp_path):
    big = "".join(f"line {i:05d} of a file the agent pages through\n" for i in range(400))
    (tmp_path / "notes.txt").write_text(big)
    holder = subprocess.Popen(["sleep", "60"], cwd=tmp_path)

    async def fn(client: Client):
        small = await call(client, "list_primitives", {"max_bytes": 512})
        pages, offset = [], 0
        for _ in range(100):
            is_error, data, text = await call(
                client,
                "read_file",
                {"path": str(tmp_path / "notes.txt"), "workload_pid": holder.pid, "offset": offset, "max_bytes": 4096},
            )
            assert not is_error, text
            assert len(text.encode()) <= 4096
            pages.append(data["text"])
            if "next_offset" not in data:
                break
            assert "offset=" in data["truncated"]["note"]
            offset = data["next_offset"]
        return small, "".join(pages)

    try:
        small, whole = session(env, fn)
    finally:
        holder.kill()
    is_error, data, text = small
    assert not is_error and len(text.encode()) <= 512
    assert "max_bytes" in data["truncated"]["note"]
    assert whole == big


HOSTILE = [
    ("read_file", {"path": "/proc/../etc/shadow"}, "'..'"),
    ("read_file", {"path": "/etc/shadow"}, "outside the allowed roots"),
    ("read_file", {"path": "/proc/self/root/etc/shadow"}, "outside the allowed roots"),
    ("read_file", {"path": "/proc/self/environ"}, "environ"),
    ("read_file", {"path": "relative/path"}, "absolute"),
    ("run_sandboxed", {"argv": ["ls -la; rm -rf /"]}, "not a program name"),
    ("run_sandboxed", {"argv": "rm -rf /"}, "argv"),
    ("run_sandboxed", {"argv": []}, "argv"),
    ("run_sandboxed", {"argv": ["true"], "timeout_s": 10_000}, "timeout_s"),
    ("get_scheduler", {"name": "fifo; rm -rf /"}, "name"),
    ("get_scheduler", {"name": "../../etc/passwd"}, "name"),
    ("get_scheduler", {"name": "fifo", "detail": "everything"}, "detail"),
    ("get_scheduler", {"name": "fifo", "unexpected": True}, "unexpected"),
    ("get_scheduler", {"name": ["fifo"]}, "name"),
    ("get_scheduler", {}, "name"),
    ("search_schedulers", {"query": "x" * 5000}, "query"),
    ("search_schedulers", {"query": "ok query", "k": "five"}, "k"),
    ("search_schedulers", {"query": "ok query", "k": 10_000}, "k"),
    ("search_schedulers", {"query": "ok query", "max_bytes": 10}, "max_bytes"),
    ("workload_summary", {"pid": "1; reboot"}, "pid"),
    ("workload_summary", {"pid": -1}, "pid"),
    ("workload_summary", {"cgroup": "../../etc"}, "cgroup"),
    ("workload_summary", {"cgroup": "system.slice; reboot"}, "cgroup"),
    ("workload_summary", {"pid": 1, "cgroup": "system.slice"}, "at most one target"),
    ("workload_summary", {"command": ["sh -c reboot"]}, "not a program name"),
    ("add_scheduler", {"name": "big", "description": "d" * 50, "source": "s" * (300 * 1024)}, "source"),
    ("add_scheduler", {"name": "Bad Name", "description": "d" * 50, "source": "s" * 100}, "name"),
    ("verify_scheduler", {"source": "x" * (257 * 1024)}, "source"),
    ("verify_scheduler", {"source": "int main;" * 10, "config": {"k": {"nested": 1}}}, "config"),
    ("verify_scheduler", {}, "exactly one of source"),
    ("run_in_vm", {"workload": "no_such_workload"}, "workload"),
    ("run_in_vm", {"workload": "cpupool", "workload_args": ["--x; reboot"]}, "not allowed"),
    ("run_in_vm", {"workload": "cpupool", "argv": ["true"]}, "exactly one"),
    ("run_in_vm", {"argv": ["reboot -f"]}, "not a program name"),
    ("run_in_vm", {"workload": "cpupool", "scheduler": "fifo", "config": {"x": "$(reboot)"}}, "not allowed"),
    ("record_result", {"policy": "fifo", "profile": PROFILE, "metrics": {"x": "fast"}}, "metrics"),
    (
        "record_result",
        {"policy": "fifo", "profile": {"summary": "s", "goal": "Bad Goal!"}, "metrics": {"x": 1}},
        "profile",
    ),
    ("promote_scheduler", {"name": "fifo", "reason": "x"}, "reason"),
    ("watch_workload", {"kind": "process_appears", "comm": "a;b"}, "comm"),
    ("unwatch_workload", {"watch_id": "w-0000000000"}, "no active watch"),
    ("no_such_tool", {}, "no tool named"),
]


def test_hostile_and_malformed_arguments_are_refused_cleanly(env):
    async def fn(client: Client):
        return [(tool, args, expect, await call(client, tool, args)) for tool, args, expect in HOSTILE]

    for tool, args, expect, (is_error, _data, text) in session(env, fn):
        assert_tool_error(is_error, text, expect)
        assert "s" * 200 not in text and "x" * 200 not in text, f"{tool} echoed a huge argument back"
        del args


def test_resources_and_their_errors(env):
    async def fn(client: Client):
        templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
        static = {str(r.uri) for r in (await client.list_resources()).resources}
        src = (await client.read_resource("schedcp://scheduler/fifo/source")).contents[0]
        errors = []
        for uri in (
            "schedcp://report/rep-0000000000000000",
            "schedcp://scheduler/nosuch/source",
            "schedcp://scheduler/..%2F..%2Fetc%2Fpasswd/source",
            "schedcp://profile/..%2Fx",
        ):
            try:
                await client.read_resource(uri)
                errors.append(None)
            except Exception as exc:  # the SDK raises MCPError for a failed read
                errors.append(str(exc))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                await client.subscribe_resource("schedcp://scheduler/fifo/source")
                refused = None
            except Exception as exc:
                refused = str(exc)
        return templates, static, src, errors, refused

    templates, static, src, errors, refused = session(env, fn)
    assert {
        "schedcp://scheduler/{name}/source",
        "schedcp://report/{report_id}",
        "schedcp://profile/{profile_id}",
        "schedcp://run/{run_id}",
        "schedcp://events/watch/{watch_id}",
    } <= templates
    assert "schedcp://events/breaker" in static
    assert src.mime_type == "text/x-c" and "struct_ops" in src.text
    assert all(errors), errors
    assert "passwd" not in " ".join(e for e in errors if e and "Unknown resource" not in e)
    assert refused and "never changes" in refused


@pytest.mark.parametrize("mode", ["legacy", "auto"])
def test_workload_watch_notifies_subscribers(env, tmp_path, mode):
    """A process appearing fires resources/updated (2025 clients) or a listen event (2026 clients)."""
    program = tmp_path / f"zzmcp{mode[:3]}"
    shutil.copy("/bin/sleep", program)
    updated: list[str] = []
    notified = anyio.Event()

    async def on_message(message) -> None:
        if isinstance(message, types.ServerNotification) and message.method == "notifications/resources/updated":
            updated.append(str(message.params.uri))
            notified.set()

    async def fn(client: Client):
        # watch_workload returns once the watch has its baseline, and subscribing returns once the
        # server holds the subscription: a process started after both is an appearance, no waiting.
        is_error, data, text = await call(
            client, "watch_workload", {"kind": "process_appears", "comm": f"zzmcp{mode[:3]}*", "poll_s": 0.2}
        )
        assert not is_error, text
        uri = data["resource_uri"]
        proc = None
        try:
            if mode == "legacy":
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    await client.subscribe_resource(uri)
                proc = subprocess.Popen([str(program), "5"])
                with anyio.fail_after(20):
                    await notified.wait()
                assert updated == [uri]
            else:
                async with client.listen(resource_subscriptions=[uri]) as sub:
                    proc = subprocess.Popen([str(program), "5"])
                    with anyio.fail_after(20):
                        async for event in sub:
                            assert event.uri == uri
                            break
            body = json.loads((await client.read_resource(uri)).contents[0].text)
            stop = await call(client, "unwatch_workload", {"watch_id": data["watch_id"]})
            return proc.pid, body, stop
        finally:
            if proc is not None:
                proc.kill()

    pid, body, stop = session(env, fn, mode=mode, message_handler=on_message)
    event = body["events"][0]
    assert event["kind"] == "process_appeared" and pid in event["data"]["pids"]
    assert not stop[0] and stop[1]["stopped"] is True


def test_run_probe_without_daemon_says_how_to_start_it(env):
    async def fn(client: Client):
        return await call(client, "run_probe", {"kind": "runqlat", "duration_s": 1})

    is_error, _data, text = session(env, fn)
    assert_tool_error(is_error, text, "daemon", "schedcp daemon")


def test_run_probe_goes_through_the_daemon(tmp_path):
    from schedcp.daemon.testing import running_daemon

    with running_daemon(tmp_path / "daemon") as daemon:
        env = isolated_env(tmp_path, SCHEDCP_DAEMON_SOCKET=str(daemon.path))
        busy = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.001)"])
        try:

            async def fn(client: Client):
                return await call(client, "run_probe", {"kind": "runqlat", "duration_s": 1, "pid": busy.pid})

            is_error, data, text = session(env, fn)
        finally:
            busy.kill()
        audit = daemon.audit_tail(5)
    assert not is_error, text
    assert len(text.encode()) <= 4096 and data["runqlat"]["count"] > 0, text
    # The daemon did the work: it audited this probe of this process, begun and ended ok.
    begun = [e for e in audit if e["event"] == "probe" and e["phase"] == "begin"]
    assert [e["fields"] for e in begun] == [{"kind": "runqlat", "duration_s": 1.0, "pid": busy.pid}], audit
    ended = [e for e in audit if e["event"] == "probe" and e["phase"] == "end" and e["op_id"] == begun[0]["op_id"]]
    assert [e["outcome"] for e in ended] == ["ok"], audit


def test_parallel_stdio_servers_share_one_repository_safely(tmp_path):
    """Each stdio client spawns its own server: four processes writing one SQLite file at once."""
    env = isolated_env(tmp_path)
    source = (Path(__file__).resolve().parents[1] / "src/schedcp/schedulers/library/fifo.bpf.c").read_text()

    async def worker(i: int, errors: list[str]) -> None:
        async with Client(stdio_params(env), mode="legacy") as client:
            steps = [
                (
                    "add_scheduler",
                    {
                        "name": f"par_{i}",
                        "source": source,
                        "description": f"Parallel-process write test policy {i}, a fifo copy.",
                    },
                )
            ]
            steps += [
                (
                    "record_result",
                    {
                        "policy": f"par_{i}",
                        "profile": PROFILE,
                        "metrics": {"makespan_s": 9.0},
                        "baseline": {"makespan_s": 10.0},
                    },
                )
                for _ in range(3)
            ]
            steps += [
                ("search_schedulers", {"query": "parallel write test fifo copy"}),
                ("get_scheduler", {"name": f"par_{i}", "detail": "full"}),
            ]
            for tool, args in steps:
                is_error, _data, text = await call(client, tool, args)
                if is_error:
                    errors.append(f"{i} {tool}: {text}")

    async def main() -> list[str]:
        errors: list[str] = []
        async with anyio.create_task_group() as tg:
            for i in range(4):
                tg.start_soon(worker, i, errors)
        return errors

    assert anyio.run(main) == []
    import sqlite3

    db = sqlite3.connect(env["SCHEDCP_REPO_DB"])
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        counts = dict(
            db.execute(
                "SELECT p.name, COUNT(r.id) FROM policies p LEFT JOIN results r ON r.policy_id = p.id"
                " WHERE p.name LIKE 'par_%' GROUP BY p.name"
            ).fetchall()
        )
    finally:
        db.close()
    assert counts == {f"par_{i}": 3 for i in range(4)}


@pytest.mark.parametrize("client_name", ["claude-code", "claude-desktop", "cursor", "generic"])
def test_printed_stdio_configs_launch_a_working_server(env, client_name):
    out = subprocess.run(
        [schedcp_exe(), "mcp", "--print-config", client_name],
        capture_output=True,
        text=True,
        env={**env, "PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    entry = cfg["mcpServers"]["schedcp"] if "mcpServers" in cfg else cfg
    assert Path(entry["command"]).is_absolute()
    assert entry["env"]["SCHEDCP_REPO_DB"] == env["SCHEDCP_REPO_DB"]  # the client's server sees the same state
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=entry["env"])

    async def main():
        async with Client(params, mode="legacy") as client:
            return {t.name for t in (await client.list_tools()).tools}

    assert anyio.run(main) == EXPECTED_TOOLS
