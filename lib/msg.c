/*
 * msg.c - operations: posting, completion, tag matching, and the rendezvous protocol.
 *
 * Every op is completed exactly once by ferryi_op_complete(): ops the provider owns
 * reach it through ferryi_op_done(), core-owned ops (posted receives, senders waiting
 * for a rendezvous finish) through matching, deadlines or endpoint teardown.
 *
 * Rendezvous (sends above the eager limit), on top of any provider's send and read:
 *   sender: registers its buffer for remote read (from the registration cache, so the
 *           region may start before the buffer), sends RTS {size, [offset,] rkey} with
 *           its op id
 *   receiver: matches RTS to a receive, reads the payload straight into the receive
 *            buffer with the provider's one-sided read, then sends FIN {op id, status}
 *   sender: completes on FIN. The send op (and so the endpoint) stays held throughout.
 * A provider whose target must be asked before each read (ofi) may instead grant the
 * read with the announce (rndv_grant, FERRYI_MSGF_RNDV_GRANTED): it holds the region
 * until the FIN, and the reader reads at once.
 * When data is moving and a deadline passes, the transfer cannot be abandoned alone:
 * the endpoint fails instead, and every op on it completes with the timeout.
 */
#include "core_priv.h"

#include <stdlib.h>
#include <string.h>

#define OP_CACHE_MAX 256

/* ------------------------------------------------------------------ op allocation */

static int op_slot_get(struct ferry_ctx *ctx, struct ferryi_op *op)
{
	if (ctx->nfree) {
		op->slot = ctx->free_slots[--ctx->nfree];
	} else {
		if (ctx->nslots == ctx->slots_cap) {
			uint32_t cap = ctx->slots_cap ? ctx->slots_cap * 2 : 256;
			struct ferryi_op **s = realloc(ctx->slots, cap * sizeof(*s));
			if (!s)
				return FERRY_ENOMEM;
			ctx->slots = s;
			uint32_t *f = realloc(ctx->free_slots, cap * sizeof(*f));
			if (!f)
				return FERRY_ENOMEM;
			ctx->free_slots = f;
			ctx->slots_cap = cap;
		}
		op->slot = ctx->nslots++;
	}
	/* Ids are checked against their endpoint, never trusted: a counter suffices. */
	op->gen = ++ctx->op_gen ? ctx->op_gen : ++ctx->op_gen;
	ctx->slots[op->slot] = op;
	return 0;
}

static void op_deadline(struct ferryi_timer *t);

int ferryi_op_alloc2(struct ferry_ep *ep, enum ferry_op_type type, struct ferry_cq *cq,
		     bool internal, struct ferryi_op **out)
{
	struct ferry_ctx *ctx = ep->ctx;
	struct ferryi_op *op;
	int rc;

	if (!internal) {
		rc = ferryi_cq_reserve(cq);
		if (rc < 0) {
			FERRYI_DBG(ctx, "post refused: completion queue full (FERRY_CQ_SIZE=%u)",
				   ctx->cfg.cq_size);
			return rc;
		}
	}
	op = ctx->op_cache;
	if (op) {
		ctx->op_cache = op->rndv_peer;
		ctx->op_cache_len--;
	} else {
		op = malloc(sizeof(*op));
		if (!op)
			goto nomem;
	}
	ferryi_zero(op, offsetof(struct ferryi_op, rndv_pack));
	if (op_slot_get(ctx, op) < 0) {
		free(op);
		goto nomem;
	}
	op->type = type;
	op->internal = internal;
	op->ep = ep;
	op->cq = cq;
	ferryi_timer_init(&op->deadline, op_deadline);
	ferryi_ep_ref(ep);
	ferryi_list_push_back(&ep->ops, &op->link);
	if (ferryi_list_first(&ep->ops) == &op->link)
		ferryi_ep_ops_began(ep);
	*out = op;
	return 0;
nomem:
	if (!internal)
		ferryi_cq_unreserve(cq);
	return FERRY_ENOMEM;
}

struct ferryi_op *ferryi_op_alloc(struct ferry_ep *ep, enum ferry_op_type type,
				  struct ferry_cq *cq, bool internal)
{
	struct ferryi_op *op = NULL;
	(void)ferryi_op_alloc2(ep, type, cq, internal, &op);
	return op;
}

/* Returns the op's resources and memory; the caller dealt with its completion. */
static void op_release(struct ferryi_op *op)
{
	struct ferry_ctx *ctx = op->ep->ctx;
	ferryi_timer_cancel(ctx, &op->deadline);
	if (ferryi_node_linked(&op->link))
		ferryi_list_remove(&op->link); /* the poller sees when ep->ops empties */
	if (ferryi_node_linked(&op->qlink))
		ferryi_list_remove(&op->qlink);
	if (op->mr) {
		if (op->mr_internal)
			ferryi_mr_internal_put(op->mr);
		else
			ferryi_mr_unref(op->mr);
	}
	if (op->rndv_mr)
		ferryi_mr_internal_put(op->rndv_mr);
	if (op->rkey)
		ferryi_rkey_unref(op->rkey);
	ctx->slots[op->slot] = NULL;
	ctx->free_slots[ctx->nfree++] = op->slot;
	if (ctx->op_cache_len < OP_CACHE_MAX) {
		op->rndv_peer = ctx->op_cache;
		ctx->op_cache = op;
		ctx->op_cache_len++;
	} else {
		free(op);
	}
}

/* The announce of a granted rendezvous never left, or its finish came: no more reads. */
static void rndv_ungrant(struct ferryi_op *op)
{
	if (!op->rndv_granted)
		return;
	op->rndv_granted = false;
	op->ep->pi->prov->rndv_release(op->ep, op);
}

/* An op that was never handed over: undo the post, report nothing. */
static void op_discard(struct ferryi_op *op)
{
	struct ferry_ep *ep = op->ep;
	rndv_ungrant(op);
	if (!op->internal)
		ferryi_cq_unreserve(op->cq);
	op_release(op);
	ferryi_ep_unref(ep);
}

