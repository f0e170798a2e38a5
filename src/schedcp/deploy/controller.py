# SPDX-License-Identifier: Apache-2.0
"""The deployment state machine over one node: token check, baseline, canary, promotion, breaker.

One worker thread per deployment runs baseline → canary → promotion and then keeps watching; an
operator rollback, a newer deployment or a trip ends it (each bumps ``_gen``, which every loop
checks while holding ``_op``, the lock around everything that changes what the node runs).
docs/deploy.md describes the states, signals and thresholds.
"""

from __future__ import annotations

import secrets
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, Protocol

from schedcp.deploy import breaker
from schedcp.deploy import external as deploy_external
from schedcp.deploy.artifacts import ArtifactStore, StoredObject
from schedcp.deploy.config import DeployPolicy
from schedcp.deploy.models import (
    GOAL_DIRECTIONS,
    GOOD_STATES,
    Artefact,
    BreakerStatus,
    CanaryTarget,
    Deployment,
    DeployRequest,
    DeployState,
    DeployStatus,
    ExitRecord,
    Held,
    LastKnownGood,
    NodeView,
    Sample,
    Story,
    Trip,
)
from schedcp.deploy.store import DeployStore
from schedcp.deploy.verified import VerifiedConfig, check_config, policy_for
from schedcp.errors import SchedcpError, UsageError
from schedcp.repository.external import ExternalCommand
from schedcp.toolchain.objinfo import global_vars
from schedcp.trial import attached as trial_attached
from schedcp.trial import external as trial_external
from schedcp.trial.models import KernelEvent, SchedExtState, events_from
from schedcp.trial.node import NodeClient, NodeOpError

RESTORE_CONFIRM_S = 5.0
# The target is searched again (new members switched) every this many ticks; sampled cheaply between.
RESCAN_TICKS = 4
AuditFn = Callable[[str, dict[str, Any]], object]
# What a deployment runs: a verified object from the artefact store, or an installed binary's command.
Source = StoredObject | ExternalCommand


class TokenChecker(Protocol):
    """The verifier's side of a deploy: find a stored token, check one (spending it on success)."""

    def load(self, token_id: str) -> str | None: ...

    def claims_object(self, token: str) -> str | None: ...

    def verify(self, token: str, *, object_sha256: str, config: dict[str, Any], kernel: str) -> Any: ...


def refused(cause: str, code: str, next_step: str = "") -> SchedcpError:
    return SchedcpError(cause, next_step or "see `schedcp status` and `schedcp audit`", code=code)


def _classify(event: KernelEvent) -> str:
    text = f"{event.reason} {' '.join(event.detail)}".lower()
    if "stall" in text or "watchdog" in text:
        return "stall"
    if "error" in text:
        return "error_exit"
    return "ejection"


