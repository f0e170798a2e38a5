# SPDX-License-Identifier: Apache-2.0
"""Prove library schedulers on a real kernel: build, attach, survive a mixed load, detach.

One micro-VM boot per kernel serves every scheduler in turn (a boot costs ~10 s under TCG, a
scheduler check ~5 s). Each scheduler is attached with a lowered watchdog so a stall ejects it in
seconds, then the guest's mixed load runs (CPU hogs at several nice levels, a ping-pong pair, a
sleeper, a fork storm and a late starter; see ``schedcp.bench.guest.mixedload``). A scheduler
passes when it stayed enabled under its own name, the kernel logged no ejection, every task of the
load made progress, and its enqueue/dispatch counters moved.

    results = check_kernel("unstable")            # every library scheduler
    for r in results: print(r.summary())

``check_one`` works on any node that is already up (a VM or a sched_ext host), for
``schedcp sched test``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from schedcp.errors import SchedcpError
from schedcp.toolchain import build as build_mod
from schedcp.toolchain import headers, metadata
from schedcp.trial.attached import AttachedPolicy, attached
from schedcp.trial.models import Policy, ejections
from schedcp.trial.node import GUEST_DEAD, NodeClient, NodeOpError

DEFAULT_TIMEOUT_MS = 3000
DEFAULT_SECONDS = 3.0
# Counters every library scheduler exports; both must move under any load.
REQUIRED_MOVING = ("nr_enqueued", "nr_dispatched")
MIXEDLOAD = ["python3", "-m", "schedcp_workloads.mixedload"]


@dataclass
class CheckResult:
    """What happened to one scheduler on one kernel. `stage` is where it stopped."""

    name: str
    kernel: str
    ok: bool = False
    stage: str = "build"  # build, attach, run, verify, done
    error: str = ""
    ops_name: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    counters_before: dict[str, int] = field(default_factory=dict)
    counters_after: dict[str, int] = field(default_factory=dict)
    ejections: list[dict[str, Any]] = field(default_factory=list)
    state_after: dict[str, Any] = field(default_factory=dict)
    starved: list[str] = field(default_factory=list)
    load: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    # The guest died or stopped answering during this check (the VM is unusable afterwards).
    guest_lost: bool = False
    # Guest crashes (kernel oops, lost VM) that preceded this result's retry.
    guest_crashes: list[str] = field(default_factory=list)

    @property
    def moved(self) -> dict[str, int]:
        return {k: v - self.counters_before.get(k, 0) for k, v in self.counters_after.items()}

    def progress(self) -> dict[str, int]:
        return {t["name"]: t["progress"] for t in self.load.get("tasks", [])}

    def summary(self) -> str:
        if self.ok:
            moved = ", ".join(f"{k}+{v}" for k, v in sorted(self.moved.items()))
            return f"{self.name:<10} {self.kernel:<26} ok   ({self.wall_s:.1f}s) {moved}"
        return f"{self.name:<10} {self.kernel:<26} FAIL at {self.stage}: {self.error or '; '.join(self.problems)}"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["moved"] = self.moved
        return out


def run_mixedload(node: NodeClient, seconds: float = DEFAULT_SECONDS, starve_s: float | None = None) -> dict[str, Any]:
    argv = [*MIXEDLOAD, "--seconds", str(seconds), "--json"]
    if starve_s is not None:
        argv += ["--starve-s", str(starve_s)]
    res = node.run(argv, seconds + 30)
    if res.timed_out:
        raise SchedcpError("the mixed load did not finish in time", "the scheduler may be starving tasks")
    try:
        return json.loads(res.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError) as exc:
        raise SchedcpError(
            f"the mixed load printed no report (exit {res.exit_code}): {res.stderr.strip()[-300:]}",
            "run it by hand in the guest: python3 -m schedcp_workloads.mixedload --seconds 1",
        ) from exc


def check_one(
    node: NodeClient,
    meta: metadata.SchedulerMeta,
    kernel,
    *,
    include_dir: Path | None = None,
    config: dict[str, Any] | None = None,
    seconds: float = DEFAULT_SECONDS,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    object_path: Path | None = None,
) -> CheckResult:
    """Attach one scheduler on a live node, run the mixed load under it, detach; never raises."""
    release = getattr(kernel, "release", str(kernel))
    result = CheckResult(meta.name, release, config=dict(config or {}))
    start = time.monotonic()
    pol: AttachedPolicy | None = None
    try:
        if object_path is None:
            include_dir = include_dir or headers.kernel_include_dir(kernel)
            object_path = build_mod.build(meta.source_path, include_dir, target=release).object_path
        result.stage = "attach"
        policy = Policy(name=meta.name, object_path=object_path, meta=meta, include_dir=include_dir)
        with attached(node, policy, config=config or {}, watchdog_ms=timeout_ms) as pol:
            result.ops_name = pol.ops_name
            stats = [s.name for s in meta.stats]
            result.counters_before = pol.counters(stats)
            result.stage = "run"
            result.load = run_mixedload(node, seconds)
            result.starved = list(result.load.get("starved", []))
            result.stage = "verify"
            health = pol.check()
            result.state_after = health.state.as_dict()
            result.ejections = [e.as_dict() for e in health.ejections]
            result.counters_after = pol.counters(stats)
        result.problems = _problems(result, meta)
        result.ok = not result.problems
        if result.ok:
            result.stage = "done"
    except SchedcpError as exc:
        result.error = f"{exc.cause} {_guest_context(exc)}".strip()
        result.guest_lost = _is_guest_lost(exc)
        if isinstance(exc, NodeOpError):
            if exc.details.get("verifier_log"):
                result.error += " | verifier: " + " / ".join(exc.details["verifier_log"][-6:])
            if exc.kernel_events:
                result.ejections = [e.as_dict() for e in ejections(exc.kernel_events)]
    finally:
        if pol is not None and pol.detach_error is not None:
            failed = pol.detach_error
            result.problems.append(f"detach failed: {failed.cause} {_guest_context(failed)}".strip())
            result.guest_lost = result.guest_lost or _is_guest_lost(failed)
            result.ok = False
        result.wall_s = round(time.monotonic() - start, 2)
    return result


def _is_guest_lost(exc: SchedcpError) -> bool:
    return getattr(exc, "code", "") in GUEST_DEAD


def _guest_context(exc: SchedcpError) -> str:
    """For a lost or hung guest, the console tail (kernel oops, agent crash) is the only clue."""
    return f"[{exc.next_step[-1500:]}]" if _is_guest_lost(exc) else ""


def _problems(result: CheckResult, meta: metadata.SchedulerMeta) -> list[str]:
    out = []
    state = result.state_after
    if state.get("state") != "enabled" or state.get("ops") != result.ops_name:
        out.append(f"not running after the load: state={state.get('state')} ops={state.get('ops')}")
    for e in result.ejections:
        out.append(f"ejected: {e.get('reason')} {' '.join(e.get('detail', []))[:200]}")
    if result.starved:
        out.append(f"starved tasks: {', '.join(result.starved)}")
    missing = [s.name for s in meta.stats if s.name not in result.counters_after]
    if missing:
        out.append(f"declared stats missing from the object: {', '.join(missing)}")
    for name in REQUIRED_MOVING:
        if name in result.counters_after and result.moved.get(name, 0) <= 0:
            out.append(f"counter {name} did not move")
    return out


class KernelSession:
    """One kernel, one micro-VM, many scheduler checks; rebooted only when the guest dies.

        with KernelSession("unstable") as session:
            default = session.check("fifo")
            tuned = session.check("fifo", {"direct_idle": False})

    A guest that dies or hangs during a check is killed, and that check is retried up to
    `crash_retries` times on a fresh boot (the crash is kept in `guest_crashes`). A sched_ext BPF
    program cannot crash the kernel by design; a dead guest has so far always been an oops in
    emulated text patching (static keys flipped on enable/disable under multi-threaded TCG).
    """

    def __init__(self, kernel_spec: str, *, cpus: int = 2, crash_retries: int = 1) -> None:
        from schedcp.testbed import kernel as kernel_mod

        self.spec = kernel_spec
        self.cpus = cpus
        self.crash_retries = crash_retries
        self.kernel = kernel_mod.cached(kernel_spec)
        self.include_dir = headers.kernel_include_dir(self.kernel)
        self.vm = None
        self.boots = 0

    def __enter__(self) -> KernelSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def node(self):
        """The live guest's node client, booting (again) when needed."""
        from schedcp.testbed.vm import MicroVM, VMConfig

        if self.vm is None or not self.vm.alive:
            self.close()
            self.vm = MicroVM(VMConfig(cpus=self.cpus, kernel=self.spec), kernel=self.kernel)
            self.vm.start()
            self.boots += 1
        return self.vm.node

    def check(
        self,
        name: str | metadata.SchedulerMeta,
        config: dict[str, Any] | None = None,
        *,
        seconds: float = DEFAULT_SECONDS,
        timeout_ms: int = DEFAULT_TIMEOUT_MS,
    ) -> CheckResult:
        meta = metadata.get(name) if isinstance(name, str) else name
        crashes: list[str] = []
        while True:
            res = check_one(
                self.node(),
                meta,
                self.kernel,
                include_dir=self.include_dir,
                config=config,
                seconds=seconds,
                timeout_ms=timeout_ms,
            )
            if self.vm is not None and res.guest_lost:
                self.vm.kill()  # the channel can close before QEMU has exited
            if self.vm is not None and self.vm.alive:
                break
            if len(crashes) >= self.crash_retries:
                break
            crashes.append(res.error or "; ".join(res.problems))
        res.guest_crashes = crashes
        return res

    def close(self) -> None:
        if self.vm is not None:
            self.vm.stop()
            self.vm = None


