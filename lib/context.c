/*
 * context.c - the context: lock, provider instances, the epoll set behind
 * ferry_ctx_fd(), progress, deferred callbacks, creation and destruction.
 *
 * Progress is one pass under the context lock: fresh epoll events (dispatched to
 * provider poll handles), provider busy-poll hooks, due timers, then pending endpoint
 * teardowns. Threads that sleep do so in epoll_wait without the lock and dispatch
 * what it returned once they hold the lock again, unless a handle left the epoll set
 * meanwhile (poll_gen): then they discard it, so a handle freed by another thread is
 * never touched (ferryi_ctx_sleep).
 */
#include "core_priv.h"
#include "regcache.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------ lock */

void ferryi_ctx_lock(struct ferry_ctx *ctx)
{
	pthread_mutex_lock(&ctx->lock);
	ferryi_ctx_took_lock(ctx);
}

static void ctx_run_deferred(struct ferry_ctx *ctx, struct ferryi_list *todo)
{
	struct ferryi_list_node *n;
	while ((n = ferryi_list_pop_front(todo))) {
		struct ferryi_deferred *d = ferryi_container_of(n, struct ferryi_deferred, link);
		if (d->kind == FERRYI_DEFER_EVENT) {
			if (ctx->cfg.event_fn) {
				d->ev.ep = d->ep;
				d->ev.detail = d->detail;
				ctx->cfg.event_fn(ctx, &d->ev, ctx->cfg.event_arg);
			}
			if (d->ep) {
				ferryi_ctx_lock(ctx);
				ferryi_ep_unref(d->ep);
				ferryi_process_closes(ctx);
				ctx->locked = false; /* deferrals queued here run at the next unlock */
				pthread_mutex_unlock(&ctx->lock);
			}
		} else {
			/* The accept callback receives the hold the deferral carried. */
			d->listener->attr.accept_fn(d->listener, d->ep, d->listener->attr.accept_arg);
		}
		free(d);
	}
}

void ferryi_ctx_unlock(struct ferry_ctx *ctx)
{
	struct ferryi_list todo;

	ferryi_process_closes(ctx);
	ferryi_list_init(&todo);
	if (!ferryi_list_empty(&ctx->deferred) && !ctx->destroying) {
		todo = ctx->deferred;
		todo.head.next->prev = &todo.head;
		todo.head.prev->next = &todo.head;
		ferryi_list_init(&ctx->deferred);
	}
	ctx->locked = false;
	pthread_mutex_unlock(&ctx->lock);
	if (!ferryi_list_empty(&todo))
		ctx_run_deferred(ctx, &todo);
}

void ferryi_ctx_assert_locked(const struct ferry_ctx *ctx)
{
	(void)ctx;
	assert(ctx->locked && pthread_equal(ctx->lock_owner, pthread_self()));
}

enum ferry_log_level ferryi_ctx_log_level(const struct ferry_ctx *ctx)
{
	return ctx->cfg.log_level;
}

const struct ferry_config *ferry_ctx_config(const struct ferry_ctx *ctx)
{
	return &ctx->cfg;
}

/* ------------------------------------------------------------------ time */

