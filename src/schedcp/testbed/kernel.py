# SPDX-License-Identifier: Apache-2.0
"""Kernel provider: a sched_ext-enabled kernel for the micro-VM, resolved from Debian by name.

No version is hard-coded. A *kernel spec* names where to look:

* ``unstable`` (default), ``backports``, ``experimental``: the current ``linux-image-cloud-amd64``
  of that suite, followed to its ``linux-binary-<release>`` package;
* a version prefix such as ``6.19`` or ``7.2``: the newest ``linux-binary-<prefix>.*-cloud-amd64``
  in any of those suites (this is how older generations stay reachable);
* a path to a user's own ``vmlinuz``/``bzImage`` — only for :func:`fetch` and :func:`for_cli`,
  which import it into the caller's own cache under its release name.

Everything else (:func:`cached`, and through it the daemon, MCP tools and every VM) accepts only
the *name* of a cached kernel: a suite alias or a release directory name, matched against a strict
grammar and resolved inside the cache directory. A path can never choose the ``vmlinux.h`` root
compiles against, the ``vmlinuz`` QEMU boots or the kernel release written into a token.

Each resolved kernel is cached under ``<cache>/kernels/<release>/`` with ``vmlinuz``, the
``vmlinux`` extracted from it (for BTF), the ``config`` when Debian ships one, ``vmlinux.h`` and
``kernel.json``. sched_ext support is checked from the config line when there is one, otherwise
from ``struct sched_ext_ops`` in the kernel's BTF.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.paths import cache_dir
from schedcp.testbed.debian import PrivateApt, unpack, version_key

SUITES = {"unstable": "unstable", "backports": "trixie-backports", "experimental": "experimental"}
DEFAULT_SPEC = "unstable"
FLAVOUR = "cloud-amd64"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"
# A kernel name: a suite alias ("unstable"), a version prefix ("6.19") or a release directory
# ("7.2.13+deb14-cloud-amd64"). No path separators, no leading dot, no "..".
KERNEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")


@dataclass
class KernelInfo:
    release: str  # e.g. 7.2.13+deb14-cloud-amd64
    version: str  # Debian package version
    spec: str  # what the user asked for
    source: str  # suite name or "user"
    sched_ext: bool
    sched_ext_evidence: str
    has_config: bool
    fetched_at: float


@dataclass
class Kernel:
    """A cached kernel ready to boot."""

    dir: Path
    info: KernelInfo

    @property
    def vmlinuz(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def vmlinux(self) -> Path:
        return self.dir / "vmlinux"

    @property
    def config(self) -> Path | None:
        path = self.dir / "config"
        return path if path.exists() else None

    @property
    def vmlinux_h(self) -> Path:
        return self.dir / "vmlinux.h"

    @property
    def release(self) -> str:
        return self.info.release

    @property
    def major_minor(self) -> tuple[int, int]:
        m = re.match(r"(\d+)\.(\d+)", self.info.release)
        return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def kernels_dir() -> Path:
    return cache_dir() / "kernels"


def _apt(suite: str) -> PrivateApt:
    return PrivateApt(cache_dir() / "apt" / suite, suite)


def extract_vmlinux(vmlinuz: Path, out: Path) -> None:
    """Find the zstd stream inside a bzImage and decompress it to an ELF vmlinux."""
    data = vmlinuz.read_bytes()
    zstd = shutil.which("zstd")
    if zstd is None:
        raise NotReadyError("zstd is not installed", "apt-get install zstd")
    start = data.find(ZSTD_MAGIC)
    while start != -1:
        proc = subprocess.run([zstd, "-dcq"], input=data[start:], capture_output=True)
        # zstd complains about trailing garbage after the frame but still writes the frame.
        if proc.stdout[:4] == b"\x7fELF":
            out.write_bytes(proc.stdout)
            return
        start = data.find(ZSTD_MAGIC, start + 1)
    raise SchedcpError(
        f"no zstd-compressed vmlinux inside {vmlinuz}",
        "use a kernel built with CONFIG_KERNEL_ZSTD, or pass --vmlinux with an uncompressed image",
        code="kernel_format",
    )


def btf_has_sched_ext(vmlinux: Path) -> bool:
    """True when the kernel's BTF describes struct sched_ext_ops (so sched_ext is built in)."""
    from elftools.elf.elffile import ELFFile

    with vmlinux.open("rb") as fh:
        elf = ELFFile(fh)
        section = elf.get_section_by_name(".BTF")
        if section is None:
            raise SchedcpError(
                f"{vmlinux} has no .BTF section",
                "use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
                code="kernel_no_btf",
            )
        return b"\x00sched_ext_ops\x00" in section.data()


def check_sched_ext(kdir: Path) -> tuple[bool, str]:
    config = kdir / "config"
    if config.exists():
        for line in config.read_text(errors="replace").splitlines():
            if line.startswith("CONFIG_SCHED_CLASS_EXT="):
                return line.strip() == "CONFIG_SCHED_CLASS_EXT=y", f"config: {line.strip()}"
        return False, "config: CONFIG_SCHED_CLASS_EXT is not set"
    ok = btf_has_sched_ext(kdir / "vmlinux")
    return ok, "BTF: struct sched_ext_ops " + ("present" if ok else "absent")


