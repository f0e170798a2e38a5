/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * sjf: shortest job first, judged by measured CPU bursts, with aging.
 *
 * Serving short jobs first minimises the average time jobs spend waiting: a 1 ms job stuck
 * behind a 100 ms one waits 100x its own length, the reverse costs the long job 1%. The "job"
 * here is a CPU burst, the CPU time a task uses from wakeup until it sleeps, measured in
 * ops.running/ops.stopping. Its expected length is the average of past bursts, or the current
 * burst once that is longer (so a task turning into a hog is recognised at once).
 *
 * The queue is ordered by enqueue time plus the expected burst, capped at `max_wait_us`. The cap
 * is the aging rule: no task can be overtaken by work that arrives more than `max_wait_us` after
 * it, so long jobs are delayed, never starved. `burst_scale` stretches or shrinks the effect.
 */
#include "schedcp.h"

const volatile u64 slice_us = 5000;
const volatile u64 max_wait_us = 50000;
const volatile u32 burst_scale = 1;

u64 nr_enqueued, nr_dispatched, nr_direct, nr_capped;

/* Measured CPU time per task; defines sjf_running, sjf_stopping and sjf_init_task. */
SCHEDCP_RUNTIME_OPS(sjf)

#define SJF_DSQ 0

s32 BPF_STRUCT_OPS(sjf_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice_us * NSEC_PER_USEC, &nr_dispatched,
					 &nr_direct);
}

void BPF_STRUCT_OPS(sjf_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct schedcp_runtime *rt = sjf_runtime_of(p);
	u64 cap = max_wait_us * NSEC_PER_USEC;
	u64 delay = rt ? schedcp_runtime_expected_burst(rt) : cap;

	SCHEDCP_STAT_INC(nr_enqueued);
	/* Compare before scaling so a huge burst cannot overflow the multiplication. */
	if (delay >= cap / (burst_scale ? burst_scale : 1)) {
		delay = cap;
		SCHEDCP_STAT_INC(nr_capped);
	} else {
		delay *= burst_scale;
	}
	schedcp_insert_vtime(p, SJF_DSQ, slice_us * NSEC_PER_USEC, schedcp_now() + delay, enq_flags);
}

void BPF_STRUCT_OPS(sjf_dispatch, s32 cpu, struct task_struct *prev)
{
	if (schedcp_move_to_local(SJF_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(sjf_init)
{
	return schedcp_create_dsq(SJF_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops sjf_ops = {
	.select_cpu = (void *)sjf_select_cpu,
	.enqueue = (void *)sjf_enqueue,
	.dispatch = (void *)sjf_dispatch,
	.running = (void *)sjf_running,
	.stopping = (void *)sjf_stopping,
	.init_task = (void *)sjf_init_task,
	.init = (void *)sjf_init,
	.name = "sjf",
};
