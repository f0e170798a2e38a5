# SPDX-License-Identifier: Apache-2.0
"""The stdio transport, with every request answered.

JSON may carry ``\\ud800``, a UTF-16 surrogate with no partner: not a Unicode character, so the
SDK's strict JSON parser rejects the whole line and, not knowing its id, never answers; the
client waits forever. Bad *bytes* on stdin are already replaced (the SDK decodes with
``errors="replace"``); this does the same for lone surrogate escapes, before the SDK sees the
line: they become U+FFFD, the replacement character, and the request is answered like any other
(a name with U+FFFD fails its pattern with a clean error; a search just has one odd character).

How: fd 0 is swapped for a pipe before the SDK claims it, and a thread copies the real stdin
into the pipe line by line, rewriting only lines that contain a surrogate escape.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

_SURROGATE_HINT = (b"\\ud8", b"\\ud9", b"\\uda", b"\\udb", b"\\udc", b"\\udd", b"\\ude", b"\\udf")


def _clean(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in value)
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return value


def clean_line(line: bytes) -> bytes:
    """The same JSON-RPC line with lone surrogates replaced by U+FFFD (unchanged when it has none)."""
    lowered = line.lower()
    if not any(hint in lowered for hint in _SURROGATE_HINT):
        return line
    try:
        message = json.loads(line)
    except ValueError:
        return line  # not JSON: the SDK answers with a parse error itself
    cleaned = json.dumps(_clean(message), ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return cleaned + b"\n"


def _pump(source: int, sink: int) -> None:
    with os.fdopen(source, "rb", buffering=0) as src, os.fdopen(sink, "wb") as dst:
        for line in iter(src.readline, b""):
            try:
                dst.write(clean_line(line))
                dst.flush()
            except BrokenPipeError:
                return


def run(server: Any) -> None:
    """``server.run("stdio")`` behind the cleaning pump."""
    original = os.dup(0)
    read_end, write_end = os.pipe()
    os.dup2(read_end, 0)
    os.close(read_end)
    threading.Thread(target=_pump, args=(original, write_end), name="schedcp-stdin", daemon=True).start()
    server.run("stdio")
