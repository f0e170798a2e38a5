# SPDX-License-Identifier: Apache-2.0
"""One micro-VM boot held open across many calls: the testbed an optimisation run works in.

A run observes its workload and measures every candidate against EEVDF in the *same* guest boot,
so all comparisons share one kernel, one memory layout and one noise floor. The boot starts in
the background as soon as the session starts (planning overlaps with it). The SchedCP server
holds these sessions for its clients (``schedcp.services.testbed``); nothing here knows about
agents or MCP.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from schedcp.errors import SchedcpError
from schedcp.testbed.extras import GuestExtras
from schedcp.trial.node import GUEST_DEAD


class VmSession:
    """A MicroVM booted in the background, plus the few guest operations the agents need.

    The thread that boots QEMU also owns it until the session closes: the VM is started with a
    parent-death signal, which Linux ties to the creating *thread*, so that thread must outlive
    the guest or the guest dies with it.
    """

    def __init__(
        self,
        kernel: str = "unstable",
        cpus: int = 2,
        progress: Callable[[str], None] = lambda _m: None,
        *,
        hold: Callable[[], AbstractContextManager[Any]] = nullcontext,
        extras: GuestExtras | None = None,
    ) -> None:
        self.kernel_spec = kernel
        self.extras = extras  # packages and host files in the guest (testbed/extras.py)
        self._hold = hold  # held by the owning thread for the guest's whole life (e.g. a VM gate slot)
        self.cpus = cpus
        self.progress = progress
        self._vm: Any = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._release = threading.Event()
        self._closed = False
        self.boot_id = ""
        self.kernel: Any = None
        self.restarts = 0

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """Resolve the kernel now (fast, and errors belong to the caller) and boot in the background."""
        from schedcp.testbed import kernel as kernel_mod

        if self._thread is not None:
            return
        self.kernel = kernel_mod.cached(self.kernel_spec)
        self._spawn()

    def _spawn(self) -> None:
        self._ready, self._release = threading.Event(), threading.Event()
        self._thread = threading.Thread(
            target=self._own, args=(self._ready, self._release), name="schedcp-agent-vm", daemon=True
        )
        self._thread.start()

    def _own(self, ready: threading.Event, release: threading.Event) -> None:
        try:
            with self._hold():
                self._boot_and_hold(ready, release)
        except BaseException as exc:  # e.g. the VM gate is busy: handed to whoever waits for the VM
            self._error = exc
            ready.set()

    def _boot_and_hold(self, ready: threading.Event, release: threading.Event) -> None:
        from schedcp.testbed.vm import MicroVM, VMConfig

        vm = None
        for attempt in (1, 2):
            try:
                vm = MicroVM(VMConfig(cpus=self.cpus, kernel=self.kernel_spec, extras=self.extras), kernel=self.kernel)
                vm.start()
                self.boot_id = self._read_boot_id(vm)
                self._vm = vm
                break
            except BaseException as exc:  # handed to whoever waits for the VM
                if vm is not None:
                    vm.kill()
                # A guest that died while booting (seen rarely under TCG) gets one more try.
                if attempt == 1 and isinstance(exc, SchedcpError) and exc.code in GUEST_DEAD:
                    self.progress(f"the guest died while booting ({exc.cause[:80]}); booting again")
                    self.restarts += 1
                    continue
                self._error = exc
                ready.set()
                return
        ready.set()
        release.wait()
        assert vm is not None
        vm.stop()

    @staticmethod
    def _read_boot_id(vm: Any) -> str:
        out = vm.node.run(["cat", "/proc/sys/kernel/random/boot_id"], 30)
        return str(out.stdout).strip()[:64]

    @property
    def vm(self) -> Any:
        if self._thread is None:
            self.start()
        if not self._ready.is_set():
            self.progress("waiting for the micro-VM to finish booting")
        self._ready.wait()
        if self._error is not None:
            if isinstance(self._error, SchedcpError):
                raise self._error
            raise SchedcpError(
                f"the micro-VM did not boot: {self._error}", "run `schedcp doctor`", code="vm_boot"
            ) from self._error
        if self._vm is None:
            raise SchedcpError("the micro-VM session is closed", "start a new run", code="vm_closed")
        return self._vm

    @property
    def boot_s(self) -> float | None:
        return getattr(self._vm, "boot_s", None)

    @property
    def accel(self) -> str | None:
        accel = getattr(self._vm, "accel", None)
        return getattr(accel, "name", None)

    def _release_current(self, kill: bool) -> None:
        vm, self._vm = self._vm, None
        if kill and vm is not None:
            vm.kill()
        self._release.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def discard(self) -> None:
        """Throw away a guest that hung or crashed and boot a fresh one in the background."""
        self._release_current(kill=True)
        self._error = None
        self.boot_id = ""
        self.restarts += 1
        self._spawn()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._ready.wait(timeout=300)
            self._release_current(kill=False)

    def __enter__(self) -> VmSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- guest operations ---------------------------------------------------------------------
    def current_boot_id(self) -> str:
        return self._read_boot_id(self.vm)

    @property
    def ready(self) -> bool:
        return self._ready.is_set() and self._error is None and self._vm is not None

    @property
    def error(self) -> BaseException | None:
        return self._error
