# SPDX-License-Identifier: Apache-2.0
"""Counting the tasks a workload creates from the kernel's fork/exit events, on this host.

The /proc sampler sees a child only if it is alive at a sample; a fork storm's children live for
about a millisecond, so it saw a few dozen of thousands. These tests hold the counts to the
workload's own numbers.
"""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import kill_tree
from schedcp.analysis.engine import Engine
from schedcp.node import observe

PY = sys.executable


def _app_metrics(raw: dict) -> dict:
    return json.loads(raw["stdout_tail"].strip().splitlines()[-1])["metrics"]


def test_every_child_of_a_fork_storm_is_counted() -> None:
    raw = observe.observe_run([PY, "-m", "schedcp.bench.guest.forkstorm", "--seconds", "1"], duration_s=60)
    forks = raw["forks"]
    assert forks["available"] and forks["complete"], forks
    spawned = _app_metrics(raw)["spawned"]
    assert forks["tasks_created"] == spawned == forks["exited"]
    assert forks["threads_created"] == 0 and forks["alive_at_end"] == 0
    assert forks["lifetimes_total"] == spawned
    assert forks["peak_alive"] <= 4  # --concurrency 4: never more children alive at once
    prof = Engine().profile(raw)
    c = prof.characteristics.churn
    assert c.counted_by == "fork_events" and c.tasks_created == spawned and c.short_lived_storm
    assert "fork events" in prof.characteristics.evidence[0]


def test_threads_are_told_from_processes_and_grandchildren_are_followed() -> None:
    script = (
        "import os, threading\n"
        "ts = [threading.Thread(target=lambda: None) for _ in range(5)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "for _ in range(3):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        if os.fork() == 0: os._exit(0)\n"  # a grandchild, forked by a traced child
        "        os.wait(); os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
    )
    forks = observe.observe_run([PY, "-c", script], duration_s=60)["forks"]
    assert forks["tasks_created"] == 5 + 3 + 3, forks
    assert forks["threads_created"] == 5
    assert forks["exited"] == forks["tasks_created"]


def test_a_task_name_cannot_forge_the_parent() -> None:
    # The children inherit the name, so both the parent and the child name in each fork event
    # carry a fake "pid=1" that a key=value parser would take as the parent.
    script = (
        "import ctypes, os\n"
        "ctypes.CDLL(None).prctl(15, b'x pid=1 child_', 0, 0, 0)\n"  # PR_SET_NAME
        "for _ in range(4):\n"
        "    pid = os.fork()\n"
        "    if pid == 0: os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
    )
    forks = observe.observe_run([PY, "-c", script], duration_s=60)["forks"]
    assert forks["tasks_created"] == 4 and forks["exited"] == 4, forks


def test_observed_pids_count_forks_the_sampler_saw_and_more() -> None:
    proc = subprocess.Popen(
        [PY, "-m", "schedcp.bench.guest.forkstorm", "--seconds", "30"],
        stdout=subprocess.DEVNULL,
    )
    try:
        raw = observe.observe_pids([proc.pid], duration_s=1.0)
    finally:
        kill_tree(proc)
    forks = raw["forks"]
    sampled_born = sum(1 for t in raw["tasks"] if t["born_inside"] and t["pid"] == t["tid"])
    # Every child the sampler happened to see born was also counted by the events, and the
    # events saw the ones that lived and died between samples too.
    assert forks["tasks_created"] >= sampled_born and forks["tasks_created"] > raw["procs_seen"], (forks, sampled_born)
    assert Engine().profile(raw).characteristics.churn.short_lived_storm


def _line(comm: bytes, tid: int, ts: float, event: bytes, body: bytes) -> bytes:
    return b"%16s-%d [000] ..... %.6f: %s: %s\n" % (comm, tid, ts, event, body)


