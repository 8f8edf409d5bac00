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
 *
 * Compressible transfers go in segments (tcp_z.c): a write as several WRITE frames,
 * answered once after the last (MORE clear) with the first refusal among them; a
 * read's answer as several READ_RESP frames, received in order at op->buf + what came
 * before. Who compresses: the initiator of a write (its op's flags, then its policy);
 * for a read, the target that sends the bytes, from the reader's flags carried in
 * READ_REQ, then the flags of the send whose rendezvous buffer is read, then its own
 * policy.
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
		h.flags = (uint32_t)(op->prov[FERRYI_TCP_OP_RSTAT] & 0xffu);
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
		if (kind == FERRYI_TCP_WRITE) {
			if (ferryi_tcp_z_maybe(te, op->flags, op->len))
				op->prov[FERRYI_TCP_OP_ZS + FERRYI_TCP_ZS_CTL] =
					ferryi_tcp_z_mode(ep, op->flags, op->len);
		} else if ((te->peer.features & FERRYI_FEAT_ZSTD) && te->zaccept) {
			/* The target decides; tell it what this read asked for. */
			if (op->flags & FERRY_OP_NO_COMPRESS)
				op->prov[FERRYI_TCP_OP_RSTAT] = FERRYI_TCP_F_ZNEVER;
			else if (op->flags & FERRY_OP_COMPRESS)
				op->prov[FERRYI_TCP_OP_RSTAT] = FERRYI_TCP_F_ZWANT;
		}
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
	if (ferryi_tcp_zc_pending(te, op->prov[FERRYI_TCP_OP_ZC])) {
		ferryi_tcp_zc_reap(ep); /* the notification is usually in by now */
		if (te->closed)
			return; /* the close completed op, still in te->wait */
	}
	ferryi_list_remove(&op->qlink);
	ferryi_tcp_rma_answered(ep, op);
	if (ferryi_tcp_zc_pending(te, op->prov[FERRYI_TCP_OP_ZC])) {
		/* Answered, but the kernel may still hold the buffer: complete later. */
		op->prov[FERRYI_TCP_OP_DONE_ST] = (uint64_t)(int64_t)status;
		op->prov[FERRYI_TCP_OP_STATE] = FERRYI_TCP_OPS_ZC;
		ferryi_list_push_back(&te->zc_ops, &op->qlink);
		return;
	}
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
	uint64_t recvd = op->prov[FERRYI_TCP_OP_RECVD], raw = te->rx_raw;
	bool more = (te->rh.flags & FERRYI_TCP_F_MORE) != 0;

	if (status != 0) {
		/* A refusal comes before any data, alone. */
		if (te->rh.len != 0 || te->rh.flags != 0 || recvd != 0) {
			ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
					      "READ_RESP with status %d carries "
					      "%" PRIu64 " bytes (flags 0x%x, %" PRIu64
					      " received before)",
					      status, te->rh.len, (unsigned)te->rh.flags, recvd);
			return;
		}
		ferryi_list_remove(&op->qlink);
		ferryi_tcp_rma_answered(ep, op);
		ferryi_op_done(op, status);
		return;
	}
	if (raw > op->len - recvd || (more ? raw == 0 : raw != op->len - recvd)) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
				      "READ_RESP carries %" PRIu64 " bytes%s after %" PRIu64
				      " for a read of %" PRIu64,
				      raw, more ? " (more to come)" : "", recvd, op->len);
		return;
	}
	/* Stays in te->wait (a close completes it) while the payload arrives. After a
	 * segment that did not decode, the rest is read and dropped. */
	op->prov[FERRYI_TCP_OP_STATE] = FERRYI_TCP_OPS_RECV;
	te->rx_op = op;
	ferryi_tcp_rx_payload(ep, FERRYI_TCP_READ_RESP,
			      (op->prov[FERRYI_TCP_OP_RSTAT] >> 32) ? NULL
								 : (uint8_t *)op->buf + recvd,
			      raw);
}

