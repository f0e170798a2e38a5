# SPDX-License-Identifier: Apache-2.0
"""The micro-VM testbed: a real sched_ext kernel, a guest image and a QEMU runner.

`kernel` resolves and caches a Debian kernel with sched_ext, `guest` builds the initramfs that
carries the node agent, and `vm` boots them and talks to the node agent over virtio-serial.
"""
