/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * ljf: longest job first, judged by CPU time actually used, with aging.
 *
 * In a batch whose job sizes have a long tail, the makespan is set by the longest job: if it is
 * time-shared with dozens of short jobs it finishes last, long after everything else. Letting
 * the longest job keep a CPU while the short ones share the rest shortens the whole batch. We
 * cannot know job lengths in advance, but the CPU time a task has already used is a good guess
 * for heavy-tailed work: the task that has run longest is most likely the long one. So every task
 * is measured in ops.running/ops.stopping, and tasks that used more CPU go first.
 *
 * Aging keeps this from starving anyone. A task's queue key is its enqueue time plus a delay of
 * up to `max_wait_us`, shrinking to zero as its measured runtime approaches `horizon_ms`. A task
 * that has waited `max_wait_us` is therefore ahead of anything that arrives later, however long.
 */
#include "schedcp.h"

const volatile u64 slice_us = 20000;
const volatile u64 max_wait_us = 100000;
const volatile u64 horizon_ms = 1000;

u64 nr_enqueued, nr_dispatched, nr_direct, nr_long;

/* Measured CPU time per task; defines ljf_running, ljf_stopping and ljf_init_task. */
SCHEDCP_RUNTIME_OPS(ljf)

#define LJF_DSQ 0

s32 BPF_STRUCT_OPS(ljf_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice_us * NSEC_PER_USEC, &nr_dispatched,
					 &nr_direct);
}

void BPF_STRUCT_OPS(ljf_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct schedcp_runtime *rt = ljf_runtime_of(p);
	u64 horizon = horizon_ms * 1000 ? horizon_ms * 1000 : 1; /* in us */
	u64 ran_us = rt ? rt->total / NSEC_PER_USEC : 0;
	u64 delay_us;

	SCHEDCP_STAT_INC(nr_enqueued);
	if (ran_us >= horizon) {
		ran_us = horizon;
		SCHEDCP_STAT_INC(nr_long);
	}
	/* Linear in runtime: a new task waits up to max_wait_us, a long-running one not at all. */
	delay_us = max_wait_us - max_wait_us * ran_us / horizon;
	schedcp_insert_vtime(p, LJF_DSQ, slice_us * NSEC_PER_USEC, schedcp_now() + delay_us * NSEC_PER_USEC,
			     enq_flags);
}

void BPF_STRUCT_OPS(ljf_dispatch, s32 cpu, struct task_struct *prev)
{
	if (schedcp_move_to_local(LJF_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(ljf_init)
{
	return schedcp_create_dsq(LJF_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops ljf_ops = {
	.select_cpu = (void *)ljf_select_cpu,
	.enqueue = (void *)ljf_enqueue,
	.dispatch = (void *)ljf_dispatch,
	.running = (void *)ljf_running,
	.stopping = (void *)ljf_stopping,
	.init_task = (void *)ljf_init_task,
	.init = (void *)ljf_init,
	.name = "ljf",
};