class DeployController:
    def __init__(
        self,
        node: NodeClient,
        store: DeployStore,
        artefacts: ArtifactStore,
        policy: DeployPolicy,
        tokens: TokenChecker,
        *,
        node_kind: str,
        audit: AuditFn | None = None,
        feedback_path: Path | None = None,
        enum_kernel: Any = None,
        external_search: list[str] | None = None,
    ) -> None:
        self.node = node
        self.store = store
        self.artefacts = artefacts
        self.policy = policy
        self.tokens = tokens
        self.node_kind = node_kind
        self._audit = audit or (lambda _e, _f: None)
        self.feedback_path = feedback_path
        # The cached test kernel a VM node boots: its SCX enum values go with each load (see verified.py).
        self.enum_kernel = enum_kernel
        # Where the node looks for installed scheduler binaries (None: its own safe default).
        self.external_search = external_search
        self.kernel = str(node.hello().get("kernel", ""))
        self._op = threading.RLock()
        self._gen = 0
        self._pol: trial_attached.AttachedPolicy | None = None
        self._held: Held | None = None
        # The last known good, loaded (verified by the kernel) but not attached, so a trip attaches it.
        self._standby: trial_attached.AttachedPolicy | None = None
        self._standby_key: tuple[str, bool] | None = None
        self._threads: list[threading.Thread] = []
        self._stopping = threading.Event()
        self.reconcile_notes: list[str] = []
        self.last_restore_steps: dict[str, float] = {}
        # What the node's scx loader did on the last load (enums filled, .rodata set, struct_ops map).
        self.last_loader: dict[str, Any] = {}
        # The scheduler's own exit record (UEI) read back when the policy that tripped was detached.
        self.last_exit: dict[str, Any] | None = None
        self._trial: str | None = None  # what holds the node for a trial (trial_slot), if anything

    # ---- public operations -----------------------------------------------------------------
    def deploy(self, request: DeployRequest, *, peer_uid: int) -> Deployment:
        """Check everything that can be checked at once, then run the deployment in the background.
        Refusals raise with the reason (and are on record); the answer is the started deployment."""
        dep = Deployment(
            id=f"dep-{secrets.token_hex(6)}",
            created=time.time(),
            peer_uid=peer_uid,
            request=request,
            state=DeployState.requested,
        )
        self.store.transition(dep, DeployState.requested, f"{request.token_label} from uid {peer_uid}")
        try:
            with self._op:
                stored, artefact = self._check(dep, request)
                dep.artefact = artefact
                dep.previous = self.store.last_known_good()
                checked = (
                    f"the operator allows the installed {artefact.binary} ({artefact.object_sha256[:12]})"
                    if artefact.kind == "external"
                    else f"token valid for {artefact.scheduler} ({artefact.object_sha256[:12]})"
                )
                self.store.transition(dep, DeployState.token_checked, f"{checked} on {artefact.kernel}")
        except SchedcpError as exc:
            self.store.transition(dep, DeployState.refused, exc.cause, code=exc.code)
            self._audit("deploy_refused", {"deployment": dep.id, "code": exc.code, "cause": exc.cause})
            raise
        self._audit("deploy_started", {"deployment": dep.id, "scheduler": artefact.scheduler, "kind": artefact.kind})
        worker = threading.Thread(target=self._run, args=(dep, stored), name=f"deploy-{dep.id}", daemon=True)
        self._threads.append(worker)
        worker.start()
        return dep

    def rollback(self, *, peer_uid: int, reason: str = "operator rollback") -> Trip:
        with self._op:
            dep = self.store.active()
            if dep is None:
                raise UsageError("nothing is deployed", "see `schedcp status`", code="nothing_deployed")
            return self._trip(dep, "operator", f"{reason} (uid {peer_uid})", [], count=False)

    def reset_breaker(self, *, peer_uid: int) -> BreakerStatus:
        with self._op:
            self.store.set_breaker_latched(False, reset_at=time.time())
            self._audit("breaker_reset", {"peer_uid": peer_uid})
            return self.breaker_status()

    def status(self) -> DeployStatus:
        state = self.node.state()
        active = self.store.active()
        progress: dict[str, Any] = {}
        if active is not None and active.state == DeployState.canary and active.canary_until:
            now = time.time()
            progress = {
                "elapsed_s": round(now - (active.canary_started or now), 1),
                "remaining_s": round(max(0.0, active.canary_until - now), 1),
                "tasks": active.canary_tasks,
                "last": [s.model_dump() for s in active.last_samples[-5:]],
            }
        return DeployStatus(
            node=NodeView(
                kind=self.node_kind,
                kernel=self.kernel,
                state=state.state,
                ops=state.ops,
                enable_seq=state.enable_seq,
                switch_all=state.switch_all,
            ),
            active=active,
            last_known_good=self.store.last_known_good(),
            breaker=self.breaker_status(),
            trips=self.store.trips(10),
            canary_progress=progress,
            reconcile=self.reconcile_notes,
        )

    def breaker_status(self) -> BreakerStatus:
        now = time.time()
        times = self.store.trip_times(now - self.policy.trip_window_s)
        return BreakerStatus(
            latched=self.store.breaker_latched(),
            trips_in_window=breaker.trips_in_window(
                times, since_reset=self.store.breaker_reset_at(), now=now, window_s=self.policy.trip_window_s
            ),
            max_trips=self.policy.max_trips,
            trip_window_s=self.policy.trip_window_s,
            refused_keys=self.store.refusal_count(),
        )

    def stories(self, limit: int = 20) -> list[Story]:
        return [s for d in self.store.recent(limit) if (s := self.store.story(d.id)) is not None]

    @contextmanager
    def trial_slot(self, what: str) -> Iterator[None]:
        """Hold the node for one trial arm or observation (daemon/trial_ops.py): refused while a
        deployment holds it, another trial runs or the kernel runs a scheduler; deploys are refused
        meanwhile. On the way out the node must be idle again: a scheduler a trial left attached is
        detached here (every handle the node holds that is not this controller's)."""
        with self._op:
            if self._trial is not None:
                raise refused(f"the node is busy with a {self._trial}", "busy", "wait for it to finish")
            active = self.store.active()
            if active is not None:
                raise refused(
                    f"deployment {active.id} ({active.state.value}) holds the node; trials need it idle",
                    "busy",
                    "trial on the micro-VM instead, or `schedcp rollback` first",
                )
            state = self.node.state()
            if not state.idle:
                raise refused(f"sched_ext is {state.state} with {state.ops!r}", "busy", "detach it first")
            self._trial = what
        try:
            yield
        finally:
            with self._op:
                self._trial = None
                self._detach_strays()

    def _detach_strays(self) -> None:
        held_external = self._held is not None and self._held.artefact.kind == "external"
        held = self._held.handle if self._held else None
        ours = {h for h in (None if held_external else held, self._standby.handle if self._standby else None)}
        with suppress(SchedcpError):
            loaded = dict(self.node.call("loaded", timeout_s=10).get("loaded") or {})
            for handle in loaded:
                if int(handle) not in ours:
                    self.node.detach(int(handle))
                    self._audit("trial_stray_detached", {"handle": int(handle), "ops": loaded[handle]})
        with suppress(SchedcpError):
            procs = dict(self.node.call("external_list", timeout_s=10).get("processes") or {})
            for handle, proc in procs.items():
                if not (held_external and int(handle) == held):
                    self.node.call("external_stop", {"handle": int(handle)}, timeout_s=60)
                    self._audit("trial_stray_detached", {"handle": int(handle), "binary": proc.get("binary")})

    def wait_idle(self, timeout_s: float) -> None:
        """For shutdown and tests: stop watching, join the workers, close the standby."""
        self._stopping.set()
        with self._op:
            self._gen += 1
            self._drop_standby()
        for t in self._threads:
            t.join(timeout_s)

    # ---- checks ----------------------------------------------------------------------------
    def _check(self, dep: Deployment, request: DeployRequest) -> tuple[Source, Artefact]:
        if self.store.breaker_latched():
            raise refused(
                "the circuit breaker is latched after repeated trips (crash-loop cap)",
                "breaker_latched",
                "find out why with `schedcp audit`, then `schedcp rollback --reset-breaker`",
            )
        if self._trial is not None:
            raise refused(f"the node is busy with a {self._trial}", "busy", "deploy when the trial is over")
        active = self.store.active()
        if active is not None and active.state in (DeployState.baseline, DeployState.canary):
            raise refused(
                f"deployment {active.id} is still in its {active.state.value} phase",
                "busy",
                "wait for it to be promoted, or `schedcp rollback`",
            )
        source: Source
        if request.external is not None:
            source, artefact = deploy_external.check_request(
                request, self.policy, self.node, kernel=self.kernel, search=self.external_search
            )
        else:
            source, artefact = self._check_token(request)
        refusal = self.store.refusal(artefact.key)
        if refusal is not None and not request.override_refusal:
            raise refused(
                f"this {'binary' if artefact.kind == 'external' else 'object'}, configuration and kernel tripped "
                f"the breaker in {refusal[0]} ({refusal[1]})",
                "artefact_refused",
                "change the object or its configuration and verify again, or deploy with --override-refusal",
            )
        if refusal is not None:
            self.store.lift_refusal(artefact.key)
        return source, artefact

    def _check_token(self, request: DeployRequest) -> tuple[StoredObject, Artefact]:
        if request.token_id is not None:
            token = self.tokens.load(request.token_id)
            if token is None:
                raise refused(
                    f"no token with id {request.token_id} was issued by this daemon",
                    "token_unknown",
                    "verify the scheduler through the daemon (`schedcp verify --daemon`) for a token id",
                )
        else:
            token = request.token or ""
        object_sha = self.tokens.claims_object(token)
        stored = self.artefacts.get(object_sha) if object_sha else None
        if stored is None:
            # No object of ours matches: the check still runs so a forged or damaged token is named as such.
            self.tokens.verify(token, object_sha256="0" * 64, config={}, kernel=self.kernel)
            raise refused(
                "the daemon holds no verified object for this token",
                "artefact_missing",
                "verify the scheduler through this daemon so it keeps the object",
            )
        verified = self._verified(stored, dict(request.config))
        self.tokens.verify(token, object_sha256=stored.sha256, config=verified.bound, kernel=self.kernel)
        artefact = Artefact(
            scheduler=stored.info.scheduler, object_sha256=stored.sha256, config=verified.bound, kernel=self.kernel
        )
        return stored, artefact

    # ---- the worker ------------------------------------------------------------------------
    def _run(self, dep: Deployment, stored: Source) -> None:
        try:
            if dep.request.all_tasks:
                self._deploy_all_tasks(dep, stored)
            else:
                self._deploy_phases(dep, stored)
        except SchedcpError as exc:
            with self._op:
                current = self.store.get(dep.id) or dep
                if current.state in (DeployState.rolled_back, DeployState.retired):
                    return
                self._fail(dep, exc)
        except Exception as exc:  # a bug must still leave the node in a known state
            with self._op:
                self._fail(dep, SchedcpError(f"{type(exc).__name__}: {exc}", "see the daemon's log", code="internal"))

    def _fail(self, dep: Deployment, exc: SchedcpError) -> None:
        # Restore when this deployment holds the node, or when it had already removed the previous
        # policy and then failed to load its own (nothing is held then).
        previous_id = dep.previous.deployment_id if dep.previous else None
        displaced = self._held is None or self._held.deployment_id == dep.id
        restored = ""
        if displaced and (self._held is not None or previous_id is not None):
            self._gen += 1
            restored, _t, err = self._restore(dep.previous or LastKnownGood())
            if err:
                restored += f" ({err})"
        exit_info = ExitRecord.from_node(exc.details.get("exit_info")) if isinstance(exc, NodeOpError) else None
        extra = {"exit_info": exit_info.model_dump()} if exit_info else {}
        self.store.transition(dep, DeployState.failed, exc.cause, code=exc.code, restored_to=restored, **extra)
        self._audit("deploy_failed", {"deployment": dep.id, "code": exc.code, "cause": exc.cause[:300]})

    def _deploy_all_tasks(self, dep: Deployment, source: Source) -> None:
        """An installed binary without a partial-switch flag: no canary and no baseline (there is no
        target to measure), so it runs on every task at once and the breaker watches its health (the
        process, ejections, stalls) through the window before it becomes the last known good."""
        assert dep.artefact is not None
        with self._op:
            if self._stopping.is_set():
                raise SchedcpError("the daemon is stopping", "deploy again after it restarts", code="stopping")
            self._gen += 1
            gen = self._gen
            self._prepare_standby(dep.previous or LastKnownGood())
            self._detach_current()
            self._load(dep, source, partial=False)
            dep.promoted_at = time.time()
            dep.canary_until = dep.promoted_at + (dep.request.window_s or self.policy.window_s)
            self.store.transition(
                dep,
                DeployState.promoted,
                f"{dep.artefact.scheduler} on all tasks at once (it has no partial-switch flag, so no canary); "
                f"it becomes the last known good after {dep.canary_until - dep.promoted_at:.0f}s without a trip",
                loader=self.last_loader,
            )
            self._audit("deploy_all_tasks", {"deployment": dep.id, "scheduler": dep.artefact.scheduler})
        if not self._watch(dep, gen, None, until=dep.canary_until, rescan=False, collected=[]):
            return
        with self._op:
            if gen != self._gen:
                return
            self._retire_previous(dep)
            self.store.set_last_known_good(LastKnownGood(deployment_id=dep.id, artefact=dep.artefact))
            self.store.transition(dep, DeployState.promoted, "the window passed without a trip: last known good")
            self._audit("deploy_promoted", {"deployment": dep.id, "partial": False})
        if self.policy.watch_after_promotion:
            self._watch(dep, gen, None, until=None, rescan=False, collected=[])

    def _deploy_phases(self, dep: Deployment, stored: Source) -> None:
        assert dep.artefact is not None
        target = dep.request.canary
        assert target is not None
        goal = dep.request.goal
        # Baseline: the goal metric under whatever runs now.
        self.store.transition(dep, DeployState.baseline, f"measuring {goal} on {target.describe()}")
        held_before = self._held.deployment_id if self._held else None
        samples = self._sample_for(target, goal, self.policy.baseline_s)
        metric_note = ""
        try:
            dep.threshold = breaker.threshold(goal, samples, self.policy)
        except SchedcpError as exc:
            if exc.code != "baseline_too_short":
                raise
            # An idle target gives no noise floor to judge against: the breaker still watches the
            # kernel (ejections, error exits, stalls), not the metric, and the story says so.
            metric_note = f"; no metric watch: {exc.cause}"
        self.store.save(dep)
        with self._op:
            if self._stopping.is_set():
                raise SchedcpError("the daemon is stopping", "deploy again after it restarts", code="stopping")
            if (self._held.deployment_id if self._held else None) != held_before:
                raise SchedcpError(
                    "what the node runs changed during the baseline (a trip or a rollback)",
                    "deploy again",
                    code="baseline_disturbed",
                )
            self._gen += 1
            gen = self._gen
            self._prepare_standby(dep.previous or LastKnownGood())
            self._detach_current()
            self._load(dep, stored, partial=True)
            switched = self._switch(target)
            dep.canary_started = time.time()
            dep.canary_until = dep.canary_started + (dep.request.window_s or self.policy.window_s)
            dep.canary_tasks = switched
            self.store.transition(
                dep,
                DeployState.canary,
                f"{dep.artefact.scheduler} on {target.describe()} ({switched} tasks) for "
                f"{dep.canary_until - dep.canary_started:.0f}s{metric_note}",
                threshold=dep.threshold.model_dump() if dep.threshold else None,
                loader=self.last_loader,
            )
            self._audit("deploy_canary", {"deployment": dep.id, "tasks": switched})
        watch = (
            breaker.MetricWatch(dep.threshold, self.policy.consecutive_bad, self.policy.smooth)
            if dep.threshold
            else None
        )
        canary_samples: list[Sample] = []
        if not self._watch(dep, gen, watch, until=dep.canary_until, rescan=True, collected=canary_samples):
            return
        with self._op:
            if gen != self._gen:
                return
            if dep.request.stay_partial:
                self.store.transition(dep, DeployState.partial, "canary window passed; staying partial")
            else:
                self._gen += 1
                gen = self._gen
                self._detach_current()
                self._load(dep, stored, partial=False)
                dep.promoted_at = time.time()
                self.store.transition(dep, DeployState.promoted, "canary window passed; all tasks switched")
            self._retire_previous(dep)
            lkg = LastKnownGood(
                deployment_id=dep.id,
                artefact=dep.artefact,
                partial=dep.request.stay_partial,
                canary=target if dep.request.stay_partial else None,
            )
            self.store.set_last_known_good(lkg)
            self._audit("deploy_promoted", {"deployment": dep.id, "partial": dep.request.stay_partial})
            self._feedback(dep, canary_samples, "promoted")
        if self.policy.watch_after_promotion:
            self._watch(dep, gen, watch, until=None, rescan=dep.request.stay_partial, collected=[])

    # ---- watching --------------------------------------------------------------------------
    def _watch(
        self,
        dep: Deployment,
        gen: int,
        watch: breaker.MetricWatch | None,
        *,
        until: float | None,
        rescan: bool,
        collected: list[Sample],
    ) -> bool:
        """Tick until ``until`` (None: until replaced). False when the deployment ended meanwhile."""
        target = dep.request.canary
        goal = dep.request.goal
        prev = self._counters(target)
        ticks = 0
        next_tick = time.monotonic() + self.policy.tick_s
        while True:
            delay = next_tick - time.monotonic()
            if delay > 0 and self._stopping.wait(delay):
                return False
            next_tick += self.policy.tick_s
            with self._op:
                if gen != self._gen:
                    return False
                pol = self._pol
                if pol is None:
                    return False
                health = pol.check(wait_reason_s=2.0)
                if not health.stayed:
                    first = health.ejections[0] if health.ejections else None
                    exited = isinstance(health, trial_external.ExternalHealth) and bool(health.exited)
                    signal = _classify(first) if first else "process_exit" if exited else "left"
                    self._trip(dep, signal, health.reason, health.ejections)
                    return False
                ticks += 1
                full = prev is None or ticks % RESCAN_TICKS == 0
                known = None if full or prev is None else prev.procs
                cur = self._counters(target, switch=rescan and full, known=known)
                if cur is not None and rescan and full:
                    dep.canary_tasks = max(dep.canary_tasks, len(cur.tasks))
                if prev is not None and cur is not None:
                    sample = breaker.metric_value(goal, prev, cur)
                    collected.append(sample)
                    dep.last_samples = [*dep.last_samples[-9:], sample]
                    if watch is not None and watch.feed(sample):
                        th = watch.threshold
                        reason = (
                            f"{goal}'s median over {watch.smooth} ticks was worse than {th.limit:g} (baseline "
                            f"median {th.median:g}) {watch.bad_run} times in a row"
                        )
                        self._trip(dep, "metric", reason, [], samples=list(watch.recent))
                        return False
                prev = cur if cur is not None else prev
                self.store.save(dep)
            if until is not None and time.time() >= until:
                return True

    def _counters(
        self, target: CanaryTarget | None, *, switch: bool = False, known: list[int] | None = None
    ) -> breaker.Counters | None:
        """The target's counters now (None when it cannot be read, or there is no target: all tasks)."""
        if target is None:
            return None
        args: dict[str, Any] = {**target.node_args(), **({"switch": True} if switch else {})}
        if known is not None:
            # Between rescans only the processes already found are read, plus (for a PID tree) their
            # new descendants through the kernel's children lists: a job started since the last
            # rescan is measured from its first tick, not from the next rescan.
            args = {"known": known, **({"follow": True} if target.pid is not None else {})}
        try:
            return breaker.Counters.from_node(self.node.call("canary_sample", args, timeout_s=15))
        except NodeOpError:
            return None

    def _sample_for(self, target: CanaryTarget, goal: Any, seconds: float) -> list[Sample]:
        samples: list[Sample] = []
        prev = self._counters(target)
        if prev is None or not prev.tasks:
            raise SchedcpError(
                f"the canary target ({target.describe()}) has no running tasks",
                "start the workload first, then deploy",
                code="canary_empty",
            )
        end = time.monotonic() + seconds
        ticks = 0
        while time.monotonic() < end and not self._stopping.is_set():
            self._stopping.wait(self.policy.tick_s)
            ticks += 1
            cur = self._counters(target, known=None if ticks % RESCAN_TICKS == 0 else prev.procs)
            if cur is not None:
                samples.append(breaker.metric_value(goal, prev, cur))
                prev = cur
        return samples

    def _switch(self, target: CanaryTarget | None, policy: str = "ext") -> int:
        if target is None:
            return 0
        try:
            res = self.node.call("canary_switch", {**target.node_args(), "policy": policy}, timeout_s=15)
        except NodeOpError:
            return 0
        return int(res.get("switched", 0)) + int(res.get("already", 0))

    # ---- changing what runs ----------------------------------------------------------------
    def _verified(self, stored: StoredObject, config: dict[str, Any]) -> VerifiedConfig:
        """The configuration checked against the stored object, with the verifier's loader options."""
        return check_config(stored, config, enum_kernel=self.enum_kernel)

    def _load(self, dep: Deployment, stored: Source, *, partial: bool) -> None:
        assert dep.artefact is not None
        self._attach(dep.id, dep.artefact, stored, partial=partial)

    def _attach(self, dep_id: str, artefact: Artefact, stored: Source | None, *, partial: bool) -> None:
        pol: trial_attached.AttachedPolicy
        if artefact.kind == "external":
            # An installed binary: started again from the catalog's command line, and only if the
            # installed file is still the one deployed (its own watchdog; no token, no standby).
            command = (
                stored if isinstance(stored, ExternalCommand) else deploy_external.command_for(artefact, self.policy)
            )
            pol = trial_external.start(
                self.node, command, partial=partial, search=self.external_search, expect_sha256=artefact.object_sha256
            )
        else:
            if not isinstance(stored, StoredObject):
                raise SchedcpError("the object is missing from the artefact store", "", code="lkg_missing")
            verified = self._verified(stored, dict(artefact.config))
            pol = trial_attached.load(
                self.node,
                policy_for(stored, verified),
                config=dict(verified.tunables),
                watchdog_ms=self.policy.watchdog_ms,
                partial=partial,
            )
        self._pol = pol
        self.last_loader = pol.loader
        self._held = Held(
            deployment_id=dep_id,
            artefact=artefact,
            handle=pol.handle,
            ops_name=pol.ops_name,
            enable_seq=pol.attach_state.enable_seq,
            partial=partial,
        )
        self.store.set_held(self._held)

    def _prepare_standby(self, lkg: LastKnownGood) -> None:
        """Load the last known good without attaching it: the kernel verifies it now, not on a trip."""
        key = (lkg.deployment_id, lkg.partial) if lkg.artefact is not None and lkg.deployment_id else None
        if key is not None and key == self._standby_key and self._standby is not None:
            return
        self._drop_standby()
        if key is None or lkg.artefact is None or lkg.artefact.kind == "external":
            return  # a binary cannot be loaded without running it: its restore starts it again
        stored = self.artefacts.get(lkg.artefact.object_sha256)
        if stored is None or stored.sha256 != lkg.artefact.object_sha256:
            return
        try:
            verified = self._verified(stored, dict(lkg.artefact.config))
            self._standby = trial_attached.load(
                self.node,
                policy_for(stored, verified),
                config=dict(verified.tunables),
                watchdog_ms=self.policy.watchdog_ms,
                partial=lkg.partial,
                attach=False,
            )
            self._standby_key = key
        except SchedcpError:
            self._standby, self._standby_key = None, None  # a restore will load it the slow way

    def _drop_standby(self) -> None:
        standby, self._standby, self._standby_key = self._standby, None, None
        if standby is not None:
            with suppress(SchedcpError):
                standby.detach()

    def _attach_standby(self, lkg: LastKnownGood) -> bool:
        """Attach the prepared standby when it is this last known good; False when there is none."""
        if self._standby is None or lkg.artefact is None or self._standby_key != (lkg.deployment_id, lkg.partial):
            return False
        standby, self._standby, self._standby_key = self._standby, None, None
        try:
            raw = self.node.call("attach", {"handle": standby.handle}, timeout_s=30)
        except SchedcpError:
            with suppress(SchedcpError):
                standby.detach()
            return False
        state = SchedExtState.model_validate(raw.get("state") or {})
        self._pol = trial_attached.AttachedPolicy(
            self.node,
            standby.policy,
            handle=standby.handle,
            ops_name=standby.ops_name,
            config=standby.config,
            variables=standby.variables,
            attach_events=events_from(raw.get("kernel_events")),
            state=state,
            partial=standby.partial,
        )
        assert lkg.deployment_id is not None
        self._held = Held(
            deployment_id=lkg.deployment_id,
            artefact=lkg.artefact,
            handle=standby.handle,
            ops_name=standby.ops_name,
            enable_seq=state.enable_seq,
            partial=standby.partial,
        )
        self.store.set_held(self._held)
        return True

    def _detach_current(self) -> None:
        pol, self._pol, self._held = self._pol, None, None
        self.store.set_held(None)
        if pol is not None:
            with suppress(SchedcpError):
                self.last_exit = pol.detach().exit_info

    def _restore(self, lkg: LastKnownGood) -> tuple[str, float, str | None]:
        """Put the last known good back; (what runs now, seconds it took, error if it fell to default).
        ``last_restore_steps`` keeps where the time went (detach, load, confirm)."""
        t0 = time.monotonic()
        self.last_exit = None
        self._detach_current()
        t_detached = time.monotonic()
        error: str | None = None
        restored = "default"
        used_standby = False
        if lkg.artefact is not None and lkg.deployment_id:
            external = lkg.artefact.kind == "external"
            stored = None if external else self.artefacts.get(lkg.artefact.object_sha256)
            try:
                used_standby = self._attach_standby(lkg)
                if not used_standby:
                    if not external and (stored is None or stored.sha256 != lkg.artefact.object_sha256):
                        raise SchedcpError("the last known good object is missing or altered", "", code="lkg_missing")
                    self._attach(lkg.deployment_id, lkg.artefact, stored, partial=lkg.partial)
                if lkg.partial and lkg.canary is not None:
                    self._switch(lkg.canary)
                restored = lkg.artefact.scheduler
            except SchedcpError as exc:
                error = f"restoring {lkg.name} failed: {exc.cause}"
                self._detach_current()
        t_loaded = time.monotonic()
        deadline = t_loaded + RESTORE_CONFIRM_S
        while True:
            state = self.node.state()
            ok = state.runs(self._held.ops_name) if self._held else state.idle
            if ok or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if not ok:
            error = (error + "; " if error else "") + f"sched_ext reads {state.state!r} after the restore"
        end = time.monotonic()
        self.last_restore_steps = {
            "detach_s": round(t_detached - t0, 4),
            "load_s": round(t_loaded - t_detached, 4),
            "confirm_s": round(end - t_loaded, 4),
            "standby": 1.0 if used_standby else 0.0,
        }
        return restored, end - t0, error

    def _trip(
        self,
        dep: Deployment,
        signal: Any,
        reason: str,
        events: list[KernelEvent],
        *,
        samples: list[Sample] | None = None,
        count: bool = True,
    ) -> Trip:
        """Open the breaker: restore the last known good, then record everything about why."""
        at = time.time()
        phase = dep.state
        self._gen += 1
        lkg = dep.previous or LastKnownGood()
        restored, restore_s, error = self._restore(lkg)
        exit_info = ExitRecord.from_node(self.last_exit)
        if exit_info is not None:
            reason = f"{reason}; the scheduler's exit record: {exit_info.describe()}"
        trip = Trip(
            deployment_id=dep.id,
            at=at,
            signal=signal,
            reason=reason[:500],
            exit_info=exit_info,
            phase=phase,
            kernel_events=[e.as_dict() for e in events[:5]],
            samples=(samples or dep.last_samples)[-20:],
            threshold=dep.threshold,
            restored_to=restored,
            restore_s=round(restore_s, 4),
            restore_steps=self.last_restore_steps,
            restore_error=error,
        )
        self.store.add_trip(trip)
        self.store.set_last_known_good(lkg if restored != "default" else LastKnownGood())
        if lkg.deployment_id and restored != "default":
            previous = self.store.get(lkg.deployment_id)
            if previous is not None:
                state = DeployState.partial if lkg.partial else DeployState.promoted
                self.store.transition(previous, state, f"restored as the last known good after {dep.id} tripped")
                self._prepare_standby(previous.previous or LastKnownGood())
                self._resume_watch(previous)
        if dep.artefact is not None and count:
            self.store.refuse(dep.artefact.key, dep.id, f"{signal}: {reason[:200]}")
        if dep.request.canary is not None and not (lkg.partial and lkg.canary == dep.request.canary):
            self._switch(dep.request.canary, "normal")
        note = f"breaker tripped ({signal}: {reason[:200]}); restored {restored} in {restore_s:.3f}s"
        self.store.transition(dep, DeployState.rolled_back, note, signal=signal, restore_s=round(restore_s, 4))
        self._audit(
            "breaker_trip",
            {
                "deployment": dep.id,
                "signal": signal,
                "reason": reason[:300],
                "restored_to": restored,
                "restore_s": round(restore_s, 4),
                "restore_error": error,
                "exit": exit_info.describe() if exit_info else None,
            },
        )
        if count:
            now = time.time()
            n = breaker.trips_in_window(
                self.store.trip_times(now - self.policy.trip_window_s),
                since_reset=self.store.breaker_reset_at(),
                now=now,
                window_s=self.policy.trip_window_s,
            )
            if n >= self.policy.max_trips and not self.store.breaker_latched():
                self.store.set_breaker_latched(True)
                self._audit("breaker_latched", {"trips": n, "window_s": self.policy.trip_window_s})
        self._feedback(dep, trip.samples, f"rolled_back: {signal}")
        return trip

    def _retire_previous(self, dep: Deployment) -> None:
        prev_id = dep.previous.deployment_id if dep.previous else None
        if prev_id and prev_id != dep.id:
            prev = self.store.get(prev_id)
            if prev is not None and prev.state in GOOD_STATES:
                self.store.transition(prev, DeployState.retired, f"replaced by {dep.id}")

    def _resume_watch(self, dep: Deployment) -> None:
        """Watch a restored last known good (health only: its baseline is from another time)."""
        gen = self._gen
        t = threading.Thread(target=self._watch_safely, args=(dep, gen), name=f"watch-{dep.id}", daemon=True)
        self._threads.append(t)
        t.start()

    def _watch_safely(self, dep: Deployment, gen: int) -> None:
        with suppress(SchedcpError):
            self._watch(dep, gen, None, until=None, rescan=dep.state == DeployState.partial, collected=[])

    # ---- feedback for the Learning agent ---------------------------------------------------
    def _feedback(self, dep: Deployment, samples: list[Sample], outcome: str) -> None:
        if self.feedback_path is None or dep.threshold is None or dep.artefact is None:
            return
        values = [s.value for s in samples if s.value is not None]
        if not values:
            return
        from schedcp.analysis.feedback import FeedbackStore

        goal = dep.request.goal
        with FeedbackStore(self.feedback_path) as fb:
            fb.record(
                dep.id,
                f"deploy:{dep.request.target_text()}"[:200],
                {goal: statistics.median(values)},
                baseline={goal: dep.threshold.median},
                directions={goal: GOAL_DIRECTIONS[goal]},
                context={
                    "outcome": outcome,
                    "scheduler": dep.artefact.scheduler,
                    "kind": dep.artefact.kind,
                    "object_sha256": dep.artefact.object_sha256,
                    "config": dep.artefact.config,
                    "kernel": dep.artefact.kernel,
                    "threshold": dep.threshold.model_dump(),
                },
                primary=goal,
            )

    # ---- reconcile on start ----------------------------------------------------------------
    def reconcile(self) -> list[str]:
        """Compare the store with what the kernel runs; adopt, restore or note (docs/deploy.md)."""
        notes: list[str] = []
        with self._op:
            state = self.node.state()
            active = self.store.active()
            held = self.store.held()
            loaded: dict[str, str] = {}
            with suppress(SchedcpError):
                loaded = dict(self.node.call("loaded", timeout_s=10).get("loaded") or {})
            ours = (
                held is not None
                and active is not None
                and held.deployment_id == active.id
                and state.runs(held.ops_name)
                and state.enable_seq == held.enable_seq
                and self._node_holds(held, loaded)
            )
            if ours and held is not None and active is not None:
                self._adopt(held, state)
                notes.append(f"adopted {held.ops_name} ({active.id}): the node still runs it")
                self._resume_watch(active)
            elif not state.idle and state.state is not None:
                if active is not None:
                    self.store.transition(active, DeployState.displaced, f"the kernel runs {state.ops!r}, not ours")
                notes.append(
                    f"the kernel runs {state.ops!r} ({state.state}), which this daemon did not load; left alone"
                )
                self.store.set_held(None)
            elif active is not None:
                lkg = (
                    self.store.last_known_good()
                    if active.state in GOOD_STATES
                    else (active.previous or LastKnownGood())
                )
                self.store.transition(
                    active, DeployState.interrupted, "the kernel no longer ran it when the daemon started"
                )
                if lkg.artefact is not None and lkg.artefact.kernel != self.kernel:
                    notes.append(f"the last known good was verified for {lkg.artefact.kernel}, not {self.kernel}")
                    lkg = LastKnownGood()
                restored, restore_s, error = self._restore(lkg)
                self.store.set_last_known_good(lkg if restored != "default" else LastKnownGood())
                notes.append(
                    f"{active.id} was {active.state.value} but not running; restored {restored} in {restore_s:.2f}s"
                )
                if error:
                    notes.append(error)
                if lkg.deployment_id and restored != "default":
                    prev = self.store.get(lkg.deployment_id)
                    if prev is not None:
                        st = DeployState.partial if lkg.partial else DeployState.promoted
                        self.store.transition(prev, st, "restored as the last known good on daemon start")
                        self._resume_watch(prev)
            else:
                notes.append("nothing deployed and the kernel runs its default scheduler")
                self.store.set_held(None)
        self.reconcile_notes = notes
        self._audit("deploy_reconcile", {"notes": notes, "sched_ext": state.as_dict()})
        return notes

    def _node_holds(self, held: Held, loaded: dict[str, str]) -> bool:
        """Does the node still hold what the store says we hold (an object's handle, or a live process)?"""
        if held.artefact.kind != "external":
            return loaded.get(str(held.handle)) == held.ops_name
        try:
            procs = dict(self.node.call("external_list", timeout_s=10).get("processes") or {})
        except SchedcpError:
            return False
        proc = procs.get(str(held.handle)) or {}
        return bool(proc.get("alive")) and proc.get("sha256") == held.artefact.object_sha256

    def _adopt(self, held: Held, state: SchedExtState) -> None:
        if held.artefact.kind == "external":
            status = self.node.call("external_status", {"handle": held.handle}, timeout_s=15)
            self._pol = trial_external.ExternalPolicy(
                self.node,
                deploy_external.command_for(held.artefact, self.policy),
                handle=held.handle,
                started=status,
                ops_name=held.ops_name,
                state=state,
                partial=held.partial,
            )
            self._held = held
            return
        stored = self.artefacts.get(held.artefact.object_sha256)
        if stored is None:
            raise SchedcpError("the held object is missing from the artefact store", "", code="lkg_missing")
        verified = self._verified(stored, dict(held.artefact.config))
        self._pol = trial_attached.AttachedPolicy(
            self.node,
            policy_for(stored, verified),
            handle=held.handle,
            ops_name=held.ops_name,
            config=dict(verified.tunables),
            variables=global_vars(stored.path),
            attach_events=[],
            state=state,
            partial=held.partial,
        )
        self._held = held
