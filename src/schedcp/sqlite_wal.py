# SPDX-License-Identifier: Apache-2.0
"""Open SQLite databases in WAL mode safely when several processes or threads start at once.

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
