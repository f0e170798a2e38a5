# SPDX-License-Identifier: Apache-2.0
"""Run several benchmarks in one target session and collect one JSON document.

All benchmarks share one boot (the image variant is the richest one any of them needs), which
keeps a complete comparison within budget and puts every arm of every benchmark on the same guest.
If the guest dies mid-benchmark (a scheduler hung it beyond the watchdog, QEMU crashed), that
benchmark is reported as failed and the next one gets a fresh boot.
"""

from __future__ import annotations

import datetime as dt
import platform
import sys
from pathlib import Path
from typing import Any

from schedcp import __version__
from schedcp.bench import harness, sources
from schedcp.bench.targets import LocalTarget, VMTarget
from schedcp.bench.workloads import Benchmark
from schedcp.deploy.external import GUEST_EXTERNAL_DIR
from schedcp.errors import SchedcpError, UsageError
from schedcp.testbed import guest as guest_mod
from schedcp.testbed.extras import GuestExtras, HostFile

SCHEMA = 1


def guest_extras(benches: list[Benchmark], say: harness.Say = lambda _m: None) -> GuestExtras | None:
    """The packages and source trees every benchmark of the run needs, for their one shared boot."""
    packages = tuple(dict.fromkeys(p for b in benches for p in b.packages))
    trees = {s: sources.source_tree(s, say) for b in benches for s in b.sources}
    extras = GuestExtras(packages, tuple(HostFile(path, f"/work/src/{name}") for name, path in trees.items()))
    return extras or None


def make_target(
    kind: str,
    *,
    cpus: int,
    kernel_spec: str,
    benches: list[Benchmark],
    host_nice: int = 0,
    say: harness.Say = print,
    user_extras: GuestExtras | None = None,
):
    if kind == "vm":
        variant = "build" if any(b.image_variant == "build" for b in benches) else "default"
        extras = guest_extras(benches, say)
        if user_extras:
            extras = user_extras.merged(extras) if extras else user_extras
        if extras:
            say(f"guest extras: {', '.join([*extras.packages, *(f.guest for f in extras.files)])}")
            guest_mod.ensure_image(build_if_missing=False, variant=variant, extras=extras, progress=say)
        return VMTarget(cpus=cpus, kernel_spec=kernel_spec, image_variant=variant, host_nice=host_nice, extras=extras)
    if kind == "local":
        return LocalTarget()
    raise UsageError(f"unknown target {kind!r}", "use --target vm or --target local")


def run_suite(
    benches: list[Benchmark],
    *,
    policies: list[str] | None,
    configs: dict[str, dict[str, str]],
    runs: int,
    target_kind: str = "vm",
    cpus: int = 2,
    kernel_spec: str = "unstable",
    smoke: bool = False,
    extra_args: list[str] | None = None,
    watchdog_ms: int | None = None,
    max_steal: float | None = None,
    host_nice: int = 0,
    say: harness.Say = lambda _m: None,
    command: list[str] | None = None,
    extras: GuestExtras | None = None,
    external_path: list[str] | None = None,
) -> dict[str, Any]:
    if extra_args and len(benches) != 1:
        raise UsageError("workload arguments after -- need exactly one benchmark", "name a single benchmark")
    chosen_by_bench = {b.name: policies if policies is not None else list(b.policies) for b in benches}
    binaries = external_binaries([p for chosen in chosen_by_bench.values() for p in chosen], external_path)
    if binaries:
        if target_kind != "vm":
            raise UsageError(
                "installed schedulers are compared in the micro-VM only",
                "use --target vm, or deploy the binary through the daemon",
            )
        from schedcp.deploy import external as deploy_external

        files = GuestExtras(files=deploy_external.guest_files(binaries))
        extras = extras.merged(files) if extras else files
    target = make_target(
        target_kind,
        cpus=cpus,
        kernel_spec=kernel_spec,
        benches=benches,
        host_nice=host_nice,
        say=say,
        user_extras=extras,
    )
    plans = []
    search = (GUEST_EXTERNAL_DIR,) if binaries else ()
    for bench in benches:
        chosen = chosen_by_bench[bench.name]
        bench_configs = {p: c for p, c in (bench.configs | configs).items() if p in chosen}
        say(f"{bench.name}: building {', '.join(chosen) or 'no policies'} for {target.kernel.release}")
        plans.append((bench, harness.prepare_arms(chosen, bench_configs, target.kernel, external_search=search)))
    doc: dict[str, Any] = {
        "schema": SCHEMA,
        "schedcp": __version__,
        "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": command or sys.argv,
        "runs": runs,
        "smoke": smoke,
        "host": {"python": platform.python_version(), "system": platform.platform()},
        "benchmarks": [],
    }
    try:
        for bench, arms in plans:
            if not target.alive:
                say(f"starting the {target.kind} target")
                target.start()
                doc["machine"] = target.describe()
                say(f"target ready: {_machine_line(doc['machine'])}")
            try:
                result = harness.run_benchmark(
                    target,
                    bench,
                    arms,
                    runs=runs,
                    extra_args=extra_args,
                    smoke=smoke,
                    watchdog_ms=watchdog_ms,
                    max_steal=max_steal,
                    say=say,
                )
            except SchedcpError as exc:
                if exc.code not in harness.GUEST_DEAD:
                    raise
                say(f"{bench.name}: the guest died: {exc.cause}")
                target.stop()
                result = {
                    "benchmark": bench.name,
                    "title": bench.title,
                    "error": exc.cause,
                    "arms": [a.describe() for a in arms],
                    "console_tail": target.console_tail(),
                }
            doc["benchmarks"].append(result)
    finally:
        target.stop()
    doc["finished"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    return doc


def external_binaries(specs: list[str], path: list[str] | None) -> dict[str, Path]:
    """The installed binaries the ``external:NAME`` policies need, found on this host (``path``,
    else the system directories) with the node's ownership checks; copied into the micro-VM."""
    from schedcp.deploy import external as deploy_external
    from schedcp.repository import external as catalog

    out: dict[str, Path] = {}
    for spec in specs:
        source = spec.partition("@")[0]
        if source.startswith(harness.EXTERNAL_PREFIX):
            binary = catalog.entry(source.removeprefix(harness.EXTERNAL_PREFIX)).binary
            out[binary] = deploy_external.on_host(binary, path)
    return out


def _machine_line(m: dict[str, Any]) -> str:
    if m.get("target") == "vm":
        return (
            f"{m.get('vcpus')} vCPU {m.get('accel')} guest, kernel {m.get('kernel')}, "
            f"booted in {m.get('boot_s')}s on {m.get('host_cpu')}"
        )
    return f"local host {m.get('host_cpu')} x{m.get('host_cpus')}, kernel {m.get('kernel')}"
