# SPDX-License-Identifier: Apache-2.0
"""Rules about who gets the CPU: sleeper credit in virtual time, strict priorities, queue jumping."""

from __future__ import annotations

import re

from tree_sitter import Node

from schedcp.verifier.report import Finding
from schedcp.verifier.static.context import Context, Rule
from schedcp.verifier.static.effects import Effect, Kind
from schedcp.verifier.static.source import Function, callee_name, text_of, walk

_CLAMP_CALL = re.compile(r"before|after|min|max|clamp|bound|limit", re.I)
_TIME_CALLS = frozenset({"bpf_ktime_get_ns", "bpf_ktime_get_boot_ns", "scx_bpf_now", "bpf_jiffies64"})


class VtimeUnboundedCredit(Rule):
    id = "vtime-unbounded-credit"
    description = (
        "Virtual time taken from p->scx.dsq_vtime without clamping it against the global vtime minus "
        "a slice budget: a long sleeper wakes far behind and monopolises the CPU."
    )
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        writers = [fn for fn in ctx.model.functions.values() if _writes_dsq_vtime(fn)]
        if not writers and not any(e.kind is Kind.SET_VTIME for e in ctx.effects.all()):
            return []  # vtime never advances: every task has the same vtime, so no task gains credit
        out = []
        seen: set[int] = set()
        for e in ctx.live_effects():
            vtime = e.arg("vtime")
            if e.kind is not Kind.INSERT_VTIME or vtime is None or e.line in seen:
                continue
            node, fn = vtime
            names = _derived_names(ctx, node, fn)
            if not names:
                continue
            candidates = {fn.name: fn, e.function.name: e.function}
            candidates.update({w.name: w for w in writers})
            if any(_has_clamp(ctx, f, names) for f in candidates.values()):
                continue
            seen.add(e.line)
            out.append(
                self.finding(
                    ctx,
                    e.site,
                    f"the vtime passed to {e.kfunc}() comes from p->scx.dsq_vtime with no lower bound: a task that "
                    "slept for a long time keeps its old, small vtime and then runs ahead of everyone until it "
                    "catches up (unbounded sleeper credit)",
                    "keep a global vtime_now (advanced in ops.running) and clamp before inserting: "
                    "if (vtime < vtime_now - slice_budget) vtime = vtime_now - slice_budget;",
                    function=e.function.name,
                )
            )
        return out


def _writes_dsq_vtime(fn: Function) -> bool:
    for node in walk(fn.body):
        if node.type in ("assignment_expression", "update_expression"):
            target = node.child_by_field_name("left") or node.child_by_field_name("argument")
            if target is not None and "dsq_vtime" in text_of(target):
                return True
    return False


def _derived_names(ctx: Context, node: Node, fn: Function, depth: int = 0) -> set[str]:
    """Names through which `node` carries p->scx.dsq_vtime (empty if it does not)."""
    if depth > 4:
        return set()
    if "dsq_vtime" in text_of(node):
        return {"dsq_vtime"}
    out: set[str] = set()
    for name in ctx.identifiers(node):
        if name in ctx.model.globals or name in ctx.model.macros:
            continue
        for value in ctx.assignments(fn, name):
            sub = _derived_names(ctx, value, fn, depth + 1)
            if sub:
                out |= sub | {name}
    return out


def _mentions(text: str, names: set[str]) -> bool:
    return any(re.search(rf"\b{re.escape(n)}\b", text) for n in names)


def _has_clamp(ctx: Context, fn: Function, names: set[str]) -> bool:
    """A comparison or min/max-style call relating the vtime to something global."""
    candidates: list[Node] = list(ctx.comparisons(fn))
    candidates += [n for n in walk(fn.body) if n.type == "call_expression" and _CLAMP_CALL.search(callee_name(n) or "")]
    for node in candidates:
        text = text_of(node)
        if not _mentions(text, names):
            continue
        others = ctx.identifiers(node) - names - {"p", "scx", "dsq_vtime"}
        if others & set(ctx.model.globals) or any(
            n.type == "field_expression" and "dsq_vtime" not in text_of(n) for n in walk(node)
        ):
            return True
    return False


