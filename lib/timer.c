/*
 * timer.c - the context's deadline min-heap (connect, handshake, backoff and
 * per-operation deadlines). Ordered by (due, seq): seq keeps equal deadlines in
 * arming order. Due timers are taken off the heap before their callback runs, so a
 * callback may re-arm its own timer (it runs on a later pass at the earliest, never in
 * a loop within one pass) or cancel others; every timer due when a pass starts runs in
 * that pass. Cost per tick: O(due * log n).
 */
#include "core_priv.h"

#include <stdlib.h>

static bool timer_less(const struct ferryi_timer *a, const struct ferryi_timer *b)
{
	return a->due_ns < b->due_ns || (a->due_ns == b->due_ns && a->seq < b->seq);
}

static void heap_set(struct ferry_ctx *ctx, uint32_t i, struct ferryi_timer *t)
{
	ctx->heap[i] = t;
	t->heap_idx = i;
}

static void heap_up(struct ferry_ctx *ctx, uint32_t i)
{
	struct ferryi_timer *t = ctx->heap[i];
	while (i > 0) {
		uint32_t parent = (i - 1) / 2;
		if (!timer_less(t, ctx->heap[parent]))
			break;
		heap_set(ctx, i, ctx->heap[parent]);
		i = parent;
	}
	heap_set(ctx, i, t);
}

static void heap_down(struct ferry_ctx *ctx, uint32_t i)
{
	struct ferryi_timer *t = ctx->heap[i];
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		const struct ferryi_timer *best = t;
		if (l < ctx->heap_len && timer_less(ctx->heap[l], best)) {
			m = l;
			best = ctx->heap[l];
		}
		if (r < ctx->heap_len && timer_less(ctx->heap[r], best))
			m = r;
		if (m == i)
			break;
		heap_set(ctx, i, ctx->heap[m]);
		i = m;
	}
	heap_set(ctx, i, t);
}

void ferryi_timer_init(struct ferryi_timer *t, void (*fn)(struct ferryi_timer *))
{
	t->due_ns = 0;
	t->seq = 0;
	t->heap_idx = UINT32_MAX;
	ferryi_node_init(&t->ready_link);
	t->fn = fn;
}

void ferryi_timer_cancel(struct ferry_ctx *ctx, struct ferryi_timer *t)
{
	uint32_t i = t->heap_idx;
	if (i == UINT32_MAX)
		return;
	if (i == FERRYI_TIMER_READY) {
		ferryi_list_remove(&t->ready_link);
		t->heap_idx = UINT32_MAX;
		return;
	}
	t->heap_idx = UINT32_MAX;
	struct ferryi_timer *last = ctx->heap[--ctx->heap_len];
	if (i == ctx->heap_len)
		return;
	heap_set(ctx, i, last);
	if (i > 0 && timer_less(last, ctx->heap[(i - 1) / 2]))
		heap_up(ctx, i);
	else
		heap_down(ctx, i);
}

void ferryi_timer_arm(struct ferry_ctx *ctx, struct ferryi_timer *t, uint64_t due_ns)
{
	ferryi_timer_cancel(ctx, t);
	if (ctx->heap_len == ctx->heap_cap) {
		uint32_t cap = ctx->heap_cap ? ctx->heap_cap * 2 : 64;
		struct ferryi_timer **h = realloc(ctx->heap, cap * sizeof(*h));
		if (!h) {
			/* Out of memory: fire on the next tick rather than never. */
			FERRYI_ERR(ctx, "timer heap: out of memory, firing early");
			t->fn(t);
			return;
		}
		ctx->heap = h;
		ctx->heap_cap = cap;
	}
	t->due_ns = due_ns;
	t->seq = ctx->timer_seq++;
	heap_set(ctx, ctx->heap_len++, t);
	heap_up(ctx, t->heap_idx);
	/* A sleeper computed its timeout from the old earliest deadline. */
	if (t->heap_idx == 0 && atomic_load_explicit(&ctx->sleepers, memory_order_relaxed))
		ferryi_ctx_wake(ctx);
}

void ferryi_timers_run_due(struct ferry_ctx *ctx, uint64_t now)
{
	struct ferryi_list_node *n;
	/*
	 * Every timer due now runs in this pass, and only those: they move to a ready list
	 * first, so a callback that re-arms itself in the past waits for the next pass and
	 * cannot starve the others. Cancelling a ready timer unlinks it (it may be freed).
	 */
	while (ctx->heap_len > 0 && ctx->heap[0]->due_ns <= now) {
		struct ferryi_timer *t = ctx->heap[0];
		ferryi_timer_cancel(ctx, t);
		t->heap_idx = FERRYI_TIMER_READY;
		ferryi_list_push_back(&ctx->timer_ready, &t->ready_link);
	}
	while ((n = ferryi_list_pop_front(&ctx->timer_ready))) {
		struct ferryi_timer *t = ferryi_container_of(n, struct ferryi_timer, ready_link);
		t->heap_idx = UINT32_MAX;
		t->fn(t);
	}
}

void ferryi_timers_fini(struct ferry_ctx *ctx)
{
	struct ferryi_list_node *n;
	while ((n = ferryi_list_pop_front(&ctx->timer_ready)))
		ferryi_container_of(n, struct ferryi_timer, ready_link)->heap_idx = UINT32_MAX;
	for (uint32_t i = 0; i < ctx->heap_len; i++)
		ctx->heap[i]->heap_idx = UINT32_MAX;
	ctx->heap_len = 0;
	free(ctx->heap);
	ctx->heap = NULL;
	ctx->heap_cap = 0;
}
