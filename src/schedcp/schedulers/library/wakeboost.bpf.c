/* SPDX-License-Identifier: GPL-2.0-only */
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
 *  - Hand-off (`handoff`, off by default): when a task wakes a worker whose bursts are much
 *    longer than the waker's CPU time per wakeup (a messenger handing out a request) and no CPU
 *    is idle, the worker takes the waker's CPU at once and the waker queues. The request starts
 *    when it is handed out instead of waiting behind everything the producer queued before it;
 *    the producer hands out its next request when a CPU is free again. The CPUs do the same
 *    work, the queue moves upstream to the producer, and each request costs two more context
 *    switches: worth it for request/response servers, a loss for messaging storms.
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
const volatile bool handoff = false;
const volatile u64 handoff_ratio = 2;
const volatile u64 handoff_min_burst_us = 300;

u64 nr_enqueued, nr_hog, nr_dispatched, nr_direct, nr_preempted, nr_handoff, nr_paced;

struct task_ctx {
	struct schedcp_runtime rt;
	u64 wake_mark;		/* the task's CPU time when it last woke another task */
	u64 avg_wake_cost;	/* average CPU time it spends per task it wakes */
	u64 producer_at;	/* when it last woke a task that qualified for a hand-off */
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

/*
 * Whether a wakeup should be handed the waker's CPU: the waker is a producer, i.e. it spends on
 * average less than 1/handoff_ratio of the wakee's expected burst per task it wakes (a messenger
 * handing out requests, not a worker replying once per long request), and the wakee is no hog.
 * Also keeps the waker's cost-per-wakeup average up to date, so every wakeup is one sample (only
 * with hand-off on: nothing else reads it, and this runs on every wakeup).
 */
static bool hand_off(const struct task_ctx *tctx, struct task_struct *p, struct task_struct *waker)
{
	struct task_ctx *wctx;
	u64 now, cpu_time, cost, burst;

	if (!handoff || waker == p || waker->pid == 0)
		return false;
	/* Task storage lookups accept only trusted pointers; current is one. */
	wctx = bpf_task_storage_get(&task_ctxs, waker, 0, 0);
	if (!wctx)
		return false;
	/* CPU time so far, including the part of the current run not yet accounted in stopping. */
	now = schedcp_now();
	cpu_time = wctx->rt.total + (now - wctx->rt.started);
	cost = cpu_time - wctx->wake_mark;
	wctx->wake_mark = cpu_time;
	wctx->avg_wake_cost = schedcp_ewma(wctx->avg_wake_cost, cost);

	if (!tctx || is_hog(tctx))
		return false;
	/*
	 * A hand-off costs the waker a context switch and a trip through the queue. That pays only
	 * for a wakee with real work to do: short bursts (messaging storms) drain a queue quickly
	 * anyway, and switching on every message would cost more than the wait it saves.
	 */
	burst = schedcp_runtime_expected_burst(&tctx->rt);
	if (burst < handoff_min_burst_us * NSEC_PER_USEC || wctx->avg_wake_cost * handoff_ratio >= burst)
		return false;
	wctx->producer_at = now;
	return true;
}

s32 BPF_STRUCT_OPS(wakeboost_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	struct task_ctx *tctx = lookup(p);
	u64 slice = (is_hog(tctx) ? hog_slice_us : slice_us) * NSEC_PER_USEC;
	bool direct, handed = false;
	s32 cpu, this_cpu = bpf_get_smp_processor_id();

	/*
	 * select_cpu runs in the waker's context, so current is the waker (unless this is an
	 * interrupt's wakeup; then current is whatever it interrupted and the cost test decides).
	 */
	if (wake_flags & SCX_WAKE_TTWU)
		handed = hand_off(tctx, p, bpf_get_current_task_btf());
	cpu = schedcp_select_cpu_try_direct(p, prev_cpu, wake_flags, slice, &nr_dispatched, &nr_direct, &direct);
	if (direct || !handed || !bpf_cpumask_test_cpu(this_cpu, p->cpus_ptr))
		return cpu;
	/* SCX_ENQ_PREEMPT puts the wakee at the head of this CPU's local queue and ends the waker's slice. */
	schedcp_insert(p, SCX_DSQ_LOCAL, slice, SCX_ENQ_PREEMPT);
	SCHEDCP_STAT_INC(nr_dispatched);
	SCHEDCP_STAT_INC(nr_handoff);
	return this_cpu;
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
	/*
	 * With hand-off, a producer that handed out work within the last pacing window queues a whole
	 * window behind "now" and never preempts: it runs once the workers woken before it have
	 * started, so it hands out the next request when a CPU can take it. If it sometimes slept (a
	 * reply not ready yet) it would otherwise look like a short task, jump the queue and cut
	 * slices. It still goes ahead of hogs (hog_delay_us), so a producer next to CPU-bound work
	 * is delayed by a window, not by a hog slice.
	 */
	if (handoff && tctx && tctx->producer_at && now - tctx->producer_at < pace_us * NSEC_PER_USEC) {
		SCHEDCP_STAT_INC(nr_paced);
		schedcp_insert_vtime(p, WAKE_DSQ, slice_us * NSEC_PER_USEC, now + pace_us * NSEC_PER_USEC,
				     enq_flags);
		return;
	}
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
