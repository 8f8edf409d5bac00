/*
 * verbs.h - state shared by the verbs provider's files (rdma-core: libibverbs for the
 * data path, librdmacm for connection setup). Nothing outside providers/verbs includes
 * this; the only symbol the rest of ferry uses is ferryi_verbs_provider.
 *
 * Design notes
 *   - Connection management is librdmacm on one event channel per context instance,
 *     non-blocking, driven by a poll handle. Never a synchronous id: a one-sided
 *     rdma_disconnect() on one would block for the ~70 s DREQ timeout.
 *   - One RC QP per endpoint, created with rdma_create_qp() (rdma_cm moves it through
 *     INIT/RTR/RTS). Its CQ is shared: each device keeps a small pool of CQs, each
 *     serving many QPs; a completion finds its endpoint by qp_num. progress()
 *     busy-polls them; a completion channel per device (a poll handle) makes the
 *     context fd readable when a completion arrives while nobody polls.
 *   - Handshake: ferry's struct ferryi_peer_info, the receive ring (credits) and the
 *     eager size travel in the rdma_cm private data of REQ and REP (56 bytes, the IB
 *     REQ limit). A refusal travels in the REJ private data with a ferry status.
 *   - Eager messages: a 24-byte header + payload in one SEND, inline when it fits the
 *     QP's max_inline_data, else copied into a registered bounce buffer; a message
 *     larger than a bounce buffer (up to the 64 KiB eager limit) goes as several
 *     fragments that the receiver reassembles straight into the core's destination.
 *     The receiver keeps rx_depth buffers posted; credits stop a sender from ever
 *     overrunning them (no RNR). See verbs_ep.c for credits and selective signalling.
 *   - write/read: IBV_WR_RDMA_WRITE/READ straight from/to the user's registered buffer,
 *     split at the device's max_msg_sz and at ibv_mr chunk boundaries on both sides; a
 *     write that fits max_inline_data is posted inline.
 *   - Asynchronous events (QP error state, port down, device fatal) fail the endpoints
 *     they concern, like a CM disconnect; see verbs_async.c.
 *   - Teardown: QP to ERR, rdma_disconnect, a signalled drain WR behind the sends, wait for
 *     every posted WR to come back (flushed), then destroy QP and id, then
 *     ferryi_ep_gone(). A guard timer forces the end if a device never flushes.
 *
 * Tunables (environment; defaults in brackets, 0 = automatic where noted):
 *   FERRY_VERBS_RX_DEPTH [32]     receive buffers per endpoint = credits for the peer
 *   FERRY_VERBS_TX_BUFS [32]      send bounce buffers per endpoint
 *   FERRY_VERBS_SQ_DEPTH [128]    send queue depth (work requests)
 *   FERRY_VERBS_EAGER [16384]     largest eager message (<= 65536); larger ones go by
 *                                 the core's rendezvous (RTS + RDMA READ + FIN)
 *   FERRY_VERBS_FRAG [8192]       payload per bounce buffer (1024..65536)
 *   FERRY_VERBS_INLINE [256]      requested max_inline_data: sends and writes that fit go
 *                                 inline (0 = never inline)
 *   FERRY_VERBS_CQ_SIZE [8192]    entries per shared CQ (capped by the device)
 *   FERRY_VERBS_SIGNAL [0]        signal every Nth send WR (0 = min(sq, tx bufs) / 4)
 *   FERRY_VERBS_MAX_MSG [1 MiB]   largest one-sided WR (capped by the port's max_msg_sz;
 *                                 bounded WRs keep completions, hence liveness, flowing
 *                                 during long transfers)
 *   FERRY_VERBS_MR_CHUNK [0]      largest ibv_mr (0 = the device's max_mr_size)
 *   FERRY_VERBS_LINGER_MS [1000]  graceful close: time for queued sends to go out
 *   FERRY_VERBS_DRAIN_MS [2000]   teardown: time allowed for flushed WRs to return
 */
#ifndef FERRY_PROVIDERS_VERBS_H
#define FERRY_PROVIDERS_VERBS_H

#include "core.h"

#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

/* Largest eager message (the ops table's eager_max); FERRY_VERBS_EAGER may lower it. */
#define FERRYI_VERBS_EAGER_MAX 65536u
/*
 * FERRY_VERBS_EAGER's default. An eager message is copied into bounce buffers on both
 * sides and spends 1 + len/FRAG of the peer's receive credits; above 16 KiB the
 * rendezvous (RTS, one RDMA READ into the posted buffer, FIN) moves it without either
 * copy and without credits. 64 KiB send_bw on soft-RoCE: 51-54 MB/s eager, 63-64 by
 * rendezvous (docs/BENCHMARKS.md).
 */
