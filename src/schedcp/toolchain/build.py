# SPDX-License-Identifier: Apache-2.0
"""Compile sched_ext BPF C into objects, with readable errors and a content-addressed cache.

Accepted sources: files using our header (``#include "schedcp.h"``) and self-contained files that
include only ``"vmlinux.h"`` and libbpf's ``<bpf/*.h>``. Every ``#include`` is checked against that
allow-list before clang runs, and clang runs with ``-nostdinc`` so nothing else on the host leaks in.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from schedcp.errors import NotReadyError, SchedcpError, UsageError
from schedcp.paths import cache_dir, schedulers_dir
from schedcp.toolchain import headers

MAX_SOURCE_BYTES = 512 * 1024
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
BUILD_TIMEOUT_S = 120
_INCLUDE = re.compile(r'^\s*#\s*include\s*(?P<spec>"[^"]*"|<[^>]*>|\S+)', re.M)
_ALLOWED_QUOTED = {"vmlinux.h", "schedcp.h", "schedcp_kernel.h"}
_DIAG = re.compile(r"^(?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning|fatal error): (?P<msg>.*)$")


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


def check_includes(source: str) -> None:
    """Refuse includes outside vmlinux.h, our header and libbpf's bpf/*.h."""
    for m in _INCLUDE.finditer(source):
        spec = m.group("spec")
        line = source.count("\n", 0, m.start()) + 1
        if spec.startswith('"') and spec[1:-1] in _ALLOWED_QUOTED:
            continue
        if spec.startswith("<bpf/") and re.fullmatch(r"<bpf/[\w.-]+\.h>", spec) and ".." not in spec:
            continue
        raise BuildError(
            f"line {line}: #include {spec} is not allowed",
            [Diagnostic("<source>", line, 1, "error", f"include {spec} is outside the allowed set")],
            'include only "vmlinux.h", "schedcp.h" and <bpf/*.h>; inline anything else into the file',
        )


def parse_diagnostics(stderr: str, source_name: str) -> list[Diagnostic]:
    out: list[Diagnostic] = []
    for line in stderr.splitlines():
        m = _DIAG.match(line.strip())
        if m:
            file = m.group("file")
            out.append(
                Diagnostic(
                    source_name if file.endswith(("source.bpf.c", source_name)) else os.path.basename(file),
                    int(m.group("line")),
                    int(m.group("col")),
                    m.group("sev"),
                    m.group("msg"),
                )
            )
    return out


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


def build(
    source: Path | str,
    include_dir: Path,
    *,
    target: str,
    source_text: str | None = None,
    source_name: str | None = None,
) -> BuildResult:
    """Compile one source for the kernel whose vmlinux.h is in include_dir."""
    src_path = Path(source) if source_text is None else None
    if source_text is None:
        assert src_path is not None
        if src_path.stat().st_size > MAX_SOURCE_BYTES:
            raise UsageError(f"{src_path} is larger than {MAX_SOURCE_BYTES} bytes", "split or shrink it")
        source_text = src_path.read_text(errors="replace")
    if len(source_text.encode()) > MAX_SOURCE_BYTES:
        raise UsageError(f"source is larger than {MAX_SOURCE_BYTES} bytes", "shrink it")
    if "struct_ops" not in source_text:
        raise UsageError(
            "the source defines no struct_ops section, so it is not a sched_ext scheduler",
            'declare SEC(".struct_ops.link") struct sched_ext_ops NAME = {...}',
        )
    check_includes(source_text)
    name = source_name or (src_path.name if src_path else "source.bpf.c")
    clang = find_clang()
    our_include = schedulers_dir() / "include"
    libbpf_inc = headers.libbpf_include_dir()
    key_material = hashlib.sha256()
    key_material.update(source_text.encode())
    for hdr in sorted(our_include.glob("*.h")):
        key_material.update(hdr.read_bytes())
    kernel_h = include_dir / "schedcp_kernel.h"
    key_material.update(kernel_h.read_bytes() if kernel_h.exists() else b"")
    key_material.update(str((include_dir / "vmlinux.h").stat().st_size).encode())
    key_material.update(" ".join([clang, *CFLAGS]).encode())
    key = key_material.hexdigest()
    source_sha = hashlib.sha256(source_text.encode()).hexdigest()
    out_dir = cache_dir() / "build"
    out_dir.mkdir(parents=True, exist_ok=True)
    obj = out_dir / f"{key[:32]}.bpf.o"
    if obj.exists():
        return BuildResult(obj, src_path, source_sha, _sha(obj), target, True)
    work = out_dir / f"{key[:32]}.work"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        src_copy = work / name
        src_copy.write_text(source_text)
        argv = [
            clang,
            *CFLAGS,
            "-I",
            str(include_dir),
            "-I",
            str(our_include),
            "-I",
            str(libbpf_inc),
            "-c",
            str(src_copy),
            "-o",
            str(work / "out.o"),
        ]
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, cwd=work)
        except subprocess.TimeoutExpired as exc:
            raise BuildError(f"clang did not finish within {BUILD_TIMEOUT_S}s", []) from exc
        diags = parse_diagnostics(proc.stderr, name)
        if proc.returncode != 0:
            errors = [d for d in diags if d.severity != "warning"] or diags
            first = str(errors[0]) if errors else proc.stderr.strip().splitlines()[-1:] or ["clang failed"]
            raise BuildError(f"compilation failed: {first}", errors[:20])
        (work / "out.o").rename(obj)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return BuildResult(
        obj, src_path, source_sha, _sha(obj), target, False, [d for d in diags if d.severity == "warning"][:20]
    )


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build_for_kernel(name_or_file: str, kernel) -> BuildResult:
    src = resolve_source(name_or_file)
    return build(src, headers.kernel_include_dir(kernel), target=kernel.release)
