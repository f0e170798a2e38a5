# SPDX-License-Identifier: Apache-2.0
"""Verification records the daemon keeps: what it verified, with what verdict, bound to which object.

These are the evidence behind a repository status of ``verified``. An agent can claim anything
in a promotion reason; it cannot write here: only the daemon's own ``verify`` operation does, after
it ran the verifier itself, and clients read the records back over the daemon socket (whose
server uid they check). A record binds the submitted source's SHA-256 to the object the verifier
built from it (``object_sha256``), the kernel, the configuration and the verdict.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schedcp.paths import private_dir
from schedcp.sqlite_wal import connect_wal

HEX64 = r"^[0-9a-f]{64}$"


class VerificationRecord(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: int
    source_sha256: str = Field(pattern=HEX64)
    object_sha256: str | None = None
    verdict: str
    scheduler: str | None = None
    kernel: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    token_id: str | None = None
    peer_uid: int
    created: float


class VerificationRecords:
    def __init__(self, state_dir: Path) -> None:
        private_dir(state_dir)
        self.path = state_dir / "verifications.db"
        with connect_wal(self.path) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS verifications (id INTEGER PRIMARY KEY, source_sha256 TEXT NOT NULL, "
                "object_sha256 TEXT, verdict TEXT NOT NULL, scheduler TEXT, kernel TEXT, config TEXT NOT NULL, "
                "token_id TEXT, peer_uid INTEGER NOT NULL, created REAL NOT NULL)"
            )
            db.execute("CREATE INDEX IF NOT EXISTS verifications_source ON verifications (source_sha256)")
        self.path.chmod(0o600)

    def add(self, source_sha256: str, report: dict[str, Any], token_id: str | None, peer_uid: int) -> int:
        with connect_wal(self.path) as db:
            cur = db.execute(
                "INSERT INTO verifications (source_sha256, object_sha256, verdict, scheduler, kernel, config, "
                "token_id, peer_uid, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    source_sha256,
                    report.get("object_sha256"),
                    str(report.get("verdict")),
                    report.get("scheduler"),
                    report.get("kernel"),
                    json.dumps(report.get("config") or {}, sort_keys=True),
                    token_id,
                    peer_uid,
                    time.time(),
                ),
            )
            return int(cur.lastrowid or 0)

    def latest(self, source_sha256: str, *, verdict: str | None = "pass") -> VerificationRecord | None:
        """The newest record for this source (by default the newest pass)."""
        query = "SELECT * FROM verifications WHERE source_sha256 = ?"
        params: list[Any] = [source_sha256]
        if verdict is not None:
            query += " AND verdict = ?"
            params.append(verdict)
        db = connect_wal(self.path)
        try:
            db.row_factory = sqlite3.Row
            row = db.execute(query + " ORDER BY id DESC LIMIT 1", params).fetchone()
        finally:
            db.close()
        if row is None:
            return None
        data = dict(row)
        data["config"] = json.loads(data["config"])
        return VerificationRecord.model_validate(data)
