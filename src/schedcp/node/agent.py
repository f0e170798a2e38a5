# SPDX-License-Identifier: Apache-2.0
"""The node agent's request loop and operations.

Transports: a virtio-serial port inside the micro-VM (``--port NAME``) or a unix socket on a real
host (``--unix PATH``, served by ``schedcp daemon``). Requests are handled one at a time, in order;
the control plane enforces its own deadlines and kills the VM when the guest stops answering.
"""

from __future__ import annotations

import argparse
import base64
import os
import platform
import socket
import stat
import sys
import threading
import time
from pathlib import Path
from typing import Any, BinaryIO

from . import childload, libbpf, scx, scxload
from .protocol import MAX_MESSAGE_BYTES, PORT_NAME, PROTOCOL_VERSION, NodeError, decode, encode
from .runner import run_command

# Files pushed by the control plane (objects, workloads) may only land here.
WORK_DIR = Path(os.environ.get("SCHEDCP_NODE_WORKDIR", "/tmp/schedcp-node"))
ENABLE_WAIT_S = 3.0
# The node agent's working directory, where commands start unless they say otherwise: the micro-VM
# sets it (kernel command line -> init's environment) to the directory that holds --with files.
DEFAULT_CWD = os.environ.get("SCHEDCP_NODE_CWD", "")


