# SPDX-License-Identifier: Apache-2.0
"""deploy_scheduler, deployment_status, rollback: the deploy path, only through the daemon.

The daemon does every check (the caller's deploy role from its peer credentials, the token, the
refusal list, the crash-loop cap) exactly as for ``schedcp deploy``; this server only shapes the
request and bounds the answer. docs/deploy.md has the design.

No ``from __future__ import annotations``: parameter types are built at runtime (see testbed.py).
"""

from typing import Annotated, Any, Literal

import anyio
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult
from pydantic import Field, ValidationError

from schedcp.errors import UsageError
from schedcp.server import budget
from schedcp.server.state import ServerState
from schedcp.server.tooling import READ, WRITE, MaxBytes, make_tool


def tools(state: ServerState) -> list[Tool]:
    async def deploy_scheduler(
        token_id: Annotated[
            str, Field(pattern=r"^[0-9a-f]{24}$", description="The token_id verify_scheduler returned on a pass.")
        ],
        canary_pid: Annotated[
            int | None, Field(gt=1, description="Canary on this process and its children (give exactly one target).")
        ] = None,
        canary_cgroup: Annotated[
            str | None, Field(max_length=256, description="Canary on this cgroup's tasks (a path).")
        ] = None,
        canary_comm: Annotated[
            str | None, Field(max_length=128, description="Canary on processes whose name matches this regex.")
        ] = None,
        config: Annotated[
            dict[str, int | bool | str],
            Field(max_length=64, description="Tunable values; must be exactly the ones the token was issued for."),
        ] = {},  # noqa: B006
        window_s: Annotated[
            float | None, Field(ge=1, le=86400, description="Canary window in seconds (default: the daemon's).")
        ] = None,
        goal: Annotated[
            Literal["wait_share", "cpu_rate"],
            Field(description="The breaker's metric on the canary: wait_share (lower is better) or cpu_rate."),
        ] = "wait_share",
        stay_partial: Annotated[bool, Field(description="Keep only the canary's tasks on the policy.")] = False,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Deploy a verified scheduler on the daemon's node: first on the canary's tasks only, then on all
        tasks, watched by a circuit breaker that restores the last known good on an ejection, a stall or a
        regression of the goal metric. Needs the deploy role. Returns at once with the deployment id;
        follow it with deployment_status."""
        from schedcp.deploy.models import CanaryTarget, DeployRequest

        try:
            request = DeployRequest(
                token_id=token_id,
                token=None,
                config=dict(config),
                canary=CanaryTarget(pid=canary_pid, cgroup=canary_cgroup, comm=canary_comm),
                window_s=window_s,
                goal=goal,
                stay_partial=stay_partial,
            )
        except ValidationError as exc:
            first = exc.errors()[0]
            raise UsageError(
                f"{'.'.join(str(p) for p in first['loc']) or 'arguments'}: {first['msg']}",
                "give exactly one canary target",
            ) from None
        args = request.model_dump(mode="json", exclude_none=True)
        result = await anyio.to_thread.run_sync(lambda: _call(state, "deploy", args, 120))
        dep = result["deployment"]
        data = {
            "deployment": dep["id"],
            "state": dep["state"],
            "scheduler": (dep.get("artefact") or {}).get("scheduler"),
            "next": "poll deployment_status until the state is promoted, rolled_back or failed",
        }
        return budget.respond(data, max_bytes)

    async def deployment_status(
        history: Annotated[int, Field(ge=0, le=20, description="How many past deployments' stories to add.")] = 0,
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """What the node actually runs (read from the kernel), the deployment in progress and its canary,
        the breaker's state and recent trips, and the last known good."""
        status = await anyio.to_thread.run_sync(lambda: _call(state, "deployment_status", {}, 30))
        data: dict[str, Any] = {"status": status}
        if history:
            data["stories"] = (
                await anyio.to_thread.run_sync(lambda: _call(state, "deployment_stories", {"limit": history}, 30))
            )["stories"]
        return budget.respond(data, max_bytes, hint="ask for less history")

    async def rollback(
        reason: Annotated[str, Field(max_length=200, description="Why; kept in the audit log.")] = "agent rollback",
        max_bytes: MaxBytes = budget.DEFAULT_MAX_BYTES,
    ) -> CallToolResult:
        """Restore the last known good policy (or the kernel's default scheduler) now. Needs the deploy role."""
        result = await anyio.to_thread.run_sync(lambda: _call(state, "rollback", {"reason": reason}, 120))
        return budget.respond(result, max_bytes)

    return [
        make_tool(deploy_scheduler, WRITE),
        make_tool(deployment_status, READ),
        make_tool(rollback, WRITE),
    ]


def _call(state: ServerState, op: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    with state.daemon() as client:
        return client.call(op, args, timeout_s=timeout_s)