void ferryi_tcp_read_rx_done(struct ferry_ep *ep, int zerr)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_op *op = te->rx_op;

	te->rx_op = NULL;
	if (!op)
		return;
	op->prov[FERRYI_TCP_OP_RECVD] += te->rx_raw;
	if (zerr && !(op->prov[FERRYI_TCP_OP_RSTAT] >> 32))
		op->prov[FERRYI_TCP_OP_RSTAT] |= (uint64_t)(uint32_t)zerr << 32;
	if (te->rh.flags & FERRYI_TCP_F_MORE) {
		op->prov[FERRYI_TCP_OP_STATE] = FERRYI_TCP_OPS_WAIT; /* the next segment */
		return;
	}
	ferryi_list_remove(&op->qlink);
	ferryi_tcp_rma_answered(ep, op);
	ferryi_op_done(op, (int32_t)(uint32_t)(op->prov[FERRYI_TCP_OP_RSTAT] >> 32));
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

	if (te->wseg && te->rh.aux != te->wseg_aux) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
				      "WRITE for op 0x%" PRIx64 " inside the segmented write of "
				      "op 0x%" PRIx64, te->rh.aux, te->wseg_aux);
		return;
	}
	rc = ferryi_mr_remote_get(ep, te->rext.key, te->rext.offset, te->rx_raw,
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
	ferryi_tcp_rx_payload(ep, FERRYI_TCP_WRITE, rc == 0 ? ptr : NULL, te->rx_raw);
}

void ferryi_tcp_write_rx_done(struct ferry_ep *ep, int zerr)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_WRITE_ACK, .aux = te->rx_aux};
	struct ferryi_tcp_ext e = {.status = 0};
	int status = te->rx_status ? te->rx_status : tcp_wire_status(zerr);

	if (te->rx_use_held) {
		te->rx_use_held = false;
		ferryi_mr_remote_put(&te->rx_use);
		if (te->closed)
			return;
	}
	/* A segmented write is answered once, after its last segment, with the first
	 * refusal of any segment. */
	if (!te->wseg) {
		te->wseg_aux = te->rx_aux;
		te->wseg_status = 0;
	}
	if (status && !te->wseg_status)
		te->wseg_status = status;
	if (te->rh.flags & FERRYI_TCP_F_MORE) {
		te->wseg = true;
		return;
	}
	te->wseg = false;
	e.status = te->wseg_status;
	(void)ferryi_tcp_ctl_queue(ep, &h, &e);
}

/*
 * The compression of a READ_RESP: the reader's flags (ZNEVER, ZWANT) first, then those
 * of the send whose rendezvous buffer mr is (FERRY_OP_NO_COMPRESS wins), then our
 * policy; only toward a reader that advertised zstd (ferryi_tcp_z_mode).
 */
static enum ferryi_zmode tcp_read_resp_mode(struct ferry_ep *ep, struct ferry_mr *mr,
					    uint32_t rflags, uint64_t len)
{
	const struct ferryi_tcp_mr *tm = ferryi_mr_priv(mr, ep->pi);
	unsigned f = tm->zflags;

	if (rflags & FERRYI_TCP_F_ZNEVER)
		return FERRYI_ZMODE_NONE;
	if (rflags & FERRYI_TCP_F_ZWANT)
		f |= FERRY_OP_COMPRESS;
	return ferryi_tcp_z_mode(ep, f, len);
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
		/* Compressible: sent in segments (tcp_z.c), prefixes made as they go. Only
		 * rendezvous buffers (internal regions) carry a send's flags. */
		if ((te->rh.flags & FERRYI_TCP_F_ZWANT) || te->zpolicy ||
		    (ctl->use.mr->internal &&
		     (((const struct ferryi_tcp_mr *)ferryi_mr_priv(ctl->use.mr, ep->pi))->zflags &
		      FERRY_OP_COMPRESS)))
			ctl->zs[FERRYI_TCP_ZS_CTL] = tcp_read_resp_mode(
				ep, ctl->use.mr, te->rh.flags, te->rext.length);
		ctl->aux = te->rh.aux;
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
