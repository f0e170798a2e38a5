# SPDX-License-Identifier: Apache-2.0
"""The scheduler library without a VM: metadata, builds for every cached kernel, object layout.

Every library scheduler must validate, compile warning-free against each test kernel's vmlinux.h
(and against one without kfunc prototypes, as an old bpftool would write), and expose exactly
the tunables and stats its metadata declares, with the declared sizes and defaults.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from schedcp.errors import SchedcpError
from schedcp.testbed import kernel as kernel_mod
from schedcp.toolchain import build, headers, library_check, metadata
from schedcp.toolchain.objinfo import global_vars

KERNELS = ["6.19", "unstable", "backports"]
REQUIRED = {"fifo", "vtime", "locality", "latency", "ljf", "sjf", "edf", "layered", "central"}
LIBRARY = metadata.library()
NAMES = [m.name for m in LIBRARY]
_FORMATS = {"u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q", "s32": "<i", "s64": "<q", "bool": "<B"}
_CONST_VOLATILE = re.compile(r"^const volatile (?:\w+ )+?(\w+)\s*(?:\[[^\]]*\])?\s*=", re.M)
MIXEDLOAD = Path(metadata.__file__).parents[1] / "bench" / "guest" / "mixedload.py"


@pytest.fixture(scope="module")
def include_dirs() -> dict[str, Path]:
    return {spec: headers.kernel_include_dir(kernel_mod.cached(spec)) for spec in KERNELS}


def _object(name: str, spec: str, include_dirs: dict[str, Path]) -> build.BuildResult:
    meta = metadata.get(name)
    return build.build(meta.source_path, include_dirs[spec], target=spec)


def _section_bytes(obj: Path, section: str) -> bytes:
    with obj.open("rb") as fh:
        sec = ELFFile(fh).get_section_by_name(section)
        return sec.data() if sec is not None else b""


def test_library_has_the_required_policies() -> None:
    assert set(NAMES) >= REQUIRED, f"missing: {sorted(REQUIRED - set(NAMES))}"


@pytest.mark.parametrize("name", NAMES)
def test_metadata_is_complete(name: str) -> None:
    meta = metadata.get(name)
    assert meta.source_path.is_file()
    assert meta.workloads and meta.tags
    stats = {s.name for s in meta.stats}
    assert stats, "every policy exports counters"
    if name in REQUIRED:  # the core nine share one counter convention (others may join the library)
        assert {"nr_enqueued", "nr_dispatched"} <= stats
        assert len(stats) >= 3, "every policy exports at least one policy-specific counter"
    source = meta.source_path.read_text()
    # The ops name is what sysfs and the kernel log show; it must be the library name.
    assert re.search(rf'\.name\s*=\s*"{name}"', source)
    # Every const volatile global is a declared tunable, and the other way round.
    assert set(_CONST_VOLATILE.findall(source)) == {t.name for t in meta.tunables}


@pytest.mark.parametrize("spec", KERNELS)
@pytest.mark.parametrize("name", NAMES)
def test_builds_cleanly_with_declared_layout(name: str, spec: str, include_dirs: dict[str, Path]) -> None:
    meta = metadata.get(name)
    res = _object(name, spec, include_dirs)
    assert res.warnings == []
    variables = global_vars(res.object_path)
    rodata = _section_bytes(res.object_path, ".rodata")
    for t in meta.tunables:
        var = variables.get(t.name)
        assert var is not None and var.section == ".rodata", f"{t.name} is not a const volatile global"
        raw = rodata[var.offset : var.offset + var.size]
        if t.type == "str":
            assert var.size == t.max_len
            assert raw.split(b"\0", 1)[0].decode() == t.default
        else:
            assert var.size == metadata.TYPE_SIZES[t.type]
            assert struct.unpack(_FORMATS[t.type], raw)[0] == int(t.default), f"{t.name}: C default != toml"
    for s in meta.stats:
        var = variables.get(s.name)
        assert var is not None and var.section in (".bss", ".data") and var.size == 8, s.name


@pytest.mark.parametrize("name", NAMES)
def test_kernel_v2_kfuncs_are_reached_through_a_flavour_suffix(name: str, include_dirs: dict[str, Path]) -> None:
    """libbpf strips from the last "___": a bare "x___v2" extern would bind to the v1 kfunc x."""
    obj = _object(name, "unstable", include_dirs).object_path
    with obj.open("rb") as fh:
        symtab = ELFFile(fh).get_section_by_name(".symtab")
        externs = [s.name for s in symtab.iter_symbols() if s["st_shndx"] == "SHN_UNDEF" and s.name]
    assert externs, "expected kfunc externs"
    assert not [e for e in externs if e.endswith(("___v2", "___v3"))]


def test_library_builds_without_kfunc_prototypes(tmp_path: Path, include_dirs: dict[str, Path]) -> None:
    """An old bpftool writes vmlinux.h without kfuncs: our header must declare all it uses."""
    src = include_dirs["6.19"] / "vmlinux.h"
    text = src.read_text(errors="replace")
    stripped = re.sub(r"^extern [^\n]*__ksym;\n", "", text, flags=re.M)
    assert "scx_bpf_select_cpu_dfl(" not in stripped
    (tmp_path / "vmlinux.h").write_text(stripped)
    (tmp_path / "schedcp_kernel.h").write_text(
        "#pragma once\n#define SCHEDCP_KERNEL_MAJOR 6\n#define SCHEDCP_KERNEL_MINOR 12\n"
        "#define SCHEDCP_VMLINUX_HAS_KFUNCS 0\n"
    )
    for meta in LIBRARY:
        res = build.build(meta.source_path, tmp_path, target="no-kfunc-protos")
        assert res.warnings == [], meta.name


def test_shims_pick_the_newest_kfunc_available() -> None:
    """The run-time order in each shim: newest generation first, oldest as the fallback."""
    header = (Path(metadata.__file__).parents[1] / "schedulers" / "include" / "schedcp.h").read_text()

    def order(fn: str) -> list[str]:
        body = header[re.search(rf"static __always_inline \w+ {fn}\(", header).start() :]
        body = body[: body.index("\n}\n")]
        return re.findall(r"\b((?:__)?scx_bpf_\w+|bpf_ktime_get_ns)\(", body)

    assert order("schedcp_insert")[:3] == [
        "scx_bpf_dsq_insert___v2___schedcp",
        "scx_bpf_dsq_insert",
        "scx_bpf_dispatch",
    ]
    assert order("schedcp_move_to_local")[0] == "scx_bpf_dsq_move_to_local___v2___schedcp"
    assert order("schedcp_move_to_local")[-1] == "scx_bpf_consume"
    assert order("schedcp_set_slice") == ["scx_bpf_task_set_slice"]
    assert order("schedcp_now") == ["scx_bpf_now", "bpf_ktime_get_ns"]


def test_mixedload_reports_every_task() -> None:
    """The guest workload is stdlib only, so it runs on the host too (as a real subprocess)."""
    proc = subprocess.run(
        [shutil.which("python3") or sys.executable, str(MIXEDLOAD), "--seconds", "0.5", "--starve-s", "60", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    names = {t["name"] for t in report["tasks"]}
    assert names == {"hog_nice0", "hog_nice5", "hog_nice10", "ping", "pong", "sleeper", "fork_storm", "late_hog"}
    for task in report["tasks"]:
        assert task["progress"] >= 1 and task["finished"] and task["exit_code"] == 0, task
    ping = next(t for t in report["tasks"] if t["name"] == "ping")
    assert ping["latency_us"]["count"] == ping["progress"]
    assert report["starved"] == [] and report["ok"]


def test_mixedload_rejects_bad_arguments() -> None:
    proc = subprocess.run(
        [sys.executable, str(MIXEDLOAD), "--seconds", "0"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2 and "--seconds" in proc.stderr


def _result(**kw) -> library_check.CheckResult:
    base = dict(
        name="fifo",
        kernel="k",
        ops_name="fifo",
        state_after={"state": "enabled", "ops": "fifo"},
        counters_before={"nr_enqueued": 1, "nr_dispatched": 1, "nr_direct": 0},
        counters_after={"nr_enqueued": 5, "nr_dispatched": 9, "nr_direct": 0},
    )
    base.update(kw)
    return library_check.CheckResult(**base)


def test_verdict_accepts_a_healthy_run() -> None:
    assert library_check._problems(_result(), metadata.get("fifo")) == []


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"state_after": {"state": "disabled", "ops": None}}, "not running"),
        ({"ejections": [{"kind": "disabled", "reason": "runnable task stall", "detail": ["x"]}]}, "ejected"),
        ({"starved": ["late_hog"]}, "starved tasks: late_hog"),
        ({"counters_after": {"nr_enqueued": 1, "nr_dispatched": 9, "nr_direct": 0}}, "nr_enqueued did not move"),
        ({"counters_after": {"nr_enqueued": 5, "nr_dispatched": 9}}, "stats missing"),
    ],
)
def test_verdict_names_each_failure(change: dict, expected: str) -> None:
    problems = library_check._problems(_result(**change), metadata.get("fifo"))
    assert any(expected in p for p in problems), problems


class _DeadNode:
    """A node whose guest has just died: every call fails the way NodeClient reports it."""

    def put_file(self, *args, **kwargs):
        raise SchedcpError(
            "lost the connection to the guest during 'put_file'",
            "see the console tail: Kernel panic - not syncing",
            code="guest_lost",
        )

    call = put_file


def test_check_one_reports_a_lost_guest(include_dirs: dict[str, Path]) -> None:
    obj = _object("fifo", "unstable", include_dirs).object_path
    res = library_check.check_one(_DeadNode(), metadata.get("fifo"), "7.2-test", object_path=obj)
    assert not res.ok and res.guest_lost and res.stage == "attach"
    assert "Kernel panic" in res.error


@pytest.mark.parametrize("config", [{"nope": 1}, {"slice_us": 10}, {"direct_idle": "maybe"}])
def test_check_one_refuses_bad_tunables_before_touching_the_node(config: dict, include_dirs: dict[str, Path]) -> None:
    obj = _object("fifo", "unstable", include_dirs).object_path
    res = library_check.check_one(_DeadNode(), metadata.get("fifo"), "k", object_path=obj, config=config)
    assert not res.ok and not res.guest_lost  # the dead node was never called
    assert next(iter(config)) in res.error
