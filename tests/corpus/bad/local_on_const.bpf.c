/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static local-on-cpu-range */
/* Everything is sent to a "housekeeping CPU" number that no machine here has. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define HOUSEKEEPING_CPU 4096

SEC("struct_ops/pin_enqueue")
void BPF_PROG(pin_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | HOUSEKEEPING_CPU, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops pin_ops = {
	.enqueue = (void *)pin_enqueue,
	.name = "pin",
};
