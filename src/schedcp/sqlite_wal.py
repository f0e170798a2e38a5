# SPDX-License-Identifier: Apache-2.0
"""Open SQLite databases in WAL mode safely when several processes or threads start at once, and
say what a failed database means (damaged, disk full, no access) in one line with the next step.

Switching a fresh database to WAL needs an exclusive lock. When two connections race for it,
SQLite may answer SQLITE_BUSY at once instead of waiting (its deadlock avoidance skips the
busy handler), so the connection's own timeout does not help. We retry the switch with a
short jittered back-off until the same deadline.
"""

from __future__ import annotations

import random
import sqlite3
import time
from pathlib import Path
from typing import Any

from schedcp.errors import SchedcpError


def connect_wal(path: Path | str, *, timeout_s: float = 30.0, **kwargs: Any) -> sqlite3.Connection:
    """`sqlite3.connect` plus `journal_mode=WAL`, tolerant of concurrent first opens."""
    conn = sqlite3.connect(str(path), timeout=timeout_s, **kwargs)
    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        except sqlite3.OperationalError as exc:
            busy = (exc.sqlite_errorcode & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() >= deadline:
                conn.close()
                raise
        time.sleep(delay * (1 + random.random()))
        delay = min(delay * 2, 0.2)


def explain_error(exc: sqlite3.Error, what: str) -> SchedcpError:
    """A SQLite failure as a cause and a next step, by SQLite's result code (not its message text).

    One exception: text that does not decode as UTF-8 is reported by Python's sqlite3 module
    itself, without a SQLite code; in a database only SchedCP writes, that is damage too."""
    primary = (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF
    detail = str(exc)[:160]  # the message may quote stored bytes: keep it short
    if primary in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB) or detail.startswith("Could not decode to UTF-8"):
        return SchedcpError(
            f"{what} is damaged ({detail})",
            "restore it from a backup, or move it aside and let SchedCP create a new one",
            code="database_corrupt",
        )
    if primary in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
        return SchedcpError(
            f"{what} cannot be written ({detail}): the disk may be full", "free disk space and retry", code="disk_full"
        )
    if primary in (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_PERM, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_AUTH):
        return SchedcpError(
            f"{what} cannot be opened ({detail})",
            "check the file's and its directory's permissions",
            code="database_access",
        )
    return SchedcpError(f"{what} failed: {detail}", "retry; if it persists, check the database file", code="database")
