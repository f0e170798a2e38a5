# SPDX-License-Identifier: Apache-2.0
"""Node operations a deployment needs: pick a canary's tasks, switch them, sample them, run jobs.

Standard library only, relative imports only (runs as ``schedcp.node.canary`` on a host and as
``schedcp_node.canary`` in the micro-VM guest). Served by the node agent through ``OPS``:

* ``canary_tasks``   resolve a target (a PID and its descendants, a cgroup's members, or processes
                     whose comm matches a regular expression) to its threads
* ``canary_switch``  set those threads' policy to ``SCHED_EXT`` (7) so a scheduler loaded with
                     ``SCX_OPS_SWITCH_PARTIAL`` sees them; their future children inherit it at fork.
                     ``policy="normal"`` puts them back
* ``canary_sample``  the target's schedstat counters (run time, run-queue wait) per thread, and
                     per process its parent and the CPU time of its reaped children, so the
                     breaker can count the CPU of jobs that lived and died between two ticks
* ``spawn`` / ``job`` start a command in the background and poll it: a long command run for a user
                     never holds the node's one request loop while the circuit breaker needs it
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import subprocess
import threading
import time
from typing import Any

from .observe import CLK_TCK, TreeTracker, _list_ints, _parse_stat, _read, boottime, resolve_cgroup
from .protocol import NodeError
from .runner import (
    DEFAULT_OUTPUT_CAP,
    MAX_OUTPUT_CAP,
    SCHED_EXT_POLICY,
    _truncate,
    check_argv,
    child_env,
    child_setup,
    end_leftovers,
    home_or_root,
    run_account,
)

SCHED_NORMAL = 0
MAX_TASKS = 4096
MAX_COMM_PATTERN = 128
MAX_JOBS = 16
JOB_KEEP_S = 600.0  # a finished job's result is kept this long for its poller


def _comm(pid: int, tid: int | None = None) -> str | None:
    path = f"/proc/{pid}/comm" if tid is None else f"/proc/{pid}/task/{tid}/comm"
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return fh.read().rstrip("\n")
    except OSError:
        return None


def _target_pids(pids: list[int] | None, cgroup: str | None, comm: str | None) -> list[int]:
    chosen = sum(x is not None and x != [] for x in (pids, cgroup, comm))
    if chosen != 1:
        raise NodeError("bad_args", "give exactly one canary target: pids, cgroup or comm", "")
    me = os.getpid()
    if comm is not None:
        if not isinstance(comm, str) or not comm or len(comm) > MAX_COMM_PATTERN:
            raise NodeError("bad_args", f"comm must be a regular expression of 1..{MAX_COMM_PATTERN} chars", "")
        try:
            pattern = re.compile(comm)
        except re.error as exc:
            raise NodeError("bad_args", f"comm is not a valid regular expression: {exc}", "") from exc
        out = []
        for pid in _list_ints("/proc"):
            name = _comm(pid)
            if pid != me and name is not None and pattern.search(name):
                out.append(pid)
        return out
    if cgroup is not None:
        tracker = TreeTracker([], cgroup=resolve_cgroup(str(cgroup)), follow_children=True)
        return sorted(tracker.refresh() - {me})
    roots = []
    for pid in pids or []:
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 1:
            raise NodeError("bad_args", f"pid {pid!r} is not a user process id", "")
        if not os.path.isdir(f"/proc/{pid}"):
            raise NodeError("no_such_process", f"no process {pid}", "check the pid")
        roots.append(pid)
    return sorted(TreeTracker(roots, follow_children=True).refresh() - {me})


def _threads(pids: list[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for pid in pids:
        for tid in _list_ints(f"/proc/{pid}/task"):
            out.append((pid, tid))
            if len(out) >= MAX_TASKS:
                return out
    return out


def canary_tasks(pids: list[int] | None = None, cgroup: str | None = None, comm: str | None = None) -> dict[str, Any]:
    """The target's processes and threads right now, with each thread's scheduling policy."""
    procs = _target_pids(pids, cgroup, comm)
    tasks = []
    for pid, tid in _threads(procs):
        try:
            policy = os.sched_getscheduler(tid)
        except OSError:
            continue
        tasks.append({"pid": pid, "tid": tid, "comm": _comm(pid, tid), "policy": policy})
    return {"pids": procs[:MAX_TASKS], "tasks": tasks, "truncated": len(tasks) >= MAX_TASKS}


def canary_switch(
    pids: list[int] | None = None, cgroup: str | None = None, comm: str | None = None, policy: str = "ext"
) -> dict[str, Any]:
    """Set every thread of the target to SCHED_EXT (``policy="ext"``) or SCHED_NORMAL ("normal").
    Threads already there are left alone; threads that vanish meanwhile are skipped."""
    if policy not in ("ext", "normal"):
        raise NodeError("bad_args", "policy must be 'ext' or 'normal'", "")
    want = SCHED_EXT_POLICY if policy == "ext" else SCHED_NORMAL
    procs = _target_pids(pids, cgroup, comm)
    switched, already = 0, 0
    failed: list[dict[str, Any]] = []
    for _pid, tid in _threads(procs):
        try:
            current = os.sched_getscheduler(tid)
            if current == want:
                already += 1
                continue
            if policy == "normal" and current != SCHED_EXT_POLICY:
                continue  # never touch a real-time or idle policy the target set itself
            os.sched_setscheduler(tid, want, os.sched_param(0))
            switched += 1
        except ProcessLookupError:
            continue
        except OSError as exc:
            if len(failed) < 16:
                failed.append({"tid": tid, "error": exc.strerror or str(exc)})
    return {"pids": len(procs), "switched": switched, "already": already, "failed": failed}


def _descendants(procs: list[int]) -> list[int]:
    """``procs`` and every descendant, found through the kernel's per-thread ``children`` lists:
    reads only the tree, never all of /proc (bounded by MAX_TASKS)."""
    seen = set(procs)
    out = list(procs)
    queue = list(procs)
    while queue and len(out) < MAX_TASKS:
        pid = queue.pop()
        for tid in _list_ints(f"/proc/{pid}/task"):
            for child in (_read(f"/proc/{pid}/task/{tid}/children") or "").split():
                if child.isdigit() and int(child) not in seen and len(out) < MAX_TASKS:
                    seen.add(int(child))
                    out.append(int(child))
                    queue.append(int(child))
    return out


def _proc_stat(pid: int) -> list[int] | None:
    """[parent pid, CPU ns of its reaped children (cutime + cstime)] from /proc/PID/stat."""
    raw = _read(f"/proc/{pid}/stat")
    parsed = _parse_stat(raw) if raw else None
    if parsed is None:
        return None
    fields = parsed[1]  # fields[0] is the state; ppid is fields[1]; cutime, cstime are fields[13], [14]
    try:
        return [int(fields[1]), (int(fields[13]) + int(fields[14])) * 1_000_000_000 // CLK_TCK]
    except (IndexError, ValueError):
        return None


def canary_sample(
    pids: list[int] | None = None,
    cgroup: str | None = None,
    comm: str | None = None,
    switch: bool = False,
    known: list[int] | None = None,
    follow: bool = False,
) -> dict[str, Any]:
    """Schedstat counters of the target's threads, ``{tid: [run_ns, wait_ns, pid]}``, per process
    ``[ppid, reaped_children_ns]`` and the clock.

    With ``switch``, threads not yet on SCHED_EXT are switched in the same pass. With ``known``
    (the ``procs`` an earlier answer listed), only those processes are read and the target is not
    searched again: the breaker rescans every few ticks and samples cheaply in between, because
    under emulation the node's own work is large enough to disturb the metric it measures. With
    ``follow`` as well (a PID-tree target), the known processes' new descendants are added through
    the kernel's ``children`` lists, which costs a read per known thread, not a scan of /proc."""
    if known is not None:
        procs = [p for p in known[:MAX_TASKS] if isinstance(p, int) and not isinstance(p, bool) and p > 1]
        if follow:
            me = os.getpid()
            procs = [p for p in _descendants(procs) if p != me]
    else:
        procs = _target_pids(pids, cgroup, comm)
    counters: dict[str, list[int]] = {}
    reaped: dict[str, list[int]] = {}
    switched = 0
    for pid in procs:
        stat = _proc_stat(pid)
        if stat is not None:
            reaped[str(pid)] = stat
    for pid, tid in _threads(procs):
        if switch:
            try:
                if os.sched_getscheduler(tid) != SCHED_EXT_POLICY:
                    os.sched_setscheduler(tid, SCHED_EXT_POLICY, os.sched_param(0))
                    switched += 1
            except OSError:
                continue
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as fh:
                parts = fh.read().split()
            counters[str(tid)] = [int(parts[0]), int(parts[1]), pid]
        except (OSError, ValueError, IndexError):
            continue
    # A process counts only when both its stat and a thread were read: one reaped between the two
    # reads would otherwise bring its counters without its threads' time, and the breaker would
    # count that time a second time when it shows up in the parent's reaped children.
    threaded = {row[2] for row in counters.values()}
    reaped = {pid: stat for pid, stat in reaped.items() if int(pid) in threaded}
    counters = {tid: row for tid, row in counters.items() if str(row[2]) in reaped}
    return {
        "t": boottime(),
        "pids": len(procs),
        "procs": procs[:MAX_TASKS],
        "tasks": counters,
        "reaped": reaped,
        "switched": switched,
    }


