# SPDX-License-Identifier: Apache-2.0
"""The daemon's side of verification: run the verifier pipeline and keep the deployment token.

Submitted source is written under the daemon's state directory (never a path the client chose),
verified, and on a pass the signed token is stored here; the client only learns its id. A deploy
request later presents the id, and the daemon checks the token it holds.

The client names the kernel (a cached kernel's name, never a path) and may give tunable values
(`config`): they are validated against the scheduler's declared tunables — the library's metadata
when the source is a library scheduler byte for byte, else the `meta` the client sends — then the
VM stages run with exactly those values and the token binds them, so a deploy with any other
values is refused. A source written against the scx headers may also name the ``.rodata`` values
and the ``struct_ops`` map its own loader would set (``rodata``, ``struct_ops``): the pipeline checks
them against the object's BTF, loads with them, and the token binds them as ``rodata.NAME`` and
``struct_ops`` beside the tunables (a deploy repeats them and loads the same way: deploy/verified.py).
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

from pydantic import ValidationError

from schedcp.errors import UsageError
from schedcp.sqlite_wal import connect_wal
from schedcp.testbed import kernel as kernel_mod
from schedcp.toolchain import metadata

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


def library_meta(source_text: str) -> metadata.SchedulerMeta | None:
    """The library's metadata when the source is a library scheduler byte for byte, else None."""
    data = source_text.encode()
    for lib in metadata.library():
        if lib.source_path.is_file() and lib.source_path.read_bytes() == data:
            return lib
    return None


def tunables_for(source_text: str, meta: dict[str, Any] | None) -> metadata.SchedulerMeta:
    """The tunable declarations that `config` is checked against for a submitted source."""
    if meta is not None:
        try:
            return metadata.SchedulerMeta.model_validate({**meta, "source_file": ""})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UsageError(f"invalid meta: {where}: {first['msg']}"[:300], "fix the tunable declarations") from exc
    lib = library_meta(source_text)
    if lib is not None:
        return lib
    raise UsageError(
        "config was given, but the daemon does not know this source's tunables",
        "send meta (its name, title, description and tunables), or submit a library scheduler unchanged",
    )


def verify_and_sign(
    source_text: str,
    source_name: str,
    config: dict[str, Any],
    kernel: str,
    workload: list[str] | None,
    *,
    state_dir: Path,
    meta: dict[str, Any] | None = None,
    rodata: dict[str, str] | None = None,
    struct_ops: str | None = None,
) -> dict[str, Any]:
    from schedcp.verifier import pipeline

    if len(source_text.encode()) > MAX_SOURCE_BYTES:
        raise UsageError(f"source is larger than {MAX_SOURCE_BYTES} bytes", "shrink it", code="usage")
    if not _NAME.match(source_name):
        raise UsageError(f"bad source name {source_name!r}", "use a plain file name ending in .c", code="usage")
    if workload is not None and (not isinstance(workload, list) or not all(isinstance(a, str) for a in workload)):
        raise UsageError("workload must be a list of strings (argv)", "pass the command as a list", code="usage")
    kernel_mod.check_name(kernel)
    # Without config or meta, a library source still brings its metadata: its declared wait bound is
    # what the verifier holds it to (docs/verifier.md), and the stored artefact keeps it for deploys.
    declared = tunables_for(source_text, meta) if config or meta is not None else library_meta(source_text)
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
        meta=declared,
        rodata={str(k): str(v) for k, v in (rodata or {}).items()},
        struct_ops=struct_ops,
    )
    opts.validate()
    run = pipeline.Pipeline(opts)
    report = run.run().model_dump(mode="json")
    token = report.pop("token", None)
    built = getattr(run, "built", None)
    if token and built is not None:  # keep exactly what was verified: a deploy loads these bytes
        from schedcp.deploy.artifacts import ArtifactStore

        ArtifactStore(state_dir).put(built.object_path, run.source.name, run.source.meta)
    token_id = store_token(state_dir, token, report) if token else None
    return {"report": report, "token_id": token_id}
