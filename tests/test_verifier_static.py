# SPDX-License-Identifier: Apache-2.0
"""Static rules against the corpus and against focused snippets (no VM; real tree-sitter parses)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from schedcp.toolchain import headers
from schedcp.toolchain.metadata import library_dir
from schedcp.verifier.report import STAGE_ORDER
from schedcp.verifier.static import analyze
from schedcp.verifier.static.consteval import Evaluator, parse_number
from schedcp.verifier.static.kernelfacts import KernelFacts, from_include_dir
from schedcp.verifier.static.rules import RULES, catalogue
from schedcp.verifier.static.source import parse_source

CORPUS = Path(__file__).resolve().parent / "corpus"
BAD = sorted((CORPUS / "bad").glob("*.bpf.c"))
GOOD = sorted((CORPUS / "good").glob("*.bpf.c"))
LIBRARY = sorted(library_dir().glob("*.bpf.c"))
DYNAMIC_IDS = {"kv-rejected", "dyn-ejected", "dyn-unfair", "dyn-starvation", "dyn-wakeup-latency", "perf-regression"}
HEAD = '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#include <bpf/bpf_tracing.h>\n'


def expectation(path: Path) -> tuple[str, str]:
    m = re.search(r"/\*\s*expect:\s*(\S+)\s+(\S+)\s*\*/", path.read_text())
    assert m, f"{path.name} has no /* expect: STAGE RULE */ header"
    return m.group(1), m.group(2)


@pytest.fixture(scope="module")
def facts(unstable_kernel) -> KernelFacts:
    return from_include_dir(headers.kernel_include_dir(unstable_kernel), unstable_kernel.release)


def _ids(result, severity: str = "error") -> list[str]:
    return [f.id for f in result.findings if f.severity == severity]


def test_corpus_is_well_formed() -> None:
    rule_ids = {r.id for r in RULES}
    assert len(BAD) >= 20 and len(GOOD) >= 5
    stages = {expectation(p)[0] for p in BAD}
    assert stages == {"static", "kernel_verifier", "dynamic", "performance"}
    for path in BAD:
        stage, rule = expectation(path)
        assert stage in STAGE_ORDER
        assert rule in (rule_ids if stage == "static" else DYNAMIC_IDS), path.name


@pytest.mark.parametrize("path", [p for p in BAD if expectation(p)[0] == "static"], ids=lambda p: p.name)
def test_rule_fires_on_its_bad_file(path: Path, facts: KernelFacts) -> None:
    _, rule = expectation(path)
    result = analyze(path.read_text(), kernel=facts)
    hits = [f for f in result.findings if f.id == rule and f.severity == "error"]
    assert hits, f"{rule} did not fire on {path.name}: {[f.id for f in result.findings]}"
    lines = path.read_text().split("\n")
    for f in hits:
        if f.line is not None:  # points at the real source line, quoted verbatim
            assert f.code == lines[f.line - 1].strip()
        assert f.hint and f.message


@pytest.mark.parametrize("path", [p for p in BAD if expectation(p)[0] != "static"], ids=lambda p: p.name)
def test_later_stage_bad_files_pass_static(path: Path, facts: KernelFacts) -> None:
    """These bugs are only visible to the kernel or at run time; static must not block them."""
    assert _ids(analyze(path.read_text(), kernel=facts)) == []


@pytest.mark.parametrize("path", GOOD + LIBRARY, ids=lambda p: p.name)
def test_quiet_on_good_schedulers(path: Path, facts: KernelFacts) -> None:
    result = analyze(path.read_text(), kernel=facts)
    assert _ids(result) == [] and _ids(result, "warning") == []
    assert result.facts["callbacks"].get("enqueue") or result.facts["callbacks"].get("dispatch")


def test_rule_catalogue_is_consistent() -> None:
    entries = catalogue()
    assert len({e["id"] for e in entries}) == len(entries) >= 15
    assert all(e["severity"] in ("error", "warning", "info") and len(e["description"]) > 20 for e in entries)


# -- focused behaviour ---------------------------------------------------------------------------


def _enqueue(body: str, extra: str = "") -> str:
    return f"""{HEAD}{extra}
