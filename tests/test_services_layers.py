# SPDX-License-Identifier: Apache-2.0
"""One service layer, two thin faces: the layering is checked on the source, not trusted.

``schedcp.services`` holds the operations and everything they need; ``schedcp.server`` is the MCP face
only (registration, transports, resources, subscriptions, HTTP auth) and the CLI calls the same
operations. So the service layer imports nothing from the server, and the server reaches the rest of
SchedCP (analysis, repository, toolchain, testbeds, trials, the daemon) only through the services.
"""

from __future__ import annotations

import ast
from pathlib import Path

import anyio
from mcp import Client

import schedcp.server
import schedcp.services

# What the MCP face may import from SchedCP besides itself: the service layer, errors, the version.
FACE_MAY_IMPORT = ("schedcp.services", "schedcp.errors", "schedcp.__version__")


def _imports(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """Every module a file imports (absolute names; relative imports resolved against its package)."""
    package = ".".join(path.with_suffix("").relative_to(Path(schedcp.server.__file__).parents[2]).parts[:-1])
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text() if text is None else text)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            found.append((node.lineno, base))
            # "from schedcp import server" names a module too
            found += [(node.lineno, f"{base}.{a.name}") for a in node.names if base in ("schedcp", "schedcp.server")]
    return found


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _package_files(package) -> list[Path]:
    files = sorted(Path(package.__file__).parent.rglob("*.py"))
    assert files, package.__name__
    return files


def test_services_import_nothing_from_the_server():
    offenders = [
        f"{path.name}:{line}: {name}"
        for path in _package_files(schedcp.services)
        for line, name in _imports(path)
        if _under(name, "schedcp.server")
    ]
    assert offenders == []


def test_the_import_check_sees_upward_imports():
    """The check above can fail: each spelling of an upward import is caught, relative ones too."""
    where = Path(schedcp.services.__file__).parent / "probe.py"  # only named, never written
    text = (
        "from schedcp.server import checks\n"
        "import schedcp.server.app\n"
        "from schedcp import server\n"
        "from ..server.state import ServerState\n"
        "def f():\n    from schedcp.server import budget\n"
    )
    names = [n for _l, n in _imports(where, text)]
    assert [n for n in names if _under(n, "schedcp.server")] == [
        "schedcp.server",
        "schedcp.server.checks",
        "schedcp.server.app",
        "schedcp.server",
        "schedcp.server.state",
        "schedcp.server",
        "schedcp.server.budget",
    ]


def test_the_server_reaches_schedcp_only_through_the_services():
    """No analysis, repository, toolchain, testbed, trial or daemon code is imported by the MCP face:
    what it offers is the service layer's operations, registered."""
    offenders = []
    for path in _package_files(schedcp.server):
        for line, name in _imports(path):
            if not _under(name, "schedcp") or _under(name, "schedcp.server") or name == "schedcp":
                continue
            if not any(_under(name, allowed) for allowed in FACE_MAY_IMPORT):
                offenders.append(f"{path.relative_to(Path(schedcp.server.__file__).parent)}:{line}: {name}")
    assert offenders == []


def test_the_server_declares_no_operation_models():
    """Inputs and outputs are declared once, in the service layer: no pydantic model in the MCP face."""
    offenders = []
    for path in _package_files(schedcp.server):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                bases = {ast.unparse(b) for b in node.bases}
                if bases & {"BaseModel", "pydantic.BaseModel"}:
                    offenders.append(f"{path.name}: {node.name}")
    assert offenders == []


def test_every_registered_tool_runs_its_operation(tmp_path):
    """tools/list is the registry, and each tool's handler is built from its Operation (name, docstring,
    input fields, kind); the server adds none of its own."""
    from schedcp.server.app import build_server
    from schedcp.server.tools.operations import KINDS
    from schedcp.services.operation import registry
    from schedcp.services.state import ServerOptions, ServerState

    state = ServerState(ServerOptions(repo_db=tmp_path / "repo.db", artifacts_root=tmp_path / "a"))
    server = build_server(state)

    async def listed():
        async with Client(server, mode="legacy") as client:
            return (await client.list_tools()).tools

    try:
        tools = anyio.run(listed)
    finally:
        state.close()
    ops = {op.name: op for op in registry()}
    assert len(ops) == len(registry()), "operation names are unique"
    assert [t.name for t in tools] == list(ops)
    for tool in tools:
        op = ops[tool.name]
        assert tool.description == op.doc(), tool.name
        assert set(tool.input_schema["properties"]) == set(op.input.model_fields) | {"max_bytes"}, tool.name
        assert tool.annotations.read_only_hint is KINDS[op.kind].read_only, tool.name
