# SPDX-License-Identifier: Apache-2.0
"""Sources as people write them: scx-style, single files with headers beside them, or directories.

A scheduler can be named as

* a ``.bpf.c`` file: its quoted includes that resolve beside it (transitively) are staged with it,
  so ``#include "scx_qmap.h"`` works, while anything reaching outside its directory (``..``,
  absolute paths, links) is refused by the build's include check;
* a directory: the one ``.bpf.c`` in it that defines a ``struct_ops`` scheduler, with the
  directory's C files beside it (the multi-file case the build stages as it is).

The style decides the headers: a source (or a local header) that includes ``<scx/...>`` is built
with the target kernel's scx headers (``scx_headers``), fetched only then, so our own library never
needs a kernel source package. Building itself is ``build.build`` (sandboxed compile, include check,
cache); this module only decides what to hand it.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from schedcp.errors import UsageError
from schedcp.paths import cache_dir
from schedcp.toolchain import build as build_mod
from schedcp.toolchain import headers as headers_mod
from schedcp.toolchain import scx_headers
from schedcp.toolchain.scx_headers import ScxHeaders

Style = Literal["schedcp", "scx", "plain"]
MAX_LOCAL_HEADERS = 64
_SCX_INCLUDE = re.compile(r"[<\"]scx/[\w.-]+\.h[>\"]")
_QUOTED = re.compile(r'"(?P<name>[^"]+)"')


@dataclass
class SourceSet:
    """One scheduler's files: the main source and what is staged beside it."""

    main: Path  # the .bpf.c
    root: Path  # directory the local includes resolve in
    local: dict[str, Path] = field(default_factory=dict)  # relative name -> file (main excluded)
    whole_dir: bool = False  # the user named a directory: stage all of its C files
    style: Style = "plain"

    @property
    def name(self) -> str:
        return self.main.name.removesuffix(".bpf.c").removesuffix(".c")

    @property
    def multi_file(self) -> bool:
        return self.whole_dir or bool(self.local)

    def texts(self) -> dict[str, str]:
        files = {self.main.name: self.main.read_text(errors="replace")}
        for rel, path in self.local.items():
            files[rel] = path.read_text(errors="replace")
        return files


def _includes(text: str) -> list[str]:
    """Quoted include names in a C file (comments and line continuations handled like the build)."""
    out: list[str] = []
    for m in build_mod._INCLUDE.finditer(build_mod._logical_lines(text)):
        spec = m.group("spec")
        q = _QUOTED.fullmatch(spec)
        if q:
            out.append(q.group("name"))
    return out


def _style(texts: list[str]) -> Style:
    if any(_SCX_INCLUDE.search(t) for t in texts):
        return "scx"
    if any('"schedcp.h"' in t for t in texts):
        return "schedcp"
    return "plain"


def local_closure(main: Path) -> dict[str, Path]:
    """Headers beside `main` that it includes with quotes, transitively (relative name -> path).

    Only regular files inside main's directory are taken; a name that would leave it is simply not
    staged, so the build's include check refuses it with the offending line.
    """
    root = main.parent.resolve()
    found: dict[str, Path] = {}
    queue = [(main, PurePosixPath("."))]
    while queue:
        path, base = queue.pop()
        for name in _includes(path.read_text(errors="replace")):
            if name.startswith("/") or ".." in PurePosixPath(name).parts:
                continue
            rel = str(base / name) if str(base) != "." else name
            candidate = root / rel
            if rel in found or not candidate.is_file() or candidate.is_symlink():
                continue
            try:
                candidate.resolve().relative_to(root)
            except ValueError:
                continue
            if len(found) >= MAX_LOCAL_HEADERS:
                raise UsageError(
                    f"{main.name} pulls in more than {MAX_LOCAL_HEADERS} local headers", "pass its directory instead"
                )
            found[rel] = candidate
            queue.append((candidate, PurePosixPath(rel).parent))
    return found


