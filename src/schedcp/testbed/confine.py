# SPDX-License-Identifier: Apache-2.0
"""How QEMU is confined: an unprivileged uid, QEMU's own seccomp sandbox, and no host paths.

QEMU parses guest-controlled device traffic; a bug there must not hand out root. So when SchedCP
runs as root (the daemon), QEMU runs as the dedicated user ``schedcp-qemu`` when the operator
created one, else as nobody (65534), with no supplementary groups except the ``/dev/kvm`` group
when KVM is used. It is started with ``-sandbox on,obsolete=deny,elevateprivileges=deny,
spawn=deny,resourcecontrol=deny`` (QEMU's seccomp filter: no setuid, no exec, no scheduler or
affinity changes) when this QEMU supports it. QEMU opens no host path of ours: the kernel and
initramfs are passed as already-open read-only descriptors (``/dev/fd/N``), the serial console
is its stdout (a file we opened) and the node channel is one end of a socketpair, so the
unprivileged QEMU needs no access to the cache or the runtime directory.
"""

from __future__ import annotations

import ctypes
import grp
import os
import pwd
import signal
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from schedcp.errors import NotReadyError

QEMU_USER = "schedcp-qemu"
NOBODY = 65534
QEMU_SECCOMP = "on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny"
PR_SET_PDEATHSIG = 1


@dataclass
class QemuIdentity:
    uid: int
    gid: int
    groups: list[int] = field(default_factory=list)
    name: str = "nobody"


def identity(kvm: bool) -> QemuIdentity | None:
    """Who QEMU runs as; None when we are not root (QEMU then simply runs as the caller)."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(QEMU_USER)
        ident = QemuIdentity(entry.pw_uid, entry.pw_gid, name=QEMU_USER)
    except KeyError:
        ident = QemuIdentity(NOBODY, NOBODY)
    if kvm and os.path.exists("/dev/kvm"):
        ident.groups.append(os.stat("/dev/kvm").st_gid)
    with_groups = [g for g in ident.groups if g != 0]  # never root's group
    ident.groups = with_groups
    return ident


def can_use_kvm(ident: QemuIdentity | None) -> bool:
    """Whether QEMU running as `ident` may open /dev/kvm read-write."""
    if ident is None:
        return os.access("/dev/kvm", os.R_OK | os.W_OK)
    try:
        st = os.stat("/dev/kvm")
    except OSError:
        return False
    rw_other = stat.S_IROTH | stat.S_IWOTH
    rw_group = stat.S_IRGRP | stat.S_IWGRP
    return st.st_mode & rw_other == rw_other or (st.st_gid in ident.groups and st.st_mode & rw_group == rw_group)


@lru_cache(maxsize=4)
def seccomp_args(qemu: str) -> tuple[str, ...]:
    """``-sandbox ...`` when this QEMU was built with seccomp support, else nothing."""
    try:
        help_text = subprocess.run([qemu, "-help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return ()
    return ("-sandbox", QEMU_SECCOMP) if "-sandbox" in help_text else ()


def readable_fd(path: Path, ident: QemuIdentity | None) -> int:
    """An open read-only descriptor for QEMU; refuses files the unprivileged QEMU could not reopen."""
    if ident is not None and not os.stat(path).st_mode & stat.S_IROTH:
        raise NotReadyError(f"{path} is not readable by other users, and QEMU runs unprivileged", f"chmod a+r {path}")
    return os.open(path, os.O_RDONLY)


def preexec(ident: QemuIdentity | None) -> Callable[[], None]:
    """Run in the child before exec: drop to `ident`, then die with us, in a process group of its own."""

    def apply() -> None:
        if ident is not None:
            os.setgroups(ident.groups)
            os.setresgid(ident.gid, ident.gid, ident.gid)
            os.setresuid(ident.uid, ident.uid, ident.uid)
        # After the uid change: a credential change clears the parent-death signal.
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        os.setpgrp()

    return apply


def describe(ident: QemuIdentity | None) -> str:
    if ident is None:
        return f"uid {os.geteuid()} (the caller)"
    groups = ",".join(grp.getgrgid(g).gr_name for g in ident.groups) if ident.groups else "none"
    return f"{ident.name} (uid {ident.uid}, groups {groups})"
