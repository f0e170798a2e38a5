# SPDX-License-Identifier: Apache-2.0
"""Run a real benchmark tool in the guest and report its own numbers as a SchedCP result line.

    python3 -m schedcp_workloads.realtool hackbench -- -g 4 -f 10 -l 200
    python3 -m schedcp_workloads.realtool cyclictest --hogs 2 -- -t 2 -i 1000 -D 5
    python3 -m schedcp_workloads.realtool build --source /work/src/lua5.4 --jobs 4 -- posix

The tool does the work and the measuring; this wrapper only starts it, parses what it prints
(toolparse), and adds the CPU time the tool's processes used (the harness counts the guest's
context switches around every run). Under emulation a context switch costs far more than on
hardware, so a policy that switches less can look better than its ordering alone would make it.

Scenarios: ``hackbench``, ``perf`` (perf bench ...), ``stress-ng``, ``sysbench``, ``cyclictest`` (with
``--hogs N`` stress-ng CPU hogs beside it, whose throughput is reported too), and ``build`` (make
-jN over a copy of a real source tree; the built program must run).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

try:
    from . import toolparse
except ImportError:  # run as a file
    import toolparse  # type: ignore[no-redef]

TOOLS = {"hackbench": "hackbench", "perf": "perf", "stress-ng": "stress-ng", "sysbench": "sysbench"}


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(argv: list[str], timeout: float, cwd: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd)


def scenario_tool(tool: str, args: list[str], timeout: float) -> tuple[dict[str, float], list[str], str]:
    proc = run([TOOLS[tool], *args], timeout)
    text = proc.stdout + "\n" + proc.stderr
    metrics = toolparse.parse(tool, text)
    errors = []
    if proc.returncode != 0:
        errors.append(f"{tool} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    if not metrics:
        errors.append(f"no metrics in {tool}'s output: {text.strip()[-300:]}")
    return metrics, errors, text


def scenario_cyclictest(hogs: int, args: list[str], timeout: float) -> tuple[dict[str, float], list[str], str]:
    """cyclictest's timer threads (SCHED_OTHER, so the policy under test schedules them) beside
    stress-ng CPU hogs; wakeup latency percentiles from the histogram, and the hogs' throughput."""
    errors: list[str] = []
    tmp = tempfile.mkdtemp(prefix="cyclic-")
    hist = os.path.join(tmp, "hist")
    hog_proc = None
    hog_out = ""
    if hogs:
        # The hogs outlive cyclictest by a margin; they are stopped (SIGINT: stress-ng then reports).
        hog_proc = subprocess.Popen(
            ["stress-ng", "--cpu", str(hogs), "--cpu-method", "int64", "--metrics-brief", "--timeout", "600s"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        time.sleep(0.5)  # let the hogs start before the latency measurement does
    try:
        proc = run(["cyclictest", "-q", "-m", "--histogram=50000", f"--histfile={hist}", *args], timeout)
    finally:
        if hog_proc is not None:
            hog_proc.send_signal(2)
            try:
                hog_out, _ = hog_proc.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                hog_proc.kill()
                hog_out, _ = hog_proc.communicate()
    text = proc.stdout + "\n" + proc.stderr
    metrics = toolparse.cyclictest(text)
    try:
        with open(hist) as fh:
            metrics.update(toolparse.histogram_percentiles(fh.read()))
    except OSError as exc:
        errors.append(f"no histogram: {exc}")
    shutil.rmtree(tmp, ignore_errors=True)
    if hog_out:
        hog = toolparse.stress_ng(hog_out)
        if "cpu_bogo_ops_per_s" in hog:
            metrics["hog_bogo_ops_per_s"] = hog["cpu_bogo_ops_per_s"]
        else:
            errors.append(f"no metrics from the hogs: {hog_out.strip()[-200:]}")
    if proc.returncode != 0:
        errors.append(f"cyclictest exited {proc.returncode}: {proc.stderr.strip()[-300:]}")
    if "wake_p99_us" not in metrics:
        errors.append(f"no latency histogram in cyclictest's output: {text.strip()[-300:]}")
    return metrics, errors, text + "\n" + hog_out


def scenario_build(
    source: str, jobs: int, program: str, args: list[str], timeout: float
) -> tuple[dict[str, float], list[str], str]:
    """make -jJOBS over a fresh copy of `source`; the program it builds must then run."""
    errors: list[str] = []
    work = tempfile.mkdtemp(prefix="build-")
    tree = os.path.join(work, "src")
    shutil.copytree(source, tree, symlinks=True)
    t0 = time.monotonic()
    proc = run(["make", f"-j{jobs}", *args], timeout, cwd=tree)
    build_s = time.monotonic() - t0
    text = proc.stdout[-4000:] + "\n" + proc.stderr[-4000:]
    metrics = {"build_s": round(build_s, 4)}
    if proc.returncode != 0:
        errors.append(f"make exited {proc.returncode}: {proc.stderr.strip()[-400:]}")
    elif program:
        check = subprocess.run(
            [os.path.join(tree, program), "-e", "print(6*7)"], capture_output=True, text=True, timeout=60
        )
        if check.stdout.strip() != "42":
            errors.append(f"the built {program} did not run correctly: {check.stdout[-100:]} {check.stderr[-200:]}")
    shutil.rmtree(work, ignore_errors=True)
    return metrics, errors, text


def main(argv: list[str] | None = None) -> int:
    raw = list(sys.argv[1:] if argv is None else argv)
    tool_args: list[str] = []
    if "--" in raw:
        i = raw.index("--")
        raw, tool_args = raw[:i], raw[i + 1 :]
    ap = argparse.ArgumentParser(prog="realtool")
    ap.add_argument("scenario", choices=[*TOOLS, "cyclictest", "build"])
    ap.add_argument("--hogs", type=int, default=0, help="cyclictest: stress-ng CPU hogs beside it")
    ap.add_argument("--source", default="", help="build: the source tree to copy and build")
    ap.add_argument("--jobs", type=int, default=4, help="build: make -j")
    ap.add_argument("--program", default="", help="build: the built program to check (relative path)")
    ap.add_argument("--timeout", type=float, default=900.0)
    opts = ap.parse_args(raw)
    cpu0, t0 = children_cpu_s(), time.monotonic()
    if opts.scenario == "cyclictest":
        metrics, errors, _text = scenario_cyclictest(opts.hogs, tool_args, opts.timeout)
    elif opts.scenario == "build":
        metrics, errors, _text = scenario_build(opts.source, opts.jobs, opts.program, tool_args, opts.timeout)
    else:
        metrics, errors, _text = scenario_tool(opts.scenario, tool_args, opts.timeout)
    metrics.update({"wall_s": round(time.monotonic() - t0, 4), "cpu_s": round(children_cpu_s() - cpu0, 3)})
    result = {
        "workload": "realtool",
        "tool": opts.scenario,
        "argv": tool_args,
        "ok": not errors,
        "errors": errors,
        "metrics": metrics,
    }
    print(json.dumps(result, separators=(",", ":")))
    return 0 if not errors else 1


if __name__ == "__main__":
    sys.exit(main())
