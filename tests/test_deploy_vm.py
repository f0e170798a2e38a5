# SPDX-License-Identifier: Apache-2.0
"""Deployments end to end against a real daemon that owns a real micro-VM node (one boot for the
module, plus one for the restart test): token-gated deploys, the canary, promotion, the circuit
breaker on an error exit, a slowed canary metric and a watchdog stall, the crash-loop cap, bad
tokens of every class, an unprivileged client, and reconcile after a daemon crash.

Every command goes through the real CLI and the daemon socket. The first token comes from the
daemon's own verification (the real pipeline, a second VM); the policies that fail only in
production get theirs from the real signing code with the daemon's key (the test is root, like
the daemon), because the verifier would pass them by design and every pass costs a VM boot."""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from schedcp.daemon.client import DaemonClient
from schedcp.deploy.testing import NOBODY, WORKLOAD, Daemon

pytestmark = pytest.mark.vm

# The good policy: the verifier's own known-good corpus scheduler (its ops are named hfifo).
GOOD, GOOD_OPS = "header_fifo", "hfifo"


@pytest.fixture(scope="module")
def daemon() -> Iterator[Daemon]:
    root = Path(tempfile.mkdtemp(prefix="schedcp-deploy-"))
    root.chmod(0o755)  # the unprivileged client must reach the socket
    d = Daemon(root)
    d.start()
    try:
        out = d.cli("node", "run", "--", "sh", "-c", WORKLOAD)
        assert out.returncode == 0, out.stderr
        yield d
    finally:
        d.kill(signal.SIGTERM)
        shutil.rmtree(root, ignore_errors=True)


def _story(d: Daemon, dep_id: str) -> dict[str, Any]:
    return d.json("audit", "--deployment", dep_id)[0]


def test_node_run_puts_workloads_on_the_vm_node(daemon: Daemon):
    out = daemon.json("node", "run", "--", "sh", "-c", "pidof lag-work | wc -w; uname -r")
    assert out["exit_code"] == 0
    count, release = out["stdout"].split()
    assert count == "2" and "cloud-amd64" in release
    failing = daemon.cli("node", "run", "--", "sh", "-c", "exit 7")
    assert failing.returncode == 7


def _good_token(daemon: Daemon) -> str:
    """header_fifo verified by the daemon itself (the real pipeline, in its own micro-VM), once."""
    if "token_id" not in daemon.notes:
        source = (Path(__file__).resolve().parent / "corpus" / "good" / "header_fifo.bpf.c").read_text()
        with DaemonClient(daemon.socket) as client:
            verified = client.verify(source, "header_fifo.bpf.c", kernel="unstable")
        assert verified["report"]["verdict"] == "pass", verified["report"]["reason"]
        daemon.notes["token_id"] = verified["token_id"]
    return str(daemon.notes["token_id"])


@contextmanager
def _lag_work_stopped(daemon: Daemon) -> Iterator[None]:
    """The fixture's busy lag-work processes, stopped: partial mode ranks the ext class below the fair
    class, so a trial's workload would only get the CPUs they leave (none). They stay as unrelated
    processes whose scheduling policy the trial must not touch."""
    assert daemon.cli("node", "run", "--", "sh", "-c", "kill -STOP $(pidof lag-work)").returncode == 0
    try:
        yield
    finally:
        daemon.cli("node", "run", "--", "sh", "-c", "kill -CONT $(pidof lag-work)")


# Every task in the guest as "policy uid comm", after sched_ext's "state ops switch_all".
TASKS = (
    "echo $(cat /sys/kernel/sched_ext/state) $(cat /sys/kernel/sched_ext/root/ops) "
    "$(cat /sys/kernel/sched_ext/switch_all); for f in /proc/[0-9]*; do "
    "p=$(awk '/^policy/{print $3}' $f/sched 2>/dev/null); u=$(awk '/^Uid:/{print $2}' $f/status 2>/dev/null); "
    'c=$(cat $f/comm 2>/dev/null); [ -n "$p" ] && echo "$p $u $c"; done'
)
TRIAL_WORK = (
    "echo -n trial-work > /proc/self/comm; end=$(($(date +%s) + 8)); while [ $(date +%s) -lt $end ]; do :; done; id -u"
)


