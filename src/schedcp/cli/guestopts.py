# SPDX-License-Identifier: Apache-2.0
"""The options that put a user's own programs into the micro-VM: ``--package`` and ``--with``.

Shared by every command that boots the guest for a workload (vm run, analyze, verify, bench,
optimize), so they read and fail the same way everywhere. What they do is testbed/extras.py.
"""

from __future__ import annotations

from collections.abc import Callable

import typer

from schedcp.testbed import guest as guest_mod
from schedcp.testbed.extras import GuestExtras

PackageOption = typer.Option(
    [],
    "--package",
    help="Debian stable package to add to the guest, with its dependencies (repeatable), e.g. stress-ng.",
)
WithOption = typer.Option(
    [],
    "--with",
    help="Host file or directory to copy into the guest, PATH[:GUEST_PATH] (repeatable; default /work/NAME, "
    "where commands start). ELF programs bring the shared libraries the guest lacks.",
)


def extras_from(packages: list[str] | None, with_: list[str] | None) -> GuestExtras | None:
    """Validated extras, or None when neither option was given."""
    extras = GuestExtras.from_options(packages, with_)
    return extras or None


def prepare_image(
    extras: GuestExtras | None, say: Callable[[str], None], variant: str = "default"
) -> guest_mod.GuestImage | None:
    """Build the guest image with the extras before booting (so progress shows and errors come
    before any VM starts); None when there are no extras and the plain image will do."""
    if not extras:
        return None
    say("preparing the guest image: " + ", ".join([*extras.packages, *(f.guest for f in extras.files)])[:200])
    return guest_mod.ensure_image(build_if_missing=False, variant=variant, extras=extras, progress=say)
