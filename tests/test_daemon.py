# SPDX-License-Identifier: Apache-2.0
"""The privileged daemon: a real subprocess on a unix socket, peer credentials, audit chain."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from schedcp.daemon.audit import AuditLog
from schedcp.daemon.client import DaemonClient
from schedcp.daemon.testing import running_daemon
from schedcp.errors import SchedcpError

# A refused peer is answered at accept time and the connection closed, possibly before the request
# is written: the write may then fail (EPIPE), but the answer is still there to read.
RAW_PING = (
    "import json,socket,sys\n"
    "s=socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])\n"
    "try:\n"
    '    s.sendall(b\'{"id":1,"op":"ping"}\\n\')\n'
    "except BrokenPipeError:\n"
    "    pass\n"
    "print(s.makefile().readline())\n"
)


def _as_uid(uid: int, sock: Path) -> subprocess.CompletedProcess[str]:
    def drop() -> None:
        os.setgid(uid)
        os.setuid(uid)

    return subprocess.run(
        ["/usr/bin/python3", "-c", RAW_PING, str(sock)],
        capture_output=True,
        text=True,
        preexec_fn=drop,
        timeout=30,
        cwd="/",
    )


def test_ping_unknown_op_and_bad_args(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as client:
        info = client.ping()
        assert info["uid"] == 0 and "verify" in info["ops"]
        with pytest.raises(SchedcpError) as err:
            client.call("format_disk")
        assert err.value.code == "unknown_op" and "ping" in err.value.next_step
        with pytest.raises(SchedcpError) as err:
            client.call("audit_tail", {"n": 5, "evil": "x"})
        assert err.value.code == "usage"
        with pytest.raises(SchedcpError) as err:
            client.call("verify", {"source_text": ""})
        assert err.value.code == "usage"
        entries = client.audit_tail(10)
        assert entries[0]["event"] == "daemon_start"


@pytest.fixture
def public_dir():
    """pytest's tmp_path lives under a 0700 directory; other uids need a traversable one."""
    path = Path(tempfile.mkdtemp(prefix="schedcp-daemon-test-", dir="/tmp"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_peer_credentials_are_enforced(public_dir: Path) -> None:
    with running_daemon(public_dir, allow_uids=[12345]) as client:
        allowed = _as_uid(12345, client.path)
        assert json.loads(allowed.stdout)["ok"] is True, allowed.stderr
        refused = _as_uid(65534, client.path)
        reply = json.loads(refused.stdout)
        assert reply["ok"] is False and reply["error"]["code"] == "forbidden"
        assert any(e["event"] == "refused" and e["peer_uid"] == 65534 for e in client.audit_tail(20))


def test_socket_is_private_without_allowed_uids(public_dir: Path) -> None:
    with running_daemon(public_dir) as client:
        assert (client.path.stat().st_mode & 0o777) == 0o600
        denied = _as_uid(65534, client.path)
        assert denied.returncode != 0 and "Permission denied" in denied.stderr


def test_client_reports_a_missing_daemon(tmp_path: Path) -> None:
    with pytest.raises(SchedcpError) as err:
        DaemonClient(tmp_path / "nothing.sock").ping()
    assert err.value.code == "daemon_unavailable" and "schedcp daemon" in err.value.next_step


def test_audit_chain_detects_tampering(tmp_path: Path) -> None:
    log = AuditLog.for_state_dir(tmp_path)
    for i in range(5):
        log.append("deploy", fields={"n": i})
    assert log.verify().ok
    lines = log.paths.log.read_text().splitlines()
    lines[2] = lines[2].replace('"n":2', '"n":9')
    log.paths.log.write_text("\n".join(lines) + "\n")
    verdict = log.verify()
    assert not verdict.ok and verdict.first_bad_seq == 3


def test_probe_through_the_daemon(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as client:
        result = client.probe("runqlat", 0.5)
        assert result.get("available", True) is not False or result.get("reason")
        with pytest.raises(SchedcpError) as err:
            client.probe("runqlat", 999)
        assert err.value.code == "usage"
        with pytest.raises(SchedcpError):
            client.probe("rm -rf /", 0.5)
        assert any(e["event"] == "probe" for e in client.audit_tail(10))


def test_verify_through_the_daemon_keeps_the_token(tmp_path: Path) -> None:
    """Static-stage failures need no VM: a non-scheduler is refused with a verdict, no token."""
    with running_daemon(tmp_path) as client:
        result = client.verify("int main(void) { return 0; }\n", "plain.c")
        assert result["report"]["verdict"] == "fail" and result["token_id"] is None
        assert "token" not in result["report"]
        with pytest.raises(SchedcpError) as err:
            client.verify("x", "../../etc/evil.c")
        assert err.value.code == "usage"
        assert any(e["event"] == "verify" for e in client.audit_tail(10))
