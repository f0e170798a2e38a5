# SPDX-License-Identifier: Apache-2.0
"""Attack replays from the security review (issue 12): each one must be refused or contained.

Every test plants what the attacker wanted (a key file, a ~/.ssh file, an attacker-owned kernel
directory, a listening unix socket, an old token) and shows it stays out of reach. Each would fail
with the fix removed: the unsandboxed compiler echoed the planted file's identifiers, the old
sandbox bound / (home directories and sockets included) with an unbounded /tmp, `cached()`
accepted paths, and the old key kept verifying tokens issued before an upgrade.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import stat
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from schedcp.analysis.sandbox import SafeReader, SandboxPolicy, run_sandboxed
from schedcp.errors import SchedcpError, UsageError
from schedcp.testbed import kernel as kernel_mod
from schedcp.toolchain import build, headers
from schedcp.verifier import keys, tokens
from schedcp.verifier.nonces import NonceStore

SANDBOX_PY = "/usr/bin/python3"  # the venv may live where the sandbox user cannot look
SMUGGLED = {
    "comment-between-hash-and-include": '#/**/include "{path}"',
    "comment-before-hash": '/**/#include "{path}"',
    "digraph": '%:include "{path}"',
    "import": '#import "{path}"',
    "backslash-newline": '#inc\\\nlude "{path}"',
}
SCHED_TAIL = (
    '\nchar _license[] SEC("license") = "GPL";\n'
    'SEC(".struct_ops.link") struct sched_ext_ops evil_ops = { .name = "evil" };\n'
)


@pytest.fixture
def secret_file(tmp_path: Path) -> tuple[Path, str]:
    """A fake private key outside every allowed directory; parsed as C its words become identifiers
    that clang's diagnostics would echo ("unknown type name 'MARKER...'")."""
    marker = "MARKER" + secrets.token_hex(8)
    path = tmp_path / "state" / "keys" / "verifier_ed25519"
    path.parent.mkdir(parents=True)
    path.write_text(f"{marker} {marker}_second\n{marker}_line2 = 1;\n")
    return path, marker


def _source(variant: str, path: Path) -> str:
    return '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n' + SMUGGLED[variant].format(path=path) + SCHED_TAIL


def _all_text(exc: build.BuildError) -> str:
    return " ".join([str(exc), exc.next_step, *(str(d) for d in exc.diagnostics)])


@pytest.mark.parametrize("variant", sorted(SMUGGLED))
def test_smuggled_include_is_refused_early(variant: str, secret_file: tuple[Path, str]) -> None:
    path, marker = secret_file
    with pytest.raises(build.BuildError) as info:
        build.check_includes(_source(variant, path))
    assert "not allowed" in str(info.value) and marker not in _all_text(info.value)


