/*
 * verbs_cm.c - connection management with librdmacm: the event channel, listening,
 * the client's address/route resolution and connect, the server's accept or reject,
 * and ferry's handshake in the CM private data.
 *
 * Everything is event driven on one non-blocking rdma_event_channel per context
 * instance (a poll handle). Each event is copied and acknowledged before it is acted
 * on: rdma_destroy_id() waits for the acknowledgement of every event it reported, and
 * acting on an event may destroy its id (a failed endpoint is torn down by the core's
 * ep_close, which destroys the id).
 *
 * Client:  create id -> resolve_addr -> ADDR_RESOLVED -> resolve_route ->
 *          ROUTE_RESOLVED -> QP + receive ring -> connect(REQ + handshake) ->
 *          ESTABLISHED (REP handshake validated) -> ferryi_ep_connected.
 * Server:  CONNECT_REQUEST (REQ handshake validated) -> ferryi_ep_accepted -> QP +
 *          receive ring -> accept(REP + handshake) -> ESTABLISHED -> connected.
 *          A bad handshake or a refused endpoint is rejected with a REJ that carries
 *          the ferry status (FERRY_EVERSION, FERRY_EPROTO, FERRY_ECONNREFUSED...).
 * Either:  DISCONNECTED -> poll the CQ once more (a goodbye may be waiting in it) ->
 *          the endpoint fails with FERRY_ECONNRESET unless it closed already.
 */
#include "verbs.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define CM_EVENT_BUDGET 64
#define CM_RD_ATOM_MAX 16   /* outstanding RDMA READs per QP we ask for */
#define CM_RNR_RETRY 7      /* "infinite": credits should make RNR impossible anyway */
#define CM_RETRY 7

/* ------------------------------------------------------------------ handshake */

void ferryi_verbs_hs_local(struct ferryi_verbs_ep *vep, uint8_t kind, struct ferryi_verbs_hs *hs)
{
	memset(hs, 0, sizeof(*hs));
	hs->kind = kind;
	hs->rx_depth = vep->rx_depth;
	hs->rx_payload = vep->rx_payload;
	hs->info = vep->local;
	hs->guid = vep->dev ? vep->dev->guid : 0;
	hs->instance = vep->vi->instance;
}

size_t ferryi_verbs_hs_encode(const struct ferryi_verbs_hs *hs, uint8_t *p)
{
	memset(p, 0, FERRYI_VERBS_CM_LEN);
	ferryi_put_le32(p, FERRYI_VERBS_CM_MAGIC);
	p[4] = FERRYI_VERBS_CM_VERSION;
	p[5] = hs->kind;
	ferryi_put_le16(p + 6, (uint16_t)FERRYI_MIN(hs->rx_depth, 65535u));
	ferryi_put_le32(p + 8, hs->rx_payload);
	ferryi_put_le32(p + 12, hs->info.version);
	ferryi_put_le32(p + 16, hs->info.features);
	ferryi_put_le32(p + 20, hs->info.idle_timeout_ms);
	ferryi_put_le32(p + 24, hs->info.probe_interval_ms);
	ferryi_put_le64(p + 28, hs->info.max_frame);
	ferryi_put_le32(p + 36, (uint32_t)FERRYI_MIN(hs->info.eager_max, (uint64_t)UINT32_MAX));
	ferryi_put_le32(p + 40, (uint32_t)FERRYI_MIN(hs->info.rx_credit, (uint64_t)UINT32_MAX));
	ferryi_put_le64(p + 44, hs->guid);
	ferryi_put_le32(p + 52, hs->instance);
	return FERRYI_VERBS_CM_LEN;
}

/*
 * Validates private data (which IB pads with zeros up to its fixed size). Returns 0,
 * FERRY_EPROTO (not ours / malformed) or FERRY_EVERSION, with the reason in why.
 */