void ferryi_op_complete(struct ferryi_op *op, int status)
{
	struct ferry_ep *ep = op->ep;
	struct ferryi_prov_inst *pi = ep->pi;

	if (op->completed) {
		FERRYI_ERR(ep->ctx, "BUG: op %llx completed twice (status %d)",
			   (unsigned long long)ferryi_op_id(op), status);
		return;
	}
	op->completed = true;
	if (op->internal) {
		if (op->done_fn)
			op->done_fn(op, status);
		op_release(op);
		ferryi_ep_unref(ep);
		return;
	}
	struct ferry_completion c = {
		.user_ctx = op->user_ctx,
		.ep = ep, /* the op's reference moves to the queue entry */
		.status = status,
		.type = op->type,
		.tag = op->tag,
		.len = op->xfer,
	};
	pi->stats.ops_completed++;
	if (status < 0) {
		pi->stats.ops_failed++;
	} else if (op->type == FERRY_OP_SEND || op->type == FERRY_OP_WRITE) {
		pi->stats.bytes_sent += op->xfer;
	} else {
		pi->stats.bytes_received += op->xfer;
	}
	struct ferry_cq *cq = op->cq;
	op_release(op);
	ferryi_cq_push(cq, &c, pi);
}

struct ferryi_op *ferryi_op_find(struct ferry_ep *ep, uint64_t id)
{
	struct ferry_ctx *ctx = ep->ctx;
	uint32_t slot = (uint32_t)id, gen = (uint32_t)(id >> 32);
	if (slot >= ctx->nslots)
		return NULL;
	struct ferryi_op *op = ctx->slots[slot];
	if (!op || op->gen != gen || op->ep != ep || op->completed)
		return NULL;
	return op;
}

static void rndv_send_maybe_done(struct ferryi_op *op)
{
	if (op->rndv_rts_done && op->rndv_fin)
		ferryi_op_complete(op, op->rndv_status);
}

/*
 * A closed endpoint's rendezvous send whose region a peer may read (a provider holds
 * it for the peer's transfer or grant): it ends when the provider has let go of the
 * endpoint, because a fabric may still be sending the read's answer out of the
 * buffer, which is the application's only after that.
 */
static bool rndv_send_read_by_peer(const struct ferryi_op *op)
{
	const struct ferry_ep *ep = op->ep;
	return op->type == FERRY_OP_SEND && !op->internal && op->rndv_mr &&
	       op->rndv_mr->remote_users && ep->state != FERRYI_EP_CONNECTED &&
	       !ep->provider_gone;
}

void ferryi_op_done(struct ferryi_op *op, int status)
{
	if (!op->provider_owned) {
		FERRYI_ERR(op->ep->ctx, "BUG: provider %s completed op %llx it does not own",
			   op->ep->pi->prov->name, (unsigned long long)ferryi_op_id(op));
		return;
	}
	op->provider_owned = false;
	if (op->rndv_mr && op->type == FERRY_OP_SEND && !op->internal) {
		if (status == 0) {
			op->rndv_rts_done = true; /* now wait for the receiver's finish */
			rndv_send_maybe_done(op);
			return;
		}
		/* A closing provider ends the announce, which may have left already: as
		 * in ferryi_ep_fail_core_ops, a peer's read keeps the send. */
		if (rndv_send_read_by_peer(op)) {
			op->rndv_gone_wait = true;
			return;
		}
	}
	ferryi_op_complete(op, status);
}

static void op_deadline(struct ferryi_timer *t)
{
	struct ferryi_op *op = ferryi_container_of(t, struct ferryi_op, deadline);
	bool moving = op->provider_owned || op->receiving ||
		      (op->rndv_peer && op->rndv_peer->provider_owned) ||
		      (op->rndv_mr && op->rndv_mr->remote_users);
	if (moving) {
		ferryi_ep_failed(op->ep, FERRY_ETIMEDOUT,
				 "operation deadline passed while its data was moving");
		return;
	}
	FERRYI_DBG(op->ep->ctx, "op %llx on %s: deadline passed", (unsigned long long)ferryi_op_id(op),
		   op->ep->peer);
	ferryi_op_complete(op, FERRY_ETIMEDOUT);
}

static void op_arm_deadline(struct ferryi_op *op, const struct ferry_op_attr *attr)
{
	if (attr && attr->timeout_ms)
		ferryi_timer_arm(op->ep->ctx, &op->deadline,
				 ferryi_now_ns(op->ep->ctx) + (uint64_t)attr->timeout_ms * 1000000ull);
}

/*
 * Bookkeeping of a successful post. The provider may have completed the op already
 * (its memory reused): only an op still alive under its id gets its deadline.
 */
static void op_posted(struct ferry_ep *ep, struct ferryi_op *op, uint64_t id,
		      const struct ferry_op_attr *attr)
{
	ep->pi->stats.ops_posted++;
	ferryi_ep_touch_use(ep);
	if (ferryi_op_find(ep, id) == op)
		op_arm_deadline(op, attr);
}

/* ------------------------------------------------------------------ control messages */

int ferryi_send_ctrl(struct ferry_ep *ep, uint8_t type, uint64_t tag, uint64_t aux)
{
	struct ferryi_op *op;
	if (ep->state != FERRYI_EP_CONNECTED)
		return FERRY_ENOTCONN;
	int rc = ferryi_op_alloc2(ep, FERRY_OP_SEND, NULL, true, &op);
	if (rc < 0)
		return rc;
	op->msg.type = type;
	op->msg.tag = tag;
	op->msg.aux = aux;
	op->provider_owned = true;
	rc = ep->pi->prov->send(ep, op);
	if (rc < 0) {
		op->provider_owned = false;
		op_discard(op);
	}
	return rc;
}

/* ------------------------------------------------------------------ posting helpers */

static int ep_check_postable(struct ferry_ep *ep)
{
	if (ep->state == FERRYI_EP_CONNECTED)
		return 0;
	FERRYI_DBG(ep->ctx, "post on %s endpoint %s refused: %s", ep->pi->prov->name, ep->peer,
		   ep->state == FERRYI_EP_CLOSED ? "closed" : "not connected");
	return FERRY_ENOTCONN;
}

