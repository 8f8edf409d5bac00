/*
 * verbs_ep.c - an endpoint's QP and its data path: the receive ring and credits, eager
 * sends, one-sided write/read, completions, and the two-phase teardown.
 *
 * Ordering. Every op the core hands over (send, write, read) goes through one FIFO
 * (txq) and is posted in that order, so a SEND posted after a WRITE reaches the peer
 * after the WRITE's data (RC ordering). An op at the head that cannot be posted (no
 * credit, no send-queue slot, no bounce buffer) blocks those behind it; progress posts
 * it when completions or credits free resources.
 *
 * Credits. Each side posts rx_depth receive buffers and tells the peer (handshake).
 * A SEND consumes one of the peer's buffers, so the sender holds tx_credits = the
 * peer's free buffers and never sends without one: no receiver-not-ready, ever. The
 * receiver reposts a buffer as soon as the core has taken the message (the core copies
 * it into the posted receive or its unexpected queue) and owes the sender a credit;
 * owed credits ride in the header of every SEND it makes. When rx_depth/2 are owed and
 * no traffic carries them, an explicit CREDIT message does. Normal messages keep one
 * credit in reserve that only a CREDIT message may use: when both sides are out of
 * credits each can still return the other's, so the exchange cannot deadlock. A CREDIT
 * message is itself never answered by one unless rx_depth/2 are owed (no ping-pong).
 *
 * Fragments. A core message larger than a bounce buffer (eager messages up to 64 KiB)
 * goes as FIRST (with the total length) + MORE sends; the receiver asks the core for
 * the destination at FIRST (ferryi_rx_begin) and copies each fragment straight there.
 * Fragments of one message are consecutive in the FIFO; CREDIT messages may slip in
 * between and carry no payload.
 *
 * Selective signalling. Send WRs carry a sequence number as wr_id; one in sig_every is
 * signalled, as is the last WR of every write/read, every one-sided WR of 256 KiB or
 * more, every control message, and every WR while a graceful close lingers. A
 * signalled completion retires every older WR too (RC completes in order): bounce
 * buffers come back and segments of write/read ops are counted, so each op completes
 * exactly once, when its last WR completed; the first error among its WRs wins. Eager
 * sends complete as soon as they are posted: their bytes were copied (bounce buffer
 * or inline), so the buffer may be reused.
 *
 * Liveness. Any input, and any successful send completion (the peer's NIC acknowledged
 * our work), is reported with ferryi_ep_rx_activity(). A health probe that finds no
 * credit (the peer stopped reposting receive buffers: busy, not necessarily dead) is
 * replaced by a zero-length RDMA WRITE, which needs neither a credit nor an rkey; its
 * completion is the peer's answer.
 *
 * Teardown (ep_close): a graceful close first lets queued sends (the core's goodbye)
 * go out, for at most FERRY_VERBS_LINGER_MS. Then the QP moves to ERR, rdma_disconnect
 * tells the peer, a signalled drain WR is posted behind everything else, and the
 * endpoint waits until every send WR came back (the NIC may still read or write an
 * op's buffer until then) and every posted receive was flushed (so no completion of
 * this QP stays behind in the shared CQ). Ops still owned complete with the close
 * reason; then QP, CQ share, bounce buffers and cm_id are released and ferryi_ep_gone()
 * is called. A guard timer (FERRY_VERBS_DRAIN_MS) ends a drain the device never
 * finishes; completions of a QP destroyed that way are recognised and dropped.
 */
#include "verbs.h"

#include <errno.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* op->prov[] slots for write/read ops. */
enum {
	VOP_POSTED = 0, /* bytes posted so far                          */
	VOP_OUT = 1,    /* WRs posted and not yet retired                */
	VOP_ERR = 2,    /* first error (int64), 0 if none                */
	VOP_FLAGS = 3,  /* VOPF_*                                        */
	VOP_RKEYS = 4,  /* the peer's rkey array (inside op->rkey's blob) */
	VOP_RBASE = 5,  /* the peer's region base address                */
	VOP_RCHUNK = 6, /* bytes per peer ibv_mr                         */
};

enum {
	VOPF_ABORTED = 1u << 0, /* the endpoint closed: no more segments   */
	VOPF_MRUSE = 1u << 1,   /* counted in op->mr's users               */
};

/* One-sided WRs at least this large are always signalled: completions keep coming
 * (they count as input from the peer) while a long transfer runs. */
#define SIG_BYTES (256u << 10)

static inline struct ferry_ep *vep_ep(struct ferryi_verbs_ep *vep)
{
	return ferryi_verbs_ep_of(vep);
}

static inline struct ferry_ctx *vep_ctx(struct ferryi_verbs_ep *vep)
{
	return ferryi_verbs_ep_of(vep)->ctx;
}

static void ep_timer_fn(struct ferryi_timer *t);
static void ep_pump(struct ferryi_verbs_ep *vep);
static void ep_finish(struct ferryi_verbs_ep *vep);

void ferryi_verbs_ep_init(struct ferryi_verbs_ep *vep, struct ferryi_verbs_inst *vi)
{
	vep->kind = FERRYI_VERBS_OBJ_EP;
	vep->vi = vi;
	ferryi_list_init(&vep->txq);
	ferryi_timer_init(&vep->timer, ep_timer_fn);
}

void ferryi_verbs_ep_fail(struct ferryi_verbs_ep *vep, int status, const char *fmt, ...)
{
	char why[200];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	bool waited_on = vep_ep(vep)->state == FERRYI_EP_CONNECTING;
	ferryi_ep_failed(vep_ep(vep), status, why);
	if (waited_on)
		ferryi_ctx_wake(vep_ctx(vep)); /* a thread may sleep in ferry_connect */
}

/* ------------------------------------------------------------------ setup */

static uint32_t pow2_floor(uint32_t v)
{
	uint32_t p = 1;
	while (p <= v / 2)
		p *= 2;
	return p;
}

static void ep_release(struct ferryi_verbs_ep *vep)
{
	if (vep->in_qpmap) {
		ferryi_hmap_remove(&vep->dev->qps, &vep->qnode);
		vep->in_qpmap = false;
	}
	if (vep->qp) {
		rdma_destroy_qp(vep->id);
		vep->qp = NULL;
	}
	if (vep->vcq) {
		ferryi_verbs_cq_release(vep->vcq, vep->cq_need);
		vep->vcq = NULL;
	}
	if (vep->rx_mr)
		ibv_dereg_mr(vep->rx_mr);
	if (vep->tx_mr)
		ibv_dereg_mr(vep->tx_mr);
	vep->rx_mr = vep->tx_mr = NULL;
	free(vep->rx_mem);
	free(vep->tx_mem);
	free(vep->tx_free);
	free(vep->sq);
	free(vep->early_idx);
	free(vep->early_len);
	vep->rx_mem = vep->tx_mem = NULL;
	vep->tx_free = vep->early_idx = vep->early_len = NULL;
	vep->sq = NULL;
	vep->nearly = vep->tx_nfree = 0;
}

