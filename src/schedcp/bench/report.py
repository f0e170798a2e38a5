# SPDX-License-Identifier: Apache-2.0
"""Render a suite's results as text tables and as the Markdown results page (docs/benchmarks.md)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from schedcp.bench import plot, stats
from schedcp.bench.workloads import BENCHMARKS, KINDS

REGENERATE = "python benchmarks/run_all.py"
BIG_WIN = 1.25  # a factor this high on one benchmark ...
LOSS = 0.95  # ... and this low on another of the same kind: the policy does not generalise


def _scaled(median: float, unit: str) -> tuple[float, str]:
    """Divisor and unit to print a metric in, chosen from its median (microseconds become ms)."""
    if unit == "us" and median >= 1000:
        return 1000.0, "ms"
    return 1.0, unit


def _num(value: float) -> str:
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3g}"


def fmt_value(value: float, unit: str) -> str:
    div, shown = _scaled(value, unit)
    return f"{_num(value / div)} {shown}".strip()


def cell_text(cell: dict[str, Any] | None, unit: str, *, spread: bool = True) -> str:
    """ "median unit [min–max] (factor×)", all in the unit chosen for the median."""
    if not cell:
        return "—"
    div, shown = _scaled(cell["median"], unit)
    text = f"{_num(cell['median'] / div)} {shown}".strip()
    if spread and cell.get("n", 1) > 1:
        text += f" [{_num(cell['min'] / div)}–{_num(cell['max'] / div)}]"
    if cell.get("improvement") is not None:
        text += f" ({stats.format_factor(cell['improvement'])})"
    return text


def status_text(arm: dict[str, Any]) -> str:
    statuses = arm.get("statuses", {})
    bad = {k: v for k, v in statuses.items() if k != "ok"}
    text = f"{arm.get('ok', 0)}/{arm.get('runs', 0)} ok"
    if bad:
        text += " (" + ", ".join(f"{v} {k}" for k, v in bad.items()) + ")"
    return text


def benchmark_table(result: dict[str, Any], *, all_metrics: bool = False) -> list[list[str]]:
    """Rows (header first): arm, one column per metric, runs."""
    metrics = [m for m in result["metrics"] if all_metrics or m["primary"]]
    header = ["policy"] + [f"{m['label']} ({'↓' if m['direction'] == 'lower' else '↑'})" for m in metrics]
    counted = any(switches(result, a["name"]) for a in result["arms"])
    header += ["context switches per run"] if counted else []
    rows = [[*header, "runs"]]
    for arm in result["arms"]:
        data = result["summary"].get(arm["name"], {})
        cells = [cell_text(data.get("metrics", {}).get(m["key"]), m["unit"]) for m in metrics]
        if counted:
            n, r = switches(result, arm["name"]), switch_ratio(result, arm["name"])
            versus = f" ({r:.2f}× EEVDF's)" if r is not None and arm["name"] != "eevdf" else ""
            cells.append(f"{_num(n)}{versus}" if n else "—")
        rows.append([arm["name"], *cells, status_text(data)])
    return rows


def evaluation_line(result: dict[str, Any]) -> str | None:
    ev = result.get("evaluation") or {}
    if not ev.get("targets"):
        return None
    parts = []
    for t in ev["targets"]:
        parts.append(f"{t['metric']} {stats.format_factor(t['factor'])} (goal ≥ {t['at_least']:.2f}×)")
    verdict = "MET" if ev.get("met") else "MISSED"
    return f"{verdict} by {ev.get('arm')}: " + "; ".join(parts)


def expected_run_to_completion(ratio: float, shorts: int = 39) -> float:
    """Expected makespan (in short-job units, 2 CPUs) when jobs run to completion in a random order
    and the long job (`ratio` short jobs of work) keeps its CPU once picked."""
    bound = (shorts + ratio) / 2
    return sum(max(j / 2 + ratio, bound) for j in range(shorts + 1)) / (shorts + 1)


def batch_bounds(result: dict[str, Any]) -> str | None:
    """For the long-tail batch: what the measured job sizes allow, so the result can be judged."""
    ratios = [
        k["long_cpu_s"] / k["short_cpu_s"]
        for r in result.get("records", [])
        if r.get("arm") == "eevdf" and r.get("status") == "ok"
        for k in r.get("details", {}).get("kinds", [])
        if k.get("short_cpu_s")
    ]
    if not ratios:
        return None
    n = len(result["records"][0].get("details", {}).get("kinds", [{}])[0].get("completion_s", [])) or 40
    shorts = n - 1
    ratio = stats.summarize(ratios).median
    fair = shorts / 2 + ratio
    bound = max(ratio, (shorts + ratio) / 2)
    rtc = expected_run_to_completion(ratio, shorts)
    return (
        f"Measured job sizes: under EEVDF the long job used {ratio:.1f}x the CPU time of a short one "
        f"(median over kinds and runs). In short-job units on 2 CPUs, fair sharing then predicts a makespan "
        f"of about {fair:.1f}, the lower bound is {bound:.1f} (at most {1 - bound / fair:.0%} below fair "
        f"sharing, {fair / bound:.2f}x), and running jobs to completion in a random order, the best a policy "
        f"can do without knowing which job is long, expects {rtc:.1f} ({fair / rtc:.2f}x) before any saving "
        f"in context switches."
    )


def noise_line(result: dict[str, Any]) -> str | None:
    """How much the host held the guest back during the counted runs, and what was repeated."""
    steals = [
        r["host_steal"]
        for r in result.get("records", [])
        if r.get("status") == "ok" and r.get("host_steal") is not None
    ]
    if not steals:
        return None
    repeated = sum(r.get("status") == "noisy" for r in result.get("records", []))
    text = (
        f"Host interference: during the counted runs the vCPUs waited for a host CPU "
        f"{stats.summarize(steals).median:.0%} of the time (median; max {max(steals):.0%})"
    )
    if result.get("max_steal") is not None:
        text += f"; {repeated} runs were repeated for exceeding {result['max_steal']:.0%}"
    return text + "."


def paired_lines(result: dict[str, Any]) -> list[str]:
    """Per policy and primary metric: median paired improvement and in how many rounds it won."""
    out = []
    for arm in result["arms"]:
        if arm["name"] == "eevdf":
            continue
        cells = result["summary"].get(arm["name"], {}).get("metrics", {})
        parts = []
        for m in result["metrics"]:
            cell = cells.get(m["key"], {})
            if m["primary"] and cell.get("pairs"):
                parts.append(
                    f"{m['label']} {stats.format_factor(cell['paired_improvement'])} "
                    f"(better in {cell['paired_wins']}/{cell['pairs']})"
                )
        if parts:
            out.append(f"`{arm['name']}` " + ", ".join(parts))
    return out


def _primary_cell(result: dict[str, Any], arm: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(metric, summary cell) of the benchmark's first primary metric for `arm`, if measured."""
    metric = next((m for m in result.get("metrics", []) if m["primary"]), None)
    cell = result.get("summary", {}).get(arm, {}).get("metrics", {}).get(metric["key"]) if metric else None
    return (metric, cell) if metric and cell and cell.get("improvement") is not None else None


