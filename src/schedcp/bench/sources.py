# SPDX-License-Identifier: Apache-2.0
"""Real C code bases for the build benchmark, from Debian stable's source packages.

The paper builds a Linux kernel; under emulation that takes hours, so the build benchmark builds a
smaller real code base with its own Makefile. The upstream tarball comes from Debian's archive
through the project's private apt (a deb-src configuration beside the binary one), is unpacked once
into the cache, and is sent to the guest as a --with directory (testbed/extras.py).
"""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path

from schedcp.errors import SchedcpError
from schedcp.paths import cache_dir
from schedcp.testbed.debian import PrivateApt
from schedcp.testbed.guest import GUEST_SUITE


def _apt() -> PrivateApt:
    return PrivateApt(cache_dir() / "apt" / f"{GUEST_SUITE}-src", GUEST_SUITE, source_packages=True)


def source_tree(package: str, progress: Callable[[str], None] = lambda _m: None) -> Path:
    """The unpacked upstream source of Debian source package `package` (its top directory)."""
    root = cache_dir() / "sources" / package
    done = root / "tree"
    if done.is_dir():
        tops = [p for p in done.iterdir() if p.is_dir()]
        if len(tops) == 1:
            return tops[0]
    progress(f"fetching the source of {package} from Debian {GUEST_SUITE}")
    apt = _apt()
    apt.update()
    files = apt.download_source(package, root / "download")
    tarballs = [f for f in files if ".orig.tar." in f.name] or [
        f for f in files if ".tar." in f.name and ".debian.tar." not in f.name
    ]
    if not tarballs:
        raise SchedcpError(
            f"Debian's source package {package} has no upstream tarball ({[f.name for f in files]})",
            "pick another source package",
        )
    staging = root / "tree.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(tarballs[0]) as tar:
        tar.extractall(staging, filter="data")
    tops = [p for p in staging.iterdir() if p.is_dir()]
    if len(tops) != 1:
        raise SchedcpError(f"{tarballs[0].name} does not unpack to one directory", "pick another source package")
    shutil.rmtree(done, ignore_errors=True)
    staging.rename(done)
    shutil.rmtree(root / "download", ignore_errors=True)
    return done / tops[0].name
