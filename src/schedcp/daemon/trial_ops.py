# SPDX-License-Identifier: Apache-2.0
"""Trials on the daemon's node: ``schedcp optimize --target daemon|local`` measures candidates here.

A trial compares a policy with EEVDF by running the workload under each, one *arm* at a time. On
the node the daemon owns (this sched_ext host, or its rehearsal micro-VM) an arm is one operation,
``trial_arm``, and the daemon decides everything that matters for the host's safety:

* **only what the daemon verified**: the policy is named by the token id of the daemon's own
  verification (the object comes from its artefact store, hashed as read; the configuration must be
  the verified one; the kernel must be the node's). An object sent by the client is never loaded,
  and a trial does not spend the token (a deploy still can);
* **only the workload's tasks**: ``SCX_OPS_SWITCH_PARTIAL`` is always set, and only the workload's
  process starts with the ``SCHED_EXT`` policy (its children inherit it); every other task on the
  host stays on the kernel's fair class;
* **never as root**: on a local node the workload runs as the calling user (the socket's peer
  credentials), in a clean environment, and root callers are refused; on a VM node it runs as the
  guest's unprivileged workload user;
* **bounded, and always detached after**: the workload's deadline is at most ``MAX_TRIAL_S``, the
  policy carries a sched_ext watchdog, and the arm ends with the scheduler detached (the
  controller's trial slot checks the node is idle again, and detaches a leftover if not);
* **one thing at a time**: an arm is refused while a deployment holds the node (sched_ext runs
  one scheduler) or another trial runs, and a deploy is refused while an arm runs.

The workload runs as a background job on the node (``spawn``/``job``), so the node stays free for
the daemon's other readers while it runs. Operations (role ``trial``, granted explicitly like
``deploy``): ``trial_info``, ``trial_arm`` and, on VM nodes only, ``trial_observe`` (the analysis
engine's sampled run of the workload under EEVDF, as root inside the guest like a VM testbed's; on
a local node the caller observes the command on the host itself, as itself).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from schedcp.deploy.models import EXTERNAL_NAME_PATTERN, TOKEN_ID_PATTERN, ConfigValue, check_config_keys
from schedcp.errors import SchedcpError, UsageError
from schedcp.trial.node import NodeClient, NodeOps

if TYPE_CHECKING:
    from schedcp.daemon.audit import Operation
    from schedcp.daemon.deploy_ops import DeployService
    from schedcp.daemon.peers import Peer
    from schedcp.daemon.server import OpSpec
    from schedcp.trial.rounds import Arm

MAX_TRIAL_S = 600.0
MAX_OBSERVE_S = 300.0
MAX_ARGV = 256
MAX_ARG_CHARS = 4096
JOB_POLL_S = 0.1
# The guest's unprivileged workload user (created by the guest's init; node/runner.py).
GUEST_WORKLOAD_USER = "schedcp-work"


def _argv(v: list[str]) -> list[str]:
    if any(len(a) > MAX_ARG_CHARS or "\x00" in a for a in v):
        raise ValueError(f"each argument must be at most {MAX_ARG_CHARS} characters, without NUL")
    return v


class TrialArmArgs(BaseModel):
    """One arm: EEVDF (neither ``token_id`` nor ``external``), the policy the daemon verified under
    ``token_id``, or an installed binary the operator allows (``external``: its catalog entry)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    token_id: str | None = Field(None, pattern=TOKEN_ID_PATTERN)
    external: str | None = Field(None, pattern=EXTERNAL_NAME_PATTERN)
    config: dict[str, ConfigValue] = Field(default_factory=dict)
    argv: list[str] = Field(min_length=1, max_length=MAX_ARGV)
    timeout_s: float = Field(gt=0, le=MAX_TRIAL_S)
    watchdog_ms: int = Field(10000, ge=100, le=30000)

    _check_argv = field_validator("argv")(_argv)
    _check_config = field_validator("config")(check_config_keys)

    @model_validator(mode="after")
    def _one_policy(self) -> TrialArmArgs:
        if self.token_id is not None and self.external is not None:
            raise ValueError("give token_id or external, not both")
        return self


class TrialObserveArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    argv: list[str] = Field(min_length=1, max_length=MAX_ARGV)
    duration_s: float = Field(30.0, gt=0, le=MAX_OBSERVE_S)
    interval_s: float = Field(0.1, ge=0.02, le=10.0)
    probe: dict[str, Any] | None = None

    _check_argv = field_validator("argv")(_argv)


class NoArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")


def run_job(node: NodeClient, argv: list[str], timeout_s: float, **spawn: Any) -> dict[str, Any]:
    """Run argv on the node as a background job (``spawn``, then ``job`` polls) to completion or
    ``timeout_s``: the node's one request loop stays free for other callers while it runs."""
    started = node.call("spawn", {"argv": argv, "timeout_s": timeout_s, **spawn}, timeout_s=30)
    deadline = time.monotonic() + timeout_s + 30
    while True:
        result = node.call("job", {"job": started["job"]}, timeout_s=30)
        if result.get("done"):
            return result
        if time.monotonic() > deadline:
            return node.call("job", {"job": started["job"], "kill": True}, timeout_s=30)
        time.sleep(JOB_POLL_S)


class JobRunNode(NodeOps):
    """The daemon's node as the trial core sees it during an arm: ``run`` becomes a background job
    run as ``identity`` (the daemon's choice, whatever the caller asked), everything else passes."""

    def __init__(self, inner: NodeClient, identity: dict[str, Any]) -> None:
        self.inner = inner
        self.identity = identity

    def call(self, op: str, args: dict[str, Any] | None = None, *, timeout_s: float = 60.0) -> dict[str, Any]:
        if op != "run":
            return self.inner.call(op, args, timeout_s=timeout_s)
        a = dict(args or {})
        result = run_job(
            self.inner,
            list(a["argv"]),
            float(a.get("timeout_s", 60.0)),
            sched_ext=bool(a.get("sched_ext")),
            **self.identity,
        )
        result.pop("done", None)
        return result


