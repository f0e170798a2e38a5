# SPDX-License-Identifier: Apache-2.0
"""Static analysis of submitted C in the sandbox, never in the calling process.

Parsing is attack surface too: a tree-sitter parse, our rules' walks over the tree, the scx-aware
include following and the regexes over a userspace half all run over text an agent or a local user
chose, and some inputs cost minutes of CPU or hundreds of MB (350 KB of nested ``if`` statements
kept the rules busy for two minutes in-process). Inside the root daemon that would be root's time
and memory, with no bound. So every analysis of submitted source goes through :func:`run_static`,
which runs this module's worker (``python -I -S``) in :mod:`schedcp.sandbox` — the compiler's
sandbox: uid 65534 without capabilities, no network, and a filesystem holding only the interpreter,
the packages the worker imports (read-only, each package's own directory), the staged sources at
``/job/src`` (and the built object at ``/job/obj``) and the allowed header directories at
``/inc/N``; wall clock, CPU time, memory and output are bounded. The worker reads one JSON job on
stdin and writes one JSON result on stdout, which this side validates (pydantic) before using it.

The in-process entry point (:func:`schedcp.verifier.static.analyze`) stays the analysis itself, for
the worker and for tests over trusted snippets; callers that handle submitted source use this one.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schedcp import sandbox
from schedcp.errors import SchedcpError
from schedcp.paths import cache_dir
from schedcp.verifier.report import SEVERITY_RANK, Finding
from schedcp.verifier.static.kernelfacts import KernelFacts

# What the worker imports, besides the standard library: each is bound read-only at its own path.
WORKER_PACKAGES = (
    "schedcp",
    "tree_sitter",
    "tree_sitter_c",
    "pydantic",
    "pydantic_core",
    "typing_extensions",
    "annotated_types",
    "typing_inspection",
    "elftools",
)
STATIC_TIMEOUT_S = 60.0
STATIC_MEMORY_MB = 1024
MAX_RESULT_BYTES = 8 * 1024 * 1024
# More findings than this are cut in the worker (most severe kept, as StageResult.bounded() does).
MAX_WORKER_FINDINGS = 1000
MAX_USERSPACE_COPY = 1024 * 1024  # scx_userspace reads the first 256 K characters of the half
SANDBOX_JOB = "/job"
SANDBOX_INC = "/inc"
EXIT_MEMORY = 3
EXIT_NESTING = 4


class StaticAnalysisError(SchedcpError):
    """The analysis could not finish: the input exceeded its limits, or the worker failed."""

    def __init__(self, cause: str, next_step: str, *, limits: bool) -> None:
        super().__init__(cause, next_step, code="static_limits" if limits else "static_failed")
        self.limits = limits

    @property
    def finding_id(self) -> str:
        return "static-limits" if self.limits else "static-failed"


class StaticJob(BaseModel):
    """What the worker analyses; paths are inside the sandbox."""

    model_config = ConfigDict(extra="forbid")

    source: str
    config: dict[str, int | float | bool | str] | None = None
    kernel: KernelFacts | None = None
    static: bool = True
    main: str | None = None  # the staged main source, for include following and the userspace half
    local: list[str] = Field(default_factory=list)  # staged headers beside it (relative names)
    whole_dir: bool = False
    include_dirs: list[str] = Field(default_factory=list)  # scx header directories
    object: str | None = None  # the built object: run the userspace-half analysis on it


class StaticOutcome(BaseModel):
    """The worker's answer."""

    model_config = ConfigDict(extra="forbid")

    findings: list[Finding] = Field(default_factory=list, max_length=MAX_WORKER_FINDINGS)
    omitted_findings: int = 0
    facts: dict[str, Any] = Field(default_factory=dict)
    userspace: Any = None  # schedcp.toolchain.scx_userspace.UserspaceNeeds, validated by the caller
    uid: int  # who the worker ran as (the sandbox's uid when the caller is root)
    gid: int
    wall_s: float = 0.0  # filled in by the caller


