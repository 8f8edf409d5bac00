/*
 * core.h - internal core objects and the upcalls providers use.
 *
 * Locking: one mutex per context (ctx->lock) guards every object of the context:
 * endpoints, ops, listeners, regions, timers and the provider instances. Provider ops
 * and upcalls run under it. Completion queues have their own leaf lock so that users
 * can take completions while another thread drives progress. User callbacks are
 * deferred and run after the context lock is dropped (ferryi_ctx_unlock runs them).
 *
 * Lifetimes: endpoints and regions are reference counted. The context lock protects the
 * counts' transitions to zero; a zero count never frees in place under a provider's
 * feet: the ep is freed only after its provider said ferryi_ep_gone().
 */
#ifndef FERRY_LIB_CORE_H
#define FERRY_LIB_CORE_H

#include "ferry/ferry.h"
#include "provider.h"
#include "util.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <sys/uio.h>

#define FERRYI_MAX_PROVS 8
#define FERRYI_URI_MAX 320
#define FERRYI_RX_INLINE (16 + FERRY_RKEY_MAX) /* the largest control payload: an RTS */

/* ------------------------------------------------------------------ logging (log.c) */

void ferryi_log(const struct ferry_ctx *ctx, enum ferry_log_level lvl, const char *fmt,
		...) __attribute__((format(printf, 3, 4)));
enum ferry_log_level ferryi_log_level(const struct ferry_ctx *ctx);
int ferryi_log_parse(const char *s, enum ferry_log_level *out);

#define FERRYI_LOG(ctx, lvl, ...)                                                    \
	do {                                                                         \
		if ((lvl) <= ferryi_log_level(ctx))                                  \
			ferryi_log((ctx), (lvl), __VA_ARGS__);                       \
	} while (0)
#define FERRYI_ERR(ctx, ...) FERRYI_LOG(ctx, FERRY_LOG_ERROR, __VA_ARGS__)
#define FERRYI_WARN(ctx, ...) FERRYI_LOG(ctx, FERRY_LOG_WARN, __VA_ARGS__)
#define FERRYI_INFO(ctx, ...) FERRYI_LOG(ctx, FERRY_LOG_INFO, __VA_ARGS__)
#define FERRYI_DBG(ctx, ...) FERRYI_LOG(ctx, FERRY_LOG_DEBUG, __VA_ARGS__)
#define FERRYI_TRACE(ctx, ...) FERRYI_LOG(ctx, FERRY_LOG_TRACE, __VA_ARGS__)

/* ------------------------------------------------------------------ addresses (addr.c) */

struct ferryi_addr {
	char scheme[32];          /* "tcp", "verbs", "ofi+shm", "auto"               */
	char host[256];           /* name or numeric; IPv6 without brackets          */
	uint16_t port;
	char uri[FERRYI_URI_MAX]; /* normalised "scheme://host:port" ([v6] bracketed) */
};

/* Parses one URI. Returns 0 or FERRY_EINVAL (logged at debug level). */
int ferryi_addr_parse(const char *uri, struct ferryi_addr *out);
/* Splits a comma-separated list; returns the count (<= max) or FERRY_EINVAL. */
int ferryi_addr_parse_list(const char *uris, struct ferryi_addr *out, int max);
/*
 * Resolves host:port for sockets (getaddrinfo, numeric or by name). passive: for
 * bind (empty host or "*" = wildcard). Returns 0, FERRY_EHOSTUNREACH, FERRY_EINVAL.
 */
struct sockaddr_storage;
int ferryi_addr_resolve(const struct ferryi_addr *a, int passive,
			struct sockaddr_storage *ss, unsigned *sslen);
/* Formats a socket address as "scheme://host:port". */
int ferryi_addr_format(const char *scheme, const struct sockaddr_storage *ss,
		       char *buf, size_t len);

/* ------------------------------------------------------------------ config (config.c) */

/* Validates a config: returns 0 or FERRY_EINVAL with the offending field logged. */
int ferryi_config_check(const struct ferry_config *cfg);

/* ------------------------------------------------------------------ time and timers */