static uint64_t ctx_clock_ns(const struct ferry_ctx *ctx, clockid_t id)
{
	struct timespec ts;
	if (ctx && ctx->clock_fn)
		return ctx->clock_fn(ctx->clock_arg);
	clock_gettime(id, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t ferryi_now_ns(const struct ferry_ctx *ctx)
{
	return ctx_clock_ns(ctx, CLOCK_MONOTONIC);
}

uint64_t ferryi_coarse_now_ns(struct ferry_ctx *ctx)
{
	if (!ctx->hold_coarse_ns)
		ctx->hold_coarse_ns = ctx_clock_ns(ctx, CLOCK_MONOTONIC_COARSE);
	return ctx->hold_coarse_ns;
}

uint64_t ferryi_ctx_pass_ns(const struct ferry_ctx *ctx)
{
	return ctx->last_progress_ns;
}

void ferryi_ctx_set_clock(struct ferry_ctx *ctx, uint64_t (*fn)(void *arg), void *arg)
{
	ferryi_ctx_lock(ctx);
	ctx->clock_fn = fn;
	ctx->clock_arg = arg;
	ferryi_ctx_unlock(ctx);
}

int ferryi_ms_until(struct ferry_ctx *ctx, uint64_t deadline_ns)
{
	uint64_t now = ferryi_now_ns(ctx);
	if (deadline_ns <= now)
		return 0;
	uint64_t ms = (deadline_ns - now + 999999) / 1000000;
	return ms > 60000 ? 60000 : (int)ms;
}

/* ------------------------------------------------------------------ poll handles */

static void ctx_unpark(struct ferry_ctx *ctx);

int ferryi_poll_add(struct ferry_ctx *ctx, struct ferryi_poll_handle *h)
{
	struct epoll_event ev = { .events = h->events, .data.ptr = h };
	if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0) {
		int err = -errno;
		FERRYI_ERR(ctx, "epoll_ctl(ADD, fd %d): %s", h->fd, strerror(errno));
		return err;
	}
	if (!h->cold) {
		ctx->hot_handles++;
		ferryi_list_push_back(&ctx->hot, &h->hot_link);
	}
	if (h->wakes_poller) {
		/* Edge-triggered: one wake-up per arrival, not one per look until accepted. */
		struct epoll_event pev = { .events = EPOLLIN | EPOLLET,
					   .data.u64 = FERRYI_POLLER_EV_ACCEPT };
		if (epoll_ctl(ctx->poller_epfd, EPOLL_CTL_ADD, h->fd, &pev) < 0) {
			/* The poller's tick still accepts for applications that do not poll. */
			FERRYI_WARN(ctx, "epoll_ctl(ADD, fd %d) for the poller: %s", h->fd,
				    strerror(errno));
			h->wakes_poller = false;
		}
	}
	return 0;
}

int ferryi_poll_mod(struct ferry_ctx *ctx, struct ferryi_poll_handle *h, uint32_t events)
{
	if (h->events == events)
		return 0;
	if (h->parked) {
		h->events = events;
		if (events & EPOLLOUT)
			ctx_unpark(ctx); /* only epoll tells writability */
		return 0;
	}
	struct epoll_event ev = { .events = events, .data.ptr = h };
	if (epoll_ctl(ctx->epfd, EPOLL_CTL_MOD, h->fd, &ev) < 0) {
		int err = -errno;
		FERRYI_ERR(ctx, "epoll_ctl(MOD, fd %d): %s", h->fd, strerror(errno));
		return err;
	}
	h->events = events;
	return 0;
}

void ferryi_poll_del(struct ferry_ctx *ctx, struct ferryi_poll_handle *h)
{
	if (h->wakes_poller && h->fd >= 0)
		(void)epoll_ctl(ctx->poller_epfd, EPOLL_CTL_DEL, h->fd, NULL);
	if (h->parked) {
		h->parked = false;
		ctx->parked--;
		ctx->hot_handles--;
		ferryi_list_remove(&h->hot_link);
	} else if (h->fd >= 0 && epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, h->fd, NULL) == 0 &&
		   !h->cold) {
		ctx->hot_handles--;
		ferryi_list_remove(&h->hot_link);
	}
	ctx->poll_gen++; /* events a sleeper holds may name h: see ferryi_ctx_sleep */
}

static void ctx_wake_drain(struct ferryi_poll_handle *h, uint32_t events)
{
	struct ferry_ctx *ctx = ferryi_container_of(h, struct ferry_ctx, wake);
	uint64_t v;
	(void)events;
	if (atomic_load(&ctx->sleepers))
		return; /* theirs to drain: see ferryi_ctx_sleep */
	while (read(h->fd, &v, sizeof(v)) < 0 && errno == EINTR)
		;
}

void ferryi_ctx_wake(struct ferry_ctx *ctx)
{
	uint64_t one = 1;
	atomic_fetch_add(&ctx->wake_seq, 1);
	ssize_t r;
	do
		r = write(ctx->wake.fd, &one, sizeof(one));
	while (r < 0 && errno == EINTR);
}

bool ferryi_ctx_destroying(const struct ferry_ctx *ctx)
{
	return ctx->destroying;
}

bool ferryi_ctx_fd_exported(const struct ferry_ctx *ctx)
{
	return atomic_load_explicit(&ctx->fd_exported, memory_order_relaxed);
}

bool ferryi_ctx_may_sleep(const struct ferry_ctx *ctx)
{
	return atomic_load(&ctx->sleepers) > 0 || atomic_load(&ctx->fd_exported);
}

bool ferryi_ctx_sleeps(struct ferry_ctx *ctx)
{
	return ferryi_ctx_may_sleep(ctx) ||
	       ferryi_coarse_now_ns(ctx) - ctx->last_sleep_ns < FERRYI_CTX_SLEPT_NS;
}

void ferryi_ctx_want_progress(struct ferry_ctx *ctx)
{
	if (ferryi_ctx_may_sleep(ctx))
		ferryi_ctx_wake(ctx);
}

/* ------------------------------------------------------------------ progress */

/* See struct ferryi_poll_handle's cold: connection events wait at most this long. */
#define FERRYI_COLD_EPOLL_NS 50000ull

/* See struct ferryi_poll_handle's direct. */
#define FERRYI_DIRECT_MAX 4u
/*
 * Direct passes in a row, nobody asleep, after which the direct handles leave epoll
 * (parked): while a socket is in an epoll set, every segment that arrives also runs
 * the epoll callback, which a busy ping-pong pays for on each message. Whoever is about
 * to sleep, export the fd or wait for writability puts them back (ctx_unpark).
 */
#define FERRYI_PARK_PASSES 64u

