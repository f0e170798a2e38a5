# SPDX-License-Identifier: Apache-2.0
"""Time slices must be finite and sensible: not infinite, not seconds long, not nanoseconds short."""

from __future__ import annotations

from tree_sitter import Node

from schedcp.verifier.report import Finding
from schedcp.verifier.static.consteval import MASK64
from schedcp.verifier.static.context import Context, Rule
from schedcp.verifier.static.effects import Kind
from schedcp.verifier.static.kernelfacts import U64_MAX
from schedcp.verifier.static.source import Function, text_of, walk

MAX_SLICE_NS = 1_000_000_000
MIN_SLICE_NS = 1_000


def _fmt(ns: int) -> str:
    if ns >= 1_000_000_000:
        return f"{ns / 1e9:g} s"
    if ns >= 1_000_000:
        return f"{ns / 1e6:g} ms"
    if ns >= 1_000:
        return f"{ns / 1e3:g} µs"
    return f"{ns} ns"


class SliceOutOfRange(Rule):
    id = "slice-out-of-range"
    description = "Slices that are infinite (SCX_SLICE_INF), longer than 1 s, or shorter than 1 µs."
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        preempt_kick = any(
            e.kind is Kind.KICK and (flags := e.arg("flags")) is not None and "PREEMPT" in text_of(flags[0])
            for e in ctx.effects.all()
        )
        out = []
        seen: set[int] = set()
        for node, fn, where, what in self._slices(ctx):
            if where.start_point[0] in seen:
                continue
            value = ctx.eval.value(node, fn)
            if value is None:
                continue
            value &= MASK64
            tunables = sorted(n for n in ctx.identifiers(node) if n in ctx.model.globals and ctx.model.globals[n].const)
            source = f" (from tunable {', '.join(tunables)})" if tunables else ""
            finding = None
            if value == U64_MAX:
                finding = self.finding(
                    ctx,
                    where,
                    f"{what} is SCX_SLICE_INF{source}: the task is never preempted by slice expiry, "
                    "so a CPU hog keeps its CPU while others wait",
                    "use a finite slice (e.g. SCX_SLICE_DFL, 20 ms); if you rely on kicks to preempt, "
                    "keep the slice finite anyway as a backstop",
                    severity="warning" if preempt_kick else "error",
                    function=fn.name,
                )
            elif value > MAX_SLICE_NS:
                finding = self.finding(
                    ctx,
                    where,
                    f"{what} is {_fmt(value)}{source}: longer than 1 s, so other tasks on that CPU "
                    "wait seconds (and the watchdog may fire)",
                    "slices are in nanoseconds: use 1-50 ms (e.g. 5000000ULL for 5 ms)",
                    function=fn.name,
                )
            elif 0 < value < MIN_SLICE_NS:
                finding = self.finding(
                    ctx,
                    where,
                    f"{what} is {_fmt(value)}{source}: shorter than 1 µs, so the CPU spends its time "
                    "rescheduling instead of running tasks",
                    "slices are in nanoseconds, not microseconds: 5 ms is 5000000ULL",
                    severity="warning",
                    function=fn.name,
                )
            if finding is not None:
                seen.add(where.start_point[0])
                out.append(finding)
        return out

    def _slices(self, ctx: Context) -> list[tuple[Node, Function, Node, str]]:
        """(value expression, its function, where to report it, what it is)."""
        out: list[tuple[Node, Function, Node, str]] = []
        for e in ctx.live_effects():
            if e.kind in (Kind.INSERT, Kind.INSERT_VTIME, Kind.SET_SLICE) and (slice_arg := e.arg("slice")) is not None:
                node, fn = slice_arg
                where = node if fn.unit == "main" else e.site
                out.append((node, fn, where, f"the slice given to {e.kfunc}()"))
        for fn in ctx.model.main_functions():
            if not ctx.is_live(fn):
                continue
            for node in walk(fn.body):
                if node.type == "assignment_expression" and text_of(node.child_by_field_name("left")).replace(
                    " ", ""
                ).endswith("scx.slice"):
                    right = node.child_by_field_name("right")
                    if right is not None and text_of(node.child_by_field_name("operator")) == "=":
                        out.append((right, fn, right, "p->scx.slice"))
        return out
