# SPDX-License-Identifier: Apache-2.0
"""What a user adds to the guest: Debian packages (``--package``) and host files (``--with``).

The guest image is a stack of newc cpio archives that the kernel unpacks in order (see
testbed/guest.py). Extras become two more layers between the base and the node overlay:

* a **package layer**: the named packages from Debian stable (the suite the base comes from) with
  their dependency closure, minus the packages the base already holds at the same version. Cached
  by the base it extends and the exact package versions, so a second run costs nothing.
* a **file layer**: host files and directories, content-hashed. An ELF program or library brings
  the shared libraries it needs that the guest does not have (read from its DT_NEEDED entries with
  pyelftools and looked up where the host's dynamic loader would find them); when one cannot be
  found the error names it.

Packages are unpacked, never configured: maintainer scripts do not run, so alternatives
(``cc``, ``awk``) and generated files do not exist in the guest. Host files may only land under
the directories in ``GUEST_ROOTS`` (by default ``/work``, which is where user commands start), so
nothing a user sends can replace the guest's own system or the node agent.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import posixpath
import re
import shutil
import stat
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from schedcp.errors import SchedcpError, UsageError
from schedcp.paths import cache_dir
from schedcp.testbed.cpio import CpioWriter, Entry

LAYER_VERSION = "2"
# Where --with files go by default, and the working directory of user commands that bring files.
GUEST_WORKDIR = "/work"
GUEST_ROOTS = ("/work", "/opt", "/usr/local", "/srv", "/home", "/root")
# Inside the allowed roots, still the guest's own: the node agent and the busybox applet links.
GUEST_RESERVED = ("/opt/schedcp", "/usr/local/bin", "/usr/local/sbin")
# Mounted over at boot (tmpfs), so files put there would vanish.
GUEST_MOUNTED = ("/tmp", "/dev", "/proc", "/sys", "/run")
MAX_PACKAGES = 32
MAX_WITH = 32
MAX_FILE_BYTES = 1 << 30  # all --with content together; it lives in guest RAM
MAX_FILES = 50_000
GUEST_LIB_DIR = "usr/lib/x86_64-linux-gnu"
GUEST_LIB_DIRS = (GUEST_LIB_DIR, "lib/x86_64-linux-gnu", "usr/lib64", "lib64", "usr/lib", "lib")
HOST_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64", "/lib", "/usr/lib")
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian")
# Merged /usr: the base image links these to usr/; a package layer must not replace the links.
MERGED = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
# Graphics driver stacks: libraries that a GPU API loads at run time (dlopen), never by DT_NEEDED.
# The micro-VM has no GPU, and together they are half the size of a typical closure (stress-ng's
# GPU stressor pulls in LLVM). Left out unless asked for by name or needed by a program's DT_NEEDED.
HEADLESS_SKIP = ("mesa-libgallium", "libegl-mesa0", "libgl1-mesa-dri", "mesa-vulkan-drivers", "libllvm", "libz3-")
_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]{0,99}$")
# Programs users name whose package has another name (a hint, not a resolver).
PROGRAM_PACKAGES = {
    "hackbench": "rt-tests",
    "cyclictest": "rt-tests",
    "perf": "linux-perf",
    "cc": "gcc",
    "c++": "g++",
    "ab": "apache2-utils",
    "redis-benchmark": "redis-tools",
}


@dataclass(frozen=True)
class HostFile:
    """One ``--with``: a host file or directory and the absolute guest path it is copied to."""

    host: Path
    guest: str

    @classmethod
    def parse(cls, spec: str) -> HostFile:
        """``PATH`` or ``PATH:GUEST_PATH``; a relative GUEST_PATH is taken under /work."""
        if not spec or "\x00" in spec or "\n" in spec:
            raise UsageError(f"bad --with {spec!r}", "use --with PATH or --with PATH:GUEST_PATH")
        host_part, guest_part = spec, ""
        if not Path(spec).exists() and ":" in spec:
            host_part, _, guest_part = spec.rpartition(":")
        host = Path(host_part).expanduser()
        if not host.exists() and not host.is_symlink():
            raise UsageError(f"--with {host_part}: no such file or directory", "check the path on this machine")
        host = host.resolve()
        if not (host.is_file() or host.is_dir()):
            raise UsageError(f"--with {host_part} is neither a file nor a directory", "send a file or a directory")
        guest = guest_path(guest_part or host.name)
        return cls(host, guest)


def guest_path(text: str) -> str:
    """A normalised absolute guest path inside GUEST_ROOTS, or a UsageError saying why not."""
    if not text or "\x00" in text or "\n" in text or len(text) > 512:
        raise UsageError(f"bad guest path {text[:60]!r}", "use a path such as /work/tool or tool")
    raw = text if text.startswith("/") else f"{GUEST_WORKDIR}/{text}"
    if ".." in raw.split("/"):
        raise UsageError(f"guest path {text!r} climbs out with '..'", f"name a path under {GUEST_WORKDIR}")
    path = posixpath.normpath(raw)
    if path.startswith("//"):
        path = "/" + path.lstrip("/")
    for mounted in GUEST_MOUNTED:
        if path == mounted or path.startswith(mounted + "/"):
            raise UsageError(
                f"guest path {path} is under {mounted}, which is mounted over at boot",
                f"put it under {GUEST_WORKDIR} instead",
            )
    for reserved in GUEST_RESERVED:
        if path == reserved or path.startswith(reserved + "/"):
            raise UsageError(f"guest path {path} would overwrite the guest's own {reserved}", f"use {GUEST_WORKDIR}")
    if path in GUEST_ROOTS or not any(path.startswith(root + "/") for root in GUEST_ROOTS):
        raise UsageError(
            f"guest path {path} would overwrite the guest's system directories",
            f"use a path under one of {', '.join(GUEST_ROOTS)} (default {GUEST_WORKDIR}/NAME)",
        )
    return path


@dataclass(frozen=True)
class GuestExtras:
    """Packages and host files to add to the guest image, validated at construction."""

    packages: tuple[str, ...] = ()
    files: tuple[HostFile, ...] = ()

    def __post_init__(self) -> None:
        if len(self.packages) > MAX_PACKAGES or len(self.files) > MAX_WITH:
            raise UsageError("too many --package or --with options", f"use at most {MAX_PACKAGES} and {MAX_WITH}")
        for name in self.packages:
            check_package_name(name)
        seen: dict[str, Path] = {}
        for f in self.files:
            for other, host in seen.items():
                if f.guest == other or f.guest.startswith(other + "/") or other.startswith(f.guest + "/"):
                    raise UsageError(
                        f"--with {f.host} and --with {host} both go to {min(f.guest, other, key=len)}",
                        "give one of them another guest path (PATH:GUEST_PATH)",
                    )
            seen[f.guest] = f.host

    @classmethod
    def from_options(cls, packages: list[str] | None = None, with_: list[str] | None = None) -> GuestExtras:
        return cls(tuple(dict.fromkeys(packages or [])), tuple(HostFile.parse(s) for s in with_ or []))

    def __bool__(self) -> bool:
        return bool(self.packages or self.files)

    def merged(self, other: GuestExtras) -> GuestExtras:
        files = {f.guest: f for f in (*self.files, *other.files)}
        return GuestExtras(tuple(dict.fromkeys((*self.packages, *other.packages))), tuple(files.values()))

    @property
    def workdir(self) -> str | None:
        """Where a user command starts in the guest: /work when files were sent there."""
        return GUEST_WORKDIR if self.files else None

    def describe(self) -> dict[str, object]:
        return {"packages": list(self.packages), "with": [{"host": str(f.host), "guest": f.guest} for f in self.files]}


def check_package_name(name: str) -> None:
    if _PACKAGE_NAME.match(name):
        return
    if "/" in name or name.startswith("."):
        raise UsageError(f"--package {name!r} is a path, not a Debian package", f"send files with --with {name}")
    raise UsageError(
        f"--package {name!r} is not a Debian package name",
        "package names are lower-case letters, digits and + - . (e.g. stress-ng, rt-tests)",
    )


# -- package layer ------------------------------------------------------------------------------


@dataclass
class Layer:
    """A built cpio layer and what it holds."""

    path: Path
    key: str
    contents: dict[str, object] = field(default_factory=dict)


def _layers_dir() -> Path:
    return cache_dir() / "guest" / "layers"


def _deb_dir() -> Path:
    return cache_dir() / "apt" / "debs"


def _unknown_package(apt, name: str) -> SchedcpError:
    providers = apt.providers(name)
    if providers:
        return UsageError(
            f"{name!r} is a virtual package, not one you can install by itself",
            f"ask for one that provides it: --package {providers[0]}"
            + (f" (or {', '.join(providers[1:4])})" if len(providers) > 1 else ""),
        )
    hints: list[str] = []
    if name in PROGRAM_PACKAGES:
        hints.append(PROGRAM_PACKAGES[name])
    hints += [n for n in difflib.get_close_matches(name, apt.package_names(), n=4, cutoff=0.75) if n not in hints]
    return UsageError(
        f"Debian {apt.suite} has no package {name!r}",
        f"did you mean {', '.join(hints)}?" if hints else "check the name (apt-cache search NAME on a Debian system)",
    )


def resolve_packages(apt, names: tuple[str, ...], base_packages: dict[str, str]) -> list:
    """The exact package versions the layer needs: the closure of `names` minus the base's."""
    for name in names:
        if not apt.show(name):
            raise _unknown_package(apt, name)
    try:
        closure = apt.simulate_install(list(names))
    except SchedcpError as exc:
        raise SchedcpError(
            f"apt cannot install {', '.join(names)} from Debian {apt.suite}: {exc.cause}",
            "drop or replace the package that conflicts",
            code="usage",
        ) from exc
    return [p for p in closure if base_packages.get(p.name) != p.version]


