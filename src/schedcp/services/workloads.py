# SPDX-License-Identifier: Apache-2.0
"""The built-in guest workloads an agent can name, and reading their metrics.

Each module in ``schedcp/bench/guest`` runs in the micro-VM as ``python3 -m schedcp_workloads.NAME``
and prints ``{"workload": ..., "metrics": {...}}`` as its last line. Names come from the files
themselves, so a new workload is usable over MCP without touching the server.
"""

from __future__ import annotations

import ast
import functools
import re
from typing import Any

from schedcp.errors import UsageError
from schedcp.paths import package_dir

MAX_METRICS = 40
_ARG = re.compile(r"^[A-Za-z0-9_.,=:+/-]{1,128}$")


@functools.cache
def builtin() -> dict[str, str]:
    """name -> first line of the module's docstring."""
    folder = package_dir() / "bench" / "guest"
    out: dict[str, str] = {}
    for path in sorted(folder.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        except (OSError, SyntaxError):
            continue
        out[path.stem] = doc.strip().splitlines()[0] if doc.strip() else path.stem
    return out


def argv_for(name: str, args: list[str]) -> list[str]:
    known = builtin()
    if name not in known:
        raise UsageError(f"unknown workload {name!r}", f"use one of: {', '.join(known)}")
    for arg in args:
        if not _ARG.match(arg):
            raise UsageError(
                f"workload argument {arg[:40]!r} has characters that are not allowed",
                "use plain options such as --seconds 2 or --workers=4",
            )
    return ["python3", "-m", f"schedcp_workloads.{name}", *args]


def parse_metrics(stdout: str) -> dict[str, float]:
    """Numeric metrics of the workload's result line (flattened, bounded); {} when it printed none."""
    from schedcp.bench.harness import parse_output

    doc = parse_output(stdout)
    if doc is None:
        return {}
    out: dict[str, float] = {}
    _flatten(doc["metrics"] if isinstance(doc.get("metrics"), dict) else doc, "", out)
    return out


def _flatten(node: Any, prefix: str, out: dict[str, float]) -> None:
    if len(out) >= MAX_METRICS:
        return
    if isinstance(node, bool):
        return
    if isinstance(node, int | float):
        out[prefix or "value"] = float(node)
    elif isinstance(node, dict):
        for key, value in node.items():
            _flatten(value, f"{prefix}.{key}" if prefix else str(key), out)
    elif isinstance(node, list):
        for i, value in enumerate(node[:16]):
            name = value.get("name") if isinstance(value, dict) else None
            label = name if isinstance(name, str) else str(i)
            _flatten(value, f"{prefix}.{label}" if prefix else label, out)
