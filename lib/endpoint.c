/*
 * endpoint.c - endpoint lifetime, the pool, and ferry_connect().
 *
 * References (ep->refs, changed only under the context lock): one per user hold, per
 * op in flight (and its completion until polled), per deferred callback, one while
 * pooled, one while in an accept queue, and one for the provider until it says
 * ferryi_ep_gone(). An endpoint is freed when the count reaches zero, which implies the
 * provider is done with it. "holds" counts the user's pins only: a pooled endpoint
 * with no hold and no op in flight is idle.
 *
 * Closing is two-phase: ferryi_ep_begin_close() marks the endpoint closed at once (new
 * posts fail, input is refused, it leaves the pool) and queues it; the teardown proper
 * (provider ep_close, failing the core's ops) runs from ferryi_process_closes() at the
 * end of the progress pass or API call, never inside a provider's own call stack.
 */
#include "core_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ep_free(struct ferry_ep *ep)
{
	struct ferry_ctx *ctx = ep->ctx;
	ferryi_ep_drop_unexpected(ep, "the endpoint was released");
	ferryi_timer_cancel(ctx, &ep->connect_timer);
	if (ep->listener)
		ferryi_listener_ep_freed(ep);
	ferryi_list_remove(&ep->ctx_link);
	ep->pi->stats.eps_open--;
	ctx->ep_count--;
	free(ep);
}

void ferryi_ep_ref(struct ferry_ep *ep)
{
	atomic_fetch_add_explicit(&ep->refs, 1, memory_order_relaxed);
}

void ferryi_ep_unref(struct ferry_ep *ep)
{
	if (atomic_fetch_sub_explicit(&ep->refs, 1, memory_order_acq_rel) == 1)
		ep_free(ep);
}

static void ep_connect_timeout(struct ferryi_timer *t)
{
	struct ferry_ep *ep = ferryi_container_of(t, struct ferry_ep, connect_timer);
	ferryi_ep_failed(ep, FERRY_ETIMEDOUT,
			 ep->state == FERRYI_EP_ACCEPTING ? "handshake timed out"
							  : "connect timed out");
}

struct ferry_ep *ferryi_ep_alloc(struct ferry_ctx *ctx, struct ferryi_prov_inst *pi,
				 enum ferryi_ep_state state, const char *peer)
{
	if (ctx->ep_count >= ctx->cfg.max_endpoints) {
		FERRYI_WARN(ctx, "endpoint to %s refused: FERRY_MAX_ENDPOINTS=%u reached", peer,
			    ctx->cfg.max_endpoints);
		return NULL;
	}
	struct ferry_ep *ep = calloc(1, sizeof(*ep) + pi->prov->ep_size);
	if (!ep)
		return NULL;
	ep->ctx = ctx;
	ep->pi = pi;
	ep->state = state;
	atomic_init(&ep->refs, 1); /* the provider's */
	ep->incarnation = ++ctx->incarnation;
	snprintf(ep->peer, sizeof(ep->peer), "%s", peer);
	/* What it runs on, as its URI names it: "tcp", "verbs", "ofi+shm". */
	size_t slen = strcspn(peer, ":");
	if (!strstr(peer, "://") || slen == 0 || slen >= sizeof(ep->scheme))
		snprintf(ep->scheme, sizeof(ep->scheme), "%s", pi->prov->name);
	else
		snprintf(ep->scheme, sizeof(ep->scheme), "%.*s", (int)slen, peer);
	ferryi_list_init(&ep->ops);
	ferryi_list_init(&ep->recvs);
	ferryi_list_init(&ep->unexpected);
	ferryi_list_init(&ep->credit_wait);
	ferryi_list_init(&ep->rndv_acking);
	ferryi_node_init(&ep->pool_link);
	ferryi_node_init(&ep->acceptq_link);
	ferryi_node_init(&ep->idle_link);
	ferryi_node_init(&ep->probe_link);
	ferryi_timer_init(&ep->connect_timer, ep_connect_timeout);
	ep->last_rx_ns = ep->last_use_ns = ferryi_coarse_now_ns(ctx);
	ferryi_list_push_back(&ctx->eps, &ep->ctx_link);
	ctx->ep_count++;
	if (ctx->handshaking++ == 0)
		ferryi_poller_kick(ctx);
	pi->stats.eps_open++;
	return ep;
}

