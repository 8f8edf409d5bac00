/*
 * listener.c - listeners: one or more provider listen parts behind one printable
 * address; accepted endpoints go to the accept callback or the accept queue once
 * their handshake has finished.
 */
#include "core_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void listener_close_locked(struct ferry_listener *l);

static int listen_part(struct ferry_listener *l, struct ferryi_prov_inst *pi,
		       const struct ferryi_addr *a)
{
	struct ferryi_listener_part *lp;
	if (l->nparts >= (int)FERRYI_ARRAY_LEN(l->parts))
		return FERRY_EINVAL;
	lp = calloc(1, sizeof(*lp) + pi->prov->listener_size);
	if (!lp)
		return FERRY_ENOMEM;
	lp->listener = l;
	lp->pi = pi;
	int rc = pi->prov->listen(lp, a, lp->uri, sizeof(lp->uri));
	if (rc < 0) {
		free(lp);
		return rc;
	}
	l->parts[l->nparts++] = lp;
	if (!lp->watched)
		l->ctx->listen_unwatched++; /* the poller ticks to accept for it */
	return 0;
}

static void listener_build_addr(struct ferry_listener *l)
{
	/* Best provider first, so a peer that takes the first URI gets the fastest. */
	for (int a = 0; a < l->nparts; a++)
		for (int b = a + 1; b < l->nparts; b++)
			if (l->parts[b]->pi->prov->rank > l->parts[a]->pi->prov->rank) {
				struct ferryi_listener_part *t = l->parts[a];
				l->parts[a] = l->parts[b];
				l->parts[b] = t;
			}
	size_t off = 0;
	l->addr[0] = '\0';
	for (int i = 0; i < l->nparts; i++)
		off += (size_t)snprintf(l->addr + off, sizeof(l->addr) - off, "%s%s",
					i ? "," : "", l->parts[i]->uri);
}

int ferry_listen(struct ferry_ctx *ctx, const char *uris, const struct ferry_listen_attr *attr,
		 struct ferry_listener **out)
{
	struct ferryi_addr list[8];
	int n, rc = 0;

	if (!ctx || !uris || !out)
		return FERRY_EINVAL;
	*out = NULL;
	n = ferryi_addr_parse_list(uris, list, (int)FERRYI_ARRAY_LEN(list));
	if (n < 0) {
		FERRYI_WARN(ctx, "listen: bad URI list '%s'", uris);
		return n;
	}
	struct ferry_listener *l = calloc(1, sizeof(*l));
	if (!l)
		return FERRY_ENOMEM;
	l->ctx = ctx;
	if (attr)
		l->attr = *attr;
	if (!l->attr.max_pending)
		l->attr.max_pending = 1024;
	ferryi_list_init(&l->acceptq);

	ferryi_ctx_lock(ctx);
	ferryi_list_push_back(&ctx->listeners, &l->ctx_link);
	for (int i = 0; i < n && rc == 0; i++) {
		if (strcmp(list[i].scheme, "auto") == 0) {
			for (int p = 0; p < ctx->nprovs; p++) {
				struct ferryi_prov_inst *pi = ctx->provs[p];
				if (pi->prov->id == FERRYI_PROV_OFI)
					continue; /* needs a named fabric: ofi+PROV:// */
				struct ferryi_addr a = list[i];
				snprintf(a.scheme, sizeof(a.scheme), "%s", pi->prov->name);
				int prc = listen_part(l, pi, &a);
				if (prc < 0)
					FERRYI_INFO(ctx, "listen %s: %s not listening: %s", list[i].uri,
						    pi->prov->name, ferry_strerror(prc));
			}
			continue;
		}
		struct ferryi_prov_inst *pi = ferryi_ctx_inst_by_scheme(ctx, list[i].scheme);
		if (!pi) {
			FERRYI_WARN(ctx, "listen %s: provider not available here", list[i].uri);
			rc = FERRY_EPROTONOSUPPORT;
			break;
		}
		rc = listen_part(l, pi, &list[i]);
		if (rc < 0)
			FERRYI_WARN(ctx, "listen %s: %s", list[i].uri, ferry_strerror(rc));
	}
	if (rc == 0 && l->nparts == 0)
		rc = FERRY_EPROTONOSUPPORT;
	if (rc < 0) {
		listener_close_locked(l);
		ferryi_ctx_unlock(ctx);
		return rc;
	}
	listener_build_addr(l);
	FERRYI_INFO(ctx, "listening on %s", l->addr);
	ferryi_poller_kick(ctx); /* it accepts for applications that do not poll */
	ferryi_ctx_unlock(ctx);
	*out = l;
	return 0;
}

int ferry_listener_addr(const struct ferry_listener *l, char *buf, size_t *len)
{
	if (!l || !len || (!buf && *len))
		return FERRY_EINVAL;
	size_t need = strlen(l->addr);
	if (*len <= need) {
		*len = need;
		return FERRY_ENOBUFS;
	}
	memcpy(buf, l->addr, need + 1);
	*len = need;
	return 0;
}

struct ferry_ep *ferryi_ep_accepted(struct ferryi_listener_part *lp, const char *peer_uri)
{
	struct ferry_listener *l = lp->listener;
	struct ferry_ctx *ctx = l->ctx;
	if (l->closed || ctx->destroying)
		return NULL;
	if (l->attr.max_connections && l->live >= l->attr.max_connections) {
		FERRYI_WARN(ctx, "listener %s: refusing %s: max_connections=%u reached", lp->uri,
			    peer_uri, l->attr.max_connections);
		return NULL;
	}
	struct ferry_ep *ep = ferryi_ep_alloc(ctx, lp->pi, FERRYI_EP_ACCEPTING, peer_uri);
	if (!ep)
		return NULL;
	ep->accepted = true;
	ep->listener = l;
	l->live++;
	ferryi_timer_arm(ctx, &ep->connect_timer,
			 ferryi_now_ns(ctx) + (uint64_t)ctx->cfg.handshake_timeout_ms * 1000000ull);
	return ep;
}

