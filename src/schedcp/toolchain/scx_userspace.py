# SPDX-License-Identifier: Apache-2.0
"""Does this scheduler need its userspace half? And if so, for what, exactly?

A sched_ext program written for the scx tooling is half of a program: its userspace loader may write
``.rodata`` before load, size arrays, feed maps while it runs. SchedCP's loader does the generic
part (node/scxload.py: enum values, CPU counts, exit info); this module finds what is left, so a
verdict can say "needs its userspace half: …" instead of passing or failing the program blindly.

Evidence, in the object and the sources:

* resizable arrays (``RESIZABLE_ARRAY(sec, name)``: a one-element array alone in a ``.sec.name``
  section), which only a loader can size and fill; the exit-info dump array is ours to size;
* a queue, stack or user ring buffer the program takes from (``bpf_map_pop_elem`` and friends on
  ``BPF_MAP_TYPE_QUEUE``/``STACK``/``USER_RINGBUF``): something in userspace has to put work there;
* the userspace half itself when it sits beside the source (``scx_foo.c`` next to
  ``scx_foo.bpf.c``, the layout of the kernel's ``tools/sched_ext`` and the scx repository): the
  ``.rodata``, ``.bss``/``.data``, ``struct_ops`` and map-size writes it makes before load, outside
  its option parsing. ``.rodata`` writes can be replayed with ``--rodata NAME=VALUE``; the rest cannot.

The C is only read with regular expressions, never compiled or run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from schedcp.node.btf import KIND_ARRAY, KIND_PTR, KIND_STRUCT, Btf
from schedcp.node.scxload import CPU_COUNT_NAMES
from schedcp.toolchain.build import comment_spans
from schedcp.toolchain.scx_loader import ENUM_PREFIX, object_btf

MAP_QUEUE, MAP_STACK, MAP_USER_RINGBUF = 22, 23, 31
_CONSUME = re.compile(r"\b(?:bpf_map_pop_elem|bpf_map_peek_elem|bpf_user_ringbuf_drain)\s*\(\s*&\s*(\w+)")
_PRODUCE = re.compile(r"\bbpf_map_push_elem\s*\(\s*&\s*(\w+)")
MAX_USERSPACE_BYTES = 256 * 1024


@dataclass
class Need:
    """One thing the userspace half does that SchedCP's loader does not."""

    what: str
    rodata: list[str] = field(default_factory=list)  # satisfiable by --rodata with these names

    def met_by(self, given: set[str]) -> bool:
        return bool(self.rodata) and set(self.rodata) <= given


@dataclass
class UserspaceNeeds:
    needs: list[Need] = field(default_factory=list)
    generic: list[str] = field(default_factory=list)  # what SchedCP's loader fills itself
    userspace_file: str | None = None

    def unmet(self, given_rodata: set[str] | None = None) -> list[Need]:
        given = given_rodata or set()
        return [n for n in self.needs if not n.met_by(given)]

    def summary(self, given_rodata: set[str] | None = None) -> str:
        unmet = self.unmet(given_rodata)
        if not unmet:
            return ""
        where = f" ({self.userspace_file})" if self.userspace_file else ""
        return f"needs its userspace half{where}: " + "; ".join(n.what for n in unmet)


def _map_types(btf: Btf) -> dict[str, int]:
    """BTF-defined maps (SEC(".maps")) and their BPF_MAP_TYPE_* numbers."""
    out: dict[str, int] = {}
    for var in btf.datasec(".maps"):
        t = btf.resolve(var.type_id)
        if t.kind != KIND_STRUCT:
            continue
        member = btf.struct_members(t.id).get("type")
        if member is None:
            continue
        ptr = btf.type(member.type_id)
        if ptr.kind != KIND_PTR:
            continue
        arr = btf.resolve(ptr.size_or_type)
        if arr.kind == KIND_ARRAY:
            out[var.name] = arr.extra[1][2]
    return out


