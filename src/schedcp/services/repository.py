# SPDX-License-Identifier: Apache-2.0
"""Scheduler Policy Repository operations: find, read, reuse, and grow the repository.

What the repository learned from measurements (best_config, antipatterns, record_result) is in
``knowledge.py``; this module is the catalogue itself: search, one policy, the code primitives,
status changes (which need evidence no caller can write) and new policies.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schedcp.errors import SchedcpError, UsageError
from schedcp.paths import schedulers_dir
from schedcp.server.budget import LIMIT_MAX_BYTES
from schedcp.services.models import MAX_SOURCE_BYTES, NAME_PATTERN, PolicyName
from schedcp.services.operation import Answer, Operation, Progress, budget_field

if TYPE_CHECKING:
    from schedcp.server.state import ServerState

AGENT_REASON = "added over MCP"
_LIBRARY_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


def library_source(name: str) -> Path | None:
    """A shipped library or test scheduler's source file, by plain name only (never a path)."""
    if not _LIBRARY_NAME.match(name):
        return None
    for folder in ("library", "testing"):
        path = schedulers_dir() / folder / f"{name}.bpf.c"
        if path.is_file():
            return path
    return None


def scheduler_source(state: ServerState, name: str) -> str:
    """A policy's C source: from the repository first (agent-added policies live there), else the
    shipped library; a usage error naming the way to find names otherwise."""
    try:
        return state.repository().source(name)
    except SchedcpError as exc:
        repo_error = exc
    path = library_source(name)
    if path is not None:
        return path.read_text(errors="replace")
    raise UsageError(f"no source for scheduler {name!r}: {repo_error.cause}", "find names with search_schedulers")


def _normalise_truncation(payload: dict[str, Any], what: str) -> dict[str, Any]:
    """The repository marks cut answers with a bool; we always give a note saying how to get more."""
    if payload.get("truncated") is True:
        payload["truncated"] = {
            "note": f"some {what} were left out to fit max_bytes; ask with a larger max_bytes or a smaller k"
        }
    else:
        payload.pop("truncated", None)
    return payload


# -- search_schedulers --------------------------------------------------------------------------------
class SearchInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(
        min_length=2,
        max_length=1000,
        description=(
            "The need in words: the workload and the goal, e.g. 'parallel compile, minimise makespan' or "
            "'game frame times stutter under background load'."
        ),
    )
    k: int = Field(5, ge=1, le=20, description="How many results.")
    status: Literal["candidate", "verified", "production", "deprecated", "any"] | None = Field(
        None, description="Only policies with this status; default excludes deprecated ones."
    )
    kind: Literal["bpf", "external", "generated"] | None = Field(
        None, description="bpf: our library; external: upstream scx binaries; generated: written by agents."
    )
    kernel: str | None = Field(
        None, pattern=r"^\d{1,2}\.\d{1,3}$", description="Only policies that run on this kernel (MAJOR.MINOR)."
    )
    max_bytes: int = budget_field()


def search_schedulers(state: ServerState, args: SearchInput, _progress: Progress) -> dict[str, Any]:
    """Find existing schedulers for a workload or goal (hybrid keyword + semantic search).

    Returns ranked names with a short excerpt, status, whether the policy is usable here, and
    the score parts. Reusing a proven policy is far cheaper than writing one: search first, then
    get_scheduler on the best hit."""
    found = state.repository().search(
        args.query, k=args.k, status=args.status, kind=args.kind, kernel=args.kernel, budget_bytes=args.max_bytes
    )
    return _normalise_truncation(found, "results")


# -- get_scheduler ----------------------------------------------------------------------------------
class GetSchedulerInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PolicyName
    detail: Literal["summary", "full", "source"] = Field(
        "summary",
        description=(
            "summary: what it does, tunables, result summary. full: adds recent results, status log, "
            "antipatterns, lineage and a source excerpt. source: the complete C source (for patching)."
        ),
    )
    history: int = Field(5, ge=1, le=50, description="Recent results/log entries in 'full'.")


class SchedulerSource(BaseModel):
    name: str
    source_bytes: int
    source: str


SUMMARY_KEYS = (
    "name",
    "kind",
    "status",
    "usable",
    "usable_reason",
    "title",
    "description",
    "workloads",
    "tags",
    "tunables",
    "min_kernel",
    "binary",
    "parent",
    "results",
    "source_bytes",
    "source_uri",
)


def get_scheduler(state: ServerState, args: GetSchedulerInput, _progress: Progress) -> Answer:
    """Describe one scheduler: purpose, suited workloads, tunables (with ranges), status, results.

    The complete C source is the resource schedcp://scheduler/{name}/source (read it only when you
    need to patch or compose code)."""
    if args.detail == "source":
        text = scheduler_source(state, args.name)
        return Answer(
            SchedulerSource(name=args.name, source_bytes=len(text.encode()), source=text),
            more=f"ask with a larger max_bytes (up to {LIMIT_MAX_BYTES}) or read "
            f"schedcp://scheduler/{args.name}/source",
        )
    info = state.repository().show(args.name, history=args.history)
    info["source_uri"] = f"schedcp://scheduler/{args.name}/source" if info.get("source_bytes") else None
    if args.detail == "summary":
        info = {k: info[k] for k in SUMMARY_KEYS if k in info}
    return Answer(info, more="ask with detail='full' or a larger max_bytes")


# -- list_primitives ----------------------------------------------------------------------------------
class PrimitivesInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str | None = Field(
        None,
        min_length=2,
        max_length=1000,
        description="Rank primitives by relevance to this need; omit to list them all.",
    )
    name: str | None = Field(
        None, pattern=r"^[a-z][a-z0-9_]{1,63}$", description="Return this one primitive with its C snippet."
    )
    k: int = Field(5, ge=1, le=20, description="How many ranked results when query is given.")
    max_bytes: int = budget_field()


