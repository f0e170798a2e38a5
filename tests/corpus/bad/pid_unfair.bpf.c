/* expect: dynamic dyn-unfair */
/*
 * Slices keyed on pid parity: even pids get 100 ms, odd pids 500 us. Both kinds make progress,
 * so nothing stalls, but equal tasks receive wildly different CPU time.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define LONG_SLICE_NS 100000000ULL
#define SHORT_SLICE_NS 500000ULL

SEC("struct_ops/unfair_enqueue")
void BPF_PROG(unfair_enqueue, struct task_struct *p, u64 enq_flags)
{
	u64 slice = (p->pid & 1) ? SHORT_SLICE_NS : LONG_SLICE_NS;

	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, slice, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops unfair_ops = {
	.enqueue = (void *)unfair_enqueue,
	.name = "unfair",
};
