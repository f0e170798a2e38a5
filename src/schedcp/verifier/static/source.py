# SPDX-License-Identifier: Apache-2.0
"""A parsed view of one scheduler source for the static rules (tree-sitter-c, no preprocessor).

We parse the source as written rather than preprocessed output, so findings point at the lines an
agent wrote. To make the raw text parse cleanly, BPF annotations that are macros (``SEC("…")``,
``__ksym``, ``__always_inline``…) are blanked with spaces of the same length, which keeps every byte
offset and line number intact. ``BPF_PROG(name, …)``-style definitions are recognised and renamed to
the real program name. Files using our header also get ``schedcp.h`` parsed, so wrappers it defines
(helpers around the insert kfuncs, compat shims) are understood.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import tree_sitter_c
from tree_sitter import Language, Node, Parser

from schedcp.paths import schedulers_dir

_LANGUAGE = Language(tree_sitter_c.language())

# Attribute-like macros that confuse a C parser but carry no meaning for our rules.
_BLANK = re.compile(
    rb"\bSEC\s*\(\s*\"[^\"\n]*\"\s*\)|\b__(?:ksym|weak|kptr|kptr_untrusted|percpu_kptr|always_inline|noinline"
    rb"|hidden|arena|rcu|nullable|ref|iter|must_check|aligned\(\d+\)|private\(\w+\))\b|\b__arg_\w+\b"
)
_SEC = re.compile(rb"\bSEC\s*\(\s*\"(?P<name>[^\"\n]*)\"\s*\)")
# Definitions written through a macro: the first argument is the real function name.
_PROG_MACRO = re.compile(r"^[A-Z_][A-Z0-9_]*$")
KNOWN_OPS = (
    "select_cpu",
    "enqueue",
    "dequeue",
    "dispatch",
    "tick",
    "runnable",
    "running",
    "stopping",
    "quiescent",
    "yield",
    "core_sched_before",
    "set_weight",
    "set_cpumask",
    "update_idle",
    "cpu_acquire",
    "cpu_release",
    "init_task",
    "exit_task",
    "enable",
    "disable",
    "dump",
    "dump_cpu",
    "dump_task",
    "cgroup_init",
    "cgroup_exit",
    "cgroup_prep_move",
    "cgroup_move",
    "cgroup_cancel_move",
    "cgroup_set_weight",
    "cgroup_set_bandwidth",
    "cpu_online",
    "cpu_offline",
    "init",
    "exit",
    # Newer kernels (7.x): CPU-id-space callbacks and sub-schedulers.
    "select_cid",
    "set_cmask",
    "dump_cid",
    "cgroup_set_idle",
    "sub_attach",
    "sub_detach",
)
# Top-level constructs whose children are top-level items too.
_NESTING = frozenset(
    {"preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef", "linkage_specification"}
)
_OPS_PAIR = re.compile(r"\.(?P<op>\w+)\s*=\s*(?:\(\s*void\s*\*\s*\)\s*)?(?P<fn>[A-Za-z_]\w*)")
_OPS_DEFINE = re.compile(r"\bSCX_OPS_\w*DEFINE\s*\(")
_OPS_NAME = re.compile(r"\.name\s*=\s*\"(?P<name>[^\"]{0,128})\"")


def parser() -> Parser:
    return Parser(_LANGUAGE)


def blank_annotations(text: bytes) -> bytes:
    return _BLANK.sub(lambda m: b" " * len(m.group(0)), text)


@dataclass
class Function:
    name: str
    node: Node  # function_definition
    body: Node  # compound_statement
    params: list[str]
    line: int
    unit: str  # "main" or a header file name
    section: str | None = None


@dataclass
class Global:
    name: str
    node: Node
    init: Node | None
    const: bool
    volatile: bool
    line: int


@dataclass
class Extern:
    name: str
    weak: bool
    nparams: int
    returns_void: bool
    line: int


@dataclass
class Macro:
    name: str
    params: list[str] | None  # None: object-like
    body: str
    line: int
    unit: str


@dataclass
class Unit:
    name: str
    text: bytes  # annotations blanked; byte offsets match `original`
    original: bytes
    root: Node
    lines: list[str]


@dataclass
class SourceModel:
    """Everything the rules need to know about the scheduler source."""

    main: Unit
    units: list[Unit]
    functions: dict[str, Function] = field(default_factory=dict)
    globals: dict[str, Global] = field(default_factory=dict)
    externs: dict[str, Extern] = field(default_factory=dict)
    macros: dict[str, Macro] = field(default_factory=dict)
    enums: dict[str, Node] = field(default_factory=dict)
    callbacks: dict[str, str] = field(default_factory=dict)  # op -> function name
    ops_name: str | None = None
    uses_schedcp_h: bool = False
    parse_errors: int = 0

    def line_text(self, line: int) -> str:
        lines = self.main.lines
        return lines[line - 1].strip() if 1 <= line <= len(lines) else ""

    def callback_of(self, function: str) -> str | None:
        for op, fn in self.callbacks.items():
            if fn == function:
                return op
        return None

    def main_functions(self) -> list[Function]:
        return [f for f in self.functions.values() if f.unit == "main"]


def text_of(node: Node | None) -> str:
    return node.text.decode(errors="replace") if node is not None and node.text is not None else ""


def line_of(node: Node) -> int:
    return node.start_point[0] + 1


def walk(node: Node) -> Iterator[Node]:
    """Pre-order traversal without recursion (deeply nested input must not blow the stack)."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(reversed(current.children))