/*
 * A callback may free handles that are further down this batch (an ofi endpoint gone
 * inside its port's receive path takes its probe socket with it): once one left epoll
 * (poll_gen), the rest of the batch waits for the next epoll_wait, which reports
 * them again (level-triggered) if they still exist.
 */
static void ctx_dispatch(struct ferry_ctx *ctx, const struct epoll_event *evs, int n)
{
	uint64_t gen = ctx->poll_gen;
	for (int i = 0; i < n && ctx->poll_gen == gen; i++) {
		struct ferryi_poll_handle *h = evs[i].data.ptr;
		h->fn(h, evs[i].events);
	}
}

/* Puts parked handles back into epoll; see FERRYI_PARK_PASSES. */
static void ctx_unpark(struct ferry_ctx *ctx)
{
	struct ferryi_list_node *n;

	ctx->direct_passes = 0;
	if (!ctx->parked)
		return;
	for (n = ctx->hot.head.next; n != &ctx->hot.head; n = n->next) {
		struct ferryi_poll_handle *h = ferryi_container_of(n, struct ferryi_poll_handle,
								   hot_link);
		struct epoll_event ev = { .events = h->events, .data.ptr = h };

		if (!h->parked)
			continue;
		/* Failing, it stays parked: sleepers then read it directly (ferryi_ctx_sleep). */
		if (epoll_ctl(ctx->epfd, EPOLL_CTL_ADD, h->fd, &ev) < 0) {
			FERRYI_ERR(ctx, "epoll_ctl(ADD, fd %d) for a parked fd: %s", h->fd,
				   strerror(errno));
			continue;
		}
		h->parked = false;
		ctx->parked--;
	}
}

static void ctx_park(struct ferry_ctx *ctx, struct ferryi_poll_handle *h)
{
	if (epoll_ctl(ctx->epfd, EPOLL_CTL_DEL, h->fd, NULL) == 0) {
		h->parked = true;
		ctx->parked++;
	}
}

/*
 * Calls handles as if epoll had reported them readable. A call may remove handles (a
 * failed endpoint leaves epoll, bumping poll_gen); the rest then wait for the next pass.
 */
static void ctx_call_readable(struct ferry_ctx *ctx, struct ferryi_poll_handle **hs,
			      uint32_t count)
{
	uint64_t gen = ctx->poll_gen;
	for (uint32_t i = 0; i < count && ctx->poll_gen == gen; i++)
		hs[i]->fn(hs[i], EPOLLIN);
}

/* Calls the parked handles as a direct pass would; false if there are none. */
static bool ctx_call_parked(struct ferry_ctx *ctx)
{
	struct ferryi_poll_handle *hs[FERRYI_DIRECT_MAX];
	struct ferryi_list_node *n;
	uint32_t count = 0;

	/* The hot list holds every endpoint's fd (ten thousand on an idle server) and is
	 * walked before every sleep: only as far as the parked ones. */
	for (n = ctx->hot.head.next;
	     n != &ctx->hot.head && count < ctx->parked && count < FERRYI_DIRECT_MAX;
	     n = n->next) {
		struct ferryi_poll_handle *h = ferryi_container_of(n, struct ferryi_poll_handle,
								   hot_link);
		if (h->parked)
			hs[count++] = h;
	}
	ctx_call_readable(ctx, hs, count);
	return count > 0;
}

/*
 * Reads the hot handles by calling them, if they are few and all direct. Returns false
 * (having called none, every handle back in epoll) when epoll must be read.
 */
static bool ctx_read_direct(struct ferry_ctx *ctx)
{
	struct ferryi_poll_handle *hs[FERRYI_DIRECT_MAX];
	struct ferryi_list_node *n;
	uint32_t count = 0;

	if (ctx->hot_handles > FERRYI_DIRECT_MAX) {
		ctx_unpark(ctx);
		return false;
	}
	for (n = ctx->hot.head.next; n != &ctx->hot.head; n = n->next) {
		struct ferryi_poll_handle *h = ferryi_container_of(n, struct ferryi_poll_handle,
								   hot_link);
		if (!h->direct || (h->events & EPOLLOUT)) {
			ctx_unpark(ctx);
			return false;
		}
		hs[count++] = h;
	}
	if (ctx->direct_passes < FERRYI_PARK_PASSES) {
		ctx->direct_passes++;
	} else if (ctx->parked < count && !atomic_load(&ctx->sleepers)) {
		for (uint32_t i = 0; i < count; i++)
			if (!hs[i]->parked)
				ctx_park(ctx, hs[i]);
	}
	ctx_call_readable(ctx, hs, count);
	return true;
}

/*
 * Passes reuse one clock reading for up to this many passes in a row, and never past
 * a tick of the coarse clock. CLOCK_MONOTONIC costs 25 ns through the vDSO where the
 * kernel trusts the TSC, but is a system call where it does not: 1.2 us in the
 * soft-RoCE VM (QEMU without KVM), against 70 ns for CLOCK_MONOTONIC_COARSE. A busy
 * ping-pong runs several passes per message, and a reading per pass cost the verbs
 * latency there more than the rest of ferry's path did. Timers and the cold-epoll
 * cadence run late by at most this many passes or one coarse tick (a few ms), on
 * passes that come back to back anyway.
 */
