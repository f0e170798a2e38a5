# SPDX-License-Identifier: Apache-2.0
"""Attacks on the daemon boundary, each replayed against the real code and shown refused.

The tests run as root (as the project's CI does); "another local user" is simulated with real
uids (65534, 12345) through os.chown and subprocesses that drop to them with os.setuid.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from conftest import run_cli
from schedcp import paths
from schedcp.daemon.audit import AuditLog, AuditPaths, verify_log
from schedcp.daemon.client import DaemonClient
from schedcp.daemon.limits import Limits, prune_submissions
from schedcp.daemon.peers import Peer
from schedcp.daemon.server import DaemonConfig, DaemonServer, Operations
from schedcp.daemon.testing import daemon_process
from schedcp.errors import SchedcpError

NOBODY = 65534
OTHER = 12345


def _drop(uid: int):
    def drop() -> None:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)

    return drop


def _as_user(uid: int, code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/usr/bin/python3", "-c", code, *args],
        capture_output=True,
        text=True,
        preexec_fn=_drop(uid),
        timeout=timeout,
        cwd="/",
        env={"PATH": "/usr/bin:/bin", "HOME": "/"},
    )


def said(out: subprocess.CompletedProcess[str]) -> str:
    """What a CLI printed, with the terminal's line wrapping undone."""
    return " ".join((out.stdout + out.stderr).split())


