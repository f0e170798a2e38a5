# SPDX-License-Identifier: Apache-2.0
"""One agent's tools: its role's SchedCP tools (over MCP) plus its own finish tools, all counted.

SchedCP tools are the MCP server's tools, under their MCP names and schemas, reached through the
agent's ``SchedcpClient``; only the role's tools (``roles.ROLE_TOOLS``) are offered, and a call to
any other is refused before it leaves the agent. Local tools (``submit_plan`` and the like) are
functions of one pydantic model that produce the agent's own result; they never touch SchedCP.

The same ``ToolBox`` serves an LLM (``invoke``: any failure becomes an error message for the
model, never an exception) and the built-in agents (``call``: failures raise), so both are held to
the same inputs, the same output budgets and the same cost accounting.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from schedcp.agent import roles
from schedcp.agent.client import SchedcpClient
from schedcp.agent.cost import CostMeter
from schedcp.agent.llm import ToolCall, ToolDef
from schedcp.analysis import budget
from schedcp.errors import SchedcpError, UsageError

DEFAULT_MAX_BYTES = 4096
Guard = Callable[[dict[str, Any]], None]  # raises UsageError to refuse a call
Observer = Callable[[dict[str, Any], dict[str, Any]], None]  # (arguments, answer) of a successful call


@dataclass
class Tool:
    """A local tool: the agent's own step (finish tools), not a SchedCP call."""

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
    """A local tool's arguments model as a self-contained schema (see ``self_contained``)."""
    return self_contained(model.model_json_schema())


def self_contained(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with nested definitions inlined (not referenced through $defs, which not every
    provider resolves), without pydantic's titles (tokens no model needs), and closed."""
    schema = dict(schema)
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


@dataclass
class ToolBox:
    agent: str  # the role: observation, planning, execution, learning (or loop)
    client: SchedcpClient
    meter: CostMeter
    local: list[Tool] = field(default_factory=list)
    bound: dict[str, Any] = field(default_factory=dict)  # filled in when a tool takes it and the call omits it
    guards: dict[str, Guard] = field(default_factory=dict)
    observers: dict[str, Observer] = field(default_factory=dict)
    log: list[dict[str, Any]] = field(default_factory=list)  # a compact transcript: tool, ok, bytes

    def __post_init__(self) -> None:
        self.allowed = roles.ROLE_TOOLS[self.agent]
        self.locals = {t.name: t for t in self.local}

    # -- what the agent sees -------------------------------------------------------------------------
    def remote_specs(self) -> list[Any]:
        listed = self.client.tools()
        missing = [n for n in self.allowed if n not in listed]
        if missing:
            raise SchedcpError(
                f"the SchedCP server lacks tools the {self.agent} agent needs: {', '.join(missing)}",
                "update the server (schedcp mcp) to this version",
                code="mcp_tools_missing",
            )
        return [listed[n] for n in self.allowed]

    def definitions(self) -> list[ToolDef]:
        remote = [ToolDef(s.name, s.description, self_contained(s.input_schema)) for s in self.remote_specs()]
        return remote + [t.definition() for t in self.local]

    @property
    def finish_names(self) -> list[str]:
        return [t.name for t in self.local if t.finish]

    # -- accounting ---------------------------------------------------------------------------------
    def _record(self, name: str, content: str, error: bool) -> None:
        size = len(content.encode())
        self.meter.tool(self.agent, name, size, error)
        self.log.append({"tool": name, "ok": not error, "bytes": size})

    def _error(self, name: str, message: str) -> Outcome:
        content = json.dumps({"error": message[:800]})
        self._record(name, content, True)
        return Outcome(content, True)

    def refuse(self, name: str) -> UsageError:
        return UsageError(
            f"the {self.agent} agent may not call {name[:60]!r}",
            f"its SchedCP tools: {', '.join(self.allowed)}",
            code="role_refused",
        )

    # -- calls --------------------------------------------------------------------------------------
    def _remote(self, name: str, arguments: dict[str, Any]) -> tuple[str, bool, dict[str, Any] | None, Any]:
        if name not in self.allowed:
            raise self.refuse(name)
        spec = self.client.tools().get(name)
        props = (spec.input_schema.get("properties") or {}) if spec else {}
        args = dict(arguments)
        for key, value in self.bound.items():
            if key in props and key not in args:
                args[key] = value
        if "max_bytes" in props and "max_bytes" not in args:
            args["max_bytes"] = roles.budget(name)
        guard = self.guards.get(name)
        if guard is not None:
            guard(args)
        reply = self.client.call(name, args)
        observer = self.observers.get(name)
        if observer is not None and not reply.is_error and reply.data is not None:
            observer(args, reply.data)
        return reply.text, reply.is_error, reply.data, reply

    def invoke(self, call: ToolCall) -> Outcome:
        """Run a model's tool call; every failure is returned as an error message, never raised."""
        local = self.locals.get(call.name)
        if local is None and call.name not in self.allowed:
            known = ", ".join([*self.allowed, *self.locals])
            return self._error(call.name or "?", f"there is no tool named {call.name[:60]!r}; use one of: {known}")
        if call.arguments is None:
            return self._error(
                call.name,
                f"could not read the arguments of {call.name}: {call.parse_error}; "
                "send a JSON object matching the tool's schema",
            )
        if local is not None:
            try:
                args = local.args.model_validate(call.arguments)
            except ValidationError as exc:
                return self._error(local.name, f"invalid arguments for {local.name}: {_validation_message(exc)}")
            try:
                value = local.fn(args)
            except SchedcpError as exc:
                return self._error(local.name, exc.cause + (f" (next: {exc.next_step})" if exc.next_step else ""))
            content = budget.compact(budget.fit(value, local.max_bytes))
            self._record(local.name, content, False)
            return Outcome(content, False, value)
        try:
            text, is_error, data, _reply = self._remote(call.name, call.arguments)
        except SchedcpError as exc:
            if exc.code == "mcp_transport":
                raise
            return self._error(call.name, exc.cause + (f" (next: {exc.next_step})" if exc.next_step else ""))
        self._record(call.name, text, is_error)
        return Outcome(text, is_error, None if is_error else data)

    def call(self, name: str, /, **arguments: Any) -> dict[str, Any]:
        """For the built-in agents: the bounded answer as a dict; failures raise SchedcpError."""
        local = self.locals.get(name)
        if local is not None:
            try:
                args = local.args.model_validate(arguments)
            except ValidationError as exc:
                raise UsageError(f"invalid arguments for {name}: {_validation_message(exc)}", "fix the call") from exc
            try:
                value = local.fn(args)
            except SchedcpError as exc:
                self._record(name, json.dumps({"error": exc.cause}), True)
                raise
            content = budget.compact(budget.fit(value, local.max_bytes))
            self._record(name, content, False)
            return json.loads(content)
        try:
            text, is_error, _data, reply = self._remote(name, arguments)
        except SchedcpError as exc:
            if exc.code != "mcp_transport":
                self._record(name, json.dumps({"error": exc.cause}), True)
            raise
        self._record(name, text, is_error)
        return reply.value()
