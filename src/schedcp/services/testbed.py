# SPDX-License-Identifier: Apache-2.0
"""Testbeds: one micro-VM boot a client holds across calls, with the workload it optimises.

``run_in_vm`` boots a fresh guest per call, which is right for a one-off comparison but wrong for
an optimisation run: the observation and every candidate's trial must share one boot, or the
comparisons measure different kernels' noise. A testbed is that boot, held by the server for a
client (``start_testbed`` ... ``stop_testbed``): observation tools and ``run_trial`` take its id.

Guards: one testbed at a time per server (it takes the server's VM gate for its whole life, so
``run_in_vm`` queues behind it), and a testbed idle for ``IDLE_S`` is closed when the next one
is asked for, so a client that vanished does not hold the VM forever.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.services import checks, workloads
from schedcp.services.models import Target, TargetSpec, TestbedId, TestbedInfo, TrialRecord
from schedcp.services.operation import Operation, Progress
from schedcp.testbed.extras import GuestExtras
from schedcp.trial.node import GUEST_DEAD

if TYPE_CHECKING:
    from schedcp.services.state import ServerState

OBSERVE_MAX_S = 300.0
IDLE_S = 1800.0
MAX_TRIALS = 200


def make_target(spec: TargetSpec) -> Target:
    """Resolve a target spec to the argv the guest runs (built-in workloads by name, or a command)."""

    if spec.workload and spec.argv:
        raise UsageError("give either a built-in workload or a command, not both", "pick one target")
    if spec.workload:
        argv = workloads.argv_for(spec.workload, list(spec.workload_args))
        return Target(
            label=spec.workload,
            argv=argv,
            builtin=spec.workload,
            workload_args=list(spec.workload_args),
            timeout_s=spec.timeout_s,
            packages=list(spec.packages),
            metric=spec.metric,
        )
    if spec.argv:
        if spec.workload_args:
            raise UsageError("workload_args only applies to a built-in workload", "put the arguments in argv")
        argv = checks.argv(list(spec.argv), "command")
        return Target(
            label=argv[0].rsplit("/", 1)[-1][:40],
            argv=argv,
            timeout_s=spec.timeout_s,
            packages=list(spec.packages),
            metric=spec.metric,
        )
    raise UsageError("nothing to run", "give a built-in workload (e.g. longtail) or a command")


class GuestSession(Protocol):
    """What a testbed needs from its boot (testbed.session.VmSession; tests may pass a host stand-in)."""

    kernel_spec: str
    cpus: int
    kernel: Any
    boot_id: str
    restarts: int

    @property
    def vm(self) -> Any: ...
    @property
    def boot_s(self) -> float | None: ...
    @property
    def accel(self) -> str | None: ...
    @property
    def ready(self) -> bool: ...
    @property
    def error(self) -> BaseException | None: ...
    def start(self) -> None: ...
    def discard(self) -> None: ...
    def close(self) -> None: ...
    def current_boot_id(self) -> str: ...


class Testbed:
    """One held boot: the target, the observation cache, the builds and the trials made in it."""

    __test__ = False

    def __init__(self, testbed_id: str, target: Target, session: GuestSession) -> None:
        self.id = testbed_id
        self.target = target
        self.session = session
        self.lock = threading.Lock()  # one guest operation at a time
        self.raw: dict[str, Any] | None = None
        self.observations = 0
        self.builds: dict[str, Any] = {}  # build_id -> services.build.Built
        self.trials: dict[str, TrialRecord] = {}
        self.last_used = time.monotonic()
        self.closed = False
        self.progress: Callable[[str], None] = lambda _m: None
        self.node: TestbedNode = "vm"

    def touch(self) -> None:
        self.last_used = time.monotonic()

    @property
    def kernel_release(self) -> str:
        return str(getattr(self.session.kernel, "release", "") or "")

    def info(self) -> TestbedInfo:
        err = self.session.error
        if self.closed:
            state = "closed"
        elif err is not None:
            state = "failed"
        elif self.session.ready:
            state = "ready"
        else:
            state = "booting"
        return TestbedInfo(
            testbed_id=self.id,
            target=self.target,
            kernel=self.session.kernel_spec,
            kernel_release=self.kernel_release,
            cpus=self.session.cpus,
            state=state,
            boot_id=self.session.boot_id,
            boot_s=self.session.boot_s,
            accel=self.session.accel,
            restarts=self.session.restarts,
            node=self.node,
            observations=self.observations,
            trials=len(self.trials),
            error=(getattr(err, "cause", None) or str(err))[:300] if err is not None else None,
        )

    # -- observation ------------------------------------------------------------------------------
    def observe(self, *, refresh: bool = False, interval_s: float = 0.1, probe: list[str] | None = None) -> dict:
        """Run the target once under EEVDF with the sampler (and probes); kept for later renders."""
        from schedcp.analysis.engine import Engine

        if self.raw is not None and not refresh and probe is None:
            return self.raw
        self.progress(f"observing {self.target.label} in the guest" + (f" with probes {probe}" if probe else ""))
        for attempt in (1, 2):
            engine = Engine.for_vm(self.session.vm)
            try:
                raw = engine.observe_command(
                    self.target.argv,
                    duration_s=min(self.target.timeout_s, OBSERVE_MAX_S),
                    interval_s=interval_s,
                    probe=probe,
                )
                break
            except SchedcpError as exc:
                if exc.code not in GUEST_DEAD or attempt == 2:
                    raise
                self.progress(f"the guest died while observing ({exc.cause[:100]}); observing again in a fresh boot")
                self.session.discard()
        self.observations += 1
        self.raw = raw
        return raw

    def render(self, detail: str) -> dict[str, Any]:
        from schedcp.analysis import summarize

        return summarize.render(self.observe(), detail, "vm")  # type: ignore[arg-type]

    def profile(self) -> Any:
        from schedcp.analysis.derive import build_profile

        return build_profile(self.observe(), "vm")

    def add_trial(self, record: TrialRecord) -> TrialRecord:
        if len(self.trials) >= MAX_TRIALS:
            raise UsageError(f"this testbed already holds {MAX_TRIALS} trials", "stop it and start a new one")
        self.trials[record.trial_id] = record
        return record

    def trial(self, trial_id: str) -> TrialRecord:
        record = self.trials.get(trial_id)
        if record is None:
            raise UsageError(
                f"no trial {trial_id!r} in testbed {self.id}",
                "trial ids come from run_trial in the same testbed",
                code="not_found",
            )
        return record

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.session.close()


SessionFactory = Callable[..., GuestSession]  # (kernel, cpus, progress[, extras=GuestExtras])
DaemonSessionFactory = Callable[[str, bool, Callable[[str], None]], GuestSession]
# Where a testbed's trials run: the server's own micro-VM, the daemon's node, or the daemon's node
# when it is this host (services/daemon_testbed.py).
TestbedNode = Literal["vm", "daemon", "local"]


@runtime_checkable
class VerifyingSession(Protocol):
    """A session whose node loads only what the SchedCP daemon verified (the daemon testbed)."""

    def verified_policy(self, built: Any, config: dict[str, Any], policy: Any) -> Any: ...


class Testbeds:
    """The testbeds one server process holds."""

    __test__ = False

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        idle_s: float = IDLE_S,
        limit: int = 1,
        host_files: GuestExtras | None = None,
        daemon_factory: DaemonSessionFactory | None = None,
    ) -> None:
        self._factory = session_factory
        # Testbeds on the daemon's node (services/daemon_testbed.py): (kernel, require_local, progress).
        self._daemon_factory = daemon_factory
        # Host files for every testbed's guest: given by whoever started the server (the CLI's
        # --with), never by an MCP client, which must not make the server read host paths.
        self.host_files = host_files
        self._lock = threading.Lock()
        self._open: dict[str, Testbed] = {}
        self.idle_s = idle_s
        self.limit = limit

    def start(
        self, spec: TargetSpec, kernel: str, cpus: int, progress: Callable[[str], None], node: TestbedNode = "vm"
    ) -> Testbed:
        target = make_target(spec)
        if node != "vm" and (target.packages or (self.host_files and self.host_files.files)):
            raise UsageError("packages and files are added to the micro-VM's guest", "use the vm testbed for them")
        if node != "vm" and self._daemon_factory is None:
            raise NotReadyError("this server reaches no SchedCP daemon", "use the vm testbed", code="no_daemon")
        with self._lock:
            now = time.monotonic()
            for tb in list(self._open.values()):
                if now - tb.last_used > self.idle_s:
                    tb.close()
                    del self._open[tb.id]
            if len(self._open) >= self.limit:
                busy = ", ".join(self._open)
                raise SchedcpError(
                    f"{len(self._open)} testbed(s) already hold the micro-VM ({busy})",
                    "stop_testbed the one you no longer need, or wait for it to finish",
                    code="busy",
                )
            if node == "vm":
                extras = GuestExtras(tuple(target.packages), self.host_files.files if self.host_files else ())
                session = self._factory(kernel, cpus, progress, **({"extras": extras} if extras else {}))
            else:
                assert self._daemon_factory is not None
                session = self._daemon_factory(kernel, node == "local", progress)
            session.start()  # resolves the kernel now (errors belong to the caller), boots in the background
            tb = Testbed(f"tb-{secrets.token_hex(6)}", target, session)
            tb.node = node
            tb.progress = progress
            self._open[tb.id] = tb
            return tb

    def get(self, testbed_id: str) -> Testbed:
        with self._lock:
            tb = self._open.get(testbed_id)
        if tb is None:
            raise UsageError(
                f"no open testbed {testbed_id!r} in this server",
                "start one with start_testbed (testbeds end with stop_testbed or when the server stops)",
                code="not_found",
            )
        tb.touch()
        return tb

    def stop(self, testbed_id: str) -> Testbed:
        with self._lock:
            tb = self._open.pop(testbed_id, None)
        if tb is None:
            raise UsageError(f"no open testbed {testbed_id!r}", "nothing to stop", code="not_found")
        tb.close()
        return tb

    def close_all(self) -> None:
        with self._lock:
            open_now, self._open = list(self._open.values()), {}
        for tb in open_now:
            try:
                tb.close()
            except Exception:  # shutting down: one failing guest must not keep the others alive
                pass


def vm_session_factory(hold: Callable[[], Any]) -> SessionFactory:
    def make(
        kernel: str, cpus: int, progress: Callable[[str], None], extras: GuestExtras | None = None
    ) -> GuestSession:
        from schedcp.testbed.session import VmSession

        return VmSession(kernel, cpus, progress, hold=hold, extras=extras)

    return make


# -- operations -------------------------------------------------------------------------------------
class StartTestbedInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: TargetSpec = Field(description="The workload every observation and trial in this testbed runs.")
    kernel: str = Field(
        "unstable",
        pattern=r"^[a-z0-9][a-z0-9.+-]{0,40}$",
        description="Test kernel: 'unstable' (7.2), '6.19' or 'backports' (7.3); must be set up already.",
    )
    cpus: int = Field(2, ge=1, le=64, description="Guest vCPUs.")
    node: TestbedNode = Field(
        "vm",
        description="vm: boot a micro-VM for this testbed. daemon: run on the node the SchedCP daemon owns "
        "(candidates are verified by the daemon first; only the workload's tasks are switched). local: the "
        "same, but only when that node is this host.",
    )


class TestbedIdInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    testbed_id: TestbedId


def start_testbed(state: ServerState, args: StartTestbedInput, progress: Progress) -> TestbedInfo:
    """Boot the sched_ext test kernel in a micro-VM and hold it for an optimisation run: observe the
    target workload in it (workload_summary/workload_profile with testbed_id) and measure candidates
    against EEVDF in the same boot (run_trial). Returns at once; the boot (10-40 s) continues in the
    background and the first call that needs the guest waits for it. One testbed per server; end it
    with stop_testbed."""
    return state.testbeds.start(args.target, args.kernel, args.cpus, progress, args.node).info()


def testbed_status(state: ServerState, args: TestbedIdInput, _progress: Progress) -> TestbedInfo:
    """A testbed's state (booting, ready, failed, closed), its boot id and what ran in it."""
    return state.testbeds.get(args.testbed_id).info()


def stop_testbed(state: ServerState, args: TestbedIdInput, _progress: Progress) -> TestbedInfo:
    """Shut a testbed's guest down and free the micro-VM. Its trials stay recordable by trial_id."""
    return state.testbeds.stop(args.testbed_id).info()


OPERATIONS = [
    Operation("start_testbed", StartTestbedInput, start_testbed, TestbedInfo, kind="write"),
    Operation("testbed_status", TestbedIdInput, testbed_status, TestbedInfo, kind="read", max_bytes=2048),
    Operation("stop_testbed", TestbedIdInput, stop_testbed, TestbedInfo, kind="write", max_bytes=2048),
]
