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
 *     recv(); large payloads are received straight into their destination.
 *   - Re-entrancy: upcalls (ferryi_op_done, ferryi_rx_end, ferryi_ep_connected, ...)
 *     may call back into the provider (post a send, close the endpoint). Each entry
 *     point counts itself in `depth`; ep_close tears everything down at once but
 *     defers the final ferryi_ep_gone() until the outermost entry point returns,
 *     so no frame of ours touches a freed endpoint. After every upcall the code
 *     checks `closed` and stops.
 */
#ifndef FERRY_PROVIDERS_TCP_INTERNAL_H
#define FERRY_PROVIDERS_TCP_INTERNAL_H

#include "core.h"
#include "tcp_proto.h"

#define FERRYI_TCP_STAGE_SIZE (64u * 1024u)
/* At most this many bytes per recv()/sendmsg() call (the kernel caps near 2 GiB). */
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
};

enum {
	FERRYI_TCP_OPS_QUEUED = 1, /* in txq_ops or cur_op                          */
	FERRYI_TCP_OPS_WAIT,       /* written; in `wait` until WRITE_ACK/READ_RESP    */
	FERRYI_TCP_OPS_RECV,       /* READ_RESP payload arriving into op->buf       */
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
	bool has_use;              /* READ_RESP: region held until the last byte went out */
	const uint8_t *payload;
	uint64_t payload_len;
	uint64_t sent;
	struct ferryi_mr_use use;
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
	bool flushing, flush_again;
	uint8_t hs;                /* FERRYI_TCP_HS_*                                  */
	uint32_t depth;            /* nesting of provider entry points                 */
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
	uint64_t rx_aux;               /* WRITE target: initiator's op id for the ack  */
	bool rx_msg_active;            /* rx is between ferryi_rx_begin and _end       */
	struct ferryi_rx rx;
	bool rx_use_held;              /* WRITE target: rx_use holds the region        */
	struct ferryi_mr_use rx_use;
	int rx_status;                 /* WRITE target: status for the WRITE_ACK       */
	struct ferryi_op *rx_op;       /* READ_RESP: the read op being filled          */
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
};

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

/* tcp_rma.c */
int ferryi_tcp_write(struct ferry_ep *ep, struct ferryi_op *op);
int ferryi_tcp_read(struct ferry_ep *ep, struct ferryi_op *op);
void ferryi_tcp_on_write(struct ferry_ep *ep);
void ferryi_tcp_on_write_ack(struct ferry_ep *ep);
void ferryi_tcp_on_read_req(struct ferry_ep *ep);
void ferryi_tcp_on_read_resp(struct ferry_ep *ep);
void ferryi_tcp_write_rx_done(struct ferry_ep *ep);
void ferryi_tcp_read_rx_done(struct ferry_ep *ep);
uint32_t ferryi_tcp_op_prefix(const struct ferryi_op *op, uint8_t *out,
			      const void **payload, uint64_t *payload_len);

#endif /* FERRY_PROVIDERS_TCP_INTERNAL_H */
