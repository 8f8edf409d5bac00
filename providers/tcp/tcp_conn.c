/*
 * tcp_conn.c - the TCP provider's connection setup: listening sockets and accept,
 * non-blocking connect, and the HELLO / HELLO_ACK handshake.
 *
 * Client: connect() (EINPROGRESS, then EPOLLOUT and SO_ERROR) -> queue HELLO with
 * ferryi_local_info() -> HELLO_ACK validated -> ferryi_ep_connected(). An ERROR frame
 * instead of HELLO_ACK fails the endpoint with the status it carries.
 * Server: accept4() -> ferryi_ep_accepted() -> arm the handshake timer -> HELLO
 * validated -> queue HELLO_ACK -> ferryi_ep_connected(). A refused HELLO is answered
 * with an ERROR frame (EVERSION, EPROTO, ...) before the connection closes.
 */
#define _GNU_SOURCE
#include "tcp_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Accepts per readiness callback before yielding to other work. */
#define TCP_ACCEPT_BATCH 64
/* Pause before accepting again when the process ran out of descriptors. */
#define TCP_ACCEPT_RETRY_MS 100

/* The congestion control ferry gives a connection inside this host by default. */
#define TCP_SAME_HOST_CC "cubic"

/* FERRY_TCP_CONGESTION unset: ferry chooses per connection (ferryi_tcp_path_setup). */
static bool tcp_cc_unset(const struct ferryi_tcp_inst *ti)
{
	return !ti->ext.tcp_congestion || !*ti->ext.tcp_congestion;
}

/* FERRY_TCP_CONGESTION names one algorithm for every connection (not "system"). */
static const char *tcp_cc_for_all(const struct ferryi_tcp_inst *ti)
{
	const char *cc = ti->ext.tcp_congestion;

	return !tcp_cc_unset(ti) && strcmp(cc, "system") != 0 ? cc : NULL;
}

/* Sets fd's congestion control; a refusal is said once per context. */
static bool tcp_set_cc(struct ferryi_prov_inst *pi, int fd, const char *cc, bool same_host)
{
	struct ferryi_tcp_inst *ti = ferryi_inst_priv(pi);

	if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc)) == 0)
		return true;
	if (ti->cc_warned)
		return false;
	ti->cc_warned = true;
	FERRYI_WARN(pi->ctx, "tcp: %s%s refused: %s; connections keep the system's default "
			     "(net.ipv4.tcp_congestion_control)",
		    same_host ? "congestion control inside this host: " : "FERRY_TCP_CONGESTION=",
		    cc, strerror(errno));
	return false;
}

/* Options of every connection, either side, before its first byte. */
static void tcp_sock_setup(struct ferryi_prov_inst *pi, int fd)
{
	const char *cc = tcp_cc_for_all(ferryi_inst_priv(pi));
	int one = 1;

	/* Small frames (acks, probes, 8-byte messages) must not wait for Nagle. */
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	/*
	 * FERRY_TCP_CONGESTION=NAME: every connection, whatever its path. A name the
	 * kernel does not offer to this process (not loaded, or not in
	 * net.ipv4.tcp_allowed_congestion_control) is said once; connections then keep
	 * the default rather than fail. Unset, the choice waits for the handshake, when
	 * both addresses are known (ferryi_tcp_path_setup).
	 */
	if (cc)
		(void)tcp_set_cc(pi, fd, cc, false);
}