def switches(result: dict[str, Any], arm: str) -> float | None:
    """The arm's median context switches per run (the harness counts the guest's around each run)."""
    data = result.get("summary", {}).get(arm, {})
    return data.get("context_switches") or data.get("metrics", {}).get("ctxt", {}).get("median")


def switch_ratio(result: dict[str, Any], arm: str) -> float | None:
    """The arm's median context switches per run relative to EEVDF's (0.5: half as many)."""
    mine, base = switches(result, arm), switches(result, "eevdf")
    return round(mine / base, 2) if mine and base else None


def policy_matrix(doc: dict[str, Any]) -> list[str]:
    """Markdown: for each policy and kind of benchmark, its factor on each benchmark's headline metric
    with its context switches beside it, then every policy that wins big on one benchmark of a kind
    and loses on another of the same kind."""
    by_policy: dict[str, dict[str, list[tuple[str, float, float | None]]]] = {}
    for result in doc.get("benchmarks", []):
        bench = BENCHMARKS.get(result["benchmark"])
        if "summary" not in result or bench is None or not bench.kind:
            continue
        for arm in result["arms"]:
            got = _primary_cell(result, arm["name"]) if arm["name"] != "eevdf" else None
            if got is not None:
                by_policy.setdefault(arm["name"], {}).setdefault(bench.kind, []).append(
                    (result["benchmark"], got[1]["improvement"], switch_ratio(result, arm["name"]))
                )
    if not by_policy:
        return []
    kinds = [k for k in KINDS if any(k in v for v in by_policy.values())]
    lines = [
        "| policy | " + " | ".join(kinds) + " |",
        "|---|" + "---|" * len(kinds),
    ]
    for policy, per_kind in sorted(by_policy.items()):
        cells = []
        for kind in kinds:
            entries = per_kind.get(kind, [])
            cells.append(
                "<br>".join(
                    f"{name} {stats.format_factor(f)}" + (f" (switches {s:.2f}×)" if s is not None else "")
                    for name, f, s in entries
                )
                or "—"
            )
        lines.append(f"| `{policy}` | " + " | ".join(cells) + " |")
    mixed = []
    for policy, per_kind in sorted(by_policy.items()):
        for kind, entries in per_kind.items():
            wins = [(n, f) for n, f, _ in entries if f >= BIG_WIN]
            losses = [(n, f) for n, f, _ in entries if f <= LOSS]
            if wins and losses:
                mixed.append(
                    f"- `{policy}` ({kind}): wins on "
                    + ", ".join(f"{n} {stats.format_factor(f)}" for n, f in wins)
                    + " but loses on "
                    + ", ".join(f"{n} {stats.format_factor(f)}" for n, f in losses)
                    + "."
                )
    if mixed:
        lines += [
            "",
            f"Does not generalise: a policy that wins big (≥ {BIG_WIN:.2f}×) on one benchmark and loses "
            f"(≤ {LOSS:.2f}×) on another of the same kind:",
            "",
            *mixed,
        ]
    return lines


