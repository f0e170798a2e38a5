/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: pass */
/*
 * Tasks are parked by pid in a BPF queue map instead of a DSQ; ops.dispatch pops a batch,
 * looks each task up and moves it to a shared DSQ that the CPU then drains. If the queue is
 * full the task goes straight to the shared DSQ, so no path loses a task.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define SHARED_DSQ 5
#define BATCH 8

struct {
	__uint(type, BPF_MAP_TYPE_QUEUE);
	__uint(max_entries, 4096);
	__type(value, s32);
} parked SEC(".maps");

u64 nr_parked, nr_overflow;

SEC("struct_ops/qmap_enqueue")
void BPF_PROG(qmap_enqueue, struct task_struct *p, u64 enq_flags)
{
	s32 pid = p->pid;

	if (bpf_map_push_elem(&parked, &pid, 0)) {
		__sync_fetch_and_add(&nr_overflow, 1);
		scx_bpf_dsq_insert(p, SHARED_DSQ, SCX_SLICE_DFL, enq_flags);
		return;
	}
	__sync_fetch_and_add(&nr_parked, 1);
}

SEC("struct_ops/qmap_dispatch")
void BPF_PROG(qmap_dispatch, s32 cpu, struct task_struct *prev)
{
	for (int i = 0; i < BATCH; i++) {
		struct task_struct *p;
		s32 pid;

		if (bpf_map_pop_elem(&parked, &pid))
			break;
		p = bpf_task_from_pid(pid);
		if (!p)
			continue;
		scx_bpf_dsq_insert(p, SHARED_DSQ, SCX_SLICE_DFL, 0);
		bpf_task_release(p);
	}
	scx_bpf_dsq_move_to_local(SHARED_DSQ);
}

SEC("struct_ops.s/qmap_init")
s32 BPF_PROG(qmap_init)
{
	return scx_bpf_create_dsq(SHARED_DSQ, -1);
}

SEC(".struct_ops.link")
struct sched_ext_ops qmap_ops = {
	.enqueue = (void *)qmap_enqueue,
	.dispatch = (void *)qmap_dispatch,
	.init = (void *)qmap_init,
	.name = "qmap",
};
