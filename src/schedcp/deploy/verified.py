# SPDX-License-Identifier: Apache-2.0
"""Load exactly what was verified: a verified object's configuration, checked and turned into a Policy.

The verifier binds one configuration into a token (``config_digest``): the tunables a SchedCP
policy declares, and for a source written against the scx headers the ``.rodata`` values its
userspace half would set (``rodata.NAME``) and the ``struct_ops`` map it attached. A deploy and a
trial on the daemon's node both start here, so the object is loaded with the same loader options
the verifier used (``scx_loader.options_for``: scx enums filled from the kernel's BTF, CPU counts,
the exit-info buffer, the ``.rodata`` values, the chosen ``struct_ops`` map), never with a
configuration the token does not name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from schedcp.deploy.artifacts import StoredObject
from schedcp.errors import UsageError
from schedcp.toolchain.scx_loader import LoaderOptions, options_for, split_config
from schedcp.trial.models import Policy


@dataclass(frozen=True)
class VerifiedConfig:
    """A configuration split the way the loader applies it, and whole as the token binds it."""

    tunables: dict[str, int | str]  # patched into .rodata by the trial core (metadata-checked)
    bound: dict[str, int | str]  # what the token's config digest covers
    loader: LoaderOptions


def check_config(stored: StoredObject, config: dict[str, Any], *, enum_kernel: Any = None) -> VerifiedConfig:
    """Validate ``config`` against the stored object (its tunable metadata, its .rodata BTF and its
    struct_ops maps); raises UsageError naming the first bad entry. ``enum_kernel`` is the cached
    test kernel whose SCX enum values go along (a VM node: reading them in the guest is slow)."""
    tunables, rodata, choice = split_config(config)
    meta = stored.info.meta
    if tunables and meta is None:
        raise UsageError(
            f"{stored.info.scheduler} declares no tunables, so {', '.join(sorted(tunables))} cannot apply",
            "repeat only what was verified (rodata.NAME=VALUE, struct_ops=NAME), or drop --config",
            code="usage",
        )
    values: dict[str, int | str] = meta.validate_config(tunables) if meta else {}
    loader = options_for(stored.path, rodata=rodata, struct_ops=choice, kernel=enum_kernel)
    bound: dict[str, int | str] = {**values, **{f"rodata.{k}": v for k, v in sorted(rodata.items())}}
    if choice is not None:
        bound["struct_ops"] = choice
    return VerifiedConfig(tunables=values, bound=bound, loader=loader)


def policy_for(stored: StoredObject, verified: VerifiedConfig) -> Policy:
    """The trial core's Policy for a stored object, with the verifier's loader options."""
    return Policy(name=stored.info.scheduler, object_path=stored.path, meta=stored.info.meta, loader=verified.loader)
