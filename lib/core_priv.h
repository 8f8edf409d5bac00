/*
 * core_priv.h - state private to the core (the lib/ sources). Providers never include this.
 */
#ifndef FERRY_LIB_CORE_PRIV_H
#define FERRY_LIB_CORE_PRIV_H

#include "core.h"

#include <pthread.h>

struct ferryi_cqe {
	struct ferry_completion c;   /* c.ep holds a reference until polled */
	struct ferryi_prov_inst *pi; /* whose stats count it                */
};

struct ferry_cq {
	struct ferry_ctx *ctx;
	struct ferryi_cqe *ring;     /* the ring and counts: under the ctx lock */
	uint32_t cap, head;
	_Atomic uint32_t count;      /* also read unlocked by a thread about to
					sleep (ferryi_cq_count)                */
	uint32_t reserved;           /* posted ops that will report here     */
	bool is_default;
	struct ferryi_list_node ctx_link;
};

struct ferry_listener {
	struct ferry_ctx *ctx;
	struct ferry_listen_attr attr;
	bool closed;
	uint32_t live;               /* endpoints accepted and not yet freed */
	struct ferryi_list acceptq;  /* connected eps waiting for accept()   */
	uint32_t acceptq_len;
	struct ferryi_list_node ctx_link;
	char addr[4 * FERRYI_URI_MAX];
	int nparts;
	struct ferryi_listener_part *parts[FERRYI_MAX_PROVS * 2];
};

/* An unmatched incoming message: eager payload or rendezvous announcement. */
struct ferryi_uxmsg {
	struct ferryi_list_node link;
	uint8_t type;                /* FERRYI_MSG_EAGER or FERRYI_MSG_RTS    */
	bool complete;               /* payload fully received                */
	uint64_t tag;
	uint64_t len;                /* message length                        */
	struct ferryi_op *waiting;   /* recv matched while payload in flight  */
	/* RTS */
	uint64_t sender_id;
	uint64_t offset;             /* of the payload in the sender's region */
	bool granted;                /* FERRYI_MSGF_RNDV_GRANTED                */
	struct ferry_rkey *rkey;
	uint64_t charge;             /* bytes counted against the budget      */
	max_align_t data[];          /* eager payload                         */
};

struct ferry_ctx {
	pthread_mutex_t lock;
	pthread_t lock_owner;
	bool locked;
	uint64_t hold_coarse_ns;           /* ferryi_coarse_now_ns() of this lock hold
					      or pass; 0 until read                 */
	struct ferry_config cfg;
	char providers_filter[256];
	struct ferryi_prov_inst *provs[FERRYI_MAX_PROVS]; /* open, in opening order   */
	int nprovs;
	struct ferryi_prov_inst *unopened[FERRYI_MAX_PROVS]; /* allowed, waiting for their
								first use */
	int nunopened;
	size_t mr_alloc_size;              /* a region with every allowed provider's part */

	int epfd;                          /* every provider fd + wake_fd       */
	struct ferryi_poll_handle wake;    /* eventfd                           */
	atomic_int sleepers;               /* threads in epoll_wait             */
	atomic_uint_fast64_t wake_seq;     /* bumped by every ferryi_ctx_wake   */
	atomic_bool fd_exported;           /* user asked for ferry_ctx_fd()     */
	uint64_t poll_gen;                 /* bumped by every ferryi_poll_del   */
	uint32_t hot_handles;              /* poll handles in epoll, not cold   */
	struct ferryi_list hot;            /* those handles, by hot_link        */
	uint32_t parked;                   /* hot handles out of epoll for now  */
	uint32_t direct_passes;            /* direct passes since the last unpark */
	uint64_t last_epoll_ns;            /* the last epoll read of a progress pass */
	uint64_t pass_clock_tick;          /* coarse clock at the last fine reading of a pass */
	uint32_t pass_clock_uses;          /* passes that reused it (ctx_pass_clock) */

