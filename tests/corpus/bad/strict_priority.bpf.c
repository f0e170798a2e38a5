/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static strict-priority-no-aging */
/*
 * Two queues by nice level; ops.dispatch always serves the high queue first and returns, so
 * niced tasks never run while normal tasks keep the high queue busy.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define HI_DSQ 10
#define LO_DSQ 11

SEC("struct_ops/prio_enqueue")
void BPF_PROG(prio_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 dsq = p->scx.weight >= 100 ? HI_DSQ : LO_DSQ;

	scx_bpf_dsq_insert(p, dsq, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/prio_dispatch")
void BPF_PROG(prio_dispatch, s32 cpu, struct task_struct *prev)
{
	if (scx_bpf_dsq_move_to_local(HI_DSQ))
		return;
	scx_bpf_dsq_move_to_local(LO_DSQ);
}

SEC("struct_ops.s/prio_init")
s32 BPF_PROG(prio_init)
{
	s32 err = scx_bpf_create_dsq(HI_DSQ, -1);

	return err ? err : scx_bpf_create_dsq(LO_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops prio_ops = {
	.enqueue = (void *)prio_enqueue,
	.dispatch = (void *)prio_dispatch,
	.init = (void *)prio_init,
	.name = "prio",
};
