# SPDX-License-Identifier: Apache-2.0
"""Every operation declares a typed output, and its real answers are that model, unchanged.

Calls that need no VM and no daemon run for real here (a fresh repository, this host's /proc, the
bubblewrap sandbox): each answer must be a model, read back as the operation's declared output
without loss, and where the answer relays a domain service's result, its JSON must be exactly
what that service returned (typing the answer must not add, drop or change a key).
"""

from __future__ import annotations

import types
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from schedcp.services.operation import Answer, Operation, Reply, by_name, dump, registry
from schedcp.services.state import ServerOptions, ServerState

PROFILE = {
    "summary": "a parallel batch of 40 CPU-bound jobs with a long tail; the batch ends when the longest job does",
    "characteristics": {"classification": "cpu_bound", "batch": True, "parallelism": 1.9},
    "goal": "makespan",
}


def _models(output: Any) -> list[type]:
    if isinstance(output, types.UnionType) or typing.get_origin(output) is typing.Union:
        return [m for arg in typing.get_args(output) for m in _models(arg)]
    return [output]


def test_every_operation_declares_a_model_output():
    for op in registry():
        models = _models(op.output)
        assert models and all(isinstance(m, type) and issubclass(m, BaseModel) for m in models), op.name


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    mp = pytest.MonkeyPatch()
    mp.setenv("SCHEDCP_DATA_DIR", str(root / "data"))
    state = ServerState(ServerOptions(repo_db=root / "repo.db", artifacts_root=root / "mcp"))
    yield state
    state.close()
    mp.undo()


def call(state: ServerState, tool: str, /, **arguments: Any) -> Any:
    """Run an operation as the faces do and hold its answer to the declared output."""
    name = tool
    op: Operation = by_name(name)
    result = op.run(state, op.input.model_validate(arguments), lambda _m: None)
    value = result.value if isinstance(result, Answer) else result
    assert isinstance(value, BaseModel), f"{name} answered {type(value).__name__}, not a model"
    assert any(isinstance(value, m) for m in _models(op.output)), (name, type(value).__name__)
    again = op.check_output(value)
    assert dump(again) == dump(value), name
    if isinstance(value, Reply):
        assert value.model_extra in (None, {}), name
    return value


def test_repository_answers_are_the_repository_results_typed(state):
    repo = state.repository()
    from schedcp.services.repository import _normalise_truncation

    found = call(state, "search_schedulers", query="parallel compile, minimise makespan", k=3)
    raw = repo.search("parallel compile, minimise makespan", k=3, budget_bytes=4096)
    assert dump(found) == _normalise_truncation(raw, "results")
    assert found.results and found.results[0].score.hybrid >= found.results[-1].score.hybrid

    cut = call(state, "search_schedulers", query="parallel compile, minimise makespan", k=20, max_bytes=600)
    assert cut.truncated is not None and "max_bytes" in cut.truncated.note  # the repository's bool became a note

    summary = dump(call(state, "get_scheduler", name="fifo"))
    full = dump(call(state, "get_scheduler", name="fifo", detail="full"))
    shown = repo.show("fifo")
    shown["source_uri"] = "schedcp://scheduler/fifo/source"
    assert full == shown
    assert summary == {k: shown[k] for k in summary} and set(summary) < set(full)
    source = call(state, "get_scheduler", name="fifo", detail="source")
    assert "struct_ops" in source.source

    listed = call(state, "list_primitives")
    assert dump(listed) == {"count": len(repo.primitives()), "primitives": repo.primitives()}
    first = repo.primitives()[0]["name"]
    assert dump(call(state, "list_primitives", name=first)) == repo.primitive(first)
    ranked = call(state, "list_primitives", query="per-cpu queues with aging", k=2)
    assert len(ranked.results) == 2


