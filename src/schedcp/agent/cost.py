# SPDX-License-Identifier: Apache-2.0
"""What an optimisation run cost, per agent: model tokens, tool calls and bytes read.

Tokens only exist for LLM backends; tool calls and the bytes of tool answers put in front of an
agent are counted for every backend, the built-in one included, so runs with different backends
(and a naive agent that reads everything) can be compared on the same footing.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from schedcp.agent.llm import Usage

AGENTS = ("observation", "planning", "execution", "learning")


@dataclass
class AgentCost:
    llm_calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0
    request_bytes: int = 0
    tool_calls: int = 0
    tool_errors: int = 0
    bytes_read: int = 0
    wall_s: float = 0.0
    tools: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["wall_s"] = round(self.wall_s, 2)
        return out


class CostMeter:
    def __init__(self) -> None:
        self.agents: dict[str, AgentCost] = {}

    def of(self, agent: str) -> AgentCost:
        return self.agents.setdefault(agent, AgentCost())

    def llm(self, agent: str, usage: Usage, request_bytes: int = 0) -> None:
        c = self.of(agent)
        c.llm_calls += 1
        c.input_tokens += usage.input_tokens
        c.output_tokens += usage.output_tokens
        c.cache_read_tokens += usage.cache_read_tokens
        c.cache_write_tokens += usage.cache_write_tokens
        c.request_bytes += request_bytes

    def tool(self, agent: str, name: str, answer_bytes: int, error: bool) -> None:
        c = self.of(agent)
        c.tool_calls += 1
        c.tool_errors += int(error)
        c.bytes_read += answer_bytes
        c.tools[name] = c.tools.get(name, 0) + 1

    def timed(self, agent: str) -> _Timer:
        return _Timer(self.of(agent))

    def total(self) -> dict[str, Any]:
        keys = (
            "llm_calls",
            "input_tokens",
            "output_tokens",
            "cache_read_tokens",
            "cache_write_tokens",
            "request_bytes",
            "tool_calls",
            "tool_errors",
            "bytes_read",
        )
        out: dict[str, Any] = {k: sum(getattr(c, k) for c in self.agents.values()) for k in keys}
        out["wall_s"] = round(sum(c.wall_s for c in self.agents.values()), 2)
        return out

    def report(self) -> dict[str, Any]:
        return {"agents": {name: c.as_dict() for name, c in self.agents.items()}, "total": self.total()}


class _Timer:
    def __init__(self, cost: AgentCost) -> None:
        self.cost = cost

    def __enter__(self) -> _Timer:
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cost.wall_s += time.monotonic() - self._t0
