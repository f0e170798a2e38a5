# SPDX-License-Identifier: Apache-2.0
"""The daemon's deployment operations and the node it owns (``schedcp daemon --node local|vm[:KERNEL]``).

``--node local`` is this host (a sched_ext kernel): the node agent runs inside the daemon, so the
scheduler's struct_ops link lives as long as the daemon; if the daemon dies the kernel falls back
to its default scheduler and the restarted daemon reconciles. ``--node vm[:KERNEL]`` boots a
micro-VM and keeps it for the daemon's life: the rehearsal node on a machine without sched_ext,
and what CI tests against. QEMU is started with a parent-death signal tied to the starting
*thread*, so the VM is booted from the daemon's main thread, which outlives it.

Operations (role in brackets): ``deploy`` [deploy], ``rollback`` [deploy], ``deployment_status``
[status], ``deployment_stories`` [status], ``node_run`` [use; VM nodes only: on a local node it
would be a root shell], and the trial operations of ``daemon/trial_ops.py`` [trial].
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from schedcp.daemon.trial_ops import TrialService
from schedcp.deploy.artifacts import ArtifactStore
from schedcp.deploy.config import DeployPolicy
from schedcp.deploy.controller import DeployController
from schedcp.deploy.models import DeployRequest
from schedcp.deploy.store import DeployStore
from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.trial.node import LocalNode, NodeClient, NodeOps

if TYPE_CHECKING:
    from schedcp.daemon.audit import AuditLog, Operation
    from schedcp.daemon.peers import Peer
    from schedcp.daemon.server import OpSpec

MAX_RUN_S = 3600.0


class SerialNode(NodeOps):
    """One node call at a time from any thread (the breaker, status readers, ``node_run``)."""

    def __init__(self, inner: NodeClient) -> None:
        self.inner = inner
        self._lock = threading.Lock()

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 60.0) -> dict[str, Any]:
        with self._lock:
            return self.inner.call(op, args, timeout_s=timeout_s)


def parse_node_spec(spec: str) -> tuple[str, str | None]:
    """``local`` or ``vm`` / ``vm:KERNEL`` -> (kind, kernel spec)."""
    if spec == "local":
        return "local", None
    if spec == "vm" or spec.startswith("vm:"):
        kernel = spec[3:] or None
        if kernel is not None and (len(kernel) > 128 or "\x00" in kernel):
            raise UsageError(f"bad kernel in --node {spec!r}", "e.g. --node vm:unstable")
        return "vm", kernel
    raise UsageError(f"unknown node {spec!r}", "use --node local (a sched_ext host) or --node vm[:KERNEL]")


class NodeOwner:
    """The node the daemon manages: this host, or a micro-VM booted and kept for the daemon's life.

    A VM node rehearses this host, so the installed scheduler binaries the operator allows
    (``[deploy] external_allow``, found in ``external_path``) are copied into its image, where the
    node finds them (``external_search``) as a host's node finds them in its system directories."""

    def __init__(self, spec: str, policy: DeployPolicy | None = None) -> None:
        self.kind, self.kernel_spec = parse_node_spec(spec)
        self.policy = policy or DeployPolicy()
        self.vm: Any = None
        self.node: NodeClient | None = None
        self.boot_s: float | None = None
        self.kernel: Any = None  # the cached test kernel a VM node boots (None for this host)
        self.external_search: list[str] | None = list(self.policy.external_path) or None
        self.external_brought: list[str] = []  # binaries copied into a VM node's image

    def start(self) -> NodeClient:
        if self.kind == "local":
            local = LocalNode()
            hello = local.hello()
            if not (hello.get("sched_ext") or {}).get("supported"):
                raise NotReadyError(
                    f"this host's kernel ({hello.get('kernel')}) has no sched_ext",
                    "boot a kernel with CONFIG_SCHED_CLASS_EXT, or rehearse with --node vm",
                    code="no_sched_ext",
                )
            self.node = SerialNode(local)
            return self.node
        from schedcp.testbed import kernel as kernel_mod
        from schedcp.testbed.vm import MicroVM, VMConfig

        spec = self.kernel_spec or kernel_mod.DEFAULT_SPEC
        t0 = time.monotonic()
        self.kernel = kernel_mod.cached(spec)
        vm = MicroVM(VMConfig(cpus=2, kernel=spec, extras=self._external_extras()), kernel=self.kernel)
        # The daemon runs with umask 077, but a guest image built here must stay readable by the
        # unprivileged user QEMU runs as; this runs before any client is served (main thread).
        old_umask = os.umask(0o022)
        try:
            vm.start()
        finally:
            os.umask(old_umask)
        self.vm = vm
        self.boot_s = time.monotonic() - t0
        assert vm.node is not None
        self.node = SerialNode(vm.node)
        return self.node

    def stop(self) -> None:
        if self.vm is not None:
            self.vm.stop()
            self.vm = None

    def _external_extras(self) -> Any:
        """The allowed binaries installed on this host, as a guest image layer (None if there are none)."""
        from schedcp.deploy import external
        from schedcp.repository import external as catalog
        from schedcp.testbed.extras import GuestExtras

        found: dict[str, Path] = {}
        for name in self.policy.external_allow:
            try:
                binary = catalog.entry(name).binary
                found[binary] = external.on_host(binary, list(self.policy.external_path) or None)
            except SchedcpError:
                continue  # not installed here: a deploy of it is refused with the node's reason
        self.external_brought = sorted(found)
        self.external_search = [external.GUEST_EXTERNAL_DIR]
        return GuestExtras(files=external.guest_files(found)) if found else None


