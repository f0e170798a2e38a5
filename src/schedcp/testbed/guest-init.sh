#!/bin/busybox sh
# SPDX-License-Identifier: Apache-2.0
# PID 1 of the SchedCP micro-VM guest: mount the kernel filesystems, then hand the machine to the
# node agent. When the agent returns (poweroff request or crash) the guest resets, which ends QEMU
# because it runs with -no-reboot.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sysfs /sys
/bin/busybox mount -t devtmpfs devtmpfs /dev
/bin/busybox mkdir -p /dev/shm /dev/pts
/bin/busybox mount -t tmpfs tmpfs /dev/shm
/bin/busybox mount -t tmpfs tmpfs /tmp
/bin/busybox mount -t devpts devpts /dev/pts 2>/dev/null
/bin/busybox mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
/bin/busybox mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
/bin/busybox mount -t bpf bpf /sys/fs/bpf 2>/dev/null
/bin/busybox mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
/bin/busybox --install -s /usr/local/bin
# The unprivileged user that caller-supplied workloads run as (node/runner.py WORKLOAD_USER):
# measurement scripts, objects and results belong to root and are out of its reach.
echo "schedcp-work:x:1000:1000:workload:/home/work:/bin/sh" >> /etc/passwd
echo "schedcp-work:x:1000:" >> /etc/group
/bin/busybox mkdir -p /home/work
/bin/busybox chown 1000:1000 /home/work
/bin/busybox chmod 0750 /home/work
# Debian's programs (added with --package) before busybox's applets of the same name (ar, ps, ...).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/sbin:/usr/local/bin
export HOME=/root PYTHONDONTWRITEBYTECODE=1 PYTHONPATH=/opt/schedcp LANG=C.UTF-8
hostname schedcp-guest
ip link set lo up 2>/dev/null
echo "schedcp-guest: starting node agent"
python3 -m schedcp_node.agent --port org.schedcp.node
echo "schedcp-guest: node agent exited ($?)"
echo b > /proc/sysrq-trigger
