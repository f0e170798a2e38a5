# SPDX-License-Identifier: Apache-2.0
"""Kernel interface rules: kfuncs the target lacks, renamed kfuncs, fields with setters, the ops name."""

from __future__ import annotations

from typing import ClassVar

from tree_sitter import Node

from schedcp.verifier.report import Finding
from schedcp.verifier.static.context import Context, Rule
from schedcp.verifier.static.effects import base_name, guard_texts, is_ksym_guarded
from schedcp.verifier.static.kernelfacts import RENAMED_KFUNCS
from schedcp.verifier.static.source import Function, callee_name, text_of, walk


def _kfunc_calls(ctx: Context) -> list[tuple[str, Node, Function]]:
    """(name, call node, function) for every call that looks like a kfunc in the main source."""
    out: list[tuple[str, Node, Function]] = []
    for fn in ctx.model.main_functions():
        for node in walk(fn.body):
            if node.type != "call_expression":
                continue
            name = callee_name(node)
            if not name or name in ctx.model.functions or name in ctx.model.macros:
                continue
            if name in ctx.model.externs or name.startswith("scx_bpf_") or name in RENAMED_KFUNCS:
                out.append((name, node, fn))
    return out


class KfuncUnavailable(Rule):
    id = "kfunc-unavailable"
    description = "Calls to kfuncs the target kernel does not have (or declares differently), without a guard."
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        if not ctx.kernel.knows_kfuncs:
            return []
        out: list[Finding] = []
        seen: set[str] = set()
        for name, node, fn in _kfunc_calls(ctx):
            if name in seen:
                continue
            proto = ctx.kernel.kfuncs.get(name)
            declared = ctx.model.externs.get(name)
            if proto is not None:
                if declared is not None and declared.nparams != proto.nparams:
                    seen.add(name)
                    out.append(
                        self.finding(
                            ctx,
                            node,
                            f"{name}() is declared with {declared.nparams} parameters but "
                            f"{ctx.kernel.label()} defines it with {proto.nparams}; libbpf refuses to load the program",
                            "copy the prototype from the target's vmlinux.h (or drop the declaration: vmlinux.h "
                            "already declares it)",
                            function=fn.name,
                        )
                    )
                continue
            if is_ksym_guarded(node, fn, name):
                continue
            seen.add(name)
            hint = "guard the call with bpf_ksym_exists() and provide a fallback"
            if name in RENAMED_KFUNCS:
                hint = f"use {RENAMED_KFUNCS[name]}() instead (renamed in 6.13, removed in 6.17)"
            elif base_name(name) != name and base_name(name) in ctx.kernel.kfuncs:
                hint = (
                    f"this flavour only exists on newer kernels; call {base_name(name)}() or guard with "
                    f"bpf_ksym_exists({name})"
                )
            out.append(
                self.finding(
                    ctx,
                    node,
                    f"{name}() does not exist in {ctx.kernel.label()}; the program fails to load "
                    "(unresolved or poisoned kfunc call)",
                    hint,
                    function=fn.name,
                )
            )
        return out


class DeprecatedKfunc(Rule):
    id = "deprecated-kfunc"
    description = "Old kfunc names (scx_bpf_dispatch*, scx_bpf_consume) or version-specific ___vN flavours, unguarded."
    severity = "warning"

    def check(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        seen: set[str] = set()
        for name, node, fn in _kfunc_calls(ctx):
            if name in seen or is_ksym_guarded(node, fn, name):
                continue
            present = ctx.kernel.has_kfunc(name)
            if present is False:
                continue  # kfunc-unavailable reports it as an error
            if name in RENAMED_KFUNCS:
                seen.add(name)
                out.append(
                    self.finding(
                        ctx,
                        node,
                        f"{name}() is the pre-6.13 name; it was removed around 6.17, so this scheduler "
                        "will not load on current kernels",
                        f"call {RENAMED_KFUNCS[name]}() (guard with bpf_ksym_exists() if you must support 6.12)",
                        function=fn.name,
                    )
                )
            elif "___" in name and present is None:
                seen.add(name)
                out.append(
                    self.finding(
                        ctx,
                        node,
                        f"{name}() is a version-specific flavour that only newer kernels provide",
                        f"guard it with bpf_ksym_exists({name}) and fall back to {base_name(name)}()",
                        function=fn.name,
                    )
                )
        return out


class DirectTaskFieldWrite(Rule):
    id = "direct-task-field-write"
    description = "Writing p->scx.slice / p->scx.dsq_vtime directly where the kernel provides setter kfuncs."
    severity = "info"

    SETTERS: ClassVar[dict[str, str]] = {"slice": "scx_bpf_task_set_slice", "dsq_vtime": "scx_bpf_task_set_dsq_vtime"}

    def check(self, ctx: Context) -> list[Finding]:
        out: list[Finding] = []
        newer = ctx.kernel.version is not None and ctx.kernel.version >= (7, 0)
        for fn in ctx.model.main_functions():
            for node in walk(fn.body):
                if node.type not in ("assignment_expression", "update_expression"):
                    continue
                target = node.child_by_field_name("left") or node.child_by_field_name("argument")
                text = text_of(target).replace(" ", "")
                for field, setter in self.SETTERS.items():
                    if (
                        text.endswith(f"scx.{field}")
                        and ctx.kernel.has_kfunc(setter)
                        and not any(setter in g for g in guard_texts(node, fn))
                    ):
                        out.append(
                            self.finding(
                                ctx,
                                node,
                                f"writes {text} directly; {ctx.kernel.label()} provides {setter}() and "
                                "newer kernels warn about direct writes",
                                f"use {setter}(p, value)",
                                severity="warning" if newer else "info",
                                function=fn.name,
                            )
                        )
        return out[:5]


class OpsNameMissing(Rule):
    id = "ops-name-missing"
    description = "The sched_ext_ops table has no .name; the kernel refuses to register it."
    severity = "error"

    def check(self, ctx: Context) -> list[Finding]:
        if ctx.model.ops_name or not ctx.model.callbacks:
            return []
        return [
            self.finding(
                ctx,
                None,
                "the sched_ext_ops table sets no .name; registration fails with -EINVAL",
                'add .name = "my_sched" (letters, digits, _ and .) to the sched_ext_ops initializer',
            )
        ]