@pytest.mark.parametrize("variant", sorted(SMUGGLED))
def test_smuggled_include_cannot_reach_the_file_even_without_the_early_check(
    variant: str, secret_file: tuple[Path, str], unstable_kernel, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The sandbox is the boundary: with the regex switched off, clang still cannot see the file."""
    path, marker = secret_file
    monkeypatch.setattr(build, "check_includes", lambda *_a, **_k: None)
    with pytest.raises(build.BuildError) as info:
        build.build(
            None,
            headers.kernel_include_dir(unstable_kernel),
            target="t",
            source_text=_source(variant, path),
            source_name=f"evil_{variant.replace('-', '_')}.bpf.c",
        )
    text = _all_text(info.value)
    assert marker not in text
    assert "file not found" in text  # the compiler's view holds no such file


def test_diagnostics_never_quote_files_outside_the_submission(unstable_kernel, monkeypatch) -> None:
    """A readable file inside the sandbox that is not an allowed header: position kept, text dropped."""
    monkeypatch.setattr(build, "check_includes", lambda *_a, **_k: None)
    clang_header = next(Path(os.path.realpath(build.find_clang())).parents[1].rglob("include/stddef.h"), None)
    assert clang_header is not None, "clang's resource headers are part of its installation"
    src = f'#include "vmlinux.h"\n#define size_t MANGLED_BY_US\n#include "{clang_header}"\n' + SCHED_TAIL
    with pytest.raises(build.BuildError) as info:
        build.build(None, headers.kernel_include_dir(unstable_kernel), target="t", source_text=src, source_name="q.c")
    outside = [d for d in info.value.diagnostics if d.file == "<outside>"]
    assert outside and all("not shown" in d.message for d in outside)
    assert all(d.file in ("q.c", "<outside>") or d.file.startswith("<") for d in info.value.diagnostics)


def test_local_headers_beside_the_source_build_but_cannot_reach_outside(tmp_path: Path, unstable_kernel) -> None:
    src_dir = tmp_path / "multi"
    src_dir.mkdir()
    (src_dir / "helpers.h").write_text("#define MY_SLICE 5000000ULL\n")
    main = src_dir / "multi.bpf.c"
    main.write_text(
        '#include "vmlinux.h"\n#include <bpf/bpf_helpers.h>\n#include "helpers.h"\n'
        "unsigned long long slice = MY_SLICE;" + SCHED_TAIL
    )
    inc = headers.kernel_include_dir(unstable_kernel)
    assert build.build(main, inc, target="t", source_dir=src_dir).object_path.is_file()
    (src_dir / "helpers.h").write_text('#include "../outside.h"\n')
    with pytest.raises(build.BuildError, match="not allowed"):
        build.build(main, inc, target="t", source_dir=src_dir)
    (src_dir / "helpers.h").unlink()
    (src_dir / "helpers.h").symlink_to(tmp_path / "outside.h")
    (tmp_path / "outside.h").write_text("#define MY_SLICE 1\n")
    with pytest.raises(UsageError, match="not a regular file"):
        build.build(main, inc, target="t", source_dir=src_dir)


def test_macro_bomb_is_bounded(unstable_kernel, monkeypatch: pytest.MonkeyPatch) -> None:
    """The review's bomb (a doubling macro chain, under 1 KB) took root's clang to 1 GB in 10 s."""
    monkeypatch.setattr(build, "BUILD_MEMORY_MB", 512)
    chain = "\n".join(f"#define A{i} A{i - 1} A{i - 1}" for i in range(1, 41))
    src = f'#include "vmlinux.h"\n#define A0 struct_ops x\n{chain}\nint y = A40;\n'
    assert len(src) < 1024
    t0 = time.monotonic()
    with pytest.raises(build.BuildError) as info:
        build.build(None, headers.kernel_include_dir(unstable_kernel), target="t", source_text=src, source_name="b.c")
    assert time.monotonic() - t0 < 60
    assert "exceeded the compile limits" in info.value.cause or "did not finish" in info.value.cause
    assert "macro" in info.value.next_step


# -- kernel names --------------------------------------------------------------------------------


@pytest.fixture
def attacker_kernel(tmp_path: Path, unstable_kernel) -> Path:
    """A directory an attacker controls that looks like a cached kernel."""
    evil = tmp_path / "evil-kernel"
    evil.mkdir()
    (evil / "include").mkdir()
    (evil / "include" / "vmlinux.h").write_text("/* attacker's header */\n")
    (evil / "vmlinuz").write_bytes(b"not a kernel")
    info = json.loads((unstable_kernel.dir / "kernel.json").read_text()) | {"release": "0.0.0-attacker"}
    (evil / "kernel.json").write_text(json.dumps(info))
    return evil


@pytest.mark.parametrize("form", ["absolute", "relative", "dotdot"])
def test_kernel_spec_that_is_a_path_is_refused(form: str, attacker_kernel: Path, monkeypatch) -> None:
    monkeypatch.chdir(attacker_kernel.parent)
    spec = {
        "absolute": str(attacker_kernel),
        "relative": f"./{attacker_kernel.name}",
        "dotdot": os.path.relpath(attacker_kernel, kernel_mod.kernels_dir()),
    }[form]
    with pytest.raises(UsageError, match="not the name of a cached kernel"):
        kernel_mod.cached(spec)
    with pytest.raises(UsageError):
        kernel_mod.check_name(spec)


def test_daemon_refuses_a_kernel_path(tmp_path: Path, attacker_kernel: Path) -> None:
    from schedcp.daemon.testing import running_daemon

    src = '#include "vmlinux.h"\n' + SCHED_TAIL
    with running_daemon(tmp_path / "d") as client:
        with pytest.raises(SchedcpError) as err:
            client.verify(src, "k.bpf.c", kernel=str(attacker_kernel))
        assert err.value.code == "usage" and "name of a cached kernel" in err.value.cause


def test_daemon_report_never_carries_a_smuggled_file(tmp_path: Path, secret_file: tuple[Path, str]) -> None:
    """The review's attack, end to end: an allowed client points an include at the daemon's key."""
    from schedcp.daemon.testing import running_daemon

    path, marker = secret_file
    with running_daemon(tmp_path / "d") as client:
        for variant in sorted(SMUGGLED):
            result = client.verify(_source(variant, path), "evil.bpf.c")
            assert result["report"]["verdict"] == "fail" and result["token_id"] is None
            assert marker not in json.dumps(result)


# -- the MCP sandbox -----------------------------------------------------------------------------


@pytest.fixture
def planted_home() -> Iterator[Path]:
    """A user's home with a readable fake ssh key (mode 0644: only the sandbox's view can hide it)."""
    home = Path(tempfile.mkdtemp(prefix="schedcp-victim-", dir="/home"))
    ssh = home / ".ssh"
    ssh.mkdir()
    key = ssh / "id_ed25519"
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY----- planted-" + secrets.token_hex(8) + "\n")
    for p in (home, ssh):
        p.chmod(0o755)
    key.chmod(0o644)
    try:
        yield home
    finally:
        shutil.rmtree(home, ignore_errors=True)


def test_sandboxed_command_cannot_see_home_directories(planted_home: Path) -> None:
    key = planted_home / ".ssh" / "id_ed25519"
    secret = key.read_text().strip()
    res = run_sandboxed(["sh", "-c", f"cat {key}; ls -a /home /root; cat /root/.ssh/* 2>&1; ls /run /var"])
    assert secret not in res["stdout"] + res["stderr"]
    assert "No such file" in res["stderr"] or "No such file" in res["stdout"]


def test_reader_refuses_the_servers_own_pid_home_cwds_and_credentials(planted_home: Path) -> None:
    import subprocess

    with pytest.raises(UsageError) as err:
        SafeReader().with_workload_cwd(os.getpid())
    assert err.value.code == "denied"
    proc = subprocess.Popen(["sleep", "30"], cwd=planted_home)
    try:
        with pytest.raises(UsageError) as err:
            SafeReader().with_workload_cwd(proc.pid)
        assert err.value.code == "denied"
    finally:
        proc.kill()
        proc.wait()
    with pytest.raises(UsageError) as err:
        SafeReader([str(planted_home)]).read(str(planted_home / ".ssh" / "id_ed25519"))
    assert err.value.code == "denied"
    with pytest.raises(UsageError):
        run_sandboxed(["true"], SandboxPolicy(ro_binds=[str(planted_home)]))


def test_sandbox_cannot_connect_to_outside_unix_sockets(tmp_path: Path) -> None:
    """A path socket made visible through an input bind, and an abstract socket: neither is reachable."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    tmp_path.chmod(0o755)
    path_srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    path_srv.bind(str(shared / "agent.sock"))
    os.chmod(shared / "agent.sock", 0o777)
    abstract = "\0schedcp-test-" + secrets.token_hex(6)
    abs_srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    abs_srv.bind(abstract)
    accepted: list[str] = []

    def accept(srv: socket.socket, name: str) -> None:
        srv.listen(1)
        srv.settimeout(8)
        try:
            srv.accept()
            accepted.append(name)
        except OSError:
            pass

    threads = [threading.Thread(target=accept, args=(s, n)) for s, n in ((path_srv, "path"), (abs_srv, "abstract"))]
    for t in threads:
        t.start()
    code = (
        "import socket, sys\n"
        "for addr in sys.argv[1:]:\n"
        "    try:\n"
        "        s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(addr.replace('@', '\\0', 1))\n"
        "        print('CONNECTED', addr)\n"
        "    except OSError as e:\n"
        "        print('refused', addr, e)\n"
    )
    res = run_sandboxed(
        [SANDBOX_PY, "-c", code, "/inputs/0-shared/agent.sock", "@" + abstract[1:]],
        SandboxPolicy(timeout_s=20, ro_binds=[str(shared)]),
    )
    for t in threads:
        t.join()
    path_srv.close()
    abs_srv.close()
    assert "CONNECTED" not in res["stdout"], res
    assert res["stdout"].count("refused") == 2
    assert not accepted