static struct ferry_cq *op_cq(struct ferry_ep *ep, const struct ferry_op_attr *attr)
{
	return attr && attr->cq ? attr->cq : ep->ctx->default_cq;
}

static uint64_t ep_eager_max(const struct ferry_ep *ep)
{
	uint64_t m = ep->ctx->cfg.eager_max;
	m = FERRYI_MIN(m, ep->pi->prov->eager_max);
	m = FERRYI_MIN(m, ep->peer_info.eager_max);
	return m;
}

static int op_hand_over(struct ferryi_op *op, int (*fn)(struct ferry_ep *, struct ferryi_op *))
{
	op->provider_owned = true;
	int rc = fn(op->ep, op);
	if (rc < 0) {
		op->provider_owned = false;
		op_discard(op);
	}
	return rc;
}

/* ------------------------------------------------------------------ eager flow control */

/*
 * Each side advertises how many eager bytes it buffers unmatched (FERRY_UNEXPECTED_MAX);
 * a sender spends that credit on eager messages and waits, in order, when it runs out.
 * The receiver returns credit as it consumes messages (matched or delivered from the
 * unexpected queue), in batches of a quarter of its budget. So a fast sender never
 * overruns a slow receiver, and the receiver's hard budget check only trips on a peer
 * that ignores the protocol.
 */
static uint64_t eager_charge(uint64_t len)
{
	return FERRYI_EAGER_CHARGE + len;
}

/*
 * Spends credit for op if it finds it. Eager messages and rendezvous announces both
 * cost their payload plus FERRYI_EAGER_CHARGE: an announce is what the receiver
 * buffers for an unmatched large send.
 */
static bool credit_take(struct ferry_ep *ep, struct ferryi_op *op)
{
	if (ep->tx_credit == UINT64_MAX)
		return true;
	uint64_t charge = eager_charge(op->len);
	/*
	 * An announce larger than the peer's whole budget could never go: send it and let
	 * the peer's budget check refuse it (a misconfigured FERRY_UNEXPECTED_MAX shows as
	 * a logged ENOBUFS there, not as a send that waits forever).
	 */
	if (charge > ep->tx_credit && charge <= ep->peer_info.rx_credit)
		return false;
	if (charge > ep->tx_credit) {
		ep->tx_credit = 0;
		return true;
	}
	ep->tx_credit -= charge;
	return true;
}

static void credit_drain(struct ferry_ep *ep)
{
	struct ferryi_list_node *n;
	while (ep->state == FERRYI_EP_CONNECTED && (n = ferryi_list_first(&ep->credit_wait))) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);
		if (!credit_take(ep, op))
			return;
		ferryi_list_remove(&op->qlink);
		op->provider_owned = true;
		int rc = ep->pi->prov->send(ep, op);
		if (rc < 0) {
			op->provider_owned = false;
			rndv_ungrant(op);
			ferryi_op_complete(op, rc);
		}
	}
}

static void credit_return(struct ferry_ep *ep, uint64_t len)
{
	uint64_t threshold = ep->ctx->cfg.unexpected_max / 4;
	ep->rx_credit_owed += eager_charge(len);
	if (ep->rx_credit_owed >= (threshold ? threshold : 1) &&
	    ferryi_send_ctrl(ep, FERRYI_MSG_CREDIT, 0, ep->rx_credit_owed) == 0)
		ep->rx_credit_owed = 0;
}

static void rx_credit(struct ferry_ep *ep, uint64_t bytes)
{
	if (ep->tx_credit == UINT64_MAX)
		return;
	/* Never more than the peer advertised: a confused peer cannot make us overrun it. */
	uint64_t max = ep->peer_info.rx_credit;
	ep->tx_credit = bytes >= max - ep->tx_credit ? max : ep->tx_credit + bytes;
	credit_drain(ep);
}

/* ------------------------------------------------------------------ send */

int ferry_send(struct ferry_ep *ep, const void *buf, size_t len, uint64_t tag, void *user_ctx,
	       const struct ferry_op_attr *attr)
{
	struct ferryi_op *op;
	int rc;

	if (!ep || (!buf && len))
		return FERRY_EINVAL;
	struct ferry_ctx *ctx = ep->ctx;
	ferryi_ctx_lock(ctx);
	rc = ep_check_postable(ep);
	if (rc < 0)
		goto out;
	if (len > ep->peer_info.max_frame) {
		FERRYI_DBG(ctx, "send of %zu bytes to %s refused: peer's max frame is %llu", len,
			   ep->peer, (unsigned long long)ep->peer_info.max_frame);
		rc = FERRY_EMSGSIZE;
		goto out;
	}
	rc = ferryi_op_alloc2(ep, FERRY_OP_SEND, op_cq(ep, attr), false, &op);
	if (rc < 0)
		goto out;
	op->user_ctx = user_ctx;
	op->tag = tag;
	op->xfer = len;
	op->flags = attr ? attr->flags : 0;
	op->msg.tag = tag;
	op->msg.aux = ferryi_op_id(op);
	if (len <= ep_eager_max(ep) &&
	    (!ep->peer_info.rx_credit || eager_charge(len) <= ep->peer_info.rx_credit / 2)) {
		op->msg.type = FERRYI_MSG_EAGER;
		op->buf = (void *)buf;
		op->len = len;
	} else {
		/*
		 * A cached region may start before buf: the announce then carries the
		 * offset, which only peers that advertised it understand. Sends with
		 * compression flags keep a region of their own (TCP keeps those flags
		 * with the region for the peer's read).
		 */
		bool cacheable = (ep->peer_info.features & FERRYI_FEAT_RNDV_OFFSET) &&
				 !(op->flags & (FERRY_OP_COMPRESS | FERRY_OP_NO_COMPRESS));
		rc = ferryi_mr_internal_get(ctx, (void *)buf, len, FERRY_ACCESS_REMOTE_READ,
					    cacheable, &op->rndv_mr);
		if (rc < 0) {
			op_discard(op);
			goto out;
		}
		uint64_t off = (uint64_t)((const char *)buf - (const char *)op->rndv_mr->addr);
		size_t hdr = off ? 16 : 8;
		size_t pack_len = sizeof(op->rndv_pack) - hdr;
		/* Only this endpoint's provider will read it. */
		rc = ferryi_mr_pack_locked(op->rndv_mr, ep->pi, op->rndv_pack + hdr, &pack_len);
		if (rc < 0) {
			op_discard(op);
			goto out;
		}
		ferryi_put_le64(op->rndv_pack, len);
		if (off) {
			ferryi_put_le64(op->rndv_pack + 8, off);
			op->msg.flags |= FERRYI_MSGF_RNDV_OFFSET;
		}
		op->msg.type = FERRYI_MSG_RTS;
		op->buf = op->rndv_pack;
		op->len = hdr + pack_len;
		/*
		 * A send with a deadline must be able to end without the reader, so its
		 * reads are asked for one by one; without one, the announce can grant
		 * the read (the hold ends with the finish or the endpoint).
		 */
		if (!(attr && attr->timeout_ms) && ep->pi->prov->rndv_grant &&
		    ep->pi->prov->rndv_grant(ep, op) == 0) {
			op->rndv_granted = true;
			op->msg.flags |= FERRYI_MSGF_RNDV_GRANTED;
		}
	}
	uint64_t id = ferryi_op_id(op);
	if (!ferryi_list_empty(&ep->credit_wait) || !credit_take(ep, op)) {
		/* Flow control: wait, in order, until the receiver returns credit. */
		ferryi_list_push_back(&ep->credit_wait, &op->qlink);
		rc = 0;
	} else {
		rc = op_hand_over(op, ep->pi->prov->send);
	}
	if (rc == 0)
		op_posted(ep, op, id, attr);
out:
	ferryi_ctx_unlock(ctx);
	return rc;
}

