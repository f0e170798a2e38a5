# SPDX-License-Identifier: Apache-2.0
"""An operation: one thing SchedCP does, with typed input and output models, declared once.

Faces only present operations: the MCP server turns each into a tool whose JSON schema is the
input model's fields (plus the shared ``max_bytes`` budget) and whose answer is the output model
as compact JSON within budget; the CLI builds the input model and calls ``call`` directly. Adding
an operation is one ``Operation(...)`` in its service module and one line in ``registry()``.

An answer that relays what a domain service returned (the repository's search, an analysis
render) is a ``Reply``: typed, but showing only the keys the service gave, so typing it never adds
nulls or defaults to the JSON an agent reads.

The answer budget belongs to the face, with two exceptions the operation states itself: an
operation whose work depends on the budget (a search keeps fewer hits, a file read pages) declares
``max_bytes`` in its input model (``budget_field``); and an operation may return an ``Answer`` to
say which default budget fits this answer and where the rest of a cut answer can be read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

if TYPE_CHECKING:
    from schedcp.services.state import ServerState

# Answer budgets in bytes of compact JSON: every operation's default, and the range a caller may ask for.
DEFAULT_MAX_BYTES = 4096
MIN_MAX_BYTES = 512
LIMIT_MAX_BYTES = 65536
Progress = Callable[[str], None]
Kind = Literal["read", "compute", "write"]


def budget_description(default: int | None) -> str:
    shown = f"default {default}" if default is not None else "default: the answer's own budget"
    return (
        f"Upper bound on the size of this tool's JSON answer in bytes ({shown}). "
        "Longer answers are cut, largest lists first, with a 'truncated' note saying what was left out."
    )


def budget_field(default: int | None = DEFAULT_MAX_BYTES, description: str | None = None) -> Any:
    """The ``max_bytes`` field of an input model whose operation shapes its answer by it."""
    return Field(default, ge=MIN_MAX_BYTES, le=LIMIT_MAX_BYTES, description=description or budget_description(default))


class Reply(BaseModel):
    """An answer that mirrors a domain service's result: every key is declared (unknown ones are
    refused), and only the keys the service gave are dumped (``dump`` leaves unset fields out)."""

    model_config = ConfigDict(extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


@dataclass(frozen=True)
class Answer:
    """An operation's result with how to present it: the default budget that suits this answer (when the
    caller gave none) and where the whole of a cut answer is (a resource, a larger detail level)."""

    value: BaseModel
    max_bytes: int | None = None
    more: str = ""


Result = BaseModel | Answer


@dataclass(frozen=True)
class Operation:
    name: str  # the stable tool name agents program against
    input: type[BaseModel]
    run: Callable[[ServerState, Any, Progress], Result]
    # The answer's model, or a union of models when its shape depends on the arguments (detail=...).
    output: Any
    kind: Kind = "compute"
    max_bytes: int = DEFAULT_MAX_BYTES  # default answer budget
    description: str = ""  # defaults to run's docstring
    more: str = ""  # where the rest of a cut answer is, unless the Answer says

    def doc(self) -> str:
        import inspect

        return self.description or inspect.cleandoc(self.run.__doc__ or "")

    @property
    def owns_budget(self) -> bool:
        """The input model declares max_bytes: the operation shapes its answer by it."""
        return "max_bytes" in self.input.model_fields

    def call(self, state: ServerState, arguments: BaseModel | dict[str, Any], progress: Progress | None = None) -> Any:
        """Validate (if needed) and run, for in-process faces such as the CLI: the value, unwrapped.
        Arguments the input model refuses raise UsageError (code ``invalid_arguments``)."""
        from schedcp.errors import UsageError

        try:
            args = arguments if isinstance(arguments, self.input) else self.input.model_validate(arguments)
        except ValidationError as exc:
            raise UsageError(
                f"invalid arguments for {self.name}: {field_errors(exc)}",
                "fix them; the command's --help gives each option's limits",
                code="invalid_arguments",
            ) from None
        result = self.run(state, args, progress or (lambda _m: None))
        return result.value if isinstance(result, Answer) else result

    def check_output(self, value: BaseModel) -> BaseModel:
        """The answer's JSON read back as the declared output model (tests hold operations to it)."""
        return TypeAdapter(self.output).validate_python(dump(value))


def field_errors(exc: ValidationError) -> str:
    """Which arguments were wrong and why, never echoing the (possibly huge or hostile) values."""
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "arguments"
        parts.append(f"{where}: {err['msg']}")
    more = f" (+{len(exc.errors()) - 5} more)" if len(exc.errors()) > 5 else ""
    return "; ".join(parts) + more


def dump(value: BaseModel) -> dict[str, Any]:
    """An answer as the JSON an agent reads."""
    if isinstance(value, Reply):
        return value.model_dump(mode="json", exclude_unset=True)
    return value.model_dump(mode="json")


def registry() -> list[Operation]:
    """Every operation defined in the service layer, in tools/list order."""
    from schedcp.services import analysis, build, deploy, knowledge, repository, testbed, trials, verify, vm_run

    return [
        *analysis.OPERATIONS,
        *repository.OPERATIONS,
        *verify.OPERATIONS,
        *vm_run.OPERATIONS,
        *knowledge.OPERATIONS,
        *testbed.OPERATIONS,
        *build.OPERATIONS,
        *trials.OPERATIONS,
        *deploy.OPERATIONS,
    ]


def by_name(name: str) -> Operation:
    for op in registry():
        if op.name == name:
            return op
    raise KeyError(name)
