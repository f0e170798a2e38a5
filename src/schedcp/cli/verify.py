# SPDX-License-Identifier: Apache-2.0
"""`schedcp verify`: run the Execution Verifier on a scheduler and print its report.

Exit codes: 0 the scheduler passed, 1 it failed (the report says why), 2 the command was misused,
3 it needs its own userspace loader for more than SchedCP's scx loader does (the report says what).
"""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from schedcp.cli.common import JsonOption, emit, fail, progress
from schedcp.cli.guestopts import PackageOption, WithOption, extras_from, prepare_image
from schedcp.errors import SchedcpError
from schedcp.testbed import kernel as kernel_mod
from schedcp.toolchain.metadata import parse_assignments
from schedcp.verifier import performance, tokens
from schedcp.verifier.pipeline import VerifyOptions, verify
from schedcp.verifier.report import Report, render_text
from schedcp.verifier.vmstages import DEFAULT_TIMEOUT_MS


def verify_cmd(
    target: str = typer.Argument(..., metavar="FILE_OR_NAME", help="A .bpf.c file or a library scheduler name."),
    config: list[str] = typer.Option([], "--config", "-c", help="Tunable NAME=VALUE (repeatable)."),
    workload: str | None = typer.Option(
        None, "--workload", "-w", help="A command to also run in the guest and compare with EEVDF."
    ),
    kernel: str = typer.Option(kernel_mod.DEFAULT_SPEC, "--kernel", "-k", help="Target test kernel spec."),
    seconds: float = typer.Option(5.0, "--seconds", help="Length of the correctness load (1..60)."),
    watchdog_ms: int | None = typer.Option(
        None,
        "--watchdog-ms",
        help=f"sched_ext watchdog timeout (default: {DEFAULT_TIMEOUT_MS} for SchedCP policies, the scheduler's "
        "own for scx-style sources).",
    ),
    perf_threshold: float = typer.Option(
        performance.DEFAULT_THRESHOLD, "--perf-threshold", help="Allowed slowdown vs EEVDF (0.25 = 25%)."
    ),
    keep_going: bool = typer.Option(False, "--keep-going", help="Run later stages even after a failure."),
    static_only: bool = typer.Option(False, "--static-only", help="Only build and static checks (no VM, no token)."),
    no_token: bool = typer.Option(False, "--no-token", help="Do not issue a deployment token."),
    token_ttl: int = typer.Option(tokens.DEFAULT_TTL_S, "--token-ttl", help="Token lifetime in seconds."),
    key: Path | None = typer.Option(None, "--key", help="Verifier signing key (default: data dir)."),
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
    """Verify a scheduler: build, static checks, kernel verifier, micro-VM tests, EEVDF comparison."""
    try:
        if kernel_mod.is_path_spec(kernel):
            # The caller's own vmlinuz, for themselves: imported into their cache, then used by name.
            kernel = kernel_mod.for_cli(kernel, progress=(lambda _m: None) if as_json else progress).dir.name
        extras = extras_from(package, with_)
        if extras and not static_only:
            prepare_image(extras, (lambda _m: None) if as_json else progress)
        opts = VerifyOptions(
            target=target,
            config=parse_assignments(config),
            workload=workload,
            kernel=kernel,
            seconds=seconds,
            timeout_ms=watchdog_ms,
            perf_threshold=perf_threshold,
            keep_going=keep_going,
            static_only=static_only,
            issue_token=not no_token,
            token_ttl_s=token_ttl,
            key_path=key,
            extras=extras,
            rodata=parse_assignments(rodata),
            struct_ops=struct_ops,
            scx_include=scx_include,
        )
        report = verify(opts, None if as_json else progress)
    except SchedcpError as exc:
        raise fail(exc, as_json) from None

    # Plain print, not rich: the text is read by agents and must not be re-wrapped or styled.
    def render(_data: dict[str, object]) -> None:
        sys.stdout.write(render_text(report) + "\n")

    emit(report.model_dump(mode="json"), as_json, render)
    raise typer.Exit({"pass": 0, "needs_userspace": 3}.get(report.verdict, 1))


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)


__all__ = ["Report", "register", "verify_cmd"]
