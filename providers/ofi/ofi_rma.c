/*
 * ofi_rma.c - one-sided operations: fi_write/fi_read straight on the user's buffer,
 * in pieces of at most dom->rma_piece (4 MiB on shm, 1 MiB on tcp and verbs), a window
 * of OFI_RMA_WINDOW pieces at a time;
 * and the checked protocol (RMA_REQ / RMA_ACK / RMA_DONE) that lets the target refuse
 * stale or foreign keys with FERRY_EBADKEY on a live endpoint (see ofi_ep.c).
 */
#define _GNU_SOURCE
#include "ofi.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* owner_alive: false when the core freed the endpoint (context destroy timed out). */
void ofi_free_rma(struct ofi_port *port, struct ofi_rma *r, bool owner_alive)
{
	if (ferryi_node_linked(&r->port_link))
		ferryi_list_remove(&r->port_link);
	if (owner_alive && ferryi_node_linked(&r->oep_link))
		ferryi_list_remove(&r->oep_link);
	if (ferryi_node_linked(&r->retry_link))
		ferryi_list_remove(&r->retry_link);
	if (r->tmp_mr)
		fi_close(&r->tmp_mr->fid);
	if (r->raw_mapped)
		(void)fi_mr_unmap_key(port->dom->domain, r->rkey);
	ofi_peer_put(port, r->peer);
	free(r);
}

void ofi_rma_build_req(struct ofi_rma *r, uint8_t *p)
{
	struct ferryi_op *op = r->op;
	ferryi_put_le64(p, r->region_key);
	ferryi_put_le64(p + 8, op->remote_offset);
	ferryi_put_le64(p + 16, op->len);
	ferryi_put_le64(p + 24, r->raddr);
	ferryi_put_le32(p + 32, r->write ? FERRY_ACCESS_REMOTE_WRITE : FERRY_ACCESS_REMOTE_READ);
}

static int ofi_rma_start(struct ferry_ep *ep, struct ferryi_op *op, bool write)
{
	struct ofi_ep *oep = ofi_ep(ep);
	struct ofi_port *port = oep->port;
	struct ofi_dom *dom;
	struct ofi_rkey_ent ent;
	struct ofi_rma *r;
	int rc;

	if (!port || oep->closing || oep->state != OFI_EP_UP)
		return FERRY_ENOTCONN;
	dom = port->dom;
	rc = ofi_rkey_find(op->rkey, oep->remote_ksid, &ent);
	if (rc < 0) {
		FERRYI_DBG(ep->ctx, "ofi: rkey has no key for the peer's %s key space", dom->prov_name);
		return FERRY_EBADKEY;
	}
	if (!ferryi_range_ok(ent.len, op->remote_offset, op->len))
		return FERRY_ERANGE;
	r = calloc(1, sizeof(*r));
	if (!r)
		return FERRY_ENOMEM;
	r->c.kind = OFI_CTX_RMA;
	r->port = port;
	r->ep = ep;
	r->op = op;
	r->write = write;
	/*
	 * A rendezvous read the target granted with its announce goes at once: the
	 * target holds the region until our finish, or until our READS_OVER when we close
	 * first. Other rendezvous reads (sends with a deadline) are checked, though their
	 * key comes from the target for this very read: the check is what tells the
	 * target that we read its buffer (it holds the region until our RMA_DONE, and its
	 * send does not complete before), and what refuses us once its send has ended,
	 * when the buffer is its application's again. Unchecked, libfabric served such
	 * reads from memory the application had reused or freed (soak over ofi+tcp under
	 * ASan).
	 */
	r->checked = !op->key_granted && (op->key_lent || dom->inst->rma_check || dom->is_shm);
	r->raddr = (ent.virt ? ent.base : 0) + op->remote_offset;
	r->region_key = ent.region_key;
	ferryi_node_init(&r->retry_link);
	if (ent.raw) {
		rc = fi_mr_map_raw(dom->domain, ent.base, (uint8_t *)ent.key, ent.keylen, &r->rkey, 0);
		if (rc) {
			FERRYI_DBG(ep->ctx, "ofi: fi_mr_map_raw: %s", fi_strerror(-rc));
			free(r);
			return FERRY_EBADKEY;
		}
		r->raw_mapped = true;
	} else {
		r->rkey = ferryi_get_le64(ent.key);
	}
	r->desc = ofi_mr_desc(port, op->mr);
	if (!r->desc && (dom->mr_mode & FI_MR_LOCAL) && op->len) {
		/* No region of ours covers the buffer: register it for this op only. */
		rc = ofi_mr_local(port, op->buf, op->len, FI_READ | FI_WRITE, &r->tmp_mr, &r->desc);
		if (rc < 0) {
			if (r->raw_mapped)
				(void)fi_mr_unmap_key(dom->domain, r->rkey);
			free(r);
			return rc;
		}
	}
	r->peer = oep->peer; /* from here on r is freed by ofi_free_rma */
	r->peer->refs++;
	op->prov[0] = (uint64_t)(uintptr_t)r;
	ferryi_list_push_back(&port->rmas, &r->port_link);
	ferryi_list_push_back(&oep->rmas, &r->oep_link);
	if (r->checked) {
		r->state = OFI_RMA_QUEUED;
		ferryi_list_push_back(&oep->txq, &op->qlink);
		ofi_ep_flush(oep);
	} else {
		r->state = OFI_RMA_MOVING;
		ofi_rma_post(r);
	}
	return 0;
}

