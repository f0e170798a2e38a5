# SPDX-License-Identifier: Apache-2.0
"""A policy attached on a node, for the length of a ``with`` block.

    with attached(node, policy, config={"slice_us": 5000}, watchdog_ms=3000) as pol:
        run = pol.run(argv, timeout_s=60)
        health = pol.check()            # still enabled? ejected, and why?
        counters = pol.counters()
    pol.detached.state                  # detached on exit, the kernel's last word kept

Attaching uploads the object, patches its tunables into ``.rodata``, optionally lowers the
sched_ext watchdog and sets ``SCX_OPS_SWITCH_PARTIAL``, then loads it through the node, which
confirms the scheduler really enabled. While attached, ``check()`` judges whether the kernel kept
it: enabled under its own name, not re-enabled since (``enable_seq``), and no ejection in the
kernel log. The kernel can report ``disabling`` a moment before it logs why, so a scheduler seen
leaving is given a few seconds for its reason to arrive. Exiting the block always detaches (an
ejected scheduler's object still has to be closed on the node); a failed detach is kept in
``detach_error`` rather than raised, so it never hides what went wrong inside the block.
"""

from __future__ import annotations

import base64
import re
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from schedcp.errors import SchedcpError, UsageError
from schedcp.toolchain.metadata import TYPE_SIZES, SchedulerMeta
from schedcp.toolchain.objinfo import GlobalVar, global_vars
from schedcp.trial.models import (
    DetachResult,
    KernelEvent,
    Policy,
    RunResult,
    SchedExtState,
    ejections,
)
from schedcp.trial.node import NodeClient, NodeOpError

# How long to wait for the kernel's reason once a scheduler is seen leaving.
EJECTION_REASON_WAIT_S = 5.0
# Value of SCX_OPS_SWITCH_PARTIAL when the target's vmlinux.h is not at hand (stable since 6.12).
SWITCH_PARTIAL_DEFAULT = 1 << 3
_FORMATS = {"u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q", "s32": "<i", "s64": "<q", "bool": "<B"}


def tunable_patches(
    obj: Path, meta: SchedulerMeta | None, config: dict[str, Any]
) -> tuple[list[dict[str, Any]], dict[str, int | str]]:
    """Validate config against the metadata and turn it into .rodata byte patches."""
    if config and meta is None:
        raise UsageError("tunables were given but the scheduler declares none", "drop --config or add metadata")
    values = meta.validate_config(config) if meta else {}
    variables = global_vars(obj)
    patches: list[dict[str, Any]] = []
    for name, value in values.items():
        tunable = meta.tunable(name) if meta else None
        var = variables.get(name)
        if var is None or var.section != ".rodata" or tunable is None:
            raise UsageError(
                f"tunable {name} is not a const volatile global in the object",
                f"declare `const volatile` {name} in the source",
            )
        if tunable.type == "str":
            raw = str(value).encode().ljust(var.size, b"\0")[: var.size]
        else:
            if var.size != TYPE_SIZES[tunable.type]:
                raise UsageError(
                    f"tunable {name} is {var.size} bytes in the object, metadata says {tunable.type}",
                    "make the C type match the metadata",
                )
            raw = struct.pack(_FORMATS[tunable.type], int(value))
        patches.append({"section": ".rodata", "offset": var.offset, "data_b64": base64.b64encode(raw).decode()})
    return patches, values


def switch_partial_flag(include_dir: Path | None) -> int:
    """SCX_OPS_SWITCH_PARTIAL as the target kernel defines it."""
    if include_dir is not None and (include_dir / "vmlinux.h").exists():
        m = re.search(r"SCX_OPS_SWITCH_PARTIAL = (\d+)", (include_dir / "vmlinux.h").read_text(errors="replace"))
        if m:
            return int(m.group(1))
    return SWITCH_PARTIAL_DEFAULT


class Health(BaseModel):
    """Did the kernel keep the scheduler? ``stayed`` is the verdict; ``reason`` says why not."""

    stayed: bool
    state: SchedExtState
    ejections: list[KernelEvent] = Field(default_factory=list)

    @property
    def reason(self) -> str:
        if self.ejections:
            return self.ejections[0].describe()
        if self.stayed:
            return ""
        return f"scheduler state became {self.state.state!r} ({self.state.ops!r})"


