# SPDX-License-Identifier: Apache-2.0
"""`schedcp deploy | status | rollback | node run`, and the deployment stories `schedcp audit` tells.

Each verb is one daemon operation (docs/deploy.md); the daemon does every check, so these only
shape arguments and print answers.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

from schedcp.cli.common import JsonOption, console, emit, fail
from schedcp.errors import SchedcpError, UsageError

TERMINAL = {"promoted", "partial", "rolled_back", "failed", "refused", "interrupted", "displaced", "retired"}


def _client() -> Any:
    from schedcp.daemon.client import DaemonClient

    return DaemonClient()


def _parse_config(items: list[str], flag: str = "--config") -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UsageError(f"{flag} {item!r} is not KEY=VALUE", f"e.g. {flag} slice_us=5000")
        out[key.strip()] = value.strip()
    return out


def _loader_config(config: dict[str, str], rodata: dict[str, str], struct_ops: str | None) -> dict[str, str]:
    """The configuration as the token binds it: tunables, ``rodata.NAME`` and ``struct_ops``."""
    out = dict(config) | {f"rodata.{k}": v for k, v in rodata.items()}
    if struct_ops:
        out["struct_ops"] = struct_ops
    return out


def _deploy(
    token: str | None = typer.Argument(
        None, help="The token id `schedcp verify --daemon` printed (or a token's full text)."
    ),
    external: str | None = typer.Option(
        None, "--external", help="Deploy an installed scheduler binary by its catalog entry (e.g. scx_rusty) instead."
    ),
    all_tasks: bool = typer.Option(
        False, "--all-tasks", help="External binaries without a partial-switch flag: no canary, all tasks at once."
    ),
    config: list[str] = typer.Option(
        [], "--config", help="Tunable KEY=VALUE; must equal the verified values (external: the entry's tunables)."
    ),
    rodata: list[str] = typer.Option(
        [], "--rodata", help="NAME=VALUE an scx-style source was verified with (exactly as given to verify)."
    ),
    struct_ops: str | None = typer.Option(None, "--struct-ops", help="The struct_ops map it was verified with."),
    canary_pid: int | None = typer.Option(None, "--canary-pid", help="Canary on this process and its children."),
    canary_cgroup: str | None = typer.Option(None, "--canary-cgroup", help="Canary on this cgroup's tasks."),
    canary_comm: str | None = typer.Option(None, "--canary-comm", help="Canary on processes whose name matches."),
    window: float | None = typer.Option(None, "--window", help="Canary window in seconds (default: the policy's)."),
    goal: str = typer.Option("wait_share", "--goal", help="Breaker metric: wait_share (lower) or cpu_rate (higher)."),
    stay_partial: bool = typer.Option(False, "--stay-partial", help="Keep only the canary's tasks switched."),
    override_refusal: bool = typer.Option(False, "--override-refusal", help="Deploy an artefact that tripped before."),
    wait: bool = typer.Option(False, "--wait", help="Wait until promoted, rolled back or failed."),
    as_json: bool = JsonOption,
) -> None:
    """Deploy a verified scheduler (TOKEN) or an allowed installed one (--external NAME): canary on the
    target, then all tasks, watched by the circuit breaker."""
    from pydantic import ValidationError

    from schedcp.deploy.models import CanaryTarget, DeployRequest
    from schedcp.services.operation import field_errors

    try:
        try:
            if (token is None) == (external is None):
                raise UsageError("give a token id or --external NAME (one of the two)", "see `schedcp deploy --help`")
            given = (canary_pid, canary_cgroup, canary_comm)
            target = (
                None
                if all_tasks and all(x is None for x in given)
                else CanaryTarget(pid=canary_pid, cgroup=canary_cgroup, comm=canary_comm)
            )
            is_id = token is not None and "." not in token
            request = DeployRequest(
                token_id=token if is_id else None,
                token=None if is_id else token,
                external=external,
                all_tasks=all_tasks,
                config=_loader_config(_parse_config(config), _parse_config(rodata, "--rodata"), struct_ops),
                canary=target,
                window_s=window,
                goal=goal,
                stay_partial=stay_partial,
                override_refusal=override_refusal,
            )
        except ValidationError as exc:
            raise UsageError(field_errors(exc), "see `schedcp deploy --help`") from None
        with _client() as client:
            result = client.call("deploy", request.model_dump(mode="json", exclude_none=True), timeout_s=120)
            dep = result["deployment"]
            if wait:
                dep = _wait(client, dep["id"], as_json)
    except SchedcpError as exc:
        raise fail(exc, as_json) from None

    def render(d: dict[str, Any]) -> None:
        console.print(f"{d['id']}: [bold]{d['state']}[/] {d.get('reason') or ''}", highlight=False)

    emit(dep, as_json, render)
    if dep["state"] in ("rolled_back", "failed", "refused"):
        raise typer.Exit(1)


def _wait(client: Any, dep_id: str, quiet: bool) -> dict[str, Any]:
    last = ""
    while True:
        stories = client.call("deployment_stories", {"deployment_id": dep_id})["stories"]
        dep = stories[0]["deployment"]
        if dep["state"] != last and not quiet:
            sys.stderr.write(f"· {dep['state']}\n")
            last = dep["state"]
        if dep["state"] in TERMINAL:
            return dep
        time.sleep(0.5)


def _status(as_json: bool = JsonOption) -> None:
    """What the node actually runs, the deployment in progress, the breaker and the last known good."""
    try:
        with _client() as client:
            status = client.call("deployment_status")
    except SchedcpError as exc:
        raise fail(exc, as_json) from None

    def render(s: dict[str, Any]) -> None:
        node = s["node"]
        running = node["ops"] if node["state"] == "enabled" else "the kernel's default scheduler"
        mode = " (all tasks)" if node.get("switch_all") else " (partial)" if node["state"] == "enabled" else ""
        console.print(f"node: {node['kind']} {node['kernel']}: {running}{mode}", highlight=False)
        dep = s.get("active")
        if dep:
            art = dep.get("artefact") or {}
            console.print(
                f"deployment: {dep['id']} {_what(art)} [bold]{dep['state']}[/] on "
                f"{_target(dep['request'].get('canary'))}",
                highlight=False,
            )
            if s.get("canary_progress"):
                p = s["canary_progress"]
                console.print(
                    f"canary: {p['elapsed_s']}s in, {p['remaining_s']}s left, {p['tasks']} tasks", highlight=False
                )
        else:
            console.print("deployment: none active", highlight=False)
        console.print(f"last known good: {_lkg(s['last_known_good'])}", highlight=False)
        b = s["breaker"]
        console.print(
            f"breaker: {'[red]LATCHED[/]' if b['latched'] else 'armed'}, {b['trips_in_window']}/{b['max_trips']} "
            f"trips in {b['trip_window_s']:.0f}s, {b['refused_keys']} refused artefact(s)",
            highlight=False,
        )
        for t in s.get("trips", [])[:5]:
            console.print(
                f"  trip {t['deployment_id']} {t['signal']}: {t['reason'][:100]} -> {t['restored_to']} "
                f"in {t['restore_s']}s",
                highlight=False,
            )
            if t.get("exit_info"):
                console.print(f"    the scheduler's exit record: {_exit(t['exit_info'])}", highlight=False)
        for note in s.get("reconcile", []):
            console.print(f"reconcile: {note}", highlight=False)

    emit(status, as_json, render)


def _what(art: dict[str, Any]) -> str:
    """'scx_rusty (installed binary scx_rusty)' or the object's scheduler name."""
    if art.get("kind") == "external":
        sha = str(art.get("object_sha256"))[:12]
        return f"{art.get('scheduler')} (installed binary {art.get('binary')}, sha256 {sha})"
    return str(art.get("scheduler", "?"))


