# SPDX-License-Identifier: Apache-2.0
"""SQL for the policy repository, and nothing else.

The service layer validates and derives; this module turns validated values into rows inside short
transactions. Keeping it narrow is what lets a fleet swap SQLite for a shared server later.
Every statement takes its values as parameters: no agent text is ever formatted into SQL.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from schedcp.errors import SchedcpError, UsageError
from schedcp.repository.db import Database, default_path, now
from schedcp.repository.embed import from_blob, to_blob
from schedcp.repository.migrations import MIGRATIONS, policy_fts_row, primitive_fts_row
from schedcp.repository.models import PolicyInput, kernel_code

KEYWORD_POOL = 2000


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def content_hash(policy: PolicyInput) -> str:
    """What seeding compares to decide whether a catalog entry changed (status is not content)."""
    return sha256_text(canonical(policy.model_dump(exclude={"status", "parent"})))


def primitive_digest(description: str, snippet: str, tags: list[str]) -> str:
    return sha256_text(canonical([description, snippet, tags]))


def not_found(name: str) -> UsageError:
    return UsageError(
        f"no policy named {name!r} in the repository", "run `schedcp repo search` to find names", code="not_found"
    )


class Store:
    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.db = Database(self.path, MIGRATIONS)

    def close(self) -> None:
        self.db.close()

    # ---- policies -------------------------------------------------------------------------------

    @staticmethod
    def _bump(conn: sqlite3.Connection) -> None:
        conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")

    def generation(self) -> int:
        with self.db.lock:
            return int(self.db.conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    @staticmethod
    def _policy_values(p: PolicyInput) -> dict[str, Any]:
        return {
            "kind": p.kind,
            "title": p.title,
            "description": p.description,
            "workloads_json": canonical(p.workloads),
            "tags_json": canonical(p.tags),
            "tunables_json": canonical([t.model_dump(exclude_none=True) for t in p.tunables]),
            "min_kernel": p.min_kernel,
            "min_kernel_code": kernel_code(p.min_kernel),
            "source": p.source,
            "source_sha256": sha256_text(p.source) if p.source else None,
            "binary": p.binary,
            "upstream": p.upstream,
            "content_sha256": content_hash(p),
        }

    def _index(self, conn: sqlite3.Connection, policy_id: int) -> None:
        row = conn.execute("SELECT * FROM policies WHERE id = ?", (policy_id,)).fetchone()
        conn.execute("DELETE FROM policies_fts WHERE rowid = ?", (policy_id,))
        conn.execute(
            "INSERT INTO policies_fts (rowid, name, title, description, workloads, tags, tunables, code)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (policy_id, *policy_fts_row(row)),
        )

    def insert_policy(
        self, p: PolicyInput, *, origin: str, actor: str, reason: str, embedding: np.ndarray | None
    ) -> int:
        values = self._policy_values(p)
        stamp = now()
        with self.db.write() as conn:
            if conn.execute("SELECT 1 FROM policies WHERE name = ?", (p.name,)).fetchone():
                raise UsageError(
                    f"a policy named {p.name!r} already exists",
                    "choose another name, or record it as a child with --parent",
                    code="duplicate",
                )
            parent_id = None
            if p.parent:
                parent = conn.execute("SELECT id FROM policies WHERE name = ?", (p.parent,)).fetchone()
                if parent is None:
                    raise not_found(p.parent)
                parent_id = parent["id"]
            columns = [*values, "name", "parent_id", "status", "origin", "embedding", "created_at", "updated_at"]
            params = [
                *values.values(),
                p.name,
                parent_id,
                p.status,
                origin,
                to_blob(embedding) if embedding is not None else None,
                stamp,
                stamp,
            ]
            cursor = conn.execute(
                f"INSERT INTO policies ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", params
            )
            policy_id = int(cursor.lastrowid or 0)
            conn.execute(
                "INSERT INTO status_log (policy_id, from_status, to_status, actor, reason, at)"
                " VALUES (?, NULL, ?, ?, ?, ?)",
                (policy_id, p.status, actor, reason, stamp),
            )
            self._index(conn, policy_id)
            self._bump(conn)
        return policy_id

    def update_policy_content(self, name: str, p: PolicyInput, embedding: np.ndarray | None) -> None:
        """Refresh what a policy is (seeding a changed catalog entry); status and history stay."""
        values = self._policy_values(p)
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self.db.write() as conn:
            row = conn.execute("SELECT id FROM policies WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise not_found(name)
            conn.execute(
                f"UPDATE policies SET {assignments}, embedding = ?, updated_at = ? WHERE id = ?",
                (*values.values(), to_blob(embedding) if embedding is not None else None, now(), row["id"]),
            )
            self._index(conn, row["id"])
            self._bump(conn)

    def set_object_sha256(self, name: str, digest: str) -> None:
        with self.db.write() as conn:
            cursor = conn.execute(
                "UPDATE policies SET object_sha256 = ?, updated_at = ? WHERE name = ?", (digest, now(), name)
            )
            if cursor.rowcount == 0:
                raise not_found(name)

    def policy(self, name: str) -> sqlite3.Row | None:
        with self.db.lock:
            return self.db.conn.execute(
                "SELECT p.*, parent.name AS parent_name FROM policies p"
                " LEFT JOIN policies parent ON parent.id = p.parent_id WHERE p.name = ?",
                (name,),
            ).fetchone()

    def require(self, name: str) -> sqlite3.Row:
        row = self.policy(name)
        if row is None:
            raise not_found(name)
        return row

    def policies_by_id(self, ids: list[int]) -> dict[int, sqlite3.Row]:
        if not ids:
            return {}
        with self.db.lock:
            marks = ", ".join("?" * len(ids))
            rows = self.db.conn.execute(f"SELECT * FROM policies WHERE id IN ({marks})", ids).fetchall()
        return {row["id"]: row for row in rows}

    def policy_index(self) -> dict[str, tuple[str, str]]:
        """name -> (origin, content hash), for idempotent seeding."""
        with self.db.lock:
            rows = self.db.conn.execute("SELECT name, origin, content_sha256 FROM policies").fetchall()
        return {row["name"]: (row["origin"], row["content_sha256"]) for row in rows}

    def count(self, table: str) -> int:
        if table not in ("policies", "results", "antipatterns", "primitives", "status_log"):
            raise ValueError(table)
        with self.db.lock:
            return int(self.db.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])

    # ---- embeddings -----------------------------------------------------------------------------

    _EMBEDDED: ClassVar[dict[str, str]] = {
        "policies": "embedding",
        "primitives": "embedding",
        "results": "profile_embedding",
        "antipatterns": "embedding",
    }

    def missing_embeddings(self, table: str, limit: int = 512) -> list[sqlite3.Row]:
        column = self._EMBEDDED[table]
        with self.db.lock:
            return self.db.conn.execute(f"SELECT * FROM {table} WHERE {column} IS NULL LIMIT ?", (limit,)).fetchall()

    def set_embeddings(self, table: str, items: list[tuple[int, np.ndarray]]) -> None:
        column = self._EMBEDDED[table]
        with self.db.write() as conn:
            conn.executemany(
                f"UPDATE {table} SET {column} = ? WHERE id = ?", [(to_blob(vec), row_id) for row_id, vec in items]
            )
            self._bump(conn)

    def embedding_rows(self, table: str) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
        """Row ids (ascending), their embeddings, and for policies the columns search filters on."""
        column = self._EMBEDDED[table]
        extra = ["status", "kind", "min_kernel_code"] if table == "policies" else []
        select = ", ".join(["id", column, *extra])
        with self.db.lock:
            rows = self.db.conn.execute(
                f"SELECT {select} FROM {table} WHERE {column} IS NOT NULL ORDER BY id"
            ).fetchall()
        ids = np.array([row[0] for row in rows], dtype=np.int64)
        matrix = np.stack([from_blob(row[1]) for row in rows]) if rows else np.zeros((0, 384), np.float32)
        columns = {name: np.array([row[2 + i] for row in rows]) for i, name in enumerate(extra)}
        return ids, matrix, columns

    # ---- keyword search -------------------------------------------------------------------------

    def fts_scores(self, table: str, match: str, weights: tuple[float, ...]) -> dict[int, float]:
        """rowid -> keyword relevance (positive; FTS5's bm25() is negative-is-better)."""
        if table not in ("policies_fts", "primitives_fts"):
            raise ValueError(table)
        args = ", ".join(str(float(w)) for w in weights)
        with self.db.lock:
            try:
                # Only the strongest matches come back to Python; anything beyond them would score
                # a negligible fraction of the best keyword match anyway.
                rows = self.db.conn.execute(
                    f"SELECT rowid, bm25({table}, {args}) AS score FROM {table} WHERE {table} MATCH ?"
                    " ORDER BY score LIMIT ?",
                    (match, KEYWORD_POOL),
                ).fetchall()
            except sqlite3.OperationalError as exc:
                # The query is built from sanitised, quoted terms; if FTS still objects, searching by
                # meaning alone is better than failing the caller.
                if "fts5" in str(exc).lower() or "syntax" in str(exc).lower():
                    return {}
                raise
        return {int(row[0]): -float(row[1]) for row in rows}

    def highlights(self, table: str, columns: list[str], match: str, ids: list[int]) -> dict[int, dict[str, str]]:
        """The columns of each row with matched terms wrapped in \\x01 \\x02, to explain results."""
        if not ids or not match or table not in ("policies_fts", "primitives_fts"):
            return {}
        parts = ", ".join(f"highlight({table}, {i}, char(1), char(2))" for i in range(len(columns)))
        marks = ", ".join("?" * len(ids))
        with self.db.lock:
            try:
                rows = self.db.conn.execute(
                    f"SELECT rowid, {parts} FROM {table} WHERE {table} MATCH ? AND rowid IN ({marks})",
                    (match, *ids),
                ).fetchall()
            except sqlite3.OperationalError:
                return {}
        return {int(row[0]): {col: row[i + 1] for i, col in enumerate(columns)} for row in rows}

    # ---- status ---------------------------------------------------------------------------------

    def transition(
        self,
        name: str,
        to_status: str,
        actor: str,
        reason: str,
        *,
        allowed: dict[str, set[str]],
        expect_from: str | None = None,
        evidence: dict[str, Any] | None = None,
        object_sha256: str | None = None,
    ) -> tuple[str, str]:
        """Move a policy to a new status, checking the rules inside the write lock.

        ``expect_from`` is the status the caller's evidence was checked against: if another writer
        moved the policy in between, the move is refused rather than resting on stale evidence.
        ``object_sha256`` (from a verification record) is bound to the policy in the same write."""
        with self.db.write() as conn:
            row = conn.execute("SELECT id, status, source_sha256 FROM policies WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise not_found(name)
            current = row["status"]
            if to_status == current:
                raise UsageError(f"{name} is already {current}", "pick a different status")
            if to_status not in allowed.get(current, set()):
                options = ", ".join(sorted(allowed.get(current, set()))) or "none"
                raise UsageError(
                    f"{name}: {current} -> {to_status} is not an allowed transition",
                    f"from {current} it can go to: {options}",
                    code="bad_transition",
                )
            if expect_from is not None and current != expect_from:
                raise UsageError(f"{name} changed to {current} meanwhile", "look again and retry", code="conflict")
            if evidence is not None and evidence.get("source_sha256") not in (None, row["source_sha256"]):
                raise UsageError(f"{name}'s source changed while its evidence was checked", "retry", code="no_evidence")
            if object_sha256 is not None:
                conn.execute("UPDATE policies SET object_sha256 = ? WHERE id = ?", (object_sha256, row["id"]))
            conn.execute("UPDATE policies SET status = ?, updated_at = ? WHERE id = ?", (to_status, now(), row["id"]))
            self._bump(conn)  # status is a search filter held in other processes' snapshots
            conn.execute(
                "INSERT INTO status_log (policy_id, from_status, to_status, actor, reason, at, evidence_json)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["id"], current, to_status, actor, reason, now(), canonical(evidence) if evidence else None),
            )
        return current, to_status

    # ---- measured trials (evidence for production) -----------------------------------------------

    def insert_measured_trial(self, values: dict[str, Any]) -> int:
        with self.db.write() as conn:
            columns = [*values, "created_at"]
            cursor = conn.execute(
                f"INSERT INTO measured_trials ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                [*values.values(), now()],
            )
            return int(cursor.lastrowid or 0)

    def measured_trials(self, source_sha256: str, *, winning: bool = False, limit: int = 20) -> list[sqlite3.Row]:
        query = "SELECT * FROM measured_trials WHERE source_sha256 = ?"
        if winning:
            query += " AND beat_baseline = 1 AND stayed_enabled = 1"
        with self.db.lock:
            return self.db.conn.execute(query + " ORDER BY id DESC LIMIT ?", (source_sha256, limit)).fetchall()

    def status_log(self, policy_id: int, limit: int = 50) -> list[sqlite3.Row]:
        with self.db.lock:
            return self.db.conn.execute(
                "SELECT * FROM status_log WHERE policy_id = ? ORDER BY id DESC LIMIT ?", (policy_id, limit)
            ).fetchall()

    # ---- results --------------------------------------------------------------------------------

    def insert_result(self, name: str, values: dict[str, Any]) -> int:
        with self.db.write() as conn:
            row = conn.execute("SELECT id FROM policies WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise not_found(name)
            columns = ["policy_id", *values, "created_at"]
            params = [row["id"], *values.values(), now()]
            cursor = conn.execute(
                f"INSERT INTO results ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", params
            )
            return int(cursor.lastrowid or 0)

    def results_for(self, policy_id: int, limit: int) -> list[sqlite3.Row]:
        with self.db.lock:
            return self.db.conn.execute(
                "SELECT * FROM results WHERE policy_id = ? ORDER BY id DESC LIMIT ?", (policy_id, limit)
            ).fetchall()

    def result_summary(self, policy_id: int) -> dict[str, Any]:
        with self.db.lock:
            row = self.db.conn.execute(
                "SELECT COUNT(*) AS n, SUM(beat_baseline) AS wins, MAX(primary_ratio) AS best"
                " FROM results WHERE policy_id = ?",
                (policy_id,),
            ).fetchone()
        return {"results": int(row["n"]), "wins": int(row["wins"] or 0), "best_ratio": row["best"]}

    def results_with_goal(self, goal: str, limit: int = 5000) -> list[sqlite3.Row]:
        with self.db.lock:
            return self.db.conn.execute(
                "SELECT r.*, p.name AS policy_name, p.status AS policy_status FROM results r"
                " JOIN policies p ON p.id = r.policy_id WHERE r.goal = ? AND r.profile_embedding IS NOT NULL"
                " ORDER BY r.id DESC LIMIT ?",
                (goal, limit),
            ).fetchall()

    # ---- antipatterns ---------------------------------------------------------------------------

    def insert_antipattern(
        self,
        policy: str | None,
        profile_json: str | None,
        summary: str,
        note: str,
        actor: str,
        embedding: np.ndarray | None,
    ) -> int:
        with self.db.write() as conn:
            policy_id = None
            if policy is not None:
                row = conn.execute("SELECT id FROM policies WHERE name = ?", (policy,)).fetchone()
                if row is None:
                    raise not_found(policy)
                policy_id = row["id"]
            cursor = conn.execute(
                "INSERT INTO antipatterns (policy_id, profile_json, profile_summary, note, actor, created_at,"
                " embedding) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    policy_id,
                    profile_json,
                    summary,
                    note,
                    actor,
                    now(),
                    to_blob(embedding) if embedding is not None else None,
                ),
            )
            return int(cursor.lastrowid or 0)

    def antipatterns(self, policy_id: int | None = None, limit: int = 200) -> list[sqlite3.Row]:
        with self.db.lock:
            if policy_id is None:
                return self.db.conn.execute(
                    "SELECT a.*, p.name AS policy_name FROM antipatterns a LEFT JOIN policies p ON p.id = a.policy_id"
                    " ORDER BY a.id DESC LIMIT ?",
                    (limit,),
                ).fetchall()
            return self.db.conn.execute(
                "SELECT a.*, p.name AS policy_name FROM antipatterns a LEFT JOIN policies p ON p.id = a.policy_id"
                " WHERE a.policy_id = ? ORDER BY a.id DESC LIMIT ?",
                (policy_id, limit),
            ).fetchall()

    # ---- lineage --------------------------------------------------------------------------------

    def ancestors(self, policy_id: int) -> list[sqlite3.Row]:
        with self.db.lock:
            return self.db.conn.execute(
                "WITH RECURSIVE up(id, depth) AS ("
                "  SELECT parent_id, 1 FROM policies WHERE id = ? AND parent_id IS NOT NULL"
                "  UNION ALL SELECT p.parent_id, up.depth + 1 FROM policies p JOIN up ON p.id = up.id"
                "  WHERE p.parent_id IS NOT NULL AND up.depth < 100)"
                " SELECT p.name, p.kind, p.status, up.depth FROM up JOIN policies p ON p.id = up.id ORDER BY up.depth",
                (policy_id,),
            ).fetchall()

    def descendants(self, policy_id: int, limit: int = 200) -> list[sqlite3.Row]:
        with self.db.lock:
            return self.db.conn.execute(
                "WITH RECURSIVE down(id, depth) AS ("
                "  SELECT id, 1 FROM policies WHERE parent_id = ?"
                "  UNION ALL SELECT p.id, down.depth + 1 FROM policies p JOIN down ON p.parent_id = down.id"
                "  WHERE down.depth < 100)"
                " SELECT p.name, p.kind, p.status, parent.name AS parent_name, down.depth FROM down"
                " JOIN policies p ON p.id = down.id JOIN policies parent ON parent.id = p.parent_id"
                " ORDER BY down.depth, p.name LIMIT ?",
                (policy_id, limit),
            ).fetchall()

    # ---- primitives -----------------------------------------------------------------------------

    def upsert_primitive(
        self, name: str, description: str, snippet: str, tags: list[str], embedding: np.ndarray | None
    ) -> bool:
        """Insert or refresh a primitive; returns True when something changed."""
        digest = primitive_digest(description, snippet, tags)
        with self.db.write() as conn:
            row = conn.execute("SELECT id, sha256 FROM primitives WHERE name = ?", (name,)).fetchone()
            if row is not None and row["sha256"] == digest:
                return False
            blob = to_blob(embedding) if embedding is not None else None
            if row is None:
                cursor = conn.execute(
                    "INSERT INTO primitives (name, description, snippet, tags_json, sha256, updated_at, embedding)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (name, description, snippet, canonical(tags), digest, now(), blob),
                )
                row_id = int(cursor.lastrowid or 0)
            else:
                row_id = row["id"]
                conn.execute(
                    "UPDATE primitives SET description = ?, snippet = ?, tags_json = ?, sha256 = ?, updated_at = ?,"
                    " embedding = ? WHERE id = ?",
                    (description, snippet, canonical(tags), digest, now(), blob, row_id),
                )
            self._bump(conn)
            fresh = conn.execute("SELECT * FROM primitives WHERE id = ?", (row_id,)).fetchone()
            conn.execute("DELETE FROM primitives_fts WHERE rowid = ?", (row_id,))
            conn.execute(
                "INSERT INTO primitives_fts (rowid, name, description, tags, snippet) VALUES (?, ?, ?, ?, ?)",
                (row_id, *primitive_fts_row(fresh)),
            )
        return True

    def primitive_hashes(self) -> dict[str, str]:
        with self.db.lock:
            return {r["name"]: r["sha256"] for r in self.db.conn.execute("SELECT name, sha256 FROM primitives")}

    def primitives(self) -> list[sqlite3.Row]:
        with self.db.lock:
            return self.db.conn.execute("SELECT * FROM primitives ORDER BY name").fetchall()

    def primitives_by_id(self, ids: list[int]) -> dict[int, sqlite3.Row]:
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        with self.db.lock:
            rows = self.db.conn.execute(f"SELECT * FROM primitives WHERE id IN ({marks})", ids).fetchall()
        return {row["id"]: row for row in rows}

    # ---- health ---------------------------------------------------------------------------------

    def integrity(self) -> str:
        with self.db.lock:
            result = self.db.conn.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise SchedcpError(f"repository integrity check failed: {result}", "restore from a backup")
        return result
