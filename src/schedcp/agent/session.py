# SPDX-License-Identifier: Apache-2.0
"""Names agent/trial.py still imports while it moves to the shared trial core (schedcp.trial).

sched-agent itself no longer holds a VM: the SchedCP server's testbeds do (services/testbed.py).
Delete this module once agent/trial.py is gone.
"""

from __future__ import annotations

from schedcp.services.models import Target
from schedcp.testbed.session import VmSession

__all__ = ["Target", "VmSession"]
