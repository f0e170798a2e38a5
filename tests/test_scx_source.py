# SPDX-License-Identifier: Apache-2.0
"""scx-style and multi-file sources: they build with the kernel's scx headers, local headers beside
the source are staged, diagnostics name the right file and line, and hostile includes through the
new header paths are still refused (the sandbox never shows the compiler anything else)."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

from schedcp.errors import UsageError
from schedcp.testbed import kernel as kernel_mod
from schedcp.toolchain import build, scx_headers, scx_source

SCX_SCHED = textwrap.dedent(
    """\
    #include <scx/common.bpf.h>
    #include "mysched.h"

    char _license[] SEC("license") = "GPL";
    UEI_DEFINE(uei);

    void BPF_STRUCT_OPS(my_enqueue, struct task_struct *p, u64 enq_flags)
    {
        scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, MY_SLICE, enq_flags);
    }

    void BPF_STRUCT_OPS(my_exit, struct scx_exit_info *ei)
    {
        UEI_RECORD(uei, ei);
    }

    SCX_OPS_DEFINE(my_ops, .enqueue = (void *)my_enqueue, .exit = (void *)my_exit, .name = "mysched");
    """
)


@pytest.fixture(scope="module")
def target():
    kernel = kernel_mod.cached("unstable")
    return kernel, scx_headers.for_kernel(kernel)


def _write(directory: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return directory / next(iter(files))


def test_scx_style_source_with_a_local_header_builds(tmp_path: Path, target) -> None:
    kernel, _ = target
    main = _write(tmp_path, {"mysched.bpf.c": SCX_SCHED, "mysched.h": "#define MY_SLICE (5 * 1000 * 1000ULL)\n"})
    (tmp_path / "unrelated").mkdir()
    (tmp_path / "unrelated" / "big.c").write_text("int x;\n")  # not in the include closure: never staged
    built = scx_source.build_for_kernel(main, kernel)
    assert built.sources.style == "scx"
    assert sorted(built.sources.local) == ["mysched.h"]
    assert built.scx is not None and built.scx.exact
    assert built.result.object_path.read_bytes()[:4] == b"\x7fELF"


def test_kernel_example_builds_from_the_extracted_tree(target) -> None:
    kernel, headers = target
    assert headers.examples_dir is not None
    built = scx_source.build_for_kernel(headers.examples_dir / "scx_simple.bpf.c", kernel)
    assert built.sources.style == "scx" and built.result.object_sha256


def test_local_header_reaching_outside_its_directory_is_refused(tmp_path: Path, target) -> None:
    kernel, _ = target
    (tmp_path / "secret.h").write_text("#define MY_SLICE 1\n")
    inner = tmp_path / "sched"
    inner.mkdir()
    main = _write(inner, {"mysched.bpf.c": SCX_SCHED, "mysched.h": '#include "../secret.h"\n'})
    with pytest.raises(build.BuildError) as info:
        scx_source.build_for_kernel(main, kernel)
    diag = info.value.diagnostics[0]
    assert diag.file == "mysched.h" and diag.line == 1
    assert "../secret.h" in info.value.cause


@pytest.mark.parametrize(
    "include",
    [
        "<scx/../../../../../etc/passwd>",
        '"/etc/passwd"',
        "<../../etc/shadow>",
        "<scx/common.bpf.h/../../../../../../etc/hostname>",
    ],
)
def test_hostile_includes_through_the_scx_path_are_refused(tmp_path: Path, target, include: str) -> None:
    kernel, _ = target
    main = _write(tmp_path, {"evil.bpf.c": f"#include <scx/common.bpf.h>\n#include {include}\n" + SCX_SCHED})
    (tmp_path / "mysched.h").write_text("#define MY_SLICE 1\n")
    with pytest.raises(build.BuildError) as info:
        scx_source.build_for_kernel(main, kernel)
    assert "not allowed" in info.value.cause
    assert "root:" not in str(info.value.diagnostics)


def test_a_symlinked_header_beside_the_source_is_not_followed(tmp_path: Path, target) -> None:
    kernel, _ = target
    main = _write(tmp_path, {"mysched.bpf.c": SCX_SCHED})
    os.symlink("/etc/passwd", tmp_path / "mysched.h")
    with pytest.raises(build.BuildError) as info:
        scx_source.build_for_kernel(main, kernel)
    text = info.value.cause + " ".join(str(d) for d in info.value.diagnostics)
    assert "root:" not in text and "mysched.h" in text


def test_diagnostics_name_the_local_header_and_line(tmp_path: Path, target) -> None:
    kernel, _ = target
    main = _write(tmp_path, {"mysched.bpf.c": SCX_SCHED, "mysched.h": "/* ok */\n\n#define MY_SLICE (1 +)\n"})
    with pytest.raises(build.BuildError) as info:
        scx_source.build_for_kernel(main, kernel)
    where = {(d.file, d.line) for d in info.value.diagnostics}
    assert ("mysched.h", 3) in where or ("mysched.bpf.c", 9) in where
    assert any(d.file == "mysched.bpf.c" and d.line == 9 for d in info.value.diagnostics)


def test_a_scheduler_directory_builds_and_must_hold_one_scheduler(tmp_path: Path, target) -> None:
    kernel, _ = target
    _write(tmp_path, {"mysched.bpf.c": SCX_SCHED, "mysched.h": "#define MY_SLICE 5000000ULL\n"})
    built = scx_source.build_for_kernel(tmp_path, kernel)
    assert built.sources.whole_dir and built.sources.main.name == "mysched.bpf.c"
    (tmp_path / "other.bpf.c").write_text(SCX_SCHED)
    with pytest.raises(UsageError, match="exactly one"):
        scx_source.resolve_source_set(tmp_path)


def test_user_scx_include_dir_is_used(tmp_path: Path, target) -> None:
    kernel, headers = target
    main = _write(tmp_path / "src", {"mysched.bpf.c": SCX_SCHED, "mysched.h": "#define MY_SLICE 1\n"})
    built = scx_source.build_for_kernel(main, kernel, scx_include=headers.scx_include)
    assert built.scx is not None and built.scx.origin.startswith("--scx-include")


def test_our_own_library_needs_no_scx_headers(target) -> None:
    kernel, _ = target
    sources = scx_source.resolve_source_set("vtime")
    assert sources.style == "schedcp"
    assert scx_source.scx_headers_for(sources, kernel) is None


def test_submitted_text_in_either_style_builds(target) -> None:
    """What agents and the repository hand in: one file of text, scx-style or ours."""
    kernel, _ = target
    text = SCX_SCHED.replace('#include "mysched.h"', "#define MY_SLICE 5000000ULL")
    assert scx_source.build_text(text, "agent_patch.bpf.c", kernel).object_sha256
    ours = scx_source.resolve_source_set("fifo").main.read_text()
    assert scx_source.build_text(ours, "fifo_copy.bpf.c", kernel).object_sha256
    with pytest.raises(build.BuildError, match="not allowed"):
        scx_source.build_text(SCX_SCHED, "needs_header.bpf.c", kernel)  # no file beside submitted text


def test_repository_primitives_compile_in_scx_style(target) -> None:
    """The primitives are written to compile under the scx headers as well as ours. Two call
    scx_bpf_dsq_move_to_local(dsq), whose scx-header form takes enq_flags since 7.1; they stay in
    our style (docs/verifier.md)."""
    from schedcp.repository.catalog_sources import PRIMITIVES_DIR

    kernel, _ = target
    for path in sorted(PRIMITIVES_DIR.glob("*.c")):
        body = path.read_text()
        if "scx_bpf_dsq_move_to_local(" in body:
            continue
        text = (
            '#include <scx/common.bpf.h>\nchar _license[] SEC("license") = "GPL";\n'
            + body
            + '\nSEC(".struct_ops.link") struct sched_ext_ops example_ops = { .name = "example" };\n'
        )
        assert scx_source.build_text(text, f"prim_{path.stem}.bpf.c", kernel).object_sha256, path.name
