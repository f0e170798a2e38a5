/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * primitive: vtime_sleeper_credit
 * tags: vtime accounting, fairness, sleeper credit bound, weighted, dsq vtime
 *
 * Weighted virtual-time accounting with a bounded credit for sleepers. Each
 * task's vtime advances by the time it ran divided by its weight, so heavier
 * tasks age more slowly. A task that slept keeps its old, small vtime; without
 * a bound it would monopolise the CPU when it wakes. Clamping it to no more
 * than one slice-lag behind the global clock keeps wakeups responsive but fair.
 * Tasks are queued in a user DSQ ordered by vtime (built-in DSQs cannot be).
 */
#define SHARED_DSQ	0
const volatile u64 slice_ns = 5000000;		/* tunable: base slice */
const volatile u64 slice_lag_ns = 20000000;	/* tunable: max sleeper credit */
static u64 vtime_now;				/* global virtual clock */

static inline bool vtime_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

void BPF_STRUCT_OPS(example_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 vtime = p->scx.dsq_vtime;

	/* Bound the credit a sleeping task can bring back. */
	if (vtime_before(vtime, vtime_now - slice_lag_ns))
		vtime = vtime_now - slice_lag_ns;

	scx_bpf_dsq_insert_vtime(p, SHARED_DSQ, slice_ns, vtime, enq_flags);
}

void BPF_STRUCT_OPS(example_running, struct task_struct *p)
{
	/* The global clock follows the smallest vtime that got a CPU. */
	if (vtime_before(vtime_now, p->scx.dsq_vtime))
		vtime_now = p->scx.dsq_vtime;
}

void BPF_STRUCT_OPS(example_stopping, struct task_struct *p, bool runnable)
{
	u64 used = slice_ns - p->scx.slice;	/* slice counts down while running */

	/* Charge inversely to weight (100 is the nice-0 weight). */
	p->scx.dsq_vtime += used * 100 / p->scx.weight;
}

void BPF_STRUCT_OPS(example_enable, struct task_struct *p)
{
	p->scx.dsq_vtime = vtime_now;	/* new tasks start at the current clock */
}

s32 BPF_STRUCT_OPS_SLEEPABLE(example_init)
{
	return scx_bpf_create_dsq(SHARED_DSQ, -1);
}
