# SPDX-License-Identifier: Apache-2.0
"""Attaching a built scheduler through a node agent, with tunables, and reading its counters."""

from __future__ import annotations

import base64
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedcp.errors import UsageError
from schedcp.toolchain.metadata import TYPE_SIZES, SchedulerMeta
from schedcp.toolchain.objinfo import GlobalVar, global_vars

# Value of SCX_OPS_SWITCH_PARTIAL when the target's vmlinux.h is not at hand (stable since 6.12).
SWITCH_PARTIAL_DEFAULT = 1 << 3
_FORMATS = {"u8": "<B", "u16": "<H", "u32": "<I", "u64": "<Q", "s32": "<i", "s64": "<q", "bool": "<B"}


@dataclass
class Attached:
    handle: int
    ops_name: str
    object_path: Path
    variables: dict[str, GlobalVar]
    config: dict[str, int | str]
    kernel_events: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)


def tunable_patches(obj: Path, meta: SchedulerMeta | None, config: dict[str, Any]) -> tuple[list[dict], dict]:
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
    if include_dir is not None and (include_dir / "vmlinux.h").exists():
        m = re.search(r"SCX_OPS_SWITCH_PARTIAL = (\d+)", (include_dir / "vmlinux.h").read_text(errors="replace"))
        if m:
            return int(m.group(1))
    return SWITCH_PARTIAL_DEFAULT


def attach(
    node,
    obj: Path,
    *,
    meta: SchedulerMeta | None = None,
    config: dict[str, Any] | None = None,
    timeout_ms: int | None = None,
    partial: bool = False,
    include_dir: Path | None = None,
    attach: bool = True,
) -> Attached:
    """Upload, patch, load and attach; raises NodeOpError with the kernel's reason on failure."""
    if timeout_ms is not None and not 100 <= timeout_ms <= 30000:
        raise UsageError(f"timeout_ms={timeout_ms} is out of range", "use 100..30000 (the kernel caps it at 30 s)")
    patches, values = tunable_patches(obj, meta, config or {})
    remote = node.put_file(f"obj/{obj.name}", obj.read_bytes())
    args: dict[str, Any] = {"path": remote, "patches": patches, "attach": attach}
    if timeout_ms is not None:
        args["timeout_ms"] = timeout_ms
    if partial:
        args["ops_flags"] = switch_partial_flag(include_dir)
    result = node.call("load", args, timeout_s=60)
    return Attached(
        handle=result["handle"],
        ops_name=result.get("ops_name") or "",
        object_path=obj,
        variables=global_vars(obj),
        config=values,
        kernel_events=result.get("kernel_events", []),
        state=result.get("state", {}),
    )


def read_counters(node, attached: Attached, names: list[str] | None = None) -> dict[str, int]:
    """Current values of the scheduler's 8-byte .bss/.data globals (or just `names`)."""
    raw = node.call("sections", {"handle": attached.handle})["sections"]
    sections = {k: base64.b64decode(v) for k, v in raw.items()}
    out: dict[str, int] = {}
    for var in attached.variables.values():
        if names is not None and var.name not in names:
            continue
        if var.section not in (".bss", ".data") or var.size != 8:
            continue
        data = sections.get(var.section)
        if data is not None and var.offset + 8 <= len(data):
            out[var.name] = struct.unpack_from("<Q", data, var.offset)[0]
    return out


def detach(node, attached: Attached) -> dict[str, Any]:
    return node.call("detach", {"handle": attached.handle}, timeout_s=30)
