# SPDX-License-Identifier: Apache-2.0
"""The control-plane half of loading a scheduler the way the scx userspace loaders do.

The node does the generic steps against the kernel that runs the program (``node/scxload.py``).
This module owns what the caller chooses and how long to wait:

* ``LoaderOptions``: the ``struct_ops`` map to attach when an object has several, ``.rodata``
  values a user sets (``--rodata NAME=VALUE``, parsed by the variable's BTF type and range-checked
  here, before any VM boots), and switches for the node's generic steps;
* ``run_load``: a load whose deadline follows the kernel's verifier. The node verifies in the
  background and answers every ``poll_s`` with how many of the object's programs the kernel has
  accepted; we keep waiting while that number moves and give up only when it has not moved for
  ``stall_s``, or past a budget that grows with the number of programs. Under emulation the
  verifier took more than a minute for the kernel's scx_qmap; a fixed 60 s read that as a hang.
  A guest that stops answering at all is still caught by each poll's own short deadline.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from elftools.elf.elffile import ELFFile

from schedcp.errors import SchedcpError, UsageError
from schedcp.node.btf import Btf, BtfError, DatasecVar

ENUM_PREFIX = "__SCX_"
MAX_RODATA_VALUES = 64
# const volatile globals a user may set: plain C identifiers (not the static format strings the
# scx_bpf_error() macros put in .rodata, whose names carry dots or leading underscores).
_SETTABLE = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class LoaderOptions:
    """What the node's loader is asked to do beyond open/load/attach (see node/scxload.py)."""

    struct_ops: str | None = None
    rodata: dict[str, bytes] = field(default_factory=dict)
    enums: bool = True
    cpu_counts: bool = True
    ops_compat: bool = True
    hotplug: bool = True
    uei_dump_len: int = 8192
    # The target kernel's SCX enumerators with the sha256 of its BTF, read here from the test
    # kernel's vmlinux: the node uses them only if its /sys/kernel/btf/vmlinux has that hash.
    kernel_enums: dict[str, Any] | None = None

    def node_args(self) -> dict[str, Any]:
        import base64

        args: dict[str, Any] = {
            "steps": {
                "enums": self.enums,
                "cpu_counts": self.cpu_counts,
                "ops_compat": self.ops_compat,
                "hotplug": self.hotplug,
                "uei_dump_len": self.uei_dump_len,
            }
        }
        if self.kernel_enums:
            args["steps"]["kernel_enums"] = self.kernel_enums
        if self.struct_ops:
            args["struct_ops"] = self.struct_ops
        if self.rodata:
            args["rodata"] = {k: base64.b64encode(v).decode() for k, v in self.rodata.items()}
        return args


@dataclass(frozen=True)
class LoadDeadline:
    """How long a load may take, as a function of what the verifier is doing."""

    poll_s: float = 15.0  # the node answers at least this often while verifying
    stall_s: float = 240.0  # no program accepted for this long: give up
    base_s: float = 90.0  # overall budget: base + per_program * programs, capped
    per_program_s: float = 45.0
    cap_s: float = 1800.0
    answer_margin_s: float = 45.0  # beyond poll_s, before a silent guest counts as hung

    def budget(self, programs: int) -> float:
        return min(self.cap_s, self.base_s + self.per_program_s * max(1, programs))


def object_btf(obj: Path) -> Btf:
    with obj.open("rb") as fh:
        try:
            elf = ELFFile(fh)
            section = elf.get_section_by_name(".BTF")
            data = section.data() if section is not None else None
        except Exception as exc:
            raise UsageError(f"{obj} is not a BPF ELF object: {exc}", "pass a clang -target bpf object") from exc
    if data is None:
        raise UsageError(f"{obj} has no BTF", "compile with -g")
    try:
        return Btf(data)
    except BtfError as exc:
        raise UsageError(f"{obj}'s BTF cannot be read: {exc}", "rebuild it with clang -g") from exc


