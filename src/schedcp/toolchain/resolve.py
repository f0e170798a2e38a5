# SPDX-License-Identifier: Apache-2.0
"""Turn what a user names (library policy, test scheduler, .bpf.c source, .o object) into an object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schedcp.errors import UsageError
from schedcp.toolchain import build, metadata, scx_source
from schedcp.toolchain.objinfo import struct_ops_names
from schedcp.toolchain.scx_headers import ScxHeaders
from schedcp.toolchain.scx_userspace import UserspaceNeeds


@dataclass
class ResolvedScheduler:
    name: str
    object_path: Path
    meta: metadata.SchedulerMeta | None
    source_path: Path | None
    built: build.BuildResult | None
    scx: ScxHeaders | None = None  # the scx headers it was built with (scx-style sources)
    needs: UserspaceNeeds | None = None  # what its own userspace loader does beyond SchedCP's


def resolve_scheduler(spec: str, kernel, *, scx_include: str | None = None) -> ResolvedScheduler:
    """A library name, a .bpf.c (with headers beside it), a scheduler directory or a .bpf.o."""
    path = Path(spec)
    if path.suffix == ".o":
        if not path.is_file():
            raise UsageError(f"object file {spec} does not exist", "pass a built .bpf.o or a source/library name")
        if not struct_ops_names(path):
            raise UsageError(
                f"{spec} has no struct_ops section, so it is not a sched_ext scheduler",
                'build a sched_ext scheduler (it must define a SEC(".struct_ops.link") variable)',
            )
        return ResolvedScheduler(path.name.removesuffix(".bpf.o").removesuffix(".o"), path, None, None, None)
    built = scx_source.build_for_kernel(spec, kernel, scx_include=scx_include)
    source = built.sources.main
    meta = None
    toml = source.with_suffix("").with_suffix(".toml")
    if toml.is_file():
        meta = metadata.load_meta(toml)
    result = built.result
    # What its userspace half does, read in the sandbox like every analysis of C (verifier/static/sandboxed.py).
    from schedcp.verifier.static.sandboxed import run_static

    text = source.read_bytes()[: build.MAX_SOURCE_BYTES].decode(errors="replace")
    needs = run_static(text, sources=built.sources, obj=result.object_path, static=False).userspace
    return ResolvedScheduler(built.sources.name, result.object_path, meta, source, result, built.scx, needs)