int ofi_write(struct ferry_ep *ep, struct ferryi_op *op)
{
	return ofi_rma_start(ep, op, true);
}

int ofi_read(struct ferry_ep *ep, struct ferryi_op *op)
{
	return ofi_rma_start(ep, op, false);
}

static ssize_t ofi_post_write(struct ofi_port *port, struct ofi_peer *peer, struct ofi_rma *r,
			      void *buf, uint64_t n)
{
	struct ofi_dom *dom = port->dom;
	if (dom->write_dc) {
		struct iovec iov = { .iov_base = buf, .iov_len = n };
		struct fi_rma_iov rma = { .addr = r->raddr + r->next, .len = n, .key = r->rkey };
		void *desc = r->desc;
		struct fi_msg_rma msg = {
			.msg_iov = &iov, .desc = &desc, .iov_count = 1, .addr = peer->fa,
			.rma_iov = &rma, .rma_iov_count = 1, .context = &r->c,
		};
		ssize_t rc = fi_writemsg(port->ep, &msg, FI_COMPLETION | FI_DELIVERY_COMPLETE);
		if (rc != -FI_EOPNOTSUPP && rc != -FI_ENOSYS && rc != -FI_EINVAL &&
		    rc != -FI_EBADFLAGS)
			return rc;
		FERRYI_INFO(dom->inst->pi->ctx, "ofi: %s: no FI_DELIVERY_COMPLETE writes (%s); "
						"writes complete when sent",
			    dom->prov_name, fi_strerror((int)-rc));
		dom->write_dc = false;
	}
	return fi_write(port->ep, buf, n, r->desc, peer->fa, r->raddr + r->next, r->rkey, &r->c);
}

/* Posts the pieces of a one-sided op (each at most max_msg_size). */
void ofi_rma_post(struct ofi_rma *r)
{
	struct ofi_port *port = r->port;
	struct ferryi_op *op = r->op;
	struct ofi_peer *peer = r->peer; /* the op's own reference to its endpoint's peer */

	while (op && r->next < op->len && !r->status && r->out < OFI_RMA_WINDOW) {
		if (peer->rma_out >= port->dom->rma_peer_max) {
			/* Its turn comes when a piece to this peer completes. */
			if (!ferryi_node_linked(&r->retry_link))
				ferryi_list_push_back(&peer->rma_wait, &r->retry_link);
			return;
		}
		uint64_t n = FERRYI_MIN(op->len - r->next, port->dom->rma_piece);
		char *buf = (char *)op->buf + r->next;
		ssize_t rc = -FI_ENOTCONN;
		if (!peer->removed && ofi_post_begin(peer)) {
			rc = r->write ? ofi_post_write(port, peer, r, buf, n)
				      : fi_read(port->ep, buf, n, r->desc, peer->fa,
						r->raddr + r->next, r->rkey, &r->c);
			ofi_post_end(peer);
		}
		if (rc == -FI_EAGAIN) {
			if (!ferryi_node_linked(&r->retry_link))
				ferryi_list_push_back(&port->rma_retry, &r->retry_link);
			ofi_port_kick(port, 50000);
			return;
		}
		if (rc) {
			FERRYI_WARN(r->ep->ctx, "ofi: %s: %s to %s: %s", port->dom->prov_name,
				    r->write ? "fi_write" : "fi_read", r->ep->peer,
				    fi_strerror((int)-rc));
			r->status = ofi_fi_err((int)-rc);
			break;
		}
		r->next += n;
		r->out++;
		port->rma_out++;
		peer->rma_out++;
		struct ferry_stats *st = ferryi_stats(port->dom->inst->pi);
		if (r->write)
			st->wire_bytes_sent += n;
		else
			st->wire_bytes_received += n;
	}
	if (ferryi_node_linked(&r->retry_link))
		ferryi_list_remove(&r->retry_link);
	if (r->out == 0 && (!op || r->next >= op->len || r->status))
		ofi_rma_finish(r);
}

