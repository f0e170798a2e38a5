# SPDX-License-Identifier: Apache-2.0
"""Several real processes writing to one repository at once: nothing lost, nothing corrupted."""

from __future__ import annotations

import multiprocessing as mp
import sqlite3
from pathlib import Path

from schedcp.repository.evidence import RecordsVerifications
from schedcp.repository.migrations import MIGRATIONS
from schedcp.repository.service import RepositoryService
from test_repository_fixtures import GENERATED_SOURCE, daemon_passed, daemon_records, fresh_copy, generated, profile

WORKERS = 4
POLICIES_EACH = 6
RESULTS_EACH = 15


def _writer(path: str, worker: int, start: mp.synchronize.Event, errors: mp.Queue) -> None:
    try:
        records = daemon_records(Path(path).parent)  # the daemon passed GENERATED_SOURCE (see the parent)
        svc = RepositoryService(path, auto_seed=False, verifications=RecordsVerifications(records))
        start.wait(30)
        for i in range(POLICIES_EACH):
            svc.add_policy(generated(f"w{worker}_p{i}"), parent="scx_simple" if i == 0 else f"w{worker}_p{i - 1}")
        for i in range(RESULTS_EACH):
            svc.record_result(
                {
                    "policy": f"w{worker}_p{i % POLICIES_EACH}",
                    "config": {"slice_us": 1000 + i},
                    "profile": profile(f"worker {worker} build run {i}", "makespan"),
                    "metrics": {"makespan_s": 10.0 - i * 0.1},
                    "baseline": {"makespan_s": 10.0},
                }
            )
        svc.promote(f"w{worker}_p0", reason=f"worker {worker} verified it")
        svc.annotate_antipattern(f"worker {worker} saw a stall", policy=f"w{worker}_p1")
        svc.close()
    except BaseException as exc:  # report to the parent; a silent child failure would hide lost rows
        errors.put(f"worker {worker}: {exc!r}")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    path = fresh_copy(tmp_path)
    daemon_passed(daemon_records(tmp_path), GENERATED_SOURCE)
    with RepositoryService(path, auto_seed=False) as svc:
        before = {t: svc.store.count(t) for t in ("policies", "results", "antipatterns", "status_log")}
    ctx = mp.get_context("spawn")  # fresh interpreters: no inherited sqlite handles or BLAS threads
    start, errors = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), w, start, errors)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    start.set()
    for p in procs:
        p.join(300)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert not problems, problems
    assert all(p.exitcode == 0 for p in procs)

    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        count = {
            t: conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("policies", "results", "antipatterns", "status_log")
        }
        assert count["policies"] == before["policies"] + WORKERS * POLICIES_EACH
        assert count["results"] == before["results"] + WORKERS * RESULTS_EACH
        assert count["antipatterns"] == before["antipatterns"] + WORKERS
        # one creation entry per new policy plus one promotion per worker
        assert count["status_log"] == before["status_log"] + WORKERS * (POLICIES_EACH + 1)
        fts = conn.execute("SELECT COUNT(*) FROM policies_fts").fetchone()[0]
        assert fts == count["policies"]
        for w in range(WORKERS):
            chain = conn.execute(
                "WITH RECURSIVE up(id, n) AS (SELECT id, 0 FROM policies WHERE name = ?"
                " UNION ALL SELECT p.parent_id, n + 1 FROM policies p JOIN up ON p.id = up.id"
                " WHERE p.parent_id IS NOT NULL) SELECT MAX(n) FROM up",
                (f"w{w}_p{POLICIES_EACH - 1}",),
            ).fetchone()[0]
            assert chain == POLICIES_EACH  # p5 -> ... -> p0 -> scx_simple
    finally:
        conn.close()


def _seeder(path: str, errors: mp.Queue) -> None:
    try:
        RepositoryService(path).close()  # empty database: seeds itself
    except BaseException as exc:
        errors.put(repr(exc))


def test_concurrent_first_use_seeds_once(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    ctx = mp.get_context("spawn")
    errors = ctx.Queue()
    procs = [ctx.Process(target=_seeder, args=(str(path), errors)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(600)
    assert errors.empty(), errors.get()
    conn = sqlite3.connect(path)
    try:
        names = [r[0] for r in conn.execute("SELECT name FROM policies")]
        assert len(names) == len(set(names)) >= 11
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        latest = max(m.version for m in MIGRATIONS)
        assert conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] == latest
    finally:
        conn.close()
