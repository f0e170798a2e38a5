# SPDX-License-Identifier: Apache-2.0
"""The one sandbox for untrusted work: compiling submitted C, and agents' commands over MCP.

Everything that runs code or parses text an agent or a local user chose goes through here. The
sandbox is bubblewrap plus a small launcher (``python -m schedcp.sandbox``), and it holds even if
every check before it was wrong:

* **filesystem**: an empty root with only what the job needs bound read-only — for the compiler,
  the compiler's own files and libraries, the allowed header directories and the submitted source;
  for an agent's command, ``/usr``, ``/etc``, ``/sys`` and the ``/bin``/``/lib`` links, never
  ``/home``, ``/root``, ``/run`` or ``/var``. Writable space is size-bounded tmpfs only.
* **identity**: uid/gid 65534 (nobody) with no groups, no capabilities (empty bounding set) and
  ``no_new_privs``, even when the caller is root; an unprivileged caller gets bwrap's user
  namespace, which has no privileges either.
* **namespaces**: new network (no interfaces but loopback, no outside abstract unix sockets), pid,
  ipc, uts and cgroup namespaces; a new session (no terminal injection); dies with its parent.
* **seccomp**: no ``AF_UNIX`` sockets and no io_uring (:mod:`schedcp.sandbox.seccomp`).
* **limits**: wall clock, RLIMIT_CPU, per-process address space, file size, no core dumps, and a
  cgroup around the whole sandbox for memory, process count and CPU bandwidth
  (:mod:`schedcp.sandbox.cgroup`, with a note in the result when the host allows none).
* **output**: stdout and stderr are captured with caps; nothing reaches a terminal.

The launcher exists because a cgroup must be joined between fork and exec and cleaned up after
the whole tree is gone; it is also what lets callers that start the process themselves (the
analysis engine's observed commands) get exactly the same limits as :func:`run`.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Any

from schedcp.errors import NotReadyError, SchedcpError, UsageError

SANDBOX_UID = 65534  # nobody
MAX_TIMEOUT_S = 600.0
MAX_MEMORY_MB = 8192
SYSTEM_DIRS = ("/usr", "/etc", "/sys")
ROOT_LINKS = ("bin", "sbin", "lib", "lib64", "lib32", "libx32")
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin"
LAUNCH_ERROR = 125  # launcher's exit code when the sandbox could not be set up


@dataclass(frozen=True)
class Bind:
    """A host path shown read-only at `target` inside the sandbox."""

    source: str
    target: str


@dataclass
class Limits:
    timeout_s: float = 60.0  # wall clock for the whole sandbox
    cpu_s: int | None = None  # RLIMIT_CPU per process; default timeout + 2
    memory_mb: int = 1024  # cgroup memory for the whole sandbox, and RLIMIT_AS per process
    max_procs: int = 256  # cgroup pids.max, and RLIMIT_NPROC for the sandbox user
    tmp_mb: int = 64  # size of each writable tmpfs
    file_mb: int = 256  # RLIMIT_FSIZE
    cpus: float = 1.0  # cgroup CPU bandwidth, in cores
    stdout_cap: int = 64 * 1024
    stderr_cap: int = 64 * 1024

    def validate(self) -> None:
        if not 0.1 <= self.timeout_s <= MAX_TIMEOUT_S:
            raise UsageError(f"timeout_s={self.timeout_s} is out of range", f"use 0.1..{MAX_TIMEOUT_S:.0f}")
        if not 16 <= self.memory_mb <= MAX_MEMORY_MB:
            raise UsageError(f"memory_mb={self.memory_mb} is out of range", f"use 16..{MAX_MEMORY_MB}")
        if not 1 <= self.max_procs <= 4096 or not 1 <= self.tmp_mb <= 4096 or not 1 <= self.file_mb <= 4096:
            raise UsageError("max_procs, tmp_mb or file_mb out of range", "use 1..4096")
        if not 0.05 <= self.cpus <= 64:
            raise UsageError(f"cpus={self.cpus} is out of range", "use 0.05..64")

    @property
    def cpu_seconds(self) -> int:
        return int(self.cpu_s if self.cpu_s is not None else self.timeout_s + 2)


@dataclass
class SandboxSpec:
    limits: Limits = field(default_factory=Limits)
    binds: list[Bind] = field(default_factory=list)
    system: bool = True  # show /usr, /etc, /sys and the /bin, /lib links (read-only)
    scratch: list[str] = field(default_factory=lambda: ["/tmp"])  # size-bounded writable tmpfs mounts
    chdir: str = "/"
    env: dict[str, str] = field(default_factory=dict)

    def validate(self) -> None:
        self.limits.validate()
        for b in self.binds:
            if not os.path.isabs(b.source) or not os.path.exists(b.source):
                raise UsageError(f"bind {b.source!r} is not an existing absolute path", "pass real paths")
            if not os.path.isabs(b.target) or ".." in b.target.split("/"):
                raise UsageError(f"bind target {b.target!r} must be absolute without '..'", "")
        for d in [*self.scratch, self.chdir]:
            if not os.path.isabs(d) or ".." in d.split("/"):
                raise UsageError(f"sandbox path {d!r} must be absolute without '..'", "")
        for k, v in self.env.items():
            if not k or not k.replace("_", "").isalnum() or "\x00" in v:
                raise UsageError(f"bad environment variable {k!r}", "use NAME=value pairs")

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> SandboxSpec:
        raw = json.loads(text)
        return cls(
            limits=Limits(**raw["limits"]),
            binds=[Bind(**b) for b in raw["binds"]],
            system=bool(raw["system"]),
            scratch=list(raw["scratch"]),
            chdir=str(raw["chdir"]),
            env={str(k): str(v) for k, v in raw["env"].items()},
        )


@dataclass
class SandboxResult:
    argv: list[str]
    exit_code: int
    signal: int | None
    timed_out: bool
    wall_s: float
    stdout: bytes
    stderr: bytes
    stdout_bytes: int  # before the cap
    stderr_bytes: int
    cgroup: str  # "v2", "v1" or "none"
    notes: list[str] = field(default_factory=list)
    memory_peak: int | None = None
    oom_killed: bool = False

    @property
    def truncated(self) -> bool:
        return self.stdout_bytes > len(self.stdout) or self.stderr_bytes > len(self.stderr)

    def text(self, stream: str = "stdout") -> str:
        return (self.stdout if stream == "stdout" else self.stderr).decode(errors="replace")


def validate_argv(argv: Any) -> list[str]:
    if not isinstance(argv, list | tuple) or not argv or not all(isinstance(a, str) for a in argv):
        raise UsageError("the command must be a non-empty list of strings", "pass argv as a list, not a string")
    if any("\x00" in a for a in argv):
        raise UsageError("the command contains a NUL byte", "remove it")
    return list(argv)


def _tools() -> tuple[str, str | None]:
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise NotReadyError("bubblewrap (bwrap) is not installed", "apt-get install bubblewrap")
    setpriv = shutil.which("setpriv")
    if setpriv is None and os.geteuid() == 0:
        raise NotReadyError("setpriv is not installed", "apt-get install util-linux")
    return bwrap, setpriv


@lru_cache(maxsize=16)
def program_binds(executable: str) -> tuple[Bind, ...]:
    """What a program needs to run in an otherwise empty sandbox: its files and shared libraries.

    A program installed in its own prefix (``/usr/lib/llvm-16/bin/clang``) brings that prefix;
    libraries come from the dynamic loader's own list (``ldd``, run on the trusted executable),
    each bound at its canonical directory so the loader's search paths find it.
    """
    real = os.path.realpath(executable)
    binds: dict[str, Bind] = {}
    bindir = os.path.dirname(real)
    prefix = os.path.dirname(bindir)
    if os.path.basename(bindir) == "bin" and prefix not in ("/", "/usr", "/usr/local"):
        binds[prefix] = Bind(prefix, prefix)
    else:
        binds[real] = Bind(real, real)
    for lib in library_binds((real,)):
        if not any(lib.target.startswith(p.rstrip("/") + "/") for p in binds):
            binds[lib.target] = lib
    return tuple(binds.values())


def library_binds(files: tuple[str, ...]) -> tuple[Bind, ...]:
    """The shared libraries that trusted executables or modules `files` load (one ``ldd`` run), each
    bound at its canonical directory, plus the loader's cache."""
    ldd = shutil.which("ldd")
    if ldd is None:
        raise NotReadyError("ldd is not installed", "apt-get install libc-bin")
    out = subprocess.run([ldd, *files], capture_output=True, text=True, timeout=60).stdout if files else ""
    binds: dict[str, Bind] = {}
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if len(parts) >= 3 and parts[1] == "=>" else (parts[0] if parts else "")
        if not path.startswith("/") or not os.path.exists(path):
            continue
        inside = os.path.join(os.path.realpath(os.path.dirname(path)), os.path.basename(path))
        binds.setdefault(inside, Bind(os.path.realpath(path), inside))
    if os.path.exists("/etc/ld.so.cache"):
        binds["/etc/ld.so.cache"] = Bind("/etc/ld.so.cache", "/etc/ld.so.cache")
    return tuple(binds.values())