void ofi_rma_finish(struct ofi_rma *r)
{
	struct ofi_port *port = r->port;
	struct ferry_ep *ep = r->ep;
	struct ofi_ep *oep = ofi_ep(ep);
	struct ferryi_op *op = r->op;
	int status = r->status;
	bool refused = r->refused, write = r->write; /* r is freed below */

	/*
	 * The target may let go of its region now. A granted read says so too on tcp,
	 * though the core's finish right behind would: measured over libfabric's tcp
	 * under the system's BBR, a 1 MiB ping-pong with this message is 20-25% faster
	 * than without it (typical one-way time), and no slower under CUBIC; on shm,
	 * where no congestion control paces anything, it only costs (docs/BENCHMARKS.md).
	 */
	bool over_sockets = !port->dom->is_shm && !port->dom->is_verbs;
	if (r->checked && r->hold_id && oep->peer && oep->remote_conn)
		(void)ofi_ctl_queue(port, oep->peer, NULL, OFI_K_RMA_DONE, oep->remote_conn, 0,
				    r->hold_id, NULL, 0);
	else if (op && op->key_granted && over_sockets && oep->peer && oep->remote_conn &&
		 !oep->closing)
		(void)ofi_ctl_queue(port, oep->peer, NULL, OFI_K_RMA_DONE, oep->remote_conn,
				    OFI_DONE_GRANTED, op->grant_id, NULL, 0);
	ofi_free_rma(port, r, true);
	if (op)
		op->prov[0] = 0;
	if (oep->closing) {
		if (op)
			ferryi_op_done(op, oep->close_reason);
		ofi_ep_maybe_gone(oep);
		return;
	}
	if (status < 0 && !refused)
		ferryi_ep_failed(ep, status, write ? "one-sided write failed"
						    : "one-sided read failed");
	if (op)
		ferryi_op_done(op, status);
}

/* Posts what waits for the peer (dom->rma_peer_max), oldest first, while it may. */
static void ofi_rma_resume(struct ofi_port *port, struct ofi_peer *peer)
{
	struct ferryi_list_node *n;

	while (peer->rma_out < port->dom->rma_peer_max &&
	       (n = ferryi_list_first(&peer->rma_wait))) {
		ferryi_list_remove(n);
		ofi_rma_post(ferryi_container_of(n, struct ofi_rma, retry_link));
	}
}

void ofi_rma_complete(struct ofi_rma *r, int status, const char *why)
{
	struct ofi_port *port = r->port;
	struct ofi_peer *peer = r->peer;

	r->out--;
	port->rma_out--;
	peer->rma_out--;
	if (status == 0 && r->ep && !ofi_ep(r->ep)->closing)
		ferryi_ep_rx_activity(r->ep); /* data moved to or from the peer: it is alive */
	if (status < 0 && !r->status) {
		FERRYI_INFO(r->ep->ctx, "ofi: %s %s %s: %s", r->write ? "write to" : "read from",
			    r->ep->peer, ofi_ep(r->ep)->closing ? "(closing)" : "", why ? why : "");
		r->status = status;
	}
	peer->refs++; /* r may be freed below */
	if (ferryi_node_linked(&r->retry_link) || r->out > 0) {
		/* the retry or wait list, or the window's last piece, goes on */
	} else if (r->op && r->next < r->op->len && !r->status) {
		/*
		 * Window by window, not sliding: xnet serves read responses ahead of
		 * ordinary sends, so a steady stream of requests would keep the peer's
		 * probes and their answers from ever leaving. The pause between windows
		 * lets them out. An op under way goes on before the ones waiting.
		 */
		ofi_rma_post(r);
	} else {
		ofi_rma_finish(r);
	}
	ofi_rma_resume(port, peer);
	ofi_peer_put(port, peer);
}

