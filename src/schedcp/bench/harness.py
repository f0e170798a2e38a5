# SPDX-License-Identifier: Apache-2.0
"""Run a benchmark under EEVDF and under each policy, interleaved, on one target; summarise.

Protocol, for one benchmark on one booted target:

1. Every policy is built (and its tunables validated) on the host before anything runs.
2. One warm-up run under EEVDF, not counted (page cache, byte-code caches, first-touch costs).
3. ``runs`` rounds. Each round runs every arm once, in an order rotated by one each round
   (A B C, B C A, C A B, ...), so slow drift of the machine is spread over all arms. Workloads
   that take a seed get the same seed for every arm of a round: paired comparisons.
4. A policy run is attach -> run -> check -> detach. The check reads sched_ext's state and the
   kernel log right after the workload: if the scheduler was ejected (watchdog, runtime error)
   or replaced, the run is recorded as ``ejected`` with the kernel's reason, never counted.
   EEVDF runs check that no scheduler was attached.
5. Only ``ok`` runs enter the statistics; each arm gets median/min/max/IQR per metric and an
   improvement factor against EEVDF's median (stats.improvement: >1 is better, either direction).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

from schedcp.bench import stats
from schedcp.bench.workloads import Benchmark
from schedcp.errors import SchedcpError, UsageError
from schedcp.repository import external as external_catalog
from schedcp.repository.external import ExternalCommand
from schedcp.toolchain import metadata
from schedcp.toolchain.resolve import ResolvedScheduler, resolve_scheduler
from schedcp.trial import compare
from schedcp.trial.models import Policy
from schedcp.trial.rounds import BASELINE, GUEST_DEAD, rotate, run_arm
from schedcp.trial.rounds import Arm as TrialArm

SEED_BASE = 1000
# ``--policies external:scx_rusty``: an installed upstream scheduler, by its catalog entry.
EXTERNAL_PREFIX = "external:"
MAX_CRASHES = 5  # per benchmark; beyond that something is wrong with the policy, not the emulator
Say = Callable[[str], None]


@dataclass
class Arm:
    """One scheduler under comparison: EEVDF, one of our sched_ext policies with tunables, or an
    installed upstream binary (``external``: its command line, validated by the catalog entry)."""

    name: str
    resolved: ResolvedScheduler | None = None
    config: dict[str, str] = field(default_factory=dict)
    external: ExternalCommand | None = None

    @property
    def is_baseline(self) -> bool:
        return self.resolved is None and self.external is None

    def trial_arm(self) -> TrialArm:
        """This arm as the trial core runs it."""
        r = self.resolved
        if self.external is not None:
            return TrialArm(self.name, external=self.external)
        if r is None:
            return TrialArm(self.name)
        policy = Policy(name=r.name, object_path=r.object_path, meta=r.meta)
        return TrialArm(self.name, policy, dict(self.config))

    def describe(self) -> dict[str, Any]:
        if self.external is not None:
            return {
                "name": self.name,
                "kind": "external",
                "binary": self.external.binary,
                "argv": [self.external.binary, *self.external.args],
                "config": self.external.config,
            }
        if self.resolved is None:
            return {"name": self.name, "kind": "baseline", "scheduler": "EEVDF (kernel default)"}
        r = self.resolved
        return {
            "name": self.name,
            "kind": "sched_ext",
            "source": str(r.source_path) if r.source_path else str(r.object_path),
            "object_sha256": r.built.object_sha256 if r.built else None,
            "config": self.config,
            "title": r.meta.title if r.meta else None,
        }


def parse_configs(items: list[str]) -> dict[str, dict[str, str]]:
    """["ljf:slice_us=5000", "external:scx_rusty:perf=512", ...] -> {"ljf": {"slice_us": "5000"}, ...}."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        prefix = EXTERNAL_PREFIX if item.startswith(EXTERNAL_PREFIX) else ""
        policy, sep, rest = item.removeprefix(prefix).partition(":")
        policy = prefix + policy
        if not sep or not policy.strip() or not rest.strip():
            raise UsageError(f"bad --config {item!r}", "use POLICY:NAME=VALUE, e.g. ljf:slice_us=5000")
        out.setdefault(policy.strip(), {}).update(metadata.parse_assignments([rest]))
    return out


