# SPDX-License-Identifier: Apache-2.0
"""Evaluate C integer constant expressions the way the scheduler source spells them.

Resolves ``#define`` constants (including simple function-like macros such as ``MS(5)``), enum
members, sched_ext constants of the target kernel, ``const volatile`` tunables (using the caller's
configuration when it sets them, else the initializer) and local variables that are assigned
exactly once from a constant. Anything else is "unknown" (None): rules then stay quiet rather than
guess.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from tree_sitter import Node

from schedcp.verifier.static.kernelfacts import KernelFacts
from schedcp.verifier.static.source import Function, SourceModel, parser, text_of, walk

MASK64 = (1 << 64) - 1
_NUMBER = re.compile(r"^(?P<body>0[xX][0-9a-fA-F]+|0[bB][01]+|\d+)(?P<suffix>[uUlL]*)$")
MAX_DEPTH = 24


class Evaluator:
    def __init__(self, model: SourceModel, kernel: KernelFacts, config: dict[str, Any] | None = None) -> None:
        self.model = model
        self.kernel = kernel
        self.config = {k: v for k, v in ((k, _as_int(v)) for k, v in (config or {}).items()) if v is not None}
        self._text_cache: dict[str, Node | None] = {}
        self._locals_cache: dict[tuple[str, str], Node | None] = {}

    # -- public -----------------------------------------------------------------------------------
    def value(self, node: Node | None, fn: Function | None = None) -> int | None:
        if node is None:
            return None
        try:
            return self._eval(node, fn, 0)
        except RecursionError:
            return None

    def identifier(self, name: str, fn: Function | None = None) -> int | None:
        return self._ident(name, fn, 0)

    def local_definition(self, fn: Function, name: str) -> Node | None:
        """The single expression assigned to local `name` in fn, or None if zero or several."""
        key = (fn.name, name)
        if key in self._locals_cache:
            return self._locals_cache[key]
        # Every write to `name`; None for a plain assignment the parser left without a right side.
        found: list[Node | None] = []
        declared = False
        for node in walk(fn.body):
            if node.type == "init_declarator" and text_of(node.child_by_field_name("declarator")) == name:
                declared = True
                value = node.child_by_field_name("value")
                if value is not None:
                    found.append(value)
            elif node.type == "declaration":
                for d in node.children_by_field_name("declarator"):
                    if d.type == "identifier" and text_of(d) == name:
                        declared = True
            elif node.type == "assignment_expression" and text_of(node.child_by_field_name("left")) == name:
                op = node.child_by_field_name("operator")
                found.append(node.child_by_field_name("right") if text_of(op) == "=" else node)
            elif node.type == "update_expression" and text_of(node.child_by_field_name("argument")) == name:
                found.append(node)
            elif node.type == "pointer_expression" and text_of(node).replace(" ", "") == f"&{name}":
                found.append(node)  # address taken: written through a pointer, not a constant
        result = found[0] if declared and len(found) == 1 else None
        self._locals_cache[key] = result
        return result

    # -- internals --------------------------------------------------------------------------------
    def _eval(self, node: Node | None, fn: Function | None, depth: int) -> int | None:
        # A child the parser left out (error recovery) is as unknown as any other expression.
        if node is None or depth > MAX_DEPTH:
            return None
        t = node.type
        if t == "number_literal":
            return parse_number(text_of(node))
        if t == "char_literal":
            body = text_of(node)[1:-1]
            return ord(body) if len(body) == 1 else None
        if t in ("true", "false"):
            return 1 if t == "true" else 0
        if t == "identifier":
            return self._ident(text_of(node), fn, depth + 1)
        if t == "parenthesized_expression":
            inner = [c for c in node.named_children if c.type != "comment"]
            return self._eval(inner[-1], fn, depth + 1) if inner else None
        if t == "cast_expression":
            value = self._eval(node.child_by_field_name("value"), fn, depth + 1)
            return _cast(value, text_of(node.child_by_field_name("type")))
        if t == "unary_expression":
            value = self._eval(node.child_by_field_name("argument"), fn, depth + 1)
            op = text_of(node.child_by_field_name("operator"))
            if value is None:
                return None
            return {"-": -value, "+": value, "~": (~value) & MASK64, "!": int(not value)}.get(op)
        if t == "binary_expression":
            return self._binary(node, fn, depth)
        if t == "conditional_expression":
            cond = self._eval(node.child_by_field_name("condition"), fn, depth + 1)
            if cond is None:
                return None
            branch = node.child_by_field_name("consequence" if cond else "alternative")
            return self._eval(branch, fn, depth + 1)
        if t == "call_expression":
            return self._macro_call(node, fn, depth)
        if t == "initializer_list" and len(node.named_children) == 1:
            return self._eval(node.named_children[0], fn, depth + 1)
        return None

    def _binary(self, node: Node, fn: Function | None, depth: int) -> int | None:
        op = text_of(node.child_by_field_name("operator"))
        left_node = node.child_by_field_name("left")
        right = self._eval(node.child_by_field_name("right"), fn, depth + 1)
        # `(u32)-1` parses as "(u32) minus 1" because the parser cannot know u32 is a type.
        if op in ("-", "+") and left_node is not None and left_node.type == "parenthesized_expression":
            inner = text_of(left_node)[1:-1].strip()
            if inner in _CAST_WIDTHS:
                return _cast(-right if op == "-" and right is not None else right, inner)
        left = self._eval(left_node, fn, depth + 1)
        if left is None or right is None:
            # x & 0 and x * 0 are known even when x is not.
            if op in ("&", "*") and 0 in (left, right):
                return 0
            # Short-circuit: `knob && …` is false when the knob is 0, `knob || …` true when it is set
            # (test hooks behind const volatile knobs are dead code at their defaults).
            if op == "&&" and left == 0:
                return 0
            if op == "||" and left is not None and left != 0:
                return 1
            return None
        try:
            result = {
                "+": lambda: left + right,
                "-": lambda: left - right,
                "*": lambda: left * right,
                "/": lambda: int(left / right) if right else None,
                "%": lambda: left % right if right else None,
                "<<": lambda: (left << right) & MASK64 if 0 <= right < 64 else None,
                ">>": lambda: left >> right if 0 <= right < 128 else None,
                "|": lambda: left | right,
                "&": lambda: left & right,
                "^": lambda: left ^ right,
                "<": lambda: int(left < right),
                ">": lambda: int(left > right),
                "<=": lambda: int(left <= right),
                ">=": lambda: int(left >= right),
                "==": lambda: int(left == right),
                "!=": lambda: int(left != right),
                "&&": lambda: int(bool(left and right)),
                "||": lambda: int(bool(left or right)),
            }[op]()
        except KeyError:
            return None
        return result

    def _ident(self, name: str, fn: Function | None, depth: int) -> int | None:
        if depth > MAX_DEPTH:
            return None
        if fn is not None:
            local = self.local_definition(fn, name)
            if local is not None:
                return (
                    self._eval(local, fn, depth + 1)
                    if local.type not in ("update_expression", "assignment_expression", "pointer_expression")
                    else None
                )
            if name in fn.params:
                return None
        macro = self.model.macros.get(name)
        if macro is not None and macro.params is None:
            parsed = self._parse_text(macro.body)
            return self._eval(parsed, None, depth + 1) if parsed is not None else None
        if name in self.model.enums:
            return self._enumerator(name, depth)
        if name in self.kernel.constants:
            return self.kernel.constants[name]
        if name.startswith("__SCX_") and name[2:] in self.kernel.constants:
            # The scx headers' enum variables: the loader fills them with the kernel's value.
            return self.kernel.constants[name[2:]]
        glob = self.model.globals.get(name)
        if glob is not None and glob.const:
            if name in self.config:
                return int(self.config[name])
            return self._eval(glob.init, None, depth + 1) if glob.init is not None else 0
        return None

    def _enumerator(self, name: str, depth: int) -> int | None:
        node = self.model.enums[name]
        value = node.child_by_field_name("value")
        if value is not None:
            return self._eval(value, None, depth + 1)
        # Implicit value: previous enumerator + 1.
        prev = node.prev_named_sibling
        while prev is not None and prev.type != "enumerator":
            prev = prev.prev_named_sibling
        if prev is None:
            return 0
        before = self._enumerator(text_of(prev.child_by_field_name("name")), depth + 1)
        return before + 1 if before is not None else None

    def _macro_call(self, node: Node, fn: Function | None, depth: int) -> int | None:
        callee = node.child_by_field_name("function")
        macro = self.model.macros.get(text_of(callee)) if callee is not None else None
        if macro is None or macro.params is None:
            return None
        args = node.child_by_field_name("arguments")
        arg_nodes = [a for a in args.named_children if a.type != "comment"] if args is not None else []
        if len(arg_nodes) != len(macro.params):
            return None
        body = macro.body
        for param, arg in zip(macro.params, arg_nodes, strict=True):
            value = self._eval(arg, fn, depth + 1)
            replacement = f"({value})" if value is not None else f"({text_of(arg)})"
            body = re.sub(rf"\b{re.escape(param)}\b", _literal(replacement), body)
        parsed = self._parse_text(body)
        return self._eval(parsed, None, depth + 1) if parsed is not None else None

    def _parse_text(self, text: str) -> Node | None:
        if text in self._text_cache:
            return self._text_cache[text]
        tree = parser().parse(f"long long __schedcp_v = ({text});".encode())
        node = None
        for sub in walk(tree.root_node):
            if sub.type == "init_declarator":
                node = sub.child_by_field_name("value")
                break
        if node is not None and any(n.type == "ERROR" for n in walk(node)):
            node = None
        self._text_cache[text] = node
        return node


def _literal(text: str) -> Callable[[re.Match[str]], str]:
    """A re.sub replacement that inserts `text` as it is (a template string would read its backslashes)."""
    return lambda _m: text


def _as_int(value: Any) -> int | None:
    """Tunable values as integers (CLI strings such as "5000" or "0x10" included)."""
    if isinstance(value, bool | int):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip().replace("_", ""), 0)
        except ValueError:
            return None
    return None


def parse_number(text: str) -> int | None:
    m = _NUMBER.match(text.replace("'", ""))
    if not m:
        return None
    body = m.group("body")
    if body.lower().startswith("0x"):
        return int(body, 16)
    if body.lower().startswith("0b"):
        return int(body[2:], 2)
    if len(body) > 1 and body.startswith("0"):
        return int(body, 8)
    return int(body)


_CAST_WIDTHS = {
    "u8": 8,
    "u16": 16,
    "u32": 32,
    "u64": 64,
    "__u32": 32,
    "__u64": 64,
    "unsigned int": 32,
    "unsigned long": 64,
    "unsigned long long": 64,
    "s32": -32,
    "int": -32,
    "s64": -64,
    "long": -64,
    "long long": -64,
    "__s32": -32,
    "__s64": -64,
}


def _cast(value: int | None, type_text: str) -> int | None:
    if value is None:
        return None
    width = _CAST_WIDTHS.get(" ".join(type_text.split()))
    if width is None:
        return value
    bits = abs(width)
    value &= (1 << bits) - 1
    if width < 0 and value >> (bits - 1):
        value -= 1 << bits
    return value
