# SPDX-License-Identifier: Apache-2.0
"""The repository schema as numbered migrations. Never edit a released migration; add a new one.

v1 holds the records themselves. v2 adds what search needs: embedding columns (filled lazily by
the service, so a migration never has to load the model), FTS5 indexes backfilled from v1 rows,
and a generation counter that tells other processes their cached embedding matrix is stale.
v3 makes finding rows that still need an embedding an index lookup.
v4 keeps the evidence behind status changes: trials the control plane measured itself (keyed by
the source they ran, so a changed source needs new trials) and, per status change, what it rested on.
"""

from __future__ import annotations

import json
import sqlite3

from schedcp.repository.db import Migration

V1 = """
CREATE TABLE policies (
    id              INTEGER PRIMARY KEY,
    name            TEXT NOT NULL UNIQUE,
    kind            TEXT NOT NULL CHECK (kind IN ('bpf', 'external', 'generated')),
    title           TEXT NOT NULL DEFAULT '',
    description     TEXT NOT NULL,
    workloads_json  TEXT NOT NULL DEFAULT '[]',
    tags_json       TEXT NOT NULL DEFAULT '[]',
    tunables_json   TEXT NOT NULL DEFAULT '[]',
    min_kernel      TEXT NOT NULL,
    min_kernel_code INTEGER NOT NULL,
    source          TEXT,
    source_sha256   TEXT,
    object_sha256   TEXT,
    binary          TEXT,
    upstream        TEXT NOT NULL DEFAULT '',
    parent_id       INTEGER REFERENCES policies(id) ON DELETE RESTRICT,
    status          TEXT NOT NULL CHECK (status IN ('candidate', 'verified', 'production', 'deprecated')),
    origin          TEXT NOT NULL DEFAULT 'user',
    content_sha256  TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX policies_parent ON policies(parent_id);
CREATE INDEX policies_filter ON policies(status, kind, min_kernel_code);

CREATE TABLE status_log (
    id          INTEGER PRIMARY KEY,
    policy_id   INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    at          TEXT NOT NULL
);
CREATE INDEX status_log_policy ON status_log(policy_id, id);

CREATE TABLE results (
    id               INTEGER PRIMARY KEY,
    policy_id        INTEGER NOT NULL REFERENCES policies(id) ON DELETE CASCADE,
    config_json      TEXT NOT NULL,
    profile_json     TEXT NOT NULL,
    profile_summary  TEXT NOT NULL,
    goal             TEXT NOT NULL,
    metrics_json     TEXT NOT NULL,
    baseline_json    TEXT NOT NULL,
    improvement_json TEXT NOT NULL,
    primary_metric   TEXT,
    primary_ratio    REAL,
    beat_baseline    INTEGER NOT NULL DEFAULT 0,
    host_fingerprint TEXT NOT NULL,
    kernel_release   TEXT NOT NULL,
    notes            TEXT NOT NULL DEFAULT '',
    created_at       TEXT NOT NULL
);
CREATE INDEX results_policy ON results(policy_id, id);
CREATE INDEX results_goal ON results(goal);

CREATE TABLE antipatterns (
    id              INTEGER PRIMARY KEY,
    policy_id       INTEGER REFERENCES policies(id) ON DELETE CASCADE,
    profile_json    TEXT,
    profile_summary TEXT NOT NULL DEFAULT '',
    note            TEXT NOT NULL,
    actor           TEXT NOT NULL,
    created_at      TEXT NOT NULL,
    CHECK (policy_id IS NOT NULL OR profile_json IS NOT NULL)
);
CREATE INDEX antipatterns_policy ON antipatterns(policy_id);

CREATE TABLE primitives (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    snippet     TEXT NOT NULL,
    tags_json   TEXT NOT NULL DEFAULT '[]',
    sha256      TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);
"""

