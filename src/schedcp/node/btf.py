# SPDX-License-Identifier: Apache-2.0
"""A small reader of raw BTF (the kernel's /sys/kernel/btf/vmlinux, or an object's .BTF section).

Standard library only, because it runs in the node agent (host or micro-VM) as well as on the
control plane. What the sched_ext loader needs from BTF is narrow: enum constants by name (the
scx headers' ``__SCX_*`` .rodata variables are filled from the running kernel's enums), struct
members by name (clearing ``sched_ext_ops`` fields the kernel lacks, finding ``user_exit_info``
fields), and the variables of a data section with their scalar types (typed ``--rodata`` values).
libbpf has these lookups too, but through ctypes each is several foreign calls per type, and
walking ~150k vmlinux types that way is slower than one pass in Python over the bytes.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass
from pathlib import Path

BTF_MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_FWD = 1, 2, 3, 4, 5, 6, 7
KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_FUNC, KIND_FUNC_PROTO = 8, 9, 10, 11, 12, 13
KIND_VAR, KIND_DATASEC, KIND_FLOAT, KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 14, 15, 16, 17, 18, 19
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)
INT_SIGNED, INT_BOOL = 1 << 0, 1 << 2
# Bytes after the 12-byte header: (per vlen item, fixed), by kind.
_TRAILING = {
    KIND_INT: (0, 4),
    KIND_PTR: (0, 0),
    KIND_ARRAY: (0, 12),
    KIND_STRUCT: (12, 0),
    KIND_UNION: (12, 0),
    KIND_ENUM: (8, 0),
    KIND_FWD: (0, 0),
    KIND_FUNC: (0, 0),
    KIND_FUNC_PROTO: (8, 0),
    KIND_VAR: (0, 4),
    KIND_DATASEC: (12, 0),
    KIND_FLOAT: (0, 0),
    KIND_DECL_TAG: (0, 4),
    KIND_ENUM64: (12, 0),
    **{k: (0, 0) for k in (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)},
}


class BtfError(ValueError):
    pass


@dataclass(frozen=True)
class BtfType:
    id: int
    kind: int
    name: str
    size_or_type: int  # size for INT/STRUCT/UNION/ENUM/DATASEC, referenced type id otherwise
    vlen: int
    kflag: bool
    extra: tuple = ()  # kind-specific: members, enum values, array info, datasec entries, int encoding


@dataclass(frozen=True)
class Member:
    name: str
    type_id: int
    offset: int  # bytes


@dataclass(frozen=True)
class DatasecVar:
    name: str
    type_id: int
    offset: int
    size: int


@dataclass(frozen=True)
class Scalar:
    """What a variable holds, as far as typed assignment goes."""

    kind: str  # "int", "bool", "enum", "char_array", "other"
    size: int
    signed: bool = False
    type_name: str = ""


class Btf:
    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BtfError("BTF blob too short")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"bad BTF magic {magic:#x}")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._types_raw = memoryview(data)[hdr_len + type_off : hdr_len + type_off + type_len]
        self._strings = bytes(data[hdr_len + str_off : hdr_len + str_off + str_len])
        self._offsets = array("I")
        self.count = 0
        self._parse()
        self._cache: dict[int, BtfType] = {}
        self._by_name: dict[str, list[int]] | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> Btf:
        return cls(Path(path).read_bytes())

    def name(self, off: int) -> str:
        end = self._strings.find(b"\0", off)
        return self._strings[off : end if end >= 0 else None].decode(errors="replace")

    def _parse(self) -> None:
        """Index every type's position in one pass; types are decoded only when asked for."""
        raw = self._types_raw
        pos, n = 0, len(raw)
        unpack = struct.unpack_from
        offsets = self._offsets = array("I", [0])
        trailing = _TRAILING
        while pos < n:
            offsets.append(pos)
            info = unpack("<I", raw, pos + 4)[0]
            kind = (info >> 24) & 0x1F
            per_item, fixed = trailing.get(kind, (-1, -1))
            if per_item < 0:
                raise BtfError(f"unknown BTF kind {kind}")
            pos += 12 + fixed + per_item * (info & 0xFFFF)
        self.count = len(offsets)

    def _decode(self, type_id: int) -> BtfType:
        raw, pos, unpack = self._types_raw, self._offsets[type_id], struct.unpack_from
        name_off, info, size_or_type = unpack("<III", raw, pos)
        pos += 12
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
        extra: tuple = ()
        if kind == KIND_INT:
            extra = (unpack("<I", raw, pos)[0],)
        elif kind == KIND_ARRAY:
            extra = unpack("<III", raw, pos)  # elem type, index type, nelems
        elif kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM64, KIND_DATASEC):
            extra = tuple(unpack("<III", raw, pos + 12 * i) for i in range(vlen))
        elif kind == KIND_ENUM:
            extra = tuple(unpack("<Ii" if kflag else "<II", raw, pos + 8 * i) for i in range(vlen))
        return BtfType(type_id, kind, "", size_or_type, vlen, kflag, (name_off, extra))

    # -- lookups -------------------------------------------------------------------------------
    def type(self, type_id: int) -> BtfType:
        if not 0 < type_id < self.count:
            raise BtfError(f"no BTF type {type_id}")
        t = self._cache.get(type_id)
        if t is None:
            t = self._cache[type_id] = self._decode(type_id)
        return t

    def _name_at(self, type_id: int) -> int:
        return struct.unpack_from("<I", self._types_raw, self._offsets[type_id])[0]

    def _kind_at(self, type_id: int) -> int:
        return (struct.unpack_from("<I", self._types_raw, self._offsets[type_id] + 4)[0] >> 24) & 0x1F

    def type_name(self, type_id: int) -> str:
        return self.name(self.type(type_id).extra[0]) if type_id else "void"

    def _extra(self, t: BtfType) -> tuple:
        return t.extra[1]

    def find(self, name: str, kind: int | None = None) -> list[int]:
        if self._by_name is None:
            index: dict[str, list[int]] = {}
            for type_id in range(1, self.count):
                name_off = self._name_at(type_id)
                if name_off:
                    index.setdefault(self.name(name_off), []).append(type_id)
            self._by_name = index
        ids = self._by_name.get(name, [])
        return [i for i in ids if kind is None or self.type(i).kind == kind]

    def enum_constants(self, prefix: str = "") -> dict[str, int]:
        """Every enumerator whose name starts with prefix, across all enums (C enumerators share one
        namespace, so a name identifies its value)."""
        out: dict[str, int] = {}
        pre = prefix.encode()
        for type_id in range(1, self.count):
            kind = self._kind_at(type_id)
            if kind not in (KIND_ENUM, KIND_ENUM64):
                continue
            t = self.type(type_id)
            if t.kind == KIND_ENUM:
                for name_off, value in self._extra(t):
                    if self._strings.startswith(pre, name_off):
                        out[self.name(name_off)] = value
            elif t.kind == KIND_ENUM64:
                for name_off, lo, hi in self._extra(t):
                    if self._strings.startswith(pre, name_off):
                        value = (hi << 32) | lo
                        if t.kflag and value >= 1 << 63:
                            value -= 1 << 64
                        out[self.name(name_off)] = value
        return out

    def enum_type_values(self, enum_name: str) -> dict[str, int]:
        """The enumerators of one named enum."""
        out: dict[str, int] = {}
        for type_id in self.find(enum_name):
            t = self.type(type_id)
            if t.kind == KIND_ENUM:
                out.update((self.name(n), v) for n, v in self._extra(t))
            elif t.kind == KIND_ENUM64:
                out.update((self.name(n), (hi << 32) | lo) for n, lo, hi in self._extra(t))
        return out

    def members(self, struct_name: str) -> dict[str, Member]:
        """Members of the (first) struct with this name, with byte offsets; {} when absent."""
        ids = self.find(struct_name, KIND_STRUCT)
        if not ids:
            return {}
        return self.struct_members(ids[0])

    def struct_members(self, type_id: int) -> dict[str, Member]:
        t = self.type(type_id)
        out: dict[str, Member] = {}
        for name_off, mtype, offset in self._extra(t):
            bits = offset & 0xFFFFFF if t.kflag else offset
            out[self.name(name_off)] = Member(self.name(name_off), mtype, bits // 8)
        return out

    def size_of(self, type_id: int) -> int:
        for _ in range(32):
            t = self.type(type_id)
            if t.kind in (KIND_INT, KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64, KIND_DATASEC, KIND_FLOAT):
                return t.size_or_type
            if t.kind == KIND_PTR:
                return 8
            if t.kind == KIND_ARRAY:
                elem, _index, nelems = self._extra(t)
                return nelems * self.size_of(elem)
            if t.kind in (*_MODIFIERS, KIND_VAR):
                type_id = t.size_or_type
                continue
            return 0
        raise BtfError("type chain too deep")

    def resolve(self, type_id: int) -> BtfType:
        """Skip typedefs and qualifiers."""
        for _ in range(32):
            t = self.type(type_id)
            if t.kind not in (*_MODIFIERS, KIND_VAR):
                return t
            type_id = t.size_or_type
        raise BtfError("type chain too deep")

    def datasec(self, section: str) -> list[DatasecVar]:
        """The variables of one data section (e.g. ".rodata"), with offsets as libbpf laid them out."""
        out: list[DatasecVar] = []
        for sec_id in self.find(section, KIND_DATASEC):
            for var_id, offset, size in self._extra(self.type(sec_id)):
                var = self.type(var_id)
                name = self.type_name(var_id)
                out.append(DatasecVar(name, var.size_or_type if var.kind == KIND_VAR else var_id, offset, size))
        return out

    def datasec_names(self) -> list[str]:
        return [self.type_name(i) for i in range(1, self.count) if self._kind_at(i) == KIND_DATASEC]

    def scalar(self, type_id: int) -> Scalar:
        t = self.resolve(type_id)
        name = self.type_name(t.id)
        if t.kind == KIND_INT:
            enc = self._extra(t)[0] >> 24
            if enc & INT_BOOL:
                return Scalar("bool", t.size_or_type, False, name)
            return Scalar("int", t.size_or_type, bool(enc & INT_SIGNED), name)
        if t.kind in (KIND_ENUM, KIND_ENUM64):
            return Scalar("enum", t.size_or_type, t.kflag, name)
        if t.kind == KIND_ARRAY:
            elem, _index, nelems = self._extra(t)
            et = self.resolve(elem)
            if et.kind == KIND_INT and et.size_or_type == 1:
                return Scalar("char_array", nelems, False, self.type_name(et.id))
            return Scalar("other", self.size_of(t.id), False, f"{self.type_name(et.id)}[{nelems}]")
        return Scalar("other", self.size_of(t.id), False, name)
