# SPDX-License-Identifier: Apache-2.0
"""The trial core without a sched_ext kernel: event classification, comparisons, the node transports.

What needs sched_ext (attaching, ejections, counters) is tested against the real kernel in the
micro-VM (tests/test_vm.py); here the node transports run the real node agent on this host, in
process and as a ``schedcp-node --unix`` subprocess, and the daemon transport talks to a real daemon.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from schedcp.daemon.testing import running_daemon
from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.node.scx import KernelLog
from schedcp.trial import compare
from schedcp.trial.models import OWN_DETACH_REASON, SchedExtState, ejections, events_from
from schedcp.trial.node import DaemonNode, LocalNode, NodeInputError, NodeOpError, SocketNode

# Kernel-log records as sched_ext writes them (7.2), in the order of an attach, an ejection, a detach.
KMSG = [
    (1.0, 'sched_ext: BPF scheduler "stall" enabled'),
    (2.0, 'sched_ext: BPF scheduler "stall" disabled (runnable task stall)'),
    (2.0, "sched_ext: stall: watchdog failed to check in for 1.004s"),
    (3.0, 'sched_ext: BPF scheduler "minimal" enabled'),
    (4.0, f'sched_ext: BPF scheduler "minimal" disabled ({OWN_DETACH_REASON})'),
]


def _events():
    return events_from(KernelLog("/nonexistent").parse(KMSG))


def test_ejection_rule_excludes_our_own_detach_and_other_schedulers() -> None:
    events = _events()
    assert [e.kind for e in events] == ["enabled", "disabled", "enabled", "disabled"]
    stall, own = events[1], events[3]
    assert stall.is_ejection() and stall.is_ejection("stall") and not stall.is_ejection("minimal")
    assert not own.is_ejection() and not own.is_ejection("minimal")
    assert not events[0].is_ejection()
    assert stall.describe() == "runnable task stall: watchdog failed to check in for 1.004s"
    assert [e.scheduler for e in ejections(events)] == ["stall"]
    # The node's JSON shape survives the round trip through the model.
    raw = KernelLog("/nonexistent").parse(KMSG)
    assert [e.as_dict() for e in events_from(raw)] == raw


def test_state_model_judges_idle_and_running() -> None:
    assert SchedExtState.model_validate({"supported": False, "state": None, "ops": None}).idle
    on = SchedExtState.model_validate({"supported": True, "state": "enabled", "ops": "fifo", "enable_seq": 3})
    assert on.runs("fifo") and on.runs(None) and not on.runs("vtime") and not on.idle
    assert not SchedExtState(state="disabling", ops="fifo").runs("fifo")


@pytest.mark.parametrize(
    ("metric", "way"),
    [
        ("makespan_s", "lower"),
        ("p99_latency_us", "lower"),
        ("requests_latency_ms", "lower"),
        ("error_rate", "lower"),
        ("ctx_switches_per_s", "lower"),
        ("ops_per_s", "higher"),
        ("throughput_rounds_per_s", "higher"),
        ("app_rounds", "higher"),
        ("compile_cpu_s", "lower"),
        ("widgets", None),
        ("mystery", None),
    ],
)
def test_one_direction_rule(metric: str, way: str | None) -> None:
    assert compare.direction(metric) == way


def test_ratio_is_above_one_when_the_policy_is_better_either_way() -> None:
    assert compare.ratio(10.0, 5.0, "lower") == 2.0 and compare.ratio(10.0, 20.0, "lower") == 0.5
    assert compare.ratio(100.0, 150.0, "higher") == 1.5 and compare.ratio(100.0, 80.0, "higher") == 0.8
    assert compare.ratio(0.0, 5.0, "lower") is None and compare.ratio(None, 1.0, "lower") is None
    assert compare.ratio(10.0, 0.0, "lower") is None and compare.ratio(10.0, 0.0, "higher") == 0.0
    with pytest.raises(ValueError):
        compare.ratio(1.0, 1.0, "sideways")  # type: ignore[arg-type]
    assert compare.direction("widgets", {"widgets": "higher"}) == "higher"
    with pytest.raises(ValueError):
        compare.direction("widgets", {"widgets": "up"})
    got = compare.ratios(
        {"makespan_s": 8.0, "throughput": 150.0, "widgets": 3}, {"makespan_s": 10.0, "throughput": 100}
    )
    assert got == {"makespan_s": 1.25, "throughput": 1.5}


def test_rounds_pair_within_each_round() -> None:
    per_round = compare.round_ratios([(10.0, 8.0), (12.0, 13.0), (11.0, 10.0)], "lower")
    assert per_round == pytest.approx([1.25, 12 / 13, 1.1])
    assert compare.consistent(per_round) and not compare.consistent(per_round[:2])
    assert not compare.consistent([]) and not compare.consistent([1.2, None, None])
    summary = compare.paired([*per_round, None])
    assert summary.median == pytest.approx(1.1) and summary.wins == 2 and summary.pairs == 3
    assert compare.median_metrics([{"a": 1.0, "b": 4.0}, {"a": 3.0}, {"a": 2.0}]) == {"a": 2.0, "b": 4.0}
    doc = compare.table(
        {"makespan_s": 10.0, "widgets": 1.0, "rps": 100.0}, {"makespan_s": 8.0, "widgets": 2.0, "rps": 99}
    )
    assert doc["metrics"]["makespan_s"]["better"] == "scheduler" and doc["metrics"]["makespan_s"]["ratio"] == 1.25
    assert doc["metrics"]["widgets"]["better"] == "unknown direction"
    assert doc["metrics"]["rps"]["better"] == "same (within 2%)"
    assert doc["scheduler_better"] == 1 and doc["eevdf_better"] == 0


def _exercise(node) -> None:
    """The typed wrappers against a real node agent on this host (which has no sched_ext)."""
    assert node.state().supported is (Path("/sys/kernel/sched_ext").exists())
    run = node.run(["sh", "-c", "echo out; echo err >&2; exit 3"], 30, count_switches=True)
    assert run.exit_code == 3 and run.stdout == "out\n" and "err" in run.stderr and not run.ok
    assert run.failure() == "exit 3"
    assert run.context_switches is not None and run.context_switches > 0  # the shell itself switches
    events = node.events()
    assert all(e.kind in ("enabled", "disabled", "message") for e in events)
    if not node.state().supported:
        assert events == []  # no sched_ext on this host: its kernel log cannot hold a sched_ext event
    assert b"ctxt " in node.read_file("/proc/stat")
    with pytest.raises(NodeInputError) as bad:
        node.call("run", {"argv": ["true"], "no_such_option": 1})
    assert bad.value.code == "bad_args" and isinstance(bad.value, UsageError)
    with pytest.raises(NodeOpError) as unknown:
        node.call("no_such_op")
    assert unknown.value.code == "unknown_op" and not isinstance(unknown.value, UsageError)


def test_local_node_runs_the_agent_in_process() -> None:
    node = LocalNode()
    # Observation needs none of the agent's state: no kmsg cursor, no work directory yet.
    assert node.call("observe_caps")["ncpu"] >= 1 and node._agent is None
    with pytest.raises(NodeInputError):
        node.call("observe_pids", {"pids": [2**22 + 7], "duration_s": 0.2})
    _exercise(node)
    node.close()


def test_socket_node_talks_to_a_node_agent_process(tmp_path: Path) -> None:
    sock = tmp_path / "node.sock"
    env = {**os.environ, "SCHEDCP_NODE_WORKDIR": str(tmp_path / "work")}
    proc = subprocess.Popen([sys.executable, "-m", "schedcp.node.agent", "--unix", str(sock)], env=env)
    try:
        deadline = time.monotonic() + 30
        while not sock.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        node = SocketNode.connect_unix(sock)
        assert node.hello()["protocol"] == 1
        _exercise(node)
        assert node.put_file("x/data.bin", b"abc").endswith("x/data.bin")
        node.close()
    finally:
        proc.terminate()
        proc.wait(10)
    with pytest.raises(NotReadyError):
        SocketNode.connect_unix(sock)


def test_daemon_node_forwards_only_what_the_daemon_allows(tmp_path: Path) -> None:
    with running_daemon(tmp_path) as client:
        node = DaemonNode(client)
        with pytest.raises(NotReadyError) as refused:
            node.state()  # the daemon keeps the node's state and schedulers to itself
        assert refused.value.code == "daemon_no_node"
        with pytest.raises(SchedcpError) as no_node:
            node.run(["true"])  # forwarded as node_run; this daemon was started without --node
        assert no_node.value.code == "no_node"
