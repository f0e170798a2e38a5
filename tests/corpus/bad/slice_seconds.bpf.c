/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static slice-out-of-range */
/* A tunable in milliseconds converted with the wrong factor: 5000 "ms" become a 5 s slice. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

const volatile u64 slice_ms = 5000;

SEC("struct_ops/longslice_enqueue")
void BPF_PROG(longslice_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, slice_ms * 1000000ULL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops longslice_ops = {
	.enqueue = (void *)longslice_enqueue,
	.name = "longslice",
};
