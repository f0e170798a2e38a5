# SPDX-License-Identifier: Apache-2.0
"""What the static rules know about the target kernel: its kfuncs and sched_ext constants.

Read from the target's generated ``vmlinux.h`` (bpftool emits every kfunc prototype and the
sched_ext enums there). Without a kernel at hand, the defaults below describe the sched_ext ABI that
has been stable since 6.12, and no kfunc availability is claimed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

U64_MAX = (1 << 64) - 1
DEFAULT_CONSTANTS = {
    "SCX_DSQ_FLAG_BUILTIN": 1 << 63,
    "SCX_DSQ_FLAG_LOCAL_ON": 1 << 62,
    "SCX_DSQ_INVALID": 1 << 63,
    "SCX_DSQ_GLOBAL": (1 << 63) | 1,
    "SCX_DSQ_LOCAL": (1 << 63) | 2,
    "SCX_DSQ_LOCAL_ON": (1 << 63) | (1 << 62),
    "SCX_DSQ_LOCAL_CPU_MASK": 0xFFFFFFFF,
    "SCX_SLICE_DFL": 20_000_000,
    "SCX_SLICE_INF": U64_MAX,
    "SCX_ENQ_WAKEUP": 1,
    "SCX_ENQ_HEAD": 1 << 16,
    "SCX_ENQ_PREEMPT": 1 << 32,
    "SCX_KICK_IDLE": 1,
    "SCX_KICK_PREEMPT": 2,
    "SCX_KICK_WAIT": 4,
    "NUMA_NO_NODE": -1,
    "NSEC_PER_SEC": 1_000_000_000,
    "NSEC_PER_MSEC": 1_000_000,
    "NSEC_PER_USEC": 1_000,
    "true": 1,
    "false": 0,
}
# Kfuncs renamed in 6.13 and removed around 6.17, with their replacements.
RENAMED_KFUNCS = {
    "scx_bpf_dispatch": "scx_bpf_dsq_insert",
    "scx_bpf_dispatch_vtime": "scx_bpf_dsq_insert_vtime",
    "scx_bpf_consume": "scx_bpf_dsq_move_to_local",
    "scx_bpf_dispatch_from_dsq": "scx_bpf_dsq_move",
    "scx_bpf_dispatch_vtime_from_dsq": "scx_bpf_dsq_move_vtime",
    "scx_bpf_dispatch_from_dsq_set_slice": "scx_bpf_dsq_move_set_slice",
    "scx_bpf_dispatch_from_dsq_set_vtime": "scx_bpf_dsq_move_set_vtime",
}
_KFUNC = re.compile(r"^extern (?P<ret>[^;(]*?)\b(?P<name>\w+)\((?P<params>[^;]*)\)[^;]*__ksym;", re.M)
_ENUM = re.compile(r"^\s*(?P<name>(?:SCX|SCX_\w+|NUMA)\w*) = (?P<value>-?\d+)U?L{0,2},?$", re.M)
_VERSION = re.compile(r"SCHEDCP_KERNEL_(?P<which>MAJOR|MINOR) (?P<value>\d+)")


@dataclass
class Prototype:
    name: str
    nparams: int
    returns_void: bool


@dataclass
class KernelFacts:
    release: str | None = None
    version: tuple[int, int] | None = None
    kfuncs: dict[str, Prototype] = field(default_factory=dict)  # empty: unknown
    constants: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_CONSTANTS))

    @property
    def knows_kfuncs(self) -> bool:
        return bool(self.kfuncs)

    def has_kfunc(self, name: str) -> bool | None:
        if not self.kfuncs:
            return None
        return name in self.kfuncs

    def label(self) -> str:
        return self.release or (f"{self.version[0]}.{self.version[1]}" if self.version else "the target kernel")


def _count_params(params: str) -> int:
    params = params.strip()
    if not params or params == "void":
        return 0
    return params.count(",") + 1


@lru_cache(maxsize=8)
def _load(include_dir: str, mtime: float, release: str | None) -> KernelFacts:
    inc = Path(include_dir)
    text = (inc / "vmlinux.h").read_text(errors="replace")
    facts = KernelFacts(release=release)
    for m in _KFUNC.finditer(text):
        ret = m.group("ret").strip()
        facts.kfuncs[m.group("name")] = Prototype(m.group("name"), _count_params(m.group("params")), ret == "void")
    for m in _ENUM.finditer(text):
        facts.constants[m.group("name")] = int(m.group("value"))
    kernel_h = inc / "schedcp_kernel.h"
    if kernel_h.exists():
        found = {m.group("which"): int(m.group("value")) for m in _VERSION.finditer(kernel_h.read_text())}
        if "MAJOR" in found and "MINOR" in found:
            facts.version = (found["MAJOR"], found["MINOR"])
    return facts


def from_include_dir(include_dir: Path, release: str | None = None) -> KernelFacts:
    """Facts for the kernel whose generated headers are in include_dir."""
    vmlinux_h = include_dir / "vmlinux.h"
    facts = _load(str(include_dir), vmlinux_h.stat().st_mtime, release)
    return KernelFacts(facts.release, facts.version, dict(facts.kfuncs), dict(facts.constants))


def default() -> KernelFacts:
    return KernelFacts()
