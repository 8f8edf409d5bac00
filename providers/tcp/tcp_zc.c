/*
 * tcp_zc.c - zero-copy sends (MSG_ZEROCOPY) and their completion notifications.
 *
 * A payload of at least FERRY_ZEROCOPY_MIN bytes from user memory (a send's buffer, a
 * write's buffer, a registered region a peer reads) goes out in a sendmsg() of its
 * own with MSG_ZEROCOPY: the kernel sends from those pages instead of copying them,
 * and reports on the socket's error queue ranges of send ids whose pages it let go.
 * Ids count, per socket and from 0, the MSG_ZEROCOPY calls that sent something. An
 * item remembers the id of its last such call and completes (its op is reported, its
 * region use is returned) only once every id up to that one has been notified; so the
 * user may reuse a buffer the moment its completion is polled. Notifications may come
 * out of order: ids from the first one missing on are kept in a bitmap window of
 * FERRYI_TCP_ZC_WIN ids, and a send that would overflow the window copies instead.
 *
 * Fallbacks: setsockopt(SO_ZEROCOPY) refused turns zero-copy off for the endpoint;
 * ENOBUFS from sendmsg (optmem or locked-memory limits) makes that one call copy
 * (tcp_ep.c); a notification flagged SO_EE_CODE_ZEROCOPY_COPIED (the kernel copied
 * after all: loopback, veth, a device without scatter-gather) turns zero-copy off for
 * the endpoint, since it then costs more than the copy it was meant to save.
 *
 * Regions: a READ_RESP from a user region keeps the region in use until its
 * notification, so deregistration waits for the kernel. From a rendezvous buffer (an
 * internal region) the use ends with the last byte written, as without zero-copy: the
 * peer's FIN, which completes the send and deregisters the buffer, proves the bytes
 * arrived, and waiting longer would make that deregistration fail the endpoint.
 */
#define _GNU_SOURCE
#include "tcp_internal.h"

#include <errno.h>
#include <linux/errqueue.h>
#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#ifndef SO_ZEROCOPY
#define SO_ZEROCOPY 60
#endif
#ifndef SO_EE_ORIGIN_ZEROCOPY
#define SO_EE_ORIGIN_ZEROCOPY 5
#endif
#ifndef SO_EE_CODE_ZEROCOPY_COPIED
#define SO_EE_CODE_ZEROCOPY_COPIED 1
#endif

bool ferryi_tcp_zc_keep_copied;

bool ferryi_tcp_zc_usable(struct ferry_ep *ep, uint64_t len)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_inst *ti = ferryi_tcp_inst(ep);

	if (!ti->ext.zerocopy_min || len < ti->ext.zerocopy_min || te->zc < 0)
		return false;
	if (te->zc == 0) {
		int one = 1;

		if (setsockopt(te->fd, SOL_SOCKET, SO_ZEROCOPY, &one, sizeof(one)) < 0) {
			FERRYI_DBG(ep->ctx, "tcp: %s: no zero-copy sends (SO_ZEROCOPY: %s)",
				   ep->peer, strerror(errno));
			te->zc = -1;
			te->zc_min = UINT64_MAX;
			return false;
		}
		te->zc = 1;
		te->zc_used = true;
	}
	return te->zc_next - te->zc_done < FERRYI_TCP_ZC_WIN;
}

uint64_t ferryi_tcp_zc_sent(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	ferryi_tcp_inst(ep)->zc_sends++;
	/* Notifications arrive on the error queue, which only epoll reports. */
	te->ph.direct = false;
	return FERRYI_TCP_ZC_PENDING | te->zc_next++;
}

