/*
 * verbs_async.c - the device's asynchronous events (ibv_get_async_event): QPs that
 * enter the error state, ports that go down, a device that dies.
 *
 * Sharing. librdmacm opens each device once per process, so every ferry context on a
 * device shares one ibv_context and one async fd: whichever context reads an event
 * consumes it. So the fd is read through a process-wide dispatcher: each context's
 * device subscribes with a mailbox (a small queue and an eventfd in that context's
 * epoll set); the context that finds the async fd readable reads every pending event,
 * acknowledges it at once (ibv_destroy_qp/cq wait for the acknowledgement of their
 * events), copies what it needs (type, QP number, CQ context, port) into the mailbox
 * of every subscriber of that device and signals their eventfds. Each context then
 * handles its copies in its own progress pass, under its own lock, and ignores what
 * is not its own (a QP number it does not know). No context ever takes another's lock.
 *
 * Handling (the endpoint fails through ferryi_ep_failed, like a CM disconnect: every
 * op completes exactly once, through the flushed WRs or the drain guard):
 *   QP_FATAL, PATH_MIG_ERR   the endpoint fails with FERRY_EIO
 *   QP_REQ_ERR               FERRY_EPROTO (the peer sent a request the QP cannot take)
 *   QP_ACCESS_ERR            FERRY_EBADKEY (a peer request violated a region's access)
 *   COMM_EST                 passed to librdmacm (rdma_notify): data came before the RTU
 *   CQ_ERR                   every endpoint on that CQ fails with FERRY_EIO
 *   PORT_ERR                 every endpoint on that port fails with FERRY_ENETUNREACH
 *                            (RC would only time out later; the link is down now)
 *   PORT_ACTIVE              logged
 *   DEVICE_FATAL             every endpoint on the device fails with FERRY_ENODEV and
 *                            the device takes no new connections
 *   others (LID/PKEY/GID/SM changes, SQ drained, last WQE) are logged at debug level.
 */
#include "verbs.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#define VA_QUEUE 64
#define VA_READ_BUDGET 64

struct va_event {
	enum ibv_event_type type;
	uint32_t qp_num;
	void *cq_ctx;
	int port;
};

/* What an async event is about (which member of ibv_async_event's element is valid). */
enum va_elem { VA_ELEM_NONE, VA_ELEM_QP, VA_ELEM_CQ, VA_ELEM_PORT };

static enum va_elem va_element(enum ibv_event_type t)
{
	switch (t) {
	case IBV_EVENT_QP_FATAL:
	case IBV_EVENT_QP_REQ_ERR:
	case IBV_EVENT_QP_ACCESS_ERR:
	case IBV_EVENT_COMM_EST:
	case IBV_EVENT_SQ_DRAINED:
	case IBV_EVENT_PATH_MIG:
	case IBV_EVENT_PATH_MIG_ERR:
	case IBV_EVENT_QP_LAST_WQE_REACHED:
		return VA_ELEM_QP;
	case IBV_EVENT_CQ_ERR:
		return VA_ELEM_CQ;
	case IBV_EVENT_PORT_ACTIVE:
	case IBV_EVENT_PORT_ERR:
	case IBV_EVENT_LID_CHANGE:
	case IBV_EVENT_PKEY_CHANGE:
	case IBV_EVENT_SM_CHANGE:
	case IBV_EVENT_CLIENT_REREGISTER:
	case IBV_EVENT_GID_CHANGE:
		return VA_ELEM_PORT;
	default:
		return VA_ELEM_NONE;
	}
}

/* One device's subscription: a mailbox the dispatcher fills (va_lock). */
struct ferryi_verbs_async {
	struct ferryi_list_node link;      /* va_sources' subscriber list */
	struct ferryi_verbs_dev *dev;
	struct va_source *src;
	struct ferryi_poll_handle fd_ph;   /* the shared async fd          */
	struct ferryi_poll_handle box_ph;  /* the mailbox's eventfd        */
	bool fd_polled, box_polled;
	struct va_event q[VA_QUEUE];       /* va_lock                      */
	unsigned head, count;
	unsigned dropped;
};

struct va_source {
	struct ferryi_list_node link;
	struct ibv_context *verbs;
	struct ferryi_list subs;
};

static pthread_mutex_t va_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ferryi_list va_sources = { { &va_sources.head, &va_sources.head } };

