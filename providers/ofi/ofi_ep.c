/*
 * ofi_ep.c - endpoints over libfabric: the design notes, eager messages, credits,
 * the receive path and close. Ports are in ofi_port.c, the handshake in ofi_cm.c,
 * one-sided operations in ofi_rma.c.
 *
 * Endpoint type: FI_EP_RDM everywhere.
 *   libfabric's shm provider, the same-host fast path ferry must support, has no
 *   FI_EP_MSG endpoints at all; tcp and verbs get RDM from the ofi_rxm layer
 *   ("tcp;ofi_rxm", "verbs;ofi_rxm"), which libfabric stacks on its own when asked for
 *   RDM. One endpoint type means one code path that is tested on every fabric. The
 *   price is that RDM has no connections: a ferry endpoint is an AV entry on a port
 *   plus our own handshake, and peer death is learnt from failed operations, from the
 *   BYE a closing peer sends, and from the core's health probes (there is no
 *   FI_SHUTDOWN event as with FI_EP_MSG).
 *
 * Ports. A port is one fabric endpoint with its CQ, AV, receive buffers and send
 * buffers. Each dom has a client port for connects; each listen address is a port of
 * its own (its fabric address is the listening address: a sockaddr for tcp/verbs, the
 * shm region name "ferry-<port>" for shm). Many ferry endpoints share a port; every
 * message names the receiver's random 64-bit connection id, which is how input finds
 * its endpoint (and how stale or foreign input is dropped).
 *
 * Messages: a 32-byte header, then the payload (at most OFI_EAGER_MAX):
 *   0 u8 kind (OFI_K_*)   1 u8 core msg type   2 u8 core msg flags   3 u8 0
 *   4 u32 credits returned   8 u64 receiver's connection id   16 u64 tag   24 u64 aux
 * They are received into OFI_RX_DEPTH pre-posted buffers per port and handed to the
 * core with ferryi_rx_msg (the core copies), after which the buffer is posted again.
 * Sends are copied into registered bounce buffers (fi_inject when small enough, on
 * shm only: rxm 1.17 crashes flushing injected messages when an endpoint closes).
 * Between two ports of the same process, shm messages stay within the inject size
 * (see ofi_port.c for why).
 *
 * Flow control: credits. Each side grants the other OFI_CREDITS messages (core
 * messages and one-sided requests); the receiver returns credits in the header of
 * anything it sends, or in an OFI_K_CREDIT message after half a window. A sender out
 * of credits queues. This bounds what a peer can make our fabric buffer for us
 * (libfabric RDM providers queue unexpected messages internally, without limit).
 *
 * Handshake: the client sends CONNREQ (hello: its connection id, credits, key space
 * id, ferryi_peer_info and its own fabric address) to the listener port, which
 * inserts the address into its AV and answers CONNACK (its hello) or CONNREJ (status).
 * The server is connected when its CONNACK has left or the first message arrives.
 *
 * One-sided operations go straight between op->buf and the peer's region with
 * fi_write (FI_DELIVERY_COMPLETE: done means at the target) and fi_read, in pieces of
 * 4 MiB on shm, 1 MiB on tcp and verbs, posted four at a time (so a probe does not
 * wait behind much data in a stream, and every piece shows the peer alive), never
 * above the fabric's max_msg_size. Fabrics do not all enforce keys (shm's single-copy
 * path does not check them at all; tcp tears the connection down on a bad key), and
 * ferry promises that a stale or foreign key is refused with FERRY_EBADKEY on a live
 * endpoint. So by default (FERRY_OFI_RMA_CHECK=1; always on
 * shm) each op first asks the target: RMA_REQ {region key, offset, length, address}
 * -> the target checks it with ferryi_mr_remote_get() and holds the region -> RMA_ACK
 * {status, hold id} -> the transfer -> RMA_DONE releases the hold. With
 * FERRY_OFI_RMA_CHECK=0 the fabric's own checks are trusted (one round trip less).
 * The core's rendezvous reads need the target to know when its buffer is read
 * (libfabric answers a read from the sender's memory without us): a send without a
 * deadline grants the read with its announce (ofi_rndv_grant: a hold taken at once,
 * released by the core's finish), so the reader reads at once; the reads of a send
 * with a deadline are checked, so that a request after the deadline is refused.
 *
 * Holds and close: a closing endpoint keeps the peer's holds while the peer still
 * answers (we closed, it closed, or a deadline), in the connection map, until the
 * peer's RMA_DONEs (up to the handshake timeout); grants, whatever ended the
 * connection, until the peer's READS_OVER (sent by a closed endpoint once its reads
 * are back), a refused connect to the peer's address (ofi_linger_probe_start) or the
 * handshake timeout; only then is it gone, and only then
 * does the core complete the sends whose buffers they are. A peer that failed (dead,
 * broken connection) ends every such wait of its endpoints at once.
 *
 * Ops and close: an op belongs to us until ferryi_op_done. On close, queued ops and
 * sends already copied complete at once with the close reason; one-sided ops whose
 * pieces are in libfabric complete when libfabric gives the buffers back; when the
 * closing endpoint is the peer's only user, its AV entry is removed so that rxm
 * cancels them (FI_ECANCELED) instead of waiting for a peer that may never answer.
 * The endpoint is gone when no user buffer of it is left in libfabric (our own send
 * buffers are detached at close and come back to the port later).
 */
