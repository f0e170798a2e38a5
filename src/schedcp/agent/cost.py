# SPDX-License-Identifier: Apache-2.0
"""What an optimisation run cost, per agent and per iteration: tokens, tool calls, bytes, time, money.

Tokens only exist for LLM backends; tool calls and the bytes of tool answers put in front of an
agent are counted for every backend, the built-in one included, so runs with different backends
(and a naive agent that reads everything) can be compared on the same footing. Money is an
estimate: tokens (input, output, cache reads, cache writes) times a small per-model price table
shipped in ``prices.json``; a user's own table (``--prices FILE``, JSON or TOML, same shape, or
SCHEDCP_PRICES) overrides it entry by entry.
"""

from __future__ import annotations

import json
import os
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schedcp.agent.llm import Usage
from schedcp.errors import UsageError

TOTAL_KEYS = (
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
        self._t0 = time.monotonic()
        self._phase_start: tuple[dict[str, Any], float] = (self.total(), self._t0)
        self.phases: list[dict[str, Any]] = []

    def close_phase(self, name: str) -> dict[str, Any]:
        """The costs since the previous phase ended (an iteration, or observation and planning),
        with the phase's wall time; kept in ``phases``."""
        now, t = self.total(), time.monotonic()
        before, started = self._phase_start
        delta: dict[str, Any] = {"phase": name, **{k: now[k] - before[k] for k in TOTAL_KEYS}}
        delta["wall_s"] = round(t - started, 2)
        self._phase_start = (now, t)
        self.phases.append(delta)
        return delta

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
        out: dict[str, Any] = {k: sum(getattr(c, k) for c in self.agents.values()) for k in TOTAL_KEYS}
        out["agent_wall_s"] = round(sum(c.wall_s for c in self.agents.values()), 2)
        out["wall_s"] = round(time.monotonic() - self._t0, 2) if hasattr(self, "_t0") else out["agent_wall_s"]
        return out

    def report(self) -> dict[str, Any]:
        return {
            "agents": {name: c.as_dict() for name, c in self.agents.items()},
            "phases": self.phases,
            "total": self.total(),
        }


class _Timer:
    def __init__(self, cost: AgentCost) -> None:
        self.cost = cost

    def __enter__(self) -> _Timer:
        self._t0 = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cost.wall_s += time.monotonic() - self._t0


class ModelPrice(BaseModel):
    """US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0, le=10_000)
    output: float = Field(ge=0, le=10_000)
    cache_read: float = Field(0.0, ge=0, le=10_000)
    cache_write: float = Field(0.0, ge=0, le=10_000)


class PriceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    currency: str = Field("USD", max_length=8)
    per: str = Field("1M tokens", max_length=40)
    note: str = Field("", max_length=500)
    models: dict[str, ModelPrice] = Field(max_length=500)


DEFAULT_PRICES = Path(__file__).with_name("prices.json")


class PriceTable:
    """Per-model token prices: the shipped table, overridden entry by entry by the user's."""

    def __init__(self, models: dict[str, ModelPrice], source: str) -> None:
        self.models = models
        self.source = source

    @staticmethod
    def _read(path: Path) -> PriceFile:
        try:
            text = path.read_text()
            raw = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
            return PriceFile.model_validate(raw)
        except OSError as exc:
            raise UsageError(f"cannot read the price table {path}: {exc.strerror}", "give an existing file") from exc
        except (ValueError, tomllib.TOMLDecodeError) as exc:
            first = exc.errors()[0] if isinstance(exc, ValidationError) else None
            why = f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else str(exc)[:200]
            raise UsageError(
                f"the price table {path} is not valid: {why}",
                'use {"models": {"anthropic:MODEL": {"input": 3.0, "output": 15.0, "cache_read": 0.3, '
                '"cache_write": 3.75}}} (USD per million tokens), as JSON or TOML',
            ) from exc

    @classmethod
    def load(cls, override: Path | None = None) -> PriceTable:
        table = dict(cls._read(DEFAULT_PRICES).models)
        source = "built-in"
        path = override or (Path(os.environ["SCHEDCP_PRICES"]) if os.environ.get("SCHEDCP_PRICES") else None)
        if path is not None:
            table.update(cls._read(path).models)
            source = f"built-in + {path}"
        return cls(table, source)

    def lookup(self, model: str) -> tuple[str, ModelPrice] | None:
        """The exact 'provider:model' entry, else the longest entry the name starts with (dated versions)."""
        if model in self.models:
            return model, self.models[model]
        matches = [k for k in self.models if model.startswith(k)]
        if not matches:
            return None
        key = max(matches, key=len)
        return key, self.models[key]

    def price(self, counts: dict[str, Any], model: str) -> dict[str, Any]:
        """``counts`` (a phase or the total) priced for ``model``; builtin costs nothing."""
        out = dict(counts)
        if model == "builtin":
            out["usd"] = 0.0
            return out
        found = self.lookup(model)
        if found is None:
            out["usd"] = None
            out["price_note"] = f"no price for {model}; add it with --prices FILE"
            return out
        key, p = found
        usd = (
            counts.get("input_tokens", 0) * p.input
            + counts.get("output_tokens", 0) * p.output
            + counts.get("cache_read_tokens", 0) * p.cache_read
            + counts.get("cache_write_tokens", 0) * p.cache_write
        ) / 1e6
        out["usd"] = round(usd, 6)
        out["priced_as"] = key
        return out
