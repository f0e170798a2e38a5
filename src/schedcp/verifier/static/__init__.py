# SPDX-License-Identifier: Apache-2.0
"""Scheduler-specific static analysis: logic bugs the kernel's BPF verifier cannot see."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedcp.verifier.report import Finding
from schedcp.verifier.static.context import Context
from schedcp.verifier.static.kernelfacts import KernelFacts, default
from schedcp.verifier.static.rules import RULES
from schedcp.verifier.static.source import parse_source


@dataclass
class StaticResult:
    findings: list[Finding]
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]


def analyze(
    source: str | bytes,
    *,
    kernel: KernelFacts | None = None,
    config: dict[str, Any] | None = None,
    header: Path | None = None,
    only: set[str] | None = None,
    extra_units: Sequence[tuple[str, bytes]] = (),
) -> StaticResult:
    """Run every rule (or just `only`) over one scheduler source (and the headers in `extra_units`)."""
    model = parse_source(source, header=header, extra_units=extra_units)
    ctx = Context(model, kernel or default(), config)
    findings: list[Finding] = []
    for rule_cls in RULES:
        if only is not None and rule_cls.id not in only:
            continue
        rule = rule_cls()
        try:
            findings.extend(rule.check(ctx))
        except RecursionError:
            findings.append(
                Finding(
                    id="static-incomplete",
                    stage="static",
                    severity="info",
                    message=f"rule {rule.id} gave up: the source is nested too deeply to analyse",
                    hint="simplify deeply nested expressions",
                )
            )
    findings.sort(key=lambda f: (f.line or 0, f.id))
    facts = {
        "callbacks": dict(sorted(model.callbacks.items())),
        "ops_name": model.ops_name,
        "functions": len(model.functions),
        "parse_errors": model.parse_errors,
        "uses_schedcp_h": model.uses_schedcp_h,
        "rules_run": len(RULES) if only is None else len(only),
    }
    return StaticResult(findings, facts)