#define FERRYI_PASS_CLOCK_REUSE 16u

/* The clock for a pass: the last pass's reading (last_progress_ns) or a fresh one. */
static uint64_t ctx_pass_clock(struct ferry_ctx *ctx)
{
	if (ctx->clock_fn)
		return ferryi_now_ns(ctx);
	uint64_t tick = ferryi_coarse_now_ns(ctx);
	if (tick != ctx->pass_clock_tick || ++ctx->pass_clock_uses >= FERRYI_PASS_CLOCK_REUSE) {
		ctx->pass_clock_tick = tick;
		ctx->pass_clock_uses = 0;
		return ferryi_now_ns(ctx);
	}
	return ctx->last_progress_ns;
}

static int ctx_progress(struct ferry_ctx *ctx, bool read_epoll)
{
	struct epoll_event evs[64];
	int n, events = 0;

	ferryi_ctx_assert_locked(ctx);
	ferryi_coarse_expire(ctx);
	uint64_t now = ctx_pass_clock(ctx);
	ctx->last_progress_ns = now;
	ctx->progress_passes++;
	/* With the fd exported, its readability must stay exact: every pass drains it. */
	if (!read_epoll && !ferryi_ctx_fd_exported(ctx) &&
	    (ctx->hot_handles == 0 || ctx_read_direct(ctx))) {
		/* the real clock: a test's frozen clock must not stop epoll reads */
		uint64_t real = ctx->clock_fn ? ferryi_now_ns(NULL) : now;
		if (real - ctx->last_epoll_ns < FERRYI_COLD_EPOLL_NS)
			return ferryi_progress_hooks_locked(ctx, now);
		ctx->last_epoll_ns = real;
	}
	/*
	 * Batches of ready fds, a bounded number per pass. Teardowns run between batches:
	 * an endpoint that began closing no longer reads its socket, which stays ready
	 * until its provider leaves epoll, so 64 of them would otherwise fill every batch
	 * and this loop would never end.
	 */
	for (int batch = 0; batch < 256; batch++) {
		n = epoll_wait(ctx->epfd, evs, (int)FERRYI_ARRAY_LEN(evs), 0);
		ctx_dispatch(ctx, evs, n);
		events += n > 0 ? n : 0;
		if (n < (int)FERRYI_ARRAY_LEN(evs))
			break;
		ferryi_process_closes(ctx);
	}
	return events + ferryi_progress_hooks_locked(ctx, now);
}

int ferryi_progress_locked(struct ferry_ctx *ctx)
{
	return ctx_progress(ctx, false);
}

int ferryi_progress_epoll_locked(struct ferry_ctx *ctx)
{
	ctx_unpark(ctx); /* every fd is read below */
	return ctx_progress(ctx, true);
}

int ferryi_progress_hooks_locked(struct ferry_ctx *ctx, uint64_t now)
{
	int events = 0;
	for (int i = 0; i < ctx->nprovs; i++)
		if (ctx->provs[i]->prov->progress)
			events += ctx->provs[i]->prov->progress(ctx->provs[i]);
	ferryi_timers_run(ctx, now);
	ferryi_regcache_progress(ctx); /* a dead region fails its users: closed just below */
	ferryi_process_closes(ctx);
	/* Keep the exported fd readable while completions wait to be polled. */
	if (atomic_load_explicit(&ctx->fd_exported, memory_order_relaxed) &&
	    ferryi_cqs_nonempty(ctx))
		ferryi_ctx_wake(ctx);
	ferryi_coarse_expire(ctx); /* the pass may have been long: what follows reads again */
	return events;
}

/*
 * Sleeps until an fd of the context is ready, a wake-up, or timeout_ms (-1: none).
 * Called and returns with the lock held. Wake-ups cannot be lost: the sleeper notes
 * the wake sequence and counts itself while still holding the lock, wakers bump the
 * sequence and write the eventfd under the lock, and progress passes leave the eventfd
 * alone while anyone sleeps (the sleeper drains it itself).
 *
 * The fds that woke the sleeper are handled here, saving the caller's next progress
 * pass an epoll_wait() (a blocking ping-pong pays one system call less per message).
 * Only if no handle left the epoll set meanwhile (poll_gen): events are read unlocked,
 * and a handle removed since may be freed. A handle that another thread served in
 * the meantime gets a spurious call, which every handler tolerates (nonblocking fds).
 */
