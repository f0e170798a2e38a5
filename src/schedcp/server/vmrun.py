# SPDX-License-Identifier: Apache-2.0
"""Try a scheduler in the micro-VM: build, boot, run a workload under EEVDF and under the policy.

This is the agent's safe playground before any deployment: the guest is a throwaway QEMU machine
(TCG, no root needed), so a policy that stalls or crashes costs a few seconds, not a host. Both runs
happen in the same boot, so the comparison sees the same kernel, memory layout and noise.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedcp.errors import SchedcpError, UsageError
from schedcp.server import workloads
from schedcp.server.resources import library_source
from schedcp.server.vmgate import VmGate
from schedcp.testbed import kernel as kernel_mod
from schedcp.testbed.vm import MicroVM, NodeOpError, VMConfig
from schedcp.toolchain import attach as attach_mod
from schedcp.toolchain import build, headers, metadata

TAIL_CHARS = 1500


@dataclass
class RunRequest:
    argv: list[str]
    workload: str  # label for reports: a built-in name or the program
    scheduler: str | None = None  # library or repository name
    source: str | None = None  # submitted C source
    config: dict[str, Any] = field(default_factory=dict)
    kernel: str = kernel_mod.DEFAULT_SPEC
    baseline: bool = True
    repeats: int = 1
    timeout_s: float = 120.0
    partial: bool = False
    watchdog_ms: int | None = 10000
    warmup: bool = True
    image_variant: str = "default"  # "build" carries make and gcc for the parallel-build workload


@dataclass
class Prepared:
    name: str
    object_path: Path
    meta: metadata.SchedulerMeta | None
    source_sha256: str


def _repo_meta(info: dict[str, Any]) -> metadata.SchedulerMeta | None:
    """Tunables of an agent-added policy, in the shape the loader validates against."""
    tunables = [t for t in info.get("tunables", []) if t.get("variable")]
    if not tunables:
        return None
    converted = []
    for t in tunables:
        item = {
            "name": t["variable"],
            "type": t["type"],
            "default": t.get("default"),
            "description": t.get("description", "tunable"),
        }
        if t["type"] == "str":
            item["max_len"] = 64
        else:
            item.update({k: int(t[k]) for k in ("min", "max") if t.get(k) is not None})
        converted.append(item)
    try:
        return metadata.SchedulerMeta.model_validate(
            {
                "name": info["name"].replace("-", "_").replace(".", "_")[:32],
                "title": info.get("title") or info["name"],
                "description": (info.get("description") or "")[:4000],
                "tunables": converted,
            }
        )
    except ValueError as exc:
        raise UsageError(
            f"the tunables stored for {info['name']} are not loadable: {exc}",
            "fix the policy's tunables in the repository or run it without config",
        ) from exc


def prepare(req: RunRequest, kernel: kernel_mod.Kernel, repository: Callable[[], Any]) -> Prepared | None:
    """Compile the policy for the kernel before any VM boots: build errors cost no boot."""
    include = headers.kernel_include_dir(kernel)
    if req.source is not None:
        result = build.build(
            Path("submitted.bpf.c"),
            include,
            target=kernel.release,
            source_text=req.source,
            source_name="submitted.bpf.c",
        )
        if req.config:
            raise UsageError(
                "config was given for submitted source, which declares no tunable metadata",
                "drop config, or add the policy with add_scheduler (with tunables) and run it by name",
            )
        return Prepared("submitted", result.object_path, None, result.source_sha256)
    if req.scheduler is None:
        return None
    path = library_source(req.scheduler)
    if path is not None:
        toml = path.with_suffix("").with_suffix(".toml")
        meta = metadata.load_meta(toml) if toml.is_file() else None
        result = build.build(path, include, target=kernel.release)
    else:
        repo = repository()
        info = repo.show(req.scheduler)
        if info.get("kind") == "external":
            raise UsageError(
                f"{req.scheduler} is an upstream binary, which the test VM does not carry",
                "try a BPF policy from our library or one added with add_scheduler",
            )
        meta = _repo_meta(info)
        result = build.build(
            Path(f"{req.scheduler}.bpf.c"),
            include,
            target=kernel.release,
            source_text=repo.source(req.scheduler),
            source_name=f"{req.scheduler}.bpf.c",
        )
    if req.config:
        if meta is None:
            raise UsageError(f"{req.scheduler} declares no tunables", "drop config")
        meta.validate_config(req.config)
    return Prepared(req.scheduler, result.object_path, meta, result.source_sha256)


def _once(vm: MicroVM, req: RunRequest) -> dict[str, Any]:
    assert vm.node is not None
    out = vm.node.run(req.argv, timeout_s=req.timeout_s, sched_ext=req.partial)
    metrics = workloads.parse_metrics(out["stdout"]) or {"run_wall_s": float(out["wall_s"])}
    return {
        "exit_code": out["exit_code"],
        "timed_out": out["timed_out"],
        "wall_s": round(out["wall_s"], 3),
        "metrics": metrics,
        "stdout_tail": out["stdout"][-TAIL_CHARS:],
        "stderr_tail": out["stderr"][-TAIL_CHARS:],
    }


def _median_metrics(runs: list[dict[str, Any]]) -> dict[str, float]:
    names = set().union(*(r["metrics"] for r in runs)) if runs else set()
    return {n: round(statistics.median(r["metrics"][n] for r in runs if n in r["metrics"]), 6) for n in sorted(names)}


def _attach_error(name: str, exc: NodeOpError) -> SchedcpError:
    from schedcp.toolchain.verifier_log import summarize as _verifier_summary

    log = exc.details.get("verifier_log") or []
    ejections = [e for e in exc.details.get("kernel_events") or [] if e.get("kind") == "disabled"]
    detail = _verifier_summary(log) or "; ".join(
        f"{e.get('reason')}: {' / '.join(e.get('detail', [])[:2])}" for e in ejections
    )
    return SchedcpError(
        f"{name} did not attach: {exc.cause}" + (f" — {detail[:600]}" if detail else ""),
        exc.next_step or "fix the scheduler (verify_scheduler gives a full report) and retry",
        code=exc.code,
    )


def run(
    req: RunRequest, gate: VmGate, repository: Callable[[], Any], progress: Callable[[str], None] = lambda _m: None
) -> dict[str, Any]:
    """Measure in one boot. With a baseline the sides alternate (EEVDF, policy, EEVDF, policy, ...)
    after one unmeasured warm-up run, so neither side pays the cold caches of a fresh guest."""
    k = kernel_mod.cached(req.kernel)
    progress(f"building for {k.release}")
    prepared = prepare(req, k, repository)
    doc: dict[str, Any] = {
        "workload": req.workload,
        "argv": req.argv,
        "kernel": k.release,
        "repeats": req.repeats,
        "partial": req.partial,
    }
    with gate.slot() as waited:
        doc["queued_s"] = round(waited, 2)
        progress("booting the micro-VM")
        with MicroVM(VMConfig(cpus=2, kernel=req.kernel, image_variant=req.image_variant)) as vm:
            assert vm.node is not None
            doc["boot_s"] = round(vm.boot_s or 0.0, 2)
            doc["accel"] = vm.accel.name if vm.accel else None
            if req.warmup and (req.baseline or req.repeats > 1):
                progress("warm-up run (not measured)")
                doc["warmup_exit_code"] = _once(vm, req)["exit_code"]
            base_runs: list[dict[str, Any]] = []
            policy = _Policy(vm, req, prepared, k) if prepared is not None else None
            for i in range(req.repeats):
                if req.baseline:
                    progress(f"EEVDF baseline run {i + 1}/{req.repeats}")
                    base_runs.append(_once(vm, req))
                if policy is not None:
                    progress(f"{prepared.name} run {i + 1}/{req.repeats}")
                    if not policy.run_once(last=i == req.repeats - 1):
                        break  # ejected: the kernel fell back to EEVDF, more runs would measure that
            if req.baseline:
                doc["baseline"] = {
                    "scheduler": "EEVDF (kernel default)",
                    "runs": base_runs,
                    "metrics": _median_metrics(base_runs),
                }
            if policy is not None:
                doc["scheduler"] = policy.result()
    if req.baseline and prepared is not None:
        doc["comparison"] = workloads.compare(doc["baseline"]["metrics"], doc["scheduler"]["metrics"])
    return doc


class _Policy:
    """The policy side: attach for each run and detach after it, so baseline runs see EEVDF."""

    def __init__(self, vm: MicroVM, req: RunRequest, prepared: Prepared, k: kernel_mod.Kernel) -> None:
        self.vm, self.req, self.prepared, self.k = vm, req, prepared, k
        self.runs: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self.ops_name = ""
        self.config: dict[str, Any] = {}
        self.counters: dict[str, int] = {}
        self.state: dict[str, Any] = {}
        self.stayed = True

    def run_once(self, *, last: bool) -> bool:
        node = self.vm.node
        assert node is not None
        try:
            attached = attach_mod.attach(
                node,
                self.prepared.object_path,
                meta=self.prepared.meta,
                config=self.req.config,
                timeout_ms=self.req.watchdog_ms,
                partial=self.req.partial,
                include_dir=headers.kernel_include_dir(self.k),
            )
        except NodeOpError as exc:
            raise _attach_error(self.prepared.name, exc) from exc
        self.ops_name, self.config = attached.ops_name, attached.config
        self.runs.append(_once(self.vm, self.req))
        self.state = node.state()
        self.events += attached.kernel_events + node.events()
        self.stayed = self.state.get("state") == "enabled"
        if self.stayed:
            if last:
                self.counters = attach_mod.read_counters(node, attached)
            try:
                attach_mod.detach(node, attached)
            except SchedcpError:
                pass  # the next attach reports a stuck scheduler; the VM is discarded anyway
        return self.stayed

    def result(self) -> dict[str, Any]:
        ejected = [e for e in self.events if e.get("kind") == "disabled"]
        return {
            "name": self.prepared.name,
            "ops_name": self.ops_name,
            "config": self.config,
            "source_sha256": self.prepared.source_sha256,
            "stayed_enabled": self.stayed,
            "state_after": self.state,
            "ejections": ejected[:5],
            "counters": self.counters,
            "runs": self.runs,
            "metrics": _median_metrics(self.runs),
            "measured_at": round(time.time(), 3),
        }


def summarise(doc: dict[str, Any], run_id: str, detail: str) -> dict[str, Any]:
    """What the agent sees first: verdicts and median metrics; outputs stay in the stored run."""
    out: dict[str, Any] = {
        "run_id": run_id,
        "run_uri": f"schedcp://run/{run_id}",
        **{k: doc[k] for k in ("workload", "kernel", "boot_s", "accel", "queued_s") if k in doc},
    }
    for key in ("baseline", "scheduler"):
        part = doc.get(key)
        if not part:
            continue
        brief = {k: part[k] for k in ("name", "ops_name", "config", "stayed_enabled", "ejections") if k in part}
        brief["exit_codes"] = [r["exit_code"] for r in part["runs"]]
        if any(r["timed_out"] for r in part["runs"]):
            brief["timed_out"] = True
        brief["metrics"] = part["metrics"]
        if detail == "full":
            brief["counters"] = part.get("counters")
            brief["runs"] = [
                {k: r[k] for k in ("exit_code", "wall_s", "stdout_tail", "stderr_tail")} for r in part["runs"]
            ]
        out[key] = brief
    if "comparison" in doc:
        out["comparison"] = doc["comparison"]
    return out
