/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * fifo: one global first-in-first-out queue shared by every CPU.
 *
 * The simplest policy that is still useful: tasks run in the order they became runnable, each
 * for at most one slice, and any free CPU takes the oldest waiting task. There is no notion of
 * priority or weight, which makes it a baseline for comparisons and a good fit for throughput
 * work made of similar, independent tasks. A waking task that finds an idle CPU skips the queue
 * and goes straight to that CPU, because queueing it would only add latency.
 */
#include "schedcp.h"

/* Tunables: written by the loader into .rodata before load. */
const volatile u64 slice_us = 5000;
const volatile bool direct_idle = true;

/* Stats: read live by user space. */
u64 nr_enqueued, nr_dispatched, nr_direct;

#define FIFO_DSQ 0

s32 BPF_STRUCT_OPS(fifo_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle;

	/* Strict arrival order: pick a CPU to wake, but make the task queue like everyone else. */
	if (!direct_idle)
		return scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice_us * NSEC_PER_USEC, &nr_dispatched,
					 &nr_direct);
}

void BPF_STRUCT_OPS(fifo_enqueue, struct task_struct *p, u64 enq_flags)
{
	SCHEDCP_STAT_INC(nr_enqueued);
	schedcp_insert(p, FIFO_DSQ, slice_us * NSEC_PER_USEC, enq_flags);
}

void BPF_STRUCT_OPS(fifo_dispatch, s32 cpu, struct task_struct *prev)
{
	if (schedcp_move_to_local(FIFO_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(fifo_init)
{
	return schedcp_create_dsq(FIFO_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops fifo_ops = {
	.select_cpu = (void *)fifo_select_cpu,
	.enqueue = (void *)fifo_enqueue,
	.dispatch = (void *)fifo_dispatch,
	.init = (void *)fifo_init,
	.name = "fifo",
};