@pytest.fixture
def public_dir() -> Iterator[Path]:
    """A 0755 root directory other uids can traverse (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="schedcp-sec-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


# ---- issue 3: runtime directories, sockets, server identity --------------------------------------------------


def test_root_defaults_are_system_directories(monkeypatch: pytest.MonkeyPatch) -> None:
    """The old default for root without XDG_RUNTIME_DIR (sudo, systemd) was /tmp/schedcp-0."""
    for var in ("SCHEDCP_RUNTIME_DIR", "XDG_RUNTIME_DIR", "SCHEDCP_DATA_DIR", "SCHEDCP_DAEMON_SOCKET"):
        monkeypatch.delenv(var, raising=False)
    assert paths.runtime_dir_path() == Path("/run/schedcp")
    assert paths.data_dir() == Path("/var/lib/schedcp")
    assert paths.daemon_socket() == Path("/run/schedcp/daemon.sock")


def test_runtime_dir_created_first_by_another_user_is_refused(public_dir: Path, monkeypatch) -> None:
    """Replay: a user pre-creates root's runtime dir and plants accel.json as a link to a root-only
    file; root used to write through it. Now the directory is refused before anything is written."""
    victim = public_dir / "root-only"
    victim.write_text("secret")
    victim.chmod(0o600)
    planted = public_dir / "rt"
    planted.mkdir()
    os.symlink(victim, planted / "accel.json")
    os.chown(planted, NOBODY, NOBODY)
    planted.chmod(0o777)
    monkeypatch.setenv("SCHEDCP_RUNTIME_DIR", str(planted))
    from schedcp.testbed import accel

    with pytest.raises(paths.UnsafePathError) as err:
        accel.detect(Path("/nonexistent/vmlinuz"))
    assert "owned by uid 65534" in err.value.cause
    assert victim.read_text() == "secret" and stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_private_dir_refuses_links_and_writable_dirs(public_dir: Path) -> None:
    target = public_dir / "target"
    target.mkdir()
    link = public_dir / "link"
    os.symlink(target, link)
    with pytest.raises(paths.UnsafePathError):
        paths.private_dir(link)
    loose = public_dir / "loose"
    loose.mkdir()
    loose.chmod(0o777)
    with pytest.raises(paths.UnsafePathError) as err:
        paths.private_dir(loose)
    assert "writable by group or others" in err.value.cause
    fresh = paths.private_dir(public_dir / "fresh" / "deeper")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o700 and fresh.stat().st_uid == 0


def test_non_root_default_runtime_dir_squatted_by_another_user(public_dir: Path) -> None:
    """Replay for an ordinary user without XDG_RUNTIME_DIR: /tmp/schedcp-<uid> made first by someone else."""
    squat = Path(f"/tmp/schedcp-{OTHER}")
    shutil.rmtree(squat, ignore_errors=True)
    squat.mkdir(mode=0o777)
    os.chown(squat, NOBODY, NOBODY)
    try:
        code = textwrap.dedent(
            f"""
            import sys; sys.path.insert(0, {str(Path(paths.__file__).parents[1])!r})
            from schedcp import paths
            try:
                paths.runtime_dir()
            except paths.UnsafePathError as exc:
                print("refused:", exc.cause)
            else:
                print("accepted")
            """
        )
        out = _as_user(OTHER, code)
        assert out.stdout.startswith("refused:") and "owned by uid 65534" in out.stdout, out.stderr
    finally:
        shutil.rmtree(squat, ignore_errors=True)


FAKE_DAEMON = textwrap.dedent(
    """
    import json, socket, sys
    path, log = sys.argv[1], sys.argv[2]
    srv = socket.socket(socket.AF_UNIX); srv.bind(path); srv.listen(4)
    import os; os.chmod(path, 0o777)
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(5)
    try:
        data = conn.recv(65536)
    except OSError:
        data = b""
    open(log, "wb").write(data)
    forged = {"id": 1, "ok": True, "result": {"report": {"verdict": "pass"}, "token_id": "forged"}}
    try:
        conn.sendall(json.dumps(forged).encode() + b"\\n")
    except OSError:
        pass
    """
)


def test_root_client_refuses_a_fake_daemon(public_dir: Path) -> None:
    """Replay: a non-root process listens where the daemon should be and answers "pass"."""
    squat = public_dir / "rt"  # the attacker's directory where the daemon's socket should be
    squat.mkdir()
    os.chown(squat, NOBODY, NOBODY)
    sock, log = squat / "daemon.sock", public_dir / "received"
    log.touch()
    os.chown(log, NOBODY, NOBODY)
    fake = subprocess.Popen(
        ["/usr/bin/python3", "-c", FAKE_DAEMON, str(sock), str(log)],
        preexec_fn=_drop(NOBODY),
        stdout=subprocess.PIPE,
        text=True,
        cwd="/",
    )
    try:
        assert fake.stdout is not None and fake.stdout.readline().strip() == "ready"
        with pytest.raises(SchedcpError) as err:
            DaemonClient(sock).verify("int main(void) { return 0; }\n", "x.c")
        assert err.value.code == "daemon_untrusted" and "uid 65534" in err.value.cause
        fake.wait(10)
        assert log.read_bytes() == b""  # the request was never sent
    finally:
        fake.kill()
        fake.wait()


def test_socket_option_never_removes_a_regular_file(tmp_path: Path) -> None:
    """Replay: `schedcp daemon --socket PATH` as root used to unlink whatever was at PATH."""
    precious = tmp_path / "precious.txt"
    precious.write_text("keep me")
    precious.chmod(0o640)
    out = run_cli("daemon", "--socket", str(precious), timeout=60, env={"SCHEDCP_DATA_DIR": str(tmp_path / "s")})
    assert out.returncode == 2, out.stderr
    assert "not a socket; refusing to remove it" in said(out) and "Traceback" not in out.stderr
    assert precious.read_text() == "keep me" and stat.S_IMODE(precious.stat().st_mode) == 0o640
    link = tmp_path / "link.sock"
    os.symlink(precious, link)
    out = run_cli("daemon", "--socket", str(link), timeout=60, env={"SCHEDCP_DATA_DIR": str(tmp_path / "s")})
    assert out.returncode == 2 and "symbolic link" in said(out)
    assert precious.read_text() == "keep me"


def test_socket_in_a_world_writable_directory_is_refused(public_dir: Path) -> None:
    public_dir.chmod(0o1777)
    out = run_cli(
        "daemon", "--socket", str(public_dir / "d.sock"), timeout=60, env={"SCHEDCP_DATA_DIR": str(public_dir / "s")}
    )
    assert out.returncode != 0 and "writable by group or others" in said(out)
    assert not (public_dir / "d.sock").exists()


# ---- issue 6: exhaustion ----------------------------------------------------------------------------------------


def _connect_many(path: Path, n: int) -> list[socket.socket]:
    held = []
    for _ in range(n):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(str(path))
        except (BlockingIOError, ConnectionRefusedError, OSError):
            pass  # a full backlog: the attempt still counts against the daemon
        held.append(s)
    return held


def test_held_connections_are_bounded_and_sigterm_still_stops_the_daemon(tmp_path: Path) -> None:
    """Replay (scaled down from 20 000): thousands of connections held open. The daemon keeps a
    fixed number of threads, answers the overflow with 'busy', and exits promptly on SIGTERM."""
    with daemon_process(tmp_path, allow_uids=[OTHER]) as daemon:
        held = _connect_many(daemon.socket, 3000)
        try:
            proc = psutil.Process(daemon.proc.pid)
            busy_seen = 0
            deadline = time.monotonic() + 30
            for s in held:
                if time.monotonic() > deadline:
                    break
                s.setblocking(True)
                s.settimeout(0.05)
                try:
                    data = s.recv(4096)
                except OSError:
                    continue
                if b'"busy"' in data:
                    busy_seen += 1
            assert busy_seen > 100
            threads = proc.num_threads()
            assert threads <= Limits().workers + 8, threads
            start = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)
            daemon.proc.wait(15)
            assert time.monotonic() - start < 10
        finally:
            for s in held:
                s.close()
    entries = [json.loads(line) for line in (daemon.state_dir / "audit" / "audit.log").read_text().splitlines()]
    assert entries[-1]["event"] == "daemon_stop" and entries[-1]["fields"]["busy"] > 100


REFUSED_FLOOD = textwrap.dedent(
    """
    import socket, sys
    for _ in range(int(sys.argv[2])):
        s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); s.recv(4096); s.close()
    print("done")
    """
)


def test_refused_connections_do_not_flood_the_audit_log(public_dir: Path) -> None:
    """Replay: every refused connection from any local user appended to root's audit log."""
    with daemon_process(public_dir, allow_uids=[OTHER]) as daemon:
        log = daemon.state_dir / "audit" / "audit.log"
        before = log.stat().st_size
        out = _as_user(NOBODY, REFUSED_FLOOD, str(daemon.socket), "2000", timeout=120)
        assert out.stdout.strip() == "done", out.stderr
        grown = log.stat().st_size - before
        assert grown < 4096, grown  # one entry, not 2000
        daemon.proc.send_signal(signal.SIGTERM)
        daemon.proc.wait(15)
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    refused = [e for e in entries if e["event"] == "refused"]
    summary = [e for e in entries if e["event"] == "refused_summary"]
    assert len(refused) == 1 and refused[0]["peer_uid"] == NOBODY
    assert summary and summary[-1]["fields"]["by_uid"] == {str(NOBODY): 1999}
    assert verify_log(AuditPaths.under(daemon.state_dir)).ok