def prepare_arms(
    policies: list[str], configs: dict[str, dict[str, str]], kernel, *, external_search: tuple[str, ...] = ()
) -> list[Arm]:
    """EEVDF plus one arm per policy, each built for `kernel` with validated tunables.

    A policy may carry a label, ``NAME@LABEL``, so one scheduler can run under several
    configurations in the same boot (``--config NAME@LABEL:knob=value`` configures that arm).
    ``external:NAME`` is an installed upstream binary, by its catalog entry; its tunables become the
    flags the entry declares (``external_search``: where the target's node finds the binary).
    """
    names = [p.strip() for p in policies if p.strip() and p.strip() != BASELINE]
    if len(set(names)) != len(names):
        raise UsageError("a policy is listed twice", "list each policy once")
    unknown = set(configs) - set(names)
    if unknown:
        raise UsageError(
            f"--config names policies that are not benchmarked: {sorted(unknown)}",
            "add them to --policies or fix the name",
        )
    arms = [Arm(BASELINE)]
    for spec in names:
        source, _, label = spec.partition("@")
        if label and not re.fullmatch(r"[A-Za-z0-9_.-]{1,32}", label):
            raise UsageError(f"bad label in {spec!r}", "labels are 1-32 letters, digits, '_', '-' or '.'")
        if source.startswith(EXTERNAL_PREFIX):
            command = external_catalog.entry(source.removeprefix(EXTERNAL_PREFIX)).command(configs.get(spec, {}))
            command = replace(command, search=external_search)
            name = f"{command.name}@{label}" if label else command.name
            if any(a.name == name for a in arms):
                raise UsageError(f"two policies are both called {name!r}", "give one a label: NAME@LABEL")
            arms.append(Arm(name, external=command))
            continue
        resolved = resolve_scheduler(source, kernel)
        config = configs.get(spec, {})
        if config:
            if resolved.meta is None:
                raise UsageError(f"{spec} declares no tunables", f"drop --config for {spec}")
            resolved.meta.validate_config(config)
        name = f"{resolved.name}@{label}" if label else resolved.name
        if any(a.name == name for a in arms):
            raise UsageError(f"two policies are both called {name!r}", "give one a label: NAME@LABEL")
        arms.append(Arm(name, resolved, config))
    return arms


# Arms rotated by the round number: every arm takes every position equally often.
round_order = rotate