def test_sandbox_tmp_is_size_bounded() -> None:
    res = run_sandboxed(
        ["sh", "-c", "df -k /tmp | tail -1; dd if=/dev/zero of=/tmp/fill bs=1M count=64 2>&1; echo rc=$?"],
        SandboxPolicy(work_mb=16),
    )
    size_kb = int(res["stdout"].splitlines()[0].split()[1])
    assert size_kb <= 16 * 1024
    assert "No space left" in res["stdout"] and "rc=0" not in res["stdout"]


def test_memory_limit_covers_the_whole_sandbox() -> None:
    """Eight processes of 48 MB each stay under a 128 MB RLIMIT_AS apiece, but not under 128 MB together."""
    code = (
        "import os, time\n"
        "kids = []\n"
        "for _ in range(8):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        b = bytearray(48 * 1024 * 1024)\n"
        "        for i in range(0, len(b), 4096): b[i] = 1\n"
        "        time.sleep(3); os._exit(0)\n"
        "    kids.append(pid)\n"
        "print(sum(os.waitstatus_to_exitcode(os.waitpid(p, 0)[1]) == 0 for p in kids), 'survived')\n"
    )
    res = run_sandboxed([SANDBOX_PY, "-c", code], SandboxPolicy(timeout_s=30, memory_mb=128))
    assert res["limits"]["cgroup"] in ("v1", "v2"), res["limits"]
    survived = int(res["stdout"].split()[0]) if res["stdout"].strip() else 0
    assert survived < 8 and res.get("oom_killed")


