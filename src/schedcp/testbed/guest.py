# SPDX-License-Identifier: Apache-2.0
"""The guest image: Debian stable userland plus SchedCP's node agent, as an initramfs.

Two layers, concatenated (the kernel unpacks every cpio archive it is given, in order):

* a **base** archive from Debian stable packages (busybox, a minimal Python, libbpf, bpftool),
  rebuilt only when the package set or the builder changes;
* an **overlay** archive with ``/init`` and the node agent's code, rebuilt whenever that code
  changes (it is a few kilobytes, so this costs milliseconds).

The unpacked base tree is kept: its ``ld.so`` lets the host run Debian stable's newer ``bpftool``
(for ``vmlinux.h`` with kfunc prototypes) without installing anything system-wide.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from schedcp.errors import NotReadyError, SchedcpError
from schedcp.paths import cache_dir, package_dir
from schedcp.testbed.cpio import CpioWriter, Entry
from schedcp.testbed.debian import PrivateApt, deb_field, unpack
from schedcp.testbed.extras import GuestExtras, Layer, build_layers

GUEST_SUITE = "trixie"
BUILDER_VERSION = "3"
# Debian stable's libbpf (1.5) is required: older ones reject SEC("struct_ops.s/...").
BASE_PACKAGES = ["busybox-static", "libbpf1", "bpftool"]
SKIP_PACKAGE_PREFIXES = ("linux-libc-dev", "libc-dev-bin", "rpcsvc-proto", "debconf", "tzdata", "media-types")
# Image variants: the default one stays small (fast boots); "build" adds a real toolchain for the
# parallel-build benchmark (make -j over a generated C project).
VARIANTS: dict[str, list[str]] = {
    "default": [],
    "build": ["make", "gcc", "libc6-dev"],
}
PRUNE = [
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
    "usr/share/lintian",
    "usr/share/bug",
    "usr/share/debconf",
    "usr/share/bash-completion",
]
PRUNE_PYTHON = ["test", "idlelib", "ensurepip", "tkinter", "turtledemo", "pydoc_data", "lib2to3", "venv"]


@dataclass
class GuestImage:
    """A built guest image: the combined initramfs plus what went into it."""

    initramfs: Path
    base_dir: Path
    manifest: dict

    @property
    def rootfs(self) -> Path:
        return self.base_dir / "rootfs"


def guest_dir() -> Path:
    return cache_dir() / "guest"


def _apt() -> PrivateApt:
    return PrivateApt(cache_dir() / "apt" / GUEST_SUITE, GUEST_SUITE)


def python_packages(apt: PrivateApt) -> list[str]:
    """python3.X-minimal and libpython3.X-stdlib for the suite's default Python."""
    versions = apt.show("python3-minimal")
    if not versions:
        raise SchedcpError(f"{GUEST_SUITE} has no python3-minimal", "retry `schedcp setup --refresh`")
    import re

    m = re.search(r"(python3\.\d+)-minimal", versions[0].depends)
    if not m:
        raise SchedcpError("cannot find the default python3.X-minimal", "retry later")
    return [f"{m.group(1)}-minimal", f"lib{m.group(1)}-stdlib"]


def node_sources() -> dict[str, bytes]:
    """The files of the overlay layer: /init and the node agent package."""
    files: dict[str, bytes] = {"init": (package_dir() / "testbed" / "guest-init.sh").read_bytes()}
    for path in sorted((package_dir() / "node").glob("*.py")):
        files[f"opt/schedcp/schedcp_node/{path.name}"] = path.read_bytes()
    workloads = package_dir() / "bench" / "guest"
    if workloads.is_dir():
        for path in sorted(workloads.glob("*.py")):
            files[f"opt/schedcp/schedcp_workloads/{path.name}"] = path.read_bytes()
    return files


def overlay_digest() -> str:
    h = hashlib.sha256()
    for name, data in node_sources().items():
        h.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return h.hexdigest()


def _pointer(variant: str) -> Path:
    return guest_dir() / ("current" if variant == "default" else f"current-{variant}")


def _check_variant(variant: str) -> list[str]:
    if variant not in VARIANTS:
        raise SchedcpError(f"unknown guest image variant {variant!r}", f"use one of {sorted(VARIANTS)}", code="usage")
    return VARIANTS[variant]


