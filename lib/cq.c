/*
 * cq.c - completion queues: a bounded ring per queue. Every user operation reserves
 * its entry when posted, so pushing a completion never fails and never drops; a full
 * queue makes new posts fail with FERRY_EAGAIN instead.
 *
 * Everything here runs under the context lock, which every post, completion and poll
 * holds anyway; a lock of the queue's own cost a busy poll two lock pairs per pass.
 * The one reader without it is a thread about to sleep (ferryi_cq_count), which
 * counted itself among the sleepers under the lock: a push under the lock before
 * that is visible to it, a push after it sees the sleeper and wakes it. The lock
 * orders both cases, so the count is atomic only to be read unlocked, and relaxed (a
 * sequentially consistent store cost every completion a locked instruction).
 */
#include "core_priv.h"

#include <stdlib.h>
#include <string.h>

int ferryi_cq_init(struct ferry_ctx *ctx, struct ferry_cq *cq, bool is_default)
{
	cq->ctx = ctx;
	cq->cap = ctx->cfg.cq_size;
	cq->ring = calloc(cq->cap, sizeof(*cq->ring));
	if (!cq->ring)
		return FERRY_ENOMEM;
	cq->is_default = is_default;
	ferryi_list_push_back(&ctx->cqs, &cq->ctx_link);
	return 0;
}

/* Relaxed everywhere: under the lock, and for the sleeper (see above). */
static uint32_t cq_count(const struct ferry_cq *cq)
{
	return atomic_load_explicit(&cq->count, memory_order_relaxed);
}

/* The ring slot i entries after head, i <= cap: a compare, where % by the run-time
 * capacity cost a division (~25 cycles) per push and per pop. */
static uint32_t cq_slot(const struct ferry_cq *cq, uint32_t i)
{
	uint32_t s = cq->head + i; /* head < cap <= UINT32_MAX / 2: cannot wrap */
	return s >= cq->cap ? s - cq->cap : s;
}

int ferryi_cq_reserve(struct ferry_cq *cq)
{
	if (cq_count(cq) + cq->reserved >= cq->cap)
		return FERRY_EAGAIN;
	cq->reserved++;
	return 0;
}

void ferryi_cq_unreserve(struct ferry_cq *cq)
{
	cq->reserved--;
}

void ferryi_cq_push(struct ferry_cq *cq, const struct ferry_completion *c,
		    struct ferryi_prov_inst *pi)
{
	uint32_t count = cq_count(cq);
	struct ferryi_cqe *e = &cq->ring[cq_slot(cq, count)];
	e->c = *c;
	e->pi = pi;
	cq->reserved--;
	atomic_store_explicit(&cq->count, count + 1, memory_order_relaxed);
	if (count == 0 && (atomic_load(&cq->ctx->sleepers) ||
			  atomic_load_explicit(&cq->ctx->fd_exported, memory_order_relaxed)))
		ferryi_ctx_wake(cq->ctx);
}

/* Pops up to max entries; the caller holds the ctx lock (entries hold ep refs). */
static int cq_pop_locked(struct ferry_cq *cq, struct ferry_completion *out, int max)
{
	uint32_t count = cq_count(cq);
	int n = 0;
	while (n < max && count > 0) {
		out[n++] = cq->ring[cq->head].c;
		cq->head = cq_slot(cq, 1);
		count--;
	}
	atomic_store_explicit(&cq->count, count, memory_order_relaxed);
	for (int i = 0; i < n; i++)
		ferryi_ep_unref(out[i].ep); /* documented as borrowed from here on */
	return n;
}

uint32_t ferryi_cq_count(struct ferry_cq *cq)
{
	return cq_count(cq);
}

bool ferryi_cqs_nonempty(struct ferry_ctx *ctx)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ctx->cqs, n, t) {
		struct ferry_cq *cq = ferryi_container_of(n, struct ferry_cq, ctx_link);
		if (cq_count(cq))
			return true;
	}
	return false;
}

