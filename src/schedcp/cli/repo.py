# SPDX-License-Identifier: Apache-2.0
"""`schedcp repo`: search, inspect and grow the scheduler policy repository.

The read verbs (search, show, primitives) call the same operations the MCP server offers as
``search_schedulers``, ``get_scheduler`` and ``list_primitives`` (``Operation.call``): one
implementation, one validation, the same JSON. The verbs that change the repository (add, promote,
seed) and history are the operator's: they call the repository service with the operator's
authority (an operator's ``add`` is recorded as such, ``seed`` has no agent-facing tool)."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from schedcp.cli.common import JsonOption, console, emit, fail
from schedcp.errors import SchedcpError, UsageError
from schedcp.repository.models import MAX_SOURCE_BYTES

repo_app = typer.Typer(help="Search, inspect and grow the scheduler policy repository.", no_args_is_help=True)

_state: dict[str, Path | None] = {"db": None}


@repo_app.callback()
def _repo(
    db: Path | None = typer.Option(
        None, "--db", help="Repository database (default: $SCHEDCP_REPO_DB or the data dir)."
    ),
) -> None:
    _state["db"] = db


@contextmanager
def _service(as_json: bool, *, auto_seed: bool = True) -> Iterator[Any]:
    """Open the repository; any SchedcpError inside becomes a one-line error and an exit code."""
    from schedcp.repository.service import RepositoryService

    try:
        with RepositoryService(_state["db"], auto_seed=auto_seed) as service:
            yield service
    except SchedcpError as exc:
        raise fail(exc, as_json) from None


@contextmanager
def _operations(as_json: bool) -> Iterator[Callable[[str, dict[str, Any]], dict[str, Any]]]:
    """Service-layer operations on this command's repository, sharing one serving state: each call
    answers with the JSON an agent would read. Refused arguments and domain errors become a
    one-line error and an exit code."""
    from schedcp.services.operation import by_name, dump
    from schedcp.services.state import ServerOptions, ServerState

    state = ServerState(ServerOptions(repo_db=_state["db"]))
    try:
        yield lambda name, arguments: dump(by_name(name).call(state, arguments))
    except SchedcpError as exc:
        raise fail(exc, as_json) from None
    finally:
        state.close()


def _score(hit: dict[str, Any]) -> str:
    s = hit["score"]
    return f"{s['hybrid']:.2f} (kw {s['bm25']:.1f}, cos {s['cosine']:.2f})"


@repo_app.command("search")
def search(
    query: str = typer.Argument(..., help="What the workload needs, in words."),
    k: int = typer.Option(5, "-k", help="How many results (1..20)."),
    status: str | None = typer.Option(None, "--status", help="candidate, verified, production, deprecated or any."),
    kind: str | None = typer.Option(None, "--kind", help="bpf, external or generated."),
    kernel: str | None = typer.Option(None, "--kernel", help="Only policies that run on this kernel (X.Y)."),
    budget: int = typer.Option(6000, "--budget", help="Largest JSON answer in bytes; lower-ranked hits are dropped."),
    as_json: bool = JsonOption,
) -> None:
    """Find policies by meaning and keywords (hybrid of MiniLM embeddings and BM25)."""
    args = {"query": query, "k": k, "status": status, "kind": kind, "kernel": kernel, "max_bytes": budget}
    with _operations(as_json) as call:
        data = call("search_schedulers", args)

    def render(d: dict[str, Any]) -> None:
        # A list rather than a table: names and scores stay intact in narrow terminals.
        if not d["results"]:
            console.print("no matching policies")
            return
        for i, hit in enumerate(d["results"], 1):
            usable = "usable" if hit["usable"] else "not installed"
            console.print(
                f"[bold]{i}. {hit['name']}[/]  {hit['kind']} · {hit['status']} · {usable}   score {_score(hit)}",
                highlight=False,
            )
            console.print(f"   {hit['title'] or hit['excerpt']}", highlight=False)
            matched = "; ".join(f"{col}: {', '.join(words)}" for col, words in hit["matched"].items())
            if matched:
                console.print(f"   [dim]matched {matched}[/]", highlight=False)
        if d.get("truncated"):
            console.print(f"[dim]results cut to fit {d['budget_bytes']} bytes[/]")

    emit(data, as_json, render)


@repo_app.command("show")
def show(
    name: str = typer.Argument(..., help="Policy name."),
    source: bool = typer.Option(False, "--source", help="Include the full source text."),
    as_json: bool = JsonOption,
) -> None:
    """Everything the repository knows about one policy."""
    with _operations(as_json) as call:
        data = call("get_scheduler", {"name": name, "detail": "full"})
        if source and data.get("source_bytes"):  # an installed binary has no stored source
            data["source"] = call("get_scheduler", {"name": name, "detail": "source"})["source"]

    def render(d: dict[str, Any]) -> None:
        console.print(f"[bold]{d['name']}[/] ({d['kind']}, {d['status']}) — {d['title']}", highlight=False)
        console.print(d["description"], highlight=False)
        if d["workloads"]:
            console.print("[bold]workloads:[/] " + "; ".join(d["workloads"]), highlight=False)
        if d["tags"]:
            console.print("[bold]tags:[/] " + ", ".join(d["tags"]), highlight=False)
        console.print(f"[bold]usable:[/] {'yes' if d['usable'] else 'no'} ({d['usable_reason']})", highlight=False)
        console.print(
            f"[bold]min kernel:[/] {d['min_kernel']}   [bold]parent:[/] {d['parent'] or '-'}   "
            f"[bold]children:[/] {', '.join(d['children']) or '-'}",
            highlight=False,
        )
        if d["tunables"]:
            table = Table(title="tunables")
            for column in ("name", "type", "default", "range", "maps to", "description"):
                table.add_column(column, overflow="fold")
            for t in d["tunables"]:
                span = f"{t.get('min', '')}..{t.get('max', '')}" if "min" in t or "max" in t else ""
                table.add_row(
                    t["name"],
                    t["type"],
                    str(t.get("default", "")),
                    span,
                    t.get("flag") or f"var {t.get('variable')}",
                    t["description"],
                )
            console.print(table)
        r = d["results"]
        console.print(f"[bold]results:[/] {r['results']} recorded, {r['wins']} beat their baseline", highlight=False)
        for note in d["antipatterns"]:
            console.print(f"[yellow]antipattern:[/] {note['note']}", highlight=False)
        if "source" in d:
            console.print(d["source"], highlight=False, markup=False)

    emit(data, as_json, render)


def _load_meta(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(
            f"cannot read metadata {path}: {exc}", "give a TOML or JSON file with name and description"
        ) from exc
    if not isinstance(data, dict):
        raise UsageError(f"metadata {path} is not a table/object", "give name, description, workloads, tags, ...")
    return data


def _read_source(path: Path) -> str:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}", "check the path") from exc
    if size > MAX_SOURCE_BYTES:
        raise UsageError(
            f"{path.name} is {size // 1024} KiB, above the {MAX_SOURCE_BYTES // 1024} KiB limit",
            "store the scheduler source, not generated or vendored code",
        )
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{path.name} is not UTF-8 text", "store C source text") from exc


@repo_app.command("add")
def add(
    file: Path = typer.Argument(..., help="BPF C source of the policy."),
    meta: Path | None = typer.Option(None, "--meta", help="TOML/JSON metadata (default: NAME.toml beside FILE)."),
    parent: str | None = typer.Option(None, "--parent", help="The policy this one was derived from."),
    as_json: bool = JsonOption,
) -> None:
    """Store a new (usually generated or patched) policy with its metadata."""
    from schedcp.repository.catalog_sources import policy_from_meta

    try:
        source = _read_source(file)
        stem = file.name.removesuffix(".c").removesuffix(".bpf")
        meta_path = meta or file.with_name(f"{stem}.toml")
        if not meta_path.is_file():
            raise UsageError(f"no metadata for {file.name}", f"write {meta_path.name} or pass --meta FILE")
        policy = policy_from_meta(_load_meta(meta_path), source)
    except SchedcpError as exc:
        raise fail(exc, as_json) from None
    with _service(as_json) as service:
        data = service.add_policy(policy, parent=parent, reason=f"added from {file.name}")
    emit(
        data,
        as_json,
        lambda d: console.print(
            f"added {d['name']} ({d['kind']}, {d['status']}, source sha256 {d['source_sha256'][:12]})", highlight=False
        ),
    )


@repo_app.command("history")
def history(
    name: str = typer.Argument(..., help="Policy name."),
    limit: int = typer.Option(20, "--limit", help="Most recent entries to show (1..200)."),
    as_json: bool = JsonOption,
) -> None:
    """Recorded results, status changes and antipatterns of a policy."""
    with _service(as_json) as service:
        data = service.history(name, limit=limit)

    def render(d: dict[str, Any]) -> None:
        s = d["summary"]
        console.print(
            f"[bold]{d['name']}[/] is {d['status']}: {s['results']} results, {s['wins']} wins", highlight=False
        )
        if d["results"]:
            table = Table(title="results")
            for column in ("when", "goal", "config", "primary", "ratio", "won", "workload"):
                table.add_column(column, overflow="fold")
            for r in d["results"]:
                ratio = f"{r['primary_ratio']:.3f}" if r["primary_ratio"] is not None else "-"
                table.add_row(
                    r["at"][:19],
                    r["goal"],
                    json.dumps(r["config"]),
                    r["primary_metric"] or "-",
                    ratio,
                    "yes" if r["beat_baseline"] else "no",
                    r["workload"],
                )
            console.print(table)
        for entry in d["status_log"]:
            console.print(
                f"{entry['at'][:19]}  {entry['from_status'] or '∅'} -> {entry['to_status']}  "
                f"by {entry['actor']}: {entry['reason']}",
                highlight=False,
            )
        for note in d["antipatterns"]:
            console.print(f"[yellow]antipattern:[/] {note['note']}", highlight=False)

    emit(data, as_json, render)


@repo_app.command("promote")
def promote(
    name: str = typer.Argument(..., help="Policy name."),
    to: str | None = typer.Option(None, "--to", help="Target status (default: the next one up)."),
    reason: str = typer.Option("manual change from the command line", "--reason", help="Why, for the status log."),
    as_json: bool = JsonOption,
) -> None:
    """Change a policy's status (candidate -> verified -> production; any -> deprecated)."""
    with _service(as_json) as service:
        data = service.set_status(name, to, reason=reason) if to else service.promote(name, reason=reason)
    emit(data, as_json, lambda d: console.print(f"{d['name']}: {d['from']} -> {d['to']}", highlight=False))


