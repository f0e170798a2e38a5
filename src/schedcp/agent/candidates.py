# SPDX-License-Identifier: Apache-2.0
"""The name agent/trial.py still imports while it moves to the shared trial core (schedcp.trial).

Checking and building candidates is SchedCP's job now (services/build.py: check_candidate,
build_scheduler). Delete this module once agent/trial.py is gone.
"""

from __future__ import annotations

from schedcp.services.build import Built

__all__ = ["Built"]
