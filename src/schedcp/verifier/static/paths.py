# SPDX-License-Identifier: Apache-2.0
"""Path analysis: does every way out of a function pass a call that hands the task on?

An abstract walk over the statement tree with a two-bit state per path: ``queued`` (a DSQ insert or
another explicit hand-off happened on every way to this point) and ``aborted`` (a call that may raise
``scx_bpf_error()`` happened on some way to this point). Branches join conservatively (queued only
if queued on both sides); loop bodies may run zero times; ``goto`` ends the analysis of a path
without a verdict, because we would rather miss a bug than invent one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tree_sitter import Node

from schedcp.verifier.static.consteval import Evaluator
from schedcp.verifier.static.effects import HANDOFF_KINDS, LOOP_MACROS, Effects, Kind
from schedcp.verifier.static.source import Function, callee_name, line_of, text_of


@dataclass(frozen=True)
class State:
    queued: bool = False
    aborted: bool = False

    def join(self, other: State | None) -> State:
        if other is None:
            return self
        return State(self.queued and other.queued, self.aborted or other.aborted)


def _join(a: State | None, b: State | None) -> State | None:
    if a is None:
        return b
    return a.join(b)


@dataclass
class Exit:
    line: int
    kind: str  # "return" or "end"
    state: State
    value: Node | None = None  # the returned expression


@dataclass
class _Flow:
    normal: State | None
    breaks: list[State] = field(default_factory=list)
    continues: list[State] = field(default_factory=list)


class HandoffAnalysis:
    """Which exits of a function can be reached without handing the task to a DSQ."""

    def __init__(self, effects: Effects, evaluator: Evaluator) -> None:
        self.effects = effects
        self.evaluator = evaluator
        self._always: dict[str, bool] = {}
        self._true_queues: dict[str, bool] = {}
        self._may_abort: dict[str, bool] = {}
        self._fn: Function | None = None  # the function exits() is walking

    # -- summaries of helpers ------------------------------------------------------------------------
    def always_hands_off(self, fn: Function) -> bool:
        if fn.name not in self._always:
            self._always[fn.name] = False  # recursion guard
            self._always[fn.name] = not [e for e in self.exits(fn) if not e.state.queued]
        return self._always[fn.name]

    def true_implies_handoff(self, fn: Function) -> bool:
        """`if (helper(p)) return;` is safe when every way helper returns non-zero has queued the task."""
        if fn.name not in self._true_queues:
            self._true_queues[fn.name] = False  # recursion guard
            truthy = [ex for ex in self.exits(fn) if ex.kind == "return" and self.evaluator.value(ex.value, fn) != 0]
            self._true_queues[fn.name] = bool(truthy) and all(ex.state.queued for ex in truthy)
        return self._true_queues[fn.name]

    def _condition_queues(self, cond: Node | None) -> tuple[bool, bool]:
        """(then-branch queued, else-branch queued) implied by a helper call in the condition."""
        node = _unwrap(cond)
        negated = False
        if (
            node is not None
            and node.type == "unary_expression"
            and text_of(node.child_by_field_name("operator")) == "!"
        ):
            negated, node = True, _unwrap(node.child_by_field_name("argument"))
        if node is None or node.type != "call_expression":
            return False, False
        name = callee_name(node)
        target = (self.effects.model.functions.get(name) or self.effects.macro_function(name)) if name else None
        if target is None or target is self._fn or not self.true_implies_handoff(target):
            return False, False
        return (False, True) if negated else (True, False)

    def may_abort(self, fn: Function) -> bool:
        if fn.name not in self._may_abort:
            self._may_abort[fn.name] = any(e.kind is Kind.ERROR for e in self.effects.of_function(fn))
        return self._may_abort[fn.name]

    # -- the walk --------------------------------------------------------------------------------
    def exits(self, fn: Function) -> list[Exit]:
        # Summaries of helpers are computed in the middle of a walk: keep the caller's function.
        saved = self._fn
        self._fn = fn
        try:
            out: list[Exit] = []
            flow = self._stmt(fn.body, State(), out)
            if flow.normal is not None:
                out.append(Exit(fn.body.end_point[0] + 1, "end", flow.normal))
            return out
        finally:
            self._fn = saved

    def _expr(self, node: Node | None, state: State) -> State:
        """Effects of evaluating an expression that certainly runs (short-circuit parts excluded)."""
        if node is None:
            return state
        walked = self._fn
        assert walked is not None  # expressions are only reached from the walk exits() starts
        queued, aborted = state.queued, state.aborted
        for call in _certain_calls(node):
            name = callee_name(call)
            if name is None:
                continue
            for eff in self.effects.of_call(call, walked, 0):
                if eff.kind is Kind.ERROR:
                    aborted = True
                # Only a direct kfunc call is certain here; a helper may return before its insert,
                # which always_hands_off() below judges path by path.
                if eff.kind in HANDOFF_KINDS and not eff.via:
                    queued = True
            target = self.effects.model.functions.get(name) or self.effects.macro_function(name)
            if target is not None and target is not walked:
                if self.always_hands_off(target):
                    queued = True
                if self.may_abort(target):
                    aborted = True
        return State(queued, aborted)

    def _stmt(self, node: Node, state: State, out: list[Exit]) -> _Flow:
        t = node.type
        if t == "compound_statement":
            return self._block(node.named_children, state, out)
        if t in ("expression_statement", "declaration"):
            return _Flow(self._expr(node, state))
        if t == "return_statement":
            value = node.named_children[0] if node.named_children else None
            out.append(Exit(line_of(node), "return", self._expr(value, state), value))
            return _Flow(None)
        if t == "if_statement":
            return self._if(node, state, out)
        if t in ("while_statement", "for_statement"):
            return self._loop(node, state, out, runs_once=False)
        if t == "do_statement":
            return self._loop(node, state, out, runs_once=True)
        if t == "switch_statement":
            return self._switch(node, state, out)
        if t == "break_statement":
            return _Flow(None, breaks=[state])
        if t == "continue_statement":
            return _Flow(None, continues=[state])
        if t == "goto_statement":
            return _Flow(None)
        if t == "labeled_statement":
            inner = [c for c in node.named_children if c.type != "statement_identifier"]
            return self._block(inner, state, out)
        if t in ("preproc_if", "preproc_ifdef", "preproc_else", "preproc_elif", "preproc_elifdef"):
            return self._preproc(node, state, out)
        return _Flow(state)

    def _block(self, children: list[Node], state: State, out: list[Exit]) -> _Flow:
        flow = _Flow(state)
        for idx, child in enumerate(children):
            current = flow.normal
            if current is None:
                break
            if child.type == "compound_statement" and idx > 0 and _is_loop_macro(children[idx - 1]):
                body = self._stmt(child, current, out)
                after = _join(current.join(body.normal), _join_all(body.breaks + body.continues))
                flow = _Flow(after, flow.breaks, flow.continues)
                continue
            sub = self._stmt(child, current, out)
            flow = _Flow(sub.normal, flow.breaks + sub.breaks, flow.continues + sub.continues)
        return flow

    def _if(self, node: Node, state: State, out: list[Exit]) -> _Flow:
        cond = node.child_by_field_name("condition")
        state = self._expr(cond, state)
        known = self.evaluator.value(cond, self._fn) if cond is not None else None
        then_queued, else_queued = self._condition_queues(cond)
        then_state = State(True, state.aborted) if then_queued else state
        else_state = State(True, state.aborted) if else_queued else state
        then_node = node.child_by_field_name("consequence")
        else_clause = node.child_by_field_name("alternative")
        then_flow = self._stmt(then_node, then_state, out) if then_node is not None and known != 0 else _Flow(None)
        if else_clause is not None and known != 1:
            else_body = [c for c in else_clause.named_children if c.type != "comment"]
            else_flow = self._block(else_body, else_state, out)
        elif known == 1:
            else_flow = _Flow(None)
        else:
            else_flow = _Flow(else_state)
        return _Flow(
            _join(then_flow.normal, else_flow.normal),
            then_flow.breaks + else_flow.breaks,
            then_flow.continues + else_flow.continues,
        )

    def _loop(self, node: Node, state: State, out: list[Exit], *, runs_once: bool) -> _Flow:
        cond = node.child_by_field_name("condition")
        if node.type == "for_statement":
            state = self._expr(node.child_by_field_name("initializer"), state)
        body = node.child_by_field_name("body")
        infinite = cond is None or self.evaluator.value(cond, self._fn) == 1
        body_flow = self._stmt(body, state, out) if body is not None else _Flow(state)
        after: State | None = None if infinite else (state if not runs_once else body_flow.normal)
        if not runs_once and not infinite:
            after = _join(after, body_flow.normal)
        after = _join(after, _join_all(body_flow.breaks))
        return _Flow(after)

    def _switch(self, node: Node, state: State, out: list[Exit]) -> _Flow:
        state = self._expr(node.child_by_field_name("condition"), state)
        body = node.child_by_field_name("body")
        cases = [c for c in (body.named_children if body is not None else []) if c.type == "case_statement"]
        has_default = any(text_of(c).lstrip().startswith("default") for c in cases)
        after: State | None = None if has_default else state
        fall: State | None = None
        for case in cases:
            stmts = [c for c in case.named_children if c != case.child_by_field_name("value")]
            entry = state.join(fall)
            flow = self._block(stmts, entry, out)
            fall = flow.normal
            after = _join(after, _join_all(flow.breaks))
        after = _join(after, fall)
        return _Flow(after)

    def _preproc(self, node: Node, state: State, out: list[Exit]) -> _Flow:
        """#if blocks inside a body: we cannot know the macros, so every branch is a possible path."""
        alternative = node.child_by_field_name("alternative")
        stmts = [
            c
            for c in node.named_children
            if c != alternative and c != node.child_by_field_name("condition") and c != node.child_by_field_name("name")
        ]
        first = self._block(stmts, state, out)
        second = self._stmt(alternative, state, out) if alternative is not None else _Flow(state)
        return _Flow(
            _join(first.normal, second.normal), first.breaks + second.breaks, first.continues + second.continues
        )


def _join_all(states: list[State]) -> State | None:
    out: State | None = None
    for s in states:
        out = _join(out, s)
    return out


def _unwrap(node: Node | None) -> Node | None:
    while node is not None and node.type == "parenthesized_expression" and node.named_children:
        node = node.named_children[0]
    return node


def _is_loop_macro(node: Node) -> bool:
    if node.type != "expression_statement" or not node.named_children:
        return False
    call = node.named_children[0]
    return call.type == "call_expression" and callee_name(call) in LOOP_MACROS


def _certain_calls(node: Node) -> list[Node]:
    """Calls that run whenever `node` is evaluated: skip ?: branches and the right side of && / ||."""
    out = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current.type == "call_expression":
            out.append(current)
        if current.type == "conditional_expression":
            cond = current.child_by_field_name("condition")
            if cond is not None:
                stack.append(cond)
            continue
        if current.type == "binary_expression" and text_of(current.child_by_field_name("operator")) in ("&&", "||"):
            left = current.child_by_field_name("left")
            if left is not None:
                stack.append(left)
            continue
        if current.type in ("compound_statement", "function_definition") and current is not node:
            continue
        stack.extend(current.children)
    return out