#define FERRYI_VERBS_EAGER_DEFAULT 16384u

/* ------------------------------------------------------------------ wire formats */

/*
 * Message header at the start of every SEND (little-endian):
 *   off size field
 *   0   1    kind       FERRYI_VERBS_K_*
 *   1   1    msg type   core message type (MSG), else 0
 *   2   1    msg flags  core message flags (MSG), else 0
 *   3   1    reserved   0
 *   4   4    credits    receive buffers the sender reposted since its last grant
 *   8   8    tag        (MSG, FIRST; else 0)
 *   16  8    aux        (MSG, FIRST; else 0)
 * MSG: the whole payload follows; its length is the SEND's length minus 24.
 * FIRST: u64 total message length, then the first part of the payload; MORE parts
 * follow in order (RC keeps them in order) until total bytes arrived.
 */
#define FERRYI_VERBS_HDR_LEN 24u
#define FERRYI_VERBS_FIRST_EXT 8u

enum {
	FERRYI_VERBS_K_MSG = 1,    /* a whole core message                     */
	FERRYI_VERBS_K_CREDIT = 2, /* credits only, no payload                 */
	FERRYI_VERBS_K_FIRST = 3,  /* first fragment of a larger core message  */
	FERRYI_VERBS_K_MORE = 4,   /* next fragment                            */
};

/*
 * rdma_cm private data (little-endian). REQ (client) and REP (server) use the same
 * 56-byte layout (56 is all an IB/RoCE REQ carries); REJ carries the first 12 bytes.
 *   off size field
 *   0   4    magic       FERRYI_VERBS_CM_MAGIC
 *   4   1    version     FERRYI_VERBS_CM_VERSION
 *   5   1    kind        FERRYI_VERBS_CM_REQ / _REP / _REJ
 *   6   2    rx_depth    receive buffers posted = initial credits
 *   8   4    rx_payload  bytes one receive buffer takes (fragment size); REJ: status
 *   12  4    version     ferry protocol version      \
 *   16  4    features    FERRYI_FEAT_*                |
 *   20  4    idle_timeout_ms                          | struct ferryi_peer_info
 *   24  4    probe_interval_ms                        |
 *   28  8    max_frame                                |
 *   36  4    eager_max   (capped at 2^32-1)           |
 *   40  4    rx_credit   (capped at 2^32-1: less)    /
 *   44  8    node_guid   the sender's device: selects the rkey entry for one-sided ops
 *   52  4    instance    random id of the sender's context instance: an rkey made by
 *                        anyone else is refused before it reaches the NIC
 * Every byte is used: a new ferryi_peer_info field needs a smaller encoding of these.
 * Caps only ever lower what a side advertises, so the peer stays within the limit.
 */
#define FERRYI_VERBS_CM_MAGIC 0x56595246u /* "FRYV" */
#define FERRYI_VERBS_CM_VERSION 1u
#define FERRYI_VERBS_CM_LEN 56u
#define FERRYI_VERBS_CM_REJ_LEN 12u

enum {
	FERRYI_VERBS_CM_REQ = 1,
	FERRYI_VERBS_CM_REP = 2,
	FERRYI_VERBS_CM_REJ = 3,
};

struct ferryi_verbs_hs {
	uint8_t kind;
	uint32_t rx_depth;
	uint32_t rx_payload;
	struct ferryi_peer_info info;
	uint64_t guid;
	uint32_t instance;
};

/*
 * rkey entry written by mr_pack (little-endian):
 *   off size field
 *   0   1    format      FERRYI_VERBS_RKEY_FMT
 *   1   1    ndev        devices (>= 1)
 *   2   1    access      FERRY_ACCESS_* the ibv_mrs grant
 *   3   1    reserved    0
 *   4   4    nchunks     ibv_mrs per device (>= 1)
 *   8   8    base_va     the region's first byte in the owner's address space
 *   16  8    chunk       bytes per ibv_mr (the last one may be shorter)
 *   24  8    region_len  bytes registered
 *   32  4    instance    the registering context instance (see the handshake)
 *   36  4    reserved    0
 *   40  ...  per device: node_guid u64, then rkey u32 x nchunks
 *   end 4    check       FNV-1a (32 bit) of every byte before it
 * Chunk i covers [base_va + i*chunk, base_va + (i+1)*chunk). The NIC is what protects
 * the region; length, access and check only let the initiator refuse a corrupted or
 * mismatched blob itself, because on RC a NIC refusal breaks the whole connection.
 */
