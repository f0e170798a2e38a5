# SPDX-License-Identifier: Apache-2.0
"""systemd readiness notification (``Type=notify``): one datagram to ``$NOTIFY_SOCKET``.

Hand-written because the protocol is one ``sendto`` and the daemon runs as root, where a
dependency for it (python-systemd, a C extension) is more to trust than these lines.
"""

from __future__ import annotations

import os
import socket


def notify(message: str) -> bool:
    """Send e.g. ``READY=1`` or ``STOPPING=1``; False when not started by systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]  # abstract namespace
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.sendto(message.encode(), address)
        except OSError:
            return False
    return True
