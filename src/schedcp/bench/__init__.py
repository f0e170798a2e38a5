"""Benchmarks and the workloads shipped into the micro-VM guest."""
