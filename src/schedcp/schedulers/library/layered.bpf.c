/* SPDX-License-Identifier: GPL-2.0 */
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
 * A layer that was idle is not allowed to bank its unused share: when it gets work again, its
 * clock is raised to within one slice of the layer that ran last, so it cannot monopolise the
 * machine to catch up.
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

u64 nr_enqueued, nr_dispatched, nr_layer0, nr_layer1, nr_layer2, nr_unmatched;

/* Per-layer virtual clocks (CPU time / weight), and the clock of the layer served last. */
u64 layer_vtime[NR_LAYERS];
u64 layer_clock;

struct task_ctx {
	u64 started;
	u32 layer;
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
	remember_layer(p);
	return schedcp_select_cpu_direct(p, prev_cpu, wake_flags, slice_us * NSEC_PER_USEC, &nr_dispatched, NULL);
}

void BPF_STRUCT_OPS(layered_enqueue, struct task_struct *p, u64 enq_flags)
{
	u32 layer = remember_layer(p) & (NR_LAYERS - 1);
	u64 floor = layer_clock - slice_us * NSEC_PER_USEC;

	SCHEDCP_STAT_INC(nr_enqueued);
	if (layer == 0)
		SCHEDCP_STAT_INC(nr_layer0);
	else if (layer == 1)
		SCHEDCP_STAT_INC(nr_layer1);
	else if (layer == 2)
		SCHEDCP_STAT_INC(nr_layer2);
	else
		SCHEDCP_STAT_INC(nr_unmatched);
	/* Waking up from idle: no banked share beyond one slice. */
	if (scx_bpf_dsq_nr_queued(layer) == 0 && vtime_before(layer_vtime[layer], floor))
		layer_vtime[layer] = floor;
	schedcp_insert(p, layer, slice_us * NSEC_PER_USEC, enq_flags);
}

void BPF_STRUCT_OPS(layered_dispatch, s32 cpu, struct task_struct *prev)
{
	u32 tried = 0, i;

	/* Serve layers from the least-served (relative to weight) upwards until one yields a task. */
	bpf_repeat(NR_LAYERS) {
		s32 best = -1;

		bpf_for(i, 0, NR_LAYERS) {
			if ((tried & (1 << i)) || scx_bpf_dsq_nr_queued(i) == 0)
				continue;
			if (best < 0 || vtime_before(layer_vtime[i], layer_vtime[best & (NR_LAYERS - 1)]))
				best = i;
		}
		if (best < 0)
			return;
		tried |= 1 << best;
		if (schedcp_move_to_local(best)) {
			SCHEDCP_STAT_INC(nr_dispatched);
			if (vtime_before(layer_clock, layer_vtime[best & (NR_LAYERS - 1)]))
				layer_clock = layer_vtime[best & (NR_LAYERS - 1)];
			return;
		}
	}
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
	.running = (void *)layered_running,
	.stopping = (void *)layered_stopping,
	.init_task = (void *)layered_init_task,
	.init = (void *)layered_init,
	.name = "layered",
};
