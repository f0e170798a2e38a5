# SPDX-License-Identifier: Apache-2.0
"""The node agent: SchedCP's only privileged code.

It runs as root on a sched_ext host (behind ``schedcp daemon``) and as the init-spawned service
inside the micro-VM guest. It is written against the standard library only, because the guest
image carries a minimal Python and nothing else; imports inside this package are relative so the
same files work as ``schedcp.node`` on the host and as ``schedcp_node`` in the guest.
"""
