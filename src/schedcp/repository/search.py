# SPDX-License-Identifier: Apache-2.0
"""Hybrid retrieval: FTS5/BM25 keywords plus MiniLM cosine similarity, explained and size-bounded.

Keyword scores catch exact names, flags and jargon ("scx_rusty", "nohz", "cgroup"); embeddings
catch paraphrase ("my game stutters" ~ "stable frame times"). Each is normalised to 0..1 over the
candidates of one query and combined with fixed weights, so a result's score can be explained by
its parts. Agent text never reaches FTS5 syntax: queries are reduced to quoted bare terms.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from schedcp.errors import UsageError
from schedcp.repository.embed import blas_threads
from schedcp.repository.models import KERNEL_PATTERN, KINDS, STATUSES, kernel_code
from schedcp.repository.store import Store

MAX_QUERY_CHARS = 1000
MAX_TERMS = 24
MAX_K = 50
DEFAULT_BUDGET = 6000  # bytes of JSON an agent gets back from one search
MIN_BUDGET = 600
EXCERPT_CHARS = 220

POLICY_COLUMNS = ["name", "title", "description", "workloads", "tags", "tunables", "code"]
PRIMITIVE_COLUMNS = ["name", "description", "tags", "snippet"]

# Words that carry no signal about which policy fits; keeping them would let bm25 reward
# documents for repeating "the" and "scheduler".
STOPWORDS = frozenset(
    {
        "a",
        "about",
        "above",
        "after",
        "again",
        "all",
        "also",
        "am",
        "an",
        "and",
        "any",
        "are",
        "as",
        "at",
        "be",
        "because",
        "been",
        "before",
        "being",
        "below",
        "between",
        "both",
        "but",
        "by",
        "can",
        "could",
        "did",
        "do",
        "does",
        "doing",
        "down",
        "during",
        "each",
        "few",
        "for",
        "from",
        "further",
        "had",
        "has",
        "have",
        "having",
        "he",
        "her",
        "here",
        "hers",
        "him",
        "his",
        "how",
        "i",
        "if",
        "in",
        "into",
        "is",
        "it",
        "its",
        "itself",
        "just",
        "me",
        "more",
        "most",
        "my",
        "myself",
        "no",
        "nor",
        "not",
        "now",
        "of",
        "off",
        "on",
        "once",
        "only",
        "or",
        "other",
        "our",
        "ours",
        "out",
        "over",
        "own",
        "same",
        "she",
        "should",
        "so",
        "some",
        "such",
        "than",
        "that",
        "the",
        "their",
        "theirs",
        "them",
        "then",
        "there",
        "these",
        "they",
        "this",
        "those",
        "through",
        "to",
        "too",
        "under",
        "until",
        "up",
        "very",
        "was",
        "we",
        "were",
        "what",
        "when",
        "where",
        "which",
        "while",
        "who",
        "whom",
        "why",
        "will",
        "with",
        "would",
        "you",
        "your",
        "yours",
        "want",
        "wants",
        "need",
        "needs",
        "please",
        "use",
        "using",
        "make",
        "makes",
        "get",
        "gets",
        "like",
        "let",
        "lets",
        "scheduler",
        "schedulers",
        "scheduling",
        "policy",
        "policies",
        "sched",
        "ext",
        "linux",
        "run",
        "runs",
        "running",
        "workload",
        "workloads",
        "best",
        "good",
        "better",
        "find",
        "something",
        "thing",
        "things",
        "kind",
        "lot",
        "lots",
        "really",
    }
)


@dataclass(frozen=True)
class Weights:
    """How keyword and meaning evidence are combined (tuned on benchmarks/retrieval.py)."""

    cosine: float = 0.4
    keyword: float = 0.6
    # Keyword scores are divided by the best candidate's bm25, but by no less than this: when the
    # best match is a single incidental word, keywords should not claim their full weight.
    keyword_floor: float = 5.0
    # Per-column bm25 weights: names and stated workloads say most about fit; code says least.
    policy_columns: tuple[float, ...] = (4.0, 3.0, 1.5, 2.5, 2.0, 0.6, 0.15)
    primitive_columns: tuple[float, ...] = (4.0, 2.0, 2.5, 0.4)


def terms(query: str) -> list[str]:
    """Bare search terms: letters and digits only, stop words dropped, deduplicated, bounded."""
    seen: list[str] = []
    for word in re.findall(r"[^\W_]+", query.lower()):
        if len(word) < 2 or len(word) > 40 or word in STOPWORDS or word in seen:
            continue
        seen.append(word)
        if len(seen) >= MAX_TERMS:
            break
    return seen


def fts_query(words: list[str]) -> str:
    # Every term is quoted, so FTS5 operators (AND, NEAR, column filters, '*', '^') in agent text
    # are plain words; the characters allowed in a term cannot close the quote.
    return " OR ".join(f'"{w}"' for w in words)


def validate_filters(status: str | None, kind: str | None, kernel: str | None, k: int) -> None:
    if status is not None and status not in (*STATUSES, "any"):
        raise UsageError(f"unknown status {status!r}", f"use one of: {', '.join(STATUSES)}, any")
    if kind is not None and kind not in KINDS:
        raise UsageError(f"unknown kind {kind!r}", f"use one of: {', '.join(KINDS)}")
    if kernel is not None and not re.match(KERNEL_PATTERN, kernel):
        raise UsageError(f"bad kernel version {kernel!r}", "give MAJOR.MINOR, e.g. 6.12")
    if not 1 <= k <= MAX_K:
        raise UsageError(f"k={k} is out of range", f"ask for 1..{MAX_K} results")


def matched_terms(highlighted: dict[str, str]) -> dict[str, list[str]]:
    """Turn FTS5 highlight() output (\\x01term\\x02) into {column: [terms]}."""
    out: dict[str, list[str]] = {}
    for column, text in highlighted.items():
        found = []
        for hit in re.findall("\x01(.*?)\x02", text or "", flags=re.S):
            word = hit.strip().lower()
            if word and word not in found:
                found.append(word)
        if found:
            out[column] = found[:6]
    return out


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(",;:.") + "…"


@dataclass(frozen=True)
class Snapshot:
    """One table's embeddings and filter columns as arrays, in ascending row-id order."""

    ids: np.ndarray  # int64 row ids, sorted
    matrix: np.ndarray  # (n, 384) float32 unit vectors
    columns: dict[str, np.ndarray]

    def positions(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Matrix rows of the given ids, and which of the ids are present at all."""
        pos = np.searchsorted(self.ids, row_ids)
        pos = np.minimum(pos, max(len(self.ids) - 1, 0))
        present = (self.ids[pos] == row_ids) if len(self.ids) else np.zeros(len(row_ids), bool)
        return pos, present


class SnapshotCache:
    """Per (database, table) snapshots, reloaded only when the database's generation counter moves.

    Reading 10,000 BLOBs on every query would dominate latency; the counter lives in the database and
    every write that changes embeddings or filter columns bumps it, so a policy added or promoted by
    another process invalidates this process's copy too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[int, Snapshot]] = {}

    def get(self, store: Store, table: str) -> Snapshot:
        generation = store.generation()
        key = (str(store.path), table)
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] == generation:
                return hit[1]
        ids, matrix, columns = store.embedding_rows(table)
        snapshot = Snapshot(ids, matrix, columns)
        with self._lock:
            self._cache[key] = (generation, snapshot)
        return snapshot


