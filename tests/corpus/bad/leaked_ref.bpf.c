/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: kernel_verifier kv-rejected */
/* A task reference is acquired to peek at the parent process and never released. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

u64 nr_group_leaders;

SEC("struct_ops/leak_enqueue")
void BPF_PROG(leak_enqueue, struct task_struct *p, u64 enq_flags)
{
	struct task_struct *leader = bpf_task_from_pid(p->tgid);

	if (leader && leader->pid == p->pid)
		nr_group_leaders++;
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
} /* REJECTED-HERE */

SEC(".struct_ops.link")
struct sched_ext_ops leak_ops = {
	.enqueue = (void *)leak_enqueue,
	.name = "leak",
};