def _release_from_binary(name: str) -> str:
    m = re.match(r"linux-binary-(?:unsigned-)?(.+)$", name)
    return m.group(1) if m else name


def resolve(spec: str, *, refresh: bool = False) -> tuple[str, str, str]:
    """Map a spec to (suite, linux-binary package, version) without downloading the kernel."""
    if spec in SUITES:
        suite = SUITES[spec]
        apt = _apt(suite)
        apt.update(force=refresh)
        metas = apt.show(f"linux-image-{FLAVOUR}")
        if not metas:
            raise SchedcpError(
                f"suite {suite} has no linux-image-{FLAVOUR}",
                "pick another kernel with --kernel (unstable, backports, experimental or a version like 6.19)",
                code="kernel_not_found",
            )
        m = re.search(rf"linux-image-(\S+-{FLAVOUR})", metas[0].depends)
        if not m:
            raise SchedcpError(f"cannot follow linux-image-{FLAVOUR} {metas[0].version} to a kernel", "retry later")
        release = m.group(1)
        binary = f"linux-binary-{release}"
        versions = apt.show(binary)
        if not versions:
            raise SchedcpError(f"{binary} is not in {suite}", "retry `schedcp setup --refresh` later")
        return suite, binary, versions[0].version
    if re.fullmatch(r"\d+\.\d+(\.\d+)?", spec):
        best: tuple[str, str, str] | None = None
        for suite in SUITES.values():
            apt = _apt(suite)
            apt.update(force=refresh)
            names = apt.search_names(rf"^linux-binary-{re.escape(spec)}[.+].*-{FLAVOUR}$")
            names += apt.search_names(rf"^linux-binary-{re.escape(spec)}-{FLAVOUR}$")
            for name in names:
                if "unsigned" in name:
                    continue
                for v in apt.show(name)[:1]:
                    if best is None or version_key(v.version) > version_key(best[2]):
                        best = (suite, name, v.version)
        if best is None:
            raise SchedcpError(
                f"no Debian cloud kernel {spec}.x found in {', '.join(SUITES.values())}",
                "old versions leave the archive; try --kernel unstable or a newer version",
                code="kernel_not_found",
            )
        return best
    raise UsageError(
        f"unknown kernel spec {spec!r}",
        "use unstable, backports, experimental, a version such as 6.19, or a path to a vmlinuz",
    )


def _finish(kdir: Path, info: KernelInfo) -> Kernel:
    if not (kdir / "vmlinux").exists():
        extract_vmlinux(kdir / "vmlinuz", kdir / "vmlinux")
    ok, evidence = check_sched_ext(kdir)
    info.sched_ext = ok
    info.sched_ext_evidence = evidence
    info.has_config = (kdir / "config").exists()
    (kdir / "kernel.json").write_text(json.dumps(asdict(info), indent=2))
    if not ok:
        raise SchedcpError(
            f"kernel {info.release} has no sched_ext ({evidence})",
            "choose a kernel with CONFIG_SCHED_CLASS_EXT=y, e.g. --kernel unstable",
            code="kernel_no_sched_ext",
        )
    return Kernel(kdir, info)


