/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: dynamic dyn-unfair */
/*
 * Tasks are split into two queues by pid parity, and the odd queue is only served on every
 * 16th dispatch while the even queue has work. Nobody starves for long (the budget bounds the
 * wait, so the watchdog stays quiet), but equal tasks receive wildly different CPU time.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define EVEN_DSQ 40
#define ODD_DSQ 41
#define ODD_EVERY 16

u64 nr_dispatches;

SEC("struct_ops/unfair_enqueue")
void BPF_PROG(unfair_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, (p->pid & 1) ? ODD_DSQ : EVEN_DSQ, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/unfair_dispatch")
void BPF_PROG(unfair_dispatch, s32 cpu, struct task_struct *prev)
{
	u64 turn = __sync_fetch_and_add(&nr_dispatches, 1);

	if (turn % ODD_EVERY == 0 && scx_bpf_dsq_move_to_local(ODD_DSQ))
		return;
	if (scx_bpf_dsq_move_to_local(EVEN_DSQ))
		return;
	scx_bpf_dsq_move_to_local(ODD_DSQ);
}

SEC("struct_ops.s/unfair_init")
s32 BPF_PROG(unfair_init)
{
	s32 err = scx_bpf_create_dsq(EVEN_DSQ, -1);

	return err ? err : scx_bpf_create_dsq(ODD_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops unfair_ops = {
	.enqueue = (void *)unfair_enqueue,
	.dispatch = (void *)unfair_dispatch,
	.init = (void *)unfair_init,
	.name = "unfair",
};
