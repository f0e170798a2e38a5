# SPDX-License-Identifier: Apache-2.0
"""`schedcp analyze`: Tier-1 workload analysis of a command, PIDs, a cgroup, or the whole system."""

from __future__ import annotations

from typing import Any

import typer

from schedcp.cli.common import JsonOption, console, emit, fail, progress
from schedcp.cli.guestopts import PackageOption, WithOption, extras_from, prepare_image
from schedcp.errors import SchedcpError, UsageError
from schedcp.testbed.extras import GuestExtras


def _render_text(doc: dict[str, Any]) -> None:
    if doc.get("target") == "system":
        console.print(f"[bold]system[/]  cpus busy {doc.get('busy_pct')}%  load {doc.get('load')}", highlight=False)
        console.print(f"psi some%: {doc.get('psi_some_pct', doc.get('psi'))}", highlight=False)
        for row in doc.get("top") or []:
            console.print(f"  {row['pid']:>7} {row['comm']:<20} {row['cpu_pct']:>6}%", highlight=False)
        return
    console.print(f"[bold]{doc.get('target', '?')}[/]", highlight=False)
    summary = doc.get("summary")
    if summary:
        console.print(summary, highlight=False)
    klass = doc.get("class") or (doc.get("characteristics") or {}).get("classification")
    console.print(f"[bold]class:[/] {klass}   [bold]goal:[/] {doc.get('goal')}", highlight=False)
    if doc.get("goal_rationale"):
        console.print(f"  why: {doc['goal_rationale']}", highlight=False)
    evidence = doc.get("evidence") or (doc.get("characteristics") or {}).get("evidence") or []
    for e in evidence:
        console.print(f"  - {e}", highlight=False)
    lt = doc.get("long_tail") or (doc.get("characteristics") or {}).get("long_tail")
    if lt and lt.get("detected"):
        console.print(
            f"[bold]long tail:[/] max/median {lt.get('ratio', lt.get('ratio_max_median'))}x, "
            f"top task {lt.get('top_share')} of the group's CPU",
            highlight=False,
        )


def register(app: typer.Typer) -> None:
    @app.command(context_settings={"allow_interspersed_args": False})
    def analyze(
        command: list[str] = typer.Argument(None, help="Command to launch and analyse (after --)."),
        pid: list[int] = typer.Option(None, "--pid", help="Analyse this process tree (repeatable)."),
        cgroup: str = typer.Option(None, "--cgroup", help="Analyse the members of this cgroup."),
        detail: str = typer.Option("summary", "--detail", help="summary (<=1.5KB) | profile (<=4KB) | full (<=16KB)"),
        duration: float = typer.Option(None, "--duration", help="Max run time for a command; window otherwise."),
        target: str = typer.Option("host", "--target", help="host, or vm to run inside the micro-VM."),
        probe: list[str] = typer.Option(
            None, "--probe", help="Also attach tracepoint probes: runqlat, wakeup, runtime, migrations (repeatable)."
        ),
        kernel: str = typer.Option("unstable", "--kernel", help="Kernel spec for --target vm."),
        package: list[str] = PackageOption,
        with_: list[str] = WithOption,
        as_json: bool = JsonOption,
    ) -> None:
        """Summarise what a workload does to the CPU scheduler and propose an optimisation goal.

        Examples: `schedcp analyze -- python3 -m schedcp.bench.guest.longtail`,
        `schedcp analyze --pid 1234 --duration 5`, `schedcp analyze --target vm -- python3 -m
        schedcp_workloads.pingpong`.
        """
        try:
            extras = extras_from(package, with_)
            if extras and target != "vm":
                raise UsageError("--package and --with add to the micro-VM's guest", "add --target vm")
            doc = _analyze(
                command or [], pid or [], cgroup, detail, duration, target, probe or None, kernel, extras=extras
            )
        except SchedcpError as exc:
            raise fail(exc, as_json) from None
        emit(doc, as_json, _render_text)


def _analyze(
    command: list[str],
    pids: list[int],
    cgroup: str | None,
    detail: str,
    duration: float | None,
    target: str,
    probe: list[str] | None,
    kernel: str,
    extras: GuestExtras | None = None,
) -> dict[str, Any]:
    from schedcp.analysis.engine import Engine
    from schedcp.analysis.summarize import DETAILS

    if detail not in DETAILS:
        raise UsageError(f"unknown detail {detail!r}", f"use one of {', '.join(DETAILS)}")
    if target not in ("host", "vm"):
        raise UsageError(f"unknown target {target!r}", "use host or vm")
    if target == "vm":
        if not command:
            raise UsageError("--target vm analyses a command launched in the guest", "add -- CMD ...")
        if pids or cgroup:
            raise UsageError("--target vm analyses a command launched in the guest", "drop --pid and --cgroup")
        from schedcp.testbed.vm import MicroVM, VMConfig

        image = prepare_image(extras, progress)
        progress("booting the micro-VM")
        with MicroVM(VMConfig(cpus=2, kernel=kernel, extras=extras), image=image) as vm:
            engine = Engine.for_vm(vm)
            progress(f"running {' '.join(command)[:60]} in the guest")
            raw = engine.observe_command(command, duration_s=duration or 30.0, probe=probe)
            return engine.render(raw, detail)
    from schedcp.services.analysis import observe_host

    engine = Engine()
    if command and not (pids or cgroup):
        progress(f"running and sampling {' '.join(command)[:60]}")
    default_s = 30.0 if command else 3.0 if (pids or cgroup) else 1.0
    raw = observe_host(
        engine,
        pids=pids,
        cgroup=cgroup,
        command=command or None,
        duration_s=duration or default_s,
        probe=probe,
        top=5 if detail == "summary" else 20,
    )
    return engine.render(raw, detail)