	struct ferry_cq *default_cq;
	struct ferryi_list cqs, listeners, eps, mrs, rkeys;
	struct ferryi_list deferred;       /* user callbacks to run unlocked    */
	struct ferryi_list closing;        /* eps whose teardown is pending     */
	struct ferryi_list pool;           /* pooled eps, least recently used first */
	uint32_t pool_count;
	uint32_t ep_count;                 /* endpoint objects alive            */
	uint32_t handshaking;              /* endpoints connecting or accepting */
	struct ferryi_hmap mr_by_key;
	uint32_t mr_generation;
	struct ferryi_rcache *rcache;      /* registration cache, or NULL (off)  */
	int rcache_state;                  /* enum ferryi_rc_state               */
	uint64_t incarnation;

	/* op slot table: an op's wire id indexes it */
	struct ferryi_op **slots;
	uint32_t nslots, slots_cap;
	uint32_t *free_slots;
	uint32_t nfree;
	struct ferryi_op *op_cache;        /* freed ops, linked through rndv_peer */
	uint32_t op_cache_len;

	/* timer min-heap */
	struct ferryi_timer **heap;
	uint32_t heap_len, heap_cap;
	uint64_t timer_seq;
	struct ferryi_list timer_ready;    /* due timers of the running pass    */
	uint64_t (*clock_fn)(void *arg);   /* test hook: fake clock             */
	void (*sleep_hook)(struct ferry_ctx *ctx); /* test hook: runs unlocked right
					      before a sleeper checks for wake-ups */
	void *clock_arg;

	/* random pool for region keys */
	uint64_t rand_pool[64];
	unsigned rand_left;

	/* poller thread: idle reaping and health probes over intrusive LRU lists */
	struct ferryi_list idle_lru;       /* connected eps, least recently used first */
	struct ferryi_list probe_lru;      /* eps being watched (ops in flight or a
					      probe unanswered, or were until the tick
					      looks), longest silent first           */
	struct ferryi_list keepalive_lru;  /* the other connected eps, the same order  */
	int poller_epfd;                   /* the poller sleeps here: its kick eventfd
					      and the wakes_poller handles' fds     */
	int poller_kick_fd;                /* eventfd: ferryi_poller_kick           */
	uint32_t listen_unwatched;         /* listener parts that are not watched */
	pthread_t poller;
	bool poller_on, poller_stop;
	atomic_bool poller_stop_flag;      /* poller_stop, readable without the lock */
	uint64_t last_progress_ns;         /* the last progress pass, by anyone        */
	uint64_t last_sleep_ns;            /* coarse clock when a sleep last ended     */
	uint64_t progress_passes;          /* passes run by anyone (and sleeps' reads) */
	uint64_t poller_seen_passes;       /* progress_passes at the poller's last look */
	uint64_t poller_seen_ns;           /* when the poller last saw them change     */
	uint32_t op_gen;                   /* op id generations                        */
	bool draining;

	bool destroying;
	bool progress_thread_on;
	pthread_t progress_thread;
	atomic_bool progress_stop;
};

/* context.c */
int ferryi_progress_locked(struct ferry_ctx *ctx);
/*
 * A pass that reads epoll whatever the cold cadence says: for the poller, whose
 * passes are rare and come because an fd fired (a busy pass skips epoll within
 * FERRYI_COLD_EPOLL_NS of the last read, and a connection that arrived just after
 * it would wait for the next wake-up, which an edge-triggered listener never sends).
 */
int ferryi_progress_epoll_locked(struct ferry_ctx *ctx);
/*
 * The part of a progress pass that is not reading fds: provider progress hooks,
 * timers, teardowns. For waiters whose next step is an epoll_wait with a timeout
 * (ferryi_ctx_sleep), which handles the ready fds itself. now: ferryi_now_ns(ctx) at the
 * start of the pass; timers due by then run.
 */
int ferryi_progress_hooks_locked(struct ferry_ctx *ctx, uint64_t now);
/* Sleeps in epoll until an fd is ready, a wake-up or timeout; lock held on entry and exit. */
void ferryi_ctx_sleep(struct ferry_ctx *ctx, int timeout_ms, struct ferry_cq *cq);
int ferryi_ms_until(struct ferry_ctx *ctx, uint64_t deadline_ns);
/* The open instance serving a URI scheme (opened now if it waited for its first use), or
 * NULL. */
