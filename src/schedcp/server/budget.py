# SPDX-License-Identifier: Apache-2.0
"""Output budgets: every tool answer fits in a stated number of bytes, and says when it was cut.

Agents pay for every byte a tool returns, and a flood of detail makes them worse at the task, so
each tool renders its answer as compact JSON within ``max_bytes`` (default 4 KB; the range is the
operations', ``schedcp.services.operation``). When the answer is larger, the biggest lists and
strings are halved until it fits, and a ``truncated`` note names what was cut and how to ask for
more. Long text is not lost: files are paged with ``offset`` (read_file) and complete command
output is kept as a resource (schedcp://run/{id}).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from mcp_types import CallToolResult, TextContent

# The budget range is the operations' (an input model may declare max_bytes itself); re-exported here.
from schedcp.services.operation import DEFAULT_MAX_BYTES as DEFAULT_MAX_BYTES
from schedcp.services.operation import LIMIT_MAX_BYTES as LIMIT_MAX_BYTES
from schedcp.services.operation import MIN_MAX_BYTES as MIN_MAX_BYTES

_MIN_STRING = 48  # strings shorter than this are not worth cutting


def dumps(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, default=str)


def size(data: Any) -> int:
    return len(dumps(data).encode())


@dataclass
class _Cut:
    path: str
    kind: str  # "list" or "text"
    kept: int
    total: int


def _measure(node: Any, path: str, out: list[tuple[int, str, Any, Any]], parent: Any, key: Any) -> int:
    """Serialised size of ``node``, computed from its parts in one pass (no re-serialising subtrees);
    collects every list with more than one item and every long string as a candidate to shrink."""
    if isinstance(node, dict):
        total = 2 + max(0, len(node) - 1)  # braces and commas
        for k, v in node.items():
            total += len(dumps(k).encode()) + 1
            total += _measure(v, f"{path}.{k}" if path else str(k), out, node if k != "truncated" else None, k)
        return total
    if isinstance(node, list):
        total = 2 + max(0, len(node) - 1)
        for i, v in enumerate(node):
            total += _measure(v, f"{path}[{i}]", out, node, i)
        if len(node) > 1 and parent is not None:
            out.append((total, path, parent, key))
        return total
    n = len(dumps(node).encode())
    if isinstance(node, str) and len(node) > _MIN_STRING and parent is not None:
        out.append((n, path, parent, key))
    return n


def _shrink_once(data: dict[str, Any], cuts: dict[str, _Cut]) -> bool:
    found: list[tuple[int, str, Any, Any]] = []
    _measure(data, "", found, None, None)
    if not found:
        return False
    _, path, parent, key = max(found, key=lambda c: c[0])
    value = parent[key]
    previous = cuts.get(path)
    total = previous.total if previous else len(value)
    if isinstance(value, list):
        keep = len(value) // 2
        parent[key] = value[:keep]
        cuts[path] = _Cut(path, "list", keep, total)
    else:
        keep = max(_MIN_STRING // 2, len(value) // 2)
        parent[key] = value[:keep]
        cuts[path] = _Cut(path, "text", keep, total)
    return True


def _note(cuts: dict[str, _Cut], max_bytes: int, hint: str) -> dict[str, Any]:
    items = []
    for cut in list(cuts.values())[:8]:
        unit = "items" if cut.kind == "list" else "chars"
        items.append(f"{cut.path[:60]}: kept {cut.kept} of {cut.total} {unit}")
    more = f" (+{len(cuts) - 8} more)" if len(cuts) > 8 else ""
    return {
        "max_bytes": max_bytes,
        "cut": items,
        "note": f"output cut to fit max_bytes={max_bytes}{more}; {hint}",
    }


def fit(data: dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES, *, hint: str = "") -> dict[str, Any]:
    """A copy of ``data`` whose compact JSON is at most ``max_bytes`` long, with a note if cut."""
    hint = hint or f"ask again with a larger max_bytes (up to {LIMIT_MAX_BYTES}) or a narrower query"
    if size(data) <= max_bytes:
        return data
    work = json.loads(dumps(data))  # deep copy with everything JSON-shaped
    cuts: dict[str, _Cut] = {}
    while True:
        work["truncated"] = _note(cuts, max_bytes, hint)
        if size(work) <= max_bytes:
            return work
        del work["truncated"]
        if not _shrink_once(work, cuts):
            break
    # Nothing left to halve (many small fields): keep the top-level fields that fit, in order.
    note: dict[str, Any] = {
        "max_bytes": max_bytes,
        "note": f"output cut to fit max_bytes={max_bytes}; {hint}"[:300],
        "dropped_keys": 0,
    }
    slim: dict[str, Any] = {"truncated": note}
    for k, v in work.items():
        slim[k] = v
        if size(slim) > max_bytes:
            del slim[k]
            note["dropped_keys"] += 1
    return slim


def respond(data: dict[str, Any], max_bytes: int = DEFAULT_MAX_BYTES, *, hint: str = "") -> CallToolResult:
    """A successful tool result: compact JSON text within budget, mirrored as structured content."""
    fitted = fit(data, max_bytes, hint=hint)
    return CallToolResult(content=[TextContent(type="text", text=dumps(fitted))], structured_content=fitted)


def error_result(cause: str, next_step: str = "", code: str = "error") -> CallToolResult:
    """A tool error an agent can act on: one line of cause, one line of what to do next."""
    text = f"error ({code}): {cause}"
    if next_step:
        text += f"\nnext: {next_step}"
    return CallToolResult(content=[TextContent(type="text", text=text[:2000])], is_error=True)
