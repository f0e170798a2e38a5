# SPDX-License-Identifier: Apache-2.0
"""The Claude Code front end: subagent definitions and the MCP configuration are valid and current.

Checked against the real thing: `.mcp.json` is launched exactly as Claude Code would launch it (its
command resolved on PATH, its args and env) and must answer initialize and tools/list over stdio;
every tool a subagent or the slash command names must be one of those tools, under Claude Code's
`mcp__<server>__<tool>` spelling; each role's tool list is exactly sched-agent's (agent/roles.py),
so Claude Code and `schedcp optimize` run the same loop with the same permissions.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
from mcp import Client, StdioServerParameters

from schedcp.agent import roles

REPO = Path(__file__).resolve().parents[1]
AGENTS = REPO / ".claude" / "agents"
COMMANDS = REPO / ".claude" / "commands"
WALKTHROUGH = REPO / "docs" / "agent.md"
PREFIX = f"mcp__{roles.SERVER_NAME}__"


def front_matter(path: Path) -> tuple[dict[str, str], str]:
    """Claude Code's Markdown-with-front-matter: '---', 'key: value' lines, '---', then the prompt.
    Values are plain one-line scalars (what Claude Code reads); anything else is an error here."""
    text = path.read_text()
    assert text.startswith("---\n"), f"{path.name}: no front matter"
    head, sep, body = text[4:].partition("\n---\n")
    assert sep, f"{path.name}: front matter is not closed"
    fields: dict[str, str] = {}
    for line in head.splitlines():
        key, colon, value = line.partition(":")
        assert colon and key.strip() and key == key.strip(), f"{path.name}: bad line {line!r}"
        value = value.strip()
        assert value and not value.startswith(("[", "{", "|", ">")), f"{path.name}: {key} is not a plain scalar"
        if value.startswith('"'):
            value = json.loads(value)
        assert key not in fields, f"{path.name}: {key} twice"
        fields[key] = value
    return fields, body.strip()


def tool_list(value: str) -> list[str]:
    return [t.strip() for t in value.split(",") if t.strip()]


def launch_listed_tools(entry: dict[str, Any]) -> set[str]:
    """Start the server the way Claude Code does for a stdio entry and ask it for its tools."""
    command = shutil.which(entry["command"], path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    assert command, f"{entry['command']} is not on PATH"
    env = {**os.environ, **entry.get("env", {})}

    async def go() -> set[str]:
        params = StdioServerParameters(command=command, args=entry.get("args", []), env=env)
        async with Client(params, mode="legacy") as client:
            # The initialize handshake ran (legacy mode): the server said who it is and that it has tools.
            assert client.server_info.name == roles.SERVER_NAME and client.protocol_version
            assert client.server_capabilities.tools is not None
            return {t.name for t in (await client.list_tools()).tools}

    return anyio.run(go)


def test_subagents_and_mcp_config_match_what_the_server_offers(tmp_path: Path) -> None:
    config = json.loads((REPO / ".mcp.json").read_text())
    (name, entry), *others = config["mcpServers"].items()
    assert not others and name == roles.SERVER_NAME and entry["type"] == "stdio"
    entry = {**entry, "env": {**entry.get("env", {}), "SCHEDCP_DATA_DIR": str(tmp_path / "data")}}
    offered = launch_listed_tools(entry)

    seen: dict[str, set[str]] = {}
    for path in sorted(AGENTS.glob("*.md")):
        fields, prompt = front_matter(path)
        assert set(fields) == {"name", "description", "tools"}, path.name
        assert fields["name"] == path.stem and fields["name"].startswith("schedcp-"), path.name
        assert len(fields["description"]) >= 40 and len(prompt) >= 200, path.name
        tools = tool_list(fields["tools"])
        assert all(t.startswith(PREFIX) for t in tools), (path.name, tools)
        names = {t.removeprefix(PREFIX) for t in tools}
        assert names <= offered, (path.name, names - offered)
        for tool in names:  # the prompt explains every tool it is given
            assert tool in prompt, (path.name, tool)
        seen[fields["name"].removeprefix("schedcp-")] = names
    # The four roles, each with exactly sched-agent's tools for that role.
    assert seen == {role: set(roles.ROLE_TOOLS[role]) for role in roles.AGENT_ROLES}

    fields, body = front_matter(COMMANDS / "schedcp-optimize.md")
    loop = {t.removeprefix(PREFIX) for t in tool_list(fields["allowed-tools"])}
    assert loop == set(roles.ROLE_TOOLS["loop"]) and loop <= offered
    for role in roles.AGENT_ROLES:
        assert f"schedcp-{role}" in body


def test_printed_claude_code_config_launches_the_same_server(tmp_path: Path) -> None:
    """`schedcp mcp --print-config claude-code` (this install's absolute path) answers like .mcp.json."""
    from conftest import run_cli

    res = run_cli("mcp", "--print-config", "claude-code", timeout=60)
    assert res.returncode == 0, res.stderr
    entry = json.loads(res.stdout)["mcpServers"][roles.SERVER_NAME]
    entry["env"] = {**entry.get("env", {}), "SCHEDCP_DATA_DIR": str(tmp_path / "data")}
    offered = launch_listed_tools(entry)
    assert {t for names in roles.ROLE_TOOLS.values() for t in names} <= offered


def walkthrough_steps() -> list[tuple[str, str]]:
    """docs/agent.md's "One session, step by step": (the step's role or 'loop', its text)."""
    text = WALKTHROUGH.read_text()
    section = text.split("### One session, step by step", 1)[1].split("\n## ", 1)[0]
    steps = re.split(r"\n(?=\d+\. )", section)[1:]
    out = []
    for step in steps:
        head = re.match(r"\d+\. \*\*(\w+)", step)
        role = head.group(1).lower() if head else "loop"
        out.append((role if role in roles.AGENT_ROLES else "loop", step))
    return out


def test_docs_walkthrough_names_the_tools_each_role_has(tmp_path: Path) -> None:
    """The Claude Code walkthrough calls only tools the server offers, each role only its own tools,
    and the loop starts and stops the testbed."""
    entry = json.loads((REPO / ".mcp.json").read_text())["mcpServers"][roles.SERVER_NAME]
    entry = {**entry, "env": {**entry.get("env", {}), "SCHEDCP_DATA_DIR": str(tmp_path / "data")}}
    offered = launch_listed_tools(entry)
    steps = walkthrough_steps()
    assert {role for role, _ in steps} == {"loop", *roles.AGENT_ROLES}, [r for r, _ in steps]
    for role, text in steps:
        named = set(re.findall(r"`([a-z][a-z0-9_]*)`", text)) & offered
        called = set(re.findall(r"calls `([a-z][a-z0-9_]*)`", text))
        assert called <= offered, (role, called - offered)  # a renamed or removed tool
        if role != "loop":
            assert named and named <= set(roles.ROLE_TOOLS[role]), (role, named - set(roles.ROLE_TOOLS[role]))
    loop_named = {t for role, text in steps if role == "loop" for t in re.findall(r"`([a-z_]+)`", text)}
    assert {"start_testbed", "stop_testbed"} <= loop_named
