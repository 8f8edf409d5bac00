/*
 * ofi_port.c - ports (one fabric endpoint with its CQ, AV, receive and send buffers),
 * their AV entries ("peers"), control messages and retries.
 */
#define _GNU_SOURCE
#include "ofi.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * libfabric 1.17's shm hands an endpoint the very region pointer of a peer endpoint in
 * the same process (ep_name_list) instead of mapping the region itself. Once that
 * peer closes, its region is unmapped and the next send to it crashes. Several ferry
 * contexts in one process (tests, --loopback benchmarks, apps with a context per
 * thread) talk over shm exactly like that. So the live shm ports of this process are
 * registered here; a post to an in-process peer checks, under this lock, that the peer
 * is still open, and a port leaves the registry under the same lock before libfabric
 * closes it. Messages between in-process peers also stay within the inject size, so a
 * receiver never writes an acknowledgement back into a sender's region.
 *
 * Posts hold the lock shared: a post may last milliseconds (shm copies a 4 MiB read
 * piece with process_vm_readv inside fi_read), and a mutex taken back to back by one
 * thread's stream of such posts starved every other context of the process: a probe
 * waited 100 ms to leave and its sender declared a live peer dead. Only the registry's
 * changes take it exclusively, and those are preferred, so streams cannot hold off a
 * closing port; no thread takes it twice, which that preference requires.
 */
static pthread_rwlock_t ofi_shm_lock = PTHREAD_RWLOCK_WRITER_NONRECURSIVE_INITIALIZER_NP;
static struct ferryi_list ofi_shm_ports = { { &ofi_shm_ports.head, &ofi_shm_ports.head } };
static uint64_t ofi_shm_next_uid;

static struct ofi_port *ofi_shm_find_locked(const char *name, uint64_t uid)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ofi_shm_ports, n, t) {
		struct ofi_port *p = ferryi_container_of(n, struct ofi_port, shm_link);
		if (name ? strcmp(p->shm_name, name) == 0 : p->shm_uid == uid)
			return p;
	}
	return NULL;
}

static void ofi_shm_register(struct ofi_port *port)
{
	pthread_rwlock_wrlock(&ofi_shm_lock);
	port->shm_uid = ++ofi_shm_next_uid;
	ferryi_list_push_back(&ofi_shm_ports, &port->shm_link);
	pthread_rwlock_unlock(&ofi_shm_lock);
}

/* Whether a post to peer may go ahead; for in-process peers the lock stays held. */
bool ofi_post_begin(struct ofi_peer *peer)
{
	if (!peer->local_uid)
		return true;
	pthread_rwlock_rdlock(&ofi_shm_lock);
	if (ofi_shm_find_locked(NULL, peer->local_uid))
		return true;
	pthread_rwlock_unlock(&ofi_shm_lock);
	return false;
}

void ofi_post_end(struct ofi_peer *peer)
{
	if (peer->local_uid)
		pthread_rwlock_unlock(&ofi_shm_lock);
}

/* Largest eager payload we accept from a peer on this port. */
uint64_t ofi_eager_limit(const struct ofi_port *port, const struct ofi_peer *peer,
			 uint64_t want)
{
	if (peer->local_uid && port->dom->inject > OFI_HDR_LEN)
		return FERRYI_MIN(want, port->dom->inject - OFI_HDR_LEN);
	return FERRYI_MIN(want, OFI_EAGER_MAX);
}

int ofi_peer_get(struct ofi_port *port, const void *addr, size_t len,
		 struct ofi_peer **out)
{
	struct ferryi_list_node *n, *t;
	struct ofi_peer *peer;

