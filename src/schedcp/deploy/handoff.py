# SPDX-License-Identifier: Apache-2.0
"""`schedcp optimize --deploy`: the loop's best candidate goes through the deploy path, and what the
deployment measured goes back to the repository.

Everything goes through MCP, like the agents themselves (``verify_scheduler`` for the token,
``deploy_scheduler`` and ``deployment_status`` for the deployment, ``record_result`` for the
Learning agent's tier-3 entry), except putting the workload on the daemon's VM node, which is the
operator's ``schedcp node run`` (no MCP tool runs commands on the node, on purpose).
"""

from __future__ import annotations

import shlex
import statistics
import time
from collections.abc import Callable
from typing import Any

from schedcp.deploy.models import GOAL_DIRECTIONS
from schedcp.errors import SchedcpError

# The loop's goals and the breaker metric that watches each.
BREAKER_GOAL = {"makespan": "cpu_rate", "throughput": "cpu_rate", "p99_latency": "wait_share", "fairness": "wait_share"}
FINAL_STATES = {"promoted", "partial", "rolled_back", "failed", "refused"}
MAX_VERIFY_ATTEMPTS = 3  # candidates tried, best first, until one passes the verifier


def _tool(client: Any, name: str, args: dict[str, Any]) -> dict[str, Any]:
    reply = client.call(name, args)
    if reply.is_error or reply.data is None:
        raise SchedcpError(f"{name} failed: {reply.text[:300]}", "see the daemon's status", code="deploy_handoff")
    return dict(reply.data)


def start_workload(daemon: Any, argv: list[str]) -> int:
    """The workload, repeated in the background on the daemon's VM node; the pid to canary on."""
    loop = f"while :; do {shlex.join(argv)} >/dev/null 2>&1; done"
    script = f"setsid sh -c {shlex.quote(loop)} >/dev/null 2>&1 & echo $!"
    out = daemon.call("node_run", {"argv": ["sh", "-c", script], "timeout_s": 30}, timeout_s=90)
    if out.get("exit_code") != 0 or not out.get("stdout", "").strip().isdigit():
        raise SchedcpError(
            f"could not start the workload on the daemon's node: {out.get('stderr', '')[:200]}",
            "is the daemon's node a VM (`schedcp daemon --node vm`)?",
            code="deploy_handoff",
        )
    return int(out["stdout"].strip())


def deploy_best(
    client: Any,
    daemon: Any,
    doc: dict[str, Any],
    *,
    kernel: str,
    window_s: float | None = None,
    watch_s: float = 10.0,
    say: Callable[[str, str], None] = lambda _a, _m: None,
) -> dict[str, Any]:
    """Verify the best candidate through the daemon (the next best when it fails), deploy it with a
    canary on the workload, watch it for ``watch_s`` after promotion, and record what it measured."""
    ranked = _ranked_winners(doc)
    if not ranked:
        say("execution", "no candidate beat EEVDF, so nothing is deployed")
        return {"deployed": False, "reason": "no candidate beat EEVDF"}
    token_id, best, failures = None, ranked[0], []
    for best in ranked[:MAX_VERIFY_ATTEMPTS]:
        say("execution", f"verifying {best['label']} through the daemon for a deployment token")
        verify_args = {"scheduler": best["policy"], "config": dict(best.get("config") or {}), "kernel": kernel}
        verified = _tool(client, "verify_scheduler", verify_args)
        token_id = verified.get("token_id")
        if token_id:
            break
        failures.append(f"{best['label']}: {verified.get('reason')}")
        say("execution", f"the verifier did not pass {best['label']}: {verified.get('reason')}")
    if not token_id:
        return {"deployed": False, "reason": "verification: " + "; ".join(failures)}
    config = dict(best.get("config") or {})
    pid = start_workload(daemon, list(doc["target"]["argv"]))
    goal = BREAKER_GOAL.get(str(doc.get("goal")), "wait_share")
    say("execution", f"deploying {best['label']} with a canary on the workload (pid {pid}), breaker on {goal}")
    args: dict[str, Any] = {"token_id": token_id, "canary_pid": pid, "config": config, "goal": goal}
    if window_s is not None:
        args["window_s"] = window_s
    dep_id = _tool(client, "deploy_scheduler", args)["deployment"]
    dep = _wait(client, dep_id, FINAL_STATES)
    if dep["state"] in ("promoted", "partial"):
        time.sleep(watch_s)  # the breaker keeps watching after promotion; give it a look at the workload
        dep = _wait(client, dep_id, FINAL_STATES)
    story = _story(client, dep_id)
    say("learning", f"deployment {dep_id}: {dep['state']}{' — ' + dep['reason'] if dep.get('reason') else ''}")
    recorded = _record(client, doc, best, dep, story, goal)
    return {
        "deployed": dep["state"] in ("promoted", "partial"),
        "deployment": dep_id,
        "state": dep["state"],
        "token_id": token_id,
        "canary_pid": pid,
        "goal_metric": goal,
        "recorded": recorded,
    }


