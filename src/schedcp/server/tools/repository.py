# SPDX-License-Identifier: Apache-2.0
"""Scheduler Policy Repository tools: find, read, reuse, and teach the repository what worked."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult
from pydantic import BaseModel, ConfigDict, Field

from schedcp.server import budget, checks
from schedcp.server.state import ServerState
from schedcp.server.tooling import COMPUTE, READ, WRITE, MaxBytes, make_tool

NamePattern = r"^[a-z][a-z0-9_.-]{1,63}$"
PolicyName = Annotated[str, Field(pattern=NamePattern, description="Scheduler name as the repository lists it.")]
Scalar = int | float | bool | str
Goal = Annotated[
    str,
    Field(
        pattern=r"^[a-z][a-z0-9_]{1,40}$",
        description="What was optimised: makespan, p99_latency, throughput, fairness, ...",
    ),
]


class TunableArg(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-z_][a-z0-9_]{0,63}$", description="The const volatile C variable's name.")
    type: Literal["u8", "u16", "u32", "u64", "s32", "s64", "bool", "str"]
    default: int | bool | str
    min: float | None = None
    max: float | None = None
    unit: str = Field(default="", max_length=16)
    description: str = Field(min_length=3, max_length=600)


def _normalise_truncation(payload: dict[str, Any], what: str) -> dict[str, Any]:
    """The repository marks cut answers with a bool; we always give a note saying how to get more."""
    if payload.get("truncated") is True:
        payload["truncated"] = {
            "note": f"some {what} were left out to fit max_bytes; ask with a larger max_bytes or a smaller k"
        }
    else:
        payload.pop("truncated", None)
    return payload


def tools(state: ServerState) -> list[Tool]:
    def search_schedulers(
        query: Annotated[
            str,
            Field(
                min_length=2,
                max_length=1000,
                description=(
                    "The need in words: the workload and the goal, e.g. 'parallel compile, minimise makespan' or "
                    "'game frame times stutter under background load'."
                ),
            ),
        ],
        k: Annotated[int, Field(ge=1, le=20, description="How many results.")] = 5,
        status: Annotated[
            Literal["candidate", "verified", "production", "deprecated", "any"] | None,
            Field(description="Only policies with this status; default excludes deprecated ones."),
        ] = None,
        kind: Annotated[
            Literal["bpf", "external", "generated"] | None,
            Field(description="bpf: our library; external: upstream scx binaries; generated: written by agents."),
        ] = None,
        kernel: Annotated[
            str | None,
            Field(pattern=r"^\d{1,2}\.\d{1,3}$", description="Only policies that run on this kernel (MAJOR.MINOR)."),
        ] = None,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Find existing schedulers for a workload or goal (hybrid keyword + semantic search).

        Returns ranked names with a short excerpt, status, whether the policy is usable here, and
        the score parts. Reusing a proven policy is far cheaper than writing one: search first, then
        get_scheduler on the best hit."""
        found = state.repository().search(query, k=k, status=status, kind=kind, kernel=kernel, budget_bytes=max_bytes)
        return budget.respond(_normalise_truncation(found, "results"), max_bytes)

    def get_scheduler(
        name: PolicyName,
        detail: Annotated[
            Literal["summary", "full", "source"],
            Field(
                description=(
                    "summary: what it does, tunables, result summary. full: adds recent results, status log, "
                    "antipatterns, lineage and a source excerpt. source: the complete C source (for patching)."
                )
            ),
        ] = "summary",
        history: Annotated[int, Field(ge=1, le=50, description="Recent results/log entries in 'full'.")] = 5,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Describe one scheduler: purpose, suited workloads, tunables (with ranges), status, results.

        The complete C source is the resource schedcp://scheduler/{name}/source (read it only when you
        need to patch or compose code)."""
        if detail == "source":
            from schedcp.server.tools.verifier import scheduler_source_or_error

            text = scheduler_source_or_error(state, name)
            return budget.respond(
                {"name": name, "source_bytes": len(text.encode()), "source": text},
                max_bytes,
                hint=f"ask with a larger max_bytes (up to {budget.LIMIT_MAX_BYTES}) or read "
                f"schedcp://scheduler/{name}/source",
            )
        info = state.repository().show(name, history=history)
        info["source_uri"] = f"schedcp://scheduler/{name}/source" if info.get("source_bytes") else None
        if detail == "summary":
            keep = (
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
            info = {k: info[k] for k in keep if k in info}
        return budget.respond(info, max_bytes, hint="ask with detail='full' or a larger max_bytes")

    def list_primitives(
        query: Annotated[
            str | None,
            Field(
                min_length=2,
                max_length=1000,
                description=("Rank primitives by relevance to this need; omit to list them all."),
            ),
        ] = None,
        name: Annotated[
            str | None,
            Field(pattern=r"^[a-z][a-z0-9_]{1,63}$", description=("Return this one primitive with its C snippet.")),
        ] = None,
        k: Annotated[int, Field(ge=1, le=20, description="How many ranked results when query is given.")] = 5,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Reusable scheduler building blocks (per-CPU queues, vtime with sleeper credit, aging, ...).

        Without arguments: every primitive's name and one-line purpose. With query: the most relevant
        ones. With name: that primitive's C snippet, ready to compose into a new scheduler."""
        repo = state.repository()
        if name is not None:
            return budget.respond(
                repo.primitive(name), max_bytes, hint="ask with a larger max_bytes for the whole snippet"
            )
        if query is not None:
            found = repo.search_primitives(query, k=k, budget_bytes=max_bytes)
            return budget.respond(_normalise_truncation(found, "primitives"), max_bytes)
        items = repo.primitives()
        return budget.respond({"count": len(items), "primitives": items}, max_bytes)

    def promote_scheduler(
        name: PolicyName,
        reason: Annotated[str, Field(min_length=3, max_length=500, description="Why, in one sentence, with evidence.")],
        to: Annotated[
            Literal["candidate", "verified", "production", "deprecated"] | None,
            Field(description=("Target status; default is one step up (candidate -> verified -> production).")),
        ] = None,
        direction: Annotated[
            Literal["promote", "demote"],
            Field(description=("demote moves down (production -> verified -> candidate -> deprecated).")),
        ] = "promote",
        antipattern: Annotated[
            str | None,
            Field(
                min_length=5,
                max_length=1000,
                description=("A lesson to remember with a demotion: what this policy does badly, on which workload."),
            ),
        ] = None,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Change a policy's status. Moving up needs evidence no caller can write: verified needs a passing
        verify_scheduler of this exact source (the daemon keeps the record); production needs a win that
        run_trial measured. A reason or a recorded result is not evidence.

        Use demote with an antipattern note when a policy hurt a workload, so planners avoid repeating it."""
        repo = state.repository()
        move = repo.promote if direction == "promote" else repo.demote
        out: dict[str, Any] = move(name, to=to, reason=reason)
        if antipattern:
            out["antipattern"] = repo.annotate_antipattern(antipattern, policy=name)
        return budget.respond(out, max_bytes)

    def add_scheduler(
        name: Annotated[str, Field(pattern=NamePattern, description="New unique name (lowercase, digits, _ . -).")],
        source: Annotated[
            str,
            Field(
                min_length=20,
                max_length=checks.MAX_SOURCE_BYTES,
                description=("Complete sched_ext BPF C source (at most 256 KiB)."),
            ),
        ],
        description: Annotated[
            str,
            Field(
                min_length=20,
                max_length=4000,
                description=("What the policy does and why; this is what semantic search matches."),
            ),
        ],
        title: Annotated[str, Field(max_length=120, description="One-line title.")] = "",
        workloads: Annotated[
            list[Annotated[str, Field(min_length=2, max_length=200)]],
            Field(max_length=30, description="Workloads it suits, in words."),
        ] = [],  # noqa: B006
        tags: Annotated[
            list[Annotated[str, Field(min_length=1, max_length=40)]], Field(max_length=30, description="Keywords.")
        ] = [],  # noqa: B006
        tunables: Annotated[
            list[TunableArg], Field(max_length=40, description=("const volatile globals the loader may set."))
        ] = [],  # noqa: B006
        parent: Annotated[
            str | None, Field(pattern=NamePattern, description=("The policy this one was derived from, for lineage."))
        ] = None,
        min_kernel: Annotated[
            str,
            Field(
                pattern=r"^\d{1,2}\.\d{1,3}$",
                description=("Oldest kernel (MAJOR.MINOR) whose sched_ext has the kfuncs the source uses."),
            ),
        ] = "6.12",
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Save a new scheduler (status 'candidate') so it can be found, verified, measured and reused.

        Verify it first with verify_scheduler; promote it once it has passed and won."""
        checks.source_text(source)
        data = {
            "name": name,
            "kind": "generated",
            "title": title,
            "description": description,
            "workloads": workloads,
            "tags": tags,
            "min_kernel": min_kernel,
            "source": source,
            "tunables": [t.model_dump(exclude_none=True) | {"variable": t.name} for t in tunables],
        }
        info = state.repository().add_policy(data, parent=parent, origin="agent", reason="added over MCP")
        keep = ("name", "kind", "status", "title", "source_sha256", "source_bytes", "parent", "created_at")
        out = {k: info.get(k) for k in keep} | {"source_uri": f"schedcp://scheduler/{name}/source"}
        return budget.respond(out, max_bytes)

    return [
        make_tool(search_schedulers, COMPUTE),
        make_tool(get_scheduler, READ),
        make_tool(list_primitives, READ),
        make_tool(promote_scheduler, WRITE),
        make_tool(add_scheduler, WRITE),
    ]
