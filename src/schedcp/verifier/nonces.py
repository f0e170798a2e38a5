# SPDX-License-Identifier: Apache-2.0
"""Single-use enforcement for deployment tokens: a tiny SQLite table of spent nonces.

A nonce is recorded atomically (primary key insert), so two deploys racing with the same token
cannot both succeed. Rows are forgotten once the token they belong to has expired, because an
expired token is refused anyway.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from schedcp.paths import data_dir
from schedcp.sqlite_wal import connect_wal

# Keep spent nonces a little past expiry so clock adjustments cannot resurrect a token.
RETAIN_AFTER_EXPIRY_S = 24 * 3600


def default_path() -> Path:
    return data_dir() / "verifier" / "nonces.sqlite"


class NonceStore:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path or default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self._db = connect_wal(self.path, timeout_s=10, isolation_level=None)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS spent_nonces ("
            " nonce TEXT PRIMARY KEY, key_id TEXT NOT NULL, expires_at REAL NOT NULL, used_at REAL NOT NULL)"
        )

    def consume(self, nonce: str, *, key_id: str, expires_at: float, now: float | None = None) -> bool:
        """Mark `nonce` spent; False when it had already been spent."""
        now = time.time() if now is None else now
        try:
            self._db.execute("INSERT INTO spent_nonces VALUES (?, ?, ?, ?)", (nonce, key_id, expires_at, now))
        except sqlite3.IntegrityError:
            return False
        self._db.execute("DELETE FROM spent_nonces WHERE expires_at < ?", (now - RETAIN_AFTER_EXPIRY_S,))
        return True

    def is_spent(self, nonce: str) -> bool:
        row = self._db.execute("SELECT 1 FROM spent_nonces WHERE nonce = ?", (nonce,)).fetchone()
        return row is not None

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> NonceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
