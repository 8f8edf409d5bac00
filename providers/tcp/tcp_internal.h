/*
 * tcp_internal.h - state shared by the TCP provider's files. Nothing outside
 * providers/tcp includes this; the only symbol the rest of ferry uses is
 * ferryi_tcp_provider.
 *
 * Design notes
 *   - One socket per endpoint, non-blocking, driven by the context's epoll through a
 *     ferryi_poll_handle (level-triggered). Everything runs under the ctx lock.
 *   - Transmit: two FIFOs. txq_ops holds the user's/core's ops (send, write, read
 *     request) in posting order; txq_ctl holds frames the provider makes itself
 *     (HELLO, HELLO_ACK, ERROR, WRITE_ACK, READ_RESP). Frames are atomic on the
 *     stream; between frames control frames go first. A frame that was written in
 *     part is taken off its queue into cur_op/cur_ctl and always goes next.
 *     Payloads are written straight from the op's buffer or the registered region.
 *   - Receive: bytes land in a 64 KiB staging buffer, so many small frames cost one
 *     recv(); large payloads are received straight into their destination. The
 *     buffer is lent by the instance for one receive pass and kept by the endpoint
 *     only while it holds part of a frame.
 *   - Compression (tcp_z.c): an item (op or control frame) whose payload may be
 *     compressed is sent in segments; each segment is prepared when the writer
 *     reaches it: sampled, compressed into the endpoint's one staging buffer (or sent
 *     raw from the user's memory), then written like any frame. Received compressed
 *     payloads are decoded chunk by chunk straight into their destination.
 *   - Zero-copy (tcp_zc.c): payloads of at least FERRY_ZEROCOPY_MIN bytes go out in
 *     their own sendmsg(MSG_ZEROCOPY); the op completes (a region is given back) only
 *     when the kernel's notification on the error queue covers that send.
 *   - Re-entrancy: upcalls (ferryi_op_done, ferryi_rx_end, ferryi_ep_connected, ...)
 *     may call back into the provider (post a send, close the endpoint). Each entry
 *     point counts itself in `depth`; ep_close tears everything down at once but
 *     defers the final ferryi_ep_gone() until the outermost entry point returns,
 *     so no frame of ours touches a freed endpoint. After every upcall the code
 *     checks `closed` and stops.
 */
#ifndef FERRY_PROVIDERS_TCP_INTERNAL_H
#define FERRY_PROVIDERS_TCP_INTERNAL_H

#include "compress.h"
#include "config.h"
#include "core.h"
#include "tcp_proto.h"

#define FERRYI_TCP_STAGE_SIZE (64u * 1024u)
/* Staging buffers an instance keeps for reuse (progress is single-threaded). */
#define FERRYI_TCP_STAGE_SPARE 8u
/* At most this many bytes per sendmsg() call (the kernel caps near 2 GiB); a recv()
 * takes at most the receive budget. */
#define FERRYI_TCP_IO_CHUNK (1ull << 30)
/*
 * Bytes moved per readiness callback before yielding: everything runs under the ctx
 * lock, and a peer that drains (or feeds) as fast as we write (or read) would
 * otherwise keep one callback going, and the lock held, for a whole transfer.
 */
#define FERRYI_TCP_RX_BUDGET (4ull << 20)
#define FERRYI_TCP_TX_BUDGET (4ull << 20)
/* Frames coalesced into one sendmsg (two iovecs each, well below IOV_MAX). */
#define FERRYI_TCP_TX_BATCH 128
/* Batches up to this many bytes are gathered and sent with send(), see tcp_tx_once. */
#define FERRYI_TCP_SMALL_SEND 512u
/* Provider-made frames queued per endpoint before the peer counts as abusive. */
#define FERRYI_TCP_CTL_MAX 65536u
/* Largest eager payload the provider carries (the config may only lower it). */
#define FERRYI_TCP_EAGER_MAX (1ull << 30)
/*
 * A MSG frame may carry max(eager_max, this): core control messages (a rendezvous
 * announce is 8 bytes + an rkey blob) must fit whatever eager_max is configured;
 * the core itself holds user (EAGER) messages to eager_max.
 */
#define FERRYI_TCP_CTRL_MSG_MAX (8u + FERRY_RKEY_MAX)