def run_static(
    source: str,
    *,
    kernel: KernelFacts | None = None,
    config: dict[str, Any] | None = None,
    sources: Any = None,
    include_dirs: Sequence[Path] = (),
    obj: Path | None = None,
    static: bool = True,
    limits: sandbox.Limits | None = None,
) -> StaticOutcome:
    """Analyse `source` in the sandbox: the static rules (unless `static` is False) over it and the
    headers it includes (`sources`, a ``scx_source.SourceSet``, brings the files beside it;
    `include_dirs` are the scx header trees), and with `obj` what its userspace half does
    (``scx_userspace.analyze``). Raises StaticAnalysisError when the input exceeds the limits."""
    from schedcp.toolchain import build as build_mod

    root = cache_dir() / "static"
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="job-", dir=root))
    try:
        job_dir = scratch / "job"
        job = StaticJob(source=source, config=dict(config) if config else None, kernel=kernel, static=static)
        _stage(job, job_dir, sources, obj)
        python_binds, paths = _python_view()
        binds = [*python_binds, sandbox.Bind(str(job_dir), SANDBOX_JOB)]
        for i, d in enumerate(include_dirs):
            inside = f"{SANDBOX_INC}/{i}"
            binds.append(sandbox.Bind(str(build_mod.sandbox_visible(Path(d), scratch / f"inc{i}")), inside))
            job.include_dirs.append(inside)
        spec = sandbox.SandboxSpec(
            limits=limits
            or sandbox.Limits(
                timeout_s=STATIC_TIMEOUT_S,
                cpu_s=int(STATIC_TIMEOUT_S),
                memory_mb=STATIC_MEMORY_MB,
                max_procs=8,
                tmp_mb=8,
                file_mb=1,
                stdout_cap=MAX_RESULT_BYTES,
                stderr_cap=64 * 1024,
            ),
            binds=binds,
            system=False,
            scratch=["/tmp"],
            chdir="/tmp",
        )
        boot = f"import sys; sys.path[:0] = {paths!r}; from {__name__} import worker; sys.exit(worker())"
        argv = [os.path.realpath(sys.executable), "-I", "-S", "-B", "-c", boot]
        res = sandbox.run(argv, spec, stdin=job.model_dump_json().encode())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return _outcome(res, spec.limits)


def _stage(job: StaticJob, job_dir: Path, sources: Any, obj: Path | None) -> None:
    """Copy what the worker may read into a directory the sandbox user can read: exactly the files
    the compiler saw (the main source and its local headers, or the whole scheduler directory), the
    userspace half beside the main source, and the object."""
    from schedcp.toolchain import build as build_mod
    from schedcp.toolchain.scx_userspace import _userspace_half

    src = job_dir / "src"
    for d in (job_dir, src):
        d.mkdir(exist_ok=True)
        d.chmod(0o755)
    if sources is not None:
        main_rel = sources.main.name
        if sources.whole_dir:
            build_mod.stage_source_dir(sources.root, src)
            main_rel = str(sources.main.resolve().relative_to(sources.root.resolve()))
            job.whole_dir = True
        else:
            for rel, path in sources.local.items():
                build_mod.write_staged(src, rel, _regular_bytes(path, build_mod.MAX_SOURCE_BYTES))
                job.local.append(rel)
        build_mod.write_staged(src, main_rel, job.source.encode())
        job.main = f"{SANDBOX_JOB}/src/{main_rel}"
        half = _userspace_half(sources.main)
        beside = str(Path(main_rel).parent / half.name) if half is not None else ""
        if half is not None and not (src / beside).exists():
            build_mod.write_staged(src, beside.removeprefix("./"), _regular_bytes(half, MAX_USERSPACE_COPY))
    if obj is not None:
        (job_dir / "obj").mkdir(mode=0o755)
        (job_dir / "obj").chmod(0o755)
        build_mod.write_staged(job_dir / "obj", "object.bpf.o", obj.read_bytes())
        job.object = f"{SANDBOX_JOB}/obj/object.bpf.o"


