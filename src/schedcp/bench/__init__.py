# SPDX-License-Identifier: Apache-2.0
"""Benchmarks and the workloads shipped into the micro-VM guest."""
