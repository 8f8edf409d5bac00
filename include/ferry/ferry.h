/*
 * ferry.h - the whole public API of ferry.
 *
 * ferry moves buffers between processes and machines with as few copies as the
 * hardware allows: RDMA verbs where a NIC (or soft-RoCE) is present, libfabric where
 * that fits, and TCP everywhere else, all behind one endpoint API.
 *
 * Conventions
 *   - Every function that can fail returns int: 0 (or a non-negative count), or a
 *     negative FERRY_E* code. FERRY_E* codes equal -errno where an errno exists.
 *   - Operations (send, recv, write, read) are asynchronous. A call that returns 0 has
 *     posted the operation, and that operation is reported exactly once on its
 *     completion queue: with status 0, or with a negative FERRY_E* status (error,
 *     timeout, cancel). A call that returns an error posted nothing and reports
 *     nothing.
 *   - Progress is driven by the caller: ferry_cq_poll(), ferry_cq_wait() and
 *     ferry_progress() move data. Set FERRY_PROGRESS_THREAD=1 (or
 *     ferry_config.progress_thread) for applications that never poll.
 *   - Thread safety: every function may be called from any thread at any time unless
 *     its documentation says otherwise; a context serialises its own state. Callbacks
 *     (accept, event) run on a thread that is driving progress, with no ferry lock held;
 *     they may call any ferry function except ferry_ctx_destroy() on their own context.
 *   - The library never frees or retains user buffers beyond the operation that names
 *     them: a buffer passed to an operation must stay valid until its completion has
 *     been polled.
 *
 * Valid C (C99 and later) and C++.
 */
#ifndef FERRY_FERRY_H
#define FERRY_FERRY_H

#include <errno.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) && !defined(FERRY_API)
#define FERRY_API __attribute__((visibility("default")))
#elif !defined(FERRY_API)
#define FERRY_API
#endif

#define FERRY_VERSION_MAJOR 0
#define FERRY_VERSION_MINOR 1
#define FERRY_VERSION_PATCH 0

/** Returns the library version as "MAJOR.MINOR.PATCH". Any thread. */
FERRY_API const char *ferry_version(void);

/* ------------------------------------------------------------------ errors */

/*
 * FERRY_ERRORS(X): X(NAME, value, description). The single list behind the error
 * codes, ferry_strerror() and ferry_errname(). Values are negative; those with an errno
 * equivalent equal -errno, the others are ferry's own, below -1000.
 */
#define FERRY_ERRORS(X)                                                              \
	X(OK, 0, "success")                                                          \
	X(EPERM, -EPERM, "operation not permitted")                                  \
	X(ENOENT, -ENOENT, "no such object")                                         \
	X(EINTR, -EINTR, "interrupted")                                              \
	X(EIO, -EIO, "I/O error")                                                    \
	X(EAGAIN, -EAGAIN, "resource temporarily unavailable, try again")            \
	X(ENOMEM, -ENOMEM, "out of memory")                                          \
	X(EACCES, -EACCES, "access denied by the region's access flags")             \
	X(EFAULT, -EFAULT, "bad address")                                            \
	X(EBUSY, -EBUSY, "object busy: still has live children or operations")       \
	X(EEXIST, -EEXIST, "already exists")                                         \
	X(ENODEV, -ENODEV, "no usable device for this provider")                     \
	X(EINVAL, -EINVAL, "invalid argument")                                       \
	X(ERANGE, -ERANGE, "offset or length outside the registered region")         \
	X(ENOSYS, -ENOSYS, "not supported by this build or provider")                \
	X(EPROTO, -EPROTO, "protocol error: malformed or unexpected input from peer") \
	X(EMSGSIZE, -EMSGSIZE, "message larger than the posted receive buffer")      \
	X(EPROTONOSUPPORT, -EPROTONOSUPPORT, "unknown or unavailable provider")      \
	X(EADDRINUSE, -EADDRINUSE, "address already in use")                         \
	X(EADDRNOTAVAIL, -EADDRNOTAVAIL, "address not available")                    \
	X(ENETUNREACH, -ENETUNREACH, "network unreachable")                          \
	X(ECONNABORTED, -ECONNABORTED, "connection aborted")                         \
	X(ECONNRESET, -ECONNRESET, "connection reset by peer")                       \
	X(ENOBUFS, -ENOBUFS, "limit reached (memory budget or capacity)")            \
	X(ENOTCONN, -ENOTCONN, "endpoint is not connected (closed or failed)")       \
	X(ESHUTDOWN, -ESHUTDOWN, "context or endpoint is shutting down")             \
	X(ETIMEDOUT, -ETIMEDOUT, "timed out")                                        \
	X(ECONNREFUSED, -ECONNREFUSED, "connection refused")                         \
	X(EHOSTUNREACH, -EHOSTUNREACH, "host unreachable or name not resolved")      \
	X(ECANCELED, -ECANCELED, "operation canceled")                               \
	X(EBADKEY, -1001, "remote key unknown, stale or for another region")         \
	X(EPEERDEAD, -1002, "peer declared dead (missed health probes)")             \
	X(EVERSION, -1003, "peer speaks an incompatible protocol version")           \
	X(EDRAINING, -1004, "peer or context is draining and refuses new work")