/* Both ends of the connection are addresses of this host: loopback carries it. */
static bool tcp_same_host(int fd)
{
	struct sockaddr_storage me, peer;
	socklen_t mlen = sizeof(me), plen = sizeof(peer);

	if (getsockname(fd, (struct sockaddr *)&me, &mlen) ||
	    getpeername(fd, (struct sockaddr *)&peer, &plen) || me.ss_family != peer.ss_family)
		return false;
	if (peer.ss_family == AF_INET) {
		const struct sockaddr_in *a = (const void *)&me, *b = (const void *)&peer;

		return a->sin_addr.s_addr == b->sin_addr.s_addr ||
		       (ntohl(b->sin_addr.s_addr) >> 24) == 127;
	}
	if (peer.ss_family == AF_INET6) {
		const struct sockaddr_in6 *a = (const void *)&me, *b = (const void *)&peer;

		return IN6_ARE_ADDR_EQUAL(&a->sin6_addr, &b->sin6_addr) ||
		       IN6_IS_ADDR_LOOPBACK(&b->sin6_addr) ||
		       (IN6_IS_ADDR_V4MAPPED(&b->sin6_addr) && b->sin6_addr.s6_addr[12] == 127);
	}
	return false;
}

/*
 * What a connection's path decides, once, when the handshake is done.
 *
 * Congestion control. Unset FERRY_TCP_CONGESTION gives a connection inside this host
 * CUBIC, whatever the system's default: no bottleneck or other flow shares loopback
 * for a congestion control to be fair to, and BBR, the default of many hosts, paces
 * part of what the socket holds out from the softirq of the CPU that received the
 * last ACK while the writer sends from its own; loopback then delivers the two out of
 * order, each reordering costs a spurious retransmission and a cut of BBR's bandwidth
 * estimate, and 1 MiB transfers stream at 3-4 GB/s where CUBIC makes 8-9
 * (docs/BENCHMARKS.md, "Congestion control: BBR over loopback", "CUBIC inside this
 * host"). Other connections keep the system's choice; FERRY_TCP_CONGESTION=system
 * keeps it for every connection, a name sets it for every one (tcp_sock_setup).
 *
 * One-sided window. Where a connection inside this host runs BBR all the same (the
 * user asked for it), FERRY_TCP_RMA_WINDOW keeps about one 1 MiB transfer unanswered,
 * so that the socket never holds enough to pace: 1.7x the bandwidth ("One-sided bytes
 * in flight under BBR"). Loss-based congestion control streams faster with the queue
 * deep, and a path with a real round trip needs a bandwidth-delay product in flight.
 *
 * Returns the connection's one-sided window (0: none).
 */
uint64_t ferryi_tcp_path_setup(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_inst *ti = ferryi_tcp_inst(ep);
	uint64_t window = ti->ext.tcp_rma_window;
	char cc[16] = "";
	socklen_t len = sizeof(cc) - 1;

	if (te->fd < 0 || !tcp_same_host(te->fd) ||
	    getsockopt(te->fd, IPPROTO_TCP, TCP_CONGESTION, cc, &len) != 0)
		return 0;
	if (tcp_cc_unset(ti) && strcmp(cc, TCP_SAME_HOST_CC) != 0 &&
	    tcp_set_cc(ep->pi, te->fd, TCP_SAME_HOST_CC, true))
		snprintf(cc, sizeof(cc), "%s", TCP_SAME_HOST_CC);
	FERRYI_DBG(ep->ctx, "tcp: %s: inside this host, congestion control %s", ep->peer, cc);
	if (!window || strncmp(cc, "bbr", 3) != 0)
		return 0;
	FERRYI_DBG(ep->ctx, "tcp: %s: %s inside this host: one-sided window %" PRIu64 " bytes",
		   ep->peer, cc, window);
	return window;
}

void ferryi_tcp_send_error_now(int fd, int status)
{
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_ERROR};
	struct ferryi_tcp_ext e = {.status = status};
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	uint32_t len;

	if (status >= 0 || !ferryi_tcp_status_known(status))
		e.status = FERRY_EPROTO;
	len = ferryi_tcp_encode(buf, &h, &e);
	/* Best effort: a frame this small fits unless the peer stopped reading. */
	(void)send(fd, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL);
}

/* ------------------------------------------------------------------ handshake */

static int tcp_queue_hello(struct ferry_ep *ep, uint8_t type)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_hdr h = {.type = type};
	struct ferryi_tcp_ext e = {.info = te->local};

	return ferryi_tcp_ctl_queue(ep, &h, &e);
}

