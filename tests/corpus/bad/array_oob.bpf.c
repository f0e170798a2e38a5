/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: kernel_verifier kv-rejected */
/* A per-CPU counter array indexed by a CPU number that is never bounds-checked. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

u64 per_cpu_enqueues[64];

SEC("struct_ops/oob_enqueue")
void BPF_PROG(oob_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 cpu = scx_bpf_task_cpu(p);

	per_cpu_enqueues[cpu]++; /* REJECTED-HERE */
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops oob_ops = {
	.enqueue = (void *)oob_enqueue,
	.name = "oob",
};
