# SPDX-License-Identifier: Apache-2.0
"""Render an observation at one of three detail levels, each under a stated byte budget.

* ``summary`` (<= 1.5 KB): the label, the goal and the dozen numbers that justify them.
* ``profile`` (<= 4 KB):   the full Workload Profile plus per-CPU use, phases and top tasks.
* ``full``    (<= 16 KB):  adds the task table, the time series and the raw system window.

An agent starts with ``summary`` and asks for more only when the summary leaves a question open.
"""

from __future__ import annotations

from typing import Any, Literal

from schedcp.analysis import budget
from schedcp.analysis.derive import build_profile, sibling_groups
from schedcp.analysis.phases import split_phases
from schedcp.analysis.profile import WorkloadProfile

Detail = Literal["summary", "profile", "full"]
DETAILS: tuple[str, ...] = ("summary", "profile", "full")


def render(obs: dict[str, Any], detail: Detail = "summary", source: str = "host") -> dict[str, Any]:
    if obs.get("kind") == "system":
        return render_system(obs, detail)
    prof = build_profile(obs, source)
    if detail == "summary":
        doc = _summary(obs, prof)
    elif detail == "profile":
        doc = _profile(obs, prof)
    else:
        doc = _full(obs, prof)
    doc["detail"] = detail
    return budget.fit(doc, budget.BUDGETS[detail], drop_order=_DROP[detail])


_DROP = {
    "summary": ("next", "psi", "mem_mb"),
    "profile": ("top_tasks", "groups", "phases"),
    "full": ("series", "stdout_tail", "tasks"),
}


def _summary(obs: dict[str, Any], prof: WorkloadProfile) -> dict[str, Any]:
    ch = prof.characteristics
    s, c = ch.sched, ch.churn
    doc: dict[str, Any] = {
        "target": prof.target[:80],
        "wall_s": prof.duration_s,
        "class": ch.classification,
        "goal": prof.goal,
        "summary": prof.summary[:400],
        "evidence": [e[:90] for e in ch.evidence[:4]],
        "cpu": {
            "ncpu": len(ch.cpu_busy_pct) or None,
            "busy_pct": ch.cpu_busy_pct[:16],
            "parallelism": s.parallelism,
            "runq_wait_pct": s.runq_wait_pct,
            "slice_ms": s.mean_slice_ms,
        },
        "switches": {"vol_s": s.vcs_per_s, "invol_s": s.ivcs_per_s, "migr_s": s.migrations_per_s},
        "tasks": {
            "procs": c.procs_seen,
            "threads": c.threads_seen,
            "peak": c.peak_alive_threads,
            "spawn_s": c.create_rate_per_s if c.create_rate_per_s is not None else c.spawn_rate_seen,
            "created": c.tasks_created,
            "life_p50_s": c.lifetime_p50_s,
            "storm": c.short_lived_storm,
        },
        "io": {"mb_s": ch.io_mb_per_s, "iowait_pct": ch.iowait_pct, "blocked": s.blocked_share},
        "psi": ch.psi,
        "mem_mb": ch.rss_mb,
    }
    if ch.long_tail is not None and ch.long_tail.group_size >= 4:
        lt = ch.long_tail
        doc["long_tail"] = {
            "detected": lt.detected,
            "group": lt.group_size,
            "ratio": lt.ratio_max_median,
            "top_share": lt.top_share,
            "serial_tail_s": lt.serial_tail_s,
        }
    if obs.get("kind") == "run":
        doc["exit"] = obs.get("exit_code")
        if obs.get("timed_out"):
            doc["timed_out"] = True
    doc["next"] = "detail=profile for phases/top tasks; probe runqlat for latency histograms"
    return doc


def _phases(obs: dict[str, Any]) -> list[dict[str, Any]]:
    series = obs.get("series") or []
    if len(series) < 6:
        return []
    times = [p[0] for p in series]
    cpus = [p[1] for p in series]
    out = []
    for a, b in split_phases(times, cpus, rel=0.5, abs_min=0.3, hold=3)[:8]:
        seg = series[a:b]
        out.append(
            {
                "t0": round(series[a - 1][0] if a else 0.0, 2),
                "t1": round(seg[-1][0], 2),
                "cpus": round(sum(p[1] for p in seg) / len(seg), 2),
                "cs_s": round(sum(p[2] for p in seg) / len(seg)),
                "alive": max(p[3] for p in seg),
            }
        )
    return out


def _top_tasks(obs: dict[str, Any], n: int) -> list[dict[str, Any]]:
    rows = []
    for t in (obs.get("tasks") or [])[:n]:
        rows.append(
            {
                "tid": t["tid"],
                "pid": t["pid"],
                "comm": t["comm"][:16],
                "run_ms": round((t.get("run_ns") or 0) / 1e6, 1),
                "wait_ms": round((t.get("wait_ns") or 0) / 1e6, 1),
                "slices": t.get("slices"),
                "vcs": t.get("vcs"),
                "ivcs": t.get("ivcs"),
                "migr": t.get("migrations"),
                "life_s": round(t["end_s"] - max(0.0, t["start_s"]), 2),
            }
        )
    return rows


