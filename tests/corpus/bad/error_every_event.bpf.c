/* SPDX-License-Identifier: GPL-2.0-only */
/* expect: static error-in-hot-path */
/* A debugging scx_bpf_error() left in ops.running: the scheduler aborts on its first switch. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

/* scx_bpf_error_bstr() wants its format in writable memory and an argument array. */
static char abort_msg[] = "task started running";
static unsigned long long no_args[1];
#define trace_abort() scx_bpf_error_bstr(abort_msg, no_args, sizeof(no_args))

SEC("struct_ops/chatty_enqueue")
void BPF_PROG(chatty_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/chatty_running")
void BPF_PROG(chatty_running, struct task_struct *p)
{
	trace_abort();
}

SEC(".struct_ops.link")
struct sched_ext_ops chatty_ops = {
	.enqueue = (void *)chatty_enqueue,
	.running = (void *)chatty_running,
	.name = "chatty",
};
