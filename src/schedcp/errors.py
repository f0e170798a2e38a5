# SPDX-License-Identifier: Apache-2.0
"""One error type for everything a user or an agent can cause or fix.

Every failure SchedCP reports carries a one-line cause and the next step to take, so the CLI,
the MCP server and the agent can show it without a traceback.
"""

from __future__ import annotations


class SchedcpError(Exception):
    """A failure with a human-readable cause and a concrete next step."""

    def __init__(self, cause: str, next_step: str = "", *, code: str = "error") -> None:
        super().__init__(cause)
        self.cause = cause
        self.next_step = next_step
        self.code = code

    def __str__(self) -> str:
        return f"{self.cause} (next: {self.next_step})" if self.next_step else self.cause

    def to_dict(self) -> dict[str, str]:
        return {"error": self.code, "cause": self.cause, "next_step": self.next_step}


class UsageError(SchedcpError):
    """Bad arguments or input from the caller; maps to exit code 2."""

    def __init__(self, cause: str, next_step: str = "", *, code: str = "usage") -> None:
        super().__init__(cause, next_step, code=code)


class NotReadyError(SchedcpError):
    """A prerequisite (kernel, image, tool) is missing; the next step says how to get it."""

    def __init__(self, cause: str, next_step: str = "", *, code: str = "not_ready") -> None:
        super().__init__(cause, next_step, code=code)
