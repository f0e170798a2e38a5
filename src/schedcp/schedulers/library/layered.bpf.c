/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * layered: group tasks into layers by command name and share the CPU between layers by weight.
 *
 * Operators usually think in terms of applications ("the database", "the batch jobs"), not
 * threads. A layer is a command-name prefix (`layerN_comm`, e.g. "postgres" or "cc1") plus a
 * weight (`layerN_weight`); tasks matching no prefix form the default layer with
 * `default_weight`. Each layer has its own FIFO queue, and a CPU that needs work serves the
 * non-empty layer that has received the least CPU time relative to its weight. So a layer with
 * weight 300 gets three times the CPU of a layer with weight 100 whenever both have work, however
 * many threads each one runs, and an idle layer's share goes to the others.
 *
 * A layer that was idle (no runnable task at all, counted in ops.runnable/ops.quiescent) is not
 * allowed to bank its unused share: when it gets work again, its clock is raised to within one
 * slice of the clock of the layer last chosen by weight, so it cannot monopolise the machine to
 * catch up. And no layer with queued work waits longer than `max_wait_us` between
 * two services, whatever the weights: with extreme weights (1 against 10000) the light layer
 * would otherwise wait for seconds, and the default layer holds the kernel's own threads (the
 * sched_ext watchdog's worker among them), so starving it gets the scheduler ejected.
 */
#include "schedcp.h"

#define NR_LAYERS 4		/* three configurable layers + the default layer */
#define DEFAULT_LAYER 3
#define COMM_LEN 16

const volatile char layer0_comm[COMM_LEN] = "";
const volatile char layer1_comm[COMM_LEN] = "";
const volatile char layer2_comm[COMM_LEN] = "";
const volatile u32 layer0_weight = 100;
const volatile u32 layer1_weight = 100;
const volatile u32 layer2_weight = 100;
const volatile u32 default_weight = 100;
const volatile u64 slice_us = 5000;
const volatile u64 max_wait_us = 100000;

u64 nr_enqueued, nr_dispatched, nr_layer0, nr_layer1, nr_layer2, nr_unmatched, nr_rescued;

/* Per-layer virtual clocks (CPU time / weight), and the clock of the layer last chosen by weight. */
u64 layer_vtime[NR_LAYERS];
u64 layer_clock;
/* Runnable (queued or running) tasks per layer: zero means the layer is idle. */
u64 layer_nr_runnable[NR_LAYERS];
/* When each layer last got a CPU, or got work after being empty: its wait starts there. */
u64 layer_waiting_since[NR_LAYERS];

struct task_ctx {
	u64 started;
	u32 layer;		/* from the latest classification */
	u32 counted_layer;	/* the layer whose runnable count includes this task */
	bool counted;
};
SCHEDCP_TASK_STORAGE(task_ctxs, struct task_ctx);

static bool has_prefix(const char *comm, const volatile char *pattern)
{
	int i;

	if (!pattern[0])
		return false; /* an empty pattern switches the layer off */
	bpf_for(i, 0, COMM_LEN) {
		if (!pattern[i])
			return true;
		if (comm[i] != pattern[i])
			return false;
	}
	return true;
}

static u32 classify(struct task_struct *p)
{
	char comm[COMM_LEN];

	__builtin_memcpy(comm, p->comm, COMM_LEN);
	if (has_prefix(comm, layer0_comm))
		return 0;
	if (has_prefix(comm, layer1_comm))
		return 1;
	if (has_prefix(comm, layer2_comm))
		return 2;
	return DEFAULT_LAYER;
}

static u32 layer_weight(u32 layer)
{
	u32 w = layer == 0 ? layer0_weight : layer == 1 ? layer1_weight : layer == 2 ? layer2_weight : default_weight;

	return w ? w : 1;
}

static u32 remember_layer(struct task_struct *p)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	u32 layer = classify(p);

	if (tctx)
		tctx->layer = layer;
	return layer;
}

s32 BPF_STRUCT_OPS(layered_select_cpu, struct task_struct *p, s32 prev_cpu, u64 wake_flags)
{
	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice_us * NSEC_PER_USEC, &nr_dispatched, NULL);
}

