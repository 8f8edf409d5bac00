/*
 * ofi.h - private state of the libfabric provider, shared by its files.
 *
 *   ofi_provider.c  ops table, instance (one fabric + domain per libfabric provider
 *                   in use: "doms"), info()
 *   ofi_lib.c       libfabric itself, opened with dlopen at first use
 *   ofi_ep.c        endpoints: the design notes, eager messages, credits, the
 *                   receive path, close
 *   ofi_cm.c        connection setup: hello handshake, connect, listen
 *   ofi_port.c      ports (fabric endpoints), AV entries, buffers, control queue
 *   ofi_rma.c       one-sided operations and the checked protocol
 *   ofi_mr.c        registration for every mr_mode bit, rkey packing
 *   ofi_cq.c        completion queues, wait fds and doorbells, error translation,
 *                   EAGAIN retry
 *   ofi_rdmacm.c    verbs: refused connects and taken addresses, asked of rdma_cm
 *
 * Everything here runs under the context lock (provider.h), so nothing below has a
 * lock of its own and libfabric is opened with FI_THREAD_DOMAIN.
 */
#ifndef FERRY_OFI_H
#define FERRY_OFI_H

#include "core.h"

#include <rdma/fabric.h>
#include <rdma/fi_cm.h>
#include <rdma/fi_domain.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>
#include <rdma/fi_rma.h>

#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/un.h>

#define OFI_API_VERSION FI_VERSION(1, 9)

/*
 * libfabric is opened with dlopen when the provider is first used, not linked
 * (ofi_lib.c says why). These five are all the functions libfabric exports that
 * ferry calls (everything else is an inline call through the fabric's ops tables);
 * their types are the headers' own, and the macros below send every call through the
 * table (build.symbols checks that libferry refers to no libfabric symbol). Valid once
 * ofi_lib_open() has succeeded, which every path into the provider checks first.
 */
struct ofi_lib {
	__typeof__(&fi_getinfo) getinfo;
	__typeof__(&fi_freeinfo) freeinfo;
	__typeof__(&fi_dupinfo) dupinfo;
	__typeof__(&fi_fabric) fabric;
	__typeof__(&fi_strerror) strerror;
};
extern struct ofi_lib ofi_lib;
#define fi_getinfo (ofi_lib.getinfo)
#define fi_freeinfo (ofi_lib.freeinfo)
#define fi_dupinfo (ofi_lib.dupinfo)
#define fi_fabric (ofi_lib.fabric)
#define fi_strerror (ofi_lib.strerror)
/* The header's own is an inline function bound to the linked fi_dupinfo. */
#define fi_allocinfo() fi_dupinfo(NULL)

#define OFI_EAGER_MAX 8192u      /* core-message payload carried in one message      */
#define OFI_HDR_LEN 32u          /* our header in front of every message            */
#define OFI_BUF_LEN (OFI_HDR_LEN + OFI_EAGER_MAX)
#define OFI_RX_DEPTH 128u        /* receive buffers posted per port                 */
#define OFI_TX_CHUNK 16u         /* send buffers are added 16 at a time ...         */
#define OFI_TX_MAX 512u          /* ... up to this many per port                   */
#define OFI_CREDITS 32u          /* messages in flight per connection               */
#define OFI_MAX_DOMS 4
#define OFI_ADDR_MAX 128u        /* largest fabric address we carry                 */
#define OFI_RAW_KEY_MAX 64u      /* largest FI_MR_RAW key we pack                   */
#define OFI_RMA_PIECE_MAX (1ull << 30) /* one fi_write/fi_read moves at most this   */
#define OFI_RMA_PIECE (4ull << 20)     /* ... and we post pieces of this size on shm:
					  each completion shows the peer alive to probes */
#define OFI_RMA_PIECE_STREAM (1ull << 20) /* on tcp and verbs: a probe or its answer
					  waits behind the window's data (ofi_dom_open) */
#define OFI_RMA_WINDOW 4u              /* pieces per window of an op: what may stand
					  in a stream in front of a probe or its answer */
#define OFI_RMA_TCP_PEER 2u            /* tcp: pieces in flight per peer, all ops
					  together (ofi_dom_open says why)          */
#define OFI_SHM_PORT_MIN 20000u  /* ofi+shm://h:0 picks a port in [MIN, MIN+RANGE) */
#define OFI_SHM_PORT_RANGE 40000u

