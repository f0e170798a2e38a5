# SPDX-License-Identifier: Apache-2.0
"""Entry point for `schedcp`: assembles the commands each service module registers."""

from __future__ import annotations

import importlib
import sys

import typer

from schedcp import __version__
from schedcp.cli.common import explain, fail
from schedcp.errors import SchedcpError

app = typer.Typer(
    name="schedcp",
    help="SchedCP: let AI agents safely observe, choose, verify and deploy sched_ext schedulers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# One module per service; each defines register(app). Order is the order shown in --help.
COMMAND_MODULES = [
    "schedcp.cli.setup",
    "schedcp.cli.vm",
    "schedcp.cli.sched",
    "schedcp.cli.repo",
    "schedcp.cli.analyze",
    "schedcp.cli.verify",
    "schedcp.cli.daemon",
    "schedcp.cli.deploy",
    "schedcp.cli.audit",
    "schedcp.cli.mcp",
    "schedcp.cli.bench",
    "schedcp.cli.optimize",
]


def _version(value: bool) -> None:
    if value:
        print(f"schedcp {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Show the version."),
) -> None:
    """SchedCP control plane."""


for _name in COMMAND_MODULES:
    try:
        _module = importlib.import_module(_name)
    except ModuleNotFoundError as _exc:
        if _exc.name != _name:
            raise
        continue
    _module.register(app)


def main() -> None:
    try:
        app()
    except SchedcpError as exc:
        raise SystemExit(fail(exc).exit_code) from None
    except Exception as exc:
        known = explain(exc)
        if known is None:
            raise
        raise SystemExit(fail(known).exit_code) from None
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        raise SystemExit(130) from None


if __name__ == "__main__":
    main()