static void zc_mark(struct ferry_ep *ep, uint32_t lo, uint32_t hi)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	uint32_t outstanding = te->zc_next - te->zc_done;

	for (uint32_t id = lo;; id++) {
		/* Only ids we sent and that are still open; anything else is ignored. */
		if (id - te->zc_done < outstanding) {
			uint32_t b = id % FERRYI_TCP_ZC_WIN;

			te->zc_bits[b / 64] |= 1ull << (b % 64);
		}
		if (id == hi)
			break;
	}
	while (te->zc_done != te->zc_next) {
		uint32_t b = te->zc_done % FERRYI_TCP_ZC_WIN;

		if (!(te->zc_bits[b / 64] & (1ull << (b % 64))))
			break;
		te->zc_bits[b / 64] &= ~(1ull << (b % 64));
		te->zc_done++;
	}
	te->ph.direct = te->zc_done == te->zc_next;
}

/* Completes what no longer waits for a notification. */
static void zc_complete(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_list done;
	struct ferryi_list_node *n, *tmp;

	ferryi_list_init(&done);
	ferryi_list_foreach_safe(&te->zc_ctls, n, tmp)
	{
		struct ferryi_tcp_ctl *ctl = ferryi_container_of(n, struct ferryi_tcp_ctl, link);

		if (!ferryi_tcp_zc_pending(te, ctl->zc)) {
			ferryi_list_remove(&ctl->link);
			ferryi_tcp_ctl_free(ctl);
		}
	}
	ferryi_list_foreach_safe(&te->zc_ops, n, tmp)
	{
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);

		if (!ferryi_tcp_zc_pending(te, op->prov[FERRYI_TCP_OP_ZC])) {
			ferryi_list_remove(&op->qlink);
			ferryi_list_push_back(&done, &op->qlink);
		}
	}
	/* Upcalls last: they may post, close, re-enter. */
	while ((n = ferryi_list_pop_front(&done)) != NULL) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);

		ferryi_op_done(op, (int)(int64_t)op->prov[FERRYI_TCP_OP_DONE_ST]);
		if (te->closed)
			break;
	}
}

void ferryi_tcp_zc_reap(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_inst *ti = ferryi_tcp_inst(ep);

	if (!te->zc_used || te->fd < 0 || te->closed)
		return;
	for (;;) {
		union {
			char buf[CMSG_SPACE(sizeof(struct sock_extended_err) +
					    sizeof(struct sockaddr_in6))];
			struct cmsghdr align;
		} cbuf;
		struct msghdr mh;
		struct cmsghdr *cm;
		ssize_t n;

		memset(&mh, 0, sizeof(mh));
		mh.msg_control = cbuf.buf;
		mh.msg_controllen = sizeof(cbuf.buf);
		n = recvmsg(te->fd, &mh, MSG_ERRQUEUE | MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			break; /* EAGAIN: the queue is empty */
		for (cm = CMSG_FIRSTHDR(&mh); cm; cm = CMSG_NXTHDR(&mh, cm)) {
			struct sock_extended_err ee;

			if (!((cm->cmsg_level == SOL_IP && cm->cmsg_type == IP_RECVERR) ||
			      (cm->cmsg_level == SOL_IPV6 && cm->cmsg_type == IPV6_RECVERR)) ||
			    cm->cmsg_len < CMSG_LEN(sizeof(ee)))
				continue;
			memcpy(&ee, CMSG_DATA(cm), sizeof(ee));
			if (ee.ee_origin != SO_EE_ORIGIN_ZEROCOPY || ee.ee_errno != 0)
				continue;
			if (ee.ee_code & SO_EE_CODE_ZEROCOPY_COPIED) {
				ti->zc_copied++;
				if (te->zc > 0 && !ferryi_tcp_zc_keep_copied) {
					FERRYI_DBG(ep->ctx, "tcp: %s: the kernel copies zero-copy "
						   "sends on this path: copying from now on",
						   ep->peer);
					te->zc = -1;
					te->zc_min = UINT64_MAX;
				}
			}
			zc_mark(ep, ee.ee_info, ee.ee_data);
		}
	}
	zc_complete(ep);
}
