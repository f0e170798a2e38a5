/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: pass */
/*
 * Two priority queues (normal and niced tasks) with aging: the low queue is served first once
 * it has waited longer than MAX_WAIT_NS since it last ran, so niced tasks slow down but never
 * starve.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define HI_DSQ 10
#define LO_DSQ 11
#define MAX_WAIT_NS (100ULL * 1000 * 1000)

u64 lo_last_served_ns;

SEC("struct_ops/aging_enqueue")
void BPF_PROG(aging_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, p->scx.weight >= 100 ? HI_DSQ : LO_DSQ, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/aging_dispatch")
void BPF_PROG(aging_dispatch, s32 cpu, struct task_struct *prev)
{
	u64 now = bpf_ktime_get_ns();

	if (now - lo_last_served_ns > MAX_WAIT_NS && scx_bpf_dsq_move_to_local(LO_DSQ)) {
		lo_last_served_ns = now;
		return;
	}
	if (scx_bpf_dsq_move_to_local(HI_DSQ))
		return;
	if (scx_bpf_dsq_move_to_local(LO_DSQ))
		lo_last_served_ns = now;
}

SEC("struct_ops.s/aging_init")
s32 BPF_PROG(aging_init)
{
	s32 err = scx_bpf_create_dsq(HI_DSQ, -1);

	return err ? err : scx_bpf_create_dsq(LO_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops aging_ops = {
	.enqueue = (void *)aging_enqueue,
	.dispatch = (void *)aging_dispatch,
	.init = (void *)aging_init,
	.name = "aging",
};
