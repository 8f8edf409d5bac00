/*
 * poller.c - the context's poller thread: idle reaping, health probes, timers.
 *
 * Intrusive LRU lists hold every connected endpoint; no tick walks all of them, its
 * cost is the number of endpoints that are due. idle_lru is ordered by the last user
 * traffic (a post, or a user message received): touching moves an endpoint to the
 * tail, so the head is always the next candidate for reaping.
 *
 * Probes come at two cadences, because their purposes differ:
 *   - probe_lru holds the endpoints being watched: an operation in flight (somebody
 *     waits for this peer) or a probe unanswered. They are probed every
 *     probe_interval_ms of silence, and a peer that misses probe_misses probes in a
 *     row is declared dead, failing what is in flight within (misses + 1) intervals.
 *   - keepalive_lru holds the rest, idle whether held or not. Nobody waits on them,
 *     so a keepalive every probe_idle_interval_ms of silence is enough (it finds a
 *     peer that died quietly, and keeps NAT state alive); an unanswered keepalive
 *     moves the endpoint to probe_lru, where the fast cadence decides. Probing 10,000
 *     idle endpoints every second cost a fifth of a core (docs/BENCHMARKS.md).
 * Both lists are ordered by probe_base_ns: input of any kind, a probe sent, or the
 * move between lists (every insertion is at the tail with the current time). An
 * endpoint whose last op finished leaves probe_lru only when its silence is due there
 * (a ping-pong would otherwise move it twice per message); its first keepalive then
 * comes probe_idle_interval_ms after that move.
 *
 * Pinning crosses the wire as a flag on probes and their answers, remembered by the
 * peer (peer_pinned): an endpoint held on one side is not reaped on the other even
 * though keepalives are rare. A hold that the peer has not heard of yet is told at
 * once (ferryi_ep_pin_changed).
 *
 * A pinned endpoint (a user hold or an op in flight) at the head of idle_lru is moved
 * to the tail as if used: it is looked at again one idle period later, never reaped.
 * Probes and their answers refresh the probe lists only, so an endpoint that exchanges
 * only probes is still idle.
 *
 * The poller also runs a progress pass (timers included) when it wakes and the
 * application has not run one for a tick, so probes are answered and acknowledgements
 * read even when the application is not polling.
 */
#include "core_priv.h"

#include <errno.h>
#include <stdio.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

static uint64_t ms_ns(uint64_t ms) { return ms * 1000000ull; }

void ferryi_poller_kick(struct ferry_ctx *ctx)
{
	uint64_t one = 1;
	if (ctx->poller_on)
		(void)!write(ctx->poller_kick_fd, &one, sizeof(one));
}

/* Whether ep belongs on probe_lru (watched) rather than keepalive_lru. */
static bool ep_watched(const struct ferry_ep *ep)
{
	return !ferryi_list_empty(&ep->ops) || ep->probes_unanswered > 0;
}

static void ep_probe_push(struct ferry_ep *ep)
{
	ep->probe_watched = ep_watched(ep);
	ferryi_list_push_back(ep->probe_watched ? &ep->ctx->probe_lru : &ep->ctx->keepalive_lru,
			      &ep->probe_link);
}

/*
 * Re-files ep at the tail of its probe list, its silence counted from now. Every stamp
 * in the lists is from the coarse clock (which never goes back), so they stay sorted.
 */
static void ep_probe_requeue(struct ferry_ep *ep)
{
	ep->probe_base_ns = ferryi_coarse_now_ns(ep->ctx);
	if (ferryi_node_linked(&ep->probe_link)) {
		ferryi_list_remove(&ep->probe_link);
		ep_probe_push(ep);
	}
}

void ferryi_ep_track(struct ferry_ep *ep)
{
	struct ferry_ctx *ctx = ep->ctx;
	uint64_t now = ferryi_coarse_now_ns(ctx);
	ep->last_use_ns = ep->last_rx_ns = ep->probe_base_ns = now;
	ep->probes_unanswered = 0;
	/*
	 * Both sides start out assumed pinned (the dialer holds what it connects, the
	 * acceptor what it accepts); the first probe or answer says how it really is.
	 * Without probes of our own we could never ask, and only the peer's probes tell.
	 */
	ep->peer_pinned = ctx->cfg.probe_interval_ms != 0;
	ep->told_pinned = true;
	ferryi_list_push_back(&ctx->idle_lru, &ep->idle_link);
	ep_probe_push(ep);
	/* The poller may be sleeping far longer than this endpoint's first deadline. */
	if (ferryi_list_first(&ctx->idle_lru) == &ep->idle_link)
		ferryi_poller_kick(ctx);
}

