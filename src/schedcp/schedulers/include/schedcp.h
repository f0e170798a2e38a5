/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * schedcp.h: the one header every SchedCP library scheduler includes.
 *
 * Goal: one scheduler source that builds against the vmlinux.h of any target kernel from 6.12
 * to 7.x and then runs there. Two mechanisms make that work:
 *
 *  1. Compile time. The build writes schedcp_kernel.h next to vmlinux.h with one
 *     SCHEDCP_HAVE_KFUNC_<name> macro per kfunc prototype bpftool emitted into vmlinux.h. We
 *     declare a kfunc ourselves only when that macro is missing, so we never clash with the
 *     kernel's own prototype (they differ in small ways, e.g. const qualifiers, across versions).
 *     When vmlinux.h carries no kfunc prototypes at all (old bpftool), SCHEDCP_VMLINUX_HAS_KFUNCS
 *     is 0, no HAVE macro exists and we declare everything we use.
 *
 *  2. Run time. Every declaration is `__ksym __weak`: libbpf resolves it to 0 when the running
 *     kernel lacks the symbol, bpf_ksym_exists() turns into a constant the verifier folds, and
 *     the branch for the other kernel generation is dropped as dead code before it is checked.
 *
 * Shims and the kernels they cover:
 *
 *   schedcp_insert()          6.12: scx_bpf_dispatch; 6.13..6.18: scx_bpf_dsq_insert (void);
 *                             6.19+: scx_bpf_dsq_insert___v2 (returns false on a bad target).
 *   schedcp_insert_vtime()    6.12: scx_bpf_dispatch_vtime; 6.13+: scx_bpf_dsq_insert_vtime;
 *                             6.19+: __scx_bpf_dsq_insert_vtime (argument struct, returns bool).
 *   schedcp_move_to_local()   6.12: scx_bpf_consume; 6.13+: scx_bpf_dsq_move_to_local(dsq);
 *                             7.1+: scx_bpf_dsq_move_to_local___v2(dsq, enq_flags).
 *   schedcp_dsq_move()        6.12: scx_bpf_dispatch_from_dsq; 6.13+: scx_bpf_dsq_move.
 *   schedcp_set_slice()       6.19+: scx_bpf_task_set_slice; older: write p->scx.slice.
 *   schedcp_set_vtime()       6.19+: scx_bpf_task_set_dsq_vtime; older: write p->scx.dsq_vtime.
 *                             (7.x warns about the direct writes, so they are a fallback only.)
 *   schedcp_now()             6.14+: scx_bpf_now (rq clock, cheap); older: bpf_ktime_get_ns.
 *
 * A libbpf trap behind the odd names below: libbpf looks a ksym up by its "essential" name, which
 * drops everything from the LAST "___". A program declaring scx_bpf_dsq_insert___v2 would therefore
 * be bound to the kernel's plain scx_bpf_dsq_insert (the void, v1 function). To reach a kernel
 * symbol that itself ends in ___v2 we add one more flavour suffix of our own, "___schedcp".
 */
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#if __has_include("schedcp_kernel.h")
#include "schedcp_kernel.h"
#endif

#ifndef SCHEDCP_VMLINUX_HAS_KFUNCS
#define SCHEDCP_VMLINUX_HAS_KFUNCS 0
#endif

char _license[] SEC("license") = "GPL";

/* ---- kfunc declarations, only where vmlinux.h has none ------------------------------------ */

#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_select_cpu_dfl
s32 scx_bpf_select_cpu_dfl(struct task_struct *p, s32 prev_cpu, u64 wake_flags, bool *is_idle) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_create_dsq
s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_dsq_nr_queued
s32 scx_bpf_dsq_nr_queued(u64 dsq_id) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_kick_cpu
void scx_bpf_kick_cpu(s32 cpu, u64 flags) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_task_cpu
s32 scx_bpf_task_cpu(const struct task_struct *p) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_nr_cpu_ids
u32 scx_bpf_nr_cpu_ids(void) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_test_and_clear_cpu_idle
bool scx_bpf_test_and_clear_cpu_idle(s32 cpu) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_get_idle_cpumask
const struct cpumask *scx_bpf_get_idle_cpumask(void) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_put_idle_cpumask
void scx_bpf_put_idle_cpumask(const struct cpumask *cpumask) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_bpf_cpumask_test_cpu
bool bpf_cpumask_test_cpu(u32 cpu, const struct cpumask *cpumask) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_bpf_iter_scx_dsq_new
int bpf_iter_scx_dsq_new(struct bpf_iter_scx_dsq *it, u64 dsq_id, u64 flags) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_bpf_iter_scx_dsq_next
struct task_struct *bpf_iter_scx_dsq_next(struct bpf_iter_scx_dsq *it) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_bpf_iter_scx_dsq_destroy
void bpf_iter_scx_dsq_destroy(struct bpf_iter_scx_dsq *it) __ksym __weak;
#endif