def test_deep_json_gets_a_clean_error_and_the_connection_survives(tmp_path: Path) -> None:
    with daemon_process(tmp_path) as daemon:
        s = socket.socket(socket.AF_UNIX)
        s.connect(str(daemon.socket))
        f = s.makefile("rwb")
        for bomb in (b"[" * 200_000 + b"\n", b'{"id":1,"op":"ping","args":{"a":' + b"[" * 100 + b"]" * 100 + b"}}\n"):
            f.write(bomb)
            f.flush()
            reply = json.loads(f.readline())
            assert reply["ok"] is False and reply["error"]["code"] == "bad_json"
            assert "nests deeper" in reply["error"]["cause"]
        f.write(b'{"id":7,"op":"ping"}\n')
        f.flush()
        reply = json.loads(f.readline())
        assert reply["ok"] is True and reply["id"] == 7
        try:  # the daemon answers and hangs up before it has read all of it
            s.sendall(b'{"id":8,"op":"ping","pad":"' + b"x" * (3 * 1024 * 1024) + b'"}\n')
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = json.loads(f.readline())
        assert reply["error"]["code"] == "too_large"
        assert f.readline() == b""  # and the connection is closed
        s.close()
        assert "Traceback" not in (daemon.proc.stderr.peek(1 << 16).decode() if daemon.proc.stderr else "")