/*
 * Raw bytes per compressed segment: the staging buffer (one per endpoint that
 * compresses) holds one segment, ferryi_zseg_bound(FERRYI_TCP_ZSEG) bytes. Compressed
 * MSGs are one segment, so only messages up to this size are compressed.
 */
#define FERRYI_TCP_ZSEG (1u << 20)
/* An auto-mode transfer whose samples keep failing sends raw segments this many
 * times larger at most (1 MiB << 6 = 64 MiB), so sampling costs almost nothing. */
#define FERRYI_TCP_ZBACKOFF_MAX 6
/* Zero-copy sends awaiting their notification, per endpoint (a window of ids). */
#define FERRYI_TCP_ZC_WIN 1024u

static inline uint64_t ferryi_tcp_msg_limit(uint64_t eager_max)
{
	return eager_max > FERRYI_TCP_CTRL_MSG_MAX ? eager_max : FERRYI_TCP_CTRL_MSG_MAX;
}

/* Indexes into ferryi_op.prov[] for ops this provider owns. */
enum {
	FERRYI_TCP_OP_STATE = 0, /* FERRYI_TCP_OPS_*                                  */
	FERRYI_TCP_OP_SENT = 1,  /* frame bytes written (header + extension + payload) */
	FERRYI_TCP_OP_KEY = 2,   /* write/read: the peer's region key                */
	FERRYI_TCP_OP_KIND = 3,  /* frame type it goes out as: MSG, WRITE, READ_REQ   */
	FERRYI_TCP_OP_ZS = 4,    /* 4 words (4-7): segment state, FERRYI_TCP_ZS_*     */
	FERRYI_TCP_OP_ZC = 8,    /* zero-copy: last notification id | ZC_PENDING      */
	FERRYI_TCP_OP_DONE_ST = 9, /* status to complete with once zero-copy is done  */
	FERRYI_TCP_OP_RECVD = 10,  /* read: raw bytes of the answer received so far   */
	FERRYI_TCP_OP_RSTAT = 11,  /* read: READ_REQ flags (bits 0-7); error of a
				      segment that did not decode (bits 32-63)        */
};

/*
 * Segment state of an item sent in segments (op->prov + FERRYI_TCP_OP_ZS, or
 * ctl->zs); all zero for an item sent as one plain frame.
 */
enum {
	FERRYI_TCP_ZS_CTL = 0,  /* mode (bits 0-7, enum ferryi_zmode), header flags of the
				   prepared segment (8-15), auto backoff (16-23), last
				   segment compressed well (bit 24)                    */
	FERRYI_TCP_ZS_OFF,      /* raw bytes in segments fully written                 */
	FERRYI_TCP_ZS_SEG,      /* raw bytes of the prepared segment (0: none)         */
	FERRYI_TCP_ZS_WIRE,     /* its payload length on the wire                      */
	FERRYI_TCP_ZS_N,
};

#define FERRYI_TCP_ZC_PENDING (1ull << 32)

enum {
	FERRYI_TCP_OPS_QUEUED = 1, /* in txq_ops or cur_op                          */
	FERRYI_TCP_OPS_WAIT,       /* written; in `wait` until WRITE_ACK/READ_RESP    */
	FERRYI_TCP_OPS_RECV,       /* READ_RESP payload arriving into op->buf       */
	FERRYI_TCP_OPS_ZC,         /* done but for the zero-copy notification        */
};

/* Handshake progress. */
enum {
	FERRYI_TCP_HS_NONE = 0,
	FERRYI_TCP_HS_CONNECTING, /* non-blocking connect() in progress            */
	FERRYI_TCP_HS_HELLO_SENT, /* client: HELLO queued, waiting for HELLO_ACK   */
	FERRYI_TCP_HS_WAIT_HELLO, /* server: accepted, waiting for HELLO           */
	FERRYI_TCP_HS_DONE,
};

/* Receive state machine. */
enum {
	FERRYI_TCP_RX_HDR = 0, /* waiting for a header (+ extension)                 */
	FERRYI_TCP_RX_PAYLOAD, /* payload of rx_kind arriving into rx_dst (or dropped) */
};

