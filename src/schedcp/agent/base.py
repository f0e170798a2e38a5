# SPDX-License-Identifier: Apache-2.0
"""What the four agents share: a context of their own, a toolbox, a narrator, an optional model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schedcp.agent.cost import CostMeter
from schedcp.agent.driver import run_llm_agent
from schedcp.agent.llm import ChatModel
from schedcp.agent.toolbox import Tool, ToolBox
from schedcp.agent.tools import Services

Narrate = Callable[[str, str], None]  # (agent, one line of what it did and why)


class Agent:
    name = "agent"
    system = ""
    max_turns = 12
    max_tokens = 2048  # per model reply; agents that may write C source need more

    def __init__(
        self,
        services: Services,
        meter: CostMeter,
        model: ChatModel | None = None,
        narrate: Narrate = lambda _a, _m: None,
    ) -> None:
        self.services = services
        self.meter = meter
        self.model = model
        self._narrate = narrate
        self.steps: list[str] = []

    def say(self, message: str) -> None:
        self.steps.append(message)
        self._narrate(self.name, message)

    def toolbox(self, tools: list[Tool]) -> ToolBox:
        return ToolBox(self.name, tools, self.meter)

    def drive(self, box: ToolBox, task: str) -> dict[str, Any]:
        """Let the model work the toolbox until it calls the finish tool."""
        assert self.model is not None
        return run_llm_agent(
            self.model,
            self.name,
            self.system,
            task,
            box,
            self.meter,
            max_turns=self.max_turns,
            max_tokens=self.max_tokens,
        )
