# SPDX-License-Identifier: Apache-2.0
"""The whole verifier against the real sched_ext kernel in QEMU, one fresh VM per verification.

Each case runs the real pipeline (build → static → kernel verifier → dynamic → performance) and
checks that the corpus is caught at the right stage with an actionable finding, and that a good
scheduler passes with a token the deploy path accepts exactly once.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import qemu_children, run_cli
from schedcp.toolchain import build
from schedcp.verifier import keys, tokens
from schedcp.verifier.nonces import NonceStore
from schedcp.verifier.pipeline import VerifyOptions, verify

pytestmark = pytest.mark.vm
CORPUS = Path(__file__).resolve().parent / "corpus"


def _marker_line(path: Path, marker: str = "REJECTED-HERE") -> int:
    return next(i for i, line in enumerate(path.read_text().split("\n"), 1) if marker in line)


def _run(name: str, tmp_path: Path, **kwargs):
    return verify(VerifyOptions(target=str(CORPUS / name), key_path=tmp_path / "key", **kwargs))


def test_good_scheduler_passes_with_a_single_use_token(tmp_path: Path, unstable_kernel) -> None:
    source = CORPUS / "good" / "header_fifo.bpf.c"
    key = tmp_path / "key" / "verifier_ed25519"
    proc = run_cli(
        "verify",
        str(source),
        "--json",
        "--workload",
        "python3 -c 'sum(range(2 * 10**6))'",
        env={"SCHEDCP_VERIFIER_KEY": str(key)},
        timeout=400,
    )
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report["reason"]
    assert report["verdict"] == "pass" and [s["status"] for s in report["stages"]].count("failed") == 0
    assert report["metrics"]["scheduler"]["cpu_busy"] > 0.5 and report["metrics"]["workload"]["scheduler_exit"] == 0
    assert report["timings"]["total"] < 120 or report["metrics"].get("guest_crashes")
    assert not qemu_children()
    obj_sha = build.build_for_kernel(str(source), unstable_kernel).object_sha256
    assert report["object_sha256"] == obj_sha
    with NonceStore(tmp_path / "nonces.sqlite") as store:
        claims = tokens.verify_token(
            report["token"],
            object_sha256=obj_sha,
            config={},
            kernel=unstable_kernel.release,
            public_key=keys.load_public(key),
            nonce_store=store,
        )
        assert claims.rpt == _digest_without_token(report)
        with pytest.raises(tokens.TokenError):
            tokens.verify_token(
                report["token"],
                object_sha256=obj_sha,
                config={},
                kernel=unstable_kernel.release,
                public_key=keys.load_public(key),
                nonce_store=store,
            )


def _digest_without_token(report: dict) -> str:
    from schedcp.verifier.report import Report

    return Report.model_validate({**report, "token": None}).digest()


@pytest.mark.parametrize("name", ["bad/null_deref.bpf.c", "bad/array_oob.bpf.c"])
def test_kernel_verifier_rejection_is_mapped_to_the_source_line(name: str, tmp_path: Path) -> None:
    report = _run(name, tmp_path)
    stage = report.stage("kernel_verifier")
    assert report.verdict == "fail" and stage is not None and stage.status == "failed"
    finding = stage.findings[0]
    assert finding.id == "kv-rejected" and finding.line == _marker_line(CORPUS / name)
    assert finding.code and "REJECTED-HERE" in finding.code
    assert finding.hint and finding.evidence and report.stage("dynamic").status == "skipped"
    assert report.token is None


def test_stalling_scheduler_is_ejected_in_the_dynamic_stage(tmp_path: Path) -> None:
    report = _run("bad/parity_drop.bpf.c", tmp_path)
    assert report.stage("static").status == "passed"  # the queue id is computed at run time
    dynamic = report.stage("dynamic")
    assert dynamic.status == "failed" and report.stage("performance").status == "skipped"
    ejected = [f for f in dynamic.findings if f.id == "dyn-ejected"]
    assert ejected and "runnable task stall" in ejected[0].message
    assert any(e.get("reason") == "runnable task stall" for e in report.kernel_events)


def test_task_dropping_scheduler_is_caught_statically_and_ejected_dynamically(tmp_path: Path) -> None:
    report = _run("bad/enqueue_drop.bpf.c", tmp_path, keep_going=True)
    assert [f.id for f in report.stage("static").errors] == ["enqueue-drops-task"]
    assert report.stage("kernel_verifier").status == "passed"
    assert any(f.id == "dyn-ejected" and "stall" in f.message for f in report.stage("dynamic").findings)
    assert report.verdict == "fail" and report.reason.startswith("static:")


def test_idle_cpu_waste_is_a_performance_regression(tmp_path: Path) -> None:
    # keep_going: on an overloaded host the crowded CPU's wakeup latency may already fail the dynamic
    # stage; the performance stage must still name the idle CPU.
    report = _run("bad/one_cpu.bpf.c", tmp_path, keep_going=True)
    assert report.verdict == "fail" and report.stage("static").status == "passed"
    perf = report.stage("performance")
    assert perf.status == "failed" and perf.errors[0].id == "perf-regression"
    table = perf.details["load"]["cpu_busy"]
    assert table["scheduler"] < 0.75 * table["eevdf"]