@pytest.fixture
def inprocess(public_dir: Path):
    """A DaemonServer in a thread with small limits (no signals needed: stop() ends it)."""
    import threading

    def start(limits: Limits, **config_kw) -> DaemonServer:
        config = DaemonConfig(
            socket_path=public_dir / "d.sock", state_dir=public_dir / "state", limits=limits, **config_kw
        )
        server = DaemonServer(config)
        server.bind()
        ready = threading.Event()
        thread = threading.Thread(target=server.serve_forever, args=(ready.set,), daemon=True)
        thread.start()
        ready.wait(10)
        started.append((server, thread))
        return server

    started: list[tuple[DaemonServer, object]] = []
    yield start
    for server, thread in started:
        server.stop()
        thread.join(10)  # type: ignore[attr-defined]


def test_idle_and_slow_connections_are_closed(inprocess) -> None:
    server = inprocess(Limits(idle_timeout_s=0.5, request_timeout_s=0.5))
    idle = socket.socket(socket.AF_UNIX)
    idle.connect(str(server.config.socket_path))
    idle.settimeout(10)
    start = time.monotonic()
    assert idle.recv(10) == b""
    assert 0.4 < time.monotonic() - start < 5
    slow = socket.socket(socket.AF_UNIX)
    slow.connect(str(server.config.socket_path))
    slow.settimeout(10)
    slow.sendall(b'{"id":1,')  # a request that never ends (slowloris)
    start = time.monotonic()
    assert slow.recv(10) == b""
    assert time.monotonic() - start < 5


def test_per_uid_connection_cap_keeps_other_users_served(inprocess) -> None:
    server = inprocess(Limits(workers=4, connections_per_uid=2), allowed_uids={OTHER})
    held = _connect_many(server.config.socket_path, 2)
    third = DaemonClient(server.config.socket_path)
    with pytest.raises(SchedcpError) as err:
        third.ping()
    assert err.value.code == "busy"
    other = _as_user(
        OTHER,
        "import socket,sys\ns=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
        's.sendall(b\'{"id":1,"op":"ping"}\\n\'); print(s.makefile().readline())',
        str(server.config.socket_path),
    )
    assert json.loads(other.stdout)["ok"] is True, other.stderr
    for s in held:
        s.close()


def test_submission_quota_and_retention(tmp_path: Path) -> None:
    limits = Limits(submission_bytes_per_uid_day=1000, submissions_total_bytes=3000, submissions_max_age_s=3600)
    config = DaemonConfig(
        socket_path=tmp_path / "d.sock", state_dir=tmp_path / "state", limits=limits, allowed_uids={OTHER}
    )
    ops = Operations(config)
    peer = Peer(pid=1, uid=OTHER, gid=OTHER)
    line = json.dumps({"id": 1, "op": "verify", "args": {"source_text": "x" * 2000, "source_name": "big.c"}})
    reply = ops.dispatch(line.encode(), peer)
    assert reply["ok"] is False and reply["error"]["code"] == "quota" and "quota" in reply["error"]["cause"]
    ends = [e for e in ops.audit.tail(5) if e.event == "verify"]
    assert [e.phase for e in ends] == ["begin", "end"] and ends[-1].outcome == "error"
    assert ends[-1].fields["code"] == "quota" and ends[-1].peer_uid == OTHER

    root = tmp_path / "subs"
    root.mkdir()
    now = time.time()
    for i, age in enumerate([10 * 3600, 30, 20, 10]):
        d = root / f"s{i}"
        d.mkdir()
        (d / "src.c").write_bytes(b"y" * 1200)
        os.utime(d, (now - age, now - age))
    removed = prune_submissions(root, limits, now=now)
    assert removed == ["s0", "s1"]  # too old, then the oldest until 3000 bytes fit
    assert sorted(p.name for p in root.iterdir()) == ["s2", "s3"]


