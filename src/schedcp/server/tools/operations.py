# SPDX-License-Identifier: Apache-2.0
"""Service-layer operations as MCP tools: the schema is the input model's fields, the answer is the
output model as compact JSON within ``max_bytes``; operations run in a worker thread and report
progress to clients that ask for it. Nothing about an operation is restated here: every tool the
server offers is one of ``schedcp.services.operation.registry()``.

No ``from __future__ import annotations``: the SDK reads the synthesised signature's real types.
"""

import inspect
from typing import Annotated, Any

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult
from pydantic import Field

from schedcp.server import budget
from schedcp.server.tooling import COMPUTE, READ, WRITE, make_tool
from schedcp.services.operation import Answer, Operation, budget_description, dump, registry
from schedcp.services.state import ServerState

KINDS = {"read": READ, "compute": COMPUTE, "write": WRITE}
_ANNOTATED: Any = Annotated  # subscripted at runtime with a computed tuple (type checkers cannot follow)


def _budget_param(default: int) -> Any:
    return Annotated[
        int,
        Field(ge=budget.MIN_MAX_BYTES, le=budget.LIMIT_MAX_BYTES, description=budget_description(default)),
    ]


def tool_for(op: Operation, state: ServerState) -> Tool:
    params: list[inspect.Parameter] = [
        inspect.Parameter("ctx", inspect.Parameter.KEYWORD_ONLY, annotation=Context),
    ]
    annotations: dict[str, Any] = {"ctx": Context}
    for name, field in op.input.model_fields.items():
        parts = (field.annotation, *field.metadata, Field(description=field.description))
        annotation = _ANNOTATED.__class_getitem__(parts)
        if field.is_required():
            default: Any = inspect.Parameter.empty
        elif field.default_factory is not None:
            default = field.default_factory()  # type: ignore[call-arg]
        else:
            default = field.default
        params.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=default))
        annotations[name] = annotation
    if not op.owns_budget:
        budget_type = _budget_param(op.max_bytes)
        params.append(
            inspect.Parameter("max_bytes", inspect.Parameter.KEYWORD_ONLY, annotation=budget_type, default=op.max_bytes)
        )
        annotations["max_bytes"] = budget_type
    annotations["return"] = CallToolResult

    async def call(ctx: Context, **arguments: Any) -> CallToolResult:
        limit = None if op.owns_budget else arguments.pop("max_bytes", op.max_bytes)
        args = op.input.model_validate(arguments)
        if op.owns_budget:
            limit = args.max_bytes  # type: ignore[attr-defined]
        steps = iter(range(1, 1000))

        def progress(message: str) -> None:
            try:
                anyio.from_thread.run(ctx.report_progress, next(steps), None, message)
            except Exception:  # progress is a courtesy; a closed stream must not fail the call
                pass

        result = await anyio.to_thread.run_sync(lambda: op.run(state, args, progress))
        more = op.more
        if isinstance(result, Answer):
            limit, more, result = limit or result.max_bytes, result.more or more, result.value
        return budget.respond(dump(result), limit or op.max_bytes, hint=more)

    call.__name__ = op.name
    call.__doc__ = op.doc()
    call.__signature__ = inspect.Signature(params, return_annotation=CallToolResult)  # type: ignore[attr-defined]
    call.__annotations__ = annotations
    return make_tool(call, KINDS[op.kind])


def tools(state: ServerState) -> list[Tool]:
    return [tool_for(op, state) for op in registry()]
