# SPDX-License-Identifier: Apache-2.0
"""A cgroup around one whole sandbox: memory, process count and CPU bandwidth for all of it.

rlimits bound each process; a fork storm of 200 processes each under its own RLIMIT_AS still adds
up. A cgroup bounds the sum. cgroup v2 is used when this process may create a child cgroup with
the memory and pids controllers (root, or a systemd-delegated subtree); otherwise the v1
hierarchies (memory, pids, cpu) when they are writable (root on a v1 or hybrid host, such as this
project's CI machines). When neither is possible the sandbox still runs under its rlimits and the
result says why the cgroup was not applied (``cgroup.note``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PREFIX = "schedcp-sbx-"
CPU_PERIOD_US = 100_000


@dataclass
class CgroupLimits:
    memory_bytes: int
    max_procs: int
    cpus: float  # CPU bandwidth in cores (e.g. 1.0)


@dataclass
class SandboxCgroup:
    """The directories of one sandbox's cgroup (one for v2, one per controller for v1)."""

    version: str = "none"  # "v2", "v1" or "none"
    dirs: list[Path] = field(default_factory=list)
    note: str = ""

    @property
    def active(self) -> bool:
        return bool(self.dirs)

    def join(self, pid: int = 0) -> None:
        """Move `pid` (0: the caller) into the cgroup; called in the child before it execs."""
        for d in self.dirs:
            (d / "cgroup.procs").write_text(str(pid or os.getpid()))

    def memory_peak(self) -> int | None:
        for d in self.dirs:
            for name in ("memory.peak", "memory.max_usage_in_bytes"):
                with contextlib.suppress(OSError, ValueError):
                    return int((d / name).read_text().split()[0])
        return None

    def oom_killed(self) -> bool:
        for d in self.dirs:
            for name in ("memory.events", "memory.oom_control"):  # v2, v1
                with contextlib.suppress(OSError, ValueError):
                    for line in (d / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill" and int(value) > 0:
                            return True
        return False

    def close(self) -> None:
        """Kill whatever is still inside, then remove the directories."""
        for d in self.dirs:
            kill = d / "cgroup.kill"
            if kill.exists():
                with contextlib.suppress(OSError):
                    kill.write_text("1")
        deadline = time.monotonic() + 5
        for d in self.dirs:
            while True:
                pids = _procs(d)
                for pid in pids:
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
        self.dirs = []


def _procs(d: Path) -> list[int]:
    try:
        return [int(x) for x in (d / "cgroup.procs").read_text().split()]
    except (OSError, ValueError):
        return []


def _own_paths() -> dict[str, str]:
    """Controller (or "" for v2) -> this process's cgroup path, from /proc/self/cgroup."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for controller in parts[1].split(",") if parts[1] else [""]:
            out[controller] = parts[2]
    return out


def _v2_mount() -> Path | None:
    for candidate in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if (candidate / "cgroup.controllers").exists():
            return candidate
    return None


def _sweep(parent: Path) -> None:
    """Remove empty cgroups that earlier sandboxes left behind (a killed launcher cannot clean up)."""
    with contextlib.suppress(OSError):
        for entry in parent.iterdir():
            if entry.name.startswith(PREFIX) and entry.is_dir() and not _procs(entry):
                with contextlib.suppress(OSError):
                    entry.rmdir()


def _mkdir(parent: Path, name: str) -> Path:
    _sweep(parent)
    path = parent / name
    path.mkdir()
    return path


def _try_v2(name: str, limits: CgroupLimits, own: dict[str, str]) -> SandboxCgroup | None:
    mount = _v2_mount()
    if mount is None or "" not in own:
        return None
    parent = mount / own[""].lstrip("/")
    try:
        available = set((parent / "cgroup.subtree_control").read_text().split())
    except OSError:
        return None
    if not {"memory", "pids"} <= available:
        return None
    try:
        path = _mkdir(parent, name)
    except OSError:
        return None
    cg = SandboxCgroup("v2", [path])
    try:
        (path / "memory.max").write_text(str(limits.memory_bytes))
        with contextlib.suppress(OSError):
            (path / "memory.swap.max").write_text("0")
        (path / "pids.max").write_text(str(limits.max_procs))
        if "cpu" in available:
            (path / "cpu.max").write_text(f"{int(limits.cpus * CPU_PERIOD_US)} {CPU_PERIOD_US}")
    except OSError:
        cg.close()
        return None
    return cg


_V1_FILES = {
    "memory": lambda lim: [
        ("memory.limit_in_bytes", lim.memory_bytes),
        ("memory.memsw.limit_in_bytes", lim.memory_bytes),
    ],
    "pids": lambda lim: [("pids.max", lim.max_procs)],
    "cpu": lambda lim: [("cpu.cfs_period_us", CPU_PERIOD_US), ("cpu.cfs_quota_us", int(lim.cpus * CPU_PERIOD_US))],
}


def _try_v1(name: str, limits: CgroupLimits, own: dict[str, str]) -> SandboxCgroup | None:
    cg = SandboxCgroup("v1")
    for controller, files in _V1_FILES.items():
        mount = CGROUP_ROOT / controller
        if controller not in own or not (mount / "cgroup.procs").exists():
            if controller == "cpu":
                continue  # CPU bandwidth is a bonus; RLIMIT_CPU and the wall clock still bound time
            cg.close()
            return None
        try:
            path = _mkdir(mount / own[controller].lstrip("/"), name)
        except OSError:
            cg.close()
            return None
        cg.dirs.append(path)
        for fname, value in files(limits):
            target = path / fname
            if fname.startswith("memory.memsw") and not target.exists():
                continue  # no swap accounting on this kernel
            try:
                target.write_text(str(value))
            except OSError:
                if controller == "cpu":
                    break
                cg.close()
                return None
    return cg


def create(limits: CgroupLimits) -> SandboxCgroup:
    """A fresh cgroup with these limits, or an inactive one whose note says why there is none."""
    own = _own_paths()
    name = f"{PREFIX}{os.getpid()}-{time.monotonic_ns()}"
    cg = _try_v2(name, limits, own) or _try_v1(name, limits, own)
    if cg is not None:
        return cg
    who = "root" if os.geteuid() == 0 else f"uid {os.geteuid()}"
    return SandboxCgroup(
        "none",
        note=f"no writable cgroup (v2 with memory+pids delegated, or v1 memory+pids) for {who}; "
        "the sandbox is bounded by per-process rlimits only",
    )
