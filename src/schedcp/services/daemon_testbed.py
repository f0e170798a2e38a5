# SPDX-License-Identifier: Apache-2.0
"""A testbed on the node the SchedCP daemon owns: ``schedcp optimize --target daemon|local``.

The micro-VM testbed boots a guest the server holds. This one holds nothing: the node is the
daemon's (this sched_ext host with ``schedcp daemon --node local``, or its rehearsal micro-VM with
``--node vm``), and the daemon decides what runs there (daemon/trial_ops.py). So a trial here is:

* every candidate verified by the daemon first (its whole pipeline, in its own micro-VM; an
  earlier passing verification of the same source and configuration for the node's kernel is
  reused), because the node loads nothing else;
* each arm one ``trial_arm`` call: the daemon attaches the verified object with only the
  workload's tasks switched, runs the workload as the caller (or the guest's workload user) and
  detaches after;
* observation on this host as the caller when the node is this host, else through the daemon in
  its guest (``trial_observe``).

``--target local`` insists that the daemon's node is this host; ``--target daemon`` takes whichever
node the daemon owns (how CI rehearses the same path against a micro-VM node).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.trial.models import Policy
from schedcp.trial.node import DaemonNode


class DaemonSession:
    """The GuestSession of a testbed on the daemon's node (services/testbed.py)."""

    def __init__(
        self,
        kernel: str,
        progress: Callable[[str], None],
        connect: Callable[[], Any],
        *,
        require_local: bool,
    ) -> None:
        self.kernel_spec = kernel
        self.progress = progress
        self._connect = connect
        self.require_local = require_local
        self.cpus = 0
        self.kernel: Any = None
        self.boot_id = ""
        self.restarts = 0
        self.node_kind = ""
        self.node: DaemonNode | None = None
        self._client: Any = None

    # -- GuestSession ---------------------------------------------------------------------------
    def start(self) -> None:
        from schedcp.testbed import kernel as kernel_mod

        self._client = self._connect()
        node = DaemonNode(self._client)
        info = node.info()
        self.node_kind = str(info.get("kind"))
        if self.require_local and self.node_kind != "local":
            raise UsageError(
                f"the SchedCP daemon's node is a {self.node_kind} node, not this host",
                "use --target daemon to run the trials there, or start the daemon with --node local",
            )
        if info.get("deployment"):
            raise NotReadyError(
                f"deployment {info['deployment']} holds the daemon's node; trials need it idle",
                "trial on the micro-VM (--target vm), or `schedcp rollback` first",
                code="busy",
            )
        self.kernel = kernel_mod.cached(self.kernel_spec)
        if self.kernel.release != info.get("kernel"):
            raise UsageError(
                f"the daemon's node runs {info.get('kernel')}; --kernel {self.kernel_spec} is {self.kernel.release}",
                "give --kernel naming the cached kernel of the node's release (candidates are built and "
                "verified for it)",
            )
        self.cpus = int(info.get("cpus") or 0)
        self.boot_id = str(info.get("boot_id") or "")
        node.observe_here = self.node_kind == "local"
        self.node = node

    @property
    def vm(self) -> Any:
        """What the testbed's observation reads ``.node`` from."""
        if self.node is None:
            raise SchedcpError("the daemon testbed is closed", "start a new run", code="vm_closed")
        return self

    @property
    def boot_s(self) -> float | None:
        return None

    @property
    def accel(self) -> str | None:
        return None

    @property
    def ready(self) -> bool:
        return self.node is not None

    @property
    def error(self) -> BaseException | None:
        return None

    def discard(self) -> None:
        raise SchedcpError(
            "the daemon's node stopped answering during the trial",
            "see the daemon's log; it restores or reboots its node when restarted",
            code="daemon_node_lost",
        )

    def close(self) -> None:
        client, self._client, self.node = self._client, None, None
        if client is not None and hasattr(client, "close"):
            client.close()

    def current_boot_id(self) -> str:
        assert self.node is not None
        return str(self.node.info().get("boot_id") or "")

    # -- what the daemon's node needs first --------------------------------------------------------
    def verified_policy(self, built: Any, config: dict[str, Any], policy: Policy) -> Policy:
        """``policy`` with the token id of the daemon's verification of this source and configuration
        for the node's kernel (an earlier pass is reused; otherwise the daemon verifies it now)."""
        import hashlib

        assert self._client is not None and self.kernel is not None
        source_sha = hashlib.sha256(built.source.encode()).hexdigest()
        record = self._client.verification(source_sha)
        if (
            record
            and record.get("token_id")
            and record.get("kernel") == self.kernel.release
            and dict(record.get("config") or {}) == dict(config)
        ):
            return policy.model_copy(update={"token_id": record["token_id"]})
        self.progress(f"verifying {built.name} through the daemon (its node loads only what it verified)")
        meta = built.meta.model_dump(mode="json") if built.meta is not None and config else None
        result = self._client.verify(
            built.source,
            f"{built.name.replace('.', '_')}.bpf.c",
            config=dict(config),
            kernel=self.kernel_spec,
            meta=meta,
        )
        token_id = result.get("token_id")
        if not token_id:
            report = result.get("report") or {}
            raise SchedcpError(
                f"the daemon's verifier did not pass {built.name}: {report.get('reason')}",
                "fix what the report names, or try another candidate",
                code="not_verified",
            )
        return policy.model_copy(update={"token_id": token_id})