def package_layer(
    extras: GuestExtras, base_dir: Path, apt, progress: Callable[[str], None] = lambda _m: None
) -> Layer | None:
    if not extras.packages:
        return None
    manifest = json.loads((base_dir / "manifest.json").read_text())
    needed = resolve_packages(apt, extras.packages, manifest.get("packages", {}))
    versions = {p.name: p.version for p in needed}
    key = hashlib.sha256(
        json.dumps({"v": LAYER_VERSION, "base": base_dir.name, "packages": versions}, sort_keys=True).encode()
    ).hexdigest()[:16]
    out = _layers_dir() / f"pkg-{key}.cpio"
    contents: dict[str, object] = {"requested": list(extras.packages), "packages": versions}
    if out.exists():
        return Layer(out, key, contents)
    held_names = {n for n in versions if n.startswith(HEADLESS_SKIP) and n not in extras.packages}
    adding = sorted(set(versions) - held_names)
    progress(f"adding {len(adding)} Debian package(s) to the guest: {', '.join(adding)[:300]}")
    debs = dict(zip([p.name for p in needed], apt.download_exact(needed, _deb_dir()), strict=True))
    staging = _layers_dir() / f"pkg-{key}.partial{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        from schedcp.testbed.debian import unpack

        held = set(held_names)
        for name, deb in debs.items():
            if name not in held:
                unpack(deb, staging)
        _restore_needed(staging, base_dir / "rootfs", {n: debs[n] for n in held}, unpack)
        _normalise_merged_usr(staging)
        for rel in PRUNE:
            shutil.rmtree(staging / rel, ignore_errors=True)
        _write_layer(out, lambda w: w.add_tree(staging))
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    contents["left_out"] = sorted(held)
    (out.with_suffix(".json")).write_text(json.dumps(contents, indent=1, sort_keys=True))
    return Layer(out, key, contents)


