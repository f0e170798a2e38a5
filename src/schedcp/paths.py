# SPDX-License-Identifier: Apache-2.0
"""Where SchedCP keeps things outside the source tree, and the checks that make those places safe.

Downloaded kernels, guest images and generated headers live in a cache (XDG_CACHE_HOME or
SCHEDCP_CACHE_DIR) so a repository checkout never holds them; mutable state such as the policy
database lives in a data directory (XDG_DATA_HOME or SCHEDCP_DATA_DIR).

Root never uses a per-user default: its runtime directory is ``/run/schedcp`` and its state
directory ``/var/lib/schedcp``. A name like ``/tmp/schedcp-0`` can be created by any local user
before root gets there; whoever owns it decides what root reads and where root writes. So every
runtime and state directory goes through :func:`private_dir`, which creates it with the right
mode through a file descriptor, or refuses an existing one that someone else owns, that others
may write, or that is a symbolic link.

The daemon and its clients agree on one socket, :data:`DAEMON_SOCKET` (``/run/schedcp/daemon.sock``),
whoever runs them; ``SCHEDCP_DAEMON_SOCKET`` overrides it for both.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from schedcp.errors import SchedcpError

SYSTEM_RUNTIME_DIR = Path("/run/schedcp")
SYSTEM_STATE_DIR = Path("/var/lib/schedcp")
DAEMON_SOCKET = SYSTEM_RUNTIME_DIR / "daemon.sock"


class UnsafePathError(SchedcpError):
    """A directory or file that another user controls, where only we should."""

    def __init__(self, cause: str, next_step: str) -> None:
        super().__init__(cause, next_step, code="unsafe_path")


def _is_root() -> bool:
    return os.geteuid() == 0


def cache_dir() -> Path:
    explicit = os.environ.get("SCHEDCP_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "schedcp"


def data_dir() -> Path:
    """Mutable state: SCHEDCP_DATA_DIR, else /var/lib/schedcp for root, else the XDG data dir."""
    explicit = os.environ.get("SCHEDCP_DATA_DIR")
    if explicit:
        return Path(explicit)
    if _is_root():
        return SYSTEM_STATE_DIR
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "schedcp"


def runtime_dir_path() -> Path:
    """Where the runtime directory is, without creating or checking it."""
    explicit = os.environ.get("SCHEDCP_RUNTIME_DIR")
    if explicit:
        return Path(explicit)
    if _is_root():
        return SYSTEM_RUNTIME_DIR
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    return Path(xdg) / "schedcp" if xdg else Path("/tmp") / f"schedcp-{os.getuid()}"


def runtime_dir() -> Path:
    """Sockets and per-VM scratch space (short paths: unix socket paths are limited), checked.

    Root's is world-traversable (0755) so users allowed on the daemon can reach its socket; it is
    still root's alone to write. Everyone else's is private (0700)."""
    path = runtime_dir_path()
    return private_dir(path, mode=0o755 if path == SYSTEM_RUNTIME_DIR else 0o700)


def daemon_socket() -> Path:
    """The one default socket of the daemon, for the daemon and for every client."""
    return Path(os.environ.get("SCHEDCP_DAEMON_SOCKET") or DAEMON_SOCKET)


def package_dir() -> Path:
    return Path(__file__).resolve().parent


def schedulers_dir() -> Path:
    """Our BPF C library, its metadata and the shared header, shipped as package data."""
    return package_dir() / "schedulers"


def ensure(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def check_dir_fd(fd: int, path: Path, *, owner: int | None = None) -> os.stat_result:
    """Refuse a directory (open as ``fd``) that is not owned by ``owner`` or that others may write."""
    owner = os.geteuid() if owner is None else owner
    st = os.fstat(fd)
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafePathError(
            f"{path} is not a directory", f"remove it, or point SchedCP elsewhere ({_override(path)})"
        )
    if st.st_uid != owner:
        raise UnsafePathError(
            f"{path} is owned by uid {st.st_uid}, not by uid {owner} who is about to use it; "
            "another user may have created it first",
            f"inspect and remove it (rm -r {path}), or set {_override(path)} to a directory you own",
        )
    if st.st_mode & 0o022:
        raise UnsafePathError(
            f"{path} is writable by group or others (mode {stat.S_IMODE(st.st_mode):04o})",
            f"chmod go-w {path} after checking its contents, or set {_override(path)}",
        )
    return st


def _override(path: Path) -> str:
    return "SCHEDCP_RUNTIME_DIR" if "run" in path.parts or "tmp" in path.parts else "SCHEDCP_DATA_DIR"


def private_dir(path: Path, *, mode: int = 0o700, owner: int | None = None) -> Path:
    """Create ``path`` (and missing parents) or check the existing one; return it once it is safe.

    A new directory gets ``mode`` through its descriptor (``fchmod``, so the umask cannot widen or
    narrow it); an existing one must be a real directory (``O_NOFOLLOW``: a symbolic link is
    refused, not followed), owned by ``owner`` (default: the effective uid) and not writable by
    group or others. The parents are created with 0755 if missing; they are not otherwise checked:
    an attacker who controls ``/run`` or ``/var/lib`` already owns the machine."""
    path = Path(os.path.abspath(path))
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o755, exist_ok=True)
    created = True
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        created = False
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise UnsafePathError(
            f"{path} cannot be used as a private directory ({exc.strerror}; a symbolic link or a file?)",
            f"remove it, or set {_override(path)} to a directory you own",
        ) from None
    try:
        check_dir_fd(fd, path, owner=owner)
        if created:
            os.fchmod(fd, mode)
    finally:
        os.close(fd)
    return path


def open_private_file(path: Path, flags: int, mode: int = 0o600) -> int:
    """Open a file in a checked directory without following a symbolic link planted at its name.

    Refuses a file that another user owns; a new file gets ``mode`` exactly (``fchmod``)."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.geteuid():
            raise UnsafePathError(
                f"{path} is not a regular file owned by uid {os.geteuid()}", f"inspect and remove {path}"
            )
        if stat.S_IMODE(st.st_mode) & ~mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd
