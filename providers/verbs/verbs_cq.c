/*
 * verbs_cq.c - completion queues: a small pool of shared CQs per device, batched
 * polling, the completion channel behind the context fd, and the translation of
 * ibv_wc_status into ferry errors.
 *
 * Sharing. QPs of one device share CQs: progress() then polls a handful of CQs, not one
 * per endpoint. Each QP reserves sq_depth + rx_depth + 2 entries on the CQ it is given
 * (every WR may come back flushed, plus one drain WR per queue), so a CQ can never
 * overrun; when no CQ has room a new one is created (up to the device's max_cqe each).
 *
 * Notification. The channel fd is in the context's epoll, so a thread sleeping in
 * ferry_cq_wait() or in the user's own epoll on ferry_ctx_fd() wakes when a completion
 * arrives on an armed CQ (ibv_req_notify_cq). Arming costs a system call and every
 * event kernel work plus two more (get, re-arm): under soft-RoCE that tripled the
 * latency of a busy-polled ping-pong. So CQs are armed only when somebody may sleep:
 * by prepare_sleep (a ferry thread about to sleep), and on every pass while the
 * application holds the context fd (it may sleep on it at any time). An event leaves
 * its CQ disarmed unless the fd is exported. Arming is always followed by a poll, so
 * a completion that landed before it is polled now rather than lost. Events are
 * acknowledged in batches (ibv_ack_cq_events takes a mutex), and all of them before
 * the CQ is destroyed.
 *
 * Status mapping (work-request completions -> ferry):
 *   IBV_WC_SUCCESS              0
 *   IBV_WC_WR_FLUSH_ERR         the endpoint's close reason (QP in error: the WR never ran)
 *   IBV_WC_REM_ACCESS_ERR       FERRY_EBADKEY  the peer's NIC refused the rkey. Access
 *                               flags and bounds are checked before posting (EACCES and
 *                               ERANGE never reach the wire), so a NIC refusal means the
 *                               key names no valid region any more: deregistered
 *                               (stale) or forged. RC semantics: the QP is now in error
 *                               and the endpoint fails with the same code.
 *   IBV_WC_REM_INV_REQ_ERR      FERRY_EPROTO   peer refused the request (e.g. too long)
 *   IBV_WC_REM_OP_ERR           FERRY_EIO      peer could not complete it
 *   IBV_WC_LOC_LEN_ERR          FERRY_EPROTO   message longer than our receive buffer
 *   IBV_WC_LOC_PROT_ERR         FERRY_EFAULT   local lkey/protection problem
 *   IBV_WC_LOC_ACCESS_ERR       FERRY_EFAULT
 *   IBV_WC_RETRY_EXC_ERR        FERRY_ETIMEDOUT transport retries exhausted: peer gone
 *   IBV_WC_RESP_TIMEOUT_ERR     FERRY_ETIMEDOUT
 *   IBV_WC_RNR_RETRY_EXC_ERR    FERRY_ENOBUFS  peer had no receive buffer
 *   IBV_WC_BAD_RESP_ERR         FERRY_EPROTO
 *   IBV_WC_REM_ABORT_ERR        FERRY_ECONNABORTED
 *   anything else               FERRY_EIO
 */
#include "verbs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#define CQ_POLL_BATCH 32
#define CQ_POLL_ROUNDS 8   /* at most 256 completions per CQ per call: stay fair */
#define CQ_ACK_BATCH 64

int ferryi_verbs_wc_status(enum ibv_wc_status st)
{
	switch (st) {
	case IBV_WC_SUCCESS: return 0;
	case IBV_WC_WR_FLUSH_ERR: return FERRY_ECANCELED;
	case IBV_WC_REM_ACCESS_ERR: return FERRY_EBADKEY;
	case IBV_WC_REM_INV_REQ_ERR: return FERRY_EPROTO;
	case IBV_WC_REM_OP_ERR: return FERRY_EIO;
	case IBV_WC_LOC_LEN_ERR: return FERRY_EPROTO;
	case IBV_WC_LOC_PROT_ERR: return FERRY_EFAULT;
	case IBV_WC_LOC_ACCESS_ERR: return FERRY_EFAULT;
	case IBV_WC_RETRY_EXC_ERR: return FERRY_ETIMEDOUT;
	case IBV_WC_RESP_TIMEOUT_ERR: return FERRY_ETIMEDOUT;
	case IBV_WC_RNR_RETRY_EXC_ERR: return FERRY_ENOBUFS;
	case IBV_WC_BAD_RESP_ERR: return FERRY_EPROTO;
	case IBV_WC_REM_ABORT_ERR: return FERRY_ECONNABORTED;
	default: return FERRY_EIO;
	}
}

static void cq_ack(struct ferryi_verbs_cq *vcq)
{
	if (vcq->unacked) {
		ibv_ack_cq_events(vcq->cq, vcq->unacked);
		vcq->unacked = 0;
	}
}

/* Arms the CQs of dev that are not armed; the caller polls them afterwards. */
static void dev_arm(struct ferryi_verbs_dev *dev)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&dev->cqs, n, t) {
		struct ferryi_verbs_cq *vcq = ferryi_container_of(n, struct ferryi_verbs_cq, link);
		if (vcq->armed)
			continue;
		if (ibv_req_notify_cq(vcq->cq, 0)) {
			FERRYI_WARN(dev->vi->pi->ctx, "verbs: %s: ibv_req_notify_cq failed",
				    dev->name);
			continue;
		}
		vcq->armed = true;
	}
}

static void dev_chan_fn(struct ferryi_poll_handle *h, uint32_t events)
{
	struct ferryi_verbs_dev *dev = ferryi_container_of(h, struct ferryi_verbs_dev, ph);
	struct ibv_cq *cq;
	void *cq_ctx;
	struct ferryi_list_node *n, *t;
	(void)events;

	/* Non-blocking channel: EAGAIN ends the loop. */
	while (ibv_get_cq_event(dev->ch, &cq, &cq_ctx) == 0) {
		struct ferryi_verbs_cq *vcq = cq_ctx;
		if (++vcq->unacked >= CQ_ACK_BATCH)
			cq_ack(vcq);
		vcq->armed = false;
	}
	if (ferryi_ctx_fd_exported(dev->vi->pi->ctx))
		dev_arm(dev);
	ferryi_list_foreach_safe(&dev->cqs, n, t)
		ferryi_verbs_cq_poll(ferryi_container_of(n, struct ferryi_verbs_cq, link));
}

int ferryi_verbs_cq_arm_all(struct ferryi_prov_inst *pi)
{
	struct ferryi_verbs_inst *vi = ferryi_verbs_inst(pi);
	int n = 0;

	for (int i = 0; i < vi->ndev; i++) {
		struct ferryi_verbs_dev *dev = &vi->devs[i];
		struct ferryi_list_node *node, *tmp;
		if (!dev->usable || !dev->ch)
			continue;
		dev_arm(dev);
		ferryi_list_foreach_safe(&dev->cqs, node, tmp)
			n += ferryi_verbs_cq_poll(
				ferryi_container_of(node, struct ferryi_verbs_cq, link));
	}
	return n;
}

