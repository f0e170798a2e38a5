/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static slice-out-of-range */
/* "Never interrupt a running task": an infinite slice lets one hog keep its CPU. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

SEC("struct_ops/inf_enqueue")
void BPF_PROG(inf_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_INF, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops inf_ops = {
	.enqueue = (void *)inf_enqueue,
	.name = "inf",
};
