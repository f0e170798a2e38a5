# SPDX-License-Identifier: Apache-2.0
"""What a node tells the trial core, typed: sched_ext's state, kernel events, workload runs, attaches.

The node agent speaks plain JSON (it runs in the guest with the standard library only), so these
models are where its answers become typed values for the control plane. Every model keeps fields
it does not know (``extra="allow"``) and ``as_dict()`` gives back exactly what the node sent, so a
newer node can add a field without the control plane losing it in its reports.

The one rule that decides whether the kernel threw a scheduler out lives here:
``KernelEvent.is_ejection``. A scheduler we detach ourselves is also logged as "disabled", with
the reason ``unregistered from user space``; that is not an ejection.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from schedcp.toolchain.metadata import SchedulerMeta
from schedcp.toolchain.scx_loader import LoaderOptions

# The reason the kernel gives when the loader closed the scheduler (our own detach).
OWN_DETACH_REASON = "unregistered from user space"


class _NodeModel(BaseModel):
    model_config = ConfigDict(extra="allow")

    def as_dict(self) -> dict[str, Any]:
        """The node's own JSON shape: only the fields it sent (plus extras it added)."""
        return self.model_dump(exclude_unset=True)


class SchedExtState(_NodeModel):
    """A snapshot of /sys/kernel/sched_ext; ``supported`` is False on a kernel without sched_ext."""

    supported: bool = True
    state: str | None = None  # enabled, disabled, enabling, disabling, ...
    ops: str | None = None  # the attached scheduler's name (root/ops)
    enable_seq: int | None = None
    nr_rejected: int | None = None
    switch_all: int | None = None
    events: dict[str, int] = Field(default_factory=dict)  # root/events counters (6.15+)

    @property
    def idle(self) -> bool:
        """No BPF scheduler is attached: the kernel's own (fair/EEVDF) class runs everything."""
        return self.state in ("disabled", None)

    def runs(self, ops_name: str | None) -> bool:
        """Is `ops_name` the enabled scheduler (any enabled one when the name is unknown)?"""
        return self.state == "enabled" and (not ops_name or self.ops == ops_name)


class KernelEvent(_NodeModel):
    """A sched_ext line of the kernel log: enabled, disabled (with reason and detail) or a message."""

    kind: str
    ts: float = 0.0
    scheduler: str | None = None
    reason: str | None = None
    detail: list[str] = Field(default_factory=list)
    line: str = ""

    @property
    def is_own_detach(self) -> bool:
        """The kernel logging that we detached the scheduler ourselves."""
        return self.kind == "disabled" and self.reason == OWN_DETACH_REASON

    def is_ejection(self, ops_name: str | None = None) -> bool:
        """The kernel disabled a scheduler (of this name, when given) for a reason other than our detach."""
        if self.kind != "disabled" or self.is_own_detach:
            return False
        return not ops_name or not self.scheduler or self.scheduler == ops_name

    def describe(self) -> str:
        """'reason: first detail / second detail', the form every report shows."""
        return f"{self.reason}: {' / '.join(self.detail[:2])}"


def ejections(events: list[KernelEvent], ops_name: str | None = None) -> list[KernelEvent]:
    return [e for e in events if e.is_ejection(ops_name)]


def events_from(raw: Any) -> list[KernelEvent]:
    """Kernel events out of a node answer or error details (a list of dicts; anything else is none)."""
    return [KernelEvent.model_validate(e) for e in raw or [] if isinstance(e, dict) and "kind" in e]


class RunResult(_NodeModel):
    """One command run on a node, with the kernel's context switches around it when counted."""

    argv: list[str] = Field(default_factory=list)
    exit_code: int
    signal: int | None = None
    timed_out: bool = False
    wall_s: float
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    # Delta of /proc/stat's ctxt across the run (the whole node, not just the command); None if not counted.
    context_switches: int | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    def failure(self) -> str:
        """'exit 3' or 'exit 0, timed out', for error messages."""
        return f"exit {self.exit_code}" + (", timed out" if self.timed_out else "")


class AttachResult(_NodeModel):
    """The node's answer to ``load``: the handle to detach with, and what the kernel said."""

    handle: int
    ops_name: str = ""
    load_s: float | None = None
    state: SchedExtState | None = None
    kernel_events: list[KernelEvent] = Field(default_factory=list)
    struct_ops: str | None = None  # the struct_ops map that was attached
    loader: dict[str, Any] = Field(default_factory=dict)  # what the scx loader steps did


class DetachResult(_NodeModel):
    state: SchedExtState = Field(default_factory=SchedExtState)
    kernel_events: list[KernelEvent] = Field(default_factory=list)
    exit_info: dict[str, Any] | None = None  # the scheduler's own exit record (UEI), when it has one


class Policy(BaseModel):
    """A built scheduler ready to attach: its object, its tunable metadata, the kernel headers it was built with."""

    model_config = ConfigDict(arbitrary_types_allowed=True, frozen=True)

    name: str
    object_path: Path
    meta: SchedulerMeta | None = None
    include_dir: Path | None = None
    # How the node's loader treats it: struct_ops choice, .rodata values, the scx loader steps.
    loader: LoaderOptions | None = None
    # The SchedCP daemon's verification of this object and configuration (its token id): a node the
    # daemon owns loads only what the daemon verified, by this id, never an object sent to it.
    token_id: str | None = None