	if (len == 0 || len > OFI_ADDR_MAX)
		return FERRY_EINVAL;
	ferryi_list_foreach_safe(&port->peers, n, t) {
		peer = ferryi_container_of(n, struct ofi_peer, link);
		if (!peer->removed && peer->addrlen == len && memcmp(peer->addr, addr, len) == 0) {
			peer->refs++;
			*out = peer;
			return 0;
		}
	}
	peer = calloc(1, sizeof(*peer));
	if (!peer)
		return FERRY_ENOMEM;
	int rc = fi_av_insert(port->av, addr, 1, &peer->fa, 0, NULL);
	if (rc != 1) {
		FERRYI_INFO(ofi_ctx(port), "ofi: %s: fi_av_insert: %s", port->dom->prov_name,
			    rc < 0 ? fi_strerror(-rc) : "address not accepted");
		free(peer);
		return rc < 0 ? ofi_fi_err(-rc) : FERRY_EHOSTUNREACH;
	}
	peer->refs = 1;
	ferryi_list_init(&peer->rma_wait);
	ferryi_list_init(&peer->lingering);
	peer->addrlen = len;
	memcpy(peer->addr, addr, len);
	if (port->dom->is_shm) {
		char name[OFI_ADDR_MAX + 1];
		memcpy(name, addr, len);
		name[len] = '\0';
		ofi_doorbell_name(name, &peer->db, &peer->dblen);
		pthread_rwlock_rdlock(&ofi_shm_lock);
		struct ofi_port *local = ofi_shm_find_locked(name, 0);
		peer->local_uid = local ? local->shm_uid : 0;
		pthread_rwlock_unlock(&ofi_shm_lock);
	}
	ferryi_list_push_back(&port->peers, &peer->link);
	*out = peer;
	return 0;
}

void ofi_peer_put(struct ofi_port *port, struct ofi_peer *peer)
{
	if (!peer || --peer->refs > 0)
		return;
	ferryi_list_remove(&peer->link);
	if (!port->closing && !peer->removed)
		(void)fi_av_remove(port->av, &peer->fa, 1, 0);
	ofi_wake_unmap(peer);
	free(peer);
}

/*
 * Drops the peer's AV entry now: rxm then closes the connection and gives back, with
 * FI_ECANCELED, everything posted to it (our one-sided ops included), and the peer's
 * transfers from us stop. The record stays until its last reference.
 */
void ofi_peer_cut(struct ofi_port *port, struct ofi_peer *peer)
{
	if (peer->removed || port->dom->is_shm)
		return;
	peer->removed = true;
	(void)fi_av_remove(port->av, &peer->fa, 1, 0);
}

struct ofi_txbuf *ofi_tx_get(struct ofi_port *port)
{
	struct ferryi_list_node *n = ferryi_list_pop_front(&port->tx_free);
	if (n)
		return ferryi_container_of(n, struct ofi_txbuf, link);
	if (port->ntx >= OFI_TX_MAX)
		return NULL;
	struct ofi_txchunk *ch = calloc(1, sizeof(*ch));
	if (!ch)
		return NULL;
	ch->mem = aligned_alloc(64, (size_t)OFI_TX_CHUNK * OFI_BUF_LEN);
	void *desc = NULL;
	if (!ch->mem || ofi_mr_local(port, ch->mem, (size_t)OFI_TX_CHUNK * OFI_BUF_LEN,
				     FI_SEND, &ch->mr, &desc) < 0) {
		free(ch->mem);
		free(ch);
		return NULL;
	}
	for (unsigned i = 0; i < OFI_TX_CHUNK; i++) {
		struct ofi_txbuf *tb = &ch->bufs[i];
		tb->c.kind = OFI_CTX_TX;
		tb->port = port;
		tb->desc = desc;
		tb->buf = ch->mem + (size_t)i * OFI_BUF_LEN;
		if (i > 0)
			ferryi_list_push_back(&port->tx_free, &tb->link);
	}
	ch->next = port->chunks;
	port->chunks = ch;
	port->ntx += OFI_TX_CHUNK;
	return &ch->bufs[0];
}

void ofi_tx_put(struct ofi_port *port, struct ofi_txbuf *tb)
{
	tb->ep = NULL;
	tb->op = NULL;
	ferryi_list_push_front(&port->tx_free, &tb->link);
}

