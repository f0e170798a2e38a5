# SPDX-License-Identifier: Apache-2.0
"""Start a real daemon subprocess (`schedcp daemon`) for tests and examples."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from schedcp.daemon.client import DaemonClient
from schedcp.errors import SchedcpError


@dataclass
class DaemonProcess:
    proc: subprocess.Popen[bytes]
    socket: Path
    state_dir: Path

    def client(self) -> DaemonClient:
        return DaemonClient(self.socket)


@contextlib.contextmanager
def daemon_process(
    tmp_path: Path, *, allow_uids: list[int] | None = None, extra_args: list[str] | None = None
) -> Iterator[DaemonProcess]:
    sock = tmp_path / "daemon.sock"
    state = tmp_path / "state"
    env = {**os.environ, "SCHEDCP_DATA_DIR": str(state)}
    exe = Path(sys.executable).with_name("schedcp")
    argv = [str(exe), "daemon", "--socket", str(sock), *(extra_args or [])]
    for uid in allow_uids or []:
        argv += ["--allow-uid", str(uid)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        with DaemonClient(sock) as client:
            while True:
                try:
                    client.ping()
                    break
                except SchedcpError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                        raise RuntimeError(f"daemon did not start: {err[-500:]}") from None
                    time.sleep(0.1)
        yield DaemonProcess(proc, sock, state)
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr:
            proc.stderr.close()


@contextlib.contextmanager
def running_daemon(tmp_path: Path, *, allow_uids: list[int] | None = None) -> Iterator[DaemonClient]:
    with daemon_process(tmp_path, allow_uids=allow_uids) as daemon, daemon.client() as client:
        yield client
