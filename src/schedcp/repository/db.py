# SPDX-License-Identifier: Apache-2.0
"""SQLite connection handling and numbered schema migrations.

The daemon, the MCP server and the CLI open the same file from separate processes. WAL lets readers
run while one writer commits; every write transaction starts with BEGIN IMMEDIATE so a writer takes
the lock up front (a deferred transaction that later upgrades can fail with SQLITE_BUSY without the
busy handler being consulted), and busy_timeout makes contending writers queue instead of failing.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from schedcp.errors import SchedcpError
from schedcp.paths import data_dir
from schedcp.sqlite_wal import connect_wal, explain_error

BUSY_TIMEOUT_MS = 30_000


def default_path() -> Path:
    explicit = os.environ.get("SCHEDCP_REPO_DB")
    return Path(explicit) if explicit else data_dir() / "repository.db"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str
    after: Callable[[sqlite3.Connection], None] | None = None  # data backfill in the same transaction


def _statements(script: str) -> Iterator[str]:
    # Connection.executescript() commits any open transaction first, which would break the
    # all-or-nothing migration, so statements are split and executed one by one.
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            if buffer.strip():
                yield buffer
            buffer = ""
    if buffer.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buffer.strip()[:80]}")


class Database:
    """One connection, serialised by a lock so threads of one process can share it."""

    def __init__(self, path: Path, migrations: list[Migration]) -> None:
        self.path = path
        self.lock = threading.RLock()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = connect_wal(
                path, timeout_s=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise self._unavailable(path, exc) from exc
        try:
            self.conn.row_factory = sqlite3.Row
            self.conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            self.conn.execute("PRAGMA foreign_keys = ON")
            self._migrate(migrations)
        except BaseException as exc:
            self.conn.close()
            if isinstance(exc, sqlite3.Error):
                raise self._unavailable(path, exc) from exc
            raise

    @staticmethod
    def _unavailable(path: Path, exc: BaseException) -> SchedcpError:
        if isinstance(exc, sqlite3.Error):
            return explain_error(exc, f"the policy repository at {path}")
        return SchedcpError(
            f"cannot open the policy repository at {path}: {exc}",
            "check the file's permissions, or point SCHEDCP_REPO_DB at a fresh path",
            code="repository_unavailable",
        )

    def close(self) -> None:
        with self.lock:
            self.conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction: all of it commits, or none of it."""
        with self.lock:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    def version(self) -> int:
        with self.lock:
            exists = self.conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if not exists:
                return 0
            row = self.conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
            return int(row[0] or 0)

    @staticmethod
    def _too_new(found: int, target: int) -> SchedcpError:
        return SchedcpError(
            f"the repository schema is v{found}, newer than this SchedCP understands (v{target})",
            "upgrade SchedCP or use a different SCHEDCP_REPO_DB",
            code="repository_too_new",
        )

    def _migrate(self, migrations: list[Migration]) -> None:
        target = max(m.version for m in migrations)
        found = self.version()
        if found > target:
            raise self._too_new(found, target)
        if found == target:
            return
        with self.write() as conn:
            # Re-read inside the lock: another process may have migrated while we waited.
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version ("
                " version INTEGER PRIMARY KEY, description TEXT NOT NULL, applied_at TEXT NOT NULL)"
            )
            current = int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
            if current > target:
                raise self._too_new(current, target)
            for migration in sorted(migrations, key=lambda m: m.version):
                if migration.version <= current:
                    continue
                for statement in _statements(migration.sql):
                    conn.execute(statement)
                if migration.after is not None:
                    migration.after(conn)
                conn.execute(
                    "INSERT INTO schema_version (version, description, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.description, now()),
                )
