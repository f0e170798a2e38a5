# SPDX-License-Identifier: Apache-2.0
"""What one serving process holds for the operations: service handles, the VM gate, testbeds,
stored artifacts, event logs.

Every operation gets this state (``Operation.run(state, args, progress)``), whichever face calls it:
the MCP server (``schedcp mcp``, ``schedcp optimize``'s in-process server) or a CLI command.
Services are created on first use, so ``tools/list`` answers instantly and a client that only
searches the repository never loads the analysis engine. Nothing here needs root: privileged work
goes to the daemon through a fresh ``DaemonClient`` per call (a verification holds its connection
for minutes and must not block a probe).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schedcp.services.artifacts import ArtifactStore
from schedcp.services.events import EventHub
from schedcp.services.testbed import Testbeds, vm_session_factory
from schedcp.services.vmgate import VmGate
from schedcp.testbed.extras import GuestExtras


@dataclass
class ServerOptions:
    daemon_socket: Path | None = None  # None: SCHEDCP_DAEMON_SOCKET or the runtime default
    repo_db: Path | None = None  # None: SCHEDCP_REPO_DB or the data-dir default
    artifacts_root: Path | None = None
    vm_queue: int = 2  # run_in_vm calls allowed to wait while one VM runs
    vm_wait_s: float = 900.0
    call_log: Path | None = None  # None: SCHEDCP_MCP_CALL_LOG, else no call log file
    # Builds the guest session behind a testbed; None: a micro-VM holding the VM gate (tests may
    # pass a stand-in; it is not reachable over MCP).
    testbed_session: Callable[..., Any] | None = None
    # Host files (the CLI's --with) put into every testbed's guest; set by the process that starts
    # the server, never over MCP.
    guest_files: GuestExtras | None = None


class ServerState:
    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()
        self.events = EventHub()
        self.artifacts = ArtifactStore(self.options.artifacts_root)
        self.vm = VmGate(max_waiting=self.options.vm_queue, wait_s=self.options.vm_wait_s)
        self.testbeds = Testbeds(
            self.options.testbed_session or vm_session_factory(self.vm.slot),
            host_files=self.options.guest_files,
            daemon_factory=self._daemon_session,
        )
        self._lock = threading.Lock()
        self._services: dict[str, Any] = {}
        self._closers: list[Callable[[], None]] = []

    def service(self, key: str, factory: Callable[[], Any], close: Callable[[Any], None] | None = None) -> Any:
        """One shared instance per process, built under a lock on first use."""
        with self._lock:
            if key not in self._services:
                instance = factory()
                self._services[key] = instance
                if close is not None:
                    self._closers.append(lambda: close(instance))
            return self._services[key]

    def opened(self, key: str) -> Any | None:
        """The shared instance under ``key`` if something has built it, else None (never builds)."""
        with self._lock:
            return self._services.get(key)

    def _daemon_session(self, kernel: str, require_local: bool, progress: Any) -> Any:
        """A testbed on the SchedCP daemon's node (services/daemon_testbed.py)."""
        from schedcp.services.daemon_testbed import DaemonSession

        return DaemonSession(kernel, progress, self.daemon, require_local=require_local)

    def daemon(self):
        from schedcp.daemon.client import DaemonClient

        return DaemonClient(self.options.daemon_socket)

    def repository(self):
        from schedcp.repository.service import RepositoryService

        return self.service(
            "repository",
            lambda: RepositoryService(self.options.repo_db, daemon_socket=self.options.daemon_socket),
            lambda svc: svc.close(),
        )

    def close(self) -> None:
        self.testbeds.close_all()
        with self._lock:
            closers, self._closers = self._closers, []
            self._services.clear()
        for closer in reversed(closers):
            try:
                closer()
            except Exception:  # shutting down: one failing close must not stop the others
                pass
