# SPDX-License-Identifier: Apache-2.0
"""The static rule set. To add a rule: subclass Rule (id, description, severity, check) in one of
these modules and list it in RULES; the pipeline, the report and the docs pick it up from here."""

from __future__ import annotations

from schedcp.verifier.static.context import Rule
from schedcp.verifier.static.rules.cpus import LocalOnCpuRange
from schedcp.verifier.static.rules.dsq import DsqNeverConsumed, DsqNotCreated, VtimeOnBuiltinDsq
from schedcp.verifier.static.rules.enqueue import EnqueueDropsTask
from schedcp.verifier.static.rules.fairness import HeadInsertFavouritism, StrictPriorityNoAging, VtimeUnboundedCredit
from schedcp.verifier.static.rules.hotpath import ErrorInHotPath, HotPathLoop
from schedcp.verifier.static.rules.kfuncs import DeprecatedKfunc, DirectTaskFieldWrite, KfuncUnavailable, OpsNameMissing
from schedcp.verifier.static.rules.slices import SliceOutOfRange

RULES: tuple[type[Rule], ...] = (
    DsqNeverConsumed,
    EnqueueDropsTask,
    DsqNotCreated,
    VtimeOnBuiltinDsq,
    VtimeUnboundedCredit,
    StrictPriorityNoAging,
    HeadInsertFavouritism,
    SliceOutOfRange,
    LocalOnCpuRange,
    HotPathLoop,
    ErrorInHotPath,
    KfuncUnavailable,
    DeprecatedKfunc,
    DirectTaskFieldWrite,
    OpsNameMissing,
)


def catalogue() -> list[dict[str, str]]:
    return [{"id": r.id, "severity": r.severity, "description": r.description} for r in RULES]