void ofi_rx_post(struct ofi_port *port, struct ofi_rxbuf *rb)
{
	if (port->closing)
		return;
	ssize_t rc = fi_recv(port->ep, rb->buf, OFI_BUF_LEN, port->rx_desc, FI_ADDR_UNSPEC,
			     &rb->c);
	if (rc == 0)
		return;
	if (rc != -FI_EAGAIN)
		FERRYI_WARN(ofi_ctx(port), "ofi: %s: fi_recv: %s; retrying", port->dom->prov_name,
			    fi_strerror((int)-rc));
	ferryi_list_push_back(&port->rx_repost, &rb->link);
	ofi_port_kick(port, 50000);
}

/*
 * A consumed buffer goes back to libfabric at the start of the port's next pass rather
 * than at once: in a ping-pong the answer then leaves before the repost (on shm,
 * fi_recv is a quarter of our receive path), which happens while we wait for the next
 * message. A pass that drains many messages reposts once a quarter of the buffers
 * waits, so a stream never runs short. A pass before a sleep (or with the context fd
 * exported) reposts at once, before its last look at the CQ: a repost can complete at
 * once (an unexpected message libfabric kept), and nobody would read that completion.
 */
void ofi_rx_done(struct ofi_port *port, struct ofi_rxbuf *rb)
{
	if (!port->rx_defer) {
		ofi_rx_post(port, rb);
		return;
	}
	ferryi_list_push_back(&port->rx_done, &rb->link);
	if (++port->rx_ndone >= OFI_RX_DEPTH / 4)
		ofi_rx_post_done(port);
}

void ofi_rx_post_done(struct ofi_port *port)
{
	struct ferryi_list_node *n;

	port->rx_ndone = 0;
	while ((n = ferryi_list_pop_front(&port->rx_done)))
		ofi_rx_post(port, ferryi_container_of(n, struct ofi_rxbuf, link));
}

/* Posts a filled send buffer; 0 when libfabric took it, else -FI_E*. */
int ofi_tx_post(struct ofi_port *port, struct ofi_peer *peer, struct ofi_txbuf *tb)
{
	/*
	 * fi_inject only on shm: rxm (1.17) crashes when it flushes, at endpoint close,
	 * an injected message still queued on a stalled connection (the flushed entry
	 * has no context). A completion per message is cheap next to that.
	 */
	bool inject = port->dom->is_shm && tb->len <= port->dom->inject;
	ssize_t rc;

	if (peer->removed || !ofi_post_begin(peer))
		return -FI_ENOTCONN; /* cut, or an in-process peer that has closed */
	if (inject)
		rc = fi_inject(port->ep, tb->buf, tb->len, peer->fa);
	else
		rc = fi_send(port->ep, tb->buf, tb->len, tb->desc, peer->fa, &tb->c);
	ofi_post_end(peer);
	if (rc)
		return (int)rc;
	ferryi_stats(port->dom->inst->pi)->wire_bytes_sent += tb->len;
	/* The handshake and BYE may travel before or after the hello's word is current. */
	ofi_ring(port, peer, tb->kind == OFI_K_CONNREQ || tb->kind == OFI_K_CONNACK ||
				     tb->kind == OFI_K_CONNREJ || tb->kind == OFI_K_BYE);
	if (inject) {
		ofi_tx_done(tb, NULL, 0, NULL); /* the buffer never left: no accounting */
		return 0;
	}
	tb->peer = peer;
	peer->refs++;
	port->tx_out++;
	if (tb->ep)
		ferryi_list_push_back(&ofi_ep(tb->ep)->tx_busy, &tb->link);
	return 0;
}

void ofi_ctl_free(struct ofi_port *port, struct ofi_ctl *cl)
{
	ferryi_list_remove(&cl->link);
	cl->peer->ctl_queued--;
	ofi_peer_put(port, cl->peer);
	free(cl);
}

/*
 * Sends queued control messages, in order per peer. A peer that libfabric refuses
 * with EAGAIN (rxm still connecting, or never: nobody there) holds up only its own
 * messages, and those are dropped after a deadline.
 */
