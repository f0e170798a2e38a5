# SPDX-License-Identifier: Apache-2.0
"""The tool-calling loop that runs one LLM-backed agent until it calls its finish tool.

Each turn the model sees its own context only (system prompt, task, its tool calls and their
answers), never the other agents' conversations. Bad tool calls (unknown tool, malformed JSON,
arguments that fail validation, a service refusing the request) are answered with an error
message the model can act on. The loop is capped in turns; running out is an ``AgentError``.
"""

from __future__ import annotations

from schedcp.agent.cost import CostMeter
from schedcp.agent.llm import ChatModel, Message
from schedcp.agent.toolbox import ToolBox
from schedcp.errors import SchedcpError

MAX_NUDGES = 2


class AgentError(SchedcpError):
    """An LLM agent could not finish (turn cap, repeated refusals); the loop may fall back."""


def run_llm_agent(
    model: ChatModel,
    agent: str,
    system: str,
    task: str,
    toolbox: ToolBox,
    meter: CostMeter,
    *,
    max_turns: int = 12,
    max_tokens: int = 2048,
) -> dict:
    """Drive the model until a finish tool succeeds; returns that tool's value."""
    finish = toolbox.finish_names
    messages = [Message.user(task)]
    nudges = 0
    for _turn in range(max_turns):
        resp = model.chat(system, messages, toolbox.definitions(), max_tokens=max_tokens)
        meter.llm(agent, resp.usage, resp.request_bytes)
        messages.append(Message.assistant(resp.text, resp.tool_calls))
        if not resp.tool_calls:
            nudges += 1
            if nudges > MAX_NUDGES:
                raise AgentError(
                    f"the {agent} agent stopped calling tools without finishing",
                    f"it must end by calling {' or '.join(finish)}",
                    code="agent_no_finish",
                )
            messages.append(
                Message.user(
                    f"Continue with the tools. When you are done, call {' or '.join(finish)} with your result."
                )
            )
            continue
        result = None
        for call in resp.tool_calls:
            outcome = toolbox.invoke(call)
            messages.append(Message.tool_result(call.id, outcome.content, outcome.is_error))
            if call.name in finish and not outcome.is_error and result is None:
                result = outcome.value
        if result is not None:
            return result
    raise AgentError(
        f"the {agent} agent did not finish within {max_turns} turns",
        "raise the cap, use a stronger model, or --model builtin",
        code="agent_turn_cap",
    )