def _restore_needed(
    staging: Path, base_root: Path, held: dict[str, Path], unpack: Callable[[Path, Path], None]
) -> None:
    """Unpack a held-back package after all when an ELF file in the layer needs one of its libraries."""
    while held:
        have = guest_soname_lookup([staging, base_root])
        wanted: set[str] = set()
        for path in staging.rglob("*"):
            if path.is_file() and not path.is_symlink() and path.stat().st_size > 64:
                with path.open("rb") as fh:
                    if fh.read(4) != b"\x7fELF":
                        continue
                info = read_elf(path)
                if info is not None:
                    wanted.update(n for n in info.needed if not have(n))
        if not wanted:
            return
        provider = None
        for name, deb in held.items():
            listing = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True).stdout
            if any(f"/{soname}" in listing for soname in wanted):
                provider = name
                break
        if provider is None:
            return  # not ours to provide; the program's own error will name it
        unpack(held.pop(provider), staging)


def _normalise_merged_usr(root: Path) -> None:
    """Move /bin, /lib... of a package into usr/, where the base's merged-/usr links point."""
    for top, target in MERGED.items():
        src = root / top
        if src.is_symlink():
            src.unlink()
        elif src.is_dir():
            dest = root / target
            dest.mkdir(parents=True, exist_ok=True)
            for item in src.iterdir():
                final = dest / item.name
                if final.is_dir() and item.is_dir() and not item.is_symlink():
                    shutil.copytree(item, final, symlinks=True, dirs_exist_ok=True)
                    shutil.rmtree(item)
                else:
                    if final.exists() or final.is_symlink():
                        final.unlink() if not final.is_dir() else shutil.rmtree(final)
                    item.rename(final)
            shutil.rmtree(src)


