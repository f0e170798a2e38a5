# SPDX-License-Identifier: Apache-2.0
"""Hybrid search: quality smoke checks, filters, explanations, budgets and hostile query text."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedcp.errors import UsageError
from schedcp.repository.search import fts_query, terms
from schedcp.repository.service import RepositoryService
from test_repository_fixtures import generated, open_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RepositoryService]:
    yield from open_service(tmp_path)


def top(service: RepositoryService, query: str, k: int = 3, **filters: object) -> list[str]:
    return [r["name"] for r in service.search(query, k=k, **filters)["results"]]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("my game stutters while shaders compile in the background", {"scx_lavd", "scx_bpfland"}),
        ("containers on one host should share CPU according to their cgroup weights", {"scx_flatcg"}),
        ("HPC job wants no timer interrupts on its cores (nohz_full)", {"scx_tickless", "scx_central"}),
        ("large parallel build across NUMA nodes, balance load between chiplets", {"scx_rusty"}),
        ("isolate a latency-critical service from batch jobs using rules on cgroups", {"scx_layered"}),
    ],
)
def test_search_finds_the_obvious_upstream_policy(service: RepositoryService, query: str, expected: set[str]) -> None:
    assert expected & set(top(service, query))


def test_results_explain_themselves(service: RepositoryService) -> None:
    out = service.search("gaming frame times", k=2)
    first = out["results"][0]
    assert set(first["score"]) == {"hybrid", "bm25", "cosine"}
    assert 0.0 <= first["score"]["hybrid"] <= 1.0 and first["score"]["cosine"] > 0
    assert first["matched"], "keyword matches are reported per field"
    assert all(isinstance(v, list) for v in first["matched"].values())
    assert "gaming" in json.dumps(first["matched"])
    assert len(first["excerpt"]) <= 230
    assert out["terms"] == ["gaming", "frame", "times"]
    scores = [r["score"]["hybrid"] for r in out["results"]]
    assert scores == sorted(scores, reverse=True)


def test_meaning_alone_can_find_a_policy(service: RepositoryService) -> None:
    # No term of this query occurs in any policy, so only the embedding can rank the gaming policies.
    out = service.search("my Steam Deck stutters", k=3)
    assert all(r["score"]["bm25"] == 0 for r in out["results"])
    assert {"scx_lavd", "scx_bpfland"} & {r["name"] for r in out["results"]}


def test_filters(service: RepositoryService) -> None:
    service.add_policy(generated("gen_new_kernel", min_kernel="7.3"))
    service.add_policy(generated("gen_old_kernel", min_kernel="6.13"))
    assert {r["kind"] for r in service.search("fifo build jobs", k=20, kind="generated")["results"]} == {"generated"}
    on_612 = top(service, "fifo build jobs", k=50, kernel="6.12")
    assert "gen_new_kernel" not in on_612 and "gen_old_kernel" not in on_612
    on_70 = top(service, "fifo build jobs", k=50, kernel="7.0")
    assert "gen_old_kernel" in on_70 and "gen_new_kernel" not in on_70
    assert "gen_new_kernel" in top(service, "fifo build jobs", k=50, kernel="7.10")
    assert top(service, "fifo build jobs", k=50, status="production") == []
    service.set_status("gen_old_kernel", "deprecated", reason="test")
    assert "gen_old_kernel" not in top(service, "fifo build jobs", k=50)
    assert "gen_old_kernel" in top(service, "fifo build jobs", k=50, status="deprecated")
    assert "gen_old_kernel" in top(service, "fifo build jobs", k=50, status="any")


@pytest.mark.parametrize(
    "bad",
    [
        {"status": "shipped"},
        {"kind": "wasm"},
        {"kernel": "6"},
        {"kernel": "6.12; DROP TABLE policies"},
        {"k": 0},
        {"k": 51},
    ],
)
def test_bad_filters_are_usage_errors(service: RepositoryService, bad: dict) -> None:
    with pytest.raises(UsageError):
        service.search("anything", **bad)


@pytest.mark.parametrize(
    "query",
    [
        "'; DROP TABLE policies; --",
        'latency" OR name:* NEAR(a b) ^x',
        "AND OR NOT",
        "scx_rusty*",
        '"unterminated',
        "policies_fts MATCH 'x'",
        "(((((",
        "😀 ünïcödé テスト",
        "-- /* */ ; \x00",
    ],
)
def test_hostile_query_text_is_harmless(service: RepositoryService, query: str) -> None:
    before = service.store.count("policies")
    out = service.search(query, k=3)
    assert isinstance(out["results"], list)
    assert service.store.count("policies") == before
    assert service.store.integrity() == "ok"


def test_fts_query_is_always_quoted_terms() -> None:
    words = terms('Latency" OR name:x* NEAR(a b) AND the scheduler p99')
    assert words == ["latency", "name", "near", "p99"]
    assert fts_query(words) == '"latency" OR "name" OR "near" OR "p99"'
    assert terms("the a of and") == []


def test_empty_or_huge_queries_are_refused(service: RepositoryService) -> None:
    with pytest.raises(UsageError, match="empty"):
        service.search("   ")
    with pytest.raises(UsageError, match="longer than"):
        service.search("x" * 1001)


def test_byte_budget_is_respected(service: RepositoryService) -> None:
    full = service.search("latency", k=20, budget_bytes=100_000)
    small = service.search("latency", k=20, budget_bytes=1500)
    assert not full["truncated"] and len(full["results"]) > 5
    assert small["truncated"]
    assert len(json.dumps(small, separators=(",", ":")).encode()) <= 1500
    assert [r["name"] for r in small["results"]] == [r["name"] for r in full["results"]][: len(small["results"])]
    assert small["budget_bytes"] == 1500


def test_new_policies_are_visible_to_other_connections(service: RepositoryService) -> None:
    other = RepositoryService(service.store.path, auto_seed=False)
    try:
        assert "gen_visible" not in top(other, "zebra striped quantum scheduler", k=3)
        service.add_policy(generated("gen_visible", description="A zebra striped quantum scheduler for tests."))
        assert top(other, "zebra striped quantum scheduler", k=1) == ["gen_visible"]
    finally:
        other.close()


def test_primitive_search(service: RepositoryService) -> None:
    assert (
        service.search_primitives("measure task runtime in task local storage")["results"][0]["name"]
        == "task_runtime_storage"
    )
    assert (
        service.search_primitives("bound the credit a sleeping task gets back")["results"][0]["name"]
        == "vtime_sleeper_credit"
    )
    names = [r["name"] for r in service.search_primitives("find an idle cpu when a task wakes up", k=2)["results"]]
    assert "idle_cpu_select" in names
