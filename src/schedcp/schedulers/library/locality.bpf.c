/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * locality: per-CPU round-robin queues that keep tasks on the CPU they last ran on.
 *
 * A task that returns to the CPU it just left finds its data still in that CPU's caches. So
 * each CPU gets its own FIFO queue, waking tasks prefer their previous CPU when it is idle, and
 * a task that must wait queues behind its previous CPU rather than in a shared queue. Within a
 * queue tasks take turns (round robin), one slice each.
 *
 * Strict locality strands work: one CPU could have a long queue while another sits idle. A CPU
 * whose own queue is empty therefore steals from the longest other queue, but only when that
 * queue holds at least `steal_min_queued` tasks, so short bursts stay where their caches are.
 */
#include "schedcp.h"

const volatile u64 slice_us = 10000;
const volatile bool steal = true;
const volatile u32 steal_min_queued = 1;

u64 nr_enqueued, nr_dispatched, nr_prev_idle, nr_stolen;

/* DSQ id == CPU id; created for every possible CPU in init. */
static u32 nr_cpus;

s32 BPF_STRUCT_OPS(locality_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	/* Warm caches first: the previous CPU, if it is idle and we can claim it. */
	if (scx_bpf_test_and_clear_cpu_idle(prev_cpu)) {
		SCHEDCP_STAT_INC(nr_prev_idle);
		cpu = prev_cpu;
		is_idle = true;
	} else {
		cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	}
	if (is_idle) {
		SCHEDCP_STAT_INC(nr_dispatched);
		schedcp_insert(p, SCX_DSQ_LOCAL, slice_us * NSEC_PER_USEC, 0);
	}
	return cpu;
}

void BPF_STRUCT_OPS(locality_enqueue, struct task_struct *p, u64 enq_flags)
{
	/* The task's current CPU is always one it may run on, and where its cache state is. */
	s32 cpu = scx_bpf_task_cpu(p);

	SCHEDCP_STAT_INC(nr_enqueued);
	schedcp_insert(p, (u64)cpu, slice_us * NSEC_PER_USEC, enq_flags);
	/* If that CPU sleeps, wake it; a busy CPU picks the task up at its next slice boundary. */
	scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

void BPF_STRUCT_OPS(locality_dispatch, s32 cpu, struct task_struct *prev)
{
	s32 victim = -1, most = 0, i;

	if (schedcp_move_to_local((u64)cpu)) {
		SCHEDCP_STAT_INC(nr_dispatched);
		return;
	}
	if (!steal)
		return;
	bpf_for(i, 0, nr_cpus) {
		s32 queued = i == cpu ? 0 : scx_bpf_dsq_nr_queued((u64)i);

		if (queued > most) {
			most = queued;
			victim = i;
		}
	}
	/* move_to_local skips tasks not allowed on this CPU, so pinned tasks stay put. */
	if (victim >= 0 && (u32)most >= steal_min_queued && schedcp_move_to_local((u64)victim)) {
		SCHEDCP_STAT_INC(nr_stolen);
		SCHEDCP_STAT_INC(nr_dispatched);
	}
}

s32 BPF_STRUCT_OPS_SLEEPABLE(locality_init)
{
	s32 i, err;

	nr_cpus = min(scx_bpf_nr_cpu_ids(), SCHEDCP_MAX_CPUS);
	bpf_for(i, 0, nr_cpus) {
		err = schedcp_create_dsq((u64)i);
		if (err)
			return err;
	}
	return 0;
}

SEC(".struct_ops.link")
struct sched_ext_ops locality_ops = {
	.select_cpu = (void *)locality_select_cpu,
	.enqueue = (void *)locality_enqueue,
	.dispatch = (void *)locality_dispatch,
	.init = (void *)locality_init,
	.name = "locality",
};
