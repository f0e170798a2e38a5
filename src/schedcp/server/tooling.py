# SPDX-License-Identifier: Apache-2.0
"""How our tools are declared and how their failures reach an agent.

Each tool is a plain function with typed, constrained parameters (pydantic ``Field``); the SDK turns
the signature into the JSON schema. We tighten what the SDK generates: unknown arguments are
refused (``additionalProperties: false``) instead of silently ignored, and every failure becomes a
short ``isError`` result with a cause and a next step. Tracebacks stay in the server's log.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ToolAnnotations
from pydantic import ValidationError

from schedcp.errors import SchedcpError
from schedcp.server.budget import error_result
from schedcp.services.operation import field_errors

log = logging.getLogger("schedcp.server")


@dataclass(frozen=True)
class ToolKind:
    read_only: bool
    destructive: bool = False
    idempotent: bool = False
    open_world: bool = False


READ = ToolKind(read_only=True, idempotent=True)
COMPUTE = ToolKind(read_only=True)  # no lasting change, but not free (builds, boots a VM, probes)
WRITE = ToolKind(read_only=False)


def make_tool(fn: Callable[..., Any], kind: ToolKind, *, description: str | None = None) -> Tool:
    """A tool named after its function (the stable API name), titled from it, described by its docstring."""
    name = fn.__name__
    title = name.replace("_", " ").capitalize()
    tool = Tool.from_function(
        fn,
        name=name,
        title=title,
        description=description or inspect.cleandoc(fn.__doc__ or ""),
        annotations=ToolAnnotations(
            title=title,
            read_only_hint=kind.read_only,
            destructive_hint=kind.destructive,
            idempotent_hint=kind.idempotent,
            open_world_hint=kind.open_world,
        ),
        structured_output=False,
    )
    _drop_titles(tool.parameters)
    tool.parameters["additionalProperties"] = False
    return tool


def _drop_titles(schema: Any) -> None:
    """Remove pydantic's generated "title" keywords: they repeat the names and cost every agent tokens.

    Property *names* are kept (a parameter may itself be called "title"); only the keyword goes.
    """
    if isinstance(schema, dict):
        if isinstance(schema.get("title"), str):
            del schema["title"]
        for key, value in schema.items():
            if key in ("properties", "$defs", "definitions") and isinstance(value, dict):
                for sub in value.values():
                    _drop_titles(sub)
            elif key not in ("enum", "const", "default", "examples"):
                _drop_titles(value)
    elif isinstance(schema, list):
        for item in schema:
            _drop_titles(item)


# Services phrase some next steps for the CLI; over MCP the same step is a tool call.
_CLI_TO_TOOL = {
    "run `schedcp repo search` to find names": "find names with search_schedulers",
    "list the library with `schedcp sched list`": "find names with search_schedulers",
}


def _as_tool_hint(next_step: str) -> str:
    return _CLI_TO_TOOL.get(next_step, next_step)


def failure(tool: str, exc: BaseException) -> CallToolResult:
    """Turn whatever a tool raised into an agent-facing error result."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc
    # The SDK wraps twice for nested failures; look through its wrappers for our own error.
    seen = 0
    while not isinstance(cause, SchedcpError | ValidationError) and cause.__cause__ is not None and seen < 4:
        cause = cause.__cause__
        seen += 1
    if isinstance(cause, ValidationError):
        return error_result(
            f"invalid arguments for {tool}: {field_errors(cause)}",
            "fix those arguments; tools/list shows each parameter's type and limits",
            "invalid_arguments",
        )
    if isinstance(cause, SchedcpError):
        return error_result(cause.cause, _as_tool_hint(cause.next_step), cause.code)
    log.error("tool %s failed unexpectedly", tool, exc_info=(type(cause), cause, cause.__traceback__))
    return error_result(
        f"{tool} failed with an internal error ({type(cause).__name__})",
        "retry once; if it fails again, report it with the server log (stderr)",
        "internal",
    )