#define _GNU_SOURCE
#include "ofi.h"

#include <errno.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void ofi_ep_linger_end(struct ferryi_timer *t);
static void ofi_ep_reprobe(struct ferryi_timer *t);

void ofi_ep_init(struct ofi_ep *oep, struct ferry_ep *ep)
{
	oep->ep = ep;
	ferryi_list_init(&oep->txq);
	ferryi_list_init(&oep->tx_busy);
	ferryi_list_init(&oep->rmas);
	ferryi_list_init(&oep->holds);
	ferryi_timer_init(&oep->linger, ofi_ep_linger_end);
	ferryi_timer_init(&oep->reprobe, ofi_ep_reprobe);
	ferryi_node_init(&oep->blocked_link);
	oep->rx_granted = OFI_CREDITS;
	oep->probe.fd = -1;
}

int ofi_conn_add(struct ofi_inst *oi, struct ofi_ep *oep)
{
	do
		oep->hnode.key = ferryi_random64();
	while (oep->hnode.key == 0 || ferryi_hmap_find(&oi->conns, oep->hnode.key));
	int rc = ferryi_hmap_insert(&oi->conns, &oep->hnode);
	if (rc == 0)
		oep->in_map = true;
	return rc;
}

void ofi_conn_del(struct ofi_inst *oi, struct ofi_ep *oep)
{
	if (oep->in_map)
		ferryi_hmap_remove(&oi->conns, &oep->hnode);
	oep->in_map = false;
}

static void ofi_ep_block(struct ofi_ep *oep)
{
	if (!ferryi_node_linked(&oep->blocked_link))
		ferryi_list_push_back(&oep->port->blocked, &oep->blocked_link);
}

void ofi_ep_up(struct ofi_ep *oep)
{
	oep->state = OFI_EP_UP;
	ferryi_ep_connected(oep->ep, &oep->remote);
}

/* Ends the wait for the peer's RMA_DONEs: the connection is forgotten. */
static void ofi_ep_stop_lingering(struct ofi_ep *oep)
{
	if (!oep->lingering)
		return;
	ofi_probe_stop(oep);
	oep->lingering = false;
	ferryi_timer_cancel(oep->ep->ctx, &oep->linger);
	ferryi_timer_cancel(oep->ep->ctx, &oep->reprobe);
	ferryi_list_remove(&oep->linger_link);
	ofi_conn_del(oep->port->dom->inst, oep);
}

