/*
 * mr.c - memory regions: registration with every open provider, the key registry
 * that one-sided requests from peers are checked against, and deregistration.
 *
 * A region's key is 64 random bits from the kernel's CSPRNG, unique in the context:
 * it is what the TCP provider puts in rkeys, so it must be unguessable. A
 * deregistered region leaves the registry at once, so no later request can reach it;
 * transfers already in progress on it (target side) are waited for, and after the
 * handshake timeout the endpoints still using it are failed.
 */
#include "core_priv.h"
#include "regcache.h"

#include <stdlib.h>
#include <string.h>

static size_t mr_priv_offset(size_t base)
{
	return (base + 15) & ~(size_t)15;
}

void ferryi_mr_layout_add(struct ferryi_prov_inst *pi)
{
	struct ferry_ctx *ctx = pi->ctx;
	if (!ctx->mr_alloc_size)
		ctx->mr_alloc_size = mr_priv_offset(sizeof(struct ferry_mr));
	pi->mr_priv_off = ctx->mr_alloc_size;
	ctx->mr_alloc_size += mr_priv_offset(pi->prov->mr_size);
}

int ferryi_mr_reg_locked(struct ferry_ctx *ctx, void *addr, size_t len, unsigned access,
			 bool internal, struct ferry_mr **out)
{
	struct ferry_mr *mr;
	int i, rc;

	if (!addr || !len || (access & ~(unsigned)(FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE)))
		return FERRY_EINVAL;
	mr = calloc(1, ctx->mr_alloc_size);
	if (!mr)
		return FERRY_ENOMEM;
	mr->ctx = ctx;
	mr->addr = addr;
	mr->len = len;
	mr->access = access;
	mr->internal = internal;
	atomic_init(&mr->refs, 1);
	ferryi_list_init(&mr->users);
	do
		mr->key = ferryi_ctx_random(ctx);
	while (mr->key == 0 || ferryi_hmap_find(&ctx->mr_by_key, mr->key));
	mr->hnode.key = mr->key;
	mr->generation = ++ctx->mr_generation;
	for (i = 0; i < ctx->nprovs; i++)
		mr->prov_priv[i] = (char *)mr + ctx->provs[i]->mr_priv_off;
	for (i = 0; i < ctx->nprovs; i++) {
		rc = ctx->provs[i]->prov->mr_reg(ctx->provs[i], mr);
		if (rc < 0) {
			FERRYI_LOG(ctx, internal ? FERRY_LOG_DEBUG : FERRY_LOG_WARN,
				   "registering %zu bytes at %p with %s failed: %s", len, addr,
				   ctx->provs[i]->prov->name, ferry_strerror(rc));
			goto err;
		}
	}
	rc = ferryi_hmap_insert(&ctx->mr_by_key, &mr->hnode);
	if (rc < 0)
		goto err;
	ferryi_list_push_back(&ctx->mrs, &mr->ctx_link);
	if (!internal)
		for (int j = 0; j < ctx->nprovs; j++)
			ctx->provs[j]->stats.mrs_registered++;
	*out = mr;
	return 0;
err:
	while (--i >= 0)
		ctx->provs[i]->prov->mr_dereg(ctx->provs[i], mr);
	free(mr);
	return rc;
}

int ferryi_mrs_reg_opened(struct ferryi_prov_inst *pi)
{
	struct ferry_ctx *ctx = pi->ctx;
	struct ferryi_list_node *n, *t;
	struct ferry_mr *failed = NULL;
	int rc = 0;

	ferryi_list_foreach_safe(&ctx->mrs, n, t) {
		struct ferry_mr *mr = ferryi_container_of(n, struct ferry_mr, ctx_link);
		if (mr->dead)
			continue;
		mr->prov_priv[pi->index] = (char *)mr + pi->mr_priv_off;
		rc = pi->prov->mr_reg(pi, mr);
		if (rc < 0) {
			FERRYI_WARN(ctx, "registering %zu bytes at %p with %s failed: %s", mr->len,
				    mr->addr, pi->prov->name, ferry_strerror(rc));
			failed = mr;
			break;
		}
		if (!mr->internal)
			pi->stats.mrs_registered++;
	}
	if (!failed)
		return 0;
	ferryi_list_foreach_safe(&ctx->mrs, n, t) {
		struct ferry_mr *mr = ferryi_container_of(n, struct ferry_mr, ctx_link);
		if (mr == failed)
			break;
		if (!mr->dead)
			pi->prov->mr_dereg(pi, mr);
	}
	return rc;
}

int ferryi_mr_internal_get(struct ferry_ctx *ctx, void *addr, size_t len, unsigned access,
			   bool cacheable, struct ferry_mr **out)
{
	if (cacheable) {
		int rc = ferryi_regcache_get(ctx, addr, len, access, out);
		if (rc <= 0)
			return rc;
	}
	return ferryi_mr_reg_locked(ctx, addr, len, access, true, out);
}

void ferryi_mr_internal_put(struct ferry_mr *mr)
{
	if (mr->cache_ent) {
		ferryi_regcache_put(mr);
		return;
	}
	ferryi_mr_dereg_locked(mr);
	ferryi_mr_unref(mr);
}

void ferryi_mr_ref(struct ferry_mr *mr)
{
	atomic_fetch_add_explicit(&mr->refs, 1, memory_order_relaxed);
}

void ferryi_mr_unref(struct ferry_mr *mr)
{
	if (atomic_fetch_sub_explicit(&mr->refs, 1, memory_order_acq_rel) != 1)
		return;
	ferryi_list_remove(&mr->ctx_link);
	free(mr);
}

/*
 * Fails the endpoints still moving data through a dead region (ctx lock held). Their
 * teardown, where providers give their uses back (ep_close), runs at the end of this
 * call or pass, as every close does: a cached region dies inside a look-up, and that
 * may be a post on one of these endpoints, with its op half built.
 */
