# SPDX-License-Identifier: Apache-2.0
"""The sandbox's seccomp filter: no unix-domain sockets, no io_uring, native system calls only.

The network namespace already hides every outside address and abstract unix socket, and the
mount view hides outside socket paths; this filter closes what is left: a unix socket bound into
the view by mistake (a ``ro_bind`` of a directory that holds one) stays unreachable because the
sandbox cannot create an ``AF_UNIX`` socket at all. ``socketpair`` of stream/seqpacket type stays
allowed (pre-connected, it can reach nothing), datagram pairs are refused (they could ``sendto`` a
path). io_uring is refused because its ``IORING_OP_SOCKET``/``CONNECT`` bypass the socket syscalls.

Hand-written classic BPF (a dozen instructions) rather than libseccomp: the Python bindings are a
Debian-only package, and the program is small enough to read in full below.
"""

from __future__ import annotations

import os
import platform
import struct

# struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6] (little endian).
_OFF_NR, _OFF_ARCH, _OFF_ARG0, _OFF_ARG1 = 0, 4, 16, 24
_LD_W_ABS, _JEQ_K, _JGE_K, _AND_K, _RET_K = 0x20, 0x15, 0x35, 0x54, 0x06
_RET_ALLOW = 0x7FFF0000
_RET_KILL_PROCESS = 0x80000000
_RET_EPERM = 0x00050000 | 1
AF_UNIX = 1
SOCK_DGRAM = 2
SOCK_TYPE_MASK = 0xF


class _Arch:
    def __init__(self, audit: int, socket: int, socketpair: int, io_uring_setup: int, x32_bit: int | None) -> None:
        self.audit, self.socket, self.socketpair = audit, socket, socketpair
        self.io_uring_setup, self.x32_bit = io_uring_setup, x32_bit


_ARCHES = {
    "x86_64": _Arch(0xC000003E, 41, 53, 425, 0x40000000),
    "aarch64": _Arch(0xC00000B7, 198, 199, 425, None),
}


def supported() -> bool:
    return platform.machine() in _ARCHES


def program() -> bytes:
    """The filter as an array of struct sock_filter, ready for bwrap's ``--seccomp FD``."""
    arch = _ARCHES[platform.machine()]
    # (code, jump-if-true label, jump-if-false label, k), or a label; labels become relative offsets.
    insns: list[tuple[int, str | None, str | None, int] | str] = [
        (_LD_W_ABS, None, None, _OFF_ARCH),
        (_JEQ_K, None, "kill", arch.audit),  # a foreign ABI (i386's socketcall) gets no syscalls at all
        (_LD_W_ABS, None, None, _OFF_NR),
    ]
    if arch.x32_bit is not None:
        insns.append((_JGE_K, "deny", None, arch.x32_bit))
    insns += [
        (_JEQ_K, "deny", None, arch.io_uring_setup),
        (_JEQ_K, "socket", None, arch.socket),
        (_JEQ_K, "socketpair", "allow", arch.socketpair),
        "socket",
        (_LD_W_ABS, None, None, _OFF_ARG0),
        (_JEQ_K, "deny", "allow", AF_UNIX),
        "socketpair",
        (_LD_W_ABS, None, None, _OFF_ARG1),
        (_AND_K, None, None, SOCK_TYPE_MASK),
        (_JEQ_K, "deny", "allow", SOCK_DGRAM),
        "allow",
        (_RET_K, None, None, _RET_ALLOW),
        "deny",
        (_RET_K, None, None, _RET_EPERM),
        "kill",
        (_RET_K, None, None, _RET_KILL_PROCESS),
    ]
    labels: dict[str, int] = {}
    real: list[tuple[int, str | None, str | None, int]] = []
    for insn in insns:
        if isinstance(insn, str):
            labels[insn] = len(real)
        else:
            real.append(insn)

    def offset(label: str | None, at: int) -> int:
        return 0 if label is None else labels[label] - at - 1

    out = b""
    for i, (code, jt, jf, k) in enumerate(real):
        out += struct.pack("<HBBI", code, offset(jt, i), offset(jf, i), k)
    return out


def program_fd() -> int:
    """An inheritable file descriptor positioned at the start of the filter (for ``--seccomp``)."""
    fd = os.memfd_create("schedcp-seccomp", 0)  # no MFD_CLOEXEC: bwrap must inherit it
    os.write(fd, program())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd
