/*
 * tcp_ep.c - the TCP provider's endpoint: transmit queues and coalescing writer,
 * receive state machine with a staging buffer, endpoint teardown.
 *
 * Transmit order: the frame written in part (cur_op/cur_ctl), then the control
 * frames, then the ops in posting order (ops only once the handshake is done). One
 * sendmsg() carries up to FERRYI_TCP_TX_BATCH frames; payload iovecs point at the
 * user's buffer or the registered region, never at a copy.
 *
 * Receive: a header (plus its fixed extension) is decoded from the staging buffer,
 * validated, and dispatched; its payload goes to the destination the frame's handler
 * chose (a posted receive, an unexpected buffer, a region, a read buffer) or is
 * dropped. Once the staged bytes are used up, the rest of a payload is read with
 * recvmsg() straight into the destination, with the staging buffer as a second iovec
 * so the next frame's header comes along in the same call. A compressed payload is
 * received the same way, one piece at a time (prelude, chunk header, chunk data:
 * tcp_z.c), and decoded into the destination.
 */
#define _GNU_SOURCE
#include "tcp_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

static void tcp_hs_timeout(struct ferryi_timer *t);

void ferryi_tcp_ep_init(struct ferry_ep *ep, int fd)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	memset(te, 0, sizeof(*te));
	te->inited = true;
	te->fd = fd;
	te->ph.fd = fd;
	te->ph.fn = ferryi_tcp_poll_fn;
	te->ph.direct = true; /* tcp_rx_run reads nonblocking; see ferryi_tcp_zc_sent */
	ferryi_timer_init(&te->hs_timer, tcp_hs_timeout);
	ferryi_list_init(&te->txq_ops);
	ferryi_list_init(&te->txq_ctl);
	ferryi_list_init(&te->wait);
	ferryi_list_init(&te->zc_ops);
	ferryi_list_init(&te->zc_ctls);
	ferryi_zdec_init(&te->zrx);

	ferryi_local_info(ep->ctx, &te->local);
	/* FERRY_COMPRESS_ACCEPT=0: look like a build without zstd (peers send raw). */
	if (!ferryi_tcp_inst(ep)->ext.compress_accept)
		te->local.features &= ~(uint32_t)FERRYI_FEAT_ZSTD;
	te->zaccept = (te->local.features & FERRYI_FEAT_ZSTD) && ferryi_compress_built();
	te->zpolicy = ferry_ctx_config(ep->ctx)->compress != FERRY_COMPRESS_OFF;
	te->zauto = ferry_ctx_config(ep->ctx)->compress == FERRY_COMPRESS_AUTO;
	te->zc_min = ferryi_tcp_inst(ep)->ext.zerocopy_min ? ferryi_tcp_inst(ep)->ext.zerocopy_min
							   : UINT64_MAX;
	if (te->local.eager_max > FERRYI_TCP_EAGER_MAX)
		te->local.eager_max = FERRYI_TCP_EAGER_MAX;
	if (te->local.eager_max > te->local.max_frame)
		te->local.eager_max = te->local.max_frame;
	te->lim.max_frame = te->local.max_frame;
	te->lim.eager_max = ferryi_tcp_msg_limit(te->local.eager_max);
}

/* ------------------------------------------------------------------ lifetime */

/* Lends ep a staging buffer for a receive pass. */
static bool tcp_stage_take(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_inst *ti = ferryi_tcp_inst(ep);

	if (te->stage)
		return true;
	te->stage = ti->nstage_spare ? ti->stage_spare[--ti->nstage_spare]
				     : malloc(FERRYI_TCP_STAGE_SIZE);
	te->rs = te->re = 0;
	return te->stage != NULL;
}

/* Gives ep's staging buffer back unless it holds part of a frame. */
static void tcp_stage_give(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_inst *ti = ferryi_tcp_inst(ep);

	if (!te->stage || te->rs != te->re)
		return;
	if (ti->nstage_spare < FERRYI_TCP_STAGE_SPARE)
		ti->stage_spare[ti->nstage_spare++] = te->stage;
	else
		free(te->stage);
	te->stage = NULL;
	te->rs = te->re = 0;
}

void ferryi_tcp_stage_spares_free(struct ferryi_tcp_inst *ti)
{
	while (ti->nstage_spare)
		free(ti->stage_spare[--ti->nstage_spare]);
}

static void tcp_finish(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	te->rs = te->re; /* whatever is staged is of no use any more */
	tcp_stage_give(ep);
	if (ferryi_node_linked(&te->cork_link))
		ferryi_list_remove(&te->cork_link);
	ferryi_tcp_z_ep_fini(ep);
	te->gone = true;
	ferryi_ep_gone(ep);
}

void ferryi_tcp_enter(struct ferry_ep *ep)
{
	ferryi_tcp_ep(ep)->depth++;
}

void ferryi_tcp_leave(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	if (--te->depth == 0 && te->gone_pending) {
		te->gone_pending = false;
		tcp_finish(ep); /* ep may be freed from here on */
	}
}

static void tcp_vfail(struct ferry_ep *ep, int code, bool notify, const char *fmt,
		      va_list ap)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	char why[256];

	if (te->closed || te->closing || te->io_error)
		return;
	vsnprintf(why, sizeof(why), fmt, ap);
	/* Tell the peer why, unless a frame is half written (it would corrupt it). */
	if (notify && te->fd >= 0 && !te->cur_op && !te->cur_ctl &&
	    te->hs != FERRYI_TCP_HS_CONNECTING)
		ferryi_tcp_send_error_now(te->fd, code);
	te->io_error = true; /* nothing more goes out, not even a graceful flush */
	ferryi_ep_failed(ep, code, why);
}

void ferryi_tcp_fail(struct ferry_ep *ep, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tcp_vfail(ep, code, false, fmt, ap);
	va_end(ap);
}

void ferryi_tcp_fail_notify(struct ferry_ep *ep, int code, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	tcp_vfail(ep, code, true, fmt, ap);
	va_end(ap);
}

void ferryi_tcp_proto_fail(struct ferry_ep *ep, int code, const char *fmt, ...)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	va_list ap;

	if (te->closed || te->closing || te->io_error)
		return;
	/* ferryi_ep_failed() counts EPROTO/EVERSION in protocol_errors. */
	va_start(ap, fmt);
	tcp_vfail(ep, code, true, fmt, ap);
	va_end(ap);
}

