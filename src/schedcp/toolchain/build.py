# SPDX-License-Identifier: Apache-2.0
"""Compile sched_ext BPF C into objects, in a sandbox, with readable errors and a content-addressed cache.

Submitted C is hostile input. The C preprocessor reads any file it is pointed at (and honours
``#/**/include``, ``/**/#include``, ``%:include``, ``#import`` and directives split by
backslash-newline, which no regex over the raw text catches), and clang's diagnostics quote what it
read. So clang always runs in :mod:`schedcp.sandbox` with a filesystem that holds only clang's own
files, the allowed header directories (read-only, at ``/inc/N``), the staged source directory
(read-only, at ``/src``) and a tiny ``/tmp``; as uid 65534, with no network, memory/CPU/time/process
limits for the whole compile, and the object written to a capped stdout. A smuggled include can
only reach an allowed header. The include allow-list (:func:`check_includes`) stays as a fast,
friendly early error, and diagnostics are rewritten so they only ever quote the submitted files:
clang prints no source snippets, "In file included from" chains are dropped, and a diagnostic in
any file outside the submitted and allowed ones keeps its position but loses its text.

Accepted sources: files using our header (``#include "schedcp.h"``), self-contained files that
include only ``"vmlinux.h"`` and libbpf's ``<bpf/*.h>``, headers from extra include directories
(the kernel's ``<scx/*.h>``), and headers beside the source when a source directory is given.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from schedcp import sandbox
from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.paths import cache_dir, schedulers_dir
from schedcp.toolchain import headers

MAX_SOURCE_BYTES = 512 * 1024
MAX_SOURCE_DIR_FILES = 200
MAX_SOURCE_DIR_BYTES = 4 * 1024 * 1024
MAX_OBJECT_BYTES = 32 * 1024 * 1024
MAX_INCLUDE_DIRS = 8
CLANG_CANDIDATES = ("clang-16", "clang-17", "clang-18", "clang-19", "clang")
CFLAGS = [
    "-g",
    "-O2",
    "-target",
    "bpf",
    "-mcpu=v3",
    "-D__TARGET_ARCH_x86",
    "-nostdinc",
    "-Wall",
    "-Wno-unused-variable",
    "-Wno-unused-function",
    "-Wno-missing-declarations",
]
# Diagnostics as one line each: no source snippets, no colour, a bounded count.
DIAG_FLAGS = [
    "-fno-caret-diagnostics",
    "-fno-color-diagnostics",
    "-fno-diagnostics-fixit-info",
    "-fno-crash-diagnostics",
    "-ferror-limit=20",
]
BUILD_TIMEOUT_S = 120
BUILD_MEMORY_MB = 1536
BUILD_MAX_PROCS = 16
SOURCE_SUFFIXES = (".c", ".h")
SANDBOX_SRC = "/src"
SANDBOX_INC = "/inc"
# Bumped when the way objects are built changes, so old cache entries are not reused.
BUILD_RECIPE = "sandboxed-1"
# A spec never spans lines (backslash-newlines are joined first); bounding it by the line also keeps
# the scan linear: an unclosed `<` or `"` on every line would otherwise rescan the rest of the file.
_INCLUDE = re.compile(
    r'^[ \t]*(?:#|%:)[ \t]*(?:include_next|include|import)\b[ \t]*(?P<spec>"[^"\n]*"|<[^>\n]*>|\S*)', re.M
)
_COMMENT_START = re.compile(r"/\*|//")
_ALLOWED_QUOTED = {"vmlinux.h", "schedcp.h", "schedcp_kernel.h"}
_DIAG = re.compile(
    r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning|fatal error|note): (?P<msg>.*)$"
)
_SAFE_REL = re.compile(r"^[\w.+-]+(/[\w.+-]+)*$")
# The scx headers define the struct_ops variable behind a macro (SCX_OPS_DEFINE, SCX_OPS_CID_DEFINE…).
_SCX_OPS_DEFINE = re.compile(r"\bSCX_OPS_\w*DEFINE\s*\(")


@dataclass
class Diagnostic:
    file: str
    line: int
    col: int
    severity: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.severity}: {self.message}"


@dataclass
class BuildResult:
    object_path: Path
    source_path: Path | None
    source_sha256: str
    object_sha256: str
    target: str  # kernel release or "host:<release>"
    cached: bool
    warnings: list[Diagnostic] = field(default_factory=list)
    sandbox_notes: list[str] = field(default_factory=list)


class BuildError(SchedcpError):
    def __init__(self, cause: str, diagnostics: list[Diagnostic], next_step: str = "") -> None:
        super().__init__(cause, next_step or "fix the first error and rebuild", code="build_failed")
        self.diagnostics = diagnostics


def find_clang() -> str:
    override = os.environ.get("SCHEDCP_CLANG")
    if override:
        return override
    for name in CLANG_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    raise NotReadyError("clang is not installed", "apt-get install clang-16 (or run the README setup command)")


def comment_spans(text: str) -> Iterator[tuple[str, bool]]:
    """The text in pieces, each flagged True when it is a ``/* */`` or ``//`` comment, in linear time.

    A regex such as ``/\\*.*?\\*/`` rescans the rest of the file from every ``/*`` that is never
    closed, which is quadratic: 96 KB of unclosed ``/*`` took it 27 s. Here each opener's end is
    searched once, and after one unclosed ``/*`` no later one can close either. An unclosed ``/*`` is
    left as text, as that regex left it.
    """
    emitted = search = 0
    unclosed_after = len(text) + 1  # no "*/" starts at or after this offset
    while (m := _COMMENT_START.search(text, search)) is not None:
        start = m.start()
        if m.group(0) == "/*":
            end = text.find("*/", start + 2) if start + 2 < unclosed_after else -1
            if end < 0:
                unclosed_after = min(unclosed_after, start + 2)
                search = start + 1
                continue
            end += 2
        else:
            newline = text.find("\n", start)
            end = len(text) if newline < 0 else newline
        if start > emitted:
            yield text[emitted:start], False
        yield text[start:end], True
        emitted = search = end
    if emitted < len(text):
        yield text[emitted:], False