SNAPSHOTS = SnapshotCache()


@dataclass(frozen=True)
class Filters:
    status: str | None = None  # None: anything but deprecated; "any": everything
    kind: str | None = None
    kernel: str | None = None  # MAJOR.MINOR the policy must run on

    def mask(self, snap: Snapshot) -> np.ndarray:
        keep = np.ones(len(snap.ids), dtype=bool)
        if "status" in snap.columns:
            if self.status is None:
                keep &= snap.columns["status"] != "deprecated"
            elif self.status != "any":
                keep &= snap.columns["status"] == self.status
        if self.kind is not None and "kind" in snap.columns:
            keep &= snap.columns["kind"] == self.kind
        if self.kernel is not None and "min_kernel_code" in snap.columns:
            keep &= snap.columns["min_kernel_code"] <= kernel_code(self.kernel)
        return keep


@dataclass(frozen=True)
class Hit:
    row_id: int
    hybrid: float
    bm25: float
    cosine: float


@dataclass(frozen=True)
class Ranking:
    hits: list[Hit]
    considered: int


def rank(
    store: Store,
    *,
    table: str,
    query_vec: np.ndarray,
    words: list[str],
    weights: Weights,
    filters: Filters | None = None,
    limit: int = 10,
    mode: str = "hybrid",
) -> Ranking:
    """Score every row that passes the filters and return the best `limit`.

    mode is hybrid, keyword or embedding (the latter two exist for the benchmark). All scoring is
    vectorised over the cached snapshot, so cost grows with the catalog only as one mat-vec.
    """
    snap = SNAPSHOTS.get(store, table)
    keep = (filters or Filters()).mask(snap)
    bm25 = np.zeros(len(snap.ids), dtype=np.float64)
    if words and mode != "embedding":
        column_weights = weights.policy_columns if table == "policies" else weights.primitive_columns
        keyword = store.fts_scores(f"{table}_fts", fts_query(words), column_weights)
        if keyword:
            row_ids = np.fromiter(keyword.keys(), dtype=np.int64, count=len(keyword))
            scores = np.fromiter(keyword.values(), dtype=np.float64, count=len(keyword))
            pos, present = snap.positions(row_ids)
            bm25[pos[present]] = scores[present]
    if mode == "keyword":
        keep &= bm25 > 0
    considered = int(keep.sum())
    if not considered:
        return Ranking([], 0)
    cosine = np.zeros(len(snap.ids), dtype=np.float64)
    if mode != "keyword":
        with blas_threads(1):
            cosine = (snap.matrix @ query_vec.astype(np.float32)).astype(np.float64)
    kw_top = float(bm25[keep].max(initial=0.0))
    kw_norm = bm25 / max(kw_top, weights.keyword_floor) if kw_top > 0 else np.zeros_like(bm25)
    if mode == "keyword":
        hybrid = kw_norm
    elif mode == "embedding":
        hybrid = cosine
    else:
        cos_top = float(np.clip(cosine[keep], 0.0, None).max(initial=0.0))
        cos_norm = np.clip(cosine, 0.0, None) / cos_top if cos_top > 0 else np.zeros_like(cosine)
        # With no keyword evidence at all, meaning alone decides instead of being scaled down.
        kw_weight = weights.keyword if kw_top > 0 else 0.0
        hybrid = (weights.cosine * cos_norm + kw_weight * kw_norm) / (weights.cosine + kw_weight)
    candidates = np.flatnonzero(keep)
    scores = hybrid[candidates]
    if len(candidates) > limit:
        part = np.argpartition(-scores, limit - 1)[:limit]
        candidates, scores = candidates[part], scores[part]
    # Stable order for ties: higher score first, then lower row id (older policy).
    order = np.lexsort((snap.ids[candidates], -scores))
    hits = [Hit(int(snap.ids[i]), float(hybrid[i]), float(bm25[i]), float(cosine[i])) for i in candidates[order]]
    return Ranking(hits, considered)


def fit_budget(payload: dict[str, Any], budget: int, shorten: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Drop trailing results (after shortening each once) until the JSON fits the byte budget."""

    def size() -> int:
        return len(json.dumps(payload, separators=(",", ":")).encode())

    if size() <= budget:
        return payload
    for item in payload["results"]:
        shorten(item)
    while payload["results"] and size() > budget:
        payload["results"].pop()
        payload["truncated"] = True
    payload["truncated"] = True
    return payload