static void tcp_hs_timeout(struct ferryi_timer *t)
{
	struct ferryi_tcp_ep *te = ferryi_container_of(t, struct ferryi_tcp_ep, hs_timer);
	struct ferry_ep *ep = ferryi_tcp_ep_of(te);

	ferryi_tcp_enter(ep);
	if (!te->closed && te->hs != FERRYI_TCP_HS_DONE)
		ferryi_tcp_fail_notify(ep, FERRY_ETIMEDOUT,
				       "no complete HELLO within %u ms "
				       "(%llu bytes received)",
				       te->hs_timeout_ms,
				       (unsigned long long)te->hs_bytes);
	ferryi_tcp_leave(ep);
}

/* ------------------------------------------------------------------ transmit */

int ferryi_tcp_set_events(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	uint32_t ev;
	int rc;

	if (te->closed || te->fd < 0 || !te->polled)
		return 0;
	if (te->hs == FERRYI_TCP_HS_CONNECTING)
		ev = EPOLLOUT;
	else
		ev = EPOLLIN | (te->want_out ? EPOLLOUT : 0);
	if (ev == te->ph.events)
		return 0;
	rc = ferryi_poll_mod(ep->ctx, &te->ph, ev);
	if (rc < 0) {
		ferryi_tcp_fail(ep, rc, "epoll update failed: %s", ferry_strerror(rc));
		return rc;
	}
	te->ph.events = ev;
	return 0;
}

/*
 * The one-sided window (rma_window, set by ferryi_tcp_hs_done). A write, or a read
 * request, that would take the one-sided bytes written and not yet answered past the
 * window waits until answers come back; the first always goes. It waits in order: a
 * send queued behind it must not overtake a write it may announce. Only while the
 * application polls: where it sleeps, every held transfer would cost a wake-up on
 * each side, more than the queue costs (docs/BENCHMARKS.md). `batched` counts
 * the bytes of the writes and read requests already in the batch being built. Each
 * op that waits is counted once (rma_window_waits).
 */
static bool tcp_rma_held(struct ferry_ep *ep, const struct ferryi_op *op, uint64_t batched)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	uint64_t out = te->rma_out + batched;

	if (!te->rma_window || out == 0 || op->prov[FERRYI_TCP_OP_KIND] == FERRYI_TCP_MSG)
		return false;
	/* A compressed write already partly out is not held back. */
	if (op->prov[FERRYI_TCP_OP_SENT] || op->prov[FERRYI_TCP_OP_ZS + FERRYI_TCP_ZS_OFF])
		return false;
	if (out < te->rma_window && op->len <= te->rma_window - out)
		return false;
	/* An application that sleeps would pay a wake-up for every transfer held. */
	if (ferryi_ctx_sleeps(ep->ctx))
		return false;
	if (te->rma_held_id != ferryi_op_id(op)) {
		te->rma_held_id = ferryi_op_id(op);
		ferryi_stats(ep->pi)->rma_window_waits++;
	}
	return true;
}

/* Something may be written now: a frame in part, control frames, or an op not held. */
static bool tcp_tx_pending(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	if (te->cur_op || te->cur_ctl || !ferryi_list_empty(&te->txq_ctl))
		return true;
	if (te->hs != FERRYI_TCP_HS_DONE || ferryi_list_empty(&te->txq_ops))
		return false;
	return !tcp_rma_held(ep, ferryi_container_of(ferryi_list_first(&te->txq_ops),
						     struct ferryi_op, qlink), 0);
}

void ferryi_tcp_rma_answered(struct ferry_ep *ep, const struct ferryi_op *op)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	te->rma_out -= FERRYI_MIN(op->len, te->rma_out);
	/* With the socket full, EPOLLOUT writes what waited; otherwise it goes now. */
	if (te->rma_window && !te->want_out && tcp_tx_pending(ep))
		ferryi_tcp_flush(ep);
}

struct tcp_frame {
	struct ferryi_op *op;
	struct ferryi_tcp_ctl *ctl;
	uint32_t prefix_len;
	uint64_t total;
	uint64_t sent;
};

struct tcp_batch {
	struct iovec iov[2 * FERRYI_TCP_TX_BATCH];
	uint8_t prefix[FERRYI_TCP_TX_BATCH][FERRYI_TCP_PREFIX_MAX];
	struct tcp_frame fr[FERRYI_TCP_TX_BATCH];
	int nfr, niov;
	uint64_t bytes;
	bool full; /* a frame could not be described whole (or is a segment with more
		      to come): nothing may follow it                                   */
	bool zc;   /* the batch is one payload, sent with MSG_ZEROCOPY                  */
	bool cork; /* the batch ends with a prefix whose payload follows at once       */
};

/* Adds the unwritten part of one frame; returns false when the batch is full. */
static bool tcp_batch_add(struct ferry_ep *ep, struct tcp_batch *b, struct ferryi_op *op,
			  struct ferryi_tcp_ctl *ctl)
{
	struct tcp_frame *f;
	const uint8_t *prefix;
	const void *payload;
	uint64_t plen, skip, room;
	bool more = false, from_user = true;

	if (b->full || b->nfr == FERRYI_TCP_TX_BATCH || b->bytes >= FERRYI_TCP_IO_CHUNK)
		return false;
	f = &b->fr[b->nfr];
	f->op = op;
	f->ctl = ctl;
	if (op ? op->prov[FERRYI_TCP_OP_ZS + FERRYI_TCP_ZS_CTL] != 0 : ctl->zs[FERRYI_TCP_ZS_CTL] != 0) {
		/* Sent in segments (compressible): the next segment's frame. */
		f->prefix_len = ferryi_tcp_z_frame(ep, op, ctl, b->nfr == 0, b->prefix[b->nfr],
						   &payload, &plen, &more, &from_user);
		if (!f->prefix_len)
			return false; /* waits for the staging buffer, held by a frame ahead */
		prefix = b->prefix[b->nfr];
		f->sent = op ? op->prov[FERRYI_TCP_OP_SENT] : ctl->sent;
	} else if (op) {
		f->prefix_len = ferryi_tcp_op_prefix(op, b->prefix[b->nfr], &payload, &plen);
		prefix = b->prefix[b->nfr];
		f->sent = op->prov[FERRYI_TCP_OP_SENT];
	} else {
		f->prefix_len = ctl->prefix_len;
		prefix = ctl->prefix;
		payload = ctl->payload;
		plen = ctl->payload_len;
		f->sent = ctl->sent;
	}
	f->total = f->prefix_len + plen;
	skip = f->sent;
	/*
	 * A large payload from user memory goes out on its own, with MSG_ZEROCOPY: its
	 * prefix ends this batch (corked: the payload follows at once), and the payload
	 * is the next batch, alone.
	 */
	uint64_t pdone = skip > f->prefix_len ? skip - f->prefix_len : 0; /* payload out */

	if (from_user && plen > pdone && ferryi_tcp_zc_try(ep, plen - pdone)) {
		if (skip < f->prefix_len) {
			b->iov[b->niov].iov_base = (void *)(prefix + skip);
			b->iov[b->niov].iov_len = f->prefix_len - skip;
			b->bytes += f->prefix_len - skip;
			b->niov++;
			b->full = true;
			b->cork = true;
			b->nfr++;
			return true;
		}
		if (b->nfr > 0)
			return false;
		b->zc = true;
		b->full = true;
	}
	if (skip < f->prefix_len) {
		b->iov[b->niov].iov_base = (void *)(prefix + skip);
		b->iov[b->niov].iov_len = f->prefix_len - skip;
		b->bytes += f->prefix_len - skip;
		b->niov++;
		skip = 0;
	} else {
		skip -= f->prefix_len;
	}
	if (more)
		b->full = true; /* the next segment is prepared once this one is out */
	if (plen > skip) {
		room = b->bytes < FERRYI_TCP_IO_CHUNK ? FERRYI_TCP_IO_CHUNK - b->bytes : 0;
		uint64_t n = FERRYI_MIN(plen - skip, room);

		if (n > 0) {
			b->iov[b->niov].iov_base = (uint8_t *)payload + skip;
			b->iov[b->niov].iov_len = (size_t)n;
			b->bytes += n;
			b->niov++;
		}
		if (n < plen - skip)
			b->full = true;
	}
	b->nfr++;
	return true;
}

static void tcp_batch_build(struct ferry_ep *ep, struct tcp_batch *b)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_list_node *n, *tmp;

	b->nfr = b->niov = 0;
	b->bytes = 0;
	b->full = b->zc = b->cork = false;
	te->batch_gen++;
	if (te->cur_op)
		tcp_batch_add(ep, b, te->cur_op, NULL);
	else if (te->cur_ctl)
		tcp_batch_add(ep, b, NULL, te->cur_ctl);
	ferryi_list_foreach_safe(&te->txq_ctl, n, tmp)
	{
		if (!tcp_batch_add(ep, b, NULL,
				   ferryi_container_of(n, struct ferryi_tcp_ctl, link)))
			return;
	}
	if (te->hs != FERRYI_TCP_HS_DONE)
		return;
	uint64_t rma_batched = 0;

	ferryi_list_foreach_safe(&te->txq_ops, n, tmp)
	{
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);

		if (tcp_rma_held(ep, op, rma_batched))
			return;
		if (!tcp_batch_add(ep, b, op, NULL))
			return;
		if (op->prov[FERRYI_TCP_OP_KIND] != FERRYI_TCP_MSG)
			rma_batched += op->len;
	}
}

void ferryi_tcp_ctl_free(struct ferryi_tcp_ctl *ctl)
{
	if (ctl->has_use) {
		ctl->has_use = false;
		ferryi_mr_remote_put(&ctl->use);
	}
	free(ctl);
}

/*
 * Accounts n written bytes to the batch's frames in order. Finished sends go to
 * *done, finished write/read requests to te->wait, finished control frames to
 * *done_ctl; a frame written in part becomes cur_op/cur_ctl. Returns true when the
 * whole batch went out.
 */
static bool tcp_batch_consume(struct ferry_ep *ep, struct tcp_batch *b, uint64_t n,
			      struct ferryi_list *done, struct ferryi_list *done_ctl)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferry_stats *st = ferryi_stats(ep->pi);

	/* Payload bytes (bytes_sent) are counted by the core when an op completes. */
	st->wire_bytes_sent += n;
	for (int i = 0; i < b->nfr; i++) {
		struct tcp_frame *f = &b->fr[i];
		uint64_t rem = f->total - f->sent, adv = FERRYI_MIN(n, rem);

		n -= adv;

		if (adv == rem) {
			if (f->op) {
				struct ferryi_op *op = f->op;
				bool fin = !op->prov[FERRYI_TCP_OP_ZS + FERRYI_TCP_ZS_CTL] ||
					   ferryi_tcp_z_frame_done(ep, op, NULL);

				if (te->cur_op == op)
					te->cur_op = NULL;
				else
					ferryi_list_remove(&op->qlink);
				if (!fin) {
					/* A segment: the op stays first in line for the next one
					 * (the batch ends here), so its segments go together. */
					op->prov[FERRYI_TCP_OP_SENT] = 0;
					ferryi_list_push_front(&te->txq_ops, &op->qlink);
					continue;
				}
				op->prov[FERRYI_TCP_OP_SENT] = f->total;
				if (op->prov[FERRYI_TCP_OP_KIND] != FERRYI_TCP_MSG) {
					te->rma_out += op->len;
					op->prov[FERRYI_TCP_OP_STATE] = FERRYI_TCP_OPS_WAIT;
					ferryi_list_push_back(&te->wait, &op->qlink);
				} else if (ferryi_tcp_zc_pending(te, op->prov[FERRYI_TCP_OP_ZC])) {
					/* The kernel may still read the buffer: not done yet. */
					op->prov[FERRYI_TCP_OP_STATE] = FERRYI_TCP_OPS_ZC;
					op->prov[FERRYI_TCP_OP_DONE_ST] = 0;
					ferryi_list_push_back(&te->zc_ops, &op->qlink);
				} else {
					ferryi_list_push_back(done, &op->qlink);
				}
			} else {
				struct ferryi_tcp_ctl *ctl = f->ctl;
				bool fin = !ctl->zs[FERRYI_TCP_ZS_CTL] ||
					   ferryi_tcp_z_frame_done(ep, NULL, ctl);

				if (te->cur_ctl == ctl)
					te->cur_ctl = NULL;
				else
					ferryi_list_remove(&ctl->link);
				if (!fin) {
					ctl->sent = 0;
					ferryi_list_push_front(&te->txq_ctl, &ctl->link);
					continue;
				}
				te->nctl--;
				ferryi_list_push_back(done_ctl, &ctl->link);
			}
			continue;
		}
		/* Written in part (maybe not at all): this frame goes next, whole. */
		if (adv > 0) {
			if (f->op) {
				f->op->prov[FERRYI_TCP_OP_SENT] += adv;
				if (te->cur_op != f->op) {
					ferryi_list_remove(&f->op->qlink);
					te->cur_op = f->op;
				}
			} else {
				f->ctl->sent += adv;
				if (te->cur_ctl != f->ctl) {
					ferryi_list_remove(&f->ctl->link);
					te->cur_ctl = f->ctl;
				}
			}
		}
		return false;
	}
	return true;
}

/* A READ_RESP sent: give its region back, unless the kernel may still read it. */
static void tcp_ctl_sent(struct ferry_ep *ep, struct ferryi_tcp_ctl *ctl)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	if (ctl->has_use && !ctl->use.mr->internal && ferryi_tcp_zc_pending(te, ctl->zc))
		ferryi_list_push_back(&te->zc_ctls, &ctl->link);
	else
		ferryi_tcp_ctl_free(ctl);
}

/*
 * One sendmsg(): 1 = everything described went out (the writer may go on), 0 = the
 * socket took less (wait for EPOLLOUT), -1 = failed. *wrote accumulates the bytes
 * written.
 */
static int tcp_tx_once(struct ferry_ep *ep, uint64_t *wrote)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct tcp_batch b;
	struct ferryi_list done, done_ctl;
	struct ferryi_list_node *node;
	struct msghdr mh;
	ssize_t n;
	int flags = MSG_DONTWAIT | MSG_NOSIGNAL;

	tcp_batch_build(ep, &b);
	if (b.nfr == 0)
		return 1;
	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = b.iov;
	mh.msg_iovlen = (size_t)b.niov;
	if (b.zc)
		flags |= MSG_ZEROCOPY;
	if (b.cork)
		flags |= MSG_MORE;
	/*
	 * A small batch goes out gathered into one buffer, with send(): the kernel takes
	 * a single buffer for less than a msghdr and its iovec array, and copies either
	 * way. A ping-pong message is one header and a few payload bytes.
	 */
	uint8_t small[FERRYI_TCP_SMALL_SEND];

	if (b.niov > 1 && b.bytes <= sizeof(small) && !b.zc) {
		size_t off = 0;

		for (int i = 0; i < b.niov; i++) {
			memcpy(small + off, b.iov[i].iov_base, b.iov[i].iov_len);
			off += b.iov[i].iov_len;
		}
		b.iov[0].iov_base = small;
		b.iov[0].iov_len = off;
		mh.msg_iovlen = 1;
	}
	for (;;) {
		if (b.niov == 0)
			n = 0;
		else if (mh.msg_iovlen == 1)
			n = send(te->fd, mh.msg_iov[0].iov_base, mh.msg_iov[0].iov_len, flags);
		else
			n = sendmsg(te->fd, &mh, flags);
		if (n >= 0)
			break;
		if (errno == EINTR)
			continue;
		if (errno == ENOBUFS && (flags & MSG_ZEROCOPY)) {
			/* Out of optmem or of locked memory for pinning (RLIMIT_MEMLOCK): this
			 * call copies, and so do later ones, rather than fail each time. */
			flags &= ~MSG_ZEROCOPY;
			ferryi_tcp_inst(ep)->zc_fallbacks++;
			te->zc = -1;
			te->zc_min = UINT64_MAX;
			FERRYI_DBG(ep->ctx, "tcp: %s: MSG_ZEROCOPY refused (ENOBUFS): copying",
				   ep->peer);
			continue;
		}
		break;
	}
	if (te->zauto && n >= 0 && (uint64_t)n < b.bytes)
		ferryi_tcp_z_tx_full(ep);
	if (n > 0 && (flags & MSG_ZEROCOPY)) {
		uint64_t id = ferryi_tcp_zc_sent(ep);

		if (b.fr[0].op)
			b.fr[0].op->prov[FERRYI_TCP_OP_ZC] = id;
		else
			b.fr[0].ctl->zc = id;
	}
	if (n < 0) {
		int err = errno;

		if (err == EAGAIN || err == EWOULDBLOCK)
			return 0;
		ferryi_tcp_fail(ep, ferryi_tcp_errno(err), "send failed: %s", strerror(err));
		return -1;
	}

	/*
	 * The socket was full and took bytes now: the peer read what we sent, so it is
	 * alive. While one huge frame goes out, nothing else (not the answer to a probe)
	 * can reach us, and without this the core would declare the peer dead.
	 */
	if (n > 0 && te->want_out)
		ferryi_ep_rx_activity(ep);
	if (n > 0)
		te->told_ns = ferryi_coarse_now_ns(ep->ctx);
	*wrote += (uint64_t)n;
	ferryi_list_init(&done);
	ferryi_list_init(&done_ctl);
	tcp_batch_consume(ep, &b, (uint64_t)n, &done, &done_ctl);

	/* Upcalls last: the queues are consistent again, re-entry is safe. */
	while ((node = ferryi_list_pop_front(&done_ctl)) != NULL)
		tcp_ctl_sent(ep, ferryi_container_of(node, struct ferryi_tcp_ctl, link));
	while ((node = ferryi_list_pop_front(&done)) != NULL) {
		ferryi_op_done(ferryi_container_of(node, struct ferryi_op, qlink), 0);
	}
	/* A batch cut short on purpose (a segment, a zero-copy payload, a frame above
	 * FERRYI_TCP_IO_CHUNK) that went out whole lets the writer go on at once. */
	return (uint64_t)n == b.bytes ? 1 : 0;
}

void ferryi_tcp_flush(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	if (te->closed || te->fd < 0 || te->io_error || te->hs == FERRYI_TCP_HS_CONNECTING)
		return;
	if (te->flushing) {
		te->flush_again = true; /* the outer flush loops once more */
		return;
	}
	if (ferryi_node_linked(&te->cork_link))
		ferryi_list_remove(&te->cork_link); /* written now, with the rest */
	te->flushing = true;
	for (uint64_t wrote = 0;;) {
		int rc;

		te->flush_again = false;
		if (!tcp_tx_pending(ep)) {
			te->want_out = false;
			te->zbl_t0 = 0; /* nothing left to send: the socket is no bottleneck */
			break;
		}
		/* Yield after the budget; EPOLLOUT (level-triggered) brings us back. */
		if (wrote >= FERRYI_TCP_TX_BUDGET) {
			te->want_out = true;
			break;
		}
		rc = tcp_tx_once(ep, &wrote);
		/* Compressing costs like writing: it counts against the budget too. */
		wrote += te->tx_zcharge;
		te->tx_zcharge = 0;
		if (rc < 0 || te->closed)
			break;
		if (rc == 0) {
			te->want_out = true;
			break;
		}
	}
	te->flushing = false;
	if (!te->closed && !te->closing)
		ferryi_tcp_set_events(ep);
}

struct ferryi_tcp_ctl *ferryi_tcp_ctl_new(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_ctl *ctl;

	if (te->nctl >= FERRYI_TCP_CTL_MAX) {
		ferryi_tcp_fail(ep, FERRY_ENOBUFS,
				"%u control frames queued: the peer does not read",
				te->nctl);
		return NULL;
	}
	ctl = calloc(1, sizeof(*ctl));
	if (!ctl) {
		ferryi_tcp_fail(ep, FERRY_ENOMEM, "out of memory for a control frame");
		return NULL;
	}
	return ctl;
}

void ferryi_tcp_ctl_push(struct ferry_ep *ep, struct ferryi_tcp_ctl *ctl,
			 const struct ferryi_tcp_hdr *h, const struct ferryi_tcp_ext *e)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	ctl->prefix_len = ferryi_tcp_encode(ctl->prefix, h, e);
	ferryi_list_push_back(&te->txq_ctl, &ctl->link);
	te->nctl++;
}

int ferryi_tcp_ctl_queue(struct ferry_ep *ep, const struct ferryi_tcp_hdr *h,
			 const struct ferryi_tcp_ext *e)
{
	struct ferryi_tcp_ctl *ctl = ferryi_tcp_ctl_new(ep);

	if (!ctl)
		return FERRY_ENOBUFS;
	ferryi_tcp_ctl_push(ep, ctl, h, e);
	return 0;
}

/* An op enters the transmit queue; written at once when nothing is ahead of it. */
void ferryi_tcp_tx_post(struct ferry_ep *ep, struct ferryi_op *op, unsigned kind)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	op->prov[FERRYI_TCP_OP_KIND] = kind;
	op->prov[FERRYI_TCP_OP_STATE] = FERRYI_TCP_OPS_QUEUED;
	op->prov[FERRYI_TCP_OP_SENT] = 0;
	ferryi_list_push_back(&te->txq_ops, &op->qlink);
	if (te->hs != FERRYI_TCP_HS_DONE || te->want_out)
		return; /* the handshake or EPOLLOUT will write it */
	if (op->flags & FERRY_OP_MORE) {
		if (!ferryi_node_linked(&te->cork_link)) {
			ferryi_list_push_back(&ferryi_tcp_inst(ep)->corked, &te->cork_link);
			ferryi_ctx_want_progress(ep->ctx);
		}
		return;
	}
	ferryi_tcp_enter(ep);
	ferryi_tcp_flush(ep);
	ferryi_tcp_leave(ep);
}

int ferryi_tcp_uncork_all(struct ferryi_prov_inst *pi)
{
	struct ferryi_tcp_inst *ti = ferryi_inst_priv(pi);
	struct ferryi_list_node *n;
	int events = 0;

	while ((n = ferryi_list_first(&ti->corked))) {
		struct ferryi_tcp_ep *te = ferryi_container_of(n, struct ferryi_tcp_ep, cork_link);
		struct ferry_ep *ep = ferryi_tcp_ep_of(te);

		ferryi_list_remove(n); /* flush unlinks it too; both are harmless */
		ferryi_tcp_enter(ep);
		ferryi_tcp_flush(ep);
		ferryi_tcp_leave(ep);
		events++;
	}
	return events;
}

/*
 * A probe or its answer goes as a control frame, ahead of the ops queued (sends, a
 * one-sided op waiting for the window): it carries nothing that other messages must
 * follow, and a peer that waits for it longer than its probe window declares us dead.
 * It completes once queued; a write that fails later fails the endpoint.
 */
static int tcp_send_liveness(struct ferry_ep *ep, struct ferryi_op *op)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_MSG,
				   .flags = ferryi_tcp_msg_flags(&op->msg),
				   .tag = op->msg.tag,
				   .aux = op->msg.aux};
	struct ferryi_tcp_ext e;
	int rc;

	memset(&e, 0, sizeof(e));
	ferryi_tcp_enter(ep);
	rc = ferryi_tcp_ctl_queue(ep, &h, &e);
	if (rc == 0) {
		ferryi_op_done(op, 0);
		if (te->hs == FERRYI_TCP_HS_DONE && !te->want_out)
			ferryi_tcp_flush(ep);
	}
	ferryi_tcp_leave(ep);
	return rc;
}

int ferryi_tcp_send(struct ferry_ep *ep, struct ferryi_op *op)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	if (!te->inited || te->closed || te->closing || te->io_error)
		return FERRY_ENOTCONN;
	if (op->len == 0 &&
	    (op->msg.type == FERRYI_MSG_PROBE || op->msg.type == FERRYI_MSG_PROBE_ACK))
		return tcp_send_liveness(ep, op);
	if (te->hs == FERRYI_TCP_HS_DONE && op->len > ferryi_tcp_msg_limit(te->peer.eager_max))
		return FERRY_EMSGSIZE;
	if (op->msg.type == FERRYI_MSG_EAGER && op->len <= FERRYI_TCP_ZSEG &&
	    ferryi_tcp_z_maybe(te, op->flags, op->len)) {
		/* A user message may go compressed, in one segment. */
		op->prov[FERRYI_TCP_OP_ZS + FERRYI_TCP_ZS_CTL] =
			ferryi_tcp_z_mode(ep, op->flags, op->len);
	} else if (op->msg.type == FERRYI_MSG_RTS && op->rndv_mr) {
		/*
		 * The rendezvous: the peer reads op->buf's region with READ_REQ, and our
		 * READ_RESP carries the bytes. The send's compression flags travel with the
		 * region, so that answer is compressed as the send asked (the core's read
		 * op carries no user flags; the side that sends the bytes decides).
		 */
		struct ferryi_tcp_mr *tm = ferryi_mr_priv(op->rndv_mr, ep->pi);

		tm->zflags = op->flags & (FERRY_OP_COMPRESS | FERRY_OP_NO_COMPRESS);
	}
	ferryi_tcp_tx_post(ep, op, FERRYI_TCP_MSG);
	return 0;
}

/*
 * The handshake finished: ops posted meanwhile that exceed what the peer accepts fail
 * now, with FERRY_EMSGSIZE, rather than make the peer drop the connection.
 */
void ferryi_tcp_hs_done(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_list bad;
	struct ferryi_list_node *n, *tmp;

	te->hs = FERRYI_TCP_HS_DONE;
	te->told_ns = ferryi_coarse_now_ns(ep->ctx); /* our half of the handshake */
	te->rma_window = ferryi_tcp_path_setup(ep);
	if (ferryi_timer_armed(&te->hs_timer))
		ferryi_timer_cancel(ep->ctx, &te->hs_timer);
	ferryi_list_init(&bad);
	ferryi_list_foreach_safe(&te->txq_ops, n, tmp)
	{
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);
		uint64_t limit = op->prov[FERRYI_TCP_OP_KIND] == FERRYI_TCP_MSG
					 ? ferryi_tcp_msg_limit(te->peer.eager_max)
					 : te->peer.max_frame;

		if (op->len > limit) {
			ferryi_list_remove(&op->qlink);
			ferryi_list_push_back(&bad, &op->qlink);
		}
	}
	while ((n = ferryi_list_pop_front(&bad)) != NULL)
		ferryi_op_done(ferryi_container_of(n, struct ferryi_op, qlink), FERRY_EMSGSIZE);
}

/* ------------------------------------------------------------------ receive */

void ferryi_tcp_rx_payload(struct ferry_ep *ep, uint8_t kind, void *dst, uint64_t len)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	te->rx_state = FERRYI_TCP_RX_PAYLOAD;
	te->rx_kind = kind;
	if (te->rz_on) {
		ferryi_tcp_z_rx_payload(ep, dst, len); /* len is the raw length */
		return;
	}
	te->rx_dst = dst;
	te->rx_left = len;
	te->rx_total = len;
}

static void tcp_rx_payload_end(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	int zerr = te->rz_on ? te->zrx.err : 0;

	te->rx_state = FERRYI_TCP_RX_HDR;
	te->rz_on = false;
	if (zerr && (te->rx_kind != FERRYI_TCP_MSG || te->rx.recv)) {
		/* Malformed input from the peer, refused with its operation only. */
		ferryi_stats(ep->pi)->protocol_errors++;
		FERRYI_WARN(ep->ctx, "tcp: %s: compressed %s payload refused: %s", ep->peer,
			    ferryi_tcp_type_name(te->rx_kind), te->zrx.why);
	}
	switch (te->rx_kind) {
	case FERRYI_TCP_MSG:
		if (zerr && !te->rx.recv) {
			/* Bound for the unexpected queue, which has no op to fail: the
			 * endpoint goes (ep_close ends the message as broken). */
			ferryi_tcp_fail_notify(ep, zerr, "undecodable compressed message: %s",
					       te->zrx.why);
			break;
		}
		if (zerr)
			te->rx.status = zerr; /* the matched receive fails */
		te->rx_msg_active = false;
		ferryi_rx_end(ep, &te->rx, 0);
		break;
	case FERRYI_TCP_WRITE:
		ferryi_tcp_write_rx_done(ep, zerr);
		break;
	case FERRYI_TCP_READ_RESP:
		ferryi_tcp_read_rx_done(ep, zerr);
		break;
	default:
		break;
	}
}

static void tcp_rx_msg(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_msg m;
	int rc;

	ferryi_tcp_msg_from_hdr(&te->rh, &m);
	m.flags &= (uint8_t)~FERRYI_MSGF_COMPRESSED; /* decoded here: the core sees raw */
	rc = ferryi_rx_begin(ep, &m, te->rx_raw, &te->rx);
	if (te->closed)
		return;
	if (rc < 0) {
		/* The core logged and counted the reason already. */
		ferryi_tcp_fail(ep, rc, "message type %u (%llu bytes) refused", m.type,
				(unsigned long long)te->rx_raw);
		return;
	}
	te->rx_msg_active = true;
	ferryi_tcp_rx_payload(ep, FERRYI_TCP_MSG, te->rx.dst, te->rx_raw);
}

static void tcp_rx_dispatch(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	unsigned type = te->rh.type;

	switch (type) {
	case FERRYI_TCP_HELLO:
		if (te->hs != FERRYI_TCP_HS_WAIT_HELLO) {
			ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
					      "unexpected HELLO (handshake state %u)", te->hs);
			return;
		}
		ferryi_tcp_on_hello(ep);
		return;
	case FERRYI_TCP_HELLO_ACK:
		if (te->hs != FERRYI_TCP_HS_HELLO_SENT) {
			ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
					      "unexpected HELLO_ACK (handshake state %u)",
					      te->hs);
			return;
		}
		ferryi_tcp_on_hello_ack(ep);
		return;
	case FERRYI_TCP_ERROR:
		ferryi_tcp_fail(ep, te->rext.status, "the peer closed the connection: %s (%s)",
				ferry_strerror(te->rext.status),
				ferry_errname(te->rext.status));
		return;
	default:
		break;
	}
	if (te->hs != FERRYI_TCP_HS_DONE) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
				      "%s frame before the handshake finished",
				      ferryi_tcp_type_name(type));
		return;
	}
	if (ferryi_tcp_hdr_zstd(&te->rh)) {
		ferryi_tcp_z_rx_begin(ep); /* the prelude first, then ferryi_tcp_rx_body */
		return;
	}
	te->rx_raw = te->rh.len;
	ferryi_tcp_rx_body(ep);
}

/* Dispatches a frame whose raw payload length is te->rx_raw. */
void ferryi_tcp_rx_body(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	unsigned type = te->rh.type;

	switch (type) {
	case FERRYI_TCP_MSG:
		tcp_rx_msg(ep);
		break;
	case FERRYI_TCP_WRITE:
		ferryi_tcp_on_write(ep);
		break;
	case FERRYI_TCP_WRITE_ACK:
		ferryi_tcp_on_write_ack(ep);
		break;
	case FERRYI_TCP_READ_REQ:
		ferryi_tcp_on_read_req(ep);
		break;
	case FERRYI_TCP_READ_RESP:
		ferryi_tcp_on_read_resp(ep);
		break;
	default: /* the decoder refuses unknown types; keep the compiler honest */
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO, "unknown frame type %u", type);
		break;
	}
}

static void tcp_rx_eof(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	if (te->hs != FERRYI_TCP_HS_DONE)
		ferryi_tcp_fail(ep, FERRY_ECONNRESET,
				"the peer closed the connection during the handshake "
				"(%llu bytes received)",
				(unsigned long long)te->hs_bytes);
	else if (te->rx_state == FERRYI_TCP_RX_PAYLOAD)
		ferryi_tcp_fail(ep, FERRY_ECONNRESET,
				"the peer closed the connection inside a %s frame "
				"(%llu of %llu payload bytes missing)",
				ferryi_tcp_type_name(te->rx_kind),
				(unsigned long long)te->rx_left,
				(unsigned long long)te->rx_total);
	else if (te->re > te->rs)
		ferryi_tcp_fail(ep, FERRY_ECONNRESET,
				"the peer closed the connection after a truncated header "
				"(%zu bytes)",
				te->re - te->rs);
	else
		ferryi_tcp_fail(ep, FERRY_ECONNRESET, "the peer closed the connection");
}

/*
 * One receive call. With a payload destination and an empty stage, reads straight
 * into the destination, at most budget bytes; the stage takes what follows the
 * payload only when the call may reach its end (else payload bytes would land in the
 * stage and be copied out again). Returns the bytes read, 0 on EAGAIN, -1 when the
 * endpoint failed. *asked is the space offered.
 *
 * The budget bounds each call, not only the pass: a socket whose buffer has grown to
 * tens of MiB would otherwise hand them over in one call, the window the peer waits
 * for opening only when the call returns (seen: 32 MiB in one call taking 600 ms
 * under ThreadSanitizer, and a sender declaring its busy reader dead meanwhile).
 */
static ssize_t tcp_rx_read(struct ferry_ep *ep, uint64_t budget, uint64_t *asked)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct iovec iov[2];
	struct msghdr mh;
	int niov = 0;
	ssize_t n;

	if (te->rs > 0) {
		memmove(te->stage, te->stage + te->rs, te->re - te->rs);
		te->re -= te->rs;
		te->rs = 0;
	}
	uint64_t direct = 0;

	if (te->rx_state == FERRYI_TCP_RX_PAYLOAD && te->rx_dst && te->re == 0) {
		direct = FERRYI_MIN(te->rx_left, budget);
		iov[niov].iov_base = te->rx_dst;
		iov[niov].iov_len = (size_t)direct;
		niov++;
	}
	*asked = direct;
	if (direct == te->rx_left || niov == 0) {
		iov[niov].iov_base = te->stage + te->re;
		iov[niov].iov_len = FERRYI_TCP_STAGE_SIZE - te->re;
		niov++;
		*asked += FERRYI_TCP_STAGE_SIZE - te->re;
	}

	memset(&mh, 0, sizeof(mh));
	mh.msg_iov = iov;
	mh.msg_iovlen = (size_t)niov;
	/* recv() when one buffer will do: busy passes call this on an empty socket, and
	 * the kernel takes a single buffer for less than a msghdr and its iovec array. */
	do {
		n = niov == 1 ? recv(te->fd, iov[0].iov_base, iov[0].iov_len, MSG_DONTWAIT)
			      : recvmsg(te->fd, &mh, MSG_DONTWAIT);
	} while (n < 0 && errno == EINTR);
	if (n == 0) {
		tcp_rx_eof(ep);
		return -1;
	}
	if (n < 0) {
		int err = errno;

		if (err == EAGAIN || err == EWOULDBLOCK)
			return 0;
		ferryi_tcp_fail(ep, ferryi_tcp_errno(err), "receive failed: %s", strerror(err));
		return -1;
	}

	ferryi_stats(ep->pi)->wire_bytes_received += (uint64_t)n;
	if (te->hs != FERRYI_TCP_HS_DONE)
		te->hs_bytes += (uint64_t)n;
	if ((uint64_t)n <= direct) {
		te->rx_dst += n;
		te->rx_left -= (uint64_t)n;
	} else {
		if (direct) {
			te->rx_dst += direct;
			te->rx_left -= direct;
		}
		te->re += (size_t)((uint64_t)n - direct);
	}
	return n;
}

/* Decodes the next header (+ extension) from the stage: 1 = dispatched, 0 = need
 * more bytes, -1 = failed. */
static int tcp_rx_frame(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	size_t have = te->re - te->rs;
	char why[200];
	uint32_t need;
	int rc;

	if (have < FERRYI_TCP_HDR_LEN)
		return 0;
	if (!te->rx_hdr_ok) {
		rc = ferryi_tcp_hdr_decode(te->stage + te->rs, &te->lim, &te->rh, why,
					   sizeof(why));
		if (rc < 0) {
			ferryi_tcp_proto_fail(ep, rc, "bad frame header: %s", why);
			return -1;
		}
		te->rx_hdr_ok = true;
	}
	need = FERRYI_TCP_HDR_LEN + ferryi_tcp_ext_len(te->rh.type);
	if (have < need)
		return 0;
	rc = ferryi_tcp_ext_decode(te->rh.type, te->stage + te->rs + FERRYI_TCP_HDR_LEN,
				   &te->lim, &te->rext, why, sizeof(why));
	if (rc < 0) {
		ferryi_tcp_proto_fail(ep, rc, "bad %s frame: %s",
				      ferryi_tcp_type_name(te->rh.type), why);
		return -1;
	}
	te->rs += need;
	te->rx_hdr_ok = false;
	tcp_rx_dispatch(ep);
	return 1;
}

static void tcp_rx_run(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	uint64_t budget = FERRYI_TCP_RX_BUDGET;
	bool drained = false, activity = false;

	if (!tcp_stage_take(ep)) {
		ferryi_tcp_fail(ep, FERRY_ENOMEM, "out of memory for the receive buffer");
		return;
	}
	/* Stop as soon as the core began closing (a GOODBYE, a failure upcall). */
	while (!te->closed && !te->io_error && ep->state != FERRYI_EP_CLOSED) {
		if (te->rx_state == FERRYI_TCP_RX_PAYLOAD) {
			size_t have = te->re - te->rs;

			if (have > 0 && te->rx_left > 0) {
				size_t n = (size_t)FERRYI_MIN((uint64_t)have, te->rx_left);

				if (te->rx_dst) {
					memcpy(te->rx_dst, te->stage + te->rs, n);
					te->rx_dst += n;
				}
				te->rs += n;
				te->rx_left -= n;
			}
			if (te->rx_left == 0) {
				/* Compressed: a piece is done; maybe not the payload yet. */
				if (!te->rz_on || ferryi_tcp_z_rx_piece(ep))
					tcp_rx_payload_end(ep);
				budget -= FERRYI_MIN(budget, te->rx_zcharge);
				te->rx_zcharge = 0;
				continue;
			}
		} else {
			int rc = tcp_rx_frame(ep);

			if (rc < 0)
				break;
			if (rc > 0)
				continue;
		}
		/* Need more bytes from the socket. */
		if (drained || budget == 0)
			break;
		uint64_t asked = 0;
		ssize_t n = tcp_rx_read(ep, budget, &asked);

		if (n <= 0)
			break;
		if (!activity) {
			activity = true;
			ferryi_ep_rx_activity(ep);
		}
		budget -= FERRYI_MIN(budget, (uint64_t)n);
		/* A short read means the socket is empty: epoll tells when more arrives. */
		if ((uint64_t)n < asked)
			drained = true;
	}
	tcp_stage_give(ep);
	/* After the loop: the beat may write, and a write may fail the endpoint. */
	if (activity && !te->closed && !te->io_error && ep->state == FERRYI_EP_CONNECTED &&
	    ferryi_ep_beat_due(ep, te->told_ns)) {
		te->told_ns = ferryi_coarse_now_ns(ep->ctx); /* once, even if it queues */
		ferryi_ep_beat(ep);
	}
}