V2 = """
ALTER TABLE policies ADD COLUMN embedding BLOB;
ALTER TABLE primitives ADD COLUMN embedding BLOB;
ALTER TABLE results ADD COLUMN profile_embedding BLOB;
ALTER TABLE antipatterns ADD COLUMN embedding BLOB;

CREATE VIRTUAL TABLE policies_fts USING fts5(
    name, title, description, workloads, tags, tunables, code,
    tokenize = 'porter unicode61'
);
CREATE VIRTUAL TABLE primitives_fts USING fts5(
    name, description, tags, snippet,
    tokenize = 'porter unicode61'
);

CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES ('generation', 1);
"""

V3 = """
CREATE INDEX policies_unembedded ON policies(id) WHERE embedding IS NULL;
CREATE INDEX primitives_unembedded ON primitives(id) WHERE embedding IS NULL;
CREATE INDEX results_unembedded ON results(id) WHERE profile_embedding IS NULL;
CREATE INDEX antipatterns_unembedded ON antipatterns(id) WHERE embedding IS NULL;
"""

V4 = """
CREATE TABLE measured_trials (
    id             INTEGER PRIMARY KEY,
    source_sha256  TEXT NOT NULL,
    policy         TEXT,
    measured_by    TEXT NOT NULL,
    kernel         TEXT NOT NULL,
    workload       TEXT NOT NULL,
    config_json    TEXT NOT NULL,
    metric         TEXT,
    ratio          REAL,
    beat_baseline  INTEGER NOT NULL,
    stayed_enabled INTEGER NOT NULL,
    boot_id        TEXT,
    detail_json    TEXT NOT NULL,
    created_at     TEXT NOT NULL
);
CREATE INDEX measured_trials_source ON measured_trials(source_sha256, id);
ALTER TABLE status_log ADD COLUMN evidence_json TEXT;
"""

CODE_INDEX_BYTES = 32 * 1024  # identifiers in the first 32 KiB of source are plenty for keywords


def policy_fts_row(row: sqlite3.Row | dict) -> tuple[str, ...]:
    """The keyword-searchable text of one policy row, one string per FTS column."""
    tunables = json.loads(row["tunables_json"] or "[]")
    name = row["name"]
    return (
        # Names like scx_rusty or vtime_v2 are indexed both whole and split, so either form matches.
        f"{name} {name.replace('_', ' ').replace('-', ' ').replace('.', ' ')}",
        row["title"] or "",
        row["description"],
        " ; ".join(json.loads(row["workloads_json"] or "[]")),
        " ; ".join(json.loads(row["tags_json"] or "[]")),
        " ; ".join(f"{t['name']} {t.get('flag') or ''} {t['description']}" for t in tunables),
        (row["source"] or "")[:CODE_INDEX_BYTES],
    )


def primitive_fts_row(row: sqlite3.Row | dict) -> tuple[str, ...]:
    name = row["name"]
    return (
        f"{name} {name.replace('_', ' ')}",
        row["description"],
        " ; ".join(json.loads(row["tags_json"] or "[]")),
        row["snippet"][:CODE_INDEX_BYTES],
    )


def _backfill_v2(conn: sqlite3.Connection) -> None:
    for row in conn.execute("SELECT * FROM policies").fetchall():
        conn.execute(
            "INSERT INTO policies_fts (rowid, name, title, description, workloads, tags, tunables, code)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (row["id"], *policy_fts_row(row)),
        )
    for row in conn.execute("SELECT * FROM primitives").fetchall():
        conn.execute(
            "INSERT INTO primitives_fts (rowid, name, description, tags, snippet) VALUES (?, ?, ?, ?, ?)",
            (row["id"], *primitive_fts_row(row)),
        )


MIGRATIONS: list[Migration] = [
    Migration(1, "policies, status log, results, antipatterns, primitives", V1),
    Migration(2, "embeddings, FTS5 keyword indexes, cache generation", V2, after=_backfill_v2),
    # Every search first asks for rows still waiting for an embedding; without these partial
    # indexes that question was a full table scan (about 45 ms at 10,000 policies).
    Migration(3, "partial indexes for rows awaiting an embedding", V3),
    Migration(4, "measured trials and the evidence behind status changes", V4),
]
