/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * primitive: central_dispatch
 * tags: central dispatch, local_on, kick cpu, tickless, decision offload
 *
 * A single central CPU makes placement decisions for everyone. Runnable tasks
 * go to one shared queue; when the central CPU dispatches, it pulls tasks from
 * that queue and inserts each one directly into another CPU's local queue with
 * SCX_DSQ_LOCAL_ON, then kicks that CPU so it picks the task up. Worker CPUs
 * never run scheduling logic beyond consuming their local queue, which keeps
 * their caches and timing clean. The CPU number must be valid and allowed by
 * the task's affinity, or the kernel aborts the scheduler.
 */
#define FALLBACK_DSQ	0
const volatile s32 central_cpu = 0;
const volatile u32 nr_cpus = 1;
const volatile u64 slice_ns = 20000000;

void BPF_STRUCT_OPS(example_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, FALLBACK_DSQ, slice_ns, enq_flags);
	/* Let the central CPU know there is work to hand out. */
	scx_bpf_kick_cpu(central_cpu, SCX_KICK_PREEMPT);
}

static bool hand_out(s32 target)
{
	struct task_struct *p;

	bpf_for_each(scx_dsq, p, FALLBACK_DSQ, 0) {
		if (!bpf_cpumask_test_cpu(target, p->cpus_ptr))
			continue;
		/* Move this very task into the target CPU's local queue. */
		if (scx_bpf_dsq_move(BPF_FOR_EACH_ITER, p, SCX_DSQ_LOCAL_ON | target, 0)) {
			scx_bpf_kick_cpu(target, SCX_KICK_IDLE);
			return true;
		}
	}
	return false;
}

void BPF_STRUCT_OPS(example_dispatch, s32 cpu, struct task_struct *prev)
{
	u32 target;

	if (cpu != central_cpu)
		return;		/* workers only consume their local queue */
	bpf_for(target, 0, nr_cpus) {
		if (target != central_cpu && scx_bpf_dsq_nr_queued(SCX_DSQ_LOCAL_ON | target) == 0)
			hand_out(target);
	}
	scx_bpf_dsq_move_to_local(FALLBACK_DSQ);	/* the central CPU runs leftovers */
}
