# SPDX-License-Identifier: Apache-2.0
"""deploy_scheduler, deployment_status, rollback: the deploy path, only through the daemon.

The daemon does every check (the caller's deploy role from its peer credentials, the token, the
refusal list, the crash-loop cap) exactly as for ``schedcp deploy``; this service only shapes the
request and the answer. docs/deploy.md has the design.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schedcp.deploy.models import EXTERNAL_NAME_PATTERN, TOKEN_ID_PATTERN
from schedcp.errors import UsageError
from schedcp.services.operation import Answer, Operation, Progress, Reply

if TYPE_CHECKING:
    from schedcp.services.state import ServerState


def _call(state: ServerState, op: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
    with state.daemon() as client:
        return client.call(op, args, timeout_s=timeout_s)


class DeployInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_id: str | None = Field(
        None,
        pattern=TOKEN_ID_PATTERN,
        description="The token_id verify_scheduler returned on a pass (give this or external).",
    )
    external: str | None = Field(
        None,
        pattern=EXTERNAL_NAME_PATTERN,
        description="An installed upstream scheduler binary by its catalog name (e.g. scx_rusty), instead of a "
        "token: deployed only when the operator lists it in the daemon's [deploy] external_allow; config may "
        "set only the flags its catalog entry declares.",
    )
    all_tasks: bool = Field(
        False,
        description="external only: deploy to all tasks without a canary (for a binary without a partial-switch "
        "flag); give no canary target then.",
    )
    canary_pid: int | None = Field(
        None, gt=1, description="Canary on this process and its children (give exactly one target)."
    )
    canary_cgroup: str | None = Field(None, max_length=256, description="Canary on this cgroup's tasks (a path).")
    canary_comm: str | None = Field(
        None, max_length=128, description="Canary on processes whose name matches this regex."
    )
    config: dict[str, int | bool | str] = Field(
        default_factory=dict,
        max_length=64,
        description="Exactly the configuration the token was issued for: tunables, and for an scx-style source "
        "rodata.NAME values and struct_ops as given to verify_scheduler.",
    )
    window_s: float | None = Field(
        None, ge=1, le=86400, description="Canary window in seconds (default: the daemon's)."
    )
    goal: Literal["wait_share", "cpu_rate"] = Field(
        "wait_share",
        description="The breaker's metric on the canary: wait_share (lower is better) or cpu_rate.",
    )
    stay_partial: bool = Field(False, description="Keep only the canary's tasks on the policy.")


class DeployStarted(BaseModel):
    deployment: str
    state: str
    scheduler: str | None = None
    next: str = "poll deployment_status until the state is promoted, rolled_back or failed"


def deploy_scheduler(state: ServerState, args: DeployInput, _progress: Progress) -> DeployStarted:
    """Deploy a verified scheduler (by token_id) or an operator-allowed installed binary (by external name)
    on the daemon's node: first on the canary's tasks only, then on all tasks, watched by a circuit breaker
    that restores the last known good on an ejection, a stall, a process exit or a regression of the goal
    metric. Needs the deploy role. Returns at once with the deployment id; follow it with deployment_status."""
    from schedcp.deploy.models import CanaryTarget, DeployRequest

    no_target = args.canary_pid is None and args.canary_cgroup is None and args.canary_comm is None
    try:
        request = DeployRequest(
            token_id=args.token_id,
            token=None,
            external=args.external,
            all_tasks=args.all_tasks,
            config=dict(args.config),
            canary=None
            if no_target
            else CanaryTarget(pid=args.canary_pid, cgroup=args.canary_cgroup, comm=args.canary_comm),
            window_s=args.window_s,
            goal=args.goal,
            stay_partial=args.stay_partial,
        )
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(
            f"{'.'.join(str(p) for p in first['loc']) or 'arguments'}: {first['msg']}",
            "give exactly one of token_id and external, and exactly one canary target (or all_tasks for an external "
            "binary without a partial-switch flag)",
        ) from None
    result = _call(state, "deploy", request.model_dump(mode="json", exclude_none=True), 120)
    dep = result["deployment"]
    return DeployStarted(
        deployment=dep["id"], state=dep["state"], scheduler=(dep.get("artefact") or {}).get("scheduler")
    )


class StatusInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    history: int = Field(0, ge=0, le=20, description="How many past deployments' stories to add.")


class DeploymentStatus(Reply):
    """deployment_status's answer: the daemon's status (its deploy controller's model, relayed as JSON)
    and, on request, the latest deployments' stories."""

    status: dict[str, Any]
    stories: list[dict[str, Any]] | None = None


def deployment_status(state: ServerState, args: StatusInput, _progress: Progress) -> Answer:
    """What the node actually runs (read from the kernel), the deployment in progress and its canary,
    the breaker's state and recent trips, and the last known good."""
    data = DeploymentStatus(status=_call(state, "deployment_status", {}, 30))
    if args.history:
        data.stories = _call(state, "deployment_stories", {"limit": args.history}, 30)["stories"]
    return Answer(data, more="ask for less history")


class RollbackInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: str = Field("agent rollback", max_length=200, description="Why; kept in the audit log.")


class RolledBack(Reply):
    """rollback's answer: the breaker trip the daemon recorded for it (what was restored, how fast)."""

    trip: dict[str, Any]


def rollback(state: ServerState, args: RollbackInput, _progress: Progress) -> RolledBack:
    """Restore the last known good policy (or the kernel's default scheduler) now. Needs the deploy role."""
    return RolledBack.model_validate(_call(state, "rollback", {"reason": args.reason}, 120))


OPERATIONS = [
    Operation("deploy_scheduler", DeployInput, deploy_scheduler, DeployStarted, kind="write"),
    Operation("deployment_status", StatusInput, deployment_status, DeploymentStatus, kind="read"),
    Operation("rollback", RollbackInput, rollback, RolledBack, kind="write"),
]
