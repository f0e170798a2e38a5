# SPDX-License-Identifier: Apache-2.0
"""The daemon's socket server: checked socket, peer credentials, a typed operation table, bounds.

Shape, and why:

* **The socket.** It lives in a directory only root may write (``/run/schedcp``, checked by
  :func:`schedcp.paths.private_dir`), so nobody can plant or swap a file at its name. It is bound
  with a 0177 umask, so it is never more open than 0600 even for an instant, and only then widened
  (0660 with ``socket_group``, 0666 when single uids are allowed: peer credentials still decide).
  The mode is set by path, which is safe because nobody else can write the directory; fchmod on a
  socket descriptor does not reach the file on Linux. ``--socket PATH`` only ever removes a stale
  *socket*, never a regular file, and its directory must be ours and not writable by others.
* **Who may do what.** Each operation in :meth:`Operations.table` declares a role: ``status``
  (read-only), ``use`` (verify, probe), ``trial`` (trial arms on the daemon's node, granted
  explicitly) and ``deploy`` (reserved for deployments). The
  :class:`AccessPolicy` maps uids and groups (primary and supplementary, from SO_PEERCRED and
  SO_PEERGROUPS) to roles; root and the daemon's own uid hold every role.
* **Bounds.** A fixed pool of worker threads serves connections from a bounded queue; past it,
  and past a per-uid connection cap, a client gets ``busy`` at once. Requests are bounded in size,
  JSON depth and time; idle connections are closed. Refused peers are rate-limited in the audit log.
  SIGTERM only sets a flag and wakes the accept loop, which never blocks on a client, so shutdown
  works under any number of connection attempts.
* **Audit.** Every privileged operation is logged before (``begin``) and after (``end``, with the
  outcome, failures included) in the keyed, anchored log of :mod:`schedcp.daemon.audit`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import selectors
import signal
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schedcp import __version__
from schedcp.daemon.audit import AuditLog, Operation
from schedcp.daemon.limits import ByteBudget, Limits, PerUidCounter, RefusalLog, busy, prune_submissions, quota
from schedcp.daemon.peers import Peer, peer_credentials
from schedcp.daemon.records import HEX64, VerificationRecords
from schedcp.errors import SchedcpError, UsageError
from schedcp.paths import SYSTEM_RUNTIME_DIR, check_dir_fd, daemon_socket, data_dir, private_dir

Role = Literal["status", "use", "trial", "deploy"]
ROLES: tuple[Role, ...] = ("status", "use", "trial", "deploy")

# One verification (a VM boot) at a time: the machine this runs on may have two cores.
_vm_lock = threading.Lock()


def default_socket() -> Path:
    """Kept for callers of the old name; the one default lives in :func:`schedcp.paths.daemon_socket`."""
    return daemon_socket()


# ---- peers and access ------------------------------------------------------------------------------


class Grant(BaseModel):
    """Uids and groups given a role."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()

    def admits(self, peer: Peer) -> bool:
        return peer.uid in self.uids or bool(self.gids & peer.groups)

    def __or__(self, other: Grant) -> Grant:
        return Grant(uids=self.uids | other.uids, gids=self.gids | other.gids)