/*
 * The endpoint is gone once libfabric holds nothing of it. Send buffers do not count:
 * they are detached at close and hold their own AV reference, so a goodbye still
 * leaves. One-sided ops do (libfabric may still move data into the user's buffer), and
 * their completion calls this again. Nothing in the endpoint's memory stays linked
 * from elsewhere meanwhile but the ops' list and, while it lingers, the peer's
 * lingering list, the connection map and the linger timer, because a context destroy
 * frees endpoints whose provider did not let go within its grace period (the destroy
 * ends every linger first: ofi_progress).
 */
void ofi_ep_maybe_gone(struct ofi_ep *oep)
{
	struct ferry_ep *ep = oep->ep;
	struct ofi_port *port = oep->port;

	if (!oep->closing || oep->gone || !ferryi_list_empty(&oep->rmas))
		return;
	if (oep->bye_sent && !oep->reads_over_sent) {
		/* The peer's grants of reads to us, and any hold it keeps for a read of
		 * ours, end here: nothing of its memory is read by us any more. */
		oep->reads_over_sent = true;
		(void)ofi_ctl_queue(port, oep->peer, NULL, OFI_K_READS_OVER, oep->remote_conn, 0,
				    0, NULL, 0);
	}
	if (!ferryi_list_empty(&oep->holds))
		return;
	ofi_ep_stop_lingering(oep);
	oep->gone = true;
	oep->peer->eps--;
	ofi_peer_put(port, oep->peer);
	oep->peer = NULL;
	oep->port = NULL;
	ofi_port_put(port);
	ferryi_ep_gone(ep); /* may free ep: nothing of it is touched after this */
}

/* Sends what the endpoint has queued, as far as credits and buffers allow. */
void ofi_ep_flush(struct ofi_ep *oep)
{
	struct ofi_port *port = oep->port;

	while (!oep->closing && oep->state == OFI_EP_UP && !ferryi_list_empty(&oep->txq)) {
		if (oep->peer->ctl_queued) {
			/* Control first (an RMA_DONE must precede the FIN behind it). */
			ofi_ctl_flush(port);
			if (oep->peer->ctl_queued) {
				ofi_ep_block(oep);
				return;
			}
		}
		if (oep->credits == 0)
			return; /* the peer's credits restart us */
		struct ofi_txbuf *tb = ofi_tx_get(port);
		if (!tb) {
			ofi_ep_block(oep);
			return;
		}
		struct ferryi_list_node *n = ferryi_list_pop_front(&oep->txq);
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);
		bool rma = op->type == FERRY_OP_WRITE || op->type == FERRY_OP_READ;
		struct ofi_rma *r = rma ? (struct ofi_rma *)(uintptr_t)op->prov[0] : NULL;
		struct ofi_hdr h = { .dst = oep->remote_conn };

		h.credits = ofi_take_owed(oep);
		if (rma) {
			h.kind = OFI_K_RMA_REQ;
			h.aux = ferryi_op_id(op);
			ofi_rma_build_req(r, tb->buf + OFI_HDR_LEN);
			tb->len = OFI_HDR_LEN + OFI_RMA_REQ_LEN;
			tb->op = NULL;
			r->state = OFI_RMA_ASKED;
		} else {
			h.kind = OFI_K_MSG;
			h.mtype = op->msg.type;
			h.mflags = op->msg.flags;
			h.tag = op->msg.tag;
			h.aux = op->msg.aux;
			if (op->len)
				memcpy(tb->buf + OFI_HDR_LEN, op->buf, op->len);
			tb->len = OFI_HDR_LEN + (uint32_t)op->len;
			tb->op = op;
		}
		ofi_hdr_put(tb->buf, &h);
		tb->kind = h.kind;
		tb->ep = oep->ep;
		oep->credits--;
		int rc = ofi_tx_post(port, oep->peer, tb);
		if (rc == 0)
			continue;
		/* Not taken: undo, keep the op first in line. */
		oep->credits++;
		ofi_give_back_owed(oep, h.credits);
		ofi_tx_put(port, tb);
		if (r)
			r->state = OFI_RMA_QUEUED;
		if (rc == -FI_EAGAIN) {
			ferryi_list_push_front(&oep->txq, &op->qlink);
			ofi_ep_block(oep);
			ofi_port_kick(port, 50000);
			return;
		}
		int st = ofi_fi_err(-rc);
		FERRYI_WARN(oep->ep->ctx, "ofi: %s: send to %s: %s", port->dom->prov_name,
			    oep->ep->peer, fi_strerror(-rc));
		ferryi_ep_failed(oep->ep, st, "fi_send failed");
		if (r) {
			r->status = st;
			ofi_rma_finish(r);
		} else {
			ferryi_op_done(op, st);
		}
		return;
	}
}

