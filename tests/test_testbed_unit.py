# SPDX-License-Identifier: Apache-2.0
"""Fast tests of the testbed and toolchain pieces; no VM."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import pytest

from schedcp.errors import UsageError
from schedcp.node import runner, scx
from schedcp.node.agent import NodeAgent, _safe_path
from schedcp.node.protocol import NodeError
from schedcp.testbed import kernel
from schedcp.testbed.cpio import CpioWriter, Entry
from schedcp.testbed.debian import version_key
from schedcp.toolchain import build, metadata


def test_cpio_archive_is_readable_by_cpio(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "file.txt").write_text("hello")
    (tree / "link").symlink_to("a/b/file.txt")
    buf = io.BytesIO()
    writer = CpioWriter(buf)
    writer.add_tree(tree)
    writer.add(Entry("extra", 0o100644, b"x" * 5))
    writer.close()
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=buf.getvalue(), capture_output=True, check=True)
    names = listing.stdout.decode().split()
    assert names == ["a", "link", "a/b", "a/b/file.txt", "extra"]
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-id", "--quiet"], input=buf.getvalue(), cwd=out, check=True)
    assert (out / "a/b/file.txt").read_text() == "hello"
    assert (out / "link").is_symlink() and (out / "link").read_text() == "hello"


def test_debian_version_ordering() -> None:
    versions = ["6.19.10-1~bpo13+1", "6.19.14-1~bpo13+1", "6.19.8-1~bpo13+1", "6.19.14-1"]
    assert sorted(versions, key=version_key) == [
        "6.19.8-1~bpo13+1",
        "6.19.10-1~bpo13+1",
        "6.19.14-1~bpo13+1",
        "6.19.14-1",
    ]
    assert version_key("7.3~rc7-1~exp1") < version_key("7.3-1")


def test_unknown_kernel_spec_is_a_usage_error() -> None:
    with pytest.raises(UsageError) as info:
        kernel.resolve("latest-and-greatest")
    assert "unknown kernel spec" in info.value.cause
    assert "unstable" in info.value.next_step


def test_cached_kernel_has_sched_ext_and_headers(unstable_kernel: kernel.Kernel) -> None:
    assert unstable_kernel.info.sched_ext
    assert kernel.btf_has_sched_ext(unstable_kernel.vmlinux)
    assert unstable_kernel.vmlinux.read_bytes()[:4] == b"\x7fELF"
    from schedcp.toolchain import headers

    inc = headers.kernel_include_dir(unstable_kernel)
    text = (inc / "schedcp_kernel.h").read_text()
    assert f"SCHEDCP_KERNEL_MAJOR {unstable_kernel.major_minor[0]}" in text
    assert "SCHEDCP_HAVE_KFUNC_scx_bpf_create_dsq 1" in text


@pytest.mark.parametrize(
    "source",
    [
        '#include "/etc/passwd"\nstruct_ops',
        '#include "../vmlinux.h"\nstruct_ops',
        "#include <stdio.h>\nstruct_ops",
        "#include SOME_MACRO\nstruct_ops",
        "#include <bpf/../../secret.h>\nstruct_ops",
    ],
)
def test_includes_outside_the_allow_list_are_refused(source: str) -> None:
    with pytest.raises(build.BuildError) as info:
        build.check_includes(source)
    assert info.value.diagnostics[0].line >= 1


def test_allowed_includes_pass(tmp_path: Path) -> None:
    build.check_includes('#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#include "schedcp.h"\n')
    # Other names pass only where they are found: beside the source, or in a given include directory.
    for source in ('#include "mine.h"\n', '#include "scx/common.bpf.h"\n'):
        with pytest.raises(build.BuildError):
            build.check_includes(source)
    build.check_includes('#include "mine.h"\n', local_files=["mine.h"])
    (tmp_path / "scx").mkdir()
    (tmp_path / "scx" / "common.bpf.h").write_text("")
    build.check_includes('#include "scx/common.bpf.h"\n', include_dirs=[tmp_path])


def test_compile_error_comes_back_with_line(unstable_kernel: kernel.Kernel) -> None:
    from schedcp.toolchain import headers

    source = (
        '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n'
        'char _license[] SEC("license") = "GPL";\n'
        "int broken(void) { return undeclared_thing; }\n"
        'SEC(".struct_ops.link") struct sched_ext_ops x_ops = { .name = "x" };\n'
    )
    with pytest.raises(build.BuildError) as info:
        build.build(
            None,
            headers.kernel_include_dir(unstable_kernel),
            target="t",
            source_text=source,
            source_name="broken.bpf.c",
        )
    diag = info.value.diagnostics[0]
    assert (diag.file, diag.line, diag.severity) == ("broken.bpf.c", 4, "error")
    assert "undeclared_thing" in diag.message


def test_non_sched_ext_source_is_refused(unstable_kernel: kernel.Kernel) -> None:
    with pytest.raises(UsageError, match="struct_ops"):
        build.build(None, Path("/nonexistent"), target="t", source_text="int main(void) { return 0; }")


def test_builds_are_cached_by_content(unstable_kernel: kernel.Kernel) -> None:
    first = build.build_for_kernel("minimal", unstable_kernel)
    second = build.build_for_kernel("minimal", unstable_kernel)
    assert second.cached and second.object_path == first.object_path
    assert first.object_sha256 == second.object_sha256


def test_tunable_validation() -> None:
    t = metadata.Tunable(name="slice_us", type="u64", default=5000, min=100, max=100000, description="slice")
    assert t.coerce("2000") == 2000
    assert t.coerce("0x100") == 256
    with pytest.raises(UsageError, match="outside the allowed range"):
        t.coerce("5")
    with pytest.raises(UsageError, match="not an integer"):
        t.coerce("5; rm -rf /")
    b = metadata.Tunable(name="flag", type="bool", default=False, description="a flag")
    assert b.coerce("yes") == 1 and b.coerce(False) == 0
    s = metadata.Tunable(name="comm", type="str", default="make", max_len=16, description="a comm")
    with pytest.raises(UsageError):
        s.coerce("x" * 16)
    with pytest.raises(ValueError):
        metadata.Tunable(name="bad", type="u8", default=300, description="out of range default")


def test_parse_assignments() -> None:
    assert metadata.parse_assignments(["a=1", " b = x "]) == {"a": "1", "b": "x"}
    with pytest.raises(UsageError):
        metadata.parse_assignments(["novalue"])


def test_runner_bounds_output_and_time() -> None:
    out = runner.run_command(["python3", "-c", "print('x' * 100000)"], output_cap=2048)
    assert out["exit_code"] == 0 and out["truncated"] and "bytes omitted" in out["stdout"]
    slow = runner.run_command(["sleep", "5"], timeout_s=0.3)
    assert slow["timed_out"] and slow["signal"] == 9
    with pytest.raises(NodeError) as info:
        runner.run_command(["definitely-not-a-command-xyz"])
    assert info.value.code == "not_found"
    meta = runner.run_command(["echo", "$(id)", ";", "&&"])  # argv, never a shell
    assert meta["stdout"].strip() == "$(id) ; &&"


def test_node_agent_rejects_bad_requests(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("schedcp.node.agent.WORK_DIR", tmp_path)
    agent = NodeAgent()
    assert agent.handle({"id": 1, "op": "no_such_op"})["error"]["code"] == "unknown_op"
    assert agent.handle({"id": 2, "op": "__class__"})["ok"] is False
    reply = agent.handle({"id": 3, "op": "run", "args": {"argv": ["true"], "shell": True}})
    assert reply["error"]["code"] == "bad_args"
    assert agent.handle({"id": 4, "op": "run", "args": "oops"})["ok"] is False
    for bad in ("../escape", "/etc/passwd", "a/../../b", ""):
        with pytest.raises(NodeError):
            _safe_path(bad)
    reply = agent.handle({"id": 5, "op": "put_file", "args": {"name": "x/y.o", "data_b64": "aGk="}})
    assert reply["ok"] and (tmp_path / "x/y.o").read_bytes() == b"hi"


def test_kernel_log_parsing_of_an_ejection() -> None:
    log = scx.KernelLog(path="/nonexistent")
    events = log.parse(
        [
            (1.0, "random unrelated line"),
            (2.0, 'sched_ext: BPF scheduler "vt" enabled'),
            (3.0, 'sched_ext: BPF scheduler "vt" disabled (runnable task stall)'),
            (3.0, "sched_ext: vt: kworker/0:1[11] failed to run for 1.436s"),
            (3.0, "scx_watchdog_workfn+0x18e/0x240"),
            (3.1, "unrelated"),
        ]
    )
    assert [e["kind"] for e in events] == ["enabled", "disabled"]
    assert events[1]["reason"] == "runnable task stall"
    assert events[1]["detail"][0].startswith("kworker/0:1[11] failed to run")
    assert not any("0x18e" in d for d in events[1]["detail"])


def test_unreachable_archive_is_one_line_with_next_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from schedcp.errors import SchedcpError
    from schedcp.testbed.debian import PrivateApt

    monkeypatch.setenv("SCHEDCP_DEBIAN_MIRROR", "http://127.0.0.1:9/debian")
    apt = PrivateApt(tmp_path / "apt", "unstable")
    with pytest.raises(SchedcpError) as info:
        apt.update(force=True)
    assert info.value.code == "archive_error"
    assert "\n" not in info.value.cause and "127.0.0.1:9" in info.value.next_step


def test_offline_fetch_falls_back_to_the_cached_kernel(
    unstable_kernel: kernel.Kernel, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from schedcp.errors import SchedcpError

    def offline(spec: str, *, refresh: bool = False):
        raise SchedcpError("apt-get update failed: cannot reach the mirror", "retry", code="archive_error")

    monkeypatch.setattr(kernel, "resolve", offline)
    messages: list[str] = []
    got = kernel.fetch("unstable", progress=messages.append)
    assert got.release == unstable_kernel.release
    assert any("using the cached kernel" in m for m in messages)
    with pytest.raises(SchedcpError, match="cannot reach"):
        kernel.fetch("7.9", progress=messages.append)


def test_verifier_log_summary_names_the_complaint_and_line() -> None:
    from schedcp.toolchain.verifier_log import summarize

    log = [
        "; u64 *count = bpf_map_lookup_elem(&counts, &key); @ reject.bpf.c:28",
        "8: (85) call bpf_map_lookup_elem#1",
        "; *count += 1; @ reject.bpf.c:30",
        "9: (79) r1 = *(u64 *)(r0 +0)",
        "R0 invalid mem access 'map_value_or_null'",
        "processed 9 insns (limit 1000000)",
    ]
    assert summarize(log) == "R0 invalid mem access 'map_value_or_null' at *count += 1; @ reject.bpf.c:30"
    assert summarize(["libbpf: something else"]) == ""


def test_kernel_header_lists_kfuncs_with_attributed_return_types(tmp_path: Path) -> None:
    from schedcp.toolchain import headers

    vmlinux_h = tmp_path / "vmlinux.h"
    vmlinux_h.write_text(
        'extern void __attribute__((btf_type_tag("address_space(1)"))) *bpf_arena_alloc_pages(void *p__map, '
        'void __attribute__((btf_type_tag("address_space(1)"))) *addr__ign, u32 page_cnt) __weak __ksym;\n'
        "extern s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __weak __ksym;\n"
        "struct not_a_kfunc { int x; };\n"
    )
    out = tmp_path / "schedcp_kernel.h"
    headers.write_kernel_header(vmlinux_h, out, (7, 2))
    text = out.read_text()
    assert "SCHEDCP_HAVE_KFUNC_bpf_arena_alloc_pages 1" in text
    assert "SCHEDCP_HAVE_KFUNC_scx_bpf_create_dsq 1" in text
    assert "__attribute__" not in text and "SCHEDCP_KERNEL_VERSION (7 * 256 + 2)" in text
