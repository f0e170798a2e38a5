# SPDX-License-Identifier: Apache-2.0
"""The kernel's own sched_ext headers (``<scx/common.bpf.h>`` and friends) for each target kernel.

Most sched_ext C in the wild is written against ``tools/sched_ext/include`` of the kernel tree (the
scx repository mirrors it). Debian ships that directory only inside ``linux-source-<series>``, a
~165 MB package whose payload is one xz tarball, so extracting it means decompressing the whole
stream once. We stream it (``dpkg-deb --fsys-tarfile | tar -xO <inner tarball> | xz -dc | tar -x
<only tools/sched_ext>``), keep only that directory (headers, the example schedulers and their
userspace halves, ~0.5 MB) and delete the package. One extraction serves every kernel that maps to
the same source version.

Which source goes with which kernel: the exact upstream version when Debian still has it; otherwise
the newest source of the nearest series, preferring a newer series over an older one, because the
headers carry their own backward compatibility (``compat.bpf.h`` declares newer kfuncs ``__weak``
and picks between old and new names) while old headers name kfuncs that newer kernels removed.
The choice is recorded per kernel (``scx-headers.json``) and shown wherever headers are used.

On a real host the headers come from the running kernel's Debian source package, or from a
directory the user names (``--scx-include DIR``: an ``include`` directory, a kernel tree or an scx
checkout). Besides ``scx/``, the headers include ``<asm-generic/errno.h>``; we generate that from
Python's ``errno`` table (the Linux values) instead of reaching into the host's /usr/include.
"""

from __future__ import annotations

import errno
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.paths import cache_dir
from schedcp.testbed.debian import PrivateApt, version_key

# Suites searched for linux-source-<series>, in order of preference after the kernel's own suite.
SOURCE_SUITES = ("unstable", "trixie-backports", "experimental", "trixie")
EXTRACT_TIMEOUT_S = 900
# Series tried for a kernel whose own source is gone (each costs a ~160 MB download once).
MAX_PROBED_SERIES = 3
MARKER = "scx-headers.json"
_SERIES = re.compile(r"^(\d+)\.(\d+)")


@dataclass
class ScxHeaders:
    """Where the scx headers for one target live and where they came from."""

    include_dirs: list[Path]  # passed to clang with -I, in order
    origin: str  # human-readable provenance, e.g. "linux-source-7.2 7.2.13-1 (unstable)"
    source_version: str  # upstream version of the tree the headers come from ("" for a user dir)
    exact: bool  # True when the headers come from the target kernel's own version
    examples_dir: Path | None = None  # tools/sched_ext of that tree (examples + userspace halves)
    note: str = ""

    @property
    def scx_include(self) -> Path:
        return self.include_dirs[0]

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["include_dirs"] = [str(p) for p in self.include_dirs]
        data["examples_dir"] = str(self.examples_dir) if self.examples_dir else None
        return data

    @classmethod
    def from_json(cls, data: dict) -> ScxHeaders:
        return cls(
            include_dirs=[Path(p) for p in data["include_dirs"]],
            origin=str(data["origin"]),
            source_version=str(data["source_version"]),
            exact=bool(data["exact"]),
            examples_dir=Path(data["examples_dir"]) if data.get("examples_dir") else None,
            note=str(data.get("note") or ""),
        )


@dataclass(frozen=True)
class SourceCandidate:
    suite: str
    package: str  # linux-source-7.2
    version: str  # Debian version, e.g. 7.2.13-1

    @property
    def upstream(self) -> str:
        return upstream_version(self.version)


@dataclass
class ExtractStats:
    """What one extraction cost (reported by `schedcp setup` and measured for CI budgeting)."""

    package: str
    version: str
    download_bytes: int = 0
    download_s: float = 0.0
    extract_s: float = 0.0
    kept_bytes: int = 0
    files: list[str] = field(default_factory=list)


def upstream_version(debian_version: str) -> str:
    """7.2.13-1 -> 7.2.13; 6.19.14-1~bpo13+1 -> 6.19.14; 7.3~rc7-1~exp1 -> 7.3~rc7."""
    return debian_version.split("-", 1)[0]