/* ------------------------------------------------------------------ receive and matching */

static bool tag_match(uint64_t msg_tag, uint64_t tag, uint64_t mask)
{
	return ((msg_tag ^ tag) & mask) == 0;
}

/* A message that can be received on a closed endpoint: whole, eager, nobody on it. */
static bool ux_arrived(const struct ferryi_uxmsg *ux)
{
	return ux->type != FERRYI_MSG_RTS && ux->complete && !ux->waiting;
}

static void ux_free(struct ferry_ep *ep, struct ferryi_uxmsg *ux)
{
	if (ferryi_node_linked(&ux->link))
		ferryi_list_remove(&ux->link);
	ep->unexpected_bytes -= ux->charge;
	if (ux->rkey)
		ferryi_rkey_unref(ux->rkey);
	free(ux);
}

/*
 * The read of a rendezvous is over. The sender's buffer was the user's to change
 * again as soon as the send completed, by a deadline or a close, and a fabric may
 * serve our read of it after that (verbs and libfabric read without the sender's
 * library; a cached registration outlives the send): what we read is the message only
 * if the send was still pending when our finish reached the sender. So with a peer
 * that answers (FERRYI_FEAT_RNDV_ACK) the receive completes at its FIN_ACK, with the
 * status the sender gives, and a close before it fails the receive (as does a read
 * that ends after the close, with any peer): the send and the receive then agree on
 * whether the message arrived.
 */
static void rndv_read_done(struct ferryi_op *rop, int status)
{
	struct ferryi_op *recv = rop->rndv_peer;
	struct ferry_ep *ep = rop->ep;
	(void)ferryi_send_ctrl(ep, FERRYI_MSG_FIN, (uint64_t)(int64_t)status, recv->rndv_remote_id);
	recv->rndv_peer = NULL;
	recv->receiving = false;
	if (recv->completed)
		return;
	if (status == 0 && ep->state != FERRYI_EP_CONNECTED) {
		/* Closed while the fabric finished the read: the sender may have had its
		 * buffer back already, and no answer can come. */
		status = ep->status < 0 ? ep->status : FERRY_ECONNRESET;
	} else if (status == 0 && (ep->peer_info.features & FERRYI_FEAT_RNDV_ACK)) {
		ferryi_list_push_back(&ep->rndv_acking, &recv->qlink);
		return;
	}
	ferryi_op_complete(recv, status);
}

static void rndv_start(struct ferryi_op *recv, uint64_t size, uint64_t offset,
		       uint64_t sender_id, struct ferry_rkey *rkey, bool granted)
{
	struct ferry_ep *ep = recv->ep;
	struct ferry_ctx *ctx = ep->ctx;
	struct ferryi_op *rop;
	int rc;

	recv->xfer = size;
	recv->rndv_remote_id = sender_id;
	if (size > recv->len) {
		FERRYI_DBG(ctx, "recv on %s: message of %llu bytes, buffer %llu", ep->peer,
			   (unsigned long long)size, (unsigned long long)recv->len);
		rc = FERRY_EMSGSIZE;
		goto fail;
	}
	rc = ferryi_op_alloc2(ep, FERRY_OP_READ, NULL, true, &rop);
	if (rc < 0)
		goto fail;
	rop->buf = recv->buf;
	rop->len = size;
	rop->xfer = size;
	rop->rkey = rkey;
	rop->remote_offset = offset;
	rop->key_lent = true;
	rop->key_granted = granted;
	rop->grant_id = sender_id;
	rkey = NULL;
	rop->done_fn = rndv_read_done;
	rop->rndv_peer = recv;
	recv->rndv_peer = rop;
	recv->receiving = true;
	if (ep->pi->prov->caps & FERRYI_CAP_NEED_LOCAL_MR) {
		rc = ferryi_mr_internal_get(ctx, recv->buf, size, FERRY_ACCESS_LOCAL, true,
					    &rop->mr);
		if (rc < 0) {
			recv->rndv_peer = NULL;
			recv->receiving = false;
			op_discard(rop);
			goto fail;
		}
		rop->mr_internal = true;
	}
	rc = op_hand_over(rop, ep->pi->prov->read);
	if (rc < 0) {
		recv->rndv_peer = NULL;
		recv->receiving = false;
		goto fail;
	}
	return;
fail:
	if (rkey)
		ferryi_rkey_unref(rkey);
	(void)ferryi_send_ctrl(ep, FERRYI_MSG_FIN, (uint64_t)(int64_t)rc, sender_id);
	ferryi_op_complete(recv, rc);
}

