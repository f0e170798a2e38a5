/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * primitive: idle_cpu_select
 * tags: idle-cpu, select_cpu, cache locality, direct dispatch, wakeup
 *
 * Idle-CPU selection at wakeup. Prefer the CPU the task last ran on while it
 * is idle (its caches are still warm), then any idle CPU the task may use,
 * and insert the task straight into that CPU's local queue so it starts
 * without a trip through a shared queue. When no CPU is idle, return the
 * previous CPU and let ops.enqueue() queue the task normally.
 */
s32 BPF_STRUCT_OPS(example_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	s32 cpu;

	/* Warm caches first: the previous CPU, if it is idle and allowed. */
	if (bpf_cpumask_test_cpu(prev_cpu, p->cpus_ptr) &&
	    scx_bpf_test_and_clear_cpu_idle(prev_cpu)) {
		cpu = prev_cpu;
		goto direct;
	}

	/* Otherwise any idle CPU in the task's affinity mask. */
	cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu >= 0)
		goto direct;

	return prev_cpu;

direct:
	/* The CPU is already reserved for us (idle bit cleared): run there now. */
	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, SCX_SLICE_DFL, 0);
	return cpu;
}
