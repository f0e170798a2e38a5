/* expect: static error-in-hot-path */
/* A debugging scx_bpf_error() left in ops.running: the scheduler aborts on its first switch. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char _license[] SEC("license") = "GPL";

#define trace_abort(msg) scx_bpf_error_bstr(msg, NULL, 0)

SEC("struct_ops/chatty_enqueue")
void BPF_PROG(chatty_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

SEC("struct_ops/chatty_running")
void BPF_PROG(chatty_running, struct task_struct *p)
{
	trace_abort("task started running");
}

SEC(".struct_ops.link")
struct sched_ext_ops chatty_ops = {
	.enqueue = (void *)chatty_enqueue,
	.running = (void *)chatty_running,
	.name = "chatty",
};
