/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * edf: earliest deadline first.
 *
 * When a task becomes runnable it gets an absolute deadline: now plus a relative deadline, and
 * the CPU goes to the queued task whose deadline is nearest. The relative deadline comes from the
 * task's weight (`deadline_us` for nice 0, shorter for higher weight, longer for lower), capped at
 * `max_deadline_us` so even the lowest weight cannot be postponed for long. With `burst_aware`,
 * a task whose measured CPU bursts are shorter than a slice gets a proportionally shorter deadline:
 * it will be done quickly, so serving it soon costs others little and cuts its latency a lot.
 *
 * EDF needs no separate aging: deadlines are absolute times, so every queued task eventually has
 * the earliest one. We count how often a task started after its deadline had passed (`nr_missed`)
 * because that is the honest measure of whether the machine is keeping up.
 */
#include "schedcp.h"

const volatile u64 slice_us = 5000;
const volatile u64 deadline_us = 20000;
const volatile u64 min_deadline_us = 1000;
const volatile u64 max_deadline_us = 200000;
const volatile bool burst_aware = true;

u64 nr_enqueued, nr_dispatched, nr_missed;

struct task_ctx {
	struct schedcp_runtime rt;
	u64 deadline;	/* absolute, ns; 0 while not queued by us */
};
SCHEDCP_TASK_STORAGE(task_ctxs, struct task_ctx);

#define EDF_DSQ 0

static struct task_ctx *lookup(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, 0);
}

static u64 relative_deadline(struct task_struct *p, struct task_ctx *tctx)
{
	u64 slice = slice_us * NSEC_PER_USEC;
	u64 rel = schedcp_scale_inv_weight(deadline_us * NSEC_PER_USEC, p->scx.weight);

	if (burst_aware && tctx) {
		u64 burst = schedcp_runtime_expected_burst(&tctx->rt);

		/* Short, well-measured bursts shrink the deadline in proportion. */
		if (burst < slice)
			rel = rel * (burst ? burst : 1) / slice;
	}
	return clamp(rel, min_deadline_us * NSEC_PER_USEC, max_deadline_us * NSEC_PER_USEC);
}

s32 BPF_STRUCT_OPS(edf_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice_us * NSEC_PER_USEC, &nr_dispatched, NULL);
}

void BPF_STRUCT_OPS(edf_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup(p);
	u64 deadline = schedcp_now() + relative_deadline(p, tctx);

	SCHEDCP_STAT_INC(nr_enqueued);
	if (tctx)
		tctx->deadline = deadline;
	schedcp_insert_vtime(p, EDF_DSQ, slice_us * NSEC_PER_USEC, deadline, enq_flags);
}

void BPF_STRUCT_OPS(edf_dispatch, s32 cpu, struct task_struct *prev)
{
	if (schedcp_move_to_local(EDF_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

void BPF_STRUCT_OPS(edf_running, struct task_struct *p)
{
	struct task_ctx *tctx = lookup(p);

	if (!tctx)
		return;
	schedcp_runtime_start(&tctx->rt);
	if (tctx->deadline && vtime_before(tctx->deadline, tctx->rt.started))
		SCHEDCP_STAT_INC(nr_missed);
	tctx->deadline = 0; /* direct dispatches to an idle CPU carry no deadline */
}

void BPF_STRUCT_OPS(edf_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = lookup(p);

	if (tctx)
		schedcp_runtime_stop(&tctx->rt, runnable);
}

s32 BPF_STRUCT_OPS(edf_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE) ? 0 : -ENOMEM;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(edf_init)
{
	return schedcp_create_dsq(EDF_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops edf_ops = {
	.select_cpu = (void *)edf_select_cpu,
	.enqueue = (void *)edf_enqueue,
	.dispatch = (void *)edf_dispatch,
	.running = (void *)edf_running,
	.stopping = (void *)edf_stopping,
	.init_task = (void *)edf_init_task,
	.init = (void *)edf_init,
	.name = "edf",
};