/* Header kinds (byte 0 of every message). */
enum ofi_kind {
	OFI_K_MSG = 1,     /* core message; credit                                       */
	OFI_K_CONNREQ,     /* connect request to a listener port; payload: hello        */
	OFI_K_CONNACK,     /* accepted; payload: hello                                  */
	OFI_K_CONNREJ,     /* refused; tag = status                                     */
	OFI_K_CREDIT,      /* credits only                                              */
	OFI_K_BYE,         /* the sender's endpoint is gone; tag = reason               */
	OFI_K_RMA_REQ,     /* checked one-sided op: may I? payload: rma request; credit */
	OFI_K_RMA_ACK,     /* tag = status, aux = requester's op id, payload: hold id   */
	OFI_K_RMA_DONE,    /* aux = hold id (tag OFI_DONE_GRANTED: the sender's op id
			      of a granted read): the transfer is over                 */
	OFI_K_READS_OVER,  /* the sender's endpoint closed and reads nothing more of
			      ours: every hold of the connection ends (grants too)    */
	OFI_K_MAX_,
};

#define OFI_DONE_GRANTED 1 /* RMA_DONE tag: aux names a grant, not a hold */

/* What every libfabric context pointer we hand out starts with. */
enum ofi_ctx_kind {
	OFI_CTX_RX = 0x5258,
	OFI_CTX_TX = 0x5458,
	OFI_CTX_RMA = 0x524d,
};

struct ofi_ctx {
	uint32_t kind;
};

struct ofi_inst;
struct ofi_port;

/*
 * A context's "may sleep" word for shm peers (see ofi_cq.c): the first page of a
 * memfd, mapped read-only by peers through /proc/<pid>/fd/<fd> as the hello tells.
 */
struct ofi_wake_page {
	uint64_t token;              /* random, nonzero; the hello carries it too      */
	uint8_t pad_[56];
	_Atomic uint32_t asleep;     /* a thread may sleep on the context's fds        */
};
#define OFI_WAKE_PAGE 4096u

/* One libfabric provider in use: its fabric and domain, shared by all ports. */
struct ofi_dom {
	struct ofi_inst *inst;
	uint8_t idx;
	char sel[16];                /* "tcp", "shm", "verbs", or "" (libfabric's pick) */
	char prov_name[64];          /* "tcp;ofi_rxm", "shm", ...                       */
	struct fi_info *info;        /* dup of the chosen fi_info                       */
	struct fid_fabric *fabric;
	struct fid_domain *domain;
	uint64_t mr_mode;
	size_t key_size;             /* mr_key_size                                     */
	size_t inject;               /* tx inject_size                                  */
	uint64_t max_msg;            /* one transfer's limit                            */
	uint64_t rma_piece;          /* what one fi_write/fi_read moves (<= max_msg)     */
	unsigned rma_peer_max;       /* pieces in flight per peer (UINT_MAX: no limit)   */
	uint32_t ksid;               /* key space id (FI_MR_ENDPOINT: per port instead) */
	bool wait_fd;                /* its CQs can give an fd (FI_WAIT_FD)             */
	bool is_shm;                 /* names instead of sockaddrs; doorbells           */
	bool is_verbs;
	bool write_dc;               /* writes complete once delivered (FI_DELIVERY_COMPLETE) */
	struct ofi_port *client;     /* for our own connects, created on first use      */
	unsigned leaked;             /* ports left open (see ofi_port_destroy)          */
	struct ferryi_list ports;
};

/* An AV entry shared by every connection of a port to the same peer address. */
struct ofi_peer {
	struct ferryi_list_node link; /* port->peers */
	unsigned refs;
	fi_addr_t fa;
	size_t addrlen;
	uint8_t addr[OFI_ADDR_MAX];
	struct sockaddr_un db;       /* shm: the peer port's doorbell                  */
	socklen_t dblen;
	const struct ofi_wake_page *wake; /* shm: the peer context's word, or NULL:
					  ring with every message                     */
	uint64_t local_uid;          /* shm: a port of this process (0: elsewhere)      */
	unsigned ctl_queued;         /* control messages waiting for this peer          */
	unsigned eps;                /* ferry endpoints using it                        */
	struct ferryi_list lingering; /* closed ofi_eps waiting for its RMA_DONEs
					 (linger_link)                                 */
	bool removed;                /* its AV entry is gone: never post to fa again    */
	uint64_t ctl_pass;           /* flush pass in which it hit EAGAIN               */
	unsigned rma_out;            /* one-sided pieces in flight to it                */
	struct ferryi_list rma_wait; /* struct ofi_rma (retry_link) held back by
					dom->rma_peer_max, oldest first              */
};