# ---------------------------------------------------------------------------------------------
# background jobs
# ---------------------------------------------------------------------------------------------
class _Job:
    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        argv: list[str],
        timeout_s: float,
        cap: int,
        account: pwd.struct_passwd | None = None,
        own_account: bool = False,
    ) -> None:
        self.proc = proc
        self.account = account
        self.own_account = own_account
        self.argv = argv
        self.started = time.monotonic()
        self.deadline = self.started + timeout_s
        self.cap = cap
        self.out = b""
        self.err = b""
        self.timed_out = False
        self.finished: float | None = None
        self._threads = [
            threading.Thread(target=self._drain, args=(proc.stdout, "out"), daemon=True),
            threading.Thread(target=self._drain, args=(proc.stderr, "err"), daemon=True),
        ]
        for t in self._threads:
            t.start()

    def _drain(self, stream: Any, which: str) -> None:
        limit = self.cap * 2
        while True:
            chunk = stream.read(65536)
            if not chunk:
                return
            data = getattr(self, which) + chunk
            if len(data) > limit:  # keep the head and the newest tail
                data = data[: self.cap] + data[-self.cap :]
            setattr(self, which, data)

    def poll(self) -> dict[str, Any]:
        code = self.proc.poll()
        if code is None and time.monotonic() > self.deadline:
            self.timed_out = True
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            code = self.proc.wait()
        if code is None:
            return {"done": False, "pid": self.proc.pid, "elapsed_s": round(time.monotonic() - self.started, 3)}
        if self.finished is None:  # what a workload left running ends with it (and lets go of the pipes)
            end_leftovers(self.proc.pid, self.account, own_account=self.own_account)
        for t in self._threads:
            t.join(timeout=2)
        if self.finished is None:
            self.finished = time.monotonic()
        stdout, t1 = _truncate(self.out, self.cap)
        stderr, t2 = _truncate(self.err, self.cap)
        return {
            "done": True,
            "argv": self.argv,
            "exit_code": code if code >= 0 else 128 - code,
            "signal": -code if code < 0 else None,
            "timed_out": self.timed_out,
            "wall_s": round(self.finished - self.started, 6),
            "stdout": stdout,
            "stderr": stderr,
            "truncated": t1 or t2,
        }


