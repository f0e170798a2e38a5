# SPDX-License-Identifier: Apache-2.0
"""Shared fixtures for the repository tests (imported by the other test_repository_* modules).

Seeding embeds every catalog entry once; the seeded database is built once per test process and
each test gets its own copy, so tests stay independent without paying for the model every time.
"""

from __future__ import annotations

import atexit
import functools
import shutil
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

from schedcp.daemon.records import VerificationRecords
from schedcp.repository.evidence import RecordsVerifications
from schedcp.repository.service import RepositoryService
from schedcp.repository.store import sha256_text


@functools.cache
def template_db() -> Path:
    folder = Path(tempfile.mkdtemp(prefix="schedcp-repo-template-"))
    atexit.register(shutil.rmtree, folder, True)
    path = folder / "template.db"
    RepositoryService(path).close()  # seeds itself because it is empty
    return path


def fresh_copy(folder: Path) -> Path:
    dest = folder / "repo.db"
    # sqlite's backup API copies a consistent snapshot even if a WAL file is still around.
    with sqlite3.connect(template_db()) as src, sqlite3.connect(dest) as dst:
        src.backup(dst)
    return dest


def daemon_records(folder: Path) -> VerificationRecords:
    """A test's own copy of the daemon's verification records (its state directory)."""
    return VerificationRecords(folder / "daemon-state")


def daemon_passed(records: VerificationRecords, source: str, object_sha256: str = "ab" * 32) -> int:
    """Write what the daemon writes after the verifier passed this source (Operations.verify):
    the test stands in for a real verification, which boots a VM (tests/test_verifier_vm.py)."""
    report = {"verdict": "pass", "object_sha256": object_sha256, "kernel": "7.2.13", "scheduler": "test"}
    return records.add(sha256_text(source), report, "test-token", peer_uid=0)


def open_service(folder: Path) -> Iterator[RepositoryService]:
    """Body of each module's `service` fixture: a service on a private copy of the seeded database,
    reading verification evidence from its own (initially empty) daemon records."""
    svc = RepositoryService(
        fresh_copy(folder), auto_seed=False, verifications=RecordsVerifications(daemon_records(folder))
    )
    yield svc
    svc.close()


def profile(summary: str, goal: str = "makespan", **traits: object) -> dict[str, object]:
    return {"summary": summary, "characteristics": dict(traits), "goal": goal}


GENERATED_SOURCE = """\
/* A generated test policy: global FIFO. */
#include "schedcp.h"
char _license[] SEC("license") = "GPL";
"""


def generated(
    name: str, description: str = "Generated FIFO variant tuned for short build jobs on small hosts.", **extra: object
) -> dict[str, object]:
    return {
        "name": name,
        "kind": "generated",
        "title": "test policy",
        "description": description,
        "workloads": ["software builds"],
        "tags": ["fifo"],
        "source": GENERATED_SOURCE,
        **extra,
    }


def test_template_is_seeded_and_copies_are_independent(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = fresh_copy(tmp_path / "a"), fresh_copy(tmp_path / "b")
    with RepositoryService(a, auto_seed=False) as svc:
        svc.add_policy(generated("only_in_a"))
    with RepositoryService(b, auto_seed=False) as svc:
        assert svc.store.count("policies") >= 11
        assert svc.store.count("primitives") >= 8
        assert svc.store.policy("only_in_a") is None
