# SPDX-License-Identifier: Apache-2.0
"""A private apt configuration that never touches the host's package state.

Kernels and guest userland come from Debian suites the host may not use (unstable, experimental,
trixie-backports, trixie). Each suite gets its own lists and cache directory under SchedCP's cache,
and apt-get only *downloads*; packages are unpacked with dpkg-deb.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from schedcp.errors import NotReadyError, SchedcpError

DEFAULT_MIRROR = "http://deb.debian.org/debian"


def mirror() -> str:
    """The Debian mirror to use; SCHEDCP_DEBIAN_MIRROR overrides it (e.g. a local proxy)."""
    return os.environ.get("SCHEDCP_DEBIAN_MIRROR", DEFAULT_MIRROR)


KEYRING_CANDIDATES = (
    Path("/usr/share/keyrings/debian-archive-keyring.gpg"),
    Path("/usr/share/keyrings/debian-archive-keyring.pgp"),
)
# Package lists older than this are refreshed; kernels move quickly in unstable.
LIST_MAX_AGE_S = 12 * 3600


@dataclass(frozen=True)
class PackageVersion:
    name: str
    version: str
    depends: str = ""


def _keyring() -> Path:
    for path in KEYRING_CANDIDATES:
        if path.exists():
            return path
    raise NotReadyError(
        "the Debian archive keyring is not installed",
        "install it: apt-get install debian-archive-keyring",
    )


class PrivateApt:
    """apt-get/apt-cache bound to one Debian suite and a private state directory."""

    def __init__(self, root: Path, suite: str, mirror_url: str | None = None, *, source_packages: bool = False) -> None:
        self.root = root
        self.suite = suite
        self.mirror = mirror_url or mirror()
        for sub in ("lists/partial", "cache/archives/partial", "etc"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        self._status = root / "status"
        self._status.touch()
        sources = root / "etc" / "sources.list"
        # source_packages: deb-src instead of binaries, for `apt-get source`.
        kind = "deb-src" if source_packages else "deb"
        line = f"{kind} [signed-by={_keyring()}] {self.mirror} {suite} main\n"
        if not sources.exists() or sources.read_text() != line:
            sources.write_text(line)

    def _options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::Etc::SourceList": r / "etc" / "sources.list",
            "Dir::Etc::SourceParts": "/dev/null",
            "Dir::Etc::Preferences": "/dev/null",
            "Dir::Etc::PreferencesParts": "/dev/null",
            "Dir::State::Lists": r / "lists",
            "Dir::State::status": self._status,
            "Dir::Cache": r / "cache",
            "APT::Architecture": "amd64",
            "APT::Architectures": "amd64",
            "Debug::NoLocking": "1",
            # Downloads land in directories owned by the caller; the _apt sandbox user cannot write there.
            "APT::Sandbox::User": "root",
            "Acquire::Retries": "2",
        }
        out: list[str] = []
        for key, value in opts.items():
            out += ["-o", f"{key}={value}"]
        return out

    def _run(self, tool: str, args: list[str], *, cwd: Path | None = None, timeout: float = 600) -> str:
        exe = shutil.which(tool)
        if exe is None:
            raise NotReadyError(f"{tool} is not installed", "run SchedCP on Debian or Ubuntu with apt available")
        try:
            proc = subprocess.run(
                [exe, *self._options(), *args],
                cwd=cwd,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if args[:1] == ["update"] else subprocess.PIPE,
                text=True,
                timeout=timeout,
            )
        except subprocess.TimeoutExpired as exc:
            raise SchedcpError(
                f"{tool} {' '.join(args[:2])} timed out after {timeout:.0f}s",
                f"check that {self.mirror} is reachable and retry",
                code="archive_unreachable",
            ) from exc
        if proc.returncode != 0:
            text = proc.stderr or proc.stdout or ""
            errors = [ln for ln in text.splitlines() if ln.startswith(("E:", "Err:"))]
            detail = errors[0] if errors else (text.strip().splitlines() or ["no output"])[-1]
            raise SchedcpError(
                f"{tool} {args[0]} failed for suite {self.suite}: {detail}",
                f"check network access to {self.mirror} and retry `schedcp setup`",
                code="archive_error",
            )
        return proc.stdout

    def update(self, *, max_age_s: float = LIST_MAX_AGE_S, force: bool = False) -> None:
        stamp = self.root / "updated"
        if not force and stamp.exists() and time.time() - stamp.stat().st_mtime < max_age_s:
            return
        out = self._run("apt-get", ["update"])
        # apt-get update exits 0 when a mirror is unreachable; the missing index is the real signal.
        failed = [ln for ln in out.splitlines() if ln.startswith(("Err:", "W: Failed", "E:"))]
        if failed and not self.has_lists():
            raise SchedcpError(
                f"cannot read the Debian {self.suite} index: {failed[0][:160]}",
                f"check network access to {self.mirror} (or set SCHEDCP_DEBIAN_MIRROR) and retry `schedcp setup`",
                code="archive_error",
            )
        stamp.touch()

    def has_lists(self) -> bool:
        return any((self.root / "lists").glob("*_Packages*")) or any((self.root / "lists").glob("*_Sources*"))

    def download_source(self, name: str, dest: Path) -> list[Path]:
        """The files of source package `name` (.dsc and tarballs), downloaded, not unpacked."""
        dest.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", ["source", "--download-only", "-q", name], cwd=dest)
        return sorted(p for p in dest.iterdir() if p.is_file())

    def show(self, name: str) -> list[PackageVersion]:
        """All versions of `name` in this suite, newest first (empty when unknown)."""
        try:
            text = self._run("apt-cache", ["show", name])
        except SchedcpError:
            return []
        versions: list[PackageVersion] = []
        for stanza in text.split("\n\n"):
            fields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", stanza, flags=re.M))
            if fields.get("Package") == name and "Version" in fields:
                deps = ", ".join(x for x in (fields.get("Pre-Depends"), fields.get("Depends")) if x)
                versions.append(PackageVersion(name, fields["Version"], deps))
        versions.sort(key=lambda v: _version_key(v.version), reverse=True)
        return versions

    def search_names(self, regex: str) -> list[str]:
        text = self._run("apt-cache", ["search", "--names-only", regex])
        return sorted({line.split(" - ", 1)[0].strip() for line in text.splitlines() if line.strip()})

    def simulate_install(self, names: list[str]) -> list[PackageVersion]:
        """The packages (name, version) that installing `names` without recommends brings, as apt
        plans it on an empty system: the whole dependency closure, nothing downloaded."""
        text = self._run("apt-get", ["install", "-s", "-q", "--no-install-recommends", *names])
        return [PackageVersion(m.group(1), m.group(2)) for m in re.finditer(r"^Inst (\S+) \((\S+) ", text, flags=re.M)]

    def providers(self, name: str) -> list[str]:
        """Real packages that provide the virtual package `name` (empty when none does)."""
        try:
            text = self._run("apt-cache", ["showpkg", name])
        except SchedcpError:
            return []
        _, _, tail = text.partition("Reverse Provides:")
        return sorted({line.split()[0] for line in tail.strip().splitlines() if line.strip()})

    def package_names(self) -> list[str]:
        """Every package name in this suite's index (read from the local lists, no network)."""
        return self._run("apt-cache", ["pkgnames"]).split()

    def download_exact(self, packages: list[PackageVersion], dest: Path) -> list[Path]:
        """The .deb of each exact (name, version), downloading only those not already in dest."""
        dest.mkdir(parents=True, exist_ok=True)

        def found(p: PackageVersion) -> Path | None:
            hits = sorted(dest.glob(f"{p.name}_{p.version.replace(':', '%3a')}_*.deb"))
            return hits[0] if hits else None

        missing = [p for p in packages if found(p) is None]
        if missing:
            self._run("apt-get", ["download", *(f"{p.name}={p.version}" for p in missing)], cwd=dest)
        out = []
        for p in packages:
            deb = found(p)
            if deb is None:
                raise SchedcpError(
                    f"apt-get did not deliver {p.name} {p.version}",
                    "retry; if it persists run `schedcp setup --refresh`",
                    code="archive_error",
                )
            out.append(deb)
        return out

    def download(self, names: list[str], dest: Path) -> list[Path]:
        """Download exactly these packages (no dependencies) into dest."""
        dest.mkdir(parents=True, exist_ok=True)
        before = set(dest.glob("*.deb"))
        self._run("apt-get", ["download", *names], cwd=dest)
        got = sorted(set(dest.glob("*.deb")) - before) or sorted(dest.glob("*.deb"))
        return got

    def download_closure(self, names: list[str], set_name: str = "default") -> list[Path]:
        """Download the packages and their whole dependency closure; returns exactly those .deb files.

        Each package set gets its own archive directory: a shared one would also return debs that
        an earlier, larger set downloaded (e.g. gcc from the "build" image leaking into "default").
        """
        archives = self.root / "cache" / f"archives-{set_name}"
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        for old in archives.glob("*.deb"):
            old.unlink()
        self._run(
            "apt-get",
            [
                "-o",
                f"Dir::Cache::archives={archives}",
                "install",
                "-y",
                "-q",
                "--download-only",
                "--no-install-recommends",
                *names,
            ],
        )
        return sorted(archives.glob("*.deb"))


def unpack(deb: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(["dpkg-deb", "-x", str(deb), str(dest)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SchedcpError(f"could not unpack {deb.name}: {proc.stderr.strip()}", "delete the cache and retry")


def deb_field(deb: Path, field: str) -> str:
    proc = subprocess.run(["dpkg-deb", "-f", str(deb), field], capture_output=True, text=True)
    return proc.stdout.strip()


def _version_key(version: str) -> list[tuple[int, object]]:
    """Good-enough Debian version ordering for kernel packages (digits numerically, '~' sorts low)."""
    key: list[tuple[int, object]] = []
    for part in re.findall(r"\d+|~|[A-Za-z]+|[^\dA-Za-z~]", version):
        if part.isdigit():
            key.append((2, int(part)))
        elif part == "~":
            key.append((0, ""))
        else:
            key.append((1, part))
    key.append((1, ""))
    return key


def version_key(version: str) -> list[tuple[int, object]]:
    return _version_key(version)
