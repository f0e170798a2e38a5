# SPDX-License-Identifier: Apache-2.0
"""`schedcp bench`: compare sched_ext policies against EEVDF on the benchmark workloads."""

from __future__ import annotations

import datetime as dt
import json
import shlex
import sys
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from schedcp.bench import plot, report, suite, workloads
from schedcp.bench.harness import parse_configs
from schedcp.cli.common import JsonOption, console, emit, fail, progress
from schedcp.cli.guestopts import PackageOption, WithOption, extras_from
from schedcp.errors import SchedcpError, UsageError
from schedcp.paths import data_dir
from schedcp.testbed import kernel as kernel_mod


def repo_root() -> Path:
    """The source checkout holding docs/ (the results page is written there)."""
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "pyproject.toml").is_file() and (parent / "src" / "schedcp").is_dir():
            return parent
    raise UsageError(
        "--write-docs needs a source checkout (no pyproject.toml above the package)",
        "run it from a git checkout of schedcp",
    )


def bench(
    names: list[str] = typer.Argument(None, help=f"Benchmarks: {', '.join(workloads.BENCHMARKS)} or all."),
    policies: str | None = typer.Option(
        None,
        "--policies",
        "-p",
        help="Comma-separated policies to compare with EEVDF (default: per benchmark); "
        "external:NAME is an installed upstream scheduler (its catalog entry's flags via --config).",
    ),
    config: list[str] = typer.Option([], "--config", "-c", help="Tunable as POLICY:NAME=VALUE (repeatable)."),
    runs: int = typer.Option(3, "--runs", "-n", min=1, max=100, help="Measured runs per policy."),
    cpus: int = typer.Option(2, "--cpus", min=1, max=64, help="Guest vCPUs (vm target)."),
    kernel: str = typer.Option(kernel_mod.DEFAULT_SPEC, "--kernel", "-k", help="Cached test kernel spec (vm)."),
    target: str = typer.Option("vm", "--target", help="vm (micro-VM) or local (this sched_ext host, root)."),
    workload_args: str | None = typer.Option(
        None, "--workload-args", help="Extra arguments for the workload (one benchmark only), e.g. '--scale 0.5'."
    ),
    watchdog_ms: int | None = typer.Option(
        None, "--watchdog-ms", min=100, max=30000, help="sched_ext watchdog for the policies (default: 30 s)."
    ),
    max_steal: float | None = typer.Option(
        None,
        "--max-steal",
        min=0.0,
        max=1.0,
        help="Repeat a run (up to twice) when the host kept the vCPUs waiting more than this fraction of it.",
    ),
    host_nice: int = typer.Option(
        0,
        "--host-nice",
        min=-20,
        max=19,
        help="vm: host nice value for QEMU's threads; below 0 shields the guest from other host load (root).",
    ),
    smoke: bool = typer.Option(False, "--smoke", help="Tiny workload sizes: checks the pipeline in seconds."),
    out: Path | None = typer.Option(None, "--out", "-o", help="Write the JSON results here."),
    plot_path: Path | None = typer.Option(None, "--plot", help="Write a PNG chart here."),
    write_docs: bool = typer.Option(False, "--write-docs", help="Regenerate docs/benchmarks.md and its charts."),
    list_only: bool = typer.Option(False, "--list", help="List the benchmarks and exit."),
    package: list[str] = PackageOption,
    with_: list[str] = WithOption,
    external_path: list[str] = typer.Option(
        [],
        "--external-path",
        help="Where installed schedulers (--policies external:NAME) are found (default: the system directories).",
    ),
    as_json: bool = JsonOption,
) -> None:
    """Run benchmarks under EEVDF and each policy in one boot, interleaved; report medians and ratios."""
    if list_only:
        emit(_listing(), as_json, _render_listing)
        return
    say = (lambda m: progress(m)) if not as_json else (lambda m: print(f"· {m}", file=sys.stderr, flush=True))
    try:
        if not names:
            raise UsageError("name a benchmark", f"one of {', '.join(workloads.BENCHMARKS)}, or all")
        benches = workloads.select(names)
        extra = shlex.split(workload_args) if workload_args else None
        doc = suite.run_suite(
            benches,
            policies=[p for p in policies.split(",") if p.strip()] if policies is not None else None,
            configs=parse_configs(config),
            runs=runs,
            target_kind=target,
            cpus=cpus,
            kernel_spec=kernel,
            smoke=smoke,
            extra_args=extra,
            watchdog_ms=watchdog_ms,
            max_steal=max_steal,
            host_nice=host_nice,
            say=say,
            command=["schedcp", "bench", *sys.argv[2:]],
            extras=extras_from(package, with_),
            external_path=external_path or None,
        )
        outputs = _save(doc, out, plot_path, write_docs, say)
    except SchedcpError as exc:
        raise fail(exc, as_json) from None
    doc["outputs"] = {k: str(v) for k, v in outputs.items()}
    if as_json:
        emit(doc, True)
    else:
        _render(doc)
    failed = any("error" in r for r in doc["benchmarks"])
    raise typer.Exit(1 if failed else 0)


def _save(doc: dict[str, Any], out: Path | None, plot_path: Path | None, write_docs: bool, say) -> dict[str, Path]:
    outputs: dict[str, Path] = {}
    if out is None:
        stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
        names = "-".join(r["benchmark"] for r in doc["benchmarks"])[:60]
        out = data_dir() / "bench" / f"{stamp}-{names}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    outputs["json"] = out
    if any("summary" in r for r in doc["benchmarks"]):
        chart = plot_path or out.with_suffix(".png")
        outputs["plot"] = plot.plot_suite(doc, chart)
        if write_docs:
            for key, path in report.write_docs(doc, repo_root()).items():
                outputs[f"docs:{key}"] = path
    for key, path in outputs.items():
        say(f"wrote {key}: {path}")
    return outputs


def _render(doc: dict[str, Any]) -> None:
    machine = doc.get("machine", {})
    console.print(f"[bold]machine:[/] {suite._machine_line(machine) if machine else 'n/a'}", highlight=False)
    for result in doc["benchmarks"]:
        if "error" in result:
            console.print(f"[red]{result['benchmark']}: failed: {result['error']}[/]", highlight=False)
            continue
        rows = report.benchmark_table(result)
        table = Table(title=f"{result['title']} ({result['runs']} runs, median [min–max] (×EEVDF))")
        for i, col in enumerate(rows[0]):
            # Policy names (NAME@LABEL) must stay whole; the numbers can wrap.
            table.add_column(col, no_wrap=i == 0, min_width=max(len(r[0]) for r in rows) if i == 0 else None)
        for row in rows[1:]:
            table.add_row(*row)
        console.print(table)
        line = report.evaluation_line(result)
        if line:
            console.print(("[green]" if line.startswith("MET") else "[yellow]") + line + "[/]", highlight=False)


def _listing() -> list[dict[str, Any]]:
    return [
        {
            "name": b.name,
            "title": b.title,
            "args": list(b.args),
            "policies": list(b.policies),
            "image_variant": b.image_variant,
            "metrics": [m.key for m in b.metrics],
        }
        for b in workloads.BENCHMARKS.values()
    ]


def _render_listing(items: list[dict[str, Any]]) -> None:
    table = Table(title="benchmarks")
    for col in ("name", "title", "default policies", "image"):
        table.add_column(col)
    for it in items:
        table.add_row(it["name"], it["title"], ", ".join(it["policies"]), it["image_variant"])
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("bench")(bench)
