# SPDX-License-Identifier: Apache-2.0
"""What the four agents share: a context of their own, an MCP tool box, a narrator, an optional model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from schedcp.agent.client import SchedcpClient
from schedcp.agent.cost import CostMeter
from schedcp.agent.driver import run_llm_agent
from schedcp.agent.llm import ChatModel
from schedcp.agent.toolbox import Guard, Observer, Tool, ToolBox
from schedcp.services.models import TestbedInfo

Narrate = Callable[[str, str], None]  # (agent, one line of what it did and why)


class Agent:
    name = "agent"
    system = ""
    max_turns = 12
    max_tokens = 2048  # per model reply; agents that may write C source need more

    def __init__(
        self,
        client: SchedcpClient,
        testbed: TestbedInfo,
        meter: CostMeter,
        model: ChatModel | None = None,
        narrate: Narrate = lambda _a, _m: None,
    ) -> None:
        self.client = client
        self.testbed = testbed
        self.meter = meter
        self.model = model
        self._narrate = narrate
        self.steps: list[str] = []

    def say(self, message: str) -> None:
        self.steps.append(message)
        self._narrate(self.name, message)

    def toolbox(
        self,
        local: list[Tool],
        *,
        bound: dict[str, Any] | None = None,
        guards: dict[str, Guard] | None = None,
        observers: dict[str, Observer] | None = None,
    ) -> ToolBox:
        """The role's SchedCP tools (bound to this run's testbed) plus the agent's own tools."""
        return ToolBox(
            self.name,
            self.client,
            self.meter,
            local=local,
            bound={"testbed_id": self.testbed.testbed_id, **(bound or {})},
            guards=guards or {},
            observers=observers or {},
        )

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