void ofi_ctl_flush(struct ofi_port *port)
{
	struct ferryi_list_node *n, *t;
	uint64_t pass = ++port->ctl_pass;
	uint64_t now = 0;

	ferryi_list_foreach_safe(&port->ctlq, n, t) {
		struct ofi_ctl *cl = ferryi_container_of(n, struct ofi_ctl, link);
		struct ofi_ep *oep = cl->ep ? ofi_ep(cl->ep) : NULL;
		struct ofi_hdr h = {
			.kind = cl->kind, .dst = cl->dst, .tag = cl->tag, .aux = cl->aux,
		};
		if (cl->peer->ctl_pass == pass)
			continue; /* an earlier message to this peer is waiting */
		struct ofi_txbuf *tb = ofi_tx_get(port);
		if (!tb)
			return; /* a send completion frees one and retries */
		if (oep && !oep->closing && oep->remote_conn)
			h.credits = ofi_take_owed(oep);
		if (cl->kind == OFI_K_CREDIT) {
			if (oep)
				oep->credit_msg_out = false;
			if (h.credits == 0) { /* already returned with other traffic */
				ofi_tx_put(port, tb);
				ofi_ctl_free(port, cl);
				continue;
			}
		}
		ofi_hdr_put(tb->buf, &h);
		memcpy(tb->buf + OFI_HDR_LEN, cl->payload, cl->len);
		tb->len = OFI_HDR_LEN + cl->len;
		tb->kind = cl->kind;
		tb->ep = cl->ep;
		int rc = ofi_tx_post(port, cl->peer, tb);
		if (rc == -FI_EAGAIN) {
			if (oep && h.credits)
				ofi_give_back_owed(oep, h.credits);
			if (cl->kind == OFI_K_CREDIT && oep)
				oep->credit_msg_out = true;
			ofi_tx_put(port, tb);
			if (!now)
				now = ferryi_now_ns(ofi_ctx(port));
			if (now >= cl->deadline_ns) {
				FERRYI_INFO(ofi_ctx(port), "ofi: %s: control message %u dropped: "
							   "the peer did not become reachable",
					    port->dom->prov_name, cl->kind);
				if (cl->ep && (cl->kind == OFI_K_CONNREQ || cl->kind == OFI_K_CONNACK))
					ferryi_ep_failed(cl->ep, FERRY_ETIMEDOUT, "peer unreachable");
				ofi_ctl_free(port, cl);
				continue;
			}
			cl->peer->ctl_pass = pass;
			ofi_port_kick(port, 50000);
			if (cl->kind == OFI_K_CONNREQ && oep && !oep->closing)
				ofi_probe_start(oep);
			continue;
		}
		if (rc) {
			ofi_tx_put(port, tb);
			FERRYI_INFO(ofi_ctx(port), "ofi: %s: sending control message %u: %s",
				    port->dom->prov_name, cl->kind, fi_strerror(-rc));
			if (cl->ep && (cl->kind == OFI_K_CONNREQ || cl->kind == OFI_K_CONNACK))
				ferryi_ep_failed(cl->ep, ofi_fi_err(-rc), "cannot send the handshake");
		}
		ofi_ctl_free(port, cl);
	}
}

int ofi_ctl_queue(struct ofi_port *port, struct ofi_peer *peer, struct ferry_ep *ep,
		  uint8_t kind, uint64_t dst, uint64_t tag, uint64_t aux,
		  const void *payload, size_t len)
{
	struct ofi_ctl *cl = calloc(1, sizeof(*cl));
	if (!cl)
		return FERRY_ENOMEM;
	if (len > sizeof(cl->payload)) {
		free(cl);
		return FERRY_EINVAL;
	}
	cl->peer = peer;
	peer->refs++;
	peer->ctl_queued++;
	cl->ep = ep;
	cl->deadline_ns = ferryi_now_ns(ofi_ctx(port)) +
			  (uint64_t)ferry_ctx_config(ofi_ctx(port))->handshake_timeout_ms * 1000000ull;
	cl->kind = kind;
	cl->dst = dst;
	cl->tag = tag;
	cl->aux = aux;
	cl->len = (uint32_t)len;
	if (len)
		memcpy(cl->payload, payload, len);
	ferryi_list_push_back(&port->ctlq, &cl->link);
	ofi_ctl_flush(port);
	return 0;
}