def _current_base(variant: str = "default") -> Path | None:
    pointer = _pointer(variant)
    if pointer.exists():
        base = guest_dir() / pointer.read_text().strip()
        if (base / "base.cpio").exists() and (base / "manifest.json").exists():
            return base
    return None


def build_base(*, refresh: bool = False, variant: str = "default", progress=print) -> Path:
    """Download, unpack and archive the base layer; reuse it when the package set is unchanged."""
    extra = _check_variant(variant)
    apt = _apt()
    apt.update(force=refresh)
    wanted = BASE_PACKAGES + python_packages(apt) + extra
    progress(f"resolving guest packages from Debian {GUEST_SUITE}: {', '.join(wanted)}")
    debs = apt.download_closure(wanted, set_name=variant)
    # -dev packages are only wanted when a variant asks for a toolchain (headers for gcc).
    keep_dev = any(p.endswith("-dev") for p in extra)
    chosen = [d for d in debs if not d.name.startswith(SKIP_PACKAGE_PREFIXES) and (keep_dev or "-dev_" not in d.name)]
    versions = {deb_field(d, "Package"): deb_field(d, "Version") for d in chosen}
    key = hashlib.sha256(
        json.dumps({"builder": BUILDER_VERSION, "packages": versions}, sort_keys=True).encode()
    ).hexdigest()[:16]
    base = guest_dir() / f"base-{key}"
    if (base / "base.cpio").exists() and not refresh:
        _pointer(variant).write_text(base.name)
        return base
    progress(f"building guest base image from {len(chosen)} packages")
    staging = base.with_name(base.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    rootfs = staging / "rootfs"
    for deb in chosen:
        unpack(deb, rootfs)
    _finish_rootfs(rootfs)
    _precompile_python(rootfs, progress)
    with (staging / "base.cpio").open("wb") as fh:
        writer = CpioWriter(fh)
        writer.add_tree(rootfs)
        writer.close()
    manifest = {"suite": GUEST_SUITE, "packages": versions, "built_at": time.time(), "builder": BUILDER_VERSION}
    (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    shutil.rmtree(base, ignore_errors=True)
    staging.rename(base)
    _pointer(variant).write_text(base.name)
    _remove_unreferenced_bases()
    return base


def _remove_unreferenced_bases(min_age_s: float = 3600) -> None:
    """Old bases pile up as Debian updates packages; keep the ones a pointer names."""
    referenced = {p.read_text().strip() for p in guest_dir().glob("current*")}
    for base in guest_dir().glob("base-*"):
        if base.name not in referenced and time.time() - base.stat().st_mtime > min_age_s:
            shutil.rmtree(base, ignore_errors=True)


def _finish_rootfs(rootfs: Path) -> None:
    # Debian's merged-/usr layout: base-files would normally create these links.
    for link, target in (("bin", "usr/bin"), ("sbin", "usr/sbin"), ("lib", "usr/lib"), ("lib64", "usr/lib64")):
        path = rootfs / link
        if not path.exists() and not path.is_symlink():
            path.symlink_to(target)
    for d in ("proc", "sys", "dev", "tmp", "run", "root", "etc", "var/tmp", "usr/local/bin", "opt/schedcp"):
        (rootfs / d).mkdir(parents=True, exist_ok=True)
    for rel in PRUNE:
        shutil.rmtree(rootfs / rel, ignore_errors=True)
    pythons = sorted((rootfs / "usr/bin").glob("python3.[0-9]*"))
    if not pythons:
        raise SchedcpError("the guest image has no python3", "check the Debian package set")
    py = pythons[0].name
    (rootfs / "usr/bin/python3").unlink(missing_ok=True)
    (rootfs / "usr/bin/python3").symlink_to(py)
    for sub in PRUNE_PYTHON:
        shutil.rmtree(rootfs / "usr/lib" / py / sub, ignore_errors=True)
    (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n")
    (rootfs / "etc/group").write_text("root:x:0:\nnogroup:x:65534:\n")
    (rootfs / "etc/hostname").write_text("schedcp-guest\n")


def guest_exec_prefix(rootfs: Path) -> list[str]:
    """Run a guest binary on the host through the guest's own dynamic loader and libraries."""
    ld = rootfs / "usr/lib64/ld-linux-x86-64.so.2"
    if not ld.exists():
        raise NotReadyError("the guest image has no dynamic loader", "run `schedcp setup`")
    libdirs = [rootfs / "usr/lib/x86_64-linux-gnu", rootfs / "lib/x86_64-linux-gnu"]
    return [str(ld), "--library-path", ":".join(str(d) for d in libdirs)]


def _precompile_python(rootfs: Path, progress) -> None:
    """Byte-compile the guest's stdlib with the guest's Python, so each boot skips that work."""
    py = sorted((rootfs / "usr/bin").glob("python3.[0-9]*"))[0]
    libdir = rootfs / "usr/lib" / py.name
    env = dict(os.environ, PYTHONHOME=str(rootfs / "usr"), PYTHONNOUSERSITE="1")
    env.pop("PYTHONPATH", None)
    progress("byte-compiling the guest's Python standard library")
    proc = subprocess.run(
        [
            *guest_exec_prefix(rootfs),
            str(py),
            "-m",
            "compileall",
            "-q",
            "-j",
            "0",
            "-d",
            f"/usr/lib/{py.name}",
            str(libdir),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode not in (0, 1):  # 1: a few files (e.g. bad-syntax tests) failed; harmless
        progress(f"warning: guest byte-compilation failed: {proc.stderr.strip()[-200:]}")


def _overlay_bytes() -> bytes:
    buf = io.BytesIO()
    writer = CpioWriter(buf)
    dirs: set[str] = set()
    for name, data in node_sources().items():
        parts = name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                writer.add(Entry(d, stat.S_IFDIR | 0o755))
        mode = 0o755 if name == "init" else 0o644
        writer.add(Entry(name, stat.S_IFREG | mode, data))
    writer.close()
    return buf.getvalue()


def ensure_image(
    *, build_if_missing: bool = True, variant: str = "default", progress=print, extras: GuestExtras | None = None
) -> GuestImage:
    """The combined initramfs for the current base, the user's extras (packages and host files,
    see testbed/extras.py) and the node code, building what is missing."""
    _check_variant(variant)
    base = _current_base(variant)
    if base is None:
        if not build_if_missing:
            hint = "run `schedcp setup`" + ("" if variant == "default" else f" --image {variant}")
            raise NotReadyError(f"the {variant} guest image is not built", hint)
        base = build_base(variant=variant, progress=progress)
    layers: list[Layer] = []
    if extras:
        apt = _apt()
        apt.update()
        layers = build_layers(extras, base, apt, progress)
    overlay_key = overlay_digest()[:16]
    layer_keys = "".join(f"-{layer.key[:8]}" for layer in layers)
    combined = guest_dir() / f"initramfs-{base.name[5:]}{layer_keys}-{overlay_key}.cpio"
    if not combined.exists():
        tmp = combined.with_suffix(f".tmp{os.getpid()}")
        with tmp.open("wb") as out:
            for part in [base / "base.cpio", *(layer.path for layer in layers)]:
                with part.open("rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
            out.write(_overlay_bytes())
        # QEMU runs unprivileged and must be able to read the image whatever umask built it (the
        # daemon's is 077); the image holds only public Debian packages and our own code.
        tmp.chmod(0o644)
        tmp.rename(combined)
        for old in guest_dir().glob("initramfs-*.cpio"):
            if old != combined and time.time() - old.stat().st_mtime > 600:
                old.unlink(missing_ok=True)
    manifest = json.loads((base / "manifest.json").read_text())
    manifest["overlay"] = overlay_key
    if layers:
        manifest["extras"] = {layer.path.name: layer.contents for layer in layers}
    return GuestImage(combined, base, manifest)


def image_status() -> dict:
    """What doctor reports: is there a base, is the overlay current with the installed node code."""
    base = _current_base()
    if base is None:
        return {"built": False, "reason": "no guest image; run `schedcp setup`"}
    manifest = json.loads((base / "manifest.json").read_text())
    overlay_key = overlay_digest()[:16]
    combined = guest_dir() / f"initramfs-{base.name[5:]}-{overlay_key}.cpio"
    pkgs = manifest.get("packages", {})
    return {
        "built": True,
        "base": base.name,
        "age_days": round((time.time() - manifest.get("built_at", 0)) / 86400, 1),
        "libbpf": pkgs.get("libbpf1"),
        "bpftool": pkgs.get("bpftool"),
        "python": next((f"{k} {v}" for k, v in pkgs.items() if k.startswith("python3.")), None),
        "overlay_current": combined.exists(),
        "builder_current": manifest.get("builder") == BUILDER_VERSION,
    }
