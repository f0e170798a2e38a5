# SPDX-License-Identifier: Apache-2.0
"""Escape attempts against the rooted reader and the bwrap sandbox are refused or contained."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from schedcp.analysis.engine import Engine
from schedcp.analysis.sandbox import SafeReader, SandboxPolicy, run_sandboxed
from schedcp.errors import UsageError

# The venv's interpreter lives under root's home, which the sandbox user cannot enter.
SANDBOX_PY = "/usr/bin/python3"


def test_reader_reads_proc_and_lists_dirs() -> None:
    r = SafeReader()
    doc = r.read("/proc/loadavg")
    assert doc["type"] == "file" and len(doc["text"].split()) >= 5
    assert r.read("/sys/kernel")["type"] == "dir"
    big = r.read("/proc/self/status", max_bytes=64)
    assert big["truncated"] and big["bytes"] == 64


@pytest.mark.parametrize(
    "path,code",
    [
        ("/proc/../etc/shadow", "path_traversal"),
        ("/proc/self/root/etc/shadow", "outside_roots"),  # a symlink out of /proc
        ("/proc/self/cwd", "outside_roots"),
        ("/etc/passwd", "outside_roots"),
        ("/proc/1/environ", "denied"),
        ("/proc/kcore", "denied"),
        ("relative/path", "bad_path"),
        ("/proc/loadavg\x00x", "bad_path"),
    ],
)
def test_reader_refuses_escapes(path: str, code: str) -> None:
    with pytest.raises(UsageError) as err:
        SafeReader().read(path)
    assert err.value.code == code


def test_reader_symlink_inside_extra_root_pointing_outside(tmp_path) -> None:
    (tmp_path / "ok.txt").write_text("fine")
    (tmp_path / "escape").symlink_to("/etc/passwd")
    (tmp_path / "dirlink").symlink_to("/etc")
    r = SafeReader([str(tmp_path)])
    assert r.read(str(tmp_path / "ok.txt"))["text"] == "fine"
    for p in (tmp_path / "escape", tmp_path / "dirlink" / "passwd"):
        with pytest.raises(UsageError) as err:
            r.read(str(p))
        assert err.value.code == "outside_roots"
    with pytest.raises(UsageError):
        SafeReader(["/"]).read("/etc/passwd")


def test_reader_allows_workload_cwd(tmp_path) -> None:
    (tmp_path / "Makefile").write_text("all:\n")
    import subprocess

    proc = subprocess.Popen(["sleep", "5"], cwd=tmp_path)
    try:
        r = SafeReader().with_workload_cwd(proc.pid)
        assert r.read(str(tmp_path / "Makefile"))["text"] == "all:\n"
    finally:
        proc.kill()
        proc.wait()


def test_shell_metacharacters_stay_literal(tmp_path) -> None:
    marker = tmp_path / "pwned"
    args = ["$(touch " + str(marker) + ")", ";", "touch", str(marker), "|", "`id`", "&&", "rm -rf /"]
    res = run_sandboxed(["echo", *args])
    assert res["exit_code"] == 0
    assert res["stdout"].strip() == " ".join(args)
    assert not marker.exists()
    raw = Engine().observe_command(["echo", *args], duration_s=5)
    assert raw["stdout_tail"].strip() == " ".join(args) and not marker.exists()
    with pytest.raises(UsageError):
        Engine().observe_command("echo hi; id", duration_s=5)  # type: ignore[arg-type]


def test_sandbox_is_read_only_unprivileged_and_has_a_work_dir() -> None:
    res = run_sandboxed(["sh", "-c", "id -u; echo data > /work/f && cat /work/f; touch /etc/x 2>&1; cat /etc/shadow"])
    lines = res["stdout"].splitlines()
    assert lines[0] == "65534" and lines[1] == "data"
    assert "Read-only file system" in res["stdout"] + res["stderr"]
    assert "Permission denied" in res["stderr"]
    assert not os.path.exists("/etc/x")


def test_sandbox_has_no_network() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    port = server.getsockname()[1]
    accepted: list[bool] = []

    def accept() -> None:
        server.settimeout(3)
        try:
            server.accept()
            accepted.append(True)
        except OSError:
            pass

    t = threading.Thread(target=accept)
    t.start()
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=2)"
    res = run_sandboxed([SANDBOX_PY, "-c", code], SandboxPolicy(timeout_s=10))
    t.join()
    server.close()
    assert res["exit_code"] != 0 and ("refused" in res["stderr"] or "unreachable" in res["stderr"])
    assert not accepted


def test_runaway_commands_are_contained() -> None:
    res = run_sandboxed(["sh", "-c", "while :; do :; done"], SandboxPolicy(timeout_s=1))
    assert res["timed_out"] and res["signal"] == 9
    res = run_sandboxed([SANDBOX_PY, "-c", "b = bytearray(3 * 1024**3)"], SandboxPolicy(memory_mb=256))
    assert res["exit_code"] != 0 and "MemoryError" in res["stderr"]
    bomb = (
        "import os\nn = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
        "            import time; time.sleep(30)\n            os._exit(0)\n        n += 1\n"
        "except OSError:\n    print('refused', n)"
    )
    res = run_sandboxed([SANDBOX_PY, "-c", bomb], SandboxPolicy(timeout_s=10, max_procs=40))
    assert "refused" in res["stdout"] and int(res["stdout"].split()[1]) < 40
    res = run_sandboxed(["sh", "-c", "yes | head -c 5000000"], SandboxPolicy(output_cap=4096))
    assert res["truncated"] and len(res["stdout"]) < 6000


def test_sandbox_policy_is_validated() -> None:
    with pytest.raises(UsageError):
        run_sandboxed(["true"], SandboxPolicy(timeout_s=10_000))
    with pytest.raises(UsageError):
        run_sandboxed(["true"], SandboxPolicy(ro_binds=["relative"]))
    with pytest.raises(UsageError):
        run_sandboxed("true")  # type: ignore[arg-type]


def test_sandbox_works_for_an_unprivileged_caller() -> None:
    """The MCP server runs as a user: the sandbox must not depend on root's setpriv."""
    import os
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    # A copy of the package in a directory any uid can read (the checkout may sit under /root).
    public = Path(tempfile.mkdtemp(prefix="schedcp-sbx-", dir="/tmp"))
    try:
        shutil.copytree(
            Path(__file__).resolve().parents[1] / "src" / "schedcp",
            public / "schedcp",
            ignore=shutil.ignore_patterns("__pycache__"),
        )
        for path in [public, *public.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        code = (
            f"import sys; sys.path.insert(0, {str(public)!r})\n"
            "from schedcp.analysis.sandbox import run_sandboxed\n"
            "r = run_sandboxed(['/bin/sh', '-c', 'id -u; touch /etc/schedcp-evil 2>&1'])\n"
            "print(r['stdout'])\n"
        )

        def drop() -> None:
            os.setgid(65534)
            os.setuid(65534)

        out = subprocess.run(
            ["/usr/bin/python3", "-c", code], capture_output=True, text=True, preexec_fn=drop, timeout=60, cwd="/"
        )
    finally:
        shutil.rmtree(public, ignore_errors=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[0] == "65534"
    assert "Read-only file system" in out.stdout
    assert not Path("/etc/schedcp-evil").exists()