void BPF_STRUCT_OPS(layered_enqueue, struct task_struct *p, u64 enq_flags)
{
	u32 layer = remember_layer(p) & (NR_LAYERS - 1);

	SCHEDCP_STAT_INC(nr_enqueued);
	if (layer == 0)
		SCHEDCP_STAT_INC(nr_layer0);
	else if (layer == 1)
		SCHEDCP_STAT_INC(nr_layer1);
	else if (layer == 2)
		SCHEDCP_STAT_INC(nr_layer2);
	else
		SCHEDCP_STAT_INC(nr_unmatched);
	if (scx_bpf_dsq_nr_queued(layer) == 0)
		layer_waiting_since[layer] = schedcp_now();
	schedcp_insert(p, layer, slice_us * NSEC_PER_USEC, enq_flags);
}

static bool starving(u32 layer, u64 now)
{
	return now - layer_waiting_since[layer & (NR_LAYERS - 1)] > max_wait_us * NSEC_PER_USEC;
}

/* Serve layer a before layer b? Starving layers first, then the least served relative to weight. */
static bool serve_before(u32 a, u32 b, u64 now)
{
	if (starving(a, now) != starving(b, now))
		return starving(a, now);
	return vtime_before(layer_vtime[a & (NR_LAYERS - 1)], layer_vtime[b & (NR_LAYERS - 1)]);
}

void BPF_STRUCT_OPS(layered_dispatch, s32 cpu, struct task_struct *prev)
{
	u64 now = schedcp_now();
	u32 tried = 0, i;

	/* Try layers in serving order until one yields a task (it may hold only pinned tasks). */
	bpf_repeat(NR_LAYERS) {
		s32 best = -1;

		bpf_for(i, 0, NR_LAYERS) {
			if ((tried & (1 << i)) || scx_bpf_dsq_nr_queued(i) == 0)
				continue;
			if (best < 0 || serve_before(i, best, now))
				best = i;
		}
		if (best < 0)
			return;
		tried |= 1 << best;
		if (schedcp_move_to_local(best)) {
			SCHEDCP_STAT_INC(nr_dispatched);
			if (starving(best, now))
				SCHEDCP_STAT_INC(nr_rescued);
			else
				layer_clock = layer_vtime[best & (NR_LAYERS - 1)];
			layer_waiting_since[best & (NR_LAYERS - 1)] = now;
			return;
		}
	}
}

void BPF_STRUCT_OPS(layered_runnable, struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	u32 layer = remember_layer(p) & (NR_LAYERS - 1);
	u64 floor = layer_clock - slice_us * NSEC_PER_USEC;

	if (!tctx || tctx->counted)
		return;
	tctx->counted = true;
	tctx->counted_layer = layer;
	/* The layer wakes up from idle: no banked share beyond one slice. */
	if (__sync_fetch_and_add(&layer_nr_runnable[layer], 1) == 0 && vtime_before(layer_vtime[layer], floor))
		layer_vtime[layer] = floor;
}

void BPF_STRUCT_OPS(layered_quiescent, struct task_struct *p, u64 deq_flags)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);

	if (!tctx || !tctx->counted)
		return;
	tctx->counted = false;
	__sync_fetch_and_sub(&layer_nr_runnable[tctx->counted_layer & (NR_LAYERS - 1)], 1);
}

void BPF_STRUCT_OPS(layered_running, struct task_struct *p)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);

	if (tctx)
		tctx->started = schedcp_now();
}

void BPF_STRUCT_OPS(layered_stopping, struct task_struct *p, bool runnable)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	u32 layer;

	if (!tctx)
		return;
	layer = tctx->layer & (NR_LAYERS - 1);
	/* Charge the layer, not the task: shares are between layers. */
	__sync_fetch_and_add(&layer_vtime[layer], (schedcp_now() - tctx->started) * 100 / layer_weight(layer));
}

s32 BPF_STRUCT_OPS(layered_init_task, struct task_struct *p, struct scx_init_task_args *args)
{
	return bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE) ? 0 : -ENOMEM;
}

s32 BPF_STRUCT_OPS_SLEEPABLE(layered_init)
{
	s32 i, err;

	bpf_for(i, 0, NR_LAYERS) {
		err = schedcp_create_dsq(i);
		if (err)
			return err;
	}
	return 0;
}

SEC(".struct_ops.link")
struct sched_ext_ops layered_ops = {
	.select_cpu = (void *)layered_select_cpu,
	.enqueue = (void *)layered_enqueue,
	.dispatch = (void *)layered_dispatch,
	.runnable = (void *)layered_runnable,
	.quiescent = (void *)layered_quiescent,
	.running = (void *)layered_running,
	.stopping = (void *)layered_stopping,
	.init_task = (void *)layered_init_task,
	.init = (void *)layered_init,
	.name = "layered",
};
