/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: pass */
/*
 * One DSQ per CPU, created in a loop at init. Tasks queue on the DSQ of the CPU they last ran
 * on; a CPU serves its own queue first and then steals from the others, so none idles while
 * work waits.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define MAX_CPUS 64

u32 nr_cpus = 1;

SEC("struct_ops/pcpu_enqueue")
void BPF_PROG(pcpu_enqueue, struct task_struct *p, u64 enq_flags)
{
	u32 cpu = scx_bpf_task_cpu(p);

	if (cpu >= nr_cpus)
		cpu = 0;
	scx_bpf_dsq_insert(p, cpu, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/pcpu_dispatch")
void BPF_PROG(pcpu_dispatch, s32 cpu, struct task_struct *prev)
{
	if (scx_bpf_dsq_move_to_local(cpu))
		return;
	for (u32 i = 0; i < MAX_CPUS && i < nr_cpus; i++) {
		if (i != cpu && scx_bpf_dsq_move_to_local(i))
			return;
	}
}

SEC("struct_ops.s/pcpu_init")
s32 BPF_PROG(pcpu_init)
{
	nr_cpus = scx_bpf_nr_cpu_ids();
	if (nr_cpus > MAX_CPUS)
		nr_cpus = MAX_CPUS;
	for (u32 i = 0; i < MAX_CPUS && i < nr_cpus; i++) {
		s32 err = scx_bpf_create_dsq(i, -1);

		if (err)
			return err;
	}
	return 0;
}

SEC(".struct_ops.link")
struct sched_ext_ops pcpu_ops = {
	.enqueue = (void *)pcpu_enqueue,
	.dispatch = (void *)pcpu_dispatch,
	.init = (void *)pcpu_init,
	.name = "pcpu",
};
