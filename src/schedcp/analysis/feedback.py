# SPDX-License-Identifier: Apache-2.0
"""Tier 3: what a deployed policy did to a workload, compared with its baseline.

A comparison is always the same metric on the same workload (``workload_key``): absolute values,
the raw percentage change, and a sign-aware ``improvement_pct`` (positive is better whether the
metric is lower-is-better, like latency or makespan, or higher-is-better, like throughput).
Reports are stored with the deployment id in SQLite so the repository's history can learn from
them; the store is deliberately small (the repository owns the policy history itself).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

from schedcp.errors import UsageError
from schedcp.paths import data_dir
from schedcp.sqlite_wal import connect_wal
from schedcp.trial.compare import Direction, direction

Verdict = Literal["improved", "regressed", "unchanged"]

NOISE_PCT = 2.0  # changes smaller than this are reported as unchanged


class MetricDelta(BaseModel):
    metric: str
    direction: Direction
    baseline: float
    value: float
    abs_change: float
    pct_change: float | None  # (value - baseline) / |baseline| * 100; None when the baseline is 0
    improvement_pct: float | None  # pct_change with the sign flipped for lower-is-better metrics
    verdict: Verdict


class FeedbackReport(BaseModel):
    deployment_id: str
    workload_key: str
    created_at: float
    deltas: list[MetricDelta]
    summary: str
    context: dict = {}

    def brief(self) -> dict:
        """A compact form for agents: one line per metric."""
        return {
            "deployment": self.deployment_id,
            "workload": self.workload_key,
            "summary": self.summary,
            "metrics": {d.metric: [d.baseline, d.value, d.improvement_pct] for d in self.deltas},
        }


def compare(
    baseline: dict[str, float],
    current: dict[str, float],
    directions: dict[str, Direction] | None = None,
    *,
    noise_pct: float = NOISE_PCT,
) -> list[MetricDelta]:
    """Deltas for metrics present in both sides with a known direction; others are not comparable."""
    directions = directions or {}
    out = []
    for name in sorted(set(baseline) & set(current)):
        b, v = float(baseline[name]), float(current[name])
        d = directions.get(name) or direction(name)
        if d is None:
            continue
        if d not in ("lower", "higher"):
            raise UsageError(f"direction for {name} must be 'lower' or 'higher'", "")
        pct = (v - b) / abs(b) * 100.0 if b != 0 else None
        imp = None if pct is None else (-pct if d == "lower" else pct)
        if imp is None:
            better = (v < b) if d == "lower" else (v > b)
            verdict: Verdict = "unchanged" if v == b else ("improved" if better else "regressed")
        else:
            verdict = "unchanged" if abs(imp) < noise_pct else ("improved" if imp > 0 else "regressed")
        out.append(
            MetricDelta(
                metric=name,
                direction=d,
                baseline=b,
                value=v,
                abs_change=round(v - b, 6),
                pct_change=None if pct is None else round(pct, 2),
                improvement_pct=None if imp is None else round(imp, 2),
                verdict=verdict,
            )
        )
    return out


def summarize_deltas(deltas: list[MetricDelta], primary: str | None = None) -> str:
    if not deltas:
        return "no comparable metrics"
    chosen = next((d for d in deltas if d.metric == primary), None) if primary else None
    parts = []
    for d in ([chosen] if chosen else []) + [d for d in deltas if d is not chosen][:3]:
        if d.improvement_pct is None:
            parts.append(f"{d.metric} {d.baseline:g}->{d.value:g} ({d.verdict})")
        else:
            parts.append(f"{d.metric} {d.improvement_pct:+.1f}% ({d.verdict})")
    return "; ".join(parts)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS baselines (
    workload_key TEXT NOT NULL, metric TEXT NOT NULL, value REAL NOT NULL, direction TEXT NOT NULL,
    recorded_at REAL NOT NULL, context TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (workload_key, metric)
);
CREATE TABLE IF NOT EXISTS feedback (
    id INTEGER PRIMARY KEY AUTOINCREMENT, deployment_id TEXT NOT NULL, workload_key TEXT NOT NULL,
    metric TEXT NOT NULL, direction TEXT NOT NULL, baseline REAL NOT NULL, value REAL NOT NULL,
    pct_change REAL, improvement_pct REAL, verdict TEXT NOT NULL, created_at REAL NOT NULL,
    context TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS feedback_deployment ON feedback(deployment_id);
CREATE INDEX IF NOT EXISTS feedback_workload ON feedback(workload_key, metric);
"""


class FeedbackStore:
    """Baselines per workload and feedback rows per deployment, in ``data_dir()/feedback.db``."""

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else data_dir() / "feedback.db"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = connect_wal(self.path, timeout_s=30, check_same_thread=False)
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> FeedbackStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def _check(workload_key: str, metrics: dict[str, float]) -> None:
        if not isinstance(workload_key, str) or not workload_key or len(workload_key) > 200:
            raise UsageError("workload_key must be a non-empty string (<= 200 chars)", "e.g. 'longtail-40'")
        if not metrics or len(metrics) > 64:
            raise UsageError("give 1..64 metrics", "e.g. {'makespan_s': 3.2}")
        for k, v in metrics.items():
            if not isinstance(k, str) or not isinstance(v, int | float) or isinstance(v, bool) or v != v:
                raise UsageError(f"metric {k!r} must map a name to a finite number", "")

    def record_baseline(
        self,
        workload_key: str,
        metrics: dict[str, float],
        directions: dict[str, Direction] | None = None,
        context: dict | None = None,
    ) -> None:
        """Set (or replace) the baseline of each metric for this workload."""
        self._check(workload_key, metrics)
        directions = directions or {}
        now = time.time()
        rows = []
        for k, v in metrics.items():
            d = directions.get(k) or direction(k)
            if d is not None:  # a metric nobody can judge is not worth a baseline
                rows.append((workload_key, k, float(v), d, now, json.dumps(context or {})))
        with self._lock, self._db:
            self._db.executemany("INSERT OR REPLACE INTO baselines VALUES (?, ?, ?, ?, ?, ?)", rows)

    def baseline(self, workload_key: str) -> tuple[dict[str, float], dict[str, Direction]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT metric, value, direction FROM baselines WHERE workload_key = ?", (workload_key,)
            ).fetchall()
        return {m: v for m, v, _ in rows}, {m: d for m, _, d in rows}

    def record(
        self,
        deployment_id: str,
        workload_key: str,
        metrics: dict[str, float],
        baseline: dict[str, float] | None = None,
        directions: dict[str, Direction] | None = None,
        context: dict | None = None,
        primary: str | None = None,
    ) -> FeedbackReport:
        """Compare metrics under a deployment with the baseline (given, or the stored one) and store it."""
        if not isinstance(deployment_id, str) or not deployment_id or len(deployment_id) > 200:
            raise UsageError("deployment_id must be a non-empty string", "use the deployment's id")
        self._check(workload_key, metrics)
        stored, stored_dirs = self.baseline(workload_key)
        base = baseline if baseline is not None else stored
        if not base:
            raise UsageError(
                f"no baseline for workload {workload_key!r}",
                "measure the workload without the policy first (record_baseline)",
            )
        dirs = {**stored_dirs, **(directions or {})}
        deltas = compare(base, metrics, dirs)
        now = time.time()
        ctx = json.dumps(context or {})
        with self._lock, self._db:
            self._db.executemany(
                "INSERT INTO feedback (deployment_id, workload_key, metric, direction, baseline, value, pct_change,"
                " improvement_pct, verdict, created_at, context) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        deployment_id,
                        workload_key,
                        d.metric,
                        d.direction,
                        d.baseline,
                        d.value,
                        d.pct_change,
                        d.improvement_pct,
                        d.verdict,
                        now,
                        ctx,
                    )
                    for d in deltas
                ],
            )
        return FeedbackReport(
            deployment_id=deployment_id,
            workload_key=workload_key,
            created_at=now,
            deltas=deltas,
            summary=summarize_deltas(deltas, primary),
            context=context or {},
        )

    def for_deployment(self, deployment_id: str) -> FeedbackReport | None:
        with self._lock:
            rows = self._db.execute(
                "SELECT workload_key, metric, direction, baseline, value, pct_change, improvement_pct, verdict,"
                " created_at, context FROM feedback WHERE deployment_id = ? ORDER BY id",
                (deployment_id,),
            ).fetchall()
        if not rows:
            return None
        deltas = [
            MetricDelta(
                metric=m,
                direction=d,
                baseline=b,
                value=v,
                abs_change=round(v - b, 6),
                pct_change=p,
                improvement_pct=i,
                verdict=vd,
            )
            for _, m, d, b, v, p, i, vd, _, _ in rows
        ]
        return FeedbackReport(
            deployment_id=deployment_id,
            workload_key=rows[0][0],
            created_at=rows[-1][8],
            deltas=deltas,
            summary=summarize_deltas(deltas),
            context=json.loads(rows[-1][9] or "{}"),
        )

    def history(self, workload_key: str, metric: str | None = None, limit: int = 50) -> list[dict]:
        """Past feedback rows for a workload (newest first): what each deployment did to it."""
        sql = (
            "SELECT deployment_id, metric, baseline, value, improvement_pct, verdict, created_at FROM feedback"
            " WHERE workload_key = ?"
        )
        params: list = [workload_key]
        if metric:
            sql += " AND metric = ?"
            params.append(metric)
        sql += " ORDER BY id DESC LIMIT ?"
        params.append(max(1, min(int(limit), 1000)))
        with self._lock:
            rows = self._db.execute(sql, params).fetchall()
        keys = ("deployment_id", "metric", "baseline", "value", "improvement_pct", "verdict", "created_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]
