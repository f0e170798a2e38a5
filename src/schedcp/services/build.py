# SPDX-License-Identifier: Apache-2.0
"""Check and build a candidate policy without booting anything: validate, compile, static analysis.

Cheap checks first: a candidate whose policy does not exist, whose tunables are out of range, or
whose source does not compile is refused before any guest time is spent on it. ``check_candidate``
validates against the repository and the loader's tunable metadata; ``build_scheduler`` compiles
for a kernel (a testbed's, or a named test kernel) and runs the verifier's scheduler-specific
static analysis; the object stays in the testbed for ``run_trial``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from schedcp.errors import SchedcpError, UsageError
from schedcp.services import checks
from schedcp.services.models import (
    MAX_SOURCE_BYTES,
    NAME_PATTERN,
    BuildInfo,
    CandidateCheck,
    CandidateSpec,
    Finding,
    TestbedId,
)
from schedcp.services.operation import Operation, Progress

if TYPE_CHECKING:
    from schedcp.services.state import ServerState

MAX_FINDINGS = 12


@dataclass
class Built:
    """A compiled policy: the object the loader attaches, its tunable metadata and hashes."""

    name: str
    object_path: Path
    meta: Any  # schedcp.toolchain.metadata.SchedulerMeta | None
    source_sha256: str
    object_sha256: str
    source: str


def policy_info(repository: Any, name: str) -> dict[str, Any]:
    try:
        return repository.show(name)
    except SchedcpError as exc:
        raise UsageError(
            f"there is no policy named {name!r} in the repository",
            "pick a name from search_schedulers, or use level patch/compose with source",
        ) from exc


def check_candidate(candidate: CandidateSpec, repository: Any) -> CandidateCheck:
    """Refuse a candidate that cannot run: unknown or unrunnable policy, unknown or out-of-range
    tunables, new code without source or with config, a patch without its parent, a name clash."""
    from schedcp.toolchain import metadata

    checks.config_dict(dict(candidate.config))
    if candidate.level == "configure":
        if candidate.source is not None:
            raise UsageError("a configure candidate takes no source", "use level patch or compose to submit code")
        info = policy_info(repository, candidate.policy)
        if info["kind"] == "external":
            raise UsageError(
                f"{candidate.policy} is an upstream binary, which the test VM does not carry",
                "pick a BPF policy (kind bpf or generated)",
            )
        if info["status"] == "deprecated":
            raise UsageError(f"{candidate.policy} is deprecated in the repository", "pick another policy")
        if candidate.config:
            known = {t["name"]: t for t in info.get("tunables", [])}
            for key in candidate.config:
                if key not in known:
                    raise UsageError(
                        f"{candidate.policy} has no tunable {key!r}", f"its tunables: {', '.join(known) or 'none'}"
                    )
            try:
                meta = metadata.get(candidate.policy)
            except UsageError:
                meta = None
            if meta is not None:
                meta.validate_config(dict(candidate.config))
        return CandidateCheck(policy=candidate.policy, level=candidate.level, kind=info["kind"])
    if not candidate.source or len(candidate.source.strip()) < 20:
        raise UsageError(
            f"a {candidate.level} candidate needs the complete C source", "send the whole scheduler source in 'source'"
        )
    checks.source_text(candidate.source)
    if candidate.config:
        raise UsageError(
            "new code runs with the values compiled into it", "put tunable values in the source and leave config empty"
        )
    if candidate.level == "patch":
        if not candidate.parent:
            raise UsageError("a patch names the policy it changes in 'parent'", "e.g. parent: ljf")
        policy_info(repository, candidate.parent)
    try:
        existing = repository.show(candidate.policy)
    except SchedcpError:
        existing = None
    if existing is not None and existing.get("source_sha256") != hashlib.sha256(candidate.source.encode()).hexdigest():
        raise UsageError(
            f"a different policy named {candidate.policy!r} already exists", "give the new policy a new name"
        )
    return CandidateCheck(policy=candidate.policy, level=candidate.level, kind="generated")


def compile_policy(
    kernel: Any, repository: Any, *, name: str, source: str | None = None, config: dict[str, Any] | None = None
) -> Built:
    """Compile submitted source (as ``name``) or a library/repository policy by name for ``kernel``;
    validates ``config`` against the policy's tunables. Raises BuildError with diagnostics."""
    from schedcp.services.repository import library_source, repo_meta
    from schedcp.toolchain import build as build_mod
    from schedcp.toolchain import headers, metadata, scx_source

    include = headers.kernel_include_dir(kernel)
    config = dict(config or {})
    meta = None
    if source is not None:
        if config:
            raise UsageError(
                "config was given for submitted source, which declares no tunable metadata",
                "put tunable values in the source, or add the policy with tunables and build it by name",
            )
        file_name = f"{name.replace('.', '_')}.bpf.c"
        # Either style: scx-style text (<scx/common.bpf.h>) builds with the kernel's scx headers.
        result = scx_source.build_text(source, file_name, kernel)
        text = source
    else:
        path = library_source(name)
        if path is not None:
            toml = path.with_suffix("").with_suffix(".toml")
            meta = metadata.load_meta(toml) if toml.is_file() else None
            result = build_mod.build(path, include, target=kernel.release)
            text = path.read_text(errors="replace")
        else:
            info = repository.show(name)
            if info.get("kind") == "external":
                raise UsageError(
                    f"{name} is an upstream binary, which the test VM does not carry",
                    "try a BPF policy from our library or one added with add_scheduler",
                )
            meta = repo_meta(info)
            text = repository.source(name)
            result = scx_source.build_text(text, f"{name}.bpf.c", kernel)
        if config:
            if meta is None:
                raise UsageError(f"{name} declares no tunables", "drop config")
            meta.validate_config(config)
    digest = hashlib.sha256(result.object_path.read_bytes()).hexdigest()
    return Built(name, result.object_path, meta, result.source_sha256, digest, text)


