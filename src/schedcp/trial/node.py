# SPDX-License-Identifier: Apache-2.0
"""How the control plane reaches a node agent: one protocol, three transports.

``NodeClient`` is what every caller programs against: ``call(op, args, timeout_s=)`` plus typed
wrappers (``state``, ``events``, ``put_file``, ``run``, ``load``, ``detach``, ``sections``,
``read_file``). The wrappers are written once, in ``NodeOps``, on top of ``call``; a transport only
moves JSON requests:

* ``SocketNode``: a connected stream socket, the micro-VM's virtio-serial channel (QEMU exposes it
  as a unix socket on the host) or a host node agent served with ``schedcp-node --unix PATH``.
* ``LocalNode``: the node agent in this process, for a sched_ext host when we already are the
  privileged process (``schedcp bench --target local``) and for host observation (analysis).
* ``DaemonNode``: what the SchedCP daemon lets a client do on the node it owns (a command on a VM
  node, an observation, a whole trial arm of a policy the daemon verified); see its docstring.

Failures the node reports become ``NodeOpError`` (``NodeInputError``, also a ``UsageError``, when
the caller's input was at fault), carrying the node's ``details`` (verifier log, kernel events).
"""

from __future__ import annotations

import base64
import json
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.node.protocol import MAX_MESSAGE_BYTES, NodeError
from schedcp.toolchain.scx_loader import LoadDeadline, LoaderOptions, run_load
from schedcp.trial.models import AttachResult, DetachResult, KernelEvent, RunResult, SchedExtState, events_from

LOAD_TIMEOUT_S = 60.0
# Error codes of a node that died or stopped answering (a transport verdict, never one on a policy).
GUEST_DEAD = ("guest_timeout", "guest_lost")
# Node error codes that mean the caller's input was wrong, not the node.
_INPUT_CODES = ("no_such_process", "no_cgroup", "not_found")


class NodeOpError(SchedcpError):
    """An operation the node agent refused or that failed on the node."""

    def __init__(self, err: dict[str, Any]) -> None:
        super().__init__(
            err.get("cause", "node operation failed"), err.get("next_step", ""), code=err.get("code", "node_error")
        )
        self.details: dict[str, Any] = err.get("details") or {}

    @property
    def kernel_events(self) -> list[KernelEvent]:
        return events_from(self.details.get("kernel_events"))


class NodeInputError(NodeOpError, UsageError):
    """The node refused the caller's input (a bad path, argument, pid or cgroup)."""


def node_error(err: dict[str, Any]) -> NodeOpError:
    code = str(err.get("code", ""))
    return NodeInputError(err) if code.startswith("bad") or code in _INPUT_CODES else NodeOpError(err)


class NodeClient(Protocol):
    """A node agent, wherever it runs."""

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 60.0) -> dict[str, Any]: ...

    def hello(self, timeout_s: float = 30.0) -> dict[str, Any]: ...

    def state(self) -> SchedExtState: ...

    def events(self) -> list[KernelEvent]: ...

    def put_file(self, name: str, data: bytes, mode: int = 0o644) -> str: ...

    def run(
        self, argv: list[str], timeout_s: float = 60.0, *, count_switches: bool = False, **options: Any
    ) -> RunResult: ...

    def load(
        self,
        path: str,
        *,
        patches: list[dict[str, Any]] | None = None,
        timeout_ms: int | None = None,
        ops_flags: int = 0,
        attach: bool = True,
        timeout_s: float = LOAD_TIMEOUT_S,
        loader: LoaderOptions | None = None,
    ) -> AttachResult: ...

    def detach(self, handle: int) -> DetachResult: ...

    def sections(self, handle: int) -> dict[str, bytes]: ...

    def read_file(self, path: str, max_bytes: int = 1 << 20) -> bytes: ...