def _resizable_arrays(btf: Btf, uei: set[str]) -> list[tuple[str, str]]:
    """(section, array) for each RESIZABLE_ARRAY except the exit-info dumps."""
    out: list[tuple[str, str]] = []
    for section in btf.datasec_names():
        parts = section.split(".")
        if len(parts) != 3 or parts[1] not in ("data", "rodata", "bss"):
            continue
        variables = btf.datasec(section)
        if len(variables) != 1 or variables[0].name != parts[2]:
            continue
        t = btf.resolve(variables[0].type_id)
        if t.kind != KIND_ARRAY or t.extra[1][2] != 1:
            continue
        name = variables[0].name
        if name.endswith("_dump") and name.removesuffix("_dump") in uei:
            continue
        out.append((section, name))
    return out


def _uei_vars(btf: Btf) -> set[str]:
    return {v.name for v in btf.datasec(".data") if btf.type_name(btf.resolve(v.type_id).id) == "user_exit_info"}


def _strip_comments(text: str) -> str:
    return "".join(" " if is_comment else part for part, is_comment in comment_spans(text))


def _without_block(text: str, start: re.Match[str] | None) -> str:
    """Text with the brace block that follows `start` removed (the getopt loop)."""
    if start is None:
        return text
    open_at = text.find("{", start.end())
    if open_at < 0:
        return text
    depth = 0
    for i in range(open_at, len(text)):
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        if depth == 0:
            return text[: start.start()] + text[i + 1 :]
    return text[: start.start()]


def userspace_writes(text: str) -> dict[str, list[str]]:
    """What a C userspace half writes before load, outside its option parsing."""
    text = _strip_comments(text)
    opened = re.search(r"\bSCX_OPS_OPEN\s*\(", text) or re.search(r"__open\s*\(", text)
    loaded = re.search(r"\bSCX_OPS_LOAD\s*\(", text) or re.search(r"__load\s*\(", text)
    if opened is None or loaded is None or loaded.start() < opened.end():
        return {}
    region = text[opened.end() : loaded.start()]
    region = _without_block(region, re.search(r"\bwhile\s*\(\s*\(\s*opt\s*=\s*getopt", region))
    found: dict[str, list[str]] = {"rodata": [], "arrays": [], "data": [], "ops": [], "maps": []}
    for m in re.finditer(r"->\s*rodata\s*->\s*(\w+)\s*=(?!=)\s*([^;]{1,160});", region):
        found["rodata"].append(f"{m.group(1)}={' '.join(m.group(2).split())}")
    for m in re.finditer(r"\bRESIZE_ARRAY\s*\(\s*\w+\s*,\s*(\w+)\s*,\s*(\w+)", region):
        found["arrays"].append(m.group(2))
    for m in re.finditer(r"->\s*(?:rodata|data|bss)_(\w+)\s*->\s*\w+\s*\[", region):
        found["arrays"].append(m.group(1).split("_", 0)[0])
    for m in re.finditer(r"->\s*(?:bss|data)\s*->\s*(\w+)\s*(?:\[[^\]]*\])?\s*=[^=]", region):
        found["data"].append(m.group(1))
    for m in re.finditer(r"struct_ops\.\w+\s*->\s*(\w+)\s*(?:\|=|=[^=])", region):
        found["ops"].append(m.group(1))
    for m in re.finditer(r"bpf_map__set_(?:max_entries|value_size)\s*\(\s*\w+->maps\.(\w+)", region):
        found["maps"].append(m.group(1))
    return {k: sorted(dict.fromkeys(v)) for k, v in found.items() if v}


