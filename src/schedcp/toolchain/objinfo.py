# SPDX-License-Identifier: Apache-2.0
"""What an object file says about its global variables: section, offset and size per symbol.

Used to turn tunable values into byte patches of .rodata before load, and to decode live counters
from the .bss/.data bytes the node agent returns.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.elf.elffile import ELFFile
from elftools.elf.sections import SymbolTableSection

from schedcp.errors import UsageError

DATA_SECTIONS = (".rodata", ".bss", ".data")


@dataclass(frozen=True)
class GlobalVar:
    name: str
    section: str
    offset: int
    size: int


def global_vars(obj: Path) -> dict[str, GlobalVar]:
    out: dict[str, GlobalVar] = {}
    with obj.open("rb") as fh:
        try:
            elf = ELFFile(fh)
        except Exception as exc:
            raise UsageError(f"{obj} is not an ELF object: {exc}", "pass a clang -target bpf object") from exc
        if elf["e_machine"] != "EM_BPF":
            raise UsageError(f"{obj} is not a BPF object ({elf['e_machine']})", "compile with clang -target bpf")
        symtab = elf.get_section_by_name(".symtab")
        if not isinstance(symtab, SymbolTableSection):
            return out
        for sym in symtab.iter_symbols():
            if sym["st_info"]["type"] != "STT_OBJECT" or not sym.name:
                continue
            shndx = sym["st_shndx"]
            if not isinstance(shndx, int):
                continue
            section = elf.get_section(shndx).name
            if section in DATA_SECTIONS:
                out[sym.name] = GlobalVar(sym.name, section, sym["st_value"], sym["st_size"])
    return out


def struct_ops_names(obj: Path) -> list[str]:
    with obj.open("rb") as fh:
        elf = ELFFile(fh)
        return [s.name for s in elf.iter_sections() if s.name.startswith(".struct_ops")]
