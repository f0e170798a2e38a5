# SPDX-License-Identifier: Apache-2.0
"""Hot callbacks run on every scheduling event: no heavy loops, no error exits on the normal path."""

from __future__ import annotations

from tree_sitter import Node

from schedcp.verifier.report import Finding
from schedcp.verifier.static.context import HOT_CALLBACKS, Context, Rule
from schedcp.verifier.static.effects import Kind, guard_texts, is_conditional
from schedcp.verifier.static.source import Function, call_args, callee_name, text_of, walk

HEAVY_ITERATIONS = 4096
ABSURD_ITERATIONS = 100_000
# Loops bounded by the number of CPUs are the norm (idle-CPU scans) and cost at most a few hundred steps.
_CPU_BOUNDS = ("nr_cpu", "nr_cpus", "NR_CPUS", "MAX_CPUS", "nr_possible_cpus", "nr_online_cpus")


class HotPathLoop(Rule):
    id = "hot-path-loop"
    description = "Loops with large or unknown bounds (incl. bpf_loop/bpf_for) in select_cpu/enqueue/dispatch/…"
    severity = "warning"

    def check(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        for name in sorted(ctx.hot_functions()):
            fn = ctx.model.functions.get(name)
            if fn is None or fn.unit != "main":
                continue
            ops = [op for op in HOT_CALLBACKS if op in ctx.effects.callbacks_reaching(name)]
            for node, bound_text, count in self._loops(ctx, fn):
                label = f"in {name}() (runs in ops.{', ops.'.join(ops)})" if ops else f"in {name}()"
                if count is None:
                    if any(b in bound_text for b in _CPU_BOUNDS):
                        continue
                    out.append(
                        self.finding(
                            ctx,
                            node,
                            f"loop {label} has no visible bound ({bound_text[:60] or 'condition unknown'}); "
                            "every scheduling event pays for it and a large count stalls the CPU",
                            "bound it by a small constant (e.g. at most 64 iterations) or move the work out of the hot "
                            "path (a timer, or ops.tick with a budget)",
                            function=name,
                        )
                    )
                elif count > HEAVY_ITERATIONS:
                    out.append(
                        self.finding(
                            ctx,
                            node,
                            f"loop {label} runs up to {count} iterations on every scheduling event",
                            "keep hot-path loops to a few dozen iterations; precompute or batch elsewhere",
                            severity="error" if count > ABSURD_ITERATIONS else "warning",
                            function=name,
                        )
                    )
        return out

    def _loops(self, ctx: Context, fn: Function) -> list[tuple[Node, str, int | None]]:
        out: list[tuple[Node, str, int | None]] = []
        for node in walk(fn.body):
            if node.type == "for_statement":
                cond = node.child_by_field_name("condition")
                out.append((node, text_of(cond), _bound(ctx, fn, cond, node.child_by_field_name("initializer"))))
            elif node.type in ("while_statement", "do_statement"):
                cond = node.child_by_field_name("condition")
                out.append((node, text_of(cond), _bound(ctx, fn, cond, None)))
            elif node.type == "call_expression":
                name = callee_name(node)
                args = call_args(node)
                if (name == "bpf_loop" and args) or (name == "bpf_repeat" and args):
                    out.append((node, text_of(args[0]), ctx.eval.value(args[0], fn)))
                elif name == "bpf_for" and len(args) == 3:
                    lo, hi = ctx.eval.value(args[1], fn), ctx.eval.value(args[2], fn)
                    out.append((node, text_of(args[2]), hi - lo if lo is not None and hi is not None else None))
        return out


def _bound(ctx: Context, fn: Function, cond: Node | None, init: Node | None) -> int | None:
    """Iteration count of `for (i = a; i < N; …)`-style loops when a and N are known."""
    if cond is None:
        return None
    if cond.type == "parenthesized_expression" and cond.named_children:
        cond = cond.named_children[0]
    if cond.type != "binary_expression":
        return None
    op = text_of(cond.child_by_field_name("operator"))
    left, right = cond.child_by_field_name("left"), cond.child_by_field_name("right")
    if op in ("<", "<=", "!="):
        limit = ctx.eval.value(right, fn)
    elif op in (">", ">="):
        limit = ctx.eval.value(left, fn)
    else:
        return None
    if limit is None:
        return None
    start = 0
    if init is not None:
        values = [n for n in walk(init) if n.type == "number_literal"]
        start = (ctx.eval.value(values[-1], fn) or 0) if values else 0
    return max(0, limit - start + (1 if op == "<=" else 0))


class ErrorInHotPath(Rule):
    id = "error-in-hot-path"
    description = "scx_bpf_error()/exit reachable from hot callbacks: unconditional or counter-triggered aborts."
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        mutable = ctx.mutable_globals()
        for op in HOT_CALLBACKS:
            cb = ctx.callback(op)
            if cb is None:
                continue
            for e in ctx.effects.of_function(cb):
                if e.kind is not Kind.ERROR:
                    continue
                conditional = e.inner_conditional or is_conditional(e.site, cb)
                via = f" (via {' -> '.join(e.via)})" if e.via else ""
                if not conditional:
                    out.append(
                        self.finding(
                            ctx,
                            e.site,
                            f"{e.kfunc}() runs on every call of ops.{op}{via}: the scheduler aborts on "
                            "its first scheduling event",
                            "remove the error call or put it behind a condition that cannot hold in normal operation",
                            function=cb.name,
                        )
                    )
                    continue
                guards = guard_texts(e.site, cb)
                if e.origin is not None:
                    guards += guard_texts(*e.origin)
                counters = {n for g in guards for n in mutable if n in g}
                if counters:
                    out.append(
                        self.finding(
                            ctx,
                            e.site,
                            f"{e.kfunc}() in ops.{op}{via} fires once {', '.join(sorted(counters))} "
                            "crosses a threshold: a delayed failure that short tests miss",
                            "do not abort on load-dependent counters; handle the condition (fall back to a shared "
                            "DSQ) instead",
                            severity="warning",
                            function=cb.name,
                        )
                    )
                else:
                    out.append(
                        self.finding(
                            ctx,
                            e.site,
                            f"{e.kfunc}() is reachable from ops.{op}{via}; if its condition can happen "
                            "under load the scheduler is aborted",
                            "make sure the condition is impossible in practice "
                            "(e.g. a failed lookup of data created in init_task); otherwise handle it",
                            severity="info",
                            function=cb.name,
                        )
                    )
        return out
