# SPDX-License-Identifier: Apache-2.0
"""The kernel's scx headers: choosing a Debian source, streaming tools/sched_ext out of it, user dirs."""

from __future__ import annotations

import errno
import re
import subprocess
import tarfile
from pathlib import Path

import pytest

from schedcp.errors import SchedcpError, UsageError
from schedcp.toolchain import scx_headers
from schedcp.toolchain.scx_headers import SourceCandidate


def _cands(*specs: tuple[str, str]) -> list[SourceCandidate]:
    return [SourceCandidate("suite", f"linux-source-{v.split('.')[0]}.{v.split('.')[1]}", f"{v}-1") for _, v in specs]


def test_exact_source_version_wins() -> None:
    ranked, exact = scx_headers.rank_sources("7.2.13-1", _cands(("u", "7.2.12"), ("u", "7.2.13"), ("u", "7.3.4")))
    assert exact and ranked[0].version == "7.2.13-1"


def test_missing_version_prefers_nearest_series_newer_first() -> None:
    # 6.19 is gone from Debian: 7.2 is 3 releases away (6.19 -> 7.0 -> 7.1 -> 7.2), 6.12 is 7 away.
    ranked, exact = scx_headers.rank_sources(
        "6.19.14-1~bpo13+1", _cands(("t", "6.12.117"), ("u", "7.2.13"), ("u", "7.2.12"), ("b", "7.3.4"))
    )
    assert not exact
    assert [c.upstream for c in ranked] == ["7.2.13", "7.3.4", "6.12.117"]


def test_no_sources_is_a_clear_error() -> None:
    with pytest.raises(SchedcpError, match="linux-source"):
        scx_headers.rank_sources("7.2.13-1", [])


def test_errno_header_has_the_linux_values_and_aliases(tmp_path: Path) -> None:
    header = scx_headers.write_errno_header(tmp_path)
    text = header.read_text()
    values = dict(re.findall(r"#define (E\w+) (\d+)", text))
    assert int(values["EOPNOTSUPP"]) == errno.EOPNOTSUPP  # an alias errorcode alone would lose
    assert int(values["ENOMEM"]) == errno.ENOMEM and int(values["EAGAIN"]) == errno.EAGAIN
    assert (tmp_path / "linux" / "types.h").is_file()


def test_user_dir_must_hold_scx_headers(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"common\.bpf\.h"):
        scx_headers.from_user_dir(tmp_path)
    with pytest.raises(UsageError, match="not a directory"):
        scx_headers.from_user_dir(tmp_path / "missing")
    # An scx checkout keeps them under scheds/include.
    (tmp_path / "scheds" / "include" / "scx").mkdir(parents=True)
    (tmp_path / "scheds" / "include" / "scx" / "common.bpf.h").write_text("/* */\n")
    found = scx_headers.from_user_dir(tmp_path)
    assert found.scx_include == (tmp_path / "scheds" / "include").resolve()
    assert any((d / "asm-generic" / "errno.h").is_file() for d in found.include_dirs)


def _fake_source_deb(tmp: Path) -> Path:
    """A linux-source-shaped .deb: usr/src/linux-source-9.9.tar.xz holding a small kernel tree."""
    tree = tmp / "tree" / "linux-source-9.9"
    (tree / "tools" / "sched_ext" / "include" / "scx").mkdir(parents=True)
    (tree / "tools" / "sched_ext" / "include" / "scx" / "common.bpf.h").write_text("/* scx */\n")
    (tree / "tools" / "sched_ext" / "scx_simple.bpf.c").write_text("/* example */\n")
    (tree / "tools" / "sched_ext" / "escape.h").symlink_to("/etc/passwd")
    (tree / "kernel").mkdir()
    (tree / "kernel" / "sched.c").write_text("not kept\n")
    pkg = tmp / "pkg"
    (pkg / "usr" / "src").mkdir(parents=True)
    (pkg / "DEBIAN").mkdir()
    (pkg / "DEBIAN" / "control").write_text(
        "Package: linux-source-9.9\nVersion: 9.9.1-1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    with tarfile.open(pkg / "usr" / "src" / "linux-source-9.9.tar.xz", "w:xz") as tar:
        tar.add(tree, arcname="linux-source-9.9")
    deb = tmp / "linux-source-9.9_9.9.1-1_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True)
    return deb


def test_streaming_extraction_keeps_only_tools_sched_ext_and_drops_links(tmp_path: Path) -> None:
    deb = _fake_source_deb(tmp_path)
    dest = tmp_path / "out"
    dest.mkdir()
    files = scx_headers.extract_source_deb(deb, dest)
    assert "sched_ext/include/scx/common.bpf.h" in files
    assert "sched_ext/scx_simple.bpf.c" in files
    assert not any(f.startswith("kernel/") or "sched.c" in f for f in files)
    assert not (dest / "sched_ext" / "escape.h").exists() and not (dest / "sched_ext" / "escape.h").is_symlink()
    assert (dest / "uapi" / "asm-generic" / "errno.h").is_file()
    assert scx_headers._complete(dest)


def test_a_deb_without_the_tree_is_refused(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "usr" / "src").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: linux-source-9.9\nVersion: 1\nArchitecture: all\nMaintainer: t <t@t>\nDescription: t\n"
    )
    deb = tmp_path / "empty.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)], check=True, capture_output=True)
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(SchedcpError, match="could not extract"):
        scx_headers.extract_source_deb(deb, dest)