/* Delivers a complete unexpected eager message to a receive. */
static void ux_deliver(struct ferryi_op *recv, struct ferryi_uxmsg *ux)
{
	struct ferry_ep *ep = recv->ep;
	int status = 0;
	recv->tag = ux->tag;
	recv->xfer = ux->len;
	recv->receiving = false;
	if (ux->len > recv->len)
		status = FERRY_EMSGSIZE;
	else if (ux->len)
		memcpy(recv->buf, ux->data, ux->len);
	uint64_t len = ux->len;
	ux_free(ep, ux);
	ferryi_op_complete(recv, status);
	credit_return(ep, len);
}

static void recv_fill(struct ferryi_op *op, void *buf, size_t len, uint64_t tag,
		      uint64_t tag_mask, void *user_ctx, const struct ferry_op_attr *attr)
{
	op->user_ctx = user_ctx;
	op->buf = buf;
	op->len = len;
	op->tag = tag;
	op->tag_mask = tag_mask;
	op->flags = attr ? attr->flags : 0;
}

/*
 * A receive on a closed endpoint: the first message that arrived before the close
 * and matches (ferryi_ep_fail_core_ops keeps them), delivered at once; FERRY_ENOTCONN
 * when none does.
 */
static int recv_arrived(struct ferry_ep *ep, void *buf, size_t len, uint64_t tag,
			uint64_t tag_mask, void *user_ctx, const struct ferry_op_attr *attr)
{
	struct ferryi_list_node *n, *t;
	struct ferryi_op *op;

	ferryi_list_foreach_safe(&ep->unexpected, n, t) {
		struct ferryi_uxmsg *ux = ferryi_container_of(n, struct ferryi_uxmsg, link);
		if (!ux_arrived(ux) || !tag_match(ux->tag, tag, tag_mask))
			continue;
		int rc = ferryi_op_alloc2(ep, FERRY_OP_RECV, op_cq(ep, attr), false, &op);
		if (rc < 0)
			return rc;
		recv_fill(op, buf, len, tag, tag_mask, user_ctx, attr);
		ep->pi->stats.ops_posted++;
		ux_deliver(op, ux);
		return 0;
	}
	return FERRY_ENOTCONN;
}

int ferry_recv(struct ferry_ep *ep, void *buf, size_t len, uint64_t tag, uint64_t tag_mask,
	       void *user_ctx, const struct ferry_op_attr *attr)
{
	struct ferryi_op *op;
	struct ferryi_list_node *n, *t;
	int rc;

	if (!ep || (!buf && len))
		return FERRY_EINVAL;
	struct ferry_ctx *ctx = ep->ctx;
	ferryi_ctx_lock(ctx);
	rc = ep_check_postable(ep);
	if (rc < 0) {
		if (ep->state == FERRYI_EP_CLOSED)
			rc = recv_arrived(ep, buf, len, tag, tag_mask, user_ctx, attr);
		goto out;
	}
	rc = ferryi_op_alloc2(ep, FERRY_OP_RECV, op_cq(ep, attr), false, &op);
	if (rc < 0)
		goto out;
	recv_fill(op, buf, len, tag, tag_mask, user_ctx, attr);
	op_posted(ep, op, ferryi_op_id(op), attr);

	ferryi_list_foreach_safe(&ep->unexpected, n, t) {
		struct ferryi_uxmsg *ux = ferryi_container_of(n, struct ferryi_uxmsg, link);
		if (ux->waiting || !tag_match(ux->tag, tag, tag_mask))
			continue;
		if (ux->type == FERRYI_MSG_RTS) {
			struct ferry_rkey *rk = ux->rkey;
			uint64_t size = ux->len, sender = ux->sender_id, off = ux->offset;
			uint64_t announce_len = ux->charge - FERRYI_EAGER_CHARGE;
			bool granted = ux->granted;
			op->tag = ux->tag;
			ux->rkey = NULL;
			ux_free(ep, ux);
			rndv_start(op, size, off, sender, rk, granted);
			credit_return(ep, announce_len);
		} else if (ux->complete) {
			ux_deliver(op, ux);
		} else {
			ux->waiting = op; /* payload still arriving */
			op->receiving = true;
			op->tag = ux->tag;
		}
		goto out;
	}
	ferryi_list_push_back(&ep->recvs, &op->qlink);
out:
	ferryi_ctx_unlock(ctx);
	return rc;
}

/* ------------------------------------------------------------------ incoming messages */

static struct ferryi_op *recv_match(struct ferry_ep *ep, uint64_t tag)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ep->recvs, n, t) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);
		if (tag_match(tag, op->tag, op->tag_mask)) {
			ferryi_list_remove(&op->qlink);
			return op;
		}
	}
	return NULL;
}

static int ux_budget(struct ferry_ep *ep, uint64_t charge)
{
	uint64_t limit = ep->ctx->cfg.unexpected_max;
	if (ep->unexpected_bytes + charge > limit) {
		FERRYI_WARN(ep->ctx, "endpoint %s: unexpected messages exceed FERRY_UNEXPECTED_MAX "
			    "(%llu + %llu > %llu bytes): post receives sooner or raise the limit",
			    ep->peer, (unsigned long long)ep->unexpected_bytes,
			    (unsigned long long)charge, (unsigned long long)limit);
		return FERRY_ENOBUFS;
	}
	return 0;
}

int ferryi_rx_begin(struct ferry_ep *ep, const struct ferryi_msg *msg, uint64_t len,
		    struct ferryi_rx *rx)
{
	struct ferry_ctx *ctx = ep->ctx;
	rx->msg = *msg;
	rx->len = len;
	rx->dst = NULL;
	rx->recv = NULL;
	rx->ux = NULL;
	rx->status = 0;
	if (ep->state != FERRYI_EP_CONNECTED)
		return FERRY_ENOTCONN;