/* A send buffer (bounce buffer): header + payload, registered with the port. */
struct ofi_txbuf {
	struct ofi_ctx c;
	struct ferryi_list_node link; /* port->tx_free, or the owning ep's tx_busy list */
	struct ofi_port *port;
	struct ferry_ep *ep;          /* NULL once detached (ep gone, or no ep)         */
	struct ferryi_op *op;         /* send op completed with this buffer, or NULL   */
	struct ofi_peer *peer;        /* held while libfabric has the buffer           */
	void *desc;
	uint8_t kind;                 /* what it carries (OFI_K_*)                     */
	uint32_t len;
	uint8_t *buf;                 /* OFI_BUF_LEN bytes                             */
};

struct ofi_txchunk {
	struct ofi_txchunk *next;
	struct fid_mr *mr;
	uint8_t *mem;
	struct ofi_txbuf bufs[OFI_TX_CHUNK];
};

struct ofi_rxbuf {
	struct ofi_ctx c;
	struct ferryi_list_node link; /* port->rx_repost or rx_done while not posted */
	struct ofi_port *port;
	uint8_t *buf;
};

/* Control message waiting for a send buffer (or for libfabric to take it). */
struct ofi_ctl {
	struct ferryi_list_node link;  /* port->ctlq */
	struct ofi_peer *peer;         /* held */
	struct ferry_ep *ep;           /* for credits and completion, or NULL */
	uint8_t kind;
	uint64_t dst, tag, aux;
	uint64_t deadline_ns;          /* dropped if libfabric refuses it until then */
	uint32_t len;
	uint8_t payload[OFI_ADDR_MAX + 96];
};

/*
 * One fabric endpoint with its CQ, AV, receive buffers and send buffers. A dom has
 * one client port (for connects) and one port per listen address; every ferry
 * endpoint is multiplexed onto one port by connection ids.
 */
struct ofi_port {
	struct ferryi_list_node link;  /* dom->ports */
	struct ofi_dom *dom;
	struct ferryi_listener_part *lp; /* accepting; NULL for the client port */
	char scheme[32];               /* "ofi+tcp", ... for peer URIs          */
	unsigned refs;                 /* endpoints + listener + client role    */
	uint32_t ksid;
	bool closing;
	struct fid_ep *ep;
	struct fid_cq *cq;
	struct fid_av *av;
	uint8_t name[OFI_ADDR_MAX];
	size_t namelen;
	char shm_name[OFI_ADDR_MAX];   /* shm: our region name                 */
	uint64_t shm_uid;              /* shm: our entry in the process registry */
	struct ferryi_list_node shm_link;
	/* readiness: the CQ's wait fd, or (shm) our doorbell socket */
	struct ferryi_poll_handle ph;
	bool polled;
	bool doorbell;
	/* receive */
	uint8_t *rx_mem;
	struct fid_mr *rx_mr;
	void *rx_desc;
	struct ofi_rxbuf rx[OFI_RX_DEPTH];
	struct ferryi_list rx_repost; /* refused by fi_recv: retried             */
	struct ferryi_list rx_done;   /* consumed: posted at the next pass      */
	uint32_t rx_ndone;
	bool rx_defer;                /* this pass may leave buffers in rx_done */
	/* send */
	struct ofi_txchunk *chunks;
	unsigned ntx, tx_out;
	struct ferryi_list tx_free;
	struct ferryi_list ctlq;       /* struct ofi_ctl, in order per peer */
	uint64_t ctl_pass;
	struct ferryi_list blocked;    /* ofi_ep with sends waiting for a buffer/EAGAIN */
	struct ferryi_list rma_retry;  /* struct ofi_rma with pieces to post    */
	unsigned rma_out;              /* RMA pieces in flight                  */
	unsigned orphan_holds;         /* peer transfers cut off by a close     */
	/* retry of work that hit EAGAIN, and polling where there is no fd */
	struct ferryi_timer timer;
	uint64_t backoff_ns;
	struct ferryi_list peers;
	struct ferryi_list rmas;       /* every ofi_rma alive on this port      */
};

