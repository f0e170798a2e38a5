# SPDX-License-Identifier: Apache-2.0
"""Who is at the other end of a unix socket, as the kernel says (SO_PEERCRED, SO_PEERGROUPS).

Both sides use it: the daemon to decide what a client may do, a client to refuse a server that is
not the daemon. The kernel records these at connect/listen time; a peer cannot choose them.
"""

from __future__ import annotations

import socket
import struct
from dataclasses import dataclass

SO_PEERGROUPS = getattr(socket, "SO_PEERGROUPS", 59)  # Linux >= 4.13


@dataclass(frozen=True)
class Peer:
    pid: int
    uid: int
    gid: int
    groups: frozenset[int] = frozenset()


def peer_credentials(sock: socket.socket) -> Peer:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, gid = struct.unpack("3i", raw)
    groups: set[int] = {gid}
    try:
        data = sock.getsockopt(socket.SOL_SOCKET, SO_PEERGROUPS, 4 * 1024)
        groups.update(struct.unpack(f"{len(data) // 4}I", data[: len(data) // 4 * 4]))
    except OSError:
        pass  # older kernels: the primary group only
    return Peer(pid, uid, gid, frozenset(groups))