	switch (msg->type) {
	case FERRYI_MSG_EAGER: {
		uint64_t limit = FERRYI_MIN(ctx->cfg.eager_max, ep->pi->prov->eager_max);
		if (len > limit) {
			FERRYI_WARN(ctx, "endpoint %s: eager message of %llu bytes above the %llu "
				    "we advertised", ep->peer, (unsigned long long)len,
				    (unsigned long long)limit);
			return FERRY_EPROTO;
		}
		struct ferryi_op *recv = recv_match(ep, msg->tag);
		if (recv) {
			recv->tag = msg->tag;
			recv->xfer = len;
			recv->receiving = true;
			rx->recv = recv;
			if (len > recv->len)
				rx->status = FERRY_EMSGSIZE; /* dst stays NULL: discard */
			else
				rx->dst = recv->buf;
			return 0;
		}
		uint64_t charge = eager_charge(len); /* what the sender spent: see credit_take */
		int rc = ux_budget(ep, charge);
		if (rc < 0)
			return rc;
		struct ferryi_uxmsg *ux = malloc(sizeof(*ux) + len);
		if (!ux)
			return FERRY_ENOMEM;
		memset(ux, 0, sizeof(*ux));
		ux->type = FERRYI_MSG_EAGER;
		ux->tag = msg->tag;
		ux->len = len;
		ux->charge = charge;
		ep->unexpected_bytes += charge;
		ferryi_list_push_back(&ep->unexpected, &ux->link);
		rx->ux = ux;
		rx->dst = ux->data;
		return 0;
	}
	case FERRYI_MSG_RTS: {
		uint64_t hdr = msg->flags & FERRYI_MSGF_RNDV_OFFSET ? 16 : 8;
		if (len < hdr + 16 || len > hdr + FERRY_RKEY_MAX)
			goto bad_len;
		rx->dst = rx->inline_buf;
		return 0;
	}
	case FERRYI_MSG_FIN:
	case FERRYI_MSG_FIN_ACK:
	case FERRYI_MSG_PROBE:
	case FERRYI_MSG_PROBE_ACK:
	case FERRYI_MSG_GOODBYE:
	case FERRYI_MSG_CREDIT:
		if (len != 0)
			goto bad_len;
		rx->dst = rx->inline_buf;
		return 0;
	default:
		FERRYI_WARN(ctx, "endpoint %s: unknown message type %u", ep->peer, msg->type);
		return FERRY_EPROTO;
	}
bad_len:
	FERRYI_WARN(ctx, "endpoint %s: message type %u with bad length %llu", ep->peer,
		    msg->type, (unsigned long long)len);
	return FERRY_EPROTO;
}

static bool status_known(int64_t st)
{
	return st == 0 || (st < 0 && st > INT32_MIN && strcmp(ferry_errname((int)st), "UNKNOWN") != 0);
}

static void rx_rts(struct ferry_ep *ep, struct ferryi_rx *rx)
{
	struct ferry_ctx *ctx = ep->ctx;
	struct ferry_rkey *rk = NULL;
	uint64_t size = ferryi_get_le64(rx->inline_buf), off = 0;
	size_t hdr = 8;
	if (rx->msg.flags & FERRYI_MSGF_RNDV_OFFSET) {
		off = ferryi_get_le64(rx->inline_buf + 8);
		hdr = 16;
	}
	if (size > ctx->cfg.max_frame) {
		ferryi_ep_failed(ep, FERRY_EPROTO, "rendezvous announce above our max frame");
		return;
	}
	int rc = ferryi_rkey_unpack_locked(ctx, rx->inline_buf + hdr, rx->len - hdr, &rk);
	if (rc < 0) {
		ferryi_ep_failed(ep, FERRY_EPROTO, "rendezvous announce with a malformed key");
		return;
	}
	if (!ferryi_range_ok(rk->region_len, off, size)) {
		ferryi_rkey_unref(rk);
		ferryi_ep_failed(ep, FERRY_EPROTO, "rendezvous announce larger than its region");
		return;
	}
	bool granted = rx->msg.flags & FERRYI_MSGF_RNDV_GRANTED;
	struct ferryi_op *recv = recv_match(ep, rx->msg.tag);
	if (recv) {
		recv->tag = rx->msg.tag;
		rndv_start(recv, size, off, rx->msg.aux, rk, granted);
		credit_return(ep, rx->len);
		return;
	}
	uint64_t charge = eager_charge(rx->len); /* what the sender spent: see credit_take */
	if (ux_budget(ep, charge) < 0) {
		ferryi_rkey_unref(rk);
		ferryi_ep_failed(ep, FERRY_ENOBUFS, "unexpected-message budget exhausted");
		return;
	}
	struct ferryi_uxmsg *ux = calloc(1, sizeof(*ux));
	if (!ux) {
		ferryi_rkey_unref(rk);
		ferryi_ep_failed(ep, FERRY_ENOMEM, "out of memory for an unexpected message");
		return;
	}
	ux->type = FERRYI_MSG_RTS;
	ux->complete = true;
	ux->tag = rx->msg.tag;
	ux->len = size;
	ux->sender_id = rx->msg.aux;
	ux->offset = off;
	ux->granted = granted;
	ux->rkey = rk;
	ux->charge = charge;
	ep->unexpected_bytes += charge;
	ferryi_list_push_back(&ep->unexpected, &ux->link);
}

static void rx_fin(struct ferry_ep *ep, struct ferryi_rx *rx)
{
	int64_t st = (int64_t)rx->msg.tag;
	struct ferryi_op *op = ferryi_op_find(ep, rx->msg.aux);
	if (!status_known(st)) {
		ferryi_ep_failed(ep, FERRY_EPROTO, "rendezvous finish with an unknown status");
		return;
	}
	bool pending = op && !op->internal && op->type == FERRY_OP_SEND && op->rndv_mr &&
		       !op->rndv_fin;
	/* A successful read is answered: was the buffer still the message's? */
	if (st == 0 && (ep->peer_info.features & FERRYI_FEAT_RNDV_ACK))
		(void)ferryi_send_ctrl(ep, FERRYI_MSG_FIN_ACK,
				       (uint64_t)(int64_t)(pending ? 0 : FERRY_ECANCELED),
				       rx->msg.aux);
	if (!pending) {
		/* A send that timed out or was canceled already: nothing to do. */
		FERRYI_DBG(ep->ctx, "endpoint %s: finish for unknown or finished op %llx", ep->peer,
			   (unsigned long long)rx->msg.aux);
		return;
	}
	rndv_ungrant(op); /* the reader sends its finish when its read is over */
	op->rndv_fin = true;
	op->rndv_status = (int)st;
	rndv_send_maybe_done(op);
}

