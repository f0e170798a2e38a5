/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * latency: run tasks that wake often and run briefly ahead of CPU hogs.
 *
 * Interactive work (UI threads, RPC handlers, pipe partners) wakes up, does a little and sleeps
 * again; its latency is the time it waits behind CPU-bound tasks. We learn each task's pattern
 * from what the scheduler sees: how often it wakes (an average of wakeups per second) and how
 * much CPU it uses per wakeup (an average "burst"). A task that wakes at least `min_wake_hz`
 * times a second and runs at most `max_burst_us` per wakeup is interactive: it goes to a fast
 * queue with a short slice and may preempt a CPU that is running a non-interactive task.
 *
 * Two guards keep this honest. A task that starts running long is judged on its current burst
 * too, so it loses the boost within one burst. And the fast queue may win at most
 * `max_fast_streak` dispatches in a row before the normal queue gets a turn, so hogs are slowed
 * down, never starved.
 */
#include "schedcp.h"

const volatile u64 slice_us = 10000;
const volatile u64 fast_slice_us = 1000;
const volatile u64 max_burst_us = 2000;
const volatile u64 min_wake_hz = 20;
const volatile u32 max_fast_streak = 8;
const volatile bool preempt = true;

u64 nr_enqueued, nr_dispatched, nr_boosted, nr_preempted;

struct task_ctx {
	u64 last_wake;	/* when it last woke up */
	u64 wake_hz;	/* average wakeups per second */
	struct schedcp_runtime rt;
};
SCHEDCP_TASK_STORAGE(task_ctxs, struct task_ctx);

/* Whether each CPU is running an interactive task right now (a preemption hint, racy is fine). */
u8 cpu_interactive[SCHEDCP_MAX_CPUS];
static u32 fast_streak;

#define FAST_DSQ 0
#define NORMAL_DSQ 1

static bool is_interactive(struct task_ctx *tctx)
{
	return tctx->wake_hz >= min_wake_hz &&
	       schedcp_runtime_expected_burst(&tctx->rt) <= max_burst_us * NSEC_PER_USEC;
}

static struct task_ctx *lookup(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, 0);
}

s32 BPF_STRUCT_OPS(latency_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct task_ctx *tctx = lookup(p);
	u64 slice_ns = (tctx && is_interactive(tctx) ? fast_slice_us : slice_us) * NSEC_PER_USEC;

	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice_ns, &nr_dispatched, NULL);
}

void BPF_STRUCT_OPS(latency_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup(p);
	u32 cpu = scx_bpf_task_cpu(p);

	SCHEDCP_STAT_INC(nr_enqueued);
	if (!tctx || !is_interactive(tctx)) {
		schedcp_insert(p, NORMAL_DSQ, slice_us * NSEC_PER_USEC, enq_flags);
		return;
	}
	SCHEDCP_STAT_INC(nr_boosted);
	schedcp_insert(p, FAST_DSQ, fast_slice_us * NSEC_PER_USEC, enq_flags);
	/* The CPU it was placed on runs a hog: cut the hog's slice so the fast queue is served now. */
	if (preempt && cpu < SCHEDCP_MAX_CPUS && !cpu_interactive[cpu]) {
		SCHEDCP_STAT_INC(nr_preempted);
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
	}
}

void BPF_STRUCT_OPS(latency_dispatch, s32 cpu, struct task_struct *prev)
{
	/* Fast queue first, except every max_fast_streak-th time, so hogs always progress. */
	if (fast_streak < max_fast_streak && schedcp_move_to_local(FAST_DSQ)) {
		fast_streak++;
		SCHEDCP_STAT_INC(nr_dispatched);
		return;
	}
	fast_streak = 0;
	if (schedcp_move_to_local(NORMAL_DSQ) || schedcp_move_to_local(FAST_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

void BPF_STRUCT_OPS(latency_runnable, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup(p);
	u64 now = schedcp_now(), gap;

	if (!tctx || !(enq_flags & SCX_ENQ_WAKEUP))
		return;
	gap = now - tctx->last_wake;
	tctx->wake_hz = schedcp_ewma(tctx->wake_hz, NSEC_PER_SEC / (gap ? gap : 1));
	tctx->last_wake = now;
}

void BPF_STRUCT_OPS(latency_running, struct task_struct *p)
{
	struct task_ctx *tctx = lookup(p);
	u32 cpu = scx_bpf_task_cpu(p);

	if (!tctx)
		return;
	schedcp_runtime_start(&tctx->rt);
	if (cpu < SCHEDCP_MAX_CPUS)
		cpu_interactive[cpu] = is_interactive(tctx);
}

void BPF_STRUCT_OPS(latency_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = lookup(p);

	if (!tctx)
		return;
	schedcp_runtime_stop(&tctx->rt, runnable);
}

s32 BPF_STRUCT_OPS(latency_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);

	if (!tctx)
		return -ENOMEM;
	tctx->last_wake = schedcp_now();
	return 0;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(latency_init)
{
	s32 err = schedcp_create_dsq(FAST_DSQ);

	return err ? err : schedcp_create_dsq(NORMAL_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops latency_ops = {
	.select_cpu = (void *)latency_select_cpu,
	.enqueue = (void *)latency_enqueue,
	.dispatch = (void *)latency_dispatch,
	.runnable = (void *)latency_runnable,
	.running = (void *)latency_running,
	.stopping = (void *)latency_stopping,
	.init_task = (void *)latency_init_task,
	.init = (void *)latency_init,
	.name = "latency",
};
