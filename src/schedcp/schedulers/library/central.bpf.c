/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * central: one CPU makes every scheduling decision; the others just run what they are given.
 *
 * All runnable tasks wait in one FIFO queue. Only the central CPU (`central_cpu`) takes tasks
 * from it: in its dispatch callback it hands one task to every other CPU whose local queue is
 * empty, then takes one for itself. A worker CPU that runs out of work does not pick a task on
 * its own; it kicks the central CPU, which preempts whatever runs there and distributes.
 *
 * Why: scheduling work (queue locks, policy code, cache traffic on shared structures) stays on one
 * CPU, and the worker CPUs see fewer scheduler interruptions; that suits machines where most
 * CPUs run a few long compute or VM threads and one CPU can be spared for housekeeping. The cost
 * is latency on the workers (a round trip through the central CPU) and preemptions on the
 * central CPU, so this is a poor choice for many short-lived, frequently waking tasks.
 */
#include "schedcp.h"

const volatile u32 central_cpu = 0;
const volatile u64 slice_us = 10000;
const volatile u32 scan_limit = 32;

u64 nr_enqueued, nr_dispatched, nr_remote, nr_kicks;

static s32 central;	/* central_cpu, or CPU 0 if that CPU does not exist */
static u32 nr_cpus;

#define CENTRAL_DSQ 0

s32 BPF_STRUCT_OPS(central_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	/* No placement decisions outside the central CPU: every task goes through the queue. */
	return prev_cpu;
}

void BPF_STRUCT_OPS(central_enqueue, struct task_struct *p, u64 enq_flags)
{
	SCHEDCP_STAT_INC(nr_enqueued);
	schedcp_insert(p, CENTRAL_DSQ, slice_us * NSEC_PER_USEC, enq_flags);
	/* If the central CPU sleeps, wake it to distribute; if it is busy it will see the task soon. */
	scx_bpf_kick_cpu(central, SCX_KICK_IDLE);
}

/* Move the first queued task that may run on @cpu into @cpu's local queue. */
static bool hand_one_to(s32 cpu)
{
	struct task_struct *p;
	u32 seen = 0;

	bpf_for_each(scx_dsq, p, CENTRAL_DSQ, 0) {
		if (++seen > scan_limit)
			break;
		/* Sending a task to a CPU outside its affinity mask would get us ejected. */
		if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			continue;
		if (schedcp_dsq_move(SCHEDCP_DSQ_ITER, p, SCX_DSQ_LOCAL_ON | cpu, 0))
			return true;
	}
	return false;
}

void BPF_STRUCT_OPS(central_dispatch, s32 cpu, struct task_struct *prev)
{
	s32 target;

	if (cpu != central) {
		/* A worker is out of work: ask the central CPU to decide, now. */
		SCHEDCP_STAT_INC(nr_kicks);
		scx_bpf_kick_cpu(central, SCX_KICK_PREEMPT);
		return;
	}
	bpf_for(target, 0, nr_cpus) {
		if (target == central || scx_bpf_dsq_nr_queued(SCX_DSQ_LOCAL_ON | target) > 0)
			continue;
		if (hand_one_to(target)) {
			SCHEDCP_STAT_INC(nr_remote);
			SCHEDCP_STAT_INC(nr_dispatched);
			scx_bpf_kick_cpu(target, SCX_KICK_IDLE);
		}
	}
	if (schedcp_move_to_local(CENTRAL_DSQ))
		SCHEDCP_STAT_INC(nr_dispatched);
}

s32 BPF_STRUCT_OPS_SLEEPABLE(central_init)
{
	nr_cpus = min(scx_bpf_nr_cpu_ids(), SCHEDCP_MAX_CPUS);
	central = central_cpu < nr_cpus ? central_cpu : 0;
	return schedcp_create_dsq(CENTRAL_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops central_ops = {
	.select_cpu = (void *)central_select_cpu,
	.enqueue = (void *)central_enqueue,
	.dispatch = (void *)central_dispatch,
	.init = (void *)central_init,
	.name = "central",
};