SEC("struct_ops/t_enqueue")
void BPF_PROG(t_enqueue, struct task_struct *p, u64 enq_flags)
{{
{body}
}}
SEC(".struct_ops.link")
struct sched_ext_ops t_ops = {{ .enqueue = (void *)t_enqueue, .name = "t" }};
"""


@pytest.mark.parametrize(
    "body",
    [
        "if (p->pid & 1) scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);\n"
        "else scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, 1000000, 0);",
        "switch (p->pid & 3) {\ncase 0: scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, 1000000, 0); break;\n"
        "default: scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);\n}",
        "do { scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0); } while (0);",
        "put(p);",
    ],
    ids=["if-else", "switch-default", "do-while", "helper"],
)
def test_enqueue_paths_that_always_insert(body: str) -> None:
    helper = "static void put(struct task_struct *p) { scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0); }\n"
    assert "enqueue-drops-task" not in _ids(analyze(_enqueue(body, helper)))


@pytest.mark.parametrize(
    ("body", "line_offset"),
    [
        ("if (p->pid == 1) return;\nscx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);", 0),
        ("switch (p->pid & 3) {\ncase 0: scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, 1000000, 0); break;\n}", 3),
        ("maybe_put(p);", 1),
        ("for (int i = 0; i < 4; i++) scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);", 1),
    ],
    ids=["early-return", "switch-no-default", "conditional-helper", "loop-may-not-run"],
)
def test_enqueue_paths_that_drop(body: str, line_offset: int) -> None:
    helper = (
        "static void maybe_put(struct task_struct *p)\n"
        "{ if (p->pid) scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0); }\n"
    )
    src = _enqueue(body, helper)
    drops = [f for f in analyze(src).findings if f.id == "enqueue-drops-task"]
    assert drops and drops[0].severity == "error"
    body_start = (
        src.split("\n").index(
            "{", src.split("\n").index("void BPF_PROG(t_enqueue, struct task_struct *p, u64 enq_flags)")
        )
        + 1
    )
    assert drops[0].line == body_start + 1 + line_offset


DIRECT = """static bool try_direct(struct task_struct *p)
{
	s32 cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);

	if (cpu < 0)
		return false;
	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, 1000000, 0);
	return true;
}
"""


@pytest.mark.parametrize(
    ("body", "drops"),
    [
        ("if (try_direct(p)) return;\nscx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);", False),
        ("if (!try_direct(p)) scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);", False),
        ("if (!try_direct(p)) return;", True),
        ("if (try_direct(p)) scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);", True),
    ],
)
def test_helper_that_returns_true_after_queueing(body: str, drops: bool) -> None:
    """The common `if (try_direct(p)) return;` idiom: true means the helper queued the task."""
    assert ("enqueue-drops-task" in _ids(analyze(_enqueue(body, DIRECT)))) is drops


def test_error_after_an_early_return_is_conditional() -> None:
    src = _enqueue(
        "if (p->pid) { scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0); return; }\n"
        'scx_bpf_error_bstr("pid 0", 0, 0);\nscx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);'
    )
    found = [f for f in analyze(src).findings if f.id == "error-in-hot-path"]
    assert found and found[0].severity == "info"


def test_goto_is_not_guessed() -> None:
    body = (
        "if (p->pid) goto out;\nscx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);\nreturn;\nout:\n"
        "scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, 1000000, 0);"
    )
    assert "enqueue-drops-task" not in _ids(analyze(_enqueue(body)))


def test_error_path_downgrades_drop_to_warning() -> None:
    extra = (
        'static void *ctx_of(struct task_struct *p) { void *c = 0; if (!c) scx_bpf_error_bstr("x", 0, 0); return c; }\n'
    )
    body = "void *c = ctx_of(p);\nif (!c) return;\nscx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);"
    found = [f for f in analyze(_enqueue(body, extra)).findings if f.id == "enqueue-drops-task"]
    assert found and found[0].severity == "warning"


def test_queue_map_handoff_needs_a_pop() -> None:
    maps = 'struct { __uint(type, BPF_MAP_TYPE_QUEUE); __uint(max_entries, 8); __type(value, s32); } q SEC(".maps");\n'
    body = "s32 pid = p->pid;\nif (bpf_map_push_elem(&q, &pid, 0)) scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);"
    result = analyze(_enqueue(body, maps))
    assert "enqueue-drops-task" not in _ids(result)
    assert any("queue map q" in f.message for f in result.findings if f.id == "dsq-never-consumed")


def test_drain_in_unwired_function_is_reported() -> None:
    src = _enqueue(
        "scx_bpf_dsq_insert(p, 9, 1000000, 0);",
        "void BPF_PROG(orphan_dispatch, s32 cpu, struct task_struct *prev) { scx_bpf_dsq_move_to_local(9); }\n",
    )
    found = [f for f in analyze(src).findings if f.id == "dsq-never-consumed"]
    assert found and "orphan_dispatch" in found[0].message


def test_wrapper_macro_and_dsq_id_from_enum() -> None:
    extra = "enum { Q = 3 };\n#define PUT(t) scx_bpf_dsq_insert(t, Q, 1000000, 0)\n"
    result = analyze(_enqueue("PUT(p);", extra))
    assert "enqueue-drops-task" not in _ids(result)
    assert {"dsq-never-consumed", "dsq-not-created"} <= set(_ids(result))


def test_config_overrides_tunable_defaults() -> None:
    src = _enqueue(
        "scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, slice_us * 1000, 0);", "const volatile u64 slice_us = 5000;\n"
    )
    assert _ids(analyze(src)) == []
    found = [f for f in analyze(src, config={"slice_us": 5_000_000}).findings if f.id == "slice-out-of-range"]
    assert found and "5 s" in found[0].message and "slice_us" in found[0].message
    assert [f.severity for f in analyze(src, config={"slice_us": 0}).findings] == []
    assert _ids(analyze(src, config={"slice_us": "5000000"})) == ["slice-out-of-range"]  # CLI strings too


def test_kfunc_rules_follow_guards(facts: KernelFacts) -> None:
    extra = "extern void scx_bpf_dispatch(struct task_struct *p, u64 d, u64 s, u64 f) __ksym __weak;\n"
    guarded = (
        "if (bpf_ksym_exists(scx_bpf_dsq_insert)) scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);\n"
        "else scx_bpf_dispatch(p, SCX_DSQ_GLOBAL, 1000000, 0);"
    )
    assert analyze(_enqueue(guarded, extra), kernel=facts).findings == []
    bare = _enqueue("scx_bpf_dispatch(p, SCX_DSQ_GLOBAL, 1000000, 0);", extra)
    assert _ids(analyze(bare, kernel=facts)) == ["kfunc-unavailable"]
    # Without knowing the kernel, the old name is still worth a warning.
    assert _ids(analyze(bare), "warning") == ["deprecated-kfunc"]


def test_prototype_mismatch_is_caught(facts: KernelFacts) -> None:
    extra = "extern void scx_bpf_kick_cpu(s32 cpu) __ksym;\n"
    src = _enqueue("scx_bpf_kick_cpu(0);\nscx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);", extra)
    found = [f for f in analyze(src, kernel=facts).findings if f.id == "kfunc-unavailable"]
    assert found and "1 parameters" in found[0].message


def test_select_cpu_returning_unchecked_pick() -> None:
    src = f"""{HEAD}
