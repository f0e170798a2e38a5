# SPDX-License-Identifier: Apache-2.0
"""The daemon's memory of deployments, in SQLite (WAL) under its state directory.

Deployments (the latest snapshot of each), every transition (the story ``schedcp audit`` tells),
breaker trips, the refusal list, the last known good and the crash-loop counter. Nothing here is
trusted over the kernel after a restart: ``controller.reconcile`` compares it with sysfs first.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

from schedcp.deploy.models import (
    Deployment,
    DeployState,
    Held,
    LastKnownGood,
    Story,
    Transition,
    Trip,
)
from schedcp.paths import private_dir
from schedcp.sqlite_wal import connect_wal

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deployments (
    id TEXT PRIMARY KEY, created REAL NOT NULL, state TEXT NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS transitions_dep ON transitions (deployment_id);
CREATE TABLE IF NOT EXISTS trips (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL, at REAL NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    key TEXT PRIMARY KEY, deployment_id TEXT NOT NULL, at REAL NOT NULL, reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS kv (name TEXT PRIMARY KEY, body TEXT NOT NULL);
"""
MAX_LIST = 200


class DeployStore:
    def __init__(self, state_dir: Path) -> None:
        private_dir(state_dir)
        self.path = state_dir / "deploy.db"
        self._lock = threading.Lock()
        self._db = connect_wal(self.path, timeout_s=30, check_same_thread=False, isolation_level=None)
        self._db.executescript(_SCHEMA)
        self.path.chmod(0o600)

    def close(self) -> None:
        self._db.close()

    # -- deployments ------------------------------------------------------------------------
    def save(self, dep: Deployment) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO deployments VALUES (?, ?, ?, ?)",
                (dep.id, dep.created, dep.state.value, dep.model_dump_json()),
            )

    def transition(self, dep: Deployment, state: DeployState, note: str = "", **data: object) -> Transition:
        """Move a deployment to ``state``, keep the step in its story, persist both."""
        step = Transition(at=time.time(), state=state, note=note[:500], data=json.loads(json.dumps(data, default=str)))
        dep.state = state
        if note and state in (DeployState.failed, DeployState.refused, DeployState.rolled_back):
            dep.reason = note[:500]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO deployments VALUES (?, ?, ?, ?)",
                    (dep.id, dep.created, dep.state.value, dep.model_dump_json()),
                )
                self._db.execute(
                    "INSERT INTO transitions (deployment_id, body) VALUES (?, ?)", (dep.id, step.model_dump_json())
                )
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return step

    def get(self, dep_id: str) -> Deployment | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM deployments WHERE id = ?", (dep_id,)).fetchone()
        return Deployment.model_validate_json(row[0]) if row else None

    def active(self) -> Deployment | None:
        states = ("baseline", "canary", "promoted", "partial")
        with self._lock:
            row = self._db.execute(
                f"SELECT body FROM deployments WHERE state IN ({','.join('?' * len(states))}) "
                "ORDER BY created DESC LIMIT 1",
                states,
            ).fetchone()
        return Deployment.model_validate_json(row[0]) if row else None

    def recent(self, limit: int = 20) -> list[Deployment]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM deployments ORDER BY created DESC LIMIT ?", (max(1, min(limit, MAX_LIST)),)
            ).fetchall()
        return [Deployment.model_validate_json(r[0]) for r in rows]

    def story(self, dep_id: str) -> Story | None:
        dep = self.get(dep_id)
        if dep is None:
            return None
        with self._lock:
            steps = self._db.execute(
                "SELECT body FROM transitions WHERE deployment_id = ? ORDER BY seq", (dep_id,)
            ).fetchall()
            trips = self._db.execute(
                "SELECT body FROM trips WHERE deployment_id = ? ORDER BY seq", (dep_id,)
            ).fetchall()
        return Story(
            deployment=dep,
            transitions=[Transition.model_validate_json(r[0]) for r in steps],
            trips=[Trip.model_validate_json(r[0]) for r in trips],
        )

    # -- breaker ----------------------------------------------------------------------------
    def add_trip(self, trip: Trip) -> None:
        with self._lock:
            self._db.execute(
                "INSERT INTO trips (deployment_id, at, body) VALUES (?, ?, ?)",
                (trip.deployment_id, trip.at, trip.model_dump_json()),
            )

    def update_last_trip(self, trip: Trip) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE trips SET body = ? WHERE seq = (SELECT MAX(seq) FROM trips WHERE deployment_id = ?)",
                (trip.model_dump_json(), trip.deployment_id),
            )

    def trips(self, limit: int = 20) -> list[Trip]:
        with self._lock:
            rows = self._db.execute(
                "SELECT body FROM trips ORDER BY seq DESC LIMIT ?", (max(1, min(limit, MAX_LIST)),)
            ).fetchall()
        return [Trip.model_validate_json(r[0]) for r in rows]

    def trip_times(self, since: float) -> list[float]:
        with self._lock:
            rows = self._db.execute("SELECT at FROM trips WHERE at >= ? ORDER BY at", (since,)).fetchall()
        return [float(r[0]) for r in rows]

    def refuse(self, key: str, dep_id: str, reason: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO refusals VALUES (?, ?, ?, ?)", (key, dep_id, time.time(), reason))

    def refusal(self, key: str) -> tuple[str, str] | None:
        with self._lock:
            row = self._db.execute("SELECT deployment_id, reason FROM refusals WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def lift_refusal(self, key: str) -> bool:
        with self._lock:
            return self._db.execute("DELETE FROM refusals WHERE key = ?", (key,)).rowcount > 0

    def refusal_count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM refusals").fetchone()[0])

    # -- small named values -----------------------------------------------------------------
    def get_value(self, name: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT body FROM kv WHERE name = ?", (name,)).fetchone()
        return row[0] if row else None

    def set_value(self, name: str, body: str) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO kv VALUES (?, ?)", (name, body))

    def held(self) -> Held | None:
        body = self.get_value("held")
        return Held.model_validate_json(body) if body and body != "null" else None

    def set_held(self, held: Held | None) -> None:
        self.set_value("held", held.model_dump_json() if held else "null")

    def last_known_good(self) -> LastKnownGood:
        body = self.get_value("last_known_good")
        return LastKnownGood.model_validate_json(body) if body else LastKnownGood()

    def set_last_known_good(self, lkg: LastKnownGood) -> None:
        self.set_value("last_known_good", lkg.model_dump_json())

    def breaker_latched(self) -> bool:
        return self.get_value("breaker_latched") == "1"

    def set_breaker_latched(self, latched: bool, *, reset_at: float | None = None) -> None:
        self.set_value("breaker_latched", "1" if latched else "0")
        if reset_at is not None:
            self.set_value("breaker_reset_at", str(reset_at))

    def breaker_reset_at(self) -> float:
        body = self.get_value("breaker_reset_at")
        return float(body) if body else 0.0
