# SPDX-License-Identifier: Apache-2.0
"""Tier 2 sandboxes: rooted file reading and bubblewrap command execution for agents.

Agents are treated as careless: every path is resolved and checked against allowed roots (no
``..``, no symlink that leads outside, no secrets such as /proc/*/environ), and every command runs
as an argv list (never through a shell) inside ``bwrap`` with no network, a read-only view of the
system, a size-capped writable tmpfs, an unprivileged user, and time, memory, process and output
limits.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.node import observe

SANDBOX_UID = 65534  # nobody: outside root's exemptions from RLIMIT_NPROC
WORK_DIR = "/work"
MAX_TIMEOUT_S = 600.0
MAX_MEMORY_MB = 8192


def _node_error(exc: observe.NodeError) -> SchedcpError:
    if exc.code in ("bad_path", "path_traversal", "outside_roots", "denied", "bad_args", "not_regular"):
        return UsageError(exc.cause, exc.next_step, code=exc.code)
    return SchedcpError(exc.cause, exc.next_step, code=exc.code)


@dataclass
class SafeReader:
    """Reads files under allowed roots only; roots are set by the operator, paths by the agent."""

    roots: list[str] = field(default_factory=lambda: list(observe.DEFAULT_READ_ROOTS))
    max_bytes: int = 65536

    def with_workload_cwd(self, pid: int) -> SafeReader:
        """Also allow the working directory of a workload process (where its sources usually are)."""
        try:
            cwd = os.readlink(f"/proc/{int(pid)}/cwd")
        except OSError as exc:
            raise SchedcpError(f"cannot read the cwd of pid {pid}: {exc.strerror}", "check the pid") from exc
        if os.path.realpath(cwd) == "/":
            return self
        return SafeReader([*self.roots, cwd], self.max_bytes)

    def read(self, path: str, *, max_bytes: int | None = None, offset: int = 0) -> dict[str, Any]:
        try:
            return observe.read_file_safe(path, roots=self.roots, max_bytes=max_bytes or self.max_bytes, offset=offset)
        except observe.NodeError as exc:
            raise _node_error(exc) from exc


@dataclass
class SandboxPolicy:
    timeout_s: float = 60.0
    memory_mb: int = 1024  # RLIMIT_AS per process
    max_procs: int = 256  # RLIMIT_NPROC for the sandbox user
    work_mb: int = 256  # size of the writable tmpfs at /work
    output_cap: int = 64 * 1024
    ro_binds: list[str] = field(default_factory=list)  # host dirs made visible read-only under /inputs
    env: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        if not 0.1 <= self.timeout_s <= MAX_TIMEOUT_S:
            raise UsageError(f"timeout_s={self.timeout_s} is out of range", f"use 0.1..{MAX_TIMEOUT_S:.0f}")
        if not 16 <= self.memory_mb <= MAX_MEMORY_MB:
            raise UsageError(f"memory_mb={self.memory_mb} is out of range", f"use 16..{MAX_MEMORY_MB}")
        if not 1 <= self.max_procs <= 4096 or not 1 <= self.work_mb <= 4096:
            raise UsageError("max_procs or work_mb out of range", "use 1..4096")
        for d in self.ro_binds:
            if not os.path.isabs(d) or not os.path.isdir(d):
                raise UsageError(f"ro_bind {d!r} is not an existing absolute directory", "pass real directories")
        for k, v in self.env.items():
            if not k.replace("_", "").isalnum() or "\x00" in v:
                raise UsageError(f"bad environment variable {k!r}", "use NAME=value pairs")


def validate_argv(argv: Any) -> list[str]:
    if not isinstance(argv, list | tuple) or not argv or not all(isinstance(a, str) for a in argv):
        raise UsageError("the command must be a non-empty list of strings", "pass argv as a list, not a string")
    if any("\x00" in a for a in argv):
        raise UsageError("the command contains a NUL byte", "remove it")
    return list(argv)


def bwrap_prefix(policy: SandboxPolicy) -> list[str]:
    """The bwrap + setpriv argv that every sandboxed command is appended to."""
    bwrap = shutil.which("bwrap")
    setpriv = shutil.which("setpriv")
    if bwrap is None:
        raise NotReadyError("bubblewrap (bwrap) is not installed", "apt-get install bubblewrap")
    if setpriv is None and os.geteuid() == 0:
        raise NotReadyError("setpriv is not installed", "apt-get install util-linux")
    argv = [
        bwrap,
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--die-with-parent",
        "--new-session",
        "--ro-bind",
        "/",
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--tmpfs",
        "/tmp",
        "--perms",
        "1777",
        "--size",
        str(policy.work_mb * 1024 * 1024),
        "--tmpfs",
        WORK_DIR,
    ]
    for i, d in enumerate(policy.ro_binds):
        argv += ["--ro-bind", d, f"/inputs/{i}-{Path(d).name or 'root'}"]
    argv += [
        "--chdir",
        WORK_DIR,
        "--clearenv",
        "--setenv",
        "PATH",
        "/usr/local/bin:/usr/bin:/bin",
        "--setenv",
        "HOME",
        WORK_DIR,
        "--setenv",
        "LANG",
        "C.UTF-8",
    ]
    for k, v in policy.env.items():
        argv += ["--setenv", k, v]
    if os.geteuid() != 0:
        # Unprivileged (e.g. the MCP server as a user): bwrap's own user namespace already drops
        # every capability and sets no_new_privs; there is no other uid to switch to.
        return [*argv, "--"]
    argv += [
        "--",
        setpriv,
        f"--reuid={SANDBOX_UID}",
        f"--regid={SANDBOX_UID}",
        "--clear-groups",
        "--no-new-privs",
        "--",
    ]
    return argv


def _limits(policy: SandboxPolicy):
    mem = policy.memory_mb * 1024 * 1024
    cpu = int(policy.timeout_s) + 2
    fsize = policy.work_mb * 1024 * 1024

    def apply() -> None:
        # Inherited by bwrap and everything it starts; bwrap itself needs far less than this.
        resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_NPROC, (policy.max_procs, policy.max_procs))
        resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

    return apply


def run_sandboxed(argv: list[str], policy: SandboxPolicy | None = None, stdin: str | None = None) -> dict[str, Any]:
    """Run argv inside the sandbox; returns exit status, bounded output, wall time, limits hit."""
    argv = validate_argv(argv)
    policy = policy or SandboxPolicy()
    policy.validate()
    full = bwrap_prefix(policy) + argv
    start = time.monotonic()
    proc = subprocess.Popen(
        full,
        stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_limits(policy),
    )
    out, err = observe._Tail(policy.output_cap // 2), observe._Tail(policy.output_cap // 2)
    readers = [
        threading.Thread(target=observe._drain, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=observe._drain, args=(proc.stderr, err), daemon=True),
    ]
    for t in readers:
        t.start()
    if stdin is not None and proc.stdin is not None:
        threading.Thread(target=observe._feed_stdin, args=(proc.stdin, stdin.encode()), daemon=True).start()
    timed_out = False
    try:
        proc.wait(timeout=policy.timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        # bwrap's child is PID 1 of the sandbox's PID namespace: killing bwrap (die-with-parent)
        # takes the namespace, and with it every process the command started.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    for t in readers:
        t.join(timeout=5)
    code = proc.returncode
    return {
        "argv": argv[:32],
        "exit_code": code if code >= 0 else 128 - code,
        "signal": -code if code < 0 else None,
        "timed_out": timed_out,
        "wall_s": round(time.monotonic() - start, 4),
        "stdout": out.text(),
        "stderr": err.text(),
        "truncated": out.total > out.cap * 2 or err.total > err.cap * 2,
        "limits": {
            "timeout_s": policy.timeout_s,
            "memory_mb": policy.memory_mb,
            "max_procs": policy.max_procs,
            "work_mb": policy.work_mb,
            "network": False,
        },
    }
