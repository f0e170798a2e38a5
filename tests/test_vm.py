# SPDX-License-Identifier: Apache-2.0
"""The micro-VM testbed against the real sched_ext test kernel (boots QEMU)."""

from __future__ import annotations

import json
import threading
import time

import pytest

from conftest import qemu_children, run_cli
from schedcp.errors import SchedcpError
from schedcp.testbed import kernel
from schedcp.testbed.vm import MicroVM, VMConfig
from schedcp.toolchain import build, headers
from schedcp.trial.attached import attached, failure_detail
from schedcp.trial.models import OWN_DETACH_REASON, Policy
from schedcp.trial.node import NodeOpError

pytestmark = pytest.mark.vm


@pytest.fixture(scope="module")
def vm(unstable_kernel: kernel.Kernel):
    with MicroVM(VMConfig(cpus=2)) as machine:
        yield machine
    assert not machine.alive


def _obj(name: str, k: kernel.Kernel):
    return build.build_for_kernel(name, k).object_path


def test_guest_reports_kernel_and_tools(vm: MicroVM, unstable_kernel: kernel.Kernel) -> None:
    assert vm.hello["kernel"] == unstable_kernel.release
    assert vm.hello["cpus"] == 2 and vm.hello["root"]
    assert vm.hello["libbpf"]["available"] and vm.hello["libbpf"]["version"] >= "1.5"
    assert vm.hello["sched_ext"]["state"] == "disabled"
    # Measured from QEMU's start to the agent's hello: a real boot takes seconds, and the fixture's
    # boot timeout bounds it from above.
    assert vm.boot_s is not None and 0.5 < vm.boot_s < vm.config.boot_timeout_s


def _policy(name: str, k: kernel.Kernel) -> Policy:
    return Policy(name=name, object_path=_obj(name, k), include_dir=headers.kernel_include_dir(k))


def test_minimal_scheduler_attaches_counts_and_detaches(vm: MicroVM, unstable_kernel: kernel.Kernel) -> None:
    with attached(vm.node, _policy("minimal", unstable_kernel), watchdog_ms=3000) as pol:
        assert pol.ops_name == "minimal"
        assert vm.node.run(["cat", "/sys/kernel/sched_ext/root/ops"]).stdout.strip() == "minimal"
        assert vm.node.state().runs("minimal")
        first = pol.counters()["nr_enqueued"]
        run = pol.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 0.01; done"], 30)
        assert run.ok and run.context_switches is not None and run.context_switches > 8
        assert pol.counters()["nr_enqueued"] > first
        health = pol.check()
        assert health.stayed and health.ejections == [] and pol.still_enabled()
    assert pol.detach_error is None and pol.detached is not None
    assert pol.detached.state.state == "disabled"
    # Our own detach is logged as "disabled" too, but it is not an ejection.
    assert pol.exit_reason == OWN_DETACH_REASON
    assert any(e.kind == "disabled" for e in pol.events) and pol.ejections() == []


def test_stalling_scheduler_is_ejected_and_guest_survives(vm: MicroVM, unstable_kernel: kernel.Kernel) -> None:
    with attached(vm.node, _policy("stall", unstable_kernel), watchdog_ms=1000) as pol:
        deadline = time.monotonic() + 30
        while not pol.ejections() and time.monotonic() < deadline:
            time.sleep(0.2)
        health = pol.check()
    assert not health.stayed, "the watchdog never ejected the stalling scheduler"
    assert [e.scheduler for e in health.ejections] == ["stall"]
    assert health.reason.startswith("runnable task stall")
    assert pol.exit_reason == "runnable task stall" and pol.detach_error is None
    assert vm.node.state().idle
    assert vm.node.run(["echo", "still alive"]).stdout.strip() == "still alive"


def test_verifier_rejection_carries_the_message_and_line(vm: MicroVM, unstable_kernel: kernel.Kernel) -> None:
    with pytest.raises(NodeOpError) as info, attached(vm.node, _policy("reject", unstable_kernel), attach=False):
        pass
    assert info.value.code == "load_failed"
    log = info.value.details["verifier_log"]
    assert any("invalid mem access 'map_value_or_null'" in line for line in log)
    assert any("reject.bpf.c:30" in line for line in log)
    assert "map_value_or_null" in failure_detail(info.value)
    assert vm.node.state().state == "disabled"


def test_object_without_struct_ops_is_refused(vm: MicroVM, tmp_path) -> None:
    with pytest.raises(NodeOpError) as info:
        vm.node.put_file("junk.o", b"\x7fELF not really")
        vm.node.call("load", {"path": "junk.o"})
    assert info.value.code in ("open_failed", "no_struct_ops")


def test_hung_guest_is_killed_at_the_timeout(unstable_kernel: kernel.Kernel) -> None:
    machine = MicroVM(VMConfig(cpus=1, memory_mb=1024))
    machine.start()
    pid = machine.proc.pid
    try:
        t0 = time.monotonic()
        with pytest.raises(SchedcpError) as info:
            machine.node.call("run", {"argv": ["sleep", "60"], "timeout_s": 120}, timeout_s=3)
        assert info.value.code == "guest_timeout"
        assert time.monotonic() - t0 < 20
        assert not machine.alive
    finally:
        machine.kill()
    assert all(p.pid != pid for p in qemu_children())


def test_two_vms_run_at_once(unstable_kernel: kernel.Kernel) -> None:
    results: dict[int, str] = {}
    errors: list[BaseException] = []
    before = {p.pid for p in qemu_children()}

    def boot(i: int) -> None:
        try:
            with MicroVM(VMConfig(cpus=1, memory_mb=768)) as machine:
                argv = ["sh", "-c", f"echo vm{i}; cat /proc/sys/kernel/random/boot_id"]
                results[i] = machine.node.run(argv).stdout
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=boot, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert results[0].startswith("vm0") and results[1].startswith("vm1")
    assert results[0].split()[1] != results[1].split()[1]  # two distinct guests
    assert {p.pid for p in qemu_children()} <= before


def test_cli_vm_run_prints_the_scheduler_name() -> None:
    proc = run_cli("vm", "run", "--scheduler", "minimal", "--json", "--", "cat", "/sys/kernel/sched_ext/root/ops")
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["stdout"].strip() == "minimal"
    assert data["sched_ext_before"]["state"] == "disabled"
    assert data["sched_ext_after"]["state"] == "enabled"
    assert data["scheduler"]["counters"]["nr_enqueued"] > 0
    assert data["context_switches"] > 0
    assert any(e["kind"] == "enabled" and e["scheduler"] == "minimal" for e in data["kernel_events"])


def test_cli_vm_run_passes_exit_code_and_reports_rejection() -> None:
    before = {p.pid for p in qemu_children()}
    proc = run_cli("vm", "run", "--", "sh", "-c", "echo out; echo err >&2; exit 7")
    assert proc.returncode == 7
    assert proc.stdout == "out\n" and "err" in proc.stderr
    proc = run_cli("vm", "run", "--scheduler", "reject", "--", "true")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert "map_value_or_null" in proc.stderr and "reject.bpf.c:30" in proc.stderr
    assert {p.pid for p in qemu_children()} <= before


def test_cli_bad_input_fails_fast_without_booting() -> None:
    proc = run_cli("vm", "run", "--scheduler", "no-such-policy", "--", "true")
    assert proc.returncode == 2
    assert "unknown scheduler" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("vm", "run", "--cpus", "0", "--", "true")
    assert proc.returncode == 2
    proc = run_cli("vm", "run", "--kernel", "9.99", "--", "true")
    assert proc.returncode == 1 and "schedcp setup --kernel 9.99" in proc.stderr
