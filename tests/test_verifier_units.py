# SPDX-License-Identifier: Apache-2.0
"""Pure parts of the verifier: verifier-log mapping, load judging, perf comparison, report bounds."""

from __future__ import annotations

import pytest

from schedcp.errors import SchedcpError, UsageError
from schedcp.verifier import load, performance
from schedcp.verifier.kernellog import diagnose
from schedcp.verifier.pipeline import VerifyOptions, parse_workload
from schedcp.verifier.report import MAX_FINDINGS_PER_STAGE, Finding, Report, StageResult, render_text
from schedcp.verifier.vmstages import VmPlan, VmStages

REJECT_LOG = """libbpf: prog 'x_enqueue': BPF program load failed: Permission denied
libbpf: prog 'x_enqueue': -- BEGIN PROG LOAD LOG --
0: R1=ctx() R10=fp0
; void BPF_PROG(x_enqueue, struct task_struct *p, u64 enq_flags) @ x.bpf.c:20
0: (79) r6 = *(u64 *)(r1 +8)          ; R1=ctx() R6=scalar()
; if (bpf_ksym_exists(foo)) @ schedcp.h:200
3: (85) call bpf_map_lookup_elem#1    ; R0=map_value_or_null(id=1)
; tctx->n++; @ x.bpf.c:24
9: (79) r1 = *(u64 *)(r0 +0)
R0 invalid mem access 'map_value_or_null'
processed 9 insns (limit 1000000) max_states_per_insn 0 total_states 0 peak_states 0 mark_read 0
-- END PROG LOAD LOG --
libbpf: prog 'x_enqueue': failed to load: -13
libbpf: failed to load object '/tmp/schedcp-node/obj/x.bpf.o'""".splitlines()


def test_verifier_log_maps_to_the_failing_source_line() -> None:
    diag = diagnose(REJECT_LOG, "x.bpf.c")
    assert diag.program == "x_enqueue"
    assert diag.error == "R0 invalid mem access 'map_value_or_null'"
    assert (diag.source_file, diag.source_line, diag.source_code) == ("x.bpf.c", 24, "tctx->n++;")
    assert diag.instruction and diag.instruction.startswith("9:")
    assert "NULL" in diag.hint
    assert diag.excerpt[-1] == diag.error and len(diag.excerpt) <= 24


def test_unreleased_reference_error_spans_lines() -> None:
    log = [
        "libbpf: prog 'p': BPF program load failed: Invalid argument",
        "-- BEGIN PROG LOAD LOG --",
        "; } @ leak.bpf.c:22",
        "12: (95) exit",
        "Unreleased reference id=2 alloc_insn=4",
        "processed 30 insns",
        "-- END PROG LOAD LOG --",
    ]
    diag = diagnose(log, "leak.bpf.c")
    assert diag.error == "Unreleased reference id=2 alloc_insn=4" and diag.source_line == 22
    assert "release" in diag.hint


def test_libbpf_failure_without_program_log() -> None:
    log = [
        "libbpf: extern (func ksym) 'scx_bpf_dispatch': not found in kernel or module BTFs",
        "libbpf: failed to load object '/tmp/x.o'",
    ]
    diag = diagnose(log, "old.bpf.c")
    assert "scx_bpf_dispatch" in diag.error and diag.source_line is None
    assert "bpf_ksym_exists" in diag.hint
    assert diagnose([], "x.bpf.c", fallback_cause="boom").error == "boom"


def _load(**tasks) -> dict:
    base = {
        "equal0": {"chunks": 500, "cpu_s": 1.5, "run_s": 5.0, "max_gap_s": 0.1, "first_progress_s": 0.0},
        "equal1": {"chunks": 480, "cpu_s": 1.4, "run_s": 5.0, "max_gap_s": 0.1, "first_progress_s": 0.0},
        "late": {"chunks": 200, "cpu_s": 0.7, "run_s": 2.5, "max_gap_s": 0.1, "first_progress_s": 0.01},
        "sleeper0": {"wakeups": 900, "lat_p50_ms": 1.0, "lat_p99_ms": 20.0, "lat_max_ms": 40.0, "max_gap_s": 0.05},
        "pingpong": {"round_trips": 2000, "max_gap_s": 0.05},
        "forker": {"forks": 90, "worst_fork_ms": 20.0, "max_gap_s": 0.05},
    }
    for name, override in tasks.items():
        base[name] = override if "error" in override else {**base.get(name, {}), **override}
    return {
        "exit_code": 0,
        "timed_out": False,
        "load": {"version": 1, "seconds": 5.0, "cpu_busy": 0.98, "context_switches": 5000, "tasks": base},
    }