static int post_recv(struct ferryi_verbs_ep *vep, uint32_t idx)
{
	struct ibv_sge sge = {
		.addr = (uintptr_t)(vep->rx_mem + (size_t)idx * vep->stride),
		.length = vep->stride,
		.lkey = vep->rx_mr->lkey,
	};
	struct ibv_recv_wr wr = {
		.wr_id = FERRYI_VERBS_WR_RECV | idx,
		.sg_list = &sge,
		.num_sge = 1,
	}, *bad;
	int rc = ibv_post_recv(vep->qp, &wr, &bad);
	if (rc)
		return rc;
	vep->rx_posted++;
	return 0;
}

static void *ring_alloc(size_t size)
{
	void *p = NULL;
	size = (size + 4095) & ~(size_t)4095;
	if (posix_memalign(&p, 4096, size))
		return NULL;
	memset(p, 0, size);
	return p;
}

static int reg_ring(struct ferryi_verbs_ep *vep, void *mem, size_t size, int access,
		    struct ibv_mr **out)
{
	*out = ibv_reg_mr(vep->dev->pd, mem, size, access);
	if (*out)
		return 0;
	FERRYI_ERR(vep_ctx(vep), "verbs: %s: registering an endpoint's %zu bytes of bounce "
				 "buffers failed", vep->dev->name, size);
	return ferryi_verbs_reg_error(vep_ctx(vep), vep->dev->name, size, errno ? errno : ENOMEM);
}

static int create_qp(struct ferryi_verbs_ep *vep)
{
	struct ibv_qp_init_attr qa;
	for (int attempt = 0; attempt < 2; attempt++) {
		memset(&qa, 0, sizeof(qa));
		qa.qp_context = vep;
		qa.send_cq = vep->vcq->cq;
		qa.recv_cq = vep->vcq->cq;
		qa.qp_type = IBV_QPT_RC;
		qa.sq_sig_all = 0;
		qa.cap.max_send_wr = vep->sq_depth;
		qa.cap.max_recv_wr = vep->rx_depth + 1;
		qa.cap.max_send_sge = 2; /* inline sends: header + payload in place */
		qa.cap.max_recv_sge = 1;
		qa.cap.max_inline_data = attempt == 0 ? vep->vi->tun.inline_max : 0;
		if (rdma_create_qp(vep->id, vep->dev->pd, &qa) == 0) {
			vep->qp = vep->id->qp;
			vep->max_inline = qa.cap.max_inline_data;
			return 0;
		}
		if (qa.cap.max_inline_data == 0)
			break;
		FERRYI_DBG(vep_ctx(vep), "verbs: %s: rdma_create_qp with %u bytes inline: %s; "
					 "retrying without", vep->dev->name,
			   vep->vi->tun.inline_max, strerror(errno));
	}
	int err = errno ? errno : EINVAL;
	FERRYI_ERR(vep_ctx(vep), "verbs: %s: rdma_create_qp(sq %u, rq %u): %s", vep->dev->name,
		   vep->sq_depth, vep->rx_depth + 1, strerror(err));
	return ferryi_verbs_errno(err);
}

int ferryi_verbs_ep_setup(struct ferryi_verbs_ep *vep, const struct ferryi_verbs_hs *peer)
{
	struct ferryi_verbs_tun *tun = &vep->vi->tun;
	struct ferryi_verbs_dev *dev = vep->dev;
	struct ferry_ctx *ctx = vep_ctx(vep);
	int rc;

	ferryi_local_info(ctx, &vep->local);
	uint32_t max_wr = dev->attr.max_qp_wr > 16 ? (uint32_t)dev->attr.max_qp_wr : 16;
	vep->rx_depth = FERRYI_MIN(tun->rx_depth, max_wr - 1);
	vep->sq_depth = pow2_floor(FERRYI_MIN(tun->sq_depth, max_wr));
	vep->tx_bufs = tun->tx_bufs;
	vep->rx_payload = tun->frag;
	vep->stride = (FERRYI_VERBS_HDR_LEN + vep->rx_payload + 63u) & ~63u;
	vep->local.eager_max = FERRYI_MIN(vep->local.eager_max, (uint64_t)tun->eager);
	vep->credit_thresh = FERRYI_MAX(1u, vep->rx_depth / 2);
	uint32_t lim = FERRYI_MAX(1u, FERRYI_MIN(vep->sq_depth - 1, vep->tx_bufs) / 2);
	vep->sig_every = tun->signal ? tun->signal
				     : FERRYI_MAX(1u, FERRYI_MIN(vep->sq_depth, vep->tx_bufs) / 4);
	vep->sig_every = FERRYI_MIN(vep->sig_every, lim);

	size_t rx_size = (size_t)vep->rx_depth * vep->stride;
	size_t tx_size = (size_t)vep->tx_bufs * vep->stride;
	vep->rx_mem = ring_alloc(rx_size);
	vep->tx_mem = ring_alloc(tx_size);
	vep->tx_free = calloc(vep->tx_bufs, sizeof(*vep->tx_free));
	vep->sq = calloc(vep->sq_depth, sizeof(*vep->sq));
	vep->early_idx = calloc(vep->rx_depth, sizeof(*vep->early_idx));
	vep->early_len = calloc(vep->rx_depth, sizeof(*vep->early_len));
	if (!vep->rx_mem || !vep->tx_mem || !vep->tx_free || !vep->sq || !vep->early_idx ||
	    !vep->early_len) {
		rc = FERRY_ENOMEM;
		goto err;
	}
	for (uint32_t i = 0; i < vep->sq_depth; i++)
		vep->sq[i].buf = -1;
	for (uint32_t i = 0; i < vep->tx_bufs; i++)
		vep->tx_free[i] = vep->tx_bufs - 1 - i;
	vep->tx_nfree = vep->tx_bufs;
	rc = reg_ring(vep, vep->rx_mem, rx_size, IBV_ACCESS_LOCAL_WRITE, &vep->rx_mr);
	if (rc == 0)
		rc = reg_ring(vep, vep->tx_mem, tx_size, 0, &vep->tx_mr);
	if (rc < 0)
		goto err;

	vep->cq_need = vep->sq_depth + vep->rx_depth + 2;
	vep->vcq = ferryi_verbs_cq_reserve(dev, vep->cq_need);
	if (!vep->vcq) {
		rc = ferryi_verbs_errno(errno ? errno : ENOMEM);
		goto err;
	}
	rc = create_qp(vep);
	if (rc < 0)
		goto err;
	vep->qnode.key = vep->qp->qp_num;
	rc = ferryi_hmap_insert(&dev->qps, &vep->qnode);
	if (rc < 0)
		goto err;
	vep->in_qpmap = true;

	struct ibv_port_attr pa;
	vep->max_msg = 1u << 30;
	if (ibv_query_port(dev->verbs, vep->id->port_num, &pa) == 0 && pa.max_msg_sz)
		vep->max_msg = pa.max_msg_sz;
	if (tun->max_msg && tun->max_msg < vep->max_msg)
		vep->max_msg = tun->max_msg;

	for (uint32_t i = 0; i < vep->rx_depth; i++) {
		int err = post_recv(vep, i);
		if (err) {
			FERRYI_ERR(ctx, "verbs: %s: ibv_post_recv: %s", dev->name, strerror(err));
			rc = ferryi_verbs_errno(err);
			goto err;
		}
	}
	if (peer)
		ferryi_verbs_ep_apply_peer(vep, peer);
	FERRYI_DBG(ctx, "verbs: QP %u on %s: sq %u, rq %u x %u B, inline %u, max msg %" PRIu64
		   ", signal every %u", vep->qp->qp_num, dev->name, vep->sq_depth, vep->rx_depth,
		   vep->stride, vep->max_inline, vep->max_msg, vep->sig_every);
	return 0;
err:
	ep_release(vep);
	return rc;
}

