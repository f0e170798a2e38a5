# SPDX-License-Identifier: Apache-2.0
"""Narrow, validated tools for one agent, with every answer bounded and counted.

A tool is a function of one pydantic model (its arguments; unknown fields are refused) returning
a JSON-able dict. The same ``ToolBox`` serves an LLM (``invoke``: any failure becomes an error
message for the model, never an exception) and the built-in agents (``call``: failures raise), so
both are held to the same inputs, the same output budgets and the same cost accounting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from schedcp.agent.cost import CostMeter
from schedcp.agent.llm import ToolCall, ToolDef
from schedcp.analysis import budget
from schedcp.errors import SchedcpError, UsageError

DEFAULT_MAX_BYTES = 4096


@dataclass
class Tool:
    name: str
    description: str
    args: type[BaseModel]
    fn: Callable[[Any], dict[str, Any]]
    max_bytes: int = DEFAULT_MAX_BYTES
    finish: bool = False  # calling it successfully ends the agent's turn

    def definition(self) -> ToolDef:
        return ToolDef(self.name, self.description, json_schema(self.args))


@dataclass
class Outcome:
    content: str  # exactly what the agent reads
    is_error: bool
    value: dict[str, Any] | None = None


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, self-contained (nested models inlined, not referenced through $defs,
    which not every provider resolves) and without pydantic's titles (tokens no model needs)."""
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})

    def strip(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                return strip(defs[ref.removeprefix("#/$defs/")] | {k: v for k, v in node.items() if k != "$ref"})
            return {k: strip(v) for k, v in node.items() if k != "title" or not isinstance(v, str)}
        if isinstance(node, list):
            return [strip(v) for v in node]
        return node

    out = strip(schema)
    out.setdefault("properties", {})
    out["additionalProperties"] = False
    return out


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


class ToolBox:
    def __init__(self, agent: str, tools: list[Tool], meter: CostMeter) -> None:
        self.agent = agent
        self.tools = {t.name: t for t in tools}
        self.meter = meter
        self.log: list[dict[str, Any]] = []  # a compact transcript: tool, ok, bytes

    def definitions(self) -> list[ToolDef]:
        return [t.definition() for t in self.tools.values()]

    @property
    def finish_names(self) -> list[str]:
        return [t.name for t in self.tools.values() if t.finish]

    def _render(self, tool: Tool, value: dict[str, Any]) -> str:
        return budget.compact(budget.fit(value, tool.max_bytes))

    def _record(self, name: str, content: str, error: bool) -> None:
        size = len(content.encode())
        self.meter.tool(self.agent, name, size, error)
        self.log.append({"tool": name, "ok": not error, "bytes": size})

    def invoke(self, call: ToolCall) -> Outcome:
        """Run a model's tool call; every failure is returned as an error message, never raised."""
        tool = self.tools.get(call.name)
        if tool is None:
            known = ", ".join(self.tools)
            return self._error(call.name or "?", f"there is no tool named {call.name[:60]!r}; use one of: {known}")
        if call.arguments is None:
            return self._error(
                tool.name,
                f"could not read the arguments of {tool.name}: {call.parse_error}; "
                "send a JSON object matching the tool's schema",
            )
        try:
            args = tool.args.model_validate(call.arguments)
        except ValidationError as exc:
            return self._error(tool.name, f"invalid arguments for {tool.name}: {_validation_message(exc)}")
        try:
            value = tool.fn(args)
        except SchedcpError as exc:
            text = exc.cause + (f" (next: {exc.next_step})" if exc.next_step else "")
            return self._error(tool.name, text)
        content = self._render(tool, value)
        self._record(tool.name, content, False)
        return Outcome(content, False, value)

    def _error(self, name: str, message: str) -> Outcome:
        content = json.dumps({"error": message[:800]})
        self._record(name, content, True)
        return Outcome(content, True)

    def call(self, name: str, /, **arguments: Any) -> dict[str, Any]:
        """For the built-in agents: the bounded answer as a dict; failures raise SchedcpError."""
        tool = self.tools.get(name)
        if tool is None:
            raise UsageError(f"{self.agent} agent has no tool {name!r}", "this is a bug in the built-in agent")
        try:
            args = tool.args.model_validate(arguments)
        except ValidationError as exc:
            raise UsageError(f"invalid arguments for {name}: {_validation_message(exc)}", "fix the call") from exc
        try:
            value = tool.fn(args)
        except SchedcpError as exc:
            self._record(name, json.dumps({"error": exc.cause}), True)
            raise
        content = self._render(tool, value)
        self._record(name, content, False)
        return json.loads(content)