enum ferry_err {
#define FERRY_ERR_ENUM_(name, value, text) FERRY_##name = (value),
	FERRY_ERRORS(FERRY_ERR_ENUM_)
#undef FERRY_ERR_ENUM_
};

/**
 * Describes an error code (0 or a negative FERRY_E* value; a positive errno is
 * accepted too). Never NULL; unknown codes give "unknown error". Any thread.
 */
FERRY_API const char *ferry_strerror(int err);

/** The code's name without prefix ("ETIMEDOUT"), or "UNKNOWN". Any thread. */
FERRY_API const char *ferry_errname(int err);

/* ------------------------------------------------------------------ objects */

struct ferry_ctx;      /* one per process or thread: config, providers, queues   */
struct ferry_listener; /* accepts endpoints on one or more URIs                  */
struct ferry_ep;       /* a connection to one peer over one provider            */
struct ferry_mr;       /* a registered memory region                            */
struct ferry_rkey;     /* a peer's region, unpacked from its rkey blob          */
struct ferry_cq;       /* a completion queue                                    */

/* ------------------------------------------------------------------ config */

enum ferry_log_level {
	FERRY_LOG_OFF = 0,
	FERRY_LOG_ERROR,
	FERRY_LOG_WARN,
	FERRY_LOG_INFO,
	FERRY_LOG_DEBUG,
	FERRY_LOG_TRACE,
};

/** Whether a connection may fall back from RDMA (verbs, ofi) to TCP. */
enum ferry_fallback {
	FERRY_FALLBACK_PREFER = 0, /* try RDMA first, fall back to TCP (logged, counted) */
	FERRY_FALLBACK_REQUIRE,    /* RDMA or fail: never fall back                      */
	FERRY_FALLBACK_TCP_ONLY,   /* TCP only, even where RDMA exists                   */
};

enum ferry_compress {
	FERRY_COMPRESS_OFF = 0,
	FERRY_COMPRESS_ON,
	FERRY_COMPRESS_AUTO, /* only where a sampled ratio says it pays */
};

enum ferry_event_type {
	FERRY_EVENT_EP_CONNECTED = 1, /* an endpoint (either side) finished its handshake */
	FERRY_EVENT_EP_CLOSED,        /* closed by the user or by the peer's goodbye      */
	FERRY_EVENT_EP_FAILED,        /* connection error, protocol error, peer death     */
	FERRY_EVENT_EP_REAPED,        /* closed for idleness                              */
	FERRY_EVENT_FALLBACK,         /* a connect fell back to another provider          */
};

struct ferry_event {
	enum ferry_event_type type;
	struct ferry_ep *ep; /* valid only during the callback                          */
	int status;          /* 0 or the FERRY_E* reason                                */
	const char *detail;  /* human-readable reason, valid only during the callback   */
};

/**
 * Event callback: runs on a progress-driving thread with no ferry lock held.
 * The ep is borrowed: call ferry_ep_hold() to keep it past the callback.
 */
typedef void (*ferry_event_fn)(struct ferry_ctx *ctx, const struct ferry_event *ev,
			       void *arg);

/*
 * Context configuration. Fill with ferry_config_init(), change what you need, pass to
 * ferry_ctx_create(). Every field has an environment variable; a set variable
 * overrides the field (defaults < this struct < environment). README lists them all.
 */