void ferryi_tcp_poll_fn(struct ferryi_poll_handle *h, uint32_t events)
{
	struct ferryi_tcp_ep *te = ferryi_container_of(h, struct ferryi_tcp_ep, ph);
	struct ferry_ep *ep = ferryi_tcp_ep_of(te);

	ferryi_tcp_enter(ep);
	/* After a failure the socket stays in epoll until the core's ep_close. */
	if (te->closed || te->closing || te->io_error)
		goto out;
	if (te->hs == FERRYI_TCP_HS_CONNECTING) {
		ferryi_tcp_connect_done(ep);
		goto out;
	}
	/* Zero-copy notifications raise EPOLLERR; take them before any input. */
	if ((events & EPOLLERR) && te->zc_used)
		ferryi_tcp_zc_reap(ep);
	if (!te->closed && (events & (EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLRDHUP)))
		tcp_rx_run(ep);
	/* Writable, or the receive side queued acknowledgements: write them now. */
	if (!te->closed && ((events & EPOLLOUT) || !te->want_out))
		ferryi_tcp_flush(ep);
out:
	ferryi_tcp_leave(ep);
}

/* ------------------------------------------------------------------ close */

static void tcp_drain_input(int fd)
{
	char buf[4096];

	/* Unread input makes close() send a reset that may discard what we sent. */
	for (int i = 0; i < 256; i++) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n <= 0 && !(n < 0 && errno == EINTR))
			break;
	}
}

void ferryi_tcp_ep_close(struct ferry_ep *ep, int reason, int graceful)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_list ops;
	struct ferryi_list_node *n;

	if (!te->inited) {
		ferryi_ep_gone(ep);
		return;
	}
	if (te->closed || te->closing)
		return;
	if (reason >= 0)
		reason = FERRY_ECANCELED;
	te->closing = true;
	te->depth++;

	if (graceful && te->hs == FERRYI_TCP_HS_DONE && !te->io_error && !te->flushing &&
	    te->fd >= 0)
		ferryi_tcp_flush(ep); /* best effort, never blocks */
	else if (!te->io_error && te->fd >= 0 && !te->cur_op && !te->cur_ctl &&
		 (te->hs == FERRYI_TCP_HS_WAIT_HELLO || te->hs == FERRYI_TCP_HS_HELLO_SENT))
		/* Refused mid-handshake (draining, limits, deadline): tell the peer why.
		 * After the handshake the core's GOODBYE does that. */
		ferryi_tcp_send_error_now(te->fd, reason);
	te->closed = true;

	if (ferryi_timer_armed(&te->hs_timer))
		ferryi_timer_cancel(ep->ctx, &te->hs_timer);
	if (te->polled) {
		ferryi_poll_del(ep->ctx, &te->ph);
		te->polled = false;
	}
	if (te->fd >= 0) {
		if (te->zc_next != te->zc_done) {
			/*
			 * Zero-copy sends still queued in the kernel read the user's pages, and
			 * their ops complete below with the close reason: the user may reuse
			 * those buffers at once. An abortive close (RST) drops the queued data
			 * and releases the pages now, so the peer can never receive a frame
			 * built from reused memory as a success.
			 */
			struct linger lg = { .l_onoff = 1, .l_linger = 0 };
			(void)setsockopt(te->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
		} else if (graceful && !te->io_error) {
			shutdown(te->fd, SHUT_WR);
			tcp_drain_input(te->fd);
		}
		close(te->fd);
		te->fd = -1;
	}

	/* Receive side: hand back what the frame in progress held. */
	if (te->rx_use_held) {
		te->rx_use_held = false;
		ferryi_mr_remote_put(&te->rx_use);
	}
	te->rx_op = NULL;
	if (te->rx_msg_active) {
		te->rx_msg_active = false;
		ferryi_rx_end(ep, &te->rx, reason);
	}

	/* Control frames: release held regions. */
	if (te->cur_ctl) {
		ferryi_tcp_ctl_free(te->cur_ctl);
		te->cur_ctl = NULL;
	}
	while ((n = ferryi_list_pop_front(&te->txq_ctl)) != NULL)
		ferryi_tcp_ctl_free(ferryi_container_of(n, struct ferryi_tcp_ctl, link));
	/* The socket is closed: no notification comes any more. The pages stay the
	 * kernel's (referenced) until it lets go; the region is given back now. */
	while ((n = ferryi_list_pop_front(&te->zc_ctls)) != NULL)
		ferryi_tcp_ctl_free(ferryi_container_of(n, struct ferryi_tcp_ctl, link));
	te->nctl = 0;
	te->ztx_zs = NULL;
	te->ztx_sent = NULL;
	te->rz_on = false;
	te->wseg = false;

	/* Every op still owned completes once, with the reason. */
	ferryi_list_init(&ops);
	if (te->cur_op) {
		ferryi_list_push_back(&ops, &te->cur_op->qlink);
		te->cur_op = NULL;
	}
	while ((n = ferryi_list_pop_front(&te->txq_ops)) != NULL)
		ferryi_list_push_back(&ops, n);
	while ((n = ferryi_list_pop_front(&te->wait)) != NULL)
		ferryi_list_push_back(&ops, n);
	te->rma_out = 0;
	while ((n = ferryi_list_pop_front(&te->zc_ops)) != NULL)
		ferryi_list_push_back(&ops, n);
	while ((n = ferryi_list_pop_front(&ops)) != NULL)
		ferryi_op_done(ferryi_container_of(n, struct ferryi_op, qlink), reason);

	if (--te->depth == 0)
		tcp_finish(ep);
	else
		te->gone_pending = true;
}