# -- keys and tokens -------------------------------------------------------------------------------

OBJ, RPT, KERNEL = "a" * 64, "b" * 64, "7.2.13+deb14-cloud-amd64"


def _issue(key, config: dict | None = None) -> str:
    return tokens.issue_token(
        key, scheduler="vtime", object_sha256=OBJ, config=config or {}, report_digest=RPT, kernel=KERNEL, ttl_s=3600
    )


def _check(token: str, key_path: Path, store: NonceStore, config: dict | None = None):
    return tokens.verify_token(
        token,
        object_sha256=OBJ,
        config=config or {},
        kernel=KERNEL,
        public_key=keys.load_public(key_path),
        nonce_store=store,
    )


def test_upgrade_rotates_the_key_and_refuses_every_earlier_token(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "verifier_ed25519"
    old_key = keys.load_or_create(key_path)
    stolen = _issue(old_key)  # e.g. forged by someone who read the key before the fix
    # The state a pre-epoch daemon left behind: the same key, no epoch record.
    keys.epoch_path(key_path).unlink()
    with NonceStore(tmp_path / "nonces.sqlite") as store:
        with pytest.raises(tokens.TokenError) as err:
            _check(stolen, key_path, store)
        assert err.value.code == "token_invalid"
        new_key = keys.load_or_create(key_path)
        assert keys.key_id(new_key.public_key()) != keys.key_id(old_key.public_key())
        assert keys.key_epoch(key_path) == keys.KEY_EPOCH
        fresh = _issue(new_key)
        assert _check(fresh, key_path, store).kid == keys.key_id(new_key.public_key())


def test_forged_token_is_refused(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key_path = tmp_path / "keys" / "verifier_ed25519"
    keys.load_or_create(key_path)
    forged = _issue(Ed25519PrivateKey.generate())
    with NonceStore(tmp_path / "nonces.sqlite") as store, pytest.raises(tokens.TokenError) as err:
        _check(forged, key_path, store)
    assert err.value.code == "token_invalid"


def test_key_custody(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "verifier_ed25519"
    keys.load_or_create(key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_path.parent.stat().st_mode) == 0o700
    key_path.chmod(0o640)
    with pytest.raises(SchedcpError) as err:
        keys.load_or_create(key_path)
    assert err.value.code == "key_insecure"
    key_path.chmod(0o600)
    os.chown(key_path, 65534, 65534)  # a key planted by another user is never used
    with pytest.raises(SchedcpError) as err:
        keys.load_or_create(key_path)
    assert err.value.code == "key_insecure"


def test_config_mismatch_is_refused(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "verifier_ed25519"
    token = _issue(keys.load_or_create(key_path), {"slice_us": 5000})
    with NonceStore(tmp_path / "nonces.sqlite") as store:
        with pytest.raises(tokens.TokenError) as err:
            _check(token, key_path, store, {"slice_us": 20000})
        assert err.value.code == "token_mismatch" and "configuration" in err.value.cause
        with pytest.raises(tokens.TokenError):
            _check(token, key_path, store, {})
        assert _check(token, key_path, store, {"slice_us": 5000})


def test_daemon_config_is_validated_against_declared_tunables(unstable_kernel) -> None:
    from schedcp.daemon import verify_service
    from schedcp.toolchain import metadata
    from schedcp.verifier import pipeline

    lib = metadata.get("vtime")
    text = lib.source_path.read_text()
    assert verify_service.tunables_for(text, None).name == "vtime"
    with pytest.raises(UsageError, match="tunables"):
        verify_service.tunables_for(text + "\n// changed\n", None)
    tunable = lib.tunables[0]
    meta = {"name": "mine", "title": "My policy", "description": "a policy submitted with its own tunables"}
    declared = verify_service.tunables_for(text, meta | {"tunables": [tunable.model_dump()]})
    value = tunable.max if tunable.type != "bool" else 1
    opts = pipeline.VerifyOptions(
        target=str(lib.source_path),
        config={tunable.name: str(value)},
        static_only=True,
        meta=declared,
        kernel="unstable",
    )
    report = pipeline.verify(opts)
    assert report.config == {tunable.name: value}
    with pytest.raises(UsageError):
        pipeline.verify(
            pipeline.VerifyOptions(
                target=str(lib.source_path), config={"no_such_knob": "1"}, static_only=True, meta=declared
            )
        )


# -- the micro-VM: QEMU's confinement and the guest's workload user ----------------------------------


@pytest.fixture(scope="module")
def vm():
    from schedcp.testbed.vm import MicroVM, VMConfig

    with MicroVM(VMConfig(cpus=2)) as machine:
        yield machine


@pytest.mark.vm
def test_qemu_runs_unprivileged_and_sandboxed(vm) -> None:
    status = Path(f"/proc/{vm.proc.pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    uids = fields["Uid"].split()
    assert os.geteuid() != 0 or all(u != "0" for u in uids), fields["Uid"]
    assert fields["Seccomp"].strip() == "2"  # QEMU's -sandbox filter is loaded
    assert int(fields["CapEff"].strip(), 16) == 0
    cmdline = Path(f"/proc/{vm.proc.pid}/cmdline").read_bytes().split(b"\0")
    assert not any(b"/.cache/" in arg or b"node.sock" in arg for arg in cmdline)  # no host paths of ours


@pytest.mark.vm
def test_guest_workload_cannot_touch_measurement_files(vm) -> None:
    from schedcp.node.runner import WORKLOAD_USER

    script = vm.node.put_file("verifier/probe.py", b"print('measurement')\n")
    res = vm.node.run(["id", "-u"], 30, user=WORKLOAD_USER)
    assert res.stdout.strip() not in ("", "0")
    tamper = f"echo 'print(\"forged\")' > {script}; echo rc=$?; sleep 300 &"
    res = vm.node.run(["sh", "-c", tamper], 30, user=WORKLOAD_USER)
    assert "Permission denied" in res.stderr and "rc=0" not in res.stdout
    assert vm.node.run(["python3", script], 30).stdout.strip() == "measurement"
    left = vm.node.run(["sh", "-c", "ps -o user,args | grep 'sleep 300' | grep -v grep || true"], 30)
    assert "sleep 300" not in left.stdout  # nothing the workload started outlives its run


@pytest.mark.vm
def test_verifier_workload_cannot_forge_the_evidence(tmp_path: Path) -> None:
    """The forgery the review described: the caller's workload (run before the scheduler stages)
    swaps the measurement script for a wrapper that runs the real load and then rewrites its
    results to look fair, so an unfair scheduler would pass the dynamic stage. As the guest's
    workload user it cannot replace the script, and the scheduler's unfairness is still caught."""
    from schedcp.verifier import load
    from schedcp.verifier.pipeline import VerifyOptions, verify

    corpus = Path(__file__).parent / "corpus" / "bad" / "pid_unfair.bpf.c"
    seconds = 3
    script = f"/tmp/schedcp-node/{load.GUEST_NAME}"
    wrapper = (
        "import json, subprocess, sys\n"
        "d = json.loads(subprocess.run([sys.executable, '/tmp/orig.py', *sys.argv[1:]], capture_output=True,"
        " text=True).stdout)\n"
        "eq = [t for n, t in d['tasks'].items() if n.startswith(('equal', 'late'))]\n"
        "top = max(eq, key=lambda t: t['cpu_s'])\n"
        "for t in eq:\n    t['cpu_s'], t['run_s'] = top['cpu_s'], top['run_s']\n"
        "for t in d['tasks'].values():\n"
        "    for k, v in (('max_gap_s', 0.05), ('lat_p99_ms', 5.0), ('first_progress_s', 0.05)):\n"
        "        if k in t:\n            t[k] = v\n"
        "    if 'chunks' in t:\n        t['chunks'] = max(t['chunks'], 1)\n"
        "print(json.dumps(d))\n"
    )
    forge = f"import shutil\nshutil.copy({script!r}, '/tmp/orig.py')\nopen({script!r}, 'w').write({wrapper!r})\n"
    opts = VerifyOptions(
        target=str(corpus),
        workload=f"python3 -c {shlex.quote(forge)}",
        seconds=seconds,
        issue_token=False,
        key_path=tmp_path / "key",
    )
    report = verify(opts)
    dynamic = next(s for s in report.stages if s.name == "dynamic")
    assert report.verdict == "fail" and dynamic.status == "failed", report.reason
    assert any(f.id.startswith("dyn-") for f in dynamic.findings)