struct ferry_config {
	enum ferry_log_level log_level;  /* FERRY_LOG=off|error|warn|info|debug|trace|0-5
					    (warn)                                        */
	enum ferry_fallback fallback;    /* FERRY_FALLBACK=prefer|require|tcp (prefer)     */
	const char *providers;           /* FERRY_PROVIDERS="tcp,verbs,ofi" to restrict;
					    NULL = every provider built in               */
	uint32_t connect_timeout_ms;     /* FERRY_CONNECT_TIMEOUT_MS (10000): whole connect */
	uint32_t handshake_timeout_ms;   /* FERRY_HANDSHAKE_TIMEOUT_MS (5000)               */
	uint32_t idle_timeout_s;         /* FERRY_IDLE_TIMEOUT (30); 0 = never reap         */
	uint32_t probe_interval_ms;      /* FERRY_PROBE_INTERVAL_MS (1000); 0 = no probes.
					    The cadence for endpoints with operations in
					    flight (or a probe unanswered)              */
	uint32_t probe_misses;           /* FERRY_PROBE_MISSES (3)                          */
	uint32_t probe_idle_interval_ms; /* FERRY_PROBE_IDLE_INTERVAL_MS (30000): the
					    keepalive cadence for endpoints with nothing
					    in flight (held or not); an unanswered
					    keepalive switches to probe_interval_ms.
					    0 = idle endpoints are not probed            */
	uint32_t reconnect_initial_ms;   /* FERRY_RECONNECT_INITIAL_MS (1000)               */
	uint32_t reconnect_max_ms;       /* FERRY_RECONNECT_MAX_MS (30000)                  */
	double reconnect_multiplier;     /* FERRY_RECONNECT_MULTIPLIER (2.0)                */
	double reconnect_jitter;         /* FERRY_RECONNECT_JITTER (0.2), fraction          */
	uint32_t reconnect_attempts;     /* FERRY_RECONNECT_ATTEMPTS (5)                    */
	uint32_t pool_max;               /* FERRY_POOL_MAX (1024) pooled endpoints          */
	uint32_t listen_backlog;         /* FERRY_LISTEN_BACKLOG (1024)                     */
	uint32_t max_endpoints;          /* FERRY_MAX_ENDPOINTS (65536) open at once        */
	uint64_t eager_max;              /* FERRY_EAGER_MAX (65536): larger sends go by
					    rendezvous; providers may lower it           */
	uint64_t max_frame;              /* FERRY_MAX_FRAME (1 TiB): largest message or
					    one-sided transfer this side accepts         */
	uint64_t unexpected_max;         /* FERRY_UNEXPECTED_MAX (64 MiB): bytes of unmatched
					    eager messages buffered per endpoint. Peers
					    learn it at the handshake and hold their
					    eager sends back (flow control) rather than
					    exceed it; a peer that exceeds it anyway
					    fails the endpoint with FERRY_ENOBUFS        */
	enum ferry_compress compress;    /* FERRY_COMPRESS=off|on|auto (off)                */
	int compress_level;              /* FERRY_COMPRESS_LEVEL (1)                        */
	uint64_t compress_min;           /* FERRY_COMPRESS_MIN (16384) bytes before auto
					    considers compressing                         */
	int progress_thread;             /* FERRY_PROGRESS_THREAD=0|1 (0)                   */
	uint32_t cq_size;                /* FERRY_CQ_SIZE (65536) entries; a full queue
					    makes new posts fail with FERRY_EAGAIN        */
	ferry_event_fn event_fn;         /* no variable; NULL = no events                   */
	void *event_arg;
};

/** Fills cfg with the defaults listed above (no environment applied). Any thread. */
FERRY_API void ferry_config_init(struct ferry_config *cfg);

/**
 * Applies FERRY_* environment variables to cfg (ferry_ctx_create() does this itself;
 * exposed so tools can show the effective configuration). A malformed or out-of-range
 * value is logged with the variable's name and leaves its field unchanged; the other
 * variables still apply, and the call then returns FERRY_EINVAL (else 0). Not
 * thread-safe against setenv().
 */
FERRY_API int ferry_config_from_env(struct ferry_config *cfg);

/**
 * Writes the configuration a context created from cfg (NULL: the defaults) would use
 * with the current environment: every FERRY_* variable the core reads, the fields of
 * struct ferry_config and the ones that come from the environment only
 * (FERRY_ZEROCOPY_MIN, FERRY_REG_CACHE_*, ...), one line each,
 *     FERRY_NAME=value  # default D[; set in the environment]
 * with values in a form the variable accepts back. Provider tunables (FERRY_VERBS_*,
 * FERRY_OFI_*) are read by the providers and not listed. A malformed variable is
 * logged and ignored, as by ferry_config_from_env(): its line shows the value in use.
 * @return 0, FERRY_EINVAL (out is NULL, or a malformed variable), FERRY_EIO (write
 *         failed). Not thread-safe against setenv().
 */
FERRY_API int ferry_config_print(const struct ferry_config *cfg, FILE *out);

/* ------------------------------------------------------------------ context */

/**
 * Creates a context: applies cfg (NULL = defaults) and the environment, opens every
 * provider that is built in, allowed and has a device. A provider that cannot open is
 * logged at info level and skipped; creation fails only if none opens. The ofi
 * provider is the exception: loading libfabric is slow (0.35 s here), so it opens at
 * its first use, a URI that names it (ferry_listen(), ferry_connect()) or the first
 * ferry_mr_pack(), and with the context only when no other provider is allowed. If it
 * cannot open then, that call sees FERRY_EPROTONOSUPPORT (URIs) or an rkey without
 * its key, as if it had not been allowed.
 *
 * @param cfg   configuration, copied; NULL for defaults
 * @param out   receives the context; the caller owns it and must destroy it
 * @return 0, FERRY_EINVAL (bad config), FERRY_ENOMEM, FERRY_ENODEV (no provider)
 */
FERRY_API int ferry_ctx_create(const struct ferry_config *cfg, struct ferry_ctx **out);

/**
 * Destroys a context and everything it owns: listeners, endpoints, memory regions,
 * rkeys and completion queues. Operations still in flight complete with
 * FERRY_ECANCELED; completions nobody has polled are discarded (counted in
 * ferry_stats.completions_discarded). To see every completion, close the endpoints and
 * poll before destroying. Handles to the context's objects are invalid afterwards.
 * NULL is accepted. Call from any thread that is not inside a ferry callback and not
 * concurrently with other calls on this context.
 */
FERRY_API void ferry_ctx_destroy(struct ferry_ctx *ctx);

/**
 * Drives progress on every provider once without blocking: moves data, completes
 * operations, runs callbacks. Returns the number of completions generated (>= 0) or a
 * negative error. Any thread.
 */
FERRY_API int ferry_progress(struct ferry_ctx *ctx);

/**
 * A file descriptor that becomes readable when the context has work to do (network
 * input, completions to poll, timers). Add it to epoll/select/asyncio with EPOLLIN;
 * when readable, call ferry_progress() or ferry_cq_poll(). Level-triggered. Owned by
 * the context: do not close it. Any thread.
 */
FERRY_API int ferry_ctx_fd(struct ferry_ctx *ctx);

enum ferry_health {
	FERRY_HEALTH_SERVING = 0,  /* accepting new endpoints                               */
	FERRY_HEALTH_DRAINING = 1, /* refusing new endpoints (peers get FERRY_EDRAINING)    */
};

/** The context's health state, as peers see it in their handshake. Any thread. */
FERRY_API enum ferry_health ferry_ctx_health(struct ferry_ctx *ctx);

/**
 * Graceful drain: from now on new endpoints are refused (a peer's connect fails with
 * FERRY_EDRAINING, which ferry_health reports), operations in flight get up to grace_ms
 * to finish while this call drives progress, then every endpoint is closed and what is
 * still in flight completes with FERRY_ESHUTDOWN. Listeners stay open so that health
 * checks are answered. The context stays usable for polling the completions.
 * @return 0 when everything finished within the grace period, FERRY_ETIMEDOUT when
 *         some operations had to be failed. Any thread except inside a callback.
 */
FERRY_API int ferry_ctx_drain(struct ferry_ctx *ctx, int grace_ms);

/** The effective configuration (after the environment). Any thread. */
FERRY_API const struct ferry_config *ferry_ctx_config(const struct ferry_ctx *ctx);

/* ------------------------------------------------------------------ completion queues */

enum ferry_op_type {
	FERRY_OP_SEND = 1,
	FERRY_OP_RECV,
	FERRY_OP_WRITE,
	FERRY_OP_READ,
};

struct ferry_completion {
	void *user_ctx;          /* the pointer passed when the operation was posted      */
	struct ferry_ep *ep;     /* the operation's endpoint; borrowed: valid while the
				    caller holds its own reference                       */
	int status;              /* 0, or a negative FERRY_E* code                        */
	enum ferry_op_type type;
	uint64_t tag;            /* recv: the matched message's tag; send: the tag sent   */
	uint64_t len;            /* bytes moved (recv: the message length)                */
};

/** The context's default completion queue (owned by the context). Any thread. */
FERRY_API struct ferry_cq *ferry_ctx_cq(struct ferry_ctx *ctx);

/**
 * Creates an additional completion queue, for example one per thread or one for
 * control traffic apart from bulk transfers. Operations name it in ferry_op_attr.
 * @return 0, FERRY_ENOMEM
 */
FERRY_API int ferry_cq_create(struct ferry_ctx *ctx, struct ferry_cq **out);

/**
 * Destroys a completion queue created with ferry_cq_create(). Refuses with
 * FERRY_EBUSY while operations that report to it are in flight or completions wait
 * in it. The default queue cannot be destroyed (FERRY_EINVAL).
 */
FERRY_API int ferry_cq_destroy(struct ferry_cq *cq);

/**
 * Drives progress once and moves up to max completions into out.
 * @return the number of completions (0..max), or a negative error. Any thread; several
 *         threads may poll one queue, each completion is returned once.
 */
FERRY_API int ferry_cq_poll(struct ferry_cq *cq, struct ferry_completion *out, int max);

/**
 * Like ferry_cq_poll() but sleeps (in epoll, not spinning) until at least one
 * completion is available or timeout_ms passes (-1 = forever, 0 = poll once).
 * @return number of completions (>= 1), FERRY_ETIMEDOUT, or another negative error.
 */
FERRY_API int ferry_cq_wait(struct ferry_cq *cq, struct ferry_completion *out, int max,
			    int timeout_ms);

/** Same as ferry_ctx_fd() of the queue's context (progress is context-wide). */
FERRY_API int ferry_cq_fd(struct ferry_cq *cq);

/* ------------------------------------------------------------------ memory regions */

enum ferry_access {
	FERRY_ACCESS_LOCAL = 0,            /* local use only (always implied)    */
	FERRY_ACCESS_REMOTE_READ = 1u << 0, /* peers may ferry_read() from it     */
	FERRY_ACCESS_REMOTE_WRITE = 1u << 1, /* peers may ferry_write() into it   */
};

/** Largest blob ferry_mr_pack() produces. */
#define FERRY_RKEY_MAX 512

/**
 * Registers [addr, addr+len) with every open provider (one that opens later, see
 * ferry_ctx_create(), registers every live region when it opens). The memory stays
 * the caller's; it must stay valid until ferry_mr_dereg(). len may exceed a device's
 * maximum registration size: the region is split transparently.
 * @param access  FERRY_ACCESS_* flags that peers holding the rkey get
 * @return 0, FERRY_EINVAL (len 0, NULL addr), FERRY_ENOMEM, FERRY_EPERM (pinning
 *         refused, e.g. RLIMIT_MEMLOCK: the log names it)
 */
FERRY_API int ferry_mr_reg(struct ferry_ctx *ctx, void *addr, size_t len,
			   unsigned access, struct ferry_mr **out);

/**
 * Deregisters a region. Remote access through its rkeys stops at once: a later write
 * or read by a peer is refused with FERRY_EBADKEY, never served from this memory. A
 * peer's transfer already in progress on it is waited for (driving progress) up to
 * FERRY_HANDSHAKE_TIMEOUT_MS; after that the endpoint carrying it is failed, so the
 * call never blocks longer. Local operations already posted on it keep the region
 * alive; on RDMA providers they may complete with an error. The handle is invalid
 * afterwards.
 * @return 0, FERRY_EINVAL (NULL, or deregistered already)
 */
FERRY_API int ferry_mr_dereg(struct ferry_mr *mr);

/** Start address and length of a region. Any thread. */
FERRY_API void *ferry_mr_addr(const struct ferry_mr *mr);
FERRY_API size_t ferry_mr_len(const struct ferry_mr *mr);

/**
 * Packs a portable remote key ("rkey" blob) for the region: the region's length,
 * access flags and a generation, plus each open provider's key; a provider still
 * waiting for its first use (ofi, see ferry_ctx_create()) is opened first, so the blob
 * works over every provider the context allows. Send the blob to a peer by
 * any means (for example a ferry_send()); the peer unpacks it with ferry_rkey_unpack().
 * Keys are unguessable; they never contain a usable pointer for TCP.
 * @param buf   receives the blob; FERRY_RKEY_MAX bytes always suffice
 * @param len   in: size of buf; out: bytes written (or needed, with FERRY_ENOBUFS)
 */
FERRY_API int ferry_mr_pack(const struct ferry_mr *mr, void *buf, size_t *len);

/**
 * Unpacks a peer's rkey blob. The blob is validated (magic, version, lengths); a
 * malformed one gives FERRY_EPROTO. The result is used with ferry_write() and
 * ferry_read() on an endpoint to the peer that packed it.
 * @param out  receives the rkey; free it with ferry_rkey_destroy()
 */
FERRY_API int ferry_rkey_unpack(struct ferry_ctx *ctx, const void *blob, size_t len,
				struct ferry_rkey **out);

/** Length of the remote region an rkey names. */
FERRY_API uint64_t ferry_rkey_len(const struct ferry_rkey *rkey);

/**
 * Frees an unpacked rkey. Operations already posted with it are unaffected (they copy
 * what they need). NULL is accepted.
 */
FERRY_API void ferry_rkey_destroy(struct ferry_rkey *rkey);

/* ------------------------------------------------------------------ listeners */

/**
 * Accept callback: runs on a progress-driving thread, no ferry lock held. The callee
 * receives one reference to ep and must eventually ferry_ep_release() it (or close it).
 */
typedef void (*ferry_accept_fn)(struct ferry_listener *l, struct ferry_ep *ep,
				void *arg);

struct ferry_listen_attr {
	ferry_accept_fn accept_fn; /* NULL: endpoints wait in ferry_listener_accept()'s queue */
	void *accept_arg;
	uint32_t max_pending;      /* accept-queue bound (0 = 1024); beyond it new
				      connections are refused and logged                 */
	uint32_t max_connections;  /* live endpoints from this listener (0 = no limit
				      other than FERRY_MAX_ENDPOINTS)                     */
};