def _loads(doc: dict[str, Any]) -> str:
    """Median and maximum host load average over the counted runs (other work on the host slows an
    emulated guest; the page says how busy the host was)."""
    loads = [
        r["host_load"]
        for result in doc.get("benchmarks", [])
        for r in result.get("records", [])
        if r.get("host_load") is not None
    ]
    return f"{stats.summarize(loads).median:.1f} (max {max(loads):.1f})" if loads else ""


def _minutes(doc: dict[str, Any]) -> str:
    total = sum(r.get("elapsed_s", 0.0) for r in doc.get("benchmarks", []))
    return f"{total / 60:.0f} minutes"


def _md_table(rows: list[list[str]]) -> str:
    out = ["| " + " | ".join(rows[0]) + " |", "|" + "|".join("---" for _ in rows[0]) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(out)


def _machine_md(m: dict[str, Any]) -> str:
    if not m:
        return "(no machine information: the target never started)"
    if m.get("target") == "vm":
        return (
            f"QEMU micro-VM, **{m.get('vcpus')} vCPUs, accelerator {m.get('accel')}** "
            f"({m.get('tcg_thread', '?')}-threaded), {m.get('memory_mb')} MiB, guest kernel {m.get('kernel')} "
            f"(sched_ext), image `{m.get('image_variant')}`, guest Python {m.get('guest_python')}; host CPU "
            f"{m.get('host_cpu')} ({m.get('host_cpus')} cores), VM threads at host nice {m.get('host_nice', 0)}, "
            f"first boot {m.get('boot_s')} s."
            + (
                f" Added to the guest: Debian packages {', '.join(m['extras']['packages'])}"
                + (f"; {', '.join(w['guest'] for w in m['extras']['with'])}" if m["extras"].get("with") else "")
                + "."
                if m.get("extras")
                else ""
            )
        )
    return f"Local host, {m.get('host_cpu')} ({m.get('host_cpus')} CPUs), kernel {m.get('kernel')}."


def render_markdown(doc: dict[str, Any], images: dict[str, str], command: str = REGENERATE) -> str:
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `" + command + "` (schedcp.bench.report); edit the generator, not this file. -->",
        "",
        "Every benchmark compares the kernel's default scheduler (EEVDF) with sched_ext policies from the "
        "SchedCP library, all in **the same VM boot**, interleaved round by round (A B C, B C A, …) after one "
        "warm-up run. Each policy is attached before its run and detached after it; a run during which the "
        "kernel ejected the scheduler is reported as `ejected`, not counted. Numbers are medians, brackets "
        "give min–max over the runs, and the factor in parentheses is the improvement over EEVDF in the "
        "metric's own direction (>1× is better: EEVDF/policy for times and latencies, policy/EEVDF for "
        "throughput). The benchmarks run **real third-party tools** from Debian stable (rt-tests' hackbench "
        "and cyclictest, perf bench, stress-ng, sysbench, and a build of Lua from Debian's source with make "
        "and gcc), each reporting its own numbers; the long-tail batch is the one workload of our own, "
        "because no packaged tool builds a batch with one hidden long job. A run counts only if the tool "
        "exited cleanly and printed its report (the build must also produce a working `lua`). Beside every "
        "ratio stand the context switches the guest made during the run and the CPU time the tool used.",
        "",
        f"Regenerate everything on this page with `{command}` ({doc.get('runs')} runs per arm)."
        + (f" This run took {_minutes(doc)} on a host whose load average was {_loads(doc)}." if _loads(doc) else ""),
        "",
        "## Machine",
        "",
        _machine_md(doc.get("machine", {})),
        "",
        f"Run started {doc.get('started')}, finished {doc.get('finished')}."
        + (
            " Some benchmarks were re-run separately in their own boot (`--merge`); each section gives the "
            "time its runs started, and every ratio still compares arms of the same boot."
            if doc.get("merged")
            else ""
        ),
        "",
        "**Read these numbers with the machine in mind.** The guest runs under QEMU's TCG (software "
        "emulation: no usable KVM here) on a 2-core host shared with other work. Emulated CPUs are about "
        "30 times slower than native ones for Python and gcc, context switches and address-space "
        "changes are disproportionately expensive (the emulator's software TLB is flushed), and the host "
        "itself preempts the vCPU threads. Absolute times are therefore not comparable with the paper's; "
        "ratios measured in the same boot, interleaved, are the meaningful result, and the spread shows "
        "how much to trust each one.",
        "",
        "## Targets",
        "",
        *([f"![all benchmarks]({images['overview']})", ""] if "overview" in images else []),
        "| benchmark | goal | best policy | result | verdict |",
        "|---|---|---|---|---|",
    ]
    for result in doc.get("benchmarks", []):
        ev = result.get("evaluation") or {}
        if "error" in result:
            lines.append(f"| {result['benchmark']} | — | — | run failed: {result['error']} | MISSED |")
            continue
        for t in ev.get("targets", []):
            lines.append(
                f"| {result['benchmark']} | {t['metric']} ≥ {t['at_least']:.2f}× ({t['source']}) | "
                f"{ev.get('arm')} | {stats.format_factor(t['factor'])} | "
                f"{'met' if t['met'] else '**missed**'} |"
            )
    matrix = policy_matrix(doc)
    if matrix:
        lines += [
            "",
            "## Where each policy wins and loses",
            "",
            "Each policy's factor against EEVDF on every benchmark's headline metric, by the kind of thing "
            "the benchmark measures, with the policy's context switches per run relative to EEVDF's beside "
            "it. Under emulation a context switch costs far more than on hardware, so a win that comes "
            "with far fewer switches (switches well below 1×) would shrink on a real machine.",
            "",
            *matrix,
        ]
    lines += [
        "",
        "Not on this page: the paper's fourth number, an agent that reuses the policy repository costing "
        "13× less than one writing schedulers from scratch. Measuring it needs runs against a real model, "
        "and these machines have no network. The agent loop counts every cost that comparison needs (model "
        "tokens, tool calls, bytes read per agent); see `docs/agent.md`.",
    ]
    for result in doc.get("benchmarks", []):
        lines += ["", f"## {result.get('title', result['benchmark'])}", ""]
        if "error" in result:
            lines += [f"This benchmark did not complete: {result['error']}", ""]
            continue
        bench = BENCHMARKS.get(result["benchmark"])
        lines += [result.get("description", ""), ""]
        args = " ".join(result["workload"]["args"])
        if bench is not None and bench.tool:
            lines += [
                f"Real tool: **{bench.tool}**"
                + (f", from Debian stable ({', '.join(f'`{p}`' for p in bench.packages)})" if bench.packages else "")
                + (f"; source: Debian's `{'`, `'.join(bench.sources)}` source package" if bench.sources else "")
                + ". The guest wrapper `schedcp_workloads.realtool` starts it and reads the tool's own report; "
                "it adds the guest's context switches (`/proc/stat` ctxt) and the CPU time the tool used.",
                "",
            ]
        lines += [
            f"Workload: `python3 -m schedcp_workloads.{result['workload']['module']} {args}`"
            + (
                " (plus a per-round `--seed`, the same for every policy in a round)"
                if result["workload"].get("seeded")
                else ""
            )
            + f"; {result.get('runs')} runs per policy"
            + (f", measured from {result['started_at']}" if result.get("started_at") else "")
            + ".",
            "",
        ]
        if result["benchmark"] in images:
            lines += [f"![{result['benchmark']}]({images[result['benchmark']]})", ""]
        lines += [_md_table(benchmark_table(result, all_metrics=True)), ""]
        verdict = evaluation_line(result)
        if verdict:
            lines += [f"**{verdict}**", ""]
        noise = noise_line(result)
        if noise:
            lines += [noise, ""]
        if result.get("guest_crashes"):
            lines += [
                f"The guest crashed {len(result['guest_crashes'])} time(s) during this benchmark (a known "
                "multi-threaded TCG problem when sched_ext patches static branches on attach/detach); each "
                "time the harness rebooted it and repeated the interrupted run.",
                "",
            ]
        paired = paired_lines(result)
        if paired:
            lines += [
                "Round by round (each policy against the EEVDF run of the same round): " + "; ".join(paired) + ".",
                "",
            ]
        if bench is not None and bench.rationale:
            lines += [bench.rationale, ""]
        bounds = batch_bounds(result)
        if bounds:
            lines += [bounds, ""]
        for arm in result["arms"]:
            errors = result["summary"].get(arm["name"], {}).get("errors", [])
            for err in errors:
                lines.append(f"- `{arm['name']}`: {err}")
        policies = [a for a in result["arms"] if a.get("kind") == "sched_ext"]
        if policies:
            lines += [
                "",
                "Policies: "
                + "; ".join(
                    f"`{a['name']}`"
                    + (f" {a['config']}" if a.get("config") else "")
                    + (f" — {a['title']}" if a.get("title") else "")
                    for a in policies
                )
                + ".",
                "",
            ]
    lines += [
        "## Method details",
        "",
        "- Harness: `schedcp bench` (`src/schedcp/bench/harness.py`); statistics in `src/schedcp/bench/stats.py`.",
        "- Rounds: one warm-up run under EEVDF, then each round runs every arm once in a rotated order.",
        "- A policy run counts only if sched_ext stayed `enabled` with the same scheduler and the same "
        "`enable_seq` for the whole run and the kernel logged no `disabled` event; otherwise it is "
        "listed as `ejected` with the kernel's reason.",
        "- Seeded workloads (the batch) use the same seed for every arm within a round, so the long job "
        "is at the same hidden position for every policy in that round.",
        "- Real tools run through `schedcp_workloads.realtool`, which starts the tool, parses its report "
        "(`src/schedcp/bench/guest/toolparse.py`) and counts the guest's context switches (`/proc/stat` "
        "ctxt, the whole guest) and the tool's CPU time (getrusage of its processes). Packages come from "
        "Debian stable with `--package` semantics (`src/schedcp/testbed/extras.py`).",
        "- Raw results, every run included: `benchmarks/results/latest.json`.",
        "",
    ]
    return "\n".join(lines)


def write_docs(doc: dict[str, Any], repo: Path, command: str = REGENERATE) -> dict[str, Path]:
    """docs/benchmarks.md, one chart per benchmark in docs/img/, raw JSON in benchmarks/results/."""
    img_dir = repo / "docs" / "img"
    images: dict[str, str] = {}
    written: dict[str, Path] = {}
    for result in doc.get("benchmarks", []):
        if "summary" in result:
            path = plot.plot_benchmark(result, img_dir / f"bench-{result['benchmark']}.png")
            images[result["benchmark"]] = f"img/{path.name}"
            written[result["benchmark"]] = path
    if images:
        overview = plot.plot_suite(doc, img_dir / "bench-overview.png")
        images["overview"] = f"img/{overview.name}"
        written["overview"] = overview
    page = repo / "docs" / "benchmarks.md"
    page.write_text(render_markdown(doc, images, command))
    raw = repo / "benchmarks" / "results" / "latest.json"
    raw.parent.mkdir(parents=True, exist_ok=True)
    raw.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    written["page"] = page
    written["json"] = raw
    return written