/* Connection states of ofi_ep. */
enum ofi_ep_state {
	OFI_EP_INIT = 0,
	OFI_EP_REQ_SENT,   /* client: CONNREQ out, waiting for ACK/REJ            */
	OFI_EP_ACK_SENT,   /* server: CONNACK out, connected once it left or data came */
	OFI_EP_UP,
	OFI_EP_CLOSED,
};

/* A hold the peer has on one of our regions (checked one-sided ops, target side). */
struct ofi_hold {
	struct ferryi_list_node link;  /* oep->holds */
	uint64_t id;                   /* granted: the send's op id; else our counter */
	bool granted;                  /* taken with a rendezvous announce (rndv_grant):
					  ends with its finish, not an RMA_DONE */
	struct ferryi_mr_use use;
};

/* Provider state of one ferry endpoint (ferryi_ep_priv). */
struct ofi_ep {
	struct ferryi_hnode hnode;     /* inst->conns, key = our connection id */
	bool in_map;
	struct ferry_ep *ep;
	struct ofi_port *port;
	struct ofi_peer *peer;
	enum ofi_ep_state state;
	uint64_t remote_conn;
	uint32_t remote_ksid;
	uint32_t credits;              /* messages we may still send            */
	uint32_t owed;                 /* credits to give back to the peer      */
	uint32_t rx_granted;           /* credits the peer still holds from us  */
	bool credit_msg_out;           /* an OFI_K_CREDIT is queued            */
	struct ferryi_list txq;        /* ops waiting to go (op->qlink)         */
	struct ferryi_list_node blocked_link;
	struct ferryi_list tx_busy;    /* send buffers in libfabric for us      */
	struct ferryi_list rmas;       /* our ofi_rma (oep_link)                */
	struct ferryi_list holds;
	uint64_t next_hold;
	bool closing, gone;
	bool bye_received;             /* the peer closed (alive: it answers)   */
	bool bye_sent;                 /* we closed and told the peer           */
	bool reads_over_sent;          /* ... and that our reads of it are over */
	bool lingering;                /* closed, still in the conn map: the peer's
					  RMA_DONEs release our holds (ofi_ep_close) */
	struct ferryi_timer linger;    /* bounds that wait                      */
	struct ferryi_timer reprobe;   /* after a failure: is the peer still there? */
	bool probe_refused;            /* ... no: nobody listens at its address   */
	struct ferryi_list_node linger_link; /* peer->lingering                 */
	int close_reason;
	struct ferryi_poll_handle probe; /* refused-connect probe, fd -1     */
	void *cmprobe;                 /* verbs: its rdma_cm state (ofi_rdmacm.c) */
	bool probed;
	struct ferryi_peer_info local;  /* what we advertised                  */
	struct ferryi_peer_info remote; /* what the peer advertised            */
};

/* Phases of a one-sided op. */
enum ofi_rma_state {
	OFI_RMA_QUEUED = 1,   /* waiting to send its request (credits/buffers)   */
	OFI_RMA_ASKED,        /* request sent, waiting for the target's ACK      */
	OFI_RMA_MOVING,       /* pieces being posted / in flight                 */
};

/* A one-sided op in progress: the op's data lives in libfabric until pieces return. */
struct ofi_rma {
	struct ofi_ctx c;
	struct ferryi_list_node port_link; /* port->rmas */
	struct ferryi_list_node oep_link;  /* oep->rmas while the ep is around */
	struct ferryi_list_node retry_link; /* port->rma_retry or peer->rma_wait */
	struct ofi_port *port;
	struct ofi_peer *peer;          /* held (a reference) until freed      */
	struct ferry_ep *ep;            /* NULL once detached */
	struct ferryi_op *op;           /* NULL once completed */
	enum ofi_rma_state state;
	bool write;
	bool checked;
	bool refused;                   /* the target said no (the link is fine) */
	int status;                     /* first error                         */
	uint64_t hold_id;
	uint64_t raddr, rkey;           /* target address (of offset 0 of op) and key */
	uint64_t region_key;            /* what the target checks (checked mode)  */
	bool raw_mapped;
	uint64_t next;                  /* bytes posted so far                 */
	unsigned out;                   /* pieces in flight                    */
	void *desc;
	struct fid_mr *tmp_mr;          /* local registration made for this op */
};

