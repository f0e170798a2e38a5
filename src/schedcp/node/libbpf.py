# SPDX-License-Identifier: Apache-2.0
"""A minimal sched_ext loader over libbpf.so.1 with ctypes.

Open an object, patch read-only data (tunables) and struct_ops fields (timeout, flags) before load,
load it (capturing libbpf's and the kernel verifier's messages), attach its struct_ops map, and
read the program's global-data sections while it runs. libbpf >= 1.3 is required so that
``bpf_map__initial_value`` exposes the struct_ops data.

An object may define several ``struct_ops`` maps (alternatives for different kernels); exactly one
is created and attached (the caller's choice, else the first), the others are switched off before
load, since registering two sched_ext schedulers at once fails with EBUSY. What the scx userspace
loaders do for every scheduler (fill the ``__SCX_*`` enum variables, clear ops fields the running
kernel lacks, size and read back the exit info) is in ``scx.py``'s ``ScxLoaderFixups`` on top of
the primitives here.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
from dataclasses import dataclass
from typing import Any

from .protocol import NodeError

BTF_KIND_STRUCT = 4
BPF_F_LINK = 1 << 13
# Global-data maps are named "<obj prefix>.bss" etc.; only these sections are readable here.
DATASEC_SUFFIXES = (".bss", ".data", ".rodata")

_PRINT_FN = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
_lock = threading.Lock()
_log: list[str] = []
_lib: ctypes.CDLL | None = None
_libc = ctypes.CDLL(None, use_errno=True)
_libc.vsnprintf.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_void_p]


@_PRINT_FN
def _print_cb(level: int, fmt: bytes, args: int) -> int:
    buf = ctypes.create_string_buffer(8192)
    _libc.vsnprintf(buf, len(buf), fmt, args)
    text = buf.value.decode(errors="replace")
    if len(_log) < 20000:
        _log.append(text)
    return 0


def lib() -> ctypes.CDLL:
    global _lib
    if _lib is not None:
        return _lib
    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    try:
        handle = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise NodeError("libbpf_missing", f"cannot load libbpf: {exc}", "install libbpf1 (>= 1.5)") from exc
    vp, cp, i, u32, sz = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint32, ctypes.c_size_t
    sigs = {
        "libbpf_set_print": (vp, [_PRINT_FN]),
        "libbpf_major_version": (u32, []),
        "libbpf_minor_version": (u32, []),
        "bpf_object__open_file": (vp, [cp, vp]),
        "bpf_object__load": (i, [vp]),
        "bpf_object__close": (None, [vp]),
        "bpf_object__name": (cp, [vp]),
        "bpf_object__next_map": (vp, [vp, vp]),
        "bpf_object__btf": (vp, [vp]),
        "bpf_object__next_program": (vp, [vp, vp]),
        "bpf_program__autoload": (ctypes.c_bool, [vp]),
        "btf__raw_data": (vp, [vp, ctypes.POINTER(u32)]),
        "btf__load_vmlinux_btf": (vp, []),
        "bpf_map__set_autocreate": (i, [vp, ctypes.c_bool]),
        "bpf_map__set_value_size": (i, [vp, u32]),
        "bpf_map__value_size": (u32, [vp]),
        "bpf_map__name": (cp, [vp]),
        "bpf_map__type": (i, [vp]),
        "bpf_map__is_internal": (ctypes.c_bool, [vp]),
        "bpf_map__initial_value": (vp, [vp, ctypes.POINTER(sz)]),
        "bpf_map__attach_struct_ops": (vp, [vp]),
        "bpf_link__destroy": (i, [vp]),
        "bpf_link__fd": (i, [vp]),
        "bpf_map__fd": (i, [vp]),
        "bpf_map__map_flags": (u32, [vp]),
        "bpf_map_lookup_elem": (i, [i, vp, vp]),
        "bpf_map_delete_elem": (i, [i, vp]),
        "btf__find_by_name_kind": (i, [vp, cp, u32]),
        "btf__type_by_id": (vp, [vp, u32]),
        "btf__name_by_offset": (cp, [vp, u32]),
        "libbpf_strerror": (i, [i, cp, sz]),
    }
    for fname, (restype, argtypes) in sigs.items():
        fn = getattr(handle, fname)
        fn.restype = restype
        fn.argtypes = argtypes
    handle.libbpf_set_print(_print_cb)
    _lib = handle
    return handle


def version() -> str:
    handle = lib()
    return f"{handle.libbpf_major_version()}.{handle.libbpf_minor_version()}"


def _take_log() -> list[str]:
    lines = "".join(_log).splitlines()
    _log.clear()
    return lines


def _struct_members(btf: int, name: str) -> dict[str, int]:
    """Byte offsets of a struct's members, from BTF (bitfields are not needed here)."""
    handle = lib()
    type_id = handle.btf__find_by_name_kind(btf, name.encode(), BTF_KIND_STRUCT)
    if type_id < 0:
        return {}
    ptr = handle.btf__type_by_id(btf, type_id)
    info = ctypes.c_uint32.from_address(ptr + 4).value
    vlen, kflag = info & 0xFFFF, info >> 31
    members: dict[str, int] = {}
    for idx in range(vlen):
        base = ptr + 12 + idx * 12
        name_off = ctypes.c_uint32.from_address(base).value
        offset = ctypes.c_uint32.from_address(base + 8).value
        bits = offset & 0xFFFFFF if kflag else offset
        mname = handle.btf__name_by_offset(btf, name_off)
        if mname:
            members[mname.decode()] = bits // 8
    return members