def struct_ops_maps(obj: Path) -> list[str]:
    """Names of the object's struct_ops variables (each becomes a struct_ops map)."""
    btf = object_btf(obj)
    names: list[str] = []
    for section in btf.datasec_names():
        if section.startswith(".struct_ops"):
            names += [v.name for v in btf.datasec(section)]
    return names


def _encode(var: DatasecVar, btf: Btf, text: str) -> bytes:
    scalar = btf.scalar(var.type_id)
    value = text.strip()
    if scalar.kind == "bool":
        if value.lower() in _TRUE:
            return b"\x01".ljust(scalar.size, b"\0")
        if value.lower() in _FALSE:
            return b"\0" * scalar.size
        raise UsageError(f"--rodata {var.name}={text}: {var.name} is a bool", "use true/false or 1/0")
    if scalar.kind in ("int", "enum"):
        try:
            number = int(value, 0)
        except ValueError as exc:
            raise UsageError(
                f"--rodata {var.name}={text}: {var.name} is {scalar.type_name} ({scalar.size} bytes)",
                "give an integer (decimal or 0x hex)",
            ) from exc
        bits = scalar.size * 8
        lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if scalar.signed else (0, (1 << bits) - 1)
        if not lo <= number <= hi:
            raise UsageError(
                f"--rodata {var.name}={number} is out of range for {scalar.type_name} ({lo}..{hi})",
                f"give a value in {lo}..{hi}",
            )
        return number.to_bytes(scalar.size, "little", signed=scalar.signed)
    if scalar.kind == "char_array":
        raw = value.encode()
        if len(raw) >= scalar.size or b"\0" in raw:
            raise UsageError(f"--rodata {var.name}: the string must be shorter than {scalar.size} bytes", "shorten it")
        return raw.ljust(scalar.size, b"\0")
    raise UsageError(
        f"--rodata {var.name}: {scalar.type_name} is not a scalar SchedCP can set",
        "only integers, bools and char arrays can be set from the command line",
    )


def typed_rodata(obj: Path, assignments: dict[str, str]) -> dict[str, bytes]:
    """``NAME=VALUE`` pairs checked against the object's ``.rodata`` BTF and encoded."""
    if not assignments:
        return {}
    if len(assignments) > MAX_RODATA_VALUES:
        raise UsageError(f"at most {MAX_RODATA_VALUES} --rodata values", "set fewer")
    btf = object_btf(obj)
    variables = {v.name: v for v in btf.datasec(".rodata")}
    out: dict[str, bytes] = {}
    for name, text in assignments.items():
        if name.startswith(ENUM_PREFIX):
            raise UsageError(
                f"--rodata {name}: the scx enum variables are filled from the target kernel's BTF",
                "drop it; SchedCP sets every __SCX_* variable itself",
            )
        var = variables.get(name) if _SETTABLE.fullmatch(name) else None
        if var is None:
            settable = sorted(n for n in variables if _SETTABLE.fullmatch(n) and not n.startswith(ENUM_PREFIX))
            raise UsageError(
                f"--rodata {name}: the object has no const volatile variable of that name",
                f"settable: {', '.join(settable[:20]) or 'none'}",
            )
        out[name] = _encode(var, btf, text)
    return out


def options_for(
    obj: Path, *, rodata: dict[str, str] | None = None, struct_ops: str | None = None, kernel=None
) -> LoaderOptions:
    """LoaderOptions from what a user typed, checked against the object before anything boots.
    With a cached test kernel, its SCX enum values go along (see LoaderOptions.kernel_enums)."""
    if struct_ops is not None:
        maps = struct_ops_maps(obj)
        if struct_ops not in maps:
            raise UsageError(
                f"--struct-ops {struct_ops}: the object has no such struct_ops map", f"choose one of {maps}"
            )
    enums = None
    if kernel is not None and any(v.name.startswith(ENUM_PREFIX) for v in object_btf(obj).datasec(".rodata")):
        enums = kernel_enum_values(kernel.vmlinux, kernel.dir / "scx-enums.json")
    return LoaderOptions(struct_ops=struct_ops, rodata=typed_rodata(obj, rodata or {}), kernel_enums=enums)