def test_trial_arm_on_the_daemons_node_switches_only_the_workloads_tasks(daemon: Daemon):
    from schedcp.errors import SchedcpError
    from schedcp.trial.models import Policy
    from schedcp.trial.node import DaemonNode
    from schedcp.trial.rounds import Arm

    token_id = _good_token(daemon)
    with DaemonClient(daemon.socket) as client:
        # The node loads only what the daemon verified: an id it never issued is refused before anything.
        with pytest.raises(SchedcpError) as unknown:
            client.call("trial_arm", {"name": "x", "token_id": "f" * 24, "argv": ["true"], "timeout_s": 5})
        assert unknown.value.code == "token_unknown"
        with pytest.raises(SchedcpError) as too_long:
            client.call("trial_arm", {"name": "x", "argv": ["true"], "timeout_s": 7200})
        assert too_long.value.code == "usage"
    arm = Arm(GOOD, Policy(name=GOOD, object_path=Path("/never/sent"), token_id=token_id))
    node = DaemonNode(DaemonClient(daemon.socket))
    done: dict[str, Any] = {}
    seen: list[str] = []
    with _lag_work_stopped(daemon):
        worker = threading.Thread(
            target=lambda: done.update(
                rec=node.run_arm(arm, ["sh", "-c", TRIAL_WORK], timeout_s=120, watchdog_ms=10000, partial=True)
            )
        )
        worker.start()
        deadline = time.monotonic() + 240
        while worker.is_alive() and time.monotonic() < deadline:  # look while the arm runs
            lines = daemon.json("node", "run", "--", "sh", "-c", TASKS)["stdout"].splitlines()
            if lines and lines[0] == f"enabled {GOOD_OPS} 0" and any(ln.endswith(" trial-work") for ln in lines):
                seen = lines
                break
        worker.join(300)
    rec = done["rec"]
    assert rec.status == "ok" and rec.ops_name == GOOD_OPS and rec.stayed, (rec.status, rec.error)
    workload_uid = rec.run.stdout.split()[-1]
    assert workload_uid != "0", "the workload never runs as root"
    assert seen, "the probe never caught the policy attached with the workload running"
    tasks = [ln.split(" ", 2) for ln in seen[1:]]
    switched = [t for t in tasks if t[0] == "7"]
    # During the trial: the workload's tasks (its uid) are SCHED_EXT, every other task is not;
    # lag-work (root, unrelated) keeps SCHED_NORMAL.
    assert any(t[2] == "trial-work" for t in switched), seen
    assert all(t[1] == workload_uid for t in switched), switched
    assert [t[0] for t in tasks if t[2] == "lag-work"] == ["0", "0"], seen
    # After: detached, the kernel's default scheduler again, and nothing left of the workload.
    assert daemon.status()["node"]["state"] == "disabled"
    after = daemon.json("node", "run", "--", "sh", "-c", TASKS)["stdout"]
    assert "trial-work" not in after


def test_optimize_target_daemon_measures_on_the_daemons_node(daemon: Daemon, tmp_path: Path):
    env = {"SCHEDCP_DATA_DIR": str(tmp_path / "data")}
    local = daemon.cli("optimize", "--target", "local", "--demo", "--json", env=env)
    assert local.returncode != 0 and "--target daemon" in local.stdout + local.stderr, local.stdout + local.stderr
    with _lag_work_stopped(daemon):
        out = daemon.cli(
            "optimize",
            "--target",
            "daemon",
            "--workload",
            "longtail",
            "--workload-arg=--tasks",
            "--workload-arg=8",
            # throughput: the planner tries vtime first, which the verifier passes (makespan's
            # ljf_batch lets short tasks wait past the dynamic stage's 2 s bound and is refused
            # there, so it never reaches the node: the gate this path rests on).
            "--goal",
            "throughput",
            "--iterations",
            "1",
            "--rounds",
            "1",
            "--json",
            env=env,
            timeout=900,
        )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    doc = json.loads(out.stdout)
    trial = doc["iterations"][0]["execution"]["trial"]
    assert trial["ok"], json.dumps(doc["iterations"][0]["execution"])[-3000:]
    assert trial["boot_id"] and trial["same_boot"]  # the daemon's node: one boot all along
    with DaemonClient(daemon.socket) as client:
        entries = client.audit_tail(300)
    names = {"eevdf", trial_policy(doc)}
    arms = [e for e in entries if e["event"] == "trial_arm" and e["phase"] == "end" and e["fields"].get("arm") in names]
    assert {e["fields"]["arm"] for e in arms} == names and all(e["outcome"] == "ok" for e in arms), arms
    # The candidate's arm names the token of a verification this daemon passed: nothing else loads.
    passed = {e["fields"].get("token_id") for e in entries if e["event"] == "verify" and e["phase"] == "end"}
    policy_arms = [e for e in arms if e["fields"].get("arm") == trial_policy(doc)]
    assert policy_arms and all(e["fields"]["token_id"] in passed - {None} for e in policy_arms)
    assert daemon.status()["node"]["state"] == "disabled"


