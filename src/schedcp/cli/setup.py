# SPDX-License-Identifier: Apache-2.0
"""`schedcp setup` fetches the test kernel(s) and builds the guest image; `schedcp doctor` checks all."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from schedcp.cli.common import JsonOption, console, emit, fail, progress
from schedcp.errors import SchedcpError
from schedcp.testbed import accel, guest, kernel
from schedcp.toolchain import build, headers, scx_headers


def _setup(
    kernels: list[str] = typer.Option(
        [kernel.DEFAULT_SPEC],
        "--kernel",
        "-k",
        help="Kernel to fetch: unstable, backports, experimental, a version like 6.19, or a vmlinuz path. "
        "Repeat for several.",
    ),
    refresh: bool = typer.Option(False, "--refresh", help="Re-read the Debian archive even if lists are fresh."),
    images: list[str] = typer.Option(
        ["default"], "--image", help="Guest image variants to build: default, build (adds make + gcc)."
    ),
    scx: bool = typer.Option(
        False,
        "--scx-headers",
        help="Also fetch each kernel's sched_ext headers and examples (tools/sched_ext from Debian's "
        "linux-source; ~160 MB download per source, only ~0.5 MB kept) for scx-style sources.",
    ),
    host_scx: bool = typer.Option(
        False, "--host-scx-headers", help="Fetch the scx headers for the running (Debian) host kernel."
    ),
    as_json: bool = JsonOption,
) -> None:
    """Fetch sched_ext test kernels and build the micro-VM guest image (idempotent)."""
    report: dict[str, Any] = {"kernels": [], "image": None}
    say = (lambda _m: None) if as_json else progress
    try:
        report["images"] = []
        for variant in dict.fromkeys(["default", *images]):
            base = guest.build_base(refresh=refresh, variant=variant, progress=say)
            image = guest.ensure_image(progress=say, variant=variant)
            report["images"].append({"variant": variant, "initramfs": str(image.initramfs), "base": base.name})
        report["image"] = report["images"][0]
        say("fetching libbpf headers")
        headers.libbpf_include_dir()
        for spec in kernels:
            k = kernel.fetch(spec, refresh=refresh, progress=say)
            say(f"generating vmlinux.h for {k.release}")
            inc = headers.kernel_include_dir(k)
            entry: dict[str, Any] = {
                "spec": spec,
                "release": k.release,
                "sched_ext": k.info.sched_ext_evidence,
                "include": str(inc),
            }
            if scx:
                scx_inc = scx_headers.for_kernel(k, refresh=refresh, progress=say)
                entry["scx_headers"] = {**scx_inc.to_json(), "fetch": scx_headers.extraction_stats(scx_inc)}
            report["kernels"].append(entry)
        if host_scx:
            report["host_scx_headers"] = scx_headers.for_host(progress=say).to_json()
        build.find_clang()
    except SchedcpError as exc:
        raise fail(exc, as_json) from None

    def render(data: dict[str, Any]) -> None:
        for k in data["kernels"]:
            console.print(f"[green]✓[/] kernel {k['release']} ({k['spec']}): {k['sched_ext']}")
            if "scx_headers" in k:
                h = k["scx_headers"]
                console.print(f"  scx headers: {h['origin']}" + (f" — {h['note']}" if h["note"] else ""))
        console.print(f"[green]✓[/] guest image {data['image']['initramfs']}")
        console.print("ready: try `schedcp vm run --scheduler minimal -- cat /sys/kernel/sched_ext/root/ops`")

    emit(report, as_json, render)


def _check(name: str, ok: bool, detail: str) -> dict[str, Any]:
    return {"check": name, "ok": ok, "detail": detail}


def collect_checks(spec: str, *, boot: bool) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    scx = Path("/sys/kernel/sched_ext")
    checks.append(
        _check(
            "host sched_ext",
            scx.exists(),
            f"state={(scx / 'state').read_text().strip()}"
            if scx.exists()
            else "the running kernel has no sched_ext; SchedCP uses the micro-VM for real schedulers",
        )
    )
    btf = Path("/sys/kernel/btf/vmlinux")
    checks.append(_check("host BTF", btf.exists(), str(btf) if btf.exists() else "no /sys/kernel/btf/vmlinux"))
    checks.append(
        _check(
            "root",
            os.geteuid() == 0,
            "running as root" if os.geteuid() == 0 else "not root: deploys go through `schedcp daemon`",
        )
    )
    qemu = shutil.which("qemu-system-x86_64")
    checks.append(_check("qemu", qemu is not None, qemu or "apt-get install qemu-system-x86"))
    try:
        clang = build.find_clang()
        ver = subprocess.run([clang, "--version"], capture_output=True, text=True).stdout.splitlines()[0]
        checks.append(_check("clang", True, ver))
    except SchedcpError as exc:
        checks.append(_check("clang", False, str(exc)))
    k = None
    try:
        k = kernel.cached(spec)
        checks.append(
            _check("test kernel", k.info.sched_ext, f"{k.release} ({k.info.source}); {k.info.sched_ext_evidence}")
        )
    except SchedcpError as exc:
        checks.append(_check("test kernel", False, str(exc)))
    status = guest.image_status()
    if status.get("built"):
        fresh = status["overlay_current"] and status["builder_current"]
        checks.append(
            _check(
                "guest image",
                True,
                f"{status['base']}, {status['age_days']} days old, libbpf {status['libbpf']}, {status['python']}; "
                + ("node code current" if fresh else "node code changed: rebuilt automatically at next boot"),
            )
        )
    else:
        checks.append(_check("guest image", False, status["reason"]))
    try:
        argv = headers.bpftool_argv()
        out = subprocess.run([*argv, "version"], capture_output=True, text=True, timeout=20).stdout
        checks.append(_check("bpftool", "v7" in out, (out.splitlines() or ["?"])[0] + f" via {Path(argv[-1]).name}"))
    except (SchedcpError, OSError, subprocess.SubprocessError) as exc:
        checks.append(_check("bpftool", False, str(exc)))
    if k is not None and qemu:
        choice = accel.detect(k.vmlinuz, qemu)
        checks.append(
            _check(
                "kvm",
                choice.name == "kvm",
                choice.reason + ("" if choice.name == "kvm" else "; falling back to TCG (slower)"),
            )
        )
    if boot and k is not None and status.get("built"):
        from schedcp.testbed.vm import MicroVM, VMConfig

        try:
            t0 = time.monotonic()
            with MicroVM(VMConfig(kernel=spec)) as vm:
                boot_s = vm.boot_s or 0.0
                guest_uptime = vm.hello.get("uptime_s")
            checks.append(
                _check(
                    "boot to ready",
                    True,
                    f"{boot_s:.2f} s wall (guest clock {guest_uptime} s), total with shutdown "
                    f"{time.monotonic() - t0:.2f} s, accel {vm.accel.name if vm.accel else '?'}",
                )
            )
        except SchedcpError as exc:
            checks.append(_check("boot to ready", False, str(exc)))
    return checks


def _doctor(
    spec: str = typer.Option(kernel.DEFAULT_SPEC, "--kernel", "-k", help="Which cached test kernel to check."),
    boot: bool = typer.Option(True, "--boot/--no-boot", help="Boot the micro-VM once to measure boot-to-ready."),
    as_json: bool = JsonOption,
) -> None:
    """Report every capability SchedCP needs, each with yes/no and the reason."""
    checks = collect_checks(spec, boot=boot)

    def render(data: list[dict[str, Any]]) -> None:
        table = Table(show_header=True, header_style="bold")
        table.add_column("check")
        table.add_column("ok")
        table.add_column("detail", overflow="fold")
        for c in data:
            table.add_row(c["check"], "[green]yes[/]" if c["ok"] else "[red]no[/]", c["detail"])
        console.print(table)

    emit(checks, as_json, render)
    if any(not c["ok"] for c in checks if c["check"] in ESSENTIAL):
        raise typer.Exit(1)


# Without these the micro-VM testbed cannot work; the rest are informational.
ESSENTIAL = {"qemu", "clang", "test kernel", "guest image", "bpftool", "boot to ready"}


def register(app: typer.Typer) -> None:
    app.command("setup")(_setup)
    app.command("doctor")(_doctor)
