# SPDX-License-Identifier: Apache-2.0
"""SchedCP: a control plane that lets AI agents safely optimise the Linux scheduler with sched_ext."""

__version__ = "0.1.0"