void ferryi_ctx_sleep(struct ferry_ctx *ctx, int timeout_ms, struct ferry_cq *cq)
{
	struct epoll_event evs[16];
	int n = 0;
	uint64_t next = ferryi_timers_next(ctx);
	if (next != UINT64_MAX) {
		int t = ferryi_ms_until(ctx, next);
		if (timeout_ms < 0 || t < timeout_ms)
			timeout_ms = t;
	}
	if (timeout_ms == 0)
		return;
	ctx_unpark(ctx);
	if (ctx_call_parked(ctx))
		return; /* one could not rejoin epoll: read it, the caller loops */
	for (int i = 0; i < ctx->nprovs; i++)
		if (ctx->provs[i]->prov->prepare_sleep &&
		    ctx->provs[i]->prov->prepare_sleep(ctx->provs[i]) > 0)
			return; /* work came in before the notification was armed */
	if (cq && ferryi_cq_count(cq))
		return;
	uint64_t seq0 = atomic_load(&ctx->wake_seq), gen0 = ctx->poll_gen;
	atomic_fetch_add(&ctx->sleepers, 1);
	ferryi_ctx_unlock(ctx);
	if (ctx->sleep_hook)
		ctx->sleep_hook(ctx);
	if (atomic_load(&ctx->wake_seq) == seq0 && (!cq || !ferryi_cq_count(cq)))
		n = epoll_wait(ctx->epfd, evs, (int)FERRYI_ARRAY_LEN(evs), timeout_ms);
	bool woken = n <= 0 || atomic_load(&ctx->wake_seq) != seq0;
	for (int i = 0; i < n; i++) {
		if (evs[i].data.ptr == &ctx->wake) {
			woken = true;
			evs[i--] = evs[--n];
		}
	}
	if (woken) {
		uint64_t v;
		(void)!read(ctx->wake.fd, &v, sizeof(v));
	}
	ferryi_ctx_lock(ctx);
	atomic_fetch_sub(&ctx->sleepers, 1);
	ctx->last_sleep_ns = ferryi_coarse_now_ns(ctx);
	if (n > 0 && ctx->poll_gen == gen0) {
		ctx->last_progress_ns = ferryi_now_ns(ctx);
		ctx->progress_passes++;
		ctx_dispatch(ctx, evs, n);
		ferryi_process_closes(ctx);
	}
}

int ferry_progress(struct ferry_ctx *ctx)
{
	if (!ctx)
		return FERRY_EINVAL;
	ferryi_ctx_lock(ctx);
	int n = ferryi_progress_locked(ctx);
	ferryi_ctx_unlock(ctx);
	return n;
}

int ferry_ctx_fd(struct ferry_ctx *ctx)
{
	if (!ctx)
		return FERRY_EINVAL;
	if (!atomic_exchange(&ctx->fd_exported, true)) {
		/*
		 * The application may sleep on the fd before any further call: arm the
		 * providers' notifications now, as before a sleep of our own. Level-triggered
		 * from the start: completions already waiting count too.
		 */
		ferryi_ctx_lock(ctx);
		ctx_unpark(ctx); /* the application's poll must see every fd from now on */
		for (int i = 0; i < ctx->nprovs; i++)
			if (ctx->provs[i]->prov->prepare_sleep)
				(void)ctx->provs[i]->prov->prepare_sleep(ctx->provs[i]);
		if (ferryi_cqs_nonempty(ctx))
			ferryi_ctx_wake(ctx);
		ferryi_ctx_unlock(ctx);
	}
	return ctx->epfd;
}

static void *ctx_progress_thread(void *arg)
{
	struct ferry_ctx *ctx = arg;
	(void)prctl(PR_SET_NAME, "ferry-progress");
	ferryi_ctx_lock(ctx);
	while (!atomic_load(&ctx->progress_stop)) {
		ferryi_progress_locked(ctx);
		ferryi_ctx_sleep(ctx, 100, NULL);
	}
	ferryi_ctx_unlock(ctx);
	return NULL;
}

/* ------------------------------------------------------------------ deferred callbacks */

void ferryi_defer_event(struct ferry_ctx *ctx, struct ferry_ep *ep, enum ferry_event_type type,
			int status, const char *detail)
{
	if (!ctx->cfg.event_fn || ctx->destroying)
		return;
	struct ferryi_deferred *d = calloc(1, sizeof(*d));
	if (!d)
		return;
	d->kind = FERRYI_DEFER_EVENT;
	d->ep = ep;
	if (ep)
		ferryi_ep_ref(ep);
	d->ev.type = type;
	d->ev.status = status;
	snprintf(d->detail, sizeof(d->detail), "%s", detail ? detail : "");
	ferryi_list_push_back(&ctx->deferred, &d->link);
}

/* ------------------------------------------------------------------ providers */

static struct ferryi_prov_inst *ctx_open_deferred(struct ferry_ctx *ctx, int slot);

struct ferryi_prov_inst *ferryi_ctx_inst_by_scheme(struct ferry_ctx *ctx, const char *scheme)
{
	for (int i = 0; i < ctx->nprovs; i++)
		if (ctx->provs[i]->prov->scheme_match(scheme))
			return ctx->provs[i];
	for (int i = 0; i < ctx->nunopened; i++)
		if (ctx->unopened[i]->prov->scheme_match(scheme))
			return ctx_open_deferred(ctx, i);
	return NULL;
}

