# SPDX-License-Identifier: Apache-2.0
"""Node operations for installed scheduler binaries (scx_rusty, scx_lavd, ...): start, watch, stop.

An upstream sched_ext scheduler is a program with its own userspace half: it loads its BPF object,
attaches it, stays attached while it runs and detaches when it exits. The node supervises such a
process for the control plane, which has already checked the binary's name and every argument
against the repository's catalog entry and the operator's allow-list (``deploy/external.py``).
Here the node only starts what it was told, exactly, and makes sure of three things:

* **the binary is the installed one**: found by name in root-owned, not group/world-writable
  directories of the node's search path (never a path from the request), itself root-owned and
  not writable by others; its sha256 is computed from the file the process then runs (the running
  process's ``/proc/PID/exe`` must be that same inode), and a caller that expects a given hash
  (restoring a last known good) gets a refusal when the file changed;
* **it cannot outlive its supervisor**: it starts in its own session with a parent-death signal
  (SIGINT, the signal these programs detach on) from a thread that lives as long as the agent,
  with a clean environment, and its output is kept only as a bounded tail;
* **stopping it leaves the kernel's default scheduler**: SIGINT, then SIGKILL after a bound, then
  the sysfs state must read disabled; a scheduler still enabled under the process's ops name after
  that (a registration that outlives its loader) is reset with SysRq-S, sched_ext's own switch back
  to the fair class, and the answer says so.

Standard library only, relative imports only (runs as ``schedcp.node.external`` on a host and as
``schedcp_node.external`` in the micro-VM guest). Served by the node agent through ``OPS``:
``external_which``, ``external_start``, ``external_status``, ``external_stop``, ``external_list``.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import queue
import re
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

from . import scx
from .protocol import NodeError
from .runner import SAFE_PATH

SEARCH_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+-]{0,63}$")
MAX_ARGS = 64
MAX_ARG_CHARS = 512
MAX_BINARY_BYTES = 512 << 20
TAIL_BYTES = 8192
MAX_RUNNING = 4
PR_SET_PDEATHSIG = 1


def _safe(st: os.stat_result) -> bool:
    """Owned by root (or this agent's user) and writable by nobody else."""
    return st.st_uid in (0, os.geteuid()) and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _safe_dir(path: str) -> bool:
    """The directory and every one above it are ours: whoever may write an ancestor could rename the
    directory away and put their own in its place. A sticky ancestor (``/tmp``) only lets its owners
    rename their own entries, so it is safe above a directory of ours."""
    current = os.path.abspath(path)
    if not _safe(os.stat(current)):
        return False
    while current != "/":
        current = os.path.dirname(current)
        st = os.stat(current)
        if st.st_uid not in (0, os.geteuid()) or (
            st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX
        ):
            return False
    return True


def _search_dirs(search: list[str] | None) -> list[str]:
    dirs = list(search) if search else list(SEARCH_PATH)
    if len(dirs) > 16 or not all(isinstance(d, str) and d.startswith("/") and "\x00" not in d for d in dirs):
        raise NodeError("bad_args", "search must be up to 16 absolute directories", "")
    return dirs


def which(binary: str, search: list[str] | None = None) -> dict[str, Any]:
    """Where ``binary`` is installed, and its sha256; refuses a file or directory others can write."""
    if not isinstance(binary, str) or not NAME.fullmatch(binary):
        raise NodeError("bad_args", f"{binary!r} is not a program name", "name the binary, not a path")
    unsafe: list[str] = []
    for directory in _search_dirs(search):
        candidate = os.path.join(directory, binary)
        if not os.path.isfile(candidate):
            continue
        real = os.path.realpath(candidate)
        checks = [os.path.dirname(candidate), os.path.dirname(real)]
        try:
            if not all(_safe_dir(d) for d in checks):
                unsafe.append(f"{directory} (writable by others)")
                continue
            fd = os.open(real, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or not st.st_mode & 0o111:
                continue
            if not _safe(st):
                unsafe.append(f"{real} (owned by uid {st.st_uid}, mode {stat.S_IMODE(st.st_mode):04o})")
                continue
            if st.st_size > MAX_BINARY_BYTES:
                raise NodeError("too_big", f"{real} is larger than {MAX_BINARY_BYTES >> 20} MiB", "")
            digest = hashlib.sha256()
            while chunk := os.read(fd, 1 << 20):
                digest.update(chunk)
        finally:
            os.close(fd)
        return {"path": real, "sha256": digest.hexdigest(), "dev": st.st_dev, "ino": st.st_ino, "size": st.st_size}
    if unsafe:
        raise NodeError(
            "unsafe_binary",
            f"{binary} is installed only where others could replace it: {'; '.join(unsafe)[:300]}",
            "install it root-owned and not group/world-writable",
        )
    raise NodeError(
        "not_installed",
        f"{binary} is not installed on this node (searched {':'.join(_search_dirs(search))})",
        f"install {binary} on the node, or choose another scheduler",
    )


class _Tail:
    """The last TAIL_BYTES of a stream, drained on a thread so the process never blocks on a pipe."""

    def __init__(self, stream: Any) -> None:
        self.data = b""
        self.total = 0
        self.thread = threading.Thread(target=self._drain, args=(stream,), daemon=True)
        self.thread.start()

    def _drain(self, stream: Any) -> None:
        while chunk := stream.read1(65536) if hasattr(stream, "read1") else stream.read(65536):
            self.total += len(chunk)
            self.data = (self.data + chunk)[-TAIL_BYTES:]

    def text(self, limit: int = 2000) -> str:
        return self.data[-limit:].decode(errors="replace")


class _Process:
    def __init__(self, proc: subprocess.Popen[bytes], binary: str, found: dict[str, Any], argv: list[str]) -> None:
        self.proc = proc
        self.binary = binary
        self.found = found
        self.argv = argv
        self.started = time.monotonic()
        assert proc.stdout is not None and proc.stderr is not None
        self.out = _Tail(proc.stdout)
        self.err = _Tail(proc.stderr)
        self.ops_name: str | None = None  # the sched_ext ops it enabled under, once seen

    def describe(self) -> dict[str, Any]:
        code = self.proc.poll()
        out: dict[str, Any] = {
            "binary": self.binary,
            "pid": self.proc.pid,
            "alive": code is None,
            "elapsed_s": round(time.monotonic() - self.started, 3),
            "sha256": self.found["sha256"],
            "ops_name": self.ops_name,
        }
        if code is not None:
            out["exit_code"] = code if code >= 0 else 128 - code
            out["signal"] = -code if code < 0 else None
            for t in (self.out, self.err):
                t.thread.join(timeout=1)
        out["stdout_tail"] = self.out.text()
        out["stderr_tail"] = self.err.text()
        return out


_procs: dict[int, _Process] = {}
_lock = threading.Lock()
_next = [1]
_spawn_requests: queue.Queue[tuple[Callable[[], Any], list[Any], threading.Event]] = queue.Queue()
_spawner: list[threading.Thread] = []


def _in_spawner(fn: Callable[[], Any]) -> Any:
    """Run fn on one thread that lives as long as the agent: a parent-death signal is tied to the
    thread that forked the child, and the agent's callers (daemon workers, deploy threads) come and go."""
    if not _spawner:
        t = threading.Thread(target=_spawn_loop, name="schedcp-external-spawner", daemon=True)
        t.start()
        _spawner.append(t)
    box: list[Any] = []
    done = threading.Event()
    _spawn_requests.put((fn, box, done))
    done.wait()
    if isinstance(box[0], BaseException):
        raise box[0]
    return box[0]


def _spawn_loop() -> None:
    while True:
        fn, box, done = _spawn_requests.get()
        try:
            box.append(fn())
        except BaseException as exc:  # handed to the caller
            box.append(exc)
        done.set()


def _child_setup() -> None:
    os.setsid()
    try:  # the scheduler detaches if the agent (on a host: the daemon) dies
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def external_which(binary: str, search: list[str] | None = None) -> dict[str, Any]:
    return which(binary, search)


def external_start(
    binary: str, args: list[str] | None = None, search: list[str] | None = None, expect_sha256: str | None = None
) -> dict[str, Any]:
    """Start the installed ``binary`` with ``args`` (already checked by the control plane) while
    sched_ext is idle; the answer comes at once (poll ``external_status`` for it to enable)."""
    args = list(args or [])
    fits = all(isinstance(a, str) and len(a) <= MAX_ARG_CHARS and "\x00" not in a for a in args)
    if len(args) > MAX_ARGS or not fits:
        raise NodeError("bad_args", f"args must be up to {MAX_ARGS} strings without NUL", "")
    state = scx.read_state()
    if not state["supported"]:
        raise NodeError("no_sched_ext", "this kernel has no sched_ext", "boot a sched_ext kernel")
    if state["state"] not in ("disabled", None):
        raise NodeError("busy", f"sched_ext is {state['state']} with {state['ops']!r} attached", "stop it first")
    with _lock:
        if sum(1 for p in _procs.values() if p.proc.poll() is None) >= MAX_RUNNING:
            raise NodeError("busy", f"{MAX_RUNNING} scheduler processes already run here", "stop one first")
    found = which(binary, search)
    if expect_sha256 is not None and found["sha256"] != expect_sha256:
        raise NodeError(
            "binary_changed",
            f"{found['path']} is not the binary that was deployed (sha256 {found['sha256'][:12]}, "
            f"expected {str(expect_sha256)[:12]})",
            "deploy the installed version anew",
        )
    argv = [binary, *args]

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            executable=found["path"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={"PATH": SAFE_PATH, "LANG": "C.UTF-8", "HOME": "/root"},
            cwd="/",
            preexec_fn=_child_setup,
        )

    try:
        proc: subprocess.Popen[bytes] = _in_spawner(start)
    except OSError as exc:
        raise NodeError("exec_failed", f"cannot run {found['path']}: {exc}", "check the installed binary") from exc
    try:
        st = os.stat(f"/proc/{proc.pid}/exe")
        same = (st.st_dev, st.st_ino) == (found["dev"], found["ino"])
    except OSError:
        same = proc.poll() is not None  # it already exited: its status says why
    if not same:
        _kill(proc)
        raise NodeError("binary_changed", f"{found['path']} was replaced while it was started", "start it again")
    with _lock:
        handle = _next[0]
        _next[0] += 1
        _procs[handle] = _Process(proc, binary, found, argv)
    return {"handle": handle, "pid": proc.pid, "path": found["path"], "sha256": found["sha256"], "argv": argv}


def _get(handle: int) -> _Process:
    with _lock:
        found = _procs.get(int(handle))
    if found is None:
        raise NodeError("unknown_handle", f"no scheduler process with handle {handle}", "list with external_list")
    return found


def external_status(handle: int) -> dict[str, Any]:
    """The process (alive, exit status, output tails) and sched_ext's state in one answer."""
    proc = _get(handle)
    state = scx.read_state()
    if proc.ops_name is None and proc.proc.poll() is None and state.get("state") == "enabled":
        proc.ops_name = state.get("ops")  # the node allows one scheduler at a time: this is its ops
    return {**proc.describe(), "state": state}


def _kill(proc: subprocess.Popen[bytes]) -> None:
    for target in (lambda: os.killpg(proc.pid, signal.SIGKILL), lambda: proc.kill()):
        try:
            target()
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait()


def external_stop(handle: int, grace_s: float = 5.0) -> dict[str, Any]:
    """SIGINT (the scheduler detaches and exits), SIGKILL after ``grace_s``, then the kernel's
    default scheduler confirmed; a registration left behind is reset with SysRq-S."""
    proc = _get(handle)
    grace_s = max(0.1, min(float(grace_s), 60.0))
    killed = False
    if proc.proc.poll() is None:
        try:
            os.kill(proc.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass
        try:
            proc.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            killed = True
    # Whatever it left in its session goes too (and the process itself, if SIGINT was not enough).
    try:
        os.killpg(proc.proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if killed:
        proc.proc.wait()
    state = scx.wait_for(lambda s: s["state"] in ("disabled", None), 5.0)
    sysrq = False
    if state["state"] not in ("disabled", None) and proc.ops_name and state.get("ops") == proc.ops_name:
        with open("/proc/sysrq-trigger", "w") as fh:  # sched_ext's own reset to the fair class
            fh.write("S")
        sysrq = True
        state = scx.wait_for(lambda s: s["state"] in ("disabled", None), 5.0)
    with _lock:
        _procs.pop(int(handle), None)
    return {**proc.describe(), "killed": killed, "sysrq_reset": sysrq, "state": state, "kernel_events": []}


def external_list() -> dict[str, Any]:
    with _lock:
        procs = dict(_procs)
    return {"processes": {str(h): p.describe() for h, p in procs.items()}}


OPS = {
    "external_which": external_which,
    "external_start": external_start,
    "external_status": external_status,
    "external_stop": external_stop,
    "external_list": external_list,
}
