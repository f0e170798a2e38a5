# SPDX-License-Identifier: Apache-2.0
"""Append-only, hash-chained audit log of privileged actions.

Each line is a JSON object carrying the SHA-256 of the previous line, so editing or deleting an
entry breaks the chain and `verify_chain` says where.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


class AuditLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def _last_hash(self) -> str:
        if not self.path.exists() or self.path.stat().st_size == 0:
            return GENESIS
        with self.path.open("rb") as fh:
            fh.seek(max(0, self.path.stat().st_size - 65536))
            lines = fh.read().splitlines()
        return hashlib.sha256(lines[-1]).hexdigest() if lines else GENESIS

    def append(self, event: str, **fields: Any) -> dict[str, Any]:
        with self._lock:
            entry = {"ts": round(time.time(), 3), "event": event, **fields, "prev": self._last_hash()}
            line = json.dumps(entry, sort_keys=True, separators=(",", ":"), default=str).encode() + b"\n"
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, line)
                os.fsync(fd)
            finally:
                os.close(fd)
            return entry

    def tail(self, n: int = 20) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().splitlines()[-max(1, min(n, 500)) :]
        return [json.loads(line) for line in lines]


def verify_chain(path: Path) -> tuple[bool, int | None]:
    """(True, None) when intact, else (False, index of the first entry whose link is broken)."""
    prev = GENESIS
    for idx, line in enumerate(path.read_bytes().splitlines()):
        try:
            entry = json.loads(line)
        except ValueError:
            return False, idx
        if entry.get("prev") != prev:
            return False, idx
        prev = hashlib.sha256(line).hexdigest()
    return True, None
