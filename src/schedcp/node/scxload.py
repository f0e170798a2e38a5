# SPDX-License-Identifier: Apache-2.0
"""What the scx userspace loaders do for every scheduler, done generically before load.

Sources written against the kernel's ``<scx/common.bpf.h>`` expect their loader to:

* fill each ``const volatile u64 __SCX_<NAME>`` in ``.rodata`` with the running kernel's value of
  the enumerator ``SCX_<NAME>`` (``SCX_ENUM_INIT``); left at 0, ``SCX_DSQ_GLOBAL`` is DSQ 0 and the
  kernel ejects the scheduler at once;
* clear ``sched_ext_ops`` fields the running kernel does not have (``SCX_OPS_OPEN``), so a source
  built with newer headers still loads, and set ``hotplug_seq`` so a CPU hotplug during load is seen;
* size the exit-info dump (``UEI_DEFINE``) and read ``struct user_exit_info`` back after an exit,
  which holds the kernel's reason and message as the scheduler recorded them.

We also fill CPU counts where the variable's name has one standard meaning (``nr_cpu_ids`` and
friends, declared ``const volatile``): the number of possible CPUs. Everything else a userspace half
writes is scheduler-specific and stays the caller's business (``--rodata NAME=VALUE``).
This runs on the node, against the kernel that will run the program: its BTF is right there
(/sys/kernel/btf/vmlinux), on a real host and in the micro-VM alike, so the values can never come
from a different kernel than the one loading the object.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from .btf import Btf, BtfError
from .libbpf import LoadedScheduler, kernel_struct_members
from .protocol import NodeError

KERNEL_BTF = Path(os.environ.get("SCHEDCP_KERNEL_BTF", "/sys/kernel/btf/vmlinux"))
HOTPLUG_SEQ = Path("/sys/kernel/sched_ext/hotplug_seq")
CPU_POSSIBLE = Path("/sys/devices/system/cpu/possible")
# `const volatile` integers whose name means "how many CPUs the kernel may have" in sched_ext code.
CPU_COUNT_NAMES = ("nr_cpu_ids", "nr_cpus", "nr_possible_cpus", "num_possible_cpus")
ENUM_PREFIX = "__SCX_"
UEI_DUMP_LEN = 8192
MAX_DUMP_RETURN = 8192


@dataclass
class _KernelEnums:
    values: dict[str, int]
    exit_kinds: dict[int, str]


_enums: _KernelEnums | None = None


def kernel_btf_sha256() -> str:
    try:
        return hashlib.sha256(KERNEL_BTF.read_bytes()).hexdigest()
    except OSError:
        return ""


def kernel_enums(given: dict[str, Any] | None = None) -> _KernelEnums:
    """The running kernel's SCX enumerators, read once per node process and only for objects that
    need them. One pass over ~120k vmlinux types takes Python a minute and more under emulation, so
    the control plane may send the values it read from the same kernel's BTF (``given``: its
    sha256 and the values); they are used only when that hash is this kernel's BTF."""
    global _enums
    if _enums is None and given and given.get("btf_sha256") == kernel_btf_sha256():
        values = {str(k): int(v) for k, v in (given.get("values") or {}).items()}
        kinds = {v: k for k, v in values.items() if k.startswith("SCX_EXIT_")}
        _enums = _KernelEnums(values, kinds)
    if _enums is None:
        try:
            btf = Btf.from_file(KERNEL_BTF)
        except (OSError, BtfError) as exc:
            raise NodeError(
                "no_kernel_btf", f"cannot read the kernel's BTF at {KERNEL_BTF}: {exc}", "the kernel needs BTF"
            ) from exc
        kinds = {v: k for k, v in btf.enum_type_values("scx_exit_kind").items()}
        _enums = _KernelEnums(btf.enum_constants("SCX_"), kinds)
    return _enums


def _kernel_enums_from(given: dict[str, Any] | None) -> _KernelEnums:
    return kernel_enums(given)


