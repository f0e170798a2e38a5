# SPDX-License-Identifier: Apache-2.0
"""`schedcp sched`: build, list and describe the scheduler library."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from schedcp.cli.common import JsonOption, console, emit, fail, progress
from schedcp.errors import SchedcpError
from schedcp.testbed import kernel as kernel_mod
from schedcp.toolchain import build, headers, metadata, scx_source

sched_app = typer.Typer(help="Build and inspect sched_ext schedulers.", no_args_is_help=True)


@sched_app.command("build")
def build_cmd(
    name_or_file: str = typer.Argument(
        ..., help="Library scheduler name, a .bpf.c file (headers beside it are used) or a scheduler directory."
    ),
    kernel: str = typer.Option(kernel_mod.DEFAULT_SPEC, "--kernel", "-k", help="Target test kernel spec."),
    host: bool = typer.Option(False, "--host", help="Target the running host kernel (/sys/kernel/btf/vmlinux)."),
    scx_include: str | None = typer.Option(
        None, "--scx-include", help="Directory with scx/common.bpf.h (kernel tree or scx checkout) to build with."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Compile a scheduler for a target kernel (cached by content hash)."""
    try:
        sources = scx_source.resolve_source_set(name_or_file)
        source = sources.main
        if host:
            import platform

            inc, target = headers.host_include_dir(), f"host:{platform.release()}"
            scx = scx_source.scx_headers_for(sources, host=True, scx_include=scx_include)
        else:
            k = kernel_mod.for_cli(kernel, progress=progress)
            inc, target = headers.kernel_include_dir(k), k.release
            scx = scx_source.scx_headers_for(sources, k, scx_include=scx_include)
        if not as_json:
            progress(f"compiling {source.name} for {target}" + (f" with scx headers from {scx.origin}" if scx else ""))
        result = scx_source.build_sources(sources, include_dir=inc, target=target, scx=scx)
    except build.BuildError as exc:
        if as_json:
            emit({**exc.to_dict(), "diagnostics": [vars(d) for d in exc.diagnostics]}, True)
            raise typer.Exit(1) from None
        for d in exc.diagnostics[:10]:
            console.print(str(d), highlight=False)
        raise fail(exc) from None
    except SchedcpError as exc:
        raise fail(exc, as_json) from None
    data = {
        "object": str(result.object_path),
        "source": str(source),
        "target": result.target,
        "cached": result.cached,
        "object_sha256": result.object_sha256,
        "warnings": [str(w) for w in result.warnings],
        "style": sources.style,
        "local_headers": sorted(sources.local),
        "scx_headers": scx.to_json() if scx else None,
    }
    emit(
        data,
        as_json,
        lambda d: console.print(
            f"[green]built[/] {d['object']} ({'cached' if d['cached'] else 'compiled'}, {d['target']})"
            + "".join(f"\n  warning: {w}" for w in d["warnings"]),
            highlight=False,
        ),
    )


def _summary(meta: metadata.SchedulerMeta) -> dict[str, Any]:
    return {
        "name": meta.name,
        "title": meta.title,
        "min_kernel": meta.min_kernel,
        "tags": meta.tags,
        "tunables": [t.name for t in meta.tunables],
    }


@sched_app.command("list")
def list_cmd(as_json: bool = JsonOption) -> None:
    """List the library's schedulers with their tunables."""
    try:
        metas = metadata.library()
    except SchedcpError as exc:
        raise fail(exc, as_json) from None
    data = [_summary(m) for m in metas]

    def render(rows: list[dict[str, Any]]) -> None:
        table = Table(header_style="bold")
        for col in ("name", "title", "min kernel", "tunables"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(r["name"], r["title"], r["min_kernel"], ", ".join(r["tunables"]))
        console.print(table)

    emit(data, as_json, render)


@sched_app.command("show")
def show_cmd(name: str = typer.Argument(..., help="Library scheduler name."), as_json: bool = JsonOption) -> None:
    """Describe one scheduler: purpose, workloads, tunables (type, default, range) and counters."""
    try:
        meta = metadata.get(name)
    except SchedcpError as exc:
        raise fail(exc, as_json) from None
    data = meta.model_dump()
    data["source"] = str(meta.source_path)

    def render(d: dict[str, Any]) -> None:
        console.print(f"[bold]{d['name']}[/]: {d['title']}  (min kernel {d['min_kernel']})", highlight=False)
        console.print(d["description"], highlight=False)
        if d["workloads"]:
            console.print("workloads: " + "; ".join(d["workloads"]), highlight=False)
        for t in d["tunables"]:
            rng = f"{t['min']}..{t['max']}" if t["type"] != "str" else f"≤{(t['max_len'] or 1) - 1} bytes"
            console.print(
                f"  --config {t['name']}=<{t['type']}>  default {t['default']} {t['unit']}  range {rng}"
                f"\n      {t['description']}",
                highlight=False,
            )
        for s in d["stats"]:
            console.print(f"  counter {s['name']}: {s['description']}", highlight=False)
        console.print(f"source: {d['source']}", highlight=False)

    emit(data, as_json, render)


@sched_app.command("test")
def test_cmd(
    names: list[str] = typer.Argument(None, help="Library schedulers to test (default: all)."),
    kernels: list[str] = typer.Option([kernel_mod.DEFAULT_SPEC], "--kernel", "-k", help="Kernel spec (repeatable)."),
    seconds: float = typer.Option(3.0, "--seconds", min=1, max=120, help="Length of the mixed load per scheduler."),
    as_json: bool = JsonOption,
) -> None:
    """Attach each scheduler in the micro-VM under a mixed load; pass = no ejection, no starvation."""
    from dataclasses import asdict

    from schedcp.toolchain import library_check

    say = (lambda _m: None) if as_json else progress
    try:
        results = []
        for spec in kernels:
            say(f"testing on kernel {spec} (one VM boot for all schedulers)")
            results += library_check.check_kernel(spec, names or None, seconds=seconds, progress=say)
    except SchedcpError as exc:
        raise fail(exc, as_json) from None
    data = [asdict(r) for r in results]

    def render(rows: list[dict[str, Any]]) -> None:
        table = Table(header_style="bold")
        for col in ("scheduler", "kernel", "result", "problems"):
            table.add_column(col, overflow="fold")
        for r in rows:
            table.add_row(
                r["name"],
                r["kernel"],
                "[green]pass[/]" if r["ok"] else f"[red]fail[/] ({r['stage']})",
                "; ".join(r["problems"]) or r["error"],
            )
        console.print(table)

    emit(data, as_json, render)
    if not all(r.ok for r in results):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    app.add_typer(sched_app, name="sched")