/* A frame the provider makes itself. */
struct ferryi_tcp_ctl {
	struct ferryi_list_node link;
	uint8_t prefix[FERRYI_TCP_PREFIX_MAX];
	uint32_t prefix_len;
	bool has_use;              /* READ_RESP: region held until the last byte went out
				      (zero-copy from a user region: until the kernel
				      let go of the pages)                            */
	const uint8_t *payload;
	uint64_t payload_len;
	uint64_t sent;
	struct ferryi_mr_use use;
	uint64_t aux;              /* READ_RESP in segments: the reader's op id       */
	uint64_t zs[FERRYI_TCP_ZS_N]; /* segment state; zero: one plain frame       */
	uint64_t zc;               /* zero-copy: last notification id | ZC_PENDING   */
};

/* The provider's part of a region (ferryi_mr_priv). */
struct ferryi_tcp_mr {
	/* FERRY_OP_COMPRESS / FERRY_OP_NO_COMPRESS of the send whose rendezvous buffer this
	 * is: the peer's read of it (READ_RESP) is compressed as that send asked. */
	unsigned zflags;
};

struct ferryi_tcp_ep {
	int fd;
	struct ferryi_poll_handle ph;
	bool inited;               /* ferryi_tcp_ep_init ran                           */
	bool polled;               /* ph is in the context's epoll                     */
	bool closing;              /* ep_close started: no new work is accepted        */
	bool closed;               /* ep_close ran: no more I/O, no more upcalls       */
	bool gone_pending;         /* ferryi_ep_gone() waits for depth to reach 0      */
	bool gone;                 /* ferryi_ep_gone() was called                      */
	bool io_error;             /* the socket failed: nothing more may be written   */
	bool want_out;             /* EPOLLOUT armed: the socket buffer was full       */
	uint64_t told_ns;          /* coarse clock of our last bytes into the socket  */
	struct ferryi_list_node cork_link; /* inst->corked: FERRY_OP_MORE posts held */
	bool flushing, flush_again;
	uint8_t hs;                /* FERRYI_TCP_HS_*                                  */
	uint32_t depth;            /* nesting of provider entry points                 */
	/* Compression and zero-copy state every frame looks at, kept with the hot
	 * fields (the rest is at the end): the uncompressed path reads only these. */
	bool zaccept;              /* we advertised zstd: compressed input is ok       */
	bool zpolicy;              /* FERRY_COMPRESS is not off: ask tcp_z.c           */
	bool rz_on;                /* the payload in progress is compressed            */
	bool rz_body;              /* ... and its prelude has been read                */
	bool zc_used;              /* SO_ZEROCOPY was set: reap the error queue        */
	bool zauto;                /* FERRY_COMPRESS=auto: measure the link (tcp_z.c)   */
	uint64_t zc_min;           /* payloads this large may go zero-copy; UINT64_MAX
				      once off (a cheap first test)                    */
	uint64_t batch_gen;        /* batches built (tcp_ep.c)                          */
	uint64_t tx_zcharge;       /* raw bytes compressed, for the tx budget           */
	struct ferryi_peer_info local; /* what we advertised                           */
	struct ferryi_peer_info peer;  /* what the peer advertised (after handshake)   */
	struct ferryi_tcp_limits lim;  /* rx limits, from `local`                      */
	struct ferryi_timer hs_timer;  /* accepting side: drop silent peers            */
	uint32_t hs_timeout_ms;
	uint64_t hs_bytes;             /* bytes received before the handshake finished */

	/* transmit */
	struct ferryi_list txq_ops;    /* struct ferryi_op (qlink), FIFO               */
	struct ferryi_list txq_ctl;    /* struct ferryi_tcp_ctl                        */
	struct ferryi_op *cur_op;      /* frame written in part, goes next             */
	struct ferryi_tcp_ctl *cur_ctl;
	struct ferryi_list wait;       /* written write/read ops awaiting their answer */
	uint64_t rma_window;           /* one-sided bytes unanswered at most; 0: no
					  limit (ferryi_tcp_hs_done decides)          */
	uint64_t rma_out;              /* bytes of the ops in `wait`                    */
	uint64_t rma_held_id;          /* op id last counted in rma_window_waits        */
	uint32_t nctl;                 /* control frames queued (incl. cur_ctl)        */

