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
from schedcp.services import checks
from schedcp.services.models import MAX_SOURCE_BYTES, NAME_PATTERN, CutNote, PolicyName
from schedcp.services.operation import LIMIT_MAX_BYTES, Answer, Operation, Progress, Reply, budget_field

if TYPE_CHECKING:
    from schedcp.services.state import ServerState
    from schedcp.toolchain.metadata import SchedulerMeta

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


def repo_meta(info: dict[str, Any]) -> SchedulerMeta | None:
    """Tunables of an agent-added policy (``show``'s answer), in the shape the loader validates against;
    None when it declares none. Shared by run_in_vm's preparation and build_scheduler."""
    from schedcp.toolchain import metadata

    tunables = [t for t in info.get("tunables", []) if t.get("variable")]
    if not tunables:
        return None
    converted = []
    for t in tunables:
        item = {
            "name": t["variable"],
            "type": t["type"],
            "default": t.get("default"),
            "description": t.get("description", "tunable"),
        }
        if t["type"] == "str":
            item["max_len"] = 64
        else:
            item.update({k: int(t[k]) for k in ("min", "max") if t.get(k) is not None})
        converted.append(item)
    try:
        return metadata.SchedulerMeta.model_validate(
            {
                "name": info["name"].replace("-", "_").replace(".", "_")[:32],
                "title": info.get("title") or info["name"],
                "description": (info.get("description") or "")[:4000],
                "tunables": converted,
            }
        )
    except ValueError as exc:
        raise UsageError(
            f"the tunables stored for {info['name']} are not loadable: {exc}",
            "fix the policy's tunables in the repository or run it without config",
        ) from exc


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


class Scores(Reply):
    hybrid: float
    bm25: float
    cosine: float


class SearchHit(Reply):
    name: str
    kind: str
    status: str
    usable: bool
    title: str
    excerpt: str
    min_kernel: str
    tags: list[str]
    score: Scores
    matched: dict[str, list[str]]  # column -> the query terms it matched


class SearchFilters(Reply):
    status: str
    kind: str | None
    kernel: str | None


class SearchResults(Reply):
    """search_schedulers' answer: ranked policies with their score parts."""

    query: str
    terms: list[str]
    mode: str
    filters: SearchFilters
    considered: int
    budget_bytes: int
    truncated: CutNote | None = None
    results: list[SearchHit]


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


def search_schedulers(state: ServerState, args: SearchInput, _progress: Progress) -> SearchResults:
    """Find existing schedulers for a workload or goal (hybrid keyword + semantic search).

    Returns ranked names with a short excerpt, status, whether the policy is usable here, and
    the score parts. Reusing a proven policy is far cheaper than writing one: search first, then
    get_scheduler on the best hit."""
    found = state.repository().search(
        args.query, k=args.k, status=args.status, kind=args.kind, kernel=args.kernel, budget_bytes=args.max_bytes
    )
    return SearchResults.model_validate(_normalise_truncation(found, "results"))


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


class ResultSummary(Reply):
    results: int
    wins: int
    best_ratio: float | None


class StoredResult(Reply):
    """One recorded outcome of a policy (get_scheduler detail='full')."""

    id: int
    config: dict[str, Any]
    goal: str
    workload: str
    metrics: dict[str, int | float]
    baseline: dict[str, int | float]
    improvement: dict[str, int | float]
    primary_metric: str | None
    primary_ratio: float | None
    beat_baseline: bool
    host: str
    kernel: str
    at: str


class StatusLogEntry(Reply):
    from_status: str | None
    to_status: str
    actor: str
    reason: str
    at: str
    evidence: dict[str, Any] | None = None


class AntipatternNote(Reply):
    """A stored lesson: what a policy did badly, on which kind of workload."""

    id: int
    policy: str | None
    note: str
    workload: str | None
    actor: str
    at: str
    why: str | None = None  # with best_config: why this note is relevant


class SchedulerInfo(Reply):
    """get_scheduler's answer (summary: the SUMMARY_KEYS; full: every field the repository shows)."""

    name: str
    kind: str
    status: str
    usable: bool
    usable_reason: str
    title: str
    description: str
    workloads: list[str]
    tags: list[str]
    tunables: list[dict[str, Any]]
    min_kernel: str
    binary: str | None
    upstream: str | None = None
    parent: str | None
    source_sha256: str | None = None
    object_sha256: str | None = None
    source_bytes: int
    origin: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    results: ResultSummary
    recent_results: list[StoredResult] | None = None
    status_log: list[StatusLogEntry] | None = None
    antipatterns: list[AntipatternNote] | None = None
    children: list[str] | None = None
    source_excerpt: str | None = None
    source_uri: str | None