int ferryi_verbs_dev_cq_open(struct ferryi_verbs_dev *dev)
{
	struct ferry_ctx *ctx = dev->vi->pi->ctx;
	int rc;

	dev->ch = ibv_create_comp_channel(dev->verbs);
	if (!dev->ch) {
		rc = errno ? errno : ENOMEM;
		FERRYI_WARN(ctx, "verbs: %s: ibv_create_comp_channel: %s", dev->name,
			    strerror(rc));
		return ferryi_verbs_errno(rc);
	}
	int fl = fcntl(dev->ch->fd, F_GETFL);
	if (fl < 0 || fcntl(dev->ch->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		rc = errno;
		FERRYI_WARN(ctx, "verbs: %s: completion channel non-blocking: %s", dev->name,
			    strerror(rc));
		ibv_destroy_comp_channel(dev->ch);
		dev->ch = NULL;
		return ferryi_verbs_errno(rc);
	}
	dev->ph.fd = dev->ch->fd;
	dev->ph.events = EPOLLIN;
	dev->ph.fn = dev_chan_fn;
	dev->ph.cold = true; /* the progress hook polls the CQs themselves */
	rc = ferryi_poll_add(ctx, &dev->ph);
	if (rc < 0) {
		ibv_destroy_comp_channel(dev->ch);
		dev->ch = NULL;
		return rc;
	}
	dev->polled = true;
	return 0;
}

void ferryi_verbs_dev_cq_close(struct ferryi_verbs_dev *dev)
{
	struct ferry_ctx *ctx = dev->vi->pi->ctx;
	struct ferryi_list_node *n;

	if (dev->polled) {
		ferryi_poll_del(ctx, &dev->ph);
		dev->polled = false;
	}
	while ((n = ferryi_list_pop_front(&dev->cqs))) {
		struct ferryi_verbs_cq *vcq = ferryi_container_of(n, struct ferryi_verbs_cq, link);
		cq_ack(vcq);
		int rc = ibv_destroy_cq(vcq->cq);
		if (rc)
			FERRYI_WARN(ctx, "verbs: %s: ibv_destroy_cq: %s (%u entries in use)",
				    dev->name, strerror(rc), vcq->used);
		free(vcq);
	}
	if (dev->ch) {
		ibv_destroy_comp_channel(dev->ch);
		dev->ch = NULL;
	}
}

struct ferryi_verbs_cq *ferryi_verbs_cq_reserve(struct ferryi_verbs_dev *dev, uint32_t need)
{
	struct ferry_ctx *ctx = dev->vi->pi->ctx;
	struct ferryi_list_node *n, *t;

	ferryi_list_foreach_safe(&dev->cqs, n, t) {
		struct ferryi_verbs_cq *vcq = ferryi_container_of(n, struct ferryi_verbs_cq, link);
		if (vcq->cap - vcq->used >= need) {
			vcq->used += need;
			return vcq;
		}
	}
	uint32_t max = dev->attr.max_cqe > 0 ? (uint32_t)dev->attr.max_cqe : 4096;
	uint32_t size = FERRYI_MAX(dev->vi->tun.cq_size, need);
	if (size > max)
		size = max;
	if (size < need) {
		FERRYI_ERR(ctx, "verbs: %s: a QP needs %u CQ entries, the device allows %u "
				"(lower FERRY_VERBS_SQ_DEPTH / FERRY_VERBS_RX_DEPTH)",
			   dev->name, need, max);
		errno = EINVAL;
		return NULL;
	}
	struct ferryi_verbs_cq *vcq = calloc(1, sizeof(*vcq));
	if (!vcq) {
		errno = ENOMEM;
		return NULL;
	}
	vcq->dev = dev;
	vcq->cq = ibv_create_cq(dev->verbs, (int)size, vcq, dev->ch, 0);
	if (!vcq->cq) {
		int err = errno ? errno : ENOMEM;
		FERRYI_ERR(ctx, "verbs: %s: ibv_create_cq(%u): %s", dev->name, size,
			   strerror(err));
		free(vcq);
		errno = err;
		return NULL;
	}
	if (ibv_req_notify_cq(vcq->cq, 0)) {
		int err = errno ? errno : EIO;
		FERRYI_ERR(ctx, "verbs: %s: ibv_req_notify_cq: %s", dev->name, strerror(err));
		ibv_destroy_cq(vcq->cq);
		free(vcq);
		errno = err;
		return NULL;
	}
	vcq->armed = true; /* once at creation: proves arming works on this device */
	vcq->cap = (uint32_t)vcq->cq->cqe;
	if (vcq->cap < need)
		vcq->cap = need; /* the device rounded down: trust what we asked for */
	vcq->used = need;
	ferryi_list_push_back(&dev->cqs, &vcq->link);
	FERRYI_DBG(ctx, "verbs: %s: new shared CQ with %u entries", dev->name, vcq->cap);
	return vcq;
}

void ferryi_verbs_cq_release(struct ferryi_verbs_cq *vcq, uint32_t need)
{
	vcq->used = vcq->used >= need ? vcq->used - need : 0;
}

static void cq_dispatch(struct ferryi_verbs_dev *dev, const struct ibv_wc *wc)
{
	struct ferryi_hnode *hn = ferryi_hmap_find(&dev->qps, wc->qp_num);
	if (!hn) {
		/* A QP torn down by force (drain guard) left completions behind. */
		FERRYI_DBG(dev->vi->pi->ctx, "verbs: %s: completion for unknown QP %u (%s)",
			   dev->name, wc->qp_num, ibv_wc_status_str(wc->status));
		return;
	}
	struct ferryi_verbs_ep *vep = ferryi_container_of(hn, struct ferryi_verbs_ep, qnode);
	if (wc->wr_id & FERRYI_VERBS_WR_RECV)
		ferryi_verbs_ep_rx_wc(vep, wc);
	else
		ferryi_verbs_ep_tx_wc(vep, wc);
}

int ferryi_verbs_cq_poll(struct ferryi_verbs_cq *vcq)
{
	struct ibv_wc wc[CQ_POLL_BATCH];
	int total = 0;

	if (vcq->polling)
		return 0; /* completions must be handled in order: no nested polls */
	vcq->polling = true;
	for (int round = 0; round < CQ_POLL_ROUNDS; round++) {
		int n = ibv_poll_cq(vcq->cq, CQ_POLL_BATCH, wc);
		if (n < 0) {
			FERRYI_ERR(vcq->dev->vi->pi->ctx, "verbs: %s: ibv_poll_cq failed (%d)",
				   vcq->dev->name, n);
			break;
		}
		for (int i = 0; i < n; i++)
			cq_dispatch(vcq->dev, &wc[i]);
		total += n;
		if (n < CQ_POLL_BATCH)
			break;
	}
	vcq->polling = false;
	return total;
}
