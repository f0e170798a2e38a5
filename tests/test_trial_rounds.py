# SPDX-License-Identifier: Apache-2.0
"""How the trial core judges a policy arm whose attach the node refused.

A stalling policy can starve the node agent's own poll: the kernel enables it, its watchdog ejects
it, and only then does the agent look, so the node answers ``not_enabled``. The kernel log shows
what really happened, and the arm must be reported as ``ejected`` (never counted), not as a policy
that failed to attach. Events come from the node's real kernel-log parser fed real log lines.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from schedcp.node import scx
from schedcp.trial import attached
from schedcp.trial.models import Policy
from schedcp.trial.node import NodeOpError
from schedcp.trial.rounds import Arm, ejected_while_enabling, run_arm

ENABLED = 'sched_ext: BPF scheduler "stall" enabled'
STALLED = 'sched_ext: BPF scheduler "stall" disabled (runnable task stall)'
STALL_DETAIL = "sched_ext: stall: python3[212] failed to run for 3.104s"
INIT_FAILED = 'sched_ext: BPF scheduler "stall" disabled (runtime error)'


def _events(*lines: str) -> list[dict[str, Any]]:
    return scx.KernelLog(path="/nonexistent").parse([(float(i), line) for i, line in enumerate(lines)])


def _refusal(code: str, *lines: str) -> NodeOpError:
    return NodeOpError(
        {
            "code": code,
            "cause": "attach returned but 'stall' did not enable (state=disabled)",
            "next_step": "see kernel_events",
            "details": {"kernel_events": _events(*lines)},
        }
    )


class RefusingNode:
    """A node whose every load ends in the given refusal. It has no other operation, so a run_arm
    that went on to run the workload or read the state would fail with AttributeError."""

    def __init__(self, refusal: NodeOpError) -> None:
        self.refusal = refusal
        self.loads = 0

    def put_file(self, name: str, data: bytes, mode: int = 0o644) -> str:
        return f"/run/node/{name}"

    def load(self, path: str, **_options: Any) -> Any:
        self.loads += 1
        raise self.refusal


@pytest.fixture
def stall_arm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Arm:
    obj = tmp_path / "stall.bpf.o"
    obj.write_bytes(b"\x7fELF not read: the node refuses before anything looks inside")
    # No tunables: the object's globals are never read on the way to the node.
    monkeypatch.setattr(attached, "tunable_patches", lambda _obj, _meta, _config: ([], {}))
    return Arm("stall", Policy(name="stall", object_path=obj))


def test_enabled_then_ejected_before_the_confirmation_is_an_ejection(stall_arm: Arm) -> None:
    node = RefusingNode(_refusal("not_enabled", ENABLED, STALLED, STALL_DETAIL))
    rec = run_arm(node, stall_arm, ["true"], timeout_s=5, watchdog_ms=3000)  # type: ignore[arg-type]
    assert node.loads == 1
    assert rec.status == "ejected" and rec.stayed is False and rec.run is None
    assert rec.ops_name == "stall"
    assert rec.error is not None and rec.error.startswith("runnable task stall: python3[212] failed to run")
    assert [e.reason for e in rec.ejections] == ["runnable task stall"]


@pytest.mark.parametrize(
    ("code", "lines"),
    [
        ("not_enabled", (INIT_FAILED,)),  # never enabled: ops.init() or the enable path failed
        ("not_enabled", (ENABLED,)),  # enabled, then not confirmed, but the kernel did not eject it
        ("load_failed", (ENABLED, STALLED)),  # a rejected load is never an ejection, whatever the log says
    ],
)
def test_anything_else_stays_a_failed_attach(stall_arm: Arm, code: str, lines: tuple[str, ...]) -> None:
    refusal = _refusal(code, *lines)
    assert ejected_while_enabling(refusal) is None
    rec = run_arm(RefusingNode(refusal), stall_arm, ["true"], timeout_s=5)  # type: ignore[arg-type]
    assert rec.status == "attach_failed" and rec.error_code == code and rec.stayed is None


def test_an_ejection_of_another_scheduler_does_not_count() -> None:
    other = 'sched_ext: BPF scheduler "other" disabled (runnable task stall)'
    assert ejected_while_enabling(_refusal("not_enabled", ENABLED, other)) is None
    assert ejected_while_enabling(_refusal("not_enabled", ENABLED, STALLED)) == "stall"