def parse_output(stdout: str) -> dict[str, Any] | None:
    """The workload's result: the last stdout line that is a JSON object with a "workload" key."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict) and "workload" in data:
                return data
    return None


def run_once(target, bench: Benchmark, arm: Arm, args: list[str], watchdog_ms: int | None = None) -> dict[str, Any]:
    """One measured run of one arm (the trial core's ``run_arm``); never raises for a scheduler or
    workload failure. Adds the host's view: its load, and how long it held the vCPUs back."""
    # Other work on the host slows an emulated guest down; keep the context with every run.
    record: dict[str, Any] = {"arm": arm.name, "status": "ok", "host_load": round(os.getloadavg()[0], 2)}

    @contextmanager
    def host_steal() -> Iterator[None]:
        host0 = target.vcpu_schedstat()
        yield
        host1 = target.vcpu_schedstat()
        if host0 and host1:
            ran, waited = host1[0] - host0[0], host1[1] - host0[1]
            record["host_steal"] = round(waited / (ran + waited), 3) if ran + waited > 0 else 0.0

    argv = target.workload_argv(bench.module, args)
    rec = run_arm(
        target.node, arm.trial_arm(), argv, timeout_s=bench.timeout_s, watchdog_ms=watchdog_ms, around=host_steal
    )
    if rec.status != "ok":
        record.update(status=rec.status, error=rec.error)
    if rec.ops_name:
        record["ops"] = rec.ops_name  # the sched_ext ops the kernel ran the workload under
    if rec.warnings:
        record["warnings"] = rec.warnings
    out = rec.run
    if rec.status == "attach_failed" or out is None:  # never attached, or ejected while it enabled
        record["events"] = [e.as_dict() for e in rec.events[:10]]
        return record
    record.update(wall_s=out.wall_s, exit_code=out.exit_code, context_switches=out.context_switches)
    if rec.stayed:
        record["counters"] = rec.counters
    result = parse_output(out.stdout)
    if rec.status in ("ok", "failed") and (result is None or out.exit_code != 0 or not result.get("ok", True)):
        errors = (result or {}).get("errors") or [out.stderr.strip()[-300:] or "no result line"]
        record.update(status="failed", error=f"exit {out.exit_code}: {'; '.join(map(str, errors))[:400]}")
    if result is not None:
        record["metrics"] = {
            m.key: result["metrics"][m.key]
            for m in bench.metrics
            if isinstance(result.get("metrics", {}).get(m.key), int | float)
        }
        record["details"] = {k: v for k, v in result.items() if k not in ("metrics", "workload")}
    return record


def summarize_arms(bench: Benchmark, arms: list[Arm], runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Per arm: statuses, per-metric summary of ok runs, and improvement against EEVDF's median."""
    out: dict[str, Any] = {}
    for arm in arms:
        mine = [r for r in runs if r["arm"] == arm.name]
        ok = [r for r in mine if r["status"] == "ok"]
        metrics: dict[str, Any] = {}
        for m in bench.metrics:
            values = [r["metrics"][m.key] for r in ok if m.key in r.get("metrics", {})]
            if values:
                metrics[m.key] = stats.summarize(values).to_dict() | {"values": values}
        steals = [r["host_steal"] for r in ok if r.get("host_steal") is not None]
        switches = [r["context_switches"] for r in ok if r.get("context_switches") is not None]
        out[arm.name] = {
            "host_steal": round(stats.summarize(steals).median, 3) if steals else None,
            "context_switches": stats.summarize(switches).median if switches else None,
            "runs": len(mine),
            "ok": len(ok),
            "statuses": {s: sum(r["status"] == s for r in mine) for s in sorted({r["status"] for r in mine})},
            "errors": sorted({r["error"] for r in mine if r.get("error")})[:5],
            "metrics": metrics,
        }
    base = out.get(BASELINE, {}).get("metrics", {})
    for name, data in out.items():
        for m in bench.metrics:
            cell = data["metrics"].get(m.key)
            if cell is None or m.key not in base:
                continue
            cell["improvement"] = compare.ratio(base[m.key]["median"], cell["median"], m.direction)
            cell["change_pct"] = stats.change_pct(base[m.key]["median"], cell["median"])
            paired = compare.paired(paired_improvements(runs, name, m.key, m.direction))
            if paired.pairs:
                cell["paired_improvement"] = paired.median
                cell["paired_wins"] = paired.wins
                cell["pairs"] = paired.pairs
    return out


def paired_improvements(
    runs: list[dict[str, Any]], arm: str, key: str, direction: compare.Direction
) -> list[float | None]:
    """Improvement of `arm` over EEVDF within each round where both ran ok. Arms of one round run
    back to back, so slow drifts of the machine (other load on the host) cancel in these ratios."""
    by_round: dict[int, dict[str, float]] = {}
    for r in runs:
        if r["status"] == "ok" and key in r.get("metrics", {}) and "round" in r:
            by_round.setdefault(r["round"], {})[r["arm"]] = r["metrics"][key]
    pairs = [(values[BASELINE], values[arm]) for values in by_round.values() if arm in values and BASELINE in values]
    return compare.round_ratios(pairs, direction)


def evaluate_targets(bench: Benchmark, summary: dict[str, Any]) -> dict[str, Any]:
    """Does some policy meet every target of the benchmark? Picks the best arm on the first target."""
    if not bench.targets:
        return {"targets": [], "met": None}
    candidates = []
    for name, data in summary.items():
        if name == BASELINE:
            continue
        checks = []
        for t in bench.targets:
            cell = data["metrics"].get(t.metric, {})
            factor = cell.get("improvement")
            checks.append(
                {
                    "metric": t.metric,
                    "at_least": t.at_least,
                    "factor": factor,
                    "met": stats.is_better(factor, t.at_least),
                    "source": t.source,
                }
            )
        candidates.append((all(c["met"] for c in checks), checks[0]["factor"] or 0.0, name, checks))
    if not candidates:
        return {"targets": [], "met": False, "arm": None}
    met, _, name, checks = max(candidates, key=lambda c: (c[0], c[1]))
    return {"arm": name, "met": met, "targets": checks}


def run_benchmark(
    target,
    bench: Benchmark,
    arms: list[Arm],
    *,
    runs: int,
    extra_args: list[str] | None = None,
    smoke: bool = False,
    warmup: bool = True,
    watchdog_ms: int | None = None,
    max_steal: float | None = None,
    retries: int = 2,
    say: Say = lambda _m: None,
) -> dict[str, Any]:
    if not 1 <= runs <= 100:
        raise UsageError(f"--runs {runs} is out of range", "use 1..100")
    base_args = list(bench.smoke_args if smoke else bench.args) + list(extra_args or [])
    # The option that seeds each round, unless the workload has none or the caller fixed the seed.
    seed_option = bench.seed_option if bench.seed_option not in base_args else None
    seeded = seed_option is not None

    def args_for(round_index: int) -> list[str]:
        return base_args + ([seed_option, str(SEED_BASE + round_index)] if seed_option is not None else [])

    started = time.time()
    records: list[dict[str, Any]] = []
    crashes: list[dict[str, Any]] = []

    def run_guarded(arm: Arm, rnd: int) -> dict[str, Any]:
        """run_once, but a crashed guest is rebooted and the run repeated (a few times at most)."""
        while True:
            try:
                return run_once(target, bench, arm, args_for(rnd), watchdog_ms)
            except SchedcpError as exc:
                if exc.code not in GUEST_DEAD or len(crashes) >= MAX_CRASHES:
                    raise
                crashes.append(
                    {"round": rnd, "arm": arm.name, "cause": exc.cause, "console_tail": target.console_tail(30)}
                )
                say(f"{bench.name}: the guest crashed during {arm.name} ({exc.cause}); rebooting, repeating the run")
                target.stop()
                target.start()

    if warmup:
        say(f"{bench.name}: warm-up run under EEVDF")
        w = run_guarded(arms[0], -1)
        if w["status"] != "ok":
            say(f"{bench.name}: warm-up {w['status']}: {w.get('error')}")
    for rnd in range(runs):
        for pos, arm in enumerate(round_order(arms, rnd)):
            attempts = []
            for _attempt in range(1 + (retries if max_steal is not None else 0)):
                rec = run_guarded(arm, rnd)
                rec.update(round=rnd, position=pos)
                attempts.append(rec)
                steal = rec.get("host_steal")
                noisy = rec["status"] == "ok" and max_steal is not None and steal is not None and steal > max_steal
                say(
                    f"{bench.name}: round {rnd + 1}/{runs} {arm.name}: {_brief(bench, rec)}"
                    + (f" (host steal {steal:.0%}{', repeating' if noisy else ''})" if noisy else "")
                )
                if not noisy:
                    break
            records += pick_attempt(attempts)
    summary = summarize_arms(bench, arms, records)
    return {
        "benchmark": bench.name,
        "title": bench.title,
        "description": bench.description,
        "workload": {"module": bench.module, "args": base_args, "seeded": seeded},
        "metrics": [
            {"key": m.key, "label": m.label, "unit": m.unit, "direction": m.direction, "primary": m.primary}
            for m in bench.metrics
        ],
        "arms": [a.describe() for a in arms],
        "runs": runs,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
        "watchdog_ms": watchdog_ms,
        "max_steal": max_steal,
        "elapsed_s": round(time.time() - started, 1),
        "records": records,
        "guest_crashes": crashes,
        "summary": summary,
        "evaluation": evaluate_targets(bench, summary),
    }


def pick_attempt(attempts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Of repeated attempts at one run, count the one the host disturbed least; keep the others,
    marked ``noisy``, so the record shows what was discarded and why."""
    ok = [a for a in attempts if a["status"] == "ok"]
    if len(ok) <= 1:
        return attempts
    best = min(ok, key=lambda a: a.get("host_steal", 0.0))
    for a in ok:
        if a is not best:
            a.update(
                status="noisy", error=f"repeated: the host held the vCPUs back {a.get('host_steal', 0):.0%} of the time"
            )
    return attempts


def _brief(bench: Benchmark, rec: dict[str, Any]) -> str:
    if rec["status"] != "ok":
        return f"{rec['status'].upper()} {rec.get('error', '')}"[:160]
    parts = [f"{m.label} {rec['metrics'][m.key]:g} {m.unit}" for m in bench.primary if m.key in rec.get("metrics", {})]
    return ", ".join(parts)