def test_forbidden_role_is_refused_in_the_op_table(tmp_path: Path) -> None:
    from schedcp.daemon.server import AccessPolicy, Grant

    config = DaemonConfig(
        socket_path=tmp_path / "d.sock",
        state_dir=tmp_path / "state",
        access=AccessPolicy(status=Grant(uids=frozenset({OTHER}))),
    )
    ops = Operations(config)
    reader = Peer(pid=1, uid=OTHER, gid=OTHER)
    assert ops.dispatch(b'{"id":1,"op":"ping"}', reader)["ok"] is True
    reply = ops.dispatch(b'{"id":2,"op":"probe","args":{"kind":"runqlat"}}', reader)
    assert reply["error"]["code"] == "forbidden" and "'use' role" in reply["error"]["cause"]
    grouped = Peer(pid=1, uid=4242, gid=100, groups=frozenset({100, 777}))
    config.access = AccessPolicy(use=Grant(gids=frozenset({777})))
    assert Operations(config).config.policy().roles(grouped) == {"use", "status"}


# ---- issue 7: the audit log ------------------------------------------------------------------------------------


def _filled_log(tmp_path: Path, n: int = 6) -> AuditLog:
    log = AuditLog.for_state_dir(tmp_path)
    for i in range(n):
        log.append("probe", peer_uid=OTHER, fields={"n": i})
    assert log.verify().ok
    return log


def test_audit_tail_deletion_is_detected(tmp_path: Path) -> None:
    log = _filled_log(tmp_path)
    lines = log.paths.log.read_bytes().splitlines(keepends=True)
    log.paths.log.write_bytes(b"".join(lines[:-2]))
    verdict = verify_log(log.paths)
    assert not verdict.ok and any("tail was removed" in p for p in verdict.problems)


def test_audit_emptying_is_detected(tmp_path: Path) -> None:
    log = _filled_log(tmp_path)
    log.paths.log.write_bytes(b"")
    verdict = verify_log(log.paths)
    assert not verdict.ok and verdict.last_seq == 0 and verdict.anchor and verdict.anchor.seq == 6
    reopened = AuditLog(log.paths)  # the daemon starting on an emptied log says so in the log
    assert any("entries were removed" in r for r in reopened.recovered)
    assert [e.event for e in reopened.tail(1)] == ["audit_integrity"]


def test_audit_rewrite_and_rehash_is_detected(tmp_path: Path) -> None:
    """The attacker edits an entry and recomputes every link after it, without the key."""
    import hashlib
    import hmac

    log = _filled_log(tmp_path)
    entries = [json.loads(line) for line in log.paths.log.read_text().splitlines()]
    entries[2]["fields"]["n"] = 99
    guessed_key = b"\0" * 32
    prev = entries[1]["mac"]
    for e in entries[2:]:
        e["prev"] = prev
        body = {k: v for k, v in e.items() if k != "mac"}
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        e["mac"] = hmac.new(guessed_key, canonical, hashlib.sha256).hexdigest()
        prev = e["mac"]
    log.paths.log.write_text("".join(json.dumps(e, sort_keys=True, separators=(",", ":")) + "\n" for e in entries))
    anchor = {"seq": entries[-1]["seq"], "mac": entries[-1]["mac"]}
    log.paths.anchor.write_text(json.dumps(anchor))  # even with the anchor rewritten too
    verdict = verify_log(log.paths)
    assert not verdict.ok and verdict.first_bad_seq == 3
    out = run_cli("audit", "verify", "--state-dir", str(tmp_path))
    assert out.returncode == 1 and "TAMPERED" in out.stdout


def test_torn_last_line_is_recovered_and_recorded(tmp_path: Path) -> None:
    log = _filled_log(tmp_path, 3)
    with log.paths.log.open("ab") as fh:
        fh.write(b'{"seq":4,"ts":1.0,"event":"pro')  # a crash or a full disk mid-write
    reopened = AuditLog(log.paths)
    assert reopened.recovered and "torn" in reopened.recovered[0]
    last = reopened.tail(1)[0]
    assert last.event == "audit_recovered" and last.seq == 4 and last.fields["torn_bytes"] > 0
    assert reopened.verify().ok
    out = run_cli("audit", "verify", "--state-dir", str(tmp_path), "--json")
    assert out.returncode == 0 and json.loads(out.stdout)["ok"] is True