def possible_cpus() -> int:
    """1 + the highest possible CPU id (what libbpf_num_possible_cpus() returns)."""
    try:
        text = CPU_POSSIBLE.read_text().strip()
    except OSError:
        return os.cpu_count() or 1
    high = 0
    for part in text.split(","):
        high = max(high, int(part.split("-")[-1]))
    return high + 1


@dataclass
class Fixups:
    """What was done to the object before load, reported back to the control plane."""

    enums_filled: int = 0
    enums_missing: list[str] = field(default_factory=list)
    cpu_counts: dict[str, int] = field(default_factory=dict)
    rodata_set: list[str] = field(default_factory=list)
    ops_cleared: list[str] = field(default_factory=list)
    hotplug_seq: int | None = None
    uei: list[str] = field(default_factory=list)
    uei_dump_len: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v not in (0, [], {}, None)}


def _write(addr: int, offset: int, raw: bytes) -> None:
    ctypes.memmove(addr + offset, raw, len(raw))


def apply(
    sched: LoadedScheduler,
    *,
    rodata: dict[str, bytes] | None = None,
    enums: bool = True,
    cpu_counts: bool = True,
    ops_compat: bool = True,
    hotplug: bool = True,
    uei_dump_len: int = UEI_DUMP_LEN,
    kernel_enums: dict[str, Any] | None = None,
) -> Fixups:
    """Apply the generic scx loader steps and the caller's .rodata values; before load only."""
    fix = Fixups()
    rodata = dict(rodata or {})
    obj = Btf(sched.object_btf_raw())
    ro_vars = {v.name: v for v in obj.datasec(".rodata")}
    unknown = sorted(set(rodata) - set(ro_vars))
    if unknown:
        raise NodeError(
            "unknown_rodata",
            f"no const volatile variable {unknown[0]!r} in .rodata",
            f"the object's .rodata holds: {', '.join(sorted(ro_vars)[:20])}",
        )
    needs_enums = enums and any(n.startswith(ENUM_PREFIX) for n in ro_vars)
    kernel = _kernel_enums_from(kernel_enums) if needs_enums else None
    # UEI first: resizing a custom section moves the data, so sections are looked up afterwards.
    data_vars = obj.datasec(".data")
    for var in data_vars:
        if obj.type_name(obj.resolve(var.type_id).id) != "user_exit_info":
            continue
        fix.uei.append(var.name)
        len_var = ro_vars.get(f"{var.name}_dump_len")
        if uei_dump_len > 0 and len_var is not None and sched.resize_datasec(f".data.{var.name}_dump", uei_dump_len):
            rodata.setdefault(len_var.name, struct.pack("<I", uei_dump_len)[: len_var.size])
            fix.uei_dump_len = uei_dump_len
    ro = sched.datasec_bytes(".rodata")
    if ro is not None:
        addr, size = ro
        for name, var in ro_vars.items():
            if var.offset + var.size > size:
                continue
            if name in rodata:
                raw = rodata[name]
                if len(raw) != var.size:
                    raise NodeError("bad_rodata", f"{name} is {var.size} bytes, got {len(raw)}", "")
                _write(addr, var.offset, raw)
                if not name.endswith("_dump_len") or name[: -len("_dump_len")] not in fix.uei:
                    fix.rodata_set.append(name)
            elif kernel is not None and name.startswith(ENUM_PREFIX) and var.size == 8:
                value = kernel.values.get(name[2:])
                if value is None:
                    fix.enums_missing.append(name[2:])
                    value = 0
                _write(addr, var.offset, struct.pack("<Q", value & (1 << 64) - 1))
                fix.enums_filled += value != 0
            elif cpu_counts and name in CPU_COUNT_NAMES and var.size in (4, 8):
                scalar = obj.scalar(var.type_id)
                if scalar.kind == "int":
                    count = possible_cpus()
                    _write(addr, var.offset, count.to_bytes(var.size, "little"))
                    fix.cpu_counts[name] = count
    if ops_compat or hotplug:
        kernel_members = kernel_struct_members("sched_ext_ops")
        data, size, members = sched.struct_ops_bytes()
        obj_members = obj.members("sched_ext_ops")
        if ops_compat and kernel_members:
            for name, member in obj_members.items():
                if name in kernel_members or not name:
                    continue
                msize = obj.size_of(member.type_id)
                if member.offset + msize <= size and any(ctypes.string_at(data + member.offset, msize)):
                    ctypes.memset(data + member.offset, 0, msize)
                    fix.ops_cleared.append(name)
        if hotplug and "hotplug_seq" in kernel_members and "hotplug_seq" in members:
            try:
                seq = int(HOTPLUG_SEQ.read_text().strip())
            except (OSError, ValueError):
                seq = None
            if seq is not None:
                ctypes.c_uint64.from_address(data + members["hotplug_seq"]).value = seq
                fix.hotplug_seq = seq
    return fix


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class _ExitInfoSource(Protocol):
    """What read_exit_info needs: the agent's HeldScheduler, or a LoadedScheduler."""

    def object_btf_raw(self) -> bytes: ...

    def datasec_data(self, section: str) -> bytes | None: ...