int ferryi_verbs_hs_decode(const void *data, size_t len, uint8_t want_kind,
			   struct ferryi_verbs_hs *hs, char *why, size_t why_len)
{
	const uint8_t *p = data;
	memset(hs, 0, sizeof(*hs));
	if (!p || len < FERRYI_VERBS_CM_REJ_LEN || ferryi_get_le32(p) != FERRYI_VERBS_CM_MAGIC) {
		snprintf(why, why_len, "handshake: not a ferry peer (%zu bytes of private data)",
			 len);
		return FERRY_EPROTO;
	}
	if (p[4] != FERRYI_VERBS_CM_VERSION) {
		snprintf(why, why_len, "handshake: verbs wire version %u, we speak %u", p[4],
			 FERRYI_VERBS_CM_VERSION);
		return FERRY_EVERSION;
	}
	hs->kind = p[5];
	if (hs->kind != want_kind || (want_kind != FERRYI_VERBS_CM_REJ && len < FERRYI_VERBS_CM_LEN)) {
		snprintf(why, why_len, "handshake: kind %u (%zu bytes), expected kind %u",
			 hs->kind, len, want_kind);
		return FERRY_EPROTO;
	}
	if (want_kind == FERRYI_VERBS_CM_REJ)
		return 0;
	hs->rx_depth = ferryi_get_le16(p + 6);
	hs->rx_payload = ferryi_get_le32(p + 8);
	hs->info.version = ferryi_get_le32(p + 12);
	hs->info.features = ferryi_get_le32(p + 16);
	hs->info.idle_timeout_ms = ferryi_get_le32(p + 20);
	hs->info.probe_interval_ms = ferryi_get_le32(p + 24);
	hs->info.max_frame = ferryi_get_le64(p + 28);
	hs->info.eager_max = ferryi_get_le32(p + 36);
	hs->info.rx_credit = ferryi_get_le32(p + 40);
	hs->guid = ferryi_get_le64(p + 44);
	hs->instance = ferryi_get_le32(p + 52);
	if (hs->info.version != FERRYI_PROTO_VERSION) {
		snprintf(why, why_len, "handshake: peer speaks ferry protocol %u, we speak %u",
			 hs->info.version, FERRYI_PROTO_VERSION);
		return FERRY_EVERSION;
	}
	if (hs->rx_depth < 4 || hs->rx_payload < 1024 || hs->rx_payload > (1u << 24)) {
		snprintf(why, why_len, "handshake: bad receive ring (%u buffers of %u bytes)",
			 hs->rx_depth, hs->rx_payload);
		return FERRY_EPROTO;
	}
	return 0;
}

static void cm_reject(struct rdma_cm_id *id, int status)
{
	uint8_t b[FERRYI_VERBS_CM_REJ_LEN] = { 0 };
	ferryi_put_le32(b, FERRYI_VERBS_CM_MAGIC);
	b[4] = FERRYI_VERBS_CM_VERSION;
	b[5] = FERRYI_VERBS_CM_REJ;
	ferryi_put_le32(b + 8, (uint32_t)status);
	(void)rdma_reject(id, b, sizeof(b));
}

static void cm_param(struct ferryi_verbs_ep *vep, const uint8_t *pdata,
		     struct rdma_conn_param *cp)
{
	memset(cp, 0, sizeof(*cp));
	cp->private_data = pdata;
	cp->private_data_len = FERRYI_VERBS_CM_LEN;
	cp->responder_resources = vep->resp_res;
	cp->initiator_depth = vep->init_depth;
	cp->flow_control = 1;
	cp->retry_count = CM_RETRY;
	cp->rnr_retry_count = CM_RNR_RETRY;
}

static uint8_t rd_atom(int dev_max, unsigned peer)
{
	unsigned v = dev_max > 0 ? (unsigned)dev_max : 0;
	v = FERRYI_MIN(v, peer);
	return (uint8_t)FERRYI_MIN(v, CM_RD_ATOM_MAX);
}

static int cm_sockaddr(const struct sockaddr *sa, struct sockaddr_storage *ss)
{
	memset(ss, 0, sizeof(*ss));
	if (!sa)
		return -1;
	if (sa->sa_family == AF_INET)
		memcpy(ss, sa, sizeof(struct sockaddr_in));
	else if (sa->sa_family == AF_INET6)
		memcpy(ss, sa, sizeof(struct sockaddr_in6));
	else
		return -1;
	return 0;
}

static uint32_t cm_step_timeout(struct ferryi_verbs_ep *vep)
{
	const struct ferry_config *cfg = ferry_ctx_config(ferryi_verbs_ep_of(vep)->ctx);
	uint32_t t = cfg->handshake_timeout_ms ? cfg->handshake_timeout_ms : 5000;
	return FERRYI_MIN(t, 30000u);
}

/* ------------------------------------------------------------------ client */