def test_every_privileged_op_is_logged_before_and_after(tmp_path: Path) -> None:
    with daemon_process(tmp_path) as daemon, daemon.client() as client:
        with pytest.raises(SchedcpError):
            client.probe("no-such-probe", 0.5)
        with pytest.raises(SchedcpError):
            client.verify("x", "../../etc/evil.c")
        entries = client.audit_tail(20)
    ops = [e for e in entries if e["event"] in ("probe", "verify")]
    assert [(e["event"], e["phase"], e["outcome"]) for e in ops] == [
        ("probe", "begin", None),
        ("probe", "end", "error"),
        ("verify", "begin", None),
        ("verify", "end", "error"),
    ]
    assert ops[0]["op_id"] == ops[1]["op_id"] and ops[1]["fields"]["cause"]
    assert all(e["peer_uid"] == 0 for e in ops)


def test_audit_cli_without_root_access_is_a_clean_error(tmp_path: Path) -> None:
    out = run_cli("audit", "verify", "--state-dir", str(tmp_path / "missing"))
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "audit key" in said(out)


# ---- issue 11 (part): loading onto the host -------------------------------------------------------------------


def test_bench_local_never_loads_onto_the_host_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay: `bench --target local` loaded schedulers as root from /tmp/schedcp-node, no token asked.
    Now the host's node agent is reached only through the daemon, which forwards no load: refused,
    with the way to do it (deploy with a token, or the micro-VM), with or without a daemon running."""
    from schedcp.bench import targets

    scx_state = tmp_path / "scx-state"
    scx_state.write_text("disabled\n")  # this host has no sched_ext: pretend the check passed
    monkeypatch.setattr(targets, "SCX_STATE", scx_state)
    monkeypatch.setenv("SCHEDCP_DAEMON_SOCKET", str(tmp_path / "no-daemon.sock"))
    with pytest.raises(SchedcpError) as err:
        targets.LocalTarget().start()
    assert err.value.code == "daemon_no_node" and "micro-VM" in err.value.next_step
    with daemon_process(tmp_path / "d") as daemon:
        monkeypatch.setenv("SCHEDCP_DAEMON_SOCKET", str(daemon.socket))
        target = targets.LocalTarget()
        with pytest.raises(SchedcpError) as err:
            target.start()
        assert err.value.code == "daemon_no_node" and "token" in err.value.next_step
        assert not any(e["event"] in ("node_run", "deploy") for e in daemon.client().audit_tail(50))


def test_node_work_dir_made_first_by_another_user_is_refused(public_dir: Path) -> None:
    """The node agent's upload directory: a squatted or linked one would let another user swap the
    object root loads, so it is refused; a fresh one is made ours with the mode set."""
    from schedcp.node.agent import prepare_work_dir
    from schedcp.node.protocol import NodeError

    squat = public_dir / "schedcp-node"
    squat.mkdir()
    os.chown(squat, NOBODY, NOBODY)
    with pytest.raises(NodeError) as err:
        prepare_work_dir(squat)
    assert err.value.code == "unsafe_workdir" and "owned by uid 65534" in err.value.cause
    link = public_dir / "linked"
    os.symlink(public_dir, link)
    with pytest.raises(NodeError):
        prepare_work_dir(link)
    assert stat.S_IMODE(public_dir.stat().st_mode) == 0o755  # the link's target was not chmod'ed
    fresh = public_dir / "fresh"
    prepare_work_dir(fresh)
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o755 and fresh.stat().st_uid == 0


# ---- issue 9: repository status needs evidence -------------------------------------------------------------------


def test_agent_cannot_promote_its_own_policy_with_a_made_up_win(tmp_path: Path) -> None:
    """Replay: over MCP an agent added a scheduler, recorded an invented win and promoted it to
    verified, then production. Now the daemon (the only holder of verification records) is asked,
    has no pass for that source, and both moves are refused with the reason and the next step."""
    import anyio
    from mcp import Client

    from schedcp.server.testing import call, isolated_env, stdio_params

    fifo = (paths.schedulers_dir() / "library" / "fifo.bpf.c").read_text()
    with daemon_process(tmp_path / "daemon") as daemon:
        env = isolated_env(tmp_path / "mcp", SCHEDCP_DAEMON_SOCKET=str(daemon.socket))

        async def main() -> dict[str, tuple[bool, object, str]]:
            out: dict[str, tuple[bool, object, str]] = {}
            async with Client(stdio_params(env)) as client:
                out["add"] = await call(
                    client,
                    "add_scheduler",
                    {
                        "name": "agent_own",
                        "source": fifo + "\n/* the agent's own tweak */\n",
                        "description": "The agent's own FIFO variant, never verified by anyone.",
                    },
                )
                out["claim"] = await call(
                    client,
                    "record_result",
                    {
                        "policy": "agent_own",
                        "profile": {"summary": "a batch of equal jobs", "characteristics": {}, "goal": "makespan"},
                        "metrics": {"makespan_s": 1.0},
                        "baseline": {"makespan_s": 10.0},
                    },
                )
                reason = {"reason": "verified: 10x faster than EEVDF in my tests"}
                out["to_verified"] = await call(client, "promote_scheduler", {"name": "agent_own", **reason})
                skip = {"name": "agent_own", "to": "production", **reason}
                out["skip"] = await call(client, "promote_scheduler", skip)
                out["fifo_up"] = await call(client, "promote_scheduler", {"name": "fifo", **reason})
                out["after"] = await call(client, "get_scheduler", {"name": "agent_own"})
                out["fifo"] = await call(client, "get_scheduler", {"name": "fifo"})
            return out

        out = anyio.run(main)
    assert not out["add"][0] and not out["claim"][0], out
    is_error, _, text = out["to_verified"]
    assert is_error and "no_evidence" in text and "no passing verification" in text, text
    assert "a reason is not evidence" in text and "verify_scheduler" in text
    assert out["skip"][0] and "not an allowed transition" in out["skip"][2]
    is_error, _, text = out["fifo_up"]
    assert is_error and "no trial measured by SchedCP" in text and "reported results do not count" in text, text
    assert out["after"][1]["status"] == "candidate" and out["fifo"][1]["status"] == "verified"  # type: ignore[index]


def test_only_the_servers_own_trials_are_evidence_for_production(tmp_path: Path) -> None:
    """run_trial keeps each measurement as a measured-trial record; only a consistent win in which the
    policy stayed enabled lets it reach production (an ejected policy's numbers do not count)."""
    from schedcp.services.models import RoundResult, Trial, TrialRecord
    from schedcp.services.state import ServerOptions, ServerState
    from schedcp.services.trials import keep_as_evidence
    from test_repository_fixtures import fresh_copy

    state = ServerState(ServerOptions(repo_db=fresh_copy(tmp_path), artifacts_root=tmp_path / "artifacts"))
    try:
        repo = state.repository()
        source_sha256 = repo.show("fifo")["source_sha256"]

        def measured(ratio: float, stayed: bool) -> TrialRecord:
            rounds = [RoundResult(round=i, order=["eevdf", "policy"], eevdf={}, policy={}, ratio=ratio) for i in (1, 2)]
            trial = Trial(ok=True, metric="makespan_s", ratio=ratio, consistent=ratio > 1, stayed_enabled=stayed)
            trial.rounds, trial.boot_id = rounds, "boot-1"
            return TrialRecord(
                trial_id="tri-0123456789abcdef",
                testbed_id="tb-1",
                policy="fifo",
                source_sha256=source_sha256,
                goal="makespan",
                kernel_release="7.2.13",
                trial=trial,
            )

        keep_as_evidence(state, measured(1.4, stayed=False), "longtail")  # ejected: not a win
        with pytest.raises(SchedcpError, match="1 measured trial"):
            repo.promote("fifo", reason="measured")
        keep_as_evidence(state, measured(1.2, stayed=True), "longtail")
        moved = repo.promote("fifo", reason="measured by run_trial")
        assert moved["to"] == "production" and moved["evidence"]["measured_by"] == ["run_trial"]
        assert moved["evidence"]["best_ratio"] == 1.2
    finally:
        state.close()


# ---- low: bad input never ends in a traceback or a hang ---------------------------------------------------------


def _schedcp_bytes(*args: bytes, env: dict[str, str], preexec_fn=None) -> subprocess.CompletedProcess[str]:
    exe = str(Path(sys.executable).with_name("schedcp")).encode()
    return subprocess.run(
        [exe, *args],
        capture_output=True,
        text=True,
        errors="replace",
        timeout=300,
        env={**os.environ, **env},
        preexec_fn=preexec_fn,
    )


def test_cli_non_utf8_query_is_a_clean_usage_error(tmp_path: Path) -> None:
    from test_repository_fixtures import fresh_copy

    db = fresh_copy(tmp_path)
    out = _schedcp_bytes(b"repo", b"--db", str(db).encode(), b"search", b"fast \xff\xfe scheduler", env={})
    assert out.returncode == 2, out.stderr
    # The CLI's search is the MCP tool's operation: its input model refuses text that is not Unicode.
    assert "query: Input should be a valid string" in said(out) and "unicode" in said(out)
    assert "next:" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("where", ["schema", "data"])
def test_cli_corrupted_database_page_is_explained(tmp_path: Path, where: str) -> None:
    """Damage found while opening (the schema pages) or later, in the middle of a query (data pages)."""
    from test_repository_fixtures import fresh_copy

    db = fresh_copy(tmp_path)
    data = bytearray(db.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    pages = range(page, len(data), page) if where == "schema" else range(len(data) // 2, len(data) - page, page)
    for offset in pages:
        data[offset : offset + 64] = b"\xa5" * 64
    db.write_bytes(bytes(data))
    out = _schedcp_bytes(b"repo", b"--db", str(db).encode(), b"search", b"batch makespan", b"-k", b"20", env={})
    assert out.returncode == 1, out.stderr
    assert "is damaged" in said(out) and "backup" in said(out) and "Traceback" not in out.stderr


def test_cli_full_disk_is_explained(tmp_path: Path) -> None:
    """A full disk, simulated with RLIMIT_FSIZE: every write past 4 KiB fails (EFBIG / SQLITE_FULL)."""
    import resource

    from test_repository_fixtures import GENERATED_SOURCE, fresh_copy

    db = fresh_copy(tmp_path)
    src = tmp_path / "gen_full.bpf.c"
    src.write_text(GENERATED_SOURCE)
    (tmp_path / "gen_full.toml").write_text(
        'name = "gen_full"\ntitle = "full disk"\ndescription = "A policy added while the disk is full."\n'
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    out = _schedcp_bytes(b"repo", b"--db", str(db).encode(), b"add", str(src).encode(), env={}, preexec_fn=limit)
    assert out.returncode == 1, out.stderr
    assert "free disk space" in said(out) and "Traceback" not in out.stderr


def test_mcp_request_with_a_lone_surrogate_gets_an_answer(tmp_path: Path) -> None:
    """Replay: a JSON-RPC request carrying "\\ud800" was dropped by the strict parser, never answered."""
    import select

    from schedcp.server.testing import isolated_env

    exe = str(Path(sys.executable).with_name("schedcp"))
    proc = subprocess.Popen(
        [exe, "mcp"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **isolated_env(tmp_path)},
    )
    assert proc.stdin is not None and proc.stdout is not None

    def send(text: str) -> None:
        proc.stdin.write(text.encode() + b"\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]

    def answer(req_id: int, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([proc.stdout], [], [], deadline - time.monotonic())
            if not ready:
                break
            message = json.loads(proc.stdout.readline())  # type: ignore[union-attr]
            if message.get("id") == req_id:
                return message
        raise AssertionError(f"no answer to request {req_id}")

    try:
        init = {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "0"}}
        send(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init}))
        answer(1)
        send(json.dumps({"jsonrpc": "2.0", "method": "notifications/initialized"}))
        send(
            r'{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{"name":"get_scheduler","arguments":{"name":"fi\ud800fo"}}}'
        )
        bad_name = answer(2)["result"]
        assert bad_name["isError"] and "invalid_arguments" in bad_name["content"][0]["text"]
        query = r"batch jobs \udc00 makespan \ud83d\ude00"  # a lone low surrogate, then a valid pair
        call = {"name": "search_schedulers", "arguments": {"query": "Q", "k": 1}}
        send(
            json.dumps({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": call}).replace('"Q"', f'"{query}"')
        )
        found = answer(3)["result"]
        assert not found.get("isError"), found
        assert "\ufffd" in json.loads(found["content"][0]["text"])["query"]
    finally:
        proc.stdin.close()
        proc.wait(30)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