void ferryi_verbs_ep_apply_peer(struct ferryi_verbs_ep *vep, const struct ferryi_verbs_hs *hs)
{
	vep->peer = hs->info;
	vep->peer.eager_max = FERRYI_MIN(hs->info.eager_max, (uint64_t)FERRYI_VERBS_EAGER_MAX);
	vep->peer_rx_depth = hs->rx_depth;
	vep->tx_credits = hs->rx_depth;
	vep->peer_payload = hs->rx_payload;
	vep->tx_frag = FERRYI_MIN(hs->rx_payload, vep->rx_payload); /* tx stride = rx stride */
	vep->peer_guid = hs->guid;
	vep->peer_instance = hs->instance;
}

/* ------------------------------------------------------------------ op completion */

static void op_finish(struct ferryi_verbs_ep *vep, struct ferryi_op *op, int status)
{
	if (op->type != FERRY_OP_SEND) {
		if (op->prov[VOP_FLAGS] & VOPF_MRUSE)
			ferryi_verbs_mr_unuse(vep->vi->pi, op->mr);
		op->prov[VOP_FLAGS] &= ~(uint64_t)VOPF_MRUSE;
		if (status == 0)
			op->xfer = op->len;
	}
	ferryi_op_done(op, status);
}

/* One WR of a write/read op retired with status st. */
static void seg_done(struct ferryi_verbs_ep *vep, struct ferryi_op *op, int st)
{
	if (st && !op->prov[VOP_ERR])
		op->prov[VOP_ERR] = (uint64_t)(int64_t)st;
	op->prov[VOP_OUT]--;
	if (op->prov[VOP_OUT] == 0 &&
	    (op->prov[VOP_POSTED] == op->len || (op->prov[VOP_FLAGS] & VOPF_ABORTED)))
		op_finish(vep, op, (int)(int64_t)op->prov[VOP_ERR]);
}

/* Fails what waits in txq; write/read ops with WRs out finish when those return. */
static void abort_txq(struct ferryi_verbs_ep *vep)
{
	struct ferryi_list_node *n;
	while ((n = ferryi_list_pop_front(&vep->txq))) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);
		if (op->type == FERRY_OP_SEND || op->prov[VOP_OUT] == 0) {
			op_finish(vep, op, vep->reason);
			continue;
		}
		op->prov[VOP_FLAGS] |= VOPF_ABORTED;
		if (!op->prov[VOP_ERR])
			op->prov[VOP_ERR] = (uint64_t)(int64_t)vep->reason;
	}
}

/*
 * Whether the interface holding the endpoint's local address has stopped running. On
 * RoCE the netdev stops (IFF_RUNNING clears as the kernel starts closing it) before
 * the device marks its port down and raises IBV_EVENT_PORT_ERR: work the driver could
 * not transmit in between fails while the port still reads ACTIVE. False when unknown
 * (no address match, e.g. IPv6 addresses flushed with the link).
 */
static bool local_link_down(struct ferryi_verbs_ep *vep)
{
	const struct sockaddr *la = vep->id ? rdma_get_local_addr(vep->id) : NULL;
	struct ifaddrs *ifs, *i;
	bool down = false;

	if (!la || (la->sa_family != AF_INET && la->sa_family != AF_INET6) || getifaddrs(&ifs))
		return false;
	for (i = ifs; i; i = i->ifa_next) {
		const struct sockaddr *a = i->ifa_addr;
		if (!a || a->sa_family != la->sa_family)
			continue;
		bool same = a->sa_family == AF_INET
			? ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
				  ((const struct sockaddr_in *)la)->sin_addr.s_addr
			: memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
				 &((const struct sockaddr_in6 *)la)->sin6_addr,
				 sizeof(struct in6_addr)) == 0;
		if (same) {
			down = !(i->ifa_flags & IFF_RUNNING);
			break;
		}
	}
	freeifaddrs(ifs);
	return down;
}

/*
 * Status for a work request that failed for a reason of its own (not flushed). When
 * the link under the port is down, the link broke it: FERRY_ENETUNREACH, as the port
 * event reports (verbs_async.c), whichever of the two arrives first. Errors of the
 * application or the peer (keys, protection, lengths) stay what they are.
 */
static int wc_error_status(struct ferryi_verbs_ep *vep, enum ibv_wc_status st)
{
	struct ibv_port_attr pa;
	switch (st) {
	case IBV_WC_REM_ACCESS_ERR:
	case IBV_WC_REM_INV_REQ_ERR:
	case IBV_WC_LOC_LEN_ERR:
	case IBV_WC_LOC_PROT_ERR:
	case IBV_WC_LOC_ACCESS_ERR:
		return ferryi_verbs_wc_status(st);
	default:
		break;
	}
	if (!vep->id || ibv_query_port(vep->dev->verbs, vep->id->port_num, &pa) != 0)
		return ferryi_verbs_wc_status(st);
	if (pa.state != IBV_PORT_ACTIVE && pa.state != IBV_PORT_ACTIVE_DEFER)
		return FERRY_ENETUNREACH;
	if (pa.link_layer == IBV_LINK_LAYER_ETHERNET && local_link_down(vep))
		return FERRY_ENETUNREACH;
	return ferryi_verbs_wc_status(st);
}

/* Status for a WR that did not succeed: during teardown, always the close reason. */
static int wr_status(struct ferryi_verbs_ep *vep, enum ibv_wc_status st)
{
	struct ferry_ep *ep = vep_ep(vep);
	if (st == IBV_WC_SUCCESS)
		return 0;
	if (vep->closing)
		return vep->reason;
	if (st == IBV_WC_WR_FLUSH_ERR)
		return ep->state == FERRYI_EP_CLOSED && ep->status < 0 ? ep->status
								       : FERRY_ECONNABORTED;
	return wc_error_status(vep, st);
}

/* ------------------------------------------------------------------ posting */

static inline uint32_t sq_used(const struct ferryi_verbs_ep *vep)
{
	return (uint32_t)(vep->sq_head - vep->sq_tail);
}

/* One slot always stays free for the drain WR of the teardown. */
static inline bool sq_room(const struct ferryi_verbs_ep *vep)
{
	return sq_used(vep) + 1 < vep->sq_depth;
}

static bool sq_signal(struct ferryi_verbs_ep *vep, bool force)
{
	if (force || vep->linger || vep->unsig_run + 1 >= vep->sig_every) {
		vep->unsig_run = 0;
		return true;
	}
	vep->unsig_run++;
	return false;
}