/* A send the CQ reports: the buffer was in flight, holding its peer. */
void ofi_tx_complete(struct ofi_txbuf *tb, int status, const char *why)
{
	struct ofi_peer *peer = tb->peer;

	tb->port->tx_out--;
	if (tb->ep)
		ferryi_list_remove(&tb->link);
	tb->peer = NULL;
	ofi_tx_done(tb, peer, status, why);
}

/* The buffer is ours again (and peer's hold, if any, given back): tell its op. */
void ofi_tx_done(struct ofi_txbuf *tb, struct ofi_peer *peer, int status, const char *why)
{
	struct ofi_port *port = tb->port;
	struct ferry_ep *ep = tb->ep;
	struct ferryi_op *op = tb->op;
	uint8_t kind = tb->kind;

	ofi_tx_put(port, tb);
	ofi_peer_put(port, peer);
	if (!ep) {
		if (status < 0)
			FERRYI_DBG(port->dom->inst->pi->ctx, "ofi: %s: control message failed: %s",
				   port->dom->prov_name, why ? why : "");
		return;
	}
	struct ofi_ep *oep = ofi_ep(ep);
	if (oep->closing) {
		ofi_ep_maybe_gone(oep); /* the op, if any, completed at close */
		return;
	}
	if (status < 0) {
		ferryi_ep_failed(ep, status, why ? why : "send failed");
		if (op)
			ferryi_op_done(op, status);
		return;
	}
	if (kind == OFI_K_CONNACK && oep->state == OFI_EP_ACK_SENT)
		ofi_ep_up(oep);
	/*
	 * On verbs a send completes once the peer's NIC acknowledged it (RC under rxm):
	 * the peer is alive even while its answer to our probe waits behind a long
	 * transfer of its own, e.g. the read of a large rendezvous message from us.
	 * (On tcp a completion only means our kernel took the bytes: no evidence.)
	 */
	if (port->dom->is_verbs && oep->state == OFI_EP_UP)
		ferryi_ep_rx_activity(ep);
	if (op)
		ferryi_op_done(op, 0);
}

/* One credit-carrying message arrived: account for it and return credits in time. */
static int ofi_take_credit(struct ofi_ep *oep)
{
	if (oep->rx_granted == 0)
		return FERRY_EPROTO;
	oep->rx_granted--;
	oep->owed++;
	if (oep->owed >= OFI_CREDITS / 2 && !oep->credit_msg_out) {
		oep->credit_msg_out = true;
		if (ofi_ctl_queue(oep->port, oep->peer, oep->ep, OFI_K_CREDIT, oep->remote_conn, 0,
				  0, NULL, 0) < 0)
			oep->credit_msg_out = false;
	}
	return 0;
}