int ferryi_verbs_connect(struct ferry_ep *ep, const struct ferryi_addr *addr)
{
	struct ferryi_verbs_inst *vi = ferryi_verbs_inst(ep->pi);
	struct ferryi_verbs_ep *vep = ferryi_verbs_ep(ep);
	struct sockaddr_storage ss;
	unsigned sslen = sizeof(ss);
	int rc;

	ferryi_verbs_ep_init(vep, vi);
	rc = ferryi_addr_resolve(addr, 0, &ss, &sslen);
	if (rc < 0)
		return rc;
	if (rdma_create_id(vi->cm_ch, &vep->id, vep, RDMA_PS_TCP)) {
		rc = ferryi_verbs_errno(errno);
		FERRYI_WARN(ep->ctx, "verbs: rdma_create_id: %s", strerror(errno));
		vep->id = NULL;
		return rc;
	}
	if (rdma_resolve_addr(vep->id, NULL, (struct sockaddr *)&ss, (int)cm_step_timeout(vep))) {
		int err = errno;
		FERRYI_INFO(ep->ctx, "verbs: connect %s: rdma_resolve_addr: %s%s", addr->uri,
			    strerror(err),
			    err == ENODEV || err == EADDRNOTAVAIL ? " (no RDMA device reaches it)" : "");
		rdma_destroy_id(vep->id);
		vep->id = NULL;
		return err == ENODEV || err == EADDRNOTAVAIL ? FERRY_EHOSTUNREACH
							     : ferryi_verbs_errno(err);
	}
	vep->cm = FERRYI_VERBS_CM_ADDR;
	return 0;
}

static void cm_route_resolved(struct ferryi_verbs_ep *vep)
{
	struct ferry_ep *ep = ferryi_verbs_ep_of(vep);
	struct ferryi_verbs_hs hs;
	struct rdma_conn_param cp;
	uint8_t pdata[FERRYI_VERBS_CM_LEN];
	int rc;

	vep->dev = ferryi_verbs_dev_find(vep->vi, vep->id->verbs);
	if (!vep->dev) {
		ferryi_verbs_ep_fail(vep, FERRY_ENODEV, "route uses an RDMA device this context "
							"did not open");
		return;
	}
	rc = ferryi_verbs_ep_setup(vep, NULL);
	if (rc < 0) {
		ferryi_verbs_ep_fail(vep, rc, "cannot set up the QP");
		return;
	}
	vep->resp_res = rd_atom(vep->dev->attr.max_qp_rd_atom, CM_RD_ATOM_MAX);
	vep->init_depth = rd_atom(vep->dev->attr.max_qp_init_rd_atom, CM_RD_ATOM_MAX);
	ferryi_verbs_hs_local(vep, FERRYI_VERBS_CM_REQ, &hs);
	ferryi_verbs_hs_encode(&hs, pdata);
	cm_param(vep, pdata, &cp);
	if (rdma_connect(vep->id, &cp)) {
		ferryi_verbs_ep_fail(vep, ferryi_verbs_errno(errno), "rdma_connect: %s",
				     strerror(errno));
		return;
	}
	vep->cm = FERRYI_VERBS_CM_CONNECTING;
	FERRYI_DBG(ep->ctx, "verbs: connecting to %s over %s (QP %u)", ep->peer, vep->dev->name,
		   vep->qp->qp_num);
}

static void cm_established(struct ferryi_verbs_ep *vep, const uint8_t *pdata, size_t plen)
{
	if (vep->cm == FERRYI_VERBS_CM_CONNECTING) {
		struct ferryi_verbs_hs hs;
		char why[160];
		int rc = ferryi_verbs_hs_decode(pdata, plen, FERRYI_VERBS_CM_REP, &hs, why,
						sizeof(why));
		if (rc < 0) {
			ferryi_verbs_ep_fail(vep, rc, "%s", why);
			return;
		}
		ferryi_verbs_ep_apply_peer(vep, &hs);
	} else if (vep->cm != FERRYI_VERBS_CM_ACCEPTING) {
		return;
	}
	vep->cm = FERRYI_VERBS_CM_ESTABLISHED;
	ferryi_verbs_ep_up(vep);
}

static void cm_rejected(struct ferryi_verbs_ep *vep, int status, const uint8_t *pdata,
			size_t plen)
{
	struct ferryi_verbs_hs hs;
	char why[160];
	if (plen >= FERRYI_VERBS_CM_REJ_LEN &&
	    ferryi_verbs_hs_decode(pdata, plen, FERRYI_VERBS_CM_REJ, &hs, why, sizeof(why)) == 0) {
		int32_t st = (int32_t)ferryi_get_le32(pdata + 8);
		if (st >= 0 || st < -2000)
			st = FERRY_ECONNREFUSED;
		ferryi_verbs_ep_fail(vep, st, "refused by the peer: %s", ferry_strerror(st));
		return;
	}
	/* IB CM reject reason 8: invalid service id, i.e. nobody listens on that port. */
	ferryi_verbs_ep_fail(vep, FERRY_ECONNREFUSED, "connection rejected (%s, reason %d)",
			     status == 8 ? "no listener on that port" : "by the peer's CM",
			     status);
}

