# SPDX-License-Identifier: Apache-2.0
"""The deployment's pure parts: the breaker's metric and noise threshold, requests at the boundary,
the deploy policy file, the SQLite store's story and refusal list, and the node's canary operations
on this host's real /proc (switching needs sched_ext, so only selection and sampling run here)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from schedcp.deploy import breaker
from schedcp.deploy.config import DeployPolicy, load_policy
from schedcp.deploy.models import (
    Artefact,
    CanaryTarget,
    Deployment,
    DeployRequest,
    DeployState,
    LastKnownGood,
    Sample,
    Trip,
)
from schedcp.deploy.store import DeployStore
from schedcp.errors import SchedcpError, UsageError
from schedcp.node import canary


def _counters(t: float, **tasks: tuple[int, int]) -> breaker.Counters:
    return breaker.Counters(t, {k: v for k, v in tasks.items()})


def test_wait_share_uses_threads_seen_in_both_samples_and_cpu_rate_counts_new_ones():
    a = _counters(10.0, t1=(1_000_000_000, 0), t2=(0, 0), gone=(5, 5))
    b = _counters(11.0, t1=(1_500_000_000, 500_000_000), t2=(250_000_000, 0), new=(9, 9))
    wait = breaker.metric_value("wait_share", a, b)
    assert wait.value == pytest.approx(0.5 / 1.25)
    assert wait.tasks == 2
    rate = breaker.metric_value("cpu_rate", a, b)
    assert rate.value == pytest.approx(0.75)  # the new thread's 9 ns count; the gone one's 5 are not taken back
    idle = breaker.metric_value("wait_share", a, _counters(11.0, t1=(1_000_000_000, 0)))
    assert idle.value is None


MS = 1_000_000


def test_cpu_rate_counts_jobs_that_ended_between_ticks_once():
    # The loop shell (10, parent outside the target) runs a job (20) that forks workers (21, 22).
    before = breaker.Counters(
        10.0,
        {"10": (5 * MS, 0), "20": (40 * MS, 0), "21": (200 * MS, 0), "22": (30 * MS, 0), "30": (70 * MS, 0)},
        owner={"10": 10, "20": 20, "21": 21, "22": 22, "30": 30},
        reaped={10: (1, 1000 * MS), 20: (10, 0), 21: (20, 0), 22: (20, 0), 30: (1, 0)},
    )
    # During the tick: 21 ran 100 ms more and was reaped by 20; 22 ran 10 ms more and lives on; a
    # worker born and reaped inside the tick used 250 ms; 30 (its parent is not in the target)
    # exited; 20 itself used 20 ms and the shell 1 ms.
    after = breaker.Counters(
        10.5,
        {"10": (6 * MS, 0), "20": (60 * MS, 0), "22": (40 * MS, 0)},
        owner={"10": 10, "20": 20, "22": 22},
        reaped={10: (1, 1000 * MS), 20: (10, 300 * MS + 250 * MS), 22: (20, 0)},
    )
    assert breaker._cpu_ns(before, after) == (100 + 10 + 250 + 20 + 1) * MS
    assert breaker.metric_value("cpu_rate", before, after).value == pytest.approx(0.381 / 0.5)
    # The job (20) is reaped by the shell in the next tick: its own 60 ms and its workers' 550 ms
    # land in the shell's counter, and none of it is counted a second time.
    later = breaker.Counters(
        11.0, {"10": (7 * MS, 0)}, owner={"10": 10}, reaped={10: (1, 1000 * MS + 60 * MS + 550 * MS + 45 * MS)}
    )
    # 22 ran its last 5 ms and 20 its last 0 ms before they ended; the shell 1 ms.
    assert breaker._cpu_ns(after, later) == (5 + 1) * MS


def test_a_reap_racing_the_sample_moves_cpu_between_ticks_but_never_counts_it_twice():
    # The node read the job's (20) counters, then its worker (21) was reaped before it was read:
    # the node leaves 21 out of that sample (canary_sample keeps a process only with its threads).
    prev = breaker.Counters(
        0.0, {"20": (10 * MS, 0), "21": (300 * MS, 0)}, owner={"20": 20, "21": 21}, reaped={20: (1, 0), 21: (20, 0)}
    )
    racing = breaker.Counters(0.5, {"20": (11 * MS, 0)}, owner={"20": 20}, reaped={20: (1, 0)})
    settled = breaker.Counters(1.0, {"20": (12 * MS, 0)}, owner={"20": 20}, reaped={20: (1, 700 * MS)})
    first, second = breaker._cpu_ns(prev, racing), breaker._cpu_ns(racing, settled)
    assert first == (1 - 300) * MS  # low by the worker's seen time, which its parent does not show yet
    assert second == (1 + 700) * MS  # high by the worker's whole time
    assert first + second == (1 + 1 + 400) * MS  # the two ticks hold exactly what was used


def test_cpu_rate_of_a_forking_batch_on_this_host_matches_what_the_kernel_charged(tmp_path: Path):
    """A parent that runs many short CPU-bound children one after another (each lives ~30 ms, the
    ticks are 200 ms): summing the ticks must give the tree's real CPU time, which counting only
    threads seen in two consecutive samples misses by most of it."""
    script = (
        "import os, sys, time\n"
        "sys.stdin.readline()\n"
        "for _ in range(40):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        end = time.process_time() + 0.03\n"
        "        while time.process_time() < end: pass\n"
        "        os._exit(0)\n"
        "    os.waitpid(pid, 0)\n"
        "t = os.times()\n"
        "print(int((t.user + t.system + t.children_user + t.children_system) * 1e9), flush=True)\n"
        "sys.stdin.readline()\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        first = breaker.Counters.from_node(canary.canary_sample(pids=[proc.pid]))
        proc.stdin.write("go\n")
        proc.stdin.flush()
        prev, total, seen_in_both = first, 0, 0
        while proc.poll() is None and not _printed(proc):
            time.sleep(0.2)
            cur = breaker.Counters.from_node(canary.canary_sample(known=prev.procs, follow=True))
            total += breaker._cpu_ns(prev, cur)
            seen_in_both += sum(cur.tasks[t][0] - r0 for t, (r0, _w) in prev.tasks.items() if t in cur.tasks)
            prev = cur
        last = breaker.Counters.from_node(canary.canary_sample(known=prev.procs, follow=True))
        total += breaker._cpu_ns(prev, last)
        charged = int(proc.stdout.readline())
    finally:
        proc.kill()
        proc.wait()
    # The tree used about 40 x 30 ms plus the parent's own start-up; the kernel charged `charged`.
    assert charged > 1_000 * MS
    assert 0.9 * charged <= total <= 1.1 * charged, (total, charged)
    assert seen_in_both < 0.6 * charged, (seen_in_both, charged)  # what the old metric would have seen


def _printed(proc: subprocess.Popen[str]) -> bool:
    """Has the child written its line (the tree is done)? Checked without blocking."""
    import select

    assert proc.stdout is not None
    return bool(select.select([proc.stdout], [], [], 0)[0])


def test_threshold_clears_the_noise_floor_and_needs_consecutive_bad_ticks():
    policy = DeployPolicy(
        mad_k=5, rel_margin=0.25, abs_margin=0.05, consecutive_bad=3, smooth=1, min_baseline_samples=4
    )
    quiet = [Sample(t=i, value=v) for i, v in enumerate([0.02, 0.03, 0.02, 0.025, 0.02, 0.03])]
    th = breaker.threshold("wait_share", quiet, policy)
    # MAD is tiny, so the absolute margin decides: a wobble to 0.06 is not a regression.
    assert th.limit == pytest.approx(th.median + 0.05)
    assert not th.bad(0.06)
    noisy = [Sample(t=i, value=v) for i, v in enumerate([0.1, 0.3, 0.2, 0.4, 0.15, 0.35])]
    wide = breaker.threshold("wait_share", noisy, policy)
    # Five of six baseline ticks and a rolling median of one tick (smooth=1): 5 standard errors of the difference.
    se = breaker.MEDIAN_SE * breaker.MAD_TO_SIGMA * wide.mad * (1 / 1 + 1 / 6) ** 0.5
    assert wide.margin == pytest.approx(5 * se, rel=1e-3)
    higher = breaker.threshold("cpu_rate", [Sample(t=i, value=2.0) for i in range(5)], policy)
    assert higher.limit == pytest.approx(1.5) and higher.bad(1.4) and not higher.bad(1.6)

    watch = breaker.MetricWatch(th, consecutive_bad=3)  # smooth=1: each tick judged alone
    assert not watch.feed(Sample(t=0, value=0.5))
    assert not watch.feed(Sample(t=1, value=0.5))
    assert not watch.feed(Sample(t=2, value=0.02))  # one good tick resets the run
    assert not watch.feed(Sample(t=3, value=0.5))
    assert not watch.feed(Sample(t=4, value=None))  # an idle tick neither counts nor resets
    assert not watch.feed(Sample(t=5, value=0.5))
    assert watch.feed(Sample(t=6, value=0.5))

    smoothed = breaker.MetricWatch(th, consecutive_bad=2, smooth=3)
    # Spikes between good ticks never move the median of three past the line.
    for i, v in enumerate([0.5, 0.02, 0.02, 0.5, 0.02, 0.02, 0.5]):
        assert not smoothed.feed(Sample(t=i, value=v))
    assert not smoothed.feed(Sample(t=10, value=0.5))  # median of (0.02, 0.5, 0.5) is bad: 1
    assert smoothed.feed(Sample(t=11, value=0.5))  # 2 in a row


def test_noise_is_the_standard_error_of_the_compared_medians():
    # Smoothing over more ticks and a longer baseline both narrow the line; a zero MAD gives none.
    assert breaker.noise(0.1, 10, 5) < breaker.noise(0.1, 10, 1) < breaker.noise(0.1, 2, 1)
    assert breaker.noise(0.0, 10, 5) == 0.0
    assert breaker.noise(0.1, 10**9, 1) == pytest.approx(breaker.MEDIAN_SE * breaker.MAD_TO_SIGMA * 0.1, rel=1e-6)


def test_threshold_refuses_a_baseline_without_enough_samples():
    with pytest.raises(SchedcpError) as exc:
        breaker.threshold("wait_share", [Sample(t=0, value=0.1), Sample(t=1, value=None)], DeployPolicy())
    assert exc.value.code == "baseline_too_short"


def test_crash_loop_window_counts_only_recent_trips_after_a_reset():
    now = 10_000.0
    times = [now - 5000, now - 100, now - 50, now - 10]
    assert breaker.trips_in_window(times, since_reset=0, now=now, window_s=3600) == 3
    assert breaker.trips_in_window(times, since_reset=now - 60, now=now, window_s=3600) == 2


def test_requests_are_validated_at_the_boundary():
    ok = DeployRequest(token_id="a" * 24, canary=CanaryTarget(comm="^lag-work$"), config={"slice_us": 5000})
    assert ok.canary.node_args() == {"comm": "^lag-work$"}
    bad = [
        {"token_id": "a" * 24, "canary": {}},  # no target
        {"token_id": "a" * 24, "canary": {"pid": 5, "comm": "x"}},  # two targets
        {"token_id": "a" * 24, "canary": {"pid": 1}},  # init is not a canary
        {"token_id": "a" * 24, "canary": {"comm": "("}},  # not a regex
        {"token_id": "a" * 24, "canary": {"cgroup": "/sys/../etc"}},
        {"token_id": "../../etc/passwd", "canary": {"pid": 5}},
        {"canary": {"pid": 5}},  # no token at all
        {"token_id": "a" * 24, "token": "x.y" * 10, "canary": {"pid": 5}},  # both
        {"token_id": "a" * 24, "canary": {"pid": 5}, "config": {"Bad-Key": 1}},
        {"token_id": "a" * 24, "canary": {"pid": 5}, "window_s": 0.1},
        {"token_id": "a" * 24, "canary": {"pid": 5}, "goal": "rm -rf"},
        {"token_id": "a" * 24, "canary": {"pid": 5}, "surprise": True},
    ]
    for args in bad:
        with pytest.raises(ValidationError):
            DeployRequest.model_validate(args)


def test_policy_file(tmp_path: Path):
    path = tmp_path / "schedcp.toml"
    path.write_text("[deploy]\nwindow_s = 12\ndeploy_users = [0, 'root']\nconsecutive_bad = 4\n")
    policy = load_policy(path)
    assert policy.window_s == 12 and policy.consecutive_bad == 4 and policy.deploy_uids() == {0}
    path.write_text("[deploy]\nwindw_s = 12\n")
    with pytest.raises(UsageError, match="windw_s"):
        load_policy(path)
    path.write_text("[deploy]\ndeploy_groups = ['no-such-group-xyz']\n")
    with pytest.raises(UsageError, match="unknown group"):
        load_policy(path)
    path.write_text("[deploy\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        load_policy(path)
    example = Path(__file__).resolve().parents[1] / "packaging" / "schedcp.toml.example"
    assert load_policy(example).window_s > 0


def test_store_keeps_the_story_refusals_and_last_known_good(tmp_path: Path):
    store = DeployStore(tmp_path / "state")
    art = Artefact(scheduler="minimal", object_sha256="b" * 64, config={}, kernel="7.2")
    dep = Deployment(
        id="dep-0123456789ab",
        created=time.time(),
        peer_uid=0,
        request=DeployRequest(token_id="a" * 24, canary=CanaryTarget(pid=4242)),
        state=DeployState.requested,
        artefact=art,
    )
    for state in (DeployState.requested, DeployState.token_checked, DeployState.baseline, DeployState.canary):
        store.transition(dep, state, f"now {state.value}")
    assert store.active() is not None and store.active().id == dep.id
    store.add_trip(Trip(deployment_id=dep.id, at=time.time(), signal="metric", reason="slow", phase=dep.state))
    store.transition(dep, DeployState.rolled_back, "breaker tripped")
    assert store.active() is None
    story = store.story(dep.id)
    assert story is not None
    assert [t.state for t in story.transitions][-1] == DeployState.rolled_back
    assert story.trips[0].signal == "metric" and story.deployment.reason == "breaker tripped"
    store.refuse(art.key, dep.id, "metric: slow")
    assert store.refusal(art.key) == (dep.id, "metric: slow")
    assert store.refusal(Artefact(**{**art.model_dump(), "config": {"x": 1}}).key) is None
    store.set_last_known_good(LastKnownGood(deployment_id=dep.id, artefact=art))
    store.close()
    reopened = DeployStore(tmp_path / "state")  # persisted, not remembered
    assert reopened.last_known_good().name == "minimal"
    assert reopened.refusal_count() == 1
    assert oct((tmp_path / "state" / "deploy.db").stat().st_mode & 0o777) == "0o600"


def test_canary_selection_and_sampling_on_this_host():
    child = subprocess.Popen(
        [sys.executable, "-c", "import time\nopen('/proc/self/comm','w').write('hdeploy-canary')\ntime.sleep(30)"]
    )
    try:
        deadline = time.monotonic() + 10
        while canary._comm(child.pid) != "hdeploy-canary" and time.monotonic() < deadline:
            time.sleep(0.02)
        found = canary.canary_tasks(comm="^hdeploy-canary$")
        assert found["pids"] == [child.pid]
        assert all(t["policy"] == 0 for t in found["tasks"])
        by_pid = canary.canary_tasks(pids=[child.pid])
        assert child.pid in by_pid["pids"] and os.getpid() not in by_pid["pids"]
        sample = canary.canary_sample(pids=[child.pid])
        assert str(child.pid) in sample["tasks"] and sample["t"] > 0
        for bad in ({}, {"pids": [1]}, {"comm": "(", "pids": None}, {"pids": [5], "comm": "x"}):
            with pytest.raises(canary.NodeError):
                canary.canary_tasks(**bad)
        with pytest.raises(canary.NodeError) as exc:
            canary.canary_switch(pids=[child.pid], policy="fifo")
        assert exc.value.code == "bad_args"
    finally:
        child.kill()
        child.wait()


def test_background_jobs_are_bounded_and_pollable():
    started = canary.spawn(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout_s=10)
    deadline = time.monotonic() + 10
    while not (res := canary.job(started["job"]))["done"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert res["exit_code"] == 3 and res["stdout"] == "out\n" and res["stderr"] == "err\n"
    slow = canary.spawn(["sleep", "30"], timeout_s=0.3)
    deadline = time.monotonic() + 10
    while not (res := canary.job(slow["job"]))["done"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert res["timed_out"] and res["signal"] == 9
    with pytest.raises(canary.NodeError):
        canary.spawn(["sh", "-c", "x\x00"])
    with pytest.raises(canary.NodeError):
        canary.job(10**9)


def test_daemon_without_a_node_says_how_to_get_one(tmp_path: Path):
    from schedcp.daemon.testing import daemon_process

    with daemon_process(tmp_path) as daemon, daemon.client() as client:
        with pytest.raises(SchedcpError) as exc:
            client.call("deployment_status")
        assert exc.value.code == "no_node" and "--node" in exc.value.next_step
        with pytest.raises(SchedcpError) as exc:
            client.call("deploy", {"token_id": "a" * 24, "canary": {"comm": "x"}})
        assert exc.value.code == "no_node"
        with pytest.raises(SchedcpError) as exc:  # bad input is refused before anything else
            client.call("deploy", {"token_id": "a" * 24, "canary": {"comm": "x", "pid": 5}})
        assert exc.value.code == "usage"


def test_local_node_on_a_kernel_without_sched_ext_is_refused(tmp_path: Path):
    from schedcp.node import scx

    exe = Path(sys.executable).with_name("schedcp")
    env = {**os.environ, "SCHEDCP_DATA_DIR": str(tmp_path / "state")}
    if scx.read_state()["supported"] and os.geteuid() == 0:
        # A sched_ext host: the daemon owns it and reports what the kernel runs (it changes nothing).
        from schedcp.daemon.testing import daemon_process

        with daemon_process(tmp_path, extra_args=["--node", "local"]) as daemon, daemon.client() as client:
            assert client.call("deployment_status")["node"]["kind"] == "local"
    else:  # the CI machines: refused with the reason and the way out
        out = subprocess.run(
            [str(exe), "daemon", "--socket", str(tmp_path / "d.sock"), "--node", "local"],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
        )
        assert out.returncode == 1 and "no sched_ext" in out.stderr and "--node vm" in out.stderr
    bad = subprocess.run(
        [str(exe), "daemon", "--socket", str(tmp_path / "d.sock"), "--node", "cloud"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert bad.returncode == 2 and "unknown node" in bad.stderr


# ---- what a trial on the daemon's node is held to (daemon/trial_ops.py), on this host's kernel ----


def test_trial_arm_requests_are_bounded_at_the_boundary():
    from schedcp.daemon.trial_ops import MAX_TRIAL_S, TrialArmArgs

    ok = TrialArmArgs(name="fifo", token_id="a" * 24, argv=["true"], timeout_s=5, config={"rodata.x": "1"})
    assert ok.watchdog_ms == 10000
    for bad in (
        {"timeout_s": MAX_TRIAL_S + 1},
        {"argv": []},
        {"argv": ["a\x00b"]},
        {"token_id": "../../etc"},
        {"config": {"BAD KEY": 1}},
        {"config": {"struct_ops": "x; rm"}},
        {"watchdog_ms": 50},
        {"object_path": "/tmp/evil.bpf.o"},  # an object is never sent: only the daemon's token id
    ):
        with pytest.raises(ValidationError):
            TrialArmArgs.model_validate({"name": "fifo", "argv": ["true"], "timeout_s": 5, **bad})


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root, like the daemon")
def test_a_hosts_trial_workload_runs_as_the_caller_in_a_clean_environment(monkeypatch):
    from schedcp.node.runner import run_command

    monkeypatch.setenv("SCHEDCP_SECRET_FOR_TEST", "the daemon's")
    out = run_command(["sh", "-c", "id -u; echo ${SCHEDCP_SECRET_FOR_TEST:-clean}; pwd"], uid=65534, timeout_s=30)
    uid, env, cwd = out["stdout"].split()
    assert (uid, env) == ("65534", "clean") and cwd in ("/", "/nonexistent")
    for bad in (0, -1, True):
        with pytest.raises(Exception) as refused:
            run_command(["true"], uid=bad)
        assert getattr(refused.value, "code", "") == "bad_user"


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another uid needs root, like the daemon")
def test_a_hosts_trial_job_ends_its_own_session_and_nothing_else_of_the_user():
    # Another process of the same user, outside the job's session, must survive the job's end.
    bystander = subprocess.Popen(["sleep", "60"], preexec_fn=lambda: (os.setgid(65534), os.setuid(65534)))
    try:
        started = canary.spawn(["sh", "-c", "sleep 60 & echo started; id -u"], timeout_s=30, uid=65534)
        deadline = time.monotonic() + 30
        while not (result := canary.job(started["job"]))["done"]:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert result["stdout"].split() == ["started", "65534"] and result["exit_code"] == 0
        assert _alive_in_session(started["pid"]) == [], "the job's background sleep outlived it"
        assert bystander.poll() is None, "a process of the same user outside the job was killed"
    finally:
        bystander.kill()
        bystander.wait()


def _alive_in_session(sid: int) -> list[int]:
    """Processes of a session that still run (a killed one may linger as a zombie until reaped)."""
    import psutil

    out = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if os.getsid(proc.pid) == sid and proc.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(proc.pid)
        except (ProcessLookupError, PermissionError):
            continue
    return out