void ferryi_cq_discard_all(struct ferry_cq *cq)
{
	uint32_t count = cq_count(cq);
	while (count > 0) {
		struct ferryi_cqe *e = &cq->ring[cq->head];
		e->pi->stats.completions_discarded++;
		cq->head = cq_slot(cq, 1);
		count--;
		ferryi_ep_unref(e->c.ep);
	}
	atomic_store_explicit(&cq->count, 0, memory_order_relaxed);
}

void ferryi_cq_free(struct ferry_cq *cq)
{
	if (ferryi_node_linked(&cq->ctx_link))
		ferryi_list_remove(&cq->ctx_link);
	free(cq->ring);
	free(cq);
}

struct ferry_cq *ferry_ctx_cq(struct ferry_ctx *ctx)
{
	return ctx ? ctx->default_cq : NULL;
}

int ferry_cq_create(struct ferry_ctx *ctx, struct ferry_cq **out)
{
	if (!ctx || !out)
		return FERRY_EINVAL;
	struct ferry_cq *cq = calloc(1, sizeof(*cq));
	if (!cq)
		return FERRY_ENOMEM;
	ferryi_ctx_lock(ctx);
	int rc = ferryi_cq_init(ctx, cq, false);
	ferryi_ctx_unlock(ctx);
	if (rc < 0) {
		free(cq);
		return rc;
	}
	*out = cq;
	return 0;
}

int ferry_cq_destroy(struct ferry_cq *cq)
{
	if (!cq || cq->is_default)
		return FERRY_EINVAL;
	struct ferry_ctx *ctx = cq->ctx;
	ferryi_ctx_lock(ctx);
	if (cq_count(cq) || cq->reserved) {
		FERRYI_DBG(ctx, "cq destroy refused: %u completions waiting, %u ops in flight",
			   cq_count(cq), cq->reserved);
		ferryi_ctx_unlock(ctx);
		return FERRY_EBUSY;
	}
	ferryi_cq_free(cq);
	ferryi_ctx_unlock(ctx);
	return 0;
}

int ferry_cq_poll(struct ferry_cq *cq, struct ferry_completion *out, int max)
{
	if (!cq || !out || max <= 0)
		return FERRY_EINVAL;
	struct ferry_ctx *ctx = cq->ctx;
	ferryi_ctx_lock(ctx);
	int n = cq_pop_locked(cq, out, max);
	if (n == 0) {
		ferryi_progress_locked(ctx);
		n = cq_pop_locked(cq, out, max);
	}
	ferryi_ctx_unlock(ctx);
	return n;
}

int ferry_cq_wait(struct ferry_cq *cq, struct ferry_completion *out, int max, int timeout_ms)
{
	if (!cq || !out || max <= 0)
		return FERRY_EINVAL;
	struct ferry_ctx *ctx = cq->ctx;
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
					   : ferryi_now_ns(ctx) + (uint64_t)timeout_ms * 1000000ull;
	int n;
	ferryi_ctx_lock(ctx);
	for (;;) {
		n = cq_pop_locked(cq, out, max);
		if (n)
			break;
		if (deadline != UINT64_MAX && ferryi_now_ns(ctx) >= deadline) {
			/* A last full pass, so that timeout 0 polls. */
			ferryi_progress_locked(ctx);
			n = cq_pop_locked(cq, out, max);
			if (!n)
				n = FERRY_ETIMEDOUT;
			break;
		}
		/*
		 * The fds are read by the sleep's own epoll_wait, which returns at once when
		 * one is ready: a blocking ping-pong costs one epoll_wait per message.
		 */
		ferryi_progress_hooks_locked(ctx, ferryi_now_ns(ctx));
		n = cq_pop_locked(cq, out, max);
		if (n)
			break;
		ferryi_ctx_sleep(ctx, deadline == UINT64_MAX ? -1 : ferryi_ms_until(ctx, deadline),
				 cq);
	}
	ferryi_ctx_unlock(ctx);
	return n;
}

int ferry_cq_fd(struct ferry_cq *cq)
{
	return cq ? ferry_ctx_fd(cq->ctx) : FERRY_EINVAL;
}