struct ofi_inst {
	struct ferryi_prov_inst *pi;
	struct ofi_dom *doms[OFI_MAX_DOMS];
	int ndoms;
	struct ofi_dom *def;            /* "ofi://": libfabric's own pick      */
	struct ferryi_list mrs;         /* struct ofi_mr */
	struct ferryi_hmap conns;       /* struct ofi_ep by connection id      */
	bool rma_check;                 /* FERRY_OFI_RMA_CHECK (default on)    */
	bool wait_fd;                   /* FERRY_OFI_WAIT_FD (default on)      */
	int db_fd;                      /* socket we ring shm doorbells with   */
	int wake_fd;                    /* memfd of our ofi_wake_page, or -1   */
	struct ofi_wake_page *wake;
};

/* One registration of a region with one key space (dom, or port under FI_MR_ENDPOINT). */
struct ofi_mreg {
	struct ofi_mreg *next;
	struct ofi_dom *dom;
	struct ofi_port *port;          /* FI_MR_ENDPOINT only */
	uint32_t ksid;
	struct fid_mr *mr;
	uint64_t key;
	void *desc;
};

/* Provider state of one region (ferryi_mr_priv). */
struct ofi_mr {
	struct ferryi_list_node link;   /* inst->mrs */
	struct ferry_mr *mr;
	struct ofi_mreg *regs;
	bool linked;
};

/* ------------------------------------------------------------------ helpers */

static inline struct ofi_inst *ofi_inst(struct ferryi_prov_inst *pi)
{
	return ferryi_inst_priv(pi);
}

static inline struct ofi_ep *ofi_ep(struct ferry_ep *ep)
{
	return ferryi_ep_priv(ep);
}

static inline struct ferry_ctx *ofi_ctx(const struct ofi_port *port)
{
	return port->dom->inst->pi->ctx;
}

/* ofi_provider.c */
extern const struct ferryi_provider ferryi_ofi_provider;
struct ofi_dom *ofi_dom_by_scheme(struct ofi_inst *oi, const char *scheme);
struct fi_info *ofi_hints(const char *prov_name);

/* ofi_lib.c */
/* 0 once libfabric is open and every function found (the first call does it, for the
 * whole process); else FERRY_ENODEV, with why in *why. */
int ofi_lib_open(const char **why);
/* Whether FERRY_OFI_LIBRARY named the library (a failure to open it is then worth a
 * warning, not a note). */
bool ofi_lib_chosen(void);

/* ofi_cq.c */
int ofi_port_cq_open(struct ofi_port *port);
void ofi_port_unwatch(struct ofi_port *port);
void ofi_port_cq_close(struct ofi_port *port);
void ofi_port_timer_init(struct ofi_port *port);
int ofi_port_watch(struct ofi_port *port);
/* arm: end with fi_trywait, so that the CQ's wait fd may be slept on (see ofi_cq.c). */
int ofi_port_progress(struct ofi_port *port, bool arm);
void ofi_port_kick(struct ofi_port *port, uint64_t delay_ns);
/* force: whether or not the peer said it may sleep (before its word is known). */
void ofi_ring(struct ofi_port *port, struct ofi_peer *peer, bool force);
void ofi_doorbell_name(const char *shm_name, struct sockaddr_un *sa, socklen_t *len);
void ofi_wake_open(struct ofi_inst *oi);
void ofi_wake_close(struct ofi_inst *oi);
void ofi_wake_sleepy(struct ofi_inst *oi, bool may_sleep);
void ofi_wake_map(struct ofi_port *port, struct ofi_peer *peer, uint32_t pid, uint32_t fd,
		  uint64_t token);
void ofi_wake_unmap(struct ofi_peer *peer);
int ofi_fi_err(int fi_err);
int ofi_status_from_cqe(const struct ofi_port *port, const struct fi_cq_err_entry *e,
			bool rma);
const char *ofi_cqe_str(const struct ofi_port *port, const struct fi_cq_err_entry *e,
			char *buf, size_t len);

/* ofi_ep.c: called by ofi_cq.c for completions */
void ofi_rx_complete(struct ofi_rxbuf *rb, size_t len, int status);
void ofi_tx_complete(struct ofi_txbuf *tb, int status, const char *why);
void ofi_tx_done(struct ofi_txbuf *tb, struct ofi_peer *peer, int status, const char *why);
void ofi_rma_complete(struct ofi_rma *r, int status, const char *why);
void ofi_port_retry(struct ofi_port *port);
void ofi_rx_post(struct ofi_port *port, struct ofi_rxbuf *rb);
void ofi_rx_done(struct ofi_port *port, struct ofi_rxbuf *rb);
void ofi_rx_post_done(struct ofi_port *port);