def trial_policy(doc: dict[str, Any]) -> str:
    return str(doc["iterations"][0]["execution"]["candidate"]["policy"])


def test_verified_policy_goes_canary_then_promoted(daemon: Daemon):
    token_id = _good_token(daemon)
    dep = daemon.json("deploy", token_id, "--canary-comm", "^lag-work$", "--goal", "cpu_rate")
    # During the window only the canary's tasks are switched: partial mode, the kernel says so.
    canary = daemon.wait_for("the canary", lambda s: (s.get("active") or {}).get("state") == "canary")
    assert canary["node"]["ops"] == GOOD_OPS and canary["node"]["switch_all"] == 0
    assert canary["active"]["canary_tasks"] >= 2
    promoted = daemon.wait_for("promotion", lambda s: (s.get("active") or {}).get("state") == "promoted")
    assert promoted["node"]["ops"] == GOOD_OPS and promoted["node"]["switch_all"] == 1
    assert promoted["last_known_good"]["deployment_id"] == dep["id"]
    states = [t["state"] for t in _story(daemon, dep["id"])["transitions"]]
    assert states == ["requested", "token_checked", "baseline", "canary", "promoted"]


def test_every_bad_token_class_is_refused_with_its_reason(daemon: Daemon):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    def refused(token: str, *extra: str) -> dict[str, Any]:
        out = daemon.cli("deploy", token, "--canary-comm", "^lag-work$", "--json", *extra)
        assert out.returncode == 1, out.stdout + out.stderr
        return json.loads(out.stdout)

    replayed = refused(daemon.notes["token_id"])
    assert replayed["error"] == "token_replayed"
    assert refused("f" * 24)["error"] == "token_unknown"
    forged = refused(daemon.sign("minimal", key=Ed25519PrivateKey.generate()))
    assert forged["error"] == "token_invalid"
    body, sig = daemon.sign("minimal").split(".")
    claims = json.loads(_unb64(body))
    claims["krn"] = "9.9.9-altered"
    assert (
        refused(f"{_b64(json.dumps(claims, sort_keys=True, separators=(',', ':')).encode())}.{sig}")["error"]
        == "token_invalid"
    )
    expired = refused(daemon.sign("minimal", now=time.time() - 7200, ttl_s=60))
    assert expired["error"] == "token_expired"
    wrong_kernel = refused(daemon.sign("minimal", kernel="6.19.14+deb13-cloud-amd64"))
    assert wrong_kernel["error"] == "token_mismatch" and "kernel" in wrong_kernel["cause"]
    other_config = refused(daemon.sign("fifo", config={"slice_us": 5000}), "--config", "slice_us=6000")
    assert other_config["error"] == "token_mismatch" and "configuration" in other_config["cause"]
    # Nothing changed on the node, and each refusal is on record with its reason.
    status = daemon.status()
    assert status["node"]["ops"] == GOOD_OPS and status["active"]["state"] == "promoted", status
    stories = daemon.json("audit")
    reasons = [s["deployment"]["reason"] for s in stories if s["deployment"]["state"] == "refused"]
    assert len(reasons) >= 7 and any("already used" in r for r in reasons)