/**
 * Listens on one URI or a comma-separated list ("tcp://0.0.0.0:0,verbs://10.0.0.1:0";
 * port 0 picks a free port). "auto://HOST:PORT" listens on every open provider.
 * A URI whose provider is absent fails the whole call with FERRY_EPROTONOSUPPORT
 * unless it came from auto://.
 * @param attr  NULL = accept queue with defaults
 * @return 0, FERRY_EINVAL (bad URI), FERRY_EADDRINUSE, FERRY_EPROTONOSUPPORT, ...
 */
FERRY_API int ferry_listen(struct ferry_ctx *ctx, const char *uris,
			   const struct ferry_listen_attr *attr,
			   struct ferry_listener **out);

/**
 * The printable address peers pass to ferry_connect(): every URI the listener listens
 * on, with actual ports, separated by commas, best provider first
 * ("verbs://10.0.0.1:4791,tcp://10.0.0.1:4791"). A wildcard host (0.0.0.0) is
 * reported as such. Any thread.
 * @param len  in: size of buf; out: length of the string without the NUL (or needed)
 * @return 0 or FERRY_ENOBUFS
 */
FERRY_API int ferry_listener_addr(const struct ferry_listener *l, char *buf,
				  size_t *len);

/**
 * Takes the next accepted endpoint from the accept queue (listeners without
 * accept_fn), waiting up to timeout_ms (-1 forever, 0 no wait) while driving progress.
 * @param ep  receives one reference, which the caller releases or closes
 * @return 0, FERRY_ETIMEDOUT, FERRY_ESHUTDOWN (listener closed), FERRY_EINVAL
 */
FERRY_API int ferry_listener_accept(struct ferry_listener *l, struct ferry_ep **ep,
				    int timeout_ms);

/**
 * Stops listening and frees the listener. Endpoints already accepted stay open;
 * endpoints in the accept queue are closed. NULL is accepted.
 */
FERRY_API void ferry_listener_close(struct ferry_listener *l);

/* ------------------------------------------------------------------ endpoints */

enum ferry_connect_flags {
	FERRY_CONNECT_PRIVATE = 1u << 0, /* a new endpoint, outside the pool, never shared */
};

struct ferry_connect_attr {
	unsigned flags;      /* FERRY_CONNECT_* */
	int timeout_ms;      /* 0 = config connect_timeout_ms; covers every attempt and
				every URI in a list                                     */
};

/**
 * Connects to a peer: uri is one URI, a comma-separated list tried in order, or
 * auto://HOST:PORT (the best provider both sides have, TCP as the fallback, as the
 * fallback policy allows). Blocks (driving progress) until connected, failed or timed
 * out. A live, healthy pooled endpoint to the same URI is reused.
 * @param attr  NULL = pooled, config timeout
 * @param out   receives one reference ("hold") to the endpoint; give it back with
 *              ferry_ep_release() (the endpoint stays pooled) or ferry_ep_close()
 * @return 0, FERRY_EINVAL (bad URI), FERRY_EPROTONOSUPPORT (no such provider, or not
 *         allowed by the fallback policy), FERRY_ECONNREFUSED, FERRY_EHOSTUNREACH,
 *         FERRY_ETIMEDOUT, FERRY_EVERSION, FERRY_EPROTO, FERRY_EDRAINING
 */
FERRY_API int ferry_connect(struct ferry_ctx *ctx, const char *uri,
			    const struct ferry_connect_attr *attr, struct ferry_ep **out);

/** Takes one more reference (a pin): a held endpoint is never reaped. Any thread. */
FERRY_API void ferry_ep_hold(struct ferry_ep *ep);

/**
 * Gives back one reference. When no user reference and no operation remains, a pooled
 * endpoint becomes idle (reaped after FERRY_IDLE_TIMEOUT); a private or failed one is
 * freed. Any thread. NULL is accepted.
 */
FERRY_API void ferry_ep_release(struct ferry_ep *ep);

/**
 * Closes the endpoint (idempotent): says goodbye to the peer, fails every operation
 * still in flight with FERRY_ECANCELED, drops the messages that arrived unmatched
 * (logged), removes it from the pool, and gives back the caller's reference. Other
 * holders see FERRY_ENOTCONN on new posts. The peer can still receive what it had
 * received from us before the goodbye (ferry_recv). A rendezvous send whose buffer
 * the peer is reading at that moment completes (FERRY_ECANCELED) only once nothing
 * can read the buffer any more: on libfabric when the peer says its read is over, or
 * fails, or after FERRY_HANDSHAKE_TIMEOUT_MS (logged).
 */