uint64_t ferryi_now_ns(const struct ferry_ctx *ctx); /* monotonic, or the test clock */
/*
 * The same clock at the kernel's tick resolution (CLOCK_MONOTONIC_COARSE: a few ms),
 * for stamps only ever compared against intervals of milliseconds or more (idle
 * reaping, probe silence); never ahead of a later ferryi_now_ns(). Test clock: the
 * same. Read once per hold of the context lock (which the caller holds) and per
 * progress pass within it: a message stamps its endpoint several times (use, receipt,
 * probe lists), and each reading is a vDSO call natively and 70 ns in the soft-RoCE
 * VM. Holds are taken in order, so the stamps stay monotonic. A stamp is older by at
 * most one API call or one pass: a hold may span many passes (ferry_cq_wait, the
 * poller's tick), and a probe stamped with a reading from before a long pass would
 * fall due again at once.
 */
uint64_t ferryi_coarse_now_ns(struct ferry_ctx *ctx);
/* The clock of the context's last progress pass: never ahead of ferryi_now_ns(). */
uint64_t ferryi_ctx_pass_ns(const struct ferry_ctx *ctx);

struct ferryi_timer {
	uint64_t due_ns;
	uint64_t seq;                           /* tie-break: arming order      */
	uint32_t heap_idx;                      /* UINT32_MAX when not armed    */
	struct ferryi_list_node ready_link;     /* due, about to run            */
	void (*fn)(struct ferryi_timer *t);     /* runs under ctx lock          */
};
#define FERRYI_TIMER_READY (UINT32_MAX - 1)  /* heap_idx of a due timer     */

void ferryi_timer_init(struct ferryi_timer *t, void (*fn)(struct ferryi_timer *));
void ferryi_timer_arm(struct ferry_ctx *ctx, struct ferryi_timer *t, uint64_t due_ns);
void ferryi_timer_cancel(struct ferry_ctx *ctx, struct ferryi_timer *t);
static inline bool ferryi_timer_armed(const struct ferryi_timer *t)
{
	return t->heap_idx != UINT32_MAX;
}

/* ------------------------------------------------------------------ poll handles */

/* A file descriptor a provider wants events for; embedded in provider state. */
struct ferryi_poll_handle {
	int fd;
	uint32_t events;                                   /* EPOLLIN | EPOLLOUT ... */
	void (*fn)(struct ferryi_poll_handle *h, uint32_t events); /* under ctx lock */
	/*
	 * Set by the provider before ferryi_poll_add when the fd carries no data a
	 * progress hook would not find anyway (a completion channel or CQ wait fd
	 * behind a polled CQ, RDMA connection management), or nothing whose latency
	 * matters (a listening socket, verbs async events). TCP endpoint sockets stay
	 * hot. While a context has only such handles (and the application has not taken
	 * the context fd), progress passes read epoll at most every FERRYI_COLD_EPOLL_NS
	 * (50 us) instead of on every pass: the system call would otherwise dominate an
	 * RDMA ping-pong. Sleeping threads read epoll as always.
	 */
	bool cold;
	/*
	 * Set and cleared by the provider, any time under the lock: while set, fn(h,
	 * EPOLLIN) may be called on a busy pass whether or not the fd is ready, and must
	 * then read it without blocking (a TCP socket: one recvmsg that finds nothing
	 * costs what the epoll_wait it replaces costs). While a context has at most
	 * FERRYI_DIRECT_MAX hot handles, all direct and none waiting for EPOLLOUT, busy
	 * passes call them instead of reading epoll (which they then read as if every
	 * handle were cold): a ping-pong saves a system call per message. Clear it while
	 * the fd reports something a read cannot see (a zero-copy error queue).
	 */
	bool direct;
	/*
	 * Set by the provider before ferryi_poll_add on an fd whose readability alone
	 * means a connection waits for us (a listening socket, an rdma_cm event
	 * channel), with nothing to prepare before sleeping on it. The poller thread
	 * sleeps on such fds too, and accepts for an application that is not
	 * progressing when one fires, instead of waking every few ms to look.
	 */
	bool wakes_poller;
	bool parked;                      /* out of epoll: see FERRYI_PARK_PASSES   */
	struct ferryi_list_node hot_link; /* ctx->hot: registered and not cold      */
};

int ferryi_poll_add(struct ferry_ctx *ctx, struct ferryi_poll_handle *h);
int ferryi_poll_mod(struct ferry_ctx *ctx, struct ferryi_poll_handle *h, uint32_t events);
void ferryi_poll_del(struct ferry_ctx *ctx, struct ferryi_poll_handle *h);

/* ------------------------------------------------------------------ provider instances */

struct ferryi_prov_inst {
	const struct ferryi_provider *prov;
	struct ferry_ctx *ctx;
	int index;                   /* position in ctx->provs                      */
	size_t mr_priv_off;          /* its part of each region's allocation        */
	struct ferry_stats stats;    /* updated under ctx lock                      */
	max_align_t priv[];          /* prov->inst_size bytes                       */
};

static inline void *ferryi_inst_priv(struct ferryi_prov_inst *pi) { return pi->priv; }

/* ------------------------------------------------------------------ core messages */

enum ferryi_msg_type {
	FERRYI_MSG_EAGER = 1,   /* user message; tag = user tag                           */
	FERRYI_MSG_RTS,         /* rendezvous announce; payload = struct ferryi_rts + key */
	FERRYI_MSG_FIN,         /* rendezvous finish; aux = sender op id, tag = status   */
	FERRYI_MSG_PROBE,       /* health probe; aux = probe sequence, tag = FERRYI_PROBE_* */
	FERRYI_MSG_PROBE_ACK,   /* answer; aux = probe sequence                          */
	FERRYI_MSG_GOODBYE,     /* the peer closes or reaps; tag = reason (status)       */
	FERRYI_MSG_CREDIT,      /* the receiver consumed eager bytes; aux = byte count   */
	FERRYI_MSG_FIN_ACK,     /* the sender's answer to a finish with status 0 (only to
				   peers with FERRYI_FEAT_RNDV_ACK): aux = sender op id,
				   tag = 0 if the send was still pending (its buffer
				   unchanged while read), else why not               */
	FERRYI_MSG_MAX_,
};

/* PROBE tag bits. */
#define FERRYI_PROBE_PINNED 1ull /* the sender's side is pinned: count it as use */

/* Carried losslessly by every provider with each message. */
struct ferryi_msg {
	uint8_t type;   /* enum ferryi_msg_type */
	uint8_t flags;  /* FERRYI_MSGF_*        */
	uint64_t tag;
	uint64_t aux;
};

enum ferryi_msg_flags {
	FERRYI_MSGF_COMPRESSED = 1u << 0, /* payload is a zstd frame (negotiated)        */
	FERRYI_MSGF_RNDV_OFFSET = 1u << 1, /* RTS: {size, offset, rkey} rather than
					      {size, rkey}: the payload starts at offset
					      in the region (negotiated)                 */
	FERRYI_MSGF_RNDV_GRANTED = 1u << 2, /* RTS: the sender's provider holds the region
					       for this read from the announce to the
					       finish, so the read needs no request first
					       (providers with rndv_grant)              */
};

/* What each side advertises in its provider's handshake. */
struct ferryi_peer_info {
	uint32_t version;           /* ferry protocol version                          */
	uint32_t features;          /* FERRYI_FEAT_*                                   */
	uint32_t idle_timeout_ms;   /* 0 = never reaps                                 */
	uint32_t probe_interval_ms;
	uint64_t max_frame;         /* largest message / one-sided transfer accepted   */
	uint64_t eager_max;         /* largest eager payload accepted                  */
	uint64_t rx_credit;         /* eager bytes (each message charged
				       FERRYI_EAGER_CHARGE + length) the peer may have
				       outstanding unmatched; 0 = no limit advertised  */
};

/* What one eager message costs against the receiver's credit, besides its length. */
#define FERRYI_EAGER_CHARGE 128

enum ferryi_features {
	FERRYI_FEAT_ZSTD = 1u << 0,
	FERRYI_FEAT_PROBES = 1u << 1,
	FERRYI_FEAT_RNDV_OFFSET = 1u << 2, /* accepts FERRYI_MSGF_RNDV_OFFSET announces */
	FERRYI_FEAT_RNDV_ACK = 1u << 3,    /* answers finishes with FERRYI_MSG_FIN_ACK   */
};

#define FERRYI_PROTO_VERSION 1

/* Fills what this context advertises. */
void ferryi_local_info(const struct ferry_ctx *ctx, struct ferryi_peer_info *out);

/* ------------------------------------------------------------------ operations */

/*
 * One posted operation, user-visible or internal. Allocated from the context's slot
 * table: its wire id (ferryi_op_id) is slot | generation << 32 and is looked up with
 * ferryi_op_find(), so an id from the wire is never trusted as a pointer.
 */