def _groups(obs: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for g in sibling_groups(obs.get("tasks") or [])[:3]:
        runs = sorted((t.get("run_ns") or 0) / 1e6 for t in g)
        out.append(
            {
                "size": len(g),
                "spawner": g[0]["ppid"] if g[0]["pid"] == g[0]["tid"] else g[0]["pid"],
                "run_ms_min": round(runs[0], 1),
                "run_ms_p50": round(runs[len(runs) // 2], 1),
                "run_ms_max": round(runs[-1], 1),
                "start_s": round(g[0]["start_s"], 2),
            }
        )
    return out


def _lifetime_hist(obs: dict[str, Any]) -> dict[str, int]:
    bounds = [(0.01, "<10ms"), (0.1, "<100ms"), (1.0, "<1s"), (10.0, "<10s"), (float("inf"), ">=10s")]
    hist: dict[str, int] = {}
    # The fork events' lifetimes cover every child (a sample of them when there are many); the
    # sampler's only the children it happened to see alive.
    forks = obs.get("forks") or {}
    lifetimes = forks.get("lifetimes_s") if forks.get("available") else obs.get("lifetimes_s")
    for life in lifetimes or []:
        for bound, label in bounds:
            if life < bound:
                hist[label] = hist.get(label, 0) + 1
                break
    return hist


def _profile(obs: dict[str, Any], prof: WorkloadProfile) -> dict[str, Any]:
    doc = prof.model_dump(mode="json")
    doc["phases"] = _phases(obs)
    doc["groups"] = _groups(obs)
    doc["lifetimes"] = _lifetime_hist(obs)
    doc["top_tasks"] = _top_tasks(obs, 5)
    if obs.get("probe"):
        doc["probe"] = _probe_brief(obs["probe"])
    return doc


def _probe_brief(p: dict[str, Any]) -> dict[str, Any]:
    if not p.get("available"):
        return {"available": False, "reason": p.get("reason")}
    out: dict[str, Any] = {"backend": p.get("backend")}
    for key in ("runqlat", "wakeup"):
        if key in p:
            out[key] = {k: p[key].get(k) for k in ("count", "p50_us", "p99_us", "max_us")}
    if "migrations" in p:
        out["migrations"] = p["migrations"].get("total")
    return out


def _full(obs: dict[str, Any], prof: WorkloadProfile) -> dict[str, Any]:
    doc = _profile(obs, prof)
    doc["top_tasks"] = _top_tasks(obs, 40)
    doc["system"] = obs.get("system")
    doc["series_cols"] = ["t_s", "cpus", "cs_per_s", "alive", "running", "blocked"]
    doc["series"] = (obs.get("series") or [])[:60]
    doc["totals"] = obs.get("totals")
    doc["rusage"] = obs.get("rusage")
    doc["sampling"] = {
        "samples": obs.get("samples"),
        "interval_s": obs.get("interval_s"),
        "sampler_cpu_s": obs.get("sampler_cpu_s"),
        "tasks_dropped": obs.get("tasks_dropped"),
    }
    if obs.get("probe"):
        doc["probe"] = obs["probe"]
    if obs.get("kind") == "run":
        doc["stdout_tail"] = (obs.get("stdout_tail") or "")[-600:]
    return doc


def render_system(obs: dict[str, Any], detail: Detail = "summary") -> dict[str, Any]:
    psi = obs.get("psi") or {}
    doc: dict[str, Any] = {
        "target": "system",
        "ncpu": obs.get("ncpu"),
        "busy_pct": obs.get("cpu_busy_pct"),
        "iowait_pct": obs.get("iowait_pct"),
        "load": obs.get("loadavg"),
        "procs": obs.get("nprocs"),
        "threads": obs.get("nthreads"),
        "forks_s": round((obs.get("forks") or 0) / max(obs.get("wall_s") or 1, 1e-3), 1),
        "ctxt_s": round((obs.get("ctxt") or 0) / max(obs.get("wall_s") or 1, 1e-3)),
        "runnable_avg": obs.get("procs_running_avg"),
        "blocked_avg": obs.get("procs_blocked_avg"),
        "mem_avail_mb": obs.get("mem_available_mb"),
        "top": obs.get("top", [])[: 5 if detail == "summary" else 20],
    }
    if psi.get("available"):
        doc["psi_some_pct"] = {
            r: ((psi.get(r) or {}).get("some") or {}).get("window_pct") for r in ("cpu", "io", "memory")
        }
        if detail != "summary":
            doc["psi"] = psi
    else:
        doc["psi"] = f"unavailable: {psi.get('reason')}"
    doc["detail"] = detail
    return budget.fit(doc, budget.BUDGETS[detail], drop_order=("top",))
