# SPDX-License-Identifier: Apache-2.0
"""Untrusted objects are opened, patched and loaded by libbpf in a forked child, never in the agent.

libbpf parses the whole object in-process, and a crafted (or merely unlucky) object can crash it:
libbpf 1.5 segfaults inside ``bpf_object__load()`` on the kernel 7.3 build of scx_qmap most times.
In the micro-VM that costs a boot; on a host the node agent runs inside the root daemon, which
would die with it. So :func:`start` forks a child that does everything libbpf does with the object
(open, the loader's patches and scx fix-ups, load, and later the attach) and hands the agent file
descriptors over a unix socketpair (``SCM_RIGHTS``): the data-section maps, the chosen struct_ops
map and, at attach, the struct_ops link. The child then exits without closing anything (closing
would detach the link), so the link's only descriptor is the agent's: the scheduler stays attached
exactly as long as the agent holds it, as before. A child that dies is a clean error
("libbpf crashed while loading the object: signal 11") and the agent goes on serving.

Why not load twice (a child as a pre-flight check, then the agent)? The crash is not deterministic
(the same object is sometimes rejected cleanly instead), so a passing pre-flight proves nothing about
the second load, and every load would cost the kernel's verifier twice. Why the attach happens in
the child: libbpf fills the struct_ops map's value (program descriptors in the kernel's layout) only
inside its own object; the agent, holding descriptors, reads data sections with plain map lookups
and detaches by closing the link (or deleting the map's entry for a map registered without a link).

A child is forked, not a fresh interpreter: in the guest a Python start costs seconds under
emulation. It closes every inherited descriptor but its socket first (an inherited copy of another
scheduler's link would keep that scheduler attached), turns off the cycle collector (a stale object
must not close a descriptor number libbpf reused), dies with its parent, and only ever leaves with
``os._exit``. Standard library only: this module also runs in the guest.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import gc
import json
import os
import resource
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from . import libbpf, scxload
from .protocol import NodeError

MAX_CHILD_MESSAGE = 64 * 1024 * 1024
MAX_FDS = 200
REAP_WAIT_S = 5.0
PR_SET_PDEATHSIG = 1
_HEADER = struct.Struct("<I")

Prepare = Callable[[libbpf.LoadedScheduler], scxload.Fixups]


# -- the wire between agent and child ---------------------------------------------------------------
def _send(sock: socket.socket, message: dict[str, Any], fds: list[int] | None = None) -> None:
    payload = json.dumps(message, separators=(",", ":")).encode()
    socket.send_fds(sock, [_HEADER.pack(len(payload))], list(fds or []))
    sock.sendall(payload)


def _recv_exact(sock: socket.socket, size: int) -> bytes | None:
    chunks: list[bytes] = []
    while size > 0:
        chunk = sock.recv(min(size, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def _recv(sock: socket.socket) -> tuple[dict[str, Any] | None, list[int]]:
    """One message and the descriptors that came with it; (None, []) when the peer is gone."""
    data, fds, flags, _ = socket.recv_fds(sock, _HEADER.size, MAX_FDS)
    if flags & getattr(socket, "MSG_CTRUNC", 8):
        _close_all(fds)
        raise NodeError("loader_protocol", "the loader sent more descriptors than expected", "")
    if not data:
        _close_all(fds)
        return None, []
    rest = _recv_exact(sock, _HEADER.size - len(data)) if len(data) < _HEADER.size else b""
    if rest is None:
        _close_all(fds)
        return None, []
    (size,) = _HEADER.unpack(data + rest)
    payload = _recv_exact(sock, size) if size <= MAX_CHILD_MESSAGE else None
    if payload is None:
        _close_all(fds)
        return None, []
    try:
        message = json.loads(payload)
    except ValueError:
        message = None
    if not isinstance(message, dict):
        _close_all(fds)
        raise NodeError("loader_protocol", "the loader sent a malformed message", "")
    return message, fds


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


# -- the child ------------------------------------------------------------------------------------
def _child_setup(keep: int) -> None:
    gc.disable()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, signal.SIG_DFL)
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    top = limit if 0 < limit < (1 << 20) else 65536
    os.closerange(3, keep)
    os.closerange(keep + 1, top)
    libbpf._lock = threading.Lock()  # another thread of the agent may have held it at fork time


def _child_main(sock: socket.socket, path: str, struct_ops: str | None, prepare: Prepare) -> None:
    try:
        sched = libbpf.LoadedScheduler(path, struct_ops=struct_ops)
        _send(sock, {"phase": "opened", "programs": sched.programs()})
        fixups = prepare(sched)
        _send(sock, {"phase": "prepared"})
        sched.load()
        held = sched.held_maps()
        enums = scxload._enums
        _send(
            sock,
            {
                "phase": "loaded",
                "ops_name": sched.ops_name,
                "struct_ops": sched.struct_ops,
                "struct_ops_maps": sched.struct_ops_maps,
                "fixups": fixups.to_dict(),
                "btf_b64": base64.b64encode(sched.object_btf_raw()).decode(),
                "maps": [[m.name, m.kind, m.value_size, m.link] for m in held],
                "enums": {"values": enums.values} if enums is not None else None,
            },
            [m.fd for m in held],
        )
        command, _ = _recv(sock)
        if command is None or command.get("op") != "attach":
            return
        sched.attach()
        _send(sock, {"phase": "attached"}, sched.link_fds())
    except NodeError as exc:
        _send(sock, {"phase": "error", "error": exc.to_dict()})
    except Exception as exc:
        _send(sock, {"phase": "error", "error": {"code": "internal", "cause": f"{type(exc).__name__}: {exc}"}})


def _run_child(sock: socket.socket, path: str, struct_ops: str | None, prepare: Prepare) -> None:
    code = 0
    try:
        _child_setup(sock.fileno())
        _child_main(sock, path, struct_ops, prepare)
    except BaseException:
        code = 1
    finally:
        os._exit(code)  # never close the object: that would detach what the agent now holds


# -- the agent's side -----------------------------------------------------------------------------
class ChildLoad:
    """A child loading one object; becomes a HeldScheduler once the object is loaded."""

    def __init__(self, path: str, struct_ops: str | None, prepare: Prepare) -> None:
        self.path = path
        agent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            pid = os.fork()
        except OSError as exc:
            agent_sock.close()
            child_sock.close()
            raise NodeError(
                "fork_failed", f"cannot start the loader process: {exc}", "free memory or processes"
            ) from None
        if pid == 0:
            agent_sock.detach()  # closed by the child's setup; never through this object
            _run_child(child_sock, path, struct_ops, prepare)
        child_sock.close()
        self.pid = pid
        self.sock = agent_sock
        self.programs = 0
        self.phase = "preparing"
        self.exit_status: int | None = None

    def progress_fds(self) -> int:
        """Programs the kernel has accepted so far (each a bpf-prog descriptor of the child)."""
        count = 0
        try:
            entries = os.listdir(f"/proc/{self.pid}/fd")
        except OSError:
            return 0
        for fd in entries:
            try:
                if os.readlink(f"/proc/{self.pid}/fd/{fd}") == "anon_inode:bpf-prog":
                    count += 1
            except OSError:
                continue
        return count

    def wait_loaded(self) -> HeldScheduler:
        """Block until the child has loaded the object (or failed, or died)."""
        while True:
            message, fds = self._next("loading")
            if message.get("phase") in ("opened", "prepared"):
                _close_all(fds)
                if message["phase"] == "opened":
                    self.programs = _int(message.get("programs"))
                else:
                    self.phase = "verifying"
                continue
            if message.get("phase") != "loaded":
                _close_all(fds)
                self.abandon()
                raise NodeError("loader_protocol", f"unexpected loader message {message.get('phase')!r}", "")
            return HeldScheduler(self, message, fds)

    def attach(self) -> list[int]:
        """Ask the child to attach; the link descriptors it created, now the agent's only copies."""
        _send(self.sock, {"op": "attach"})
        message, fds = self._next("attaching")
        self.abandon()  # the child exits after its answer; reap it
        if message.get("phase") != "attached":
            _close_all(fds)
            raise NodeError("loader_protocol", f"unexpected loader message {message.get('phase')!r}", "")
        return fds

    def _next(self, doing: str) -> tuple[dict[str, Any], list[int]]:
        """The child's next message; its error, or its death, raised as NodeError."""
        try:
            message, fds = _recv(self.sock)
        except OSError as exc:
            message, fds = None, []
            cause = str(exc)
        else:
            cause = ""
        if message is None:
            status = self.abandon()
            if status is not None and os.WIFSIGNALED(status):
                sig = os.WTERMSIG(status)
                raise NodeError(
                    "libbpf_crashed",
                    f"libbpf crashed while {doing} the object: signal {sig} ({signal.Signals(sig).name})",
                    "the object (or this libbpf) is at fault; the node agent is unaffected and keeps serving",
                    signal=sig,
                )
            code = os.waitstatus_to_exitcode(status) if status is not None else None
            raise NodeError("loader_failed", f"the loader process ended while {doing} (exit {code}) {cause}", "")
        if message.get("phase") == "error":
            _close_all(fds)
            self.abandon()
            err = _dict(message.get("error"))
            details = _dict(err.get("details"))
            raise NodeError(
                str(err.get("code", "internal")), str(err.get("cause", "")), str(err.get("next_step", "")), **details
            )
        return message, fds

    def abandon(self) -> int | None:
        """Close the socket (a waiting child exits) and reap the child; its wait status."""
        with contextlib.suppress(OSError):
            self.sock.close()
        if self.exit_status is not None:
            return self.exit_status
        deadline = time.monotonic() + REAP_WAIT_S
        while True:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                return None
            if pid == self.pid:
                self.exit_status = status
                return status
            if time.monotonic() > deadline:
                with contextlib.suppress(OSError):
                    os.kill(self.pid, signal.SIGKILL)
                _, status = os.waitpid(self.pid, 0)
                self.exit_status = status
                return status
            time.sleep(0.01)


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < (1 << 31) else 0