# detail='summary' shows the fields every policy has (the required ones); 'full' shows them all.
SUMMARY_KEYS = tuple(k for k, f in SchedulerInfo.model_fields.items() if f.is_required())


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
    return Answer(SchedulerInfo.model_validate(info), more="ask with detail='full' or a larger max_bytes")


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


class Primitive(Reply):
    """One primitive with its C snippet (list_primitives with name)."""

    name: str
    description: str
    tags: list[str]
    snippet: str


class PrimitiveInfo(Reply):
    name: str
    description: str
    tags: list[str]
    bytes: int  # the snippet's size


class PrimitiveList(Reply):
    """Every primitive's name and purpose (list_primitives without arguments)."""

    count: int
    primitives: list[PrimitiveInfo]


class PrimitiveHit(Reply):
    name: str
    excerpt: str
    tags: list[str]
    score: Scores
    matched: dict[str, list[str]]


class PrimitiveSearch(Reply):
    """The primitives most relevant to a need (list_primitives with query)."""

    query: str
    terms: list[str]
    budget_bytes: int
    truncated: CutNote | None = None
    results: list[PrimitiveHit]


def list_primitives(
    state: ServerState, args: PrimitivesInput, _progress: Progress
) -> Answer | PrimitiveSearch | PrimitiveList:
    """Reusable scheduler building blocks (per-CPU queues, vtime with sleeper credit, aging, ...).

    Without arguments: every primitive's name and one-line purpose. With query: the most relevant
    ones. With name: that primitive's C snippet, ready to compose into a new scheduler."""
    repo = state.repository()
    if args.name is not None:
        snippet = Primitive.model_validate(repo.primitive(args.name))
        return Answer(snippet, more="ask with a larger max_bytes for the whole snippet")
    if args.query is not None:
        found = repo.search_primitives(args.query, k=args.k, budget_bytes=args.max_bytes)
        return PrimitiveSearch.model_validate(_normalise_truncation(found, "primitives"))
    items = repo.primitives()
    return PrimitiveList(count=len(items), primitives=[PrimitiveInfo.model_validate(i) for i in items])


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


class RecordedAntipattern(Reply):
    """A lesson just stored (record_antipattern, or promote_scheduler's demotion note)."""

    id: int
    policy: str | None
    workload: str | None
    note: str


class StatusChange(Reply):
    """promote_scheduler's answer: the move made, and the evidence that allowed a move up."""

    name: str
    from_: str = Field(alias="from")
    to: str
    evidence: dict[str, Any] | None = None
    antipattern: RecordedAntipattern | None = None


def promote_scheduler(state: ServerState, args: PromoteInput, _progress: Progress) -> StatusChange:
    """Change a policy's status. Moving up needs evidence no caller can write: verified needs a passing
    verify_scheduler of this exact source (the daemon keeps the record); production needs a win that
    run_trial measured. A reason or a recorded result is not evidence.

    Use demote with an antipattern note when a policy hurt a workload, so planners avoid repeating it."""
    repo = state.repository()
    move = repo.promote if args.direction == "promote" else repo.demote
    out: dict[str, Any] = move(args.name, to=args.to, reason=args.reason)
    if args.antipattern:
        out["antipattern"] = repo.annotate_antipattern(args.antipattern, policy=args.name)
    return StatusChange.model_validate(out)


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
    Operation("search_schedulers", SearchInput, search_schedulers, SearchResults, kind="compute"),
    Operation("get_scheduler", GetSchedulerInput, get_scheduler, SchedulerInfo | SchedulerSource, kind="read"),
    Operation(
        "list_primitives", PrimitivesInput, list_primitives, PrimitiveList | PrimitiveSearch | Primitive, kind="read"
    ),
    Operation("promote_scheduler", PromoteInput, promote_scheduler, StatusChange, kind="write"),
    Operation("add_scheduler", AddSchedulerInput, add_scheduler, AddedScheduler, kind="write"),
]
