# SPDX-License-Identifier: Apache-2.0
"""Tier 2 sandboxes for agents: rooted file reading, and commands in the shared sandbox.

Agents are treated as hostile: every path is resolved and checked against allowed roots (no
``..``, no symlink that leads outside, no secrets such as /proc/*/environ or a home directory's
credentials), and every command runs as an argv list (never through a shell) in
:mod:`schedcp.sandbox`: no network, no unix sockets, only the system directories plus the inputs
the caller names (never /home, /root, /run), size-bounded /tmp and /work, an unprivileged user,
and time, memory, process and output limits for the whole sandbox.
"""

from __future__ import annotations

import os
import pwd
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedcp import sandbox
from schedcp.errors import SchedcpError, UsageError
from schedcp.node import observe

SANDBOX_UID = sandbox.SANDBOX_UID
WORK_DIR = "/work"
MAX_TIMEOUT_S = sandbox.MAX_TIMEOUT_S
MAX_MEMORY_MB = sandbox.MAX_MEMORY_MB
validate_argv = sandbox.validate_argv
# Path components that name credentials; never readable through the agent's reader, whatever the roots.
SECRET_NAMES = frozenset(
    {
        ".ssh",
        ".aws",
        ".gnupg",
        ".kube",
        ".docker",
        ".azure",
        ".netrc",
        ".pgpass",
        ".git-credentials",
        ".password-store",
        ".vault-token",
        "gcloud",
        "keys",
    }
)
SECRET_PREFIXES = ("id_rsa", "id_ed25519", "id_ecdsa", "id_dsa")


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
        """Also allow the working directory of a workload process (where its sources usually are).

        Refused: this server's own process and its ancestors, and a cwd that is a home directory
        or holds one (``/``, ``/home``, ``~``): that would open every file the user owns.
        """
        pid = int(pid)
        if pid in _own_lineage():
            raise UsageError(
                f"pid {pid} is the SchedCP server (or its parent), not a workload",
                "pass the pid of the workload process",
                code="denied",
            )
        try:
            cwd = os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))
        except OSError as exc:
            raise SchedcpError(f"cannot read the cwd of pid {pid}: {exc.strerror}", "check the pid") from exc
        if cwd == "/":
            return self
        if any(_within(home, cwd) for home in _home_dirs()):
            raise UsageError(
                f"the workload's working directory {cwd} is (or holds) a home directory",
                "read the workload's files by their full paths under /proc, or run it from its project directory",
                code="denied",
            )
        return SafeReader([*self.roots, cwd], self.max_bytes)

    def read(self, path: str, *, max_bytes: int | None = None, offset: int = 0) -> dict[str, Any]:
        if isinstance(path, str) and "\x00" not in path:
            parts = Path(os.path.realpath(path)).parts if path.startswith("/") else ()
            if SECRET_NAMES.intersection(parts) or any(p.startswith(SECRET_PREFIXES) for p in parts):
                raise UsageError(f"{path!r} is a credential path", "pick another file", code="denied")
        try:
            return observe.read_file_safe(path, roots=self.roots, max_bytes=max_bytes or self.max_bytes, offset=offset)
        except observe.NodeError as exc:
            raise _node_error(exc) from exc


def _own_lineage() -> set[int]:
    """This process and its ancestors."""
    pids, pid = set(), os.getpid()
    while pid > 1 and pid not in pids:
        pids.add(pid)
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
            pid = int(stat.rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
    return pids


def _home_dirs() -> set[str]:
    """Home directories: the user database's, /root, and every directory directly under /home."""
    homes = {os.path.realpath(os.path.expanduser("~")), "/root"}
    if os.path.isdir("/home"):
        homes.update(os.path.realpath(e.path) for e in os.scandir("/home") if e.is_dir(follow_symlinks=False))
    for entry in pwd.getpwall():
        if entry.pw_dir and entry.pw_dir != "/" and os.path.isdir(entry.pw_dir):
            homes.add(os.path.realpath(entry.pw_dir))
    return homes


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@dataclass
class SandboxPolicy:
    """What an agent may ask for; turned into the shared sandbox's spec."""

    timeout_s: float = 60.0
    memory_mb: int = 1024  # the whole sandbox (cgroup) and each process (RLIMIT_AS)
    max_procs: int = 256
    work_mb: int = 256  # size of each writable tmpfs (/work and /tmp)
    output_cap: int = 64 * 1024
    ro_binds: list[str] = field(default_factory=list)  # host dirs made visible read-only under /inputs
    env: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        for d in self.ro_binds:
            if not os.path.isabs(d) or not os.path.isdir(d):
                raise UsageError(f"ro_bind {d!r} is not an existing absolute directory", "pass real directories")
            real = os.path.realpath(d)
            if any(_within(home, real) for home in _home_dirs()) or SECRET_NAMES.intersection(Path(real).parts):
                raise UsageError(f"ro_bind {d!r} is (or holds) a home or credential directory", "bind a project dir")
        self.to_spec().validate()

    def to_spec(self) -> sandbox.SandboxSpec:
        return sandbox.SandboxSpec(
            limits=sandbox.Limits(
                timeout_s=self.timeout_s,
                memory_mb=self.memory_mb,
                max_procs=self.max_procs,
                tmp_mb=self.work_mb,
                stdout_cap=self.output_cap,
                stderr_cap=self.output_cap,
            ),
            binds=[sandbox.Bind(d, f"/inputs/{i}-{Path(d).name or 'root'}") for i, d in enumerate(self.ro_binds)],
            system=True,
            scratch=["/tmp", WORK_DIR],
            chdir=WORK_DIR,
            env=dict(self.env),
        )


def bwrap_prefix(policy: SandboxPolicy) -> list[str]:
    """The argv prefix that runs a command in the sandbox (for callers that start it themselves)."""
    policy.validate()
    return sandbox.launch_prefix(policy.to_spec())


def run_sandboxed(argv: list[str], policy: SandboxPolicy | None = None, stdin: str | None = None) -> dict[str, Any]:
    """Run argv inside the sandbox; returns exit status, bounded output, wall time, limits hit."""
    argv = validate_argv(argv)
    policy = policy or SandboxPolicy()
    policy.validate()
    res = sandbox.run(argv, policy.to_spec(), stdin=stdin.encode() if stdin is not None else None)
    return {
        "argv": res.argv,
        "exit_code": res.exit_code,
        "signal": res.signal,
        "timed_out": res.timed_out,
        "wall_s": res.wall_s,
        "stdout": res.text("stdout"),
        "stderr": res.text("stderr"),
        "truncated": res.truncated,
        "limits": {
            "timeout_s": policy.timeout_s,
            "memory_mb": policy.memory_mb,
            "max_procs": policy.max_procs,
            "work_mb": policy.work_mb,
            "network": False,
            "unix_sockets": False,
            "cgroup": res.cgroup,
            **({"note": "; ".join(res.notes)} if res.notes else {}),
        },
        **({"oom_killed": True} if res.oom_killed else {}),
    }