static bool ctx_provider_allowed(const struct ferry_ctx *ctx, const char *name)
{
	const char *f = ctx->providers_filter;
	size_t n = strlen(name);
	if (!f[0])
		return true;
	while (*f) {
		while (*f == ',' || *f == ' ')
			f++;
		size_t len = strcspn(f, ", ");
		if (len == n && strncmp(f, name, n) == 0)
			return true;
		f += len;
	}
	return false;
}

void ferryi_local_info(const struct ferry_ctx *ctx, struct ferryi_peer_info *out)
{
	memset(out, 0, sizeof(*out));
	out->version = FERRYI_PROTO_VERSION;
	out->features = ctx->cfg.probe_interval_ms ? FERRYI_FEAT_PROBES : 0;
	out->features |= FERRYI_FEAT_RNDV_OFFSET | FERRYI_FEAT_RNDV_ACK;
#ifdef FERRY_HAVE_ZSTD
	/* The ability to decode, whatever our own policy: a peer may compress toward us. */
	out->features |= FERRYI_FEAT_ZSTD;
#endif
	out->idle_timeout_ms = ctx->cfg.idle_timeout_s * 1000u;
	out->probe_interval_ms = ctx->cfg.probe_interval_ms;
	out->max_frame = ctx->cfg.max_frame;
	out->eager_max = ctx->cfg.eager_max;
	out->rx_credit = ctx->cfg.unexpected_max;
}

uint64_t ferryi_ctx_random(struct ferry_ctx *ctx)
{
	if (ctx->rand_left == 0) {
		ferryi_random_fill(ctx->rand_pool, sizeof(ctx->rand_pool)); /* one syscall */
		ctx->rand_left = FERRYI_ARRAY_LEN(ctx->rand_pool);
	}
	uint64_t v = ctx->rand_pool[--ctx->rand_left];
	ctx->rand_pool[ctx->rand_left] = 0;
	return v;
}

/* ------------------------------------------------------------------ create / destroy */

static void ctx_close_providers(struct ferry_ctx *ctx)
{
	for (int i = ctx->nprovs - 1; i >= 0; i--) {
		ctx->provs[i]->prov->inst_fini(ctx->provs[i]);
		free(ctx->provs[i]);
		ctx->provs[i] = NULL;
	}
	ctx->nprovs = 0;
	for (int i = 0; i < ctx->nunopened; i++) {
		free(ctx->unopened[i]);
		ctx->unopened[i] = NULL;
	}
	ctx->nunopened = 0;
}

/* Runs inst_init; on success pi joins ctx->provs. Returns 0 or the provider's error. */
static int ctx_inst_open(struct ferry_ctx *ctx, struct ferryi_prov_inst *pi)
{
	pi->index = ctx->nprovs;
	int rc = pi->prov->inst_init(pi);
	if (rc < 0) {
		FERRYI_INFO(ctx, "provider %s: not available: %s", pi->prov->name,
			    ferry_strerror(rc));
		return rc;
	}
	ctx->provs[ctx->nprovs++] = pi;
	FERRYI_DBG(ctx, "provider %s: open", pi->prov->name);
	return 0;
}

/*
 * Opens a provider that waited for its first use (prov->open_on_use). The regions
 * registered meanwhile are registered with it too, so every region is known to every
 * open provider; if one cannot be, the provider stays closed. Once tried, a provider
 * leaves ctx->unopened whatever the outcome: a failure is not retried.
 */
static struct ferryi_prov_inst *ctx_open_deferred(struct ferry_ctx *ctx, int slot)
{
	struct ferryi_prov_inst *pi = ctx->unopened[slot];
	ctx->unopened[slot] = ctx->unopened[--ctx->nunopened];
	ctx->unopened[ctx->nunopened] = NULL;
	FERRYI_INFO(ctx, "provider %s: opening at first use", pi->prov->name);
	if (ctx_inst_open(ctx, pi) < 0) {
		free(pi);
		return NULL;
	}
	int rc = ferryi_mrs_reg_opened(pi);
	if (rc < 0) {
		FERRYI_WARN(ctx, "provider %s: closed again: the regions registered before "
				 "it opened cannot be registered with it: %s",
			    pi->prov->name, ferry_strerror(rc));
		ctx->provs[--ctx->nprovs] = NULL;
		pi->prov->inst_fini(pi);
		free(pi);
		return NULL;
	}
	/* An application sleeping on the exported fd must hear this provider too. */
	if (atomic_load(&ctx->fd_exported) && pi->prov->prepare_sleep)
		(void)pi->prov->prepare_sleep(pi);
	return pi;
}

void ferryi_ctx_open_deferred_all(struct ferry_ctx *ctx)
{
	while (ctx->nunopened > 0)
		(void)ctx_open_deferred(ctx, ctx->nunopened - 1);
}

