# SPDX-License-Identifier: Apache-2.0
"""The privileged daemon: the narrow boundary between unprivileged agents and root.

`schedcp daemon` runs as root (systemd-friendly: foreground, logs to stderr, exits cleanly on
SIGTERM). It listens on a unix socket, checks every peer's credentials (SO_PEERCRED), performs a
small fixed set of operations (run the verifier and sign deployment tokens, run privileged probes,
and later deploy/rollback), and appends every privileged action to a hash-chained audit log.
The MCP server and the CLI reach it through `schedcp.daemon.client.DaemonClient`.
"""