def _write_layer(out: Path, fill: Callable[[CpioWriter], None]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    with tmp.open("wb") as fh:
        writer = CpioWriter(fh)
        fill(writer)
        writer.close()
    tmp.rename(out)


# -- file layer ----------------------------------------------------------------------------------


def _walk(host: Path) -> Iterator[tuple[Path, str]]:
    """(host path, path relative to the --with root) for the root and everything below it."""
    yield host, ""
    if host.is_dir() and not host.is_symlink():
        for dirpath, dirnames, filenames in os.walk(host):
            dirnames.sort()
            for name in sorted(dirnames) + sorted(filenames):
                path = Path(dirpath) / name
                yield path, str(path.relative_to(host))


def _mode(st: os.stat_result) -> int:
    # No set-id bits: what a user sends must not become a privileged program in the guest.
    return (st.st_mode & 0o777) | 0o400


def file_entries(extras: GuestExtras, have_soname: Callable[[str], bool]) -> tuple[list[Entry], dict[str, object]]:
    """The cpio entries for every --with, plus the host libraries their ELF files need."""
    entries: list[Entry] = []
    dirs: set[str] = set()
    total = 0
    elves: list[tuple[Path, str]] = []
    shipped: set[str] = set()

    def add_dirs(guest: str) -> None:
        parts = guest.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in dirs:
                dirs.add(d)
                entries.append(Entry(d, stat.S_IFDIR | 0o755))

    for f in extras.files:
        for path, rel in _walk(f.host):
            guest = f.guest if not rel else f"{f.guest}/{rel}"
            arc = guest.lstrip("/")
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                add_dirs(guest)
                entries.append(Entry(arc, stat.S_IFLNK | 0o777, os.readlink(path).encode()))
            elif stat.S_ISDIR(st.st_mode):
                add_dirs(guest)
                dirs.add(arc)
                entries.append(Entry(arc, stat.S_IFDIR | _mode(st)))
            elif stat.S_ISREG(st.st_mode):
                total += st.st_size
                if total > MAX_FILE_BYTES or len(entries) > MAX_FILES:
                    raise UsageError(
                        f"--with content exceeds {MAX_FILE_BYTES >> 20} MiB or {MAX_FILES} files",
                        "send only what the program needs; the guest keeps it in RAM",
                    )
                add_dirs(guest)
                data = path.read_bytes()
                entries.append(Entry(arc, stat.S_IFREG | _mode(st), data))
                if data[:4] == b"\x7fELF":
                    elves.append((path, guest))
                    shipped.add(posixpath.basename(guest))
            else:
                raise UsageError(
                    f"--with {path} is a device, socket or pipe",
                    "send regular files, directories and symlinks only",
                )
    libs = host_libraries([p for p, _ in elves], have=lambda name: name in shipped or have_soname(name))
    for soname, host_lib in sorted(libs.items()):
        data = host_lib.read_bytes()
        entries.append(Entry(f"{GUEST_LIB_DIR}/{soname}", stat.S_IFREG | 0o755, data))
    summary: dict[str, object] = {
        "with": [{"host": str(f.host), "guest": f.guest} for f in extras.files],
        "bytes": total,
        "host_libraries": {k: str(v) for k, v in sorted(libs.items())},
    }
    return entries, summary


def file_layer(extras: GuestExtras, have_soname: Callable[[str], bool]) -> Layer | None:
    if not extras.files:
        return None
    entries, summary = file_entries(extras, have_soname)
    h = hashlib.sha256(LAYER_VERSION.encode())
    for e in entries:
        h.update(f"{e.name}\0{e.mode}\0".encode() + hashlib.sha256(e.data).digest())
    key = h.hexdigest()[:16]
    out = _layers_dir() / f"files-{key}.cpio"
    if not out.exists():

        def fill(writer: CpioWriter) -> None:
            for entry in entries:
                writer.add(entry)

        _write_layer(out, fill)
    return Layer(out, key, summary)


# -- shared libraries ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ElfInfo:
    machine: str
    elfclass: int
    interp: str | None
    needed: tuple[str, ...]
    search: tuple[str, ...]  # DT_RPATH/DT_RUNPATH directories, $ORIGIN expanded


def read_elf(path: Path) -> ElfInfo | None:
    """What the dynamic loader needs to start `path`; None if it is not an ELF file."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile

    try:
        with path.open("rb") as fh:
            elf = ELFFile(fh)
            interp = None
            needed: list[str] = []
            search: list[str] = []
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_INTERP":
                    interp = cast(Any, seg).get_interp_name()
            for section in elf.iter_sections():
                if not isinstance(section, DynamicSection):
                    continue
                tag: Any
                for tag in section.iter_tags():
                    if tag.entry.d_tag == "DT_NEEDED":
                        needed.append(tag.needed)
                    elif tag.entry.d_tag in ("DT_RPATH", "DT_RUNPATH"):
                        value = tag.rpath if tag.entry.d_tag == "DT_RPATH" else tag.runpath
                        search += [d.replace("$ORIGIN", str(path.parent)) for d in value.split(":") if d]
            return ElfInfo(elf["e_machine"], elf.elfclass, interp, tuple(needed), tuple(search))
    except (ELFError, OSError, ValueError):
        return None


def _host_library_index() -> dict[str, Path]:
    """soname -> path, as the host's dynamic loader sees it (ldconfig's cache, then the usual dirs)."""
    index: dict[str, Path] = {}
    ldconfig = shutil.which("ldconfig") or next(
        (p for p in ("/sbin/ldconfig", "/usr/sbin/ldconfig") if Path(p).exists()), None
    )
    if ldconfig:
        try:
            text = subprocess.run([ldconfig, "-p"], capture_output=True, text=True, timeout=30).stdout
        except (OSError, subprocess.TimeoutExpired):
            text = ""
        for m in re.finditer(r"^\s*(\S+) \(([^)]*)\) => (\S+)$", text, flags=re.M):
            if "x86-64" in m.group(2) or "64bit" in m.group(2):
                index.setdefault(m.group(1), Path(m.group(3)))
    for d in HOST_LIB_DIRS:
        folder = Path(d)
        if folder.is_dir():
            for lib in folder.glob("*.so*"):
                index.setdefault(lib.name, lib)
    return index


def host_libraries(elves: list[Path], have: Callable[[str], bool]) -> dict[str, Path]:
    """soname -> host file for every library the ELF files need (transitively) that `have` lacks.

    Raises a UsageError naming every library found neither in the guest nor on the host, and for
    programs the x86-64 guest cannot run (another architecture, 32-bit, a foreign loader)."""
    index: dict[str, Path] | None = None
    found: dict[str, Path] = {}
    missing: dict[str, str] = {}
    queue = list(elves)
    seen: set[Path] = set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        info = read_elf(path)
        if info is None:
            continue
        if info.machine != "EM_X86_64" or info.elfclass != 64:
            raise UsageError(
                f"{path.name} is a {info.elfclass}-bit {info.machine} ELF file; the guest runs 64-bit x86-64",
                "build it for x86-64 (or send a static build)",
            )
        if info.interp and not have(posixpath.basename(info.interp)) and info.interp != "/lib64/ld-linux-x86-64.so.2":
            raise UsageError(
                f"{path.name} needs the program loader {info.interp}, which the guest does not have",
                "build it against glibc (the guest is Debian stable) or link it statically",
            )
        for soname in info.needed:
            if soname in found or have(soname):
                continue
            local = next((Path(d) / soname for d in info.search if (Path(d) / soname).is_file()), None)
            if local is None:
                if index is None:
                    index = _host_library_index()
                local = index.get(soname)
            if local is None or not local.is_file():
                missing.setdefault(soname, path.name)
                continue
            found[soname] = local.resolve()
            queue.append(local.resolve())
    if missing:
        listed = ", ".join(f"{lib} (needed by {who})" for lib, who in sorted(missing.items()))
        raise UsageError(
            f"shared libraries not found on this host or in the guest: {listed}",
            "install them on this host, send them with --with, or add their Debian package with --package",
        )
    return found


def guest_soname_lookup(roots: list[Path]) -> Callable[[str], bool]:
    """Does one of these unpacked guest trees hold a library with this soname?"""

    def have(soname: str) -> bool:
        return any((root / d / soname).exists() for root in roots for d in GUEST_LIB_DIRS)

    return have


# -- assembly ------------------------------------------------------------------------------------


def build_layers(
    extras: GuestExtras,
    base_dir: Path,
    apt,
    progress: Callable[[str], None] = lambda _m: None,
) -> list[Layer]:
    """The package and file layers for `extras` on top of `base_dir`, built or taken from the cache."""
    layers: list[Layer] = []
    pkg = package_layer(extras, base_dir, apt, progress)
    roots = [base_dir / "rootfs"]
    if pkg is not None:
        layers.append(pkg)
        if extras.files:
            roots.append(_unpacked(pkg))
    files = file_layer(extras, guest_soname_lookup(roots))
    if files is not None:
        layers.append(files)
    if not (base_dir / "rootfs" / "usr/bin/sh").exists() and not (pkg and "usr/bin/sh" in _names(pkg)):
        layers.append(_shell_layer())
    _prune_old()
    return layers


def _names(layer: Layer) -> set[str]:
    return {name for name, _mode in read_names(layer.path)}


def _shell_layer() -> Layer:
    """/bin/sh as busybox: Debian programs (make, system(3)) and users' scripts expect it, and the
    base image has busybox's applets only under /usr/local/bin."""
    out = _layers_dir() / "sh.cpio"
    if not out.exists():
        _write_layer(out, lambda w: w.add(Entry("usr/bin/sh", stat.S_IFLNK | 0o777, b"busybox")))
    return Layer(out, "sh", {"usr/bin/sh": "busybox"})