class AccessPolicy(BaseModel):
    """Who may do what. ``use`` also reads status; ``deploy`` is given only explicitly (a deploy
    helper adds the deploy operations); root and the daemon's own uid may do everything."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    status: Grant = Grant()
    use: Grant = Grant()
    trial: Grant = Grant()  # trial arms on the daemon's node (daemon/trial_ops.py): explicit, like deploy
    deploy: Grant = Grant()

    def roles(self, peer: Peer) -> set[Role]:
        if peer.uid in (0, os.geteuid()):
            return set(ROLES)
        out: set[Role] = set()
        if self.deploy.admits(peer):
            out |= {"deploy", "status"}
        if self.trial.admits(peer):
            out |= {"trial", "status"}
        if self.use.admits(peer):
            out |= {"use", "status"}
        if self.status.admits(peer):
            out.add("status")
        return out

    @property
    def anyone(self) -> Grant:
        return self.status | self.use | self.trial | self.deploy


@dataclass
class DaemonConfig:
    socket_path: Path = field(default_factory=daemon_socket)
    state_dir: Path = field(default_factory=data_dir)
    allowed_uids: set[int] = field(default_factory=set)  # shorthand: these uids get the "use" role
    access: AccessPolicy = field(default_factory=AccessPolicy)
    socket_group: int | None = None  # the socket becomes root:GROUP 0660
    limits: Limits = field(default_factory=Limits)
    node: str | None = None  # "local" or "vm[:KERNEL]": the node the daemon owns (deploy_ops)
    deploy_policy: Any = None  # schedcp.deploy.config.DeployPolicy (windows, thresholds)

    def policy(self) -> AccessPolicy:
        if not self.allowed_uids:
            return self.access
        use = self.access.use | Grant(uids=frozenset(self.allowed_uids))
        return self.access.model_copy(update={"use": use})

    @property
    def submissions_dir(self) -> Path:
        return self.state_dir / "submissions"


# ---- the operation table -----------------------------------------------------------------------------


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AuditTailArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    n: int = Field(20, ge=1, le=500)


class VerifyArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_text: str = Field(min_length=1, max_length=1024 * 1024)
    source_name: str = Field("submitted.bpf.c", max_length=128)
    config: dict[str, int | float | bool | str] = Field(default_factory=dict, max_length=64)
    kernel: str = Field("unstable", min_length=1, max_length=128)
    workload: list[str] | None = Field(None, max_length=64)
    meta: dict[str, Any] | None = None  # tunable declarations for `config` (see verify_service.tunables_for)
    # scx loader options (toolchain/scx_loader.py), checked against the object's BTF by the pipeline.
    rodata: dict[str, str] = Field(default_factory=dict, max_length=64)
    struct_ops: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


class ProbeArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: str = Field(min_length=1, max_length=32)
    duration_s: float = 2.0
    pid: int | None = None


class VerificationArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    source_sha256: str = Field(pattern=HEX64)


@dataclass(frozen=True)
class OpSpec:
    """One operation: who may call it, its argument model, and whether it is audited begin/end."""

    name: str
    role: Role
    args: type[BaseModel]
    run: Callable[[Peer, Any, Operation | None], dict[str, Any]]
    audited: bool = True


class Operations:
    """What the daemon will do for a client. Extend by adding an :class:`OpSpec` to :meth:`specs`."""

    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.limits = config.limits
        private_dir(config.state_dir)
        self.audit = AuditLog.for_state_dir(config.state_dir)
        self.records = VerificationRecords(config.state_dir)
        self.verifying = PerUidCounter(self.limits.verifies_per_uid)
        self.waiting = PerUidCounter(self.limits.verifies_waiting)
        self.submitted = ByteBudget(self.limits.submission_bytes_per_uid_day)
        from schedcp.daemon.deploy_ops import DeployService

        self.deploy = DeployService(config.state_dir, self.audit, node_spec=config.node, policy=config.deploy_policy)
        self._table = {spec.name: spec for spec in self.specs()}

    def specs(self) -> list[OpSpec]:
        return [
            OpSpec("ping", "status", NoArgs, self.ping, audited=False),
            OpSpec("audit_tail", "status", AuditTailArgs, self.audit_tail, audited=False),
            OpSpec("audit_verify", "status", NoArgs, self.audit_verify, audited=False),
            OpSpec("verification", "use", VerificationArgs, self.verification, audited=False),
            OpSpec("verify", "use", VerifyArgs, self.verify),
            OpSpec("probe", "use", ProbeArgs, self.probe),
            *self.deploy.specs(OpSpec),
        ]

    def table(self) -> dict[str, OpSpec]:
        return self._table

    # ---- status ----------------------------------------------------------------------------------

    def ping(self, peer: Peer, _args: NoArgs, _op: Operation | None = None) -> dict[str, Any]:
        roles = self.config.policy().roles(peer)
        return {
            "version": __version__,
            "uid": os.geteuid(),
            "peer_uid": peer.uid,
            "roles": sorted(roles),
            "ops": sorted(self._table),
        }

    def audit_tail(self, peer: Peer, args: AuditTailArgs, _op: Operation | None = None) -> dict[str, Any]:
        return {"entries": [e.model_dump() for e in self.audit.tail(args.n)]}

    def audit_verify(self, peer: Peer, _args: NoArgs, _op: Operation | None = None) -> dict[str, Any]:
        return self.audit.verify().model_dump()

    def verification(self, peer: Peer, args: VerificationArgs, _op: Operation | None = None) -> dict[str, Any]:
        record = self.records.latest(args.source_sha256)
        return {"record": record.model_dump() if record else None}

    # ---- privileged ------------------------------------------------------------------------------

    def verify(self, peer: Peer, args: VerifyArgs, op: Operation | None = None) -> dict[str, Any]:
        from schedcp.daemon import verify_service

        source_bytes = len(args.source_text.encode("utf-8", "surrogatepass"))
        if not self.verifying.try_acquire(peer.uid):
            raise quota(
                f"uid {peer.uid} already has {self.limits.verifies_per_uid} verification(s) running or waiting",
                "wait for it to finish, then retry",
            )
        try:
            if not self.waiting.try_acquire(0):
                raise busy(f"{self.limits.verifies_waiting} verifications are already waiting for the VM")
            try:
                self.submitted.charge(peer.uid, source_bytes)
                digest = hashlib.sha256(args.source_text.encode("utf-8", "surrogatepass")).hexdigest()
                with _vm_lock:
                    result = verify_service.verify_and_sign(
                        args.source_text,
                        args.source_name,
                        dict(args.config),
                        args.kernel,
                        args.workload,
                        state_dir=self.config.state_dir,
                        meta=args.meta,
                        rodata=dict(args.rodata),
                        struct_ops=args.struct_ops,
                    )
            finally:
                self.waiting.release(0)
        finally:
            self.verifying.release(peer.uid)
        report = result["report"]
        record_id = self.records.add(digest, report, result.get("token_id"), peer.uid)
        prune_submissions(self.config.submissions_dir, self.limits)
        if op is not None:
            op.result.update(
                verdict=report.get("verdict"),
                token_id=result.get("token_id"),
                source_sha256=digest,
                object_sha256=report.get("object_sha256"),
                record_id=record_id,
            )
        return result

    def probe(self, peer: Peer, args: ProbeArgs, _op: Operation | None = None) -> dict[str, Any]:
        from schedcp.daemon import probe_service

        return probe_service.run_probe(args.kind, float(args.duration_s), args.pid)

    # ---- dispatch --------------------------------------------------------------------------------

    def dispatch(self, line: bytes, peer: Peer) -> dict[str, Any]:
        """One request line in, one reply out; never raises, never returns a traceback."""
        req_id: Any = None
        try:
            message = parse_request(line, self.limits.json_depth)
            req_id = message.get("id")
            if not (req_id is None or isinstance(req_id, int | str)):
                req_id = None
            op, args = message.get("op"), message.get("args") or {}
            spec = self._table.get(op) if isinstance(op, str) else None
            if spec is None:
                raise SchedcpError(
                    f"unknown operation {str(op)[:64]!r}", f"use one of {sorted(self._table)}", code="unknown_op"
                )
            if spec.role not in self.config.policy().roles(peer):
                raise SchedcpError(
                    f"uid {peer.uid} may not {spec.name} (needs the {spec.role!r} role)",
                    "ask the operator to grant the role in the daemon's configuration",
                    code="forbidden",
                )
            if not isinstance(args, dict):
                raise UsageError("args must be an object", "send {'op': ..., 'args': {...}}")
            try:
                parsed = spec.args.model_validate(args)
            except ValidationError as exc:
                first = exc.errors()[0]
                where = ".".join(str(x) for x in first.get("loc", ())) or "args"
                raise UsageError(
                    f"bad arguments for {spec.name}: {where}: {first.get('msg')}", "check the parameters"
                ) from None
            return {"id": req_id, "ok": True, "result": self._run(spec, peer, parsed)}
        except SchedcpError as exc:
            return {"id": req_id, "ok": False, "error": exc.to_dict() | {"code": exc.code}}
        except Exception as exc:  # never leak a traceback to a client
            print(f"schedcp daemon: request failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return {
                "id": req_id,
                "ok": False,
                "error": {
                    "code": "internal",
                    "cause": f"{type(exc).__name__}: {exc}"[:500],
                    "next_step": "see the daemon's log",
                },
            }

    def _run(self, spec: OpSpec, peer: Peer, args: BaseModel) -> dict[str, Any]:
        if not spec.audited:
            return spec.run(peer, args, None)
        details = {k: v for k, v in args.model_dump().items() if k != "source_text"}
        if isinstance(args, VerifyArgs):
            details["source_bytes"] = len(args.source_text)
        with self.audit.operation(spec.name, peer_uid=peer.uid, peer_pid=peer.pid, **details) as op:
            return spec.run(peer, args, op)


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of parsed JSON, stopping as soon as it passes ``limit``."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    deepest = 0
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def parse_request(line: bytes, max_depth: int) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except RecursionError:
        raise UsageError(
            f"the request nests deeper than {max_depth} levels", "send flat arguments", code="bad_json"
        ) from None
    except (ValueError, UnicodeDecodeError):
        raise UsageError("the request is not valid JSON", "send one JSON object per line", code="bad_json") from None
    if not isinstance(message, dict):
        raise UsageError("the request is not a JSON object", "send {'id': 1, 'op': 'ping'}", code="bad_json")
    if _depth(message, max_depth) > max_depth:
        raise UsageError(f"the request nests deeper than {max_depth} levels", "send flat arguments", code="bad_json")
    return message


# ---- connections -------------------------------------------------------------------------------------


class _TooLarge(Exception):
    pass


class _LineReader:
    """Reads request lines with a size bound, an idle timeout and a per-request deadline."""

    def __init__(self, conn: socket.socket, limits: Limits, stopping: threading.Event) -> None:
        self.conn, self.limits, self.stopping = conn, limits, stopping
        self.buf = b""

    def readline(self) -> bytes | None:
        deadline: float | None = time.monotonic() + self.limits.request_timeout_s if self.buf else None
        idle_until = time.monotonic() + self.limits.idle_timeout_s
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[: nl + 1], self.buf[nl + 1 :]
                if len(line) > self.limits.request_bytes:
                    raise _TooLarge
                return line
            if len(self.buf) > self.limits.request_bytes:
                raise _TooLarge
            if self.stopping.is_set():
                return None
            now = time.monotonic()
            until = deadline if deadline is not None else idle_until
            if now >= until:
                return None
            self.conn.settimeout(min(until - now, 1.0))
            try:
                chunk = self.conn.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return None
            if not chunk:
                return None
            if deadline is None:
                deadline = time.monotonic() + self.limits.request_timeout_s
            self.buf += chunk


def _send(conn: socket.socket, reply: dict[str, Any], timeout_s: float = 30.0) -> None:
    conn.settimeout(timeout_s)
    conn.sendall(json.dumps(reply, default=str).encode() + b"\n")


def _send_nowait(conn: socket.socket, code: str, cause: str, next_step: str) -> None:
    """A one-line answer to a connection we will not serve; never blocks the accept loop."""
    body = json.dumps({"id": None, "ok": False, "error": {"code": code, "cause": cause, "next_step": next_step}})
    with contextlib.suppress(OSError):
        conn.send(body.encode() + b"\n", socket.MSG_DONTWAIT)


class DaemonServer:
    def __init__(self, config: DaemonConfig) -> None:
        self.config = config
        self.limits = config.limits
        self.ops = Operations(config)
        self.refusals = RefusalLog(self._audit_refusal, self.limits)
        self.stopping = threading.Event()
        self._queue: queue.Queue[tuple[socket.socket, Peer]] = queue.Queue(maxsize=self.limits.queue)
        self._per_uid = PerUidCounter(self.limits.connections_per_uid)
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()
        self._workers: list[threading.Thread] = []
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self.listener: socket.socket | None = None
        self._socket_ino: int | None = None
        self.stats = {"served": 0, "busy": 0, "refused": 0}

    def _audit_refusal(self, event: str, fields: dict[str, object], uid: int | None, pid: int | None) -> None:
        try:
            self.ops.audit.append(event, peer_uid=uid, peer_pid=pid, fields=fields)
        except OSError as exc:  # a full disk must not take the accept loop down
            print(f"schedcp daemon: cannot write the audit log: {exc}", file=sys.stderr)

    # ---- socket ----------------------------------------------------------------------------------

    def bind(self) -> None:
        path = Path(os.path.abspath(self.config.socket_path))
        parent = path.parent
        if parent == SYSTEM_RUNTIME_DIR:
            private_dir(parent, mode=0o755)
            if self.config.policy().anyone != Grant() or self.config.socket_group is not None:
                parent.chmod(0o755)  # ours and checked: others must traverse it to reach the socket
        else:
            _check_socket_parent(parent)
        _remove_stale_socket(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        st = os.lstat(path)
        if not stat.S_ISSOCK(st.st_mode):
            sock.close()
            raise SchedcpError(
                f"{path} was replaced while binding", "check who else writes its directory", code="unsafe_path"
            )
        self._socket_ino = st.st_ino
        policy = self.config.policy()
        if self.config.socket_group is not None:
            os.chown(path, -1, self.config.socket_group, follow_symlinks=False)
            os.chmod(path, 0o660)
        elif policy.anyone.uids - {0, os.geteuid()} or policy.anyone.gids:
            os.chmod(path, 0o666)  # single uids cannot be given a file mode; SO_PEERCRED decides
        sock.listen(min(socket.SOMAXCONN, 1024))
        sock.setblocking(False)
        self.listener = sock

    # ---- serving ---------------------------------------------------------------------------------

    def stop(self) -> None:
        self.stopping.set()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"x")

    def serve_forever(self, ready: Callable[[], None] | None = None) -> None:
        assert self.listener is not None
        for i in range(self.limits.workers):
            t = threading.Thread(target=self._worker, name=f"schedcp-daemon-{i}", daemon=True)
            t.start()
            self._workers.append(t)
        removed = prune_submissions(self.config.submissions_dir, self.limits)
        self.ops.audit.append(
            "daemon_start",
            fields={
                "pid": os.getpid(),
                "socket": str(self.config.socket_path),
                "access": self.config.policy().model_dump(mode="json"),
                "pruned_submissions": len(removed),
                "recovered": self.ops.audit.recovered,
            },
        )
        if ready:
            ready()
        sel = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ)
        sel.register(self._wake_r, selectors.EVENT_READ)
        try:
            while not self.stopping.is_set():
                for key, _ in sel.select(timeout=1.0):
                    if key.fileobj is self.listener:
                        self._accept_some()
                    else:
                        with contextlib.suppress(OSError):
                            os.read(self._wake_r, 4096)
                self.refusals.flush_if_due()
        finally:
            sel.close()
            self._shutdown()

    def _accept_some(self) -> None:
        assert self.listener is not None
        for _ in range(256):  # then look at the stop flag again
            try:
                conn, _addr = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and friends: shed load, do not spin
                print(f"schedcp daemon: accept failed: {exc}", file=sys.stderr)
                time.sleep(0.05)
                return
            self._admit(conn)
            if self.stopping.is_set():
                return

    def _admit(self, conn: socket.socket) -> None:
        try:
            peer = peer_credentials(conn)
        except OSError:
            conn.close()
            return
        if not self.config.policy().roles(peer):
            self.stats["refused"] += 1
            _send_nowait(
                conn,
                "forbidden",
                f"uid {peer.uid} may not use the SchedCP daemon",
                "ask the operator to start the daemon with --allow-uid or --allow-group",
            )
            conn.close()
            self.refusals.record(peer.uid, peer.pid, "not allowed")
            return
        if not self._per_uid.try_acquire(peer.uid):
            self.stats["busy"] += 1
            _send_nowait(
                conn,
                "busy",
                f"uid {peer.uid} already holds {self.limits.connections_per_uid} connections",
                "close some",
            )
            conn.close()
            return
        try:
            self._queue.put_nowait((conn, peer))
        except queue.Full:
            self._per_uid.release(peer.uid)
            self.stats["busy"] += 1
            _send_nowait(conn, "busy", "the daemon is serving as many clients as it may", "retry in a few seconds")
            conn.close()

    def _worker(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, peer = self._queue.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._active_lock:
                self._active.add(conn)
            try:
                self._serve_connection(conn, peer)
            except Exception as exc:  # one broken connection must not kill a worker
                print(f"schedcp daemon: connection from uid {peer.uid} failed: {exc}", file=sys.stderr)
            finally:
                with self._active_lock:
                    self._active.discard(conn)
                self._per_uid.release(peer.uid)
                with contextlib.suppress(OSError):
                    conn.close()

    def _serve_connection(self, conn: socket.socket, peer: Peer) -> None:
        reader = _LineReader(conn, self.limits, self.stopping)
        while not self.stopping.is_set():
            try:
                line = reader.readline()
            except _TooLarge:
                _send(
                    conn,
                    {
                        "id": None,
                        "ok": False,
                        "error": {
                            "code": "too_large",
                            "cause": f"a request is larger than {self.limits.request_bytes} bytes",
                            "next_step": "send smaller requests; the connection is closed",
                        },
                    },
                )
                return
            if line is None:
                return
            if not line.strip():
                continue
            self.stats["served"] += 1
            try:
                _send(conn, self.ops.dispatch(line, peer))
            except OSError:
                return

    def _shutdown(self) -> None:
        if self.listener is not None:
            self.listener.close()
        self._unlink_socket()
        with self._active_lock:
            active = list(self._active)
        for conn in active:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        while True:
            try:
                conn, peer = self._queue.get_nowait()
            except queue.Empty:
                break
            self._per_uid.release(peer.uid)
            conn.close()
        deadline = time.monotonic() + self.limits.shutdown_grace_s
        for t in self._workers:
            t.join(max(0.0, deadline - time.monotonic()))
        self.refusals.flush_if_due(force=True)
        with contextlib.suppress(OSError):
            self.ops.audit.append(
                "daemon_stop",
                fields={"pid": os.getpid(), **self.stats, "workers_busy": sum(t.is_alive() for t in self._workers)},
            )
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def _unlink_socket(self) -> None:
        path = self.config.socket_path
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISSOCK(st.st_mode) and st.st_ino == self._socket_ino:
            path.unlink(missing_ok=True)


def _check_socket_parent(parent: Path) -> None:
    """A --socket directory must be ours (or root's) and not writable by others: whoever can write
    it could swap the socket for a link between our checks and our chmod."""
    try:
        fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise UsageError(
            f"the socket's directory {parent} cannot be opened ({exc.strerror})", "create it first"
        ) from None
    try:
        owner = os.fstat(fd).st_uid
        check_dir_fd(fd, parent, owner=owner if owner in (0, os.geteuid()) else os.geteuid())
    finally:
        os.close(fd)


def _remove_stale_socket(path: Path) -> None:
    """Only a socket nobody listens on is removed; anything else at the path is left alone."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        kind = (
            "a symbolic link" if stat.S_ISLNK(st.st_mode) else "a directory" if stat.S_ISDIR(st.st_mode) else "a file"
        )
        raise UsageError(
            f"{path} exists and is {kind}, not a socket; refusing to remove it",
            "pass a --socket path that does not exist, or remove it yourself if it is yours",
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # a stale socket from a previous run
    else:
        raise SchedcpError(f"a daemon is already listening on {path}", "stop it or use --socket", code="daemon_running")
    finally:
        probe.close()


def serve(config: DaemonConfig, ready: Callable[[], None] | None = None) -> None:
    """Run the daemon in the foreground until SIGTERM or SIGINT (systemd-friendly)."""
    os.umask(0o077)  # every file the daemon creates is its own
    # The host's node agent keeps uploaded objects in a directory of the daemon's, never in /tmp.
    os.environ.setdefault("SCHEDCP_NODE_WORKDIR", str(config.state_dir / "node"))
    server = DaemonServer(config)
    server.bind()
    previous = {sig: signal.signal(sig, lambda *_a: server.stop()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.ops.deploy.start()  # boots a VM node here: this thread outlives it (deploy_ops)
        server.serve_forever(ready)
    finally:
        server.ops.deploy.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
