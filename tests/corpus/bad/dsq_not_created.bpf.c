/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static dsq-not-created */
/* A custom DSQ is filled and drained, but ops.init never creates it. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

enum { WORK_DSQ = 7 };

SEC("struct_ops/nocreate_enqueue")
void BPF_PROG(nocreate_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, WORK_DSQ, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/nocreate_dispatch")
void BPF_PROG(nocreate_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(WORK_DSQ);
}

SEC(".struct_ops.link")
struct sched_ext_ops nocreate_ops = {
	.enqueue = (void *)nocreate_enqueue,
	.dispatch = (void *)nocreate_dispatch,
	.name = "nocreate",
};