/*
 * Fabric objects left open on purpose (a port with transfers in flight, the domain
 * and fabric under it): held for the process's life, referenced from here, so that a
 * leak checker sees them as what they are, kept, rather than lost.
 */
static pthread_mutex_t ofi_kept_lock = PTHREAD_MUTEX_INITIALIZER;
static void **ofi_kept;
static size_t ofi_nkept, ofi_kept_cap;

void ofi_keep_open(void *obj)
{
	pthread_mutex_lock(&ofi_kept_lock);
	if (ofi_nkept == ofi_kept_cap) {
		size_t cap = ofi_kept_cap ? 2 * ofi_kept_cap : 16;
		void **p = realloc(ofi_kept, cap * sizeof(*p));
		if (p) {
			ofi_kept = p;
			ofi_kept_cap = cap;
		}
	}
	if (ofi_nkept < ofi_kept_cap)
		ofi_kept[ofi_nkept++] = obj;
	pthread_mutex_unlock(&ofi_kept_lock);
}

void ofi_port_destroy(struct ofi_port *port)
{
	struct ofi_inst *oi = port->dom->inst;
	struct ferryi_list_node *n;

	port->closing = true;
	ofi_port_unwatch(port);
	if (ferryi_node_linked(&port->link))
		ferryi_list_remove(&port->link);
	if (port->dom->client == port)
		port->dom->client = NULL;
	if (port->ep && !port->dom->is_shm && (port->rma_out || port->orphan_holds)) {
		/*
		 * One-sided transfers may still be in flight (ours, or a peer's reads we
		 * were serving or had granted when its endpoint closed): when a context is
		 * destroyed while a peer stalls mid-transfer, or while rendezvous sends the
		 * peer has not finished reading are pending (a grant does not tell whether
		 * the read began). rxm (1.17) crashes when such an endpoint closes (it
		 * flushes completions that have no context), so it is left open, with
		 * everything it may still touch. No progress is driven on it again.
		 */
		FERRYI_WARN(ofi_ctx(port), "ofi: %s: leaving a fabric endpoint open: %u transfers "
					   "of ours and %u reads of a peer's were in flight or "
					   "granted", port->dom->prov_name, port->rma_out,
			    port->orphan_holds);
		port->dom->leaked++;
		ofi_mr_drop_port(oi, port);
		ofi_keep_open(port);
		return;
	}
	ofi_mr_drop_port(oi, port);
	if (ferryi_node_linked(&port->shm_link)) {
		pthread_rwlock_wrlock(&ofi_shm_lock);
		ferryi_list_remove(&port->shm_link);
		if (port->ep)
			fi_close(&port->ep->fid);
		port->ep = NULL;
		pthread_rwlock_unlock(&ofi_shm_lock);
	}
	if (port->ep)
		fi_close(&port->ep->fid); /* libfabric gives every buffer back here */
	port->ep = NULL;
	ofi_port_cq_close(port);     /* only now: the endpoint flushed into it */
	/* Whatever is left was abandoned by endpoints the core freed (context destroy):
	 * free our records without touching their ops or endpoints. */
	while ((n = ferryi_list_first(&port->rmas)))
		ofi_free_rma(port, ferryi_container_of(n, struct ofi_rma, port_link), false);
	while ((n = ferryi_list_pop_front(&port->ctlq))) {
		struct ofi_ctl *cl = ferryi_container_of(n, struct ofi_ctl, link);
		cl->peer->refs--;
		free(cl);
	}
	while ((n = ferryi_list_pop_front(&port->peers))) {
		struct ofi_peer *peer = ferryi_container_of(n, struct ofi_peer, link);
		ofi_wake_unmap(peer);
		free(peer);
	}
	if (port->av)
		fi_close(&port->av->fid);
	if (port->rx_mr)
		fi_close(&port->rx_mr->fid);
	free(port->rx_mem);
	while (port->chunks) {
		struct ofi_txchunk *ch = port->chunks;
		port->chunks = ch->next;
		if (ch->mr)
			fi_close(&ch->mr->fid);
		free(ch->mem);
		free(ch);
	}
	free(port);
}

