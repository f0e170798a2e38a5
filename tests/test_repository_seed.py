# SPDX-License-Identifier: Apache-2.0
"""Seeding: idempotent, picks up new library schedulers, honest upstream catalog, primitives."""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedcp.errors import SchedcpError
from schedcp.repository import catalog_sources
from schedcp.repository.service import RepositoryService
from schedcp.toolchain import metadata
from test_repository_fixtures import generated, open_service


@pytest.fixture
def service(tmp_path: Path) -> Iterator[RepositoryService]:
    yield from open_service(tmp_path)


UPSTREAM = [
    "scx_rusty",
    "scx_lavd",
    "scx_bpfland",
    "scx_flash",
    "scx_layered",
    "scx_p2dq",
    "scx_simple",
    "scx_central",
    "scx_nest",
    "scx_flatcg",
    "scx_tickless",
]


def test_upstream_catalog_is_complete_and_maps_every_tunable_to_a_flag() -> None:
    policies, problems = catalog_sources.upstream_policies()
    assert problems == []
    by_name = {p.name: p for p in policies}
    assert set(UPSTREAM) <= set(by_name)
    for p in policies:
        assert p.kind == "external" and p.binary == p.name
        assert p.upstream.startswith("sched-ext/scx ")
        assert p.tunables, f"{p.name} lists no tunables"
        for t in p.tunables:
            assert t.flag and t.flag.startswith("-") and t.variable is None
    assert {t.flag for t in by_name["scx_rusty"].tunables} >= {"--slice-us-underutil", "--greedy-threshold"}
    assert {t.flag for t in by_name["scx_lavd"].tunables} >= {"--slice-max-us", "--performance"}


def test_primitives_parse_from_their_headers() -> None:
    prims, problems = catalog_sources.primitives()
    assert problems == []
    names = {p.name for p in prims}
    assert len(prims) >= 8
    assert {
        "idle_cpu_select",
        "vtime_sleeper_credit",
        "aging",
        "per_cpu_queues",
        "task_runtime_storage",
        "central_dispatch",
    } <= names
    for p in prims:
        assert len(p.description) >= 80 and p.tags
        assert p.snippet.startswith("/*") and f"primitive: {p.name}" in p.snippet


def test_bad_primitive_header_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "good_one.c").write_text(
        "/*\n * primitive: good_one\n * tags: a\n *\n * Long enough description of a good primitive.\n */\nint x;\n"
    )
    (tmp_path / "no_header.c").write_text("int y;\n")
    (tmp_path / "wrong_name.c").write_text("/*\n * primitive: other\n *\n * Some description that is long.\n */\n")
    prims, problems = catalog_sources.primitives(tmp_path)
    assert [p.name for p in prims] == ["good_one"]
    assert len(problems) == 2


def test_seed_is_idempotent(service: RepositoryService) -> None:
    counts = {t: service.store.count(t) for t in ("policies", "primitives", "status_log")}
    generation = service.store.generation()
    report = service.seed()
    assert report["added"] == [] and report["updated"] == [] and report["primitives"]["changed"] == []
    assert report["unchanged"] == counts["policies"]
    assert {t: service.store.count(t) for t in counts} == counts
    assert service.store.generation() == generation


def _library(tmp_path: Path, names: list[str]) -> Path:
    lib = tmp_path / "library"
    lib.mkdir(exist_ok=True)
    for name in names:
        (lib / f"{name}.bpf.c").write_text(f"/* {name} */\nconst volatile u64 slice_us = 5000;\n")
        (lib / f"{name}.toml").write_text(
            f'name = "{name}"\ntitle = "Test policy {name}"\n'
            'description = "A throwaway policy written by the seeding test to check updates."\n'
            'workloads = ["tests"]\ntags = ["test"]\n'
            '[[tunables]]\nname = "slice_us"\ntype = "u64"\ndefault = 5000\nmin = 100\nmax = 100000\n'
            'unit = "us"\ndescription = "Slice length."\n'
        )
    return lib


def test_seed_adds_new_library_schedulers_and_refreshes_changed_ones(
    service: RepositoryService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lib = _library(tmp_path, ["zz_first"])
    monkeypatch.setattr(metadata, "library_dir", lambda: lib)
    assert service.seed()["added"] == ["zz_first"]
    shown = service.show("zz_first")
    assert shown["kind"] == "bpf" and shown["status"] == "verified"
    assert shown["tunables"][0]["variable"] == "slice_us" and shown["tunables"][0]["max"] == 100000
    service.record_result(
        {
            "policy": "zz_first",
            "profile": {"summary": "test run", "characteristics": {}, "goal": "makespan"},
            "metrics": {"makespan_s": 1.0},
            "baseline": {"makespan_s": 2.0},
        }
    )
    with pytest.raises(SchedcpError, match="no trial measured"):  # the reported result is no evidence
        service.set_status("zz_first", "production", reason="won its benchmark")
    service.record_measured_trial(
        {
            "source_sha256": shown["source_sha256"],
            "measured_by": "run_trial",
            "kernel": "7.2.13",
            "workload": "test run",
            "ratio": 2.0,
            "beat_baseline": True,
            "stayed_enabled": True,
        }
    )
    service.set_status("zz_first", "production", reason="won its benchmark")

    _library(tmp_path, ["zz_second"])
    (lib / "zz_first.bpf.c").write_text("/* zz_first, edited */\nconst volatile u64 slice_us = 3000;\n")
    (lib / "broken.toml").write_text("name = [unclosed\n")
    report = service.seed()
    assert report["added"] == ["zz_second"] and report["updated"] == ["zz_first"]
    assert any("broken.toml" in p for p in report["problems"])
    after = service.show("zz_first", include_source=True)
    assert "edited" in after["source"]
    assert after["status"] == "production" and after["results"]["results"] == 1  # history survives
    assert service.search("throwaway seeding test policy", k=2)["results"][0]["name"].startswith("zz_")


def test_seed_never_overwrites_a_user_policy_with_the_same_name(
    service: RepositoryService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.add_policy(generated("zz_taken"))
    lib = _library(tmp_path, ["zz_taken"])
    monkeypatch.setattr(metadata, "library_dir", lambda: lib)
    report = service.seed()
    assert report["added"] == [] and any("zz_taken" in s for s in report["skipped"])
    assert service.show("zz_taken")["kind"] == "generated"


def test_usable_only_when_the_binary_is_on_path(
    service: RepositoryService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    assert service.show("scx_rusty")["usable"] is False
    fake = tmp_path / "scx_rusty"
    fake.write_text("#!/bin/sh\nexit 0\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    assert service.show("scx_rusty")["usable"] is True
    hits = {r["name"]: r["usable"] for r in service.search("load balancing numa", k=20)["results"]}
    assert hits["scx_rusty"] is True and hits.get("scx_lavd", False) is False
    assert os.environ["PATH"] == str(tmp_path)


def test_catalog_file_is_valid_json_with_only_known_keys() -> None:
    data = json.loads(catalog_sources.CATALOG_FILE.read_text())
    assert "about" in data
    for entry in data["policies"]:
        assert set(entry) <= {
            "name",
            "title",
            "description",
            "workloads",
            "tags",
            "binary",
            "upstream",
            "tunables",
            "min_kernel",
        }
