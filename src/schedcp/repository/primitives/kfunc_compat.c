/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * primitive: kfunc_compat
 * tags: compatibility, kfunc, ksym exists, kernel versions, dispatch rename
 *
 * One source for several kernel generations. Kernel 6.12 calls the insert and
 * consume kfuncs scx_bpf_dispatch / scx_bpf_consume; 6.13 renamed them to
 * scx_bpf_dsq_insert / scx_bpf_dsq_move_to_local and later kernels dropped the
 * old names. Declare both as weak ksyms and choose at load time with
 * bpf_ksym_exists(): the verifier removes the branch for the missing symbol,
 * so the program loads on either side of the rename.
 */
void scx_bpf_dsq_insert___new(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
void scx_bpf_dispatch___old(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
bool scx_bpf_dsq_move_to_local___new(u64 dsq_id) __ksym __weak;
bool scx_bpf_consume___old(u64 dsq_id) __ksym __weak;

static inline void compat_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_insert___new))
		scx_bpf_dsq_insert___new(p, dsq_id, slice, enq_flags);
	else
		scx_bpf_dispatch___old(p, dsq_id, slice, enq_flags);
}

static inline bool compat_move_to_local(u64 dsq_id)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local___new))
		return scx_bpf_dsq_move_to_local___new(dsq_id);
	return scx_bpf_consume___old(dsq_id);
}