def kernel_enum_values(vmlinux: Path, cache: Path | None = None) -> dict[str, Any]:
    """{"btf_sha256", "values"}: a kernel's SCX_* enumerators from its vmlinux's .BTF (cached)."""
    import hashlib
    import json

    st = vmlinux.stat()
    stamp = f"{st.st_size}:{st.st_mtime_ns}"
    if cache is not None and cache.is_file():
        data = json.loads(cache.read_text())
        if data.get("stamp") == stamp:
            return {"btf_sha256": data["btf_sha256"], "values": data["values"]}
    with vmlinux.open("rb") as fh:
        section = ELFFile(fh).get_section_by_name(".BTF")
        raw = section.data() if section is not None else b""
    if not raw:
        raise UsageError(f"{vmlinux} has no .BTF section", "use a kernel built with CONFIG_DEBUG_INFO_BTF=y")
    result = {"btf_sha256": hashlib.sha256(raw).hexdigest(), "values": Btf(raw).enum_constants("SCX_")}
    if cache is not None:
        cache.write_text(json.dumps({"stamp": stamp, **result}))
    return result


def run_load(
    call: Callable[..., dict[str, Any]],
    args: dict[str, Any],
    deadline: LoadDeadline | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the node's ``load`` op to completion with a deadline that follows the verifier.

    `call(op, args, timeout_s=...)` is a node client's call. Raises NodeOpError as the node does,
    or SchedcpError(code="load_timeout") when the verifier stops making progress.
    """
    d = deadline or LoadDeadline()
    started = time.monotonic()
    reply = call("load", {**args, "wait_s": d.poll_s}, timeout_s=d.poll_s + d.answer_margin_s)
    last_loaded, last_change = -1, started
    while reply.get("pending"):
        info = reply.get("progress") or {}
        loaded, programs = int(info.get("programs_loaded") or 0), int(info.get("programs") or 0)
        now = time.monotonic()
        if loaded != last_loaded:
            last_loaded, last_change = loaded, now
        elapsed = now - started
        if progress:
            progress(f"kernel verifier: {loaded}/{programs} programs accepted after {elapsed:.0f}s")
        if now - last_change > d.stall_s or elapsed > d.budget(programs):
            raise SchedcpError(
                f"the kernel's verifier accepted {loaded} of {programs} programs in {elapsed:.0f}s and "
                f"made no progress for {now - last_change:.0f}s",
                "the program is too complex for the verifier on this machine; simplify loops and branches",
                code="load_timeout",
            )
        reply = call("load_wait", {"job": reply["job"], "wait_s": d.poll_s}, timeout_s=d.poll_s + d.answer_margin_s)
    return reply


def exit_summary(exit_info: dict[str, Any] | None) -> str:
    """The scheduler's own exit record in one line (reason, message, CPU), as the node words it."""
    from schedcp.node.scxload import describe

    return describe(exit_info) if exit_info else ""


def split_config(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str], str | None]:
    """A verified config as the token binds it -> (tunables, .rodata values, struct_ops choice).

    The verifier binds ``rodata.NAME`` entries and ``struct_ops`` next to the tunables; a deploy
    hands the last two to ``options_for`` so the object is loaded exactly as it was verified.
    """
    tunables: dict[str, Any] = {}
    rodata: dict[str, str] = {}
    choice: str | None = None
    for key, value in config.items():
        if key.startswith("rodata."):
            rodata[key.removeprefix("rodata.")] = str(value)
        elif key == "struct_ops":
            choice = str(value)
        else:
            tunables[key] = value
    return tunables, rodata, choice
