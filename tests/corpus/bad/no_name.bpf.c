/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static ops-name-missing */
/* The ops table has no .name, which the kernel requires. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

SEC("struct_ops/anon_enqueue")
void BPF_PROG(anon_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops anon_ops = {
	.enqueue = (void *)anon_enqueue,
};
