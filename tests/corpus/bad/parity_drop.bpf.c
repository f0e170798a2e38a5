/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: dynamic dyn-ejected */
/*
 * Two queues chosen by pid parity, both created, but ops.dispatch only drains the first: tasks
 * with odd pids are never run. The queue id is computed at run time, so only running it shows it.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define BASE_DSQ 20
#define NR_QUEUES 2

SEC("struct_ops/parity_enqueue")
void BPF_PROG(parity_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, BASE_DSQ + (p->pid & 1), SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/parity_dispatch")
void BPF_PROG(parity_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(BASE_DSQ);
}

SEC("struct_ops.s/parity_init")
s32 BPF_PROG(parity_init)
{
	for (u32 i = 0; i < NR_QUEUES; i++) {
		s32 err = scx_bpf_create_dsq(BASE_DSQ + i, -1);

		if (err)
			return err;
	}
	return 0;
}

SEC(".struct_ops.link")
struct sched_ext_ops parity_ops = {
	.enqueue = (void *)parity_enqueue,
	.dispatch = (void *)parity_dispatch,
	.init = (void *)parity_init,
	.name = "parity",
};