class AttachedPolicy:
    """A loaded (usually attached) policy on a node; made by ``attached()``."""

    def __init__(
        self,
        node: NodeClient,
        policy: Policy,
        *,
        handle: int,
        ops_name: str,
        config: dict[str, int | str],
        variables: dict[str, GlobalVar],
        attach_events: list[KernelEvent],
        state: SchedExtState | None,
        partial: bool,
        loader: dict[str, Any] | None = None,
        watchdog_ms: int | None = None,
    ) -> None:
        self.node = node
        self.policy = policy
        self.handle = handle
        self.ops_name = ops_name
        self.config = config
        self.variables = variables
        self.partial = partial
        self.watchdog_ms = watchdog_ms  # as loaded (None: the scheduler's own)
        # What the node's scx loader steps did (enums filled, .rodata set, the struct_ops map attached).
        self.loader = dict(loader or {})
        self.attach_events = attach_events
        self.attach_state = state or SchedExtState()
        # Every kernel event seen since the attach (the attach's own first).
        self.events: list[KernelEvent] = list(attach_events)
        self.detached: DetachResult | None = None
        self.detach_error: SchedcpError | None = None

    # -- while attached ---------------------------------------------------------------------
    def run(
        self, argv: list[str], timeout_s: float = 60.0, *, count_switches: bool = True, **options: Any
    ) -> RunResult:
        """Run a command under the policy (only its tasks are switched to sched_ext when partial)."""
        if self.partial:
            options.setdefault("sched_ext", True)
        return self.node.run(argv, timeout_s, count_switches=count_switches, **options)

    def poll(self) -> list[KernelEvent]:
        """New kernel events since the last look (kept in ``events`` too)."""
        new = self.node.events()
        self.events += new
        return new

    def ejections(self) -> list[KernelEvent]:
        """The kernel's ejections of this scheduler so far (never our own detach)."""
        self.poll()
        return ejections(self.events, self.ops_name)

    def still_enabled(self) -> bool:
        return self.check(wait_reason_s=0).stayed

    def check(self, wait_reason_s: float = EJECTION_REASON_WAIT_S) -> Health:
        """Judge the scheduler now: enabled under its name, not re-enabled since attach, not ejected.
        If it is leaving but the kernel has not logged why yet, wait up to wait_reason_s for it."""
        state = self.node.state()
        self.poll()
        ejected = ejections(self.events, self.ops_name)
        seq = self.attach_state.enable_seq  # unknown when the node's load answer carried no state
        stayed = state.runs(self.ops_name) and (seq is None or state.enable_seq == seq) and not ejected
        deadline = time.monotonic() + wait_reason_s
        while not stayed and not ejected and time.monotonic() < deadline:
            # The state can read 'disabling' a moment before the kernel logs the reason.
            time.sleep(0.2)
            self.poll()
            ejected = ejections(self.events, self.ops_name)
        return Health(stayed=stayed, state=state, ejections=ejected)

    def counters(self, names: list[str] | None = None) -> dict[str, int]:
        """Current values of the scheduler's 8-byte .bss/.data globals (or just `names`)."""
        sections = self.node.sections(self.handle)
        out: dict[str, int] = {}
        for var in self.variables.values():
            if names is not None and var.name not in names:
                continue
            if var.section not in (".bss", ".data") or var.size != 8:
                continue
            data = sections.get(var.section)
            if data is not None and var.offset + 8 <= len(data):
                out[var.name] = struct.unpack_from("<Q", data, var.offset)[0]
        return out

    # -- leaving ----------------------------------------------------------------------------
    def detach(self) -> DetachResult:
        """Close the scheduler on the node (idempotent); its detach events join ``events``."""
        if self.detached is None:
            self.detached = self.node.detach(self.handle)
            self.events += self.detached.kernel_events
        return self.detached

    def close(self) -> None:
        """Detach, keeping a failure in ``detach_error`` instead of raising it."""
        try:
            self.detach()
        except SchedcpError as exc:
            self.detach_error = exc

    @property
    def exit_reason(self) -> str | None:
        """The kernel's last stated reason for disabling this scheduler (ours included), if any."""
        for event in reversed(self.events):
            if event.kind == "disabled" and (not event.scheduler or event.scheduler == self.ops_name):
                return event.reason
        return None


def load(
    node: NodeClient,
    policy: Policy,
    *,
    config: dict[str, Any] | None = None,
    watchdog_ms: int | None = None,
    partial: bool = False,
    attach: bool = True,
) -> AttachedPolicy:
    """Upload, patch, load and (by default) attach; raises NodeOpError with the kernel's reason.
    Prefer ``attached()``, which also detaches."""
    if watchdog_ms is not None and not 100 <= watchdog_ms <= 30000:
        raise UsageError(f"timeout_ms={watchdog_ms} is out of range", "use 100..30000 (the kernel caps it at 30 s)")
    obj = policy.object_path
    patches, values = tunable_patches(obj, policy.meta, config or {})
    watchdog_ms = effective_watchdog_ms(policy, values, watchdog_ms)
    remote = node.put_file(f"obj/{obj.name}", obj.read_bytes())
    result = node.load(
        remote,
        patches=patches,
        timeout_ms=watchdog_ms,
        ops_flags=switch_partial_flag(policy.include_dir) if partial else 0,
        attach=attach,
        loader=policy.loader,
    )
    return AttachedPolicy(
        node,
        policy,
        handle=result.handle,
        ops_name=result.ops_name,
        config=values,
        variables=global_vars(obj),
        attach_events=result.kernel_events,
        state=result.state,
        partial=partial,
        loader={**result.loader, **({"struct_ops": result.struct_ops} if result.struct_ops else {})},
        watchdog_ms=watchdog_ms,
    )


def effective_watchdog_ms(policy: Policy, config: dict[str, Any], requested_ms: int | None) -> int | None:
    """The watchdog a gate asked for, raised to twice the policy's declared wait bound (see
    ``SchedulerMeta.wait_bound``): a policy that keeps tasks waiting by design, up to a bound it
    declares and the verifier checks, is not ejected by a shorter watchdog for doing exactly that.
    None (the scheduler's own watchdog) stays None."""
    if requested_ms is None or policy.meta is None:
        return requested_ms
    return max(requested_ms, policy.meta.watchdog_floor_ms(config))


@contextmanager
def attached(
    node: NodeClient,
    policy: Policy,
    *,
    config: dict[str, Any] | None = None,
    watchdog_ms: int | None = None,
    partial: bool = False,
    attach: bool = True,
) -> Iterator[AttachedPolicy]:
    """The policy attached for the block, detached after it (see the module docstring)."""
    pol = load(node, policy, config=config, watchdog_ms=watchdog_ms, partial=partial, attach=attach)
    try:
        yield pol
    finally:
        pol.close()


def failure_detail(exc: NodeOpError) -> str:
    """The telling part of a failed load or attach: the verifier's summary, else the kernel's reasons."""
    from schedcp.toolchain.verifier_log import summarize as verifier_summary

    return verifier_summary(exc.details.get("verifier_log") or []) or "; ".join(
        e.describe() for e in ejections(exc.kernel_events)
    )