class NodeAgent:
    def __init__(self) -> None:
        self.kmsg = scx.KernelLog()
        self.kmsg.read_events()  # skip boot history; callers want events caused by their actions
        self.schedulers: dict[int, childload.HeldScheduler] = {}
        self._next_handle = 1
        self._job: _LoadJob | None = None
        self._next_job = 1
        self.started = time.monotonic()
        # Objects and measurement scripts live here: writable by the agent only, never by workloads.
        prepare_work_dir(WORK_DIR)

    # -- operations ---------------------------------------------------------------------------
    def op_hello(self) -> dict[str, Any]:
        return {
            "protocol": PROTOCOL_VERSION,
            "kernel": platform.release(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "uptime_s": _uptime(),
            "libbpf": libbpf.info(),
            "sched_ext": scx.read_state(),
            "root": os.geteuid() == 0,
        }

    def op_state(self) -> dict[str, Any]:
        return scx.read_state()

    def op_events(self) -> dict[str, Any]:
        return {"events": self.kmsg.read_events(), "available": self.kmsg.available}

    def op_put_file(self, name: str, data_b64: str, mode: int = 0o644) -> dict[str, Any]:
        target = _safe_path(name)
        data = base64.b64decode(data_b64, validate=True)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        target.chmod(mode & 0o755)
        return {"path": str(target), "bytes": len(data)}

    def op_load(
        self,
        path: str,
        patches: list[dict[str, Any]] | None = None,
        timeout_ms: int | None = None,
        ops_flags: int = 0,
        attach: bool = True,
        struct_ops: str | None = None,
        rodata: dict[str, str] | None = None,
        steps: dict[str, Any] | None = None,
        wait_s: float | None = None,
    ) -> dict[str, Any]:
        """Open, patch, load and (by default) attach a scheduler; confirm it really enabled.

        ``struct_ops`` picks the map to attach when the object has several; ``rodata`` sets
        ``const volatile`` variables by name (base64 of their bytes); ``steps`` switches the generic
        scx loader steps (see scxload.apply; all on by default). With ``wait_s`` the kernel's
        verifier runs in the background: the reply comes after at most wait_s, as ``pending`` with
        progress when the load is still running, and ``load_wait`` continues it.
        """
        if self._job is not None:
            raise NodeError("busy", "another load is still in progress", "wait for it with load_wait")
        obj_path = _safe_path(path) if not os.path.isabs(path) else Path(path)
        if not obj_path.is_file():
            raise NodeError("not_found", f"no object at {obj_path}", "upload it with put_file first")
        if attach:
            state = scx.read_state()
            if not state["supported"]:
                raise NodeError("no_sched_ext", "this kernel has no sched_ext", "boot a sched_ext kernel")
            if state["state"] not in ("disabled", None):
                raise NodeError(
                    "busy",
                    f"sched_ext is {state['state']} with {state['ops']!r} attached",
                    "detach the running scheduler first",
                )
        self.kmsg.read_events()
        options = dict(steps or {})
        unknown = set(options) - {"enums", "cpu_counts", "ops_compat", "hotplug", "uei_dump_len", "kernel_enums"}
        if unknown:
            raise NodeError("bad_args", f"unknown scx loader options {sorted(unknown)}", "")
        values = {str(k): base64.b64decode(v, validate=True) for k, v in (rodata or {}).items()}
        decoded = [(str(p["section"]), int(p["offset"]), base64.b64decode(p["data_b64"])) for p in patches or []]

        def prepare(sched: libbpf.LoadedScheduler) -> scxload.Fixups:
            for section, offset, data in decoded:
                sched.patch(section, offset, data)
            fixups = scxload.apply(sched, rodata=values, **options)
            if timeout_ms is not None:
                sched.set_ops_u32("timeout_ms", int(timeout_ms))
            if ops_flags:
                sched.set_ops_u64_or("flags", int(ops_flags))
            return fixups

        # libbpf opens, patches and loads the object in a child process (childload.py): a crash
        # there is an error for this request, not the end of the agent.
        job = _LoadJob(self._next_job, childload.start(str(obj_path), struct_ops, prepare), attach)
        self._next_job += 1
        if wait_s is None:
            job.run()
            return self._finish(job)
        self._job = job
        threading.Thread(target=job.run, name="schedcp-load", daemon=True).start()
        return self.op_load_wait(job.id, wait_s)

    def op_load_wait(self, job: int, wait_s: float = 20.0) -> dict[str, Any]:
        """Wait up to wait_s more for a background load; its result, or ``pending`` with progress."""
        current = self._job
        if current is None or current.id != int(job):
            raise NodeError("unknown_job", f"no load {job} in progress", "start one with load(wait_s=...)")
        if not current.done.wait(max(0.0, min(float(wait_s), 120.0))):
            return {"pending": True, "job": current.id, "progress": current.progress()}
        self._job = None
        return self._finish(current)

    def _finish(self, job: _LoadJob) -> dict[str, Any]:
        if job.error is not None or job.sched is None:
            raise job.error or NodeError("internal", "the load ended without a result", "")
        sched = job.sched
        try:
            result: dict[str, Any] = {
                "ops_name": sched.ops_name,
                "load_s": round(job.load_s, 4),
                "struct_ops": sched.struct_ops,
                "struct_ops_maps": sched.struct_ops_maps,
                "loader": sched.fixups.to_dict(),
            }
            if job.attach:
                sched.attach()
                state, events = self._wait_enabled(sched.ops_name)
                result["kernel_events"] = events
                if state["state"] != "enabled" or state["ops"] != sched.ops_name:
                    exit_info = scxload.read_exit_info(sched)
                    raise NodeError(
                        "not_enabled",
                        f"attach returned but {sched.ops_name!r} did not enable (state={state['state']})"
                        + (f": {scxload.describe(exit_info)}" if exit_info else ""),
                        "see kernel_events for the kernel's reason, e.g. ops.init() failing",
                        kernel_events=events + self.kmsg.read_events(),
                        state=state,
                        exit_info=exit_info,
                    )
                result["state"] = state
        except BaseException:
            sched.close()
            raise
        handle = self._next_handle
        self._next_handle += 1
        self.schedulers[handle] = sched
        result["handle"] = handle
        return result

    def op_attach(self, handle: int) -> dict[str, Any]:
        """Attach a scheduler loaded earlier with ``attach=False`` (a standby the kernel already
        verified: attaching it takes milliseconds where loading can take seconds to minutes)."""
        sched = self._sched(handle)
        state = scx.read_state()
        if state["state"] not in ("disabled", None):
            raise NodeError("busy", f"sched_ext is {state['state']} with {state['ops']!r} attached", "detach it first")
        self.kmsg.read_events()
        sched.attach()
        state, events = self._wait_enabled(sched.ops_name)
        if state["state"] != "enabled" or state["ops"] != sched.ops_name:
            raise NodeError(
                "not_enabled",
                f"attach returned but {sched.ops_name!r} did not enable (state={state['state']})",
                "see kernel_events for the kernel's reason",
                kernel_events=events,
                state=state,
            )
        return {"handle": int(handle), "ops_name": sched.ops_name, "state": state, "kernel_events": events}

    def op_exit_info(self, handle: int) -> dict[str, Any]:
        """The scheduler's own record of why it exited (UEI), while its object is still open."""
        return {"exit_info": scxload.read_exit_info(self._sched(handle))}

    def _wait_enabled(self, name: str | None) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """Poll until the scheduler is enabled, or the kernel logs that it was disabled."""
        events: list[dict[str, Any]] = []
        deadline = time.monotonic() + ENABLE_WAIT_S
        while True:
            state = scx.read_state()
            events += self.kmsg.read_events()
            if state["state"] == "enabled" and state["ops"] == name:
                return state, events
            if any(e["kind"] == "disabled" for e in events) or time.monotonic() > deadline:
                return state, events
            time.sleep(0.05)

    def op_sections(self, handle: int) -> dict[str, Any]:
        sched = self._sched(handle)
        secs = sched.read_sections()
        return {"sections": {k: base64.b64encode(v).decode() for k, v in secs.items()}}

    def op_detach(self, handle: int) -> dict[str, Any]:
        sched = self.schedulers.pop(int(handle), None)
        if sched is None:
            raise NodeError("unknown_handle", f"no scheduler with handle {handle}", "list with state")
        exit_info = scxload.read_exit_info(sched)
        attached = bool(sched.links)  # a standby never attached: nothing to wait for
        sched.close()
        state = (
            scx.wait_for(lambda s: s["state"] in ("disabled", None), ENABLE_WAIT_S) if attached else scx.read_state()
        )
        result: dict[str, Any] = {"state": state, "kernel_events": self.kmsg.read_events()}
        if exit_info is not None:
            result["exit_info"] = exit_info
        return result

    def op_run(self, argv: list[str], **kwargs: Any) -> dict[str, Any]:
        allowed = {"timeout_s", "env", "cwd", "stdin", "output_cap", "sched_ext", "nice", "user"}
        unknown = set(kwargs) - allowed
        if unknown:
            raise NodeError("bad_args", f"unknown run options {sorted(unknown)}", f"use {sorted(allowed)}")
        return run_command(list(argv), **kwargs)

    def op_read_file(self, path: str, max_bytes: int = 1 << 20) -> dict[str, Any]:
        data = Path(path).read_bytes()[: max(0, min(int(max_bytes), 16 << 20))]
        return {"data_b64": base64.b64encode(data).decode(), "bytes": len(data)}

    def op_loaded(self) -> dict[str, Any]:
        """The schedulers this agent holds (handle -> ops name), for a restarted control plane."""
        return {"loaded": {str(h): s.ops_name for h, s in self.schedulers.items()}}

    def op_poweroff(self) -> dict[str, Any]:
        for sched in self.schedulers.values():
            sched.close()
        self.schedulers.clear()
        return {"bye": True}

    def _sched(self, handle: int) -> childload.HeldScheduler:
        sched = self.schedulers.get(int(handle))
        if sched is None:
            raise NodeError("unknown_handle", f"no scheduler with handle {handle}", "load one first")
        return sched

    # -- dispatch -----------------------------------------------------------------------------
    def handle(self, message: dict[str, Any]) -> dict[str, Any]:
        req_id = message.get("id")
        op = message.get("op")
        args = message.get("args") or {}
        fn = getattr(self, f"op_{op}", None) if isinstance(op, str) and op.isidentifier() else None
        if fn is None and isinstance(op, str):
            fn = _plugin_ops().get(op)
        if fn is None:
            err = NodeError("unknown_op", f"unknown operation {op!r}", "see schedcp.node.agent for the list")
            return {"id": req_id, "ok": False, "error": err.to_dict()}
        try:
            if not isinstance(args, dict):
                raise NodeError("bad_args", "args must be an object", "")
            return {"id": req_id, "ok": True, "result": fn(**args)}
        except NodeError as exc:
            return {"id": req_id, "ok": False, "error": exc.to_dict()}
        except TypeError as exc:
            err = NodeError("bad_args", f"bad arguments for {op}: {exc}", "check the operation's parameters")
            return {"id": req_id, "ok": False, "error": err.to_dict()}
        except Exception as exc:
            err = NodeError("internal", f"{type(exc).__name__}: {exc}", "report this as a node agent bug")
            return {"id": req_id, "ok": False, "error": err.to_dict()}


class _LoadJob:
    """One scheduler going through the kernel's verifier in its loader child, waited for here or on a
    background thread (the agent keeps answering meanwhile)."""

    def __init__(self, job_id: int, child: childload.ChildLoad, attach: bool) -> None:
        self.id = job_id
        self.child = child
        self.attach = attach
        self.sched: childload.HeldScheduler | None = None
        self.error: BaseException | None = None
        self.load_s = 0.0
        self.done = threading.Event()
        self.started = time.monotonic()

    def run(self) -> None:
        try:
            # The scx steps may read the kernel's BTF (seconds under emulation): part of the job too.
            self.sched = self.child.wait_loaded()
        except BaseException as exc:  # reported to the caller by _finish
            self.error = exc
        finally:
            self.load_s = time.monotonic() - self.started
            self.done.set()

    def progress(self) -> dict[str, Any]:
        """How far the kernel's verifier got: programs accepted so far (each is one BPF_PROG_LOAD)."""
        return {
            "elapsed_s": round(time.monotonic() - self.started, 2),
            "phase": self.child.phase,
            "programs": self.child.programs,
            "programs_loaded": self.child.progress_fds(),
        }


def _plugin_ops() -> dict[str, Any]:
    """Operations contributed by sibling modules (e.g. observe.py) through an OPS dict."""
    ops: dict[str, Any] = {}
    for module_name in ("observe", "canary", "external"):
        try:
            module = __import__(f"{__package__}.{module_name}", fromlist=["OPS"])
        except ImportError:
            continue
        ops.update(getattr(module, "OPS", {}))
    return ops


def prepare_work_dir(path: Path, mode: int = 0o755) -> None:
    """Create the work directory, or accept an existing one only if this agent alone controls it.

    On a host the default ``/tmp/schedcp-node`` can be made first by any local user, who could then
    swap an uploaded object before root loads it, or point the directory elsewhere with a link.
    So: a real directory (``O_NOFOLLOW``), owned by us, writable by nobody else; the mode is set
    through the descriptor. (Standard library only: this module also runs in the guest.)"""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise NodeError(
            "unsafe_workdir", f"{path} is not a directory ({exc.strerror})", "remove it or set SCHEDCP_NODE_WORKDIR"
        ) from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.geteuid() or st.st_mode & 0o022:
            raise NodeError(
                "unsafe_workdir",
                f"{path} is owned by uid {st.st_uid} with mode {stat.S_IMODE(st.st_mode):04o}: "
                "another user could swap what this agent loads",
                f"remove it (rm -r {path}) or set SCHEDCP_NODE_WORKDIR to a private directory",
            )
        os.fchmod(fd, mode)
    finally:
        os.close(fd)


def _safe_path(name: str) -> Path:
    """Resolve a relative name inside WORK_DIR, refusing escapes."""
    if not isinstance(name, str) or not name or name.startswith("/") or "\x00" in name:
        raise NodeError("bad_path", f"invalid file name {name!r}", "use a relative name such as sched.bpf.o")
    target = (WORK_DIR / name).resolve()
    if WORK_DIR.resolve() not in target.parents:
        raise NodeError("bad_path", f"{name!r} escapes the node work directory", "use a plain relative name")
    return target


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0.0


def serve(stream_in: BinaryIO, stream_out: BinaryIO, agent: NodeAgent) -> None:
    while True:
        line = stream_in.readline(MAX_MESSAGE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_MESSAGE_BYTES:
            reply = {"id": None, "ok": False, "error": {"code": "too_big", "cause": "message too large"}}
        else:
            try:
                message = decode(line)
            except ValueError as exc:
                reply = {"id": None, "ok": False, "error": {"code": "bad_json", "cause": str(exc)}}
            else:
                reply = agent.handle(message)
        _write_all(stream_out, encode(reply))
        stream_out.flush()
        result = reply.get("result")
        if isinstance(result, dict) and result.get("bye"):
            return


def _write_all(stream: BinaryIO, data: bytes) -> None:
    """Write every byte: the virtio port is opened unbuffered, and a raw write of a large reply (a
    verifier log runs to tens of KB) can be partial; the control plane then never sees the newline."""
    view = memoryview(data)
    while view:
        written = stream.write(view)
        if written is None:  # would block
            time.sleep(0.005)
            continue
        view = view[written:]


def find_port(name: str) -> str:
    base = Path("/sys/class/virtio-ports")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for entry in sorted(base.glob("*")) if base.exists() else []:
            try:
                if (entry / "name").read_text().strip() == name:
                    return f"/dev/{entry.name}"
            except OSError:
                continue
        time.sleep(0.05)
    raise SystemExit(f"schedcp-node: no virtio port named {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="schedcp-node")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--port", help="virtio-serial port name (inside the micro-VM)")
    group.add_argument("--unix", help="serve on this unix socket path (on a sched_ext host)")
    group.add_argument("--stdio", action="store_true", help="serve on stdin/stdout")
    args = parser.parse_args(argv)
    if DEFAULT_CWD and os.path.isdir(DEFAULT_CWD):
        os.chdir(DEFAULT_CWD)  # every command (run, observe, canary) starts there
    agent = NodeAgent()
    if args.port:
        dev = find_port(args.port or PORT_NAME)
        fd = os.open(dev, os.O_RDWR)
        with os.fdopen(fd, "rb") as rin, os.fdopen(os.dup(fd), "wb", buffering=0) as rout:
            serve(rin, rout, agent)
        return 0
    if args.stdio:
        serve(sys.stdin.buffer, sys.stdout.buffer, agent)
        return 0
    path = Path(args.unix)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(4)
    while True:
        conn, _ = server.accept()
        with conn, conn.makefile("rb") as rin, conn.makefile("wb") as rout:
            serve(rin, rout, agent)


if __name__ == "__main__":
    sys.exit(main())
