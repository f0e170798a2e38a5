/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: pass */
/*
 * The simplest complete policy: wakeups that find an idle CPU go straight to it, everything
 * else waits in the kernel's global FIFO queue with the default slice.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

u64 nr_direct, nr_queued;

SEC("struct_ops/gfifo_select_cpu")
s32 BPF_PROG(gfifo_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	if (is_idle) {
		__sync_fetch_and_add(&nr_direct, 1);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, SCX_SLICE_DFL, 0);
	}
	return cpu;
}

SEC("struct_ops/gfifo_enqueue")
void BPF_PROG(gfifo_enqueue, struct task_struct *p, u64 enq_flags)
{
	__sync_fetch_and_add(&nr_queued, 1);
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops gfifo_ops = {
	.select_cpu = (void *)gfifo_select_cpu,
	.enqueue = (void *)gfifo_enqueue,
	.name = "gfifo",
};
