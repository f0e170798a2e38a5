# SPDX-License-Identifier: Apache-2.0
"""A crafted BPF object cannot take the node agent down: libbpf 1.5 (the guest's) segfaults inside
bpf_object__load() on kernel 7.3's scx_qmap most times; the agent now loads objects in a forked
child (node/childload.py), so the crash is a clean error and the same agent, in the same boot,
then loads and attaches a good scheduler, whose link it holds alone. One boot, a few seconds of
guest time."""

from __future__ import annotations

import base64

import pytest

from schedcp.testbed import kernel as kernel_mod
from schedcp.testbed.vm import MicroVM, VMConfig
from schedcp.toolchain import headers, scx_headers, scx_loader, scx_source
from schedcp.trial.attached import load
from schedcp.trial.models import Policy
from schedcp.trial.node import NodeOpError

pytestmark = pytest.mark.vm

# The crash depends on where things land in the loader's address space: when it does not happen,
# libbpf returns an error instead (the kernel then refuses the half-made object). Each try is ~3 s.
MAX_TRIES = 6


def test_a_libbpf_crash_is_an_error_and_the_agent_loads_the_next_object() -> None:
    kernel = kernel_mod.cached("backports")
    scx = scx_headers.for_kernel(kernel)
    assert scx.examples_dir is not None
    qmap = scx_source.build_for_kernel(scx.examples_dir / "scx_qmap.bpf.c", kernel).result.object_path
    crashing = Policy(
        name="scx_qmap",
        object_path=qmap,
        include_dir=headers.kernel_include_dir(kernel),
        loader=scx_loader.options_for(qmap, rodata={"max_tasks": "16384", "slice_ns": "20000000"}, kernel=kernel),
    )
    good_obj = scx_source.build_for_kernel("vtime", kernel).result.object_path
    good = Policy(name="vtime", object_path=good_obj, include_dir=headers.kernel_include_dir(kernel))
    with MicroVM(VMConfig(cpus=2, kernel="backports")) as vm:
        node = vm.node
        assert node is not None
        boot = node.call("hello")["uptime_s"]
        outcomes: list[str] = []
        crash: NodeOpError | None = None
        for _ in range(MAX_TRIES):
            with pytest.raises(NodeOpError) as info:
                load(node, crashing, attach=False)
            outcomes.append(info.value.code)
            if info.value.code == "libbpf_crashed":
                crash = info.value
                break
        assert crash is not None, f"libbpf never crashed in {MAX_TRIES} loads: {outcomes}"
        assert set(outcomes) <= {"libbpf_crashed", "load_failed"}, outcomes
        assert crash.cause == "libbpf crashed while loading the object: signal 11 (SIGSEGV)"
        # The same agent (no reboot in between) loads, attaches and detaches a good scheduler.
        hello = node.call("hello")
        assert hello["uptime_s"] >= boot and node.call("loaded")["loaded"] == {}
        policy = load(node, good, watchdog_ms=5000)
        try:
            assert node.call("state")["state"] == "enabled" and node.call("state")["ops"] == "vtime"
            assert policy.still_enabled()
            assert ".bss" in node.call("sections", {"handle": policy.handle})["sections"]
            # The struct_ops link lives in the agent alone: every loader child has exited and been reaped.
            pid = _read(node, "/proc/self/stat").split()[0]
            assert _read(node, f"/proc/{pid}/task/{pid}/children").strip() == ""
        finally:
            result = policy.detach()
        assert result.state.state == "disabled"
        assert any(e.reason == "unregistered from user space" for e in result.kernel_events)


def _read(node, path: str) -> str:
    return base64.b64decode(node.call("read_file", {"path": path})["data_b64"]).decode()
