/* SPDX-License-Identifier: GPL-2.0 */
/*
 * wakeboost: serve wakeups in arrival order, shortest expected burst first, ahead of CPU hogs.
 *
 * Written for request/response load (the schbench-style wakeup benchmark, hackbench, an
 * interactive task among hogs). A request's latency is mostly the time its worker waits for a CPU
 * after being woken. When every request costs about the same, the order that minimises the worst
 * wait is the order of arrival, and a worker should then run its request to the end without being
 * interrupted (each preemption is a context switch that delays everyone behind it). So:
 *
 *  - A waking task goes straight to an idle CPU if there is one.
 *  - Otherwise it queues by a key: the time it became runnable plus a small delay derived from
 *    its expected CPU burst (average of past bursts, or the current one if longer; measured in
 *    ops.running/stopping). Among similar workers that is FIFO. By default the delay paces
 *    producers: a task with very short bursts that hands out work (a messenger) queues behind
 *    the workers it just woke (see wake_delay()); `pace_us` = 0 makes it shortest-burst-first.
 *  - A task whose expected burst reaches `hog_burst_us` is a hog: its key carries a fixed
 *    `hog_delay_us` instead, so every wakeup within that window is served first, and its slice
 *    is longer (fewer switches for work that does not care). When a task that needs only a
 *    moment (expected burst up to `preempt_burst_us`) has to queue and a CPU is running a hog,
 *    that hog's slice is cut (`preempt`), so it waits about one context switch instead of a
 *    whole hog slice. The thresholds are wide apart on purpose: bursts are measured in wall time,
 *    which on a virtual machine includes time the host took away, so a worker must not be
 *    mistaken for a hog when the host is busy.
 *
 * Keys are absolute times, so nothing starves: a hog is overtaken only by work that became
 * runnable less than `hog_delay_us` after it.
 */
#include "schedcp.h"

const volatile u64 slice_us = 10000;
const volatile u64 hog_slice_us = 20000;
const volatile u64 hog_burst_us = 20000;
const volatile u64 hog_delay_us = 20000;
const volatile u64 preempt_burst_us = 1000;
const volatile u64 pace_us = 2000;
const volatile bool preempt = true;

u64 nr_enqueued, nr_hog, nr_dispatched, nr_direct, nr_preempted;

struct task_ctx {
	struct schedcp_runtime rt;
};
SCHEDCP_TASK_STORAGE(task_ctxs, struct task_ctx);

/* Whether each CPU is running a hog right now (a preemption hint; racy is fine). */
u8 cpu_hog[SCHEDCP_MAX_CPUS];

#define WAKE_DSQ 0

static struct task_ctx *lookup(struct task_struct *p)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, 0);
}

static bool is_hog(const struct task_ctx *tctx)
{
	return tctx && schedcp_runtime_expected_burst(&tctx->rt) >= hog_burst_us * NSEC_PER_USEC;
}

/*
 * How far behind "now" a waking short task queues. Without pacing, by its expected burst: shortest
 * first. With pacing (pace_us > 0), the other way round within a window of pace_us: the longer
 * burst goes first, so a task that only hands out work (short bursts: a messenger, a producer)
 * waits until the workers it woke have started. That is backpressure: the producer cannot pile up
 * more requests than the CPUs are serving, so queues stay short and each request waits less, while
 * the CPUs stay just as busy (the producer still runs whenever nothing else is queued).
 */
static u64 wake_delay(u64 burst)
{
	u64 window = pace_us * NSEC_PER_USEC;

	if (!window)
		return burst;
	return window - min(burst, window);
}

s32 BPF_STRUCT_OPS(wakeboost_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	u64 slice = (is_hog(lookup(p)) ? hog_slice_us : slice_us) * NSEC_PER_USEC;

	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice, &nr_dispatched, &nr_direct);
}

/* A short task is queued and the CPUs may all be busy: cut the slice of one running hog. */
static void kick_hog_cpu(struct task_struct *p)
{
	u32 nr = scx_bpf_nr_cpu_ids();
	s32 prev = scx_bpf_task_cpu(p);
	u32 i;

	if (prev >= 0 && prev < SCHEDCP_MAX_CPUS && cpu_hog[prev]) {
		SCHEDCP_STAT_INC(nr_preempted);
		scx_bpf_kick_cpu(prev, SCX_KICK_PREEMPT);
		return;
	}
	for (i = 0; i < SCHEDCP_MAX_CPUS && i < nr; i++) {
		if (cpu_hog[i] && bpf_cpumask_test_cpu(i, p->cpus_ptr)) {
			SCHEDCP_STAT_INC(nr_preempted);
			scx_bpf_kick_cpu(i, SCX_KICK_PREEMPT);
			return;
		}
	}
}

void BPF_STRUCT_OPS(wakeboost_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = lookup(p);
	u64 now = schedcp_now(), burst;

	SCHEDCP_STAT_INC(nr_enqueued);
	if (is_hog(tctx)) {
		SCHEDCP_STAT_INC(nr_hog);
		schedcp_insert_vtime(p, WAKE_DSQ, hog_slice_us * NSEC_PER_USEC, now + hog_delay_us * NSEC_PER_USEC,
				     enq_flags);
		return;
	}
	burst = tctx ? schedcp_runtime_expected_burst(&tctx->rt) : 0;
	schedcp_insert_vtime(p, WAKE_DSQ, slice_us * NSEC_PER_USEC, now + wake_delay(burst), enq_flags);
	/* Only a task that needs just a moment is worth a preemption; among similar workers a cut
	 * slice would only reorder them at the price of a context switch. */
	if (preempt && tctx && burst <= preempt_burst_us * NSEC_PER_USEC)
		kick_hog_cpu(p);
}

void BPF_STRUCT_OPS(wakeboost_dispatch, s32 cpu, struct task_struct *prev)
{
	if (schedcp_move_to_local(WAKE_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

void BPF_STRUCT_OPS(wakeboost_running, struct task_struct *p)
{
	struct task_ctx *tctx = lookup(p);
	s32 cpu = scx_bpf_task_cpu(p);

	if (!tctx)
		return;
	schedcp_runtime_start(&tctx->rt);
	if (cpu >= 0 && cpu < SCHEDCP_MAX_CPUS)
		cpu_hog[cpu] = is_hog(tctx);
}

void BPF_STRUCT_OPS(wakeboost_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = lookup(p);
	s32 cpu = scx_bpf_task_cpu(p);

	if (!tctx)
		return;
	schedcp_runtime_stop(&tctx->rt, runnable);
	if (cpu >= 0 && cpu < SCHEDCP_MAX_CPUS)
		cpu_hog[cpu] = 0;
}

s32 BPF_STRUCT_OPS(wakeboost_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE) ? 0 : -ENOMEM;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(wakeboost_init)
{
	return schedcp_create_dsq(WAKE_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops wakeboost_ops = {
	.select_cpu = (void *)wakeboost_select_cpu,
	.enqueue = (void *)wakeboost_enqueue,
	.dispatch = (void *)wakeboost_dispatch,
	.running = (void *)wakeboost_running,
	.stopping = (void *)wakeboost_stopping,
	.init_task = (void *)wakeboost_init_task,
	.init = (void *)wakeboost_init,
	.name = "wakeboost",
};
