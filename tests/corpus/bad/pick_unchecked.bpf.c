/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static local-on-cpu-range */
/*
 * Send each task to an idle CPU's local queue; but scx_bpf_pick_idle_cpu() returns -EBUSY when
 * every CPU is busy, and that negative number is used as a CPU.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

SEC("struct_ops/idlepick_enqueue")
void BPF_PROG(idlepick_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);

	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops idlepick_ops = {
	.enqueue = (void *)idlepick_enqueue,
	.name = "idlepick",
};