struct ferryi_prov_inst *ferryi_ctx_inst_by_scheme(struct ferry_ctx *ctx, const char *scheme);
/* Opens every provider still waiting for its first use (prov->open_on_use). */
void ferryi_ctx_open_deferred_all(struct ferry_ctx *ctx);
void ferryi_defer_event(struct ferry_ctx *ctx, struct ferry_ep *ep, enum ferry_event_type type,
			int status, const char *detail);
uint64_t ferryi_ctx_random(struct ferry_ctx *ctx);

/* timer.c */
/* The earliest deadline armed, UINT64_MAX if none. */
static inline uint64_t ferryi_timers_next(const struct ferry_ctx *ctx)
{
	return ctx->heap_len ? ctx->heap[0]->due_ns : UINT64_MAX;
}
void ferryi_timers_run_due(struct ferry_ctx *ctx, uint64_t now);
/* Runs the timers due at now. Busy passes mostly find none: a comparison, not a call. */
static inline void ferryi_timers_run(struct ferry_ctx *ctx, uint64_t now)
{
	if (ferryi_timers_next(ctx) <= now)
		ferryi_timers_run_due(ctx, now);
}
void ferryi_timers_fini(struct ferry_ctx *ctx);

/* endpoint.c */
struct ferry_ep *ferryi_ep_alloc(struct ferry_ctx *ctx, struct ferryi_prov_inst *pi,
				 enum ferryi_ep_state state, const char *peer);
void ferryi_ep_ref(struct ferry_ep *ep);
void ferryi_ep_unref(struct ferry_ep *ep);
void ferryi_ep_begin_close(struct ferry_ep *ep, int status, bool graceful,
			   enum ferry_event_type ev, const char *detail);
void ferryi_process_closes_slow(struct ferry_ctx *ctx);
/*
 * Tears down the endpoints whose close began (provider ep_close, then the core's ops).
 * Every pass and every unlock asks, and the list is nearly always empty.
 */
static inline void ferryi_process_closes(struct ferry_ctx *ctx)
{
	if (!ferryi_list_empty(&ctx->closing))
		ferryi_process_closes_slow(ctx);
}
void ferryi_ep_drop_hold(struct ferry_ep *ep);

/* msg.c: operations */
struct ferryi_op *ferryi_op_alloc(struct ferry_ep *ep, enum ferry_op_type type,
				  struct ferry_cq *cq, bool internal);
void ferryi_op_complete(struct ferryi_op *op, int status);
/* keep_arrived: whole eager messages that arrived unmatched stay receivable (msg.c). */
void ferryi_ep_fail_core_ops(struct ferry_ep *ep, int status, bool keep_arrived);
/* The closed endpoint's sends that waited for its provider to let go complete now. */
void ferryi_ep_complete_gone_waits(struct ferry_ep *ep);
/* Frees every unmatched message left on ep (logged when there were any). */
void ferryi_ep_drop_unexpected(struct ferry_ep *ep, const char *why);
void ferryi_ops_fini(struct ferry_ctx *ctx);
int ferryi_send_ctrl(struct ferry_ep *ep, uint8_t type, uint64_t tag, uint64_t aux);

/* cq.c */
int ferryi_cq_init(struct ferry_ctx *ctx, struct ferry_cq *cq, bool is_default);
int ferryi_cq_reserve(struct ferry_cq *cq);
void ferryi_cq_unreserve(struct ferry_cq *cq);
void ferryi_cq_push(struct ferry_cq *cq, const struct ferry_completion *c,
		    struct ferryi_prov_inst *pi);
void ferryi_cq_discard_all(struct ferry_cq *cq);
void ferryi_cq_free(struct ferry_cq *cq);
bool ferryi_cqs_nonempty(struct ferry_ctx *ctx);
uint32_t ferryi_cq_count(struct ferry_cq *cq);

/* mr.c */
int ferryi_mr_reg_locked(struct ferry_ctx *ctx, void *addr, size_t len, unsigned access,
			 bool internal, struct ferry_mr **out);
