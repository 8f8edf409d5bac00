/*
 * tcp_rma.c - one-sided write and read, emulated over the stream.
 *
 * write: initiator sends WRITE {op id, key, offset} + payload from op->buf; the target
 *        checks key, access and bounds (ferryi_mr_remote_get), receives the payload
 *        straight into the region (or drops it when refused) and answers WRITE_ACK
 *        {op id, status}; the initiator completes the op with that status.
 * read:  initiator sends READ_REQ {op id, key, offset, length}; the target checks and
 *        answers READ_RESP {op id, status} + payload written straight from the region,
 *        holding the region until the last byte is out; the initiator receives it
 *        straight into op->buf.
 * Op ids from the wire are looked up with ferryi_op_find() and must name an op of the
 * right kind that is waiting for exactly this answer; anything else is a protocol
 * error. Lengths are 64-bit throughout; the writer and reader loop on partial I/O.
 */
#define _GNU_SOURCE
#include "tcp_internal.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

uint32_t ferryi_tcp_op_prefix(const struct ferryi_op *op, uint8_t *out,
			      const void **payload, uint64_t *payload_len)
{
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e;

	memset(&h, 0, sizeof(h));
	memset(&e, 0, sizeof(e));
	switch (op->prov[FERRYI_TCP_OP_KIND]) {
	case FERRYI_TCP_WRITE:
		h.type = FERRYI_TCP_WRITE;
		h.len = op->len;
		h.aux = ferryi_op_id(op);
		e.key = op->prov[FERRYI_TCP_OP_KEY];
		e.offset = op->remote_offset;
		*payload = op->buf;
		*payload_len = op->len;
		break;
	case FERRYI_TCP_READ_REQ:
		h.type = FERRYI_TCP_READ_REQ;
		h.aux = ferryi_op_id(op);
		e.key = op->prov[FERRYI_TCP_OP_KEY];
		e.offset = op->remote_offset;
		e.length = op->len;
		*payload = NULL;
		*payload_len = 0;
		break;
	default:
		h.type = FERRYI_TCP_MSG;
		h.flags = ferryi_tcp_msg_flags(&op->msg);
		h.len = op->len;
		h.tag = op->msg.tag;
		h.aux = op->msg.aux;
		*payload = op->buf;
		*payload_len = op->len;
		break;
	}
	return ferryi_tcp_encode(out, &h, &e);
}

/* ------------------------------------------------------------------ initiator */

static int tcp_rma_post(struct ferry_ep *ep, struct ferryi_op *op, unsigned kind)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	const void *key = NULL;
	size_t klen = 0;

	if (!te->inited || te->closed || te->closing || te->io_error)
		return FERRY_ENOTCONN;
	if (op->rkey)
		key = ferryi_rkey_key(op->rkey, FERRYI_PROV_TCP, &klen);

	ferryi_tcp_enter(ep);
	if (!key || klen != 8) {
		FERRYI_DBG(ep->ctx, "tcp: %s to %s: the rkey has no tcp key (%zu bytes)",
			   kind == FERRYI_TCP_WRITE ? "write" : "read", ep->peer, klen);
		ferryi_op_done(op, FERRY_EBADKEY);
	} else if (te->hs == FERRYI_TCP_HS_DONE && op->len > te->peer.max_frame) {
		FERRYI_DBG(ep->ctx, "tcp: %s of %" PRIu64 " bytes to %s above its max_frame "
				    "%" PRIu64, kind == FERRYI_TCP_WRITE ? "write" : "read",
			   op->len, ep->peer, te->peer.max_frame);
		ferryi_op_done(op, FERRY_EMSGSIZE);
	} else {
		op->prov[FERRYI_TCP_OP_KEY] = ferryi_get_le64(key);
		ferryi_tcp_tx_post(ep, op, kind);
	}
	ferryi_tcp_leave(ep);
	return 0;
}

int ferryi_tcp_write(struct ferry_ep *ep, struct ferryi_op *op)
{
	return tcp_rma_post(ep, op, FERRYI_TCP_WRITE);
}

int ferryi_tcp_read(struct ferry_ep *ep, struct ferryi_op *op)
{
	return tcp_rma_post(ep, op, FERRYI_TCP_READ_REQ);
}

/* The op the peer answers: in flight on ep, ours, of this kind, and waiting. */
static struct ferryi_op *tcp_rma_find(struct ferry_ep *ep, uint64_t id, unsigned kind)
{
	struct ferryi_op *op = ferryi_op_find(ep, id);