void ofi_port_put(struct ofi_port *port)
{
	if (--port->refs == 0)
		ofi_port_destroy(port);
}

int ofi_port_open(struct ofi_dom *dom, const void *src, size_t srclen, const char *shm_name,
		  struct ofi_port **out)
{
	struct ofi_inst *oi = dom->inst;
	struct ferry_ctx *ctx = oi->pi->ctx;
	struct fi_av_attr av_attr = { .type = FI_AV_UNSPEC, .count = 64 };
	struct fi_info *info;
	struct ofi_port *port;
	int rc;

	port = calloc(1, sizeof(*port));
	if (!port)
		return FERRY_ENOMEM;
	port->dom = dom;
	port->refs = 1;
	port->ph.fd = -1;
	ofi_port_timer_init(port);
	ferryi_node_init(&port->link);
	ferryi_node_init(&port->shm_link);
	ferryi_list_init(&port->rx_repost);
	ferryi_list_init(&port->rx_done);
	ferryi_list_init(&port->tx_free);
	ferryi_list_init(&port->ctlq);
	ferryi_list_init(&port->blocked);
	ferryi_list_init(&port->rma_retry);
	ferryi_list_init(&port->peers);
	ferryi_list_init(&port->rmas);
	do
		port->ksid = (dom->mr_mode & FI_MR_ENDPOINT) ? (uint32_t)ferryi_random64() : dom->ksid;
	while (port->ksid == 0);

	info = fi_dupinfo(dom->info);
	if (!info) {
		rc = FERRY_ENOMEM;
		goto err;
	}
	if (src || shm_name) {
		const void *a = shm_name ? (const void *)shm_name : src;
		size_t alen = shm_name ? strlen(shm_name) + 1 : srclen;
		free(info->src_addr);
		info->src_addr = malloc(alen);
		if (!info->src_addr) {
			info->src_addrlen = 0;
			fi_freeinfo(info);
			rc = FERRY_ENOMEM;
			goto err;
		}
		memcpy(info->src_addr, a, alen);
		info->src_addrlen = alen;
	}
	rc = fi_endpoint(dom->domain, info, &port->ep, NULL);
	fi_freeinfo(info);
	if (rc) {
		FERRYI_WARN(ctx, "ofi: %s: fi_endpoint: %s", dom->prov_name, fi_strerror(-rc));
		port->ep = NULL;
		rc = ofi_fi_err(-rc);
		goto err;
	}
	rc = ofi_port_cq_open(port);
	if (rc < 0)
		goto err;
	rc = fi_av_open(dom->domain, &av_attr, &port->av, NULL);
	if (rc) {
		FERRYI_WARN(ctx, "ofi: %s: fi_av_open: %s", dom->prov_name, fi_strerror(-rc));
		port->av = NULL;
		rc = ofi_fi_err(-rc);
		goto err;
	}
	rc = fi_ep_bind(port->ep, &port->cq->fid, FI_TRANSMIT | FI_RECV);
	if (!rc)
		rc = fi_ep_bind(port->ep, &port->av->fid, 0);
	if (!rc)
		rc = fi_enable(port->ep);
	if (rc) {
		enum ferry_log_level lvl = rc == -FI_EADDRINUSE || rc == -FI_EBUSY ? FERRY_LOG_DEBUG : FERRY_LOG_WARN;
		FERRYI_LOG(ctx, lvl, "ofi: %s: enabling the endpoint: %s", dom->prov_name,
			   fi_strerror(-rc));
		rc = ofi_fi_err(-rc);
		goto err;
	}
	port->namelen = sizeof(port->name);
	rc = fi_getname(&port->ep->fid, port->name, &port->namelen);
	if (rc || port->namelen > OFI_ADDR_MAX) {
		FERRYI_WARN(ctx, "ofi: %s: fi_getname: %s", dom->prov_name,
			    rc ? fi_strerror(-rc) : "address too long");
		rc = rc ? ofi_fi_err(-rc) : FERRY_ENOBUFS;
		goto err;
	}
	if (dom->is_shm) {
		memcpy(port->shm_name, port->name, port->namelen);
		port->shm_name[port->namelen < OFI_ADDR_MAX ? port->namelen : OFI_ADDR_MAX - 1] = 0;
		ofi_shm_register(port);
	}