struct ferryi_op {
	struct ferryi_list_node link;      /* ep->ops (every op in flight)          */
	struct ferryi_list_node qlink;     /* owner's queue: recv list, provider tx */
	uint32_t slot, gen;
	enum ferry_op_type type;           /* user-visible type                      */
	bool internal;                     /* not reported on a cq: done_fn instead   */
	bool provider_owned;               /* handed to the provider, not yet done   */
	bool completed;
	struct ferry_ep *ep;               /* held while the op lives                 */
	struct ferry_cq *cq;
	void *user_ctx;
	void (*done_fn)(struct ferryi_op *op, int status); /* internal ops            */
	struct ferryi_msg msg;             /* send: what the provider transmits       */
	void *buf;                         /* payload (user buffer or internal)       */
	uint64_t len;
	uint64_t tag, tag_mask;            /* recv                                    */
	uint64_t xfer;                     /* bytes moved, reported as len            */
	struct ferry_mr *mr;               /* local region (held) or NULL             */
	struct ferry_rkey *rkey;           /* remote region (held) or NULL            */
	uint64_t remote_offset;
	unsigned flags;                    /* FERRY_OP_*                              */
	struct ferryi_timer deadline;
	bool mr_internal;                  /* op->mr was registered for this op only  */
	bool key_lent;                     /* read: the peer sent op->rkey for this very
					      read (rendezvous) and keeps its region
					      until our finish                         */
	bool key_granted;                  /* read: key_lent, and the peer's provider
					      already holds the region for it
					      (FERRYI_MSGF_RNDV_GRANTED)                */
	uint64_t grant_id;                 /* read: key_granted: the sender's op id   */
	bool receiving;                    /* recv: a provider is writing its buffer   */
	/* rendezvous */
	struct ferryi_op *rndv_peer;       /* recv <-> its internal read, either way   */
	uint64_t rndv_remote_id;           /* receiver: the sender's op id             */
	struct ferry_mr *rndv_mr;          /* sender: its buffer, readable by the peer */
	bool rndv_rts_done;                /* sender: the announce went out            */
	bool rndv_fin;                     /* sender: the peer's finish arrived        */
	bool rndv_gone_wait;               /* sender, closed: completes at ep gone     */
	bool rndv_granted;                 /* sender: the provider holds rndv_mr for the
					      peer's read until rndv_release          */
	int rndv_status;                   /* sender: status the finish carried        */
	/* provider scratch: whatever the owning provider needs per op */
	uint64_t prov[12];
	/* Not zeroed by ferryi_op_alloc (written before it is read): keep it last. */
	uint8_t rndv_pack[FERRY_RKEY_MAX + 32]; /* sender: the RTS payload             */
};

static inline uint64_t ferryi_op_id(const struct ferryi_op *op)
{
	return (uint64_t)op->slot | ((uint64_t)op->gen << 32);
}

/*
 * Looks up an op in flight on ep by its wire id. Returns NULL (and the caller treats
 * the frame as a protocol error) when the id is unknown, stale or belongs to another
 * endpoint.
 */
struct ferryi_op *ferryi_op_find(struct ferry_ep *ep, uint64_t id);

/* The provider finished an op it owned: status 0 or a negative FERRY_E* code. */
void ferryi_op_done(struct ferryi_op *op, int status);

/* ------------------------------------------------------------------ endpoints */

enum ferryi_ep_state {
	FERRYI_EP_CONNECTING = 1, /* our connect, handshake not done       */
	FERRYI_EP_ACCEPTING,      /* accepted socket/QP, handshake not done */
	FERRYI_EP_CONNECTED,
	FERRYI_EP_CLOSED,         /* closed or failed: ep->status says why  */
};