static void pool_remove(struct ferry_ep *ep)
{
	if (!ep->pooled)
		return;
	ep->pooled = false;
	ferryi_list_remove(&ep->pool_link);
	ep->ctx->pool_count--;
	ep->pi->stats.eps_pooled--;
	ferryi_ep_unref(ep);
}

void ferryi_ep_begin_close(struct ferry_ep *ep, int status, bool graceful,
			   enum ferry_event_type ev, const char *detail)
{
	struct ferry_ctx *ctx = ep->ctx;
	/*
	 * Not re-entrant: the goodbye below may fail at once and report the failure
	 * through ferryi_ep_failed(), which lands here again. The first close wins.
	 */
	if (ep->state == FERRYI_EP_CLOSED || ep->closing)
		return;
	ep->closing = true;
	bool was_connected = ep->state == FERRYI_EP_CONNECTED;
	if (!was_connected)
		ctx->handshaking--;
	if (graceful && was_connected)
		(void)ferryi_send_ctrl(ep, FERRYI_MSG_GOODBYE, (uint64_t)(int64_t)status, 0);
	ep->state = FERRYI_EP_CLOSED;
	ep->status = status;
	ferryi_timer_cancel(ctx, &ep->connect_timer);
	ferryi_ep_untrack(ep);
	pool_remove(ep);
	if (ev == FERRY_EVENT_EP_FAILED)
		ep->pi->stats.eps_failed++;
	else
		ep->pi->stats.eps_closed++;
	ferryi_ep_ref(ep); /* the closing list's */
	ferryi_list_push_back(&ctx->closing, &ep->close_link);
	if (was_connected)
		ferryi_defer_event(ctx, ep, ev, status, detail);
	if (atomic_load(&ctx->sleepers))
		ferryi_ctx_wake(ctx);
	(void)graceful;
}

void ferryi_process_closes_slow(struct ferry_ctx *ctx)
{
	struct ferryi_list_node *n;
	while ((n = ferryi_list_pop_front(&ctx->closing))) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, close_link);
		bool by_us = ep->user_closed || ctx->destroying;
		int reason = by_us ? FERRY_ECANCELED : ep->status;
		ep->close_reason = reason;
		ep->pi->prov->ep_close(ep, reason, ep->user_closed);
		ferryi_ep_fail_core_ops(ep, reason, !by_us);
		ferryi_ep_unref(ep);
	}
}

/* ------------------------------------------------------------------ upcalls */

void ferryi_ep_connected(struct ferry_ep *ep, const struct ferryi_peer_info *info)
{
	struct ferry_ctx *ctx = ep->ctx;
	if (ep->state == FERRYI_EP_CLOSED)
		return;
	ep->peer_info = *info;
	if (ep->peer_info.eager_max < 64)
		ep->peer_info.eager_max = 64;
	ep->tx_credit = info->rx_credit ? info->rx_credit : UINT64_MAX;
	ferryi_timer_cancel(ctx, &ep->connect_timer);
	bool accepted = ep->state == FERRYI_EP_ACCEPTING;
	ep->state = FERRYI_EP_CONNECTED;
	ctx->handshaking--;
	ep->last_rx_ns = ep->last_use_ns = ferryi_coarse_now_ns(ctx);
	FERRYI_DBG(ctx, "%s endpoint %s %s (peer idle %u ms, eager %llu, max frame %llu)",
		   ep->pi->prov->name, accepted ? "accepted from" : "connected to", ep->peer,
		   info->idle_timeout_ms, (unsigned long long)info->eager_max,
		   (unsigned long long)info->max_frame);
	ferryi_ep_track(ep);
	ferryi_defer_event(ctx, ep, FERRY_EVENT_EP_CONNECTED, 0, ep->peer);
	/* A connect may sleep in epoll while another thread (the poller) read the reply. */
	if (atomic_load(&ctx->sleepers))
		ferryi_ctx_wake(ctx);
	if (accepted) {
		ep->pi->stats.eps_accepted++;
		ferryi_listener_ep_connected(ep);
	} else {
		ep->pi->stats.eps_created++;
	}
}

void ferryi_ep_failed(struct ferry_ep *ep, int status, const char *why)
{
	if (ep->state == FERRYI_EP_CLOSED)
		return;
	if (status >= 0)
		status = FERRY_EIO;
	if (status == FERRY_EPROTO || status == FERRY_EVERSION)
		ep->pi->stats.protocol_errors++;
	FERRYI_LOG(ep->ctx, ep->state == FERRYI_EP_CONNECTED ? FERRY_LOG_WARN : FERRY_LOG_INFO,
		   "%s endpoint %s failed: %s (%s)", ep->pi->prov->name, ep->peer,
		   why ? why : "", ferry_strerror(status));
	ferryi_ep_begin_close(ep, status, false, FERRY_EVENT_EP_FAILED, why);
}

