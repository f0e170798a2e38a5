/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: dynamic dyn-ejected */
/*
 * "Spread the load": each task goes to the next CPU's local queue. The bound check assumes a
 * 64-CPU machine; on a 2-CPU machine CPU 2 does not exist and the kernel aborts the scheduler.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define MAX_CPUS 64

SEC("struct_ops/spread_enqueue")
void BPF_PROG(spread_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 cpu = scx_bpf_task_cpu(p) + 1;

	if (cpu < MAX_CPUS)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, SCX_SLICE_DFL, enq_flags);
	else
		scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops spread_ops = {
	.enqueue = (void *)spread_enqueue,
	.name = "spread",
};
