/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * primitive: per_cpu_queues
 * tags: per-cpu queues, dsq, work stealing, scalability, locality
 *
 * One dispatch queue per CPU instead of a single shared queue. Enqueue puts a
 * task on the queue of the CPU it will most likely run on, so CPUs rarely
 * contend on the same lock and tasks keep their cache affinity. A CPU that
 * runs dry first drains its own queue and then steals from the others in
 * order, which keeps the policy work-conserving. DSQ ids are the CPU numbers.
 */
const volatile u32 nr_cpus = 1;		/* set by the loader before load */
const volatile u64 slice_ns = 5000000;

s32 BPF_STRUCT_OPS_SLEEPABLE(example_init)
{
	s32 ret;
	u32 cpu;

	bpf_for(cpu, 0, nr_cpus) {
		ret = scx_bpf_create_dsq(cpu, -1);
		if (ret)
			return ret;
	}
	return 0;
}

void BPF_STRUCT_OPS(example_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 cpu = scx_bpf_task_cpu(p);

	scx_bpf_dsq_insert(p, cpu, slice_ns, enq_flags);
	/* Wake the target if it idles, so the task does not wait for a tick. */
	scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
}

void BPF_STRUCT_OPS(example_dispatch, s32 cpu, struct task_struct *prev)
{
	u32 i;

	if (scx_bpf_dsq_move_to_local(cpu))
		return;
	/* Steal, starting after ourselves so victims are spread out. */
	bpf_for(i, 1, nr_cpus) {
		u32 victim = (cpu + i) % nr_cpus;

		if (scx_bpf_dsq_move_to_local(victim))
			return;
	}
}
