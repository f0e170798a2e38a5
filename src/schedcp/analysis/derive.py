# SPDX-License-Identifier: Apache-2.0
"""From a raw observation (``schedcp.node.observe``) to characteristics an agent can reason with.

Thresholds are deliberately coarse and every judgement carries its evidence as short strings with
the numbers, so an agent can disagree with the label without re-reading the raw data.
"""

from __future__ import annotations

import json
import statistics
from typing import Any

from schedcp.analysis.profile import (
    Characteristics,
    Churn,
    LongTail,
    SchedNumbers,
    WorkloadProfile,
    choose_goal,
    describe,
    keywords_for,
)

# Siblings started with gaps no longer than this between them count as "started together".
TOGETHER_S = 0.5
LONG_TAIL_RATIO = 4.0
LONG_TAIL_MIN_GROUP = 4
LONG_TAIL_MIN_MS = 50.0  # below this, runtime differences are sampling noise
STORM_MIN_TASKS = 20
STORM_LIFETIME_S = 0.5  # median life
# Created tasks per peak of them alive at once: a batch started together turns over once, a storm
# replaces its live set again and again (a 4-way fork loop turns over hundreds of times).
STORM_TURNOVER = 4.0
# Average number of created tasks alive while it creates them: a storm (or a shell loop) nearly
# always has a child; a process that spawns a helper now and then mostly has none. Unlike a rate in
# tasks per second, this does not depend on how fast the machine is (an emulated guest under load
# forked 14/s where the host forks 2000/s: the same storm).
STORM_MEAN_ALIVE = 0.5
# Only without fork events: seen processes per second, and system-wide forks/s (an emulated
# 2-vCPU guest saturates near 50).
STORM_SPAWN_RATE = 20.0
STORM_SYSTEM_FORKS = 40.0


def _f(x: Any, nd: int = 2) -> float:
    return round(float(x or 0.0), nd)


def _pctile(vals: list[float], q: float) -> float | None:
    if not vals:
        return None
    s = sorted(vals)
    return s[min(len(s) - 1, round(q * (len(s) - 1)))]


def sched_numbers(obs: dict[str, Any]) -> SchedNumbers:
    wall = max(float(obs.get("wall_s") or 0.0), 1e-3)
    tot = obs.get("totals") or {}
    run_s = (tot.get("run_ns") or 0) / 1e9
    rusage = obs.get("rusage") or {}
    cpu_s = max(run_s, float(rusage.get("cpu_s") or 0.0))
    wait_s = (tot.get("wait_ns") or 0) / 1e9
    slices = tot.get("slices") or 0
    vcs, ivcs = tot.get("vcs") or 0, tot.get("ivcs") or 0
    alive_s, runnable_s, states = 0.0, 0.0, {"R": 0, "D": 0, "all": 0}
    tasks = obs.get("tasks") or []
    # Coordinators that only fork and wait for their children would dilute "how busy are the
    # workers"; leave them out of the runnable share (unless every task is one).
    spawners = {t["ppid"] for t in tasks} | {t["pid"] for t in tasks if t["pid"] != t["tid"]}
    workers = [t for t in tasks if t["tid"] not in spawners] or tasks
    worker_run_ns, worker_slices = 0, 0
    for t in workers:
        alive_s += max(0.0, float(t["end_s"]) - max(0.0, float(t["start_s"])))
        runnable_s += ((t.get("run_ns") or 0) + (t.get("wait_ns") or 0)) / 1e9
        worker_run_ns += t.get("run_ns") or 0
        worker_slices += t.get("slices") or 0
    if worker_slices:
        # Burst length of the workers: an interpreter's start-up in the spawner would skew it.
        run_s_b, slices = worker_run_ns / 1e9, worker_slices
    else:
        run_s_b = run_s
    for t in tasks:
        for st, n in (t.get("states") or {}).items():
            states["all"] += n
            if st in states:
                states[st] += n
    migr = tot.get("migrations")
    return SchedNumbers(
        cpu_s=_f(cpu_s, 3),
        parallelism=_f(cpu_s / wall),
        runnable_parallelism=_f((run_s + wait_s) / wall),
        runq_wait_pct=_f(100.0 * wait_s / (run_s + wait_s), 1) if run_s + wait_s > 0 else 0.0,
        wait_ms_per_cpu_s=_f(1000.0 * wait_s / run_s, 1) if run_s > 0 else 0.0,
        mean_slice_ms=_f(1000.0 * run_s_b / slices, 3) if slices else None,
        vcs_per_s=_f(vcs / wall, 1),
        ivcs_per_s=_f(ivcs / wall, 1),
        voluntary_share=_f(vcs / (vcs + ivcs)) if vcs + ivcs else None,
        migrations_per_s=_f(migr / wall, 1) if migr is not None else None,
        runnable_share=_f(min(1.0, runnable_s / alive_s)) if alive_s > 0 else 0.0,
        blocked_share=_f(states["D"] / states["all"]) if states["all"] else 0.0,
    )