s32 BPF_PROG(t_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{{
\treturn scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
}}
void BPF_PROG(t_enqueue, struct task_struct *p, u64 f) {{ scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, f); }}
SEC(".struct_ops.link")
struct sched_ext_ops t_ops = {{ .select_cpu = (void *)t_select_cpu, .enqueue = (void *)t_enqueue, .name = "t" }};
"""
    found = [f for f in analyze(src).findings if f.id == "local-on-cpu-range"]
    assert found and found[0].line == src.split("\n").index("\treturn scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);") + 1
    checked = src.replace(
        "\treturn scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);",
        "\ts32 cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);\n\treturn cpu >= 0 ? cpu : prev_cpu;",
    )
    assert "local-on-cpu-range" not in _ids(analyze(checked))


def test_unknown_loop_bound_in_hot_path_warns_but_cpu_loops_do_not() -> None:
    extra = "u32 n, nr_cpu_ids;\n"
    body = (
        "for (u32 i = 0; i < n; i++) {}\nfor (u32 i = 0; i < nr_cpu_ids; i++) {}\n"
        "scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, 1000000, 0);"
    )
    found = [f for f in analyze(_enqueue(body, extra)).findings if f.id == "hot-path-loop"]
    assert len(found) == 1 and found[0].severity == "warning" and "i < n" in found[0].message


def test_ops_table_through_macro_is_understood() -> None:
    src = f"""{HEAD}
void BPF_PROG(m_enqueue, struct task_struct *p, u64 f) {{ if (f) return; scx_bpf_dsq_insert(p, 0, 1, f); }}
SCX_OPS_DEFINE(m_ops, .enqueue = (void *)m_enqueue, .name = "m");
"""
    result = analyze(src)
    assert result.facts["callbacks"] == {"enqueue": "m_enqueue"} and result.facts["ops_name"] == "m"
    assert "enqueue-drops-task" in _ids(result)


def test_garbage_and_deep_nesting_do_not_crash() -> None:
    assert analyze(b"\x00\xff not C at all {{{{ ))) ;;").findings == []
    deep = _enqueue("u64 x = " + "(" * 3000 + "1" + ")" * 3000 + ";\nscx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, x, 0);")
    analyze(deep)  # must return, whatever it finds


def test_constant_evaluation() -> None:
    model = parse_source(
        "#define A (1ULL << 4)\n#define MS(x) ((x) * 1000000ULL)\nenum { X = 2, Y, Z = Y * 3 };\n"
        "const volatile u32 t = MS(2) / 4;\nvoid f(void) { u64 v = (u32)-1; }\n"
    )
    ev = Evaluator(model, KernelFacts())
    assert ev.identifier("A") == 16 and ev.identifier("Z") == 9 and ev.identifier("t") == 500_000
    assert ev.identifier("v", model.functions["f"]) == 2**32 - 1
    assert ev.identifier("SCX_DSQ_GLOBAL") == (1 << 63) | 1
    assert [parse_number(t) for t in ("0x10", "010", "0b11", "42ULL", "1.5")] == [16, 8, 3, 42, None]