/* Inserting into a DSQ: three generations. */
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_dispatch
void scx_bpf_dispatch(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_dispatch_vtime
void scx_bpf_dispatch_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime, u64 enq_flags) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_dsq_insert
void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_dsq_insert_vtime
void scx_bpf_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime, u64 enq_flags) __ksym __weak;
#endif
/* Resolves to the kernel's literal scx_bpf_dsq_insert___v2 (see the libbpf note above). */
bool scx_bpf_dsq_insert___v2___schedcp(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym __weak;

/* Moving a queued task to the local DSQ of the dispatching CPU. */
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_consume
bool scx_bpf_consume(u64 dsq_id) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_dsq_move_to_local
bool scx_bpf_dsq_move_to_local(u64 dsq_id) __ksym __weak;
#endif
bool scx_bpf_dsq_move_to_local___v2___schedcp(u64 dsq_id, u64 enq_flags) __ksym __weak;

/* Moving a task found by a DSQ iterator to another DSQ. */
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_dispatch_from_dsq
bool scx_bpf_dispatch_from_dsq(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p, u64 dsq_id,
			       u64 enq_flags) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_dsq_move
bool scx_bpf_dsq_move(struct bpf_iter_scx_dsq *it__iter, struct task_struct *p, u64 dsq_id,
		      u64 enq_flags) __ksym __weak;
#endif

/* Setters that replace direct writes to p->scx on newer kernels, and the scheduler clock. */
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_task_set_slice
bool scx_bpf_task_set_slice(struct task_struct *p, u64 slice) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_task_set_dsq_vtime
bool scx_bpf_task_set_dsq_vtime(struct task_struct *p, u64 vtime) __ksym __weak;
#endif
#ifndef SCHEDCP_HAVE_KFUNC_scx_bpf_now
u64 scx_bpf_now(void) __ksym __weak;
#endif

/* ---- small helpers ------------------------------------------------------------------------- */

#define SCHEDCP_OPS(name, args...) SEC("struct_ops/" #name) BPF_PROG(name, ##args)
#define SCHEDCP_OPS_SLEEPABLE(name, args...) SEC("struct_ops.s/" #name) BPF_PROG(name, ##args)
/* The spelling the kernel's example schedulers use, for readers coming from there. */
#define BPF_STRUCT_OPS(name, args...) SCHEDCP_OPS(name, ##args)
#define BPF_STRUCT_OPS_SLEEPABLE(name, args...) SCHEDCP_OPS_SLEEPABLE(name, ##args)

/* Counters are read by user space while CPUs update them concurrently: always add atomically. */
#define SCHEDCP_STAT_INC(var) __sync_fetch_and_add(&(var), 1)
#define SCHEDCP_STAT_ADD(var, n) __sync_fetch_and_add(&(var), (n))

/* A task-local storage map: per-task state that the kernel frees when the task exits. */
#define SCHEDCP_TASK_STORAGE(map_name, value_type)                                                 \
	struct {                                                                                   \
		__uint(type, BPF_MAP_TYPE_TASK_STORAGE);                                           \
		__uint(map_flags, BPF_F_NO_PREALLOC);                                              \
		__type(key, int);                                                                  \
		__type(value, value_type);                                                         \
	} map_name SEC(".maps")

#ifndef min
#define min(a, b) ((a) < (b) ? (a) : (b))
#endif
#ifndef max
#define max(a, b) ((a) > (b) ? (a) : (b))
#endif
#define clamp(v, lo, hi) min(max((v), (lo)), (hi))

/* vmlinux.h has no errno macros; ops.init and ops.init_task return negative errnos. */
#ifndef ENOMEM
#define ENOMEM 12
#endif
#ifndef EINVAL
#define EINVAL 22
#endif

#define NSEC_PER_USEC 1000ULL
#define NSEC_PER_MSEC 1000000ULL
#define NSEC_PER_SEC 1000000000ULL
/* Cap on CPUs we loop over; keeps every loop provably bounded for the verifier. */
#define SCHEDCP_MAX_CPUS 1024
/* Weight of a nice-0 task in sched_ext (p->scx.weight ranges 1..10000). */
#define SCHEDCP_WEIGHT_DFL 100

/* Is virtual time a before b? Wrap-safe, like the kernel's time_before(). */
static __always_inline bool vtime_before(u64 a, u64 b)
{
	return (s64)(a - b) < 0;
}

/* Exponentially weighted moving average with a 1/4 step: cheap, and settles in a few samples. */
static __always_inline u64 schedcp_ewma(u64 avg, u64 sample)
{
	return avg - (avg >> 2) + (sample >> 2);
}

/* Scale a duration by the inverse of a task's weight (nice 0 = 1x). Unsigned on purpose:
 * clang-16 with -mcpu=v3 cannot emit signed division. */
static __always_inline u64 schedcp_scale_inv_weight(u64 delta, u32 weight)
{
	return delta * SCHEDCP_WEIGHT_DFL / (weight ? (u64)weight : 1);
}

/* ---- compatibility shims ------------------------------------------------------------------- */

static __always_inline u64 schedcp_now(void)
{
	if (bpf_ksym_exists(scx_bpf_now))
		return scx_bpf_now();
	return bpf_ktime_get_ns();
}

static __always_inline bool schedcp_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_insert___v2___schedcp))
		return scx_bpf_dsq_insert___v2___schedcp(p, dsq_id, slice, enq_flags);
	if (bpf_ksym_exists(scx_bpf_dsq_insert))
		scx_bpf_dsq_insert(p, dsq_id, slice, enq_flags);
	else
		scx_bpf_dispatch(p, dsq_id, slice, enq_flags);
	return true;
}

