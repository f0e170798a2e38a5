/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * primitive: stat_counters
 * tags: statistics, counters, observability, bss, atomic
 *
 * Cheap observability: plain 64-bit globals in .bss that the scheduler bumps
 * with atomic adds and userspace reads from the object's data section without
 * any map lookups. Name them nr_<event> so tools can discover them. Count the
 * decisions an agent will want to reason about: direct dispatches, queued
 * enqueues, steals, and how often a fallback path ran.
 */
u64 nr_direct_dispatches;	/* idle CPU found at wakeup */
u64 nr_queued;			/* went through the shared queue */
u64 nr_steals;			/* dispatched from another CPU's queue */
u64 nr_fallbacks;		/* no better choice than the default path */

static inline void stat_inc(u64 *counter)
{
	__sync_fetch_and_add(counter, 1);
}

/* Example: in ops.enqueue(), after deciding to queue the task:
 *	stat_inc(&nr_queued);
 */