#define FERRYI_VERBS_RKEY_FMT 1u
#define FERRYI_VERBS_RKEY_HDR 40u
#define FERRYI_VERBS_RKEY_TRAILER 4u

struct ferryi_verbs_rkey {
	uint64_t base_va;
	uint64_t chunk;
	uint64_t len;
	uint32_t instance;
	unsigned access;
	uint32_t nchunks;
	const uint8_t *rkeys; /* nchunks little-endian u32, inside the rkey's blob */
};

/* ------------------------------------------------------------------ objects */

/* What an rdma_cm_id's context points to: the first member of both. */
enum {
	FERRYI_VERBS_OBJ_LISTENER = 1,
	FERRYI_VERBS_OBJ_EP = 2,
};

/* Per-region state (ferryi_mr_priv): ibv_mrs of every device, nchunks each. */
struct ferryi_verbs_mr {
	uint32_t ndev;
	uint32_t nchunks;
	uint64_t chunk;
	struct ibv_mr **mrs;           /* [dev * nchunks + chunk]; NULL: device unusable */
	uint32_t users;                /* our write/read ops using it as local buffer  */
	bool dereg_pending;            /* deregistered while users > 0                 */
};

struct ferryi_verbs_tun {
	uint32_t rx_depth;
	uint32_t tx_bufs;
	uint32_t sq_depth;
	uint32_t eager;
	uint32_t frag;
	uint32_t inline_max;
	uint32_t cq_size;
	uint32_t signal;
	uint64_t max_msg;
	uint64_t mr_chunk;
	uint32_t linger_ms;
	uint32_t drain_ms;
};

struct ferryi_verbs_dev;

/* A CQ shared by several QPs of one device. */
struct ferryi_verbs_cq {
	struct ferryi_list_node link;  /* dev->cqs                                    */
	struct ferryi_verbs_dev *dev;
	struct ibv_cq *cq;
	uint32_t cap;                  /* entries                                     */
	uint32_t used;                 /* entries reserved by QPs on it                */
	uint32_t unacked;              /* completion events not yet acknowledged     */
	bool polling;                  /* inside verbs_cq_poll: no nested polls      */
	bool armed;                    /* ibv_req_notify_cq pending                  */
};

struct ferryi_verbs_inst;
struct ferryi_verbs_async;

struct ferryi_verbs_dev {
	struct ferryi_verbs_inst *vi;
	int index;
	bool usable;
	struct ibv_context *verbs;     /* librdmacm's (rdma_get_devices)              */
	struct ibv_pd *pd;
	struct ibv_comp_channel *ch;
	struct ferryi_poll_handle ph;
	bool polled;
	bool fatal;                    /* IBV_EVENT_DEVICE_FATAL: no new connections  */
	struct ferryi_verbs_async *async; /* async events (verbs_async.c)           */
	struct ibv_device_attr attr;
	uint64_t guid;                 /* node GUID, host order                       */
	uint64_t mr_chunk;             /* bytes per ibv_mr on this device            */
	char name[IBV_SYSFS_NAME_MAX];
	struct ferryi_list cqs;        /* struct ferryi_verbs_cq                      */
	struct ferryi_hmap qps;        /* struct ferryi_verbs_ep by qp_num           */
};

struct ferryi_verbs_inst {
	struct ferryi_prov_inst *pi;
	struct rdma_event_channel *cm_ch;
	struct ferryi_poll_handle cm_ph;
	bool cm_polled;
	struct ibv_context **rdevs;    /* rdma_get_devices(), freed at fini           */
	int ndev;
	struct ferryi_verbs_dev *devs;
	struct ferryi_verbs_tun tun;
	uint64_t mr_chunk;             /* chunk size common to every device          */
	uint32_t instance;             /* random: names this instance to peers        */
};

struct ferryi_verbs_lp {
	uint8_t kind;                  /* FERRYI_VERBS_OBJ_LISTENER                   */
	struct ferryi_listener_part *lp;
	struct rdma_cm_id *id;
};

/* Connection-management progress of an endpoint. */
enum {
	FERRYI_VERBS_CM_NONE = 0,
	FERRYI_VERBS_CM_ADDR,          /* client: resolving the address              */
	FERRYI_VERBS_CM_ROUTE,         /* client: resolving the route                */
	FERRYI_VERBS_CM_CONNECTING,    /* client: REQ sent                           */
	FERRYI_VERBS_CM_ACCEPTING,     /* server: REP sent                           */
	FERRYI_VERBS_CM_ESTABLISHED,
	FERRYI_VERBS_CM_DISCONNECTED,  /* DREQ/DREP seen or sent                      */
};

