/* SPDX-License-Identifier: GPL-2.0-only */
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
 *  - light: the task's bursts are short, it sleeps often (shells, make, pipe partners, kernel
 *    threads). FIFO lane served first, short slice. It does not cut a running batch job's slice:
 *    an earlier version did, and each cut cost the batch job a switch and often a migration
 *    (measured: it undid a third of the gain on the batch benchmark); a light task waits for one
 *    batch slice at most.
 *  - new: never measured yet. The same FIFO lane and slice: a batch of jobs released together gets
 *    one short probe each as CPUs come free, then sorts itself out below.
 *  - batch: its current or average burst reached `batch_burst_us`. Ordered by a key
 *        enqueue time + max_wait * (1 - min(evidence, horizon) / horizon)
 *    where the evidence of being long is the CPU time attained so far, plus `fault_weight_us`
 *    per page fault if set (jobs fed bigger inputs fault in more memory early: a hint that can
 *    single out a long job during its probe instead of after a short job's whole runtime).
 *    More evidence means an earlier key. Aging is built in: a job that has waited `max_wait_us`
 *    is ahead of anything enqueued after it. With max_wait > horizon, a running job keeps beating
 *    jobs that have waited less than (max_wait / horizon) times its evidence: run-to-completion.
 *    A batch task that wakes from sleep gets the key of a long job (its enqueue time): batch jobs
 *    of a long tail never sleep, and a task that sleeps between bursts (a process that forks and
 *    waits, a job doing I/O) would otherwise pay up to max_wait on every wakeup, so its progress
 *    would stall for a multiple of the bound (the verifier measured 8.2 s between a forker's steps).
 *
 * The light lane may win at most `max_light_streak` dispatches in a row while batch work waits,
 * so a storm of light tasks slows batch work down but cannot starve it.
 */
#include "schedcp.h"

const volatile u64 slice_us = 100000;
const volatile u64 light_slice_us = 5000;
const volatile u64 batch_burst_us = 3000;
const volatile u64 fault_weight_us = 0;
/* A waiting job may wait max_wait plus a few slices: well below the 10 s watchdog of our trials. */
const volatile u64 max_wait_us = 4000000;
const volatile u64 horizon_ms = 400;
const volatile u32 max_light_streak = 16;

u64 nr_light, nr_batch, nr_dispatched, nr_direct, nr_long;

/* Measured CPU time per task; defines ljf_batch_running, _stopping and _init_task. */
SCHEDCP_RUNTIME_OPS(ljf_batch)

static u32 light_streak;

#define LIGHT_DSQ 0
#define BATCH_DSQ 1

static bool is_batch(const struct schedcp_runtime *rt)
{
	return rt && schedcp_runtime_expected_burst(rt) >= batch_burst_us * NSEC_PER_USEC;
}

static u64 batch_key(struct task_struct *p, const struct schedcp_runtime *rt, u64 now)
{
	u64 horizon = horizon_ms * NSEC_PER_MSEC;
	u64 evidence = rt->total + fault_weight_us * NSEC_PER_USEC * p->min_flt;
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
	u64 slice = (is_batch(ljf_batch_runtime_of(p)) ? slice_us : light_slice_us) * NSEC_PER_USEC;

	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice, &nr_dispatched, &nr_direct);
}

void BPF_STRUCT_OPS(ljf_batch_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct schedcp_runtime *rt = ljf_batch_runtime_of(p);

	if (is_batch(rt)) {
		u64 now = schedcp_now();

		SCHEDCP_STAT_INC(nr_batch);
		schedcp_insert_vtime(p, BATCH_DSQ, slice_us * NSEC_PER_USEC,
				     (enq_flags & SCX_ENQ_WAKEUP) ? now : batch_key(p, rt, now), enq_flags);
		return;
	}
	SCHEDCP_STAT_INC(nr_light);
	schedcp_insert(p, LIGHT_DSQ, light_slice_us * NSEC_PER_USEC, enq_flags);
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