/*
 * Opens every allowed provider, except that one with open_on_use waits for a URI
 * that names it or an rkey packed for a user (lib/rkey.c): libfabric's loading alone
 * costs a third of a second, which a context that never uses it should not pay.
 * With nothing else open, those open at once: a context needs one provider.
 * Every allowed provider gets its part of a region's allocation here, opened or not,
 * so one opened later finds room in the regions registered before.
 */
static int ctx_open_providers(struct ferry_ctx *ctx)
{
	int count;
	const struct ferryi_provider *const *all = ferryi_providers(&count);

	for (int i = 0; i < count && ctx->nprovs + ctx->nunopened < FERRYI_MAX_PROVS; i++) {
		const struct ferryi_provider *p = all[i];
		if (!ctx_provider_allowed(ctx, p->name)) {
			FERRYI_INFO(ctx, "provider %s: skipped by FERRY_PROVIDERS=%s", p->name,
				    ctx->providers_filter);
			continue;
		}
		struct ferryi_prov_inst *pi = calloc(1, sizeof(*pi) + p->inst_size);
		if (!pi) {
			ctx_close_providers(ctx);
			return FERRY_ENOMEM;
		}
		pi->prov = p;
		pi->ctx = ctx;
		ferryi_mr_layout_add(pi);
		if (p->open_on_use) {
			ctx->unopened[ctx->nunopened++] = pi;
			FERRYI_DBG(ctx, "provider %s: opens at first use", p->name);
		} else if (ctx_inst_open(ctx, pi) < 0) {
			free(pi);
		}
	}
	if (ctx->nprovs == 0)
		ferryi_ctx_open_deferred_all(ctx);
	return ctx->nprovs > 0 ? 0 : FERRY_ENODEV;
}

int ferry_ctx_create(const struct ferry_config *cfg, struct ferry_ctx **out)
{
	struct ferry_ctx *ctx;
	int rc;

	if (!out)
		return FERRY_EINVAL;
	*out = NULL;
	ctx = calloc(1, sizeof(*ctx));
	if (!ctx)
		return FERRY_ENOMEM;
	if (cfg)
		ctx->cfg = *cfg;
	else
		ferry_config_init(&ctx->cfg);
	ctx->epfd = -1;
	ctx->wake.fd = -1;
	ctx->poller_epfd = -1;
	ctx->poller_kick_fd = -1;
	(void)ferry_config_from_env(&ctx->cfg); /* bad values are logged and ignored */
	if (ctx->cfg.providers) {
		snprintf(ctx->providers_filter, sizeof(ctx->providers_filter), "%s",
			 ctx->cfg.providers);
		ctx->cfg.providers = ctx->providers_filter;
	}
	pthread_mutex_init(&ctx->lock, NULL);
	ferryi_list_init(&ctx->hot);
	ferryi_list_init(&ctx->cqs);
	ferryi_list_init(&ctx->listeners);
	ferryi_list_init(&ctx->eps);
	ferryi_list_init(&ctx->mrs);
	ferryi_list_init(&ctx->rkeys);
	ferryi_list_init(&ctx->deferred);
	ferryi_list_init(&ctx->closing);
	ferryi_list_init(&ctx->pool);
	ferryi_hmap_init(&ctx->mr_by_key);
	ferryi_list_init(&ctx->idle_lru);
	ferryi_list_init(&ctx->probe_lru);
	ferryi_list_init(&ctx->keepalive_lru);
	ferryi_list_init(&ctx->timer_ready);

	rc = ferryi_config_check(&ctx->cfg);
	if (rc < 0)
		goto err_free;

	ctx->epfd = epoll_create1(EPOLL_CLOEXEC);
	ctx->wake.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	ctx->poller_epfd = epoll_create1(EPOLL_CLOEXEC);
	ctx->poller_kick_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (ctx->epfd < 0 || ctx->wake.fd < 0 || ctx->poller_epfd < 0 || ctx->poller_kick_fd < 0) {
		rc = -errno;
		FERRYI_ERR(ctx, "epoll/eventfd: %s", strerror(errno));
		goto err_fds;
	}
	struct epoll_event kick_ev = { .events = EPOLLIN, .data.u64 = FERRYI_POLLER_EV_KICK };
	if (epoll_ctl(ctx->poller_epfd, EPOLL_CTL_ADD, ctx->poller_kick_fd, &kick_ev) < 0) {
		rc = -errno;
		FERRYI_ERR(ctx, "epoll_ctl(ADD) for the poller's kick: %s", strerror(errno));
		goto err_fds;
	}
	ctx->wake.events = EPOLLIN;
	ctx->wake.fn = ctx_wake_drain;
	ctx->wake.cold = true; /* wakes sleepers; busy passes need not read it */
	rc = ferryi_poll_add(ctx, &ctx->wake);
	if (rc < 0)
		goto err_fds;

	ctx->default_cq = calloc(1, sizeof(*ctx->default_cq));
	if (!ctx->default_cq) {
		rc = FERRY_ENOMEM;
		goto err_fds;
	}
	rc = ferryi_cq_init(ctx, ctx->default_cq, true);
	if (rc < 0) {
		free(ctx->default_cq);
		goto err_fds;
	}

	ferryi_ctx_lock(ctx);
	rc = ctx_open_providers(ctx);
	if (rc == 0)
		ferryi_regcache_init(ctx);
	ferryi_ctx_unlock(ctx);
	if (rc < 0) {
		FERRYI_ERR(ctx, "no provider could open (FERRY_PROVIDERS=%s)",
			   ctx->providers_filter[0] ? ctx->providers_filter : "all");
		goto err_cq;
	}

	rc = ferryi_poller_start(ctx);
	if (rc < 0)
		goto err_provs;
	if (ctx->cfg.progress_thread) {
		if (pthread_create(&ctx->progress_thread, NULL, ctx_progress_thread, ctx) != 0) {
			rc = FERRY_ENOMEM;
			FERRYI_ERR(ctx, "cannot start the progress thread");
			ferryi_poller_stop(ctx);
			goto err_provs;
		}
		ctx->progress_thread_on = true;
	}
	*out = ctx;
	return 0;

err_provs:
	ferryi_ctx_lock(ctx);
	ferryi_regcache_fini(ctx);
	ctx_close_providers(ctx);
	ferryi_ctx_unlock(ctx);
err_cq:
	ferryi_cq_free(ctx->default_cq);
err_fds:
	if (ctx->wake.fd >= 0)
		close(ctx->wake.fd);
	if (ctx->epfd >= 0)
		close(ctx->epfd);
	if (ctx->poller_kick_fd >= 0)
		close(ctx->poller_kick_fd);
	if (ctx->poller_epfd >= 0)
		close(ctx->poller_epfd);
err_free:
	ferryi_hmap_fini(&ctx->mr_by_key);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
	return rc;
}

