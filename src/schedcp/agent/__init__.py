# SPDX-License-Identifier: Apache-2.0
"""sched-agent: four agents that optimise the CPU scheduler through SchedCP's services.

Observation (observation.py) profiles the workload, Planning (planning.py, rules.py) picks
candidate policies, Execution (execution.py, trial.py) builds, verifies and measures them against
EEVDF in the micro-VM, Learning (learning.py) records outcomes and chooses the next step. The loop
is in loop.py, the model backends in llm/, the tools in toolbox.py over the tools.py adapter, and
the cost accounting in cost.py. ``schedcp optimize`` (cli/optimize.py) is the front end.
"""
