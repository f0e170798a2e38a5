# SPDX-License-Identifier: Apache-2.0
"""Static analysis reads scx-style code: entry points behind BPF_STRUCT_OPS/SCX_OPS_DEFINE, the scx
macros and wrappers, bpf_for loops, UEI; and the rules still catch what they catch in our style."""

from __future__ import annotations

import textwrap

import pytest

from schedcp.testbed import kernel as kernel_mod
from schedcp.toolchain import headers, scx_headers, scx_source
from schedcp.verifier.static import analyze
from schedcp.verifier.static.kernelfacts import from_include_dir


@pytest.fixture(scope="module")
def target():
    kernel = kernel_mod.cached("unstable")
    scx = scx_headers.for_kernel(kernel)
    return kernel, scx, from_include_dir(headers.kernel_include_dir(kernel), kernel.release)


def _analyze(target, path):
    _kernel, scx, facts = target
    sources = scx_source.resolve_source_set(path)
    return analyze(path.read_text(), kernel=facts, extra_units=scx_source.analysis_units(sources, scx))


@pytest.mark.parametrize(
    "example, ops",
    [
        ("scx_simple", {"select_cpu", "enqueue", "dispatch", "running", "stopping", "enable", "init", "exit"}),
        ("scx_qmap", {"select_cid", "enqueue", "dispatch", "init", "exit", "dump"}),
        ("scx_central", {"select_cpu", "enqueue", "dispatch", "init", "exit"}),
    ],
)
def test_entry_points_behind_the_scx_macros_are_found(target, example: str, ops: set[str]) -> None:
    _kernel, scx, _facts = target
    result = _analyze(target, scx.examples_dir / f"{example}.bpf.c")
    assert ops <= set(result.facts["callbacks"]), result.facts["callbacks"]
    assert result.facts["parse_errors"] == 0


@pytest.mark.parametrize("example", ["scx_simple", "scx_cpu0", "scx_sdt", "scx_qmap"])
def test_kernel_examples_have_no_false_errors(target, example: str) -> None:
    _kernel, scx, _facts = target
    result = _analyze(target, scx.examples_dir / f"{example}.bpf.c")
    # scx_bpf_error()/scx_bpf_dump() are macros of the scx headers, not missing kfuncs; qmap's test
    # hooks behind const volatile knobs are dead code at their defaults; its lowpri DSQ is drained
    # by scx_bpf_dsq_reenq().
    assert [f.message for f in result.errors] == []


BUGGY = textwrap.dedent(
    """\
    #include <scx/common.bpf.h>
    char _license[] SEC("license") = "GPL";
    UEI_DEFINE(uei);
    #define PARKED 42

    s32 BPF_STRUCT_OPS_SLEEPABLE(bug_init)
    {
        return scx_bpf_create_dsq(PARKED, -1);
    }

    void BPF_STRUCT_OPS(bug_enqueue, struct task_struct *p, u64 enq_flags)
    {
        if (p->pid & 1)
            return;
        scx_bpf_dsq_insert(p, PARKED, SCX_SLICE_DFL, enq_flags);
    }

    void BPF_STRUCT_OPS(bug_dispatch, s32 cpu, struct task_struct *prev)
    {
        u32 i;

        bpf_for(i, 0, 100000) {
            if (scx_bpf_dsq_nr_queued(SCX_DSQ_GLOBAL))
                break;
        }
    }

    void BPF_STRUCT_OPS(bug_exit, struct scx_exit_info *ei)
    {
        UEI_RECORD(uei, ei);
    }

    SCX_OPS_DEFINE(bug_ops,
               .enqueue  = (void *)bug_enqueue,
               .dispatch = (void *)bug_dispatch,
               .init     = (void *)bug_init,
               .exit     = (void *)bug_exit,
               .name     = "bug");
    """
)


def test_rules_still_catch_bugs_written_in_scx_style(target, tmp_path) -> None:
    path = tmp_path / "bug.bpf.c"
    path.write_text(BUGGY)
    result = _analyze(target, path)
    ids = {f.id for f in result.findings if f.severity in ("error", "warning")}
    assert "enqueue-drops-task" in ids  # odd pids are never inserted
    assert "dsq-never-consumed" in ids  # DSQ 42 is filled, nothing moves it to a local DSQ
    assert "hot-path-loop" in ids  # a 100000-iteration bpf_for in ops.dispatch
    assert result.facts["ops_name"] == "bug"