/* Never use this with a built-in DSQ (local/global): the kernel ejects the scheduler for it. */
static __always_inline bool schedcp_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime,
						 u64 enq_flags)
{
#ifdef SCHEDCP_HAVE_KFUNC___scx_bpf_dsq_insert_vtime
	if (bpf_ksym_exists(__scx_bpf_dsq_insert_vtime)) {
		struct scx_bpf_dsq_insert_vtime_args args = {
			.dsq_id = dsq_id, .slice = slice, .vtime = vtime, .enq_flags = enq_flags,
		};
		return __scx_bpf_dsq_insert_vtime(p, &args);
	}
#endif
	if (bpf_ksym_exists(scx_bpf_dsq_insert_vtime))
		scx_bpf_dsq_insert_vtime(p, dsq_id, slice, vtime, enq_flags);
	else
		scx_bpf_dispatch_vtime(p, dsq_id, slice, vtime, enq_flags);
	return true;
}

static __always_inline bool schedcp_move_to_local(u64 dsq_id)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local___v2___schedcp))
		return scx_bpf_dsq_move_to_local___v2___schedcp(dsq_id, 0);
	if (bpf_ksym_exists(scx_bpf_dsq_move_to_local))
		return scx_bpf_dsq_move_to_local(dsq_id);
	return scx_bpf_consume(dsq_id);
}

static __always_inline bool schedcp_dsq_move(struct bpf_iter_scx_dsq *it, struct task_struct *p, u64 dsq_id,
					     u64 enq_flags)
{
	if (bpf_ksym_exists(scx_bpf_dsq_move))
		return scx_bpf_dsq_move(it, p, dsq_id, enq_flags);
	return scx_bpf_dispatch_from_dsq(it, p, dsq_id, enq_flags);
}

static __always_inline void schedcp_set_slice(struct task_struct *p, u64 slice)
{
	if (bpf_ksym_exists(scx_bpf_task_set_slice))
		scx_bpf_task_set_slice(p, slice);
	else
		p->scx.slice = slice;
}

static __always_inline void schedcp_set_vtime(struct task_struct *p, u64 vtime)
{
	if (bpf_ksym_exists(scx_bpf_task_set_dsq_vtime))
		scx_bpf_task_set_dsq_vtime(p, vtime);
	else
		p->scx.dsq_vtime = vtime;
}

/* The iterator handle inside a bpf_for_each(scx_dsq, ...) loop body. */
#define SCHEDCP_DSQ_ITER (&___it)

/* Create one custom DSQ; call only from the sleepable ops.init. */
static __always_inline s32 schedcp_create_dsq(u64 dsq_id)
{
	return scx_bpf_create_dsq(dsq_id, -1);
}


/* ---- measured CPU time, for policies that learn from behaviour ----------------------------- */

