# SPDX-License-Identifier: Apache-2.0
"""Which SchedCP tools each of sched-agent's roles may call, and the answer budgets it reads them with.

One table serves every front end: the agents' tool boxes refuse anything else (and never show it
to a model), and the Claude Code subagent definitions in ``.claude/agents/`` list exactly these
tools (a test keeps them in step). Names are the MCP tool names an outside agent sees.
"""

from __future__ import annotations

ROLE_TOOLS: dict[str, tuple[str, ...]] = {
    "observation": ("workload_summary", "workload_profile", "run_probe"),
    "planning": (
        "best_config",
        "list_antipatterns",
        "search_schedulers",
        "get_scheduler",
        "list_primitives",
        "check_candidate",
    ),
    "execution": (
        "check_candidate",
        "build_scheduler",
        "verify_scheduler",
        "run_trial",
        "add_scheduler",
        "get_scheduler",
    ),
    "learning": ("record_result", "promote_scheduler", "record_antipattern", "get_scheduler", "check_candidate"),
    # The loop itself (not an agent): holds the testbed the four agents work in.
    "loop": ("start_testbed", "testbed_status", "stop_testbed"),
}
AGENT_ROLES = ("observation", "planning", "execution", "learning")

# Answer budgets (max_bytes) the agents read tools with, unless a model asks for another.
BUDGETS: dict[str, int] = {
    "workload_summary": 1800,
    "workload_profile": 16384,
    "run_probe": 4096,
    "get_scheduler": 32768,  # detail=source returns a whole policy for patching
    "list_primitives": 12288,
    "build_scheduler": 8192,
    "run_trial": 16384,
    "verify_scheduler": 4096,
}
DEFAULT_BUDGET = 4096
SERVER_NAME = "schedcp"  # the MCP server's name in client configurations (Claude Code: mcp__schedcp__TOOL)


def budget(tool: str) -> int:
    return BUDGETS.get(tool, DEFAULT_BUDGET)
