# SPDX-License-Identifier: Apache-2.0
"""`schedcp daemon`: run the privileged daemon (as root) in the foreground."""

from __future__ import annotations

import grp
import os
from pathlib import Path

import typer

from schedcp.cli.common import err_console, fail
from schedcp.errors import SchedcpError, UsageError


def _gid(name: str) -> int:
    if name.isdigit():
        return int(name)
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        raise UsageError(f"no group named {name!r}", "create it (groupadd) or pass a numeric gid") from None


def _daemon(
    socket_path: Path | None = typer.Option(
        None, "--socket", help="Unix socket path (default: $SCHEDCP_DAEMON_SOCKET or /run/schedcp/daemon.sock)."
    ),
    allow_uid: list[int] = typer.Option([], "--allow-uid", help="Non-root uid allowed to verify and probe."),
    allow_group: list[str] = typer.Option([], "--allow-group", help="Group whose members may verify and probe."),
    status_group: list[str] = typer.Option([], "--status-group", help="Group whose members may only read status."),
    socket_group: str | None = typer.Option(
        None, "--socket-group", help="Make the socket root:GROUP 0660 instead of world-connectable."
    ),
    node: str | None = typer.Option(
        None, "--node", help="The node to manage and deploy to: local (this sched_ext host) or vm[:KERNEL]."
    ),
    config_file: Path | None = typer.Option(
        None, "--config", help="TOML config: the [deploy] policy (who may deploy, windows, breaker thresholds)."
    ),
    allow_deploy_uid: list[int] = typer.Option([], "--allow-deploy-uid", help="Non-root uid allowed to deploy."),
    allow_deploy_group: list[str] = typer.Option([], "--allow-deploy-group", help="Group allowed to deploy."),
    allow_trial_uid: list[int] = typer.Option(
        [], "--allow-trial-uid", help="Non-root uid allowed to run trials on the node (optimize --target local)."
    ),
    allow_trial_group: list[str] = typer.Option([], "--allow-trial-group", help="Group allowed to run trials."),
) -> None:
    """Run the privileged SchedCP daemon in the foreground (root; systemd-friendly)."""
    from schedcp.daemon.server import AccessPolicy, DaemonConfig, Grant, serve
    from schedcp.paths import daemon_socket

    try:
        from schedcp.daemon.deploy_ops import parse_node_spec
        from schedcp.daemon.sdnotify import notify
        from schedcp.deploy.config import load_policy

        deploy_policy = load_policy(config_file)
        if node is not None:
            parse_node_spec(node)
        access = AccessPolicy(
            use=Grant(gids=frozenset(_gid(g) for g in allow_group)),
            status=Grant(gids=frozenset(_gid(g) for g in status_group)),
            trial=Grant(
                uids=frozenset(allow_trial_uid) | deploy_policy.trial_uids(),
                gids=frozenset(_gid(g) for g in allow_trial_group) | deploy_policy.trial_gids(),
            ),
            deploy=Grant(
                uids=frozenset(allow_deploy_uid) | deploy_policy.deploy_uids(),
                gids=frozenset(_gid(g) for g in allow_deploy_group) | deploy_policy.deploy_gids(),
            ),
        )
        config = DaemonConfig(
            socket_path=socket_path or daemon_socket(),
            allowed_uids=set(allow_uid),
            access=access,
            socket_group=_gid(socket_group) if socket_group else None,
            node=node,
            deploy_policy=deploy_policy,
        )
        if os.geteuid() != 0:
            err_console.print("[yellow]warning:[/] not running as root; privileged operations will fail")

        def ready() -> None:
            err_console.print(f"schedcp daemon listening on {config.socket_path}")
            notify("READY=1")

        serve(config, ready=ready)
    except SchedcpError as exc:
        raise fail(exc) from None


def register(app: typer.Typer) -> None:
    app.command("daemon")(_daemon)