/* Client: the socket is connected; say HELLO. */
static void tcp_start_hello(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	te->hs = FERRYI_TCP_HS_HELLO_SENT;
	if (tcp_queue_hello(ep, FERRYI_TCP_HELLO) < 0)
		return;
	if (ferryi_tcp_set_events(ep) < 0)
		return;
	ferryi_tcp_flush(ep);
}

void ferryi_tcp_on_hello(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	int rc = ferryi_ctx_admission(ep->ctx);

	if (rc < 0) {
		ferryi_tcp_fail_notify(ep, rc, "handshake refused: %s", ferry_strerror(rc));
		return;
	}
	te->peer = te->rext.info;
	if (tcp_queue_hello(ep, FERRYI_TCP_HELLO_ACK) < 0)
		return;
	ferryi_tcp_hs_done(ep);
	if (te->closed)
		return;
	ferryi_ep_connected(ep, &te->peer);
	/* HELLO_ACK goes out when the readiness callback flushes, with any replies. */
}

void ferryi_tcp_on_hello_ack(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	te->peer = te->rext.info;
	ferryi_tcp_hs_done(ep);
	if (te->closed)
		return;
	ferryi_ep_connected(ep, &te->peer);
}

/* ------------------------------------------------------------------ connect */

static int tcp_connect_errno(int err)
{
	switch (err) {
	case ECONNREFUSED:
		return FERRY_ECONNREFUSED;
	case EHOSTUNREACH:
	case ENETUNREACH:
	case EHOSTDOWN:
	case ENETDOWN:
		return FERRY_EHOSTUNREACH;
	case ETIMEDOUT:
		return FERRY_ETIMEDOUT;
	default:
		return ferryi_tcp_errno(err);
	}
}

int ferryi_tcp_connect(struct ferry_ep *ep, const struct ferryi_addr *addr)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct sockaddr_storage ss;
	unsigned sslen = sizeof(ss);
	int fd, rc;

	ferryi_tcp_ep_init(ep, -1);
	rc = ferryi_addr_resolve(addr, 0, &ss, &sslen);
	if (rc < 0)
		return rc; /* nothing acquired; ep_close, if called, finds nothing to undo */

	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = ferryi_tcp_errno(errno);
		/* The core logs the returned code; the errno detail is for debugging. */
		FERRYI_DBG(ep->ctx, "tcp: socket() for %s failed: %s", addr->uri,
			   strerror(errno));
		return rc;
	}
	tcp_sock_setup(ep->pi, fd);
	te->fd = te->ph.fd = fd;

	do {
		rc = connect(fd, (struct sockaddr *)&ss, sslen);
	} while (rc < 0 && errno == EINTR);
	if (rc < 0 && errno != EINPROGRESS) {
		int err = errno;

		FERRYI_DBG(ep->ctx, "tcp: connect to %s failed at once: %s", addr->uri,
			   strerror(err));
		close(fd);
		te->fd = te->ph.fd = -1;
		return tcp_connect_errno(err);
	}

	te->hs = rc == 0 ? FERRYI_TCP_HS_HELLO_SENT : FERRYI_TCP_HS_CONNECTING;
	te->ph.events = te->hs == FERRYI_TCP_HS_CONNECTING ? EPOLLOUT : EPOLLIN;
	rc = ferryi_poll_add(ep->ctx, &te->ph);
	if (rc < 0) {
		FERRYI_DBG(ep->ctx, "tcp: cannot watch the socket for %s: %s", addr->uri,
			   ferry_strerror(rc));
		close(fd);
		te->fd = te->ph.fd = -1;
		te->hs = FERRYI_TCP_HS_NONE;
		return rc;
	}
	te->polled = true;
	if (te->hs == FERRYI_TCP_HS_HELLO_SENT) {
		ferryi_tcp_enter(ep);
		tcp_start_hello(ep);
		ferryi_tcp_leave(ep);
	}
	return 0;
}