def list_primitives(state: ServerState, args: PrimitivesInput, _progress: Progress) -> Answer | dict[str, Any]:
    """Reusable scheduler building blocks (per-CPU queues, vtime with sleeper credit, aging, ...).

    Without arguments: every primitive's name and one-line purpose. With query: the most relevant
    ones. With name: that primitive's C snippet, ready to compose into a new scheduler."""
    repo = state.repository()
    if args.name is not None:
        return Answer(repo.primitive(args.name), more="ask with a larger max_bytes for the whole snippet")
    if args.query is not None:
        found = repo.search_primitives(args.query, k=args.k, budget_bytes=args.max_bytes)
        return _normalise_truncation(found, "primitives")
    items = repo.primitives()
    return {"count": len(items), "primitives": items}


# -- promote_scheduler ----------------------------------------------------------------------------------
class PromoteInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: PolicyName
    reason: str = Field(min_length=3, max_length=500, description="Why, in one sentence, with evidence.")
    to: Literal["candidate", "verified", "production", "deprecated"] | None = Field(
        None, description="Target status; default is one step up (candidate -> verified -> production)."
    )
    direction: Literal["promote", "demote"] = Field(
        "promote", description="demote moves down (production -> verified -> candidate -> deprecated)."
    )
    antipattern: str | None = Field(
        None,
        min_length=5,
        max_length=1000,
        description="A lesson to remember with a demotion: what this policy does badly, on which workload.",
    )


def promote_scheduler(state: ServerState, args: PromoteInput, _progress: Progress) -> dict[str, Any]:
    """Change a policy's status. Moving up needs evidence no caller can write: verified needs a passing
    verify_scheduler of this exact source (the daemon keeps the record); production needs a win that
    run_trial measured. A reason or a recorded result is not evidence.

    Use demote with an antipattern note when a policy hurt a workload, so planners avoid repeating it."""
    repo = state.repository()
    move = repo.promote if args.direction == "promote" else repo.demote
    out: dict[str, Any] = move(args.name, to=args.to, reason=args.reason)
    if args.antipattern:
        out["antipattern"] = repo.annotate_antipattern(args.antipattern, policy=args.name)
    return out


# -- add_scheduler ------------------------------------------------------------------------------------
class TunableArg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$", description="The const volatile C variable's name.")
    type: Literal["u8", "u16", "u32", "u64", "s32", "s64", "bool", "str"]
    default: int | bool | str
    min: float | None = None
    max: float | None = None
    unit: str = Field(default="", max_length=16)
    description: str = Field(min_length=3, max_length=600)


class AddSchedulerInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN, description="New unique name (lowercase, digits, _ . -).")
    source: str = Field(
        min_length=20, max_length=MAX_SOURCE_BYTES, description="Complete sched_ext BPF C source (at most 256 KiB)."
    )
    description: str = Field(
        min_length=20,
        max_length=4000,
        description="What the policy does and why; this is what semantic search matches.",
    )
    title: str = Field("", max_length=120, description="One-line title.")
    workloads: list[Annotated[str, Field(min_length=2, max_length=200)]] = Field(
        default_factory=list, max_length=30, description="Workloads it suits, in words."
    )
    tags: list[Annotated[str, Field(min_length=1, max_length=40)]] = Field(
        default_factory=list, max_length=30, description="Keywords."
    )
    tunables: list[TunableArg] = Field(
        default_factory=list, max_length=40, description="const volatile globals the loader may set."
    )
    parent: str | None = Field(
        None, pattern=NAME_PATTERN, description="The policy this one was derived from, for lineage."
    )
    min_kernel: str = Field(
        "6.12",
        pattern=r"^\d{1,2}\.\d{1,3}$",
        description="Oldest kernel (MAJOR.MINOR) whose sched_ext has the kfuncs the source uses.",
    )


class AddedScheduler(BaseModel):
    name: str
    kind: str | None = None
    status: str | None = None
    title: str | None = None
    source_sha256: str | None = None
    source_bytes: int | None = None
    parent: str | None = None
    created_at: str | None = None
    source_uri: str


def add_scheduler(state: ServerState, args: AddSchedulerInput, _progress: Progress) -> AddedScheduler:
    """Save a new scheduler (status 'candidate') so it can be found, verified, measured and reused.

    Verify it first with verify_scheduler; promote it once it has passed and won."""
    from schedcp.server import checks

    checks.source_text(args.source)
    data = {
        "name": args.name,
        "kind": "generated",
        "title": args.title,
        "description": args.description,
        "workloads": args.workloads,
        "tags": args.tags,
        "min_kernel": args.min_kernel,
        "source": args.source,
        "tunables": [t.model_dump(exclude_none=True) | {"variable": t.name} for t in args.tunables],
    }
    info = state.repository().add_policy(data, parent=args.parent, origin="agent", reason=AGENT_REASON)
    keep = ("name", "kind", "status", "title", "source_sha256", "source_bytes", "parent", "created_at")
    return AddedScheduler(**{k: info.get(k) for k in keep}, source_uri=f"schedcp://scheduler/{args.name}/source")


OPERATIONS = [
    Operation("search_schedulers", SearchInput, search_schedulers, kind="compute"),
    Operation("get_scheduler", GetSchedulerInput, get_scheduler, kind="read"),
    Operation("list_primitives", PrimitivesInput, list_primitives, kind="read"),
    Operation("promote_scheduler", PromoteInput, promote_scheduler, kind="write"),
    Operation("add_scheduler", AddSchedulerInput, add_scheduler, kind="write"),
]