	if (!op || op->ep != ep || !op->provider_owned || op->completed ||
	    op->prov[FERRYI_TCP_OP_KIND] != kind ||
	    op->prov[FERRYI_TCP_OP_STATE] != FERRYI_TCP_OPS_WAIT)
		return NULL;
	return op;
}

void ferryi_tcp_on_write_ack(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_op *op = tcp_rma_find(ep, te->rh.aux, FERRYI_TCP_WRITE);
	int status = te->rext.status;

	if (!op) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
				      "WRITE_ACK for op id 0x%" PRIx64
				      " that is no write awaiting an answer",
				      te->rh.aux);
		return;
	}
	ferryi_list_remove(&op->qlink);
	ferryi_op_done(op, status);
}

void ferryi_tcp_on_read_resp(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_op *op = tcp_rma_find(ep, te->rh.aux, FERRYI_TCP_READ_REQ);
	int status = te->rext.status;

	if (!op) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
				      "READ_RESP for op id 0x%" PRIx64
				      " that is no read awaiting an answer",
				      te->rh.aux);
		return;
	}
	if (status != 0) {
		if (te->rh.len != 0) {
			ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
					      "READ_RESP with status %d carries "
					      "%" PRIu64 " bytes",
					      status, te->rh.len);
			return;
		}
		ferryi_list_remove(&op->qlink);
		ferryi_op_done(op, status);
		return;
	}
	if (te->rh.len != op->len) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
				      "READ_RESP carries %" PRIu64
				      " bytes for a read of %" PRIu64,
				      te->rh.len, op->len);
		return;
	}
	/* Stays in te->wait (a close completes it) while the payload arrives. */
	op->prov[FERRYI_TCP_OP_STATE] = FERRYI_TCP_OPS_RECV;
	te->rx_op = op;
	ferryi_tcp_rx_payload(ep, FERRYI_TCP_READ_RESP, op->buf, te->rh.len);
}

void ferryi_tcp_read_rx_done(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_op *op = te->rx_op;

	te->rx_op = NULL;
	if (!op)
		return;
	ferryi_list_remove(&op->qlink);
	ferryi_op_done(op, 0);
}

/* ------------------------------------------------------------------ target */

/* A refusal travels as a status the peer's decoder accepts. */
static int tcp_wire_status(int rc)
{
	return rc <= 0 && ferryi_tcp_status_known(rc) ? rc : FERRY_EIO;
}

void ferryi_tcp_on_write(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	void *ptr = NULL;
	int rc;

	rc = ferryi_mr_remote_get(ep, te->rext.key, te->rext.offset, te->rh.len,
				  FERRY_ACCESS_REMOTE_WRITE, &te->rx_use, &ptr);
	if (te->closed) {
		if (rc == 0)
			ferryi_mr_remote_put(&te->rx_use);
		return;
	}
	te->rx_use_held = rc == 0;
	te->rx_status = tcp_wire_status(rc);
	te->rx_aux = te->rh.aux;
	/* Refused: the payload is read and dropped, the ack carries the reason. */
	ferryi_tcp_rx_payload(ep, FERRYI_TCP_WRITE, rc == 0 ? ptr : NULL, te->rh.len);
}

void ferryi_tcp_write_rx_done(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_WRITE_ACK, .aux = te->rx_aux};
	struct ferryi_tcp_ext e = {.status = te->rx_status};

	if (te->rx_use_held) {
		te->rx_use_held = false;
		ferryi_mr_remote_put(&te->rx_use);
		if (te->closed)
			return;
	}
	(void)ferryi_tcp_ctl_queue(ep, &h, &e);
}

void ferryi_tcp_on_read_req(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_READ_RESP, .aux = te->rh.aux};
	struct ferryi_tcp_ext e = {.status = 0};
	struct ferryi_tcp_ctl *ctl = ferryi_tcp_ctl_new(ep);
	void *ptr = NULL;
	int rc;

	if (!ctl)
		return;
	rc = ferryi_mr_remote_get(ep, te->rext.key, te->rext.offset, te->rext.length,
				  FERRY_ACCESS_REMOTE_READ, &ctl->use, &ptr);
	if (rc == 0) {
		ctl->has_use = true;
		ctl->payload = ptr;
		ctl->payload_len = te->rext.length;
		h.len = te->rext.length;
	} else {
		e.status = tcp_wire_status(rc);
	}
	if (te->closed) {
		if (ctl->has_use)
			ferryi_mr_remote_put(&ctl->use);
		free(ctl);
		return;
	}
	ferryi_tcp_ctl_push(ep, ctl, &h, &e);
}