	/* receive */
	uint8_t *stage;
	size_t rs, re;                 /* staged bytes: stage[rs, re)                  */
	uint8_t rx_state;              /* FERRYI_TCP_RX_*                              */
	uint8_t rx_kind;               /* frame type whose payload is arriving         */
	bool rx_hdr_ok;                /* header of the next frame decoded already     */
	struct ferryi_tcp_hdr rh;
	struct ferryi_tcp_ext rext;
	uint8_t *rx_dst;               /* NULL: drop the payload                       */
	uint64_t rx_left;
	uint64_t rx_total;             /* payload length of the frame in progress      */
	uint64_t rx_raw;               /* its raw length (compressed: from the prelude) */
	uint64_t rx_zcharge;           /* raw bytes decompressed, for the rx budget    */
	uint64_t rx_aux;               /* WRITE target: initiator's op id for the ack  */
	bool rx_msg_active;            /* rx is between ferryi_rx_begin and _end       */
	struct ferryi_rx rx;
	bool rx_use_held;              /* WRITE target: rx_use holds the region        */
	struct ferryi_mr_use rx_use;
	int rx_status;                 /* WRITE target: status for the WRITE_ACK       */
	struct ferryi_op *rx_op;       /* READ_RESP: the read op being filled          */

	/* compression (tcp_z.c) */
	uint8_t rz_pre[FERRYI_ZSEG_PRELUDE];
	struct ferryi_zdec zrx;        /* chunk decoder of the payload in progress     */
	uint8_t *ztx;                  /* staging: one segment, or NULL until needed   */
	uint64_t *ztx_zs;              /* segment state of the item staged in it       */
	const uint64_t *ztx_sent;      /* that item's frame progress                   */
	uint64_t ztx_gen;              /* batch that staged item was added to          */
	uint8_t zauto_bo;              /* auto: items in a row that did not compress   */
	uint32_t zauto_skip;           /* auto: items still to send raw unsampled      */
	uint64_t zbl_t0;               /* auto: the socket has been full since (ns)    */
	uint64_t zbl_bytes;            /* ... when the peer had acknowledged this much */
	uint64_t zwire_bps;            /* auto: its drain rate (the link), 0 = unknown */
	uint64_t zcomp_bps;            /* auto: compression speed measured, 0 = none   */
	uint32_t zratio16;             /* auto: ratio of the last segment, x16         */
	uint32_t zslow_skip;           /* auto: segments raw before compressing again  */
	uint32_t zslow_int;            /* auto: ... and the interval it came from      */
	bool wseg;                     /* WRITE target: inside a segmented write       */
	uint64_t wseg_aux;             /* its op id                                    */
	int wseg_status;               /* first refusal among its segments             */

	/* zero-copy (tcp_zc.c) */
	int8_t zc;                     /* 0 untried, 1 on (SO_ZEROCOPY), -1 off        */
	uint32_t zc_next;              /* id of the next zero-copy send                */
	uint32_t zc_done;              /* every id before it was notified              */
	uint64_t zc_bits[FERRYI_TCP_ZC_WIN / 64]; /* notified ids >= zc_done, by id % WIN */
	struct ferryi_list zc_ops;     /* ops done but for their notification          */
	struct ferryi_list zc_ctls;    /* READ_RESPs holding a user region until then  */
};

struct ferryi_tcp_lp {
	struct ferryi_listener_part *lp;
	int fd;
	struct ferryi_poll_handle ph;
	bool polled;
	struct ferryi_timer retry; /* re-enables accepting after EMFILE and friends */
};

struct ferryi_tcp_inst {
	struct ferryi_prov_inst *pi;
	struct ferryi_config_ext ext;  /* FERRY_ZEROCOPY_MIN, FERRY_COMPRESS_ACCEPT,
					  FERRY_TCP_CONGESTION                         */
	bool cc_warned;                /* a congestion control refused: said once      */
	struct ferryi_zcodec *z;       /* zstd contexts, made on first use             */
	bool z_failed;                 /* making them failed: send raw                 */
	/*
	 * Receive staging buffers not in use. An endpoint holds one only while bytes
	 * are staged (a frame cut by a read); between reads it goes back here, so idle
	 * endpoints cost no staging memory and busy ones never wait for malloc().
	 */
	void *stage_spare[FERRYI_TCP_STAGE_SPARE];
	unsigned nstage_spare;
	/* Endpoints holding FERRY_OP_MORE posts back, flushed by the progress hook. */
	struct ferryi_list corked;
	/* Counters beyond ferry_stats, for tests and debugging. */
	uint64_t zc_sends, zc_copied, zc_fallbacks, z_segments, z_raw_segments, z_samples;
};

