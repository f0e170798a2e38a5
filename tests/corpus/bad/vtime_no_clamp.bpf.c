/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static vtime-unbounded-credit */
/*
 * Weighted virtual time, but a waking task keeps whatever vtime it had when it went to sleep:
 * after a long sleep it is far behind everybody and monopolises a CPU until it catches up.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define FAIR_DSQ 1
#define SLICE_NS 5000000ULL

u64 vtime_now;

SEC("struct_ops/credit_enqueue")
void BPF_PROG(credit_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 vtime = p->scx.dsq_vtime;

	scx_bpf_dsq_insert_vtime(p, FAIR_DSQ, SLICE_NS, vtime, enq_flags);
}

SEC("struct_ops/credit_dispatch")
void BPF_PROG(credit_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(FAIR_DSQ);
}

SEC("struct_ops/credit_running")
void BPF_PROG(credit_running, struct task_struct *p)
{
	if ((s64)(vtime_now - p->scx.dsq_vtime) < 0)
		vtime_now = p->scx.dsq_vtime;
}

SEC("struct_ops/credit_stopping")
void BPF_PROG(credit_stopping, struct task_struct *p, bool runnable)
{
	u64 used = SLICE_NS - p->scx.slice;

	p->scx.dsq_vtime += used * 100 / p->scx.weight;
}

SEC("struct_ops.s/credit_init")
s32 BPF_PROG(credit_init)
{
	return scx_bpf_create_dsq(FAIR_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops credit_ops = {
	.enqueue = (void *)credit_enqueue,
	.dispatch = (void *)credit_dispatch,
	.running = (void *)credit_running,
	.stopping = (void *)credit_stopping,
	.init = (void *)credit_init,
	.name = "credit",
};
