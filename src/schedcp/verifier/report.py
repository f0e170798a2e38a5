# SPDX-License-Identifier: Apache-2.0
"""The verification report: what each stage found, in a form an agent can act on.

The report is the verifier's only output besides the token, so it is bounded (every list and string
has a cap) and it is hashed: the deployment token signs ``digest()`` so a deploy can show exactly
which report approved the object.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

Severity = Literal["error", "warning", "info"]
StageName = Literal["build", "static", "kernel_verifier", "dynamic", "performance"]
StageStatus = Literal["passed", "failed", "skipped", "warned"]
# needs_userspace: the program depends on its own userspace loader for more than SchedCP's scx
# loader does (toolchain/scx_userspace.py); it was not run, so neither pass nor fail applies.
Verdict = Literal["pass", "fail", "needs_userspace"]

STAGE_ORDER: tuple[StageName, ...] = ("build", "static", "kernel_verifier", "dynamic", "performance")
MAX_FINDINGS_PER_STAGE = 25
MAX_TEXT = 600
MAX_EVENTS = 12
MAX_EVIDENCE = 8
# Hard cap on the whole JSON report: an agent's context is the scarce resource.
MAX_REPORT_BYTES = 48_000
SEVERITY_RANK = {"error": 0, "warning": 1, "info": 2}


def clip(text: str, limit: int = MAX_TEXT) -> str:
    text = text.replace("\x00", "")
    return text if len(text) <= limit else text[: limit - 15] + " …[truncated]"


class Finding(BaseModel):
    """One problem (or note) with where it is and how to fix it."""

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{1,63}$")
    stage: StageName
    severity: Severity
    message: str
    line: int | None = None
    code: str | None = None  # the source line, trimmed
    function: str | None = None
    hint: str = ""
    evidence: list[str] = Field(default_factory=list)

    @field_validator("message", "hint")
    @classmethod
    def _clip(cls, value: str) -> str:
        return clip(value)

    @field_validator("code")
    @classmethod
    def _clip_code(cls, value: str | None) -> str | None:
        return clip(value.strip(), 200) if value else value

    @field_validator("evidence")
    @classmethod
    def _clip_evidence(cls, value: list[str]) -> list[str]:
        return [clip(v, 200) for v in value[:MAX_EVIDENCE]]

    def where(self) -> str:
        return f"line {self.line}" if self.line else (self.function or "")


class StageResult(BaseModel):
    name: StageName
    status: StageStatus
    duration_s: float = 0.0
    summary: str = ""
    findings: list[Finding] = Field(default_factory=list)
    omitted_findings: int = 0
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == "error"]

    def bounded(self) -> StageResult:
        """Keep the most severe findings when there are too many."""
        if len(self.findings) <= MAX_FINDINGS_PER_STAGE:
            return self
        ordered = sorted(self.findings, key=lambda f: (SEVERITY_RANK[f.severity], f.line or 0))
        kept = ordered[:MAX_FINDINGS_PER_STAGE]
        return self.model_copy(
            update={"findings": kept, "omitted_findings": self.omitted_findings + len(self.findings) - len(kept)}
        )


class Report(BaseModel):
    """The whole verification outcome for one scheduler object, configuration and kernel."""

    schema_version: int = 1
    verdict: Verdict
    reason: str
    scheduler: str
    source_sha256: str | None = None
    object_sha256: str | None = None
    kernel: str | None = None  # release of the target kernel
    config: dict[str, int | str] = Field(default_factory=dict)
    stages: list[StageResult] = Field(default_factory=list)
    kernel_events: list[dict[str, Any]] = Field(default_factory=list)
    metrics: dict[str, Any] = Field(default_factory=dict)
    timings: dict[str, float] = Field(default_factory=dict)
    token: str | None = None

    @field_validator("kernel_events")
    @classmethod
    def _bound_events(cls, value: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        for event in value[-MAX_EVENTS:]:
            slim: dict[str, Any] = {k: event[k] for k in ("kind", "scheduler", "reason") if k in event}
            if event.get("detail"):
                slim["detail"] = [clip(str(d), 200) for d in event["detail"][:4]]
            out.append(slim)
        return out

    def stage(self, name: StageName) -> StageResult | None:
        return next((s for s in self.stages if s.name == name), None)

    @property
    def findings(self) -> list[Finding]:
        return [f for s in self.stages for f in s.findings]

    def size(self) -> int:
        return len(json.dumps(self.model_dump(mode="json"), separators=(",", ":")))

    def bounded(self, max_bytes: int = MAX_REPORT_BYTES) -> Report:
        """Shed detail, least useful first, until the JSON fits in max_bytes (in place)."""
        for shed in (_drop_info, _strip_warning_evidence, _drop_warnings, _trim_error_evidence):
            if self.size() <= max_bytes:
                return self
            for stage in self.stages:
                before = len(stage.findings)
                stage.findings = shed(stage.findings)
                stage.omitted_findings += before - len(stage.findings)
        while self.size() > max_bytes and any(len(s.findings) > 1 for s in self.stages):
            for stage in self.stages:
                if len(stage.findings) > 1:
                    stage.findings.pop()
                    stage.omitted_findings += 1
        return self

    def digest(self) -> str:
        """SHA-256 of the canonical report without the token (the token signs this)."""
        data = self.model_dump(mode="json", exclude={"token"})
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def _drop_info(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity != "info"]


def _strip_warning_evidence(findings: list[Finding]) -> list[Finding]:
    return [f if f.severity == "error" else f.model_copy(update={"evidence": []}) for f in findings]


def _drop_warnings(findings: list[Finding]) -> list[Finding]:
    return [f for f in findings if f.severity == "error"]


def _trim_error_evidence(findings: list[Finding]) -> list[Finding]:
    return [f.model_copy(update={"evidence": f.evidence[:3]}) for f in findings]


def render_text(report: Report, *, max_findings: int = 12) -> str:
    """A short human (and agent) reading of the report."""
    lines = [f"verdict: {report.verdict.upper()} — {report.reason}"]
    lines.append(
        f"scheduler: {report.scheduler}  kernel: {report.kernel or '?'}"
        + (f"  config: {report.config}" if report.config else "")
    )
    for stage in report.stages:
        took = f"{stage.duration_s:6.1f}s" if stage.status != "skipped" else "      -"
        lines.append(f"  [{stage.status:>7}] {stage.name:<16} {took}  {stage.summary}".rstrip())
    shown = 0
    for stage in report.stages:
        for f in sorted(stage.findings, key=lambda f: SEVERITY_RANK[f.severity]):
            if shown >= max_findings:
                break
            shown += 1
            where = f" ({f.where()})" if f.where() else ""
            lines.append(f"{f.severity}: {f.stage}/{f.id}{where}: {f.message}")
            if f.code:
                lines.append(f"    | {f.code}")
            for ev in f.evidence[:4]:
                lines.append(f"    > {ev}")
            if f.hint:
                lines.append(f"    fix: {f.hint}")
    hidden = len(report.findings) - shown
    if hidden > 0:
        lines.append(f"(+{hidden} more findings; use --json for all)")
    if report.token:
        lines.append(f"deployment token: {report.token}")
    return "\n".join(lines)