def read_exit_info(sched: _ExitInfoSource) -> dict[str, Any] | None:
    """The scheduler's recorded exit (UEI), or None when it has none or has not exited."""
    try:
        obj = Btf(sched.object_btf_raw())
    except (NodeError, BtfError):
        return None
    live = sched.datasec_data(".data")
    if live is None:
        return None
    size = len(live)
    for var in obj.datasec(".data"):
        t = obj.resolve(var.type_id)
        if obj.type_name(t.id) != "user_exit_info" or var.offset + var.size > size:
            continue
        members = obj.struct_members(t.id)
        raw = live[var.offset : var.offset + var.size]
        fields = {
            name: raw[m.offset : m.offset + obj.size_of(m.type_id)]
            for name, m in members.items()
            if name in ("kind", "exit_cpu", "exit_code", "reason", "msg")
        }

        def field_bytes(name: str, width: int | None = None, fields: dict[str, bytes] = fields) -> bytes:
            return fields.get(name, b"")[: width or None]

        kind = int.from_bytes(field_bytes("kind", 4) or b"\0\0\0\0", "little", signed=True)
        if kind == 0:
            return None
        out: dict[str, Any] = {
            "variable": var.name,
            "kind": kind,
            "kind_name": _exit_kind_name(kind),
            "reason": _cstr(field_bytes("reason")),
            "message": _cstr(field_bytes("msg")),
        }
        if "exit_code" in members:
            out["exit_code"] = int.from_bytes(field_bytes("exit_code", 8), "little", signed=True)
        if "exit_cpu" in members:
            out["exit_cpu"] = int.from_bytes(field_bytes("exit_cpu", 4), "little", signed=True)
        dump = sched.datasec_data(f".data.{var.name}_dump")
        if dump is not None:
            text = _cstr(dump[:MAX_DUMP_RETURN])
            if text:
                out["dump"] = text
        return out
    return None


def _exit_kind_name(kind: int) -> str:
    # Only from enums already read: never start a slow BTF pass while the caller waits for a detach.
    return _enums.exit_kinds.get(kind, "") if _enums is not None else ""


def describe(info: dict[str, Any]) -> str:
    """One line: the kernel's reason and the scheduler's message, as `UEI_REPORT` prints them."""
    text = info.get("reason") or info.get("kind_name") or f"exit kind {info.get('kind')}"
    if info.get("message"):
        text += f" ({info['message']})"
    if isinstance(info.get("exit_cpu"), int) and info["exit_cpu"] >= 0:
        text += f" on CPU {info['exit_cpu']}"
    return re.sub(r"\s+", " ", text)[:400]
