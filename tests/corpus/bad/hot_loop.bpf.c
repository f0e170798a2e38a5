/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static hot-path-loop */
/* A "load estimate" recomputed with a million-step loop every time a CPU looks for work. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define SHARED_DSQ 3

u64 load_estimate;

static long estimate_step(u64 index, void *ctx)
{
	*(u64 *)ctx += index & 7;
	return 0;
}

SEC("struct_ops/loop_enqueue")
void BPF_PROG(loop_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SHARED_DSQ, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/loop_dispatch")
void BPF_PROG(loop_dispatch, s32 cpu, struct task_struct *prev)
{
	u64 sum = 0;

	bpf_loop(1 << 20, estimate_step, &sum, 0);
	load_estimate = sum;
	scx_bpf_dsq_move_to_local(SHARED_DSQ);
}

SEC("struct_ops.s/loop_init")
s32 BPF_PROG(loop_init)
{
	return scx_bpf_create_dsq(SHARED_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops loop_ops = {
	.enqueue = (void *)loop_enqueue,
	.dispatch = (void *)loop_dispatch,
	.init = (void *)loop_init,
	.name = "loop",
};