def _logical_lines(source: str) -> str:
    """The text with comments blanked and backslash-newlines joined, keeping line numbers.

    Only for the early include check: it makes the common smuggling spellings visible to a regex.
    The sandbox, not this, is what keeps the compiler away from other files.
    """
    blanked = "".join(
        (" " if "\n" not in part else "\n" * part.count("\n")) if is_comment else part
        for part, is_comment in comment_spans(source)
    )
    out: list[str] = []
    joined: str | None = None
    pending = 0
    for physical in blanked.split("\n"):
        joined = (joined or "") + physical.removesuffix("\\")
        if physical.endswith("\\"):
            pending += 1
            continue
        out.append(joined)
        out.extend([""] * pending)
        joined, pending = None, 0
    if joined is not None:
        out.append(joined)
    return "\n".join(out)


def check_includes(
    source: str,
    *,
    include_dirs: Sequence[Path] = (),
    local_files: Sequence[str] = (),
    file_name: str = "<source>",
) -> None:
    """Refuse includes outside the allowed set (a fast early error; the sandbox is the real boundary).

    Allowed: ``"vmlinux.h"``, ``"schedcp.h"``, ``"schedcp_kernel.h"``, libbpf's ``<bpf/*.h>``, any
    relative header found in one of `include_dirs`, and the submitted directory's own files
    (`local_files`, relative paths). Never absolute paths, ``..``, or macros as include names.
    """
    local = set(local_files)
    logical = _logical_lines(source)
    for m in _INCLUDE.finditer(logical):
        spec = m.group("spec")
        line = logical.count("\n", 0, m.start()) + 1
        name = spec[1:-1] if len(spec) >= 2 and spec[0] + spec[-1] in ('""', "<>") else ""
        if name and _SAFE_REL.match(name) and ".." not in name.split("/"):
            if spec[0] == '"' and (name in _ALLOWED_QUOTED or name in local):
                continue
            if spec[0] == "<" and re.fullmatch(r"bpf/[\w.-]+\.h", name):
                continue
            if any((Path(d) / name).is_file() for d in include_dirs):
                continue
        raise BuildError(
            f"{file_name} line {line}: #include {spec} is not allowed",
            [Diagnostic(file_name, line, 1, "error", f"include {spec} is outside the allowed set")],
            'include only "vmlinux.h", "schedcp.h", <bpf/*.h>, headers of the given include directories '
            "and files beside the source; inline anything else into the file",
        )