static void rx_fin_ack(struct ferry_ep *ep, struct ferryi_rx *rx)
{
	int64_t st = (int64_t)rx->msg.tag;
	struct ferryi_list_node *n, *t;
	if (!status_known(st)) {
		ferryi_ep_failed(ep, FERRY_EPROTO, "rendezvous finish answer with an unknown status");
		return;
	}
	/* Only the few receives waiting for an answer, not every op of the endpoint. */
	ferryi_list_foreach_safe(&ep->rndv_acking, n, t) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);
		if (op->rndv_remote_id == rx->msg.aux && !op->completed) {
			ferryi_list_remove(&op->qlink);
			if (st < 0)
				FERRYI_INFO(ep->ctx, "endpoint %s: a received rendezvous message "
						     "fails: its sender gave it up first (%s)",
					    ep->peer, ferry_strerror((int)st));
			ferryi_op_complete(op, (int)st);
			return;
		}
	}
	/* The receive timed out or was canceled meanwhile. */
	FERRYI_DBG(ep->ctx, "endpoint %s: finish answer for op %llx: no receive waits", ep->peer,
		   (unsigned long long)rx->msg.aux);
}

void ferryi_rx_end(struct ferry_ep *ep, struct ferryi_rx *rx, int status)
{
	if (status < 0) {
		/* The connection broke mid-payload; teardown fails the receive. */
		if (rx->recv)
			rx->recv->receiving = false;
		return;
	}
	switch (rx->msg.type) {
	case FERRYI_MSG_EAGER:
		ferryi_ep_touch_use(ep);
		if (rx->recv) {
			rx->recv->receiving = false;
			ferryi_op_complete(rx->recv, rx->status);
			credit_return(ep, rx->len);
		} else if (rx->ux) {
			struct ferryi_uxmsg *ux = rx->ux;
			ux->complete = true;
			if (ux->waiting)
				ux_deliver(ux->waiting, ux);
		}
		break;
	case FERRYI_MSG_RTS:
		ferryi_ep_touch_use(ep);
		rx_rts(ep, rx);
		break;
	case FERRYI_MSG_FIN:
		ferryi_ep_touch_use(ep);
		rx_fin(ep, rx);
		break;
	case FERRYI_MSG_FIN_ACK:
		rx_fin_ack(ep, rx);
		break;
	case FERRYI_MSG_PROBE:
	case FERRYI_MSG_PROBE_ACK:
		/* A peer that holds its side pinned keeps ours from being reaped too. */
		ep->peer_pinned = rx->msg.tag & FERRYI_PROBE_PINNED;
		if (ep->peer_pinned)
			ferryi_ep_touch_use(ep);
		if (rx->msg.type == FERRYI_MSG_PROBE)
			(void)ferryi_send_ctrl(ep, FERRYI_MSG_PROBE_ACK, ferryi_ep_pin_flag(ep),
					       rx->msg.aux);
		break;
	case FERRYI_MSG_CREDIT:
		rx_credit(ep, rx->msg.aux);
		break;
	case FERRYI_MSG_GOODBYE:
		FERRYI_INFO(ep->ctx, "endpoint %s: peer closed the connection", ep->peer);
		ferryi_ep_begin_close(ep, FERRY_ECONNRESET, false, FERRY_EVENT_EP_CLOSED,
				      "peer said goodbye");
		break;
	}
}

int ferryi_rx_msg(struct ferry_ep *ep, const struct ferryi_msg *msg, const void *data,
		  uint64_t len)
{
	struct ferryi_rx rx;
	int rc = ferryi_rx_begin(ep, msg, len, &rx);
	if (rc < 0)
		return rc;
	if (rx.dst && len)
		memcpy(rx.dst, data, len);
	ferryi_rx_end(ep, &rx, 0);
	return 0;
}

/* ------------------------------------------------------------------ one-sided */

static int rma_post(struct ferry_ep *ep, enum ferry_op_type type, void *buf, size_t len,
		    struct ferry_mr *mr, const struct ferry_rkey *rkey, uint64_t off,
		    void *user_ctx, const struct ferry_op_attr *attr)
{
	struct ferryi_op *op;
	size_t klen;
	int rc;

	if (!ep || !rkey || (!buf && len))
		return FERRY_EINVAL;
	struct ferry_ctx *ctx = ep->ctx;
	unsigned need = type == FERRY_OP_WRITE ? FERRY_ACCESS_REMOTE_WRITE : FERRY_ACCESS_REMOTE_READ;
	ferryi_ctx_lock(ctx);
	rc = ep_check_postable(ep);
	if (rc < 0)
		goto out;
	if (!ferryi_range_ok(rkey->region_len, off, len)) {
		FERRYI_DBG(ctx, "%s of %zu bytes at offset %llu refused: remote region is %llu bytes",
			   type == FERRY_OP_WRITE ? "write" : "read", len, (unsigned long long)off,
			   (unsigned long long)rkey->region_len);
		rc = FERRY_ERANGE;
		goto out;
	}
	if (!(rkey->access & need)) {
		FERRYI_DBG(ctx, "%s refused: the remote region does not allow it",
			   type == FERRY_OP_WRITE ? "write" : "read");
		rc = FERRY_EACCES;
		goto out;
	}
	if (!ferryi_rkey_key(rkey, ep->pi->prov->id, &klen)) {
		FERRYI_DBG(ctx, "rkey has no key for provider %s", ep->pi->prov->name);
		rc = FERRY_EBADKEY;
		goto out;
	}
	if (len > ep->peer_info.max_frame) {
		rc = FERRY_EMSGSIZE;
		goto out;
	}
	if (mr && ((char *)buf < (char *)mr->addr ||
		   (uint64_t)((char *)buf - (char *)mr->addr) + len > mr->len)) {
		FERRYI_DBG(ctx, "local buffer outside the region passed with it");
		rc = FERRY_ERANGE;
		goto out;
	}
	rc = ferryi_op_alloc2(ep, type, op_cq(ep, attr), false, &op);
	if (rc < 0)
		goto out;
	op->user_ctx = user_ctx;
	op->buf = buf;
	op->len = len;
	op->xfer = len;
	op->remote_offset = off;
	op->flags = attr ? attr->flags : 0;
	op->rkey = (struct ferry_rkey *)rkey;
	ferryi_rkey_ref(op->rkey);
	if (mr) {
		op->mr = mr;
		ferryi_mr_ref(mr);
	} else if ((ep->pi->prov->caps & FERRYI_CAP_NEED_LOCAL_MR) && len) {
		rc = ferryi_mr_internal_get(ctx, buf, len, FERRY_ACCESS_LOCAL, true, &op->mr);
		if (rc < 0) {
			op_discard(op);
			goto out;
		}
		op->mr_internal = true;
	}
	uint64_t id = ferryi_op_id(op);
	rc = op_hand_over(op, type == FERRY_OP_WRITE ? ep->pi->prov->write : ep->pi->prov->read);
	if (rc == 0)
		op_posted(ep, op, id, attr);
out:
	ferryi_ctx_unlock(ctx);
	return rc;
}

