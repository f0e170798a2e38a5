# SPDX-License-Identifier: Apache-2.0
"""Where SchedCP keeps things outside the source tree.

Downloaded kernels, guest images and generated headers live in a cache (XDG_CACHE_HOME or
SCHEDCP_CACHE_DIR) so a repository checkout never holds them; mutable state such as the policy
database lives in a data directory (XDG_DATA_HOME or SCHEDCP_DATA_DIR).
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    explicit = os.environ.get("SCHEDCP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "schedcp"


def data_dir() -> Path:
    explicit = os.environ.get("SCHEDCP_DATA_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "schedcp"


def runtime_dir() -> Path:
    """Sockets and per-VM scratch space; short paths because unix socket paths are limited."""
    explicit = os.environ.get("SCHEDCP_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "schedcp" if xdg else Path("/tmp") / f"schedcp-{os.getuid()}"


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def schedulers_dir() -> Path:
    """Our BPF C library, its metadata and the shared header, shipped as package data."""
    return package_dir() / "schedulers"


def ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path