def _defines_scheduler(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return "struct_ops" in text or build_mod._SCX_OPS_DEFINE.search(text) is not None


def resolve_source_set(spec: str | Path) -> SourceSet:
    """A library name, a .bpf.c file or a scheduler directory -> its SourceSet."""
    path = Path(spec)
    if path.is_dir():
        candidates = sorted(p for p in path.glob("*.bpf.c") if _defines_scheduler(p))
        if len(candidates) != 1:
            names = ", ".join(p.name for p in candidates) or "none"
            raise UsageError(
                f"{spec} must hold exactly one .bpf.c scheduler (found {names})",
                "name the .bpf.c file instead of the directory",
            )
        main = candidates[0]
        texts = [p.read_text(errors="replace") for p in sorted(path.rglob("*")) if p.suffix in (".c", ".h")][:200]
        return SourceSet(main, path, {}, True, _style(texts))
    main = build_mod.resolve_source(str(spec))
    local = local_closure(main)
    texts = [main.read_text(errors="replace"), *(p.read_text(errors="replace") for p in local.values())]
    return SourceSet(main, main.parent, local, False, _style(texts))


# Headers that only alias kernel enums (SCX_DSQ_GLOBAL -> __SCX_DSQ_GLOBAL, HAVE_* markers): the
# static analysis takes those values from the target kernel directly, so it does not read them.
ANALYSIS_SKIP = frozenset({"vmlinux.h", "enums.autogen.bpf.h", "enum_defs.autogen.h", "enums.bpf.h"})
MAX_ANALYSIS_UNITS = 32
_ANY_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*[<"](?P<name>[\w./+-]+)[>"]', re.M)


def analysis_units(sources: SourceSet, scx: ScxHeaders | None) -> list[tuple[str, bytes]]:
    """The headers a source includes (local ones, then the scx headers), for the static analysis."""
    roots = [sources.main.parent.resolve(), *(d.resolve() for d in (scx.include_dirs if scx else []))]
    units: list[tuple[str, bytes]] = []
    seen: set[Path] = set()
    queue: list[tuple[Path, str]] = [(sources.main, sources.main.read_text(errors="replace"))]
    while queue and len(units) < MAX_ANALYSIS_UNITS:
        current, text = queue.pop(0)
        for m in _ANY_INCLUDE.finditer(text):
            name = m.group("name")
            if ".." in name.split("/") or name.startswith("bpf/") or PurePosixPath(name).name in ANALYSIS_SKIP:
                continue
            for base in [current.parent.resolve(), *roots]:
                candidate = (base / name).resolve()
                if candidate in seen or not candidate.is_file():
                    continue
                if not any(candidate.is_relative_to(r) for r in roots) and not candidate.is_relative_to(
                    current.parent.resolve()
                ):
                    continue
                seen.add(candidate)
                data = candidate.read_bytes()[: build_mod.MAX_SOURCE_BYTES]
                units.append((name, data))
                queue.append((candidate, data.decode(errors="replace")))
                break
    return units


@dataclass
class Built:
    result: build_mod.BuildResult
    sources: SourceSet
    scx: ScxHeaders | None


def build_sources(
    sources: SourceSet,
    *,
    include_dir: Path,
    target: str,
    scx: ScxHeaders | None = None,
) -> build_mod.BuildResult:
    """Compile a SourceSet; `scx` must be given for scx-style sources."""
    extra = list(scx.include_dirs) if scx is not None else []
    if sources.whole_dir:
        return build_mod.build(
            sources.main, include_dir, target=target, extra_include_dirs=extra, source_dir=sources.root
        )
    if not sources.local:
        return build_mod.build(sources.main, include_dir, target=target, extra_include_dirs=extra)
    # Stage exactly the closure, so a source sitting in a big directory does not drag it all in.
    (cache_dir() / "build").mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix="set-", dir=cache_dir() / "build"))
    try:
        for rel, path in {sources.main.name: sources.main, **sources.local}.items():
            target_path = stage / rel
            target_path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target_path)
        result = build_mod.build(
            stage / sources.main.name, include_dir, target=target, extra_include_dirs=extra, source_dir=stage
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    result.source_path = sources.main
    return result


def scx_headers_for(sources: SourceSet, kernel=None, *, host: bool = False, scx_include: str | Path | None = None):
    """The scx headers a SourceSet needs (None for our own and plain sources, unless forced by a dir)."""
    if sources.style != "scx" and scx_include is None:
        return None
    return scx_headers.resolve(kernel, scx_include=scx_include, host=host)


def build_for_kernel(spec: str | Path, kernel, *, scx_include: str | Path | None = None) -> Built:
    """Resolve and compile a scheduler for a cached test kernel, with scx headers when it needs them."""
    sources = resolve_source_set(spec)
    scx = scx_headers_for(sources, kernel, scx_include=scx_include)
    result = build_sources(sources, include_dir=headers_mod.kernel_include_dir(kernel), target=kernel.release, scx=scx)
    return Built(result, sources, scx)


def build_text(text: str, name: str, kernel, *, scx_include: str | Path | None = None) -> build_mod.BuildResult:
    """Compile submitted source text (an agent's patch, a repository entry) in whichever style it is
    written: scx-style text gets the target kernel's scx headers. Single file: nothing beside it."""
    scx = None
    if _style([text]) == "scx" or scx_include is not None:
        scx = scx_headers.resolve(kernel, scx_include=scx_include)
    return build_mod.build(
        Path(name),
        headers_mod.kernel_include_dir(kernel),
        target=kernel.release,
        source_text=text,
        source_name=name,
        extra_include_dirs=list(scx.include_dirs) if scx else [],
    )


def build_for_host(spec: str | Path, *, scx_include: str | Path | None = None) -> Built:
    import platform

    sources = resolve_source_set(spec)
    scx = scx_headers_for(sources, host=True, scx_include=scx_include)
    result = build_sources(
        sources, include_dir=headers_mod.host_include_dir(), target=f"host:{platform.release()}", scx=scx
    )
    return Built(result, sources, scx)