static void ofi_rx_handle(struct ofi_port *port, const uint8_t *b, size_t len)
{
	struct ofi_inst *oi = port->dom->inst;
	struct ferry_ctx *ctx = oi->pi->ctx;
	struct ofi_hdr h;
	struct ofi_ep *oep;
	struct ferry_ep *ep;

	if (len < OFI_HDR_LEN) {
		FERRYI_DBG(ctx, "ofi: runt message of %zu bytes dropped", len);
		return;
	}
	ofi_hdr_get(b, &h);
	const uint8_t *pl = b + OFI_HDR_LEN;
	size_t plen = len - OFI_HDR_LEN;
	if (h.kind == OFI_K_CONNREQ) {
		ofi_on_connreq(port, &h, pl, plen);
		return;
	}
	struct ferryi_hnode *hn = ferryi_hmap_find(&oi->conns, h.dst);
	oep = hn ? ferryi_container_of(hn, struct ofi_ep, hnode) : NULL;
	if (oep && oep->port == port && oep->lingering &&
	    (h.kind == OFI_K_RMA_DONE || h.kind == OFI_K_READS_OVER)) {
		if (h.kind == OFI_K_RMA_DONE)
			ofi_on_rma_done(oep, &h);
		else
			ofi_ep_drop_holds(oep, false, true);
		ofi_ep_maybe_gone(oep); /* may free the endpoint */
		return;
	}
	if (!oep || oep->port != port || oep->closing) {
		FERRYI_TRACE(ctx, "ofi: message %u for an unknown connection dropped", h.kind);
		return;
	}
	ep = oep->ep;
	if (h.kind == OFI_K_CONNACK) {
		ofi_on_connack(oep, pl, plen);
		ofi_ep_flush(oep);
		return;
	}
	if (h.kind == OFI_K_CONNREJ) {
		if (oep->state == OFI_EP_REQ_SENT) {
			int st = ofi_wire_status(h.tag);
			ferryi_ep_failed(ep, st < 0 ? st : FERRY_ECONNREFUSED,
					 "the peer refused the connection");
		}
		return;
	}
	if (oep->state == OFI_EP_ACK_SENT)
		ofi_ep_up(oep); /* the peer has our answer: it is talking */
	if (oep->state != OFI_EP_UP)
		return;
	ferryi_ep_rx_activity(ep);
	if (h.credits) {
		if (h.credits > OFI_CREDITS || oep->credits + h.credits > OFI_CREDITS) {
			ferryi_ep_failed(ep, FERRY_EPROTO, "peer returned more credits than it had");
			return;
		}
		oep->credits += h.credits;
	}
	switch (h.kind) {
	case OFI_K_MSG: {
		struct ferryi_msg msg = {
			.type = h.mtype, .flags = h.mflags, .tag = h.tag, .aux = h.aux,
		};
		if (ofi_take_credit(oep) < 0) {
			ferryi_ep_failed(ep, FERRY_EPROTO, "peer sent beyond its credits");
			return;
		}
		if (port->doorbell && len > port->dom->inject)
			ofi_ring(port, oep->peer, false); /* its send completes once we took it */
		ofi_ep_flush(oep);
		/* From here the core may close and free ep: not touched afterwards. */
		int rc = ferryi_rx_msg(ep, &msg, pl, plen);
		if (rc < 0)
			ferryi_ep_failed(ep, rc, "message refused");
		return;
	}
	case OFI_K_CREDIT:
		ofi_ep_flush(oep);
		return;
	case OFI_K_BYE:
		oep->bye_received = true;
		ferryi_ep_failed(ep, FERRY_ECONNRESET, "the peer closed its endpoint");
		return;
	case OFI_K_RMA_REQ:
		if (ofi_take_credit(oep) < 0) {
			ferryi_ep_failed(ep, FERRY_EPROTO, "peer sent beyond its credits");
			return;
		}
		ofi_on_rma_req(oep, &h, pl, plen);
		ofi_ep_flush(oep);
		return;
	case OFI_K_RMA_ACK:
		ofi_ep_flush(oep);
		ofi_on_rma_ack(oep, &h, pl, plen);
		return;
	case OFI_K_RMA_DONE:
		ofi_on_rma_done(oep, &h);
		ofi_ep_flush(oep);
		return;
	case OFI_K_READS_OVER:
		/* Its goodbye came first: our close, due at the end of this pass, need
		 * not wait for reads of our memory. */
		ofi_ep_drop_holds(oep, false, true);
		return;
	default:
		ferryi_ep_failed(ep, FERRY_EPROTO, "unknown message kind");
		return;
	}
}