def fetch(spec: str = DEFAULT_SPEC, *, refresh: bool = False, progress=print) -> Kernel:
    """Resolve, download and cache a kernel; a no-op when it is cached already."""
    if is_path_spec(spec):
        return import_user_kernel(Path(spec), progress=progress)
    check_name(spec)
    try:
        suite, binary, version = resolve(spec, refresh=refresh)
    except SchedcpError as exc:
        # Offline or archive trouble: a kernel cached earlier for this spec is still good to use.
        if exc.code in ("archive_error", "archive_unreachable"):
            try:
                kernel = cached(spec)
            except SchedcpError:
                raise exc from None
            progress(f"warning: {exc.cause}; using the cached kernel {kernel.release}")
            return kernel
        raise
    release = _release_from_binary(binary)
    kdir = kernels_dir() / release
    if (kdir / "kernel.json").exists() and (kdir / "vmlinuz").exists():
        kernel = load_cached(kdir)
        _remember_alias(spec, release)
        return kernel
    progress(f"downloading {binary} {version} from {suite}")
    apt = _apt(suite)
    with tempfile.TemporaryDirectory(prefix="schedcp-kernel-") as tmp:
        tmpdir = Path(tmp)
        debs = apt.download([binary], tmpdir / "debs")
        # The config moved from linux-binary to linux-base in newer packaging; take it where it is.
        base = f"linux-base-{release}"
        if apt.show(base):
            debs += apt.download([base], tmpdir / "debs")
        root = tmpdir / "root"
        for deb in debs:
            unpack(deb, root)
        vmlinuz = _first(root, [f"usr/lib/modules/{release}/vmlinuz", f"boot/vmlinuz-{release}"])
        if vmlinuz is None:
            raise SchedcpError(f"{binary} holds no vmlinuz", "report this packaging change; use --kernel PATH")
        config = _first(root, [f"usr/lib/modules/{release}/config", f"boot/config-{release}"])
        staging = kdir.with_name(kdir.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy2(vmlinuz, staging / "vmlinuz")
        if config is not None:
            shutil.copy2(config, staging / "config")
        info = KernelInfo(release, version, spec, suite, False, "", False, time.time())
        progress(f"extracting vmlinux from {release}")
        kernel = _finish(staging, info)
        shutil.rmtree(kdir, ignore_errors=True)
        staging.rename(kdir)
    _remember_alias(spec, release)
    return Kernel(kdir, kernel.info)


def import_user_kernel(vmlinuz: Path, *, config: Path | None = None, progress=print) -> Kernel:
    if not vmlinuz.is_file():
        raise UsageError(f"kernel image {vmlinuz} does not exist", "pass the path of a bzImage/vmlinuz file")
    data = vmlinuz.read_bytes()
    m = re.search(rb"(\d+\.\d+\.\d+[^\s\x00]*) \(", data)
    release = (m.group(1).decode(errors="replace") if m else vmlinuz.stem) + "-user"
    kdir = kernels_dir() / re.sub(r"[^\w.+-]", "_", release)
    kdir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(vmlinuz, kdir / "vmlinuz")
    if config is not None:
        shutil.copy2(config, kdir / "config")
    progress(f"importing user kernel {release}")
    info = KernelInfo(release, "user", str(vmlinuz), "user", False, "", False, time.time())
    kernel = _finish(kdir, info)
    _remember_alias(str(vmlinuz), release)
    return kernel


def _first(root: Path, candidates: list[str]) -> Path | None:
    for rel in candidates:
        if (root / rel).exists():
            return root / rel
    return None


def _aliases_path() -> Path:
    return kernels_dir() / "aliases.json"


def _remember_alias(spec: str, release: str) -> None:
    path = _aliases_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    aliases = json.loads(path.read_text()) if path.exists() else {}
    aliases[spec] = release
    path.write_text(json.dumps(aliases, indent=2))


def load_cached(kdir: Path) -> Kernel:
    data = json.loads((kdir / "kernel.json").read_text())
    return Kernel(kdir, KernelInfo(**data))


def check_name(spec: object) -> str:
    """`spec` if it is a kernel *name*; a UsageError for paths and anything else."""
    if not isinstance(spec, str) or not KERNEL_NAME.match(spec) or ".." in spec:
        shown = repr(spec)[:80]
        raise UsageError(
            f"kernel {shown} is not the name of a cached kernel (paths are not accepted here)",
            "use unstable, backports, 6.19 or a release listed by `schedcp setup --list`; import your own "
            "vmlinuz with `schedcp setup --kernel PATH` and use the name it prints",
        )
    return spec


def cached(spec: str = DEFAULT_SPEC) -> Kernel:
    """The cached kernel named `spec` (an alias or a release directory), without touching the network."""
    check_name(spec)
    path = _aliases_path()
    aliases = json.loads(path.read_text()) if path.exists() else {}
    release = aliases.get(spec)
    if release is None and (kernels_dir() / spec / "kernel.json").exists():
        release = spec
    if release is None:
        raise NotReadyError(
            f"no cached kernel for {spec!r}",
            f"run `schedcp setup --kernel {spec}`" if spec != DEFAULT_SPEC else "run `schedcp setup`",
        )
    if not isinstance(release, str) or not KERNEL_NAME.match(release) or ".." in release:
        raise SchedcpError(f"the kernel cache names a bad release {release!r}", "rerun `schedcp setup`", code="cache")
    root = kernels_dir().resolve()
    kdir = (kernels_dir() / release).resolve()
    if kdir.parent != root:
        raise SchedcpError(f"kernel cache entry {release} leads outside {root}", "rerun `schedcp setup`", code="cache")
    if not (kdir / "kernel.json").exists():
        raise NotReadyError(f"kernel cache {kdir} is incomplete", f"run `schedcp setup --kernel {spec}`")
    return load_cached(kdir)


def is_path_spec(spec: str) -> bool:
    return "/" in spec or spec.startswith(".") or spec.endswith(("vmlinuz", "bzImage"))


def for_cli(spec: str, *, progress=print) -> Kernel:
    """A kernel for a command-line user acting for themselves: a cached name, or a path to their own
    vmlinuz (imported into their cache). Never call this for the daemon or an MCP client."""
    if is_path_spec(spec):
        return import_user_kernel(Path(spec), progress=progress)
    return cached(spec)


def list_cached() -> list[Kernel]:
    root = kernels_dir()
    if not root.exists():
        return []
    return [load_cached(d) for d in sorted(root.iterdir()) if (d / "kernel.json").exists()]
