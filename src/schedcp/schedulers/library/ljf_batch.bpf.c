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
 * Tasks are measured in ops.running/ops.stopping, nothing is looked up by name. Three kinds:
 *
 *  - light: the task has slept at least `light_min_sleeps` times and its bursts are short (shells,
 *    make, pipe partners, kernel threads). FIFO lane served first, short slice. With `preempt`
 *    it cuts short the slice of a CPU running batch work when it has to wait; that is off by
 *    default, because each cut costs a batch job a switch and often a migration (measured: it
 *    undid a third of the gain on the batch benchmark), and a light task waits one slice at most.
 *  - new: never measured yet. Same FIFO lane and slice, but no preemption: a batch of jobs
 *    released together gets one short probe each as CPUs come free, then sorts itself out below.
 *  - batch: its current or average burst reached `batch_burst_us`. Ordered by a key
 *        enqueue time + max_wait * (1 - min(evidence, horizon) / horizon)
 *    where the evidence of being long is the CPU time attained so far, plus `fault_weight_us`
 *    per page fault if set (jobs fed bigger inputs fault in more memory early: a hint that can
 *    single out a long job during its probe instead of after a short job's whole runtime).
 *    More evidence means an earlier key. Aging is built in: a job that has waited `max_wait_us`
 *    is ahead of anything enqueued after it. With max_wait > horizon, a running job keeps beating
 *    jobs that have waited less than (max_wait / horizon) times its evidence: run-to-completion.
 *
 * The light lane may win at most `max_light_streak` dispatches in a row while batch work waits,
 * so a storm of light tasks slows batch work down but cannot starve it.
 */
#include "schedcp.h"

const volatile u64 slice_us = 100000;
const volatile u64 light_slice_us = 5000;
const volatile u64 batch_burst_us = 3000;
const volatile u32 light_min_sleeps = 3;
const volatile u64 fault_weight_us = 0;
const volatile u64 max_wait_us = 10000000;
const volatile u64 horizon_ms = 1000;
const volatile u32 max_light_streak = 16;
const volatile bool preempt = false;

u64 nr_light, nr_batch, nr_dispatched, nr_direct, nr_preempted, nr_long;

struct task_ctx {
	struct schedcp_runtime rt;
	u32 sleeps;	/* bursts that ended in sleep: how much light-task history we have */
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

/* Short bursts and enough sleeps to be sure of it: worth a preemption. */
static bool is_light(const struct task_ctx *tctx)
{
	return tctx->sleeps >= light_min_sleeps && !is_batch(tctx);
}

static u64 batch_key(struct task_struct *p, const struct task_ctx *tctx, u64 now)
{
	u64 horizon = horizon_ms * NSEC_PER_MSEC;
	u64 evidence = tctx->rt.total + fault_weight_us * NSEC_PER_USEC * p->min_flt;
	u64 ran = min(evidence, horizon);
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
		schedcp_insert_vtime(p, BATCH_DSQ, slice_us * NSEC_PER_USEC, batch_key(p, tctx, schedcp_now()),
				     enq_flags);
		return;
	}
	SCHEDCP_STAT_INC(nr_light);
	schedcp_insert(p, LIGHT_DSQ, light_slice_us * NSEC_PER_USEC, enq_flags);
	if (preempt && tctx && is_light(tctx))
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
	if (!runnable && tctx->sleeps < 1000)
		tctx->sleeps++;
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