static void sq_push(struct ferryi_verbs_ep *vep, struct ferryi_op *op, int32_t buf, bool sig,
		    uint8_t extra)
{
	struct ferryi_verbs_sqe *e = &vep->sq[vep->sq_head & (vep->sq_depth - 1)];
	e->op = op;
	e->buf = buf;
	e->flags = (uint8_t)((sig ? FERRYI_VERBS_SQE_SIGNALED : 0) | extra);
	vep->sq_head++;
	if (sig)
		vep->sq_last_sig = vep->sq_head;
}

/* Whether a SEND of `bytes` after the header can go now (credit_msg: a CREDIT). */
static bool can_send(const struct ferryi_verbs_ep *vep, uint64_t bytes, bool credit_msg)
{
	if (!sq_room(vep))
		return false;
	if (vep->tx_credits < (credit_msg ? 1u : 2u))
		return false;
	if (FERRYI_VERBS_HDR_LEN + bytes > vep->max_inline && vep->tx_nfree == 0)
		return false;
	return true;
}

/* Kind and payload bytes of op's next SEND, given what was posted already. */
static uint8_t frag_next(const struct ferryi_verbs_ep *vep, const struct ferryi_op *op,
			 uint32_t *chunk)
{
	uint64_t posted = op->prov[VOP_POSTED];
	if (posted == 0 && op->len <= vep->tx_frag) {
		*chunk = (uint32_t)op->len;
		return FERRYI_VERBS_K_MSG;
	}
	if (posted == 0) {
		*chunk = vep->tx_frag - FERRYI_VERBS_FIRST_EXT;
		return FERRYI_VERBS_K_FIRST;
	}
	*chunk = (uint32_t)FERRYI_MIN(op->len - posted, (uint64_t)vep->tx_frag);
	return FERRYI_VERBS_K_MORE;
}

/*
 * Posts one SEND: a fragment (kind) of op's message, chunk payload bytes from `off`,
 * or a CREDIT message when op is NULL.
 */
static int post_frag(struct ferryi_verbs_ep *vep, struct ferryi_op *op, uint8_t kind,
		     uint64_t off, uint32_t chunk, bool force_sig)
{
	uint8_t hdr[FERRYI_VERBS_HDR_LEN + FERRYI_VERBS_FIRST_EXT];
	uint32_t hlen = FERRYI_VERBS_HDR_LEN;
	bool head = kind == FERRYI_VERBS_K_MSG || kind == FERRYI_VERBS_K_FIRST;
	struct ibv_sge sge[2];
	struct ibv_send_wr wr, *bad;
	int32_t buf = -1;

	memset(hdr, 0, sizeof(hdr));
	hdr[0] = kind;
	if (head) {
		hdr[1] = op->msg.type;
		hdr[2] = op->msg.flags;
		ferryi_put_le64(hdr + 8, op->msg.tag);
		ferryi_put_le64(hdr + 16, op->msg.aux);
	}
	ferryi_put_le32(hdr + 4, vep->rx_owed);
	if (kind == FERRYI_VERBS_K_FIRST) {
		ferryi_put_le64(hdr + FERRYI_VERBS_HDR_LEN, op->len);
		hlen += FERRYI_VERBS_FIRST_EXT;
	}
	uint32_t total = hlen + chunk;
	const uint8_t *payload = chunk ? (const uint8_t *)op->buf + off : NULL;

	memset(&wr, 0, sizeof(wr));
	if (total <= vep->max_inline) {
		sge[0].addr = (uintptr_t)hdr;
		sge[0].length = hlen;
		sge[0].lkey = 0;
		wr.num_sge = 1;
		if (chunk) {
			sge[1].addr = (uintptr_t)payload;
			sge[1].length = chunk;
			sge[1].lkey = 0;
			wr.num_sge = 2;
		}
		wr.send_flags = IBV_SEND_INLINE;
	} else {
		buf = (int32_t)vep->tx_free[--vep->tx_nfree];
		uint8_t *p = vep->tx_mem + (size_t)buf * vep->stride;
		memcpy(p, hdr, hlen);
		if (chunk)
			memcpy(p + hlen, payload, chunk);
		sge[0].addr = (uintptr_t)p;
		sge[0].length = total;
		sge[0].lkey = vep->tx_mr->lkey;
		wr.num_sge = 1;
	}
	/* Control messages are rare and worth seeing complete (probes, goodbye). */
	bool last = !op || off + chunk == op->len;
	bool sig = sq_signal(vep, force_sig || (op && last && op->msg.type != FERRYI_MSG_EAGER));
	if (sig)
		wr.send_flags |= IBV_SEND_SIGNALED;
	wr.wr_id = vep->sq_head;
	wr.opcode = IBV_WR_SEND;
	wr.sg_list = sge;
	int rc = ibv_post_send(vep->qp, &wr, &bad);
	if (rc) {
		if (buf >= 0)
			vep->tx_free[vep->tx_nfree++] = (uint32_t)buf;
		FERRYI_ERR(vep_ctx(vep), "verbs: %s: ibv_post_send(SEND, %u bytes): %s",
			   vep_ep(vep)->peer, total, strerror(rc));
		return ferryi_verbs_errno(rc);
	}
	FERRYI_TRACE(vep_ctx(vep), "verbs: QP %u: SEND #%" PRIu64 " kind %u type %u, %u B%s%s, "
				   "grants %u, credits left %u", vep->qp->qp_num, vep->sq_head, kind,
		     hdr[1], total, buf < 0 ? " inline" : "", sig ? " signalled" : "",
		     vep->rx_owed, vep->tx_credits - 1);
	sq_push(vep, NULL, buf, sig, 0);
	vep->tx_credits--;
	vep->rx_owed = 0;
	vep->vi->pi->stats.wire_bytes_sent += total;
	return 0;
}

/*
 * Posts as many WRs of a write/read op as the send queue takes. Each WR stays within
 * max_msg and within one ibv_mr on both sides. Returns 1 when the op is fully posted,
 * 0 when the queue is full, or a negative error.
 */
