# SPDX-License-Identifier: Apache-2.0
"""Workload Analysis Engine: tiered, bounded views of what a workload does to the CPU scheduler.

Tier 1  summaries  (``engine.Engine.analyze``; detail summary | profile | full, each with a byte budget)
Tier 2  deeper     (``probes`` tracepoint probes, ``tools`` perf/pidstat/strace/top, ``sandbox``)
Tier 3  feedback   (``feedback`` metric deltas under a deployed policy, stored per deployment)
Events             (``events`` subscriptions: a workload appears, or its behaviour changes)

Raw collection is in ``schedcp.node.observe`` (stdlib only, also runs inside the micro-VM);
everything here derives, judges and formats.
"""