/* EPOLLOUT (or an error) on a connecting socket. */
void ferryi_tcp_connect_done(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	int err = 0;
	socklen_t len = sizeof(err);

	if (getsockopt(te->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS || err == EALREADY || err == EINTR)
		return;
	if (err) {
		ferryi_tcp_fail(ep, tcp_connect_errno(err), "connect failed: %s",
				strerror(err));
		return;
	}
	tcp_start_hello(ep);
}

/* ------------------------------------------------------------------ listen */

static void tcp_lp_accept(struct ferryi_tcp_lp *tl);

static void tcp_lp_poll(struct ferryi_poll_handle *h, uint32_t events)
{
	(void)events;
	tcp_lp_accept(ferryi_container_of(h, struct ferryi_tcp_lp, ph));
}

static void tcp_lp_retry(struct ferryi_timer *t)
{
	struct ferryi_tcp_lp *tl = ferryi_container_of(t, struct ferryi_tcp_lp, retry);
	struct ferry_ctx *ctx = tl->lp->pi->ctx;

	if (tl->polled && ferryi_poll_mod(ctx, &tl->ph, EPOLLIN) == 0)
		tl->ph.events = EPOLLIN;
	tcp_lp_accept(tl);
}

/* Out of descriptors or memory: stop accepting for a moment instead of spinning. */
static void tcp_lp_pause(struct ferryi_tcp_lp *tl, int err)
{
	struct ferry_ctx *ctx = tl->lp->pi->ctx;

	FERRYI_WARN(ctx, "tcp: accept on %s failed: %s; pausing %d ms", tl->lp->uri,
		    strerror(err), TCP_ACCEPT_RETRY_MS);
	if (tl->polled && ferryi_poll_mod(ctx, &tl->ph, 0) == 0)
		tl->ph.events = 0;
	ferryi_timer_arm(ctx, &tl->retry,
			 ferryi_now_ns(ctx) + (uint64_t)TCP_ACCEPT_RETRY_MS * 1000000u);
}

static void tcp_accept_one(struct ferryi_tcp_lp *tl, int fd,
			   const struct sockaddr_storage *ss)
{
	struct ferryi_listener_part *lp = tl->lp;
	struct ferry_ctx *ctx = lp->pi->ctx;
	const struct ferry_config *cfg = ferry_ctx_config(ctx);
	char uri[FERRYI_URI_MAX];
	struct ferry_ep *ep;
	struct ferryi_tcp_ep *te;
	int rc;

	tcp_sock_setup(lp->pi, fd);
	if (ferryi_addr_format("tcp", ss, uri, sizeof(uri)) < 0)
		snprintf(uri, sizeof(uri), "tcp://?");
	ep = ferryi_ep_accepted(lp, uri);
	if (!ep) {
		/* Refused by a limit (logged by the core): say so, then hang up. */
		ferryi_tcp_send_error_now(fd, FERRY_ENOBUFS);
		close(fd);
		return;
	}

	ferryi_tcp_ep_init(ep, fd);
	te = ferryi_tcp_ep(ep);
	te->hs = FERRYI_TCP_HS_WAIT_HELLO;
	te->hs_timeout_ms = cfg ? cfg->handshake_timeout_ms : 5000;
	te->ph.events = EPOLLIN;
	ferryi_tcp_enter(ep);
	rc = ferryi_poll_add(ctx, &te->ph);
	if (rc < 0) {
		ferryi_tcp_fail(ep, rc, "cannot watch the socket of %s: %s", uri,
				ferry_strerror(rc));
	} else {
		te->polled = true;
		if (te->hs_timeout_ms)
			ferryi_timer_arm(ctx, &te->hs_timer,
					 ferryi_now_ns(ctx) +
						 (uint64_t)te->hs_timeout_ms * 1000000u);
	}
	ferryi_tcp_leave(ep);
}

static void tcp_lp_accept(struct ferryi_tcp_lp *tl)
{
	for (int i = 0; i < TCP_ACCEPT_BATCH && tl->fd >= 0; i++) {
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		int fd = accept4(tl->fd, (struct sockaddr *)&ss, &sslen,
				 SOCK_NONBLOCK | SOCK_CLOEXEC);

		if (fd < 0) {
			int err = errno;

			switch (err) {
			case EINTR:
			case ECONNABORTED:
			case EPROTO:
			case EPERM:
				continue; /* that one connection is gone; try the next */
			case EAGAIN:
#if EWOULDBLOCK != EAGAIN
			case EWOULDBLOCK:
#endif
				return;
			case EMFILE:
			case ENFILE:
			case ENOBUFS:
			case ENOMEM:
				tcp_lp_pause(tl, err);
				return;
			default:
				FERRYI_WARN(tl->lp->pi->ctx, "tcp: accept on %s failed: %s",
					    tl->lp->uri, strerror(err));
				return;
			}
		}
		tcp_accept_one(tl, fd, &ss);
	}
}

int ferryi_tcp_listen(struct ferryi_listener_part *lp, const struct ferryi_addr *addr,
		      char *uri, size_t uri_len)
{
	struct ferryi_tcp_lp *tl = ferryi_lp_priv(lp);
	struct ferry_ctx *ctx = lp->pi->ctx;
	const struct ferry_config *cfg = ferry_ctx_config(ctx);
	struct sockaddr_storage ss;
	unsigned sslen = sizeof(ss);
	socklen_t blen;
	int fd, rc, one = 1;

	memset(tl, 0, sizeof(*tl));
	tl->lp = lp;
	tl->fd = -1;
	ferryi_timer_init(&tl->retry, tcp_lp_retry);

	rc = ferryi_addr_resolve(addr, 1, &ss, &sslen);
	if (rc < 0)
		return rc;
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		rc = ferryi_tcp_errno(errno);
		FERRYI_DBG(ctx, "tcp: socket() for %s failed: %s", addr->uri, strerror(errno));
		return rc;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)&ss, sslen) < 0 ||
	    listen(fd, cfg && cfg->listen_backlog ? (int)FERRYI_MIN(cfg->listen_backlog,
								  (uint32_t)INT32_MAX)
						  : 1024) < 0) {
		int err = errno;

		rc = ferryi_tcp_errno(err);
		FERRYI_DBG(ctx, "tcp: cannot listen on %s: %s", addr->uri, strerror(err));
		close(fd);
		return rc;
	}
	blen = sizeof(ss);
	if (getsockname(fd, (struct sockaddr *)&ss, &blen) < 0) {
		rc = ferryi_tcp_errno(errno);
		close(fd);
		return rc;
	}
	rc = ferryi_addr_format("tcp", &ss, uri, uri_len);
	if (rc < 0) {
		close(fd);
		return rc;
	}
	tl->fd = fd;
	tl->ph.fd = fd;
	tl->ph.fn = tcp_lp_poll;
	tl->ph.events = EPOLLIN;
	/* Accepting is no latency path: a busy pass sees it within 50 us, and a hot
	 * listener would keep its endpoints from being read directly. */
	tl->ph.cold = true;
	tl->ph.wakes_poller = true; /* a connection waiting is all it ever reports */
	rc = ferryi_poll_add(ctx, &tl->ph);
	if (rc < 0) {
		close(fd);
		tl->fd = -1;
		return rc;
	}
	tl->polled = true;
	lp->watched = tl->ph.wakes_poller;
	FERRYI_DBG(ctx, "tcp: listening on %s", uri);
	return 0;
}

void ferryi_tcp_listen_close(struct ferryi_listener_part *lp)
{
	struct ferryi_tcp_lp *tl = ferryi_lp_priv(lp);
	struct ferry_ctx *ctx = lp->pi->ctx;

	if (tl->lp != lp)
		return; /* listen never ran */
	if (ferryi_timer_armed(&tl->retry))
		ferryi_timer_cancel(ctx, &tl->retry);
	if (tl->polled) {
		ferryi_poll_del(ctx, &tl->ph);
		tl->polled = false;
	}
	if (tl->fd >= 0) {
		close(tl->fd);
		tl->fd = -1;
	}
}
