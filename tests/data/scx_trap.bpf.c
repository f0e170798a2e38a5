/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * scx_trap: an scx-style scheduler (written against <scx/common.bpf.h>, like the kernel's examples)
 * that runs everything on one shared FIFO until a task named "trap-me" becomes runnable; then it
 * calls scx_bpf_error() and records why in its exit info (UEI), as scx schedulers do.
 *
 * The deploy VM test loads it the way its own loader would: the __SCX_* enum variables filled
 * from the kernel's BTF, the UEI buffer sized, and trap_code set through .rodata (0 would be a
 * harmless default, so the error message shows that the value the token binds really reached
 * the loaded program).
 */
#include <scx/common.bpf.h>

char _license[] SEC("license") = "GPL";

const volatile u32 trap_code;

UEI_DEFINE(uei);

static bool named_trap(const struct task_struct *p)
{
	const char want[8] = "trap-me";

	for (int i = 0; i < 8; i++) {
		if (p->comm[i] != want[i])
			return false;
	}
	return true;
}

void BPF_STRUCT_OPS(trap_runnable, struct task_struct *p, u64 enq_flags)
{
	if (named_trap(p))
		scx_bpf_error("scx_trap: trap-me became runnable (code %u)", trap_code);
}

void BPF_STRUCT_OPS(trap_enqueue, struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, SCX_DSQ_GLOBAL, SCX_SLICE_DFL, enq_flags);
}

void BPF_STRUCT_OPS(trap_exit, struct scx_exit_info *ei)
{
	UEI_RECORD(uei, ei);
}

SCX_OPS_DEFINE(trap_ops,
	       .runnable = (void *)trap_runnable,
	       .enqueue = (void *)trap_enqueue,
	       .exit = (void *)trap_exit,
	       .name = "scx_trap");