int ferry_write(struct ferry_ep *ep, const void *buf, size_t len, struct ferry_mr *mr,
		const struct ferry_rkey *rkey, uint64_t remote_offset, void *user_ctx,
		const struct ferry_op_attr *attr)
{
	return rma_post(ep, FERRY_OP_WRITE, (void *)buf, len, mr, rkey, remote_offset, user_ctx,
			attr);
}

int ferry_read(struct ferry_ep *ep, void *buf, size_t len, struct ferry_mr *mr,
	       const struct ferry_rkey *rkey, uint64_t remote_offset, void *user_ctx,
	       const struct ferry_op_attr *attr)
{
	return rma_post(ep, FERRY_OP_READ, buf, len, mr, rkey, remote_offset, user_ctx, attr);
}

/* ------------------------------------------------------------------ teardown */

void ferryi_ep_complete_gone_waits(struct ferry_ep *ep)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ep->ops, n, t) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, link);
		if (op->rndv_gone_wait && !op->completed) {
			op->rndv_gone_wait = false;
			ferryi_op_complete(op, ep->close_reason);
		}
	}
}

/*
 * Messages that arrived unmatched stay receivable after the endpoint closes by the
 * peer's goodbye or a failure (keep_arrived): their senders saw them complete, and
 * dropping them with the connection would lose them silently. Only whole eager
 * messages can be: an announced rendezvous needs the peer to fetch from, and a message
 * cut short never completes; their senders' operations fail with the connection. A
 * user's close and the context's destruction drop them all (ferryi_ep_drop_unexpected,
 * also run when the endpoint is freed).
 */
void ferryi_ep_fail_core_ops(struct ferry_ep *ep, int status, bool keep_arrived)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ep->ops, n, t) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, link);
		if (op->provider_owned || op->completed)
			continue;
		if (rndv_send_read_by_peer(op)) {
			op->rndv_gone_wait = true;
			continue;
		}
		/* A receive whose rendezvous read the provider still owns ends with it. */
		if (op->rndv_peer && op->rndv_peer->provider_owned && op->type == FERRY_OP_RECV)
			continue;
		op->receiving = false;
		ferryi_op_complete(op, status);
	}
	if (!keep_arrived) {
		ferryi_ep_drop_unexpected(ep, "it was closed");
		return;
	}
	unsigned kept = 0, dropped = 0;
	ferryi_list_foreach_safe(&ep->unexpected, n, t) {
		struct ferryi_uxmsg *ux = ferryi_container_of(n, struct ferryi_uxmsg, link);
		if (ux_arrived(ux)) {
			kept++;
		} else {
			dropped++;
			ux_free(ep, ux);
		}
	}
	if (kept || dropped)
		FERRYI_INFO(ep->ctx, "endpoint %s closed (%s) with %u unmatched message(s) still "
			    "receivable with ferry_recv and %u announced or partial one(s) dropped "
			    "(their sends failed)", ep->peer, ferry_strerror(status), kept,
			    dropped);
}

void ferryi_ep_drop_unexpected(struct ferry_ep *ep, const char *why)
{
	struct ferryi_list_node *n, *t;
	unsigned count = 0;
	uint64_t bytes = 0;
	ferryi_list_foreach_safe(&ep->unexpected, n, t) {
		struct ferryi_uxmsg *ux = ferryi_container_of(n, struct ferryi_uxmsg, link);
		count++;
		bytes += ux->len;
		ux_free(ep, ux);
	}
	if (count)
		FERRYI_INFO(ep->ctx, "endpoint %s: %u message(s), %llu bytes, that arrived were "
			    "never received: %s", ep->peer, count, (unsigned long long)bytes, why);
}

void ferryi_ops_fini(struct ferry_ctx *ctx)
{
	for (uint32_t i = 0; i < ctx->nslots; i++) {
		struct ferryi_op *op = ctx->slots[i];
		if (!op)
			continue;
		FERRYI_WARN(ctx, "op %llx on %s was never completed by provider %s",
			    (unsigned long long)ferryi_op_id(op), op->ep->peer,
			    op->ep->pi->prov->name);
		op->provider_owned = false;
		op->completed = false;
		ferryi_op_complete(op, FERRY_ECANCELED);
	}
	while (ctx->op_cache) {
		struct ferryi_op *op = ctx->op_cache;
		ctx->op_cache = op->rndv_peer;
		free(op);
	}
	ctx->op_cache_len = 0;
	free(ctx->slots);
	free(ctx->free_slots);
	ctx->slots = NULL;
	ctx->free_slots = NULL;
	ctx->nslots = ctx->slots_cap = ctx->nfree = 0;
}

_Static_assert(sizeof(struct ferryi_uxmsg) <= FERRYI_EAGER_CHARGE,
	       "an unexpected message's bookkeeping must fit in what the sender is charged");