/* One send-queue slot: what the WR with that sequence number holds. */
struct ferryi_verbs_sqe {
	struct ferryi_op *op;          /* write/read segment, else NULL               */
	int32_t buf;                   /* bounce buffer index, or -1                  */
	uint8_t flags;                 /* FERRYI_VERBS_SQE_*                          */
};

enum {
	FERRYI_VERBS_SQE_SIGNALED = 1u << 0,
	FERRYI_VERBS_SQE_DRAIN = 1u << 1,
};

/* Receive work-request ids have the top bit set; send ones are sequence numbers. */
#define FERRYI_VERBS_WR_RECV (1ull << 63)
#define FERRYI_VERBS_RX_DRAIN 0xffffffffu

struct ferryi_verbs_ep {
	uint8_t kind;                  /* FERRYI_VERBS_OBJ_EP                         */
	uint8_t cm;                    /* FERRYI_VERBS_CM_*                           */
	bool up;                       /* ferryi_ep_connected() was called            */
	bool closing;                  /* ep_close ran: the core posts nothing more   */
	bool linger;                   /* graceful close: queued sends still go out   */
	bool hard;                     /* QP in ERR, waiting for flushes              */
	bool finished;                 /* resources released, ferryi_ep_gone() called */
	bool sq_err;                   /* the send queue reported an error or flush   */
	bool pumping;
	bool in_qpmap;
	int reason;                    /* close status for ops still owned            */
	struct ferryi_verbs_inst *vi;
	struct rdma_cm_id *id;
	struct ferryi_verbs_dev *dev;
	struct ferryi_verbs_cq *vcq;
	uint32_t cq_need;              /* CQ entries reserved on vcq                 */
	struct ibv_qp *qp;
	struct ferryi_hnode qnode;     /* dev->qps, key qp_num                        */
	uint32_t max_inline;
	uint64_t max_msg;
	struct ferryi_peer_info local; /* what we advertised                          */
	struct ferryi_peer_info peer;  /* what the peer advertised                   */
	uint64_t peer_guid;
	uint32_t peer_instance;
	uint8_t resp_res, init_depth;  /* RDMA READ resources for rdma_accept       */

	/* receive ring: rx_depth buffers of `stride` bytes, all posted when idle */
	uint8_t *rx_mem;
	struct ibv_mr *rx_mr;
	uint32_t rx_depth, stride, rx_payload;
	uint32_t rx_posted;            /* receive WRs outstanding                     */
	bool rx_active;                /* a fragmented message is being reassembled   */
	uint64_t rx_total, rx_got;
	struct ferryi_rx rx;           /* its destination (ferryi_rx_begin)           */
	uint32_t *early_idx;           /* arrived before the handshake completed      */
	uint32_t *early_len;
	uint32_t nearly;

	/* send side */
	uint8_t *tx_mem;
	struct ibv_mr *tx_mr;
	uint32_t tx_bufs;
	uint32_t *tx_free;
	uint32_t tx_nfree;
	struct ferryi_verbs_sqe *sq;
	uint32_t sq_depth;             /* power of two                               */
	uint64_t sq_head, sq_tail;     /* next sequence / oldest outstanding          */
	uint64_t sq_last_sig;          /* sequence + 1 of the last signalled WR       */
	uint32_t unsig_run;
	uint32_t sig_every;
	struct ferryi_list txq;        /* ops waiting for credits / slots (qlink)     */

	/* credits */
	uint32_t tx_credits;           /* receive buffers the peer has for us         */
	uint32_t peer_rx_depth;
	uint32_t peer_payload;         /* the peer's fragment size                    */
	uint32_t tx_frag;              /* ours: min(peer's, our bounce buffer)        */
	uint32_t rx_owed;              /* buffers reposted, not yet granted back      */
	uint32_t credit_thresh;

	struct ferryi_timer timer;     /* linger or drain guard                       */
};

extern const struct ferryi_provider ferryi_verbs_provider;

static inline struct ferryi_verbs_ep *ferryi_verbs_ep(struct ferry_ep *ep)
{
	return (struct ferryi_verbs_ep *)ferryi_ep_priv(ep);
}

static inline struct ferry_ep *ferryi_verbs_ep_of(struct ferryi_verbs_ep *vep)
{
	return ferryi_ep_from_priv(vep);
}

static inline struct ferryi_verbs_inst *ferryi_verbs_inst(struct ferryi_prov_inst *pi)
{
	return (struct ferryi_verbs_inst *)ferryi_inst_priv(pi);
}

/* verbs_provider.c */
struct ferryi_verbs_dev *ferryi_verbs_dev_find(struct ferryi_verbs_inst *vi,
					       struct ibv_context *verbs);
