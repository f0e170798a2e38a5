# SPDX-License-Identifier: Apache-2.0
"""Turn what a user names (library policy, test scheduler, .bpf.c source, .o object) into an object."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from schedcp.errors import UsageError
from schedcp.toolchain import build, headers, metadata
from schedcp.toolchain.objinfo import struct_ops_names


@dataclass
class ResolvedScheduler:
    name: str
    object_path: Path
    meta: metadata.SchedulerMeta | None
    source_path: Path | None
    built: build.BuildResult | None


def resolve_scheduler(spec: str, kernel) -> ResolvedScheduler:
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
    source = build.resolve_source(spec)
    meta = None
    toml = source.with_suffix("").with_suffix(".toml")
    if toml.is_file():
        meta = metadata.load_meta(toml)
    result = build.build(source, headers.kernel_include_dir(kernel), target=kernel.release)
    name = source.name.removesuffix(".bpf.c").removesuffix(".c")
    return ResolvedScheduler(name, result.object_path, meta, source, result)
