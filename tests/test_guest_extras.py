# SPDX-License-Identifier: Apache-2.0
"""--package and --with: Debian packages and host files in the micro-VM guest (testbed/extras.py).

Unit tests cover every input path and its error; the package tests ask Debian stable's index
through the project's private apt (as `schedcp setup` does). One VM test boots a guest carrying a
real packaged tool (hackbench from rt-tests) and a program compiled here with its own shared library.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_cli
from schedcp.errors import UsageError
from schedcp.testbed import extras, guest

GCC = shutil.which("gcc") or shutil.which("cc")


def _compile(tmp: Path, name: str, source: str, *flags: str) -> Path:
    assert GCC, "gcc is installed by scripts/ensure-env.sh"
    src = tmp / f"{name}.c"
    src.write_text(source)
    out = tmp / name
    subprocess.run([GCC, "-O1", "-o", str(out), str(src), *flags], check=True, capture_output=True)
    return out


@pytest.fixture(scope="module")
def program_with_library(tmp_path_factory) -> Path:
    """A program linked against a shared library of its own (libschedcpdemo.so, found via $ORIGIN)."""
    tmp = tmp_path_factory.mktemp("prog")
    lib = tmp / "libschedcpdemo.so"
    (tmp / "demo.c").write_text("int schedcp_demo_answer(int x) { return x * 6 + 0; }\n")
    subprocess.run(
        [GCC or "gcc", "-shared", "-fPIC", "-Wl,-soname,libschedcpdemo.so", "-o", str(lib), str(tmp / "demo.c")],
        check=True,
        capture_output=True,
    )
    return _compile(
        tmp,
        "answer",
        '#include <stdio.h>\nint schedcp_demo_answer(int);\nint main(void){printf("answer=%d\\n", '
        "schedcp_demo_answer(7));return 0;}\n",
        f"-L{tmp}",
        "-lschedcpdemo",
        "-Wl,-rpath,$ORIGIN",
    )


# -- guest paths -----------------------------------------------------------------------------


def test_guest_paths_default_to_work_and_stay_inside_the_allowed_roots():
    assert extras.guest_path("tool") == "/work/tool"
    assert extras.guest_path("/opt/mine/tool") == "/opt/mine/tool"
    assert extras.guest_path("sub/./x") == "/work/sub/x"
    for bad, why in (
        ("/usr/bin/python3", "system"),
        ("/etc/passwd", "system"),
        ("/init", "system"),
        ("/", "system"),
        ("/work", "system"),
        ("../etc/passwd", "'..'"),
        ("/work/../etc", "'..'"),
        ("/opt/schedcp/schedcp_node/agent.py", "guest's own"),
        ("/usr/local/bin/sh", "guest's own"),
        ("/tmp/x", "mounted over"),
        ("/proc/x", "mounted over"),
    ):
        with pytest.raises(UsageError) as exc:
            extras.guest_path(bad)
        assert why in exc.value.cause, (bad, exc.value.cause)


def test_with_parses_paths_and_guest_targets(tmp_path):
    f = tmp_path / "tool"
    f.write_text("#!/bin/sh\necho hi\n")
    assert extras.HostFile.parse(str(f)) == extras.HostFile(f, "/work/tool")
    assert extras.HostFile.parse(f"{f}:/opt/x/t") == extras.HostFile(f, "/opt/x/t")
    with pytest.raises(UsageError, match="no such file"):
        extras.HostFile.parse(str(tmp_path / "missing"))
    with pytest.raises(UsageError, match="system directories"):
        extras.HostFile.parse(f"{f}:/usr/bin/tool")
    with pytest.raises(UsageError, match="both go to"):
        extras.GuestExtras.from_options([], [str(f), f"{f}:tool"])


def test_package_names_are_checked_before_apt_sees_them():
    for bad in ("-oAPT::x=1", "Stress-NG", "a b", "", "x" * 120):
        with pytest.raises(UsageError, match="not a Debian package name"):
            extras.GuestExtras(packages=(bad,))
    with pytest.raises(UsageError, match="is a path") as exc:
        extras.GuestExtras(packages=("./mytool",))
    assert "--with ./mytool" in exc.value.next_step


# -- files -----------------------------------------------------------------------------------


def test_a_directory_keeps_its_tree_and_loses_setuid_bits(tmp_path):
    root = tmp_path / "bundle"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "data.txt").write_text("payload")
    tool = root / "run.sh"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o4755)
    (root / "link").symlink_to("sub/data.txt")
    entries, summary = extras.file_entries(extras.GuestExtras.from_options([], [str(root)]), lambda _n: True)
    by_name = {e.name: e for e in entries}
    assert by_name["work/bundle/sub/data.txt"].data == b"payload"
    assert by_name["work/bundle/run.sh"].mode & 0o7777 == 0o755
    assert by_name["work/bundle/link"].data == b"sub/data.txt"
    assert by_name["work"].mode & 0o170000 == 0o040000
    assert summary["host_libraries"] == {}


def test_an_elf_program_brings_the_libraries_the_guest_lacks(program_with_library):
    have_everything_but_ours = lambda name: name != "libschedcpdemo.so"  # noqa: E731
    entries, summary = extras.file_entries(
        extras.GuestExtras.from_options([], [str(program_with_library)]), have_everything_but_ours
    )
    names = {e.name for e in entries}
    assert "work/answer" in names
    assert f"{extras.GUEST_LIB_DIR}/libschedcpdemo.so" in names
    assert summary["host_libraries"] == {"libschedcpdemo.so": str(program_with_library.parent / "libschedcpdemo.so")}


def test_a_missing_library_is_named(program_with_library, tmp_path):
    lonely = tmp_path / "answer"
    shutil.copy2(program_with_library, lonely)  # without its library beside it
    with pytest.raises(UsageError) as exc:
        extras.file_entries(extras.GuestExtras.from_options([], [str(lonely)]), lambda n: n != "libschedcpdemo.so")
    assert "libschedcpdemo.so (needed by answer)" in exc.value.cause


def test_a_foreign_architecture_is_refused(tmp_path):
    fake = tmp_path / "arm"
    # A minimal ELF64 header for EM_AARCH64 (183), little endian.
    header = b"\x7fELF\x02\x01\x01" + b"\0" * 9 + (2).to_bytes(2, "little") + (183).to_bytes(2, "little")
    header += (1).to_bytes(4, "little") + b"\0" * 28 + (64).to_bytes(2, "little") + b"\0" * 10
    fake.write_bytes(header.ljust(64, b"\0"))
    with pytest.raises(UsageError, match="EM_AARCH64"):
        extras.host_libraries([fake], lambda _n: True)


# -- packages (Debian stable's index via the private apt) -------------------------------------


@pytest.fixture(scope="module")
def apt():
    a = guest._apt()
    a.update()
    return a


def test_package_closure_leaves_out_what_the_base_has(apt):
    base = {"libc6": apt.show("libc6")[0].version}
    needed = extras.resolve_packages(apt, ("rt-tests",), base)
    names = {p.name for p in needed}
    assert "rt-tests" in names and "libnuma1" in names
    assert "libc6" not in names


def test_unknown_package_suggests_close_names(apt):
    with pytest.raises(UsageError) as exc:
        extras.resolve_packages(apt, ("stress-ngg",), {})
    assert "has no package 'stress-ngg'" in exc.value.cause
    assert "stress-ng" in exc.value.next_step


def test_a_program_name_points_to_its_package(apt):
    with pytest.raises(UsageError) as exc:
        extras.resolve_packages(apt, ("hackbench",), {})
    assert "rt-tests" in exc.value.next_step


def test_a_virtual_package_names_its_providers(apt):
    with pytest.raises(UsageError) as exc:
        extras.resolve_packages(apt, ("awk",), {})
    assert "virtual package" in exc.value.cause
    assert "mawk" in exc.value.next_step or "gawk" in exc.value.next_step


def test_cli_reports_bad_extras_in_one_line_before_booting(tmp_path):
    res = run_cli("vm", "run", "--with", str(tmp_path / "nope"), "--json", "--", "true", timeout=60)
    assert res.returncode == 2, res.stderr
    assert "no such file or directory" in json.loads(res.stdout)["cause"] and "Traceback" not in res.stderr
    res = run_cli("vm", "run", "--package", "no-such-package-schedcp", "--json", "--", "true", timeout=120)
    assert res.returncode == 2
    assert "has no package" in json.loads(res.stdout)["cause"]


# -- in the micro-VM ---------------------------------------------------------------------------


@pytest.mark.vm
def test_packaged_tool_and_sent_program_run_in_the_guest(program_with_library):
    res = run_cli(
        "vm",
        "run",
        "--package",
        "rt-tests",
        "--with",
        str(program_with_library),
        "--json",
        "--",
        "sh",
        "-c",
        "pwd; ./answer; hackbench -g 1 -f 2 -l 20",
        timeout=600,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    out = json.loads(res.stdout)["stdout"]
    lines = out.splitlines()
    assert lines[0] == "/work"
    assert "answer=42" in lines
    assert any(line.startswith("Time: ") for line in lines), out
    layers = sorted(p.name for p in (extras._layers_dir()).glob("*.cpio"))
    assert any(n.startswith("pkg-") for n in layers) and any(n.startswith("files-") for n in layers)


@pytest.mark.vm
def test_optimize_a_sent_program_on_the_metric_it_prints(tmp_path):
    """optimize --with ./prog --metric REGEX: the user's own program, its own number, end to end."""
    prog = _compile(
        tmp_path,
        "spin",
        "#include <stdio.h>\n#include <time.h>\nint main(void){struct timespec a,b;"
        "clock_gettime(CLOCK_MONOTONIC,&a);volatile unsigned long x=0;for(unsigned long i=0;i<30000000UL;i++)x+=i;"
        'clock_gettime(CLOCK_MONOTONIC,&b);printf("spin_ms=%ld\\n",(b.tv_sec-a.tv_sec)*1000+(b.tv_nsec-a.tv_nsec)/1000000);'
        "return 0;}\n",
    )
    res = run_cli(
        "optimize",
        "--with",
        str(prog),
        "--metric",
        r"spin_ms=(\d+)",
        "--lower-is-better",
        "-n",
        "1",
        "--rounds",
        "1",
        "--json",
        "--",
        "./spin",
        timeout=900,
    )
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    doc = json.loads(res.stdout)
    trial = doc["iterations"][0]["execution"]["trial"]
    assert trial["ok"], trial
    assert trial["metric"] == "spin_ms" and trial["direction"] == "lower"
    assert trial["baseline_value"] > 0 and trial["policy_value"] > 0