int ferryi_verbs_errno(int err); /* positive errno -> negative FERRY_E* */

/* verbs_cq.c */
int ferryi_verbs_dev_cq_open(struct ferryi_verbs_dev *dev);
void ferryi_verbs_dev_cq_close(struct ferryi_verbs_dev *dev);
struct ferryi_verbs_cq *ferryi_verbs_cq_reserve(struct ferryi_verbs_dev *dev, uint32_t need);
void ferryi_verbs_cq_release(struct ferryi_verbs_cq *vcq, uint32_t need);
int ferryi_verbs_cq_poll(struct ferryi_verbs_cq *vcq);
/* Arms every disarmed CQ of the instance, then polls them all (prepare_sleep). */
int ferryi_verbs_cq_arm_all(struct ferryi_prov_inst *pi);
int ferryi_verbs_wc_status(enum ibv_wc_status st);

/* verbs_async.c: the device's asynchronous events, through a process-wide dispatcher */
int ferryi_verbs_dev_async_open(struct ferryi_verbs_dev *dev);
void ferryi_verbs_dev_async_close(struct ferryi_verbs_dev *dev);

/* verbs_ep.c */
void ferryi_verbs_ep_init(struct ferryi_verbs_ep *vep, struct ferryi_verbs_inst *vi);
int ferryi_verbs_ep_setup(struct ferryi_verbs_ep *vep, const struct ferryi_verbs_hs *peer);
void ferryi_verbs_ep_apply_peer(struct ferryi_verbs_ep *vep, const struct ferryi_verbs_hs *peer);
void ferryi_verbs_ep_up(struct ferryi_verbs_ep *vep);
void ferryi_verbs_ep_fail(struct ferryi_verbs_ep *vep, int status, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void ferryi_verbs_ep_hard_close(struct ferryi_verbs_ep *vep);
void ferryi_verbs_ep_tx_wc(struct ferryi_verbs_ep *vep, const struct ibv_wc *wc);
void ferryi_verbs_ep_rx_wc(struct ferryi_verbs_ep *vep, const struct ibv_wc *wc);
int ferryi_verbs_send(struct ferry_ep *ep, struct ferryi_op *op);
int ferryi_verbs_write(struct ferry_ep *ep, struct ferryi_op *op);
int ferryi_verbs_read(struct ferry_ep *ep, struct ferryi_op *op);
void ferryi_verbs_ep_close(struct ferry_ep *ep, int reason, int graceful);

/* verbs_cm.c */
void ferryi_verbs_cm_event_fn(struct ferryi_poll_handle *h, uint32_t events);
int ferryi_verbs_listen(struct ferryi_listener_part *lp, const struct ferryi_addr *addr,
			char *uri, size_t uri_len);
void ferryi_verbs_listen_close(struct ferryi_listener_part *lp);
int ferryi_verbs_connect(struct ferry_ep *ep, const struct ferryi_addr *addr);
void ferryi_verbs_hs_local(struct ferryi_verbs_ep *vep, uint8_t kind, struct ferryi_verbs_hs *hs);
size_t ferryi_verbs_hs_encode(const struct ferryi_verbs_hs *hs, uint8_t *out);
int ferryi_verbs_hs_decode(const void *data, size_t len, uint8_t want_kind,
			   struct ferryi_verbs_hs *hs, char *why, size_t why_len);

/* verbs_mr.c */
int ferryi_verbs_mr_reg(struct ferryi_prov_inst *pi, struct ferry_mr *mr);
void ferryi_verbs_mr_dereg(struct ferryi_prov_inst *pi, struct ferry_mr *mr);
int ferryi_verbs_mr_pack(struct ferryi_prov_inst *pi, const struct ferry_mr *mr, void *buf,
			 size_t len);
int ferryi_verbs_rkey_check(const void *key, size_t len);
int ferryi_verbs_rkey_parse(const void *key, size_t len, uint64_t guid,
			    struct ferryi_verbs_rkey *out);
/* lkey of the ibv_mr holding byte `off` of mr on dev, and the bytes left in that chunk. */
int ferryi_verbs_reg_error(struct ferry_ctx *ctx, const char *dev, size_t len, int err);
void ferryi_verbs_mr_use(struct ferryi_prov_inst *pi, struct ferry_mr *mr);
void ferryi_verbs_mr_unuse(struct ferryi_prov_inst *pi, struct ferry_mr *mr);
uint32_t ferryi_verbs_mr_lkey(struct ferryi_prov_inst *pi, const struct ferry_mr *mr,
			      const struct ferryi_verbs_dev *dev, uint64_t off, uint64_t *left);

#endif /* FERRY_PROVIDERS_VERBS_H */
