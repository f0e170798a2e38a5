# SPDX-License-Identifier: Apache-2.0
"""The daemon's side of probes: tracepoint probes need root, so agents reach them only here."""

from __future__ import annotations

from typing import Any

from schedcp.errors import UsageError

MAX_PROBE_S = 30.0


def run_probe(kind: str, duration_s: float, pid: int | None) -> dict[str, Any]:
    from schedcp.analysis import probes

    if not 0.05 <= duration_s <= MAX_PROBE_S:
        raise UsageError(f"duration_s={duration_s} is out of range", f"use 0.05..{MAX_PROBE_S:.0f}", code="usage")
    if pid is not None and not (isinstance(pid, int) and 1 <= pid <= 4194304):
        raise UsageError(f"pid={pid!r} is not a process id", "pass a positive integer pid", code="usage")
    return probes.run_probe([kind], duration_s, [pid] if pid else None)
