# SPDX-License-Identifier: Apache-2.0
"""A real `schedcp daemon --node vm` in a subprocess, driven through the real CLI: for the deploy
tests and the deploy benchmark.

``Daemon.sign`` issues a token with the daemon's own key for a library or test scheduler it puts in
the daemon's artefact store: the policies that fail only in production pass the verifier by
design, and each verification costs a VM boot, so the tests and the benchmark sign those directly
(the caller is root, like the daemon). The deploy path that checks the token is the real one.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from schedcp.daemon.client import DaemonClient
from schedcp.errors import SchedcpError

NOBODY = 65534
WORKLOAD = (
    "for i in 1 2; do setsid sh -c 'echo -n lag-work > /proc/self/comm; while :; do :; done' >/dev/null 2>&1 & done"
)
CONFIG = """
[deploy]
window_s = 6
baseline_s = 5
tick_s = 0.5
max_trips = 3
trip_window_s = 3600
"""
EXE = str(Path(sys.executable).with_name("schedcp"))


def build_scx_example(name: str, out_dir: Path, kernel_spec: str = "unstable") -> Path:
    """The kernel's own userspace loader for a ``tools/sched_ext`` example (``scx_simple``: ``-f``,
    ``-v``; attached until SIGINT, detached on exit), built the way its Makefile does, as the stand-in
    for an upstream binary such as scx_rusty that cannot be built here: the BPF half with our
    toolchain for the test kernel, its skeleton with ``bpftool gen skeleton`` (the guest image's
    bpftool, run through the guest's loader), the C half with the host's gcc against Debian stable's
    libbpf headers, linked to the guest image's libbpf.so.1 (the library it runs with in the guest).
    Written to ``out_dir/NAME`` mode 0755, in a directory nobody else may write."""
    import shutil

    from schedcp.testbed import guest
    from schedcp.testbed import kernel as kernel_mod
    from schedcp.toolchain import headers, scx_headers, scx_source

    kernel = kernel_mod.cached(kernel_spec)
    scx = scx_headers.resolve(kernel)
    if scx.examples_dir is None or not (scx.examples_dir / f"{name}.c").is_file():
        raise RuntimeError(f"the kernel's tools/sched_ext has no {name}.c")
    work = out_dir / f".{name}.build"
    work.mkdir(parents=True, exist_ok=True)
    built = scx_source.build_for_kernel(str(scx.examples_dir / f"{name}.bpf.c"), kernel).result.object_path
    shutil.copyfile(built, work / f"{name}.bpf.o")
    skel = subprocess.run(
        [*headers.bpftool_argv(), "gen", "skeleton", str(work / f"{name}.bpf.o"), "name", name],
        capture_output=True,
        text=True,
        check=True,
    )
    (work / f"{name}.bpf.skel.h").write_text(skel.stdout)
    libdir = guest.ensure_image().rootfs / "usr/lib/x86_64-linux-gnu"
    out = out_dir / name
    subprocess.run(
        [
            "gcc",
            "-O2",
            "-o",
            str(out),
            str(scx.examples_dir / f"{name}.c"),
            f"-I{work}",
            f"-I{scx.scx_include}",
            f"-I{headers.libbpf_include_dir()}",
            f"-L{libdir}",
            "-l:libbpf.so.1",
            "-Wl,--allow-shlib-undefined",  # libbpf's own libelf/libz are the guest's, resolved there
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    shutil.rmtree(work, ignore_errors=True)
    out.chmod(0o755)
    return out


@dataclass
class Daemon:
    """A daemon owning a micro-VM node, with its socket, state and config under ``root``."""

    root: Path
    config: str = CONFIG
    proc: subprocess.Popen[bytes] | None = None
    notes: dict[str, Any] = field(default_factory=dict)  # what tests hand to later tests

    @property
    def socket(self) -> Path:
        return self.root / "run" / "daemon.sock"

    @property
    def state(self) -> Path:
        return self.root / "state"

    def start(self) -> None:
        (self.root / "run").mkdir(mode=0o755, exist_ok=True)
        (self.root / "c.toml").write_text(self.config)
        env = {**os.environ, "SCHEDCP_DATA_DIR": str(self.state)}
        argv = [EXE, "daemon", "--socket", str(self.socket), "--node", "vm", "--config", str(self.root / "c.toml")]
        argv += ["--allow-uid", str(NOBODY)]
        with (self.root / "daemon.log").open("ab") as out:
            self.proc = subprocess.Popen(argv, env=env, stdout=out, stderr=out, start_new_session=True)
        deadline = time.monotonic() + 300
        while True:
            try:
                with DaemonClient(self.socket) as client:
                    client.call("deployment_status", timeout_s=30)
                return
            except SchedcpError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    tail = (self.root / "daemon.log").read_text()[-2000:]
                    raise RuntimeError("daemon did not start: " + tail) from None
                time.sleep(0.5)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def cli(
        self, *args: str, uid: int | None = None, timeout: float = 240, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "SCHEDCP_DAEMON_SOCKET": str(self.socket), **(env or {})}
        if uid is not None:
            env["HOME"] = "/tmp"

        def drop() -> None:
            if uid is not None:
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)

        return subprocess.run([EXE, *args], capture_output=True, text=True, timeout=timeout, env=env, preexec_fn=drop)

    def call_as(self, uid: int, op: str, args: dict[str, Any] | None = None) -> dict[str, Any]:
        """One daemon request from a child process that dropped to ``uid`` (the kernel's peer
        credentials are what the daemon judges; the CLI's interpreter may not be reachable by that uid)."""
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: drop privileges, ask, report, leave without cleanup handlers
            code = 0
            try:
                os.close(read_fd)
                os.setgroups([])
                os.setgid(uid)
                os.setuid(uid)
                try:
                    with DaemonClient(self.socket) as client:
                        answer: dict[str, Any] = {"ok": True, "result": client.call(op, args or {}, timeout_s=60)}
                except SchedcpError as exc:
                    answer = {"ok": False, "error": exc.code, "cause": exc.cause}
                os.write(write_fd, json.dumps(answer, default=str).encode())
            except BaseException:
                code = 1
            finally:
                os._exit(code)
        os.close(write_fd)
        with os.fdopen(read_fd, "rb") as fh:
            data = fh.read()
        os.waitpid(pid, 0)
        return dict(json.loads(data))

    def json(self, *args: str, ok: bool | None = True, **kw: Any) -> Any:
        """The CLI's --json answer; asserts its exit status unless ``ok`` is None."""
        cut = args.index("--") if "--" in args else len(args)  # options go before a node command
        out = self.cli(*args[:cut], "--json", *args[cut:], **kw)
        if ok is not None:
            assert (out.returncode == 0) == ok, f"{args}: rc={out.returncode} {out.stdout[-1500:]} {out.stderr[-1500:]}"
        return json.loads(out.stdout)

    def status(self) -> dict[str, Any]:
        return self.json("status")

    def wait_for(self, what: str, predicate: Any, timeout: float = 120) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if predicate(status):
                return status
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}: {json.dumps(status)[:2000]}")
            time.sleep(0.5)

    def sign(
        self,
        scheduler: str,
        *,
        config: dict[str, Any] | None = None,
        rodata: dict[str, str] | None = None,
        **overrides: Any,
    ) -> str:
        """A token from the daemon's own key for a library/test scheduler put into its artefact store.
        ``scheduler`` may also be the path of an scx-style source (built with the kernel's scx
        headers); ``rodata`` is bound as the verifier binds it (``rodata.NAME``)."""
        from schedcp.deploy.artifacts import ArtifactStore
        from schedcp.testbed import kernel as kernel_mod
        from schedcp.toolchain import build as build_mod
        from schedcp.toolchain import metadata, scx_source
        from schedcp.verifier import keys, tokens

        kernel = kernel_mod.cached("unstable")
        meta = None
        if scheduler.endswith(".bpf.c"):
            object_path = scx_source.build_for_kernel(scheduler, kernel).result.object_path
            scheduler = Path(scheduler).name.removesuffix(".bpf.c")
        else:
            object_path = build_mod.build_for_kernel(scheduler, kernel).object_path
            meta = metadata.get(scheduler) if (metadata.library_dir() / f"{scheduler}.toml").exists() else None
        sha = ArtifactStore(self.state).put(object_path, scheduler, meta)
        key = overrides.pop("key", None) or keys.load_or_create(self.state / "keys" / "verifier_ed25519")
        bound = {**(meta.validate_config(config) if meta and config else {})}
        bound |= {f"rodata.{k}": v for k, v in sorted((rodata or {}).items())}
        args = {
            "scheduler": scheduler,
            "object_sha256": sha,
            "config": bound,
            "report_digest": "d" * 64,
            "kernel": kernel.release,
            **overrides,
        }
        return tokens.issue_token(key, **args)
