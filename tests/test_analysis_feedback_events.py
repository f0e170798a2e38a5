# SPDX-License-Identifier: Apache-2.0
"""Feedback channel (real SQLite), event subscriptions (real processes), phases and budgets."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time

import pytest

from schedcp.analysis import budget
from schedcp.analysis.events import EventWatcher, WatchSpec
from schedcp.analysis.feedback import FeedbackStore, compare
from schedcp.analysis.phases import LevelShiftDetector, split_phases
from schedcp.errors import UsageError
from schedcp.trial.compare import direction


def test_compare_is_sign_aware() -> None:
    deltas = {
        d.metric: d
        for d in compare(
            {"makespan_s": 10.0, "throughput_ops_per_s": 100.0, "latency_p99_us": 50.0, "cpu_s": 4.0},
            {"makespan_s": 8.0, "throughput_ops_per_s": 90.0, "latency_p99_us": 50.5, "cpu_s": 4.0, "extra": 1},
        )
    }
    assert deltas["makespan_s"].pct_change == -20.0 and deltas["makespan_s"].improvement_pct == 20.0
    assert deltas["makespan_s"].verdict == "improved"
    assert deltas["throughput_ops_per_s"].improvement_pct == -10.0
    assert deltas["throughput_ops_per_s"].verdict == "regressed"
    assert deltas["latency_p99_us"].verdict == "unchanged"  # 1% is noise
    assert "extra" not in deltas
    assert direction("ctx_switches_per_s") == "lower" and direction("app_rounds") == "higher"
    assert direction("mystery") is None


def test_feedback_store_round_trip(tmp_path) -> None:
    db = tmp_path / "feedback.db"
    with FeedbackStore(db) as store:
        with pytest.raises(UsageError):
            store.record("dep-0", "longtail-40", {"makespan_s": 3.0})  # no baseline yet
        store.record_baseline("longtail-40", {"makespan_s": 4.0, "app_mean_completion_s": 2.0})
        report = store.record(
            "dep-1",
            "longtail-40",
            {"makespan_s": 3.0, "app_mean_completion_s": 2.2},
            context={"scheduler": "ljf"},
            primary="makespan_s",
        )
        assert report.summary.startswith("makespan_s +25.0% (improved)")
        assert {d.metric: d.verdict for d in report.deltas} == {
            "makespan_s": "improved",
            "app_mean_completion_s": "regressed",
        }
        with pytest.raises(UsageError):
            store.record("dep-2", "longtail-40", {"makespan_s": float("nan")})
    with FeedbackStore(db) as again:  # persisted on disk
        got = again.for_deployment("dep-1")
        assert got is not None and got.workload_key == "longtail-40" and got.context == {"scheduler": "ljf"}
        assert again.history("longtail-40", "makespan_s")[0]["improvement_pct"] == 25.0
        assert again.for_deployment("nope") is None
        assert len(budget.compact(got.brief())) < 400


def test_default_store_lives_in_data_dir(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("SCHEDCP_DATA_DIR", str(tmp_path))
    with FeedbackStore() as store:
        assert store.path == tmp_path / "feedback.db" and store.path.exists()


def test_level_shift_needs_hold_consecutive_samples() -> None:
    det = LevelShiftDetector(rel_threshold=0.5, abs_threshold=0.1, hold=3, warmup=3)
    fired = [det.update(v) for v in [1, 1, 1, 3, 1, 3, 3, 1, 1]]
    assert all(f is None for f in fired)  # spikes that do not persist never fire
    fired = [det.update(v) for v in [3, 3, 3]]
    assert fired[-1] is not None and fired[-1][1] == pytest.approx(3.0)
    assert [det.update(v) for v in [3.2, 2.9, 3.1]] == [None, None, None]  # new level is the reference
    phases = split_phases(list(range(12)), [0.1] * 6 + [2.0] * 6, abs_min=0.3)
    assert phases == [(0, 6), (6, 12)]


def test_budget_fit_shrinks_lists_and_marks_truncation() -> None:
    doc = {"a": list(range(2000)), "b": "x" * 5000, "keep": 1}
    out = budget.fit(doc, 1024)
    assert budget.size(out) <= 1024 and out["truncated"] and out["keep"] == 1


def _collect():
    events, lock = [], threading.Lock()

    def cb(e):
        with lock:
            events.append(e)

    return events, cb


def _wait_for(pred, timeout=10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(0.05)
    return False


def _named_sleep(tmp_path, name: str) -> subprocess.Popen:
    """A sleep whose comm is `name` (comm is the executable's file name)."""
    exe = tmp_path / name
    shutil.copy("/bin/sleep", exe)
    return subprocess.Popen([str(exe), "3"])


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def test_event_when_a_matching_process_appears(tmp_path) -> None:
    # Running when the watch starts: not an appearance. Started right after subscribe returns: one,
    # even if it starts before the watcher's first poll.
    old = _named_sleep(tmp_path, "schedcp-evt-old")
    assert _wait_for(lambda: _comm(old.pid) == "schedcp-evt-old"), "the old process never exec'd"
    watcher = EventWatcher()
    events, cb = _collect()
    sid = watcher.subscribe({"kind": "process_appears", "comm": "schedcp-evt*", "poll_s": 0.1}, cb)
    try:
        proc = _named_sleep(tmp_path, "schedcp-evt-new")
        assert _wait_for(lambda: events), "no process_appeared event"
        assert events[0].kind == "process_appeared" and events[0].detail["pids"] == [proc.pid], events
        assert events[0].detail["comm"] == "schedcp-evt-new"
        proc.kill()
        proc.wait()
    finally:
        old.kill()
        old.wait()
        assert watcher.unsubscribe(sid)
        watcher.close()
    with pytest.raises(UsageError):
        watcher.subscribe({"kind": "process_appears"}, cb)


def test_event_on_behaviour_change_with_hysteresis() -> None:
    # A process that idles, then burns CPU: one behaviour_changed event for cpus, not a stream.
    code = (
        "import time\nprint('idle', flush=True)\ntime.sleep(2.5)\n"
        "end = time.time() + 3\nwhile time.time() < end: pass\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    # Watch from the idle phase on: interpreter start-up would otherwise count as the baseline.
    assert proc.stdout is not None and proc.stdout.readline() == "idle\n"
    watcher = EventWatcher()
    events, cb = _collect()
    # On a shared machine the spinner may get only a fraction of a CPU; readings inside the default
    # 0.25-CPU band would let the reference level drift up before the shift is confirmed.
    watcher.subscribe(WatchSpec(kind="behaviour_change", pids=[proc.pid], poll_s=0.1, hold=3, abs_cpus=0.1), cb)
    try:
        assert _wait_for(lambda: any(e.detail["metric"] == "cpus" for e in events), timeout=8)
        cpu_events = [e for e in events if e.detail["metric"] == "cpus"]
        first = cpu_events[0].detail  # the machine may be shared: the spinner gets what it gets
        assert first["from"] < 0.1 and first["to"] > first["from"] + 0.1
        # An observation window, not an ordering: ten more polls at the new level fire nothing more.
        # (Not the whole busy phase: on a loaded host a starved spinner is a real drop in CPU use.)
        time.sleep(1.0)
        assert len([e for e in events if e.detail["metric"] == "cpus"]) == 1
    finally:
        watcher.close()
        proc.kill()
        proc.wait()


def test_callback_errors_do_not_stop_the_watcher(tmp_path) -> None:
    watcher = EventWatcher()
    events, cb = _collect()

    def broken(_e):
        raise RuntimeError("boom")

    watcher.subscribe({"kind": "process_appears", "comm": "schedcp-evb*", "poll_s": 0.1}, broken)
    watcher.subscribe({"kind": "process_appears", "comm": "schedcp-evb*", "poll_s": 0.1}, cb)
    procs = []
    try:
        # After the broken callback raised, the watcher still delivers the next appearance too.
        procs.append(_named_sleep(tmp_path, "schedcp-evb1"))
        assert _wait_for(lambda: len(events) == 1 and watcher.callback_errors == 1)
        procs.append(_named_sleep(tmp_path, "schedcp-evb2"))
        assert _wait_for(lambda: len(events) == 2 and watcher.callback_errors == 2)
        assert [e.detail["pids"] for e in events] == [[p.pid] for p in procs]
    finally:
        watcher.close()
        for p in procs:
            p.kill()
            p.wait()
