/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: pass */
/*
 * Weighted virtual time in one self-contained file. A waking task's vtime is lifted to at most
 * one slice behind the global clock, so sleeping earns a little priority but never a monopoly.
 * Uses the setter kfuncs where the kernel has them and falls back to direct writes.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define FAIR_DSQ 0
#define SLICE_NS (5ULL * 1000 * 1000)

u64 vtime_now;

static __always_inline bool before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

SEC("struct_ops/wvt_select_cpu")
s32 BPF_PROG(wvt_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	bool is_idle = false;
	s32 cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	if (is_idle)
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, SLICE_NS, 0);
	return cpu;
}

SEC("struct_ops/wvt_enqueue")
void BPF_PROG(wvt_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 vtime = p->scx.dsq_vtime;

	if (before(vtime, vtime_now - SLICE_NS))
		vtime = vtime_now - SLICE_NS;
	scx_bpf_dsq_insert_vtime(p, FAIR_DSQ, SLICE_NS, vtime, enq_flags);
}

SEC("struct_ops/wvt_dispatch")
void BPF_PROG(wvt_dispatch, s32 cpu, struct task_struct *prev)
{
	scx_bpf_dsq_move_to_local(FAIR_DSQ);
}

SEC("struct_ops/wvt_running")
void BPF_PROG(wvt_running, struct task_struct *p)
{
	if (before(vtime_now, p->scx.dsq_vtime))
		vtime_now = p->scx.dsq_vtime;
}

SEC("struct_ops/wvt_stopping")
void BPF_PROG(wvt_stopping, struct task_struct *p, bool runnable)
{
	u64 used = SLICE_NS > p->scx.slice ? SLICE_NS - p->scx.slice : 0;
	u64 vtime = p->scx.dsq_vtime + used * 100 / (p->scx.weight ? p->scx.weight : 1);

	if (bpf_ksym_exists(scx_bpf_task_set_dsq_vtime))
		scx_bpf_task_set_dsq_vtime(p, vtime);
	else
		p->scx.dsq_vtime = vtime;
}

SEC("struct_ops/wvt_enable")
void BPF_PROG(wvt_enable, struct task_struct *p)
{
	if (bpf_ksym_exists(scx_bpf_task_set_dsq_vtime))
		scx_bpf_task_set_dsq_vtime(p, vtime_now);
	else
		p->scx.dsq_vtime = vtime_now;
}

SEC("struct_ops.s/wvt_init")
s32 BPF_PROG(wvt_init)
{
	return scx_bpf_create_dsq(FAIR_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops wvt_ops = {
	.select_cpu = (void *)wvt_select_cpu,
	.enqueue = (void *)wvt_enqueue,
	.dispatch = (void *)wvt_dispatch,
	.running = (void *)wvt_running,
	.stopping = (void *)wvt_stopping,
	.enable = (void *)wvt_enable,
	.init = (void *)wvt_init,
	.name = "wvt",
};