class TrialService:
    """The trial operations over the node and controller the deploy service owns."""

    def __init__(self, deploy: DeployService) -> None:
        self.deploy = deploy

    def specs(self, op_spec: type[OpSpec]) -> list[OpSpec]:
        return [
            op_spec("trial_info", "trial", NoArgs, self.info, audited=False),
            op_spec("trial_arm", "trial", TrialArmArgs, self.arm),
            op_spec("trial_observe", "trial", TrialObserveArgs, self.observe),
        ]

    def _kind(self) -> str:
        assert self.deploy.owner is not None
        return self.deploy.owner.kind

    def info(self, peer: Peer, _args: NoArgs, _op: Operation | None = None) -> dict[str, Any]:
        ctl = self.deploy._ctl()
        hello = ctl.node.hello()
        active = ctl.store.active()
        boot_id = ctl.node.read_file("/proc/sys/kernel/random/boot_id", 64).decode().strip()
        return {
            "kind": self._kind(),
            "kernel": ctl.kernel,
            "cpus": hello.get("cpus"),
            "boot_id": boot_id,
            "sched_ext": ctl.node.state().as_dict(),
            "deployment": active.id if active is not None else None,
        }

    def _identity(self, peer: Peer) -> dict[str, Any]:
        if self._kind() == "vm":
            return {"user": GUEST_WORKLOAD_USER}
        if peer.uid == 0:
            raise SchedcpError(
                "a trial on this host never runs its workload as root",
                "run the trial (schedcp optimize --target local) as the user the workload belongs to",
                code="forbidden",
            )
        return {"uid": peer.uid}

    def _arm(self, args: TrialArmArgs) -> Arm:
        from schedcp.deploy.verified import check_config, policy_for
        from schedcp.trial.rounds import Arm
        from schedcp.verifier import tokens

        if args.external is not None:
            return self._external_arm(args)
        if args.token_id is None:
            if args.config:
                raise UsageError("an EEVDF arm takes no configuration", "drop config, or name the verified policy")
            return Arm(args.name)
        ctl = self.deploy._ctl()
        token = ctl.tokens.load(args.token_id)
        if token is None:
            raise SchedcpError(
                f"this daemon verified nothing under token id {args.token_id}",
                "verify the policy through the daemon; its node runs nothing else",
                code="token_unknown",
            )
        claims = tokens.decode_unverified(token)
        stored = ctl.artefacts.get(claims.obj)
        if stored is None or stored.sha256 != claims.obj:
            raise SchedcpError(
                "the daemon no longer holds the verified object (or it changed on disk)",
                "verify the policy through the daemon again",
                code="artefact_missing",
            )
        if claims.krn != ctl.kernel:
            raise SchedcpError(
                f"it was verified for {claims.krn}, and the daemon's node runs {ctl.kernel}",
                "verify it for the node's kernel",
                code="token_mismatch",
            )
        if time.time() > claims.exp + tokens.CLOCK_SKEW_S:
            raise SchedcpError("its verification expired", "verify it again", code="token_expired")
        verified = check_config(stored, dict(args.config), enum_kernel=ctl.enum_kernel)
        if tokens.config_digest(verified.bound) != claims.cfg:
            raise SchedcpError(
                "the configuration differs from the verified one",
                "run the trial with exactly the configuration it was verified with",
                code="token_mismatch",
            )
        return Arm(args.name, policy_for(stored, verified), dict(verified.tunables))

    def _external_arm(self, args: TrialArmArgs) -> Arm:
        """An installed binary as an arm: allowed by the operator (as for a deploy), configured only
        with its catalog entry's flags, and partial like every arm here, so only a binary with a
        partial-switch flag can run one."""
        from dataclasses import replace

        from schedcp.deploy.external import allowed_entry
        from schedcp.trial.rounds import Arm

        assert args.external is not None
        ctl = self.deploy._ctl()
        command = allowed_entry(args.external, ctl.policy).command(dict(args.config))
        if not command.has_partial:
            raise UsageError(
                f"{command.name} declares no partial-switch flag, and trial arms here switch only the workload's tasks",
                "compare it in the micro-VM instead: schedcp bench -p external:NAME",
                code="external_no_partial",
            )
        return Arm(args.name, external=replace(command, search=tuple(ctl.external_search or ())))

    def arm(self, peer: Peer, args: TrialArmArgs, op: Operation | None = None) -> dict[str, Any]:
        """One arm of a trial on the node (see the module docstring for every rule it keeps)."""
        from schedcp.trial.rounds import run_arm

        ctl = self.deploy._ctl()
        identity = self._identity(peer)
        arm = self._arm(args)
        with ctl.trial_slot(f"trial arm {args.name} for uid {peer.uid}"):
            rec = run_arm(
                JobRunNode(ctl.node, identity),
                arm,
                list(args.argv),
                timeout_s=args.timeout_s,
                watchdog_ms=args.watchdog_ms,
                partial=True,
            )
        if op is not None:
            op.result.update(
                arm=args.name,
                status=rec.status,
                ops_name=rec.ops_name or None,
                token_id=args.token_id,
                external=args.external,
            )
        return {"arm": rec.to_dict()}

    def observe(self, peer: Peer, args: TrialObserveArgs, op: Operation | None = None) -> dict[str, Any]:
        """The analysis engine's sampled run of the workload under EEVDF, inside a VM node's guest."""
        ctl = self.deploy._ctl()
        if self._kind() != "vm":
            raise UsageError(
                "trial_observe runs the command as root on the node, so it is refused on a local node",
                "observe the command on this host yourself (it is the same host): schedcp analyze -- CMD",
                code="forbidden",
            )
        call: dict[str, Any] = {"argv": list(args.argv), "duration_s": args.duration_s, "interval_s": args.interval_s}
        if args.probe is not None:
            call["probe"] = args.probe
        with ctl.trial_slot(f"observation for uid {peer.uid}"):
            return ctl.node.call("observe_run", call, timeout_s=args.duration_s + 60)