/*
 * Embed this in a policy's per-task storage and call the two hooks from ops.running and
 * ops.stopping. A "burst" is the CPU time a task uses from one wakeup until it sleeps again; a
 * task that never sleeps is in one ever-growing burst, which is exactly how it should look.
 */
struct schedcp_runtime {
	u64 started;	/* when the task last got a CPU */
	u64 total;	/* CPU time over the task's life under this scheduler */
	u64 burst;	/* CPU time in the current burst */
	u64 avg_burst;	/* average length of finished bursts */
};

static __always_inline void schedcp_runtime_start(struct schedcp_runtime *rt)
{
	rt->started = schedcp_now();
}

static __always_inline void schedcp_runtime_stop(struct schedcp_runtime *rt, bool runnable)
{
	u64 ran = schedcp_now() - rt->started;

	rt->total += ran;
	rt->burst += ran;
	if (!runnable) {
		rt->avg_burst = schedcp_ewma(rt->avg_burst, rt->burst);
		rt->burst = 0;
	}
}

/* The best guess for the task's next burst: its average, unless the current one is longer. */
static __always_inline u64 schedcp_runtime_expected_burst(const struct schedcp_runtime *rt)
{
	return max(rt->avg_burst, rt->burst);
}

/*
 * SCHEDCP_RUNTIME_OPS(prefix): complete runtime tracking for a policy that keeps nothing else per
 * task. Defines the task-storage map prefix_runtimes, a lookup prefix_runtime_of(p) (NULL only if
 * the task predates the scheduler and storage could not be created), and three callbacks to put
 * in the ops table: prefix_running, prefix_stopping and prefix_init_task.
 */
#define SCHEDCP_RUNTIME_OPS(prefix)                                                                \
	SCHEDCP_TASK_STORAGE(prefix##_runtimes, struct schedcp_runtime);                           \
	static struct schedcp_runtime *prefix##_runtime_of(struct task_struct *p)                  \
	{                                                                                          \
		return bpf_task_storage_get(&prefix##_runtimes, p, 0, 0);                          \
	}                                                                                          \
	void BPF_STRUCT_OPS(prefix##_running, struct task_struct *p)                               \
	{                                                                                          \
		struct schedcp_runtime *rt = prefix##_runtime_of(p);                               \
		if (rt)                                                                            \
			schedcp_runtime_start(rt);                                                 \
	}                                                                                          \
	void BPF_STRUCT_OPS(prefix##_stopping, struct task_struct *p, bool runnable)               \
	{                                                                                          \
		struct schedcp_runtime *rt = prefix##_runtime_of(p);                               \
		if (rt)                                                                            \
			schedcp_runtime_stop(rt, runnable);                                        \
	}                                                                                          \
	s32 BPF_STRUCT_OPS(prefix##_init_task, struct task_struct *p, struct scx_init_task_args *args) \
	{                                                                                          \
		return bpf_task_storage_get(&prefix##_runtimes, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE) \
			       ? 0 : -ENOMEM;                                                      \
	}

/* ---- the common wakeup fast path ----------------------------------------------------------- */

/*
 * Let the kernel's default policy pick a CPU (previous CPU if idle, else an idle sibling, ...).
 * When it found and claimed an idle CPU, nobody waits there, so the task goes straight into that
 * CPU's local queue: ordering policy only matters when tasks compete. Counters are optional;
 * *direct tells the caller whether the task was inserted (then it must not insert it again).
 */
static __always_inline s32 schedcp_select_cpu_try_direct(struct task_struct *p, s32 prev_cpu, u64 wake_flags,
							 u64 slice_ns, u64 *nr_dispatched, u64 *nr_direct,
							 bool *direct)
{
	bool is_idle = false;
	s32 cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);

	*direct = is_idle;
	if (is_idle) {
		schedcp_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		if (nr_dispatched)
			SCHEDCP_STAT_INC(*nr_dispatched);
		if (nr_direct)
			SCHEDCP_STAT_INC(*nr_direct);
	}
	return cpu;
}

/* schedcp_select_cpu_try_direct() for policies with nothing else to do on a wakeup. */
static __always_inline s32 schedcp_select_cpu_direct(struct task_struct *p, s32 prev_cpu, u64 wake_flags,
						     u64 slice_ns, u64 *nr_dispatched, u64 *nr_direct)
{
	bool direct;

	return schedcp_select_cpu_try_direct(p, prev_cpu, wake_flags, slice_ns, nr_dispatched, nr_direct, &direct);
}
