# SPDX-License-Identifier: Apache-2.0
"""The daemon's socket server: peer-credential checks, a fixed operation table, auditing."""

from __future__ import annotations

import json
import os
import signal
import socket
import socketserver
import struct
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedcp import __version__
from schedcp.daemon.audit import AuditLog
from schedcp.errors import SchedcpError
from schedcp.node.protocol import MAX_MESSAGE_BYTES
from schedcp.paths import data_dir, runtime_dir

# One verification (a VM boot) at a time: the machine this runs on may have two cores.
_vm_lock = threading.Lock()


def default_socket() -> Path:
    return Path(os.environ.get("SCHEDCP_DAEMON_SOCKET") or runtime_dir() / "daemon.sock")


@dataclass
class Peer:
    pid: int
    uid: int
    gid: int


@dataclass
class DaemonConfig:
    socket_path: Path = field(default_factory=default_socket)
    allowed_uids: set[int] = field(default_factory=set)
    state_dir: Path = field(default_factory=data_dir)


def peer_credentials(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    return Peer(pid, uid, gid)


class Operations:
    """What the daemon will do for a client. Each op takes validated args and returns a dict."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.audit = AuditLog(config.state_dir / "audit.log")

    def table(self) -> dict[str, Callable[..., dict[str, Any]]]:
        return {
            "ping": self.ping,
            "verify": self.verify,
            "probe": self.probe,
            "audit_tail": self.audit_tail,
        }

    def ping(self, peer: Peer) -> dict[str, Any]:
        return {"version": __version__, "uid": os.geteuid(), "peer_uid": peer.uid, "ops": sorted(self.table())}

    def audit_tail(self, peer: Peer, n: int = 20) -> dict[str, Any]:
        return {"entries": self.audit.tail(int(n))}

    def verify(
        self,
        peer: Peer,
        source_text: str,
        source_name: str = "submitted.bpf.c",
        config: dict[str, Any] | None = None,
        kernel: str = "unstable",
        workload: list[str] | None = None,
    ) -> dict[str, Any]:
        if not isinstance(source_text, str) or not source_text:
            raise SchedcpError("source_text must be a non-empty string", "send the scheduler's C source", code="usage")
        from schedcp.daemon import verify_service

        with _vm_lock:
            result = verify_service.verify_and_sign(
                source_text, source_name, dict(config or {}), kernel, workload, state_dir=self.config.state_dir
            )
        self.audit.append(
            "verify",
            peer_uid=peer.uid,
            peer_pid=peer.pid,
            source_name=source_name,
            verdict=result["report"].get("verdict"),
            token_id=result.get("token_id"),
        )
        return result

    def probe(self, peer: Peer, kind: str, duration_s: float = 2.0, pid: int | None = None) -> dict[str, Any]:
        from schedcp.daemon import probe_service

        result = probe_service.run_probe(kind, float(duration_s), pid)
        self.audit.append("probe", peer_uid=peer.uid, peer_pid=peer.pid, kind=kind, duration_s=duration_s)
        return result


class _Handler(socketserver.StreamRequestHandler):
    server: _Server

    def handle(self) -> None:
        peer = peer_credentials(self.request)
        allowed = self.server.config.allowed_uids | {0, os.geteuid()}
        if peer.uid not in allowed:
            self._send(
                {
                    "id": None,
                    "ok": False,
                    "error": {
                        "code": "forbidden",
                        "cause": f"uid {peer.uid} may not use the SchedCP daemon",
                        "next_step": "ask the operator to start the daemon with --allow-uid",
                    },
                }
            )
            self.server.ops.audit.append("refused", peer_uid=peer.uid, peer_pid=peer.pid)
            return
        while True:
            line = self.rfile.readline(MAX_MESSAGE_BYTES + 1)
            if not line:
                return
            self._send(self._dispatch(line, peer))

    def _dispatch(self, line: bytes, peer: Peer) -> dict[str, Any]:
        try:
            message = json.loads(line)
            req_id, op, args = message.get("id"), message.get("op"), message.get("args") or {}
        except (ValueError, AttributeError):
            return {"id": None, "ok": False, "error": {"code": "bad_json", "cause": "request is not a JSON object"}}
        fn = self.server.ops.table().get(op) if isinstance(op, str) else None
        if fn is None:
            return {
                "id": req_id,
                "ok": False,
                "error": {
                    "code": "unknown_op",
                    "cause": f"unknown operation {op!r}",
                    "next_step": f"use one of {sorted(self.server.ops.table())}",
                },
            }
        if not isinstance(args, dict):
            return {"id": req_id, "ok": False, "error": {"code": "usage", "cause": "args must be an object"}}
        try:
            return {"id": req_id, "ok": True, "result": fn(peer, **args)}
        except SchedcpError as exc:
            return {"id": req_id, "ok": False, "error": exc.to_dict() | {"code": exc.code}}
        except TypeError as exc:
            return {
                "id": req_id,
                "ok": False,
                "error": {
                    "code": "usage",
                    "cause": f"bad arguments for {op}: {exc}",
                    "next_step": "check the parameters",
                },
            }
        except Exception as exc:  # never leak a traceback to a client
            print(f"schedcp daemon: {op} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return {
                "id": req_id,
                "ok": False,
                "error": {
                    "code": "internal",
                    "cause": f"{type(exc).__name__}: {exc}",
                    "next_step": "see the daemon's log",
                },
            }

    def _send(self, reply: dict[str, Any]) -> None:
        self.wfile.write(json.dumps(reply, default=str).encode() + b"\n")
        self.wfile.flush()


class _Server(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    config: DaemonConfig
    ops: Operations


def serve(config: DaemonConfig, ready: Callable[[], None] | None = None) -> None:
    path = config.socket_path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale socket from a previous run
        else:
            probe.close()
            raise SchedcpError(
                f"a daemon is already listening on {path}", "stop it or use --socket", code="daemon_running"
            )
    server = _Server(str(path), _Handler)
    server.config = config
    server.ops = Operations(config)
    # Peers are authenticated by uid, but the socket must be reachable for allowed non-root users.
    os.chmod(path, 0o666 if config.allowed_uids - {0} else 0o600)
    server.ops.audit.append("daemon_start", pid=os.getpid(), socket=str(path), allowed_uids=sorted(config.allowed_uids))

    def _stop(*_a: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    if ready:
        ready()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        path.unlink(missing_ok=True)
        server.ops.audit.append("daemon_stop", pid=os.getpid())