_vmlinux_btf: int | None = None


def kernel_struct_members(name: str) -> dict[str, int]:
    """Members (byte offsets) of a struct in the running kernel's BTF; {} when it has none."""
    global _vmlinux_btf
    handle = lib()
    if _vmlinux_btf is None:
        _vmlinux_btf = handle.btf__load_vmlinux_btf() or 0
    return _struct_members(_vmlinux_btf, name) if _vmlinux_btf else {}


@dataclass
class HeldMap:
    """A map of a loaded object, by descriptor: what the agent keeps of an object a child loaded."""

    name: str
    kind: str  # "data" (a global-data section) or "struct_ops"
    fd: int
    value_size: int
    link: bool = False  # a struct_ops map created for links (BPF_F_LINK)


def datasec_match(names: list[str], section: str) -> int | None:
    """Index of the data-section map that holds `section` (".rodata", ".data", ".data.NAME"): libbpf
    names them "<object prefix>.rodata" or after a custom section."""
    for i, name in enumerate(names):
        if name == section or name.endswith(section):
            return i
    return None


def map_value(fd: int, size: int) -> bytes | None:
    """The value of entry 0 of an array map, by descriptor (a global-data section's live bytes)."""
    key = ctypes.c_uint32(0)
    buf = ctypes.create_string_buffer(max(1, size))
    if lib().bpf_map_lookup_elem(fd, ctypes.byref(key), buf) != 0:
        return None
    return buf.raw[:size]


def map_delete(fd: int) -> None:
    """Delete entry 0: for a struct_ops map registered without a link, this unregisters it."""
    key = ctypes.c_uint32(0)
    lib().bpf_map_delete_elem(fd, ctypes.byref(key))


