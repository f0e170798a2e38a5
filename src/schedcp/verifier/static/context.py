# SPDX-License-Identifier: Apache-2.0
"""Shared state and helpers for the static rules: one Context per analysed source."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from tree_sitter import Node

from schedcp.verifier.report import Finding, Severity
from schedcp.verifier.static.consteval import MASK64, Evaluator
from schedcp.verifier.static.effects import Effect, Effects
from schedcp.verifier.static.kernelfacts import KernelFacts
from schedcp.verifier.static.paths import HandoffAnalysis
from schedcp.verifier.static.source import Function, SourceModel, line_of, strip_parens, text_of, walk

# Callbacks that run on every scheduling event; slow or failing code there hurts every task.
HOT_CALLBACKS = (
    "select_cpu",
    "enqueue",
    "dequeue",
    "dispatch",
    "tick",
    "runnable",
    "running",
    "stopping",
    "quiescent",
    "update_idle",
    "yield",
)
COMPARISONS = frozenset({"<", ">", "<=", ">=", "==", "!="})


@dataclass
class DsqRef:
    """What a DSQ-id argument denotes."""

    kind: str  # custom | global | local | local_on | builtin | param | unknown
    value: int | None = None
    cpu: tuple[Node, Function] | None = None  # for local_on with a computed CPU
    cpu_value: int | None = None

    @property
    def builtin(self) -> bool:
        return self.kind in ("global", "local", "local_on", "builtin")


class Context:
    def __init__(self, model: SourceModel, kernel: KernelFacts, config: dict[str, Any] | None = None) -> None:
        self.model = model
        self.kernel = kernel
        self.config = dict(config or {})
        self.eval = Evaluator(model, kernel, config)
        self.effects = Effects(model)
        self.handoff = HandoffAnalysis(self.effects, self.eval)
        self._hot: set[str] | None = None

    # -- DSQ ids ----------------------------------------------------------------------------------
    def dsq(self, arg: tuple[Node, Function] | None) -> DsqRef:
        if arg is None:
            return DsqRef("unknown")
        node, fn = arg
        node = strip_parens(node)
        c = self.kernel.constants
        local_on = c["SCX_DSQ_LOCAL_ON"]
        if node.type == "binary_expression" and text_of(node.child_by_field_name("operator")) in ("|", "+"):
            left, right = node.child_by_field_name("left"), node.child_by_field_name("right")
            for a, b in ((left, right), (right, left)):
                if a is not None and b is not None and self.eval.value(a, fn) == local_on:
                    return DsqRef("local_on", None, (b, fn), self.eval.value(b, fn))
        value = self.eval.value(node, fn)
        if value is None:
            if node.type == "identifier" and text_of(node) in fn.params:
                return DsqRef("param")
            return DsqRef("unknown")
        value &= MASK64
        if value == c["SCX_DSQ_GLOBAL"]:
            return DsqRef("global", value)
        if value == c["SCX_DSQ_LOCAL"]:
            return DsqRef("local", value)
        if value & c["SCX_DSQ_LOCAL_ON"] == c["SCX_DSQ_LOCAL_ON"]:
            return DsqRef("local_on", value, None, value & c["SCX_DSQ_LOCAL_CPU_MASK"])
        if value & c["SCX_DSQ_FLAG_BUILTIN"]:
            return DsqRef("builtin", value)
        return DsqRef("custom", value)

    # -- reachability ----------------------------------------------------------------------------
    def reachable(self) -> set[str] | None:
        return self.effects.reachable_from_callbacks()

    def is_live(self, fn: Function) -> bool:
        live = self.reachable()
        return live is None or fn.name in live

    def hot_functions(self) -> set[str]:
        if self._hot is None:
            out: set[str] = set()
            for op in HOT_CALLBACKS:
                cb = self.model.callbacks.get(op)
                if cb:
                    out |= self.effects.reachable(cb)
            self._hot = out
        return self._hot

    def callback(self, op: str) -> Function | None:
        name = self.model.callbacks.get(op)
        return self.model.functions.get(name) if name else None

    def live_effects(self) -> list[Effect]:
        return [e for e in self.effects.in_main() if self.is_live(e.function)]

    # -- expressions -----------------------------------------------------------------------------
    def assignments(self, fn: Function, name: str) -> list[Node]:
        """Every value assigned to the local (or global) `name` inside fn."""
        out: list[Node] = []
        for node in walk(fn.body):
            if node.type == "init_declarator" and text_of(node.child_by_field_name("declarator")) == name:
                value = node.child_by_field_name("value")
                if value is not None:
                    out.append(value)
            elif node.type == "assignment_expression" and text_of(node.child_by_field_name("left")) == name:
                right = node.child_by_field_name("right")
                if right is not None:
                    out.append(right)
        return out

    def comparisons(self, fn: Function) -> list[Node]:
        return [
            n
            for n in walk(fn.body)
            if n.type == "binary_expression" and text_of(n.child_by_field_name("operator")) in COMPARISONS
        ]

    def mutable_globals(self) -> set[str]:
        return {name for name, g in self.model.globals.items() if not g.const}

    def identifiers(self, node: Node) -> set[str]:
        return {text_of(n) for n in walk(node) if n.type == "identifier"}


class Rule:
    """One static check. Subclasses set id/description/severity and implement check()."""

    id: ClassVar[str]
    description: ClassVar[str]
    severity: ClassVar[Severity]

    def check(self, ctx: Context) -> list[Finding]:
        raise NotImplementedError

    def finding(
        self,
        ctx: Context,
        where: Node | int | None,
        message: str,
        hint: str,
        *,
        severity: Severity | None = None,
        function: str | None = None,
        evidence: list[str] | None = None,
    ) -> Finding:
        line = line_of(where) if isinstance(where, Node) else where
        return Finding(
            id=self.id,
            stage="static",
            severity=severity or self.severity,
            message=message,
            hint=hint,
            line=line,
            code=ctx.model.line_text(line) if line else None,
            function=function,
            evidence=evidence or [],
        )
