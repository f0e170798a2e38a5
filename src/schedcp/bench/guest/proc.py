# SPDX-License-Identifier: Apache-2.0
"""Process plumbing shared by the benchmark workloads (stdlib only, runs in the guest).

Workloads use processes, not threads: Python threads share one interpreter lock, which would hide
the kernel scheduler behind the interpreter's own switching.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable


def fork_child(fn: Callable[[], int | None], close: Iterable[int] = ()) -> int:
    """Fork; the child closes `close`, runs fn and exits with its code (1 if it raised)."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for fd in close:
                os.close(fd)
            code = fn() or 0
        finally:
            os._exit(code)
    return pid


def read_exact(fd: int, size: int) -> bytes:
    """Read `size` bytes, or fewer if the writer closed the pipe first."""
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def read_all(fd: int) -> bytes:
    """Read until end of file, then close the descriptor."""
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