void ferryi_ep_untrack(struct ferry_ep *ep)
{
	if (ferryi_node_linked(&ep->idle_link))
		ferryi_list_remove(&ep->idle_link);
	if (ferryi_node_linked(&ep->probe_link))
		ferryi_list_remove(&ep->probe_link);
}

void ferryi_ep_touch_use(struct ferry_ep *ep)
{
	ep->last_use_ns = ferryi_coarse_now_ns(ep->ctx);
	if (ferryi_node_linked(&ep->idle_link)) {
		ferryi_list_remove(&ep->idle_link);
		ferryi_list_push_back(&ep->ctx->idle_lru, &ep->idle_link);
	}
}

void ferryi_ep_rx_activity(struct ferry_ep *ep)
{
	ep->last_rx_ns = ferryi_coarse_now_ns(ep->ctx);
	ep->probes_unanswered = 0;
	ep_probe_requeue(ep);
}

/*
 * Only the first op moves an endpoint (to probe_lru). When the last op finishes, the
 * endpoint stays there until its silence falls due and the tick moves it
 * (probe_list_tick): a ping-pong empties and refills its op list with every message,
 * and would otherwise move between the lists twice per message.
 */
void ferryi_ep_ops_began(struct ferry_ep *ep)
{
	if (ferryi_node_linked(&ep->probe_link) && !ep->probe_watched && ep_watched(ep))
		ep_probe_requeue(ep);
}

int ferryi_ctx_admission(const struct ferry_ctx *ctx)
{
	return ctx->draining ? FERRY_EDRAINING : 0;
}

/*
 * In use: held by the user or an op in flight. Unread messages do not pin: stray
 * replies nobody will ever receive would keep connections forever (and a peer could
 * pin ours at will). Reaping discards them loudly instead: logged and counted.
 */
static bool ep_pinned(const struct ferry_ep *ep)
{
	return ep->holds > 0 || !ferryi_list_empty(&ep->ops);
}

static void reap_discard_unread(struct ferry_ep *ep)
{
	uint64_t n = 0, bytes = 0;
	struct ferryi_list_node *it, *t;
	ferryi_list_foreach_safe(&ep->unexpected, it, t) {
		struct ferryi_uxmsg *ux = ferryi_container_of(it, struct ferryi_uxmsg, link);
		n++;
		bytes += ux->len;
	}
	if (!n)
		return;
	ep->pi->stats.msgs_discarded += n;
	FERRYI_WARN(ep->ctx, "%s endpoint %s reaped with %llu unread message(s), %llu bytes: "
		    "discarded (nobody posted a matching receive)", ep->pi->prov->name, ep->peer,
		    (unsigned long long)n, (unsigned long long)bytes);
}

static void probe_send(struct ferry_ep *ep);

static void reap_tick(struct ferry_ctx *ctx, uint64_t now, uint64_t *next)
{
	uint64_t timeout = ms_ns((uint64_t)ctx->cfg.idle_timeout_s * 1000);
	struct ferryi_list_node *n;
	if (!timeout)
		return;
	while ((n = ferryi_list_first(&ctx->idle_lru))) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, idle_link);
		uint64_t due = ep->last_use_ns + timeout;
		if (due > now) {
			if (due < *next)
				*next = due;
			return;
		}
		if (ep_pinned(ep) || (ep->peer_pinned && !ctx->cfg.probe_interval_ms)) {
			ferryi_ep_touch_use(ep);
			continue;
		}
		if (ep->peer_pinned) {
			/*
			 * The peer held its side when it last said: ask again before
			 * reaping. A "pinned" answer touches the endpoint (lib/msg.c), an
			 * unpinned one lets the next tick reap it, silence fails it.
			 */
			if (ep->probes_unanswered == 0)
				probe_send(ep);
			uint64_t ask = now + ms_ns(ctx->cfg.probe_interval_ms);
			if (ask < *next)
				*next = ask;
			return;
		}
		FERRYI_INFO(ctx, "%s endpoint %s idle for %u s: reaping", ep->pi->prov->name,
			    ep->peer, ctx->cfg.idle_timeout_s);
		ep->pi->stats.eps_reaped++;
		reap_discard_unread(ep);
		ep->user_closed = true;
		ferryi_ep_begin_close(ep, FERRY_ENOTCONN, true, FERRY_EVENT_EP_REAPED,
				      "idle timeout");
	}
}

