# SPDX-License-Identifier: Apache-2.0
"""Tamper-evident audit log of the daemon's privileged actions.

Why keyed, and why an anchor: a plain hash chain proves nothing against someone who can write the
file, because they can rewrite an entry and recompute every hash after it, cut the tail, or empty
the file. Here

* each line is an :class:`AuditEntry` carrying ``mac`` = HMAC-SHA256(key, the entry without its
  mac) and ``prev`` = the previous entry's mac. The key is 32 random bytes in a root-only file
  kept apart from the log, so rewriting and re-chaining needs the key;
* after every append the last ``seq`` and ``mac`` go to an anchor file in another directory
  (written atomically), so cutting the tail or emptying the log no longer matches the anchor;
* a torn last line (a crash or a full disk in the middle of a write) is cut off when the log is
  opened, and that recovery is itself logged, instead of breaking verification forever;
* privileged operations are logged twice, ``begin`` before anything happens and ``end`` with the
  outcome (``ok``, ``error`` with the cause, or ``refused``), so failures are on record too.

Limits (docs/security.md says the same): root can read the key and rewrite everything; the chain
makes tampering by anyone else, and clumsy tampering by root, visible. An anchor copied off the
machine (``schedcp audit verify --json`` prints it) holds even against root.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schedcp.errors import SchedcpError
from schedcp.paths import open_private_file, private_dir

GENESIS = "0" * 64
KEY_BYTES = 32
MAX_TAIL = 500

Phase = Literal["begin", "end", "event"]
Outcome = Literal["ok", "error", "refused"]


class AuditEntry(BaseModel):
    """One line of the log. ``op_id`` ties an operation's ``begin`` to its ``end``."""

    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=1)
    ts: float
    event: str = Field(min_length=1, max_length=64)
    phase: Phase = "event"
    op_id: str | None = None
    outcome: Outcome | None = None
    peer_uid: int | None = None
    peer_pid: int | None = None
    fields: dict[str, Any] = Field(default_factory=dict)
    prev: str
    mac: str = ""


class Anchor(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=0)
    mac: str


class AuditVerdict(BaseModel):
    """What `verify` found: ``ok`` only when every mac, every link and the anchor agree."""

    ok: bool
    entries: int
    last_seq: int
    anchor: Anchor | None
    problems: list[str]
    first_bad_seq: int | None = None


@dataclass(frozen=True)
class AuditPaths:
    log: Path
    key: Path
    anchor: Path

    @classmethod
    def under(cls, state_dir: Path) -> AuditPaths:
        """The daemon's layout: the log, its key and its anchor each in its own root-only directory."""
        return cls(
            log=state_dir / "audit" / "audit.log",
            key=state_dir / "keys" / "audit.key",
            anchor=state_dir / "audit-anchor" / "anchor.json",
        )


def _canonical(data: dict[str, Any]) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str, ensure_ascii=True).encode()


def _mac(key: bytes, entry: AuditEntry) -> str:
    return hmac.new(key, _canonical(entry.model_dump(exclude={"mac"})), hashlib.sha256).hexdigest()


def load_key(path: Path, *, create: bool) -> bytes:
    """The log's HMAC key; created (0600, exclusive) only when asked, never silently replaced."""
    if create:
        private_dir(path.parent)
    try:
        fd = open_private_file(path, os.O_RDONLY)
    except FileNotFoundError:
        if not create:
            raise SchedcpError(
                f"the audit key {path} is missing", "without it the log cannot be verified", code="audit_key"
            ) from None
        key = secrets.token_bytes(KEY_BYTES)
        fd = open_private_file(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL)
        try:
            os.write(fd, key)
            os.fsync(fd)
        finally:
            os.close(fd)
        return key
    try:
        key = os.read(fd, KEY_BYTES + 1)
    finally:
        os.close(fd)
    if len(key) != KEY_BYTES:
        raise SchedcpError(f"the audit key {path} is damaged", "restore it from a backup", code="audit_key")
    return key


def read_anchor(path: Path) -> Anchor | None:
    try:
        return Anchor.model_validate_json(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValidationError, ValueError):
        return Anchor(seq=0, mac="unreadable")


