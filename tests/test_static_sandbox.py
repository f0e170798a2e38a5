# SPDX-License-Identifier: Apache-2.0
"""Static analysis of submitted C runs in the sandbox (verifier/static/sandboxed.py): the same
results as in-process, as uid 65534 when the caller is root, and bounded with a clear error when a
source is crafted to blow up the parser or the rules. No VM."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from conftest import run_cli
from schedcp import sandbox
from schedcp.toolchain import build, headers, scx_headers, scx_source, scx_userspace
from schedcp.verifier.static import analyze
from schedcp.verifier.static.kernelfacts import KernelFacts, from_include_dir
from schedcp.verifier.static.sandboxed import StaticAnalysisError, run_static

CORPUS = Path(__file__).resolve().parent / "corpus"
HEAD = '#include "vmlinux.h"\nSEC(".struct_ops.link") struct sched_ext_ops o = { .enqueue = (void *)e, .name = "x" };\n'
ENQUEUE = "void BPF_STRUCT_OPS(e, struct task_struct *p, u64 f) {"


@pytest.fixture(scope="module")
def facts(unstable_kernel) -> KernelFacts:
    return from_include_dir(headers.kernel_include_dir(unstable_kernel), unstable_kernel.release)


def _small_limits(**change: float) -> sandbox.Limits:
    values = {"timeout_s": 30.0, "cpu_s": 30, "memory_mb": 1024, "max_procs": 8, "tmp_mb": 8, "file_mb": 1}
    values.update(change)
    return sandbox.Limits(**values, stdout_cap=1 << 20)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name", ["bad/enqueue_drop.bpf.c", "bad/dsq_typo.bpf.c", "bad/removed_kfunc.bpf.c", "good/global_fifo.bpf.c"]
)
def test_results_match_the_in_process_analysis(name: str, facts: KernelFacts) -> None:
    text = (CORPUS / name).read_text()
    ref = analyze(text, kernel=facts, config={"slice_us": 5000})
    out = run_static(text, kernel=facts, config={"slice_us": 5000})
    assert [f.model_dump() for f in out.findings] == [f.model_dump() for f in ref.findings]
    assert out.facts == ref.facts and out.omitted_findings == 0


def test_scx_headers_and_userspace_half_match_too(unstable_kernel) -> None:
    """scx_qmap: its headers are followed inside the sandbox, and its userspace half (scx_qmap.c
    beside it) and object are read there, with the same outcome as in-process."""
    scx = scx_headers.for_kernel(unstable_kernel)
    assert scx.examples_dir is not None
    path = scx.examples_dir / "scx_qmap.bpf.c"
    sources = scx_source.resolve_source_set(path)
    facts = from_include_dir(headers.kernel_include_dir(unstable_kernel), unstable_kernel.release)
    text = path.read_text()
    built = scx_source.build_for_kernel(path, unstable_kernel)
    ref = analyze(text, kernel=facts, extra_units=scx_source.analysis_units(sources, scx))
    ref_needs = scx_userspace.analyze(built.result.object_path, path, list(sources.texts().values()))
    out = run_static(text, kernel=facts, sources=sources, include_dirs=scx.include_dirs, obj=built.result.object_path)
    assert [f.model_dump() for f in out.findings] == [f.model_dump() for f in ref.findings]
    assert out.facts == ref.facts and out.facts["callbacks"]
    assert out.userspace == ref_needs and out.userspace.userspace_file == "scx_qmap.c"
    assert "max_tasks" in out.userspace.summary()


def test_the_parse_runs_as_nobody() -> None:
    out = run_static((CORPUS / "good" / "global_fifo.bpf.c").read_text())
    if os.geteuid() == 0:
        assert (out.uid, out.gid) == (sandbox.SANDBOX_UID, sandbox.SANDBOX_UID)
    else:  # bwrap's user namespace: the caller's own uid, without capabilities
        assert out.uid == os.getuid()


def test_endless_rules_are_stopped_at_the_time_limit() -> None:
    """350 KB of nested ifs kept the rules busy for two minutes in-process; here the sandbox's
    clock stops them (a 5 s limit keeps the test short; the default is 60 s)."""
    source = HEAD + ENQUEUE + " if (p)" * 30000 + " scx_bpf_dsq_insert(p, 0, 1, f); }\n"
    start = time.monotonic()
    with pytest.raises(StaticAnalysisError, match="did not finish within 5s") as info:
        run_static(source, limits=_small_limits(timeout_s=5, cpu_s=5))
    assert info.value.code == "static_limits" and "simplify" in info.value.next_step
    assert time.monotonic() - start < 25


def test_huge_token_counts_are_stopped_at_the_memory_limit() -> None:
    """200k tokens in one expression need about 260 MB; under a 200 MB sandbox the analysis is
    stopped with a clear error, while an ordinary source passes under the same limit."""
    limits = _small_limits(memory_mb=200)
    assert run_static((CORPUS / "good" / "global_fifo.bpf.c").read_text(), limits=limits).facts["callbacks"]
    source = HEAD + ENQUEUE + " u64 x = " + "+".join(["f"] * 200_000) + "; }\n"
    with pytest.raises(StaticAnalysisError, match="more than 200 MB of memory") as info:
        run_static(source, limits=limits)
    assert info.value.code == "static_limits"


def test_deep_preprocessor_nesting_is_a_verdict_not_a_crash(tmp_path: Path) -> None:
    """20000 nested #if blocks made the parser's walk raise RecursionError in the caller (an
    internal error in the daemon); through `schedcp verify` it is now a failed static stage."""
    with pytest.raises(RecursionError):
        analyze(HEAD + "#if 0\n" * 20000 + "#endif\n" * 20000)
    path = tmp_path / "nested.bpf.c"
    path.write_text((CORPUS / "good" / "global_fifo.bpf.c").read_text() + "#if 0\n" * 20000 + "#endif\n" * 20000)
    env = {"SCHEDCP_VERIFIER_KEY": str(tmp_path / "key" / "verifier_ed25519")}
    proc = run_cli("verify", str(path), "--static-only", "--json", env=env, timeout=180)
    report = json.loads(proc.stdout)
    assert proc.returncode == 1 and report["verdict"] == "fail"
    static = report["stages"][1]
    assert static["status"] == "failed" and static["findings"][0]["id"] == "static-limits"
    assert "nested too deeply" in static["findings"][0]["message"]


def test_comment_and_include_scans_are_linear(tmp_path: Path) -> None:
    """The include scans that run before the sandbox (the build's early check, finding the headers
    to stage) used regexes that rescanned the rest of the file from every unclosed `/*` or
    `#include <`: 96 KB took 27 s, so 512 KB would hold a root thread for minutes. Now linear."""
    for i, bulk in enumerate(["/* " * 170_000, "#include <\n" * 47_000, '#include "\n' * 47_000]):
        path = tmp_path / f"s{i}.bpf.c"
        path.write_text('SEC(".struct_ops.link") struct sched_ext_ops o;\n' + bulk)
        start = time.monotonic()
        assert scx_source.resolve_source_set(path).local == {}
        if i == 0:
            build.check_includes(bulk)
            assert scx_userspace.userspace_writes(bulk) == {}
        assert time.monotonic() - start < 5, bulk[:12]


def test_comment_blanking_keeps_its_meaning() -> None:
    text = 'a /* x\n y */ b // c\n#include "d.h" /* open\nend'
    spans = list(build.comment_spans(text))
    assert "".join(p for p, _ in spans) == text
    assert [p for p, c in spans if c] == ["/* x\n y */", "// c"]  # the unclosed /* stays text
    assert build._logical_lines(text).split("\n")[:2] == ["a ", " b  "]  # line numbers kept
