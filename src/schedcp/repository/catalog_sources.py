# SPDX-License-Identifier: Apache-2.0
"""Where the seed catalog comes from: our BPF library, the upstream catalog file, the primitives.

Each source yields validated inputs plus a list of problems, so one broken library entry (another
engineer may be halfway through writing it) never blocks seeding the rest.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schedcp.errors import SchedcpError
from schedcp.repository.models import PolicyInput, TunableSpec, parse

PACKAGE_DIR = Path(__file__).resolve().parent
CATALOG_FILE = PACKAGE_DIR / "catalog" / "upstream.json"
PRIMITIVES_DIR = PACKAGE_DIR / "primitives"

ORIGIN_LIBRARY = "seed:library"
ORIGIN_UPSTREAM = "seed:upstream"


@dataclass(frozen=True)
class Primitive:
    name: str
    description: str
    tags: list[str]
    snippet: str


def library_policies() -> tuple[list[PolicyInput], list[str]]:
    from schedcp.toolchain import metadata

    found: list[PolicyInput] = []
    problems: list[str] = []
    for path in sorted(metadata.library_dir().glob("*.toml")):
        try:
            meta = metadata.load_meta(path)
            source = meta.source_path.read_text(encoding="utf-8")
            tunables = [
                TunableSpec(
                    name=t.name,
                    type=t.type,
                    default=t.default,
                    min=t.min,
                    max=t.max,
                    max_len=t.max_len,
                    unit=t.unit,
                    description=t.description,
                    variable=t.name,
                )
                for t in meta.tunables
            ]
            found.append(
                parse(
                    PolicyInput,
                    {
                        "name": meta.name,
                        "kind": "bpf",
                        "title": meta.title,
                        "description": meta.description,
                        "workloads": meta.workloads,
                        "tags": meta.tags,
                        "tunables": tunables,
                        "min_kernel": meta.min_kernel,
                        "source": source,
                        "status": "verified",
                        "upstream": f"schedcp library {meta.source_path.name}",
                    },
                    f"library scheduler {path.stem}",
                )
            )
        except (SchedcpError, OSError, ValueError) as exc:
            problems.append(f"{path.name}: {exc}")
    return found, problems


def upstream_policies(path: Path = CATALOG_FILE) -> tuple[list[PolicyInput], list[str]]:
    problems: list[str] = []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))["policies"]
    except (OSError, ValueError, KeyError) as exc:
        return [], [f"{path.name}: {exc}"]
    found = []
    for entry in entries:
        try:
            found.append(
                parse(
                    PolicyInput,
                    {**entry, "kind": "external", "status": "verified"},
                    f"catalog entry {entry.get('name', '?')}",
                )
            )
        except SchedcpError as exc:
            problems.append(str(exc))
    return found, problems


# The header comment follows the file's one-line SPDX licence comment.
_HEADER = re.compile(r"\A\s*(?:/\*\s*SPDX-License-Identifier:[^*]*\*/\s*)?/\*(.*?)\*/", re.S)


def parse_primitive(path: Path) -> Primitive:
    """A primitive file starts with a block comment: 'primitive: NAME', 'tags: a, b', then prose."""
    text = path.read_text(encoding="utf-8")
    match = _HEADER.match(text)
    if not match:
        raise ValueError(f"{path.name} has no header comment")
    lines = [re.sub(r"^\s*\*\s?", "", line).rstrip() for line in match.group(1).splitlines()]
    name, tags, prose = path.stem, list[str](), list[str]()
    for line in lines:
        if line.startswith("primitive:"):
            name = line.split(":", 1)[1].strip()
        elif line.startswith("tags:"):
            tags = [t.strip() for t in line.split(":", 1)[1].split(",") if t.strip()]
        elif line.strip() or prose:
            prose.append(line.strip())
    description = " ".join(" ".join(prose).split())
    if name != path.stem or len(description) < 20:
        raise ValueError(f"{path.name}: header must name the primitive {path.stem!r} and describe it")
    return Primitive(name=name, description=description, tags=tags, snippet=text)


def primitives(directory: Path = PRIMITIVES_DIR) -> tuple[list[Primitive], list[str]]:
    found, problems = [], []
    files = sorted(directory.glob("*.c"))
    if not files:
        problems.append(f"no primitives under {directory}: is the package data installed?")
    for path in files:
        try:
            found.append(parse_primitive(path))
        except (OSError, ValueError) as exc:
            problems.append(str(exc))
    return found, problems


def policy_from_meta(data: dict[str, Any], source: str) -> PolicyInput:
    """A PolicyInput from user metadata (our format, or a library-style scheduler TOML)."""
    fields = {k: v for k, v in data.items() if k not in ("stats", "source_file")}
    fields.setdefault("kind", "generated")
    tunables = []
    for item in fields.get("tunables") or []:
        if isinstance(item, dict) and fields["kind"] != "external" and "flag" not in item and "variable" not in item:
            item = {**item, "variable": item.get("name")}  # library TOML: the tunable is the C global
        tunables.append(item)
    fields["tunables"] = tunables
    fields["source"] = source
    return parse(PolicyInput, fields, "policy metadata")