class DaemonTokens:
    """Tokens as the daemon keeps and checks them: its token store, its key, its spent nonces."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir

    def load(self, token_id: str) -> str | None:
        from schedcp.daemon import verify_service

        return verify_service.load_token(self.state_dir, token_id)

    def claims_object(self, token: str) -> str | None:
        from schedcp.verifier import tokens

        try:
            return tokens.decode_unverified(token).obj
        except SchedcpError:
            return None

    def verify(self, token: str, *, object_sha256: str, config: dict[str, Any], kernel: str) -> Any:
        from schedcp.verifier import keys, tokens
        from schedcp.verifier.nonces import NonceStore

        public = keys.load_public(self.state_dir / "keys" / "verifier_ed25519")
        with NonceStore(self.state_dir / "verifier" / "nonces.sqlite") as nonces:
            return tokens.verify_token(
                token, object_sha256=object_sha256, config=config, kernel=kernel, public_key=public, nonce_store=nonces
            )


# ---- argument models ------------------------------------------------------------------------------


class RollbackArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("operator rollback", max_length=200)
    reset_breaker: bool = False


class StoriesArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int = Field(20, ge=1, le=200)
    deployment_id: str | None = Field(None, pattern=r"^dep-[0-9a-f]{12}$")


class NodeRunArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    argv: list[str] = Field(min_length=1, max_length=256)
    timeout_s: float = Field(60.0, gt=0, le=MAX_RUN_S)


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DeployService:
    """Owns the node and the controller; contributes the deployment operations to the daemon."""

    def __init__(self, state_dir: Path, audit: AuditLog, *, node_spec: str | None, policy: DeployPolicy | None) -> None:
        self.state_dir = state_dir
        self.audit = audit
        self.node_spec = node_spec
        self.policy = policy or DeployPolicy()
        self.owner: NodeOwner | None = NodeOwner(node_spec, self.policy) if node_spec else None
        self.controller: DeployController | None = None

    # ---- lifecycle (called from the daemon's main thread) --------------------------------------
    def start(self) -> None:
        if self.owner is None:
            return
        node = self.owner.start()
        self.controller = DeployController(
            node,
            DeployStore(self.state_dir),
            ArtifactStore(self.state_dir),
            self.policy,
            DaemonTokens(self.state_dir),
            node_kind=self.owner.kind,
            audit=lambda event, fields: self.audit.append(event, fields=fields),
            feedback_path=self.state_dir / "feedback.db",
            enum_kernel=self.owner.kernel,
            external_search=self.owner.external_search,
        )
        notes = self.controller.reconcile()
        self.audit.append(
            "node_start",
            fields={
                "node": self.node_spec,
                "kernel": self.controller.kernel,
                "boot_s": self.owner.boot_s,
                "external_allowed": list(self.policy.external_allow),
                "external_in_vm": self.owner.external_brought,
            },
        )
        for note in notes:
            print(f"schedcp daemon: reconcile: {note}", flush=True)

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.wait_idle(10)
        if self.owner is not None:
            self.owner.stop()

    # ---- operations ------------------------------------------------------------------------
    def specs(self, op_spec: type[OpSpec]) -> list[OpSpec]:
        return [
            op_spec("deploy", "deploy", DeployRequest, self.deploy),
            op_spec("rollback", "deploy", RollbackArgs, self.rollback),
            op_spec("deployment_status", "status", NoArgs, self.status, audited=False),
            op_spec("deployment_stories", "status", StoriesArgs, self.stories, audited=False),
            op_spec("node_run", "use", NodeRunArgs, self.node_run),
            *TrialService(self).specs(op_spec),
        ]

    def _ctl(self) -> DeployController:
        if self.controller is None:
            raise NotReadyError(
                "this daemon manages no node",
                "start it with --node local (a sched_ext host) or --node vm[:KERNEL]",
                code="no_node",
            )
        return self.controller

    def deploy(self, peer: Peer, args: DeployRequest, op: Operation | None = None) -> dict[str, Any]:
        dep = self._ctl().deploy(args, peer_uid=peer.uid)
        if op is not None:
            op.result.update(
                deployment=dep.id,
                scheduler=dep.artefact.scheduler if dep.artefact else None,
                kind=dep.artefact.kind if dep.artefact else None,
                sha256=dep.artefact.object_sha256 if dep.artefact else None,
            )
        return {"deployment": dep.model_dump(mode="json")}

    def rollback(self, peer: Peer, args: RollbackArgs, op: Operation | None = None) -> dict[str, Any]:
        ctl = self._ctl()
        if args.reset_breaker:
            return {"breaker": ctl.reset_breaker(peer_uid=peer.uid).model_dump(mode="json")}
        trip = ctl.rollback(peer_uid=peer.uid, reason=args.reason)
        if op is not None:
            op.result.update(deployment=trip.deployment_id, restored_to=trip.restored_to, restore_s=trip.restore_s)
        return {"trip": trip.model_dump(mode="json")}

    def status(self, peer: Peer, _args: NoArgs, _op: Operation | None = None) -> dict[str, Any]:
        return self._ctl().status().model_dump(mode="json")

    def stories(self, peer: Peer, args: StoriesArgs, _op: Operation | None = None) -> dict[str, Any]:
        ctl = self._ctl()
        if args.deployment_id:
            story = ctl.store.story(args.deployment_id)
            if story is None:
                raise UsageError(f"no deployment {args.deployment_id}", "list them with `schedcp audit`")
            return {"stories": [story.model_dump(mode="json")]}
        return {"stories": [s.model_dump(mode="json") for s in ctl.stories(args.limit)]}

    def node_run(self, peer: Peer, args: NodeRunArgs, op: Operation | None = None) -> dict[str, Any]:
        """Run a command on the VM node without holding the node while it runs (spawn, then poll)."""
        ctl = self._ctl()
        assert self.owner is not None
        if self.owner.kind != "vm":
            raise SchedcpError(
                "`node run` is refused on a local node: it would run the command as root on this host",
                "run it yourself; `node run` exists to put workloads on a VM node",
                code="forbidden",
            )
        from schedcp.daemon.trial_ops import run_job

        if op is not None:
            op.result.update(argv_sha256=hashlib.sha256(repr(args.argv).encode()).hexdigest())
        return run_job(ctl.node, list(args.argv), args.timeout_s)