def _ranked_winners(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Candidates that beat EEVDF in their trials, best ratio first (the loop's best leads)."""
    out = []
    for it in doc.get("iterations", []):
        execution = it.get("execution") or {}
        trial, cand = execution.get("trial") or {}, execution.get("candidate") or {}
        if trial.get("ok") and (trial.get("ratio") or 0) > 1.0 and cand.get("policy"):
            config = dict(cand.get("config") or {})
            label = cand["policy"] + (f"({', '.join(f'{k}={v}' for k, v in sorted(config.items()))})" if config else "")
            out.append({"policy": cand["policy"], "config": config, "label": label, "ratio": trial["ratio"]})
    out.sort(key=lambda c: -c["ratio"])
    return out


def _wait(client: Any, dep_id: str, states: set[str], timeout_s: float = 600) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        dep = _story(client, dep_id)["deployment"]
        if dep["state"] in states:
            return dep
        if time.monotonic() > deadline:
            raise SchedcpError(f"deployment {dep_id} is still {dep['state']}", "see `schedcp status`", code="timeout")
        time.sleep(1.0)


def _story(client: Any, dep_id: str) -> dict[str, Any]:
    data = _tool(client, "deployment_status", {"history": 3})
    for story in data.get("stories", []):
        if story["deployment"]["id"] == dep_id:
            return story
    raise SchedcpError(f"the daemon does not know deployment {dep_id}", "see `schedcp audit`", code="not_found")


def _record(
    client: Any, doc: dict[str, Any], best: dict[str, Any], dep: dict[str, Any], story: dict[str, Any], goal: str
) -> dict[str, Any] | None:
    """Tier-3 feedback: the goal metric under the deployment against the baseline before it."""
    threshold = dep.get("threshold") or {}
    values = [s["value"] for s in dep.get("last_samples", []) if s.get("value") is not None]
    for trip in story.get("trips", []):
        values = [s["value"] for s in trip.get("samples", []) if s.get("value") is not None] or values
    if not values or "median" not in threshold:
        return None
    profile = (doc.get("profile") or {}).get("for_repository")
    if not profile:
        return None
    notes = f"deployment {dep['id']} ({dep['state']}): {goal} on the canary, median of {len(values)} ticks"
    if dep.get("reason"):
        notes += f"; {dep['reason']}"
    reply = client.call(
        "record_result",
        {
            "profile": profile,
            "policy": best["policy"],
            "config": dict(best.get("config") or {}),
            "metrics": {f"deploy_{goal}": statistics.median(values)},
            "baseline": {f"deploy_{goal}": threshold["median"]},
            "directions": {f"deploy_{goal}": GOAL_DIRECTIONS[goal]},
            "notes": notes[:1000],
        },
    )
    return reply.data if not reply.is_error else {"error": reply.text[:300]}