void ferryi_ep_gone(struct ferry_ep *ep)
{
	if (ep->provider_gone)
		return;
	ep->provider_gone = true;
	ferryi_ep_complete_gone_waits(ep);
	ferryi_ep_unref(ep);
}

/* ------------------------------------------------------------------ public */

void ferry_ep_hold(struct ferry_ep *ep)
{
	if (!ep)
		return;
	ferryi_ctx_lock(ep->ctx);
	ferryi_ep_ref(ep);
	ep->holds++;
	ep->pi->stats.eps_pinned += ep->holds == 1;
	ferryi_ep_pin_changed(ep);
	ferryi_ctx_unlock(ep->ctx);
}

/* Gives back one user hold (ctx lock held). A private endpoint nobody holds closes. */
void ferryi_ep_drop_hold(struct ferry_ep *ep)
{
	if (ep->holds == 0) {
		FERRYI_ERR(ep->ctx, "endpoint %s: release without a hold (ignored)", ep->peer);
		return;
	}
	ep->holds--;
	ep->pi->stats.eps_pinned -= ep->holds == 0;
	if (ep->holds == 0 && !ep->pooled && !ep->accepted && ep->state != FERRYI_EP_CLOSED) {
		ep->user_closed = true;
		ferryi_ep_begin_close(ep, FERRY_ENOTCONN, true, FERRY_EVENT_EP_CLOSED,
				      "last reference released");
	}
	ferryi_ep_unref(ep);
}

void ferry_ep_release(struct ferry_ep *ep)
{
	if (!ep)
		return;
	struct ferry_ctx *ctx = ep->ctx;
	ferryi_ctx_lock(ctx);
	ferryi_ep_drop_hold(ep);
	ferryi_ctx_unlock(ctx);
}

void ferry_ep_close(struct ferry_ep *ep)
{
	if (!ep)
		return;
	struct ferry_ctx *ctx = ep->ctx;
	ferryi_ctx_lock(ctx);
	if (ep->state != FERRYI_EP_CLOSED) {
		ep->user_closed = true;
		ferryi_ep_begin_close(ep, FERRY_ENOTCONN, true, FERRY_EVENT_EP_CLOSED,
				      "closed by the user");
	} else {
		/* Closed by the peer or a failure: what it had received is not wanted. */
		ferryi_ep_drop_unexpected(ep, "closed by the user");
	}
	ferryi_ep_drop_hold(ep);
	ferryi_ctx_unlock(ctx);
}

const char *ferry_ep_provider(const struct ferry_ep *ep)
{
	return ep ? ep->scheme : NULL;
}

const char *ferry_ep_peer(const struct ferry_ep *ep)
{
	return ep ? ep->peer : NULL;
}

int ferry_ep_status(const struct ferry_ep *ep)
{
	if (!ep)
		return FERRY_EINVAL;
	ferryi_ctx_lock(ep->ctx);
	int st = ep->state == FERRYI_EP_CLOSED ? (ep->status < 0 ? ep->status : FERRY_ENOTCONN)
					       : 0;
	ferryi_ctx_unlock(ep->ctx);
	return st;
}

/* ------------------------------------------------------------------ connect */

/*
 * A pooled endpoint the peer is about to reap is not handed out: its goodbye may
 * already be on the way. Such an endpoint is closed here instead (idle, so nothing
 * in flight), and the caller connects afresh.
 */
static bool pool_ep_stale(struct ferry_ep *ep, uint64_t now)
{
	uint64_t peer_idle = (uint64_t)ep->peer_info.idle_timeout_ms * 1000000ull;
	if (!peer_idle || ep->holds || !ferryi_list_empty(&ep->ops))
		return false;
	return now - ep->last_use_ns >= peer_idle - peer_idle / 10;
}

