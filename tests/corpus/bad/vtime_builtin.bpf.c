/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static vtime-on-builtin-dsq */
/* Virtual-time ordering requested on the built-in global DSQ, which only supports FIFO. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

SEC("struct_ops/vbuiltin_enqueue")
void BPF_PROG(vbuiltin_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert_vtime(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, p->scx.dsq_vtime, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops vbuiltin_ops = {
	.enqueue = (void *)vbuiltin_enqueue,
	.name = "vbuiltin",
};