class NodeOps:
    """The typed operations, written once over a transport's ``call``."""

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 60.0) -> dict[str, Any]:
        raise NotImplementedError

    def hello(self, timeout_s: float = 30.0) -> dict[str, Any]:
        return self.call("hello", timeout_s=timeout_s)

    def state(self) -> SchedExtState:
        return SchedExtState.model_validate(self.call("state", timeout_s=15))

    def events(self) -> list[KernelEvent]:
        """sched_ext kernel-log events since the last call (each event is returned once)."""
        return events_from(self.call("events", timeout_s=15)["events"])

    def put_file(self, name: str, data: bytes, mode: int = 0o644) -> str:
        args = {"name": name, "data_b64": base64.b64encode(data).decode(), "mode": mode}
        return str(self.call("put_file", args, timeout_s=60)["path"])

    def run(
        self, argv: list[str], timeout_s: float = 60.0, *, count_switches: bool = False, **options: Any
    ) -> RunResult:
        """Run argv on the node to completion (or timeout_s). With count_switches, the kernel's
        context switches during the run (the /proc/stat ``ctxt`` delta, two extra reads) are kept."""
        before = self.context_switches() if count_switches else None
        raw = self.call("run", {"argv": list(argv), "timeout_s": timeout_s, **options}, timeout_s=timeout_s + 15)
        result = RunResult.model_validate(raw)
        if before is not None:
            after = self.context_switches()
            if after is not None:
                result.context_switches = after - before
        return result

    def context_switches(self) -> int | None:
        """The node kernel's context switches since boot (/proc/stat ``ctxt``), None if unreadable."""
        try:
            text = self.read_file("/proc/stat", 1 << 16).decode(errors="replace")
        except NodeOpError:
            return None
        for line in text.splitlines():
            if line.startswith("ctxt "):
                return int(line.split()[1])
        return None

    def load(
        self,
        path: str,
        *,
        patches: list[dict[str, Any]] | None = None,
        timeout_ms: int | None = None,
        ops_flags: int = 0,
        attach: bool = True,
        timeout_s: float = LOAD_TIMEOUT_S,
        loader: LoaderOptions | None = None,
    ) -> AttachResult:
        """Load (and by default attach) an uploaded object; NodeOpError carries the verifier log or
        the kernel's reason when it does not load or never enables. The deadline follows the
        kernel's verifier (scx_loader.run_load); `timeout_s` only bounds each node answer."""
        args: dict[str, Any] = {"path": path, "patches": patches or [], "attach": attach}
        if timeout_ms is not None:
            args["timeout_ms"] = timeout_ms
        if ops_flags:
            args["ops_flags"] = ops_flags
        if loader is not None:
            args.update(loader.node_args())
        deadline = LoadDeadline(answer_margin_s=max(15.0, timeout_s - LoadDeadline().poll_s))
        return AttachResult.model_validate(run_load(self.call, args, deadline))

    def detach(self, handle: int) -> DetachResult:
        return DetachResult.model_validate(self.call("detach", {"handle": handle}, timeout_s=30))

    def sections(self, handle: int) -> dict[str, bytes]:
        raw = self.call("sections", {"handle": handle})["sections"]
        return {name: base64.b64decode(data) for name, data in raw.items()}

    def read_file(self, path: str, max_bytes: int = 1 << 20) -> bytes:
        raw = self.call("read_file", {"path": path, "max_bytes": max_bytes}, timeout_s=30)
        return base64.b64decode(raw["data_b64"])