static struct ferry_ep *pool_find(struct ferry_ctx *ctx, const char *key)
{
	struct ferryi_list_node *n, *t;
	uint64_t now = ferryi_now_ns(ctx);
	ferryi_list_foreach_safe(&ctx->pool, n, t) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, pool_link);
		if (ep->state != FERRYI_EP_CONNECTED || strcmp(ep->pool_key, key) != 0)
			continue;
		if (pool_ep_stale(ep, now)) {
			FERRYI_INFO(ctx, "pooled %s is close to the peer's idle timeout: reconnecting",
				    ep->peer);
			ep->pi->stats.eps_reaped++;
			ep->user_closed = true;
			ferryi_ep_begin_close(ep, FERRY_ENOTCONN, true, FERRY_EVENT_EP_REAPED,
					      "peer's idle timeout is near");
			continue;
		}
		return ep;
	}
	return NULL;
}

static void pool_insert(struct ferry_ep *ep, const char *key)
{
	struct ferry_ctx *ctx = ep->ctx;
	snprintf(ep->pool_key, sizeof(ep->pool_key), "%s", key);
	ep->pooled = true;
	ferryi_ep_ref(ep);
	ferryi_list_push_back(&ctx->pool, &ep->pool_link);
	ctx->pool_count++;
	ep->pi->stats.eps_pooled++;
	/* Past capacity, close the least recently used idle endpoint. */
	if (ctx->pool_count > ctx->cfg.pool_max) {
		struct ferryi_list_node *n, *t;
		ferryi_list_foreach_safe(&ctx->pool, n, t) {
			struct ferry_ep *old = ferryi_container_of(n, struct ferry_ep, pool_link);
			if (old != ep && old->holds == 0 && ferryi_list_empty(&old->ops)) {
				FERRYI_INFO(ctx, "pool full (FERRY_POOL_MAX=%u): closing idle %s",
					    ctx->cfg.pool_max, old->peer);
				old->user_closed = true;
				ferryi_ep_begin_close(old, FERRY_ENOTCONN, true,
						      FERRY_EVENT_EP_REAPED, "pool capacity");
				break;
			}
		}
	}
}

static int pool_key(const char *uri, char *key, size_t len)
{
	struct ferryi_addr list[8];
	int n = ferryi_addr_parse_list(uri, list, (int)FERRYI_ARRAY_LEN(list));
	size_t off = 0;
	if (n < 0)
		return n;
	key[0] = '\0';
	for (int i = 0; i < n; i++) {
		int w = snprintf(key + off, len - off, "%s%s", i ? "," : "", list[i].uri);
		if (w < 0 || (size_t)w >= len - off)
			return FERRY_EINVAL;
		off += (size_t)w;
	}
	return 0;
}

/* Candidate URIs in order, after auto:// expansion and the fallback policy. */
static int connect_candidates(struct ferry_ctx *ctx, const char *uri, struct ferryi_addr *out,
			      int max)
{
	struct ferryi_addr list[8];
	int n = ferryi_addr_parse_list(uri, list, (int)FERRYI_ARRAY_LEN(list));
	int count = 0;
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		if (strcmp(list[i].scheme, "auto") == 0) {
			/* Every open provider, best rank first. */
			int order[FERRYI_MAX_PROVS], m = 0;
			for (int p = 0; p < ctx->nprovs; p++)
				order[m++] = p;
			for (int a = 0; a < m; a++)
				for (int b = a + 1; b < m; b++)
					if (ctx->provs[order[b]]->prov->rank >
					    ctx->provs[order[a]]->prov->rank) {
						int tmp = order[a];
						order[a] = order[b];
						order[b] = tmp;
					}
			for (int a = 0; a < m && count < max; a++) {
				const struct ferryi_provider *p = ctx->provs[order[a]]->prov;
				if (p->id == FERRYI_PROV_OFI)
					continue; /* ofi needs a named fabric: ofi+PROV:// */
				out[count] = list[i];
				snprintf(out[count].scheme, sizeof(out[count].scheme), "%s", p->name);
				snprintf(out[count].uri, sizeof(out[count].uri), "%s://%s%s%s:%u",
					 p->name, strchr(list[i].host, ':') ? "[" : "", list[i].host,
					 strchr(list[i].host, ':') ? "]" : "", list[i].port);
				count++;
			}
		} else if (count < max) {
			out[count++] = list[i];
		}
	}
	return count;
}

/*
 * Whether a scheme is RDMA for the fallback policy. A provider may serve several
 * fabrics (ofi+tcp, ofi+verbs): then the fabric named in the scheme decides.
 */
