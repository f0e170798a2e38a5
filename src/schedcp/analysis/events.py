# SPDX-License-Identifier: Apache-2.0
"""Event subscriptions: tell an agent when to re-analyse instead of letting it poll.

    watcher = EventWatcher()
    sid = watcher.subscribe(WatchSpec(kind="process_appears", comm="postgres*"), callback)
    sid2 = watcher.subscribe(WatchSpec(kind="behaviour_change", comm="python*"), callback)
    watcher.unsubscribe(sid)
    watcher.close()

One background thread polls /proc cheaply (a directory listing plus reads for *new* PIDs, and the
counters of the watched processes) and calls ``callback(Event)`` from that thread. Behaviour
changes use the same hysteresis as phase detection (``phases.LevelShiftDetector``): a level must
move by ``rel_threshold`` (and ``abs_*``) for ``hold`` consecutive polls before an event fires.
An asyncio server can forward events with ``loop.call_soon_threadsafe`` (see ``asyncio_callback``).
"""

from __future__ import annotations

import asyncio
import fnmatch
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from schedcp.analysis.phases import LevelShiftDetector
from schedcp.errors import UsageError
from schedcp.node import observe

log = logging.getLogger(__name__)

MIN_POLL_S = 0.05
COMM_SETTLE_S = 1.0  # how long a new PID's comm is re-read (it changes at exec)
MAX_SUBSCRIPTIONS = 64


class WatchSpec(BaseModel):
    """What to watch. Exactly one target: a comm glob, a cgroup path, or PIDs."""

    kind: Literal["process_appears", "cgroup_active", "behaviour_change"]
    comm: str | None = Field(None, description="fnmatch glob on the process name, e.g. 'python*'")
    cgroup: str | None = None
    pids: list[int] | None = None
    poll_s: float = Field(0.5, ge=MIN_POLL_S, le=60)
    rel_threshold: float = Field(0.5, gt=0, le=100, description="relative change that counts as material")
    abs_cpus: float = Field(0.25, ge=0, description="and at least this many CPUs of change")
    abs_switches: float = Field(200.0, ge=0, description="or this many context switches per second")
    hold: int = Field(3, ge=1, le=100, description="consecutive polls beyond the threshold to confirm")
    min_cpu_s: float = Field(0.0, ge=0, description="cgroup_active: CPU seconds needed in one poll to count")

    @field_validator("comm")
    @classmethod
    def _comm(cls, v: str | None) -> str | None:
        if v is not None and (not v or len(v) > 64 or "\x00" in v):
            raise ValueError("comm must be a glob of 1..64 characters")
        return v

    @model_validator(mode="after")
    def _target(self) -> WatchSpec:
        targets = sum(x is not None for x in (self.comm, self.cgroup, self.pids))
        if targets != 1:
            raise ValueError("give exactly one of comm, cgroup or pids")
        if self.kind == "cgroup_active" and self.cgroup is None:
            raise ValueError("cgroup_active needs cgroup")
        if self.kind == "process_appears" and self.comm is None:
            raise ValueError("process_appears needs comm")
        return self


class Event(BaseModel):
    subscription: int
    kind: Literal["process_appeared", "cgroup_active", "behaviour_changed"]
    at: float
    detail: dict[str, Any]


Callback = Callable[[Event], None]


def asyncio_callback(loop: asyncio.AbstractEventLoop, handler: Callable[[Event], Any]) -> Callback:
    """Wrap an async (or plain) handler so the watcher thread can hand events to an event loop."""

    def _cb(event: Event) -> None:
        def _run() -> None:
            result = handler(event)
            if asyncio.iscoroutine(result):
                loop.create_task(result)

        loop.call_soon_threadsafe(_run)

    return _cb


class _Sub:
    def __init__(self, sid: int, spec: WatchSpec, callback: Callback) -> None:
        self.id = sid
        self.spec = spec
        self.callback = callback
        self.next_due = 0.0
        self.seen: set[int] = set()
        self.primed = False
        self.cgroup = observe.resolve_cgroup(spec.cgroup) if spec.cgroup else None
        self.cg_active = False
        self.cg_usage: tuple[float, int | None] | None = None
        self.prev: tuple[float, int, int] | None = None  # time, run_ns, switches
        self.cpu_det = LevelShiftDetector(spec.rel_threshold, spec.abs_cpus, spec.hold)
        self.cs_det = LevelShiftDetector(spec.rel_threshold, spec.abs_switches, spec.hold)
        self.errors = 0