def _root_links() -> list[str]:
    argv: list[str] = []
    for name in ROOT_LINKS:
        path = Path("/") / name
        if path.is_symlink():
            argv += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            argv += ["--ro-bind", str(path), str(path)]
    return argv


def bwrap_argv(spec: SandboxSpec, seccomp_fd: int | None) -> list[str]:
    """bwrap (and, for root, setpriv) up to the ``--`` that the command follows."""
    bwrap, setpriv = _tools()
    argv = [
        bwrap,
        "--unshare-net",
        "--unshare-pid",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
    ]
    if spec.system:
        for d in SYSTEM_DIRS:
            if os.path.isdir(d):
                argv += ["--ro-bind", d, d]
    argv += _root_links()
    binds = list(spec.binds)
    if not spec.system and setpriv is not None and os.geteuid() == 0:
        binds += program_binds(setpriv)  # the uid drop happens inside, so setpriv must be visible
    # bwrap makes missing parent directories 0700 (root's); the sandbox user must traverse them.
    parents = {str(p) for b in binds for p in PurePosixPath(b.target).parents if str(p) != "/"}
    parents |= {str(p) for d in spec.scratch for p in PurePosixPath(d).parents if str(p) != "/"}
    for d in sorted(parents, key=lambda x: (x.count("/"), x)):
        if not any(d == b.target or d.startswith(b.target.rstrip("/") + "/") for b in binds):
            argv += ["--perms", "0755", "--dir", d]
    seen: set[str] = set()
    for b in binds:
        if b.target not in seen:
            seen.add(b.target)
            argv += ["--ro-bind", b.source, b.target]
    size = str(spec.limits.tmp_mb * 1024 * 1024)
    for d in spec.scratch:
        argv += ["--perms", "1777", "--size", size, "--tmpfs", d]
    home = spec.scratch[-1] if spec.scratch else "/"
    argv += ["--chdir", spec.chdir, "--clearenv", "--setenv", "PATH", DEFAULT_PATH, "--setenv", "HOME", home]
    argv += ["--setenv", "LANG", "C.UTF-8"]
    for k, v in spec.env.items():
        argv += ["--setenv", k, v]
    if seccomp_fd is not None:
        argv += ["--seccomp", str(seccomp_fd)]
    if os.geteuid() != 0:
        # Unprivileged caller (the MCP server as a user): bwrap's user namespace already drops every
        # capability and sets no_new_privs; there is no other uid to switch to.
        return [*argv, "--"]
    assert setpriv is not None
    return [
        *argv,
        "--",
        setpriv,
        f"--reuid={SANDBOX_UID}",
        f"--regid={SANDBOX_UID}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
    ]


