# SPDX-License-Identifier: Apache-2.0
"""A workload's metrics from its own output: the one place output text becomes numbers.

Three sources, in order of precedence:

1. a metric the user names (``--metric 'p99=(\\d+)'`` or ``--metric json:latency.p99``, with
   ``--lower-is-better``/``--higher-is-better``), read from the last line that matches;
2. SchedCP's own result line (``{"workload": ..., "metrics": {...}}``, built-in guest workloads);
3. a known real tool's report (hackbench, perf bench, stress-ng, sysbench, cyclictest; see
   bench/guest/toolparse.py) when the command is that tool.

Every run also has its wall time (``run_wall_s``), the goal when nothing else is named.

User regexes are matched line by line against at most the bounded output the node returns, on
lines cut to ``MAX_LINE`` characters, so a pathological pattern costs milliseconds, not minutes.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from schedcp.bench.guest import toolparse
from schedcp.errors import UsageError

MAX_LINE = 2048
Direction = Literal["lower", "higher"]
_NAME = re.compile(r"^[a-z][a-z0-9_.]{0,47}$")
# A quantified group with a quantifier inside, e.g. (a+)+ or (\d*,?)*: the shape of catastrophic
# backtracking. Patterns may come from MCP clients, and Python's re has no time limit.
_NESTED = re.compile(r"\((?:[^()\\]|\\.)*[*+}](?:[^()\\]|\\.)*\)[*+{]")


class MetricSpec(BaseModel):
    """A metric named by the user: a regex with one group, or a JSON field path; and its direction."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(pattern=_NAME.pattern, description="Metric name used in reports.")
    regex: str | None = Field(None, max_length=400, description="Pattern with one group capturing the number.")
    json_field: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+){0,7}$", description="Dotted path into the last JSON line."
    )
    direction: Direction

    @field_validator("regex")
    @classmethod
    def _one_group(cls, value: str | None) -> str | None:
        if value is None:
            return value
        try:
            compiled = re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from exc
        if compiled.groups != 1:
            raise ValueError(f"needs exactly one (group) around the number, found {compiled.groups}")
        if _NESTED.search(value):
            raise ValueError("a repeated group that itself repeats can take exponential time; simplify it")
        return value

    @classmethod
    def parse(cls, text: str, direction: str | None) -> MetricSpec:
        """``--metric`` text: ``json:PATH`` or a regex; the name comes from a named group, the JSON
        path, or the literal text before the group (``p99=(\\d+)`` -> ``p99``)."""
        from schedcp.repository.outcomes import direction as infer

        text = text.strip()
        if not text:
            raise UsageError("--metric is empty", "give a regex with one group, e.g. 'p99=(\\d+)', or json:FIELD")
        if text.startswith("json:"):
            path = text[5:]
            name, fields = _name(path.replace(".", "_")), {"json_field": path}
        else:
            try:
                compiled = re.compile(text)
            except re.error as exc:
                raise UsageError(f"--metric {text!r} is not a valid regex: {exc}", "fix the pattern") from exc
            named = list(compiled.groupindex)
            prefix = re.split(r"[(\\\[]", text, maxsplit=1)[0]
            name, fields = _name(named[0] if named else prefix), {"regex": text}
        way = direction or infer(name)
        if way not in ("lower", "higher"):
            raise UsageError(
                f"cannot tell whether lower or higher {name!r} is better",
                "add --lower-is-better or --higher-is-better",
            )
        try:
            return cls(name=name, direction="lower" if way == "lower" else "higher", **fields)
        except ValueError as exc:
            detail = exc.errors()[0]["msg"] if hasattr(exc, "errors") else str(exc)
            raise UsageError(f"--metric {text!r}: {detail}", "e.g. --metric 'p99=(\\d+)' or json:latency.p99") from exc

    def extract(self, stdout: str, stderr: str = "") -> float | None:
        if self.json_field is not None:
            return _json_value(stdout, self.json_field)
        assert self.regex is not None
        pattern = re.compile(self.regex)
        found: float | None = None
        for line in (stdout + "\n" + stderr).splitlines():
            m = pattern.search(line[:MAX_LINE])
            if m:
                try:
                    found = float(m.group(1).replace(",", ""))
                except (TypeError, ValueError):
                    continue
        return found


def _name(raw: str) -> str:
    name = re.sub(r"[^a-z0-9_]+", "_", raw.lower()).strip("_")[:48]
    if not name or not name[0].isalpha():
        name = f"metric_{name}".rstrip("_")[:48] if name else "metric"
    return name


def _json_value(stdout: str, path: str) -> float | None:
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            node: Any = json.loads(line[: 1 << 20])
        except ValueError:
            continue
        for part in path.split("."):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            else:
                node = None
                break
        if isinstance(node, int | float) and not isinstance(node, bool):
            return float(node)
    return None


def output_metrics(
    argv: list[str], stdout: str, stderr: str, wall_s: float, spec: MetricSpec | None = None
) -> dict[str, float]:
    """All metrics of one run (see the module docstring); the named one is present only if found."""
    from schedcp.services.workloads import parse_metrics

    metrics = parse_metrics(stdout)
    if not metrics and argv:
        metrics = toolparse.parse(argv[0], stdout + "\n" + stderr)
    if spec is not None:
        value = spec.extract(stdout, stderr)
        if value is not None:
            metrics[spec.name] = value
    metrics["run_wall_s"] = round(float(wall_s), 4)
    return metrics
