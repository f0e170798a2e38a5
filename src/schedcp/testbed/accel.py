# SPDX-License-Identifier: Apache-2.0
"""Choosing QEMU's accelerator: KVM when it really runs a guest, TCG otherwise.

Opening /dev/kvm is not enough: on nested or restricted hosts the device exists and even creates
VMs, yet QEMU aborts when it programs the vCPU (seen here: "failed to set MSR"). So the check boots
the test kernel under KVM for a moment and looks for the kernel's own output. The answer is cached
per host boot.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from schedcp.paths import runtime_dir


@dataclass(frozen=True)
class AccelChoice:
    name: str  # "kvm" or "tcg"
    reason: str


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def detect(vmlinuz: Path, qemu: str = "qemu-system-x86_64", *, force: str | None = None) -> AccelChoice:
    choice = force or os.environ.get("SCHEDCP_ACCEL")
    if choice in ("kvm", "tcg"):
        return AccelChoice(choice, f"forced by {'argument' if force else 'SCHEDCP_ACCEL'}")
    cache = runtime_dir() / "accel.json"
    try:
        cached = json.loads(cache.read_text())
        if cached.get("boot_id") == _boot_id():
            return AccelChoice(cached["name"], cached["reason"])
    except (OSError, ValueError, KeyError):
        pass
    result = _probe(vmlinuz, qemu)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"boot_id": _boot_id(), "name": result.name, "reason": result.reason}))
    return result


def _probe(vmlinuz: Path, qemu: str) -> AccelChoice:
    if not os.path.exists("/dev/kvm"):
        return AccelChoice("tcg", "/dev/kvm does not exist")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelChoice("tcg", "/dev/kvm is not accessible to this user")
    from schedcp.testbed import confine

    who = confine.identity(kvm=True)
    if not confine.can_use_kvm(who):
        return AccelChoice(
            "tcg",
            "/dev/kvm is usable only by root and QEMU runs unprivileged; give /dev/kvm to group kvm (mode 0660)",
        )
    kernel_fd = confine.readable_fd(vmlinuz, who)
    try:
        proc = subprocess.run(
            [
                qemu,
                *confine.seccomp_args(qemu),
                "-accel",
                "kvm",
                "-M",
                "pc",
                "-cpu",
                "host",
                "-m",
                "256",
                "-smp",
                "1",
                "-nodefaults",
                "-nographic",
                "-no-reboot",
                "-serial",
                "stdio",
                "-kernel",
                f"/dev/fd/{kernel_fd}",
                "-append",
                "console=ttyS0 panic=-1 loglevel=7",
            ],
            capture_output=True,
            text=True,
            timeout=15,
            pass_fds=(kernel_fd,),
            preexec_fn=confine.preexec(who),
        )
        out = proc.stdout + proc.stderr
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    finally:
        os.close(kernel_fd)
    if "Kernel panic" in out or "VFS:" in out or "Run /init" in out:
        return AccelChoice("kvm", "KVM booted the test kernel")
    first_error = next((ln for ln in out.splitlines() if "error" in ln.lower() or "failed" in ln.lower()), "")
    return AccelChoice("tcg", f"KVM cannot run guests here ({first_error.strip()[:120] or 'no kernel output'})")