def test_learning_answers_are_typed_and_unchanged(state):
    src = (
        "#include <scx/common.bpf.h>\n/* a stand-in policy for output typing */\n"
        'char _license[] SEC("license") = "GPL";\n'
    )
    added = call(
        state,
        "add_scheduler",
        name="outputs_probe",
        source=src,
        description="A policy added only to exercise the typed answers of the learning operations.",
    )
    assert added.status == "candidate"

    recorded = call(
        state,
        "record_result",
        profile=PROFILE,
        policy="outputs_probe",
        metrics={"makespan_s": 30.0},
        baseline={"makespan_s": 36.0},
    )
    assert recorded.beat_baseline is True and recorded.primary_metric == "makespan_s"

    best = call(state, "best_config", profile=PROFILE, k=2, min_similarity=0.1)
    raw = state.repository().best_config(PROFILE, k=2, min_similarity=0.1)
    assert dump(best) == raw
    assert best.best is not None and best.best.policy == "outputs_probe"

    note = call(state, "record_antipattern", note="starves interactive tasks on mixed loads", policy="outputs_probe")
    listed = call(state, "list_antipatterns", policy="outputs_probe")
    assert [a.id for a in listed.antipatterns] == [note.id]

    moved = call(
        state,
        "promote_scheduler",
        name="outputs_probe",
        reason="demoted after the recorded starvation",
        direction="demote",
        antipattern="do not use for latency-sensitive mixes",
    )
    assert dump(moved)["from"] == "candidate" and dump(moved)["to"] == "deprecated"
    assert moved.antipattern is not None
    full = call(state, "get_scheduler", name="outputs_probe", detail="full")
    assert full.status_log and full.status_log[0].to_status == "deprecated"
    assert full.recent_results and full.recent_results[0].beat_baseline is True


def test_analysis_answers_are_typed(state):
    from schedcp.analysis.sandbox import SafeReader

    loadavg = call(state, "read_file", path="/proc/loadavg")
    raw = SafeReader().read("/proc/loadavg", max_bytes=4096 - 400)
    assert set(dump(loadavg)) == set(raw) - {"truncated"} and loadavg.type == "file"  # all of it: no cut note
    listing = call(state, "read_file", path="/proc/sys/kernel")
    assert listing.type == "dir" and listing.count > 10
    paged = call(state, "read_file", path="/proc/self/status", max_bytes=512)
    assert paged.next_offset and "offset=" in paged.truncated.note

    system = call(state, "workload_summary", duration_s=0.3)
    assert dump(system)["target"] == "system"
    summary = call(state, "workload_summary", command=["sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done"])
    assert dump(summary)["class"] and summary.cpu is not None
    record = call(state, "workload_profile", command=["sleep", "0.5"], detail="record", duration_s=2)
    assert record.for_repository.goal and record.profile.goal == record.for_repository.goal
    profile = call(state, "workload_profile", command=["sleep", "0.5"], duration_s=2)
    assert dump(profile)["profile_uri"].startswith("schedcp://profile/")

    ran = call(state, "run_sandboxed", argv=["echo", "typed"])
    assert ran.stdout == "typed\n"
    watch = call(state, "watch_workload", kind="process_appears", comm="outputs-probe*")
    assert call(state, "unwatch_workload", watch_id=watch.watch_id).stopped is True
    history = call(state, "get_feedback", workload_key="outputs-probe")
    assert history.rows == []


def test_candidate_check_and_build_are_typed(state):
    assert call(state, "check_candidate", policy="fifo").kind == "bpf"
    built = call(state, "build_scheduler", scheduler="fifo")
    assert built.ok and built.build_id is None and built.object_sha256


@pytest.mark.parametrize("backend", ["bpftrace", "tracefs"])
def test_probe_results_are_typed(backend):
    """run_probe relays the daemon's probe (bpftrace on a host that has it, else tracefs) or, in a testbed,
    the guest's tracefs probe: both backends' real results are the declared output, unchanged."""
    from schedcp.analysis import probes
    from schedcp.services.analysis import ProbeResult

    raw = probes.run_probe(["runqlat", "wakeup", "runtime", "migrations"], 0.5, backend=backend)
    typed = by_name("run_probe").check_output(ProbeResult.model_validate(raw))
    assert isinstance(typed, ProbeResult) and typed.available and typed.backend == backend
    assert dump(typed) == raw
    assert typed.runqlat is not None and typed.runqlat.count >= 0
