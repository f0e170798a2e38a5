# SPDX-License-Identifier: Apache-2.0
"""Careless or hostile input: validated up front, stored verbatim when legal, never corrupting."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from schedcp.errors import UsageError
from schedcp.repository.models import MAX_SOURCE_BYTES
from schedcp.repository.service import RepositoryService
from test_repository_fixtures import generated, open_service, profile


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RepositoryService]:
    yield from open_service(tmp_path)


SQLISH = "x'); DROP TABLE policies; --"


def test_duplicate_names_are_refused_without_side_effects(service: RepositoryService) -> None:
    service.add_policy(generated("gen_dup"))
    counts = {t: service.store.count(t) for t in ("policies", "status_log")}
    with pytest.raises(UsageError, match="already exists") as info:
        service.add_policy(generated("gen_dup", description="A different description for the same name."))
    assert info.value.code == "duplicate"
    assert {t: service.store.count(t) for t in counts} == counts
    assert service.show("gen_dup")["description"].startswith("Generated FIFO")
    with pytest.raises(UsageError, match="already exists"):
        service.add_policy(generated("scx_rusty"))  # catalog names are taken too


@pytest.mark.parametrize("name", ["Upper", "with space", "../etc/passwd", "a", "x" * 65, SQLISH, "é_accent", ""])
def test_bad_names(service: RepositoryService, name: str) -> None:
    with pytest.raises(UsageError, match="name"):
        service.add_policy(generated(name))


def test_source_size_cap_is_exact(service: RepositoryService) -> None:
    body = "/* pad */\n"
    fits = body + "x" * (MAX_SOURCE_BYTES - len(body))
    assert len(fits.encode()) == MAX_SOURCE_BYTES
    service.add_policy(generated("gen_big", source=fits))
    assert service.show("gen_big")["source_bytes"] == MAX_SOURCE_BYTES
    with pytest.raises(UsageError, match="larger than 256 KiB"):
        service.add_policy(generated("gen_too_big", source=fits + "y"))
    # Multi-byte characters count as bytes, not characters.
    with pytest.raises(UsageError, match="larger than"):
        service.add_policy(generated("gen_wide", source="é" * (MAX_SOURCE_BYTES // 2 + 1)))
    with pytest.raises(UsageError, match="NUL"):
        service.add_policy(generated("gen_nul", source="int x;\x00"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"description": "too short"}, "description"),
        ({"description": "x" * 4001}, "description"),
        ({"tags": ["ok", "bad;tag"]}, "tag"),
        ({"tags": [f"t{i}" for i in range(31)]}, "tags"),
        ({"workloads": ["x"]}, "workload"),
        ({"min_kernel": "6"}, "min_kernel"),
        ({"min_kernel": "6.12; DROP"}, "min_kernel"),
        ({"kind": "wasm"}, "kind"),
        ({"status": "production"}, "candidate"),
        ({"source": "   "}, "source"),
        ({"unknown_field": 1}, "unknown_field"),
        (
            {
                "tunables": [
                    {
                        "name": "slice_us",
                        "type": "u64",
                        "description": "slice",
                        "variable": "slice_us",
                        "flag": "--slice-us",
                    }
                ]
            },
            "exactly one",
        ),
        ({"tunables": [{"name": "slice_us", "type": "u64", "description": "slice", "flag": "--slice-us"}]}, "flags"),
        (
            {"tunables": [{"name": "s", "type": "u64", "description": "slice", "variable": "s", "min": 9, "max": 1}]},
            "above max",
        ),
        ({"tunables": [{"name": "s", "type": "enum", "description": "mode", "variable": "s"}]}, "choices"),
        (
            {
                "tunables": [
                    {"name": "s", "type": "u64", "description": "first", "variable": "s"},
                    {"name": "s", "type": "u64", "description": "second", "variable": "s"},
                ]
            },
            "unique",
        ),
    ],
)
def test_malformed_metadata(service: RepositoryService, change: dict, message: str) -> None:
    before = service.store.count("policies")
    with pytest.raises(UsageError, match=message):
        service.add_policy(generated("gen_bad", **change))
    assert service.store.count("policies") == before


def test_external_policy_rules(service: RepositoryService) -> None:
    external = {
        "name": "scx_custom",
        "kind": "external",
        "description": "An upstream binary we only describe.",
        "tunables": [{"name": "slice_us", "type": "u64", "description": "slice", "flag": "--slice-us"}],
    }
    with pytest.raises(UsageError, match="binary"):
        service.add_policy(external)
    with pytest.raises(UsageError, match="flags, not variables"):
        service.add_policy(
            {
                **external,
                "binary": "scx_custom",
                "tunables": [{"name": "s", "type": "u64", "description": "slice", "variable": "s"}],
            }
        )
    with pytest.raises(UsageError, match="binary"):
        service.add_policy({**external, "binary": "rm -rf /"})
    shown = service.add_policy({**external, "binary": "scx_custom"})
    assert shown["kind"] == "external" and shown["usable"] is False and shown["source_bytes"] == 0
    with pytest.raises(UsageError, match="without stored source"):
        service.source("scx_custom")


def test_sql_looking_text_is_stored_verbatim(service: RepositoryService) -> None:
    description = f'Looks like SQL: {SQLISH} and FTS: name:* NEAR("a" b) OR ^x.'
    service.add_policy(generated("gen_sqlish", description=description, workloads=[SQLISH], tags=["drop table"]))
    shown = service.show("gen_sqlish")
    assert shown["description"] == description and shown["workloads"] == [SQLISH]
    service.record_result(
        {
            "policy": "gen_sqlish",
            "config": {"mode": SQLISH},
            "profile": profile(SQLISH, "makespan", note=SQLISH),
            "metrics": {"makespan_s": 1.0},
            "baseline": {"makespan_s": 2.0},
            "notes": SQLISH,
        }
    )
    service.annotate_antipattern(SQLISH, policy="gen_sqlish")
    assert service.history("gen_sqlish")["results"][0]["config"] == {"mode": SQLISH}
    assert service.search("DROP TABLE policies", k=1)["results"][0]["name"] == "gen_sqlish"
    assert service.store.integrity() == "ok"
    assert service.store.count("policies") > 11


@pytest.mark.parametrize("name", [SQLISH, "scx_rusty' OR '1'='1", "nope"])
def test_lookups_with_hostile_names_just_miss(service: RepositoryService, name: str) -> None:
    for call in (service.show, service.history, service.lineage, service.source):
        with pytest.raises(UsageError) as info:
            call(name)
        assert info.value.code == "not_found"
    with pytest.raises(UsageError):
        service.set_status(name, "deprecated", reason="hostile")


def test_record_build_checks_the_digest(service: RepositoryService) -> None:
    with pytest.raises(UsageError, match="64 lowercase hex"):
        service.record_build("scx_simple", "abc")
    with pytest.raises(UsageError, match="64 lowercase hex"):
        service.record_build("scx_simple", "G" * 64)
    service.add_policy(generated("gen_built"))
    service.record_build("gen_built", "ab" * 32)
    assert service.show("gen_built")["object_sha256"] == "ab" * 32


def test_limits_on_history_and_best_config(service: RepositoryService) -> None:
    with pytest.raises(UsageError):
        service.history("scx_simple", limit=0)
    with pytest.raises(UsageError):
        service.best_config(profile("build", "makespan"), k=0)
    with pytest.raises(UsageError):
        service.best_config({"summary": "no goal given"})
    with pytest.raises(UsageError, match="a new policy starts as candidate"):
        service.add_policy(generated("gen_agent", status="verified"), origin="agent")
