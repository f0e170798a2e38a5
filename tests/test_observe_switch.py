# SPDX-License-Identifier: Apache-2.0
"""sched_switch lines are parsed on the fields around each task name, so a name (any 15 bytes the
task chose, spaces and " ==> " included) cannot hide its own switches or pose as another task.
The lines are in the kernel's own format (as this host's and the guest's tracefs print them)."""

from __future__ import annotations

from schedcp.node.observe import analyse_events


def _switch(ts: float, prev: tuple[str, int, str], nxt: tuple[str, int]) -> str:
    (pcomm, ppid, state), (ncomm, npid) = prev, nxt
    return (
        f"  {pcomm}-{ppid}     [000] d..2. {ts:.6f}: sched_switch: prev_comm={pcomm} prev_pid={ppid} "
        f"prev_prio=120 prev_state={state} ==> next_comm={ncomm} next_pid={npid} next_prio=120"
    )


def _trace(name: str) -> bytes:
    """Task 500 (named `name`) and task 600 take turns: 500 runs 3 ms per turn, 600 runs 1 ms."""
    lines, ts = [], 100.0
    for _ in range(5):
        lines.append(_switch(ts, ("other", 600, "R"), (name, 500)))
        ts += 0.003
        lines.append(_switch(ts, (name, 500, "R"), ("other", 600)))
        ts += 0.001
    return "\n".join(lines).encode()


def _tasks(name: str) -> dict[int, dict]:
    out = analyse_events(_trace(name), ["runtime", "runqlat"], {500, 600})
    return {t["tid"]: t for t in out["runtime"]["top"]}


def test_names_with_spaces_are_kept_whole() -> None:
    tasks = _tasks("ALL CPUs/TCG")
    assert tasks[500]["comm"] == "ALL CPUs/TCG" and tasks[500]["switches_in"] == 5


def test_a_name_cannot_hide_its_switches_or_claim_another_pid() -> None:
    honest = _tasks("worker")
    for hostile in ("a ==> b", "x prev_pid=600", "y next_pid=1 =", " ==> next_pid=9"):
        tasks = _tasks(hostile)
        assert tasks[500]["comm"] == hostile
        # The same times and switches as for an honest name: nothing skipped, nothing moved.
        for tid in (500, 600):
            assert {k: v for k, v in tasks[tid].items() if k != "comm"} == {
                k: v for k, v in honest[tid].items() if k != "comm"
            }, hostile
