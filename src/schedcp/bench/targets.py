# SPDX-License-Identifier: Apache-2.0
"""Where benchmarks run: a micro-VM booted from the test kernel, or this host through its node agent.

Both give the harness the same three things: a node (``schedcp.trial.node.NodeClient``: the
micro-VM's channel, or this host's node agent as the daemon forwards it), a kernel object to build
schedulers against, and the argv that starts a workload module there. Only the micro-VM is safe on
a developer machine. The local target never loads a scheduler itself (it used to, as root, from a
fixed ``/tmp`` work directory anyone could create first): the host's node agent belongs to the
SchedCP daemon, which decides what a caller may load (deployment needs a token), and the local
target refuses clearly when no daemon forwards node operations.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schedcp.errors import NotReadyError, UsageError
from schedcp.paths import cache_dir
from schedcp.testbed import kernel as kernel_mod
from schedcp.testbed.extras import GuestExtras
from schedcp.testbed.vm import MicroVM, VMConfig
from schedcp.trial.node import DaemonNode, NodeClient

SCX_STATE = Path("/sys/kernel/sched_ext/state")


def host_cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@dataclass
class HostKernel:
    """The running host kernel, shaped like testbed.kernel.Kernel for the build helpers."""

    release: str
    dir: Path
    vmlinux: Path

    @property
    def major_minor(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.release)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)

    @classmethod
    def current(cls) -> HostKernel:
        release = platform.release()
        return cls(release, cache_dir() / "host-kernel" / release, Path("/sys/kernel/btf/vmlinux"))


class VMTarget:
    """One micro-VM boot shared by every run of every benchmark given to the harness."""

    kind = "vm"

    def __init__(
        self,
        *,
        cpus: int,
        kernel_spec: str,
        image_variant: str,
        memory_mb: int = 2048,
        host_nice: int = 0,
        extras: GuestExtras | None = None,
    ) -> None:
        if not -20 <= host_nice <= 19:
            raise UsageError(f"host nice {host_nice} is out of range", "use -20..19")
        self.host_nice = host_nice
        # SCHEDCP_BENCH_TCG_THREAD=single trades parallelism for stability (smoke tests use it).
        self.tcg_thread = "single" if os.environ.get("SCHEDCP_BENCH_TCG_THREAD") == "single" else "multi"
        self.boots = 0
        self.kernel = kernel_mod.cached(kernel_spec)
        # Named threads ("CPU 0/TCG", ...) let us read how long the vCPUs waited for a host CPU.
        self.config = VMConfig(
            cpus=cpus,
            memory_mb=memory_mb,
            kernel=kernel_spec,
            image_variant=image_variant,
            extra_qemu_args=["-name", "schedcp-bench,debug-threads=on"],
            boot_timeout_s=300.0,
            extras=extras,
        )
        self.vm: MicroVM | None = None

    def start(self) -> None:
        self.vm = MicroVM(self.config)
        # One host thread per vCPU (multi-threaded TCG). The testbed defaults to a single thread for
        # all vCPUs because multi-threaded TCG occasionally crashes the guest when sched_ext flips
        # static keys on attach/detach; but one thread gives 2 vCPUs the capacity of 1 CPU (each runs
        # at half speed while the other is busy), which would make every parallelism effect vanish.
        # The harness survives those crashes instead: it reboots and repeats the interrupted run.
        saved = os.environ.get("SCHEDCP_TCG_THREAD")
        os.environ["SCHEDCP_TCG_THREAD"] = self.tcg_thread
        try:
            self.vm.start()
        finally:
            if saved is None:
                os.environ.pop("SCHEDCP_TCG_THREAD", None)
            else:
                os.environ["SCHEDCP_TCG_THREAD"] = saved
        self.boots += 1
        if self.host_nice:
            self._renice(self.host_nice)

    def _renice(self, nice: int) -> None:
        """Give QEMU's threads (nice is per thread on Linux) a different host priority, so other work
        on a shared host takes less time from the guest's vCPUs. Lowering it needs root."""
        assert self.vm is not None and self.vm.proc is not None
        try:
            for task in Path(f"/proc/{self.vm.proc.pid}/task").glob("*"):
                os.setpriority(os.PRIO_PROCESS, int(task.name), nice)
        except PermissionError as exc:
            self.stop()
            raise NotReadyError(
                f"cannot set the VM's host priority to {nice}: {exc}", "run as root or drop --host-nice"
            ) from exc

    @property
    def node(self) -> NodeClient:
        assert self.vm is not None and self.vm.node is not None, "start() the target first"
        return self.vm.node

    @property
    def alive(self) -> bool:
        return self.vm is not None and self.vm.alive

    def workload_argv(self, module: str, args: list[str]) -> list[str]:
        return ["python3", "-m", f"schedcp_workloads.{module}", *args]

    def vcpu_schedstat(self) -> tuple[int, int] | None:
        """(ns the vCPU threads ran, ns they waited runnable for a host CPU), summed; None if unknown.

        The waiting part is time the guest lost to other work on the host: its clock runs on while
        its CPUs do not, which looks like extra latency and slower work inside the guest.
        """
        if self.vm is None or self.vm.proc is None:
            return None
        run = wait = 0
        found = False
        for task in Path(f"/proc/{self.vm.proc.pid}/task").glob("*"):
            try:
                if "CPU" not in (task / "comm").read_text():
                    continue
                fields = (task / "schedstat").read_text().split()
            except OSError:
                continue
            run, wait, found = run + int(fields[0]), wait + int(fields[1]), True
        return (run, wait) if found else None

    def describe(self) -> dict[str, Any]:
        vm = self.vm
        return {
            "target": "vm",
            "host_cpu": host_cpu_model(),
            "host_cpus": os.cpu_count(),
            "kernel": self.kernel.release,
            "vcpus": self.config.cpus,
            "memory_mb": self.config.memory_mb,
            "accel": vm.accel.name if vm and vm.accel else None,
            "image_variant": self.config.image_variant,
            "extras": self.config.extras.describe() if self.config.extras else None,
            "host_nice": self.host_nice,
            "tcg_thread": self.tcg_thread,
            "boots": self.boots,
            "boot_s": round(vm.boot_s, 2) if vm and vm.boot_s else None,
            "guest_python": vm.hello.get("python") if vm else None,
        }

    def stop(self) -> None:
        if self.vm is not None:
            self.vm.stop()

    def console_tail(self, lines: int = 40) -> str:
        return self.vm.console_tail(lines) if self.vm is not None else ""


