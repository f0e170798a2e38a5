# SPDX-License-Identifier: Apache-2.0
"""Safe deployment: token-gated deploys with a canary, a circuit breaker and last-known-good restore.

The daemon (``schedcp.daemon.deploy_ops``) owns the node and calls :class:`DeployController`; the
logic here is typed and runs against any ``schedcp.trial.node.NodeClient`` (a micro-VM, the local
host), so it is tested against the micro-VM in CI and its pure parts without a kernel.
docs/deploy.md has the design: the state machine, persistence, reconcile-on-start and the breaker.
"""
