/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * comm_trap: a scheduler that passes verification and fails only in production.
 *
 * It behaves like a plain global FIFO until a task named "trap-me" becomes runnable on it; then
 * it calls scx_bpf_error(), the kernel ejects it and falls back to the fair class. The verifier's
 * workloads never run a task of that name, so the object earns a deployment token; the deploy
 * tests start one after promotion and expect the circuit breaker to restore the last known good.
 */
#include "schedcp.h"

u64 nr_enqueued, nr_trapped;

static __always_inline bool is_trap(const struct task_struct *p)
{
	const char want[8] = "trap-me";

	for (int i = 0; i < 8; i++) {
		if (p->comm[i] != want[i])
			return false;
	}
	return true;
}

/* runnable, not enqueue: a waking task dispatched straight to an idle CPU skips enqueue. */
void BPF_STRUCT_OPS(comm_trap_runnable, struct task_struct *p, u64 enq_flags)
{
	if (is_trap(p)) {
		static char fmt[] = "comm_trap: a task named trap-me became runnable";
		unsigned long long data[1] = { 0 };

		SCHEDCP_STAT_INC(nr_trapped);
		scx_bpf_error_bstr(fmt, data, sizeof(data));
	}
}

void BPF_STRUCT_OPS(comm_trap_enqueue, struct task_struct *p, u64 enq_flags)
{
	SCHEDCP_STAT_INC(nr_enqueued);
	schedcp_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops comm_trap_ops = {
	.enqueue = (void *)comm_trap_enqueue,
	.runnable = (void *)comm_trap_runnable,
	.name = "comm_trap",
};
