# SPDX-License-Identifier: Apache-2.0
"""One micro-VM at a time per server, with a short queue instead of an unbounded pile-up.

A TCG guest takes a whole host core, and these machines have two, so a second concurrent VM would
slow both runs and make their measurements meaningless. Calls beyond the queue limit are refused
at once with a "busy" error an agent can act on (wait and retry) rather than hanging.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from schedcp.errors import SchedcpError


class VmGate:
    def __init__(self, max_waiting: int = 2, wait_s: float = 900.0) -> None:
        self._run = threading.Lock()
        self._meta = threading.Lock()
        self._waiting = 0
        self.max_waiting = max_waiting
        self.wait_s = wait_s
        self.running_since: float | None = None

    def status(self) -> dict[str, object]:
        with self._meta:
            since = self.running_since
            return {
                "busy": since is not None,
                "waiting": self._waiting,
                "max_waiting": self.max_waiting,
                "running_for_s": round(time.monotonic() - since, 1) if since is not None else 0.0,
            }

    @contextmanager
    def slot(self) -> Iterator[float]:
        """Hold the VM; yields the seconds spent waiting for it."""
        start = time.monotonic()
        if not self._run.acquire(blocking=False):
            with self._meta:
                if self._waiting >= self.max_waiting:
                    raise SchedcpError(
                        f"the micro-VM is busy and {self._waiting} call(s) already wait for it",
                        "wait for the running call to finish (about a minute), then retry",
                        code="busy",
                    )
                self._waiting += 1
            try:
                acquired = self._run.acquire(timeout=self.wait_s)
            finally:
                with self._meta:
                    self._waiting -= 1
            if not acquired:
                raise SchedcpError(
                    f"waited {self.wait_s:.0f}s for the micro-VM without getting it", "retry later", code="busy"
                )
        with self._meta:
            self.running_since = time.monotonic()
        try:
            yield time.monotonic() - start
        finally:
            with self._meta:
                self.running_since = None
            self._run.release()
