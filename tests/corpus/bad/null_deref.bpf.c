/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: kernel_verifier kv-rejected */
/* Per-task storage is used without checking that the lookup succeeded. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

struct task_ctx {
	u64 nr_enqueues;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

SEC("struct_ops/nullctx_enqueue")
void BPF_PROG(nullctx_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);

	tctx->nr_enqueues++; /* REJECTED-HERE */
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops nullctx_ops = {
	.enqueue = (void *)nullctx_enqueue,
	.name = "nullctx",
};