def _unpacked(layer: Layer) -> Path:
    """The package layer as a directory (for library look-ups), unpacked once next to it."""
    folder = layer.path.with_suffix(".d")
    if not folder.is_dir():
        staging = folder.with_name(folder.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for name, mode in read_names(layer.path):
            if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
                target = staging / name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()  # presence is all a soname look-up needs
        staging.rename(folder)
    return folder


def read_names(archive: Path) -> list[tuple[str, int]]:
    """(name, mode) of every entry of a newc archive (used for look-ups and tests)."""
    out: list[tuple[str, int]] = []
    with archive.open("rb") as fh:
        while True:
            header = fh.read(110)
            if len(header) < 110 or header[:6] != b"070701":
                break
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
            mode, size, namesize = fields[1], fields[6], fields[11]
            name = fh.read(namesize)[:-1].decode()
            fh.seek((-(110 + namesize)) % 4, io.SEEK_CUR)
            if name == "TRAILER!!!":
                break
            fh.seek(size + (-size) % 4, io.SEEK_CUR)
            out.append((name, mode))
    return out


def _prune_old(max_age_s: float = 14 * 86400) -> None:
    """Layers unused for two weeks go (each use refreshes a layer's time)."""
    now = time.time()
    for path in _layers_dir().glob("*.cpio"):
        try:
            if now - path.stat().st_atime > max_age_s and now - path.stat().st_mtime > max_age_s:
                path.unlink()
                path.with_suffix(".json").unlink(missing_ok=True)
                shutil.rmtree(path.with_suffix(".d"), ignore_errors=True)
        except OSError:
            continue