@repo_app.command("seed")
def seed(as_json: bool = JsonOption) -> None:
    """Add our library, the upstream catalog and the code primitives; safe to run again."""
    with _service(as_json, auto_seed=False) as service:
        data = service.seed()

    def render(d: dict[str, Any]) -> None:
        console.print(
            f"added {len(d['added'])}, updated {len(d['updated'])}, unchanged {d['unchanged']}, "
            f"primitives changed {len(d['primitives']['changed'])} of {d['primitives']['total']}",
            highlight=False,
        )
        for line in d["skipped"] + d["problems"]:
            console.print(f"[yellow]note:[/] {line}", highlight=False)

    emit(data, as_json, render)


@repo_app.command("primitives")
def primitives(
    name: str | None = typer.Argument(None, help="Show this primitive's code."),
    as_json: bool = JsonOption,
) -> None:
    """Reusable BPF code building blocks; give a NAME to print its code."""
    with _operations(as_json) as call:
        data = call("list_primitives", {"name": name} if name else {})

    def render(d: dict[str, Any]) -> None:
        from schedcp.repository.search import excerpt

        if "snippet" in d:
            console.print(d["snippet"], highlight=False, markup=False)
            return
        table = Table()
        for column in ("name", "tags", "description"):
            table.add_column(column, overflow="fold")
        for p in d["primitives"]:
            table.add_row(p["name"], ", ".join(p["tags"]), excerpt(p["description"], 120))
        console.print(table)

    emit(data, as_json, render)


def register(app: typer.Typer) -> None:
    app.add_typer(repo_app, name="repo")