	port->rx_mem = aligned_alloc(64, (size_t)OFI_RX_DEPTH * OFI_BUF_LEN);
	if (!port->rx_mem) {
		rc = FERRY_ENOMEM;
		goto err;
	}
	rc = ofi_mr_local(port, port->rx_mem, (size_t)OFI_RX_DEPTH * OFI_BUF_LEN, FI_RECV,
			  &port->rx_mr, &port->rx_desc);
	if (rc < 0)
		goto err;
	rc = ofi_mr_add_port(oi, port);
	if (rc < 0)
		goto err;
	rc = ofi_port_watch(port);
	if (rc < 0)
		goto err;
	ferryi_list_push_back(&dom->ports, &port->link);
	for (unsigned i = 0; i < OFI_RX_DEPTH; i++) {
		struct ofi_rxbuf *rb = &port->rx[i];
		rb->c.kind = OFI_CTX_RX;
		rb->port = port;
		rb->buf = port->rx_mem + (size_t)i * OFI_BUF_LEN;
		ofi_rx_post(port, rb);
	}
	*out = port;
	return 0;
err:
	ofi_port_destroy(port);
	return rc;
}

int ofi_client_port(struct ofi_dom *dom, struct ofi_port **out)
{
	if (!dom->client) {
		char name[64];
		struct ofi_port *port;
		int rc;
		if (dom->is_shm) {
			/* A name of our own: shm appends counters to names it makes up. */
			snprintf(name, sizeof(name), "ferry-c-%d-%08x", (int)getpid(),
				 (unsigned)ferryi_random64());
		}
		rc = ofi_port_open(dom, NULL, 0, dom->is_shm ? name : NULL, &port);
		if (rc < 0)
			return rc;
		dom->client = port; /* its first reference is the dom's */
	}
	dom->client->refs++;
	*out = dom->client;
	return 0;
}

void ofi_port_retry(struct ofi_port *port)
{
	struct ferryi_list todo;
	struct ferryi_list_node *n;

	while ((n = ferryi_list_pop_front(&port->rx_repost))) {
		struct ofi_rxbuf *rb = ferryi_container_of(n, struct ofi_rxbuf, link);
		ssize_t rc = fi_recv(port->ep, rb->buf, OFI_BUF_LEN, port->rx_desc, FI_ADDR_UNSPEC,
				     &rb->c);
		if (rc) {
			ferryi_list_push_front(&port->rx_repost, &rb->link);
			break;
		}
	}
	ofi_ctl_flush(port);
	/* Snapshots: whatever blocks again queues itself anew. */
	ferryi_list_init(&todo);
	while ((n = ferryi_list_pop_front(&port->blocked)))
		ferryi_list_push_back(&todo, n);
	while ((n = ferryi_list_pop_front(&todo)))
		ofi_ep_flush(ferryi_container_of(n, struct ofi_ep, blocked_link));
	while ((n = ferryi_list_pop_front(&port->rma_retry)))
		ferryi_list_push_back(&todo, n);
	while ((n = ferryi_list_pop_front(&todo)))
		ofi_rma_post(ferryi_container_of(n, struct ofi_rma, retry_link));
}