def launch_prefix(spec: SandboxSpec, *, status_fd: int | None = None) -> list[str]:
    """The argv prefix that runs a command in this sandbox; the command's argv follows it.

    For callers that start the process themselves; :func:`run` uses the same prefix.
    """
    spec.validate()
    _tools()
    fd = [] if status_fd is None else ["--status-fd", str(status_fd)]
    # -I: the launcher ignores PYTHON* variables and the user's site directory; it imports this very
    # copy of the package, wherever that is installed.
    root = str(Path(__file__).resolve().parents[2])
    boot = (
        f"import sys; sys.path.insert(0, {root!r}); "
        "from schedcp.sandbox.__main__ import main; sys.exit(main(sys.argv[1:]))"
    )
    return [sys.executable, "-I", "-c", boot, *fd, spec.to_json(), "--"]


def run(argv: list[str], spec: SandboxSpec, *, stdin: bytes | None = None) -> SandboxResult:
    """Run argv in the sandbox and wait for it; output is captured up to the caps."""
    from schedcp.node.observe import _drain, _feed_stdin, _Tail

    argv = validate_argv(argv)
    read_fd, write_fd = os.pipe()
    try:
        full = launch_prefix(spec, status_fd=write_fd) + argv
        start = time.monotonic()
        proc = subprocess.Popen(
            full,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            pass_fds=(write_fd,),
        )
    finally:
        os.close(write_fd)
    out, err = _Tail(spec.limits.stdout_cap // 2), _Tail(spec.limits.stderr_cap // 2)
    readers = [
        threading.Thread(target=_drain, args=(proc.stdout, out), daemon=True),
        threading.Thread(target=_drain, args=(proc.stderr, err), daemon=True),
    ]
    for t in readers:
        t.start()
    if stdin is not None and proc.stdin is not None:
        threading.Thread(target=_feed_stdin, args=(proc.stdin, stdin), daemon=True).start()
    try:
        # The launcher enforces the wall clock itself; this is the backstop if the launcher hangs.
        proc.wait(timeout=spec.limits.timeout_s + 15)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
    for t in readers:
        t.join(timeout=5)
    with os.fdopen(read_fd, "rb") as fh:
        raw_status = fh.read(65536)
    try:
        status = json.loads(raw_status or b"{}")
    except ValueError:
        status = {}
    code = proc.returncode
    if code == LAUNCH_ERROR and status.get("launch_error"):
        raise SchedcpError(f"the sandbox could not start: {status['launch_error']}", "check bwrap", code="sandbox")
    return SandboxResult(
        argv=argv[:32],
        exit_code=int(status.get("exit_code", code if code >= 0 else 128 - code)),
        signal=status.get("signal", -code if code < 0 else None),
        timed_out=bool(status.get("timed_out", code < 0)),
        wall_s=round(time.monotonic() - start, 4),
        stdout=_captured(out),
        stderr=_captured(err),
        stdout_bytes=out.total,
        stderr_bytes=err.total,
        cgroup=str(status.get("cgroup", "none")),
        notes=[n for n in [status.get("note", "")] if n],
        memory_peak=status.get("memory_peak"),
        oom_killed=bool(status.get("oom_killed")),
    )


def _captured(tail: Any) -> bytes:
    rest = b"".join(tail.tail)
    if tail.total <= 2 * tail.cap:
        return tail.head + rest
    omitted = tail.total - len(tail.head) - tail.cap
    return tail.head + f"\n... [{omitted} bytes omitted] ...\n".encode() + rest[-tail.cap :]