class SocketNode(NodeOps):
    """A node agent over a connected stream socket (the micro-VM's channel, or ``schedcp-node --unix``).

    ``on_timeout`` runs when the node does not answer in time (the micro-VM kills its guest there);
    ``describe`` adds context to transport errors (the guest's console tail).
    """

    def __init__(
        self,
        sock: socket.socket,
        on_timeout: Callable[[], None] | None = None,
        describe: Callable[[], str] = lambda: "",
    ) -> None:
        self.sock = sock
        self._buf = b""
        self._next_id = 1
        self._lock = threading.Lock()
        self._on_timeout = on_timeout
        self._describe = describe

    @classmethod
    def connect_unix(cls, path: Path | str) -> SocketNode:
        """A host node agent served with ``schedcp-node --unix PATH``."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            raise NotReadyError(
                f"no node agent answers at {path} ({exc.strerror or exc})",
                "start one as root: schedcp-node --unix PATH",
                code="node_unavailable",
            ) from exc
        return cls(sock, describe=lambda: f"node agent at {path}")

    def close(self) -> None:
        self.sock.close()

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 60.0) -> dict[str, Any]:
        with self._lock:
            req_id = self._next_id
            self._next_id += 1
            payload = json.dumps({"id": req_id, "op": op, "args": args or {}}, separators=(",", ":")).encode() + b"\n"
            deadline = time.monotonic() + timeout_s
            try:
                self.sock.sendall(payload)
                while True:
                    message = json.loads(self._read_line(deadline))
                    if message.get("id") == req_id:
                        break
            except TimeoutError as exc:
                if self._on_timeout:
                    self._on_timeout()
                raise SchedcpError(
                    f"the guest did not answer {op!r} within {timeout_s:.0f}s; the VM was killed",
                    "the command or scheduler hung the guest; see the console tail: " + self._describe(),
                    code="guest_timeout",
                ) from exc
            except (OSError, ConnectionError) as exc:
                raise SchedcpError(
                    f"lost the connection to the guest during {op!r}: {exc}",
                    "the guest crashed or rebooted; see the console tail: " + self._describe(),
                    code="guest_lost",
                ) from exc
        if not message.get("ok"):
            raise node_error(message.get("error") or {})
        return message["result"]

    def _read_line(self, deadline: float) -> bytes:
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.sock], [], [], min(remaining, 0.5))
            if not ready:
                continue
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise ConnectionError("channel closed")
            self._buf += chunk
            if len(self._buf) > MAX_MESSAGE_BYTES * 2:
                raise ConnectionError("oversized message from guest")
        line, _, self._buf = self._buf.partition(b"\n")
        return line


class LocalNode(NodeOps):
    """The node agent in this process, on this host: the same operations as over a channel.

    Observation operations are stateless and run directly; anything that needs the agent's state
    (loaded schedulers, the kernel-log cursor, the upload directory) creates the agent on first use,
    so a process that only observes never opens /dev/kmsg or creates the node's work directory.
    Deadlines (``timeout_s``) do not apply: the call runs in this thread.
    """

    def __init__(self) -> None:
        self._agent: Any = None
        self._next_id = 0

    @property
    def agent(self) -> Any:
        if self._agent is None:
            from schedcp.node.agent import NodeAgent

            self._agent = NodeAgent()
        return self._agent

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 60.0) -> dict[str, Any]:
        from schedcp.node import observe

        fn = cast("Callable[..., dict[str, Any]] | None", observe.OPS.get(op))
        if fn is not None:
            try:
                return fn(**(args or {}))
            except NodeError as exc:
                raise node_error(exc.to_dict()) from exc
            except TypeError as exc:
                raise node_error({"code": "bad_args", "cause": f"bad arguments for {op}: {exc}"}) from exc
        self._next_id += 1
        reply = self.agent.handle({"id": self._next_id, "op": op, "args": args or {}})
        if not reply.get("ok"):
            raise node_error(reply.get("error") or {})
        return reply["result"]

    def close(self) -> None:
        """Detach every scheduler this agent still holds: never leave one attached to the host."""
        if self._agent is not None:
            for handle in list(self._agent.schedulers):
                self.call("detach", {"handle": handle})


# Node operations the daemon forwards for a client, and the daemon op that does each. Everything else
# (loading, detaching, reading its state) stays inside the daemon: a deployment attaches only with the
# verifier's token (``deploy``), a trial arm only what the daemon verified (``trial_arm``, below).
DAEMON_NODE_OPS = {"run": "node_run", "observe_run": "trial_observe"}
# Beyond the workload's own deadline, how long a trial arm may take (the kernel's verifier loading it).
TRIAL_LOAD_MARGIN_S = 900.0


class DaemonNode(NodeOps):
    """The node the SchedCP daemon owns (``schedcp daemon --node ...``), as far as it lets a client in.

    * ``run`` is the daemon's ``node_run`` (VM nodes only: on a host it would be a root shell);
    * ``observe_run`` is ``trial_observe`` (VM nodes; on a local node the caller observes the
      command on this host itself, as itself: ``observe_here``);
    * a whole trial arm is ``trial_arm`` (``run_arm``, which ``trial.rounds.run_arm`` hands over):
      the daemon attaches only an object it verified (the policy's ``token_id``), with
      ``SCX_OPS_SWITCH_PARTIAL`` forced, runs the workload with only its tasks switched and never as
      root, and detaches after;
    * anything else is refused here with the way to get it done instead.
    """

    def __init__(self, client: Any = None, *, observe_here: bool = False) -> None:
        if client is None:
            from schedcp.daemon.client import DaemonClient

            client = DaemonClient()
        self.client = client
        self.observe_here = observe_here

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 60.0) -> dict[str, Any]:
        if op == "observe_run" and self.observe_here:
            return LocalNode().call(op, args, timeout_s=timeout_s)
        forwarded = DAEMON_NODE_OPS.get(op)
        if forwarded is None:
            raise NotReadyError(
                f"the SchedCP daemon does not forward the node operation {op!r}",
                "deploy through the daemon (schedcp deploy, with a verification token), run trials with "
                "`schedcp optimize --target daemon`, or use the micro-VM",
                code="daemon_no_node",
            )
        args = dict(args or {})
        if op == "run":
            args = {"argv": args.get("argv"), "timeout_s": args.get("timeout_s", 60.0)}
        return dict(self.client.call(forwarded, args, timeout_s=timeout_s + 30))

    def info(self) -> dict[str, Any]:
        """The daemon's node: kind (local or vm), kernel release, CPUs, boot id, sched_ext state."""
        return dict(self.client.call("trial_info", {}, timeout_s=60))

    def run_arm(self, arm: Any, argv: list[str], *, timeout_s: float, watchdog_ms: int | None, partial: bool) -> Any:
        """One arm on the daemon's node (``trial.rounds.ArmRunner``); always partial there."""
        from schedcp.trial.rounds import ArmRun

        args: dict[str, Any] = {"name": arm.name, "argv": list(argv), "timeout_s": timeout_s}
        if watchdog_ms is not None:
            args["watchdog_ms"] = watchdog_ms
        if getattr(arm, "external", None) is not None:
            # An installed binary, named by its catalog entry; the daemon builds its command line itself.
            args["external"] = arm.external.name
            args["config"] = dict(arm.external.config)
        elif arm.policy is not None:
            if not arm.policy.token_id:
                raise UsageError(
                    f"{arm.name} has not been verified by the daemon, and its node loads nothing else",
                    "verify it through the daemon first (verify_scheduler / DaemonClient.verify)",
                    code="not_verified",
                )
            args["token_id"] = arm.policy.token_id
            args["config"] = dict(arm.config)
        raw = self.client.call("trial_arm", args, timeout_s=timeout_s + TRIAL_LOAD_MARGIN_S)
        return ArmRun.from_dict(raw["arm"])