def static_findings(source: str, config: dict[str, Any]) -> list[Finding]:
    """The verifier's scheduler-specific static analysis, most severe first."""
    from schedcp.verifier.static.sandboxed import StaticAnalysisError, run_static

    try:
        result = run_static(source, config=dict(config) or None)  # parsed in the sandbox, never here
    except StaticAnalysisError as exc:
        return [Finding(id=exc.finding_id, severity="error", message=exc.cause, hint=exc.next_step)]
    rank = {"error": 0, "warning": 1, "info": 2}
    items = sorted(result.findings, key=lambda f: (rank.get(f.severity, 3), f.line or 0))
    return [
        Finding(id=f.id, severity=f.severity, message=f.message, line=f.line, hint=f.hint or None)
        for f in items[:MAX_FINDINGS]
    ]


def diagnostics(exc: SchedcpError) -> list[str]:
    return [str(d)[:300] for d in getattr(exc, "diagnostics", [])[:8]]


def build_and_check(
    kernel: Any, repository: Any, *, name: str, source: str | None, config: dict[str, Any]
) -> tuple[BuildInfo, Built | None]:
    """Compile then statically check; a failed build or check is an answer, not an error."""
    try:
        built = compile_policy(kernel, repository, name=name, source=source, config=config)
    except SchedcpError as exc:
        # New code that does not compile (or includes what it may not) is an answer the author acts on;
        # a bad name or configuration of a stored policy is the caller's error.
        if source is None and exc.code != "build_failed":
            raise
        diags = diagnostics(exc)
        info = BuildInfo(
            ok=False, name=name, kernel_release=kernel.release, config=config, stage="build", error=exc.cause
        )
        info.diagnostics = diags
        return info, None
    findings = static_findings(built.source, config)
    errors = sum(1 for f in findings if f.severity == "error")
    info = BuildInfo(
        ok=errors == 0,
        build_id=f"bld-{secrets.token_hex(8)}",
        name=name,
        kernel_release=kernel.release,
        object_sha256=built.object_sha256,
        source_sha256=built.source_sha256,
        config=config,
        stage="done" if errors == 0 else "static",
        error=f"static analysis found {errors} error(s): {findings[0].message}" if errors else None,
        static_errors=errors,
        findings=findings,
    )
    return info, built


# -- operations -------------------------------------------------------------------------------------
class BuildInput(BaseModel):
    model_config = ConfigDict(extra="forbid")
    testbed_id: TestbedId | None = Field(
        None, description="Build for this testbed's kernel and keep the object there for run_trial."
    )
    kernel: str = Field(
        "unstable",
        pattern=r"^[a-z0-9][a-z0-9.+-]{0,40}$",
        description="Without testbed_id: the test kernel to build for.",
    )
    scheduler: str | None = Field(None, pattern=NAME_PATTERN, description="A library or repository policy by name.")
    source: str | None = Field(
        None, min_length=20, max_length=MAX_SOURCE_BYTES, description="Or complete sched_ext BPF C source."
    )
    name: str | None = Field(None, pattern=NAME_PATTERN, description="With source: the new policy's name.")
    config: dict[str, int | bool | str] = Field(
        default_factory=dict, max_length=40, description="Tunable values for a named policy (checked against it)."
    )


def check_candidate_op(state: ServerState, args: CandidateSpec, _progress: Progress) -> CandidateCheck:
    """Check that a candidate can run before spending anything on it: the policy exists and runs in
    the test VM (kind bpf or generated, not deprecated), its tunables exist and are in range; new code
    (patch/compose) carries complete source, no config, its parent, and a name not taken by other code."""
    return check_candidate(args, state.repository())


def build_scheduler(state: ServerState, args: BuildInput, progress: Progress) -> BuildInfo:
    """Compile a policy for the target kernel (clang; compiler diagnostics on failure) and run the
    verifier's scheduler-specific static analysis (starvation, DSQ misuse, slices, kfuncs). No VM.

    A failed build or check is an answer (ok false, with diagnostics or findings), not an error. With
    testbed_id the object is kept there: pass build_id to run_trial."""

    if (args.scheduler is None) == (args.source is None):
        raise UsageError("give exactly one of scheduler (a name) or source (C code)", "drop one of them")
    if args.source is not None:
        checks.source_text(args.source)
        if args.name is None:
            raise UsageError("name the new policy (name) when building source", "e.g. name: ljf_patched")
        name = args.name
    else:
        assert args.scheduler is not None
        name = args.scheduler
    checks.config_dict(dict(args.config))
    if args.testbed_id is not None:
        tb = state.testbeds.get(args.testbed_id)
        progress(f"building {name} for the testbed's kernel")
        with tb.lock:
            kernel = tb.session.kernel
            info, built = build_and_check(
                kernel, state.repository(), name=name, source=args.source, config=dict(args.config)
            )
            if built is not None and info.build_id is not None:
                tb.builds[info.build_id] = (built, dict(args.config))
        return info
    from schedcp.testbed import kernel as kernel_mod

    kernel = kernel_mod.cached(args.kernel)
    progress(f"building {name} for {kernel.release}")
    info, _built = build_and_check(kernel, state.repository(), name=name, source=args.source, config=dict(args.config))
    return info.model_copy(update={"build_id": None})


OPERATIONS = [
    Operation("check_candidate", CandidateSpec, check_candidate_op, CandidateCheck, kind="read", max_bytes=1024),
    Operation("build_scheduler", BuildInput, build_scheduler, BuildInfo, kind="compute"),
]
