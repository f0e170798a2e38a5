/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * primitive: dynamic_slice
 * tags: time slice, dynamic slice, queue depth, latency, throughput
 *
 * Size the time slice from the current queue depth. With few waiters a task
 * may run for the full base slice (fewer context switches, better throughput);
 * as more tasks wait, each gets a proportionally shorter slice so everyone is
 * served within roughly one base slice (bounded latency), but never below a
 * floor that would make switching overhead dominate.
 */
#define SHARED_DSQ	0
const volatile u64 slice_max_ns = 20000000;	/* tunable: slice with an empty queue */
const volatile u64 slice_min_ns = 500000;	/* tunable: floor under heavy load */

static u64 current_slice(void)
{
	u64 waiting = scx_bpf_dsq_nr_queued(SHARED_DSQ);
	u64 slice = slice_max_ns / (waiting + 1);

	return slice < slice_min_ns ? slice_min_ns : slice;
}

void BPF_STRUCT_OPS(example_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SHARED_DSQ, current_slice(), enq_flags);
}
