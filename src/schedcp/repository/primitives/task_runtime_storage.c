/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * primitive: task_runtime_storage
 * tags: task storage, runtime measurement, ewma, burst length, classification
 *
 * Measure how long each task runs per burst with BPF task-local storage.
 * ops.running() stamps the start, ops.stopping() adds the elapsed time to the
 * current burst, and when the task goes to sleep the burst is folded into an
 * exponentially weighted moving average (weight 1/8 for the newest sample).
 * The average is the input for shortest-job-first ordering, interactive task
 * detection or per-task slice sizing.
 */
struct runtime_ctx {
	u64 started_at;		/* when the task last got a CPU */
	u64 burst_ns;		/* CPU time in the current burst */
	u64 avg_burst_ns;	/* EWMA of completed bursts */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct runtime_ctx);
} runtime_stor SEC(".maps");

static struct runtime_ctx *runtime_of(struct task_struct *p)
{
	return bpf_task_storage_get(&runtime_stor, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
}

void BPF_STRUCT_OPS(example_running, struct task_struct *p)
{
	struct runtime_ctx *rc = runtime_of(p);

	if (rc)
		rc->started_at = bpf_ktime_get_ns();
}

void BPF_STRUCT_OPS(example_stopping, struct task_struct *p, bool runnable)
{
	struct runtime_ctx *rc = runtime_of(p);

	if (!rc || !rc->started_at)
		return;
	rc->burst_ns += bpf_ktime_get_ns() - rc->started_at;
	rc->started_at = 0;
	if (!runnable) {
		/* The task is blocking: its burst is over. avg += (new - avg) / 8 */
		rc->avg_burst_ns = rc->avg_burst_ns - (rc->avg_burst_ns >> 3) + (rc->burst_ns >> 3);
		rc->burst_ns = 0;
	}
}
