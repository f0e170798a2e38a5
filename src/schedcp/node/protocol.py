# SPDX-License-Identifier: Apache-2.0
"""Wire format between the control plane and a node agent: one JSON object per line.

Request:  {"id": 7, "op": "run", "args": {...}}
Response: {"id": 7, "ok": true, "result": {...}}
          {"id": 7, "ok": false, "error": {"code": "...", "cause": "...", "next_step": "..."}}
"""

from __future__ import annotations

import json
from typing import Any

PROTOCOL_VERSION = 1
PORT_NAME = "org.schedcp.node"
# A single message may carry a BPF object or captured output; anything bigger is refused.
MAX_MESSAGE_BYTES = 32 * 1024 * 1024


class NodeError(Exception):
    """An operation failed on the node; carries the same fields as SchedcpError."""

    def __init__(self, code: str, cause: str, next_step: str = "", **details: Any) -> None:
        super().__init__(cause)
        self.code = code
        self.cause = cause
        self.next_step = next_step
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "cause": self.cause, "next_step": self.next_step}
        if self.details:
            out["details"] = self.details
        return out


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    message = json.loads(line)
    if not isinstance(message, dict):
        raise ValueError("message is not a JSON object")
    return message