def test_mcp_deploy_tools_reach_the_daemon_with_the_same_checks(daemon: Daemon):
    from schedcp.agent.client import SchedcpClient
    from schedcp.server.app import build_server
    from schedcp.services.state import ServerOptions, ServerState

    state = ServerState(ServerOptions(daemon_socket=daemon.socket))
    with SchedcpClient.in_memory(build_server(state), state) as client:
        status = client.call("deployment_status", {"history": 1})
        assert not status.is_error and status.data is not None, status.text
        assert status.data["status"]["node"]["ops"] == GOOD_OPS
        assert status.data["stories"][0]["deployment"]["state"] in ("promoted", "refused")
        unknown = client.call("deploy_scheduler", {"token_id": "e" * 24, "canary_comm": "^lag-work$"})
        assert unknown.is_error and "no token with id" in unknown.text, unknown.text
        two_targets = client.call("deploy_scheduler", {"token_id": "e" * 24, "canary_pid": 5, "canary_comm": "x"})
        assert two_targets.is_error and "exactly one" in two_targets.text
        # Installed binaries through the same tool: the daemon's operator allow-list decides (empty here).
        external = client.call("deploy_scheduler", {"external": "scx_rusty", "all_tasks": True})
        assert external.is_error and "external_allow" in external.text, external.text
        neither = client.call("deploy_scheduler", {"canary_comm": "^lag-work$"})
        assert neither.is_error and "exactly one of token_id, token and external" in neither.text, neither.text
        both = client.call("deploy_scheduler", {"token_id": "e" * 24, "external": "scx_rusty", "all_tasks": True})
        assert both.is_error and "exactly one of token_id, token and external" in both.text, both.text
    assert daemon.status()["node"]["ops"] == GOOD_OPS


def test_unprivileged_client_reads_status_but_cannot_deploy(daemon: Daemon):
    token = daemon.sign("comm_trap")
    daemon.notes["trap_token"] = token
    request = {"token": token, "canary": {"comm": "^lag-work$"}}
    refused = daemon.call_as(NOBODY, "deploy", request)
    assert refused["ok"] is False and refused["error"] == "forbidden", refused
    assert daemon.call_as(NOBODY, "rollback", {})["error"] == "forbidden"
    status = daemon.call_as(NOBODY, "deployment_status")
    assert status["ok"] and status["result"]["node"]["ops"] == GOOD_OPS
    assert daemon.status()["active"]["state"] == "promoted"


def test_policy_that_errors_in_production_is_rolled_back_and_refused_after(daemon: Daemon):
    # The token the unprivileged client tried is still unspent: the refusal happened before any check.
    dep = daemon.json(
        "deploy", daemon.notes["trap_token"], "--canary-comm", "^lag-work$", "--goal", "cpu_rate", "--wait"
    )
    assert dep["state"] == "promoted", dep
    assert daemon.status()["node"]["ops"] == "comm_trap"
    # The shell renames itself and waits for a child (a last command would be exec'd, dropping the name).
    daemon.cli("node", "run", "--", "sh", "-c", "echo -n trap-me > /proc/self/comm; sleep 0.3; echo woke")
    after = daemon.wait_for("the breaker", lambda s: s["trips"] and s["trips"][0]["deployment_id"] == dep["id"])
    trip = after["trips"][0]
    assert trip["signal"] == "error_exit" and "trap-me" in json.dumps(trip["kernel_events"])
    assert trip["restored_to"] == GOOD and trip["restore_error"] is None
    assert 0 < trip["restore_s"] < 30
    assert after["node"]["ops"] == GOOD_OPS and after["node"]["switch_all"] == 1
    # The workload recovers under the restored policy: its tasks get CPU again.
    probe = "for p in $(pidof lag-work); do cut -d' ' -f1 /proc/$p/schedstat; done; sleep 1; " * 2
    out = daemon.json("node", "run", "--", "sh", "-c", probe)
    runs = [int(x) for x in out["stdout"].split()]
    assert len(runs) == 4 and runs[2] + runs[3] - runs[0] - runs[1] > 3e8
    # Same object, configuration and kernel: refused until something changes.
    again = daemon.cli("deploy", daemon.sign("comm_trap"), "--canary-comm", "^lag-work$", "--json")
    assert again.returncode == 1 and json.loads(again.stdout)["error"] == "artefact_refused"


