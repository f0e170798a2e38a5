# SPDX-License-Identifier: Apache-2.0
"""`schedcp verify` as a real subprocess, for what needs no VM: exit codes, bad input, JSON shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli

CORPUS = Path(__file__).resolve().parent / "corpus"


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"SCHEDCP_VERIFIER_KEY": str(tmp_path / "key" / "verifier_ed25519")}


def _verify(*args: str, env: dict[str, str]) -> tuple[int, dict]:
    proc = run_cli("verify", *args, "--static-only", "--json", env=env, timeout=120)
    return proc.returncode, json.loads(proc.stdout)


def test_static_pass_exits_zero_without_token(env: dict[str, str]) -> None:
    code, report = _verify(str(CORPUS / "good" / "global_fifo.bpf.c"), env=env)
    assert code == 0 and report["verdict"] == "pass" and report["token"] is None
    assert [s["status"] for s in report["stages"]] == ["passed", "passed", "skipped", "skipped", "skipped"]
    assert len(report["object_sha256"]) == 64 and report["kernel"]


def test_static_failure_exits_one_with_a_fixable_finding(env: dict[str, str]) -> None:
    code, report = _verify(str(CORPUS / "bad" / "enqueue_drop.bpf.c"), env=env)
    assert code == 1 and report["verdict"] == "fail" and report["reason"].startswith("static:")
    finding = report["stages"][1]["findings"][0]
    assert finding["id"] == "enqueue-drops-task" and finding["line"] == 19 and finding["code"] == "return;"
    assert "scx_bpf_dsq_insert" in finding["hint"]


def test_human_output_is_plain_and_short(env: dict[str, str]) -> None:
    proc = run_cli("verify", str(CORPUS / "bad" / "dsq_typo.bpf.c"), "--static-only", env=env, timeout=120)
    assert proc.returncode == 1
    assert proc.stdout.startswith("verdict: FAIL") and "static/dsq-never-consumed (line 19)" in proc.stdout
    assert "\x1b[" not in proc.stdout and len(proc.stdout.splitlines()) < 30


@pytest.mark.parametrize(
    ("source", "finding"),
    [
        (
            '#include "vmlinux.h"\n#include "../../etc/passwd"\nSEC(".struct_ops.link") struct sched_ext_ops o = {};\n',
            "build-disallowed-include",
        ),
        ('#include "vmlinux.h"\nint main(void) { return 0; }\n', "build-rejected-input"),
        (
            '#include "vmlinux.h"\nSEC(".struct_ops.link") struct sched_ext_ops o = { .name = "x" };\nthis is not C;\n',
            "build-error",
        ),
    ],
    ids=["outside-include", "not-sched-ext", "syntax"],
)
def test_bad_input_is_a_verdict_not_a_crash(tmp_path: Path, env: dict[str, str], source: str, finding: str) -> None:
    path = tmp_path / "input.bpf.c"
    path.write_text(source)
    code, report = _verify(str(path), env=env)
    assert code == 1 and report["verdict"] == "fail"
    build = report["stages"][0]
    assert build["status"] == "failed" and build["findings"][0]["id"] == finding


def test_huge_file_is_refused_before_reading(tmp_path: Path, env: dict[str, str]) -> None:
    path = tmp_path / "huge.bpf.c"
    with path.open("wb") as fh:
        fh.truncate(64 * 1024 * 1024)
    code, report = _verify(str(path), env=env)
    assert code == 1 and report["stages"][0]["findings"][0]["id"] == "build-rejected-input"


@pytest.mark.parametrize(
    "args",
    [
        ["/nonexistent/sched.bpf.c"],
        ["no_such_scheduler"],
        [str(CORPUS / "good" / "global_fifo.bpf.c"), "--config", "slice_us=5"],
        ["vtime", "--config", "slice_us=banana"],
        ["vtime", "--config", "no_such_tunable=1"],
        ["vtime", "--seconds", "0"],
        ["vtime", "--workload", "echo 'unterminated"],
    ],
    ids=[
        "missing-file",
        "unknown-name",
        "config-without-metadata",
        "bad-value",
        "unknown-tunable",
        "seconds",
        "workload-quoting",
    ],
)
def test_usage_errors_exit_two(args: list[str], env: dict[str, str]) -> None:
    proc = run_cli("verify", *args, "--static-only", "--json", env=env, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert json.loads(proc.stdout)["error"] == "usage"