def test_a_reused_tid_is_not_followed() -> None:
    counter = observe.ForkCounter()
    counter.track({100})
    counter.feed(_line(b"w", 100, 1.0, b"sched_process_fork", b"comm=w pid=100 child_comm=w child_pid=101"))
    counter.feed(_line(b"w", 101, 1.5, b"sched_process_exit", b"comm=w pid=101 prio=120 group_dead=true"))
    # An unrelated task later gets tid 101 and forks: not the workload's.
    counter.feed(_line(b"other", 101, 2.0, b"sched_process_fork", b"comm=o pid=101 child_comm=o child_pid=102"))
    # A line split across two reads is joined before it is parsed.
    tail = _line(b"w", 100, 3.0, b"sched_process_fork", b"comm=w pid=100 child_comm=w child_pid=103")
    counter.feed(tail[:30])
    counter.feed(tail[30:-1])
    counter.flush()
    out = counter.report()
    assert out["tasks_created"] == 2 and out["exited"] == 1 and out["alive_at_end"] == 1
    assert out["lifetimes_s"] == [0.5] and out["span_s"] == 2.0


def test_without_fork_events_the_profile_says_it_only_sampled() -> None:
    raw = observe.observe_run([PY, "-m", "schedcp.bench.guest.forkstorm", "--seconds", "0.5"], duration_s=60)
    raw["forks"] = {"available": False, "source": "tracefs", "reason": "no tracefs (unprivileged node)"}
    c = Engine().profile(raw).characteristics.churn
    assert c.counted_by == "sampling" and c.tasks_created is None and c.turnover is None
    assert c.procs_seen == raw["procs_seen"]


def test_a_task_that_exits_between_samples_keeps_its_final_cpu_time() -> None:
    # Samples every 2 s: the child is seen asleep, then burns 0.5 s of CPU and exits before the
    # next sample. Its last sample says ~0; the kernel's exit accounting says what it really used.
    script = (
        "import os, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    time.sleep(4)\n"
        "    end = time.process_time() + 0.5\n"
        "    while time.process_time() < end: pass\n"
        "    os._exit(0)\n"
        "os.waitpid(pid, 0)\n"
    )
    raw = observe.observe_run([PY, "-c", script], duration_s=60, interval_s=2.0)
    assert raw["exit_stats"]["available"] and raw["exit_stats"]["applied"] == 2, raw["exit_stats"]
    (child,) = [t for t in raw["tasks"] if t["tid"] != raw["root_pid"]]
    assert child["exited"] and child["run_ns"] >= 0.5e9, child
    assert child["end_s"] - child["start_s"] >= 4.5  # its exit time, not a guess from the sample grid


def test_an_occasional_helper_is_not_a_storm() -> None:
    # 25 short children, but one at a time with gaps: the tree mostly has none alive. The fork
    # storm keeps its children coming back to back, whatever the machine's speed.
    script = (
        "import os, time\n"
        "for _ in range(25):\n"
        "    pid = os.fork()\n"
        "    if pid == 0: os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "    time.sleep(0.05)\n"
    )
    raw = observe.observe_run([PY, "-c", script], duration_s=60)
    c = Engine().profile(raw).characteristics.churn
    assert c.tasks_created == 25 and c.turnover == 25 and c.mean_alive is not None and c.mean_alive < 0.2, c
    assert not c.short_lived_storm
    storm = observe.observe_run([PY, "-m", "schedcp.bench.guest.forkstorm", "--seconds", "0.5"], duration_s=60)
    assert Engine().profile(storm).characteristics.churn.mean_alive >= 1.0  # --concurrency 4


def test_a_batch_stays_one_group_when_its_spawner_pauses_between_forks() -> None:
    from schedcp.analysis.derive import sibling_groups

    def task(tid: int, start: float, end: float) -> dict:
        return {"pid": tid, "tid": tid, "ppid": 1, "born_inside": True, "start_s": start, "end_s": end}

    # Batch A: a 0.8 s pause after the second fork, but the first two are still alive (waiting
    # for work). Batch B starts after A has ended. Then back-to-back short tasks that never overlap.
    a = [task(10 + i, s, 5.0) for i, s in enumerate((0.0, 0.1, 0.9, 1.0, 1.1))]
    b = [task(20 + i, 10.0 + 0.1 * i, 12.0) for i in range(3)]
    c = [task(30 + i, 20.0 + 0.1 * i, 20.05 + 0.1 * i) for i in range(4)]
    groups = sibling_groups(a + b + c)
    assert [sorted(t["tid"] for t in g) for g in groups] == [
        [10, 11, 12, 13, 14],
        [30, 31, 32, 33],
        [20, 21, 22],
    ]
