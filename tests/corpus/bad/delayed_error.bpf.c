/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: dynamic dyn-ejected */
/*
 * Works for a while, then gives up: once a counter passes a threshold the scheduler calls
 * scx_bpf_error(). Short smoke tests pass; a few hundred scheduling events later it aborts.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define BUDGET 400

u64 nr_enqueued;
/* scx_bpf_error_bstr() wants its format in writable memory and an argument array. */
static char budget_msg[] = "enqueue budget exhausted";
static unsigned long long no_args[1];

SEC("struct_ops/budget_enqueue")
void BPF_PROG(budget_enqueue, struct task_struct *p, u64 enq_flags)
{
	if (__sync_fetch_and_add(&nr_enqueued, 1) > BUDGET)
		scx_bpf_error_bstr(budget_msg, no_args, sizeof(no_args));
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC(".struct_ops.link")
struct sched_ext_ops budget_ops = {
	.enqueue = (void *)budget_enqueue,
	.name = "budget",
};
