# SPDX-License-Identifier: Apache-2.0
"""Keep JSON answers under a byte budget: agents pay for every byte they read."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

# Stated budgets per detail level (compact JSON bytes). Tests and docs/analysis.md rely on these.
BUDGETS = {"summary": 1536, "profile": 4096, "full": 16384}


def size(obj: Any) -> int:
    return len(compact(obj).encode())


def compact(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), default=str)


def _longest_list(obj: Any, path: tuple = ()) -> tuple[tuple, int]:
    best: tuple[tuple, int] = ((), 0)
    if isinstance(obj, list):
        if len(obj) > 1:
            best = (path, size(obj))
        items: Iterable[tuple[Any, Any]] = enumerate(obj)
    elif isinstance(obj, dict):
        items = obj.items()
    else:
        return best
    for key, value in items:
        cand = _longest_list(value, (*path, key))
        if cand[1] > best[1]:
            best = cand
    return best


def _get(obj: Any, path: tuple) -> Any:
    for key in path:
        obj = obj[key]
    return obj


def fit(obj: dict[str, Any], limit: int, *, drop_order: tuple[str, ...] = ()) -> dict[str, Any]:
    """Shrink `obj` (a JSON-able dict) until its compact form is at most `limit` bytes.

    First drops the top-level keys named in `drop_order` (least important first), then halves the
    largest list repeatedly, then shortens long strings. Marks the result with "truncated": true.
    """
    doc = json.loads(compact(obj))
    if size(doc) <= limit:
        return doc
    for key in drop_order:
        if key in doc:
            del doc[key]
            doc["truncated"] = True
            if size(doc) <= limit:
                return doc
    doc["truncated"] = True
    for _ in range(200):
        if size(doc) <= limit:
            return doc
        path, _bytes = _longest_list(doc)
        if not path:
            break
        lst = _get(doc, path)
        del lst[max(1, len(lst) // 2) :]
    for _ in range(50):
        if size(doc) <= limit:
            return doc
        _shorten_strings(doc, max(16, limit // 20))
        limit_hit = size(doc)
        if limit_hit <= limit:
            return doc
        # last resort: drop the largest remaining top-level value
        biggest = max((k for k in doc if k != "truncated"), key=lambda k: size(doc[k]), default=None)
        if biggest is None:
            break
        del doc[biggest]
    return doc


def _shorten_strings(obj: Any, max_len: int) -> None:
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for key, value in list(items):
        if isinstance(value, str) and len(value) > max_len:
            obj[key] = value[: max_len - 1] + "…"
        elif isinstance(value, dict | list):
            _shorten_strings(value, max_len)
