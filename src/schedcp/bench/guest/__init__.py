# SPDX-License-Identifier: Apache-2.0
"""Stdlib-only workloads with known shapes.

Shipped into the guest image as package ``schedcp_workloads`` (run there as
``python3 -m schedcp_workloads.NAME``); on the host they run as ``python3 -m schedcp.bench.guest.NAME``.
Each prints one JSON line ``{"workload": ..., "metrics": {...}}`` as its last line of output.
"""