def churn(obs: dict[str, Any]) -> Churn:
    """How many tasks the workload created, how long they lived, and whether that is a storm.

    With the node's fork events (``obs["forks"]``) every created task is counted and every lifetime
    is measured, however short. Only without them (no tracefs: an unprivileged node) does the rule
    fall back to what sampling /proc saw, which misses most children that live for milliseconds.
    """
    wall = max(float(obs.get("wall_s") or 0.0), 1e-3)
    sys_forks = float((obs.get("system") or {}).get("forks") or 0) / wall
    sampled = [float(x) for x in obs.get("lifetimes_s") or []]
    # Processes that existed before the window are not churn; count the ones born inside it.
    born = sum(1 for t in obs.get("tasks") or [] if t.get("born_inside") and t["pid"] == t["tid"])
    born = max(born, len(sampled))
    forks = obs.get("forks") or {}
    counted = bool(forks.get("available"))
    created: int | None = None
    rate: float | None = None
    turnover: float | None = None
    mean_alive: float | None = None
    if counted:
        created = int(forks.get("tasks_created") or 0)
        span = float(forks.get("span_s") or 0.0)
        # N creations spread over `span` seconds: N - 1 gaps.
        rate = (created - 1) / span if created >= 2 and span > 0 else 0.0
        turnover = created / max(int(forks.get("peak_alive") or 0), 1)
        mean_alive = float(forks.get("mean_alive") or 0.0)
        p50, p90, pmax = (forks.get(f"lifetime_{k}_s") for k in ("p50", "p90", "max"))
        storm = (
            created >= STORM_MIN_TASKS
            and mean_alive >= STORM_MEAN_ALIVE
            and turnover >= STORM_TURNOVER
            and p50 is not None
            and float(p50) <= STORM_LIFETIME_S
        )
    else:
        p50, p90 = _pctile(sampled, 0.5), _pctile(sampled, 0.9)
        pmax = max(sampled) if sampled else None
        storm = born / wall >= STORM_SPAWN_RATE and born >= STORM_MIN_TASKS and (p50 is None or p50 <= STORM_LIFETIME_S)
        # Sampling misses most children that live for milliseconds, so with a high system-wide fork
        # rate a smaller number of sampled short-lived children is already evidence of a storm.
        storm = storm or (sys_forks >= STORM_SYSTEM_FORKS and born >= 10 and (p50 or 0) <= STORM_LIFETIME_S)
    return Churn(
        procs_seen=int(obs.get("procs_seen") or 0),
        threads_seen=int(obs.get("threads_seen") or 0),
        peak_alive_threads=int(obs.get("peak_alive") or 0),
        spawn_rate_seen=_f(born / wall, 1),
        forks_per_s_system=_f(sys_forks, 1),
        lifetime_p50_s=_f(p50, 4) if p50 is not None else None,
        lifetime_p90_s=_f(p90, 4) if p90 is not None else None,
        lifetime_max_s=_f(pmax, 4) if pmax is not None else None,
        short_lived_storm=storm,
        counted_by="fork_events" if counted else "sampling",
        tasks_created=created,
        create_rate_per_s=_f(rate, 1) if rate is not None else None,
        turnover=_f(turnover, 1) if turnover is not None else None,
        mean_alive=_f(mean_alive, 2) if mean_alive is not None else None,
    )