/* The pinned flag for a probe or its answer; remembers what the peer was told. */
uint64_t ferryi_ep_pin_flag(struct ferry_ep *ep)
{
	ep->told_pinned = ep_pinned(ep);
	return ep->told_pinned ? FERRYI_PROBE_PINNED : 0;
}

static void probe_send(struct ferry_ep *ep)
{
	ep->probes_unanswered++;
	ep_probe_requeue(ep); /* watched until input arrives */
	if (ferryi_send_ctrl(ep, FERRYI_MSG_PROBE, ferryi_ep_pin_flag(ep),
			     ep->probes_unanswered) == 0)
		ep->pi->stats.probes_sent++;
}

bool ferryi_ep_beat_due(struct ferry_ep *ep, uint64_t told_ns)
{
	uint64_t interval = ms_ns(ep->ctx->cfg.probe_interval_ms);
	return interval && ferryi_coarse_now_ns(ep->ctx) - told_ns >= interval;
}

void ferryi_ep_beat(struct ferry_ep *ep)
{
	if (ferryi_send_ctrl(ep, FERRYI_MSG_PROBE_ACK, ferryi_ep_pin_flag(ep), 0) == 0)
		ep->pi->stats.beats_sent++;
}

void ferryi_ep_pin_changed(struct ferry_ep *ep)
{
	/*
	 * The peer reaps its side after its idle timeout unless it knows we hold ours,
	 * and keepalives may come later than that: tell it now, once per change.
	 */
	if (ep->ctx->cfg.probe_interval_ms && ferryi_node_linked(&ep->probe_link) &&
	    !ep->told_pinned && ep_pinned(ep))
		probe_send(ep);
}

/*
 * Sends the probes due on one list. slack lets a tick take probes that fall due a
 * little later, so that keepalives for thousands of endpoints go out in a few
 * batches rather than one wake-up each.
 */
static void probe_list_tick(struct ferry_ctx *ctx, struct ferryi_list *list, uint64_t interval,
			    uint64_t slack, uint64_t now, uint64_t *next)
{
	struct ferryi_list_node *n;
	while ((n = ferryi_list_first(list))) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, probe_link);
		uint64_t due = ep->probe_base_ns + interval;
		if (due > now + slack) {
			if (due < *next)
				*next = due;
			return;
		}
		if (ep->probe_watched && !ep_watched(ep)) {
			ep_probe_requeue(ep); /* its ops finished since: keepalives from now on */
			continue;
		}
		/* Every peer answers probes, whether or not it sends its own. */
		if (ep->probes_unanswered > 0)
			ep->pi->stats.probes_missed++;
		if (ep->probes_unanswered >= ctx->cfg.probe_misses) {
			char why[96];
			snprintf(why, sizeof(why), "no input for %u probe intervals of %u ms",
				 ep->probes_unanswered, ctx->cfg.probe_interval_ms);
			ep->pi->stats.peers_dead++;
			ferryi_ep_failed(ep, FERRY_EPEERDEAD, why);
			continue;
		}
		probe_send(ep);
	}
}

static void probe_tick(struct ferry_ctx *ctx, uint64_t now, uint64_t *next)
{
	uint64_t interval = ms_ns(ctx->cfg.probe_interval_ms);
	uint64_t idle = ms_ns(ctx->cfg.probe_idle_interval_ms);
	if (!interval)
		return;
	probe_list_tick(ctx, &ctx->probe_lru, interval, 0, now, next);
	if (idle)
		probe_list_tick(ctx, &ctx->keepalive_lru, idle, idle / 16, now, next);
}

#define FERRYI_POLLER_ACCEPT_TICK_MS 10

static bool ctx_handshakes_pending(struct ferry_ctx *ctx)
{
	return ctx->handshaking > 0;
}

/*
 * Whether the application progresses the context itself: it ran a pass since the
 * poller's last look, or less than a tick before it. Counted in passes, not read
 * from the time of the last pass: a pass that drains a long queue of shm copies
 * lasts longer than a tick, and the poller that waited for the lock meanwhile must
 * not take the next pass for itself.
 */
static bool app_progressing(struct ferry_ctx *ctx, uint64_t now)
{
	if (ctx->progress_passes != ctx->poller_seen_passes) {
		ctx->poller_seen_passes = ctx->progress_passes;
		ctx->poller_seen_ns = now;
		return true;
	}
	return now - ctx->poller_seen_ns < ms_ns(FERRYI_POLLER_ACCEPT_TICK_MS);
}

