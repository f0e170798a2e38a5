# SPDX-License-Identifier: Apache-2.0
"""The analysis engine's front door: observe a target on a node, render it at a detail level.

    engine = Engine()                      # this host, in-process
    engine = Engine.for_vm(vm)             # the micro-VM's node agent (same observe.py inside)
    raw = engine.observe_command(["python3", "-m", "schedcp_workloads.longtail"])
    doc = engine.render(raw, "summary")    # <= 1.5 KB JSON
    prof = engine.profile(raw)             # WorkloadProfile for the planner

Raw observations come from ``schedcp.node.observe`` (locally or through ``vm.node.call``); this
module adds validation, the optional sandbox and bpftrace on the host, and the renderings.
"""

from __future__ import annotations

import threading
from typing import Any

from schedcp.analysis import probes, summarize
from schedcp.analysis.derive import build_profile
from schedcp.analysis.profile import WorkloadProfile
from schedcp.analysis.sandbox import SandboxPolicy, bwrap_prefix, validate_argv
from schedcp.errors import UsageError
from schedcp.node import observe
from schedcp.trial.node import LocalNode

MAX_DURATION_S = observe.MAX_DURATION_S


class Engine:
    def __init__(self, node: Any = None, source: str = "host") -> None:
        self.node = node or LocalNode()
        self.source = source
        self.local = isinstance(self.node, LocalNode)

    @classmethod
    def for_vm(cls, vm: Any) -> Engine:
        return cls(vm.node, source="vm")

    # -- observation ---------------------------------------------------------------------------
    def observe_command(
        self,
        argv: list[str],
        *,
        duration_s: float = 30.0,
        interval_s: float = 0.1,
        cwd: str | None = None,
        env: dict[str, str] | None = None,
        probe: list[str] | None = None,
        probe_backend: str = "auto",
        sandbox: SandboxPolicy | None = None,
    ) -> dict[str, Any]:
        """Launch argv (a list, never a shell string) and sample it until it exits or duration_s."""
        argv = validate_argv(argv)
        user_argv = list(argv)
        _check_duration(duration_s)
        raw = self._launch(argv, duration_s, interval_s, cwd, env, probe, probe_backend, sandbox)
        # Report the caller's command, not the sandbox wrapper it ran inside.
        raw["argv"] = user_argv
        if sandbox is not None:
            raw["sandboxed"] = True
        return raw

    def _launch(self, argv, duration_s, interval_s, cwd, env, probe, probe_backend, sandbox) -> dict[str, Any]:
        if sandbox is not None:
            if not self.local:
                raise UsageError("the bwrap sandbox is for host runs", "the micro-VM already isolates the command")
            sandbox.validate()
            argv = bwrap_prefix(sandbox) + argv
        args: dict[str, Any] = {"argv": argv, "duration_s": duration_s, "interval_s": interval_s}
        if cwd:
            args["cwd"] = cwd
        if env:
            args["env"] = env
        kinds = probes.validate_kinds(probe) if probe is not None else None
        if kinds and self.local and probe_backend in ("auto", "bpftrace"):
            return self._with_bpftrace(args, kinds, probe_backend)
        if kinds:
            args["probe"] = {"kinds": kinds}
        return self.node.call("observe_run", args, timeout_s=duration_s + 60)

    def _with_bpftrace(self, args: dict[str, Any], kinds: list[str], backend: str) -> dict[str, Any]:
        # bpftrace follows every task forked from this thread: the command and its descendants.
        bp = probes.BpftraceProbe(kinds, follow_tid=threading.get_native_id())
        if not bp.start():
            if backend == "bpftrace":
                raw = self.node.call("observe_run", args, timeout_s=args["duration_s"] + 60)
                raw["probe"] = {"available": False, "backend": "bpftrace", "reason": bp.reason}
                return raw
            args["probe"] = {"kinds": kinds}
            raw = self.node.call("observe_run", args, timeout_s=args["duration_s"] + 60)
            raw.setdefault("probe", {})["bpftrace_unavailable"] = bp.reason
            return raw
        try:
            raw = self.node.call("observe_run", args, timeout_s=args["duration_s"] + 60)
        finally:
            result = bp.stop()
        raw["probe"] = result
        return raw

    def observe_pids(
        self,
        pids: list[int],
        *,
        duration_s: float = 3.0,
        interval_s: float = 0.1,
        include_children: bool = True,
        probe: list[str] | None = None,
    ) -> dict[str, Any]:
        if not pids or not all(isinstance(p, int) and not isinstance(p, bool) and p > 0 for p in pids):
            raise UsageError("pids must be positive integers", "e.g. --pid 1234")
        _check_duration(duration_s)
        args: dict[str, Any] = {
            "pids": list(pids),
            "duration_s": duration_s,
            "interval_s": interval_s,
            "include_children": include_children,
        }
        if probe is not None:
            args["probe"] = {"kinds": probes.validate_kinds(probe)}
        return self.node.call("observe_pids", args, timeout_s=duration_s + 60)

    def observe_cgroup(
        self, cgroup: str, *, duration_s: float = 3.0, interval_s: float = 0.1, probe: list[str] | None = None
    ) -> dict[str, Any]:
        if not isinstance(cgroup, str) or not cgroup:
            raise UsageError("cgroup must be a path", "e.g. /sys/fs/cgroup/system.slice")
        _check_duration(duration_s)
        args: dict[str, Any] = {"cgroup": cgroup, "duration_s": duration_s, "interval_s": interval_s}
        if probe is not None:
            args["probe"] = {"kinds": probes.validate_kinds(probe)}
        return self.node.call("observe_pids", args, timeout_s=duration_s + 60)

    def observe_system(self, duration_s: float = 1.0, top: int = 5) -> dict[str, Any]:
        return self.node.call("observe_system", {"duration_s": duration_s, "top": top}, timeout_s=duration_s + 30)

    def probe(
        self,
        kinds: list[str] | None = None,
        duration_s: float = 2.0,
        pids: list[int] | None = None,
        backend: str = "auto",
    ) -> dict[str, Any]:
        return probes.run_probe(kinds, duration_s, pids, backend, node=None if self.local else self.node)

    def read_file(self, path: str, roots: list[str] | None = None, max_bytes: int = 65536) -> dict[str, Any]:
        args: dict[str, Any] = {"path": path, "max_bytes": max_bytes}
        if roots is not None:
            args["roots"] = roots
        return self.node.call("read_file_safe", args, timeout_s=30)

    # -- rendering -----------------------------------------------------------------------------
    def render(self, raw: dict[str, Any], detail: str = "summary") -> dict[str, Any]:
        if detail not in summarize.DETAILS:
            raise UsageError(f"unknown detail level {detail!r}", f"use one of {list(summarize.DETAILS)}")
        return summarize.render(raw, detail, self.source)  # type: ignore[arg-type]

    def profile(self, raw: dict[str, Any]) -> WorkloadProfile:
        return build_profile(raw, self.source)


def _check_duration(duration_s: float) -> None:
    if not 0.1 <= float(duration_s) <= MAX_DURATION_S:
        raise UsageError(f"duration {duration_s}s is out of range", f"use 0.1..{MAX_DURATION_S:.0f} seconds")
