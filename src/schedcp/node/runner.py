# SPDX-License-Identifier: Apache-2.0
"""Running commands for the control plane: argv only (never a shell), bounded time and output.

Caller-supplied workloads run as the node's unprivileged workload user (``user="schedcp-work"``,
created by the guest's init): they cannot touch the node agent's files (measurement scripts,
objects) or the processes that measure them, and whatever they leave running is killed when the
run ends. Measurement code keeps running as root. A trial on a host runs the workload as the user
who asked for it (``uid``, never root), in a clean environment; only its own session is killed after.
"""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

from .protocol import NodeError

SCHED_EXT_POLICY = 7
DEFAULT_OUTPUT_CAP = 256 * 1024
WORKLOAD_USER = "schedcp-work"
MAX_OUTPUT_CAP = 8 * 1024 * 1024
SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"


def _truncate(data: bytes, cap: int) -> tuple[str, bool]:
    if len(data) <= cap:
        return data.decode(errors="replace"), False
    head = data[: cap // 2].decode(errors="replace")
    tail = data[-cap // 2 :].decode(errors="replace")
    return f"{head}\n... [{len(data) - cap} bytes omitted] ...\n{tail}", True


def child_env(account: pwd.struct_passwd | None, own_account: bool, env: dict[str, str] | None) -> dict[str, str]:
    """The environment a command starts with. A caller's own account (``uid``, a real user on a host)
    gets a clean one: the node agent's environment (the daemon's, on a host) is not theirs to read."""
    if account is not None and own_account:
        full_env = {"PATH": SAFE_PATH, "LANG": os.environ.get("LANG", "C.UTF-8")}
    else:
        full_env = dict(os.environ)
    if account is not None:
        full_env.update(HOME=account.pw_dir, USER=account.pw_name, LOGNAME=account.pw_name)
    if env:
        full_env.update({str(k): str(v) for k, v in env.items()})
    return full_env


def child_setup(*, sched_ext: bool, nice: int = 0, account: pwd.struct_passwd | None = None) -> Callable[[], None]:
    """What the child does before exec: its own session, nice, the SCHED_EXT policy, then the account."""

    def prepare() -> None:
        os.setsid()
        if nice:
            os.nice(nice)
        if sched_ext:
            # Partial-switch schedulers only see tasks whose policy is SCHED_EXT; children inherit it.
            os.sched_setscheduler(0, SCHED_EXT_POLICY, os.sched_param(0))
        if account is not None:  # last: nice and the policy above may need root
            os.setgroups([])
            os.setresgid(account.pw_gid, account.pw_gid, account.pw_gid)
            os.setresuid(account.pw_uid, account.pw_uid, account.pw_uid)

    return prepare


def check_argv(argv: Any) -> list[str]:
    if not isinstance(argv, list) or not argv or not all(isinstance(a, str) for a in argv):
        raise NodeError("bad_argv", "argv must be a non-empty list of strings", "pass the command as a list")
    if any("\x00" in a for a in argv):
        raise NodeError("bad_argv", "argv contains a NUL byte", "remove it")
    return list(argv)


def run_command(
    argv: list[str],
    *,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
    cwd: str | None = None,
    stdin: str | None = None,
    output_cap: int = DEFAULT_OUTPUT_CAP,
    sched_ext: bool = False,
    nice: int = 0,
    user: str | None = None,
    uid: int | None = None,
) -> dict[str, Any]:
    account = run_account(user, uid)
    argv = check_argv(argv)
    output_cap = max(1024, min(int(output_cap), MAX_OUTPUT_CAP))
    full_env = child_env(account, uid is not None, env)
    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=full_env,
            cwd=cwd if cwd is not None or uid is None else home_or_root(account),
            preexec_fn=child_setup(sched_ext=sched_ext, nice=nice, account=account),
        )
    except FileNotFoundError as exc:
        raise NodeError("not_found", f"command not found: {argv[0]}", "check the program name and PATH") from exc
    except (PermissionError, OSError) as exc:
        raise NodeError("exec_failed", f"cannot run {argv[0]}: {exc}", "check the command") from exc
    timed_out = False
    try:
        out, err = proc.communicate(stdin.encode() if stdin is not None else None, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        out, err = proc.communicate()
    wall = time.monotonic() - start
    end_leftovers(proc.pid, account, own_account=uid is not None)
    stdout, out_trunc = _truncate(out, output_cap)
    stderr, err_trunc = _truncate(err, output_cap)
    code = proc.returncode
    return {
        "argv": argv,
        "exit_code": code if code >= 0 else 128 - code,
        "signal": -code if code < 0 else None,
        "timed_out": timed_out,
        "wall_s": round(wall, 6),
        "stdout": stdout,
        "stderr": stderr,
        "truncated": out_trunc or err_trunc,
    }


def run_account(user: str | None, uid: int | None) -> pwd.struct_passwd | None:
    """The account a command runs as: the node's workload user by name, or a caller's own uid (a
    trial on a host runs the workload as the user who asked for it); never root. None: the agent's."""
    if uid is None:
        return _workload_account(user)
    if user is not None:
        raise NodeError("bad_args", "give user or uid, not both", "")
    if isinstance(uid, bool) or not isinstance(uid, int) or uid <= 0:
        raise NodeError("bad_user", f"uid {uid!r} is not an unprivileged user", "workloads never run as root")
    try:
        return pwd.getpwuid(uid)
    except KeyError as exc:
        raise NodeError("no_user", f"this node has no user with uid {uid}", "run as a user with an account") from exc


def end_leftovers(pid: int, account: pwd.struct_passwd | None, *, own_account: bool) -> None:
    """Kill what a finished command left behind: every process of the dedicated workload user, or
    (a caller's own account, whose other processes are none of ours) the command's session."""
    if account is None:
        return
    if own_account:
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return
    _kill_all_of(account.pw_uid)


def home_or_root(account: pwd.struct_passwd | None) -> str:
    home = account.pw_dir if account is not None else "/"
    return home if os.path.isdir(home) else "/"


def _workload_account(user: str | None) -> pwd.struct_passwd | None:
    if user is None:
        return None
    if user != WORKLOAD_USER:
        raise NodeError("bad_args", f"unknown run user {user!r}", f"use {WORKLOAD_USER!r} or none")
    try:
        account = pwd.getpwnam(user)
    except KeyError as exc:
        raise NodeError("no_user", f"this node has no user {user}", "rebuild the guest image: schedcp setup") from exc
    if account.pw_uid == 0:
        raise NodeError("bad_user", f"{user} is root on this node", "give it its own uid")
    return account


def _kill_all_of(uid: int) -> None:
    """SIGKILL every process of `uid`, so nothing a workload started outlives its run."""
    for _ in range(3):
        found = False
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                if os.stat(entry.path).st_uid != uid:
                    continue
                os.kill(int(entry.name), signal.SIGKILL)
                found = True
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                continue
        if not found:
            return
        time.sleep(0.05)
