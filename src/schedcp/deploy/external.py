# SPDX-License-Identifier: Apache-2.0
"""Deploying an installed scheduler binary: the operator's allow-list in place of a token.

A verified object is deployed on the strength of the verifier's token. A binary such as
``scx_rusty`` loads its own BPF, so nothing can verify that before it runs; what stands in for the
token is the operator's decision (``[deploy] external_allow`` in the daemon's config) plus the
repository catalog's description of the binary (its flags; ``repository/external.py`` turns a
configuration into arguments and refuses anything the entry does not declare). The artefact is the
installed file itself: the node hashes it, the refusal list and the last known good name that
hash, and a restore refuses a file that changed since.

The canary needs the binary's own partial-switch flag; a binary without one can only be deployed to
all tasks at once (``all_tasks``), and a canary request for it is refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from schedcp.deploy.config import DeployPolicy
from schedcp.deploy.models import Artefact, DeployRequest
from schedcp.errors import SchedcpError
from schedcp.repository import external as catalog
from schedcp.repository.external import ExternalCommand
from schedcp.testbed.extras import HostFile
from schedcp.trial.node import NodeClient

# Where a VM node keeps the binaries the daemon brought from its host (a guest image layer).
GUEST_EXTERNAL_DIR = "/opt/schedcp-external/bin"


def allowed_entry(name: str, policy: DeployPolicy) -> catalog.ExternalEntry:
    """The catalog entry for ``name`` if the operator allows it; refused otherwise."""
    if name not in policy.external_allow:
        raise SchedcpError(
            f"the operator has not allowed the installed scheduler {name!r} on this daemon",
            "an operator adds it to [deploy] external_allow in the daemon's config (no token covers a binary)",
            code="external_not_allowed",
        )
    return catalog.entry(name)


def check_request(
    request: DeployRequest, policy: DeployPolicy, node: NodeClient, *, kernel: str, search: list[str] | None
) -> tuple[ExternalCommand, Artefact]:
    """Everything about an external deploy that can be checked before it starts: allowed, known,
    configured only with declared flags, a canary only with a partial-switch flag, installed."""
    assert request.external is not None
    entry = allowed_entry(request.external, policy)
    command = entry.command(dict(request.config))
    if request.canary is not None and not command.has_partial:
        raise SchedcpError(
            f"{entry.name} declares no partial-switch flag, so it cannot run a canary on some tasks first",
            "deploy it to all tasks at once (`schedcp deploy --external NAME --all-tasks`), watched by the breaker",
            code="external_no_partial",
        )
    found = installed(node, entry.binary, search)
    artefact = Artefact(
        scheduler=entry.name,
        object_sha256=found["sha256"],
        config=dict(command.config),
        kernel=kernel,
        kind="external",
        binary=entry.binary,
    )
    return command, artefact


def installed(node: NodeClient, binary: str, search: list[str] | None) -> dict[str, Any]:
    """Where the node finds ``binary`` and the sha256 of that file (``not_installed`` if nowhere)."""
    args: dict[str, Any] = {"binary": binary}
    if search:
        args["search"] = list(search)
    return node.call("external_which", args, timeout_s=60)


def on_host(binary: str, path: list[str] | None) -> Path:
    """Where ``binary`` is installed on this host (``path``, else the system directories), with the
    node's own checks: root-owned, nobody else may write it or its directory."""
    from schedcp.node.external import which
    from schedcp.node.protocol import NodeError

    try:
        return Path(which(binary, list(path) if path else None)["path"])
    except NodeError as exc:
        raise SchedcpError(exc.cause, exc.next_step, code=exc.code) from None


def guest_files(binaries: dict[str, Path]) -> tuple[HostFile, ...]:
    """Host binaries as files of a micro-VM's image, where its node finds them (``GUEST_EXTERNAL_DIR``):
    a VM node rehearses a host that has them installed."""
    return tuple(HostFile(path, f"{GUEST_EXTERNAL_DIR}/{binary}") for binary, path in sorted(binaries.items()))


def command_for(artefact: Artefact, policy: DeployPolicy) -> ExternalCommand:
    """The command line of a deployed external artefact (a restore runs it again): still allowed,
    still described the same way by the catalog."""
    return allowed_entry(artefact.scheduler, policy).command(dict(artefact.config))