static int post_rma(struct ferryi_verbs_ep *vep, struct ferryi_op *op)
{
	struct ferryi_prov_inst *pi = vep->vi->pi;
	const uint8_t *rkeys = (const uint8_t *)(uintptr_t)op->prov[VOP_RKEYS];
	uint64_t rbase = op->prov[VOP_RBASE], rchunk = op->prov[VOP_RCHUNK];
	uint64_t loff0 = (uint64_t)((uint8_t *)op->buf - (uint8_t *)op->mr->addr);
	enum ibv_wr_opcode opc = op->type == FERRY_OP_WRITE ? IBV_WR_RDMA_WRITE : IBV_WR_RDMA_READ;

	while (op->prov[VOP_POSTED] < op->len) {
		uint64_t posted = op->prov[VOP_POSTED], lleft;
		if (!sq_room(vep))
			return 0;
		uint32_t lkey = ferryi_verbs_mr_lkey(pi, op->mr, vep->dev, loff0 + posted, &lleft);
		uint64_t roff = op->remote_offset + posted;
		uint64_t rc_idx = roff / rchunk;
		uint64_t rleft = (rc_idx + 1) * rchunk - roff;
		uint64_t seg = FERRYI_MIN(op->len - posted, vep->max_msg);
		seg = FERRYI_MIN(seg, FERRYI_MIN(lleft, rleft));
		bool last = posted + seg == op->len;
		bool sig = sq_signal(vep, last || seg >= SIG_BYTES);
		struct ibv_sge sge = {
			.addr = (uintptr_t)((uint8_t *)op->buf + posted),
			.length = (uint32_t)seg,
			.lkey = lkey,
		};
		struct ibv_send_wr wr, *bad;
		memset(&wr, 0, sizeof(wr));
		wr.wr_id = vep->sq_head;
		wr.opcode = opc;
		wr.sg_list = &sge;
		wr.num_sge = 1;
		wr.send_flags = sig ? IBV_SEND_SIGNALED : 0;
		/*
		 * A small write travels in the work request, as perftest's do: the device
		 * need not fetch it from the region (a DMA read on a NIC, a page walk in
		 * rxe) before the first packet leaves.
		 */
		if (opc == IBV_WR_RDMA_WRITE && seg <= vep->max_inline)
			wr.send_flags |= IBV_SEND_INLINE;
		wr.wr.rdma.remote_addr = rbase + roff;
		wr.wr.rdma.rkey = ferryi_get_le32(rkeys + 4 * rc_idx);
		int rc = ibv_post_send(vep->qp, &wr, &bad);
		if (rc) {
			FERRYI_ERR(vep_ctx(vep), "verbs: %s: ibv_post_send(RDMA %s, %" PRIu64 " bytes): %s",
				   vep_ep(vep)->peer, opc == IBV_WR_RDMA_WRITE ? "WRITE" : "READ", seg,
				   strerror(rc));
			return ferryi_verbs_errno(rc);
		}
		FERRYI_TRACE(vep_ctx(vep), "verbs: QP %u: RDMA %s #%" PRIu64 " %" PRIu64 " B at +%" PRIu64
					   "%s%s", vep->qp->qp_num, opc == IBV_WR_RDMA_WRITE ? "WRITE" : "READ",
			     vep->sq_head, seg, roff,
			     wr.send_flags & IBV_SEND_INLINE ? " inline" : "", sig ? " signalled" : "");
		sq_push(vep, op, -1, sig, 0);
		op->prov[VOP_OUT]++;
		op->prov[VOP_POSTED] = posted + seg;
		if (opc == IBV_WR_RDMA_WRITE)
			pi->stats.wire_bytes_sent += seg;
		else
			pi->stats.wire_bytes_received += seg;
	}
	return 1;
}

/*
 * A zero-length RDMA WRITE: needs no rkey (IB spec C9-88: no R_Key or VA check at
 * length zero) and no receive buffer, yet the peer's NIC must acknowledge it. Its
 * completion shows the peer alive when it is too busy to return credits.
 */
static int post_ping(struct ferryi_verbs_ep *vep)
{
	struct ibv_send_wr wr, *bad;
	memset(&wr, 0, sizeof(wr));
	wr.wr_id = vep->sq_head;
	wr.opcode = IBV_WR_RDMA_WRITE;
	wr.send_flags = IBV_SEND_SIGNALED;
	int rc = ibv_post_send(vep->qp, &wr, &bad);
	if (rc)
		return ferryi_verbs_errno(rc);
	FERRYI_TRACE(vep_ctx(vep), "verbs: QP %u: ping #%" PRIu64 " (no credits for a probe)",
		     vep->qp->qp_num, vep->sq_head);
	vep->unsig_run = 0;
	sq_push(vep, NULL, -1, true, 0);
	return 0;
}

static void credit_check(struct ferryi_verbs_ep *vep)
{
	if (!vep->qp || vep->hard || !vep->up || vep->rx_owed < vep->credit_thresh)
		return;
	if (!can_send(vep, 0, true))
		return; /* retried when credits or slots come back */
	if (post_frag(vep, NULL, FERRYI_VERBS_K_CREDIT, 0, 0, false) < 0)
		ferryi_verbs_ep_fail(vep, FERRY_EIO, "cannot post a credit message");
}

/* Posts queued ops in order while resources last. */
static void ep_pump(struct ferryi_verbs_ep *vep)
{
	struct ferryi_list_node *n;
	if (vep->pumping || !vep->qp || vep->hard || !vep->up)
		return;
	vep->pumping = true;
	while ((n = ferryi_list_first(&vep->txq))) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);
		int rc;
		if (op->type == FERRY_OP_SEND) {
			bool done = false;
			rc = 0;
			while (!done) {
				uint32_t chunk;
				uint8_t kind = frag_next(vep, op, &chunk);
				uint32_t ext = kind == FERRYI_VERBS_K_FIRST ? FERRYI_VERBS_FIRST_EXT : 0;
				if (!can_send(vep, ext + chunk, false))
					break;
				rc = post_frag(vep, op, kind, op->prov[VOP_POSTED], chunk, false);
				if (rc < 0)
					break;
				op->prov[VOP_POSTED] += chunk;
				done = op->prov[VOP_POSTED] == op->len;
			}
			if (rc < 0) {
				ferryi_verbs_ep_fail(vep, rc, "cannot post a send");
				break;
			}
			if (!done)
				break;
			ferryi_list_remove(&op->qlink);
			op_finish(vep, op, 0); /* copied or inlined: the buffer is free again */
			continue;
		}
		rc = post_rma(vep, op);
		if (rc < 0) {
			ferryi_verbs_ep_fail(vep, rc, "cannot post a one-sided operation");
			break;
		}
		if (rc == 0)
			break;
		ferryi_list_remove(&op->qlink);
	}
	vep->pumping = false;
}

/* ------------------------------------------------------------------ entry points */

int ferryi_verbs_send(struct ferry_ep *ep, struct ferryi_op *op)
{
	struct ferryi_verbs_ep *vep = ferryi_verbs_ep(ep);
	if (vep->closing || vep->hard || !vep->qp || !vep->up)
		return FERRY_ENOTCONN;
	/* One fragment always goes (control messages); more only up to the peer's limit. */
	if (op->len > vep->tx_frag && op->len > vep->peer.eager_max) {
		FERRYI_DBG(ep->ctx, "verbs: %s: message of %" PRIu64 " bytes above the peer's "
				    "eager limit %" PRIu64, ep->peer, op->len, vep->peer.eager_max);
		return FERRY_EMSGSIZE;
	}
	if (op->len && !op->buf)
		return FERRY_EINVAL;
	/*
	 * A probe needs a credit, and a peer that stopped returning them (busy, e.g. in a
	 * long registration) would never see it: ask its NIC instead. The probe counts as
	 * sent; the ping's completion counts as the peer's answer.
	 */
	if (op->msg.type == FERRYI_MSG_PROBE && vep->tx_credits < 2 && sq_room(vep) &&
	    post_ping(vep) == 0) {
		op_finish(vep, op, 0);
		return 0;
	}
	op->prov[VOP_POSTED] = 0;
	ferryi_list_push_back(&vep->txq, &op->qlink);
	ep_pump(vep);
	return 0;
}

