# SPDX-License-Identifier: Apache-2.0
"""The server's log of tool calls: one JSON line per call, in the order calls finished.

Every tool call a client makes is logged (tool, arguments, ok or the error code, answer bytes,
milliseconds) to the ``schedcp.server.calls`` logger and, when configured (``--call-log PATH`` or
SCHEDCP_MCP_CALL_LOG), appended to a file. An optimisation run can then be audited call by call,
and replayed by any MCP client. Large arguments (C sources) are logged by digest and size only.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

from mcp_types import CallToolResult

MAX_LOGGED_ARGS = 16 * 1024
_ERROR_CODE_PREFIX = "error ("

log = logging.getLogger("schedcp.server.calls")


def _code(result: Any) -> str | None:
    if not isinstance(result, CallToolResult) or not result.is_error:
        return None
    text = result.content[0].text if result.content and hasattr(result.content[0], "text") else ""
    if text.startswith(_ERROR_CODE_PREFIX):
        return text[len(_ERROR_CODE_PREFIX) :].split(")", 1)[0][:40]
    return "error"


def _created_ids(result: Any) -> dict[str, str]:
    """Ids an answer hands out (testbed_id, build_id, trial_id, run_id, ...), so a replay can map them."""
    data = getattr(result, "structured_content", None)
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if k.endswith("_id") and isinstance(v, str) and len(v) <= 80}


def _answer_bytes(result: Any) -> int:
    if not isinstance(result, CallToolResult):
        return 0
    return sum(len(getattr(c, "text", "").encode()) for c in result.content)


class CallLog:
    def __init__(self, path: Path | None = None) -> None:
        env = os.environ.get("SCHEDCP_MCP_CALL_LOG")
        self.path = path or (Path(env) if env else None)
        self._lock = threading.Lock()
        self.seq = 0

    def record(self, tool: str, arguments: dict[str, Any], result: Any, started: float) -> dict[str, Any]:
        text = json.dumps(arguments, separators=(",", ":"), sort_keys=True, default=str)
        entry: dict[str, Any] = {"tool": tool}
        if len(text) <= MAX_LOGGED_ARGS:
            entry["arguments"] = arguments
        else:
            entry["arguments_sha256"] = hashlib.sha256(text.encode()).hexdigest()
            entry["arguments_bytes"] = len(text)
        code = _code(result)
        entry.update(
            ok=code is None,
            code=code,
            ids=_created_ids(result),
            bytes=_answer_bytes(result),
            ms=round((time.monotonic() - started) * 1000, 1),
        )
        with self._lock:
            self.seq += 1
            entry = {"seq": self.seq, "at": round(time.time(), 3), **entry}
            line = json.dumps(entry, separators=(",", ":"), default=str)
            if self.path is not None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                with self.path.open("a") as handle:
                    handle.write(line + "\n")
        log.info("%s", line)
        return entry


def read(path: Path) -> list[dict[str, Any]]:
    """The entries of a call log file, in order."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def substitute(value: Any, ids: dict[str, str]) -> Any:
    """``value`` with every id string from an earlier run replaced by its counterpart (for replays)."""
    if isinstance(value, str):
        return ids.get(value, value)
    if isinstance(value, list):
        return [substitute(v, ids) for v in value]
    if isinstance(value, dict):
        return {k: substitute(v, ids) for k, v in value.items()}
    return value
