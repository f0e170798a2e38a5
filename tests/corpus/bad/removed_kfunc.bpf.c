/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static kfunc-unavailable */
/* Written from a 6.12-era example: scx_bpf_dispatch() was renamed in 6.13 and removed in 6.17. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

extern void scx_bpf_dispatch(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym;

SEC("struct_ops/old_enqueue")
void BPF_PROG(old_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dispatch(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops old_ops = {
	.enqueue = (void *)old_enqueue,
	.name = "old",
};