_jobs: dict[int, _Job] = {}
_jobs_lock = threading.Lock()
_next_job = [1]


def spawn(
    argv: list[str],
    timeout_s: float = 60.0,
    output_cap: int = DEFAULT_OUTPUT_CAP,
    env: dict[str, str] | None = None,
    sched_ext: bool = False,
    user: str | None = None,
    uid: int | None = None,
) -> dict[str, Any]:
    """Start argv (never a shell) in its own session; poll it with ``job``. ``sched_ext`` starts it
    with the SCHED_EXT policy (a partial-switch scheduler sees it and its children); ``user`` or
    ``uid`` run it as the node's workload user or as a caller's own account (runner.run_account)."""
    argv = check_argv(argv)
    account = run_account(user, uid)
    timeout_s = max(0.1, min(float(timeout_s), 3600.0))
    cap = max(1024, min(int(output_cap), MAX_OUTPUT_CAP))
    with _jobs_lock:
        now = time.monotonic()
        for jid in [j for j, job in _jobs.items() if job.finished and now - job.finished > JOB_KEEP_S]:
            del _jobs[jid]
        if sum(1 for job in _jobs.values() if job.proc.poll() is None) >= MAX_JOBS:
            raise NodeError("busy", f"{MAX_JOBS} jobs are already running on this node", "wait for one to finish")
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=child_env(account, uid is not None, env),
                cwd=None if uid is None else home_or_root(account),
                preexec_fn=child_setup(sched_ext=bool(sched_ext), account=account),
            )
        except FileNotFoundError as exc:
            raise NodeError("not_found", f"command not found: {argv[0]}", "check the program name and PATH") from exc
        except OSError as exc:
            raise NodeError("exec_failed", f"cannot run {argv[0]}: {exc}", "check the command") from exc
        jid = _next_job[0]
        _next_job[0] += 1
        _jobs[jid] = _Job(proc, list(argv), timeout_s, cap, account, uid is not None)
    return {"job": jid, "pid": proc.pid}


def job(job: int, kill: bool = False) -> dict[str, Any]:
    """A job's state: ``done`` False while it runs, else its result (kept for a while after)."""
    with _jobs_lock:
        found = _jobs.get(int(job))
    if found is None:
        raise NodeError("unknown_job", f"no job {job}", "start one with spawn")
    if kill and found.proc.poll() is None:
        try:
            os.killpg(found.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        found.proc.wait()
    return found.poll()


OPS = {
    "canary_tasks": canary_tasks,
    "canary_switch": canary_switch,
    "canary_sample": canary_sample,
    "spawn": spawn,
    "job": job,
}