void ofi_on_rma_req(struct ofi_ep *oep, const struct ofi_hdr *h, const uint8_t *pl,
		    size_t plen)
{
	struct ferry_ep *ep = oep->ep;
	struct ofi_port *port = oep->port;
	struct ofi_hold *hold;
	uint8_t buf[8];
	void *ptr = NULL;
	int rc;

	if (plen != OFI_RMA_REQ_LEN) {
		ferryi_ep_failed(ep, FERRY_EPROTO, "malformed one-sided request");
		return;
	}
	uint64_t key = ferryi_get_le64(pl), off = ferryi_get_le64(pl + 8);
	uint64_t len = ferryi_get_le64(pl + 16), addr = ferryi_get_le64(pl + 24);
	uint32_t access = ferryi_get_le32(pl + 32);
	if (access != FERRY_ACCESS_REMOTE_READ && access != FERRY_ACCESS_REMOTE_WRITE) {
		ferryi_ep_failed(ep, FERRY_EPROTO, "one-sided request with bad access");
		return;
	}
	hold = calloc(1, sizeof(*hold));
	if (!hold) {
		rc = FERRY_ENOMEM;
	} else {
		rc = ferryi_mr_remote_get(ep, key, off, len, access, &hold->use, &ptr);
		if (rc == 0 && !(port->dom->mr_mode & FI_MR_RAW)) {
			/* The address the peer will use must be the one we just checked. */
			uint64_t want = (port->dom->mr_mode & FI_MR_VIRT_ADDR)
						? (uint64_t)(uintptr_t)ptr
						: off;
			if (addr != want) {
				FERRYI_WARN(ep->ctx, "ofi: %s from %s refused: key and address "
						     "do not match",
					    access == FERRY_ACCESS_REMOTE_WRITE ? "write" : "read",
					    ep->peer);
				ferryi_mr_remote_put(&hold->use);
				ferryi_stats(ep->pi)->rkey_refusals++;
				rc = FERRY_EBADKEY;
			}
		}
	}
	if (rc == 0) {
		hold->id = ++oep->next_hold;
		ferryi_list_push_back(&oep->holds, &hold->link);
	} else {
		free(hold);
		hold = NULL;
	}
	ferryi_put_le64(buf, hold ? hold->id : 0);
	if (ofi_ctl_queue(port, oep->peer, ep, OFI_K_RMA_ACK, oep->remote_conn,
			  (uint64_t)(int64_t)rc, h->aux, buf, sizeof(buf)) < 0)
		ferryi_ep_failed(ep, FERRY_ENOMEM, "out of memory");
}

void ofi_on_rma_ack(struct ofi_ep *oep, const struct ofi_hdr *h, const uint8_t *pl,
		    size_t plen)
{
	struct ferry_ep *ep = oep->ep;
	int status = ofi_wire_status(h->tag);
	uint64_t hold_id = plen == 8 ? ferryi_get_le64(pl) : 0;
	struct ferryi_op *op = ferryi_op_find(ep, h->aux);
	struct ofi_rma *r = op && (op->type == FERRY_OP_WRITE || op->type == FERRY_OP_READ)
				    ? (struct ofi_rma *)(uintptr_t)op->prov[0]
				    : NULL;

	if (!r || r->state != OFI_RMA_ASKED || r->op != op) {
		/* The op ended meanwhile (deadline): give the region back at once. */
		if (status == 0 && hold_id)
			(void)ofi_ctl_queue(oep->port, oep->peer, NULL, OFI_K_RMA_DONE,
					    oep->remote_conn, 0, hold_id, NULL, 0);
		return;
	}
	if (status < 0) {
		r->status = status;
		r->refused = true;
		ofi_rma_finish(r);
		return;
	}
	r->hold_id = hold_id;
	r->state = OFI_RMA_MOVING;
	ofi_rma_post(r);
}

static struct ofi_hold *ofi_hold_find(struct ofi_ep *oep, uint64_t id, bool granted)
{
	for (struct ferryi_list_node *n = oep->holds.head.next; n != &oep->holds.head;
	     n = n->next) {
		struct ofi_hold *hold = ferryi_container_of(n, struct ofi_hold, link);
		if (hold->id == id && hold->granted == granted)
			return hold;
	}
	return NULL;
}

void ofi_hold_free(struct ofi_hold *hold)
{
	ferryi_list_remove(&hold->link);
	ferryi_mr_remote_put(&hold->use);
	free(hold);
}

/*
 * The announce of a rendezvous send grants the peer's read of it: the hold a checked
 * request would take, taken now, and given back at the finish (rndv_release) or when
 * the peer's endpoint says it reads nothing more (OFI_K_READS_OVER). The peer's read
 * then saves the request's round trip.
 */
int ofi_rndv_grant(struct ferry_ep *ep, struct ferryi_op *op)
{
	struct ofi_ep *oep = ofi_ep(ep);
	if (!oep->port || oep->closing || oep->state != OFI_EP_UP)
		return FERRY_ENOTCONN;
	struct ofi_hold *hold = calloc(1, sizeof(*hold));
	if (!hold)
		return FERRY_ENOMEM;
	hold->id = ferryi_op_id(op);
	hold->granted = true;
	ferryi_mr_remote_hold(ep, op->rndv_mr, &hold->use);
	ferryi_list_push_back(&oep->holds, &hold->link);
	return 0;
}

void ofi_rndv_release(struct ferry_ep *ep, struct ferryi_op *op)
{
	/* Finishes come in about the order of the announces: the hold is near the front. */
	struct ofi_hold *hold = ofi_hold_find(ofi_ep(ep), ferryi_op_id(op), true);
	if (hold)
		ofi_hold_free(hold);
}

void ofi_on_rma_done(struct ofi_ep *oep, const struct ofi_hdr *h)
{
	struct ofi_hold *hold = ofi_hold_find(oep, h->aux, h->tag == OFI_DONE_GRANTED);
	if (hold)
		ofi_hold_free(hold);
}
