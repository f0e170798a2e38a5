/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: dynamic dyn-ejected */
/*
 * Strict priority by weight dressed up as aging: ops.dispatch reads the clock, but only to
 * record it; the high queue is still always served first, so niced tasks starve under load.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define HI_DSQ 30
#define LO_DSQ 31

u64 last_dispatch_ns;

SEC("struct_ops/wstarve_enqueue")
void BPF_PROG(wstarve_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, p->scx.weight >= 100 ? HI_DSQ : LO_DSQ, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/wstarve_dispatch")
void BPF_PROG(wstarve_dispatch, s32 cpu, struct task_struct *prev)
{
	last_dispatch_ns = bpf_ktime_get_ns();
	if (scx_bpf_dsq_move_to_local(HI_DSQ))
		return;
	scx_bpf_dsq_move_to_local(LO_DSQ);
}

SEC("struct_ops.s/wstarve_init")
s32 BPF_PROG(wstarve_init)
{
	s32 err = scx_bpf_create_dsq(HI_DSQ, -1);

	return err ? err : scx_bpf_create_dsq(LO_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops wstarve_ops = {
	.enqueue = (void *)wstarve_enqueue,
	.dispatch = (void *)wstarve_dispatch,
	.init = (void *)wstarve_init,
	.name = "wstarve",
};