def strip_parens(node: Node) -> Node:
    while node.type in ("parenthesized_expression", "cast_expression"):
        inner = (
            node.child_by_field_name("value")
            if node.type == "cast_expression"
            else node.named_children[0]
            if node.named_children
            else None
        )
        if inner is None:
            break
        node = inner
    return node


def callee_name(call: Node) -> str | None:
    fn = call.child_by_field_name("function")
    if fn is not None and fn.type == "identifier":
        return text_of(fn)
    return None


def call_args(call: Node) -> list[Node]:
    args = call.child_by_field_name("arguments")
    return [a for a in args.named_children if a.type != "comment"] if args is not None else []


def _declarator_name(decl: Node | None) -> str | None:
    while decl is not None:
        if decl.type in ("identifier", "field_identifier", "type_identifier"):
            return text_of(decl)
        nxt = decl.child_by_field_name("declarator")
        if nxt is None:
            named = [c for c in decl.named_children if c.type in ("identifier", "type_identifier")]
            return text_of(named[0]) if named else None
        decl = nxt
    return None


def _function_declarator(node: Node) -> Node | None:
    decl = node.child_by_field_name("declarator")
    while decl is not None and decl.type != "function_declarator":
        decl = decl.child_by_field_name("declarator")
    return decl


def _param_names(params: Node | None) -> list[str]:
    out: list[str] = []
    if params is None:
        return out
    for p in params.named_children:
        if p.type == "parameter_declaration":
            out.append(_declarator_name(p.child_by_field_name("declarator")) or "")
    return out