void ferryi_mr_dereg_locked(struct ferry_mr *mr);
void ferryi_mr_ref(struct ferry_mr *mr);
void ferryi_mr_unref(struct ferry_mr *mr);
void ferryi_mrs_fini(struct ferry_ctx *ctx);
/* Gives an allowed provider instance its part of every region's allocation (creation). */
void ferryi_mr_layout_add(struct ferryi_prov_inst *pi);
/* Registers the live regions with a provider opened after them; 0 or the first error
 * (then none of them is registered with it). */
int ferryi_mrs_reg_opened(struct ferryi_prov_inst *pi);
/*
 * A region for one internal use (rendezvous, a local buffer of a one-sided op): from
 * the registration cache when cacheable, else registered for this use only. *out is
 * held for the caller, who gives it back with ferryi_mr_internal_put (which also
 * drops that reference). Its range may be larger than asked: the payload is at
 * addr - (*out)->addr.
 */
int ferryi_mr_internal_get(struct ferry_ctx *ctx, void *addr, size_t len, unsigned access,
			   bool cacheable, struct ferry_mr **out);
void ferryi_mr_internal_put(struct ferry_mr *mr);

/* rkey.c */
/* An rkey blob for mr with every open provider's key, or only only's (non-NULL). */
int ferryi_mr_pack_locked(const struct ferry_mr *mr, const struct ferryi_prov_inst *only,
			  void *buf, size_t *len);
int ferryi_rkey_unpack_locked(struct ferry_ctx *ctx, const void *blob, size_t len,
			      struct ferry_rkey **out);
void ferryi_rkey_ref(struct ferry_rkey *rk);
void ferryi_rkey_unref(struct ferry_rkey *rk);
void ferryi_rkeys_fini(struct ferry_ctx *ctx);

/* listener.c */
void ferryi_listener_ep_connected(struct ferry_ep *ep);
void ferryi_listener_ep_freed(struct ferry_ep *ep);
void ferryi_listeners_fini(struct ferry_ctx *ctx);

/* context.c: unit tests drive time themselves */
void ferryi_ctx_set_clock(struct ferry_ctx *ctx, uint64_t (*fn)(void *arg), void *arg);

/* poller.c */
int ferryi_poller_start(struct ferry_ctx *ctx);
void ferryi_poller_stop(struct ferry_ctx *ctx);
/* One pass of reaping and probing; returns when it next needs to run. */
uint64_t ferryi_poller_tick(struct ferry_ctx *ctx);
void ferryi_ep_track(struct ferry_ep *ep);   /* connected: join the LRU lists */
void ferryi_ep_untrack(struct ferry_ep *ep); /* closed: leave them            */
void ferryi_ep_touch_use(struct ferry_ep *ep);
/* ep->ops became non-empty: the endpoint is watched (probe cadence) from now. */
void ferryi_ep_ops_began(struct ferry_ep *ep);
/* A hold was taken (or the endpoint connected held): the peer must not reap its side. */
void ferryi_ep_pin_changed(struct ferry_ep *ep);
/* FERRYI_PROBE_PINNED or 0 for a probe or probe answer about to go out. */
uint64_t ferryi_ep_pin_flag(struct ferry_ep *ep);
void ferryi_poller_kick(struct ferry_ctx *ctx);
/* What woke the poller (epoll data in ctx->poller_epfd). */
#define FERRYI_POLLER_EV_KICK 0u
#define FERRYI_POLLER_EV_ACCEPT 1u

/* stats.c */
#define FERRYI_STAT(ep_or_pi_stats, field, delta) ((ep_or_pi_stats)->field += (delta))

/* The next ferryi_coarse_now_ns() reads the clock again. */
static inline void ferryi_coarse_expire(struct ferry_ctx *ctx)
{
	ctx->hold_coarse_ns = 0;
}

/* Every taker of the context lock calls this once it holds it. */
static inline void ferryi_ctx_took_lock(struct ferry_ctx *ctx)
{
	ctx->lock_owner = pthread_self();
	ctx->locked = true;
	ferryi_coarse_expire(ctx);
}

#endif /* FERRY_LIB_CORE_PRIV_H */