def _series(version: str) -> tuple[int, int]:
    m = _SERIES.match(version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def scx_root() -> Path:
    return cache_dir() / "scx"


def tree_dir(upstream: str) -> Path:
    """Cache directory for the headers of one upstream source version."""
    return scx_root() / f"linux-{re.sub(r'[^0-9A-Za-z.~+-]', '_', upstream)}"


def _headers_for_tree(tree: Path, origin: str, upstream: str, exact: bool, note: str) -> ScxHeaders:
    sched_ext = tree / "sched_ext"
    return ScxHeaders(
        include_dirs=[sched_ext / "include", sched_ext / "include" / "bpf-compat", tree / "uapi"],
        origin=origin,
        source_version=upstream,
        exact=exact,
        examples_dir=sched_ext,
        note=note,
    )


def _complete(tree: Path) -> bool:
    return (tree / "sched_ext" / "include" / "scx" / "common.bpf.h").is_file() and (
        tree / "uapi" / "asm-generic" / "errno.h"
    ).is_file()


# -- choosing a source package ---------------------------------------------------------------------
def list_sources(suites: tuple[str, ...], *, refresh: bool = False) -> list[SourceCandidate]:
    out: list[SourceCandidate] = []
    for suite in dict.fromkeys(suites):
        apt = PrivateApt(cache_dir() / "apt" / suite, suite)
        try:
            apt.update(force=refresh)
            names = apt.search_names(r"^linux-source-[0-9]+\.[0-9]+$")
        except SchedcpError:
            continue
        for name in names:
            out += [SourceCandidate(suite, name, v.version) for v in apt.show(name)]
    return out


def rank_sources(kernel_version: str, candidates: list[SourceCandidate]) -> tuple[list[SourceCandidate], bool]:
    """Candidates in order of preference for a kernel's Debian version, one per series; and whether
    the first is the kernel's own version.

    The exact upstream version first; then the nearest series, a newer one before an older one at
    the same distance (newer headers carry compatibility shims for older kernels), each series
    represented by a source already in the cache, else its newest version.
    """
    if not candidates:
        raise SchedcpError(
            "Debian has no linux-source package in any searched suite",
            "pass --scx-include DIR with a kernel tree or an scx checkout",
            code="scx_headers_missing",
        )
    want = upstream_version(kernel_version)
    exact = [c for c in candidates if c.upstream == want]
    if exact:
        return exact[:1], True
    series = _series(want)
    by_series: dict[tuple[int, int], list[SourceCandidate]] = {}
    for c in candidates:
        by_series.setdefault(_series(c.upstream), []).append(c)

    def distance(s: tuple[int, int]) -> tuple[int, int, int]:
        ordinal, target = s[0] * 1000 + s[1], series[0] * 1000 + series[1]
        return (0 if s == series else 1, abs(_release_distance(s, series)), 0 if ordinal > target else 1)

    ranked: list[SourceCandidate] = []
    for s in sorted(by_series, key=distance):
        pool = by_series[s]
        cached = [c for c in pool if _complete(tree_dir(c.upstream))]
        ranked.append(max(cached or pool, key=lambda c: version_key(c.version)))
    return ranked, False


def _release_distance(a: tuple[int, int], b: tuple[int, int]) -> int:
    """Releases between two series, counting x.19 -> (x+1).0 as one step (Linux numbering)."""
    (hi, lo) = max(a, b), min(a, b)
    if hi[0] == lo[0]:
        return hi[1] - lo[1]
    return (20 - lo[1]) + 20 * (hi[0] - lo[0] - 1) + hi[1]


# A minimal scx-style scheduler: if this does not compile against a kernel's vmlinux.h, no source
# written for those headers will (e.g. 7.2's headers use struct scx_cmask, which 6.19 lacks).
PROBE_SOURCE = """#include <scx/common.bpf.h>
char _license[] SEC("license") = "GPL";
s32 BPF_STRUCT_OPS(probe_init) { return 0; }
SCX_OPS_DEFINE(probe_ops, .init = (void *)probe_init, .name = "schedcp_probe");
"""


def probe_compile(headers: ScxHeaders, kernel_include: Path, target: str) -> str | None:
    """None when a minimal scx scheduler compiles with these headers for the kernel, else why not."""
    from schedcp.toolchain import build as build_mod

    try:
        build_mod.build(
            None,
            kernel_include,
            target=target,
            source_text=PROBE_SOURCE,
            source_name="scx_probe.bpf.c",
            extra_include_dirs=headers.include_dirs,
        )
    except build_mod.BuildError as exc:
        return exc.cause.removeprefix("compilation failed: ")
    return None


# -- extraction ------------------------------------------------------------------------------------
def extract_source_deb(deb: Path, dest: Path) -> list[str]:
    """Stream tools/sched_ext out of a linux-source .deb into dest/sched_ext; returns kept files."""
    staging = Path(tempfile.mkdtemp(prefix="scx-extract-", dir=dest.parent))
    found = {name: shutil.which(name) for name in ("dpkg-deb", "tar", "xz")}
    missing = [n for n, p in found.items() if p is None]
    if missing:
        raise NotReadyError(f"{', '.join(missing)} not installed", "apt-get install dpkg tar xz-utils")
    tools = {n: str(p) for n, p in found.items()}
    try:
        deb_proc = subprocess.Popen([tools["dpkg-deb"], "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        inner = subprocess.Popen(
            [tools["tar"], "-xO", "--wildcards", "./usr/src/linux-source-*.tar.xz"],
            stdin=deb_proc.stdout,
            stdout=subprocess.PIPE,
        )
        assert deb_proc.stdout is not None and inner.stdout is not None
        deb_proc.stdout.close()
        unxz = subprocess.Popen([tools["xz"], "-T0", "-dc"], stdin=inner.stdout, stdout=subprocess.PIPE)
        inner.stdout.close()
        assert unxz.stdout is not None
        untar = subprocess.Popen(
            [
                tools["tar"],
                "-x",
                "-C",
                str(staging),
                "--no-same-owner",
                "--no-same-permissions",
                "--wildcards",
                "linux-source-*/tools/sched_ext/*",
            ],
            stdin=unxz.stdout,
            stderr=subprocess.PIPE,
        )
        unxz.stdout.close()
        try:
            _, err = untar.communicate(timeout=EXTRACT_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            for p in (deb_proc, inner, unxz, untar):
                p.kill()
            raise SchedcpError(
                f"extracting {deb.name} took over {EXTRACT_TIMEOUT_S}s", "retry `schedcp setup`", code="scx_extract"
            ) from exc
        codes = [p.wait() for p in (deb_proc, inner, unxz)] + [untar.returncode]
        roots = list(staging.glob("linux-source-*/tools/sched_ext"))
        if any(codes) or len(roots) != 1:
            raise SchedcpError(
                f"could not extract tools/sched_ext from {deb.name} (exit codes {codes}): "
                f"{err.decode(errors='replace').strip()[-200:]}",
                "delete the scx cache directory and rerun `schedcp setup`",
                code="scx_extract",
            )
        sched_ext = roots[0]
        for path in sched_ext.rglob("*"):
            # Only regular files and directories from the archive; never follow a link out of the cache.
            if path.is_symlink():
                path.unlink()
        dest.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(dest / "sched_ext", ignore_errors=True)
        sched_ext.rename(dest / "sched_ext")
        write_errno_header(dest / "uapi")
        return sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_errno_header(uapi: Path) -> Path:
    """``asm-generic/errno.h`` with the Linux errno values (what common.bpf.h includes)."""
    target = uapi / "asm-generic" / "errno.h"
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = [
        "/* Generated by SchedCP from the Linux errno values; do not edit. */",
        "#ifndef _ASM_GENERIC_ERRNO_H",
        "#define _ASM_GENERIC_ERRNO_H",
    ]
    # Every E* name Python knows (errorcode keeps one name per value, so aliases such as
    # EOPNOTSUPP/ENOTSUP would be lost).
    names = sorted((getattr(errno, n), n) for n in dir(errno) if re.fullmatch(r"E[A-Z0-9]+", n))
    lines += [f"#define {name} {value}" for value, name in names]
    lines.append("#endif")
    target.write_text("\n".join(lines) + "\n")
    (target.parent / "errno-base.h").write_text('#include "errno.h"\n')
    # Headers shared with a userspace half include <linux/types.h> on their non-BPF branch; for BPF
    # code vmlinux.h already defines those types, so the name only has to exist.
    types = uapi / "linux" / "types.h"
    types.parent.mkdir(parents=True, exist_ok=True)
    types.write_text("/* Generated by SchedCP: for BPF programs the kernel types come from vmlinux.h. */\n")
    for path in (uapi, target.parent, types.parent):
        path.chmod(0o755)
    for path in (target, target.parent / "errno-base.h", types):
        path.chmod(0o644)
    return target


def fetch_tree(candidate: SourceCandidate, progress: Callable[[str], None] = print) -> tuple[Path, ExtractStats]:
    """Download one linux-source package, keep only tools/sched_ext, delete the package."""
    tree = tree_dir(candidate.upstream)
    stats = ExtractStats(candidate.package, candidate.version)
    if _complete(tree):
        return tree, stats
    scx_root().mkdir(parents=True, exist_ok=True)
    apt = PrivateApt(cache_dir() / "apt" / candidate.suite, candidate.suite)
    with tempfile.TemporaryDirectory(prefix="scx-deb-", dir=scx_root()) as tmp:
        progress(f"downloading {candidate.package} {candidate.version} from {candidate.suite} for the scx headers")
        t0 = time.monotonic()
        debs = apt.download([f"{candidate.package}={candidate.version}"], Path(tmp))
        stats.download_s = round(time.monotonic() - t0, 2)
        if len(debs) != 1:
            raise SchedcpError(f"apt downloaded {len(debs)} files for {candidate.package}", "retry `schedcp setup`")
        stats.download_bytes = debs[0].stat().st_size
        progress(f"extracting tools/sched_ext from {debs[0].name} ({stats.download_bytes / 1e6:.0f} MB)")
        t0 = time.monotonic()
        partial = tree.with_name(tree.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        stats.files = extract_source_deb(debs[0], partial)
        stats.extract_s = round(time.monotonic() - t0, 2)
    shutil.rmtree(tree, ignore_errors=True)
    partial.rename(tree)
    stats.kept_bytes = sum(p.stat().st_size for p in tree.rglob("*") if p.is_file())
    (tree / "origin.json").write_text(json.dumps(asdict(stats) | {"suite": candidate.suite}, indent=2))
    return tree, stats


# -- per target ------------------------------------------------------------------------------------
def for_kernel(kernel, *, fetch: bool = True, refresh: bool = False, progress: Callable[[str], None] = print):
    """The scx headers for a cached test kernel (fetched once and recorded next to the kernel).

    Without the kernel's own source version, candidates are tried in order of preference and the
    first whose headers compile a minimal scheduler against this kernel is kept; the note says what
    was tried and why it was passed over.
    """
    marker = kernel.dir / MARKER
    if marker.is_file() and not refresh:
        cached = ScxHeaders.from_json(json.loads(marker.read_text()))
        if all(d.is_dir() for d in cached.include_dirs):
            return cached
    if not fetch:
        raise NotReadyError(
            f"the scx headers for {kernel.release} are not in the cache",
            f"run `schedcp setup --kernel {kernel.info.spec} --scx-headers` (or pass --scx-include DIR)",
        )
    if kernel.info.version == "user":
        raise NotReadyError(
            f"{kernel.release} is a user-supplied kernel; SchedCP cannot tell which source it came from",
            "pass --scx-include DIR pointing at its tools/sched_ext/include",
        )
    from schedcp.toolchain import headers as headers_mod

    suites = tuple(dict.fromkeys([kernel.info.source, *SOURCE_SUITES]))
    ranked, exact = rank_sources(kernel.info.version, list_sources(suites, refresh=refresh))
    want = upstream_version(kernel.info.version)
    passed_over: list[str] = []
    chosen: ScxHeaders | None = None
    for candidate in ranked[:MAX_PROBED_SERIES]:
        tree, _stats = fetch_tree(candidate, progress)
        origin = f"{candidate.package} {candidate.version} ({candidate.suite})"
        headers = _headers_for_tree(tree, origin, candidate.upstream, exact, "")
        if exact:
            chosen = headers
            break
        why = probe_compile(headers, headers_mod.kernel_include_dir(kernel), kernel.release)
        if why is None:
            chosen = headers
            break
        passed_over.append(f"{candidate.package} {candidate.version}: {why}")
        chosen = chosen or headers
    assert chosen is not None
    if not exact:
        chosen.note = f"Debian no longer ships linux-source for {want}; using {chosen.origin}" + (
            f" (passed over: {'; '.join(passed_over)})" if passed_over else ""
        )
        if len(passed_over) == len(ranked[:MAX_PROBED_SERIES]):
            chosen.note += "; no candidate compiled a minimal scx scheduler for this kernel"
    marker.write_text(json.dumps(chosen.to_json(), indent=2))
    return chosen


def extraction_stats(headers: ScxHeaders) -> dict[str, object]:
    """What fetching these headers cost, as recorded when they were extracted."""
    if headers.examples_dir is None:
        return {}
    origin = headers.examples_dir.parent / "origin.json"
    return json.loads(origin.read_text()) if origin.is_file() else {}


def for_host(*, fetch: bool = True, progress: Callable[[str], None] = print) -> ScxHeaders:
    """Headers for the running kernel: its Debian source version when it is a Debian kernel."""
    proc_version = Path("/proc/version").read_text(errors="replace")
    m = re.search(r"Debian (\d+\.\d+[^\s)]*)", proc_version)
    if not m:
        raise NotReadyError(
            "the running kernel is not a Debian kernel, so its sched_ext headers cannot be fetched",
            "pass --scx-include DIR (a kernel tree's tools/sched_ext/include or an scx checkout)",
        )
    version = m.group(1)
    if not fetch:
        tree = tree_dir(upstream_version(version))
        if _complete(tree):
            return _headers_for_tree(tree, f"linux-source {version} (cached)", upstream_version(version), True, "")
        raise NotReadyError("the host's scx headers are not in the cache", "run `schedcp setup --host-headers`")
    ranked, exact = rank_sources(version, list_sources(SOURCE_SUITES))
    candidate = ranked[0]
    tree, _ = fetch_tree(candidate, progress)
    note = "" if exact else f"no Debian source for {upstream_version(version)}; nearest series"
    return _headers_for_tree(
        tree, f"{candidate.package} {candidate.version} ({candidate.suite})", candidate.upstream, exact, note
    )


def from_user_dir(path: str | Path) -> ScxHeaders:
    """``--scx-include DIR``: an include dir holding scx/, a kernel tree, or an scx checkout."""
    base = Path(path).expanduser()
    if not base.is_dir():
        raise UsageError(f"--scx-include {path} is not a directory", "pass the directory that holds scx/common.bpf.h")
    base = base.resolve()
    for rel in ("", "include", "tools/sched_ext/include", "scheds/include"):
        inc = base / rel if rel else base
        if (inc / "scx" / "common.bpf.h").is_file():
            break
    else:
        raise UsageError(
            f"no scx/common.bpf.h under {base}",
            "pass an include dir holding scx/, a kernel tree (tools/sched_ext/include) or an scx checkout",
        )
    uapi = scx_root() / "uapi"
    if not (uapi / "asm-generic" / "errno.h").is_file():
        write_errno_header(uapi)
    dirs = [inc, *([inc / "bpf-compat"] if (inc / "bpf-compat").is_dir() else []), uapi]
    examples = inc.parent if (inc.parent / "scx_simple.bpf.c").is_file() else None
    return ScxHeaders(dirs, f"--scx-include {inc}", "", False, examples, "")


def resolve(kernel=None, *, scx_include: str | Path | None = None, host: bool = False, fetch: bool = True):
    """The headers for a build target: a user dir when given, else the host's or the test kernel's."""
    if scx_include is not None:
        return from_user_dir(scx_include)
    if host:
        return for_host(fetch=fetch)
    if kernel is None:
        raise UsageError("no target kernel for the scx headers", "pass --kernel or --scx-include")
    return for_kernel(kernel, fetch=fetch)