def parse_diagnostics(stderr: str, source_name: str, labels: dict[str, str] | None = None) -> list[Diagnostic]:
    """clang's diagnostics, rewritten so they only quote the submitted and allowed files.

    `labels` maps a sandbox directory (``/src``, ``/inc/0``…) to the name shown for it; the
    submitted source is shown by `source_name`. A diagnostic located anywhere else keeps its line
    and column but not its text, and every line that is not a diagnostic (snippets, include chains)
    is dropped.
    """
    labels = labels if labels is not None else {SANDBOX_SRC: ""}
    out: list[Diagnostic] = []
    for raw in stderr.splitlines():
        m = _DIAG.match(raw.strip())
        if not m:
            continue
        shown = _display_file(m.group("file"), source_name, labels)
        message = m.group("msg") if shown is not None else "diagnostic in a file outside the allowed set (not shown)"
        out.append(
            Diagnostic(
                shown if shown is not None else "<outside>",
                int(m.group("line")),
                int(m.group("col")),
                m.group("sev"),
                message,
            )
        )
    return out


def _display_file(path: str, source_name: str, labels: dict[str, str]) -> str | None:
    norm = os.path.normpath(path)
    if norm in (f"{SANDBOX_SRC}/{source_name}", source_name):
        return source_name
    for root, label in labels.items():
        if norm.startswith(root.rstrip("/") + "/"):
            rel = norm[len(root.rstrip("/")) + 1 :]
            return f"{label}/{rel}" if label else rel
    return None


def resolve_source(name_or_file: str) -> Path:
    """A library scheduler name (e.g. "vtime") or a path to a .bpf.c file."""
    path = Path(name_or_file)
    if path.suffix == ".c" or "/" in name_or_file:
        if not path.is_file():
            raise UsageError(f"source file {name_or_file} does not exist", "pass a .bpf.c file or a library name")
        return path
    candidate = schedulers_dir() / "library" / f"{name_or_file}.bpf.c"
    if candidate.is_file():
        return candidate
    test_candidate = schedulers_dir() / "testing" / f"{name_or_file}.bpf.c"
    if test_candidate.is_file():
        return test_candidate
    raise UsageError(f"unknown scheduler {name_or_file!r}", "list the library with `schedcp sched list`")


def stage_source_dir(source_dir: Path, stage: Path) -> dict[str, bytes]:
    """Copy the .c/.h files of a multi-file scheduler (regular files only) into the stage."""
    files: dict[str, bytes] = {}
    total = 0
    root = source_dir.resolve()
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for d in dirnames:
            if os.path.islink(os.path.join(dirpath, d)):
                raise UsageError(
                    f"{os.path.join(dirpath, d)} is a symbolic link", "copy the files into the source directory"
                )
        for fname in sorted(filenames):
            if not fname.endswith(SOURCE_SUFFIXES):
                continue
            full = os.path.join(dirpath, fname)
            rel = os.path.relpath(full, root)
            st = os.lstat(full)
            if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
                raise UsageError(
                    f"{rel} in the source directory is not a regular file (a link or device)",
                    "copy the real file into the source directory",
                )
            if not _SAFE_REL.match(rel):
                raise UsageError(f"file name {rel!r} is not allowed", "use letters, digits, '.', '_', '-', '+'")
            total += st.st_size
            if len(files) >= MAX_SOURCE_DIR_FILES or total > MAX_SOURCE_DIR_BYTES:
                raise UsageError(
                    f"the source directory has more than {MAX_SOURCE_DIR_FILES} C files or "
                    f"{MAX_SOURCE_DIR_BYTES} bytes of them",
                    "pass the scheduler's own directory, not a whole tree",
                )
            files[rel] = Path(full).read_bytes()
    for rel, data in files.items():
        write_staged(stage, rel, data)
    return files


def write_staged(stage: Path, rel: str, data: bytes) -> None:
    target = stage / rel
    for parent in reversed(target.relative_to(stage).parents):
        d = stage / parent
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
    target.write_bytes(data)
    target.chmod(0o644)


def _tree_digest(directory: Path, into: hashlib._Hash) -> None:
    """Fold the names and contents of a header directory into the cache key."""
    for path in sorted(directory.rglob("*")):
        if path.is_file():
            into.update(str(path.relative_to(directory)).encode() + b"\0")
            if path.name == "vmlinux.h":
                st = path.stat()  # 3 MB: its size and mtime name it well enough
                into.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            else:
                into.update(hashlib.sha256(path.read_bytes()).digest())