def check_kernel(
    kernel_spec: str,
    names: list[str] | None = None,
    *,
    seconds: float = DEFAULT_SECONDS,
    timeout_ms: int = DEFAULT_TIMEOUT_MS,
    configs: dict[str, dict[str, Any]] | None = None,
    cpus: int = 2,
    crash_retries: int = 1,
    progress: Callable[[str], None] | None = None,
) -> list[CheckResult]:
    """Check schedulers (default: the whole library) on one kernel, in one VM boot when possible."""
    metas = [metadata.get(n) for n in names] if names else metadata.library()
    results: list[CheckResult] = []
    with KernelSession(kernel_spec, cpus=cpus, crash_retries=crash_retries) as session:
        for meta in metas:
            res = session.check(meta, (configs or {}).get(meta.name), seconds=seconds, timeout_ms=timeout_ms)
            results.append(res)
            if progress:
                progress(res.summary())
    return results


def main(argv: list[str] | None = None) -> int:
    """`python -m schedcp.toolchain.library_check [KERNEL ...]`: print a pass/fail table."""
    import sys

    specs = (argv if argv is not None else sys.argv[1:]) or ["unstable", "6.19"]
    failed = 0
    for spec in specs:
        for res in check_kernel(spec, progress=print):
            failed += not res.ok
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
