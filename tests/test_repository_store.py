# SPDX-License-Identifier: Apache-2.0
"""Schema migrations, connection settings, paths and transactional behaviour of the store."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from schedcp.errors import SchedcpError
from schedcp.repository import db as dbmod
from schedcp.repository.db import Database, Migration
from schedcp.repository.migrations import MIGRATIONS
from schedcp.repository.service import RepositoryService
from schedcp.repository.store import Store
from test_repository_fixtures import generated

LATEST = max(m.version for m in MIGRATIONS)


def test_fresh_database_is_at_latest_version_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    try:
        assert store.db.version() == max(m.version for m in MIGRATIONS)
        conn = store.db.conn
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA busy_timeout").fetchone()[0] == dbmod.BUSY_TIMEOUT_MS
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        versions = [r[0] for r in conn.execute("SELECT version FROM schema_version ORDER BY version")]
        assert versions == [m.version for m in MIGRATIONS]
    finally:
        store.close()


def test_default_path_honours_env_and_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCHEDCP_REPO_DB", raising=False)
    monkeypatch.setenv("SCHEDCP_DATA_DIR", str(tmp_path / "data"))
    assert dbmod.default_path() == tmp_path / "data" / "repository.db"
    monkeypatch.setenv("SCHEDCP_REPO_DB", str(tmp_path / "elsewhere.db"))
    assert dbmod.default_path() == tmp_path / "elsewhere.db"
    store = Store()
    store.close()
    assert (tmp_path / "elsewhere.db").is_file()
    explicit = Store(tmp_path / "explicit.db")
    explicit.close()
    assert (tmp_path / "explicit.db").is_file()


def _v1_row(conn: sqlite3.Connection, name: str) -> None:
    conn.execute(
        "INSERT INTO policies (name, kind, title, description, workloads_json, tags_json, tunables_json,"
        " min_kernel, min_kernel_code, source, source_sha256, status, origin, content_sha256, created_at, updated_at)"
        " VALUES (?, 'generated', 'old', ?, ?, '[\"legacy\"]', '[]', '6.12', 6012, 'int x;', 'aa', 'candidate',"
        " 'user', 'bb', 'then', 'then')",
        (
            name,
            "A policy written by the first schema for batch jobs that never sleep.",
            json.dumps(["nightly batch jobs"]),
        ),
    )


def test_upgrade_from_v1_keeps_rows_and_makes_them_searchable(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    old = Database(path, MIGRATIONS[:1])
    assert old.version() == 1
    with old.write() as conn:
        _v1_row(conn, "legacy_batch")
        conn.execute(
            "INSERT INTO primitives (name, description, snippet, tags_json, sha256, updated_at)"
            " VALUES ('old_prim', 'an old primitive for counting things', 'u64 n;', '[]', 'x', 'then')"
        )
    old.close()

    with RepositoryService(path, auto_seed=False) as svc:
        assert svc.store.db.version() == LATEST
        row = svc.store.policy("legacy_batch")
        assert row is not None and row["embedding"] is None  # filled lazily, not by the migration
        found = svc.search("nightly batch jobs that never sleep", k=3)
        assert found["results"][0]["name"] == "legacy_batch"
        assert "workloads" in found["results"][0]["matched"]
        assert svc.store.policy("legacy_batch")["embedding"] is not None
        assert svc.search_primitives("counting things", k=1)["results"][0]["name"] == "old_prim"


def test_v3_makes_the_pending_embedding_lookup_an_index_search(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    Database(path, MIGRATIONS[:2]).close()
    store = Store(path)
    try:
        assert store.db.version() == LATEST
        plan = " ".join(
            str(tuple(r))
            for r in store.db.conn.execute("EXPLAIN QUERY PLAN SELECT * FROM policies WHERE embedding IS NULL LIMIT 5")
        )
        assert "policies_unembedded" in plan
    finally:
        store.close()


def test_failed_migration_rolls_back_completely(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    Database(path, MIGRATIONS[:1]).close()
    bad_sql = "CREATE TABLE half (x INTEGER);\nINSERT INTO nope VALUES (1);"
    broken = [*MIGRATIONS[:1], Migration(2, "half broken", bad_sql)]
    with pytest.raises(SchedcpError):
        Database(path, broken)
    check = sqlite3.connect(path)
    try:
        tables = {r[0] for r in check.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        assert "half" not in tables
        assert check.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == 1
    finally:
        check.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.db"
    Store(path).close()
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO schema_version VALUES (99, 'from the future', 'later')")
    conn.commit()
    conn.close()
    future = [*MIGRATIONS, Migration(LATEST + 1, "not yet", "SELECT 1;")]
    with pytest.raises(SchedcpError) as info:
        Database(path, future)
    assert info.value.code == "repository_too_new"


def test_unopenable_path_is_a_clear_error(tmp_path: Path) -> None:
    not_a_db = tmp_path / "garbage.db"
    not_a_db.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(SchedcpError) as info:
        Store(not_a_db)
    assert info.value.code == "database_corrupt" and "damaged" in info.value.cause and info.value.next_step


def test_write_transaction_is_all_or_nothing(tmp_path: Path) -> None:
    with RepositoryService(tmp_path / "r.db", auto_seed=False) as svc:
        before = svc.store.count("policies")
        with pytest.raises(RuntimeError), svc.store.db.write() as conn:
            conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            raise RuntimeError("crash mid-transaction")
        svc.add_policy(generated("after_crash"))
        assert svc.store.count("policies") == before + 1
        # An insert that fails on its parent leaves neither the row, its log entry nor its FTS row.
        with pytest.raises(SchedcpError):
            svc.add_policy(generated("orphan"), parent="no_such_parent")
        assert svc.store.policy("orphan") is None
        assert svc.store.count("status_log") == before + 1
        fts = svc.store.db.conn.execute("SELECT COUNT(*) FROM policies_fts").fetchone()[0]
        assert fts == svc.store.count("policies")