FERRY_API void ferry_ep_close(struct ferry_ep *ep);

/** Name of the provider the endpoint runs on ("tcp", "verbs", "ofi+tcp"). */
FERRY_API const char *ferry_ep_provider(const struct ferry_ep *ep);

/** The peer's URI as connected to or accepted from (printable, owned by ep). */
FERRY_API const char *ferry_ep_peer(const struct ferry_ep *ep);

/** 0 while the endpoint is usable, else the FERRY_E* reason it is not. */
FERRY_API int ferry_ep_status(const struct ferry_ep *ep);

/* ------------------------------------------------------------------ operations */

enum ferry_op_flags {
	FERRY_OP_COMPRESS = 1u << 0,    /* compress this payload if the peer agreed       */
	FERRY_OP_NO_COMPRESS = 1u << 1, /* never compress this payload                    */
	/*
	 * More posts on this endpoint follow at once: the provider may hold this one
	 * back and send it together with the next, so a burst of small messages costs
	 * one system call rather than one each (libfabric's FI_MORE). What is held goes
	 * out with the next post on the endpoint without the flag, or at the next
	 * progress pass of the context (ferry_progress, ferry_cq_poll, ferry_cq_wait);
	 * threads sleeping in ferry_cq_wait or on ferry_ctx_fd() are woken for it.
	 * Providers without a use for it ignore it.
	 */
	FERRY_OP_MORE = 1u << 2,
};

/** Optional per-operation attributes; NULL means all defaults. */
struct ferry_op_attr {
	struct ferry_cq *cq;    /* NULL = the context's default queue                      */
	uint32_t timeout_ms;    /* 0 = no deadline; past it: FERRY_ETIMEDOUT              */
	unsigned flags;         /* FERRY_OP_*                                              */
};

/**
 * Sends len bytes from buf with a tag. The buffer needs no registration. Small sends
 * are copied or written at once; larger ones go by rendezvous (zero-copy). Completes
 * when buf may be reused. A rendezvous send that ends without the receiver's finish
 * (its deadline, a close) is never delivered afterwards: a receiver that reads it late
 * fails (FERRY_ECANCELED or FERRY_EBADKEY).
 * @return 0 (posted), FERRY_ENOTCONN (closed or failed endpoint), FERRY_EAGAIN (queue
 *         full), FERRY_EMSGSIZE (above the peer's max frame), FERRY_EINVAL
 */
FERRY_API int ferry_send(struct ferry_ep *ep, const void *buf, size_t len, uint64_t tag,
			 void *user_ctx, const struct ferry_op_attr *attr);

/**
 * Posts a receive for the next message from this endpoint whose tag matches:
 * (msg_tag & tag_mask) == (tag & tag_mask). Messages that arrive before a matching
 * receive wait in the endpoint's unexpected queue (bounded by FERRY_UNEXPECTED_MAX).
 * Receives match in posting order. A message larger than len completes the receive
 * with FERRY_EMSGSIZE (len in the completion is the message's length) and the
 * message is dropped; the sender of a rendezvous-size message (above the eager limit)
 * then completes with FERRY_EMSGSIZE too, an eager sender with 0.
 * Flow control: a sender whose eager messages the receiver has not matched yet waits
 * once it has FERRY_UNEXPECTED_MAX (the receiver's) outstanding; its sends complete
 * when receives are posted here. Sends on one endpoint are delivered in order.
 * After the endpoint is closed by its peer (goodbye) or fails, the messages that had
 * arrived whole and unmatched (eager ones: their senders saw them complete) can still
 * be received, in order, each completing at once, until the endpoint is released;
 * announced rendezvous messages are gone with the peer. On an endpoint closed here,
 * nothing is kept. A rendezvous-size message completes once the sender has confirmed
 * that its send was still pending when the data was read; a sender that gave it up
 * first (deadline, close) makes the receive fail (FERRY_ECANCELED, or the close
 * reason), never deliver bytes the sender may have reused.
 * @return 0 (posted), FERRY_ENOTCONN (closed or failed endpoint with no such message
 *         left), FERRY_EAGAIN (completion queue full), FERRY_EINVAL
 */
FERRY_API int ferry_recv(struct ferry_ep *ep, void *buf, size_t len, uint64_t tag,
			 uint64_t tag_mask, void *user_ctx,
			 const struct ferry_op_attr *attr);

/**
 * One-sided write: copies len bytes from buf into the peer's region named by rkey at
 * remote_offset. The peer's CPU posts nothing. The peer checks the key, the
 * FERRY_ACCESS_REMOTE_WRITE flag and the bounds before touching memory; a refusal
 * completes this operation with FERRY_EBADKEY, FERRY_EACCES or FERRY_ERANGE.
 * Checked locally first against the rkey: an out-of-bounds range returns FERRY_ERANGE
 * and a missing access flag FERRY_EACCES without posting anything.
 * @param mr  a region containing buf (else FERRY_ERANGE), or NULL (ferry registers it
 *            as needed)
 */
