# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures. VM tests boot the real sched_ext test kernel; `scripts/ensure-env.sh` (run by
the README's test command) fetches it, so a missing kernel is a failure here, never a skip."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from schedcp.testbed import kernel

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def unstable_kernel() -> kernel.Kernel:
    return kernel.cached("unstable")


@pytest.fixture(scope="session")
def kernel_6_19() -> kernel.Kernel:
    return kernel.cached("6.19")


def qemu_children() -> list[psutil.Process]:
    """QEMU processes started by this test process (directly or via a CLI subprocess)."""
    me = psutil.Process(os.getpid())
    out = []
    for proc in me.children(recursive=True):
        try:
            if "qemu-system" in proc.name():
                out.append(proc)
        except psutil.NoSuchProcess:
            continue
    return out


def wait_for_children(pid: int, count: int, timeout: float = 30.0) -> list[psutil.Process]:
    """Block until process `pid` has `count` live children (a workload is running, not starting up)."""
    proc = psutil.Process(pid)
    deadline = time.monotonic() + timeout
    while True:
        kids = proc.children()
        if len(kids) >= count:
            return kids
        if time.monotonic() > deadline or proc.status() == psutil.STATUS_ZOMBIE:
            raise AssertionError(f"process {pid} has {len(kids)} children, expected {count}")
        time.sleep(0.02)


def kill_tree(proc: subprocess.Popen) -> None:
    """Kill a workload and its children (killing only the parent leaves them running)."""
    with contextlib.suppress(psutil.NoSuchProcess):
        for child in psutil.Process(proc.pid).children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                child.kill()
    proc.kill()
    proc.wait()


def run_cli(*args: str, timeout: float = 300, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the real `schedcp` console script in a subprocess."""
    exe = Path(sys.executable).with_name("schedcp")
    return subprocess.run(
        [str(exe), *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )
