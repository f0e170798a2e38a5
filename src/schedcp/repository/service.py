# SPDX-License-Identifier: Apache-2.0
"""The repository's API for the MCP server, the agent and the CLI.

Every method validates its input, keeps transactions short (embeddings are computed before the
write lock is taken) and returns plain JSON-ready dicts bounded in size, so a careless caller can
neither corrupt the store nor flood an agent's context.
"""

from __future__ import annotations

import getpass
import json
import os
import platform
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np

from schedcp.errors import SchedcpError, UsageError
from schedcp.repository import catalog_sources
from schedcp.repository.embed import Embedder, from_blob, get_embedder, to_blob
from schedcp.repository.evidence import MeasuredTrial, VerificationSource, default_verifications, no_evidence
from schedcp.repository.models import (
    STATUSES,
    PolicyInput,
    ResultInput,
    WorkloadProfile,
    parse,
)
from schedcp.repository.outcomes import host_fingerprint, judge
from schedcp.repository.search import (
    DEFAULT_BUDGET,
    MIN_BUDGET,
    POLICY_COLUMNS,
    PRIMITIVE_COLUMNS,
    Filters,
    Weights,
    excerpt,
    fit_budget,
    fts_query,
    matched_terms,
    rank,
    terms,
    validate_filters,
)
from schedcp.repository.store import Store, canonical, content_hash, primitive_digest

# Allowed status moves. Forward is promotion; anything may be deprecated; a deprecated policy can
# only come back as a candidate and earn its way up again.
TRANSITIONS: dict[str, set[str]] = {
    "candidate": {"verified", "deprecated"},
    "verified": {"production", "candidate", "deprecated"},
    "production": {"verified", "deprecated"},
    "deprecated": {"candidate"},
}
RANK = {"deprecated": -1, "candidate": 0, "verified": 1, "production": 2}
MAX_REASON = 500
MAX_NOTE = 1000


def default_actor() -> str:
    explicit = os.environ.get("SCHEDCP_ACTOR")
    if explicit:
        return explicit[:64]
    try:
        return getpass.getuser()[:64]
    except (OSError, KeyError):
        return "unknown"


def policy_text(p: PolicyInput | sqlite3.Row) -> str:
    """What the embedding of a policy is computed from: what it is and what it is for."""
    if isinstance(p, PolicyInput):
        title, description, workloads, tags = p.title, p.description, p.workloads, p.tags
    else:
        title, description = p["title"], p["description"]
        workloads, tags = json.loads(p["workloads_json"]), json.loads(p["tags_json"])
    parts = [f"{title}." if title else "", description]
    if workloads:
        parts.append("Suited to: " + "; ".join(workloads) + ".")
    if tags:
        parts.append("Keywords: " + ", ".join(tags) + ".")
    return " ".join(x for x in parts if x)


def profile_text(profile: dict[str, Any]) -> str:
    traits = ", ".join(f"{k}: {v}" for k, v in list((profile.get("characteristics") or {}).items())[:20])
    return f"{profile['summary']} {('(' + traits + ')') if traits else ''}".strip()[:1500]


def primitive_text(name: str, description: str, tags: list[str]) -> str:
    return f"{name.replace('_', ' ')}. {description} Keywords: {', '.join(tags)}."


def _row_text(table: str, row: sqlite3.Row) -> str:
    if table == "policies":
        return policy_text(row)
    if table == "primitives":
        return primitive_text(row["name"], row["description"], json.loads(row["tags_json"]))
    if table == "results":
        return profile_text(json.loads(row["profile_json"]))
    return row["profile_summary"] or row["note"]


def _reason(reason: str) -> str:
    reason = (reason or "").strip()
    if not 3 <= len(reason) <= MAX_REASON:
        raise UsageError(f"a reason of 3..{MAX_REASON} characters is required", "say why, in one sentence")
    return reason


class RepositoryService:
    def __init__(
        self,
        path: Path | str | None = None,
        *,
        auto_seed: bool = True,
        embedder: Embedder | None = None,
        weights: Weights | None = None,
        verifications: VerificationSource | None = None,
        daemon_socket: Path | None = None,
    ) -> None:
        self.store = Store(path)
        self._embedder = embedder
        self.weights = weights or Weights()
        self._verifications = verifications
        self._daemon_socket = daemon_socket
        if auto_seed and self.store.count("policies") == 0:
            self.seed()

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> RepositoryService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- embeddings -----------------------------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def embed(self, texts: list[str]) -> np.ndarray:
        return self.embedder.encode(texts)

    def fill_embeddings(self, table: str) -> int:
        """Embed rows written without a vector (older schema, or a writer that skipped it)."""
        done = 0
        while True:
            rows = self.store.missing_embeddings(table, limit=256)
            if not rows:
                return done
            vectors = self.embed([_row_text(table, row) for row in rows])
            self.store.set_embeddings(table, [(row["id"], vectors[i]) for i, row in enumerate(rows)])
            done += len(rows)

    # ---- policies -------------------------------------------------------------------------------

    def add_policy(
        self,
        data: PolicyInput | dict[str, Any],
        *,
        parent: str | None = None,
        actor: str | None = None,
        reason: str = "added",
        origin: str = "user",
    ) -> dict[str, Any]:
        policy = parse(PolicyInput, data, "policy")
        if not origin.startswith("seed:") and policy.status != "candidate":
            raise UsageError(
                f"a new policy starts as candidate, not {policy.status}",
                "drop the status field; promote it after it has been verified",
            )
        if parent is not None:
            policy = policy.model_copy(update={"parent": parent})
            parse(PolicyInput, policy.model_dump(), "policy")  # re-run the self-parent check
        vector = self.embed([policy_text(policy)])[0]
        self.store.insert_policy(policy, origin=origin, actor=actor or default_actor(), reason=reason, embedding=vector)
        return self.show(policy.name)

    def record_build(self, name: str, object_sha256: str) -> None:
        if len(object_sha256) != 64 or any(c not in "0123456789abcdef" for c in object_sha256):
            raise UsageError("object_sha256 must be 64 lowercase hex digits", "pass BuildResult.object_sha256")
        self.store.set_object_sha256(name, object_sha256)

    @staticmethod
    def _usable(row: sqlite3.Row) -> tuple[bool, str]:
        if row["kind"] == "external":
            binary = row["binary"] or ""
            if binary and shutil.which(binary):
                return True, f"{binary} is on PATH"
            return False, f"{binary} is not installed on this host (not on PATH)"
        return True, "BPF source is stored; build it for the target kernel"

    def show(self, name: str, *, history: int = 5, include_source: bool = False) -> dict[str, Any]:
        row = self.store.require(name)
        usable, why = self._usable(row)
        summary = self.store.result_summary(row["id"])
        source = row["source"] or ""
        out: dict[str, Any] = {
            "name": row["name"],
            "kind": row["kind"],
            "status": row["status"],
            "usable": usable,
            "usable_reason": why,
            "title": row["title"],
            "description": row["description"],
            "workloads": json.loads(row["workloads_json"]),
            "tags": json.loads(row["tags_json"]),
            "tunables": json.loads(row["tunables_json"]),
            "min_kernel": row["min_kernel"],
            "binary": row["binary"],
            "upstream": row["upstream"],
            "parent": row["parent_name"],
            "source_sha256": row["source_sha256"],
            "object_sha256": row["object_sha256"],
            "source_bytes": len(source.encode()),
            "origin": row["origin"],
            "created_at": row["created_at"],
            "updated_at": row["updated_at"],
            "results": summary,
            "recent_results": [self._result_dict(r) for r in self.store.results_for(row["id"], history)],
            "status_log": [self._log_dict(r) for r in self.store.status_log(row["id"], history)],
            "antipatterns": [self._antipattern_dict(a) for a in self.store.antipatterns(row["id"], history)],
            "children": [r["name"] for r in self.store.descendants(row["id"], limit=20) if r["depth"] == 1],
        }
        if include_source:
            out["source"] = source
        elif source:
            out["source_excerpt"] = source[:1200]
        return out

    def source(self, name: str) -> str:
        row = self.store.require(name)
        if not row["source"]:
            raise UsageError(
                f"{name} is an external scheduler without stored source", f"run the {row['binary']} binary instead"
            )
        return row["source"]

    # ---- search ---------------------------------------------------------------------------------

    def search(
        self,
        query: str,
        *,
        k: int = 5,
        status: str | None = None,
        kind: str | None = None,
        kernel: str | None = None,
        budget_bytes: int = DEFAULT_BUDGET,
        mode: str = "hybrid",
    ) -> dict[str, Any]:
        """Find policies for a need stated in words; see search.py for how scores combine."""
        query = self._check_query(query)
        validate_filters(status, kind, kernel, k)
        budget_bytes = max(MIN_BUDGET, int(budget_bytes))
        self.fill_embeddings("policies")
        words = terms(query)
        vector = self.embed([query])[0] if mode != "keyword" else np.zeros(384, np.float32)
        ranking = rank(
            self.store,
            table="policies",
            query_vec=vector,
            words=words,
            weights=self.weights,
            filters=Filters(status, kind, kernel),
            limit=k,
            mode=mode,
        )
        hits = ranking.hits
        rows = self.store.policies_by_id([h.row_id for h in hits])
        marks = self.store.highlights("policies_fts", POLICY_COLUMNS, fts_query(words), [h.row_id for h in hits])
        results = []
        for hit in hits:
            row = rows[hit.row_id]
            usable, _ = self._usable(row)
            results.append(
                {
                    "name": row["name"],
                    "kind": row["kind"],
                    "status": row["status"],
                    "usable": usable,
                    "title": row["title"],
                    "excerpt": excerpt(row["description"]),
                    "min_kernel": row["min_kernel"],
                    "tags": json.loads(row["tags_json"])[:6],
                    "score": {
                        "hybrid": round(hit.hybrid, 4),
                        "bm25": round(hit.bm25, 4),
                        "cosine": round(hit.cosine, 4),
                    },
                    "matched": matched_terms(marks.get(hit.row_id, {})),
                }
            )
        payload = {
            "query": query[:200],
            "terms": words,
            "mode": mode,
            "filters": {"status": status or "not deprecated", "kind": kind, "kernel": kernel},
            "considered": ranking.considered,
            "budget_bytes": budget_bytes,
            "truncated": False,
            "results": results,
        }

        def shorten(item: dict[str, Any]) -> None:
            item["excerpt"] = excerpt(item["excerpt"], 90)
            item["tags"] = item["tags"][:3]

        return fit_budget(payload, budget_bytes, shorten)

    @staticmethod
    def _check_query(query: str) -> str:
        if not isinstance(query, str) or not query.strip():
            raise UsageError("the search query is empty", "describe the workload or the goal in words")
        try:
            query.encode("utf-8")
        except UnicodeEncodeError:  # undecodable bytes from a terminal, or a lone surrogate from JSON
            raise UsageError(
                "the search query is not valid text (undecodable bytes or a lone surrogate)",
                "pass the query as UTF-8 text (check the terminal's locale)",
            ) from None
        if len(query) > 1000:
            raise UsageError(
                "the search query is longer than 1000 characters", "summarise the need in a sentence or two"
            )
        return query.strip()

    # ---- primitives -----------------------------------------------------------------------------

    def primitives(self) -> list[dict[str, Any]]:
        return [
            {
                "name": r["name"],
                "description": r["description"],
                "tags": json.loads(r["tags_json"]),
                "bytes": len(r["snippet"].encode()),
            }
            for r in self.store.primitives()
        ]

    def primitive(self, name: str) -> dict[str, Any]:
        for row in self.store.primitives():
            if row["name"] == name:
                return {
                    "name": row["name"],
                    "description": row["description"],
                    "tags": json.loads(row["tags_json"]),
                    "snippet": row["snippet"],
                }
        known = ", ".join(r["name"] for r in self.store.primitives()) or "none"
        raise UsageError(f"no primitive named {name!r}", f"known primitives: {known}", code="not_found")

    def search_primitives(self, query: str, *, k: int = 3, budget_bytes: int = DEFAULT_BUDGET) -> dict[str, Any]:
        query = self._check_query(query)
        validate_filters(None, None, None, k)
        self.fill_embeddings("primitives")
        words = terms(query)
        hits = rank(
            self.store, table="primitives", query_vec=self.embed([query])[0], words=words, weights=self.weights, limit=k
        ).hits
        rows = self.store.primitives_by_id([h.row_id for h in hits])
        marks = self.store.highlights("primitives_fts", PRIMITIVE_COLUMNS, fts_query(words), [h.row_id for h in hits])
        results = [
            {
                "name": rows[h.row_id]["name"],
                "excerpt": excerpt(rows[h.row_id]["description"]),
                "tags": json.loads(rows[h.row_id]["tags_json"]),
                "score": {"hybrid": round(h.hybrid, 4), "bm25": round(h.bm25, 4), "cosine": round(h.cosine, 4)},
                "matched": matched_terms(marks.get(h.row_id, {})),
            }
            for h in hits
        ]
        payload = {
            "query": query[:200],
            "terms": words,
            "budget_bytes": max(MIN_BUDGET, budget_bytes),
            "truncated": False,
            "results": results,
        }
        return fit_budget(
            payload, max(MIN_BUDGET, budget_bytes), lambda item: item.update(excerpt=excerpt(item["excerpt"], 90))
        )

    # ---- learning: results ----------------------------------------------------------------------

    def record_result(self, data: ResultInput | dict[str, Any]) -> dict[str, Any]:
        result = parse(ResultInput, data, "result")
        self.store.require(result.policy)
        profile = result.profile.model_dump()
        outcome = judge(result.profile.goal, result.metrics, result.baseline, result.directions)
        vector = self.embed([profile_text(profile)])[0]
        result_id = self.store.insert_result(
            result.policy,
            {
                "config_json": canonical(result.config),
                "profile_json": canonical(profile),
                "profile_summary": result.profile.summary,
                "goal": result.profile.goal,
                "metrics_json": canonical(result.metrics),
                "baseline_json": canonical(result.baseline),
                "improvement_json": canonical(outcome.ratios),
                "primary_metric": outcome.primary,
                "primary_ratio": outcome.primary_ratio,
                "beat_baseline": int(outcome.beat_baseline),
                "host_fingerprint": result.host_fingerprint or host_fingerprint(),
                "kernel_release": result.kernel_release or platform.release(),
                "notes": result.notes,
                "profile_embedding": to_blob(vector),
            },
        )
        return {
            "id": result_id,
            "policy": result.policy,
            "goal": result.profile.goal,
            "improvement": outcome.ratios,
            "primary_metric": outcome.primary,
            "primary_ratio": outcome.primary_ratio,
            "beat_baseline": outcome.beat_baseline,
        }

    @staticmethod
    def _log_dict(row: sqlite3.Row) -> dict[str, Any]:
        out = {k: row[k] for k in ("from_status", "to_status", "actor", "reason", "at")}
        if row["evidence_json"]:
            out["evidence"] = json.loads(row["evidence_json"])
        return out

    @staticmethod
    def _result_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "config": json.loads(row["config_json"]),
            "goal": row["goal"],
            "workload": excerpt(row["profile_summary"], 160),
            "metrics": json.loads(row["metrics_json"]),
            "baseline": json.loads(row["baseline_json"]),
            "improvement": json.loads(row["improvement_json"]),
            "primary_metric": row["primary_metric"],
            "primary_ratio": row["primary_ratio"],
            "beat_baseline": bool(row["beat_baseline"]),
            "host": row["host_fingerprint"],
            "kernel": row["kernel_release"],
            "at": row["created_at"],
        }

    def history(self, name: str, *, limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= 200:
            raise UsageError(f"limit={limit} is out of range", "ask for 1..200 entries")
        row = self.store.require(name)
        return {
            "name": name,
            "status": row["status"],
            "summary": self.store.result_summary(row["id"]),
            "results": [self._result_dict(r) for r in self.store.results_for(row["id"], limit)],
            "status_log": [self._log_dict(r) for r in self.store.status_log(row["id"], limit)],
            "antipatterns": [self._antipattern_dict(a) for a in self.store.antipatterns(row["id"], limit)],
        }

    def best_config(
        self, profile: WorkloadProfile | dict[str, Any], *, k: int = 3, min_similarity: float = 0.5
    ) -> dict[str, Any]:
        """The policy and configuration that did best on workloads like this one, for this goal.

        Results with the same goal are weighted by how similar their workload summary is to the
        query (cosine of MiniLM embeddings). Each (policy, configuration) pair scores
        best_similarity x mean log-improvement over its similar results, so one lucky run on a
        barely related workload does not outrank repeated wins on a close one.
        """
        wanted = parse(WorkloadProfile, profile, "workload profile")
        if not 1 <= k <= 20 or not 0.0 <= min_similarity <= 1.0:
            raise UsageError("k must be 1..20 and min_similarity 0..1", "adjust the arguments")
        self.fill_embeddings("results")
        query = self.embed([profile_text(wanted.model_dump())])[0]
        rows = self.store.results_with_goal(wanted.goal)
        groups: dict[tuple[str, str], dict[str, Any]] = {}
        for row in rows:
            if row["policy_status"] == "deprecated" or row["primary_ratio"] is None or row["primary_ratio"] <= 0:
                continue
            sim = float(from_blob(row["profile_embedding"]) @ query)
            if sim < min_similarity:
                continue
            key = (row["policy_name"], row["config_json"])
            g = groups.setdefault(
                key,
                {
                    "sims": [],
                    "logs": [],
                    "wins": 0,
                    "example": row["profile_summary"],
                    "metric": row["primary_metric"],
                    "best_sim": -1.0,
                },
            )
            g["sims"].append(sim)
            g["logs"].append(float(np.log(row["primary_ratio"])))
            g["wins"] += int(row["beat_baseline"])
            if sim > g["best_sim"]:
                g["best_sim"], g["example"] = sim, row["profile_summary"]
        candidates = []
        for (policy, config), g in groups.items():
            weights = np.array(g["sims"])
            mean_log = float(np.dot(weights, g["logs"]) / weights.sum())
            if mean_log <= 0:
                continue  # on similar workloads this configuration did not help on average
            candidates.append(
                {
                    "policy": policy,
                    "config": json.loads(config),
                    "expected_ratio": round(float(np.exp(mean_log)), 4),
                    "primary_metric": g["metric"],
                    "best_similarity": round(g["best_sim"], 4),
                    "results": len(g["sims"]),
                    "wins": g["wins"],
                    "score": round(g["best_sim"] * mean_log, 4),
                    "closest_workload": excerpt(g["example"], 160),
                }
            )
        candidates.sort(key=lambda c: (-c["score"], -c["results"], c["policy"]))
        candidates = candidates[:k]
        warnings = self._relevant_antipatterns(query, {c["policy"] for c in candidates})
        return {
            "goal": wanted.goal,
            "considered_results": len(rows),
            "min_similarity": min_similarity,
            "best": candidates[0] if candidates else None,
            "candidates": candidates,
            "antipatterns": warnings,
        }

    # ---- learning: status -----------------------------------------------------------------------

    @property
    def verifications(self) -> VerificationSource:
        if self._verifications is None:
            self._verifications = default_verifications(self._daemon_socket)
        return self._verifications

    def set_status(self, name: str, to: str, *, reason: str, actor: str | None = None) -> dict[str, Any]:
        """Move a policy's status. Moving up needs evidence the caller cannot write (evidence.py):
        a daemon-held passing verification for ``verified``, a measured win for ``production``."""
        if to not in STATUSES:
            raise UsageError(f"unknown status {to!r}", f"use one of: {', '.join(STATUSES)}")
        reason = _reason(reason)
        row = self.store.require(name)
        current = row["status"]
        evidence: dict[str, Any] | None = None
        object_sha256: str | None = None
        if to in ("verified", "production") and RANK[to] > RANK.get(current, -1) and to in TRANSITIONS.get(current, ()):
            evidence = self._evidence_for(row, to)
            object_sha256 = evidence.get("object_sha256") if to == "verified" else None
        before, after = self.store.transition(
            name,
            to,
            actor or default_actor(),
            reason,
            allowed=TRANSITIONS,
            expect_from=current,
            evidence=evidence,
            object_sha256=object_sha256,
        )
        out: dict[str, Any] = {"name": name, "from": before, "to": after}
        if evidence is not None:
            out["evidence"] = evidence
        return out

    def _evidence_for(self, row: sqlite3.Row, to: str) -> dict[str, Any]:
        name, source_sha256 = row["name"], row["source_sha256"]
        if row["kind"] == "external" or not source_sha256:
            raise no_evidence(
                f"{name} is an upstream binary without stored source; the verifier cannot check it",
                "external schedulers keep the status their catalog entry gives them",
            )
        if to == "verified":
            record = self.verifications.latest_pass(source_sha256)
            if record is None:
                raise no_evidence(
                    f"{name} has no passing verification of its current source (sha256 {source_sha256[:12]}): "
                    "a reason is not evidence",
                    f"verify it through the daemon (verify_scheduler with scheduler={name!r}); "
                    "a pass is recorded there and unlocks the promotion",
                )
            return {
                "kind": "verification",
                "record_id": record.id,
                "source_sha256": source_sha256,
                "object_sha256": record.object_sha256,
                "kernel": record.kernel,
                "verified_at": record.created,
            }
        wins = self.store.measured_trials(source_sha256, winning=True, limit=5)
        if not wins:
            measured = len(self.store.measured_trials(source_sha256, limit=50))
            raise no_evidence(
                f"{name} has no trial measured by SchedCP in which it stayed enabled and beat EEVDF "
                f"({measured} measured trial(s) of this source, none a win); reported results do not count",
                "measure it against EEVDF with run_trial (start_testbed, build_scheduler, run_trial); "
                "promote after a consistent win",
            )
        return {
            "kind": "measured_trials",
            "source_sha256": source_sha256,
            "trial_ids": [r["id"] for r in wins],
            "best_ratio": max((r["ratio"] for r in wins if r["ratio"] is not None), default=None),
            "measured_by": sorted({r["measured_by"] for r in wins}),
        }

    def record_measured_trial(self, trial: MeasuredTrial | dict[str, Any]) -> int:
        """Keep a comparison the control plane ran itself. Only control-plane code calls this (the
        trial runners), never an agent's tool: these records are what ``production`` rests on."""
        t = parse(MeasuredTrial, trial, "measured trial")
        detail = canonical(t.detail)
        if len(detail) > 16 * 1024:
            detail = canonical({"truncated": True})
        return self.store.insert_measured_trial(
            {
                "source_sha256": t.source_sha256,
                "policy": t.policy,
                "measured_by": t.measured_by,
                "kernel": t.kernel,
                "workload": t.workload,
                "config_json": canonical(t.config),
                "metric": t.metric,
                "ratio": t.ratio,
                "beat_baseline": int(t.beat_baseline),
                "stayed_enabled": int(t.stayed_enabled),
                "boot_id": t.boot_id,
                "detail_json": detail,
            }
        )

    def promote(self, name: str, *, to: str | None = None, reason: str, actor: str | None = None) -> dict[str, Any]:
        current = self.store.require(name)["status"]
        target = to or {"deprecated": "candidate", "candidate": "verified", "verified": "production"}.get(current)
        if target is None:
            raise UsageError(f"{name} is already {current}, the top status", "nothing to promote")
        if target in STATUSES and current != "deprecated" and RANK[target] <= RANK[current]:
            raise UsageError(f"{current} -> {target} is not a promotion", "use demote for moves down")
        return self.set_status(name, target, reason=reason, actor=actor)

    def demote(self, name: str, *, to: str | None = None, reason: str, actor: str | None = None) -> dict[str, Any]:
        current = self.store.require(name)["status"]
        target = to or {"production": "verified", "verified": "candidate", "candidate": "deprecated"}.get(current)
        if target is None:
            raise UsageError(f"{name} is already deprecated", "nothing to demote")
        if target in STATUSES and RANK[target] >= RANK[current]:
            raise UsageError(f"{current} -> {target} is not a demotion", "use promote for moves up")
        return self.set_status(name, target, reason=reason, actor=actor)

    # ---- learning: antipatterns -----------------------------------------------------------------

    def annotate_antipattern(
        self,
        note: str,
        *,
        policy: str | None = None,
        profile: WorkloadProfile | dict[str, Any] | None = None,
        actor: str | None = None,
    ) -> dict[str, Any]:
        """Remember what not to do: attach a note to a policy, a workload profile, or both."""
        note = (note or "").strip()
        if not 5 <= len(note) <= MAX_NOTE:
            raise UsageError(
                f"an antipattern note is 5..{MAX_NOTE} characters", "state the lesson in a sentence or two"
            )
        if policy is None and profile is None:
            raise UsageError(
                "an antipattern needs a policy, a workload profile, or both",
                "pass policy=NAME and/or profile={summary, characteristics, goal}",
            )
        wanted = parse(WorkloadProfile, profile, "workload profile") if profile is not None else None
        summary = wanted.summary if wanted else ""
        vector = self.embed([profile_text(wanted.model_dump())])[0] if wanted else None
        ident = self.store.insert_antipattern(
            policy, canonical(wanted.model_dump()) if wanted else None, summary, note, actor or default_actor(), vector
        )
        return {"id": ident, "policy": policy, "workload": excerpt(summary, 160) if summary else None, "note": note}

    @staticmethod
    def _antipattern_dict(row: sqlite3.Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "policy": row["policy_name"],
            "note": row["note"],
            "workload": excerpt(row["profile_summary"], 160) or None,
            "actor": row["actor"],
            "at": row["created_at"],
        }

    def _relevant_antipatterns(
        self, query: np.ndarray, policies: set[str], min_similarity: float = 0.6, limit: int = 5
    ) -> list[dict[str, Any]]:
        """Notes attached to any of these policies, or to a workload similar to the query."""
        self.fill_embeddings("antipatterns")
        found: list[tuple[float, dict[str, Any]]] = []
        for row in self.store.antipatterns(limit=500):
            sim = float(from_blob(row["embedding"]) @ query) if row["profile_json"] and row["embedding"] else None
            if sim is not None and sim >= min_similarity:
                found.append((sim, self._antipattern_dict(row) | {"why": f"similar workload ({sim:.2f})"}))
            elif row["policy_name"] in policies:
                found.append((0.0, self._antipattern_dict(row) | {"why": f"attached to {row['policy_name']}"}))
        found.sort(key=lambda pair: -pair[0])
        return [entry for _, entry in found[:limit]]

    def antipatterns(
        self, *, policy: str | None = None, profile: WorkloadProfile | dict[str, Any] | None = None, limit: int = 10
    ) -> list[dict[str, Any]]:
        """Notes for a policy, or notes whose workload resembles the given profile."""
        if profile is not None:
            wanted = parse(WorkloadProfile, profile, "workload profile")
            query = self.embed([profile_text(wanted.model_dump())])[0]
            return self._relevant_antipatterns(query, {policy} if policy else set(), limit=limit)
        policy_id = self.store.require(policy)["id"] if policy else None
        return [self._antipattern_dict(r) for r in self.store.antipatterns(policy_id, limit)]

    # ---- lineage --------------------------------------------------------------------------------

    def lineage(self, name: str) -> dict[str, Any]:
        row = self.store.require(name)
        return {
            "name": name,
            "ancestors": [dict(r) for r in self.store.ancestors(row["id"])],
            "descendants": [dict(r) for r in self.store.descendants(row["id"])],
        }

    # ---- seeding --------------------------------------------------------------------------------

    def seed(self) -> dict[str, Any]:
        """Add or refresh the built-in catalog; running it again changes nothing unless sources did."""
        report: dict[str, Any] = {"added": [], "updated": [], "unchanged": 0, "skipped": [], "problems": []}
        library, problems = catalog_sources.library_policies()
        report["problems"] += problems
        upstream, problems = catalog_sources.upstream_policies()
        report["problems"] += problems
        existing = self.store.policy_index()
        todo: list[tuple[PolicyInput, str, bool]] = []
        sources = ((library, catalog_sources.ORIGIN_LIBRARY), (upstream, catalog_sources.ORIGIN_UPSTREAM))
        for policies, origin in sources:
            for p in policies:
                if p.name not in existing:
                    todo.append((p, origin, False))
                elif existing[p.name][0] != origin:
                    report["skipped"].append(f"{p.name}: a policy with this name was added by someone else")
                elif existing[p.name][1] != content_hash(p):
                    todo.append((p, origin, True))
                else:
                    report["unchanged"] += 1
        vectors = self.embed([policy_text(p) for p, _, _ in todo]) if todo else np.zeros((0, 384), np.float32)
        for i, (p, origin, update) in enumerate(todo):
            if update:
                self.store.update_policy_content(p.name, p, vectors[i])
                report["updated"].append(p.name)
                continue
            try:
                self.store.insert_policy(
                    p, origin=origin, actor="seed", reason=f"seeded from {origin}", embedding=vectors[i]
                )
                report["added"].append(p.name)
            except SchedcpError as exc:
                if exc.code != "duplicate":  # another process seeded it first: fine
                    raise
                report["unchanged"] += 1
        prims, problems = catalog_sources.primitives()
        report["problems"] += problems
        known = self.store.primitive_hashes()
        changed = [
            p
            for p in prims
            if p.name not in known or known[p.name] != primitive_digest(p.description, p.snippet, p.tags)
        ]
        prim_vecs = (
            self.embed([primitive_text(q.name, q.description, q.tags) for q in changed])
            if changed
            else np.zeros((0, 384), np.float32)
        )
        report["primitives"] = {"total": len(prims), "changed": []}
        for i, prim in enumerate(changed):
            if self.store.upsert_primitive(prim.name, prim.description, prim.snippet, prim.tags, prim_vecs[i]):
                report["primitives"]["changed"].append(prim.name)
        return report