def test_policy_that_slows_the_canary_is_rolled_back_on_the_metric(daemon: Daemon):
    dep = daemon.json("deploy", daemon.sign("laggard"), "--canary-comm", "^lag-work$", "--wait", ok=False)
    assert dep["state"] == "rolled_back"
    story = _story(daemon, dep["id"])
    trip = story["trips"][0]
    assert trip["signal"] == "metric" and trip["phase"] == "canary"
    assert trip["threshold"]["metric"] == "wait_share"
    bad = [s["value"] for s in trip["samples"][-3:]]
    assert all(v > trip["threshold"]["limit"] for v in bad), trip
    assert trip["restored_to"] == GOOD
    assert daemon.status()["node"]["ops"] == GOOD_OPS


def test_stall_is_detected_and_the_crash_loop_cap_latches(daemon: Daemon):
    # A canary that sleeps through the baseline (so the breaker watches the kernel, not a metric)
    # and then wants a CPU: the stall scheduler never runs it, the kernel's watchdog ejects it.
    start = "setsid sh -c 'echo -n stall-canary > /proc/self/comm; sleep 20; while :; do :; done' >/dev/null 2>&1 &"
    assert daemon.cli("node", "run", "--", "sh", "-c", start).returncode == 0
    dep = daemon.json(
        "deploy", daemon.sign("stall"), "--canary-comm", "^stall-canary$", "--window", "40", "--wait", ok=False
    )
    story = _story(daemon, dep["id"])
    assert "no metric watch" in story["transitions"][3]["note"], story
    trip = story["trips"][0]
    assert trip["signal"] == "stall", trip
    assert trip["restored_to"] == GOOD
    status = daemon.status()
    assert status["breaker"]["latched"] and status["breaker"]["trips_in_window"] == 3, status["breaker"]
    latched = daemon.cli("deploy", daemon.sign("fifo"), "--canary-comm", "^lag-work$", "--json")
    assert latched.returncode == 1 and json.loads(latched.stdout)["error"] == "breaker_latched"
    reset = daemon.json("rollback", "--reset-breaker")
    assert reset["breaker"]["latched"] is False
    assert daemon.status()["node"]["ops"] == GOOD_OPS
    daemon.cli("node", "run", "--", "sh", "-c", "kill $(pidof stall-canary)")


def _scx_example(name: str) -> Path:
    from schedcp.testbed import kernel as kernel_mod
    from schedcp.toolchain import scx_headers

    examples = scx_headers.for_kernel(kernel_mod.cached("unstable")).examples_dir
    assert examples is not None, "setup fetches the kernel's scx headers and examples"
    return examples / f"{name}.bpf.c"


def test_scx_style_source_verified_by_the_daemon_deploys_with_its_loader_options(daemon: Daemon):
    # The kernel's scx_simple, verified by the daemon with the .rodata value its own loader would set.
    source = _scx_example("scx_simple").read_text()
    with DaemonClient(daemon.socket) as client:
        verified = client.verify(source, "scx_simple.bpf.c", kernel="unstable", rodata={"fifo_sched": "1"})
    report = verified["report"]
    assert report["verdict"] == "pass", report["reason"]
    assert report["config"] == {"rodata.fifo_sched": "1"}
    token_id = verified["token_id"]
    # The token binds the .rodata value: a deploy without it (or with another) is refused, unspent.
    for extra in ((), ("--rodata", "fifo_sched=0")):
        out = daemon.cli("deploy", token_id, "--canary-comm", "^lag-work$", "--json", *extra)
        assert out.returncode == 1 and json.loads(out.stdout)["error"] == "token_mismatch", out.stdout
    dep = daemon.json(
        "deploy", token_id, "--rodata", "fifo_sched=1", "--canary-comm", "^lag-work$", "--goal", "cpu_rate", "--wait"
    )
    assert dep["state"] == "promoted", dep
    assert dep["artefact"]["config"] == {"rodata.fifo_sched": "1"}
    status = daemon.status()
    assert status["node"]["ops"] == "simple" and status["node"]["switch_all"] == 1
    # Loaded the way the verifier loaded it: scx enums from the kernel's BTF, the value, the UEI buffer.
    canary = next(t for t in _story(daemon, dep["id"])["transitions"] if t["state"] == "canary")
    loader = canary["data"]["loader"]
    assert loader["enums_filled"] > 0 and loader["rodata_set"] == ["fifo_sched"], loader
    assert loader["uei"] == ["uei"] and loader["struct_ops"] == "simple_ops", loader
    daemon.notes["scx_simple"] = dep