static const char *va_name(enum ibv_event_type t)
{
	return ibv_event_type_str(t);
}

/* ------------------------------------------------------------------ dispatcher */

static void va_post(struct ferryi_verbs_async *a, const struct va_event *ev)
{
	if (a->count == VA_QUEUE) {
		a->head = (a->head + 1) % VA_QUEUE; /* the oldest goes */
		a->count--;
		a->dropped++;
	}
	a->q[(a->head + a->count) % VA_QUEUE] = *ev;
	a->count++;
	uint64_t one = 1;
	(void)!write(a->box_ph.fd, &one, sizeof(one));
}

/* The shared async fd is readable (in some context's progress pass). */
static void va_fd_fn(struct ferryi_poll_handle *h, uint32_t events)
{
	struct ferryi_verbs_async *a = ferryi_container_of(h, struct ferryi_verbs_async, fd_ph);
	(void)events;
	pthread_mutex_lock(&va_lock);
	for (int i = 0; i < VA_READ_BUDGET; i++) {
		struct ibv_async_event e;
		if (ibv_get_async_event(a->src->verbs, &e))
			break; /* EAGAIN: drained */
		struct va_event ev = { .type = e.event_type };
		switch (va_element(e.event_type)) {
		case VA_ELEM_QP:
			ev.qp_num = e.element.qp->qp_num;
			break;
		case VA_ELEM_CQ:
			ev.cq_ctx = e.element.cq->cq_context;
			break;
		case VA_ELEM_PORT:
			ev.port = e.element.port_num;
			break;
		case VA_ELEM_NONE:
			break;
		}
		ibv_ack_async_event(&e);
		struct ferryi_list_node *n;
		for (n = a->src->subs.head.next; n != &a->src->subs.head; n = n->next)
			va_post(ferryi_container_of(n, struct ferryi_verbs_async, link), &ev);
	}
	pthread_mutex_unlock(&va_lock);
}

/* ------------------------------------------------------------------ handling */

/* Fails the endpoints of dev that match (every QP number is looked up again: failing
 * one endpoint may release others' QPs from the map). */
static void va_fail_matching(struct ferryi_verbs_dev *dev, bool (*match)(struct ferryi_verbs_ep *,
							       const struct va_event *),
			     const struct va_event *ev, int status, const char *why)
{
	size_t n = dev->qps.count, k = 0;
	if (!n)
		return;
	uint32_t *qpns = malloc(n * sizeof(*qpns));
	if (!qpns)
		return;
	for (size_t i = 0; i < dev->qps.cap && k < n; i++) {
		struct ferryi_hnode *h = dev->qps.slots[i];
		if (!h)
			continue;
		struct ferryi_verbs_ep *vep = ferryi_container_of(h, struct ferryi_verbs_ep, qnode);
		if (!match || match(vep, ev))
			qpns[k++] = (uint32_t)h->key;
	}
	for (size_t i = 0; i < k; i++) {
		struct ferryi_hnode *h = ferryi_hmap_find(&dev->qps, qpns[i]);
		if (!h)
			continue;
		struct ferryi_verbs_ep *vep = ferryi_container_of(h, struct ferryi_verbs_ep, qnode);
		if (!vep->closing && !vep->finished)
			ferryi_verbs_ep_fail(vep, status, "%s", why);
	}
	free(qpns);
}

static bool va_on_cq(struct ferryi_verbs_ep *vep, const struct va_event *ev)
{
	return vep->vcq == ev->cq_ctx;
}

static bool va_on_port(struct ferryi_verbs_ep *vep, const struct va_event *ev)
{
	return !vep->id || vep->id->port_num == 0 || vep->id->port_num == ev->port;
}