def analyze(obj: Path, source: Path | None = None, source_texts: list[str] | None = None) -> UserspaceNeeds:
    """What the scheduler in `obj` (built from `source`) needs from a userspace half."""
    btf = object_btf(obj)
    out = UserspaceNeeds()
    rodata = {v.name for v in btf.datasec(".rodata")}
    enums = sorted(n for n in rodata if n.startswith(ENUM_PREFIX))
    if enums:
        out.generic.append(f"{len(enums)} scx enum values from the kernel's BTF")
    counts = sorted(n for n in rodata if n in CPU_COUNT_NAMES)
    if counts:
        out.generic.append(f"CPU count in {', '.join(counts)}")
    uei = _uei_vars(btf)
    if uei:
        out.generic.append(f"exit info {', '.join(sorted(uei))}")
    arrays = _resizable_arrays(btf, uei)
    if arrays:
        out.needs.append(Need("sizes and fills the resizable array(s) " + ", ".join(f"{n} ({s})" for s, n in arrays)))
    texts = list(source_texts or [])
    if source is not None and source.is_file():
        texts.append(source.read_text(errors="replace"))
    consumed = {m.group(1) for t in texts for m in _CONSUME.finditer(t)}
    produced = {m.group(1) for t in texts for m in _PRODUCE.finditer(t)}
    fed = sorted(
        name
        for name, kind in _map_types(btf).items()
        if kind in (MAP_QUEUE, MAP_STACK, MAP_USER_RINGBUF) and name in consumed and name not in produced
    )
    if fed:
        out.needs.append(Need(f"a userspace process that feeds map(s) {', '.join(fed)} while it runs"))
    half = _userspace_half(source)
    if half is not None:
        out.userspace_file = half.name
        writes = userspace_writes(half.read_text(errors="replace")[:MAX_USERSPACE_BYTES])
        generic = set(CPU_COUNT_NAMES) | {n for n in rodata if n.endswith("_dump_len")}
        initial = _rodata_initial(obj)
        settable: dict[str, str] = {}
        for write in writes.get("rodata", []):
            name, _, expr = write.partition("=")
            if name in generic or name not in rodata or name in settable:
                continue
            literal = _int_literal(expr)
            if literal is not None and initial.get(name) == literal:
                continue  # the loader writes what the object already holds
            settable[name] = _describe_expr(expr)
        if settable:
            listed = ", ".join(f"{n} = {e}" for n, e in settable.items())
            out.needs.append(Need(f"sets .rodata {listed} (give them with --rodata NAME=VALUE)", list(settable)))
        array_names = {n for _, n in arrays}
        extra_arrays = [a for a in writes.get("arrays", []) if a not in array_names]
        if extra_arrays and not arrays:
            out.needs.append(Need(f"sizes and fills the array(s) {', '.join(extra_arrays)}"))
        if writes.get("data"):
            out.needs.append(Need(f"writes .bss/.data {', '.join(writes['data'])} before load"))
        ops = [f for f in writes.get("ops", []) if f not in ("hotplug_seq",)]
        if ops:
            out.needs.append(Need(f"sets struct_ops field(s) {', '.join(ops)}"))
        if writes.get("maps"):
            out.needs.append(Need(f"sizes map(s) {', '.join(writes['maps'])}"))
    return out


def _int_literal(expr: str) -> int | None:
    text = expr.strip().rstrip("uUlL")
    if text.lower() in ("true", "false"):
        return int(text.lower() == "true")
    try:
        return int(text, 0)
    except ValueError:
        return None


def _describe_expr(expr: str) -> str:
    """The right-hand side as a user can read it: enum lookups by the enumerator's name."""
    enum = re.search(r'__COMPAT_ENUM_OR_ZERO\s*\(\s*"\w+"\s*,\s*"(\w+)"\s*\)', expr)
    if enum:
        return f"the kernel's {enum.group(1)}"
    return expr.strip()[:60]


def _rodata_initial(obj: Path) -> dict[str, int]:
    """Initial integer values of small .rodata globals, from the object's ELF."""
    from elftools.elf.elffile import ELFFile

    from schedcp.toolchain.objinfo import global_vars

    out: dict[str, int] = {}
    with obj.open("rb") as fh:
        section = ELFFile(fh).get_section_by_name(".rodata")
        data = section.data() if section is not None else b""
    for var in global_vars(obj).values():
        if var.section == ".rodata" and var.size in (1, 2, 4, 8) and var.offset + var.size <= len(data):
            out[var.name] = int.from_bytes(data[var.offset : var.offset + var.size], "little")
    return out


def _userspace_half(source: Path | None) -> Path | None:
    if source is None or not source.name.endswith(".bpf.c"):
        return None
    candidate = source.with_name(source.name.removesuffix(".bpf.c") + ".c")
    return candidate if candidate.is_file() and not candidate.is_symlink() else None