/* ofi_ep.c: ports */
int ofi_port_open(struct ofi_dom *dom, const void *src, size_t srclen,
		  const char *shm_name, struct ofi_port **out);
void ofi_port_put(struct ofi_port *port);
void ofi_port_destroy(struct ofi_port *port);

/* ofi_ep.c: ops */
int ofi_listen(struct ferryi_listener_part *lp, const struct ferryi_addr *addr, char *uri,
	       size_t uri_len);
void ofi_listen_close(struct ferryi_listener_part *lp);
int ofi_connect(struct ferry_ep *ep, const struct ferryi_addr *addr);
void ofi_ep_close(struct ferry_ep *ep, int reason, int graceful);
int ofi_send(struct ferry_ep *ep, struct ferryi_op *op);
int ofi_write(struct ferry_ep *ep, struct ferryi_op *op);
int ofi_read(struct ferry_ep *ep, struct ferryi_op *op);
int ofi_rndv_grant(struct ferry_ep *ep, struct ferryi_op *op);
void ofi_rndv_release(struct ferry_ep *ep, struct ferryi_op *op);
/* Unlinks a hold from its endpoint and gives its region back. */
void ofi_hold_free(struct ofi_hold *hold);

/* ofi_mr.c */
int ofi_mr_reg(struct ferryi_prov_inst *pi, struct ferry_mr *mr);
void ofi_mr_dereg(struct ferryi_prov_inst *pi, struct ferry_mr *mr);
int ofi_mr_pack(struct ferryi_prov_inst *pi, const struct ferry_mr *mr, void *buf, size_t len);
int ofi_rkey_check(const void *key, size_t len);
/* Registers memory we own (bounce buffers) with a port, honouring mr_mode. */
int ofi_mr_local(struct ofi_port *port, void *buf, size_t len, uint64_t access,
		 struct fid_mr **mr, void **desc);
/* Every region already registered gets a registration for a new key space. */
int ofi_mr_add_dom(struct ofi_inst *oi, struct ofi_dom *dom);
int ofi_mr_add_port(struct ofi_inst *oi, struct ofi_port *port);
void ofi_mr_drop_port(struct ofi_inst *oi, struct ofi_port *port);
void ofi_mr_drop_dom(struct ofi_inst *oi, struct ofi_dom *dom);
/* The local descriptor of mr for use through port (NULL if none). */
void *ofi_mr_desc(struct ofi_port *port, struct ferry_mr *mr);
/* Finds the target key for ksid in an rkey's ofi part. */
struct ofi_rkey_ent {
	uint64_t region_key;            /* the core's id of the region (mr->key) */
	uint32_t ksid;
	bool virt, raw;
	uint64_t base, len;
	uint16_t keylen;
	const uint8_t *key;
};
int ofi_rkey_find(const struct ferry_rkey *rk, uint32_t ksid, struct ofi_rkey_ent *out);


/* ------------------------------------------------------------------ wire header */

#define OFI_RMA_REQ_LEN 36

struct ofi_hdr {
	uint8_t kind, mtype, mflags;
	uint32_t credits;
	uint64_t dst, tag, aux;
};

static inline void ofi_hdr_put(uint8_t *b, const struct ofi_hdr *h)
{
	b[0] = h->kind;
	b[1] = h->mtype;
	b[2] = h->mflags;
	b[3] = 0;
	ferryi_put_le32(b + 4, h->credits);
	ferryi_put_le64(b + 8, h->dst);
	ferryi_put_le64(b + 16, h->tag);
	ferryi_put_le64(b + 24, h->aux);
}

static inline void ofi_hdr_get(const uint8_t *b, struct ofi_hdr *h)
{
	h->kind = b[0];
	h->mtype = b[1];
	h->mflags = b[2];
	h->credits = ferryi_get_le32(b + 4);
	h->dst = ferryi_get_le64(b + 8);
	h->tag = ferryi_get_le64(b + 16);
	h->aux = ferryi_get_le64(b + 24);
}

/* A status from the wire: a known ferry code, else EPROTO. */
static inline int ofi_wire_status(uint64_t v)
{
	int64_t st = (int64_t)v;
	if (st == 0)
		return 0;
	if (st < 0 && st > -100000 && strcmp(ferry_errname((int)st), "UNKNOWN") != 0)
		return (int)st;
	return FERRY_EPROTO;
}