FERRY_API int ferry_write(struct ferry_ep *ep, const void *buf, size_t len,
			  struct ferry_mr *mr, const struct ferry_rkey *rkey,
			  uint64_t remote_offset, void *user_ctx,
			  const struct ferry_op_attr *attr);

/** One-sided read: the mirror of ferry_write(); needs FERRY_ACCESS_REMOTE_READ. */
FERRY_API int ferry_read(struct ferry_ep *ep, void *buf, size_t len, struct ferry_mr *mr,
			 const struct ferry_rkey *rkey, uint64_t remote_offset,
			 void *user_ctx, const struct ferry_op_attr *attr);

/* ------------------------------------------------------------------ stats and info */

struct ferry_stats {
	uint64_t bytes_sent, bytes_received;     /* payload bytes (before compression)     */
	uint64_t wire_bytes_sent, wire_bytes_received; /* what the providers moved: messages
						   after compression, with framing, and
						   one-sided data (a read's as received),
						   counted when handed to the fabric   */
	uint64_t ops_posted, ops_completed, ops_failed;
	uint64_t completions_discarded;          /* unpolled at ctx destroy                */
	uint64_t eps_open, eps_pooled, eps_pinned; /* gauges                              */
	uint64_t eps_created, eps_accepted, eps_closed, eps_failed, eps_reaped;
	uint64_t connect_failures, reconnects, fallbacks;
	uint64_t probes_sent, probes_missed, peers_dead;
	uint64_t protocol_errors, rkey_refusals; /* malformed input, refused one-sided ops */
	uint64_t mrs_registered;                 /* gauge                                  */
	uint64_t compressed_in, compressed_out;  /* bytes before / after compression       */
	uint64_t msgs_discarded;                 /* unread messages of reaped endpoints    */
	/*
	 * The registration cache behind internal registrations (rendezvous buffers,
	 * unregistered local buffers of one-sided ops); the same context-wide values
	 * whichever provider is asked for. See FERRY_REG_CACHE_BYTES in the README.
	 */
	uint64_t reg_cache_state;         /* 0 off by configuration, 1 on, 2 unavailable
					     (no userfaultfd here: see the INFO log)       */
	uint64_t reg_cache_hits;          /* internal registrations served by an entry    */
	uint64_t reg_cache_misses;        /* not found: registered (cached if possible)   */
	uint64_t reg_cache_uncached;      /* misses registered for one operation only:
					     larger than the cache, all entries in use, or
					     memory userfaultfd cannot watch (file-backed) */
	uint64_t reg_cache_evictions;     /* unused entries dropped to respect the bounds */
	uint64_t reg_cache_invalidations; /* entries dropped because their memory was
					     unmapped, remapped or discarded               */
	uint64_t reg_cache_bytes, reg_cache_entries; /* gauges: what is cached now       */
	uint64_t beats_sent;              /* unasked signs of life to a peer that streams
					     to us (TCP): its probes wait behind its data  */
	uint64_t rma_window_waits;        /* times a one-sided transfer (or a rendezvous
					     read) waited, in order, for earlier ones to be
					     answered (TCP, FERRY_TCP_RMA_WINDOW)          */
};

/**
 * Fills out with counters for the whole context (provider NULL) or one provider
 * ("tcp", "verbs", "ofi"). @return 0 or FERRY_ENOENT (provider not open, or not yet:
 * ofi opens at its first use). Any thread.
 */
FERRY_API int ferry_stats_get(struct ferry_ctx *ctx, const char *provider,
			      struct ferry_stats *out);

/**
 * Writes the stats of ctx as one JSON object (all providers, keyed by name) into buf.
 * @param len in: size; out: length without NUL (or needed, with FERRY_ENOBUFS)
 */
FERRY_API int ferry_stats_json(struct ferry_ctx *ctx, char *buf, size_t *len);

struct ferry_provider_info {
	const char *name;    /* "tcp", "verbs", "ofi"                                       */
	int built;           /* compiled into this library                                  */
	int status;          /* 0 = usable here, else FERRY_E* why not                      */
	char detail[256];    /* devices found ("rxe0 port 1 ACTIVE 10.0.0.1"), or the reason */
};

/**
 * Describes every provider this library knows, built or not, and whether it can run
 * here (without creating a context).
 * @return the number of providers (may exceed max; only max are written). Any thread.
 */
FERRY_API int ferry_provider_list(struct ferry_provider_info *out, int max);

#ifdef __cplusplus
}
#endif
#endif /* FERRY_FERRY_H */
