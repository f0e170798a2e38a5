/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * minimal: the smallest useful sched_ext scheduler, used to prove the testbed works.
 *
 * Every runnable task goes to the built-in global DSQ, which the kernel drains on its own, so
 * no dispatch callback is needed. Self-contained on purpose: it includes only vmlinux.h and
 * libbpf's headers, exactly like a file an agent might write from scratch.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

extern void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
extern void scx_bpf_dispatch(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;

u64 nr_enqueued;

SEC("struct_ops/minimal_enqueue")
void BPF_PROG(minimal_enqueue, struct task_struct *p, u64 enq_flags)
{
	__sync_fetch_and_add(&nr_enqueued, 1);
	/* 6.13 renamed dispatch to dsq_insert; take whichever this kernel has. */
	if (bpf_ksym_exists(scx_bpf_dsq_insert))
		scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
	else
		scx_bpf_dispatch(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops minimal_ops = {
	.enqueue = (void *)minimal_enqueue,
	.name = "minimal",
};