class LocalTarget:
    """This machine, through an in-process node agent: needs root and a sched_ext kernel."""

    kind = "local"

    def __init__(self) -> None:
        if not SCX_STATE.exists():
            raise NotReadyError(
                f"this host's kernel ({platform.release()}) has no sched_ext ({SCX_STATE} is missing)",
                "run the benchmarks in the micro-VM (--target vm) or on a kernel built with CONFIG_SCHED_CLASS_EXT",
            )
        state = SCX_STATE.read_text().strip()
        if state != "disabled":
            raise NotReadyError(
                f"sched_ext is {state!r} on this host: another scheduler is attached",
                "detach it first; the benchmark needs EEVDF as the baseline",
            )
        self.kernel = HostKernel.current()
        self._node: DaemonNode | None = None

    def start(self) -> None:
        """Reach the host's node agent through the daemon (checked to be root by the client)."""
        node = DaemonNode()
        node.call("hello", timeout_s=10)  # refuses clearly when no daemon forwards node operations
        self._node = node

    @property
    def node(self) -> NodeClient:
        assert self._node is not None, "start() the target first"
        return self._node

    @property
    def alive(self) -> bool:
        return self._node is not None

    def workload_argv(self, module: str, args: list[str]) -> list[str]:
        return [sys.executable, "-m", f"schedcp.bench.guest.{module}", *args]

    def vcpu_schedstat(self) -> tuple[int, int] | None:
        return None  # no hypervisor between the workload and the CPUs

    def describe(self) -> dict[str, Any]:
        return {
            "target": "local",
            "host_cpu": host_cpu_model(),
            "host_cpus": os.cpu_count(),
            "kernel": self.kernel.release,
            "vcpus": os.cpu_count(),
            "accel": None,
        }

    def console_tail(self, lines: int = 40) -> str:
        return ""

    def stop(self) -> None:
        self._node = None  # the harness detaches what it attached (attached()); the daemon keeps its node
