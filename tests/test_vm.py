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
from schedcp.testbed.vm import MicroVM, NodeOpError, VMConfig
from schedcp.toolchain import attach, build, headers

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
    assert vm.boot_s is not None and vm.boot_s > 0


def test_minimal_scheduler_attaches_and_counts(vm: MicroVM, unstable_kernel: kernel.Kernel) -> None:
    attached = attach.attach(
        vm.node,
        _obj("minimal", unstable_kernel),
        timeout_ms=3000,
        include_dir=headers.kernel_include_dir(unstable_kernel),
    )
    try:
        assert vm.node.run(["cat", "/sys/kernel/sched_ext/root/ops"])["stdout"].strip() == "minimal"
        assert vm.node.state()["state"] == "enabled"
        first = attach.read_counters(vm.node, attached)["nr_enqueued"]
        vm.node.run(["sh", "-c", "for i in 1 2 3 4 5 6 7 8; do sleep 0.01; done"])
        assert attach.read_counters(vm.node, attached)["nr_enqueued"] > first
    finally:
        result = attach.detach(vm.node, attached)
    assert result["state"]["state"] == "disabled"
    assert any(
        e["kind"] == "disabled" and e["reason"] == "unregistered from user space" for e in result["kernel_events"]
    )


def test_stalling_scheduler_is_ejected_and_guest_survives(vm: MicroVM, unstable_kernel: kernel.Kernel) -> None:
    attach.attach(vm.node, _obj("stall", unstable_kernel), timeout_ms=1000)
    deadline = time.monotonic() + 30
    events: list[dict] = []
    while time.monotonic() < deadline:
        events += vm.node.events()
        if any(e["kind"] == "disabled" for e in events):
            break
        time.sleep(0.2)
    ejected = [e for e in events if e["kind"] == "disabled"]
    assert ejected, "the watchdog never ejected the stalling scheduler"
    assert ejected[0]["scheduler"] == "stall"
    assert ejected[0]["reason"] == "runnable task stall"
    assert vm.node.state()["state"] == "disabled"
    assert vm.node.run(["echo", "still alive"])["stdout"].strip() == "still alive"


def test_verifier_rejection_carries_the_message_and_line(vm: MicroVM, unstable_kernel: kernel.Kernel) -> None:
    with pytest.raises(NodeOpError) as info:
        attach.attach(vm.node, _obj("reject", unstable_kernel), attach=False)
    assert info.value.code == "load_failed"
    log = info.value.details["verifier_log"]
    assert any("invalid mem access 'map_value_or_null'" in line for line in log)
    assert any("reject.bpf.c:30" in line for line in log)
    assert vm.node.state()["state"] == "disabled"


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
                results[i] = machine.node.run(argv)["stdout"]
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