class HeldScheduler:
    """A loaded scheduler as the agent holds it: descriptors only, no libbpf object.

    Same surface as ``LoadedScheduler`` for what the agent does after load: attach, read sections and
    exit info, detach, close."""

    def __init__(self, child: ChildLoad, message: dict[str, Any], fds: list[int]) -> None:
        self.child: ChildLoad | None = child
        self.path = child.path
        self.links: list[int] = []
        self.closed = False
        self.ops_name = message.get("ops_name") if isinstance(message.get("ops_name"), str) else None
        self.struct_ops = message.get("struct_ops") if isinstance(message.get("struct_ops"), str) else None
        maps_raw = message.get("struct_ops_maps")
        self.struct_ops_maps = [str(m) for m in maps_raw] if isinstance(maps_raw, list) else []
        fixups = _dict(message.get("fixups"))
        self.fixups = scxload.Fixups(**{k: v for k, v in fixups.items() if k in scxload.Fixups.__dataclass_fields__})
        try:
            self._btf = base64.b64decode(str(message.get("btf_b64", "")), validate=True)
        except ValueError:
            self._btf = b""
        entries = _list(message.get("maps"))
        if len(entries) != len(fds) or not all(isinstance(e, list) and len(e) == 4 for e in entries):
            _close_all(fds)
            child.abandon()
            raise NodeError("loader_protocol", "the loader's maps and descriptors do not match", "")
        self.maps = [
            libbpf.HeldMap(str(name), str(kind), fd, _int(size), bool(link))
            for (name, kind, size, link), fd in zip(entries, fds, strict=True)
        ]
        enums = message.get("enums")
        if scxload._enums is None and isinstance(enums, dict) and isinstance(enums.get("values"), dict):
            values = {str(k): int(v) for k, v in enums["values"].items() if isinstance(v, int)}
            kinds = {v: k for k, v in values.items() if k.startswith("SCX_EXIT_")}
            scxload._enums = scxload._KernelEnums(values, kinds)

    def _data_maps(self) -> list[libbpf.HeldMap]:
        return [m for m in self.maps if m.kind == "data"]

    def _struct_ops_map(self) -> libbpf.HeldMap | None:
        return next((m for m in self.maps if m.kind == "struct_ops"), None)

    def attach(self) -> None:
        if self.child is None:
            raise NodeError("not_attachable", "this scheduler was attached before and detached", "load it again")
        child, self.child = self.child, None
        self.links = child.attach()

    def object_btf_raw(self) -> bytes:
        if self.closed or not self._btf:
            raise NodeError("no_btf", "the object has no BTF", "compile with -g")
        return self._btf

    def datasec_data(self, section: str) -> bytes | None:
        """Live bytes of a data section (".rodata", ".data", ".data.NAME")."""
        data = self._data_maps()
        index = libbpf.datasec_match([m.name for m in data], section)
        if index is None or self.closed:
            return None
        return libbpf.map_value(data[index].fd, data[index].value_size)

    def read_sections(self) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for suffix in libbpf.DATASEC_SUFFIXES:
            value = self.datasec_data(suffix)
            if value is not None:
                out[suffix] = value
        return out

    def detach(self) -> None:
        ops = self._struct_ops_map()
        while self.links:
            fd = self.links.pop()
            if ops is not None and not ops.link:
                libbpf.map_delete(fd)  # registered without a link: deleting the entry unregisters it
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self.detach()
        if self.child is not None:
            self.child.abandon()  # a standby's child still holds the object: let it go
            self.child = None
        if not self.closed:
            _close_all([m.fd for m in self.maps])
            self.closed = True


def start(path: str, struct_ops: str | None, prepare: Prepare) -> ChildLoad:
    """Fork a child that opens `path`, runs `prepare` on it and loads it (see the module docstring)."""
    return ChildLoad(path, struct_ops, prepare)