static int verbs_rma(struct ferry_ep *ep, struct ferryi_op *op)
{
	struct ferryi_verbs_ep *vep = ferryi_verbs_ep(ep);
	struct ferryi_prov_inst *pi = ep->pi;
	struct ferryi_verbs_rkey rk;
	const void *key;
	size_t klen = 0;
	bool wr = op->type == FERRY_OP_WRITE;

	if (vep->closing || vep->hard || !vep->qp || !vep->up)
		return FERRY_ENOTCONN;
	if (op->len == 0) {
		op_finish(vep, op, 0);
		return 0;
	}
	if (!op->mr || !op->buf)
		return FERRY_EINVAL;
	struct ferryi_verbs_mr *vm = ferryi_mr_priv(op->mr, pi);
	if (!vm->mrs || vm->dereg_pending)
		return FERRY_EINVAL; /* a deregistered local region */
	uint64_t loff = (uint64_t)((uint8_t *)op->buf - (uint8_t *)op->mr->addr);
	if ((uint8_t *)op->buf < (uint8_t *)op->mr->addr || !ferryi_range_ok(op->mr->len, loff, op->len))
		return FERRY_ERANGE;

	key = ferryi_rkey_key(op->rkey, FERRYI_PROV_VERBS, &klen);
	if (!key || ferryi_verbs_rkey_parse(key, klen, vep->peer_guid, &rk) < 0) {
		FERRYI_DBG(ep->ctx, "verbs: %s: rkey has no verbs key for the peer's device", ep->peer);
		op_finish(vep, op, FERRY_EBADKEY);
		return 0;
	}
	/* A key of another peer (or of ourselves) would be refused by the NIC, fatally. */
	if (rk.instance != vep->peer_instance) {
		FERRYI_DBG(ep->ctx, "verbs: %s: rkey was made by another context than this peer",
			   ep->peer);
		op_finish(vep, op, FERRY_EBADKEY);
		return 0;
	}
	/* Refused before the wire: an RC access error would kill the whole connection. */
	if (!(op->rkey->access & (wr ? FERRY_ACCESS_REMOTE_WRITE : FERRY_ACCESS_REMOTE_READ))) {
		op_finish(vep, op, FERRY_EACCES);
		return 0;
	}
	/* A blob whose header disagrees with our key was corrupted: never reaches the NIC. */
	if (op->rkey->region_len != rk.len || (op->rkey->access & ~rk.access)) {
		FERRYI_DBG(ep->ctx, "verbs: %s: rkey blob says %" PRIu64 " bytes / access %u, its "
				    "verbs key %" PRIu64 " / %u: refused", ep->peer,
			   op->rkey->region_len, op->rkey->access, rk.len, rk.access);
		op_finish(vep, op, FERRY_EBADKEY);
		return 0;
	}
	if (!ferryi_range_ok(rk.len, op->remote_offset, op->len)) {
		op_finish(vep, op, FERRY_ERANGE);
		return 0;
	}
	op->prov[VOP_POSTED] = 0;
	op->prov[VOP_OUT] = 0;
	op->prov[VOP_ERR] = 0;
	op->prov[VOP_FLAGS] = VOPF_MRUSE;
	op->prov[VOP_RKEYS] = (uint64_t)(uintptr_t)rk.rkeys;
	op->prov[VOP_RBASE] = rk.base_va;
	op->prov[VOP_RCHUNK] = rk.chunk;
	ferryi_verbs_mr_use(pi, op->mr);
	ferryi_list_push_back(&vep->txq, &op->qlink);
	ep_pump(vep);
	return 0;
}

int ferryi_verbs_write(struct ferry_ep *ep, struct ferryi_op *op)
{
	return verbs_rma(ep, op);
}

int ferryi_verbs_read(struct ferry_ep *ep, struct ferryi_op *op)
{
	return verbs_rma(ep, op);
}

/* ------------------------------------------------------------------ handshake done */

static void rx_deliver(struct ferryi_verbs_ep *vep, uint32_t idx, uint32_t len);

void ferryi_verbs_ep_up(struct ferryi_verbs_ep *vep)
{
	struct ferry_ep *ep = vep_ep(vep);
	if (vep->closing)
		return;
	vep->up = true; /* before the upcall: the core may send from inside it */
	ferryi_ep_connected(ep, &vep->peer);
	/* Another thread may have handled the CM event: wake the one waiting in connect. */
	ferryi_ctx_wake(ep->ctx);
	for (uint32_t i = 0; i < vep->nearly; i++) {
		if (vep->closing || vep->hard || ep->state != FERRYI_EP_CONNECTED)
			break;
		rx_deliver(vep, vep->early_idx[i], vep->early_len[i]);
	}
	vep->nearly = 0;
	ep_pump(vep);
	credit_check(vep);
}

/* ------------------------------------------------------------------ completions */

static void linger_check(struct ferryi_verbs_ep *vep)
{
	if (vep->linger && ferryi_list_empty(&vep->txq) && vep->sq_tail == vep->sq_head)
		ferryi_verbs_ep_hard_close(vep);
}

/*
 * Teardown may end once every send WR came back (the NIC is done with op buffers) and
 * every receive WR was flushed (so no completion of this QP is left in the shared CQ to
 * be mistaken for a later QP's with the same number).
 */
static void hard_check(struct ferryi_verbs_ep *vep)
{
	if (vep->hard && !vep->finished && vep->sq_tail == vep->sq_head && vep->rx_posted == 0)
		ep_finish(vep);
}

void ferryi_verbs_ep_tx_wc(struct ferryi_verbs_ep *vep, const struct ibv_wc *wc)
{
	struct ferry_ctx *ctx = vep_ctx(vep);
	uint64_t seq = wc->wr_id;

	if (seq < vep->sq_tail || seq >= vep->sq_head) {
		FERRYI_DBG(ctx, "verbs: %s: stray send completion %" PRIu64 " (%s)",
			   vep_ep(vep)->peer, seq, ibv_wc_status_str(wc->status));
		return;
	}
	FERRYI_TRACE(ctx, "verbs: QP %u: send completion #%" PRIu64 " (%s), retires %" PRIu64,
		     wc->qp_num, seq, ibv_wc_status_str(wc->status), seq + 1 - vep->sq_tail);
	bool failed = wc->status != IBV_WC_SUCCESS;
	bool real_err = failed && wc->status != IBV_WC_WR_FLUSH_ERR && !vep->closing;
	int st_wc = wr_status(vep, wc->status);
	/* Older WRs had no completion of their own: done, or flushed after an error. */
	int st_old = vep->sq_err ? wr_status(vep, IBV_WC_WR_FLUSH_ERR) : 0;

	if (real_err && !vep->sq_err) {
		const struct ferryi_verbs_sqe *e = &vep->sq[seq & (vep->sq_depth - 1)];
		FERRYI_WARN(ctx, "verbs: %s: %s failed: %s (vendor error 0x%x)",
			    vep_ep(vep)->peer,
			    e->op ? (e->op->type == FERRY_OP_WRITE ? "RDMA WRITE" : "RDMA READ")
				  : "SEND",
			    ibv_wc_status_str(wc->status), wc->vendor_err);
		if (wc->status == IBV_WC_REM_ACCESS_ERR)
			vep->vi->pi->stats.rkey_refusals++;
	}
	for (uint64_t s = vep->sq_tail; s <= seq; s++) {
		struct ferryi_verbs_sqe *e = &vep->sq[s & (vep->sq_depth - 1)];
		struct ferryi_op *op = e->op;
		if (e->buf >= 0)
			vep->tx_free[vep->tx_nfree++] = (uint32_t)e->buf;
		e->op = NULL;
		e->buf = -1;
		e->flags = 0;
		vep->sq_tail = s + 1;
		if (op)
			seg_done(vep, op, s == seq ? st_wc : st_old);
	}
	if (failed)
		vep->sq_err = true;
	if (vep->hard) {
		hard_check(vep); /* may finish (and free vep) */
		return;
	}
	if (failed) {
		if (vep->closing) /* lingering, but the QP broke: nothing more will go out */
			ferryi_verbs_ep_hard_close(vep);
		else if (real_err)
			ferryi_verbs_ep_fail(vep, st_wc, "work request failed: %s",
					     ibv_wc_status_str(wc->status));
		else
			ferryi_verbs_ep_fail(vep, FERRY_ECONNRESET, "QP in error state (send flushed)");
		return;
	}
	/* The peer's NIC acknowledged our work: it is alive, even while it cannot answer
	 * a probe (its answer may wait behind a long transfer of its own). */
	ferryi_ep_rx_activity(vep_ep(vep));
	ep_pump(vep);
	if (vep->linger) {
		linger_check(vep);
		return;
	}
	credit_check(vep);
}