def _regular_bytes(path: Path, limit: int) -> bytes:
    """The first `limit` bytes of a regular file (a link or device is refused, as the build does)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not os.path.isfile(f"/proc/self/fd/{fd}"):
            raise StaticAnalysisError(f"{path.name} is not a regular file", "copy the real file", limits=False)
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read(limit)
    finally:
        os.close(fd)


@lru_cache(maxsize=1)
def _python_view() -> tuple[tuple[sandbox.Bind, ...], tuple[str, ...]]:
    """Binds for the interpreter, its standard library and the worker's packages; the sys.path
    entries that reach them. Each package is bound as its own directory (or file), so nothing else
    that sits beside it in site-packages or the source tree is visible."""
    exe = os.path.realpath(sys.executable)
    binds: dict[str, sandbox.Bind] = {b.target: b for b in sandbox.program_binds(exe)}

    def add(path: str) -> None:
        real = os.path.realpath(path)
        if not any(real == t or real.startswith(t.rstrip("/") + "/") for t in binds):
            binds[real] = sandbox.Bind(real, real)

    stdlib = os.path.dirname(os.path.realpath(os.__file__))
    add(stdlib)
    paths: list[str] = []
    locations: list[str] = []
    for name in WORKER_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or (spec.origin is None and not spec.submodule_search_locations):
            raise StaticAnalysisError(
                f"the static analysis needs the Python package {name}", "run scripts/ensure-env.sh", limits=False
            )
        if spec.submodule_search_locations:
            location = os.path.realpath(next(iter(spec.submodule_search_locations)))
        else:
            assert spec.origin is not None
            location = os.path.realpath(spec.origin)
        add(location)
        locations.append(location)
        libs = location + ".libs"  # shared libraries some wheels ship beside the package
        if os.path.isdir(libs):
            add(libs)
        entry = os.path.dirname(location)
        if entry not in paths and entry != stdlib:
            paths.append(entry)
    # Extension modules (the packages' and the standard library's) and what they link: libffi for
    # ctypes, libgcc_s for pydantic-core. Only those library files are bound, not their directories.
    dynload = [os.path.join(stdlib, "lib-dynload")]
    modules = [
        str(f) for d in [*dynload, *locations] if os.path.isdir(d) for f in Path(d).rglob("*.so*") if f.is_file()
    ]
    for lib in sandbox.library_binds(tuple(sorted(modules))):
        if not any(lib.target == t or lib.target.startswith(t.rstrip("/") + "/") for t in binds):
            binds[lib.target] = lib
    return tuple(binds.values()), tuple(paths)


def _needs_adapter():
    from pydantic import TypeAdapter

    from schedcp.toolchain.scx_userspace import UserspaceNeeds

    return TypeAdapter(UserspaceNeeds)


def _outcome(res: sandbox.SandboxResult, limits: sandbox.Limits) -> StaticOutcome:
    """The worker's validated answer, or the reason there is none."""
    stderr = res.text("stderr").strip()
    last = stderr.splitlines()[-1][:300] if stderr else ""
    if res.timed_out or res.signal == 24 or "CPU time limit" in stderr:
        raise StaticAnalysisError(
            f"the static analysis did not finish within {limits.timeout_s:.0f}s and was stopped",
            "the source is too large or too deeply nested to analyse; simplify it",
            limits=True,
        )
    if res.oom_killed or res.exit_code == EXIT_MEMORY or res.signal == 9:
        raise StaticAnalysisError(
            f"the static analysis needed more than {limits.memory_mb} MB of memory and was stopped",
            "the source is too large or too deeply nested to analyse; simplify it",
            limits=True,
        )
    if res.exit_code == EXIT_NESTING:
        raise StaticAnalysisError(
            "the source is nested too deeply to analyse", "simplify deeply nested code", limits=True
        )
    if res.stdout_bytes > MAX_RESULT_BYTES:
        raise StaticAnalysisError(
            f"the static analysis produced more than {MAX_RESULT_BYTES} bytes", "simplify the source", limits=True
        )
    if res.exit_code != 0 or res.signal is not None:
        raise StaticAnalysisError(
            f"the static analysis failed (exit {res.exit_code}, signal {res.signal}): {last}",
            "report this as a SchedCP bug with the source",
            limits=False,
        )
    try:
        outcome = StaticOutcome.model_validate_json(res.stdout)
        if outcome.userspace is not None:
            outcome.userspace = _needs_adapter().validate_python(outcome.userspace)
    except ValidationError as exc:
        raise StaticAnalysisError(
            f"the static analysis returned an invalid result: {exc.errors()[0]['msg']}",
            "report this as a SchedCP bug",
            limits=False,
        ) from None
    outcome.wall_s = res.wall_s
    return outcome


# -- inside the sandbox --------------------------------------------------------------------------
def worker() -> int:
    """Read a StaticJob on stdin, write a StaticOutcome on stdout (runs in the sandbox)."""
    sys.setrecursionlimit(4000)
    try:
        job = StaticJob.model_validate_json(sys.stdin.buffer.read())
        out = _work(job)
    except MemoryError:
        return EXIT_MEMORY
    except RecursionError:
        return EXIT_NESTING
    sys.stdout.write(out.model_dump_json())
    sys.stdout.flush()
    return 0


def _work(job: StaticJob) -> StaticOutcome:
    from schedcp.toolchain import scx_source, scx_userspace
    from schedcp.toolchain.scx_headers import ScxHeaders
    from schedcp.verifier.static import analyze

    main = Path(job.main) if job.main else None
    source_set = None
    if main is not None:
        source_set = scx_source.SourceSet(
            main=main,
            root=main.parent,
            local={rel: main.parent / rel for rel in job.local},
            whole_dir=job.whole_dir,
        )
    findings: list[Finding] = []
    facts: dict[str, Any] = {}
    omitted = 0
    if job.static:
        units: list[tuple[str, bytes]] = []
        if source_set is not None:
            scx = ScxHeaders([Path(d) for d in job.include_dirs], "", "", False) if job.include_dirs else None
            units = scx_source.analysis_units(source_set, scx)
        result = analyze(job.source, kernel=job.kernel, config=job.config, extra_units=units)
        findings, facts = result.findings, result.facts
        if len(findings) > MAX_WORKER_FINDINGS:
            kept = sorted(findings, key=lambda f: (SEVERITY_RANK[f.severity], f.line or 0))[:MAX_WORKER_FINDINGS]
            omitted = len(findings) - len(kept)
            findings = sorted(kept, key=lambda f: (f.line or 0, f.id))
    userspace = None
    if job.object is not None:
        texts = list(source_set.texts().values()) if source_set is not None else []
        userspace = scx_userspace.analyze(Path(job.object), main, texts)
    return StaticOutcome(
        findings=findings, omitted_findings=omitted, facts=facts, userspace=userspace, uid=os.getuid(), gid=os.getgid()
    )
