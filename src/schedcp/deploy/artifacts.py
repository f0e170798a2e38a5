# SPDX-License-Identifier: Apache-2.0
"""The verified objects the daemon keeps, by SHA-256, so a deploy loads exactly what was verified.

The daemon stores an object here when its own verification passes (``verify_service``), with the
scheduler's name and tunable metadata. A deploy never takes an object from the client: it reads
it from here and hashes the bytes it is about to load; the token must name that hash. A file that
was altered on disk therefore fails the token's object binding instead of being loaded.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from schedcp.paths import open_private_file, private_dir
from schedcp.toolchain.metadata import SchedulerMeta

_SHA = re.compile(r"^[0-9a-f]{64}$")


class ArtefactInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheduler: str
    object_sha256: str
    meta: SchedulerMeta | None = None


class StoredObject(BaseModel):
    """An object read back for loading: its bytes' real hash, its metadata, where it sits."""

    model_config = ConfigDict(arbitrary_types_allowed=True)
    info: ArtefactInfo
    path: Path
    sha256: str


class ArtifactStore:
    def __init__(self, state_dir: Path) -> None:
        self.root = private_dir(state_dir / "artifacts")

    def put(self, object_path: Path, scheduler: str, meta: SchedulerMeta | None) -> str:
        data = object_path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        target = self.root / f"{sha}.bpf.o"
        if not target.exists():
            tmp = self.root / f".{sha}.tmp"
            fd = open_private_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        info = ArtefactInfo(scheduler=scheduler, object_sha256=sha, meta=meta)
        (self.root / f"{sha}.json").write_text(info.model_dump_json())
        return sha

    def get(self, sha256: str) -> StoredObject | None:
        """The object stored under this hash, hashed again as read (None when absent)."""
        if not _SHA.match(sha256):
            return None
        path = self.root / f"{sha256}.bpf.o"
        meta_path = self.root / f"{sha256}.json"
        if not path.is_file() or not meta_path.is_file():
            return None
        info = ArtefactInfo.model_validate_json(meta_path.read_text())
        return StoredObject(info=info, path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
