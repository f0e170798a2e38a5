# SPDX-License-Identifier: Apache-2.0
"""ops.enqueue must hand every task on; a path that returns without doing so loses the task."""

from __future__ import annotations

from schedcp.verifier.report import Finding
from schedcp.verifier.static.context import Context, Rule

MAX_REPORTED_EXITS = 5


class EnqueueDropsTask(Rule):
    id = "enqueue-drops-task"
    description = "A path through ops.enqueue returns without inserting the task into any DSQ."
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        fn = ctx.callback("enqueue")
        if fn is None:
            return []  # the kernel queues on SCX_DSQ_GLOBAL itself when there is no enqueue
        out: list[Finding] = []
        for ex in ctx.handoff.exits(fn):
            if ex.state.queued:
                continue
            where = "returns" if ex.kind == "return" else "falls off the end"
            if ex.state.aborted:
                out.append(
                    self.finding(
                        ctx,
                        ex.line,
                        f"{fn.name}() {where} here without inserting the task; a helper on this path can call "
                        "scx_bpf_error(), but if that did not happen the task is lost",
                        "insert the task on this path too (e.g. into SCX_DSQ_GLOBAL as a fallback)",
                        severity="warning",
                        function=fn.name,
                    )
                )
            else:
                out.append(
                    self.finding(
                        ctx,
                        ex.line,
                        f"{fn.name}() {where} here without inserting the task into any DSQ: the task is dropped, "
                        "never runs again, and the watchdog ejects the scheduler (runnable task stall)",
                        "on every path call scx_bpf_dsq_insert()/scx_bpf_dsq_insert_vtime() before returning, e.g. "
                        "fall back to scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags)",
                        function=fn.name,
                    )
                )
            if len(out) >= MAX_REPORTED_EXITS:
                break
        return out
