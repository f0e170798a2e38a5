# SPDX-License-Identifier: Apache-2.0
"""The daemon's side of verification: run the verifier pipeline and keep the deployment token.

Submitted source is written under the daemon's state directory (never a path the client chose),
verified, and on a pass the signed token is stored here; the client only learns its id. A deploy
request later presents the id, and the daemon checks the token it holds.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import sqlite3
import time
from pathlib import Path
from typing import Any

from schedcp.errors import UsageError
from schedcp.sqlite_wal import connect_wal

MAX_SOURCE_BYTES = 256 * 1024
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}\.c$")


def _token_db(state_dir: Path) -> sqlite3.Connection:
    state_dir.mkdir(parents=True, exist_ok=True)
    db = connect_wal(state_dir / "tokens.db", timeout_s=30)
    db.execute(
        "CREATE TABLE IF NOT EXISTS tokens (id TEXT PRIMARY KEY, token TEXT NOT NULL, scheduler TEXT, "
        "object_sha256 TEXT, kernel TEXT, config TEXT, created REAL)"
    )
    return db


def store_token(state_dir: Path, token: str, report: dict[str, Any]) -> str:
    token_id = hashlib.sha256(token.encode()).hexdigest()[:24]
    with _token_db(state_dir) as db:
        db.execute(
            "INSERT OR IGNORE INTO tokens VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                token_id,
                token,
                report.get("scheduler"),
                report.get("object_sha256"),
                report.get("kernel"),
                json.dumps(report.get("config") or {}, sort_keys=True),
                time.time(),
            ),
        )
    return token_id


def load_token(state_dir: Path, token_id: str) -> str | None:
    with _token_db(state_dir) as db:
        row = db.execute("SELECT token FROM tokens WHERE id = ?", (token_id,)).fetchone()
    return row[0] if row else None


def verify_and_sign(
    source_text: str,
    source_name: str,
    config: dict[str, Any],
    kernel: str,
    workload: list[str] | None,
    *,
    state_dir: Path,
) -> dict[str, Any]:
    from schedcp.verifier import pipeline

    if len(source_text.encode()) > MAX_SOURCE_BYTES:
        raise UsageError(f"source is larger than {MAX_SOURCE_BYTES} bytes", "shrink it", code="usage")
    if not _NAME.match(source_name):
        raise UsageError(f"bad source name {source_name!r}", "use a plain file name ending in .c", code="usage")
    if workload is not None and (not isinstance(workload, list) or not all(isinstance(a, str) for a in workload)):
        raise UsageError("workload must be a list of strings (argv)", "pass the command as a list", code="usage")
    digest = hashlib.sha256(source_text.encode()).hexdigest()
    work = state_dir / "submissions" / digest[:24]
    work.mkdir(parents=True, exist_ok=True)
    path = work / source_name
    path.write_text(source_text)
    opts = pipeline.VerifyOptions(
        target=str(path),
        config={str(k): str(v) for k, v in config.items()},
        workload=shlex.join(workload) if workload else None,
        kernel=kernel,
        key_path=state_dir / "keys" / "verifier_ed25519",
    )
    opts.validate()
    report = pipeline.verify(opts).model_dump(mode="json")
    token = report.pop("token", None)
    token_id = store_token(state_dir, token, report) if token else None
    return {"report": report, "token_id": token_id}
