/*
 * provider.h - THE provider contract.
 *
 * A provider is a folder under providers/ and one `struct ferryi_provider` (an ops
 * table). The core never includes a provider's headers; a provider includes only
 * lib/core.h and lib/provider.h. Registration (lib/provider.c) checks that every
 * mandatory op is present and rejects the table otherwise.
 *
 * Threads and locks. Every op below except info() is called with the context lock
 * held (ferryi_ctx_assert_locked), from whatever user or ferry thread drives the
 * context. Ops never block: anything that would wait (connect, socket buffers full,
 * send queue full on a QP) is queued and finished by later progress. Upcalls from a
 * provider into the core (lib/core.h, section "upcalls") are made with the same lock
 * held, from inside an op or from progress.
 *
 * Ownership of operations. An op handed to send/write/read belongs to the provider
 * until it calls ferryi_op_done(op, status) exactly once: on success, on a local or
 * remote error, and when the endpoint closes or fails (with the close reason). The
 * core never completes an op the provider owns. The provider may call
 * ferryi_op_done() from inside the posting op (e.g. a TCP send that went out at once).
 *
 * Messages. Providers move three kinds of traffic:
 *   - core messages (struct ferryi_msg): a type, a tag and a payload; the core uses them
 *     for user eager sends, rendezvous announce/finish, probes and goodbyes. Payloads
 *     are at most ferryi_provider.eager_max (or the peer's limit) bytes.
 *   - one-sided write/read on registered memory (zero-copy where the hardware allows).
 *   - the provider's own connection handshake, which must carry and fill
 *     struct ferryi_peer_info.
 * On receive the provider asks the core where a message's payload goes
 * (ferryi_rx_begin) and tells it when the payload is complete (ferryi_rx_end), so a
 * stream provider can read straight into a posted receive buffer.
 */
#ifndef FERRY_LIB_PROVIDER_H
#define FERRY_LIB_PROVIDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct ferry_ctx;
struct ferry_ep;
struct ferry_mr;
struct ferry_provider_info;
struct ferryi_prov_inst;
struct ferryi_listener_part;
struct ferryi_op;
struct ferryi_addr;

/* Stable numeric ids: they are written into rkey blobs. Never renumber. */
enum ferryi_provider_id {
	FERRYI_PROV_TCP = 1,
	FERRYI_PROV_VERBS = 2,
	FERRYI_PROV_OFI = 3,
};

/* Capability bits a provider advertises. */
enum ferryi_provider_caps {
	FERRYI_CAP_RDMA = 1u << 0,     /* counts as RDMA for the fallback policy        */
	FERRYI_CAP_NEED_LOCAL_MR = 1u << 1, /* local buffers of write/read need a mr;
				      the core fills op->mr from its cache if NULL    */
};

struct ferryi_provider {
	const char *name;           /* "tcp", "verbs", "ofi"                           */
	enum ferryi_provider_id id;
	unsigned caps;              /* FERRYI_CAP_*                                    */
	int rank;                   /* preference for auto:// (higher first)          */
	uint64_t eager_max;         /* largest core-message payload it can carry       */
	size_t inst_size;           /* private state per context instance             */
	size_t ep_size;             /* private state per endpoint (ferryi_ep_priv)     */
	size_t listener_size;       /* private state per listener part                */
	size_t mr_size;             /* private state per region (ferryi_mr_priv)       */
	/*
	 * Open the instance at its first use rather than with the context: a URI naming
	 * it (listen, connect) or a user's rkey (ferry_mr_pack, whose blob must work over
	 * every provider). For providers whose opening is slow (libfabric's loading); a
	 * context with no other provider opens it at once. The regions registered before
	 * are registered with it when it opens (mr_reg), in any state they are in.
	 */
	bool open_on_use;

	/*
	 * Whether a URI scheme belongs to this provider ("tcp", "verbs", "ofi+shm", ...).
	 * Mandatory. Called without locks, from any thread.
	 */
	int (*scheme_match)(const char *scheme);

	/*
	 * Fills info->status/detail: can this provider run on this machine (devices,
	 * permissions)? Mandatory. Called without locks, from any thread; may block
	 * briefly (device enumeration).
	 */
	void (*info)(struct ferry_provider_info *info);

	/*
	 * Opens the provider for a context: devices, completion channels, fds (added with
	 * ferryi_poll_add). Returns 0, or FERRY_ENODEV / FERRY_EPERM / ... with a
	 * logged reason; the context then runs without this provider. Mandatory.
	 */
	int (*inst_init)(struct ferryi_prov_inst *pi);

	/* Releases everything inst_init acquired; every ep/listener/mr is gone. Mandatory. */
	void (*inst_fini)(struct ferryi_prov_inst *pi);

	/*
	 * Drives non-fd progress (busy-polled completion queues). Called on every
	 * ferry_progress(), so it must be cheap when idle. Returns the number of events
	 * handled (>= 0). Optional (fd-driven providers get progress through their
	 * poll handles).
	 */
	int (*progress)(struct ferryi_prov_inst *pi);

	/*
	 * A thread is about to sleep in epoll on the context's fds (ferry_cq_wait and
	 * friends): arm whatever notification makes an fd readable when work arrives
	 * (ibv_req_notify_cq, fi_trywait), then look once more for work that came before
	 * the arming. Returns > 0 when work was found (the thread does not sleep), else
	 * 0. Busy-polling threads never get here, so notifications can stay disarmed
	 * while they spin (each notification costs the kernel work and us syscalls).
	 * While ferryi_ctx_fd_exported() the application may sleep on the fd at any
	 * time: notifications must then stay armed; ferry_ctx_fd() calls this once when
	 * it first exports the fd. Optional.
	 */
	int (*prepare_sleep)(struct ferryi_prov_inst *pi);