def test_judge_accepts_a_healthy_run() -> None:
    assert load.judge(_load(), 5.0) == []


@pytest.mark.parametrize(
    ("tasks", "fid"),
    [
        ({"equal1": {"max_gap_s": 2.7}}, "dyn-starvation"),
        ({"equal1": {"error": "no report before the deadline"}}, "dyn-starvation"),
        ({"late": {"first_progress_s": 2.0}}, "dyn-starvation"),
        ({"equal1": {"cpu_s": 0.15}}, "dyn-unfair"),
        ({"late": {"cpu_s": 0.02}}, "dyn-unfair"),
        ({"sleeper0": {"lat_p99_ms": 2500.0}}, "dyn-wakeup-latency"),
        ({"pingpong": {"round_trips": 0}}, "dyn-starvation"),
    ],
)
def test_judge_flags_each_failure(tasks: dict, fid: str) -> None:
    findings = load.judge(_load(**tasks), 5.0)
    assert [f.id for f in findings].count(fid) >= 1
    assert all(f.stage == "dynamic" and f.hint for f in findings)


def test_mild_unfairness_is_a_warning_and_starvation_grade_an_error() -> None:
    mild = load.judge(_load(equal1={"cpu_s": 0.45}), 5.0)
    assert [(f.id, f.severity) for f in mild] == [("dyn-unfair", "warning")]
    severe = load.judge(_load(equal1={"cpu_s": 0.15}), 5.0)
    assert [(f.id, f.severity) for f in severe] == [("dyn-unfair", "error")]


def test_timing_bounds_follow_the_eevdf_baseline() -> None:
    slow_host = {"max_gap_s": 1.7, "wakeup_p99_ms": 400.0, "late_first_progress_s": 0.2}
    bounds = load.Bounds().relative_to(slow_host)
    assert bounds.max_gap_s == 3.4 and bounds.max_wakeup_p99_ms == 3200.0 and bounds.late_start_s == 1.5
    assert bounds.warn_wakeup_p99_ms == 1600.0
    assert load.Bounds().relative_to(None) == load.Bounds()
    run = _load(equal1={"max_gap_s": 2.5}, sleeper0={"lat_p99_ms": 1500.0})
    assert {f.id for f in load.judge(run, 5.0)} == {"dyn-starvation", "dyn-wakeup-latency"}
    assert load.judge(run, 5.0, baseline=slow_host) == []


def test_slow_wakeups_warn_before_they_fail() -> None:
    assert [(f.id, f.severity) for f in load.judge(_load(sleeper0={"lat_p99_ms": 1100.0}), 5.0)] == [
        ("dyn-wakeup-latency", "warning")
    ]


def test_judge_reports_a_load_that_never_finished() -> None:
    findings = load.judge({"exit_code": -9, "timed_out": True, "stderr": "x\ny", "load": None}, 5.0)
    assert [f.id for f in findings] == ["dyn-load-failed"] and "timed out" in findings[0].message


def test_summary_and_perf_comparison() -> None:
    base = load.summary(_load()["load"])
    assert base["cpu_busy"] == 0.98 and base["wakeup_p99_ms"] == 20.0 and base["work_per_s"] == 236.0
    same, table = performance.compare(base, base)
    assert same == [] and table["cpu_busy"]["change"] == 0
    idle = {**base, "cpu_busy": 0.5}
    findings, _ = performance.compare(base, idle, threshold=0.25)
    assert [f.id for f in findings] == ["perf-regression"] and findings[0].severity == "error"
    slow_wakeups = {**base, "wakeup_p99_ms": 120.0, "pingpong_per_s": 1.0}
    findings, _ = performance.compare(base, slow_wakeups)
    assert {f.id for f in findings} == {"perf-secondary"} and all(f.severity == "warning" for f in findings)