static void va_qp_event(struct ferryi_verbs_dev *dev, const struct va_event *ev)
{
	struct ferry_ctx *ctx = dev->vi->pi->ctx;
	struct ferryi_hnode *h = ferryi_hmap_find(&dev->qps, ev->qp_num);
	if (!h)
		return; /* another context's QP, or one already gone */
	struct ferryi_verbs_ep *vep = ferryi_container_of(h, struct ferryi_verbs_ep, qnode);
	struct ferry_ep *ep = ferryi_verbs_ep_of(vep);
	int status;

	switch (ev->type) {
	case IBV_EVENT_COMM_EST:
		/* A message arrived before the CM's RTU: let rdma_cm finish the connection. */
		if (vep->id)
			(void)rdma_notify(vep->id, IBV_EVENT_COMM_EST);
		FERRYI_DBG(ctx, "verbs: %s: QP %u: %s", ep->peer, ev->qp_num, va_name(ev->type));
		return;
	case IBV_EVENT_QP_FATAL:
	case IBV_EVENT_PATH_MIG_ERR:
		status = FERRY_EIO;
		break;
	case IBV_EVENT_QP_REQ_ERR:
		status = FERRY_EPROTO;
		break;
	case IBV_EVENT_QP_ACCESS_ERR:
		status = FERRY_EBADKEY;
		break;
	default:
		FERRYI_DBG(ctx, "verbs: %s: QP %u: %s", ep->peer, ev->qp_num, va_name(ev->type));
		return;
	}
	if (vep->closing || vep->finished) {
		/* Our own teardown moved it to the error state: expected. */
		FERRYI_DBG(ctx, "verbs: %s: QP %u: %s during teardown", ep->peer, ev->qp_num,
			   va_name(ev->type));
		return;
	}
	ferryi_verbs_ep_fail(vep, status, "QP %u on %s entered the error state (%s)",
			     ev->qp_num, dev->name, va_name(ev->type));
}

static void va_handle(struct ferryi_verbs_dev *dev, const struct va_event *ev)
{
	struct ferry_ctx *ctx = dev->vi->pi->ctx;
	char why[160];

	if (va_element(ev->type) == VA_ELEM_QP) {
		va_qp_event(dev, ev);
		return;
	}
	switch (ev->type) {
	case IBV_EVENT_CQ_ERR: {
		bool ours = false;
		struct ferryi_list_node *n;
		for (n = dev->cqs.head.next; n != &dev->cqs.head; n = n->next)
			ours |= (void *)ferryi_container_of(n, struct ferryi_verbs_cq, link) == ev->cq_ctx;
		if (!ours)
			break;
		FERRYI_ERR(ctx, "verbs: %s: completion queue error (overrun): failing its "
			   "endpoints", dev->name);
		snprintf(why, sizeof(why), "completion queue error on %s (IBV_EVENT_CQ_ERR)",
			 dev->name);
		va_fail_matching(dev, va_on_cq, ev, FERRY_EIO, why);
		break;
	}
	case IBV_EVENT_PORT_ERR:
		FERRYI_WARN(ctx, "verbs: %s port %d went down (IBV_EVENT_PORT_ERR): failing its "
			    "%zu endpoint(s)", dev->name, ev->port, dev->qps.count);
		snprintf(why, sizeof(why), "%s port %d went down (IBV_EVENT_PORT_ERR)", dev->name,
			 ev->port);
		va_fail_matching(dev, va_on_port, ev, FERRY_ENETUNREACH, why);
		break;
	case IBV_EVENT_PORT_ACTIVE:
		FERRYI_INFO(ctx, "verbs: %s port %d is active again", dev->name, ev->port);
		break;
	case IBV_EVENT_DEVICE_FATAL:
		dev->fatal = true;
		FERRYI_ERR(ctx, "verbs: %s: fatal device error (IBV_EVENT_DEVICE_FATAL): failing "
			   "its %zu endpoint(s); the device takes no new connections", dev->name,
			   dev->qps.count);
		snprintf(why, sizeof(why), "fatal error of device %s (IBV_EVENT_DEVICE_FATAL)",
			 dev->name);
		va_fail_matching(dev, NULL, ev, FERRY_ENODEV, why);
		break;
	default:
		FERRYI_DBG(ctx, "verbs: %s: async event %s (port %d)", dev->name,
			   va_name(ev->type), ev->port);
		break;
	}
}

/* This context's mailbox has events. */
static void va_box_fn(struct ferryi_poll_handle *h, uint32_t events)
{
	struct ferryi_verbs_async *a = ferryi_container_of(h, struct ferryi_verbs_async, box_ph);
	struct va_event q[VA_QUEUE];
	unsigned n = 0, dropped;
	uint64_t v;
	(void)events;

	(void)!read(a->box_ph.fd, &v, sizeof(v));
	pthread_mutex_lock(&va_lock);
	while (a->count) {
		q[n++] = a->q[a->head];
		a->head = (a->head + 1) % VA_QUEUE;
		a->count--;
	}
	dropped = a->dropped;
	a->dropped = 0;
	pthread_mutex_unlock(&va_lock);
	if (dropped)
		FERRYI_WARN(a->dev->vi->pi->ctx, "verbs: %s: %u async events lost (queue full)",
			    a->dev->name, dropped);
	for (unsigned i = 0; i < n; i++)
		va_handle(a->dev, &q[i]);
}