void ferry_ctx_destroy(struct ferry_ctx *ctx)
{
	if (!ctx)
		return;
	if (ctx->progress_thread_on) {
		atomic_store(&ctx->progress_stop, true);
		ferryi_ctx_wake(ctx);
		pthread_join(ctx->progress_thread, NULL);
	}
	ferryi_poller_stop(ctx);

	ferryi_ctx_lock(ctx);
	/* Callbacks queued before destroy still run; none are queued after. */
	ferryi_ctx_unlock(ctx);
	ferryi_ctx_lock(ctx);
	ctx->destroying = true;
	ferryi_listeners_fini(ctx);

	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ctx->eps, n, t) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, ctx_link);
		ferryi_ep_begin_close(ep, FERRY_ECANCELED, false, FERRY_EVENT_EP_CLOSED,
				      "context destroyed");
	}
	ferryi_process_closes(ctx);

	/* Hardware providers return flushed work asynchronously: give them a bounded time. */
	uint64_t deadline = ferryi_now_ns(ctx) + 5000000000ull;
	for (;;) {
		bool pending = false;
		ferryi_list_foreach_safe(&ctx->eps, n, t) {
			struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, ctx_link);
			if (!ep->provider_gone)
				pending = true;
		}
		if (!pending || ferryi_now_ns(ctx) > deadline)
			break;
		ferryi_progress_locked(ctx);
		ferryi_ctx_sleep(ctx, 10, NULL);
	}

	ferryi_ops_fini(ctx);
	/* Completions nobody polled give back their endpoint references. */
	ferryi_list_foreach_safe(&ctx->cqs, n, t) {
		struct ferry_cq *cq = ferryi_container_of(n, struct ferry_cq, ctx_link);
		ferryi_cq_discard_all(cq);
	}
	ferryi_rkeys_fini(ctx);
	/* Endpoints the user still holds are freed with the context. */
	ferryi_list_foreach_safe(&ctx->eps, n, t) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, ctx_link);
		if (!ep->provider_gone)
			FERRYI_WARN(ctx, "endpoint to %s: provider did not release it in time",
				    ep->peer);
		ferryi_list_remove(&ep->ctx_link);
		free(ep);
	}
	ferryi_regcache_fini(ctx);
	ferryi_mrs_fini(ctx);
	ctx_close_providers(ctx);
	ferryi_list_foreach_safe(&ctx->cqs, n, t) {
		struct ferry_cq *cq = ferryi_container_of(n, struct ferry_cq, ctx_link);
		ferryi_cq_free(cq);
	}
	ferryi_list_foreach_safe(&ctx->deferred, n, t) {
		ferryi_list_remove(n);
		free(ferryi_container_of(n, struct ferryi_deferred, link));
	}
	ferryi_timers_fini(ctx);
	ctx->locked = false;
	pthread_mutex_unlock(&ctx->lock);

	ferryi_hmap_fini(&ctx->mr_by_key);
	close(ctx->wake.fd);
	close(ctx->epfd);
	close(ctx->poller_kick_fd);
	close(ctx->poller_epfd);
	pthread_mutex_destroy(&ctx->lock);
	free(ctx);
}