/* Test hook: keep using MSG_ZEROCOPY on sockets where the kernel copied anyway. */
extern bool ferryi_tcp_zc_keep_copied;
/* Test hook: true = auto takes every link for slower than compression instead of
 * measuring (loopback is faster than any compressor): it judges the data only. */
extern bool ferryi_tcp_zauto_assume_slow;

extern const struct ferryi_provider ferryi_tcp_provider;

static inline struct ferryi_tcp_ep *ferryi_tcp_ep(struct ferry_ep *ep)
{
	return (struct ferryi_tcp_ep *)ferryi_ep_priv(ep);
}

static inline struct ferry_ep *ferryi_tcp_ep_of(struct ferryi_tcp_ep *te)
{
	return ferryi_ep_from_priv(te);
}

/* tcp_provider.c */
int ferryi_tcp_errno(int err); /* errno -> negative FERRY_E* */

/* tcp_ep.c */
void ferryi_tcp_ep_init(struct ferry_ep *ep, int fd);
void ferryi_tcp_enter(struct ferry_ep *ep);
void ferryi_tcp_leave(struct ferry_ep *ep);
void ferryi_tcp_fail(struct ferry_ep *ep, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Like ferryi_tcp_fail, and first tells the peer with an ERROR frame (best effort). */
void ferryi_tcp_fail_notify(struct ferry_ep *ep, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* A malformed or unexpected frame: counted, ERROR frame to the peer, endpoint fails. */
void ferryi_tcp_proto_fail(struct ferry_ep *ep, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
int ferryi_tcp_set_events(struct ferry_ep *ep);
void ferryi_tcp_flush(struct ferry_ep *ep);
struct ferryi_tcp_ctl *ferryi_tcp_ctl_new(struct ferry_ep *ep);
void ferryi_tcp_ctl_push(struct ferry_ep *ep, struct ferryi_tcp_ctl *ctl,
			 const struct ferryi_tcp_hdr *h, const struct ferryi_tcp_ext *e);
int ferryi_tcp_ctl_queue(struct ferry_ep *ep, const struct ferryi_tcp_hdr *h,
			 const struct ferryi_tcp_ext *e);
void ferryi_tcp_tx_post(struct ferry_ep *ep, struct ferryi_op *op, unsigned kind);
void ferryi_tcp_rx_payload(struct ferry_ep *ep, uint8_t kind, void *dst, uint64_t len);
void ferryi_tcp_poll_fn(struct ferryi_poll_handle *h, uint32_t events);
void ferryi_tcp_hs_done(struct ferry_ep *ep);
/* Congestion control and one-sided window of ep's connected socket (tcp_conn.c);
 * returns the window, 0: none. */
uint64_t ferryi_tcp_path_setup(struct ferry_ep *ep);
/* A write or read in `wait` was answered: it leaves the one-sided window. */
void ferryi_tcp_rma_answered(struct ferry_ep *ep, const struct ferryi_op *op);
int ferryi_tcp_send(struct ferry_ep *ep, struct ferryi_op *op);
void ferryi_tcp_ep_close(struct ferry_ep *ep, int reason, int graceful);

/* tcp_conn.c */
int ferryi_tcp_listen(struct ferryi_listener_part *lp, const struct ferryi_addr *addr,
		      char *uri, size_t uri_len);
void ferryi_tcp_listen_close(struct ferryi_listener_part *lp);
int ferryi_tcp_connect(struct ferry_ep *ep, const struct ferryi_addr *addr);
void ferryi_tcp_connect_done(struct ferry_ep *ep);
void ferryi_tcp_on_hello(struct ferry_ep *ep);
void ferryi_tcp_on_hello_ack(struct ferry_ep *ep);
void ferryi_tcp_send_error_now(int fd, int status);

/* tcp_z.c */
struct ferryi_tcp_inst *ferryi_tcp_inst(struct ferry_ep *ep);
/* Frees the instance's spare receive staging buffers (instance teardown). */
void ferryi_tcp_stage_spares_free(struct ferryi_tcp_inst *ti);
/* Writes what FERRY_OP_MORE posts held back, on every endpoint (progress hook). */
int ferryi_tcp_uncork_all(struct ferryi_prov_inst *pi);
struct ferryi_zcodec *ferryi_tcp_codec(struct ferry_ep *ep);
/* The mode for a payload of len bytes to this peer with these FERRY_OP_* flags. */
enum ferryi_zmode ferryi_tcp_z_mode(struct ferry_ep *ep, unsigned op_flags, uint64_t len);
uint32_t ferryi_tcp_z_frame(struct ferry_ep *ep, struct ferryi_op *op,
			    struct ferryi_tcp_ctl *ctl, bool first, uint8_t *prefix,
			    const void **payload, uint64_t *plen, bool *more, bool *from_user);
bool ferryi_tcp_z_frame_done(struct ferry_ep *ep, struct ferryi_op *op,
			     struct ferryi_tcp_ctl *ctl);
void ferryi_tcp_z_unstage(struct ferry_ep *ep);
/* Auto: a write found the socket full (the link is what limits us now). */
void ferryi_tcp_z_tx_full(struct ferry_ep *ep);
void ferryi_tcp_z_rx_begin(struct ferry_ep *ep);
void ferryi_tcp_z_rx_payload(struct ferry_ep *ep, void *dst, uint64_t raw);
bool ferryi_tcp_z_rx_piece(struct ferry_ep *ep);
void ferryi_tcp_z_ep_fini(struct ferry_ep *ep);

/* tcp_zc.c */
bool ferryi_tcp_zc_usable(struct ferry_ep *ep, uint64_t len);

/* Whether an item's last zero-copy send (zc: its id | ZC_PENDING, or 0) still waits
 * for its notification. Ids wrap at 2^32; the window keeps every live one within
 * 2^31 of zc_done. */
static inline bool ferryi_tcp_zc_pending(const struct ferryi_tcp_ep *te, uint64_t zc)
{
	return (zc & FERRYI_TCP_ZC_PENDING) && (int32_t)((uint32_t)zc - te->zc_done) >= 0;
}

/* Whether a payload of len bytes from user memory may go zero-copy: the inline test
 * keeps the common case (small, or zero-copy off) free of calls. */
static inline bool ferryi_tcp_zc_try(struct ferry_ep *ep, uint64_t len)
{
	return len >= ferryi_tcp_ep(ep)->zc_min && ferryi_tcp_zc_usable(ep, len);
}

/* Whether a payload may be compressed at all (cheap; ferryi_tcp_z_mode decides). */
static inline bool ferryi_tcp_z_maybe(const struct ferryi_tcp_ep *te, unsigned op_flags,
				      uint64_t len)
{
	return (te->zpolicy || (op_flags & FERRY_OP_COMPRESS)) && len >= FERRYI_ZMIN_TRY &&
	       (te->peer.features & FERRYI_FEAT_ZSTD);
}
uint64_t ferryi_tcp_zc_sent(struct ferry_ep *ep);
void ferryi_tcp_zc_reap(struct ferry_ep *ep);

/* tcp_ep.c */
void ferryi_tcp_rx_body(struct ferry_ep *ep);
void ferryi_tcp_ctl_free(struct ferryi_tcp_ctl *ctl);

/* tcp_rma.c */
int ferryi_tcp_write(struct ferry_ep *ep, struct ferryi_op *op);
int ferryi_tcp_read(struct ferry_ep *ep, struct ferryi_op *op);
void ferryi_tcp_on_write(struct ferry_ep *ep);
void ferryi_tcp_on_write_ack(struct ferry_ep *ep);
void ferryi_tcp_on_read_req(struct ferry_ep *ep);
void ferryi_tcp_on_read_resp(struct ferry_ep *ep);
void ferryi_tcp_write_rx_done(struct ferry_ep *ep, int zerr);
void ferryi_tcp_read_rx_done(struct ferry_ep *ep, int zerr);
uint32_t ferryi_tcp_op_prefix(const struct ferryi_op *op, uint8_t *out,
			      const void **payload, uint64_t *payload_len);

#endif /* FERRY_PROVIDERS_TCP_INTERNAL_H */