def _write_anchor(path: Path, anchor: Anchor) -> None:
    tmp = path.with_name(path.name + ".tmp")
    fd = open_private_file(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        os.write(fd, anchor.model_dump_json().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


@dataclass
class Operation:
    """What an operation adds to its ``end`` entry while it runs."""

    op_id: str
    result: dict[str, Any] = field(default_factory=dict)


class AuditLog:
    """Append and read the log; one instance per process (appends are serialised by a lock)."""

    def __init__(self, paths: AuditPaths, *, create: bool = True) -> None:
        self.paths = paths
        self._lock = threading.Lock()
        if create:
            private_dir(paths.log.parent)
            private_dir(paths.anchor.parent)
        exists = paths.log.exists() and paths.log.stat().st_size > 0
        self._key = load_key(paths.key, create=create and not exists)
        self._seq, self._last = 0, GENESIS
        self.recovered: list[str] = []
        if create:
            self._open_existing()

    @classmethod
    def for_state_dir(cls, state_dir: Path, *, create: bool = True) -> AuditLog:
        return cls(AuditPaths.under(state_dir), create=create)

    # ---- opening ---------------------------------------------------------------------------------

    def _open_existing(self) -> None:
        """Cut a torn last line, pick up the chain's end, and log anything unusual found on the way."""
        path = self.paths.log
        torn = 0
        if path.exists():
            fd = open_private_file(path, os.O_RDWR)
            try:
                size = os.fstat(fd).st_size
                if size:
                    os.lseek(fd, max(0, size - 1), os.SEEK_SET)
                    if os.read(fd, 1) != b"\n":
                        keep = self._last_newline(fd, size)
                        os.ftruncate(fd, keep)
                        os.fsync(fd)
                        torn = size - keep
            finally:
                os.close(fd)
        last = self._read_last()
        if last is not None:
            self._seq, self._last = last.seq, last.mac
        if torn:
            self.recovered.append(f"cut a torn last line of {torn} bytes")
            self.append("audit_recovered", fields={"torn_bytes": torn})
        anchor = read_anchor(self.paths.anchor)
        if anchor is not None and (anchor.seq > self._seq or (anchor.seq == self._seq and anchor.mac != self._last)):
            note = f"the log ends at seq {self._seq} but its anchor is at seq {anchor.seq}: entries were removed"
            self.recovered.append(note)
            self.append("audit_integrity", fields={"problem": note, "anchor_seq": anchor.seq})
        elif anchor is None and self._seq:
            self.recovered.append("the anchor was missing")
            self.append("audit_integrity", fields={"problem": "the anchor was missing"})
        elif anchor is None or anchor.seq < self._seq:  # a crash between the append and the anchor update
            _write_anchor(self.paths.anchor, Anchor(seq=self._seq, mac=self._last))

    @staticmethod
    def _last_newline(fd: int, size: int) -> int:
        pos = size
        while pos > 0:
            start = max(0, pos - 65536)
            os.lseek(fd, start, os.SEEK_SET)
            chunk = os.read(fd, pos - start)
            idx = chunk.rfind(b"\n")
            if idx >= 0:
                return start + idx + 1
            pos = start
        return 0

    def _read_last(self) -> AuditEntry | None:
        lines = self._tail_lines(1)
        if not lines:
            return None
        try:
            return AuditEntry.model_validate_json(lines[-1])
        except ValidationError:
            raise SchedcpError(
                f"the last entry of {self.paths.log} is not an audit entry (an unkeyed log from an older version?)",
                f"move it aside (mv {self.paths.log} {self.paths.log}.old) and start again",
                code="audit_format",
            ) from None

    def _tail_lines(self, n: int) -> list[bytes]:
        try:
            with self.paths.log.open("rb") as fh:
                size = fh.seek(0, os.SEEK_END)
                block = 65536
                data = b""
                while size > 0 and data.count(b"\n") <= n:
                    start = max(0, size - block)
                    fh.seek(start)
                    data = fh.read(size - start) + data
                    size = start
                    block *= 2
        except FileNotFoundError:
            return []
        return [line for line in data.splitlines() if line][-n:]

    # ---- writing ---------------------------------------------------------------------------------

    def append(
        self,
        event: str,
        *,
        phase: Phase = "event",
        op_id: str | None = None,
        outcome: Outcome | None = None,
        peer_uid: int | None = None,
        peer_pid: int | None = None,
        fields: dict[str, Any] | None = None,
    ) -> AuditEntry:
        with self._lock:
            entry = AuditEntry(
                seq=self._seq + 1,
                ts=round(time.time(), 3),
                event=event,
                phase=phase,
                op_id=op_id,
                outcome=outcome,
                peer_uid=peer_uid,
                peer_pid=peer_pid,
                fields=json.loads(_canonical(fields or {})),
                prev=self._last,
            )
            entry.mac = _mac(self._key, entry)
            line = _canonical(entry.model_dump()) + b"\n"
            fd = open_private_file(self.paths.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
            try:
                written = os.write(fd, line)
                if written != len(line):
                    raise OSError(28, "short write to the audit log")
                os.fsync(fd)
            finally:
                os.close(fd)
            self._seq, self._last = entry.seq, entry.mac
            _write_anchor(self.paths.anchor, Anchor(seq=entry.seq, mac=entry.mac))
            return entry

    @contextlib.contextmanager
    def operation(
        self, op: str, *, peer_uid: int | None = None, peer_pid: int | None = None, **fields: Any
    ) -> Iterator[Operation]:
        """Log ``begin`` now and ``end`` when the block leaves, with ``error`` and the cause if it raised."""
        record = Operation(op_id=secrets.token_hex(8))

        def log(phase: Phase, outcome: Outcome | None, data: dict[str, Any]) -> None:
            self.append(
                op, phase=phase, op_id=record.op_id, outcome=outcome, peer_uid=peer_uid, peer_pid=peer_pid, fields=data
            )

        log("begin", None, fields)
        try:
            yield record
        except BaseException as exc:
            cause = exc.cause if isinstance(exc, SchedcpError) else f"{type(exc).__name__}: {exc}"
            code = exc.code if isinstance(exc, SchedcpError) else "internal"
            log("end", "error", record.result | {"code": code, "cause": str(cause)[:500]})
            raise
        log("end", "ok", record.result)

    # ---- reading ---------------------------------------------------------------------------------

    def tail(self, n: int = 20) -> list[AuditEntry]:
        return [AuditEntry.model_validate_json(line) for line in self._tail_lines(max(1, min(n, MAX_TAIL)))]

    def entries(self) -> Iterator[AuditEntry]:
        """Every entry, oldest first (lines that do not parse are skipped here; `verify` reports them)."""
        try:
            fh = self.paths.log.open("rb")
        except FileNotFoundError:
            return
        with fh:
            for line in fh:
                with contextlib.suppress(ValidationError):
                    yield AuditEntry.model_validate_json(line)

    def verify(self) -> AuditVerdict:
        return verify_log(self.paths, key=self._key)


def verify_log(paths: AuditPaths, *, key: bytes | None = None) -> AuditVerdict:
    """Check every mac and link from the first line, then the end against the anchor."""
    problems: list[str] = []
    first_bad: int | None = None
    anchor = read_anchor(paths.anchor)
    try:
        key = key if key is not None else load_key(paths.key, create=False)
    except SchedcpError as exc:
        return AuditVerdict(ok=False, entries=0, last_seq=0, anchor=anchor, problems=[exc.cause])
    prev, seq, count = GENESIS, 0, 0
    mac_at_anchor: str | None = None
    try:
        fh = paths.log.open("rb")
    except FileNotFoundError:
        fh = None
    if fh is not None:
        with fh:
            for raw in fh:
                count += 1
                expected = seq + 1
                if not raw.endswith(b"\n"):
                    problems.append(f"line {count} is torn (no newline); the daemon cuts it when it next starts")
                try:
                    entry = AuditEntry.model_validate_json(raw)
                except ValidationError:
                    problems.append(f"line {count} is not an audit entry")
                    first_bad = first_bad or expected
                    break
                if entry.seq != expected:
                    problems.append(f"line {count} has seq {entry.seq}, expected {expected}: entries missing")
                    first_bad = first_bad or expected
                if entry.prev != prev:
                    problems.append(f"seq {entry.seq} does not link to the entry before it")
                    first_bad = first_bad or entry.seq
                if not hmac.compare_digest(_mac(key, entry), entry.mac):
                    problems.append(f"seq {entry.seq} was altered (its mac does not match its content)")
                    first_bad = first_bad or entry.seq
                prev, seq = entry.mac, entry.seq
                if anchor is not None and entry.seq == anchor.seq:
                    mac_at_anchor = entry.mac
    if anchor is None:
        if seq:
            problems.append("the anchor is missing")
    elif anchor.mac == "unreadable":
        problems.append("the anchor is unreadable")
    elif anchor.seq > seq:
        problems.append(f"the log ends at seq {seq} but the anchor is at seq {anchor.seq}: the tail was removed")
        first_bad = first_bad or seq + 1
    elif anchor.seq and mac_at_anchor != anchor.mac:
        problems.append(f"the entry at seq {anchor.seq} is not the one the anchor recorded: the log was rewritten")
        first_bad = first_bad or anchor.seq
    elif anchor.seq < seq - 1:
        problems.append(f"the anchor (seq {anchor.seq}) lags the log (seq {seq}); the anchor was rolled back")
    return AuditVerdict(
        ok=not problems, entries=count, last_seq=seq, anchor=anchor, problems=problems, first_bad_seq=first_bad
    )
