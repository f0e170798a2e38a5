# SPDX-License-Identifier: Apache-2.0
"""`schedcp vm run`: boot the micro-VM, optionally attach a scheduler, run a command in the guest."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import typer

from schedcp.cli.common import JsonOption, emit, err_console, fail, progress
from schedcp.cli.guestopts import PackageOption, WithOption, extras_from, prepare_image
from schedcp.errors import SchedcpError
from schedcp.testbed import kernel as kernel_mod
from schedcp.testbed.vm import MicroVM, VMConfig
from schedcp.toolchain import headers, metadata
from schedcp.toolchain.resolve import resolve_scheduler
from schedcp.toolchain.scx_loader import exit_summary, options_for
from schedcp.trial.attached import attached, failure_detail
from schedcp.trial.models import Policy, ejections, events_from
from schedcp.trial.node import NodeOpError

vm_app = typer.Typer(help="Run things in the sched_ext micro-VM.", no_args_is_help=True)


@vm_app.command(
    "run",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": False},
)
def run(
    command: list[str] = typer.Argument(..., help="Command to run in the guest (put it after --)."),
    scheduler: str | None = typer.Option(
        None, "--scheduler", "-s", help="Library/test scheduler name, a .bpf.c source (compiled first) or a .bpf.o."
    ),
    config: list[str] = typer.Option([], "--config", "-c", help="Tunable NAME=VALUE (repeatable)."),
    cpus: int = typer.Option(2, "--cpus", min=1, max=64, help="Guest vCPUs."),
    memory: int = typer.Option(2048, "--memory", min=256, max=65536, help="Guest memory in MiB."),
    kernel: str = typer.Option(kernel_mod.DEFAULT_SPEC, "--kernel", "-k", help="Cached test kernel spec."),
    timeout: float = typer.Option(120.0, "--timeout", min=1, max=3600, help="Seconds the command may run."),
    watchdog_ms: int | None = typer.Option(
        None, "--watchdog-ms", min=100, max=30000, help="Lower the sched_ext watchdog (timeout_ms) before load."
    ),
    partial: bool = typer.Option(False, "--partial", help="SCX_OPS_SWITCH_PARTIAL: only the command's tasks."),
    rodata: list[str] = typer.Option(
        [], "--rodata", help="Set a const volatile NAME=VALUE before load (typed from BTF; repeatable)."
    ),
    struct_ops: str | None = typer.Option(
        None, "--struct-ops", help="The struct_ops map to attach when the object defines several."
    ),
    scx_include: str | None = typer.Option(
        None, "--scx-include", help="Directory with scx/common.bpf.h (kernel tree or scx checkout) to build with."
    ),
    package: list[str] = PackageOption,
    with_: list[str] = WithOption,
    as_json: bool = JsonOption,
) -> None:
    """Boot the VM, attach SCHEDULER (optional), run COMMAND, print its output, exit with its code."""
    try:
        extras = extras_from(package, with_)
        loader_args = {
            "rodata": metadata.parse_assignments(rodata),
            "struct_ops": struct_ops,
            "scx_include": scx_include,
        }
        result = _run(
            command,
            scheduler,
            config,
            cpus,
            memory,
            kernel,
            timeout,
            watchdog_ms,
            partial,
            as_json,
            extras=extras,
            loader_args=loader_args,
        )
    except SchedcpError as exc:
        raise fail(exc, as_json) from None
    if as_json:
        emit(result, True)
    else:
        sys.stdout.write(result["stdout"])
        sys.stderr.write(result["stderr"])
        for ev in ejections(events_from(result["kernel_events"])):
            err_console.print(
                f"[yellow]sched_ext:[/] {ev.scheduler} disabled ({ev.reason}) " + "; ".join(ev.detail[:2]),
                highlight=False,
            )
        exit_info = (result.get("scheduler") or {}).get("exit_info")
        if exit_info:
            err_console.print(f"[yellow]scheduler exit:[/] {exit_summary(exit_info)}", highlight=False)
    raise typer.Exit(result["exit_code"])


def _run(
    command,
    scheduler,
    config,
    cpus,
    memory,
    kernel,
    timeout,
    watchdog_ms,
    partial,
    as_json,
    extras=None,
    loader_args: dict[str, Any] | None = None,
) -> dict[str, Any]:
    say = (lambda _m: None) if as_json else progress
    k = kernel_mod.cached(kernel)
    resolved = None
    loader_args = loader_args or {}
    loader = None
    if scheduler:
        say(f"building {scheduler} for {k.release}")
        resolved = resolve_scheduler(scheduler, k, scx_include=loader_args.get("scx_include"))
        loader = options_for(
            resolved.object_path,
            rodata=loader_args.get("rodata"),
            struct_ops=loader_args.get("struct_ops"),
            kernel=k,
        )
        unmet = resolved.needs.summary(set(loader_args.get("rodata") or {})) if resolved.needs else ""
        if unmet:
            say(f"warning: {unmet}; loading it without that")
        if config and resolved.meta is None:
            raise SchedcpError("--config given but the scheduler declares no tunables", "drop --config", code="usage")
        if resolved.meta:
            resolved.meta.validate_config(metadata.parse_assignments(config))
    image = prepare_image(extras, say)
    say(f"booting micro-VM ({cpus} vCPU, {memory} MiB, {k.release})")
    with MicroVM(VMConfig(cpus=cpus, memory_mb=memory, kernel=kernel, extras=extras), image=image) as vm:
        assert vm.node is not None
        say(f"guest ready in {vm.boot_s:.1f}s ({vm.accel.name if vm.accel else '?'})")
        node = vm.node
        before = node.state()
        with contextlib.ExitStack() as stack:
            pol = None
            info: dict[str, Any] | None = None
            if resolved is not None:
                policy = Policy(
                    name=resolved.name,
                    object_path=resolved.object_path,
                    meta=resolved.meta,
                    include_dir=headers.kernel_include_dir(k),
                    loader=loader,
                )
                try:
                    pol = stack.enter_context(
                        attached(
                            node,
                            policy,
                            config=metadata.parse_assignments(config),
                            watchdog_ms=watchdog_ms,
                            partial=partial,
                        )
                    )
                except NodeOpError as exc:
                    detail = failure_detail(exc)
                    raise SchedcpError(
                        f"{resolved.name}: {exc.cause}" + (f" — {detail}" if detail else ""),
                        exc.next_step or "fix the scheduler and retry",
                        code=exc.code,
                    ) from exc
                say(f"attached {pol.ops_name}")
                info = {"name": resolved.name, "ops_name": pol.ops_name, "config": pol.config}
            if pol is not None:
                out = pol.run(command, timeout)
                after = node.state()
                pol.poll()
                events = list(pol.events)
                assert info is not None
                if after.state == "enabled":
                    info["counters"] = pol.counters()
                else:
                    info["exit_info"] = node.call("exit_info", {"handle": pol.handle}, timeout_s=30).get("exit_info")
            else:
                out = node.run(command, timeout, count_switches=True, sched_ext=partial)
                after = node.state()
                events = node.events()
            return {
                "exit_code": out.exit_code,
                "timed_out": out.timed_out,
                "wall_s": out.wall_s,
                "context_switches": out.context_switches,
                "stdout": out.stdout,
                "stderr": out.stderr,
                "truncated": out.truncated,
                "sched_ext_before": before.as_dict(),
                "sched_ext_after": after.as_dict(),
                "kernel_events": [e.as_dict() for e in events],
                "scheduler": info,
                "kernel": k.release,
                "boot_s": round(vm.boot_s or 0.0, 3),
                "accel": vm.accel.name if vm.accel else None,
            }


def register(app: typer.Typer) -> None:
    app.add_typer(vm_app, name="vm")
