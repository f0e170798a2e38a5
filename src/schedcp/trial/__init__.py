# SPDX-License-Identifier: Apache-2.0
"""The one place that attaches a policy on a node, runs a workload, judges ejections and compares
with EEVDF; the verifier, the agent, the benchmarks, the server's VM runs and deployment use it.

* ``node``: the node-client protocol and its transports (micro-VM channel, this host, the daemon).
* ``models``: typed sched_ext state, kernel events (the ejection rule), run and attach results.
* ``attached``: a policy attached for a ``with`` block, exposing its ejections and counters.
* ``compare``: metric direction, the improvement ratio (>1 better), per-round ratios.
* ``rounds``: one judged run of an arm, and interleaved EEVDF-vs-policy rounds in one boot.
"""