class StrictPriorityNoAging(Rule):
    id = "strict-priority-no-aging"
    description = "ops.dispatch always drains one DSQ before another with no aging, so the lower one can starve."
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        fn = ctx.callback("dispatch")
        if fn is None:
            return []
        consumes = []
        for e in ctx.effects.of_function(fn):
            if e.kind is Kind.CONSUME:
                ref = ctx.dsq(e.arg("dsq"))
                if ref.kind == "custom" and ref.value is not None:
                    consumes.append((e, ref.value))
        order: list[int] = []
        for _, value in sorted(consumes, key=lambda c: c[0].line):
            if value not in order:
                order.append(value)
        if len(order) < 2:
            return []
        first = next(e for e, v in consumes if v == order[0])
        if not _returns_when_successful(first, fn):
            return []
        if self._has_aging(ctx, fn):
            return []
        return [
            self.finding(
                ctx,
                first.site,
                f"ops.dispatch drains DSQ {order[0]} and returns before ever looking at DSQ {order[1]}: while "
                f"DSQ {order[0]} keeps getting tasks, tasks in DSQ {order[1]} never run (strict priority, no aging)",
                "add aging: e.g. remember when the lower DSQ last ran (bpf_ktime_get_ns()) and drain it first once "
                "that is older than a bound, or give the higher DSQ a budget of consecutive dispatches",
                function=fn.name,
                evidence=[f"drain order: {', '.join(str(v) for v in order)}"],
            )
        ]

    def _has_aging(self, ctx: Context, fn: Function) -> bool:
        names = set(ctx.effects.reachable(fn.name))
        enqueue = ctx.model.callbacks.get("enqueue")
        if enqueue:
            names |= ctx.effects.reachable(enqueue)
        mutable = ctx.mutable_globals()
        for name in names:
            f = ctx.model.functions.get(name) or ctx.effects.macro_function(name)
            if f is None:
                continue
            for node in walk(f.body):
                if node.type == "call_expression" and callee_name(node) in _TIME_CALLS:
                    return True
                if node.type == "binary_expression" and text_of(node.child_by_field_name("operator")) == "%":
                    return True
            for cmp in ctx.comparisons(f):
                if f is fn and ctx.identifiers(cmp) & mutable and "move_to_local" not in text_of(cmp):
                    return True
        return False


def _returns_when_successful(e: Effect, fn: Function) -> bool:
    """The drain call sits in an if condition whose branch returns (or in a || chain)."""
    node = e.site
    parent = node.parent
    while parent is not None and parent != fn.body:
        if parent.type == "if_statement":
            cond = parent.child_by_field_name("condition")
            then = parent.child_by_field_name("consequence")
            if (
                cond is not None
                and cond.start_byte <= node.start_byte < cond.end_byte
                and then is not None
                and any(n.type == "return_statement" for n in walk(then))
            ):
                return True
        if parent.type == "binary_expression" and text_of(parent.child_by_field_name("operator")) == "||":
            return True
        parent = parent.parent
    return False


class HeadInsertFavouritism(Rule):
    id = "head-insert-favouritism"
    description = "Tasks inserted at the head of a shared DSQ (SCX_ENQ_HEAD) jump the queue and can starve others."
    severity = "warning"

    def check(self, ctx: Context) -> list[Finding]:
        head = ctx.kernel.constants.get("SCX_ENQ_HEAD", 1 << 16)
        out = []
        for e in ctx.live_effects():
            flags = e.arg("flags")
            if e.kind not in (Kind.INSERT, Kind.INSERT_VTIME) or flags is None:
                continue
            node, fn = flags
            value = ctx.eval.value(node, fn)
            if not ("SCX_ENQ_HEAD" in text_of(node) or (value is not None and value & head)):
                continue
            if ctx.dsq(e.arg("dsq")).kind in ("local", "local_on"):
                continue
            out.append(
                self.finding(
                    ctx,
                    e.site,
                    "task inserted at the head of a shared DSQ (SCX_ENQ_HEAD): if this path is taken repeatedly, the "
                    "tasks already waiting are pushed back again and again (favouritism can starve them)",
                    "insert at the tail, or bound head inserts (only once per wakeup, with a budget or aging)",
                    function=e.function.name,
                )
            )
        return out