void ofi_rx_complete(struct ofi_rxbuf *rb, size_t len, int status)
{
	struct ofi_port *port = rb->port;

	if (status < 0) {
		if (port->closing || status == FERRY_ECANCELED)
			return;
		FERRYI_WARN(ofi_ctx(port), "ofi: %s: receive failed: %s", port->dom->prov_name,
			    ferry_strerror(status));
		if (status == FERRY_EMSGSIZE) {
			/* A peer sent more than a buffer holds: that connection is broken. */
			struct ofi_hdr h;
			ofi_hdr_get(rb->buf, &h);
			struct ferryi_hnode *hn = ferryi_hmap_find(&port->dom->inst->conns, h.dst);
			if (hn)
				ferryi_ep_failed(ferryi_container_of(hn, struct ofi_ep, hnode)->ep,
						 FERRY_EPROTO, "message larger than its buffer");
		}
		ofi_rx_post(port, rb);
		return;
	}
	ferryi_stats(port->dom->inst->pi)->wire_bytes_received += len;
	ofi_rx_handle(port, rb->buf, len);
	ofi_rx_done(port, rb);
}

int ofi_send(struct ferry_ep *ep, struct ferryi_op *op)
{
	struct ofi_ep *oep = ofi_ep(ep);
	if (!oep->port || oep->closing || oep->state != OFI_EP_UP)
		return FERRY_ENOTCONN;
	if (op->len > OFI_EAGER_MAX)
		return FERRY_EMSGSIZE;
	ferryi_list_push_back(&oep->txq, &op->qlink);
	ofi_ep_flush(oep);
	return 0;
}

/*
 * Gives back the peer's holds. A failed or cut connection ends the reads the peer
 * asked for (as far as rxm lets us know), but not its grants: a peer that is still
 * there may read those yet, over a new connection, so they end only when it says it
 * reads nothing more, when it is shown gone, or at the handshake timeout (grants_too).
 * orphaned: libfabric may still use the regions.
 */
void ofi_ep_drop_holds(struct ofi_ep *oep, bool orphaned, bool grants_too)
{
	struct ferryi_list_node *n, *t;
	unsigned count = 0;
	ferryi_list_foreach_safe(&oep->holds, n, t) {
		struct ofi_hold *hold = ferryi_container_of(n, struct ofi_hold, link);
		if (hold->granted && !grants_too)
			continue;
		ofi_hold_free(hold);
		count++;
	}
	if (orphaned && oep->port)
		oep->port->orphan_holds += count; /* the port keeps its fabric endpoint */
}

/* Drops the holds of the peer's lingering endpoints; those left with none are gone. */
void ofi_peer_end_lingering(struct ofi_port *port, struct ofi_peer *peer, bool orphaned,
			    bool grants_too)
{
	struct ferryi_list_node *n, *t;
	peer->refs++; /* the last endpoint going must not free it under the loop */
	ferryi_list_foreach_safe(&peer->lingering, n, t) {
		struct ofi_ep *oep = ferryi_container_of(n, struct ofi_ep, linger_link);
		ofi_ep_drop_holds(oep, orphaned, grants_too);
		if (!ferryi_list_empty(&oep->holds))
			continue; /* grants: wait on */
		ofi_ep_stop_lingering(oep);
		ofi_ep_maybe_gone(oep); /* may free the endpoint */
	}
	ofi_peer_put(port, peer);
}

/* The peer never said its reads were over: stop waiting (logged). */
static void ofi_ep_linger_end(struct ferryi_timer *t)
{
	struct ofi_ep *oep = ferryi_container_of(t, struct ofi_ep, linger);
	FERRYI_WARN(oep->ep->ctx, "ofi: %s: the peer did not finish its reads of our memory "
				  "within the handshake timeout after the close; its sends "
				  "complete now, though libfabric may still read their buffers",
		    oep->ep->peer);
	ofi_ep_stop_lingering(oep);
	ofi_ep_drop_holds(oep, true, true);
	ofi_ep_maybe_gone(oep); /* may free the endpoint */
}

/* Probes again, or ends the wait once a probe was refused (from a timer: ending it
 * frees endpoints, which a poll handle's callback must not do to others). */