struct ferry_ep {
	atomic_uint refs;                  /* user holds + ops + pool + accept queue   */
	uint32_t holds;                    /* the user's pins (connect, accept, hold)  */
	struct ferry_ctx *ctx;
	struct ferryi_prov_inst *pi;
	enum ferryi_ep_state state;
	int status;                        /* 0, or why it is closed                   */
	bool provider_gone;                /* provider released everything            */
	int close_reason;                  /* what the core's ops completed with      */
	bool pooled;                       /* in ctx->pool                             */
	bool accepted;                     /* came from a listener                     */
	bool user_closed;
	bool closing;                      /* ferryi_ep_begin_close entered           */
	uint64_t incarnation;              /* increases with every new connection      */
	char peer[FERRYI_URI_MAX];         /* peer URI (as dialled / as accepted)      */
	char scheme[32];                   /* ferry_ep_provider(): "tcp", "ofi+shm"    */
	char pool_key[FERRYI_URI_MAX];     /* URI the pool knows it by                 */
	struct ferryi_peer_info peer_info; /* valid once connected                     */
	struct ferry_listener *listener;   /* accepted from (not held)                 */
	struct ferryi_list_node ctx_link;  /* ctx->eps                                 */
	struct ferryi_list_node pool_link; /* ctx->pool                                */
	struct ferryi_list_node acceptq_link;
	struct ferryi_list_node close_link; /* ctx->closing                            */
	struct ferryi_list ops;            /* every op in flight                       */
	struct ferryi_list recvs;          /* posted receives, in order                */
	struct ferryi_list unexpected;     /* struct ferryi_uxmsg, in arrival order    */
	uint64_t unexpected_bytes;
	uint64_t tx_credit;                /* eager bytes we may still send            */
	uint64_t rx_credit_owed;           /* eager bytes consumed, not yet returned   */
	struct ferryi_list credit_wait;    /* sends waiting for credit, in order       */
	struct ferryi_list rndv_acking;    /* receives read, waiting for FIN_ACK (qlink) */
	uint64_t last_rx_ns;               /* any traffic, for probes                  */
	uint64_t last_use_ns;              /* user traffic, for idle reaping           */
	struct ferryi_list_node idle_link; /* ctx->idle_lru, by last_use_ns            */
	struct ferryi_list_node probe_link; /* ctx->probe_lru (ops in flight or a probe
					      unanswered, or were until the tick
					      looks) or ctx->keepalive_lru (the rest),
					      by probe_base_ns                        */
	uint64_t probe_base_ns;            /* last input, probe sent, or list change   */
	uint32_t probes_unanswered;
	bool probe_watched;                /* on probe_lru, not keepalive_lru          */
	bool peer_pinned;                  /* the peer's last probe/answer said pinned */
	bool told_pinned;                  /* what our last probe/answer told the peer */
	struct ferryi_timer connect_timer;
	max_align_t priv[];                /* provider state: prov->ep_size bytes      */
};

static inline void *ferryi_ep_priv(struct ferry_ep *ep) { return ep->priv; }
static inline struct ferry_ep *ferryi_ep_from_priv(void *priv)
{
	return (struct ferry_ep *)((char *)priv - offsetof(struct ferry_ep, priv));
}

/* Upcalls (ctx lock held). */

/* The handshake finished on either side; info is the peer's advertisement. */
void ferryi_ep_connected(struct ferry_ep *ep, const struct ferryi_peer_info *info);

/*
 * The connection failed (I/O error, protocol error, peer gone, handshake refused).
 * The core logs why, fails every op (calling ep_close), leaves the pool and reports
 * the event. Safe to call more than once and from inside any provider op.
 */
void ferryi_ep_failed(struct ferry_ep *ep, int status, const char *why);

/* The provider has released every op and resource of ep (after ep_close). */
void ferryi_ep_gone(struct ferry_ep *ep);

/*
 * Records evidence that the peer is alive: input of any kind (probes included), or
 * the peer consuming our output (a stream provider whose blocked socket drained). A
 * sender streaming one huge frame hears nothing for a long time and must not declare
 * a peer dead that is busy reading it.
 */
void ferryi_ep_rx_activity(struct ferry_ep *ep);
/*
 * Whether ep has told its peer nothing for a probe interval, counted from told_ns
 * (the provider's last output to the peer). A stream provider asks this while it
 * reads: a peer that streams to us hears nothing else while its own probes wait
 * behind the bytes it already sent (FERRY_PROBE_MISSES intervals of that and it
 * declares us dead, however busily we read), so we send it ferryi_ep_beat().
 */
bool ferryi_ep_beat_due(struct ferry_ep *ep, uint64_t told_ns);
/* An unsolicited probe answer: a sign of life that asks for none back. */
void ferryi_ep_beat(struct ferry_ep *ep);

/*
 * Whether the context admits new endpoints: 0, or FERRY_EDRAINING while draining.
 * Providers call it when validating a peer's handshake and refuse with that status.
 */
