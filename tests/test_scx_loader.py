# SPDX-License-Identifier: Apache-2.0
"""The control-plane half of the scx loader: typed --rodata, struct_ops choice, the verifier-progress
deadline, the BTF reader against the kernel's own vmlinux.h, and what each kernel example needs from
its userspace half."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest
from elftools.elf.elffile import ELFFile

from schedcp.errors import SchedcpError, UsageError
from schedcp.node.btf import Btf
from schedcp.testbed import kernel as kernel_mod
from schedcp.toolchain import scx_headers, scx_loader, scx_source, scx_userspace

TWO_OPS = textwrap.dedent(
    """\
    #include <scx/common.bpf.h>
    char _license[] SEC("license") = "GPL";
    const volatile u32 nr_widgets = 3;
    const volatile s8 bias;
    const volatile bool fast;
    const volatile char label[8];
    s32 BPF_STRUCT_OPS(a_init) { return 0; }
    SCX_OPS_DEFINE(first_ops, .init = (void *)a_init, .name = "first");
    SCX_OPS_DEFINE(second_ops, .init = (void *)a_init, .name = "second");
    """
)


@pytest.fixture(scope="module")
def kernel():
    return kernel_mod.cached("unstable")


@pytest.fixture(scope="module")
def examples(kernel) -> Path:
    headers = scx_headers.for_kernel(kernel)
    assert headers.examples_dir is not None
    return headers.examples_dir


@pytest.fixture(scope="module")
def two_ops(kernel, tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("two") / "two.bpf.c"
    src.write_text(TWO_OPS)
    return scx_source.build_for_kernel(src, kernel).result.object_path


def test_rodata_values_are_typed_and_range_checked(two_ops: Path) -> None:
    values = scx_loader.typed_rodata(two_ops, {"nr_widgets": "0x10", "bias": "-3", "fast": "true", "label": "abc"})
    assert values == {"nr_widgets": b"\x10\0\0\0", "bias": b"\xfd", "fast": b"\x01", "label": b"abc\0\0\0\0\0"}
    for bad, pattern in [
        ({"bias": "200"}, "out of range"),
        ({"nr_widgets": "-1"}, "out of range"),
        ({"fast": "maybe"}, "bool"),
        ({"label": "much too long"}, "shorter"),
        ({"nope": "1"}, "no const volatile"),
        ({"__SCX_DSQ_GLOBAL": "1"}, "filled from the target kernel"),
        ({"nr_widgets": "ten"}, "integer"),
    ]:
        with pytest.raises(UsageError, match=pattern):
            scx_loader.typed_rodata(two_ops, bad)


def test_struct_ops_choice_is_checked_and_enums_go_along(two_ops: Path, kernel) -> None:
    assert scx_loader.struct_ops_maps(two_ops) == ["first_ops", "second_ops"]
    with pytest.raises(UsageError, match="first_ops"):
        scx_loader.options_for(two_ops, struct_ops="third_ops")
    opts = scx_loader.options_for(two_ops, struct_ops="second_ops", kernel=kernel)
    args = opts.node_args()
    assert args["struct_ops"] == "second_ops"
    enums = args["steps"]["kernel_enums"]
    assert len(enums["btf_sha256"]) == 64 and enums["values"]["SCX_DSQ_GLOBAL"] == 1 << 63 | 1


def test_btf_reader_agrees_with_the_kernels_vmlinux_h(kernel) -> None:
    with kernel.vmlinux.open("rb") as fh:
        btf = Btf(ELFFile(fh).get_section_by_name(".BTF").data())
    values = btf.enum_constants("SCX_")
    header = (kernel.dir / "include" / "vmlinux.h").read_text(errors="replace")
    for name in ("SCX_DSQ_GLOBAL", "SCX_DSQ_LOCAL", "SCX_DSQ_LOCAL_ON", "SCX_SLICE_DFL", "SCX_ENQ_WAKEUP"):
        m = re.search(rf"\b{name} = (\d+)", header)
        assert m and values[name] == int(m.group(1)), name
    members = btf.members("sched_ext_ops")
    assert {"enqueue", "dispatch", "timeout_ms", "name"} <= set(members)
    assert members["name"].offset > members["enqueue"].offset


def _scripted_node(replies: list[dict[str, Any]]):
    calls: list[tuple[str, dict[str, Any]]] = []

    def call(op: str, args: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
        calls.append((op, args))
        return replies.pop(0)

    return call, calls


def test_load_waits_while_the_verifier_makes_progress() -> None:
    pending = [
        {"pending": True, "job": 1, "progress": {"programs": 20, "programs_loaded": n, "elapsed_s": 15.0 * n}}
        for n in range(8)
    ]
    call, calls = _scripted_node([*pending, {"handle": 1, "ops_name": "qmap"}])
    deadline = scx_loader.LoadDeadline(stall_s=100, base_s=1000, per_program_s=0)
    assert scx_loader.run_load(call, {"path": "x"}, deadline)["handle"] == 1
    assert calls[0][0] == "load" and all(op == "load_wait" for op, _ in calls[1:])


def test_load_gives_up_when_the_verifier_stops_moving() -> None:
    stuck = [{"pending": True, "job": 1, "progress": {"programs": 20, "programs_loaded": 3}} for _ in range(5)]
    call, _ = _scripted_node(stuck)
    with pytest.raises(SchedcpError) as info:
        scx_loader.run_load(call, {"path": "x"}, scx_loader.LoadDeadline(stall_s=-1))
    assert info.value.code == "load_timeout" and "3 of 20" in info.value.cause


def _needs(kernel, examples: Path, name: str) -> scx_userspace.UserspaceNeeds:
    source = examples / f"{name}.bpf.c"
    built = scx_source.build_for_kernel(source, kernel)
    return scx_userspace.analyze(built.result.object_path, source, list(built.sources.texts().values()))


def test_examples_that_run_on_the_generic_loader(kernel, examples: Path) -> None:
    for name in ("scx_simple", "scx_cpu0", "scx_sdt"):
        needs = _needs(kernel, examples, name)
        assert needs.unmet() == [], (name, needs.summary())
        assert any("enum" in g for g in needs.generic)


def test_examples_that_need_their_userspace_half(kernel, examples: Path) -> None:
    userland = _needs(kernel, examples, "scx_userland")
    assert "feeds map(s) dispatched" in userland.summary()
    central = _needs(kernel, examples, "scx_central").summary()
    assert "cpu_gimme_task" in central and "cpu_started_at" in central
    pair = _needs(kernel, examples, "scx_pair").summary()
    assert "pair_cpu" in pair
    qmap = _needs(kernel, examples, "scx_qmap")
    assert "max_tasks = 16384" in qmap.summary()
    # Given with --rodata, what is left is met.
    assert qmap.unmet({"max_tasks", "slice_ns"}) == []


def test_a_verified_config_splits_back_into_loader_options(two_ops: Path) -> None:
    tunables, rodata, choice = scx_loader.split_config(
        {"slice_us": 5000, "rodata.nr_widgets": "7", "struct_ops": "second_ops"}
    )
    assert tunables == {"slice_us": 5000} and rodata == {"nr_widgets": "7"} and choice == "second_ops"
    opts = scx_loader.options_for(two_ops, rodata=rodata, struct_ops=choice)
    assert opts.rodata == {"nr_widgets": b"\x07\0\0\0"} and opts.struct_ops == "second_ops"