static void ofi_ep_reprobe(struct ferryi_timer *t)
{
	struct ofi_ep *oep = ferryi_container_of(t, struct ofi_ep, reprobe);
	if (!oep->probe_refused) {
		ofi_linger_probe_start(oep);
		return;
	}
	FERRYI_INFO(oep->ep->ctx, "ofi: %s: nobody listens at the peer's address any more: "
				  "it reads nothing more of ours", oep->ep->peer);
	ofi_peer_end_lingering(oep->port, oep->peer, false, true); /* may free the endpoint */
}

void ofi_ep_linger_probed(struct ofi_ep *oep, int err)
{
	struct ferry_ctx *ctx = oep->ep->ctx;
	uint64_t wait_ns = 0;
	if (err == ECONNREFUSED) {
		oep->probe_refused = true;
	} else {
		/* Somebody listens there (a dying process may still, for a moment): wait
		 * on, and look again a probe interval later. */
		uint32_t ms = ferry_ctx_config(ctx)->probe_interval_ms;
		wait_ns = (uint64_t)(ms ? ms : 1000) * 1000000ull;
	}
	ferryi_timer_arm(ctx, &oep->reprobe, ferryi_now_ns(ctx) + wait_ns);
}

void ofi_ep_close(struct ferry_ep *ep, int reason, int graceful)
{
	struct ofi_ep *oep = ofi_ep(ep);
	struct ofi_port *port = oep->port;
	struct ferryi_list_node *n, *t;

	if (!port) {
		ferryi_ep_gone(ep);
		return;
	}
	if (oep->closing)
		return;
	bool talked = oep->state == OFI_EP_UP || oep->state == OFI_EP_ACK_SENT;
	if (graceful && oep->state == OFI_EP_UP)
		ofi_ep_flush(oep); /* let the goodbye out if it can go now */
	oep->closing = true;
	oep->close_reason = reason;
	oep->state = OFI_EP_CLOSED;
	ofi_probe_stop(oep);
	if (ferryi_node_linked(&oep->blocked_link))
		ferryi_list_remove(&oep->blocked_link);

	/* Queued control messages: a connect request or credits mean nothing any more;
	 * the rest (answers, releases) still go out, without us. */
	ferryi_list_foreach_safe(&port->ctlq, n, t) {
		struct ofi_ctl *cl = ferryi_container_of(n, struct ofi_ctl, link);
		if (cl->ep != ep)
			continue;
		if (cl->kind == OFI_K_CONNREQ || cl->kind == OFI_K_CREDIT)
			ofi_ctl_free(port, cl);
		else
			cl->ep = NULL;
	}
	/* Transfers in flight either way, and nobody else uses this peer: cut it, so
	 * that libfabric gives our buffers back and the peer stops using our regions.
	 * rxm 1.17 does not promise the second: a read response it already started may
	 * still be sent from our memory after the cut (RELIABILITY.md, Known limits). */
	bool moving = false;
	ferryi_list_foreach_safe(&oep->holds, n, t)
		moving |= !ferryi_container_of(n, struct ofi_hold, link)->granted;
	ferryi_list_foreach_safe(&oep->rmas, n, t)
		moving |= ferryi_container_of(n, struct ofi_rma, oep_link)->out > 0;
	/*
	 * The peer answers (it reads on, then says RMA_DONE, and READS_OVER once its own
	 * endpoint closed) when we close, when it closed, or after a deadline; any other
	 * failure (declared dead, a broken connection, a protocol error) ends the reads it
	 * asked for. Not its grants (ofi_ep_drop_holds): those wait for its READS_OVER,
	 * a refused probe of its address, or the handshake timeout, whatever the reason.
	 */
	bool peer_answers = reason == FERRY_ECANCELED || reason == FERRY_ETIMEDOUT ||
			    oep->bye_received;
	bool cut = moving && !port->dom->is_shm &&
		   (oep->peer->eps == 1 || reason == FERRY_EPEERDEAD);
	if (cut) {
		FERRYI_DBG(ep->ctx, "ofi: closing %s mid-transfer: dropping its connection",
			    ep->peer);
		ofi_peer_cut(port, oep->peer);
		ofi_ep_drop_holds(oep, false, false);
		ofi_peer_end_lingering(port, oep->peer, false, false);
	} else if (!peer_answers || ferryi_ctx_destroying(ep->ctx)) {
		/* Nobody to wait for, or no progress driven after a destroy: libfabric
		 * sends nothing more from our memory. */
		bool destroying = ferryi_ctx_destroying(ep->ctx);
		ofi_ep_drop_holds(oep, true, destroying);
		if (!peer_answers)
			ofi_peer_end_lingering(port, oep->peer, false, destroying);
	}
	/*
	 * Otherwise the peer's reads of our regions may still be answered by libfabric,
	 * which sends from our memory as the socket takes it (or, on shm, the peer copies
	 * it). Their holds stay, and with them the sends whose buffers they are (the
	 * core completes those when we are gone), until the peer's RMA_DONEs and
	 * READS_OVER, for which the connection stays known, or the handshake timeout.
	 */
	if (ferryi_list_empty(&oep->holds)) {
		ofi_conn_del(port->dom->inst, oep);
	} else {
		const struct ferry_config *cfg = ferry_ctx_config(ep->ctx);
		oep->lingering = true;
		ferryi_list_push_back(&oep->peer->lingering, &oep->linger_link);
		ferryi_timer_arm(ep->ctx, &oep->linger,
				 ferryi_now_ns(ep->ctx) +
					 (uint64_t)cfg->handshake_timeout_ms * 1000000ull);
	}
	if (talked && oep->remote_conn) {
		oep->bye_sent = true;
		(void)ofi_ctl_queue(port, oep->peer, NULL, OFI_K_BYE, oep->remote_conn,
				    (uint64_t)(int64_t)reason, 0, NULL, 0);
	}

	/* Queued ops never reached libfabric. */
	while ((n = ferryi_list_pop_front(&oep->txq))) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);
		if (op->type == FERRY_OP_WRITE || op->type == FERRY_OP_READ) {
			struct ofi_rma *r = (struct ofi_rma *)(uintptr_t)op->prov[0];
			if (r)
				ofi_free_rma(port, r, true);
			op->prov[0] = 0;
		}
		ferryi_op_done(op, reason);
	}
	/* Sends in flight were copied: their ops are done; the buffers come back to the
	 * port later, without us. */
	while ((n = ferryi_list_pop_front(&oep->tx_busy))) {
		struct ofi_txbuf *tb = ferryi_container_of(n, struct ofi_txbuf, link);
		struct ferryi_op *op = tb->op;
		tb->op = NULL;
		tb->ep = NULL;
		if (op)
			ferryi_op_done(op, reason);
	}
	/* One-sided ops: done now unless libfabric holds their buffers. */
	ferryi_list_foreach_safe(&oep->rmas, n, t) {
		struct ofi_rma *r = ferryi_container_of(n, struct ofi_rma, oep_link);
		if (ferryi_node_linked(&r->retry_link))
			ferryi_list_remove(&r->retry_link);
		if (r->out == 0) {
			struct ferryi_op *op = r->op;
			if (r->checked && r->hold_id && r->state == OFI_RMA_MOVING)
				(void)ofi_ctl_queue(port, oep->peer, NULL, OFI_K_RMA_DONE,
						    oep->remote_conn, 0, r->hold_id, NULL, 0);
			ofi_free_rma(port, r, true);
			if (op) {
				op->prov[0] = 0;
				ferryi_op_done(op, reason);
			}
		} else if (!r->status) {
			r->status = reason;
		}
	}
	if (!ferryi_list_empty(&oep->rmas))
		FERRYI_DBG(ep->ctx, "ofi: endpoint %s closes once libfabric returns its one-sided "
				    "operations", ep->peer);
	/* A lingering endpoint has holds: maybe_gone leaves it. */
	bool probe = oep->lingering && !graceful && !oep->bye_received;
	ofi_ep_maybe_gone(oep);
	if (probe)
		ofi_linger_probe_start(oep); /* failed: is the peer still there? */
}
