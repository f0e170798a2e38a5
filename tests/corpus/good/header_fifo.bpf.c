/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: pass */
/*
 * A FIFO written against SchedCP's header: the compat shims pick the right kfunc generation for
 * the target kernel, and the idle fast path comes from schedcp_select_cpu_direct().
 */
#include "schedcp.h"

#define QUEUE_DSQ 1

u64 nr_enqueued, nr_dispatched;

s32 BPF_STRUCT_OPS(hfifo_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, SCX_SLICE_DFL, &nr_dispatched, NULL);
}

void BPF_STRUCT_OPS(hfifo_enqueue, struct task_struct *p, u64 enq_flags)
{
	SCHEDCP_STAT_INC(nr_enqueued);
	schedcp_insert(p, QUEUE_DSQ, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(hfifo_dispatch, s32 cpu, struct task_struct *prev)
{
	if (schedcp_move_to_local(QUEUE_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(hfifo_init)
{
	return schedcp_create_dsq(QUEUE_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops hfifo_ops = {
	.select_cpu = (void *)hfifo_select_cpu,
	.enqueue = (void *)hfifo_enqueue,
	.dispatch = (void *)hfifo_dispatch,
	.init = (void *)hfifo_init,
	.name = "hfifo",
};
