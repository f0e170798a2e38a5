# SPDX-License-Identifier: Apache-2.0
"""Verification reports and workload profiles the server hands out by id, kept on disk.

Tools return a short summary plus an id; the full document is a resource
(``schedcp://report/{id}``, ``schedcp://profile/{id}``) the agent reads only when it needs it.
Each stdio client spawns its own server, so the documents live in the data directory rather than in
memory, where a later session (or the HTTP server) can still find them. The store keeps the newest
few hundred of each kind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
from pathlib import Path
from typing import Any, Literal

from schedcp.errors import UsageError
from schedcp.paths import data_dir

Kind = Literal["report", "profile", "run"]
KINDS: tuple[str, ...] = ("report", "profile", "run")
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{5,63}$"
_ID = re.compile(ID_PATTERN)
KEEP = 300


class ArtifactStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or data_dir() / "mcp"

    def _dir(self, kind: str) -> Path:
        if kind not in KINDS:
            raise UsageError(f"unknown artifact kind {kind!r}", f"use one of {', '.join(KINDS)}")
        return self.root / kind

    @staticmethod
    def new_id(prefix: str) -> str:
        return f"{prefix}-{secrets.token_hex(8)}"

    def put(self, kind: str, document: dict[str, Any], artifact_id: str | None = None) -> str:
        artifact_id = artifact_id or self.new_id(kind[:3])
        check_id(artifact_id)
        folder = self._dir(kind)
        folder.mkdir(parents=True, exist_ok=True)
        # Write then rename, so a concurrent reader never sees half a document.
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        with os.fdopen(fd, "w") as handle:
            json.dump(document, handle, separators=(",", ":"), default=str)
        os.replace(tmp, folder / f"{artifact_id}.json")
        self._prune(folder)
        return artifact_id

    def get(self, kind: str, artifact_id: str) -> dict[str, Any] | None:
        check_id(artifact_id)
        path = self._dir(kind) / f"{artifact_id}.json"
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            return None

    def _prune(self, folder: Path) -> None:
        files = sorted(folder.glob("*.json"), key=_mtime)
        for old in files[:-KEEP]:
            try:
                old.unlink()
            except FileNotFoundError:
                pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # pruned by another server process meanwhile
        return 0.0


def check_id(artifact_id: str) -> str:
    if not _ID.match(artifact_id or ""):
        raise UsageError(f"{artifact_id!r} is not a valid id", "use the id exactly as a tool returned it")
    return artifact_id