static bool scheme_is_rdma(struct ferry_ctx *ctx, const char *scheme)
{
	const char *plus = strchr(scheme, '+');
	if (plus)
		return strncmp(plus + 1, "verbs", 5) == 0;
	struct ferryi_prov_inst *pi = ferryi_ctx_inst_by_scheme(ctx, scheme);
	if (pi)
		return pi->prov->caps & FERRYI_CAP_RDMA;
	return strcmp(scheme, "verbs") == 0;
}

/*
 * One attempt on one address; returns 0 with *out held, or an error. The caller's hold
 * exists from the start, so the endpoint is pinned (never reaped) between its
 * handshake and the moment the caller wakes up to take it; the deadline is armed
 * before the provider starts, so a handshake it finishes inside connect() disarms it.
 */
static int connect_once(struct ferry_ctx *ctx, struct ferryi_prov_inst *pi,
			const struct ferryi_addr *a, uint64_t deadline, struct ferry_ep **out)
{
	struct ferry_ep *ep = ferryi_ep_alloc(ctx, pi, FERRYI_EP_CONNECTING, a->uri);
	if (!ep)
		return ctx->ep_count >= ctx->cfg.max_endpoints ? FERRY_ENOBUFS : FERRY_ENOMEM;
	ferryi_ep_ref(ep);
	ep->holds = 1;
	pi->stats.eps_pinned++;
	ferryi_timer_arm(ctx, &ep->connect_timer, deadline);
	int rc = pi->prov->connect(ep, a);
	if (rc < 0) {
		ferryi_timer_cancel(ctx, &ep->connect_timer);
		if (ep->state != FERRYI_EP_CLOSED) {
			ep->state = FERRYI_EP_CLOSED;
			ctx->handshaking--;
		}
		ep->status = rc;
		ep->provider_gone = true;
		ferryi_ep_drop_hold(ep);
		ferryi_ep_unref(ep); /* the provider's: it never took the endpoint */
		return rc;
	}
	while (ep->state == FERRYI_EP_CONNECTING) {
		ferryi_progress_locked(ctx);
		if (ep->state != FERRYI_EP_CONNECTING)
			break;
		ferryi_ctx_sleep(ctx, ferryi_ms_until(ctx, deadline), NULL);
	}
	if (ep->state != FERRYI_EP_CONNECTED) {
		rc = ep->status < 0 ? ep->status : FERRY_ECONNABORTED;
		ferryi_ep_drop_hold(ep);
		return rc;
	}
	*out = ep;
	return 0;
}

static bool connect_retryable(int rc)
{
	return rc == FERRY_ECONNREFUSED || rc == FERRY_ETIMEDOUT || rc == FERRY_ECONNRESET ||
	       rc == FERRY_ECONNABORTED || rc == FERRY_EHOSTUNREACH || rc == FERRY_ENETUNREACH ||
	       rc == FERRY_EDRAINING;
}

static uint64_t backoff_ns(struct ferry_ctx *ctx, uint32_t attempt)
{
	double ms = ctx->cfg.reconnect_initial_ms;
	for (uint32_t i = 1; i < attempt && ms < ctx->cfg.reconnect_max_ms; i++)
		ms *= ctx->cfg.reconnect_multiplier;
	if (ms > ctx->cfg.reconnect_max_ms)
		ms = ctx->cfg.reconnect_max_ms;
	/* uniform in [1 - jitter, 1 + jitter] */
	double u = (double)(ferryi_ctx_random(ctx) >> 11) / (double)(1ull << 53);
	ms *= 1.0 + ctx->cfg.reconnect_jitter * (2.0 * u - 1.0);
	return (uint64_t)(ms * 1e6);
}

int ferry_connect(struct ferry_ctx *ctx, const char *uri, const struct ferry_connect_attr *attr,
		  struct ferry_ep **out)
{
	struct ferryi_addr cand[16];
	int rc, n;

	if (!ctx || !uri || !out)
		return FERRY_EINVAL;
	*out = NULL;
	unsigned flags = attr ? attr->flags : 0;
	int timeout_ms = attr && attr->timeout_ms > 0 ? attr->timeout_ms
						      : (int)ctx->cfg.connect_timeout_ms;

