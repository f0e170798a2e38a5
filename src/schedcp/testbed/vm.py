# SPDX-License-Identifier: Apache-2.0
"""Boot the test kernel in QEMU and talk to the guest's node agent.

    with MicroVM(VMConfig(cpus=2)) as vm:
        print(vm.node.run(["cat", "/sys/kernel/sched_ext/state"]).stdout)

The machine is QEMU's ``pc`` type with the virtio-serial *PCI* device: Debian's cloud kernels build
virtio-pci and virtio_console in but ship virtio-mmio as a module without command-line device
discovery, so the ``microvm`` machine cannot carry a virtio-serial port to them. With
``-nodefaults`` and no firmware option ROMs, ``pc`` boots as fast here (about 7 s under TCG).

Every VM gets a private scratch directory (console log, QEMU errors), so many run at once; QEMU
itself runs unprivileged and sandboxed (:mod:`schedcp.testbed.confine`).
Note: the parent-death signal is tied to the *thread* that started QEMU (a Linux rule), so a VM
started in a worker thread dies when that thread ends; start VMs from a thread that outlives them.
QEMU is started with a parent-death signal and in its own process group, and is always killed on
exit, on timeout and on error.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedcp.errors import NotReadyError, SchedcpError
from schedcp.node.protocol import PORT_NAME
from schedcp.paths import runtime_dir
from schedcp.testbed import accel as accel_mod
from schedcp.testbed import confine
from schedcp.testbed import guest as guest_mod
from schedcp.testbed import kernel as kernel_mod
from schedcp.testbed.extras import GuestExtras
from schedcp.trial.node import NodeOpError, SocketNode

__all__ = ["MicroVM", "NodeOpError", "VMConfig"]

_live: set[MicroVM] = set()
_live_lock = threading.Lock()


def _kill_all_live() -> None:
    with _live_lock:
        vms = list(_live)
    for vm in vms:
        vm.kill()


atexit.register(_kill_all_live)


@dataclass
class VMConfig:
    cpus: int = 2
    memory_mb: int = 2048
    kernel: str = kernel_mod.DEFAULT_SPEC
    accel: str | None = None  # None: detect; "kvm" or "tcg" to force
    boot_timeout_s: float = 120.0
    image_variant: str = "default"  # "build" adds make + gcc for the parallel-build benchmark
    cmdline_extra: str = ""
    extra_qemu_args: list[str] = field(default_factory=list)
    extras: GuestExtras | None = None  # user packages and host files (testbed/extras.py)

    def validate(self) -> None:
        if not 1 <= self.cpus <= 64:
            raise SchedcpError(f"cpus={self.cpus} is out of range", "use 1..64", code="usage")
        if not 256 <= self.memory_mb <= 65536:
            raise SchedcpError(f"memory_mb={self.memory_mb} is out of range", "use 256..65536", code="usage")


def _accel_arg(name: str) -> str:
    """QEMU's -accel value. TCG runs single-threaded by default: with one host thread per vCPU, the
    guest crashed ("Oops: int3" at a patched static branch) about once per 20-40 sched_ext
    attach/detach cycles, as sched_ext flips static keys; single-threaded TCG showed none in 100
    and was not slower on a busy 2-core host. SCHEDCP_TCG_THREAD=multi restores the default."""
    if name != "tcg":
        return name
    mode = os.environ.get("SCHEDCP_TCG_THREAD", "single")
    return f"tcg,thread={'multi' if mode == 'multi' else 'single'}"


class MicroVM:
    """One QEMU guest running the node agent."""

    def __init__(
        self,
        config: VMConfig | None = None,
        *,
        kernel: kernel_mod.Kernel | None = None,
        image: guest_mod.GuestImage | None = None,
    ) -> None:
        self.config = config or VMConfig()
        self.config.validate()
        self.kernel = kernel
        self.image = image
        self.proc: subprocess.Popen[bytes] | None = None
        self.workdir: Path | None = None
        self.node: SocketNode | None = None
        self.boot_s: float | None = None
        self.hello: dict[str, Any] = {}
        self.accel: accel_mod.AccelChoice | None = None
        self._sock: socket.socket | None = None
        self.qemu_user = ""

    # -- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> MicroVM:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        qemu = shutil.which("qemu-system-x86_64")
        if qemu is None:
            raise NotReadyError("qemu-system-x86_64 is not installed", "apt-get install qemu-system-x86")
        if self.kernel is None:
            self.kernel = kernel_mod.cached(self.config.kernel)
        if self.image is None:
            self.image = guest_mod.ensure_image(
                build_if_missing=False,
                variant=self.config.image_variant,
                extras=self.config.extras,
                progress=lambda _m: None,
            )
        self.accel = accel_mod.detect(self.kernel.vmlinuz, qemu, force=self.config.accel)
        base = runtime_dir()
        base.mkdir(parents=True, exist_ok=True)
        self.workdir = Path(tempfile.mkdtemp(prefix="vm-", dir=base))
        # QEMU runs unprivileged and opens no path of ours (see testbed.confine): the kernel and
        # initramfs are open descriptors, the console is its stdout, the node channel a socketpair.
        who = confine.identity(kvm=self.accel.name == "kvm")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [confine.readable_fd(self.kernel.vmlinuz, who), confine.readable_fd(self.image.initramfs, who)]
        console_fd = os.open(self.workdir / "console.log", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        cpu = "host" if self.accel.name == "kvm" else "max"
        # no_timer_check: under a loaded TCG host the IO-APIC timer check can fail and panic the boot.
        cmdline = f"console=ttyS0 quiet panic=-1 no_timer_check rdinit=/init {self.config.cmdline_extra}".strip()
        workdir = self.config.extras.workdir if self.config.extras else None
        if workdir:
            # The kernel hands unknown NAME=VALUE parameters to init's environment; the node agent
            # starts commands there, so `./tool` finds a file sent with --with.
            cmdline += f" SCHEDCP_NODE_CWD={workdir}"
        argv = [
            qemu,
            "-accel",
            _accel_arg(self.accel.name),
            "-M",
            "pc",
            "-cpu",
            cpu,
            "-smp",
            str(self.config.cpus),
            "-m",
            str(self.config.memory_mb),
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-no-reboot",
            *confine.seccomp_args(qemu),
            "-kernel",
            f"/dev/fd/{fds[0]}",
            "-initrd",
            f"/dev/fd/{fds[1]}",
            "-append",
            cmdline,
            "-chardev",
            "stdio,id=con0,signal=off",
            "-serial",
            "chardev:con0",
            "-chardev",
            f"socket,id=node0,fd={theirs.fileno()}",
            "-device",
            "virtio-serial-pci,id=vser0",
            "-device",
            f"virtserialport,bus=vser0.0,chardev=node0,name={PORT_NAME}",
            *self.config.extra_qemu_args,
        ]
        start = time.monotonic()
        try:
            with (self.workdir / "qemu.err").open("wb") as err:
                self.proc = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=console_fd,
                    stderr=err,
                    pass_fds=(*fds, theirs.fileno()),
                    preexec_fn=confine.preexec(who),
                )
        finally:
            for fd in (*fds, console_fd):
                os.close(fd)
            theirs.close()
        self.qemu_user = confine.describe(who)
        self._sock = ours
        with _live_lock:
            _live.add(self)
        try:
            self.node = SocketNode(self._sock, on_timeout=self.kill, describe=self.console_tail)
            remaining = self.config.boot_timeout_s - (time.monotonic() - start)
            self.hello = self._await_hello(max(remaining, 1.0))
            self.boot_s = time.monotonic() - start
        except BaseException:
            self.kill()
            raise

    def _await_hello(self, timeout_s: float) -> dict[str, Any]:
        assert self.node is not None
        deadline = time.monotonic() + timeout_s
        # The hello request waits in the socket until the guest opens its port and answers.
        try:
            return self.node.call("hello", timeout_s=timeout_s)
        except SchedcpError as exc:
            if self.proc is not None and self.proc.poll() is not None:
                raise SchedcpError(
                    f"the guest stopped during boot (QEMU exit {self.proc.returncode}): {self.qemu_error()}",
                    "see the console tail: " + self.console_tail(),
                    code="boot_failed",
                ) from exc
            if time.monotonic() >= deadline:
                raise SchedcpError(
                    f"the guest was not ready within {timeout_s:.0f}s",
                    "raise boot_timeout_s (TCG is slow) or see the console tail: " + self.console_tail(),
                    code="boot_timeout",
                ) from exc
            raise

    def stop(self, grace_s: float = 5.0) -> None:
        """Ask the guest to power off, then make sure QEMU is gone."""
        if self.proc is None:
            return
        if self.proc.poll() is None and self.node is not None:
            try:
                self.node.call("poweroff", timeout_s=5)
            except SchedcpError:
                pass
            try:
                self.proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                pass
        self.kill()

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        with _live_lock:
            _live.discard(self)
        if self.workdir is not None and not os.environ.get("SCHEDCP_KEEP_VM_DIR"):
            self._saved_console = self.console_tail(200)
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def console_tail(self, lines: int = 15) -> str:
        if self.workdir is None:
            return getattr(self, "_saved_console", "")
        try:
            text = (self.workdir / "console.log").read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])

    def qemu_error(self) -> str:
        if self.workdir is None:
            return ""
        try:
            return (self.workdir / "qemu.err").read_text(errors="replace").strip()[-400:]
        except OSError:
            return ""
