/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static dsq-never-consumed */
/*
 * Tasks go into QUEUE_DSQ, but ops.dispatch drains a different id (a typo): nothing ever
 * runs the queued tasks and the watchdog ejects the scheduler.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define QUEUE_DSQ 100
#define SPARE_DSQ 101

SEC("struct_ops/typo_enqueue")
void BPF_PROG(typo_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, QUEUE_DSQ, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/typo_dispatch")
void BPF_PROG(typo_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(SPARE_DSQ);
}

SEC("struct_ops.s/typo_init")
s32 BPF_PROG(typo_init)
{
	s32 err = scx_bpf_create_dsq(QUEUE_DSQ, -1);

	return err ? err : scx_bpf_create_dsq(SPARE_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops typo_ops = {
	.enqueue = (void *)typo_enqueue,
	.dispatch = (void *)typo_dispatch,
	.init = (void *)typo_init,
	.name = "typo",
};
