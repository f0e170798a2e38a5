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
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schedcp.errors import UsageError
from schedcp.repository.models import KERNEL_PATTERN, KINDS, STATUSES
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
STOPWORDS = frozenset({
    "a", "about", "above", "after", "again", "all", "also", "am", "an", "and", "any", "are", "as", "at",
    "be", "because", "been", "before", "being", "below", "between", "both", "but", "by", "can", "could",
    "did", "do", "does", "doing", "down", "during", "each", "few", "for", "from", "further", "had",
    "has", "have", "having", "he", "her", "here", "hers", "him", "his", "how", "i", "if", "in", "into",
    "is", "it", "its", "itself", "just", "me", "more", "most", "my", "myself", "no", "nor", "not",
    "now", "of", "off", "on", "once", "only", "or", "other", "our", "ours", "out", "over", "own",
    "same", "she", "should", "so", "some", "such", "than", "that", "the", "their", "theirs", "them",
    "then", "there", "these", "they", "this", "those", "through", "to", "too", "under", "until", "up",
    "very", "was", "we", "were", "what", "when", "where", "which", "while", "who", "whom", "why",
    "will", "with", "would", "you", "your", "yours", "want", "wants", "need", "needs", "please", "use",
    "using", "make", "makes", "get", "gets", "like", "let", "lets", "scheduler", "schedulers",
    "scheduling", "policy", "policies", "sched", "ext", "linux", "run", "runs", "running", "workload",
    "workloads", "best", "good", "better", "find", "something", "thing", "things", "kind",
    "lot", "lots", "really"
})


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


def _normalise(values: np.ndarray) -> np.ndarray:
    """Scale to 0..1 relative to the best candidate; all-equal or empty gives zeros."""
    if values.size == 0:
        return values
    top = float(values.max())
    return values / top if top > 0 else np.zeros_like(values)


def _rescale_cosine(values: np.ndarray) -> np.ndarray:
    # Relative to the best candidate, like keywords. A min-max stretch was tried and rejected: it
    # turns tiny cosine differences between equally unrelated policies into a full 0..1 spread
    # (see docs/repository-benchmark.md).
    return _normalise(np.clip(values, 0.0, None))


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


class MatrixCache:
    """Embedding matrices per (database, table), reloaded only when the generation counter moves.

    Reading 10,000 BLOBs on every query would dominate latency; the counter lives in the database,
    so a policy added by another process invalidates this process's copy too.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, str], tuple[int, np.ndarray, np.ndarray, dict[int, int]]] = {}

    def get(self, store: Store, table: str) -> tuple[np.ndarray, np.ndarray, dict[int, int]]:
        generation = store.generation()
        key = (str(store.path), table)
        with self._lock:
            hit = self._cache.get(key)
            if hit and hit[0] == generation:
                return hit[1], hit[2], hit[3]
        ids, matrix = store.embedding_matrix(table)
        index = {int(row_id): i for i, row_id in enumerate(ids)}
        with self._lock:
            self._cache[key] = (generation, ids, matrix, index)
        return ids, matrix, index


MATRICES = MatrixCache()


@dataclass
class Hit:
    row_id: int
    hybrid: float
    bm25: float
    cosine: float
    parts: dict[str, float] = field(default_factory=dict)


def rank(store: Store, *, table: str, query_vec: np.ndarray, words: list[str], candidates: set[int],
         weights: Weights, mode: str = "hybrid") -> list[Hit]:
    """Score every candidate; mode is hybrid, keyword or embedding (the latter two for benchmarks)."""
    fts_table = f"{table}_fts"
    column_weights = weights.policy_columns if table == "policies" else weights.primitive_columns
    keyword = store.fts_scores(fts_table, fts_query(words), column_weights) if words and mode != "embedding" else {}
    _, matrix, index = MATRICES.get(store, table)
    pool = sorted(candidates if mode != "keyword" else (candidates & set(keyword)))
    if not pool:
        return []
    bm25 = np.array([keyword.get(i, 0.0) for i in pool], dtype=np.float64)
    cosine = np.zeros(len(pool), dtype=np.float64)
    if mode != "keyword" and matrix.shape[0]:
        rows = [index.get(i, -1) for i in pool]
        present = np.array([r >= 0 for r in rows])
        if present.any():
            sims = matrix[[r for r in rows if r >= 0]] @ query_vec.astype(np.float32)
            cosine[present] = sims
    kw_norm = bm25 / max(float(bm25.max(initial=0.0)), weights.keyword_floor)
    cos_norm = _rescale_cosine(cosine) if mode != "keyword" else np.zeros_like(cosine)
    if mode == "keyword":
        hybrid = kw_norm
    elif mode == "embedding":
        hybrid = cosine
    else:
        # With no keyword evidence at all, meaning alone decides instead of being scaled down.
        kw_weight = weights.keyword if keyword else 0.0
        total = weights.cosine + kw_weight
        hybrid = (weights.cosine * cos_norm + kw_weight * kw_norm) / total
    order = np.argsort(-hybrid, kind="stable")
    return [Hit(pool[i], float(hybrid[i]), float(bm25[i]), float(cosine[i])) for i in order]


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