uint64_t ferryi_poller_tick(struct ferry_ctx *ctx)
{
	uint64_t now = ferryi_now_ns(ctx), next = UINT64_MAX;
	bool app_active = app_progressing(ctx, now);
	uint64_t quiet_at = ctx->poller_seen_ns + ms_ns(FERRYI_POLLER_ACCEPT_TICK_MS);
	/*
	 * Progress, timers included, only for applications that are not progressing
	 * themselves: each of their passes runs the timers that are due. Competing for the
	 * lock with a busy-polling thread only adds latency, and timers do work: an ofi
	 * retry timer that fired here drained the port and made a busy stream's shm copies
	 * on this thread, a third runnable thread on a 2-core machine. Timers that fall
	 * due while the application progresses wait until it has been quiet for a tick.
	 */
	if (!app_active) {
		ferryi_progress_epoll_locked(ctx);
		ctx->poller_seen_passes = ctx->progress_passes; /* our own pass */
	}
	reap_tick(ctx, now, &next);
	probe_tick(ctx, now, &next);
	ferryi_process_closes(ctx);
	uint64_t t = ferryi_timers_next(ctx);
	if (app_active && t < quiet_at)
		t = quiet_at;
	if (t < next)
		next = t;
	/*
	 * Accept and finish handshakes even when the application does not poll (a
	 * server thread blocked elsewhere, or client and server on one thread).
	 * While the application does not progress, listeners whose connections show
	 * on a wakes_poller fd need no tick: the poller sleeps on that fd too. While
	 * it progresses, it accepts itself, and the slow tick covers an application
	 * that stopped right after a connection woke us.
	 */
	bool tick_to_accept = app_active ? !ferryi_list_empty(&ctx->listeners)
					 : ctx->listen_unwatched > 0;
	if (tick_to_accept || ctx_handshakes_pending(ctx)) {
		/* While the application progresses itself, a slow tick is enough. */
		uint64_t a = now + ms_ns(app_active ? 10 * FERRYI_POLLER_ACCEPT_TICK_MS
						    : FERRYI_POLLER_ACCEPT_TICK_MS);
		if (a < next)
			next = a;
	}
	/* Answer peers' probes even when the application does not poll. */
	if (ctx->cfg.probe_interval_ms &&
	    (!ferryi_list_empty(&ctx->probe_lru) || !ferryi_list_empty(&ctx->keepalive_lru))) {
		uint64_t p = now + ms_ns(ctx->cfg.probe_interval_ms) / 2;
		if (p < next)
			next = p;
	}
	return next;
}

/*
 * The poller takes the context lock with trylock first: a failure means the
 * application is driving the context right now, and a tick can wait a little rather
 * than contend with a busy-polling thread (each contended hand-off costs a futex wake
 * and a context switch on both sides). After a few failures it waits for the lock,
 * so reaping and probes are late by at most ~100 ms, never starved.
 */
