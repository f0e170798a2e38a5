/* SPDX-License-Identifier: GPL-2.0 */
/*
 * ljf_batch: finish a batch with a long tail as early as possible; keep everything else responsive.
 *
 * Written for the long-tail batch benchmark (39 short jobs and 1 long one, released together,
 * indistinguishable from outside). With fair sharing every job progresses at the same rate, so the
 * long job has done almost nothing by the time the short ones finish and then runs alone: the
 * makespan is about (shorts' total)/CPUs + long. The best possible is max(long, total/CPUs). To
 * approach it without being told which job is long, we run batch work to completion in order of
 * the CPU time it has already received ("most attained service first"): a job that has started
 * keeps its CPU, so the long job, as soon as it is picked, is never again time-shared with short
 * ones and finishes about when the short jobs are drained by the other CPUs. Running to completion
 * also cuts context switches, which matter a lot for CPU caches (and even more under emulation).
 *
 * Tasks are measured in ops.running/ops.stopping, nothing is looked up by name. Two lanes:
 *
 *  - light: the task's current and average CPU bursts are short (it sleeps often: shells, make,
 *    pipes, kernel threads) or it just started. FIFO, served first, short slice, and it may cut
 *    short the slice of a CPU running batch work, so it never waits a whole batch slice.
 *  - batch: the task has run `batch_burst_us` without sleeping. Ordered by a key
 *        enqueue time + max_wait * (1 - min(attained, horizon) / horizon)
 *    so more attained CPU time means an earlier key. Aging is built in: a job that has waited
 *    `max_wait_us` is ahead of anything enqueued after it, however much that one has run.
 *    With max_wait > horizon, a running job always beats a job that has waited less than
 *    (max_wait / horizon) times the running job's attained time: that is run-to-completion.
 *
 * The light lane may win at most `max_light_streak` dispatches in a row while batch work waits,
 * so a storm of light tasks slows batch work down but cannot starve it.
 */
#include "schedcp.h"

const volatile u64 slice_us = 50000;
const volatile u64 light_slice_us = 4000;
const volatile u64 batch_burst_us = 3000;
const volatile u64 max_wait_us = 10000000;
const volatile u64 horizon_ms = 1000;
const volatile u32 max_light_streak = 16;
const volatile bool preempt = true;

u64 nr_light, nr_batch, nr_dispatched, nr_direct, nr_preempted, nr_long;

struct task_ctx {
	struct schedcp_runtime rt;
};
SCHEDCP_TASK_STORAGE(task_ctxs, struct task_ctx);

/* Whether each CPU is running batch work right now (a preemption hint; racy is fine). */
u8 cpu_batch[SCHEDCP_MAX_CPUS];
static u32 light_streak;

#define LIGHT_DSQ 0
#define BATCH_DSQ 1

static struct task_ctx *lookup(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, 0);
}

static bool is_batch(const struct task_ctx *tctx)
{
	return schedcp_runtime_expected_burst(&tctx->rt) >= batch_burst_us * NSEC_PER_USEC;
}

static u64 batch_key(const struct task_ctx *tctx, u64 now)
{
	u64 horizon = horizon_ms * NSEC_PER_MSEC;
	u64 ran = min(tctx->rt.total, horizon);
	u64 wait = max_wait_us * NSEC_PER_USEC;

	if (ran >= horizon)
		SCHEDCP_STAT_INC(nr_long);
	/* (wait / horizon) * (horizon - ran), computed in usec to stay far from u64 overflow. */
	return now + (wait / NSEC_PER_USEC) * ((horizon - ran) / NSEC_PER_USEC) / (horizon / NSEC_PER_USEC) *
			     NSEC_PER_USEC;
}

s32 BPF_STRUCT_OPS(ljf_batch_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct task_ctx *tctx = lookup(p);
	u64 slice = (tctx && is_batch(tctx) ? slice_us : light_slice_us) * NSEC_PER_USEC;

	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice, &nr_dispatched, &nr_direct);
}

/* A light task is waiting and every CPU may be busy: cut the slice of one running batch work. */
static void kick_batch_cpu(struct task_struct *p)
{
	u32 nr = scx_bpf_nr_cpu_ids();
	s32 prev = scx_bpf_task_cpu(p);
	u32 i;

	if (prev >= 0 && prev < SCHEDCP_MAX_CPUS && cpu_batch[prev]) {
		SCHEDCP_STAT_INC(nr_preempted);
		scx_bpf_kick_cpu(prev, SCX_KICK_PREEMPT);
		return;
	}
	for (i = 0; i < SCHEDCP_MAX_CPUS && i < nr; i++) {
		if (cpu_batch[i] && bpf_cpumask_test_cpu(i, p->cpus_ptr)) {
			SCHEDCP_STAT_INC(nr_preempted);
			scx_bpf_kick_cpu(i, SCX_KICK_PREEMPT);
			return;
		}
	}
}

void BPF_STRUCT_OPS(ljf_batch_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup(p);

	if (tctx && is_batch(tctx)) {
		SCHEDCP_STAT_INC(nr_batch);
		schedcp_insert_vtime(p, BATCH_DSQ, slice_us * NSEC_PER_USEC, batch_key(tctx, schedcp_now()),
				     enq_flags);
		return;
	}
	SCHEDCP_STAT_INC(nr_light);
	schedcp_insert(p, LIGHT_DSQ, light_slice_us * NSEC_PER_USEC, enq_flags);
	if (preempt)
		kick_batch_cpu(p);
}

void BPF_STRUCT_OPS(ljf_batch_dispatch, s32 cpu, struct task_struct *prev)
{
	if (light_streak < max_light_streak && schedcp_move_to_local(LIGHT_DSQ)) {
		light_streak++;
		SCHEDCP_STAT_INC(nr_dispatched);
		return;
	}
	light_streak = 0;
	if (schedcp_move_to_local(BATCH_DSQ) || schedcp_move_to_local(LIGHT_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

void BPF_STRUCT_OPS(ljf_batch_running, struct task_struct *p)
{
	struct task_ctx *tctx = lookup(p);
	s32 cpu = scx_bpf_task_cpu(p);

	if (!tctx)
		return;
	schedcp_runtime_start(&tctx->rt);
	if (cpu >= 0 && cpu < SCHEDCP_MAX_CPUS)
		cpu_batch[cpu] = is_batch(tctx);
}

void BPF_STRUCT_OPS(ljf_batch_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = lookup(p);
	s32 cpu = scx_bpf_task_cpu(p);

	if (!tctx)
		return;
	schedcp_runtime_stop(&tctx->rt, runnable);
	if (cpu >= 0 && cpu < SCHEDCP_MAX_CPUS)
		cpu_batch[cpu] = 0;
}

s32 BPF_STRUCT_OPS(ljf_batch_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE) ? 0 : -ENOMEM;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(ljf_batch_init)
{
	s32 err = schedcp_create_dsq(LIGHT_DSQ);

	return err ? err : schedcp_create_dsq(BATCH_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops ljf_batch_ops = {
	.select_cpu = (void *)ljf_batch_select_cpu,
	.enqueue = (void *)ljf_batch_enqueue,
	.dispatch = (void *)ljf_batch_dispatch,
	.running = (void *)ljf_batch_running,
	.stopping = (void *)ljf_batch_stopping,
	.init_task = (void *)ljf_batch_init_task,
	.init = (void *)ljf_batch_init,
	.name = "ljf_batch",
};
