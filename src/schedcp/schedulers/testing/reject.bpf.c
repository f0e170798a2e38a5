/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * reject: a scheduler the kernel's BPF verifier must refuse.
 *
 * It dereferences a map lookup without checking for NULL, which the verifier reports as
 * "invalid mem access 'map_value_or_null'". Used to test that verifier messages reach the caller.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, u64);
} counts SEC(".maps");

extern void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
extern void scx_bpf_dispatch(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;

SEC("struct_ops/reject_enqueue")
void BPF_PROG(reject_enqueue, struct task_struct *p, u64 enq_flags)
{
	u32 key = 0;
	u64 *count = bpf_map_lookup_elem(&counts, &key);

	*count += 1; /* missing NULL check: the verifier rejects this line */
	if (bpf_ksym_exists(scx_bpf_dsq_insert))
		scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
	else
		scx_bpf_dispatch(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops reject_ops = {
	.enqueue = (void *)reject_enqueue,
	.name = "reject",
};