static void cm_disconnected(struct ferryi_verbs_ep *vep)
{
	struct ferry_ep *ep = ferryi_verbs_ep_of(vep);
	bool was_up = vep->up;

	vep->cm = FERRYI_VERBS_CM_DISCONNECTED;
	if (vep->closing) {
		if (vep->linger)
			ferryi_verbs_ep_hard_close(vep); /* nobody left to drain to */
		return;
	}
	/* A goodbye (or the last data) sent before the DREQ may still wait in the CQ. */
	if (vep->vcq)
		ferryi_verbs_cq_poll(vep->vcq);
	if (ep->state == FERRYI_EP_CLOSED || vep->closing)
		return;
	ferryi_verbs_ep_fail(vep, was_up ? FERRY_ECONNRESET : FERRY_ECONNABORTED,
			     "peer disconnected");
}

static void cm_ep_event(struct ferryi_verbs_ep *vep, enum rdma_cm_event_type type, int status,
			const uint8_t *pdata, size_t plen)
{
	struct ferry_ep *ep = ferryi_verbs_ep_of(vep);

	if (vep->finished)
		return;
	if (type == RDMA_CM_EVENT_DISCONNECTED) {
		cm_disconnected(vep);
		return;
	}
	if (vep->closing)
		return; /* teardown owns the id now; late CM news changes nothing */
	switch (type) {
	case RDMA_CM_EVENT_ADDR_RESOLVED:
		if (vep->cm != FERRYI_VERBS_CM_ADDR)
			break;
		if (rdma_resolve_route(vep->id, (int)cm_step_timeout(vep))) {
			ferryi_verbs_ep_fail(vep, FERRY_EHOSTUNREACH, "rdma_resolve_route: %s",
					     strerror(errno));
			break;
		}
		vep->cm = FERRYI_VERBS_CM_ROUTE;
		break;
	case RDMA_CM_EVENT_ROUTE_RESOLVED:
		if (vep->cm == FERRYI_VERBS_CM_ROUTE)
			cm_route_resolved(vep);
		break;
	case RDMA_CM_EVENT_ESTABLISHED:
		cm_established(vep, pdata, plen);
		break;
	case RDMA_CM_EVENT_REJECTED:
		cm_rejected(vep, status, pdata, plen);
		break;
	case RDMA_CM_EVENT_ADDR_ERROR:
		ferryi_verbs_ep_fail(vep, FERRY_EHOSTUNREACH, "address resolution failed: %s",
				     strerror(status < 0 ? -status : status));
		break;
	case RDMA_CM_EVENT_ROUTE_ERROR:
		ferryi_verbs_ep_fail(vep, status == -ENETUNREACH ? FERRY_ENETUNREACH
								: FERRY_EHOSTUNREACH,
				     "route resolution failed: %s",
				     strerror(status < 0 ? -status : status));
		break;
	case RDMA_CM_EVENT_UNREACHABLE:
		ferryi_verbs_ep_fail(vep, status == -ETIMEDOUT ? FERRY_ETIMEDOUT
							       : FERRY_EHOSTUNREACH,
				     "peer unreachable (status %d)", status);
		break;
	case RDMA_CM_EVENT_CONNECT_ERROR:
		ferryi_verbs_ep_fail(vep, FERRY_ECONNABORTED, "connection error (status %d)",
				     status);
		break;
	case RDMA_CM_EVENT_DEVICE_REMOVAL:
		ferryi_verbs_ep_fail(vep, FERRY_ENODEV, "RDMA device removed");
		break;
	default:
		FERRYI_DBG(ep->ctx, "verbs: %s: CM event %s (status %d) ignored", ep->peer,
			   rdma_event_str(type), status);
		break;
	}
}

/* ------------------------------------------------------------------ server */

