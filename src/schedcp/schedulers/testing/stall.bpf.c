/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * stall: a deliberately broken scheduler for testing the watchdog path.
 *
 * Tasks are queued on a custom DSQ that no dispatch callback ever drains, so every task the
 * scheduler owns stops running. The sched_ext watchdog must eject it ("runnable task stall")
 * and the kernel must fall back to the fair class. Load it with a short timeout_ms.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define FORGOTTEN_DSQ 42

extern s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __ksym;
extern void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
extern void scx_bpf_dispatch(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;

SEC("struct_ops/stall_enqueue")
void BPF_PROG(stall_enqueue, struct task_struct *p, u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_insert))
		scx_bpf_dsq_insert(p, FORGOTTEN_DSQ, SCX_SLICE_DFL, enq_flags);
	else
		scx_bpf_dispatch(p, FORGOTTEN_DSQ, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops.s/stall_init")
s32 BPF_PROG(stall_init)
{
	return scx_bpf_create_dsq(FORGOTTEN_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops stall_ops = {
	.enqueue = (void *)stall_enqueue,
	.init = (void *)stall_init,
	.name = "stall",
};