class LoadedScheduler:
    """One sched_ext object through its life: opened, patched, loaded, attached, closed."""

    def __init__(self, path: str, struct_ops: str | None = None) -> None:
        self.path = path
        self.links: list[int] = []
        self.obj: int | None = None
        self.ops_name: str | None = None
        self.struct_ops_maps: list[str] = []
        self.struct_ops: str | None = None  # the map that is created and attached
        handle = lib()
        with _lock:
            _take_log()
            obj = handle.bpf_object__open_file(path.encode(), None)
            log = _take_log()
        if not obj:
            err = ctypes.get_errno()
            raise NodeError(
                "open_failed",
                f"libbpf could not open {path}: {_strerror(err)}",
                "check that the file is a BPF ELF object built with clang -target bpf",
                log=log[-40:],
            )
        self.obj = obj
        for mp in self._maps():
            if handle.bpf_map__type(mp) == 26:  # BPF_MAP_TYPE_STRUCT_OPS
                self.struct_ops_maps.append(handle.bpf_map__name(mp).decode())
        if not self.struct_ops_maps:
            self.close()
            raise NodeError(
                "no_struct_ops",
                f"{path} has no struct_ops map, so it is not a sched_ext scheduler",
                'define a SEC(".struct_ops.link") struct sched_ext_ops variable',
            )
        if struct_ops is not None and struct_ops not in self.struct_ops_maps:
            self.close()
            raise NodeError(
                "unknown_struct_ops",
                f"the object has no struct_ops map {struct_ops!r}",
                f"choose one of {self.struct_ops_maps}",
            )
        self.struct_ops = struct_ops or self.struct_ops_maps[0]
        for mp in self._maps():
            if handle.bpf_map__type(mp) == 26 and handle.bpf_map__name(mp).decode() != self.struct_ops:
                handle.bpf_map__set_autocreate(mp, False)
        self.ops_name = self._ops_field_str("name")

    def _maps(self):
        handle = lib()
        mp = handle.bpf_object__next_map(self.obj, None)
        while mp:
            yield mp
            mp = handle.bpf_object__next_map(self.obj, mp)

    def _struct_ops_data(self) -> tuple[int, int, dict[str, int]]:
        handle = lib()
        for mp in self._maps():
            if handle.bpf_map__type(mp) == 26 and handle.bpf_map__name(mp).decode() == self.struct_ops:
                size = ctypes.c_size_t()
                data = handle.bpf_map__initial_value(mp, ctypes.byref(size))
                if not data:
                    raise NodeError("libbpf_too_old", "libbpf does not expose struct_ops data", "use libbpf >= 1.3")
                members = _struct_members(handle.bpf_object__btf(self.obj), "sched_ext_ops")
                return data, size.value, members
        raise NodeError("no_struct_ops", "no struct_ops map", "")

    def _ops_field_str(self, field: str) -> str | None:
        data, _, members = self._struct_ops_data()
        if field not in members:
            return None
        return ctypes.string_at(data + members[field]).decode(errors="replace") or None

    def set_ops_u32(self, field: str, value: int) -> None:
        data, _size, members = self._struct_ops_data()
        if field not in members:
            raise NodeError("unknown_field", f"struct sched_ext_ops has no field {field!r} on this kernel", "")
        ctypes.c_uint32.from_address(data + members[field]).value = value

    def set_ops_u64_or(self, field: str, bits: int) -> None:
        data, _size, members = self._struct_ops_data()
        if field not in members:
            raise NodeError("unknown_field", f"struct sched_ext_ops has no field {field!r} on this kernel", "")
        cell = ctypes.c_uint64.from_address(data + members[field])
        cell.value = cell.value | bits

    def _datasec(self, suffix: str) -> tuple[int, int] | None:
        handle = lib()
        for mp in self._maps():
            name = handle.bpf_map__name(mp).decode()
            if handle.bpf_map__is_internal(mp) and name.endswith(suffix):
                size = ctypes.c_size_t()
                data = handle.bpf_map__initial_value(mp, ctypes.byref(size))
                if data:
                    return data, size.value
        return None

    def _datasec_map(self, section: str) -> int | None:
        """The internal map of a data section: ".rodata", ".data", or a custom ".data.NAME"."""
        handle = lib()
        internal = [mp for mp in self._maps() if handle.bpf_map__is_internal(mp)]
        index = datasec_match([handle.bpf_map__name(mp).decode() for mp in internal], section)
        return internal[index] if index is not None else None

    def object_btf_raw(self) -> bytes:
        """The object's BTF as libbpf holds it after open (data-section offsets filled in)."""
        handle = lib()
        btf = handle.bpf_object__btf(self.obj)
        if not btf:
            raise NodeError("no_btf", "the object has no BTF", "compile with -g")
        size = ctypes.c_uint32()
        data = handle.btf__raw_data(btf, ctypes.byref(size))
        return ctypes.string_at(data, size.value)

    def struct_ops_bytes(self) -> tuple[int, int, dict[str, int]]:
        """(address, size, member offsets) of the chosen struct_ops map's data, before load."""
        return self._struct_ops_data()

    def resize_datasec(self, section: str, size: int) -> bool:
        """Resize a custom data section map (RESIZABLE_ARRAY); False when libbpf refuses."""
        mp = self._datasec_map(section)
        return mp is not None and lib().bpf_map__set_value_size(mp, size) == 0

    def datasec_bytes(self, section: str) -> tuple[int, int] | None:
        """(address, size) of a data section's bytes: initial value before load, live after."""
        mp = self._datasec_map(section)
        if mp is None:
            return None
        size = ctypes.c_size_t()
        data = lib().bpf_map__initial_value(mp, ctypes.byref(size))
        return (data, size.value) if data else None

    def datasec_data(self, section: str) -> bytes | None:
        """A copy of a data section's bytes (see datasec_bytes)."""
        found = self.datasec_bytes(section)
        return ctypes.string_at(*found) if found is not None else None

    def held_maps(self) -> list[HeldMap]:
        """After load: the maps the agent keeps (data sections and the chosen struct_ops map), with
        their descriptors, for passing to the agent (childload.py)."""
        handle = lib()
        out: list[HeldMap] = []
        for mp in self._maps():
            name = handle.bpf_map__name(mp).decode()
            struct_ops = handle.bpf_map__type(mp) == 26 and name == self.struct_ops
            if not (handle.bpf_map__is_internal(mp) or struct_ops):
                continue
            fd = handle.bpf_map__fd(mp)
            if fd < 0:
                continue  # not created (a struct_ops alternative switched off)
            kind = "struct_ops" if struct_ops else "data"
            link = bool(handle.bpf_map__map_flags(mp) & BPF_F_LINK)
            out.append(HeldMap(name, kind, fd, int(handle.bpf_map__value_size(mp)), link))
        return out

    def link_fds(self) -> list[int]:
        """Descriptors of the links attach() created (for a non-link struct_ops map: the map's)."""
        return [lib().bpf_link__fd(link) for link in self.links]

    def programs(self) -> int:
        """How many programs libbpf will load (autoload on)."""
        handle = lib()
        count = 0
        prog = handle.bpf_object__next_program(self.obj, None)
        while prog:
            count += bool(handle.bpf_program__autoload(prog))
            prog = handle.bpf_object__next_program(self.obj, prog)
        return count

    def patch(self, section: str, offset: int, value: bytes) -> None:
        """Overwrite bytes of a global-data section before load (how tunables are set)."""
        found = self._datasec(section)
        if found is None:
            raise NodeError("no_section", f"the object has no {section} section to patch", "")
        data, size = found
        if offset < 0 or offset + len(value) > size:
            raise NodeError("bad_patch", f"patch at {offset}+{len(value)} is outside {section} ({size} bytes)", "")
        ctypes.memmove(data + offset, value, len(value))

    def load(self) -> list[str]:
        handle = lib()
        with _lock:
            _take_log()
            rc = handle.bpf_object__load(self.obj)
            log = _take_log()
        if rc != 0:
            raise NodeError(
                "load_failed",
                f"the kernel rejected {self.ops_name or self.path}: {_strerror(-rc)}",
                "read verifier_log; the line after the last ';' comment is usually the failing source line",
                verifier_log=log[-400:],
            )
        return log

    def attach(self) -> None:
        handle = lib()
        for mp in self._maps():
            if handle.bpf_map__type(mp) != 26 or handle.bpf_map__name(mp).decode() != self.struct_ops:
                continue
            with _lock:
                _take_log()
                link = handle.bpf_map__attach_struct_ops(mp)
                err = ctypes.get_errno()
                log = _take_log()
            if not link:
                raise NodeError(
                    "attach_failed",
                    f"attaching {handle.bpf_map__name(mp).decode()} failed: {_strerror(err)}",
                    "another sched_ext scheduler may be running (detach it first), or ops.init() failed; "
                    "see kernel_events",
                    log=log[-40:],
                )
            self.links.append(link)

    def read_sections(self) -> dict[str, bytes]:
        """Live bytes of .bss/.data/.rodata (memory-mapped by libbpf after load)."""
        out: dict[str, bytes] = {}
        for suffix in DATASEC_SUFFIXES:
            found = self._datasec(suffix)
            if found is not None:
                data, size = found
                out[suffix] = ctypes.string_at(data, size)
        return out

    def detach(self) -> None:
        handle = lib()
        while self.links:
            handle.bpf_link__destroy(self.links.pop())

    def close(self) -> None:
        self.detach()
        if self.obj:
            lib().bpf_object__close(self.obj)
            self.obj = None


def _strerror(err: int) -> str:
    err = abs(err)
    buf = ctypes.create_string_buffer(256)
    try:
        lib().libbpf_strerror(err, buf, len(buf))
        text = buf.value.decode(errors="replace")
    except Exception:
        text = ""
    import os

    return text or os.strerror(err)


def info() -> dict[str, Any]:
    try:
        return {"available": True, "version": version()}
    except NodeError as exc:
        return {"available": False, "reason": exc.cause}
