# SPDX-License-Identifier: Apache-2.0
"""The scheduler library on the real test kernels: one micro-VM boot per kernel.

For each kernel every core library scheduler is built, attached with a 3 s watchdog, kept under the
mixed load (hogs at three nice levels, ping-pong, sleeper, fork storm, late starter) and must come
out still enabled under its own name, with no ejection, no starved task and moving counters.
Tunables are then shown to reach the loaded program and to change what it does.
"""

from __future__ import annotations

import struct
import warnings

import pytest

from schedcp.toolchain import build, metadata
from schedcp.toolchain.library_check import CheckResult, KernelSession
from schedcp.trial.attached import attached
from schedcp.trial.models import Policy

pytestmark = pytest.mark.vm

SECONDS = 2.5  # per scheduler; long enough for many slices and for the late starter to compete
# The core policies this suite vouches for. Other schedulers may join the library directory (for
# example benchmark-specific ones); `schedcp sched test` checks those the same way on demand.
NAMES = ["fifo", "vtime", "locality", "latency", "ljf", "sjf", "edf", "layered", "central"]
# Counters that the mixed load must move for a policy to have done its specific job at all.
MUST_MOVE = {
    "fifo": "nr_direct",
    "vtime": "nr_direct",
    "latency": "nr_boosted",
    "ljf": "nr_long",
    "sjf": "nr_capped",
    "edf": "nr_enqueued",
    "layered": "nr_unmatched",
    "central": "nr_remote",
    "locality": "nr_prev_idle",
}


class Run:
    """One kernel's VM plus the results already gathered on it (reused by the tunable tests)."""

    def __init__(self, session: KernelSession) -> None:
        self.session = session
        self.defaults: dict[str, CheckResult] = {}

    def default(self, name: str) -> CheckResult:
        if name not in self.defaults:
            self.defaults[name] = self.session.check(name, seconds=SECONDS)
        return self.defaults[name]


@pytest.fixture(scope="module", params=["unstable", "6.19"])
def run(request: pytest.FixtureRequest):
    with KernelSession(request.param) as session:
        yield Run(session)
        if session.boots > 1:  # a guest died and a check was retried: keep it visible
            warnings.warn(f"{session.boots} VM boots were needed on {request.param}", stacklevel=1)


def _explain(res: CheckResult) -> str:
    tasks = {t["name"]: (t["progress"], t["max_gap_ms"]) for t in res.load.get("tasks", [])}
    return (
        f"{res.name} on {res.kernel}: stage={res.stage} error={res.error!r} problems={res.problems} "
        f"tasks(progress, max_gap_ms)={tasks} moved={res.moved} crashes={res.guest_crashes}"
    )


@pytest.mark.parametrize("name", NAMES)
def test_scheduler_survives_mixed_load(run: Run, name: str) -> None:
    res = run.default(name)
    assert res.ok, _explain(res)
    assert res.ops_name == name and res.state_after["ops"] == name
    assert res.ejections == []
    assert res.starved == []
    assert all(t["progress"] > 0 for t in res.load["tasks"]), _explain(res)
    assert res.moved["nr_enqueued"] > 0 and res.moved["nr_dispatched"] > 0
    if name in MUST_MOVE:
        assert res.moved[MUST_MOVE[name]] > 0, _explain(res)


def test_tunable_reaches_program_and_changes_counters(run: Run) -> None:
    """fifo with direct_idle=false: no wakeup skips the queue any more."""
    default = run.default("fifo")
    assert default.moved["nr_direct"] > 0, _explain(default)
    tuned = run.session.check("fifo", {"direct_idle": False, "slice_us": 2000}, seconds=SECONDS)
    assert tuned.ok, _explain(tuned)
    assert tuned.moved["nr_direct"] == 0
    assert tuned.moved["nr_enqueued"] > 0


def test_layer_weight_changes_cpu_share(run: Run) -> None:
    """layered: put one hog in its own layer with 10x weight; it must outrun the other hogs."""
    default = run.default("layered")
    assert default.moved["nr_layer0"] == 0
    tuned = run.session.check("layered", {"layer0_comm": "ml_hog_nice10", "layer0_weight": 1000}, seconds=SECONDS)
    assert tuned.ok, _explain(tuned)
    assert tuned.moved["nr_layer0"] > 0
    progress = tuned.progress()
    # Alone in a layer with ten times the weight, the nice-10 hog gets a CPU to itself while the
    # other hogs share the rest with everything else (layered ignores nice).
    assert progress["hog_nice10"] > max(progress["hog_nice0"], progress["hog_nice5"]), _explain(tuned)


def test_tunable_bytes_are_live_in_rodata(run: Run) -> None:
    """Read the loaded program's .rodata back from the node: the patched values are there."""
    node = run.session.node()
    meta = metadata.get("layered")
    obj = build.build(meta.source_path, run.session.include_dir, target=run.session.kernel.release).object_path
    policy = Policy(name="layered", object_path=obj, meta=meta)
    config = {"layer1_comm": "kworker", "layer1_weight": 321}
    with attached(node, policy, config=config, watchdog_ms=3000) as pol:
        rodata = node.sections(pol.handle)[".rodata"]
        comm = pol.variables["layer1_comm"]
        weight = pol.variables["layer1_weight"]
        assert rodata[comm.offset : comm.offset + comm.size].rstrip(b"\0") == b"kworker"
        assert struct.unpack_from("<I", rodata, weight.offset)[0] == 321
        assert struct.unpack_from("<I", rodata, pol.variables["layer0_weight"].offset)[0] == 100
    assert pol.detach_error is None


# What the compat shims must bind to on each kernel (newest generation the kernel offers).
NEWEST_KFUNCS = {
    "unstable": {
        "fifo_enqueue": "scx_bpf_dsq_insert___v2",
        "fifo_dispatch": "scx_bpf_dsq_move_to_local___v2",
        "vtime_enqueue": "__scx_bpf_dsq_insert_vtime",
        "vtime_stopping": "scx_bpf_task_set_dsq_vtime",
    },
    "6.19": {
        "fifo_enqueue": "scx_bpf_dsq_insert___v2",
        "fifo_dispatch": "scx_bpf_dsq_move_to_local",
        "vtime_enqueue": "__scx_bpf_dsq_insert_vtime",
        "vtime_stopping": "scx_bpf_task_set_dsq_vtime",
    },
}


def test_shims_bind_the_newest_kfuncs(run: Run) -> None:
    """Load (without attaching) and read the verifier's view of the calls back with bpftool."""
    node = run.session.node()
    expected = NEWEST_KFUNCS[run.session.spec]
    for sched in ("fifo", "vtime"):
        meta = metadata.get(sched)
        obj = build.build(meta.source_path, run.session.include_dir, target=run.session.kernel.release).object_path
        with attached(node, Policy(name=sched, object_path=obj, meta=meta), attach=False):
            for prog, kfunc in expected.items():
                if not prog.startswith(sched):
                    continue
                out = node.run(["bpftool", "prog", "dump", "xlated", "name", prog], 30)
                calls = {
                    line.split("call ", 1)[1].split("#")[0].strip()
                    for line in out.stdout.splitlines()
                    if "call " in line
                }
                assert kfunc in calls, f"{prog} on {run.session.spec} calls {sorted(calls)}"
                # The v1 name must be gone where v2 exists (libbpf's ___ stripping trap).
                if kfunc.endswith("___v2"):
                    assert kfunc.removesuffix("___v2") not in calls
