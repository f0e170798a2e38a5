/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * primitive: aging
 * tags: aging, starvation avoidance, priority, deadline, wait time
 *
 * Aging for priority or shortest-job-first style policies. A policy that
 * always prefers short or high-priority tasks can starve long ones forever.
 * Record when a task became runnable, and when computing its queue key,
 * subtract a boost that grows with the time it has waited, capped so aging
 * cannot override priorities completely. Long waiters eventually reach the
 * head of the queue however unfavourable their base key is.
 */
const volatile u64 age_cap_ns = 50000000;	/* tunable: most boost aging can give */
const volatile u32 age_shift = 1;		/* tunable: boost = wait >> age_shift */

struct age_ctx {
	u64 runnable_at;	/* when the task last became runnable */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct age_ctx);
} age_stor SEC(".maps");

void BPF_STRUCT_OPS(example_runnable, struct task_struct *p, u64 enq_flags)
{
	struct age_ctx *actx = bpf_task_storage_get(&age_stor, p, 0,
						   BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (actx)
		actx->runnable_at = bpf_ktime_get_ns();
}

/* base_key is the policy's own ordering (e.g. expected runtime); smaller runs first. */
static u64 aged_key(struct task_struct *p, u64 base_key)
{
	struct age_ctx *actx = bpf_task_storage_get(&age_stor, p, 0, 0);
	u64 waited, boost;

	if (!actx || !actx->runnable_at)
		return base_key;
	waited = bpf_ktime_get_ns() - actx->runnable_at;
	boost = waited >> age_shift;
	if (boost > age_cap_ns)
		boost = age_cap_ns;
	return base_key > boost ? base_key - boost : 0;
}