static void poller_lock(struct ferry_ctx *ctx)
{
	for (int tries = 0; tries < 5; tries++) {
		if (pthread_mutex_trylock(&ctx->lock) == 0)
			goto locked;
		if (atomic_load(&ctx->poller_stop_flag))
			break;
		struct timespec ts = { 0, 20 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	pthread_mutex_lock(&ctx->lock);
locked:
	ferryi_ctx_took_lock(ctx);
}

static void *poller_main(void *arg)
{
	struct ferry_ctx *ctx = arg;
	(void)prctl(PR_SET_NAME, "ferry-poller"); /* as top -H and /proc show it */
	poller_lock(ctx);
	bool woke_for_accept = false;
	while (!ctx->poller_stop) {
		uint64_t next = ferryi_poller_tick(ctx);
		/*
		 * A listening socket's edge can come before its connection can be accepted
		 * (seen on loopback: the pass it woke found nothing to accept, the
		 * connection then waited in the backlog while the poller slept for a minute
		 * on an edge that had come and gone). So a tick woken by a connection is
		 * followed by one more a tick later, which accepts what the first missed.
		 */
		if (woke_for_accept) {
			uint64_t again = ferryi_now_ns(ctx) + ms_ns(FERRYI_POLLER_ACCEPT_TICK_MS);
			if (again < next)
				next = again;
			woke_for_accept = false;
		}
		if (!ferryi_list_empty(&ctx->deferred)) {
			/* Callbacks queued by the tick run unlocked, on this thread. */
			ferryi_ctx_unlock(ctx);
			poller_lock(ctx);
			if (ctx->poller_stop)
				break;
		}
		uint64_t now = ferryi_now_ns(ctx);
		uint64_t wait_ns = next == UINT64_MAX ? ms_ns(60000) : next > now ? next - now : 0;
		if (wait_ns == 0)
			continue;
		if (wait_ns > ms_ns(60000))
			wait_ns = ms_ns(60000);
		/*
		 * Kicks are an eventfd, level-triggered: one written between the unlock and
		 * the epoll_wait is not lost. Rounded up: never wake before the deadline.
		 */
		int timeout_ms = (int)((wait_ns + 999999) / 1000000);
		struct epoll_event evs[8];
		bool kicked = false;
		ctx->locked = false;
		pthread_mutex_unlock(&ctx->lock);
		int n = epoll_wait(ctx->poller_epfd, evs, (int)FERRYI_ARRAY_LEN(evs), timeout_ms);
		for (int i = 0; i < n; i++) {
			if (evs[i].data.u64 == FERRYI_POLLER_EV_KICK) {
				uint64_t v;
				(void)!read(ctx->poller_kick_fd, &v, sizeof(v));
				kicked = true;
			} else {
				woke_for_accept = true;
			}
		}
		if (kicked) {
			/* Somebody holding the lock just asked for us: wait for it. */
			pthread_mutex_lock(&ctx->lock);
			ferryi_ctx_took_lock(ctx);
		} else {
			/* Woken by time or a connection: take the lock politely. */
			poller_lock(ctx);
		}
	}
	ferryi_ctx_unlock(ctx);
	return NULL;
}

int ferryi_poller_start(struct ferry_ctx *ctx)
{
	ferryi_list_init(&ctx->idle_lru);
	ferryi_list_init(&ctx->probe_lru);
	ferryi_list_init(&ctx->keepalive_lru);
	if (pthread_create(&ctx->poller, NULL, poller_main, ctx) != 0) {
		FERRYI_ERR(ctx, "cannot start the poller thread");
		return FERRY_ENOMEM;
	}
	ctx->poller_on = true;
	return 0;
}

void ferryi_poller_stop(struct ferry_ctx *ctx)
{
	if (!ctx->poller_on)
		return;
	atomic_store(&ctx->poller_stop_flag, true);
	ferryi_ctx_lock(ctx);
	ctx->poller_stop = true;
	ferryi_poller_kick(ctx);
	ferryi_ctx_unlock(ctx);
	pthread_join(ctx->poller, NULL);
	ctx->poller_on = false;
}

/* ------------------------------------------------------------------ health and drain */

enum ferry_health ferry_ctx_health(struct ferry_ctx *ctx)
{
	ferryi_ctx_lock(ctx);
	enum ferry_health h = ctx->draining ? FERRY_HEALTH_DRAINING : FERRY_HEALTH_SERVING;
	ferryi_ctx_unlock(ctx);
	return h;
}

static bool ctx_ops_in_flight(struct ferry_ctx *ctx)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ctx->eps, n, t) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, ctx_link);
		if (ep->state == FERRYI_EP_CONNECTED && !ferryi_list_empty(&ep->ops))
			return true;
	}
	return false;
}

int ferry_ctx_drain(struct ferry_ctx *ctx, int grace_ms)
{
	if (!ctx)
		return FERRY_EINVAL;
	ferryi_ctx_lock(ctx);
	ctx->draining = true;
	FERRYI_INFO(ctx, "draining: refusing new endpoints, %d ms for operations in flight",
		    grace_ms);
	uint64_t deadline = ferryi_now_ns(ctx) + (uint64_t)(grace_ms > 0 ? grace_ms : 0) * 1000000ull;
	while (ctx_ops_in_flight(ctx) && ferryi_now_ns(ctx) < deadline) {
		ferryi_progress_locked(ctx);
		if (!ctx_ops_in_flight(ctx))
			break;
		int ms = ferryi_ms_until(ctx, deadline);
		ferryi_ctx_sleep(ctx, ms < 5 ? ms : 5, NULL);
	}
	int rc = ctx_ops_in_flight(ctx) ? FERRY_ETIMEDOUT : 0;
	if (rc)
		FERRYI_WARN(ctx, "drain: grace period of %d ms over; failing what is in flight",
			    grace_ms);
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ctx->eps, n, t) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, ctx_link);
		ferryi_ep_begin_close(ep, FERRY_ESHUTDOWN, true, FERRY_EVENT_EP_CLOSED,
				      "context drained");
	}
	ferryi_ctx_unlock(ctx);
	return rc;
}