def _readable_by_others(directory: Path) -> bool:
    """Whether uid 65534 can read every file under `directory` (the compiler runs as it)."""
    if os.geteuid() != 0:
        return True  # the sandbox runs as the caller, who can read what they pass
    for path in [directory, *directory.rglob("*")]:
        mode = path.stat().st_mode
        need = (stat.S_IROTH | stat.S_IXOTH) if stat.S_ISDIR(mode) else stat.S_IROTH
        if mode & need != need:
            return False
    return True


def _visible_copy(directory: Path, scratch: Path) -> Path:
    """A world-readable copy of a header directory the sandbox user could not read in place."""
    shutil.copytree(directory, scratch, symlinks=False, dirs_exist_ok=True)
    for path in [scratch, *scratch.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return scratch


def sandbox_visible(directory: Path, scratch: Path) -> Path:
    """`directory` itself when the sandbox user can read all of it, else a readable copy at `scratch`."""
    return directory.resolve() if _readable_by_others(directory) else _visible_copy(directory, scratch)


def build(
    source: Path | str | None,
    include_dir: Path,
    *,
    target: str,
    source_text: str | None = None,
    source_name: str | None = None,
    extra_include_dirs: Sequence[Path] = (),
    source_dir: Path | None = None,
) -> BuildResult:
    """Compile one source for the kernel whose vmlinux.h is in include_dir, inside the sandbox.

    `extra_include_dirs` are searched after our own (e.g. the kernel's ``tools/sched_ext/include``
    for ``<scx/common.bpf.h>``). `source_dir` makes the .c/.h files under it visible beside the
    source (multi-file schedulers); the source must then lie inside it. Nothing else is visible.
    """
    src_path = Path(source) if source is not None and source_text is None else None
    if source_text is None:
        if src_path is None:
            raise UsageError("nothing to build", "pass a source file or source_text")
        if src_path.stat().st_size > MAX_SOURCE_BYTES:
            raise UsageError(f"{src_path} is larger than {MAX_SOURCE_BYTES} bytes", "split or shrink it")
        source_text = src_path.read_text(errors="replace")
    if len(source_text.encode()) > MAX_SOURCE_BYTES:
        raise UsageError(f"source is larger than {MAX_SOURCE_BYTES} bytes", "shrink it")
    if "struct_ops" not in source_text and not _SCX_OPS_DEFINE.search(source_text):
        raise UsageError(
            "the source defines no struct_ops section, so it is not a sched_ext scheduler",
            'declare SEC(".struct_ops.link") struct sched_ext_ops NAME = {...} (or SCX_OPS_DEFINE(NAME, ...))',
        )
    if len(extra_include_dirs) > MAX_INCLUDE_DIRS:
        raise UsageError(f"at most {MAX_INCLUDE_DIRS} extra include directories", "merge them")
    name = source_name or (src_path.name if src_path else "source.bpf.c")
    if source_dir is not None and src_path is not None:
        try:
            name = str(src_path.resolve().relative_to(source_dir.resolve()))
        except ValueError as exc:
            raise UsageError(f"{src_path} is not inside {source_dir}", "pass the directory that holds it") from exc
    if not _SAFE_REL.match(name) or ".." in name.split("/"):
        raise UsageError(f"source name {name!r} is not allowed", "use a plain file name such as my_sched.bpf.c")
    our_include = schedulers_dir() / "include"
    inc_dirs = [Path(include_dir), our_include, headers.libbpf_include_dir(), *map(Path, extra_include_dirs)]
    for d in inc_dirs:
        if not d.is_dir():
            raise NotReadyError(f"include directory {d} does not exist", "run `schedcp setup`")
    clang = os.path.realpath(find_clang())
    out_dir = cache_dir() / "build"
    out_dir.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="stage-", dir=out_dir))
    try:
        stage = scratch / "src"  # becomes /src; copies of unreadable header dirs go beside it
        for d in (scratch, stage):
            d.mkdir(exist_ok=True)
            d.chmod(0o755)
        local = stage_source_dir(source_dir, stage) if source_dir is not None else {}
        local[name] = source_text.encode()
        write_staged(stage, name, local[name])
        for rel, data in sorted(local.items()):
            check_includes(
                data.decode(errors="replace"),
                include_dirs=inc_dirs,
                local_files=_local_names(rel, local),
                file_name=rel,
            )
        key_material = hashlib.sha256(BUILD_RECIPE.encode())
        for rel, data in sorted(local.items()):
            key_material.update(rel.encode() + b"\0" + hashlib.sha256(data).digest())
        key_material.update(name.encode())
        for d in inc_dirs:
            key_material.update(b"--dir--")
            _tree_digest(d, key_material)
        key_material.update(" ".join([clang, *CFLAGS, *DIAG_FLAGS]).encode())
        key = key_material.hexdigest()
        source_sha = hashlib.sha256(source_text.encode()).hexdigest()
        obj = out_dir / f"{key[:32]}.bpf.o"
        if obj.exists():
            return BuildResult(obj, src_path, source_sha, _sha(obj), target, True)
        labels = {SANDBOX_SRC: ""}
        binds = list(sandbox.program_binds(clang))
        include_flags: list[str] = []
        for i, d in enumerate(inc_dirs):
            inside = f"{SANDBOX_INC}/{i}"
            shown = sandbox_visible(d, scratch / f"inc{i}")
            binds.append(sandbox.Bind(str(shown), inside))
            labels[inside] = _label(i, d, include_dir, our_include)
            include_flags += ["-I", inside]
        binds.append(sandbox.Bind(str(stage), SANDBOX_SRC))
        spec = sandbox.SandboxSpec(
            limits=sandbox.Limits(
                timeout_s=BUILD_TIMEOUT_S,
                cpu_s=BUILD_TIMEOUT_S,
                memory_mb=BUILD_MEMORY_MB,
                max_procs=BUILD_MAX_PROCS,
                tmp_mb=16,
                file_mb=64,
                stdout_cap=MAX_OBJECT_BYTES,
                stderr_cap=256 * 1024,
            ),
            binds=binds,
            system=False,
            scratch=["/tmp"],
            chdir=SANDBOX_SRC,
        )
        argv = [clang, *CFLAGS, *DIAG_FLAGS, *include_flags, "-c", f"{SANDBOX_SRC}/{name}", "-o", "-"]
        res = sandbox.run(argv, spec)
        stderr = res.text("stderr")
        diags = parse_diagnostics(stderr, name, labels)
        _raise_for_limits(res)
        if res.exit_code != 0:
            errors = [d for d in diags if d.severity not in ("warning", "note")] or diags
            first = str(errors[0]) if errors else f"clang exited with {res.exit_code} and no diagnostic"
            raise BuildError(f"compilation failed: {first}", errors[:20])
        if res.stdout_bytes > MAX_OBJECT_BYTES or res.stdout[:4] != b"\x7fELF":
            raise BuildError(
                f"clang produced no usable object ({res.stdout_bytes} bytes, limit {MAX_OBJECT_BYTES})",
                diags[:20],
                "shrink the program (large static arrays end up in the object)",
            )
        tmp_obj = obj.with_suffix(f".tmp{os.getpid()}")
        tmp_obj.write_bytes(res.stdout)
        tmp_obj.replace(obj)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return BuildResult(
        obj,
        src_path,
        source_sha,
        _sha(obj),
        target,
        False,
        [d for d in diags if d.severity == "warning"][:20],
        res.notes,
    )


