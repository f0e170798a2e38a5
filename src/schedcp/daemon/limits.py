# SPDX-License-Identifier: Apache-2.0
"""The daemon's resource bounds: how much any one local user can make root do, hold or write.

Without them one thread per connection with no cap let 20 000 held connections wedge the daemon,
submissions grew without end, and every refused connection from any local user appended to root's
audit log. Here every pool, queue, counter and directory has a size, and what overflows gets a
clear ``busy``/``quota`` error instead of memory, threads or disk.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from schedcp.errors import SchedcpError


@dataclass(frozen=True)
class Limits:
    workers: int = 16  # connections served at once (each by one thread)
    queue: int = 32  # accepted connections waiting for a worker; more get "busy"
    connections_per_uid: int = 8  # served + waiting, per peer uid
    idle_timeout_s: float = 120.0  # a connection that sends nothing this long is closed
    request_timeout_s: float = 30.0  # from a request's first byte to its newline
    request_bytes: int = 2 * 1024 * 1024  # one request line (a 256 KiB source, JSON-escaped)
    json_depth: int = 32  # nesting of a request's JSON
    verifies_per_uid: int = 1  # running or waiting, per peer uid
    verifies_waiting: int = 4  # waiting for the VM, all peers together
    submission_bytes_per_uid_day: int = 16 * 1024 * 1024
    submissions_total_bytes: int = 256 * 1024 * 1024  # retention: oldest submissions go first
    submissions_max_age_s: float = 7 * 24 * 3600
    refusal_window_s: float = 60.0  # one audit entry per refused uid per window, then a summary
    refusal_uids_tracked: int = 256
    shutdown_grace_s: float = 5.0


def busy(cause: str, next_step: str = "retry in a few seconds") -> SchedcpError:
    return SchedcpError(cause, next_step, code="busy")


def quota(cause: str, next_step: str) -> SchedcpError:
    return SchedcpError(cause, next_step, code="quota")


class PerUidCounter:
    """Concurrent things per uid (connections, verifications), with a cap each."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self._lock = threading.Lock()
        self._counts: dict[int, int] = {}

    def try_acquire(self, uid: int) -> bool:
        with self._lock:
            n = self._counts.get(uid, 0)
            if n >= self.cap:
                return False
            self._counts[uid] = n + 1
            return True

    def release(self, uid: int) -> None:
        with self._lock:
            n = self._counts.get(uid, 0) - 1
            if n <= 0:
                self._counts.pop(uid, None)
            else:
                self._counts[uid] = n

    def total(self) -> int:
        with self._lock:
            return sum(self._counts.values())


@dataclass
class ByteBudget:
    """Bytes per uid over a rolling day (submissions); root is the operator and is not counted."""

    per_day: int
    _events: dict[int, deque[tuple[float, int]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def charge(self, uid: int, nbytes: int, now: float | None = None) -> None:
        if uid == 0:
            return
        now = time.time() if now is None else now
        with self._lock:
            events = self._events.setdefault(uid, deque())
            while events and events[0][0] < now - 86400:
                events.popleft()
            used = sum(n for _, n in events)
            if used + nbytes > self.per_day:
                raise quota(
                    f"uid {uid} has submitted {used} bytes today; {nbytes} more would pass the daily "
                    f"{self.per_day}-byte quota",
                    "retry tomorrow, or ask the operator to raise the daemon's submission quota",
                )
            events.append((now, nbytes))


class RefusalLog:
    """Refused peers are counted, not each written to the audit log.

    The first refusal of a uid in a window is logged with its pid; the rest of the window's are
    counted, and the counts go into one ``refused_summary`` entry when the window closes. At most
    ``uids_tracked`` uids are told apart; the rest share one counter."""

    def __init__(self, write: Callable[[str, dict[str, object], int | None, int | None], None], limits: Limits) -> None:
        self._write = write
        self.window_s = limits.refusal_window_s
        self.uids_tracked = limits.refusal_uids_tracked
        self._lock = threading.Lock()
        self._window_start = time.monotonic()
        self._seen: set[int] = set()
        self._suppressed: dict[int, int] = {}
        self._other = 0
        self.total = 0

    def record(self, uid: int, pid: int, reason: str) -> None:
        self.flush_if_due()
        with self._lock:
            self.total += 1
            first = uid not in self._seen and len(self._seen) < self.uids_tracked
            if first:
                self._seen.add(uid)
            elif uid in self._seen:
                self._suppressed[uid] = self._suppressed.get(uid, 0) + 1
            else:
                self._other += 1
        if first:
            self._write("refused", {"reason": reason}, uid, pid)

    def flush_if_due(self, *, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not force and now - self._window_start < self.window_s:
                return
            counts, other = self._suppressed, self._other
            window = round(now - self._window_start, 1)
            self._window_start, self._seen, self._suppressed, self._other = now, set(), {}, 0
        if counts or other:
            fields: dict[str, object] = {"window_s": window, "by_uid": {str(u): n for u, n in counts.items()}}
            if other:
                fields["other_uids"] = other
            self._write("refused_summary", fields, None, None)


def tree_bytes(path: Path) -> int:
    """Bytes under a directory, never following symbolic links."""
    total = 0
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in files + dirs:
            try:
                st = os.lstat(os.path.join(root, name))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def prune_submissions(root: Path, limits: Limits, now: float | None = None) -> list[str]:
    """Retention for submitted sources and their build outputs: drop what is older than the maximum
    age, then the oldest until the total fits. Returns the names removed."""
    if not root.is_dir():
        return []
    now = time.time() if now is None else now
    items: list[tuple[float, int, Path]] = []
    for child in root.iterdir():
        try:
            st = child.lstat()
        except OSError:
            continue
        size = tree_bytes(child) if stat.S_ISDIR(st.st_mode) else st.st_size
        items.append((st.st_mtime, size, child))
    items.sort()
    total = sum(size for _, size, _ in items)
    removed: list[str] = []
    for mtime, size, child in items:
        if now - mtime <= limits.submissions_max_age_s and total <= limits.submissions_total_bytes:
            break
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
        total -= size
        removed.append(child.name)
    return removed