def _target(c: dict[str, Any] | None) -> str:
    if not c:
        return "all tasks (no canary)"
    if c.get("pid"):
        return f"pid {c['pid']}"
    if c.get("cgroup"):
        return f"cgroup {c['cgroup']}"
    return f"comm /{c.get('comm')}/"


def _exit(info: dict[str, Any]) -> str:
    from schedcp.toolchain.scx_loader import exit_summary

    return exit_summary(info)


def _lkg(lkg: dict[str, Any]) -> str:
    art = lkg.get("artefact")
    if not art:
        return "the kernel's default scheduler"
    return f"{_what(art)} ({lkg.get('deployment_id')}{', partial' if lkg.get('partial') else ''})"


def _rollback(
    reason: str = typer.Option("operator rollback", "--reason", help="Why (kept in the audit log)."),
    reset_breaker: bool = typer.Option(False, "--reset-breaker", help="Clear a latched crash-loop cap instead."),
    as_json: bool = JsonOption,
) -> None:
    """Put the last known good back now (or clear a latched breaker)."""
    try:
        with _client() as client:
            result = client.call("rollback", {"reason": reason, "reset_breaker": reset_breaker}, timeout_s=120)
    except SchedcpError as exc:
        raise fail(exc, as_json) from None

    def render(r: dict[str, Any]) -> None:
        if "trip" in r:
            t = r["trip"]
            console.print(
                f"rolled back {t['deployment_id']}: {t['restored_to']} restored in {t['restore_s']}s", highlight=False
            )
        else:
            console.print(f"breaker reset: {r['breaker']}", highlight=False)

    emit(result, as_json, render)