/* ------------------------------------------------------------------ open / close */

int ferryi_verbs_dev_async_open(struct ferryi_verbs_dev *dev)
{
	struct ferry_ctx *ctx = dev->vi->pi->ctx;
	struct ferryi_verbs_async *a = calloc(1, sizeof(*a));
	int rc;

	if (!a)
		return FERRY_ENOMEM;
	a->dev = dev;
	a->box_ph.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (a->box_ph.fd < 0) {
		rc = ferryi_verbs_errno(errno);
		free(a);
		return rc;
	}
	a->box_ph.events = EPOLLIN;
	a->box_ph.fn = va_box_fn;

	pthread_mutex_lock(&va_lock);
	struct va_source *src = NULL;
	struct ferryi_list_node *n;
	for (n = va_sources.head.next; n != &va_sources.head; n = n->next) {
		struct va_source *s = ferryi_container_of(n, struct va_source, link);
		if (s->verbs == dev->verbs)
			src = s;
	}
	if (!src) {
		int fl = fcntl(dev->verbs->async_fd, F_GETFL);
		src = calloc(1, sizeof(*src));
		if (!src || fl < 0 || fcntl(dev->verbs->async_fd, F_SETFL, fl | O_NONBLOCK) < 0) {
			rc = src ? ferryi_verbs_errno(errno) : FERRY_ENOMEM;
			pthread_mutex_unlock(&va_lock);
			FERRYI_WARN(ctx, "verbs: %s: async event fd: %s", dev->name, ferry_strerror(rc));
			free(src);
			close(a->box_ph.fd);
			free(a);
			return rc;
		}
		/* Events queued while no context listened predate every endpoint. */
		struct ibv_async_event old;
		unsigned stale = 0;
		while (stale < 1024 && ibv_get_async_event(dev->verbs, &old) == 0) {
			ibv_ack_async_event(&old);
			stale++;
		}
		if (stale)
			FERRYI_DBG(ctx, "verbs: %s: %u old async events discarded", dev->name, stale);
		src->verbs = dev->verbs;
		ferryi_list_init(&src->subs);
		ferryi_list_push_back(&va_sources, &src->link);
	}
	a->src = src;
	ferryi_list_push_back(&src->subs, &a->link);
	pthread_mutex_unlock(&va_lock);
	dev->async = a;

	a->fd_ph.fd = dev->verbs->async_fd;
	a->fd_ph.events = EPOLLIN;
	a->fd_ph.fn = va_fd_fn;
	/*
	 * Cold, both: an async event (a port or QP gone bad) may wait the 50 us of a busy
	 * pass's epoll cadence, and a hot handle cost every busy pass an epoll_wait (in
	 * the soft-RoCE VM most of a 1.8 us empty pass).
	 */
	a->fd_ph.cold = true;
	a->box_ph.cold = true;
	rc = ferryi_poll_add(ctx, &a->fd_ph);
	if (rc == 0) {
		a->fd_polled = true;
		rc = ferryi_poll_add(ctx, &a->box_ph);
		a->box_polled = rc == 0;
	}
	if (rc < 0)
		ferryi_verbs_dev_async_close(dev);
	return rc;
}

void ferryi_verbs_dev_async_close(struct ferryi_verbs_dev *dev)
{
	struct ferryi_verbs_async *a = dev->async;
	struct ferry_ctx *ctx = dev->vi->pi->ctx;
	if (!a)
		return;
	if (a->fd_polled)
		ferryi_poll_del(ctx, &a->fd_ph);
	if (a->box_polled)
		ferryi_poll_del(ctx, &a->box_ph);
	pthread_mutex_lock(&va_lock);
	ferryi_list_remove(&a->link);
	if (ferryi_list_empty(&a->src->subs)) {
		ferryi_list_remove(&a->src->link);
		free(a->src);
	}
	pthread_mutex_unlock(&va_lock);
	close(a->box_ph.fd);
	free(a);
	dev->async = NULL;
}
