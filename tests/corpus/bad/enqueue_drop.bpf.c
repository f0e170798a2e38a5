/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static enqueue-drops-task */
/*
 * "Kernel threads look after themselves": ops.enqueue returns early for them without
 * inserting them anywhere, so they never run again.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define PF_KTHREAD 0x00200000

SEC("struct_ops/drop_enqueue")
void BPF_PROG(drop_enqueue, struct task_struct *p, u64 enq_flags)
{
	if (p->flags & PF_KTHREAD)
		return;
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops drop_ops = {
	.enqueue = (void *)drop_enqueue,
	.name = "drop",
};