def sibling_groups(tasks: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Tasks created by the same spawner together, largest group first: each one started while an
    earlier sibling of the group was still alive, or within TOGETHER_S of the previous one.

    A process's spawner is its parent; a thread's spawner is its own process. Overlap keeps a batch
    whole when its spawner paused between two forks (an emulated guest on a loaded host stalls for
    over half a second at times); the gap rule joins back-to-back tasks that never overlap.
    """
    by_spawner: dict[int, list[dict[str, Any]]] = {}
    for t in tasks:
        if not t.get("born_inside"):
            continue
        spawner = t["ppid"] if t["pid"] == t["tid"] else t["pid"]
        by_spawner.setdefault(spawner, []).append(t)
    groups = []
    for members in by_spawner.values():
        members.sort(key=lambda t: t["start_s"])
        current: list[dict[str, Any]] = []
        alive_until = float("-inf")
        for t in members:
            start = float(t["start_s"])
            if current and start > alive_until and start - current[-1]["start_s"] > TOGETHER_S:
                groups.append(current)
                current = []
            current.append(t)
            alive_until = max(alive_until, float(t["end_s"])) if len(current) > 1 else float(t["end_s"])
        if current:
            groups.append(current)
    groups.sort(key=len, reverse=True)
    return groups


def long_tail(obs: dict[str, Any]) -> LongTail | None:
    groups = [g for g in sibling_groups(obs.get("tasks") or []) if len(g) >= 2]
    if not groups:
        return None
    g = groups[0]
    runs = [float(t.get("run_ns") or 0) / 1e6 for t in g]
    med = statistics.median(runs)
    top = max(runs)
    total = sum(runs) or 1.0
    ratio = top / med if med > 0 else (float("inf") if top > 0 else 1.0)
    ncpu = int((obs.get("system") or {}).get("ncpu") or 1)
    ends = sorted(float(t["end_s"]) for t in g)
    # How long the batch ran with fewer live tasks than CPUs: idle capacity a better order could use.
    serial_tail = ends[-1] - ends[-ncpu] if len(ends) > ncpu else 0.0
    all_finished = all(t.get("exited") for t in g)
    detected = (
        len(g) >= LONG_TAIL_MIN_GROUP
        and ratio >= LONG_TAIL_RATIO
        and top / total >= 1.5 / len(g)
        and top >= LONG_TAIL_MIN_MS
    )
    spawner = g[0]["ppid"] if g[0]["pid"] == g[0]["tid"] else g[0]["pid"]
    return LongTail(
        detected=detected,
        group_size=len(g),
        spawner_pid=spawner,
        median_cpu_ms=_f(med, 1),
        max_cpu_ms=_f(top, 1),
        ratio_max_median=_f(min(ratio, 1e6), 1),
        top_share=_f(top / total, 3),
        serial_tail_s=_f(max(0.0, serial_tail), 2),
        all_finished=all_finished,
    )


def classify(s: SchedNumbers, c: Churn, obs: dict[str, Any]) -> tuple[str, list[str]]:
    system = obs.get("system") or {}
    wall = max(float(obs.get("wall_s") or 0.0), 1e-3)
    io = obs.get("io") or {}
    io_mb_s = ((io.get("read_bytes") or 0) + (io.get("write_bytes") or 0)) / 1e6 / wall
    iowait = statistics.fmean(system.get("iowait_pct") or [0.0])
    slice_ms = s.mean_slice_ms if s.mean_slice_ms is not None else 0.0
    vol = s.voluntary_share if s.voluntary_share is not None else 0.0
    ev: list[str] = []
    if s.parallelism < 0.05 and not c.short_lived_storm:
        return "idle", [f"only {s.parallelism:.2f} CPUs used on average"]
    waits_on_io = io_mb_s >= 20 or iowait >= 20
    if s.blocked_share >= 0.2 or (waits_on_io and s.runnable_share < 0.5):
        ev = [f"D-state {s.blocked_share:.0%} of samples", f"I/O {io_mb_s:.1f} MB/s", f"iowait {iowait:.0f}%"]
        return "io_bound", ev
    if c.short_lived_storm:
        # Creation/exit dominates; the spawner's waits would otherwise read as "sleep/wake".
        klass = "cpu_bound" if s.parallelism >= 0.5 else "mixed"
        return klass, [f"busy {s.parallelism:.1f} CPUs", f"mean burst {slice_ms:.2f} ms"]
    # Ping-pong on one CPU shows many *involuntary* switches too (the wakee preempts the waker),
    # so a modest voluntary share is enough when bursts are short and tasks sleep a lot.
    # Mostly-voluntary switching with bursts of a few ms still means sleep/wake on a slow
    # (e.g. emulated) machine, where one round trip costs milliseconds of CPU.
    wakey = s.vcs_per_s >= 100 and ((vol >= 0.3 and slice_ms < 1.0) or (vol >= 0.7 and slice_ms < 5.0))
    # Runnable share counts time waiting for a CPU, which an oversubscribed machine inflates for
    # every task; a task that gives up the CPU by itself nine times in ten still sleeps and wakes.
    if wakey and (s.runnable_share < 0.8 or vol >= 0.9):
        ev = [
            f"{vol:.0%} of switches voluntary ({s.vcs_per_s:.0f}/s)",
            f"mean burst {slice_ms * 1000:.0f} us",
            f"runnable {s.runnable_share:.0%} of alive time",
        ]
        return "latency_sensitive", ev
    if s.runnable_share >= 0.7 and vol < 0.6:
        ev = [
            f"runnable {s.runnable_share:.0%} of alive time",
            f"mean burst {slice_ms:.1f} ms",
            f"{1 - vol:.0%} of switches involuntary",
        ]
        if s.runq_wait_pct >= 20:
            ev.append(f"{s.runq_wait_pct:.0f}% of runnable time waiting for a CPU")
        groups = _command_groups(obs)
        if groups:
            ev.append(groups)
        return "cpu_bound", ev
    ev = [f"runnable {s.runnable_share:.0%}", f"voluntary switches {vol:.0%}", f"mean burst {slice_ms:.2f} ms"]
    return "mixed", ev


def _command_groups(obs: dict[str, Any]) -> str | None:
    """'groups: ...' when two or more distinct commands each hold a large share of the CPU."""
    shares: dict[str, float] = {}
    for p in obs.get("processes") or []:
        shares[p.get("cmd", "?")[:40]] = shares.get(p.get("cmd", "?")[:40], 0.0) + float(p.get("run_ns") or 0)
    total = sum(shares.values())
    big = [k for k, v in shares.items() if total and v / total >= 0.2]
    return f"groups: {len(big)} commands each >=20% CPU" if len(big) >= 2 else None


def characteristics(obs: dict[str, Any]) -> Characteristics:
    s = sched_numbers(obs)
    c = churn(obs)
    klass, evidence = classify(s, c, obs)
    lt = long_tail(obs)
    if lt is not None and lt.detected:
        evidence.insert(
            0,
            f"long tail: max/median CPU {lt.ratio_max_median:.0f}x in {lt.group_size} siblings, "
            f"top task {lt.top_share:.0%} of their CPU",
        )
    if c.short_lived_storm and c.counted_by == "fork_events":
        evidence.insert(
            0,
            f"storm: {c.tasks_created} tasks created at {c.create_rate_per_s:.0f}/s, "
            f"median life {c.lifetime_p50_s}s, live set replaced {c.turnover:.0f}x (fork events)",
        )
    elif c.short_lived_storm:
        evidence.insert(0, f"storm: {c.spawn_rate_seen:.0f} new processes/s seen, median life {c.lifetime_p50_s}s")
    system = obs.get("system") or {}
    wall = max(float(obs.get("wall_s") or 0.0), 1e-3)
    io = obs.get("io") or {}
    psi = system.get("psi") or {}
    psi_brief: dict[str, float | str] = {}
    if psi.get("available"):
        for res in ("cpu", "io", "memory"):
            some = ((psi.get(res) or {}).get("some") or {}).get("window_pct")
            if some is not None:
                psi_brief[f"{res}_some_pct"] = some
    else:
        psi_brief["unavailable"] = str(psi.get("reason", "no PSI"))[:80]
    return Characteristics(
        classification=klass,
        evidence=evidence,
        sched=s,
        churn=c,
        long_tail=lt,
        batch=obs.get("kind") == "run" and not obs.get("timed_out"),
        io_mb_per_s=_f(((io.get("read_bytes") or 0) + (io.get("write_bytes") or 0)) / 1e6 / wall),
        rss_mb=_f((obs.get("memory") or {}).get("peak_hwm_kb", 0) / 1024, 1),
        cpu_busy_pct=list(system.get("cpu_busy_pct") or []),
        iowait_pct=_f(statistics.fmean(system.get("iowait_pct") or [0.0]), 1),
        psi=psi_brief,
    )


def workload_metrics(obs: dict[str, Any], ch: Characteristics | None = None) -> dict[str, float]:
    """Numbers the feedback channel compares before/after a deployment (same names every time).

    The workload's own last-line JSON ``{"metrics": {...}}`` (our bench workloads print one) is
    merged in, so application metrics such as latency_p99_us sit next to scheduler ones.
    """
    ch = ch or characteristics(obs)
    out: dict[str, float] = {
        "cpu_s": ch.sched.cpu_s,
        "runq_wait_pct": ch.sched.runq_wait_pct,
        "ctx_switches_per_s": round(ch.sched.vcs_per_s + ch.sched.ivcs_per_s, 1),
    }
    if obs.get("kind") == "run":
        out["makespan_s"] = round(float(obs.get("wall_s") or 0.0), 4)
    out.update(app_metrics(obs.get("stdout_tail") or ""))
    return out


def app_metrics(stdout: str) -> dict[str, float]:
    for line in reversed(stdout.strip().splitlines()[-5:]):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        metrics = doc.get("metrics") if isinstance(doc, dict) else None
        if isinstance(metrics, dict):
            return {
                f"app_{k}": float(v)
                for k, v in list(metrics.items())[:16]
                if isinstance(v, int | float) and not isinstance(v, bool)
            }
    return {}


def target_label(obs: dict[str, Any]) -> str:
    kind = obs.get("kind")
    if kind == "run":
        return "cmd: " + " ".join(obs.get("argv") or [])[:100]
    if kind == "cgroup":
        return f"cgroup: {obs.get('cgroup')}"
    if kind == "pids":
        return "pids: " + ",".join(str(p) for p in (obs.get("pids") or [])[:8])
    return "system"


def build_profile(obs: dict[str, Any], source: str = "host") -> WorkloadProfile:
    ch = characteristics(obs)
    goal, why = choose_goal(ch)
    return WorkloadProfile(
        target=target_label(obs),
        source="vm" if source == "vm" else "host",
        duration_s=round(float(obs.get("wall_s") or 0.0), 3),
        summary=describe(ch, goal),
        goal=goal,
        goal_rationale=why,
        keywords=keywords_for(ch, goal),
        characteristics=ch,
        metrics=workload_metrics(obs, ch),
    )