def _local_names(including: str, files: dict[str, bytes]) -> list[str]:
    """Include names that reach the submitted files from `including` (relative to it or to the root)."""
    base = PurePosixPath(including).parent
    names = set(files)
    for rel in files:
        try:
            names.add(str(PurePosixPath(rel).relative_to(base)))
        except ValueError:
            continue
    return sorted(names)


def _label(index: int, directory: Path, kernel_dir: Path, our_include: Path) -> str:
    if directory == kernel_dir:
        return "<kernel>"
    if directory == our_include:
        return "<schedcp>"
    return "<libbpf>" if index == 2 else f"<include{index - 2}>"


def _raise_for_limits(res: sandbox.SandboxResult) -> None:
    if res.timed_out:
        raise BuildError(
            f"clang did not finish within {BUILD_TIMEOUT_S}s and was stopped",
            [],
            "look for macros that expand exponentially or huge generated code",
        )
    if res.oom_killed or res.signal in (9, 24) or "out of memory" in res.text("stderr").lower():
        raise BuildError(
            f"clang exceeded the compile limits ({BUILD_MEMORY_MB} MB of memory, {BUILD_TIMEOUT_S}s of CPU) "
            "and was stopped",
            [],
            "look for macros that expand exponentially or huge generated code",
        )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_for_kernel(name_or_file: str, kernel) -> BuildResult:
    src = resolve_source(name_or_file)
    return build(src, headers.kernel_include_dir(kernel), target=kernel.release)