/* Credits we owe the peer ride on whatever we send it. */
static inline uint32_t ofi_take_owed(struct ofi_ep *oep)
{
	uint32_t c = oep->owed;
	oep->rx_granted += c;
	oep->owed = 0;
	return c;
}

static inline void ofi_give_back_owed(struct ofi_ep *oep, uint32_t c)
{
	oep->rx_granted -= c;
	oep->owed += c;
}

/* ------------------------------------------------------------------ across files */

/* ofi_port.c */
bool ofi_post_begin(struct ofi_peer *peer);
void ofi_post_end(struct ofi_peer *peer);
uint64_t ofi_eager_limit(const struct ofi_port *port, const struct ofi_peer *peer,
			 uint64_t want);
int ofi_peer_get(struct ofi_port *port, const void *addr, size_t len,
		 struct ofi_peer **out);
void ofi_peer_put(struct ofi_port *port, struct ofi_peer *peer);
void ofi_peer_cut(struct ofi_port *port, struct ofi_peer *peer);
struct ofi_txbuf *ofi_tx_get(struct ofi_port *port);
void ofi_tx_put(struct ofi_port *port, struct ofi_txbuf *tb);

int ofi_tx_post(struct ofi_port *port, struct ofi_peer *peer, struct ofi_txbuf *tb);
void ofi_ctl_free(struct ofi_port *port, struct ofi_ctl *cl);
void ofi_ctl_flush(struct ofi_port *port);
int ofi_ctl_queue(struct ofi_port *port, struct ofi_peer *peer, struct ferry_ep *ep,
		  uint8_t kind, uint64_t dst, uint64_t tag, uint64_t aux,
		  const void *payload, size_t len);

int ofi_client_port(struct ofi_dom *dom, struct ofi_port **out);

/* ofi_cm.c */
void ofi_probe_stop(struct ofi_ep *oep);
void ofi_probe_start(struct ofi_ep *oep);
void ofi_linger_probe_start(struct ofi_ep *oep);
void ofi_ep_linger_probed(struct ofi_ep *oep, int err);
void ofi_on_connreq(struct ofi_port *port, const struct ofi_hdr *h, const uint8_t *pl,
		    size_t plen);
void ofi_on_connack(struct ofi_ep *oep, const uint8_t *pl, size_t plen);

/* ofi_rdmacm.c */
int ofi_rdmacm_bind_check(const void *sa, size_t len);
void ofi_cmprobe_start(struct ofi_ep *oep, const void *sa, size_t len);
void ofi_cmprobe_stop(struct ofi_ep *oep);

/* ofi_rma.c */
void ofi_free_rma(struct ofi_port *port, struct ofi_rma *r, bool owner_alive);
void ofi_rma_build_req(struct ofi_rma *r, uint8_t *p);
void ofi_rma_post(struct ofi_rma *r);
void ofi_rma_finish(struct ofi_rma *r);
void ofi_on_rma_req(struct ofi_ep *oep, const struct ofi_hdr *h, const uint8_t *pl,
		    size_t plen);
void ofi_on_rma_ack(struct ofi_ep *oep, const struct ofi_hdr *h, const uint8_t *pl,
		    size_t plen);
void ofi_on_rma_done(struct ofi_ep *oep, const struct ofi_hdr *h);

/* ofi_ep.c */
void ofi_ep_init(struct ofi_ep *oep, struct ferry_ep *ep);
int ofi_conn_add(struct ofi_inst *oi, struct ofi_ep *oep);
void ofi_conn_del(struct ofi_inst *oi, struct ofi_ep *oep);
void ofi_ep_up(struct ofi_ep *oep);
void ofi_ep_maybe_gone(struct ofi_ep *oep);
void ofi_ep_drop_holds(struct ofi_ep *oep, bool orphaned, bool grants_too);
/* Keeps a fabric object left open on purpose reachable for the process's life. */
void ofi_keep_open(void *obj);
/* The peer is dead or cut off: its lingering endpoints stop waiting for it. */
void ofi_peer_end_lingering(struct ofi_port *port, struct ofi_peer *peer, bool orphaned,
			    bool grants_too);
void ofi_ep_flush(struct ofi_ep *oep);

#endif /* FERRY_OFI_H */
