/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: performance perf-regression */
/*
 * "Keep caches warm": every task that may run on CPU 0 is queued there, so the other CPUs sit
 * idle while tasks wait. Correct, fair, never stalls; just slow.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define HOME_CPU 0
/* Short slices keep wakeups on the crowded CPU reasonably prompt: the damage is the idle CPU. */
#define SLICE_NS 5000000ULL

SEC("struct_ops/onecpu_select_cpu")
s32 BPF_PROG(onecpu_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	return bpf_cpumask_test_cpu(HOME_CPU, p->cpus_ptr) ? HOME_CPU : prev_cpu;
}

SEC("struct_ops/onecpu_enqueue")
void BPF_PROG(onecpu_enqueue, struct task_struct *p, u64 enq_flags)
{
	if (bpf_cpumask_test_cpu(HOME_CPU, p->cpus_ptr))
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | HOME_CPU, SLICE_NS, enq_flags);
	else
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, SLICE_NS, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops onecpu_ops = {
	.select_cpu = (void *)onecpu_select_cpu,
	.enqueue = (void *)onecpu_enqueue,
	.name = "onecpu",
};