	/*
	 * Starts listening on addr (port 0 = any). On success writes the actual URI
	 * (scheme://host:port) into uri. Incoming connections create endpoints with
	 * ferryi_ep_accepted(). Mandatory.
	 */
	int (*listen)(struct ferryi_listener_part *lp, const struct ferryi_addr *addr,
		      char *uri, size_t uri_len);

	/* Stops listening and frees what listen acquired. Mandatory. */
	void (*listen_close)(struct ferryi_listener_part *lp);

	/*
	 * Starts a non-blocking connect of ep to addr, including the handshake. Reports
	 * ferryi_ep_connected() or ferryi_ep_failed() later, or from inside this call
	 * (an in-process provider may finish at once). May fail at once with a negative
	 * code (then no upcall follows and the provider keeps nothing of ep). The core
	 * enforces the connect deadline by failing the endpoint. Mandatory.
	 */
	int (*connect)(struct ferry_ep *ep, const struct ferryi_addr *addr);

	/*
	 * Tears the endpoint down (user close, failure, reaping, context destroy). reason
	 * is the status for ops the provider still owns: each completes with it (flushes
	 * may complete later on hardware providers). graceful: the core already sent its
	 * goodbye; let queued data drain if it can without blocking. When the provider
	 * has released every op and resource of ep it calls ferryi_ep_gone(ep) (maybe
	 * from inside ep_close). Called once per endpoint. Mandatory.
	 */
	void (*ep_close)(struct ferry_ep *ep, int reason, int graceful);

	/*
	 * Sends a core message: op->msg (type, tag, aux) and the payload op->buf/op->len
	 * (len <= eager_max). Completes with ferryi_op_done() when op->buf may be reused.
	 * Must keep the order of sends per endpoint. Returns 0 when the provider took the
	 * op (it will call ferryi_op_done), or a negative code when it did not (the core
	 * then reports the error to the caller; no ferryi_op_done follows). The same holds
	 * for write and read. Mandatory.
	 */
	int (*send)(struct ferry_ep *ep, struct ferryi_op *op);

	/*
	 * One-sided write/read between op->buf/op->len (in op->mr when the provider has
	 * FERRYI_CAP_NEED_LOCAL_MR) and the peer's region op->rkey at op->remote_offset.
	 * The core has already checked the offset/length against the rkey's region length;
	 * the target side (the peer's provider) checks again against its own registry
	 * with ferryi_mr_remote_get(). Transfers above the device's message size are
	 * split by the provider. A read with op->key_lent is a rendezvous: the peer sent
	 * the key for this very read. With op->key_granted as well, the peer's provider
	 * granted it (rndv_grant) and holds the region until the core's finish, so a
	 * provider that asks the target before moving data (ofi's checked protocol) need
	 * not ask. Mandatory.
	 */
	int (*write)(struct ferry_ep *ep, struct ferryi_op *op);
	int (*read)(struct ferry_ep *ep, struct ferryi_op *op);

	/*
	 * Rendezvous sends without a deadline, before their announce goes: return 0 to
	 * hold op->rndv_mr for the peer's read from now until rndv_release (the peer's
	 * finish arrived, or the announce never left), or a negative code to let the
	 * peer ask for each read instead. A hold outlives the op when the endpoint closes
	 * first: the provider then keeps it until the peer says it reads nothing more
	 * (or the peer fails), as for the holds ferryi_mr_remote_get takes, and the core
	 * completes such sends only when the provider lets go of the endpoint. Optional
	 * (providers whose target answers reads itself, or whose reads need no request).
	 */
	int (*rndv_grant)(struct ferry_ep *ep, struct ferryi_op *op);
	void (*rndv_release)(struct ferry_ep *ep, struct ferryi_op *op);

	/* Registers/deregisters a region with this provider's devices. Mandatory. */
	int (*mr_reg)(struct ferryi_prov_inst *pi, struct ferry_mr *mr);
	void (*mr_dereg)(struct ferryi_prov_inst *pi, struct ferry_mr *mr);

	/*
	 * Writes this provider's part of an rkey blob for mr into buf (at most len bytes);
	 * returns the number of bytes written or a negative error. Mandatory.
	 */
	int (*mr_pack)(struct ferryi_prov_inst *pi, const struct ferry_mr *mr, void *buf,
		       size_t len);

	/*
	 * Validates a peer's key bytes (from an rkey blob) before they are stored:
	 * length and format. Returns 0 or FERRY_EPROTO. Optional (NULL = any bytes).
	 */
	int (*rkey_check)(const void *key, size_t len);
};

/* Registration: every built-in provider is listed in lib/provider.c. */
int ferryi_provider_check(const struct ferryi_provider *p);
const struct ferryi_provider *const *ferryi_providers(int *count);
const struct ferryi_provider *ferryi_provider_by_scheme(const char *scheme);
/*
 * Unit tests only (linked through ferry_internal): adds an in-process provider (at
 * most two, listed first, in the order added), before any context is created.
 * Returns 0 or FERRY_EINVAL.
 */
int ferryi_provider_register_test(const struct ferryi_provider *p);

#endif /* FERRY_LIB_PROVIDER_H */
