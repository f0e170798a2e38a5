# SPDX-License-Identifier: Apache-2.0
"""CPU numbers handed to the kernel (SCX_DSQ_LOCAL_ON | cpu, kicks, select_cpu) must be valid."""

from __future__ import annotations

from tree_sitter import Node

from schedcp.verifier.report import Finding
from schedcp.verifier.static.context import Context, Rule
from schedcp.verifier.static.effects import KFUNCS, Kind, base_name
from schedcp.verifier.static.source import Function, callee_name, strip_parens, text_of, walk

# No machine this verifier targets has this many CPUs; a constant this large is a bug.
IMPLAUSIBLE_CPU = 512
# Sources of CPU numbers that are always valid.
SAFE_CPU_CALLS = frozenset({"scx_bpf_task_cpu", "bpf_get_smp_processor_id", "scx_bpf_select_cpu_dfl"})
_ARITH = frozenset({"+", "-", "*", "<<", "^", "|"})


class LocalOnCpuRange(Rule):
    id = "local-on-cpu-range"
    description = (
        "CPU targets (SCX_DSQ_LOCAL_ON | cpu, scx_bpf_kick_cpu, select_cpu's return) that can be out of "
        "range: huge constants, unchecked arithmetic, or negative results of scx_bpf_pick_*_cpu()."
    )
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        seen: set[int] = set()
        for e in ctx.live_effects():
            target: tuple[Node, Function] | None = None
            what = ""
            if e.kind in (Kind.INSERT, Kind.INSERT_VTIME, Kind.MOVE):
                ref = ctx.dsq(e.arg("dsq"))
                if ref.kind != "local_on":
                    continue
                what = "SCX_DSQ_LOCAL_ON | cpu"
                if ref.cpu is None:
                    if ref.cpu_value is not None and e.line not in seen:
                        seen.add(e.line)
                        out += self._constant(ctx, e.site, ref.cpu_value, what, e.function.name)
                    continue
                target = ref.cpu
            elif e.kind is Kind.KICK and e.arg("cpu") is not None:
                target, what = e.arg("cpu"), "the CPU passed to scx_bpf_kick_cpu()"
            if target is None or e.line in seen:
                continue
            finding = self._computed(ctx, target, e.site, what)
            if finding is not None:
                seen.add(e.line)
                out.append(finding)
        out += self._select_cpu_returns(ctx)
        return out

    def _constant(self, ctx: Context, where: Node, cpu: int, what: str, fn: str) -> list[Finding]:
        if cpu >= IMPLAUSIBLE_CPU:
            return [
                self.finding(
                    ctx,
                    where,
                    f"{what} uses CPU {cpu}, which no machine here has; the kernel aborts the scheduler "
                    f"with 'invalid CPU {cpu} in SCX_DSQ_LOCAL_ON dispatch verdict'",
                    "use a CPU number from the kernel (prev_cpu, scx_bpf_task_cpu(p)) or check it against "
                    "scx_bpf_nr_cpu_ids()",
                    function=fn,
                )
            ]
        if cpu >= 2:
            return [
                self.finding(
                    ctx,
                    where,
                    f"{what} hard-codes CPU {cpu}; it only exists on machines with more than {cpu} CPUs "
                    "(the verification VM has 2) and the kernel aborts the scheduler elsewhere",
                    "compare against scx_bpf_nr_cpu_ids() first, or derive the CPU from the task",
                    severity="warning",
                    function=fn,
                )
            ]
        return []

    def _computed(self, ctx: Context, target: tuple[Node, Function], site: Node, what: str) -> Finding | None:
        node, fn = target
        node = strip_parens(node)
        const = ctx.eval.value(node, fn)
        if const is not None:
            found = self._constant(ctx, site, const, what, fn.name)
            return found[0] if found else None
        sources = [node]
        names: set[str] = set()
        if node.type == "identifier":
            names.add(text_of(node))
            sources = ctx.assignments(fn, text_of(node)) or [node]
        picks = [s for s in sources if _calls(s) & {n for n, sp in KFUNCS.items() if sp.kind is Kind.PICK_CPU}]
        checked = _is_checked(ctx, fn, names or ctx.identifiers(node))
        if picks and not checked:
            return self.finding(
                ctx,
                site,
                f"{what} comes from {callee_name(_first_call(picks[0])) or 'a pick'}() which returns a "
                "negative error when no CPU qualifies; used unchecked it becomes an invalid CPU and the kernel "
                "aborts the scheduler",
                "check `if (cpu >= 0)` before using it, and fall back to a shared DSQ",
                function=fn.name,
            )
        arithmetic = any(_has_arith(s) or _calls(s) & {"bpf_get_prandom_u32"} for s in sources)
        if arithmetic and not checked and not any(_calls(s) & SAFE_CPU_CALLS for s in sources):
            return self.finding(
                ctx,
                site,
                f"{what} is computed ({text_of(sources[0])[:80]}) and never compared against the "
                "number of CPUs, so it can name a CPU that does not exist",
                "bound it: `if (cpu >= scx_bpf_nr_cpu_ids()) cpu = prev_cpu;` (or use modulo nr_cpu_ids)",
                severity="warning",
                function=fn.name,
            )
        return None

    def _select_cpu_returns(self, ctx: Context) -> list[Finding]:
        fn = ctx.callback("select_cpu")
        if fn is None:
            return []
        out = []
        pick_names = {n for n, sp in KFUNCS.items() if sp.kind is Kind.PICK_CPU}
        for node in walk(fn.body):
            if node.type != "return_statement" or not node.named_children:
                continue
            value = strip_parens(node.named_children[0])
            if value.type == "call_expression" and base_name(callee_name(value) or "") in pick_names:
                names: set[str] = set()
            elif value.type == "identifier" and any(
                _calls(s) & pick_names for s in ctx.assignments(fn, text_of(value))
            ):
                names = {text_of(value)}
            else:
                continue
            if names and _is_checked(ctx, fn, names):
                continue
            out.append(
                self.finding(
                    ctx,
                    node,
                    "ops.select_cpu can return the negative result of scx_bpf_pick_*_cpu() when no CPU is "
                    "idle; the kernel rejects that CPU and aborts the scheduler",
                    "return prev_cpu when the pick fails: `if (cpu < 0) return prev_cpu;`",
                    function=fn.name,
                )
            )
        return out


def _calls(node: Node) -> set[str]:
    return {base_name(callee_name(n) or "") for n in walk(node) if n.type == "call_expression"}


def _first_call(node: Node) -> Node:
    return next((n for n in walk(node) if n.type == "call_expression"), node)


def _has_arith(node: Node) -> bool:
    return any(
        n.type == "binary_expression" and text_of(n.child_by_field_name("operator")) in _ARITH for n in walk(node)
    )


def _is_checked(ctx: Context, fn: Function, names: set[str]) -> bool:
    """Some comparison, modulo or mask in fn bounds one of `names`."""
    for cmp in ctx.comparisons(fn):
        if ctx.identifiers(cmp) & names:
            return True
    for node in walk(fn.body):
        if (
            node.type == "binary_expression"
            and text_of(node.child_by_field_name("operator")) in ("%", "&")
            and ctx.identifiers(node) & names
        ):
            return True
    return False
