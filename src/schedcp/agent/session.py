# SPDX-License-Identifier: Apache-2.0
"""The micro-VM an optimisation run works in, and the workload it optimises.

One guest boot serves the whole run: the Observation agent watches the workload in it, and every
trial runs the workload under EEVDF and under a candidate in it, so all comparisons share one
kernel, one memory layout and one noise floor. The boot starts in the background as soon as the
run begins (repository loading and planning overlap with it).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from schedcp.errors import SchedcpError, UsageError

MAX_RUN_S = 600.0


@dataclass
class Target:
    """What to optimise: a built-in guest workload or a command, run to completion in the guest."""

    label: str
    argv: list[str]
    builtin: str | None = None
    timeout_s: float = 180.0

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "argv": self.argv, "builtin": self.builtin, "timeout_s": self.timeout_s}


def make_target(
    workload: str | None, command: list[str] | None, *, workload_args: list[str] | None = None, timeout_s: float = 180.0
) -> Target:
    from schedcp.server import checks, workloads

    if not 1 <= timeout_s <= MAX_RUN_S:
        raise UsageError(f"timeout {timeout_s}s is out of range", f"use 1..{MAX_RUN_S:.0f} seconds")
    if workload and command:
        raise UsageError("give either --workload NAME or a command after --, not both", "pick one target")
    if workload:
        return Target(workload, workloads.argv_for(workload, workload_args or []), workload, timeout_s)
    if command:
        argv = checks.argv(list(command), "command")
        return Target(argv[0].rsplit("/", 1)[-1][:40], argv, None, timeout_s)
    raise UsageError("nothing to optimise", "give --workload NAME (e.g. longtail), a command after --, or --demo")


class VmSession:
    """A MicroVM booted in the background, plus the few guest operations the agents need.

    The thread that boots QEMU also owns it until the session closes: the VM is started with a
    parent-death signal, which Linux ties to the creating *thread*, so that thread must outlive
    the guest or the guest dies with it.
    """

    def __init__(
        self, kernel: str = "unstable", cpus: int = 2, progress: Callable[[str], None] = lambda _m: None
    ) -> None:
        self.kernel_spec = kernel
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
        from schedcp.testbed.vm import MicroVM, VMConfig

        vm = None
        for attempt in (1, 2):
            try:
                vm = MicroVM(VMConfig(cpus=self.cpus, kernel=self.kernel_spec), kernel=self.kernel)
                vm.start()
                self.boot_id = self._read_boot_id(vm)
                self._vm = vm
                break
            except BaseException as exc:  # handed to whoever waits for the VM
                if vm is not None:
                    vm.kill()
                # A guest that died while booting (seen rarely under TCG) gets one more try.
                if attempt == 1 and isinstance(exc, SchedcpError) and exc.code in ("guest_lost", "guest_timeout"):
                    self.progress(f"the guest died while booting ({exc.cause[:80]}); booting again")
                    self.restarts += 1
                    continue
                self._error = exc
                ready.set()
                return
        ready.set()
        release.wait()
        vm.stop()

    @staticmethod
    def _read_boot_id(vm: Any) -> str:
        out = vm.node.run(["cat", "/proc/sys/kernel/random/boot_id"], timeout_s=30)
        return out["stdout"].strip()[:64]

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

    def run_workload(self, target: Target) -> dict[str, Any]:
        """Run the target once; metrics from its JSON line plus its wall time (as makespan_s if absent)."""
        from schedcp.server.workloads import parse_metrics

        out = self.vm.node.run(target.argv, timeout_s=target.timeout_s)
        metrics = parse_metrics(out["stdout"])
        metrics["run_wall_s"] = round(float(out["wall_s"]), 4)
        metrics.setdefault("makespan_s", metrics["run_wall_s"])
        return {
            "exit_code": out["exit_code"],
            "timed_out": bool(out["timed_out"]),
            "wall_s": round(float(out["wall_s"]), 3),
            "metrics": metrics,
            "stderr_tail": (out.get("stderr") or "")[-400:],
        }
