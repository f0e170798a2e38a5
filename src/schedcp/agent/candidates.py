# SPDX-License-Identifier: Apache-2.0
"""Turning a planned candidate into a checked object: validate, build, statically check.

Cheap checks first: a candidate whose policy does not exist, whose tunables are out of range, or
whose source does not compile is rejected before any guest time is spent on it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schedcp.agent.models import Candidate
from schedcp.errors import SchedcpError, UsageError


@dataclass
class Built:
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


def validate(candidate: Candidate, repository: Any) -> Candidate:
    """Check a candidate against the repository: it exists and runs here, its tunables are valid."""
    from schedcp.server import checks
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
        return candidate
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
    return candidate


def build(candidate: Candidate, kernel: Any, repository: Any) -> Built:
    """Compile for the target kernel (raises BuildError with diagnostics, or UsageError)."""
    from schedcp.server.vmrun import RunRequest, prepare
    from schedcp.toolchain import build as build_mod
    from schedcp.toolchain import headers

    if candidate.source is not None:
        include = headers.kernel_include_dir(kernel)
        result = build_mod.build(
            Path(f"{candidate.policy}.bpf.c"),
            include,
            target=kernel.release,
            source_text=candidate.source,
            source_name=f"{candidate.policy}.bpf.c",
        )
        return Built(
            candidate.policy, result.object_path, None, result.source_sha256, result.object_sha256, candidate.source
        )
    req = RunRequest(argv=["true"], workload="agent", scheduler=candidate.policy, config=dict(candidate.config))
    prepared = prepare(req, kernel, lambda: repository)
    assert prepared is not None
    data = prepared.object_path.read_bytes()
    source = repository.source(candidate.policy)
    return Built(
        prepared.name,
        prepared.object_path,
        prepared.meta,
        prepared.source_sha256,
        hashlib.sha256(data).hexdigest(),
        source,
    )


def static_findings(source: str, config: dict[str, Any]) -> list[dict[str, Any]]:
    """The verifier's scheduler-specific static analysis, as small dicts (errors first)."""
    from schedcp.verifier.static import analyze

    result = analyze(source, config=dict(config) or None)
    rank = {"error": 0, "warning": 1, "info": 2}
    items = sorted(result.findings, key=lambda f: (rank.get(f.severity, 3), f.line or 0))
    return [
        {
            k: v
            for k, v in {
                "id": f.id,
                "severity": f.severity,
                "message": f.message,
                "line": f.line,
                "hint": f.hint,
            }.items()
            if v
        }
        for f in items[:12]
    ]


def diagnostics(exc: SchedcpError) -> list[str]:
    return [str(d)[:300] for d in getattr(exc, "diagnostics", [])[:8]]