	/* The pool knows endpoints by the normalised URI list ("TCP://h:1" = "tcp://h:1"). */
	char key[FERRYI_URI_MAX];
	rc = pool_key(uri, key, sizeof(key));
	if (rc < 0) {
		FERRYI_WARN(ctx, "connect: bad URI '%s'", uri);
		return rc;
	}
	ferryi_ctx_lock(ctx);
	if (!(flags & FERRY_CONNECT_PRIVATE)) {
		struct ferry_ep *ep = pool_find(ctx, key);
		if (ep) {
			/* Look-up and hold in one step, under the lock the reaper needs too. */
			ferryi_ep_ref(ep);
			ep->pi->stats.eps_pinned += ++ep->holds == 1;
			ferryi_list_remove(&ep->pool_link);
			ferryi_list_push_back(&ctx->pool, &ep->pool_link);
			ferryi_ep_touch_use(ep);
			ferryi_ep_pin_changed(ep);
			ferryi_ctx_unlock(ctx);
			*out = ep;
			return 0;
		}
	}
	n = connect_candidates(ctx, uri, cand, (int)FERRYI_ARRAY_LEN(cand));
	if (n < 0) {
		ferryi_ctx_unlock(ctx);
		FERRYI_WARN(ctx, "connect: bad URI '%s'", uri);
		return n;
	}

	uint64_t deadline = ferryi_now_ns(ctx) + (uint64_t)timeout_ms * 1000000ull;
	int last = FERRY_EPROTONOSUPPORT, tried = 0;
	struct ferry_stats *fallback_stats = NULL;
	for (int i = 0; i < n; i++) {
		const struct ferryi_addr *a = &cand[i];
		bool rdma = scheme_is_rdma(ctx, a->scheme);
		if (ctx->cfg.fallback == FERRY_FALLBACK_TCP_ONLY && strcmp(a->scheme, "tcp") != 0) {
			FERRYI_INFO(ctx, "connect: skipping %s (FERRY_FALLBACK=tcp)", a->uri);
			continue;
		}
		if (ctx->cfg.fallback == FERRY_FALLBACK_REQUIRE && !rdma) {
			FERRYI_WARN(ctx, "connect: not falling back to %s (FERRY_FALLBACK=require)",
				    a->uri);
			continue;
		}
		uint64_t t_open = ferryi_now_ns(ctx);
		struct ferryi_prov_inst *pi = ferryi_ctx_inst_by_scheme(ctx, a->scheme);
		deadline += ferryi_now_ns(ctx) - t_open; /* opening a provider is not connecting */
		if (!pi) {
			FERRYI_LOG(ctx, n > 1 ? FERRY_LOG_WARN : FERRY_LOG_INFO,
				   "connect: provider for %s is not available here", a->uri);
			last = FERRY_EPROTONOSUPPORT;
			continue;
		}
		if (tried > 0) {
			pi->stats.fallbacks++;
			fallback_stats = &pi->stats;
			FERRYI_WARN(ctx, "connect: falling back to %s after: %s", a->uri,
				    ferry_strerror(last));
			ferryi_defer_event(ctx, NULL, FERRY_EVENT_FALLBACK, last, a->uri);
		}
		tried++;
		for (uint32_t attempt = 1;; attempt++) {
			struct ferry_ep *ep = NULL;
			rc = connect_once(ctx, pi, a, deadline, &ep);
			if (rc == 0) {
				if (!(flags & FERRY_CONNECT_PRIVATE))
					pool_insert(ep, key);
				if (attempt > 1)
					pi->stats.reconnects++;
				ferryi_ctx_unlock(ctx);
				*out = ep;
				return 0;
			}
			last = rc;
			pi->stats.connect_failures++;
			if (!connect_retryable(rc) || attempt >= ctx->cfg.reconnect_attempts)
				break;
			uint64_t wait = backoff_ns(ctx, attempt);
			if (ferryi_now_ns(ctx) + wait >= deadline)
				break;
			FERRYI_INFO(ctx, "connect %s: %s; retry %u in %llu ms", a->uri,
				    ferry_strerror(rc), attempt + 1,
				    (unsigned long long)(wait / 1000000));
			uint64_t until = ferryi_now_ns(ctx) + wait;
			while (ferryi_now_ns(ctx) < until) {
				ferryi_ctx_sleep(ctx, ferryi_ms_until(ctx, until), NULL);
				ferryi_progress_locked(ctx);
			}
		}
		if (ferryi_now_ns(ctx) >= deadline)
			break;
	}
	(void)fallback_stats;
	ferryi_ctx_unlock(ctx);
	FERRYI_WARN(ctx, "connect %s failed: %s", uri, ferry_strerror(last));
	return last;
}