def print_stories(as_json: bool, deployment: str | None, limit: int = 20) -> None:
    """Each deployment's story from token to outcome (for `schedcp audit`)."""
    try:
        with _client() as client:
            args: dict[str, Any] = {"limit": limit}
            if deployment:
                args["deployment_id"] = deployment
            stories = client.call("deployment_stories", args)["stories"]
    except SchedcpError as exc:
        raise fail(exc, as_json) from None

    def render(items: list[dict[str, Any]]) -> None:
        if not items:
            console.print("no deployments yet", highlight=False)
        for story in items:
            dep = story["deployment"]
            art = dep.get("artefact") or {}
            console.print(
                f"[bold]{dep['id']}[/] {_what(art)} by uid {dep['peer_uid']}: {dep['state']}",
                highlight=False,
            )
            for step in story["transitions"]:
                when = time.strftime("%H:%M:%S", time.localtime(step["at"]))
                console.print(f"  {when} {step['state']:<13} {step['note']}", highlight=False)
            for trip in story["trips"]:
                console.print(
                    f"  trip: {trip['signal']} in {trip['phase']}: {trip['reason'][:120]}; restored "
                    f"{trip['restored_to']} in {trip['restore_s']}s",
                    highlight=False,
                )
                if trip.get("exit_info"):
                    console.print(f"    the scheduler's exit record: {_exit(trip['exit_info'])}", highlight=False)

    emit(stories, as_json, render)


node_app = typer.Typer(
    help="The daemon's node (a micro-VM node with `schedcp daemon --node vm`).", no_args_is_help=True
)


@node_app.command("run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def _node_run(
    ctx: typer.Context,
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds before the command is killed."),
    as_json: bool = JsonOption,
) -> None:
    """Run a command on the daemon's VM node (refused for a local node): `schedcp node run -- CMD...`."""
    argv = list(ctx.args)
    if argv and argv[0] == "--":
        argv = argv[1:]
    try:
        if not argv:
            raise UsageError("no command given", "schedcp node run -- CMD ARGS...")
        with _client() as client:
            result = client.call("node_run", {"argv": argv, "timeout_s": timeout}, timeout_s=timeout + 90)
    except SchedcpError as exc:
        raise fail(exc, as_json) from None
    if as_json:
        emit(result, True)
    else:
        sys.stdout.write(result.get("stdout", ""))
        sys.stderr.write(result.get("stderr", ""))
    raise typer.Exit(int(result.get("exit_code", 1)) if not result.get("timed_out") else 124)


def register(app: typer.Typer) -> None:
    app.command("deploy")(_deploy)
    app.command("status")(_status)
    app.command("rollback")(_rollback)
    app.add_typer(node_app, name="node")
