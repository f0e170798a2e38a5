/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * laggard: a scheduler that passes verification and slows one workload only in production.
 *
 * Every task whose name starts with "lag" is queued on CPU 0 alone, whatever else is free, so a
 * workload of several busy "lag..." processes waits for one CPU while the others idle. Nothing
 * the verifier runs has such a name, so the object earns a token; the deploy tests run the
 * canary on "lag-work" processes and expect the goal metric (the share of time they wait) to
 * cross the baseline's noise threshold and the circuit breaker to roll the policy back.
 */
#include "schedcp.h"

u64 nr_enqueued, nr_lagged;

static __always_inline bool is_lag(const struct task_struct *p)
{
	return p->comm[0] == 'l' && p->comm[1] == 'a' && p->comm[2] == 'g';
}

/* Other tasks keep the kernel's default placement; "lag" tasks never go to an idle CPU directly. */
s32 BPF_STRUCT_OPS(laggard_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu;

	if (is_lag(p))
		return 0;
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	if (is_idle)
		schedcp_insert(p, SCX_DSQ_LOCAL, SCX_SLICE_DFL, 0);
	return cpu;
}

void BPF_STRUCT_OPS(laggard_enqueue, struct task_struct *p, u64 enq_flags)
{
	SCHEDCP_STAT_INC(nr_enqueued);
	if (is_lag(p)) {
		SCHEDCP_STAT_INC(nr_lagged);
		schedcp_insert(p, SCX_DSQ_LOCAL_ON | 0, SCX_SLICE_DFL, enq_flags);
		return;
	}
	schedcp_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops laggard_ops = {
	.select_cpu = (void *)laggard_select_cpu,
	.enqueue = (void *)laggard_enqueue,
	.name = "laggard",
};