/* The first fragment of a larger message: ask the core where it goes. */
static int rx_first(struct ferryi_verbs_ep *vep, const uint8_t *p, const uint8_t *data,
		    uint32_t dlen)
{
	struct ferry_ep *ep = vep_ep(vep);
	if (vep->rx_active || dlen < FERRYI_VERBS_FIRST_EXT)
		return FERRY_EPROTO;
	uint64_t total = ferryi_get_le64(data);
	data += FERRYI_VERBS_FIRST_EXT;
	dlen -= FERRYI_VERBS_FIRST_EXT;
	if (total < dlen || total > vep->local.eager_max) {
		FERRYI_WARN(ep->ctx, "verbs: %s: fragmented message of %" PRIu64 " bytes (limit %"
				     PRIu64 ")", ep->peer, total, vep->local.eager_max);
		return FERRY_EPROTO;
	}
	struct ferryi_msg msg = {
		.type = p[1],
		.flags = p[2],
		.tag = ferryi_get_le64(p + 8),
		.aux = ferryi_get_le64(p + 16),
	};
	int rc = ferryi_rx_begin(ep, &msg, total, &vep->rx);
	if (rc < 0)
		return rc;
	vep->rx_active = true;
	vep->rx_total = total;
	vep->rx_got = dlen;
	if (vep->rx.dst && dlen)
		memcpy(vep->rx.dst, data, dlen);
	if (vep->rx_got == vep->rx_total) {
		vep->rx_active = false;
		ferryi_rx_end(ep, &vep->rx, 0);
	}
	return 0;
}

static int rx_more(struct ferryi_verbs_ep *vep, const uint8_t *data, uint32_t dlen)
{
	if (!vep->rx_active || dlen == 0 || dlen > vep->rx_total - vep->rx_got)
		return FERRY_EPROTO;
	if (vep->rx.dst)
		memcpy((uint8_t *)vep->rx.dst + vep->rx_got, data, dlen);
	vep->rx_got += dlen;
	if (vep->rx_got == vep->rx_total) {
		vep->rx_active = false;
		ferryi_rx_end(vep_ep(vep), &vep->rx, 0);
	}
	return 0;
}

static void rx_deliver(struct ferryi_verbs_ep *vep, uint32_t idx, uint32_t len)
{
	struct ferry_ep *ep = vep_ep(vep);
	const uint8_t *p = vep->rx_mem + (size_t)idx * vep->stride;
	int rc = 0;

	if (len < FERRYI_VERBS_HDR_LEN || len > vep->stride) {
		ferryi_verbs_ep_fail(vep, FERRY_EPROTO, "message of %u bytes (header is %u)", len,
				     FERRYI_VERBS_HDR_LEN);
		return;
	}
	uint32_t credits = ferryi_get_le32(p + 4);
	if (credits > vep->peer_rx_depth - vep->tx_credits) {
		ferryi_verbs_ep_fail(vep, FERRY_EPROTO, "peer granted %u credits, only %u are out",
				     credits, vep->peer_rx_depth - vep->tx_credits);
		return;
	}
	vep->tx_credits += credits;
	vep->vi->pi->stats.wire_bytes_received += len;
	ferryi_ep_rx_activity(ep); /* any input counts for health probes */
	FERRYI_TRACE(vep_ctx(vep), "verbs: QP %u: received kind %u type %u, %u B, %u credits "
				   "(now %u)", vep->qp ? vep->qp->qp_num : 0, p[0], p[1], len,
		     credits, vep->tx_credits);

	const uint8_t *data = p + FERRYI_VERBS_HDR_LEN;
	uint32_t dlen = len - FERRYI_VERBS_HDR_LEN;
	/* Once closing, input only returns credits (a lingering close still sends). */
	bool deliver = !vep->closing && ep->state == FERRYI_EP_CONNECTED;
	switch (p[0]) {
	case FERRYI_VERBS_K_MSG:
		if (vep->rx_active) {
			rc = FERRY_EPROTO;
		} else if (deliver) {
			struct ferryi_msg msg = {
				.type = p[1],
				.flags = p[2],
				.tag = ferryi_get_le64(p + 8),
				.aux = ferryi_get_le64(p + 16),
			};
			rc = ferryi_rx_msg(ep, &msg, data, dlen);
		}
		break;
	case FERRYI_VERBS_K_CREDIT:
		rc = dlen ? FERRY_EPROTO : 0;
		break;
	case FERRYI_VERBS_K_FIRST:
		rc = deliver ? rx_first(vep, p, data, dlen) : 0;
		break;
	case FERRYI_VERBS_K_MORE:
		rc = deliver ? rx_more(vep, data, dlen) : 0;
		break;
	default:
		rc = FERRY_EPROTO;
		break;
	}
	if (rc < 0) {
		ferryi_verbs_ep_fail(vep, rc, "message kind %u type %u of %u bytes refused", p[0],
				     p[1], len);
		return;
	}
	/* The core took its copy: the buffer goes back at once, and is owed to the peer. */
	if (vep->hard || !vep->qp)
		return;
	int err = post_recv(vep, idx);
	if (err) {
		ferryi_verbs_ep_fail(vep, ferryi_verbs_errno(err), "ibv_post_recv: %s", strerror(err));
		return;
	}
	vep->rx_owed++;
	if (credits)
		ep_pump(vep);
	if (vep->linger) {
		linger_check(vep);
		return;
	}
	credit_check(vep);
}

