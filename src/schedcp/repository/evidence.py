# SPDX-License-Identifier: Apache-2.0
"""Evidence behind a policy's status: what lets it become ``verified`` or ``production``.

A promotion reason is the caller's prose; an agent once promoted its own unverified scheduler to
``verified`` and then ``production`` with a made-up win. So status changes up the ladder need
evidence the caller cannot write:

* ``verified`` needs a passing **verification record** for the policy's exact source, kept by the
  daemon that ran the verifier (:mod:`schedcp.daemon.records`). It binds the source's SHA-256 to
  the object the verifier built (``object_sha256``), which the repository then records on the
  policy. Read over the daemon socket (the client checks the server is root), or directly from the
  daemon's state directory when the caller can read it (root on the same host).
* ``production`` needs a **measured trial**: a run against EEVDF in the same boot that the control
  plane's own trial code performed (``run_in_vm``, the server's ``run_trial``, sched-agent's trial
  runner) and stored with :meth:`RepositoryService.record_measured_trial`, for the same source,
  in which the policy stayed enabled and beat the baseline. No MCP tool writes these records;
  ``record_result`` (numbers an agent reports) teaches the planner but proves nothing.

What this does not stop: a process running as the same user as the repository can edit its SQLite
file directly. The verification records are root's and hold even then; docs/security.md says so.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from schedcp.daemon.records import HEX64, VerificationRecord, VerificationRecords
from schedcp.errors import SchedcpError

MeasuredBy = Literal["run_in_vm", "run_trial", "sched-agent", "bench"]
WIN_RATIO = 1.03  # the goal metric beat EEVDF by 3% in the median (and in most rounds)


def is_win(*, ok: bool, stayed_enabled: bool, ratio: float | None, consistent: bool) -> bool:
    """The one rule for "this trial beat EEVDF", which ``production`` needs."""
    return ok and stayed_enabled and ratio is not None and ratio >= WIN_RATIO and consistent


class MeasuredTrial(BaseModel):
    """One comparison with EEVDF that the control plane ran and judged itself."""

    model_config = ConfigDict(extra="forbid")
    source_sha256: str = Field(pattern=HEX64)
    policy: str | None = Field(None, max_length=64)
    measured_by: MeasuredBy
    kernel: str = Field(max_length=128)
    workload: str = Field(max_length=300)
    config: dict[str, int | float | bool | str] = Field(default_factory=dict, max_length=64)
    metric: str | None = Field(None, max_length=64)
    ratio: float | None = None  # > 1: the policy did better than EEVDF on ``metric``
    beat_baseline: bool
    stayed_enabled: bool
    boot_id: str | None = Field(None, max_length=64)
    detail: dict[str, Any] = Field(default_factory=dict)


class VerificationSource(Protocol):
    def latest_pass(self, source_sha256: str) -> VerificationRecord | None: ...


def no_evidence(cause: str, next_step: str) -> SchedcpError:
    return SchedcpError(cause, next_step, code="no_evidence")


class RecordsVerifications:
    """Read the daemon's records file directly (root, or whoever owns the daemon's state)."""

    def __init__(self, records: VerificationRecords) -> None:
        self.records = records

    def latest_pass(self, source_sha256: str) -> VerificationRecord | None:
        return self.records.latest(source_sha256)


class DaemonVerifications:
    """Ask the daemon over its socket; the client refuses a server that is not root."""

    def __init__(self, socket: Path | None = None) -> None:
        self.socket = socket

    def latest_pass(self, source_sha256: str) -> VerificationRecord | None:
        from schedcp.daemon.client import DaemonClient

        try:
            with DaemonClient(self.socket) as client:
                record = client.verification(source_sha256)
        except SchedcpError as exc:
            raise no_evidence(
                f"verification records are kept by the daemon, which did not answer: {exc.cause}",
                "start the daemon (`sudo schedcp daemon`), verify the policy through it, then promote",
            ) from None
        return VerificationRecord.model_validate(record) if record else None


def default_verifications(daemon_socket: Path | None = None) -> VerificationSource:
    """The daemon's own records file when this process can read it, else the daemon itself."""
    from schedcp.paths import data_dir

    records = data_dir() / "verifications.db"
    if records.is_file() and os.access(records, os.R_OK | os.W_OK):
        return RecordsVerifications(VerificationRecords(records.parent))
    return DaemonVerifications(daemon_socket)
