# SPDX-License-Identifier: Apache-2.0
"""Benchmark the Execution Verifier: stage wall times, detection rate and false-positive rate.

    .venv/bin/python benchmarks/verifier.py            # whole corpus + library, writes docs/verifier.md
    .venv/bin/python benchmarks/verifier.py --only dsq_typo,vtime --no-write

Corpus: tests/corpus/bad/*.bpf.c (each says `/* expect: STAGE RULE */`), tests/corpus/good/*.bpf.c, and
the library schedulers by name (they live in src/schedcp/schedulers/library and are not copied).
A bad scheduler counts as *detected* when the verdict is fail, and as *attributed* when the first
failing stage is the expected one and reports the expected rule. A good scheduler that fails is a
false positive. Runs one scheduler at a time (the machine has two cores and each VM wants both).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO / "tests" / "corpus"
DOC = REPO / "docs" / "verifier.md"
LIBRARY_NAMES = ("fifo", "vtime", "latency", "sjf", "ljf", "edf", "central", "locality", "layered")
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
RULES_BEGIN, RULES_END = "<!-- rules:begin -->", "<!-- rules:end -->"


def corpus(only: set[str] | None) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for path in sorted((CORPUS / "bad").glob("*.bpf.c")):
        m = re.search(r"/\*\s*expect:\s*(\S+)\s+(\S+)\s*\*/", path.read_text())
        assert m, path
        entries.append(
            {
                "name": path.name.removesuffix(".bpf.c"),
                "target": str(path),
                "kind": "bad",
                "expect_stage": m.group(1),
                "expect_rule": m.group(2),
            }
        )
    for path in sorted((CORPUS / "good").glob("*.bpf.c")):
        entries.append({"name": path.name.removesuffix(".bpf.c"), "target": str(path), "kind": "good"})
    for name in LIBRARY_NAMES:
        entries.append({"name": f"library:{name}", "target": name, "kind": "good"})
    return [e for e in entries if only is None or e["name"].removeprefix("library:") in only]


def run_one(entry: dict[str, Any], key: Path) -> dict[str, Any]:
    from schedcp.errors import SchedcpError
    from schedcp.verifier.pipeline import VerifyOptions, verify

    t0 = time.monotonic()
    try:
        report = verify(VerifyOptions(target=entry["target"], key_path=key))
    except SchedcpError as exc:
        return {**entry, "verdict": "error", "error": str(exc), "wall_s": round(time.monotonic() - t0, 2)}
    failed = [s for s in report.stages if s.status == "failed"]
    first = failed[0] if failed else None
    errors = [f.id for f in first.findings if f.severity == "error"] if first else []
    out = {
        **entry,
        "verdict": report.verdict,
        "failed_stage": first.name if first else None,
        "errors": errors,
        "reason": report.reason[:200],
        "timings": report.timings,
        "token": bool(report.token),
        "guest_crashes": report.metrics.get("guest_crashes", []),
        "wall_s": round(time.monotonic() - t0, 2),
        "warnings": sorted({f.id for f in report.findings if f.severity == "warning"}),
        "metrics": {k: report.metrics.get(k) for k in ("scheduler", "eevdf")},
    }
    if entry["kind"] == "bad":
        out["detected"] = report.verdict == "fail"
        out["attributed"] = out["failed_stage"] == entry["expect_stage"] and entry["expect_rule"] in errors
    else:
        out["false_positive"] = report.verdict != "pass"
    return out


def _stat(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{statistics.median(values):.1f} / {max(values):.1f}"


def render(results: list[dict[str, Any]], meta: dict[str, Any]) -> str:
    bad = [r for r in results if r["kind"] == "bad"]
    good = [r for r in results if r["kind"] == "good"]
    lines = [
        BEGIN,
        "",
        f"Measured {meta['date']} on {meta['host']} ({meta['cpus']} CPUs, QEMU TCG, "
        f"load average {meta['load_before']:.1f} at the start: other VMs were running), kernel "
        f"`{meta['kernel']}`, {meta['seconds']:g} s load, {meta['watchdog_ms']} ms watchdog. "
        f"Benchmark wall time {meta['wall_s'] / 60:.1f} min.",
        "",
    ]
    detected = sum(r.get("detected", False) for r in bad)
    attributed = sum(r.get("attributed", False) for r in bad)
    fps = sum(r.get("false_positive", False) for r in good)
    lines += [
        "| | count | rate |",
        "|---|---|---|",
        f"| bad schedulers detected (verdict fail) | {detected}/{len(bad)} | {detected / max(len(bad), 1):.0%} |",
        f"| … caught by the expected stage and rule | {attributed}/{len(bad)} | {attributed / max(len(bad), 1):.0%} |",
        f"| good schedulers failed (false positives) | {fps}/{len(good)} | {fps / max(len(good), 1):.0%} |",
        "",
    ]
    stages = ("build", "static", "vm_boot", "kernel_verifier", "dynamic", "performance", "total")
    lines += [
        "Wall time per stage in seconds (median / max over the runs that reached the stage):",
        "",
        "| stage | runs | median / max |",
        "|---|---|---|",
    ]
    for stage in stages:
        values = [r["timings"][stage] for r in results if stage in r.get("timings", {})]
        lines.append(f"| {stage} | {len(values)} | {_stat(values)} |")
    full = [r["timings"]["total"] for r in results if "performance" in r.get("timings", {})]
    lines += ["", f"End to end for schedulers that ran all five stages: {_stat(full)} s (median / max).", ""]
    lines += [
        "Bad corpus (`tests/corpus/bad`):",
        "",
        "| scheduler | expected | verdict | failed at | rules | ok |",
        "|---|---|---|---|---|---|",
    ]
    for r in bad:
        ok = "yes" if r.get("attributed") else ("detected" if r.get("detected") else "**missed**")
        lines.append(
            f"| {r['name']} | {r['expect_stage']} / {r['expect_rule']} | {r['verdict']} | "
            f"{r.get('failed_stage') or '–'} | {', '.join(r.get('errors', [])) or '–'} | {ok} |"
        )
    lines += [
        "",
        "Good schedulers (`tests/corpus/good` and the library by name):",
        "",
        "| scheduler | verdict | token | total s | warnings | CPU use sched / EEVDF |",
        "|---|---|---|---|---|---|",
    ]
    for r in good:
        m = r.get("metrics") or {}
        busy = ((m.get("scheduler") or {}).get("cpu_busy"), (m.get("eevdf") or {}).get("cpu_busy"))
        busy_text = f"{busy[0]:.2f} / {busy[1]:.2f}" if None not in busy else "–"
        verdict = r["verdict"] if r["verdict"] == "pass" else f"**{r['verdict']}**: {r.get('reason', '')[:90]}"
        lines.append(
            f"| {r['name']} | {verdict} | {'yes' if r.get('token') else 'no'} | "
            f"{r.get('timings', {}).get('total', 0):.1f} | {', '.join(r.get('warnings', [])) or '–'} | "
            f"{busy_text} |"
        )
    crashes = [(r["name"], c) for r in results for c in r.get("guest_crashes", [])]
    if crashes:
        lines += [
            "",
            f"Guest kernel crashes retried automatically: {len(crashes)} "
            f"({'; '.join(f'{n}: {c[:80]}' for n, c in crashes[:5])}).",
        ]
    lines += ["", END]
    return "\n".join(lines)


def rules_table() -> str:
    from schedcp.verifier.static.rules import catalogue

    rows = [RULES_BEGIN, "", "| rule | default severity | catches |", "|---|---|---|"]
    rows += [f"| `{r['id']}` | {r['severity']} | {r['description'].replace('|', chr(92) + '|')} |" for r in catalogue()]
    return "\n".join([*rows, "", RULES_END])


def replace_block(text: str, begin: str, end: str, block: str) -> str:
    if begin not in text:
        return text + f"\n{block}\n"
    head, _, rest = text.partition(begin)
    _, _, tail = rest.partition(end)
    return head + block + tail


def write_doc(section: str) -> None:
    text = DOC.read_text() if DOC.exists() else "# Execution Verifier\n"
    text = replace_block(text, RULES_BEGIN, RULES_END, rules_table())
    DOC.write_text(replace_block(text, BEGIN, END, section))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated corpus/library names")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/verifier.md")
    parser.add_argument("--json", type=Path, help="also write raw results here")
    parser.add_argument("--from-json", type=Path, help="render earlier raw results instead of running")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(args.from_json.read_text())
        section = render(saved["results"], saved["meta"])
        if not args.no_write:
            write_doc(section)
        print(section)
        return 0
    from schedcp.testbed import kernel as kernel_mod
    from schedcp.verifier.vmstages import DEFAULT_TIMEOUT_MS

    entries = corpus(set(args.only.split(",")) if args.only else None)
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "host": platform.node() or "host",
        "cpus": os.cpu_count(),
        "load_before": os.getloadavg()[0],
        "kernel": kernel_mod.cached().release,
        "seconds": 5.0,
        "watchdog_ms": DEFAULT_TIMEOUT_MS,
    }
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        key = Path(tmp) / "bench_key"
        for entry in entries:
            result = run_one(entry, key)
            results.append(result)
            mark = result.get("attributed", not result.get("false_positive", False))
            print(
                f"{entry['name']:<24} {result['verdict']:<5} {result.get('failed_stage') or '':<16} "
                f"{','.join(result.get('errors', []))[:60]:<60} {result['wall_s']:6.1f}s {'ok' if mark else 'XX'}",
                flush=True,
            )
    meta["wall_s"] = time.monotonic() - started
    if args.json:
        args.json.write_text(json.dumps({"meta": meta, "results": results}, indent=2))
    section = render(results, meta)
    if not args.no_write:
        write_doc(section)
    print(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
