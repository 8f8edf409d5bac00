/*
 * ofi_rdmacm.c - what verbs;ofi_rxm does not tell, asked of rdma_cm directly.
 *
 * rxm over verbs makes its connections with rdma_cm in the RDMA_PS_TCP port space,
 * on the port of the listener's address. Two answers get lost on the way up:
 *
 *   - A connect to a port where nobody listens: rxm frees the rejected connection
 *     and the next send starts over, so the connect request just keeps returning
 *     -FI_EAGAIN until the handshake times out. The probe below sends one rdma_cm
 *     connect request (no QP, no private data) to the same address: the peer's CM
 *     answers "invalid service ID" (IB reject reason 8) when no listener is bound
 *     there, and a live rxm listener rejects the malformed request as the consumer
 *     (reason 28), which ends the probe quietly.
 *   - A listen on an address already taken: rxm's fi_endpoint fails with
 *     -FI_ENODATA. Binding an rdma_cm id to the same address says EADDRINUSE.
 *
 * Built only where librdmacm is (FERRY_OFI_RDMACM); elsewhere both are no-ops and
 * ofi+verbs reports a timeout and ENODEV instead.
 */
#define _GNU_SOURCE
#include "ofi.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>

#ifdef FERRY_OFI_RDMACM
#include <rdma/rdma_cma.h>

#define OFI_CMPROBE_TIMEOUT_MS 1000
#define OFI_IB_REJ_INVALID_SERVICE_ID 8

struct ofi_cmprobe {
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id;
};

int ofi_rdmacm_bind_check(const void *sa, size_t len)
{
	struct rdma_event_channel *ch;
	struct rdma_cm_id *id = NULL;
	int rc = 0;

	if (len < sizeof(struct sockaddr_in))
		return 0;
	ch = rdma_create_event_channel();
	if (!ch)
		return 0;
	if (rdma_create_id(ch, &id, NULL, RDMA_PS_TCP) == 0) {
		if (rdma_bind_addr(id, (struct sockaddr *)sa) != 0) {
			if (errno == EADDRINUSE)
				rc = FERRY_EADDRINUSE;
			else if (errno == EADDRNOTAVAIL)
				rc = FERRY_EADDRNOTAVAIL;
		}
		rdma_destroy_id(id);
	}
	rdma_destroy_event_channel(ch);
	return rc;
}

void ofi_cmprobe_stop(struct ofi_ep *oep)
{
	struct ofi_cmprobe *p = oep->cmprobe;

	if (!p)
		return;
	oep->cmprobe = NULL;
	if (oep->probe.fd >= 0)
		ferryi_poll_del(oep->ep->ctx, &oep->probe);
	oep->probe.fd = -1;
	if (p->id)
		rdma_destroy_id(p->id);
	rdma_destroy_event_channel(p->ch);
	free(p);
}

/* 0: go on; 1: over, nothing learnt; 2: over, nobody listens there. */
static int ofi_cmprobe_event(struct ofi_ep *oep, struct rdma_cm_event *ev)
{
	struct ofi_cmprobe *p = oep->cmprobe;
	struct rdma_conn_param cp;

	switch (ev->event) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		return rdma_resolve_route(p->id, OFI_CMPROBE_TIMEOUT_MS) != 0;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		memset(&cp, 0, sizeof(cp));
		cp.responder_resources = 1;
		cp.initiator_depth = 1;
		cp.retry_count = 1;
		cp.qp_num = 1; /* no QP behind it: the request is never accepted */
		return rdma_connect(p->id, &cp) != 0;
	case RDMA_CM_EVENT_REJECTED:
		return ev->status == OFI_IB_REJ_INVALID_SERVICE_ID ? 2 : 1;
	default:
		return 1; /* unreachable, errors, or (never) established: no verdict */
	}
}

static void ofi_cmprobe_ready(struct ferryi_poll_handle *h, uint32_t events)
{
	struct ofi_ep *oep = ferryi_container_of(h, struct ofi_ep, probe);
	struct rdma_cm_event *ev;
	(void)events;

	while (oep->cmprobe && rdma_get_cm_event(((struct ofi_cmprobe *)oep->cmprobe)->ch, &ev) == 0) {
		struct rdma_cm_event copy = *ev;
		rdma_ack_cm_event(ev);
		int r = ofi_cmprobe_event(oep, &copy);
		if (r == 0)
			continue;
		ofi_cmprobe_stop(oep);
		if (r == 2 && oep->state == OFI_EP_REQ_SENT && !oep->closing)
			ferryi_ep_failed(oep->ep, FERRY_ECONNREFUSED, "nobody listens at that address");
		return;
	}
}

void ofi_cmprobe_start(struct ofi_ep *oep, const void *sa, size_t len)
{
	struct ofi_cmprobe *p;
	int fl;

	if (len < sizeof(struct sockaddr_in) || oep->cmprobe)
		return;
	p = calloc(1, sizeof(*p));
	if (!p)
		return;
	p->ch = rdma_create_event_channel();
	if (!p->ch) {
		free(p);
		return;
	}
	oep->cmprobe = p;
	fl = fcntl(p->ch->fd, F_GETFL);
	if (fl < 0 || fcntl(p->ch->fd, F_SETFL, fl | O_NONBLOCK) < 0 ||
	    rdma_create_id(p->ch, &p->id, NULL, RDMA_PS_TCP) != 0) {
		ofi_cmprobe_stop(oep);
		return;
	}
	if (rdma_resolve_addr(p->id, NULL, (struct sockaddr *)sa, OFI_CMPROBE_TIMEOUT_MS) != 0) {
		ofi_cmprobe_stop(oep);
		return;
	}
	oep->probe.fd = p->ch->fd;
	oep->probe.events = EPOLLIN;
	oep->probe.fn = ofi_cmprobe_ready;
	if (ferryi_poll_add(oep->ep->ctx, &oep->probe) < 0) {
		oep->probe.fd = -1;
		ofi_cmprobe_stop(oep);
	}
}

#else

int ofi_rdmacm_bind_check(const void *sa, size_t len)
{
	(void)sa;
	(void)len;
	return 0;
}

void ofi_cmprobe_start(struct ofi_ep *oep, const void *sa, size_t len)
{
	(void)oep;
	(void)sa;
	(void)len;
}

void ofi_cmprobe_stop(struct ofi_ep *oep)
{
	(void)oep;
}

#endif
