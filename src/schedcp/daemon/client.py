# SPDX-License-Identifier: Apache-2.0
"""Client for the privileged daemon, used by the MCP server, the agent and the CLI."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path
from typing import Any

from schedcp.daemon.server import default_socket
from schedcp.errors import NotReadyError, SchedcpError


class DaemonClient:
    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path else default_socket()
        self._sock: socket.socket | None = None
        self._file = None
        self._lock = threading.Lock()
        self._next_id = 1

    def _connect(self) -> None:
        if self._sock is not None:
            return
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(self.path))
        except OSError as exc:
            sock.close()
            raise NotReadyError(
                f"the SchedCP daemon is not reachable at {self.path} ({exc.strerror or exc})",
                "start it as root: `sudo schedcp daemon` (or set SCHEDCP_DAEMON_SOCKET)",
                code="daemon_unavailable",
            ) from exc
        self._sock = sock
        self._file = sock.makefile("rwb")

    def close(self) -> None:
        if self._sock is not None:
            self._file.close()
            self._sock.close()
            self._sock = self._file = None

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 60.0) -> dict[str, Any]:
        with self._lock:
            self._connect()
            assert self._sock is not None and self._file is not None
            self._sock.settimeout(timeout_s)
            req_id = self._next_id
            self._next_id += 1
            try:
                self._file.write(json.dumps({"id": req_id, "op": op, "args": args or {}}).encode() + b"\n")
                self._file.flush()
                line = self._file.readline()
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
        reply = json.loads(line)
        if not reply.get("ok"):
            err = reply.get("error") or {}
            raise SchedcpError(
                err.get("cause", "daemon error"), err.get("next_step", ""), code=err.get("code", "daemon_error")
            )
        return reply["result"]

    def ping(self) -> dict[str, Any]:
        return self.call("ping", timeout_s=10)

    def verify(
        self,
        source_text: str,
        source_name: str = "submitted.bpf.c",
        config: dict[str, Any] | None = None,
        kernel: str = "unstable",
        workload: list[str] | None = None,
    ) -> dict[str, Any]:
        args = {
            "source_text": source_text,
            "source_name": source_name,
            "config": config or {},
            "kernel": kernel,
            "workload": workload,
        }
        return self.call("verify", args, timeout_s=600)

    def probe(self, kind: str, duration_s: float = 2.0, pid: int | None = None) -> dict[str, Any]:
        return self.call("probe", {"kind": kind, "duration_s": duration_s, "pid": pid}, timeout_s=duration_s + 60)

    def audit_tail(self, n: int = 20) -> list[dict[str, Any]]:
        return self.call("audit_tail", {"n": n})["entries"]

    def __enter__(self) -> DaemonClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
