/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * vtime: weighted fair sharing through virtual time.
 *
 * Each task carries a virtual clock that advances by the CPU time it used divided by its weight
 * (nice 0 = weight 100), and the CPU always goes to the queued task with the smallest clock. Over
 * time every runnable task receives CPU in proportion to its weight, which is what nice values
 * promise.
 *
 * A task that slept did not advance its clock, so on wakeup it would be far behind and could
 * monopolise the CPU until it caught up. We bound that credit: a waking task's clock is lifted to
 * no further behind than `sleeper_credit_us` (scaled by its weight) of the global clock. Some
 * credit is kept on purpose: it is what lets interactive tasks run promptly after waking.
 *
 * The opposite bound matters too. A very low weight task (nice 19 has weight 1) is charged 100x
 * its runtime, so one slice can push its clock seconds ahead and it would wait that long before
 * running again: long enough for the sched_ext watchdog to eject us. A queued clock is therefore
 * never more than `max_lag_us` ahead of the global clock. Weight ratios are kept exactly up to
 * roughly max_lag_us / slice_us; beyond that the lowest weights get somewhat more than their share.
 *
 * CPU time is measured from ops.running to ops.stopping rather than inferred from the slice left,
 * because the kernel may refill a slice on its own (e.g. when nothing else is queued).
 */
#include "schedcp.h"

const volatile u64 slice_us = 5000;
const volatile u64 sleeper_credit_us = 10000;
const volatile u64 max_lag_us = 100000;

u64 nr_enqueued, nr_dispatched, nr_direct, nr_credit_capped, nr_lag_capped;

/* The clock of the most recently started task: where "now" is in virtual time. */
u64 vtime_now;

/* When each task last got a CPU, to measure what it used. */
SCHEDCP_TASK_STORAGE(started_at, u64);

#define VTIME_DSQ 0

s32 BPF_STRUCT_OPS(vtime_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice_us * NSEC_PER_USEC, &nr_dispatched,
					 &nr_direct);
}

void BPF_STRUCT_OPS(vtime_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 credit = schedcp_scale_inv_weight(sleeper_credit_us * NSEC_PER_USEC, p->scx.weight);
	u64 vtime = p->scx.dsq_vtime;

	SCHEDCP_STAT_INC(nr_enqueued);
	if (vtime_before(vtime, vtime_now - credit)) {
		vtime = vtime_now - credit;
		SCHEDCP_STAT_INC(nr_credit_capped);
	} else if (vtime_before(vtime_now + max_lag_us * NSEC_PER_USEC, vtime)) {
		vtime = vtime_now + max_lag_us * NSEC_PER_USEC;
		SCHEDCP_STAT_INC(nr_lag_capped);
	}
	schedcp_insert_vtime(p, VTIME_DSQ, slice_us * NSEC_PER_USEC, vtime, enq_flags);
}

void BPF_STRUCT_OPS(vtime_dispatch, s32 cpu, struct task_struct *prev)
{
	if (schedcp_move_to_local(VTIME_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

void BPF_STRUCT_OPS(vtime_running, struct task_struct *p)
{
	u64 *started = bpf_task_storage_get(&started_at, p, 0, 0);

	if (started)
		*started = schedcp_now();
	/* Racy max across CPUs is fine: the clock only needs to be roughly monotonic. */
	if (vtime_before(vtime_now, p->scx.dsq_vtime))
		vtime_now = p->scx.dsq_vtime;
}

void BPF_STRUCT_OPS(vtime_stopping, struct task_struct *p, bool runnable)
{
	u64 *started = bpf_task_storage_get(&started_at, p, 0, 0);

	if (started)
		schedcp_set_vtime(p, p->scx.dsq_vtime +
					     schedcp_scale_inv_weight(schedcp_now() - *started, p->scx.weight));
}

void BPF_STRUCT_OPS(vtime_enable, struct task_struct *p)
{
	/* New tasks start at the current clock: no debt, no credit. */
	schedcp_set_vtime(p, vtime_now);
}

s32 BPF_STRUCT_OPS(vtime_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	return bpf_task_storage_get(&started_at, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE) ? 0 : -ENOMEM;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(vtime_init)
{
	return schedcp_create_dsq(VTIME_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops vtime_ops = {
	.select_cpu = (void *)vtime_select_cpu,
	.enqueue = (void *)vtime_enqueue,
	.dispatch = (void *)vtime_dispatch,
	.running = (void *)vtime_running,
	.stopping = (void *)vtime_stopping,
	.enable = (void *)vtime_enable,
	.init_task = (void *)vtime_init_task,
	.init = (void *)vtime_init,
	.name = "vtime",
};