def test_workload_comparison() -> None:
    ok = {"exit_code": 0, "timed_out": False, "wall_s": 2.0}
    assert performance.compare_workload(ok, {**ok, "wall_s": 2.2})[0] == []
    slow, table = performance.compare_workload(ok, {**ok, "wall_s": 3.0})
    assert [f.id for f in slow] == ["perf-regression"] and table["change"] == 0.5
    broken, _ = performance.compare_workload(ok, {**ok, "exit_code": 1})
    assert [f.id for f in broken] == ["perf-workload-failed"]
    invalid, _ = performance.compare_workload({**ok, "exit_code": 127}, ok)
    assert [f.severity for f in invalid] == ["warning"]


def test_workload_parsing_never_uses_a_shell() -> None:
    assert parse_workload("python3 -c 'print(1); import os'") == ["python3", "-c", "print(1); import os"]
    assert parse_workload("sh -c 'a && b'") == ["sh", "-c", "a && b"]
    assert parse_workload("  ") is None
    for bad in ("x" * 2000, "a 'unterminated", "a\x00b", " ".join(["a"] * 80)):
        with pytest.raises(UsageError):
            parse_workload(bad)


def test_options_are_range_checked() -> None:
    for kwargs in ({"seconds": 0.1}, {"timeout_ms": 50}, {"perf_threshold": 0.0}, {"token_ttl_s": 5}):
        with pytest.raises(UsageError):
            VerifyOptions(target="x", **kwargs).validate()


def _finding(i: int, severity: str = "warning") -> Finding:
    return Finding(id="slice-out-of-range", stage="static", severity=severity, message="m" * 5000, line=i)


def test_report_is_bounded_and_digest_ignores_token() -> None:
    stage = StageResult(
        name="static", status="failed", findings=[_finding(i) for i in range(60)] + [_finding(99, "error")]
    ).bounded()
    assert len(stage.findings) == MAX_FINDINGS_PER_STAGE and stage.omitted_findings == 61 - MAX_FINDINGS_PER_STAGE
    assert stage.findings[0].severity == "error" and all(len(f.message) <= 600 for f in stage.findings)
    events = [{"kind": "disabled", "reason": "r", "detail": ["d" * 999] * 20, "line": "x" * 9999}] * 50
    report = Report(verdict="fail", reason="r", scheduler="s", stages=[stage], kernel_events=events)
    assert len(report.kernel_events) == 12 and len(report.kernel_events[0]["detail"]) == 4
    fat = [
        StageResult(
            name=n,
            status="failed",
            findings=[
                Finding(id="x-y", stage=n, severity=sev, message="m" * 900, hint="h" * 900, evidence=["e" * 300] * 20)
                for sev in ("error", "warning", "info")
                for _ in range(10)
            ],
        ).bounded()
        for n in ("build", "static", "kernel_verifier", "dynamic", "performance")
    ]
    huge = Report(verdict="fail", reason="r", scheduler="s", stages=fat, kernel_events=events)
    assert huge.size() > 100_000
    huge.bounded()
    assert huge.size() <= 48_000
    assert all(s.findings and s.findings[0].severity == "error" for s in huge.stages)
    digest = report.digest()
    report.token = "abc.def"
    assert report.digest() == digest
    text = render_text(report)
    assert text.startswith("verdict: FAIL") and "more findings" in text


class _DeadNode:
    """A node whose guest hangs: every call ends as the testbed reports a killed VM."""

    def put_file(self, *_a, **_k):
        raise SchedcpError(
            "the guest did not answer 'put_file' within 60s; the VM was killed", "console: Oops", code="guest_timeout"
        )

    def call(self, *_a, **_k):
        return self.put_file()


def test_hung_guest_becomes_a_failed_stage(tmp_path) -> None:
    obj = tmp_path / "x.bpf.o"
    obj.write_bytes(b"\x7fELF")
    stages = VmStages(
        _DeadNode(), VmPlan(object_path=obj, source_name="x.bpf.c", meta=None, config={}, include_dir=None)
    )
    result = stages.dynamic()
    assert result.status == "failed" and [f.id for f in result.findings] == ["guest-unresponsive"]
    assert stages.out.alive is False
