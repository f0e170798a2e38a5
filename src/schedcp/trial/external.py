# SPDX-License-Identifier: Apache-2.0
"""An installed scheduler binary attached on a node, judged like one of our objects.

    pol = external.start(node, command, partial=False)   # ExternalCommand: repository/external.py
    health = pol.check()     # the process lives, sysfs names its ops, the kernel did not eject it
    pol.detach()             # SIGINT, SIGKILL after a bound, the kernel's default confirmed

The node supervises the process (``node/external.py``); this side waits for its scheduler to
enable, then treats it as an :class:`~schedcp.trial.attached.AttachedPolicy`, so the trial core's
arms, the benchmarks and the deploy controller use it without knowing the difference. What differs:

* healthy means the process is alive *and* the kernel still runs its ops under the same
  ``enable_seq`` without an ejection; a process that exited is a verdict of its own
  (``ExternalHealth.exited``: its exit status and the tail of its output), even when the kernel's
  log only says the scheduler was unregistered from user space;
* there is no object to read counters from, and no standby: restoring an external policy starts
  the binary again (the node refuses when the installed file's sha256 is no longer the one that
  was deployed).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from schedcp.repository.external import ExternalCommand
from schedcp.trial.attached import EJECTION_REASON_WAIT_S, AttachedPolicy, Health
from schedcp.trial.models import DetachResult, Policy, SchedExtState, ejections
from schedcp.trial.node import NodeClient, NodeOpError

ENABLE_TIMEOUT_S = 300.0  # the binary loads its BPF through the kernel's verifier: minutes under emulation
POLL_S = 0.2
STOP_GRACE_S = 5.0


class ExternalHealth(Health):
    exited: str = ""  # how the process ended, when it did

    @property
    def reason(self) -> str:
        if self.ejections:
            return self.ejections[0].describe() + (f"; {self.exited}" if self.exited else "")
        return self.exited or super().reason


def exit_description(binary: str, status: dict[str, Any]) -> str:
    """'scx_simple exited with code 1: <last line of stderr>' from a node status answer."""
    how = f"signal {status['signal']}" if status.get("signal") else f"code {status.get('exit_code')}"
    tail = (str(status.get("stderr_tail") or "") or str(status.get("stdout_tail") or "")).strip().splitlines()
    return f"{binary} exited ({how})" + (f": {tail[-1][:200]}" if tail else "")


class ExternalPolicy(AttachedPolicy):
    """A scheduler process started by the node and attached under its own ops name."""

    def __init__(
        self,
        node: NodeClient,
        command: ExternalCommand,
        *,
        handle: int,
        started: dict[str, Any],
        ops_name: str,
        state: SchedExtState,
        partial: bool,
    ) -> None:
        # The trial core's Policy names what ran: the entry, and the file the node executed.
        super().__init__(
            node,
            Policy(name=command.name, object_path=Path(str(started.get("path") or command.binary))),
            handle=handle,
            ops_name=ops_name,
            config=dict(command.config),  # type: ignore[arg-type]
            variables={},
            attach_events=[],
            state=state,
            partial=partial,
            loader={"external": command.binary, "argv": list(started.get("argv") or []), "pid": started.get("pid")},
        )
        self.command = command
        self.sha256 = str(started.get("sha256") or "")
        self.pid = started.get("pid")
        self.last_status: dict[str, Any] = {}

    def status(self) -> dict[str, Any]:
        self.last_status = self.node.call("external_status", {"handle": self.handle}, timeout_s=15)
        return self.last_status

    def check(self, wait_reason_s: float = EJECTION_REASON_WAIT_S) -> ExternalHealth:
        status = self.status()
        if status.get("alive"):
            base = super().check(wait_reason_s)
            if base.stayed or base.ejections:
                return ExternalHealth(stayed=base.stayed, state=base.state, ejections=base.ejections)
            # Gone without a kernel reason while the process looked alive: a killed loader's
            # scheduler is torn down as its descriptors close, a moment before the process can be
            # reaped. Ask about the process until it answers dead or the bound passes.
            deadline = time.monotonic() + wait_reason_s
            while (status := self.status()).get("alive"):
                if time.monotonic() >= deadline:
                    return ExternalHealth(stayed=False, state=base.state, ejections=[])
                time.sleep(POLL_S)
        # The process is gone: its scheduler went with it (or went first and the process followed).
        self.poll()
        return ExternalHealth(
            stayed=False,
            state=self.node.state(),
            ejections=ejections(self.events, self.ops_name),
            exited=exit_description(self.command.binary, status),
        )

    def counters(self, names: list[str] | None = None) -> dict[str, int]:
        return {}  # a binary's maps are its own; nothing is read from it

    def detach(self) -> DetachResult:
        """Stop the process (SIGINT, then SIGKILL) and confirm the kernel's default scheduler."""
        if self.detached is None:
            raw = self.node.call("external_stop", {"handle": self.handle, "grace_s": STOP_GRACE_S}, timeout_s=60)
            self.last_status = raw
            self.detached = DetachResult.model_validate(raw)
            self.poll()
        return self.detached


def start(
    node: NodeClient,
    command: ExternalCommand,
    *,
    partial: bool = False,
    search: list[str] | None = None,
    expect_sha256: str | None = None,
    enable_timeout_s: float = ENABLE_TIMEOUT_S,
) -> ExternalPolicy:
    """Start the binary and wait until its scheduler is enabled; NodeOpError (``not_enabled``, with
    the process's exit and the kernel's events) when it exits or never enables, and then nothing of
    it is left running."""
    args: dict[str, Any] = {"binary": command.binary, "args": command.argv(partial=partial)}
    if search or command.search:
        args["search"] = list(search or command.search)
    if expect_sha256:
        args["expect_sha256"] = expect_sha256
    node.events()  # older kernel events belong to what ran before
    started = node.call("external_start", args, timeout_s=60)
    handle = int(started["handle"])
    deadline = time.monotonic() + enable_timeout_s
    while True:
        status = node.call("external_status", {"handle": handle}, timeout_s=15)
        state = SchedExtState.model_validate(status.get("state") or {})
        if status.get("alive") and state.state == "enabled" and status.get("ops_name"):
            ops_name = str(status["ops_name"])
            return ExternalPolicy(
                node, command, handle=handle, started=started, ops_name=ops_name, state=state, partial=partial
            )
        if not status.get("alive") or time.monotonic() > deadline:
            why = (
                exit_description(command.binary, status)
                if not status.get("alive")
                else f"{command.binary} did not enable a scheduler within {enable_timeout_s:.0f}s"
            )
            stopped: dict[str, Any] = {}
            try:
                stopped = node.call("external_stop", {"handle": handle, "grace_s": STOP_GRACE_S}, timeout_s=60)
            except NodeOpError:
                pass
            events = [e.model_dump() for e in node.events()]
            raise NodeOpError(
                {
                    "code": "not_enabled",
                    "cause": f"{why} before its scheduler enabled",
                    "next_step": f"run `{command.binary} --help` on the node and check the flags and the kernel log",
                    "details": {
                        "kernel_events": events,
                        "stderr_tail": str(stopped.get("stderr_tail") or status.get("stderr_tail") or "")[-2000:],
                    },
                }
            )
        time.sleep(POLL_S)