static void cm_connect_request(struct ferryi_verbs_lp *vlp, struct rdma_cm_id *id,
			       const uint8_t *pdata, size_t plen, uint8_t peer_resp_res,
			       uint8_t peer_init_depth)
{
	struct ferryi_listener_part *lp = vlp->lp;
	struct ferry_ctx *ctx = lp->pi->ctx;
	struct ferryi_verbs_inst *vi = ferryi_verbs_inst(lp->pi);
	struct ferryi_verbs_hs hs;
	struct sockaddr_storage ss;
	char why[160], peer[FERRYI_URI_MAX] = "verbs://?";
	uint8_t rep[FERRYI_VERBS_CM_LEN];
	struct rdma_conn_param cp;
	int rc;

	id->context = NULL; /* librdmacm copied the listener's; not ours until accepted */
	if (cm_sockaddr(rdma_get_peer_addr(id), &ss) == 0)
		(void)ferryi_addr_format("verbs", &ss, peer, sizeof(peer));
	rc = ferryi_verbs_hs_decode(pdata, plen, FERRYI_VERBS_CM_REQ, &hs, why, sizeof(why));
	if (rc < 0) {
		FERRYI_WARN(ctx, "verbs: connection from %s refused: %s", peer, why);
		lp->pi->stats.protocol_errors++;
		cm_reject(id, rc);
		rdma_destroy_id(id);
		return;
	}
	rc = ferryi_ctx_admission(ctx);
	if (rc < 0) {
		FERRYI_INFO(ctx, "verbs: connection from %s refused: %s", peer, ferry_strerror(rc));
		cm_reject(id, rc);
		rdma_destroy_id(id);
		return;
	}
	struct ferryi_verbs_dev *dev = ferryi_verbs_dev_find(vi, id->verbs);
	if (!dev) {
		FERRYI_WARN(ctx, "verbs: connection from %s on a device this context did not "
				 "open: refused", peer);
		cm_reject(id, FERRY_ECONNREFUSED);
		rdma_destroy_id(id);
		return;
	}
	struct ferry_ep *ep = ferryi_ep_accepted(lp, peer);
	if (!ep) {
		cm_reject(id, FERRY_ECONNREFUSED);
		rdma_destroy_id(id);
		return;
	}
	struct ferryi_verbs_ep *vep = ferryi_verbs_ep(ep);
	ferryi_verbs_ep_init(vep, vi);
	vep->id = id;
	vep->dev = dev;
	id->context = vep;
	/* The event reports the peer's initiator depth as our responder resources. */
	vep->resp_res = rd_atom(dev->attr.max_qp_rd_atom, peer_resp_res);
	vep->init_depth = rd_atom(dev->attr.max_qp_init_rd_atom, peer_init_depth);
	rc = ferryi_verbs_ep_setup(vep, &hs);
	if (rc < 0) {
		cm_reject(id, rc == FERRY_ENOMEM || rc == FERRY_EPERM ? FERRY_ENOBUFS : rc);
		ferryi_verbs_ep_fail(vep, rc, "cannot set up the QP for an incoming connection");
		return;
	}
	ferryi_verbs_hs_local(vep, FERRYI_VERBS_CM_REP, &hs);
	ferryi_verbs_hs_encode(&hs, rep);
	cm_param(vep, rep, &cp);
	if (rdma_accept(id, &cp)) {
		ferryi_verbs_ep_fail(vep, ferryi_verbs_errno(errno), "rdma_accept: %s",
				     strerror(errno));
		return;
	}
	vep->cm = FERRYI_VERBS_CM_ACCEPTING;
	FERRYI_DBG(ctx, "verbs: accepting %s on %s (QP %u)", peer, dev->name, vep->qp->qp_num);
}

