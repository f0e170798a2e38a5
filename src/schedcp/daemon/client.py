# SPDX-License-Identifier: Apache-2.0
"""Client for the privileged daemon, used by the MCP server, the agent, the repository and the CLI.

Before it sends anything it checks who is listening (SO_PEERCRED): the daemon runs as root, so a
server of any other uid is refused, except a daemon the caller runs itself (its own uid, as in
development and tests). Whoever created a socket at the default path first cannot feed a root
client a forged "pass".
"""

from __future__ import annotations

import io
import json
import os
import socket
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from schedcp.daemon.peers import peer_credentials
from schedcp.errors import NotReadyError, SchedcpError
from schedcp.paths import daemon_socket

MAX_REPLY_BYTES = 64 * 1024 * 1024


def trusted_server_uids() -> set[int]:
    """Root, and the caller itself (a daemon you started is as trustworthy as you are)."""
    return {0, os.geteuid()}


class DaemonClient:
    def __init__(self, path: Path | None = None, *, trusted_uids: Iterable[int] | None = None) -> None:
        self.path = Path(path) if path else daemon_socket()
        self.trusted_uids = set(trusted_uids) if trusted_uids is not None else trusted_server_uids()
        self._sock: socket.socket | None = None
        self._file: io.BufferedRWPair | None = None
        self._lock = threading.Lock()
        self._next_id = 1
        self.server_uid: int | None = None

    def _connect(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(10)
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise NotReadyError(
                f"the SchedCP daemon is not reachable at {self.path} ({exc.strerror or exc})",
                "start it as root: `sudo schedcp daemon` (or set SCHEDCP_DAEMON_SOCKET)",
                code="daemon_unavailable",
            ) from exc
        server = peer_credentials(sock)
        if server.uid not in self.trusted_uids:
            sock.close()
            raise SchedcpError(
                f"the process listening on {self.path} runs as uid {server.uid} (pid {server.pid}), not root: "
                "it is not the SchedCP daemon, and nothing it says is trusted",
                f"stop that process and check who owns {self.path.parent}; start the real daemon as root",
                code="daemon_untrusted",
            )
        self.server_uid = server.uid
        self._sock = sock
        self._file = sock.makefile("rwb")

    def close(self) -> None:
        if self._sock is not None:
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:
                    pass
            self._sock.close()
            self._sock = self._file = None

    def _exchange(self, request: bytes, timeout_s: float) -> bytes:
        assert self._sock is not None and self._file is not None
        self._sock.settimeout(timeout_s)
        try:
            self._file.write(request)
            self._file.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon may have refused us before reading ("busy"): its answer is still readable
        return self._file.readline(MAX_REPLY_BYTES)

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 60.0) -> dict[str, Any]:
        with self._lock:
            reused = self._sock is not None
            self._connect()
            req_id = self._next_id
            self._next_id += 1
            request = json.dumps({"id": req_id, "op": op, "args": args or {}}).encode() + b"\n"
            try:
                try:
                    line = self._exchange(request, timeout_s)
                except ConnectionResetError:
                    line = b""
                if not line and reused:  # the daemon closed an idle connection: one fresh try
                    self.close()
                    self._connect()
                    line = self._exchange(request, timeout_s)
            except (TimeoutError, OSError) as exc:
                self.close()
                raise SchedcpError(
                    f"the daemon did not answer {op!r} within {timeout_s:.0f}s",
                    "check the daemon's log; retry",
                    code="daemon_timeout",
                ) from exc
            if not line:
                self.close()
                raise SchedcpError("the daemon closed the connection", "check the daemon's log", code="daemon_lost")
        try:
            reply = json.loads(line)
        except ValueError:
            self.close()
            raise SchedcpError(
                "the daemon's reply is not JSON", "check the daemon's log", code="daemon_error"
            ) from None
        if not isinstance(reply, dict) or not reply.get("ok"):
            err = (reply.get("error") if isinstance(reply, dict) else None) or {}
            raise SchedcpError(
                str(err.get("cause", "daemon error")),
                str(err.get("next_step", "")),
                code=str(err.get("code", "daemon_error")),
            )
        result = reply.get("result")
        return result if isinstance(result, dict) else {}

    def ping(self) -> dict[str, Any]:
        return self.call("ping", timeout_s=10)

    def verify(
        self,
        source_text: str,
        source_name: str = "submitted.bpf.c",
        config: dict[str, Any] | None = None,
        kernel: str = "unstable",
        workload: list[str] | None = None,
        meta: dict[str, Any] | None = None,
        rodata: dict[str, str] | None = None,
        struct_ops: str | None = None,
    ) -> dict[str, Any]:
        """Verify a source on the daemon; ``rodata`` and ``struct_ops`` are the scx loader options
        (what an scx-style source's userspace half would set), bound into the token beside ``config``."""
        args = {
            "source_text": source_text,
            "source_name": source_name,
            "config": config or {},
            "kernel": kernel,
            "workload": workload,
            **({"meta": meta} if meta is not None else {}),
            **({"rodata": rodata} if rodata else {}),
            **({"struct_ops": struct_ops} if struct_ops else {}),
        }
        return self.call("verify", args, timeout_s=900)

    def probe(self, kind: str, duration_s: float = 2.0, pid: int | None = None) -> dict[str, Any]:
        return self.call("probe", {"kind": kind, "duration_s": duration_s, "pid": pid}, timeout_s=duration_s + 60)

    def verification(self, source_sha256: str) -> dict[str, Any] | None:
        """The daemon's newest passing verification record for this source, or None."""
        return self.call("verification", {"source_sha256": source_sha256}, timeout_s=30).get("record")

    def audit_tail(self, n: int = 20) -> list[dict[str, Any]]:
        return self.call("audit_tail", {"n": n})["entries"]

    def audit_verify(self) -> dict[str, Any]:
        return self.call("audit_verify", timeout_s=120)

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