void ferryi_listener_ep_connected(struct ferry_ep *ep)
{
	struct ferry_listener *l = ep->listener;
	struct ferry_ctx *ctx = ep->ctx;
	if (!l || l->closed) {
		ferryi_ep_begin_close(ep, FERRY_ECONNABORTED, true, FERRY_EVENT_EP_CLOSED,
				      "listener closed");
		return;
	}
	if (!l->attr.accept_fn && l->acceptq_len >= l->attr.max_pending) {
		FERRYI_WARN(ctx, "listener: accept queue full (%u): dropping %s", l->acceptq_len,
			    ep->peer);
		ferryi_ep_begin_close(ep, FERRY_ENOBUFS, true, FERRY_EVENT_EP_CLOSED,
				      "accept queue full");
		return;
	}
	/* The hold the user will receive. */
	ferryi_ep_ref(ep);
	ep->holds++;
	ep->pi->stats.eps_pinned += ep->holds == 1;
	if (l->attr.accept_fn) {
		struct ferryi_deferred *d = calloc(1, sizeof(*d));
		if (!d) {
			ferryi_ep_begin_close(ep, FERRY_ENOMEM, false, FERRY_EVENT_EP_FAILED,
					      "out of memory");
			ferryi_ep_drop_hold(ep);
			return;
		}
		d->kind = FERRYI_DEFER_ACCEPT;
		d->ep = ep;
		d->listener = l;
		ferryi_list_push_back(&ctx->deferred, &d->link);
		return;
	}
	ferryi_list_push_back(&l->acceptq, &ep->acceptq_link);
	l->acceptq_len++;
	ferryi_ctx_wake(ctx);
}

void ferryi_listener_ep_freed(struct ferry_ep *ep)
{
	ep->listener->live--;
	ep->listener = NULL;
}

int ferry_listener_accept(struct ferry_listener *l, struct ferry_ep **ep, int timeout_ms)
{
	if (!l || !ep)
		return FERRY_EINVAL;
	if (l->attr.accept_fn)
		return FERRY_EINVAL;
	struct ferry_ctx *ctx = l->ctx;
	uint64_t deadline = timeout_ms < 0 ? UINT64_MAX
					   : ferryi_now_ns(ctx) + (uint64_t)timeout_ms * 1000000ull;
	*ep = NULL;
	ferryi_ctx_lock(ctx);
	for (;;) {
		struct ferryi_list_node *n = ferryi_list_pop_front(&l->acceptq);
		if (!n) {
			ferryi_progress_locked(ctx);
			n = ferryi_list_pop_front(&l->acceptq);
		}
		if (n) {
			l->acceptq_len--;
			*ep = ferryi_container_of(n, struct ferry_ep, acceptq_link);
			ferryi_ctx_unlock(ctx);
			return 0;
		}
		if (l->closed) {
			ferryi_ctx_unlock(ctx);
			return FERRY_ESHUTDOWN;
		}
		if (deadline != UINT64_MAX && ferryi_now_ns(ctx) >= deadline) {
			ferryi_ctx_unlock(ctx);
			return FERRY_ETIMEDOUT;
		}
		ferryi_ctx_sleep(ctx, deadline == UINT64_MAX ? -1 : ferryi_ms_until(ctx, deadline),
				 NULL);
	}
}

static void listener_close_locked(struct ferry_listener *l)
{
	struct ferry_ctx *ctx = l->ctx;
	struct ferryi_list_node *n, *t;

	l->closed = true;
	for (int i = 0; i < l->nparts; i++) {
		if (!l->parts[i]->watched)
			ctx->listen_unwatched--;
		l->parts[i]->pi->prov->listen_close(l->parts[i]);
		free(l->parts[i]);
	}
	l->nparts = 0;
	while ((n = ferryi_list_pop_front(&l->acceptq))) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, acceptq_link);
		l->acceptq_len--;
		ep->user_closed = true;
		ferryi_ep_begin_close(ep, FERRY_ECONNABORTED, true, FERRY_EVENT_EP_CLOSED,
				      "listener closed before accept");
		ferryi_ep_drop_hold(ep);
	}
	ferryi_list_foreach_safe(&ctx->deferred, n, t) {
		struct ferryi_deferred *d = ferryi_container_of(n, struct ferryi_deferred, link);
		if (d->kind != FERRYI_DEFER_ACCEPT || d->listener != l)
			continue;
		ferryi_list_remove(&d->link);
		d->ep->user_closed = true;
		ferryi_ep_begin_close(d->ep, FERRY_ECONNABORTED, true, FERRY_EVENT_EP_CLOSED,
				      "listener closed before accept");
		ferryi_ep_drop_hold(d->ep);
		free(d);
	}
	ferryi_list_foreach_safe(&ctx->eps, n, t) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, ctx_link);
		if (ep->listener == l)
			ep->listener = NULL;
	}
	ferryi_list_remove(&l->ctx_link);
	free(l);
}

void ferry_listener_close(struct ferry_listener *l)
{
	if (!l)
		return;
	struct ferry_ctx *ctx = l->ctx;
	ferryi_ctx_lock(ctx);
	listener_close_locked(l);
	ferryi_ctx_unlock(ctx);
}

void ferryi_listeners_fini(struct ferry_ctx *ctx)
{
	struct ferryi_list_node *n;
	while ((n = ferryi_list_first(&ctx->listeners)))
		listener_close_locked(ferryi_container_of(n, struct ferry_listener, ctx_link));
}