void ferryi_verbs_ep_rx_wc(struct ferryi_verbs_ep *vep, const struct ibv_wc *wc)
{
	uint32_t idx = (uint32_t)wc->wr_id;

	if (vep->rx_posted)
		vep->rx_posted--;
	if (idx >= vep->rx_depth)
		return;
	if (vep->hard) {
		hard_check(vep); /* may finish (and free vep) */
		return;
	}
	if (wc->status != IBV_WC_SUCCESS) {
		if (vep->linger) {
			ferryi_verbs_ep_hard_close(vep); /* may free vep */
			return;
		}
		if (vep->closing || vep->hard)
			return;
		if (wc->status == IBV_WC_WR_FLUSH_ERR) {
			ferryi_verbs_ep_fail(vep, FERRY_ECONNRESET, "QP in error state (receive flushed)");
		} else {
			FERRYI_WARN(vep_ctx(vep), "verbs: %s: receive failed: %s (vendor error 0x%x)",
				    vep_ep(vep)->peer, ibv_wc_status_str(wc->status), wc->vendor_err);
			ferryi_verbs_ep_fail(vep, wc_error_status(vep, wc->status),
					     "receive failed: %s", ibv_wc_status_str(wc->status));
		}
		return;
	}
	if (!vep->up) {
		if (vep->closing || vep->nearly >= vep->rx_depth)
			return;
		/* Data can beat the ESTABLISHED event: keep it until the handshake is done. */
		vep->early_idx[vep->nearly] = idx;
		vep->early_len[vep->nearly] = wc->byte_len;
		vep->nearly++;
		return;
	}
	rx_deliver(vep, idx, wc->byte_len);
}

/* ------------------------------------------------------------------ teardown */

static void ep_finish(struct ferryi_verbs_ep *vep)
{
	struct ferry_ep *ep = vep_ep(vep);
	if (vep->finished)
		return;
	vep->finished = true;
	ferryi_timer_cancel(ep->ctx, &vep->timer);
	/* Destroy the QP first: from here on the NIC touches no buffer of ours or the user's. */
	if (vep->in_qpmap) {
		ferryi_hmap_remove(&vep->dev->qps, &vep->qnode);
		vep->in_qpmap = false;
	}
	if (vep->qp) {
		rdma_destroy_qp(vep->id);
		vep->qp = NULL;
	}
	/* Only after a forced end (drain guard): WRs that never came back. */
	for (uint64_t s = vep->sq_tail; s < vep->sq_head; s++) {
		struct ferryi_verbs_sqe *e = &vep->sq[s & (vep->sq_depth - 1)];
		struct ferryi_op *op = e->op;
		e->op = NULL;
		vep->sq_tail = s + 1;
		if (op) {
			op->prov[VOP_FLAGS] |= VOPF_ABORTED;
			seg_done(vep, op, vep->reason);
		}
	}
	abort_txq(vep);
	ep_release(vep);
	if (vep->id) {
		rdma_destroy_id(vep->id);
		vep->id = NULL;
	}
	ferryi_ep_gone(ep); /* may free ep (and vep): nothing after this */
}

void ferryi_verbs_ep_hard_close(struct ferryi_verbs_ep *vep)
{
	struct ferry_ctx *ctx = vep_ctx(vep);
	if (vep->hard || vep->finished)
		return;
	vep->hard = true;
	vep->linger = false;
	ferryi_timer_cancel(ctx, &vep->timer);
	abort_txq(vep);
	if (vep->qp) {
		struct ibv_qp_attr a = { .qp_state = IBV_QPS_ERR };
		(void)ibv_modify_qp(vep->qp, &a, IBV_QP_STATE);
	}
	if (vep->id && vep->cm >= FERRYI_VERBS_CM_CONNECTING)
		(void)rdma_disconnect(vep->id); /* non-blocking on an evented id */
	if (vep->qp && (vep->sq_tail != vep->sq_head || vep->rx_posted)) {
		/* Behind everything else: its flush proves the send queue is empty. */
		struct ibv_send_wr wr, *bad;
		memset(&wr, 0, sizeof(wr));
		wr.wr_id = vep->sq_head;
		wr.opcode = IBV_WR_SEND;
		wr.send_flags = IBV_SEND_SIGNALED;
		if (ibv_post_send(vep->qp, &wr, &bad) == 0)
			sq_push(vep, NULL, -1, true, FERRYI_VERBS_SQE_DRAIN);
		ferryi_timer_arm(ctx, &vep->timer,
				 ferryi_now_ns(ctx) + (uint64_t)vep->vi->tun.drain_ms * 1000000ull);
	}
	hard_check(vep); /* may finish (and free vep) at once */
}

static void ep_timer_fn(struct ferryi_timer *t)
{
	struct ferryi_verbs_ep *vep = ferryi_container_of(t, struct ferryi_verbs_ep, timer);
	if (vep->finished)
		return;
	if (vep->linger) {
		FERRYI_DBG(vep_ctx(vep), "verbs: %s: linger time over, %u WRs and %s queue left",
			   vep_ep(vep)->peer, sq_used(vep),
			   ferryi_list_empty(&vep->txq) ? "an empty" : "a non-empty");
		ferryi_verbs_ep_hard_close(vep);
		return;
	}
	FERRYI_WARN(vep_ctx(vep), "verbs: %s: %u send WRs not flushed after %u ms; destroying "
				  "the QP anyway", vep_ep(vep)->peer, sq_used(vep),
		    vep->vi->tun.drain_ms);
	ep_finish(vep);
}

void ferryi_verbs_ep_close(struct ferry_ep *ep, int reason, int graceful)
{
	struct ferryi_verbs_ep *vep = ferryi_verbs_ep(ep);
	struct ferry_ctx *ctx = ep->ctx;

	if (vep->closing || vep->finished)
		return;
	vep->closing = true;
	vep->reason = reason < 0 ? reason : FERRY_ECANCELED;
	vep->nearly = 0;
	if (vep->rx_active) {
		vep->rx_active = false;
		ferryi_rx_end(ep, &vep->rx, vep->reason); /* the receive fails with the ep */
	}
	if (!vep->qp) {
		ep_finish(vep);
		return;
	}
	bool pending = !ferryi_list_empty(&vep->txq) || vep->sq_tail != vep->sq_head;
	if (graceful && pending && vep->up && !vep->sq_err && !vep->hard &&
	    vep->cm == FERRYI_VERBS_CM_ESTABLISHED && vep->vi->tun.linger_ms) {
		/*
		 * The last WR must be signalled for its completion to be seen; queued ops
		 * will be (linger signals all), else a signalled CREDIT message covers it.
		 */
		bool covered = !ferryi_list_empty(&vep->txq) || vep->sq_last_sig == vep->sq_head;
		if (!covered && can_send(vep, 0, true) &&
		    post_frag(vep, NULL, FERRYI_VERBS_K_CREDIT, 0, 0, true) == 0)
			covered = true;
		if (covered) {
			vep->linger = true;
			ferryi_timer_arm(ctx, &vep->timer,
					 ferryi_now_ns(ctx) + (uint64_t)vep->vi->tun.linger_ms * 1000000ull);
			ep_pump(vep);
			linger_check(vep);
			return;
		}
	}
	ferryi_verbs_ep_hard_close(vep);
}