class _Builder:
    def __init__(self, model: SourceModel) -> None:
        self.model = model

    def add_unit(self, unit: Unit, sections: dict[int, str]) -> None:
        for node in self.active_items(unit.root):
            self.item(node, unit, sections)

    def active_items(self, node: Node) -> Iterator[Node]:
        """Top-level items, descending into #if blocks (both branches: we cannot know the macros)."""
        for child in node.named_children:
            if child.type in _NESTING:
                yield from self.active_items(child)
            else:
                yield child

    def item(self, node: Node, unit: Unit, sections: dict[int, str]) -> None:
        if node.type == "ERROR":
            self.model.parse_errors += unit.name == "main"
            for child in node.named_children:
                self.item(child, unit, sections)
            return
        if node.type == "function_definition":
            self.function(node, unit, sections)
        elif node.type == "declaration":
            self.declaration(node, unit)
        elif node.type == "preproc_def":
            name = text_of(node.child_by_field_name("name"))
            value = text_of(node.child_by_field_name("value")).strip()
            self.model.macros.setdefault(name, Macro(name, None, value, line_of(node), unit.name))
        elif node.type == "preproc_function_def":
            name = text_of(node.child_by_field_name("name"))
            params_node = node.child_by_field_name("parameters")
            params = [text_of(p) for p in params_node.named_children] if params_node is not None else []
            value = text_of(node.child_by_field_name("value")).strip()
            self.model.macros.setdefault(name, Macro(name, params, value, line_of(node), unit.name))
        elif node.type in ("enum_specifier", "type_definition", "expression_statement"):
            for sub in walk(node):
                if sub.type == "enumerator":
                    self.model.enums.setdefault(text_of(sub.child_by_field_name("name")), sub)

    def function(self, node: Node, unit: Unit, sections: dict[int, str]) -> None:
        decl = _function_declarator(node)
        body = node.child_by_field_name("body")
        if decl is None or body is None:
            return
        name = _declarator_name(decl.child_by_field_name("declarator"))
        params_node = decl.child_by_field_name("parameters")
        params = _param_names(params_node)
        if name and _PROG_MACRO.match(name) and params_node is not None and params_node.named_children:
            first = params_node.named_children[0]
            # BPF_PROG(real_name, struct task_struct *p, ...): the first "parameter" is a bare name.
            if first.type == "parameter_declaration" and first.child_by_field_name("declarator") is None:
                name = text_of(first.child_by_field_name("type"))
                params = params[1:]
        if not name:
            return
        line = line_of(node)
        section = sections.get(line) or sections.get(line - 1)
        if section and section.startswith("."):  # a data section (.maps) on the line above
            section = None
        if name not in self.model.functions or (unit.name == "main" and self.model.functions[name].unit != "main"):
            self.model.functions[name] = Function(name, node, body, params, line, unit.name, section)
        for sub in walk(node):
            if sub.type == "enumerator":
                self.model.enums.setdefault(text_of(sub.child_by_field_name("name")), sub)

    def declaration(self, node: Node, unit: Unit) -> None:
        quals = {text_of(c) for c in node.children if c.type in ("type_qualifier", "storage_class_specifier")}
        type_node = node.child_by_field_name("type")
        for sub in walk(node):
            if sub.type == "enumerator":
                self.model.enums.setdefault(text_of(sub.child_by_field_name("name")), sub)
        if type_node is not None and text_of(type_node).replace(" ", "").startswith("structsched_ext_ops"):
            self.ops_struct(node)
        for decl in node.children_by_field_name("declarator"):
            fdecl = (
                decl
                if decl.type == "function_declarator"
                else (_function_declarator_in(decl) if decl.type == "pointer_declarator" else None)
            )
            if fdecl is not None:
                if "extern" in quals:
                    self.extern(node, decl, fdecl, type_node, unit)
                continue
            init = decl.child_by_field_name("value") if decl.type == "init_declarator" else None
            name = _declarator_name(decl.child_by_field_name("declarator") if decl.type == "init_declarator" else decl)
            if name and (unit.name == "main" or name not in self.model.globals):
                self.model.globals[name] = Global(
                    name, decl, init, "const" in quals, "volatile" in quals, line_of(node)
                )

    def extern(self, node: Node, decl: Node, fdecl: Node, type_node: Node | None, unit: Unit) -> None:
        name = _declarator_name(fdecl.child_by_field_name("declarator"))
        if not name:
            return
        params = fdecl.child_by_field_name("parameters")
        nparams = len(
            [
                p
                for p in (params.named_children if params is not None else [])
                if p.type == "parameter_declaration" and text_of(p) != "void"
            ]
        )
        weak = b"__weak" in unit.original[node.start_byte : node.end_byte]
        returns_void = text_of(type_node) == "void" and decl.type == "function_declarator"
        self.model.externs[name] = Extern(name, weak, nparams, returns_void, line_of(node))

    def ops_struct(self, node: Node) -> None:
        for sub in walk(node):
            if sub.type != "initializer_pair":
                continue
            designator = sub.child_by_field_name("designator")
            value = sub.child_by_field_name("value")
            if designator is None or value is None:
                continue
            op = text_of(designator).lstrip(".").strip()
            target = strip_parens(value)
            if op == "name" and target.type == "string_literal":
                self.model.ops_name = text_of(target).strip('"')
            elif target.type == "identifier":
                self.model.callbacks[op] = text_of(target)


