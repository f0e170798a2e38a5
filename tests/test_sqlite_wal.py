# SPDX-License-Identifier: Apache-2.0
"""Concurrent first opens of one SQLite file must all end up in WAL mode, none 'database is locked'."""

from __future__ import annotations

import threading
from pathlib import Path

from schedcp.sqlite_wal import connect_wal


def test_racing_first_opens_all_succeed(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    modes: list[str] = []

    for round_no in range(15):
        path = tmp_path / f"race-{round_no}.sqlite"
        barrier = threading.Barrier(8)

        def open_one(path: Path = path, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            try:
                conn = connect_wal(path, timeout_s=10, isolation_level=None)
                conn.execute("CREATE TABLE IF NOT EXISTS t (x INTEGER PRIMARY KEY)")
                modes.append(conn.execute("PRAGMA journal_mode").fetchone()[0])
                conn.close()
            except BaseException as exc:  # collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=open_one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    assert errors == []
    assert modes == ["wal"] * (15 * 8)