int ferryi_ctx_admission(const struct ferry_ctx *ctx);

/* ------------------------------------------------------------------ receive path */

/* Where a message's payload goes; filled by ferryi_rx_begin. */
struct ferryi_rx {
	void *dst;                         /* NULL: read and discard the payload        */
	uint64_t len;                      /* payload length announced by the peer      */
	struct ferryi_msg msg;
	struct ferryi_op *recv;            /* matched receive, if any (core's)          */
	void *ux;                          /* unexpected buffer, if any (core's)        */
	int status;                        /* error the matched receive will get        */
	uint8_t inline_buf[FERRYI_RX_INLINE]; /* control payloads land here            */
};

/*
 * A message header arrived. The core matches it and sets rx->dst: a posted receive's
 * buffer, an unexpected-queue buffer, rx->inline_buf, or NULL (discard). Returns 0, or
 * a negative code when the message is a protocol violation or over a limit: the core
 * has logged it and the provider must fail the endpoint with that code.
 */
int ferryi_rx_begin(struct ferry_ep *ep, const struct ferryi_msg *msg, uint64_t len,
		    struct ferryi_rx *rx);
/* The payload is complete in rx->dst (status 0) or could not be read (< 0). */
void ferryi_rx_end(struct ferry_ep *ep, struct ferryi_rx *rx, int status);
/* Both at once, for providers that have the whole message in memory already. */
int ferryi_rx_msg(struct ferry_ep *ep, const struct ferryi_msg *msg, const void *data,
		  uint64_t len);

/* ------------------------------------------------------------------ memory regions */

struct ferry_mr {
	struct ferry_ctx *ctx;
	atomic_uint refs;               /* the user's registration + ops using it       */
	void *addr;
	size_t len;
	unsigned access;                /* FERRY_ACCESS_*                               */
	uint64_t key;                   /* random 64-bit: unguessable region id         */
	uint32_t generation;            /* changes with every registration              */
	bool dead;                      /* deregistered: refused to peers               */
	bool internal;                  /* registered by the core (rendezvous, cache)   */
	uint32_t remote_users;          /* peer transfers in progress (target side)     */
	struct ferryi_list users;       /* struct ferryi_mr_use of those transfers      */
	struct ferryi_hnode hnode;      /* ctx->mr_by_key                               */
	struct ferryi_rc_ent *cache_ent; /* the registration cache's entry, if cached   */
	struct ferryi_list_node ctx_link;
	void *prov_priv[FERRYI_MAX_PROVS]; /* per provider instance, mr_size bytes each */
};

static inline void *ferryi_mr_priv(const struct ferry_mr *mr, const struct ferryi_prov_inst *pi)
{
	return mr->prov_priv[pi->index];
}

/*
 * Target side of a one-sided operation from a peer: looks up the region by key and
 * checks access and bounds. On success *ptr is the first byte and the region is held
 * (registered as in use by ep through use) until ferryi_mr_remote_put(use). Errors:
 * FERRY_EBADKEY (unknown or deregistered key), FERRY_EACCES, FERRY_ERANGE; each
 * refusal is logged and counted. Deregistration waits for outstanding uses, and after
 * the handshake timeout fails the endpoints still holding one.
 */
struct ferryi_mr_use {
	struct ferryi_list_node link;
	struct ferry_mr *mr;
	struct ferry_ep *ep;
};
int ferryi_mr_remote_get(struct ferry_ep *ep, uint64_t key, uint64_t offset,
			 uint64_t len, unsigned access, struct ferryi_mr_use *use,
			 void **ptr);
void ferryi_mr_remote_put(struct ferryi_mr_use *use);
/* Holds our own region mr for a transfer by ep's peer, as ferryi_mr_remote_get does. */
void ferryi_mr_remote_hold(struct ferry_ep *ep, struct ferry_mr *mr, struct ferryi_mr_use *use);

/* Checks [offset, offset+len) against a region length without overflow. */
static inline bool ferryi_range_ok(uint64_t region_len, uint64_t offset, uint64_t len)
{
	return offset <= region_len && len <= region_len - offset;
}

/* ------------------------------------------------------------------ remote keys */

struct ferryi_rkey_ent {
	uint8_t prov_id;
	uint16_t len;
	const uint8_t *key;             /* points into the rkey's blob copy */
};

