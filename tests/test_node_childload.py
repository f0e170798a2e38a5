# SPDX-License-Identifier: Apache-2.0
"""The node agent loads objects in a forked child (node/childload.py): a crash there is a clean
error and the agent keeps serving. Host-side, no VM: the child really forks and really dies of
SIGSEGV (a stand-in for libbpf crashing in its place); the libbpf crash itself is replayed in the
micro-VM by tests/test_node_childload_vm.py."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from pathlib import Path

import psutil
import pytest

from schedcp.node import agent as agent_mod
from schedcp.node import childload, libbpf
from schedcp.node.protocol import NodeError


def _segfault(path: str, struct_ops: str | None = None) -> libbpf.LoadedScheduler:
    ctypes.string_at(8)  # reads address 8: SIGSEGV, as libbpf's crash inside bpf_object__load
    raise AssertionError("unreachable")


@pytest.fixture()
def node(tmp_path: Path, monkeypatch) -> agent_mod.NodeAgent:
    monkeypatch.setattr(agent_mod, "WORK_DIR", tmp_path / "node")
    return agent_mod.NodeAgent()


def _children() -> list[psutil.Process]:
    return psutil.Process().children()


def test_a_crash_while_loading_is_an_error_and_the_agent_goes_on(node, monkeypatch) -> None:
    obj = agent_mod.WORK_DIR / "obj" / "bad.bpf.o"
    node.op_put_file("obj/bad.bpf.o", "f0VMRg==")  # any bytes: the crash comes first
    fds_before = len(os.listdir("/proc/self/fd"))
    monkeypatch.setattr(libbpf, "LoadedScheduler", _segfault)
    reply = node.handle({"id": 1, "op": "load", "args": {"path": str(obj), "attach": False}})
    assert reply["ok"] is False
    error = reply["error"]
    assert error["code"] == "libbpf_crashed"
    assert error["cause"] == "libbpf crashed while loading the object: signal 11 (SIGSEGV)"
    assert error["details"]["signal"] == signal.SIGSEGV and "unaffected" in error["next_step"]
    # The agent answers the next request, holds nothing, left no child and no descriptor behind.
    assert node.handle({"id": 2, "op": "loaded"}) == {"id": 2, "ok": True, "result": {"loaded": {}}}
    assert _children() == [] and len(os.listdir("/proc/self/fd")) == fds_before


def test_the_same_agent_loads_again_after_a_crash_in_the_background(node, monkeypatch) -> None:
    """A background load (wait_s) whose child dies answers through load_wait; the next load is not
    refused as busy and reaches libbpf in its own child (which refuses these bytes cleanly)."""
    node.op_put_file("obj/x.bpf.o", "f0VMRg==")
    path = str(agent_mod.WORK_DIR / "obj" / "x.bpf.o")
    real = libbpf.LoadedScheduler
    monkeypatch.setattr(libbpf, "LoadedScheduler", _segfault)
    first = node.handle({"id": 1, "op": "load", "args": {"path": path, "attach": False, "wait_s": 10}})
    if first["ok"]:  # still pending after wait_s: ask again
        first = node.handle({"id": 2, "op": "load_wait", "args": {"job": first["result"]["job"], "wait_s": 30}})
    assert first["ok"] is False and first["error"]["code"] == "libbpf_crashed"
    monkeypatch.setattr(libbpf, "LoadedScheduler", real)
    second = node.handle({"id": 3, "op": "load", "args": {"path": path, "attach": False}})
    assert second["ok"] is False and second["error"]["code"] == "open_failed", second
    assert _children() == []


def test_a_child_that_ends_without_answering_is_reported(monkeypatch) -> None:
    def vanish(path: str, struct_ops: str | None = None) -> libbpf.LoadedScheduler:
        os._exit(3)

    monkeypatch.setattr(libbpf, "LoadedScheduler", vanish)
    with pytest.raises(NodeError) as info:
        childload.start("/nonexistent.o", None, lambda s: None).wait_loaded()  # type: ignore[arg-type,return-value]
    assert info.value.code == "loader_failed" and "exit 3" in info.value.cause
    assert _children() == []


def test_the_child_keeps_no_inherited_descriptor(monkeypatch, tmp_path: Path) -> None:
    """An inherited copy of another scheduler's link would keep that scheduler attached after the
    agent closed its own: the child closes every descriptor but its socket."""
    marker = os.open(tmp_path / "marker", os.O_CREAT | os.O_RDWR, 0o600)

    def look(path: str, struct_ops: str | None = None) -> libbpf.LoadedScheduler:
        fds = sorted(int(fd) for fd in os.listdir("/proc/self/fd"))
        targets = []
        for fd in fds:
            with contextlib.suppress(OSError):  # the listing's own descriptor is gone by now
                targets.append(os.readlink(f"/proc/self/fd/{fd}") if fd > 2 else "")
        raise NodeError("probe", "descriptors", targets=[t for t in targets if t])

    monkeypatch.setattr(libbpf, "LoadedScheduler", look)
    try:
        with pytest.raises(NodeError) as info:
            childload.start("/nonexistent.o", None, lambda s: None).wait_loaded()  # type: ignore[arg-type,return-value]
    finally:
        os.close(marker)
    seen = info.value.details["targets"]
    assert str(tmp_path / "marker") not in seen
    assert len(seen) == 1 and seen[0].startswith("socket:"), seen  # its own end of the socketpair only