def test_scx_style_policy_error_shows_its_exit_record_in_status_and_audit(daemon: Daemon):
    simple = daemon.notes["scx_simple"]
    trap = daemon.sign(str(Path(__file__).parent / "data" / "scx_trap.bpf.c"), rodata={"trap_code": "42"})
    dep = daemon.json(
        "deploy", trap, "--rodata", "trap_code=42", "--canary-comm", "^lag-work$", "--goal", "cpu_rate", "--wait"
    )
    assert dep["state"] == "promoted" and daemon.status()["node"]["ops"] == "scx_trap", dep
    daemon.cli("node", "run", "--", "sh", "-c", "echo -n trap-me > /proc/self/comm; sleep 0.3; echo woke")
    after = daemon.wait_for("the breaker", lambda s: s["trips"] and s["trips"][0]["deployment_id"] == dep["id"])
    trip = after["trips"][0]
    assert trip["signal"] == "error_exit" and trip["restored_to"] == "scx_simple", trip
    # The scheduler's own exit record (UEI), read back before its object was closed: the kernel's
    # reason and the message it formatted with the .rodata value the token bound.
    uei = trip["exit_info"]
    assert uei["kind_name"] == "SCX_EXIT_ERROR_BPF" and uei["reason"] == "scx_bpf_error", uei
    assert "code 42" in uei["message"], uei
    assert "code 42" in trip["reason"]
    assert after["node"]["ops"] == "simple"
    shown = " ".join(daemon.cli("status").stdout.split())  # the terminal's wrapping undone
    assert "exit record: scx_bpf_error" in shown and "code 42" in shown, shown
    told = " ".join(daemon.cli("audit", "--deployment", dep["id"]).stdout.split())
    assert "exit record: scx_bpf_error" in told and "code 42" in told, told
    with DaemonClient(daemon.socket) as client:
        entries = client.audit_tail(50)
    logged = [e for e in entries if e["event"] == "breaker_trip" and e["fields"]["deployment"] == dep["id"]]
    assert logged and "code 42" in logged[0]["fields"]["exit"]
    # Put back what ran before scx_simple, so the module's later tests find it.
    back = daemon.json("rollback", "--reason", "test: back to what ran before scx_simple")["trip"]
    previous = (simple.get("previous") or {}).get("artefact") or {}
    assert back["restored_to"] == previous.get("scheduler", "default")


def test_restarted_daemon_reconciles_with_the_kernel_and_operator_rollback(daemon: Daemon):
    before = daemon.status()
    assert before["active"]["state"] == "promoted" and before["node"]["ops"] == GOOD_OPS
    daemon.kill(signal.SIGKILL)  # a crash: the VM node dies with the daemon, the store survives
    daemon.start()
    after = daemon.status()
    assert any(f"restored {GOOD}" in note for note in after["reconcile"]), after["reconcile"]
    assert after["node"]["ops"] == GOOD_OPS and after["node"]["enable_seq"] == 1  # a fresh kernel
    assert after["active"]["artefact"]["scheduler"] == GOOD
    states = [t["state"] for t in _story(daemon, before["active"]["id"])["transitions"]]
    assert states[-2:] == ["interrupted", "promoted"]
    back = daemon.json("rollback", "--reason", "test: operator rollback")["trip"]
    assert back["signal"] == "operator" and back["restored_to"] == "default"
    final = daemon.status()
    assert final["node"]["state"] == "disabled" and final["active"] is None


def _b64(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
