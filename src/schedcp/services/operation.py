# SPDX-License-Identifier: Apache-2.0
"""An operation: one thing SchedCP does, with a typed input model, declared once.

Faces only present operations: the MCP server turns each into a tool whose JSON schema is the
input model's fields (plus the shared ``max_bytes`` budget) and whose answer is the output model
as compact JSON within budget; the CLI builds the input model and calls ``run`` directly. Adding
an operation (the deployment tools, for example) is one ``Operation(...)`` in its service module
and one line in ``registry()``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel

if TYPE_CHECKING:
    from schedcp.server.state import ServerState

Progress = Callable[[str], None]
Kind = Literal["read", "compute", "write"]


@dataclass(frozen=True)
class Operation:
    name: str  # the stable tool name agents program against
    input: type[BaseModel]
    run: Callable[[ServerState, Any, Progress], BaseModel | dict[str, Any]]
    kind: Kind = "compute"
    max_bytes: int = 4096  # default answer budget
    description: str = ""  # defaults to run's docstring

    def doc(self) -> str:
        import inspect

        return self.description or inspect.cleandoc(self.run.__doc__ or "")

    def call(self, state: ServerState, arguments: BaseModel | dict[str, Any], progress: Progress | None = None) -> Any:
        """Validate (if needed) and run, for in-process faces such as the CLI."""
        args = arguments if isinstance(arguments, self.input) else self.input.model_validate(arguments)
        return self.run(state, args, progress or (lambda _m: None))


def dump(value: BaseModel | dict[str, Any]) -> dict[str, Any]:
    return value.model_dump(mode="json") if isinstance(value, BaseModel) else value


def registry() -> list[Operation]:
    """Every operation defined in the service layer, in tools/list order."""
    from schedcp.services import build, knowledge, testbed, trials

    return [*knowledge.OPERATIONS, *testbed.OPERATIONS, *build.OPERATIONS, *trials.OPERATIONS]
