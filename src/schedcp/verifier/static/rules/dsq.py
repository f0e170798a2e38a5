# SPDX-License-Identifier: Apache-2.0
"""Rules about dispatch queues: created, filled, drained, and ordered correctly."""

from __future__ import annotations

from schedcp.verifier.report import Finding
from schedcp.verifier.static.context import Context, Rule
from schedcp.verifier.static.effects import Effect, Kind
from schedcp.verifier.static.source import text_of

FILL = (Kind.INSERT, Kind.INSERT_VTIME, Kind.MOVE)
DRAIN = (Kind.CONSUME, Kind.ITER)


def _hex(value: int) -> str:
    return f"{value} (0x{value:x})" if value > 9 else str(value)


class DsqNeverConsumed(Rule):
    id = "dsq-never-consumed"
    description = "A custom DSQ (or queue map) receives tasks but nothing ever moves them to a CPU."
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        live = ctx.live_effects()
        every = ctx.effects.all()
        inserted: dict[int, Effect] = {}
        for e in live:
            if e.kind in FILL:
                ref = ctx.dsq(e.arg("dsq"))
                if ref.kind == "custom" and ref.value is not None:
                    inserted.setdefault(ref.value, e)
        drained: set[int] = set()
        unknown_drain = False
        for e in every:
            if e.kind in DRAIN and ctx.is_live(e.function):
                ref = ctx.dsq(e.arg("dsq"))
                if ref.kind == "custom" and ref.value is not None:
                    drained.add(ref.value)
                elif ref.kind == "unknown":
                    unknown_drain = True
        out: list[Finding] = []
        has_dispatch = "dispatch" in ctx.model.callbacks
        if not unknown_drain:
            for dsq_id, e in sorted(inserted.items()):
                if dsq_id in drained:
                    continue
                dead = [d for d in every if d.kind in DRAIN and ctx.dsq(d.arg("dsq")).value == dsq_id]
                if dead:
                    why = (
                        f"scx_bpf_dsq_move_to_local({_hex(dsq_id)}) at line {dead[0].line} is in "
                        f"{dead[0].function.name}(), which no sched_ext callback calls"
                    )
                    hint = f"wire {dead[0].function.name} into the sched_ext_ops table (e.g. .dispatch = ...)"
                elif not has_dispatch:
                    why = "the scheduler has no ops.dispatch callback, so nothing drains it"
                    hint = (
                        f"add a dispatch callback that calls scx_bpf_dsq_move_to_local({dsq_id}) and set "
                        ".dispatch in the sched_ext_ops table; or insert into SCX_DSQ_GLOBAL instead"
                    )
                else:
                    why = "no scx_bpf_dsq_move_to_local() or DSQ iteration names it"
                    hint = f"call scx_bpf_dsq_move_to_local({dsq_id}) in ops.dispatch"
                out.append(
                    self.finding(
                        ctx,
                        e.site,
                        f"tasks inserted into DSQ {_hex(dsq_id)} are never consumed: {why}; they will never run and "
                        "the watchdog will eject the scheduler (runnable task stall)",
                        hint,
                        function=e.function.name,
                    )
                )
        out += self._queue_maps(ctx, live, every)
        return out

    def _queue_maps(self, ctx: Context, live: list[Effect], every: list[Effect]) -> list[Finding]:
        def map_name(e: Effect) -> str:
            arg = e.arg("map")
            return text_of(arg[0]).lstrip("&").strip() if arg else ""

        popped = {map_name(e) for e in every if e.kind is Kind.POP and ctx.is_live(e.function)}
        out = []
        seen = set()
        for e in live:
            name = map_name(e)
            if e.kind is Kind.PUSH and name and name not in popped and name not in seen:
                seen.add(name)
                out.append(
                    self.finding(
                        ctx,
                        e.site,
                        f"tasks are parked in queue map {name} but nothing pops them "
                        "(no bpf_map_pop_elem in a callback), so they never run",
                        f"pop {name} in ops.dispatch and insert the task found there",
                        function=e.function.name,
                    )
                )
        return out


class DsqNotCreated(Rule):
    id = "dsq-not-created"
    description = "A custom DSQ id is used but never created with scx_bpf_create_dsq()."
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        created: set[int] = set()
        for e in ctx.effects.all():
            if e.kind is Kind.CREATE:
                ref = ctx.dsq(e.arg("dsq"))
                if ref.kind == "custom" and ref.value is not None:
                    created.add(ref.value)
                elif ref.kind == "unknown":
                    return []  # created in a loop or from a variable: cannot tell which ids exist
        out = []
        reported: set[int] = set()
        for e in ctx.live_effects():
            if e.kind in (*FILL, *DRAIN, Kind.QUERY):
                ref = ctx.dsq(e.arg("dsq"))
                if (
                    ref.kind == "custom"
                    and ref.value is not None
                    and ref.value not in created
                    and ref.value not in reported
                ):
                    reported.add(ref.value)
                    out.append(
                        self.finding(
                            ctx,
                            e.site,
                            f"DSQ {_hex(ref.value)} is used here but never created; the kernel aborts the scheduler "
                            f"with 'non-existent DSQ {hex(ref.value)}'",
                            f"call scx_bpf_create_dsq({ref.value}, -1) in ops.init (and return its error)",
                            function=e.function.name,
                        )
                    )
        return out


class VtimeOnBuiltinDsq(Rule):
    id = "vtime-on-builtin-dsq"
    description = "Virtual-time ordered insert into a built-in DSQ (GLOBAL/LOCAL/LOCAL_ON), which the kernel refuses."
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        out = []
        for e in ctx.live_effects():
            vtime_move = e.kind is Kind.MOVE and "vtime" in e.kfunc
            if e.kind is not Kind.INSERT_VTIME and not vtime_move:
                continue
            ref = ctx.dsq(e.arg("dsq"))
            if ref.builtin:
                out.append(
                    self.finding(
                        ctx,
                        e.site,
                        f"{e.kfunc}() targets a built-in DSQ ({ref.kind}); the kernel aborts the scheduler with "
                        "'cannot use vtime ordering for built-in DSQs'",
                        "create a custom DSQ with scx_bpf_create_dsq() in ops.init, insert into it with the vtime, "
                        "and drain it in ops.dispatch with scx_bpf_dsq_move_to_local()",
                        function=e.function.name,
                    )
                )
        return out
