# SPDX-License-Identifier: Apache-2.0
"""An installed scheduler binary deployed and benchmarked like our own policies, in the micro-VM.

The upstream binaries (scx_rusty, scx_lavd, ...) cannot be built here, so the stand-in is the
kernel's own userspace loader for its scx_simple example (``tools/sched_ext/scx_simple.c``, built
against its skeleton and libbpf 1.5): a real program that takes flags (``-f``), loads and attaches
its BPF scheduler itself, stays attached until SIGINT and detaches on exit, like scx_rusty. It is
the program the repository's ``scx_simple`` catalog entry describes. It is installed in a
root-owned directory that the daemon's config names (``external_path``), and the daemon copies it
into its VM node as it would be installed on a host.

Two boots: ``schedcp bench`` compares it with EEVDF in its own micro-VM; then a ``--node vm``
daemon deploys it through the real CLI (refusals first), a second configuration replaces it, the
process of the second is killed in the guest, the breaker trips on the process exit and restores
the first (the binary started again with its flags), and a rollback leaves the kernel's default."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from schedcp.deploy.testing import CONFIG, EXE, Daemon, build_scx_example

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="schedcp-external-"))
    root.chmod(0o755)
    (root / "bin").mkdir(mode=0o755)
    build_scx_example("scx_simple", root / "bin")
    try:
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_bench_compares_the_installed_binary_with_eevdf_in_one_boot(root: Path):
    out = root / "bench.json"
    argv = [EXE, "bench", "hackbench", "--smoke", "--runs", "1", "-p", "external:scx_simple"]
    argv += ["-c", "external:scx_simple:fifo=true", "--external-path", str(root / "bin"), "--json", "-o", str(out)]
    run = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    bench = json.loads(out.read_text())["benchmarks"][0]
    arms = {a["name"]: a for a in bench["arms"]}
    assert arms["scx_simple"]["kind"] == "external" and arms["scx_simple"]["argv"] == ["scx_simple", "-f"]
    records = {r["arm"]: r for r in bench["records"] if r.get("round") == 0}
    assert records["eevdf"]["status"] == "ok" and "ops" not in records["eevdf"]
    # The workload ran while the binary's scheduler was enabled under its own ops, and it stayed.
    mine = records["scx_simple"]
    assert mine["status"] == "ok" and mine["ops"] == "simple" and "counters" in mine, mine
    assert bench["summary"]["scx_simple"]["metrics"]["time_s"]["paired_improvement"] > 0


@pytest.fixture(scope="module")
def daemon(root: Path) -> Iterator[Daemon]:
    config = CONFIG.replace("window_s = 6", "window_s = 3")
    config += f'external_allow = ["scx_simple"]\nexternal_path = ["{root / "bin"}"]\n'
    d = Daemon(root / "daemon", config=config)
    d.root.mkdir(mode=0o755)
    d.start()
    try:
        yield d
    finally:
        d.kill(signal.SIGTERM)


def _refusal(d: Daemon, *args: str) -> dict[str, Any]:
    answer = d.json("deploy", *args, ok=False)
    assert answer.get("cause") and answer.get("next_step"), answer
    return dict(answer)


def _cmdline(d: Daemon) -> str:
    """The running scx_simple's argv in the guest ('' when none runs)."""
    out = d.json("node", "run", "--", "sh", "-c", 'p=$(pidof scx_simple) && tr "\\0" " " < /proc/$p/cmdline', ok=None)
    return str(out.get("stdout", "")).strip()


def _deploy(d: Daemon, *config: str) -> str:
    args = ["--external", "scx_simple", "--all-tasks"] + [x for c in config for x in ("--config", c)]
    dep = d.json("deploy", *args)
    assert dep["state"] == "token_checked" and dep["artefact"]["kind"] == "external", dep
    return str(dep["id"])


def test_deploy_trip_on_process_exit_restores_the_last_known_good_then_rollback_to_default(daemon: Daemon):
    # Refused before anything runs: a canary it cannot run, a binary not allowed, an undeclared flag.
    assert _refusal(daemon, "--external", "scx_simple", "--canary-comm", "^x$")["error"] == "external_no_partial"
    assert _refusal(daemon, "--external", "scx_central", "--all-tasks")["error"] == "external_not_allowed"
    bad = _refusal(daemon, "--external", "scx_simple", "--all-tasks", "--config", "verbose=1")
    assert bad["error"] == "external_bad_config"

    # The first deployment: scx_simple -f on all tasks; after the window it is the last known good.
    first = _deploy(daemon, "fifo=true")
    status = daemon.wait_for(
        "scx_simple -f as the last known good",
        lambda s: s["last_known_good"].get("deployment_id") == first and s["node"]["ops"] == "simple",
    )
    assert status["node"]["state"] == "enabled" and status["node"]["switch_all"] == 1
    assert _cmdline(daemon) == "scx_simple -f"

    # The second replaces it (another configuration, so another artefact), all tasks at once.
    second = _deploy(daemon)
    daemon.wait_for("the second running", lambda s: (s.get("active") or {}).get("id") == second)
    assert _cmdline(daemon) == "scx_simple"

    # Its process dies: the breaker trips on the exit and starts the last known good again.
    assert daemon.cli("node", "run", "--", "sh", "-c", "kill -9 $(pidof scx_simple)").returncode == 0
    status = daemon.wait_for("the trip", lambda s: any(t["deployment_id"] == second for t in s["trips"]))
    trip = next(t for t in status["trips"] if t["deployment_id"] == second)
    assert trip["signal"] == "process_exit" and "scx_simple exited (signal 9)" in trip["reason"], trip
    assert trip["restored_to"] == "scx_simple" and trip["restore_error"] is None, trip
    status = daemon.wait_for("the first running again", lambda s: s["node"]["ops"] == "simple")
    assert (status.get("active") or {}).get("id") == first and _cmdline(daemon) == "scx_simple -f"
    # The tripped configuration of the same binary is refused until something changes.
    assert _refusal(daemon, "--external", "scx_simple", "--all-tasks")["error"] == "artefact_refused"

    story = daemon.json("audit", "--deployment", second)[0]
    assert story["deployment"]["artefact"]["kind"] == "external"
    assert story["deployment"]["state"] == "rolled_back" and story["trips"][0]["signal"] == "process_exit"
    text = daemon.cli("status").stdout
    assert "installed binary scx_simple" in text, text

    # A rollback of the first restores what came before it: the kernel's default, nothing left running.
    assert daemon.cli("rollback").returncode == 0
    status = daemon.status()
    assert status["node"]["state"] == "disabled" and status["last_known_good"].get("artefact") is None
    assert _cmdline(daemon) == ""
