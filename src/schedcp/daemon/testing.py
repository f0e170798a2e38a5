# SPDX-License-Identifier: Apache-2.0
"""Start a real daemon subprocess for tests and examples."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from schedcp.daemon.client import DaemonClient
from schedcp.errors import SchedcpError


@contextlib.contextmanager
def running_daemon(tmp_path: Path, *, allow_uids: list[int] | None = None) -> Iterator[DaemonClient]:
    sock = tmp_path / "daemon.sock"
    env = {**os.environ, "SCHEDCP_DATA_DIR": str(tmp_path / "state")}
    exe = Path(sys.executable).with_name("schedcp")
    argv = [str(exe), "daemon", "--socket", str(sock)]
    for uid in allow_uids or []:
        argv += ["--allow-uid", str(uid)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        client = DaemonClient(sock)
        while True:
            try:
                client.ping()
                break
            except SchedcpError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
                    raise RuntimeError(f"daemon did not start: {err[-500:]}") from None
                time.sleep(0.1)
        yield client
        client.close()
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