def _function_declarator_in(node: Node) -> Node | None:
    for sub in walk(node):
        if sub.type == "function_declarator":
            return sub
    return None


def _sections(text: bytes) -> dict[int, str]:
    out: dict[int, str] = {}
    for m in _SEC.finditer(text):
        out[text.count(b"\n", 0, m.start()) + 1] = m.group("name").decode(errors="replace")
    return out


def _unit(name: str, text: bytes) -> tuple[Unit, dict[int, str]]:
    blanked = blank_annotations(text)
    tree = parser().parse(blanked)
    lines = text.decode(errors="replace").split("\n")
    return Unit(name, blanked, text, tree.root_node, lines), _sections(text)


def header_path() -> Path:
    return schedulers_dir() / "include" / "schedcp.h"


def parse_source(
    text: str | bytes, *, header: Path | None = None, extra_units: Sequence[tuple[str, bytes]] = ()
) -> SourceModel:
    """Parse the main source; `extra_units` are headers it includes (local ones, the scx headers),
    parsed after it so their functions and macros are known but the main file's definitions win."""
    raw = text.encode() if isinstance(text, str) else text
    main, main_sections = _unit("main", raw)
    model = SourceModel(main=main, units=[main])
    builder = _Builder(model)
    builder.add_unit(main, main_sections)
    model.uses_schedcp_h = bool(re.search(rb'#\s*include\s*"schedcp\.h"', raw))
    hdr = header or header_path()
    if model.uses_schedcp_h and hdr.is_file():
        unit, sections = _unit(hdr.name, hdr.read_bytes())
        model.units.append(unit)
        builder.add_unit(unit, sections)
    for name, data in extra_units:
        unit, sections = _unit(name, data)
        model.units.append(unit)
        builder.add_unit(unit, sections)
    if not model.callbacks:
        _ops_from_text(model, raw.decode(errors="replace"))
    if not model.callbacks:
        _ops_from_sections(model)
    return model


def _ops_from_text(model: SourceModel, text: str) -> None:
    """Fallback for ops tables written through a macro such as SCX_OPS_DEFINE(name, .enqueue = …)."""
    start = text.find("sched_ext_ops")
    if start < 0:
        macro = _OPS_DEFINE.search(text)  # SCX_OPS_DEFINE, SCX_OPS_CID_DEFINE…
        start = macro.start() if macro else -1
    if start < 0:
        return
    region = text[start:]
    for m in _OPS_PAIR.finditer(region):
        if m.group("op") in KNOWN_OPS and m.group("fn") in model.functions:
            model.callbacks.setdefault(m.group("op"), m.group("fn"))
    name = _OPS_NAME.search(region)
    if name:
        model.ops_name = name.group("name")


def _ops_from_sections(model: SourceModel) -> None:
    """Last resort: SEC("struct_ops/<prefix>_<op>") programs named after their callback."""
    for fn in model.main_functions():
        if not fn.section or not fn.section.startswith("struct_ops"):
            continue
        for op in sorted(KNOWN_OPS, key=len, reverse=True):
            if fn.name == op or fn.name.endswith("_" + op):
                model.callbacks.setdefault(op, fn.name)
                break
