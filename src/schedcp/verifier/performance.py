# SPDX-License-Identifier: Apache-2.0
"""Compare the load (and the caller's workload) under the scheduler with the same under EEVDF.

The main metric is ``cpu_busy``: the share of the machine's CPU time the load managed to use. The
load always has more runnable tasks than CPUs, so EEVDF keeps it near 100%; it drops when a
scheduler leaves CPUs idle while tasks wait (everything pinned to one CPU, a DSQ only one CPU
drains, tasks parked until a timer), which is the "plain slowness" to refuse. It is measured in
guest time, so a busy host does not distort it.

Everything else is a warning: the hog work rate (per host CPU second the VM received, so host load
cancels out; still ±25% run to run on a shared TCG host), wakeup latency, ping-pong and fork rates
are partly policy trade-offs (a throughput policy may legitimately wake tasks later).
When the caller gives a workload, its wall time is the second blocking metric.
"""

from __future__ import annotations

from typing import Any

from schedcp.verifier.report import Finding, Severity

DEFAULT_THRESHOLD = 0.25
# Secondary metrics: (name, higher is better, relative change that triggers a warning).
SECONDARY = (
    ("work_per_host_cpu_s", True, 0.4),
    ("pingpong_per_s", True, 0.5),
    ("forks_per_s", True, 0.5),
    ("wakeup_p99_ms", False, 3.0),
)
# Latencies this small are noise on a TCG guest whatever the ratio.
LATENCY_FLOOR_MS = 5.0


def _pf(fid: str, severity: Severity, message: str, hint: str, evidence: list[str]) -> Finding:
    return Finding(
        id=fid,
        stage="performance",
        severity=severity,
        message=message,
        hint=hint,
        evidence=evidence,
    )


def compare(
    baseline: dict[str, Any], candidate: dict[str, Any], threshold: float = DEFAULT_THRESHOLD
) -> tuple[list[Finding], dict[str, Any]]:
    """Findings and a {metric: {eevdf, scheduler, change}} table."""
    table: dict[str, Any] = {}
    findings: list[Finding] = []
    base_busy, busy = baseline.get("cpu_busy"), candidate.get("cpu_busy")
    if base_busy and busy is not None:
        change = busy / base_busy - 1
        table["cpu_busy"] = {"eevdf": base_busy, "scheduler": busy, "change": round(change, 3)}
        if change < -threshold:
            findings.append(
                _pf(
                    "perf-regression",
                    "error",
                    f"the load used {-change:.0%} less of the machine's CPU under the scheduler than under EEVDF "
                    f"({busy:.0%} vs {base_busy:.0%}, threshold {threshold:.0%}): CPUs sat idle while tasks waited",
                    "let every CPU find work: drain shared DSQs from ops.dispatch on all CPUs, do not pin tasks to "
                    "one CPU, kick idle CPUs (scx_bpf_kick_cpu) when queueing work",
                    [f"cpu_busy: EEVDF {base_busy:.2f}, scheduler {busy:.2f}"],
                )
            )
    for name, higher_better, limit in SECONDARY:
        b, c = baseline.get(name), candidate.get(name)
        if b is None or c is None or b <= 0:
            continue
        change = c / b - 1
        table[name] = {"eevdf": b, "scheduler": c, "change": round(change, 3)}
        worse = -change if higher_better else change
        if name == "wakeup_p99_ms" and c < LATENCY_FLOOR_MS:
            continue
        if worse > limit:
            findings.append(
                _pf(
                    "perf-secondary",
                    "warning",
                    f"{name} is {abs(change):.0%} {'lower' if higher_better else 'higher'} than under EEVDF",
                    "acceptable for throughput-oriented policies; otherwise dispatch woken tasks sooner (idle CPUs, "
                    "shorter slices, preemption)",
                    [f"{name}: EEVDF {b:g}, scheduler {c:g}"],
                )
            )
    return findings, table


def compare_workload(
    base: dict[str, Any], cand: dict[str, Any], threshold: float = DEFAULT_THRESHOLD
) -> tuple[list[Finding], dict[str, Any]]:
    """The caller's workload: wall time under the scheduler vs EEVDF, and its exit status."""
    table = {
        "eevdf_wall_s": base.get("wall_s"),
        "scheduler_wall_s": cand.get("wall_s"),
        "eevdf_exit": base.get("exit_code"),
        "scheduler_exit": cand.get("exit_code"),
    }
    findings: list[Finding] = []
    if base.get("exit_code") != 0 or base.get("timed_out"):
        findings.append(
            _pf(
                "perf-workload-invalid",
                "warning",
                f"the workload fails even under EEVDF (exit {base.get('exit_code')}), so it was not compared",
                "pass a command that succeeds in the guest (busybox + python3)",
                [(base.get("stderr") or "").strip()[-200:]],
            )
        )
        return findings, table
    if cand.get("exit_code") != 0 or cand.get("timed_out"):
        findings.append(
            _pf(
                "perf-workload-failed",
                "error",
                f"the workload failed under the scheduler (exit {cand.get('exit_code')}"
                f"{', timed out' if cand.get('timed_out') else ''}) but succeeds under EEVDF",
                "the scheduler starves or breaks this workload",
                [(cand.get("stderr") or "")[-200:]],
            )
        )
        return findings, table
    b, c = float(base.get("wall_s") or 0), float(cand.get("wall_s") or 0)
    if b > 0:
        change = c / b - 1
        table["change"] = round(change, 3)
        if change > threshold:
            findings.append(
                _pf(
                    "perf-regression",
                    "error",
                    f"the workload took {change:.0%} longer under the scheduler than under EEVDF "
                    f"({c:.2f}s vs {b:.2f}s, threshold {threshold:.0%})",
                    "tune the policy for this workload (slice length, wakeup placement) or pick another scheduler",
                    [f"wall: EEVDF {b:.2f}s, scheduler {c:.2f}s"],
                )
            )
    return findings, table