class EventWatcher:
    def __init__(self) -> None:
        self._subs: dict[int, _Sub] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._comms: dict[int, str] = {}
        self._first_seen: dict[int, float] = {}
        self.callback_errors = 0

    # -- public API ----------------------------------------------------------------------------
    def subscribe(self, spec: WatchSpec | dict[str, Any], callback: Callback) -> int:
        try:
            spec = spec if isinstance(spec, WatchSpec) else WatchSpec.model_validate(spec)
        except ValueError as exc:
            raise UsageError(f"bad watch spec: {exc}".splitlines()[0][:300], "see analysis.events.WatchSpec") from exc
        if not callable(callback):
            raise UsageError("callback must be callable", "")
        try:
            sub = _Sub(next(self._ids), spec, callback)
        except observe.NodeError as exc:
            raise UsageError(exc.cause, exc.next_step, code=exc.code) from exc
        self._prime(sub)
        with self._lock:
            if len(self._subs) >= MAX_SUBSCRIPTIONS:
                raise UsageError(f"at most {MAX_SUBSCRIPTIONS} subscriptions", "unsubscribe some first")
            self._subs[sub.id] = sub
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="schedcp-events", daemon=True)
                self._thread.start()
        self._wake.set()
        return sub.id

    def _prime(self, sub: _Sub) -> None:
        """Take the baseline now, in the caller's thread, so "already there" means "there when
        subscribe returned": whatever starts after that is reported, even before the first poll."""
        if sub.spec.kind == "process_appears":
            pattern = sub.spec.comm or ""
            for pid in observe._list_ints("/proc"):
                comm = observe._read(f"/proc/{pid}/comm")
                if comm is not None and fnmatch.fnmatchcase(comm.strip(), pattern):
                    sub.seen.add(pid)
            sub.primed = True
        elif sub.spec.kind == "cgroup_active":
            self._poll_cgroup(sub, time.time())  # records the activity and usage it starts from

    def unsubscribe(self, sid: int) -> bool:
        with self._lock:
            return self._subs.pop(int(sid), None) is not None

    def subscriptions(self) -> dict[int, WatchSpec]:
        with self._lock:
            return {sid: s.spec for sid, s in self._subs.items()}

    def close(self) -> None:
        self._stop = True
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # -- the loop ------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop:
            now = time.monotonic()
            with self._lock:
                due = [s for s in self._subs.values() if s.next_due <= now]
                waits = [s.next_due - now for s in self._subs.values() if s.next_due > now]
            if due:
                self._refresh_comms()
            for sub in due:
                sub.next_due = now + sub.spec.poll_s
                try:
                    for event in self._poll(sub):
                        self._fire(sub, event)
                except Exception:  # one broken target must not stop the others
                    sub.errors += 1
                    log.exception("event poll failed for subscription %s", sub.id)
            self._wake.wait(timeout=min(waits) if waits and not due else (MIN_POLL_S if due else 1.0))
            self._wake.clear()

    def _fire(self, sub: _Sub, event: Event) -> None:
        with self._lock:
            if sub.id not in self._subs:
                return
        try:
            sub.callback(event)
        except Exception:
            self.callback_errors += 1
            log.exception("event callback failed for subscription %s", sub.id)

    def _refresh_comms(self) -> None:
        """PID -> comm for live processes; only new PIDs are read, so a poll stays cheap."""
        alive = set(observe._list_ints("/proc"))
        now = time.monotonic()
        for pid in list(self._comms):
            if pid not in alive:
                del self._comms[pid]
                self._first_seen.pop(pid, None)
        # A process caught between fork and exec still carries its parent's comm; re-read young
        # PIDs for a moment so the name they exec into is the one we match.
        young = {pid for pid, t in self._first_seen.items() if now - t < COMM_SETTLE_S}
        for pid in (alive - self._comms.keys()) | young:
            comm = observe._read(f"/proc/{pid}/comm")
            if comm is not None:
                self._comms[pid] = comm.strip()
                self._first_seen.setdefault(pid, now)
        for pid in [p for p, t in self._first_seen.items() if now - t >= COMM_SETTLE_S]:
            del self._first_seen[pid]

    def _matching(self, spec: WatchSpec) -> set[int]:
        if spec.pids is not None:
            return {p for p in spec.pids if p in self._comms}
        if spec.cgroup is not None:
            return set()
        return {pid for pid, comm in self._comms.items() if fnmatch.fnmatchcase(comm, spec.comm or "")}

    def _poll(self, sub: _Sub) -> list[Event]:
        spec, now = sub.spec, time.time()
        if spec.kind == "process_appears":
            current = self._matching(spec)
            new = current - sub.seen
            sub.seen = current
            if not sub.primed:  # processes already running at subscription time are not "appearing"
                sub.primed = True
                return []
            if not new:
                return []
            pids = sorted(new)
            detail = {
                "pids": pids[:32],
                "count": len(pids),
                "comm": self._comms.get(pids[0], ""),
                "cmdline": observe.cmdline(pids[0], 120),
            }
            return [Event(subscription=sub.id, kind="process_appeared", at=now, detail=detail)]
        if spec.kind == "cgroup_active":
            return self._poll_cgroup(sub, now)
        return self._poll_behaviour(sub, now)

    def _poll_cgroup(self, sub: _Sub, now: float) -> list[Event]:
        assert sub.cgroup is not None
        pids = observe.cgroup_pids(sub.cgroup) if os.path.isdir(sub.cgroup) else []
        usage = observe.cgroup_cpu_usec(sub.cgroup) if pids else None
        prev = sub.cg_usage
        sub.cg_usage = (time.monotonic(), usage)
        busy = bool(pids)
        if busy and sub.spec.min_cpu_s > 0:
            if prev is None or prev[1] is None or usage is None:
                busy = False
            else:
                busy = (usage - prev[1]) / 1e6 >= sub.spec.min_cpu_s
        fired = []
        if busy and not sub.cg_active and sub.primed:
            fired.append(
                Event(
                    subscription=sub.id,
                    kind="cgroup_active",
                    at=now,
                    detail={"cgroup": sub.cgroup, "pids": pids[:32], "count": len(pids)},
                )
            )
        sub.cg_active = busy
        sub.primed = True
        return fired

    def _poll_behaviour(self, sub: _Sub, now: float) -> list[Event]:
        spec = sub.spec
        if spec.cgroup is not None:
            assert sub.cgroup is not None
            pids = set(observe.cgroup_pids(sub.cgroup))
        else:
            pids = self._matching(spec)
        run_ns, switches = 0, 0
        for pid in pids:
            for tid in observe._list_ints(f"/proc/{pid}/task"):
                task = observe.read_task(pid, tid, with_sched=False)
                if task is not None:
                    run_ns += task["run_ns"]
                    switches += task["vcs"] + task["ivcs"]
        t = time.monotonic()
        prev, sub.prev = sub.prev, (t, run_ns, switches)
        if prev is None or not pids:
            return []
        dt = max(t - prev[0], 1e-3)
        # Tasks that exit make the sums drop; clamp so departures read as "less work", not negative.
        cpus = max(0.0, (run_ns - prev[1]) / 1e9 / dt)
        cs_rate = max(0.0, (switches - prev[2]) / dt)
        events = []
        for metric, det, value in (("cpus", sub.cpu_det, cpus), ("switches_per_s", sub.cs_det, cs_rate)):
            shift = det.update(value)
            if shift is not None:
                old, new = shift
                events.append(
                    Event(
                        subscription=sub.id,
                        kind="behaviour_changed",
                        at=now,
                        detail={
                            "metric": metric,
                            "from": round(old, 3),
                            "to": round(new, 3),
                            "pids": sorted(pids)[:16],
                            "hold_polls": spec.hold,
                        },
                    )
                )
        return events