struct ferry_rkey {
	struct ferry_ctx *ctx;
	atomic_uint refs;               /* the user + ops using it                    */
	uint64_t region_len;
	uint64_t region_key;
	uint32_t generation;
	unsigned access;
	int nent;
	struct ferryi_rkey_ent ent[FERRYI_MAX_PROVS];
	struct ferryi_list_node ctx_link;
	size_t blob_len;
	uint8_t blob[];
};

/* The key bytes for one provider, or NULL if the blob has none for it. */
const void *ferryi_rkey_key(const struct ferry_rkey *rk, enum ferryi_provider_id id,
			    size_t *len);

/* Decoding an rkey blob without a context (for the fuzzer and unit tests). */
int ferryi_rkey_decode(const void *blob, size_t len, struct ferry_rkey *out_hdr);

/* ------------------------------------------------------------------ listeners */

struct ferryi_listener_part {
	struct ferry_listener *listener;
	struct ferryi_prov_inst *pi;
	char uri[FERRYI_URI_MAX];
	/* Set by listen(): incoming connections show on a wakes_poller fd. Parts
	 * without it make the poller tick to accept for applications that do not
	 * progress. */
	bool watched;
	max_align_t priv[];             /* prov->listener_size bytes */
};

static inline void *ferryi_lp_priv(struct ferryi_listener_part *lp) { return lp->priv; }

/*
 * An incoming connection on lp: creates its endpoint (state ACCEPTING, provider state
 * zeroed) or returns NULL when a limit refuses it (logged; the provider drops the
 * connection). peer_uri is the remote address as "scheme://host:port".
 */
struct ferry_ep *ferryi_ep_accepted(struct ferryi_listener_part *lp, const char *peer_uri);

/* ------------------------------------------------------------------ context */

/* Runs with no lock after ferryi_ctx_unlock: user callbacks queued under the lock. */
struct ferryi_deferred {
	struct ferryi_list_node link;
	enum { FERRYI_DEFER_EVENT, FERRYI_DEFER_ACCEPT } kind;
	struct ferry_ep *ep;            /* held                  */
	struct ferry_listener *listener;
	struct ferry_event ev;
	char detail[160];
};

void ferryi_ctx_lock(struct ferry_ctx *ctx);
void ferryi_ctx_unlock(struct ferry_ctx *ctx); /* also runs deferred callbacks */
void ferryi_ctx_assert_locked(const struct ferry_ctx *ctx);

/* Wakes threads sleeping in ferry_cq_wait/ferry_connect and makes the ctx fd readable. */
void ferryi_ctx_wake(struct ferry_ctx *ctx);
/*
 * Asks for a progress pass soon: wakes sleepers and the exported fd if there are
 * any (a provider holding back work for its progress hook, e.g. FERRY_OP_MORE).
 */
void ferryi_ctx_want_progress(struct ferry_ctx *ctx);
/* Whether the application asked for ferry_ctx_fd() (it may sleep on it any time). */
bool ferryi_ctx_fd_exported(const struct ferry_ctx *ctx);
/* ferry_ctx_destroy is tearing the context down (ctx lock held): nothing may wait. */
bool ferryi_ctx_destroying(const struct ferry_ctx *ctx);
/*
 * Whether a thread may be asleep on the context's fds: one is inside a sleep (from
 * the providers' prepare_sleep until it holds the lock again), or the fd is exported.
 * Exact under the context lock; a provider that tells peers to spare it wake-ups
 * while this is false must tell them again in prepare_sleep.
 */
bool ferryi_ctx_may_sleep(const struct ferry_ctx *ctx);
/*
 * Whether the application waits for this context by sleeping (a thread sleeps now or
 * did within FERRYI_CTX_SLEPT_NS, or it sleeps on the exported fd) rather than by
 * polling: a protocol that trades a round trip for less queueing pays a wake-up per
 * round trip there. Called with the lock held.
 */
#define FERRYI_CTX_SLEPT_NS (100ull * 1000 * 1000)
bool ferryi_ctx_sleeps(struct ferry_ctx *ctx);

/* Stats of a provider instance, for the provider's own counters. */
static inline struct ferry_stats *ferryi_stats(struct ferryi_prov_inst *pi)
{
	return &pi->stats;
}

#endif /* FERRY_LIB_CORE_H */
