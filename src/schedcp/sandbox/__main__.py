# SPDX-License-Identifier: Apache-2.0
"""The sandbox launcher: ``python -m schedcp.sandbox [--status-fd N] SPEC_JSON -- ARGV...``.

Creates the cgroup, forks, and in the child applies the rlimits, joins the cgroup and execs bwrap
with the seccomp filter; the parent enforces the wall clock, then kills whatever is left in the
cgroup, removes it and reports one JSON status line on ``--status-fd`` (exit code, signal, timeout,
memory peak, which cgroup applied). It exits with the command's code (128+N for a signal).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import select
import signal
import sys
import time
from typing import Any

from schedcp.sandbox import LAUNCH_ERROR, SandboxSpec, bwrap_argv, cgroup, seccomp

PR_SET_PDEATHSIG = 1


def _pdeathsig() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _child(spec: SandboxSpec, cg: cgroup.SandboxCgroup, argv: list[str]) -> None:
    try:
        _pdeathsig()
        if cg.active:
            cg.join()
        lim = spec.limits
        mem = lim.memory_mb * 1024 * 1024
        fsize = lim.file_mb * 1024 * 1024
        limits = [
            (resource.RLIMIT_AS, mem),
            (resource.RLIMIT_CPU, lim.cpu_seconds),
            (resource.RLIMIT_FSIZE, fsize),
            (resource.RLIMIT_CORE, 0),
        ]
        if not cg.active:
            # RLIMIT_NPROC counts every process of the sandbox's uid on the machine, not only this
            # sandbox's (an unprivileged QEMU may share it), so it is only the fallback bound; the
            # cgroup's pids.max bounds exactly this sandbox.
            limits.append((resource.RLIMIT_NPROC, lim.max_procs))
        for res, value in limits:
            resource.setrlimit(res, (value, value))
        os.execv(argv[0], argv)
    except BaseException as exc:  # the child must never return into the launcher's code
        with contextlib.suppress(OSError):
            os.write(2, f"schedcp sandbox: cannot start: {exc}\n".encode())
        os._exit(LAUNCH_ERROR)


def _wait(pid: int, timeout_s: float) -> tuple[int | None, bool]:
    """Wait for the child; (wait status or None, timed out)."""
    pidfd = os.pidfd_open(pid)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, True
            ready, _, _ = select.select([pidfd], [], [], remaining)
            if ready:
                _, status = os.waitpid(pid, 0)
                return status, False
    finally:
        os.close(pidfd)


def main(args: list[str]) -> int:
    status_fd: int | None = None
    if args[:1] == ["--status-fd"]:
        status_fd, args = int(args[1]), args[2:]
    if len(args) < 3 or args[1] != "--":
        print("usage: python -m schedcp.sandbox [--status-fd N] SPEC_JSON -- ARGV...", file=sys.stderr)
        return 2
    spec, command = SandboxSpec.from_json(args[0]), args[2:]
    _pdeathsig()
    report: dict[str, Any] = {}
    cg = cgroup.create(
        cgroup.CgroupLimits(spec.limits.memory_mb * 1024 * 1024, spec.limits.max_procs, spec.limits.cpus)
    )
    report["cgroup"], report["note"] = cg.version, cg.note
    filter_fd = seccomp.program_fd() if seccomp.supported() else None
    if filter_fd is None:
        report["note"] = (report["note"] + "; " if report["note"] else "") + "no seccomp filter for this CPU"
    code = LAUNCH_ERROR

    def _terminate(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, _terminate)
    pid = -1
    try:
        argv = bwrap_argv(spec, filter_fd) + command
        pid = os.fork()
        if pid == 0:
            if status_fd is not None:
                os.close(status_fd)
            _child(spec, cg, argv)
        if filter_fd is not None:
            os.close(filter_fd)
        wait_status, timed_out = _wait(pid, spec.limits.timeout_s)
        if timed_out:
            os.kill(pid, signal.SIGKILL)  # bwrap is PID 1's parent: the namespace goes with it
            _, wait_status = os.waitpid(pid, 0)
        assert wait_status is not None
        report["timed_out"] = timed_out
        if os.WIFSIGNALED(wait_status):
            report["signal"] = os.WTERMSIG(wait_status)
            report["exit_code"] = code = 128 + report["signal"]
        else:
            # bwrap exits with 128+N when the command died of signal N.
            report["exit_code"] = code = os.waitstatus_to_exitcode(wait_status)
            report["signal"] = code - 128 if 128 < code < 160 else None
    except KeyboardInterrupt:
        if pid > 0:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
        code = 128 + signal.SIGKILL
        report.update(signal=int(signal.SIGKILL), exit_code=code, interrupted=True)
    except Exception as exc:
        report["launch_error"] = f"{type(exc).__name__}: {exc}"
    finally:
        report["memory_peak"] = cg.memory_peak()
        report["oom_killed"] = cg.oom_killed()
        cg.close()
        if status_fd is not None:
            with contextlib.suppress(OSError):
                os.write(status_fd, json.dumps(report).encode())
                os.close(status_fd)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