static void mr_fail_users(struct ferry_mr *mr, const char *why)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&mr->users, n, t) {
		struct ferryi_mr_use *use = ferryi_container_of(n, struct ferryi_mr_use, link);
		ferryi_ep_failed(use->ep, FERRY_EBADKEY, why);
	}
}

/* Internal regions are deregistered from inside progress: never waits. */
void ferryi_mr_dereg_locked(struct ferry_mr *mr)
{
	struct ferry_ctx *ctx = mr->ctx;
	if (mr->dead)
		return;
	mr->dead = true;
	ferryi_hmap_remove(&ctx->mr_by_key, &mr->hnode);
	if (mr->remote_users)
		mr_fail_users(mr, "region deregistered while a peer was using it");
	for (int i = 0; i < ctx->nprovs; i++)
		ctx->provs[i]->prov->mr_dereg(ctx->provs[i], mr);
	if (!mr->internal)
		for (int j = 0; j < ctx->nprovs; j++)
			ctx->provs[j]->stats.mrs_registered--;
}

int ferry_mr_reg(struct ferry_ctx *ctx, void *addr, size_t len, unsigned access,
		 struct ferry_mr **out)
{
	if (!ctx || !out)
		return FERRY_EINVAL;
	ferryi_ctx_lock(ctx);
	int rc = ferryi_mr_reg_locked(ctx, addr, len, access, false, out);
	ferryi_ctx_unlock(ctx);
	return rc;
}

int ferry_mr_dereg(struct ferry_mr *mr)
{
	if (!mr)
		return FERRY_EINVAL;
	struct ferry_ctx *ctx = mr->ctx;
	ferryi_ctx_lock(ctx);
	if (mr->dead) {
		ferryi_ctx_unlock(ctx);
		return FERRY_EINVAL;
	}
	/* Stop new requests now; let transfers in progress finish for a bounded time. */
	ferryi_hmap_remove(&ctx->mr_by_key, &mr->hnode);
	uint64_t deadline = ferryi_now_ns(ctx) + (uint64_t)ctx->cfg.handshake_timeout_ms * 1000000ull;
	while (mr->remote_users && ferryi_now_ns(ctx) < deadline) {
		ferryi_progress_locked(ctx);
		if (!mr->remote_users)
			break;
		int ms = ferryi_ms_until(ctx, deadline);
		ferryi_ctx_sleep(ctx, ms < 10 ? ms : 10, NULL);
	}
	if (mr->remote_users)
		FERRYI_WARN(ctx, "deregistering %p: %u peer transfers still using it after %u ms; "
			    "failing their endpoints", mr->addr, mr->remote_users,
			    ctx->cfg.handshake_timeout_ms);
	ferryi_mr_dereg_locked(mr);
	ferryi_mr_unref(mr);
	ferryi_ctx_unlock(ctx);
	return 0;
}

void *ferry_mr_addr(const struct ferry_mr *mr)
{
	return mr ? mr->addr : NULL;
}

size_t ferry_mr_len(const struct ferry_mr *mr)
{
	return mr ? mr->len : 0;
}

int ferryi_mr_remote_get(struct ferry_ep *ep, uint64_t key, uint64_t offset, uint64_t len,
			 unsigned access, struct ferryi_mr_use *use, void **ptr)
{
	struct ferry_ctx *ctx = ep->ctx;
	struct ferryi_hnode *h = ferryi_hmap_find(&ctx->mr_by_key, key);
	const char *what = access & FERRY_ACCESS_REMOTE_WRITE ? "write" : "read";
	int rc = 0;

	if (!h) {
		rc = FERRY_EBADKEY;
		FERRYI_WARN(ctx, "%s from %s refused: unknown or deregistered key", what, ep->peer);
		goto refused;
	}
	struct ferry_mr *mr = ferryi_container_of(h, struct ferry_mr, hnode);
	if ((mr->access & access) != access) {
		rc = FERRY_EACCES;
		FERRYI_WARN(ctx, "%s from %s refused: region %p does not allow remote %s", what,
			    ep->peer, mr->addr, what);
		goto refused;
	}
	if (!ferryi_range_ok(mr->len, offset, len)) {
		rc = FERRY_ERANGE;
		FERRYI_WARN(ctx, "%s from %s refused: %llu bytes at offset %llu, region is %zu bytes",
			    what, ep->peer, (unsigned long long)len, (unsigned long long)offset,
			    mr->len);
		goto refused;
	}
	ferryi_mr_remote_hold(ep, mr, use);
	*ptr = (char *)mr->addr + offset;
	return 0;
refused:
	ep->pi->stats.rkey_refusals++;
	use->mr = NULL;
	return rc;
}

void ferryi_mr_remote_hold(struct ferry_ep *ep, struct ferry_mr *mr, struct ferryi_mr_use *use)
{
	use->mr = mr;
	use->ep = ep;
	ferryi_list_push_back(&mr->users, &use->link);
	mr->remote_users++;
	ferryi_mr_ref(mr);
}

void ferryi_mr_remote_put(struct ferryi_mr_use *use)
{
	struct ferry_mr *mr = use->mr;
	if (!mr)
		return;
	ferryi_list_remove(&use->link);
	mr->remote_users--;
	use->mr = NULL;
	ferryi_mr_unref(mr);
}

void ferryi_mrs_fini(struct ferry_ctx *ctx)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ctx->mrs, n, t) {
		struct ferry_mr *mr = ferryi_container_of(n, struct ferry_mr, ctx_link);
		if (!mr->dead)
			ferryi_mr_dereg_locked(mr);
		ferryi_list_remove(&mr->ctx_link);
		free(mr);
	}
}