int ferryi_verbs_listen(struct ferryi_listener_part *lp, const struct ferryi_addr *addr,
			char *uri, size_t uri_len)
{
	struct ferryi_verbs_inst *vi = ferryi_verbs_inst(lp->pi);
	struct ferryi_verbs_lp *vlp = ferryi_lp_priv(lp);
	struct ferry_ctx *ctx = lp->pi->ctx;
	struct sockaddr_storage ss;
	unsigned sslen = sizeof(ss);
	int rc, err;

	memset(vlp, 0, sizeof(*vlp));
	vlp->kind = FERRYI_VERBS_OBJ_LISTENER;
	vlp->lp = lp;
	rc = ferryi_addr_resolve(addr, 1, &ss, &sslen);
	if (rc < 0)
		return rc;
	if (rdma_create_id(vi->cm_ch, &vlp->id, vlp, RDMA_PS_TCP)) {
		err = errno;
		FERRYI_WARN(ctx, "verbs: listen %s: rdma_create_id: %s", addr->uri, strerror(err));
		vlp->id = NULL;
		return ferryi_verbs_errno(err);
	}
	if (rdma_bind_addr(vlp->id, (struct sockaddr *)&ss)) {
		err = errno;
		if (err == EADDRINUSE)
			rc = FERRY_EADDRINUSE;
		else if (err == ENODEV || err == EADDRNOTAVAIL || err == EINVAL)
			rc = FERRY_EADDRNOTAVAIL;
		else
			rc = ferryi_verbs_errno(err);
		FERRYI_WARN(ctx, "verbs: listen %s: rdma_bind_addr: %s%s", addr->uri,
			    strerror(err),
			    rc == FERRY_EADDRNOTAVAIL ? " (no RDMA device has that address)" : "");
		goto err;
	}
	const struct ferry_config *cfg = ferry_ctx_config(ctx);
	int backlog = cfg->listen_backlog ? (int)FERRYI_MIN(cfg->listen_backlog, 65535u) : 1024;
	if (rdma_listen(vlp->id, backlog)) {
		err = errno;
		rc = err == EADDRINUSE ? FERRY_EADDRINUSE : ferryi_verbs_errno(err);
		FERRYI_WARN(ctx, "verbs: listen %s: rdma_listen: %s", addr->uri, strerror(err));
		goto err;
	}
	if (cm_sockaddr(rdma_get_local_addr(vlp->id), &ss) < 0) {
		rc = FERRY_EINVAL;
		goto err;
	}
	rc = ferryi_addr_format("verbs", &ss, uri, uri_len);
	if (rc < 0)
		goto err;
	FERRYI_DBG(ctx, "verbs: listening on %s", uri);
	lp->watched = vi->cm_ph.wakes_poller; /* connect requests come on the cm channel */
	return 0;
err:
	rdma_destroy_id(vlp->id);
	vlp->id = NULL;
	return rc;
}

void ferryi_verbs_listen_close(struct ferryi_listener_part *lp)
{
	struct ferryi_verbs_lp *vlp = ferryi_lp_priv(lp);
	if (vlp->id) {
		rdma_destroy_id(vlp->id);
		vlp->id = NULL;
	}
}

/* ------------------------------------------------------------------ event channel */

void ferryi_verbs_cm_event_fn(struct ferryi_poll_handle *h, uint32_t events)
{
	struct ferryi_verbs_inst *vi = ferryi_container_of(h, struct ferryi_verbs_inst, cm_ph);
	struct ferry_ctx *ctx = vi->pi->ctx;
	(void)events;

	for (int i = 0; i < CM_EVENT_BUDGET; i++) {
		struct rdma_cm_event *e;
		uint8_t pdata[256];
		size_t plen = 0;

		if (rdma_get_cm_event(vi->cm_ch, &e)) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				FERRYI_WARN(ctx, "verbs: rdma_get_cm_event: %s", strerror(errno));
			return;
		}
		enum rdma_cm_event_type type = e->event;
		int status = e->status;
		struct rdma_cm_id *id = e->id, *listen_id = e->listen_id;
		uint8_t resp_res = e->param.conn.responder_resources;
		uint8_t init_depth = e->param.conn.initiator_depth;
		if (e->param.conn.private_data && e->param.conn.private_data_len) {
			plen = e->param.conn.private_data_len;
			memcpy(pdata, e->param.conn.private_data, plen);
		}
		rdma_ack_cm_event(e);

		FERRYI_TRACE(ctx, "verbs: CM event %s status %d", rdma_event_str(type), status);
		if (type == RDMA_CM_EVENT_CONNECT_REQUEST) {
			struct ferryi_verbs_lp *vlp = listen_id ? listen_id->context : NULL;
			if (!vlp || vlp->kind != FERRYI_VERBS_OBJ_LISTENER) {
				cm_reject(id, FERRY_ECONNREFUSED);
				rdma_destroy_id(id);
				continue;
			}
			cm_connect_request(vlp, id, pdata, plen, resp_res, init_depth);
			continue;
		}
		uint8_t *kind = id ? id->context : NULL;
		if (!kind)
			continue;
		if (*kind == FERRYI_VERBS_OBJ_EP) {
			cm_ep_event((struct ferryi_verbs_ep *)(void *)kind, type, status, pdata, plen);
		} else if (type == RDMA_CM_EVENT_DEVICE_REMOVAL) {
			struct ferryi_verbs_lp *vlp = (struct ferryi_verbs_lp *)(void *)kind;
			FERRYI_ERR(ctx, "verbs: listener %s: RDMA device removed", vlp->lp->uri);
		}
	}
}
