/*
 * ofi_cq.c - completion queues, readiness, error translation and retries.
 *
 * Readiness. A port's CQ is opened with FI_WAIT_FD where the fabric supports it (tcp,
 * verbs): its fd goes into the context's epoll set through a poll handle. libfabric's
 * wait fds are only trustworthy after fi_trywait() said so, so a drain before a sleep
 * (prepare_sleep) ends with fi_trywait and drains again while it answers -FI_EAGAIN
 * (a few rounds, then a short timer instead of spinning). Busy progress passes skip
 * it (it costs system calls and nobody sleeps), unless the application holds the
 * context fd and may sleep on it at any time.
 *
 * shm (libfabric 1.17) has no wait object at all. A shm port therefore opens a
 * doorbell: an AF_UNIX datagram socket in the abstract namespace, named after the
 * port's shm region. A peer rings it (one byte, never blocking) after handing us work
 * that needs our progress: a message, or a large message whose sender waits for us to
 * take it. The doorbell is the poll handle. Our own completions that appear inside a
 * post (shm's single-copy RMA) are read by the progress hook, which the core runs on
 * every pass, and the retry timer below catches anything left.
 *
 * Ringing costs a system call on each side per message, most of a small message's
 * latency, and is wasted on a peer that busy-polls. So a context publishes whether it
 * may sleep: a word in a page of a memfd (struct ofi_wake_page), which peers map
 * read-only through /proc/<pid>/fd/<fd> as our hello tells them, checking the random
 * token it also carries. The word is set before a thread sleeps (prepare_sleep) and
 * stays set while the context fd is exported (the application may sleep on it at any
 * time); a progress pass clears it when nobody sleeps. The two sides form Dekker's
 * pattern, so one of them sees the other:
 *     sleeper: asleep = 1; full fence; read the CQ (shm reads its queue); sleep
 *     peer:    put the message in the sleeper's queue; full fence; ring if asleep
 * Either the sleeper's last look finds the message, or the peer sees the word and
 * rings. A peer whose word we do not know (no hello yet, a mapping that failed, a
 * peer of another user or pid namespace) is always rung, as are the handshake and
 * BYE, which come before or after the hello's word is current.
 *
 * EAGAIN. A post that libfabric refuses with -FI_EAGAIN stays queued (ofi_ep.c) and is
 * retried from progress: after every drain, and from a per-port timer whose delay
 * doubles from 50 us to 2 ms while work stays blocked. Nothing loops on EAGAIN.
 */
#define _GNU_SOURCE
#include "ofi.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define OFI_CQ_BATCH 16
#define OFI_CQ_BUDGET 1024         /* entries per drain before yielding    */
#define OFI_TRYWAIT_ROUNDS 4
#define OFI_BACKOFF_MIN_NS 50000ull
#define OFI_BACKOFF_MAX_NS 2000000ull
#define OFI_SAFETY_POLL_NS 100000000ull /* doorbell ports with work in flight */

/* ------------------------------------------------------------------ errors */

int ofi_fi_err(int e)
{
	if (e < 0)
		e = -e;
	switch (e) {
	case 0:
		return 0;
	case FI_ENOMEM:
		return FERRY_ENOMEM;
	case FI_EAGAIN:
		return FERRY_EAGAIN;
	case FI_EACCES:
	case FI_EPERM:
		return FERRY_EACCES;
	case FI_EKEYREJECTED:
	case FI_ENOKEY:
	case FI_EBADFLAGS:
		return FERRY_EBADKEY;
	case FI_ETRUNC:
	case FI_EMSGSIZE:
	case FI_ETOOSMALL:
		return FERRY_EMSGSIZE;
	case FI_ECONNREFUSED:
		return FERRY_ECONNREFUSED;
	case FI_ECONNRESET:
	case FI_ENOTCONN:
	case FI_ECONNABORTED:
	case FI_ESHUTDOWN:
	case EPIPE:
		return FERRY_ECONNRESET;
	case FI_ETIMEDOUT:
		return FERRY_ETIMEDOUT;
	case FI_EHOSTUNREACH:
	case FI_ENETUNREACH:
	case FI_EHOSTDOWN:
	case FI_ENETDOWN:
		return FERRY_EHOSTUNREACH;
	case FI_EADDRINUSE:
	case FI_EBUSY:
		return FERRY_EADDRINUSE;
	case FI_EADDRNOTAVAIL:
		return FERRY_EADDRNOTAVAIL;
	case FI_ECANCELED:
		return FERRY_ECANCELED;
	case FI_ENOSYS:
	case FI_EOPNOTSUPP:
		return FERRY_ENOSYS;
	case FI_ENODATA:
	case FI_ENODEV:
		return FERRY_ENODEV;
	case FI_EINVAL:
		return FERRY_EINVAL;
	default:
		return FERRY_EIO;
	}
}

int ofi_status_from_cqe(const struct ofi_port *port, const struct fi_cq_err_entry *e, bool rma)
{
	/*
	 * A target that refuses a one-sided access tears the connection down on tcp
	 * (the initiator sees ECANCELED with prov_errno ENOENT) and reports a remote
	 * access error on verbs. Both mean the key, not the link, was at fault.
	 */
	if (rma && e->err == FI_ECANCELED && e->prov_errno == ENOENT)
		return FERRY_EBADKEY;
	if (rma && port->dom->is_verbs && e->err == FI_EIO && e->prov_errno == 10 /* REM_ACCESS */)
		return FERRY_EBADKEY;
	if (rma && (e->err == FI_EACCES || e->err == FI_EPERM))
		return FERRY_EBADKEY;
	return ofi_fi_err(e->err);
}

const char *ofi_cqe_str(const struct ofi_port *port, const struct fi_cq_err_entry *e,
			char *buf, size_t len)
{
	const char *prov = fi_cq_strerror(port->cq, e->prov_errno, e->err_data, NULL, 0);
	snprintf(buf, len, "%s (%s, provider errno %d: %s)", fi_strerror(e->err),
		 port->dom->prov_name, e->prov_errno, prov ? prov : "?");
	return buf;
}

/* ------------------------------------------------------------------ doorbells */

void ofi_doorbell_name(const char *shm_name, struct sockaddr_un *sa, socklen_t *len)
{
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	/* Abstract namespace: sun_path[0] = 0, no file to clean up after a crash. */
	int n = snprintf(sa->sun_path + 1, sizeof(sa->sun_path) - 1, "ferry-ofi-db:%s", shm_name);
	if (n < 0)
		n = 0;
	if ((size_t)n > sizeof(sa->sun_path) - 2)
		n = (int)sizeof(sa->sun_path) - 2;
	*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + (size_t)n);
}

void ofi_ring(struct ofi_port *port, struct ofi_peer *peer, bool force)
{
	struct ofi_inst *oi = port->dom->inst;
	static const char one = 1;

	if (!port->dom->is_shm || !peer || !peer->dblen)
		return;
	if (!force && peer->wake) {
		/* Our post before its word: the other half of the sleeper's order. */
		atomic_thread_fence(memory_order_seq_cst);
		if (!atomic_load_explicit(&peer->wake->asleep, memory_order_relaxed))
			return;
	}
	if (oi->db_fd < 0) {
		oi->db_fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (oi->db_fd < 0)
			return;
	}
	/* A full doorbell means wake-ups are already pending: dropping is fine. */
	(void)sendto(oi->db_fd, &one, 1, MSG_DONTWAIT | MSG_NOSIGNAL,
		     (const struct sockaddr *)&peer->db, peer->dblen);
}

/* ------------------------------------------------------------------ may-sleep words */

/* Our word, on the first shm port. Without it peers ring with every message. */
void ofi_wake_open(struct ofi_inst *oi)
{
	struct ferry_ctx *ctx = oi->pi->ctx;
	uint64_t token;

	if (oi->wake)
		return;
	int fd = memfd_create("ferry-ofi-wake", MFD_CLOEXEC);
	if (fd < 0) {
		FERRYI_DBG(ctx, "ofi: memfd_create: %s; shm peers will ring every message",
			   strerror(errno));
		return;
	}
	void *p = MAP_FAILED;
	if (ftruncate(fd, OFI_WAKE_PAGE) == 0)
		p = mmap(NULL, OFI_WAKE_PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		FERRYI_DBG(ctx, "ofi: mapping the may-sleep page: %s", strerror(errno));
		close(fd);
		return;
	}
	do
		token = ferryi_random64();
	while (token == 0);
	oi->wake = p;
	oi->wake->token = token;
	/* Set until a progress pass finds nobody asleep: a sleeper may exist already. */
	atomic_store(&oi->wake->asleep, 1);
	oi->wake_fd = fd;
}

void ofi_wake_close(struct ofi_inst *oi)
{
	if (oi->wake)
		munmap(oi->wake, OFI_WAKE_PAGE);
	oi->wake = NULL;
	if (oi->wake_fd >= 0)
		close(oi->wake_fd);
	oi->wake_fd = -1;
}

/*
 * may_sleep: before a sleep, or while the context fd is exported. Called before the
 * CQs are read: setting the word is the first half of the sleeper's order.
 */
void ofi_wake_sleepy(struct ofi_inst *oi, bool may_sleep)
{
	if (!oi->wake)
		return;
	uint32_t want = may_sleep ? 1 : 0;
	if (atomic_load_explicit(&oi->wake->asleep, memory_order_relaxed) != want)
		atomic_store_explicit(&oi->wake->asleep, want, memory_order_relaxed);
	if (may_sleep)
		atomic_thread_fence(memory_order_seq_cst);
}

/*
 * The peer context's word, from its hello. A peer address that a new process took
 * over brings another token: the old mapping goes. Anything amiss leaves the peer
 * without a word (rung with every message).
 */
void ofi_wake_map(struct ofi_port *port, struct ofi_peer *peer, uint32_t pid, uint32_t fd,
		  uint64_t token)
{
	char path[64];
	struct stat st;

	if (!port->dom->is_shm)
		return;
	if (peer->wake && peer->wake->token == token)
		return;
	ofi_wake_unmap(peer);
	if (token == 0 || pid == 0 || fd > (uint32_t)INT32_MAX)
		return;
	snprintf(path, sizeof(path), "/proc/%u/fd/%u", (unsigned)pid, (unsigned)fd);
	int f = open(path, O_RDONLY | O_CLOEXEC);
	if (f < 0) {
		FERRYI_DBG(ofi_ctx(port), "ofi: %s: the peer's may-sleep page: %s: %s; ringing "
					  "every message", port->dom->prov_name, path, strerror(errno));
		return;
	}
	void *p = MAP_FAILED;
	if (fstat(f, &st) == 0 && S_ISREG(st.st_mode) && st.st_size >= (off_t)OFI_WAKE_PAGE)
		p = mmap(NULL, OFI_WAKE_PAGE, PROT_READ, MAP_SHARED, f, 0);
	close(f);
	if (p == MAP_FAILED)
		return;
	const struct ofi_wake_page *w = p;
	if (w->token != token) {
		munmap(p, OFI_WAKE_PAGE); /* not the page the peer meant (a reused pid) */
		return;
	}
	peer->wake = w;
}

void ofi_wake_unmap(struct ofi_peer *peer)
{
	if (peer->wake)
		munmap((void *)peer->wake, OFI_WAKE_PAGE);
	peer->wake = NULL;
}

/* ------------------------------------------------------------------ the CQ */

static void ofi_port_ready(struct ferryi_poll_handle *h, uint32_t events)
{
	struct ofi_port *port = ferryi_container_of(h, struct ofi_port, ph);
	(void)events;
	if (port->doorbell) {
		char buf[64];
		while (recv(h->fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
			;
	}
	ofi_port_progress(port, ferryi_ctx_fd_exported(ofi_ctx(port)));
}

static void ofi_port_timer(struct ferryi_timer *t)
{
	struct ofi_port *port = ferryi_container_of(t, struct ofi_port, timer);
	ofi_port_progress(port, ferryi_ctx_fd_exported(ofi_ctx(port)));
}

void ofi_port_timer_init(struct ofi_port *port)
{
	ferryi_timer_init(&port->timer, ofi_port_timer);
}

int ofi_port_cq_open(struct ofi_port *port)
{
	struct ofi_dom *dom = port->dom;
	struct ferry_ctx *ctx = ofi_ctx(port);
	struct fi_cq_attr attr = {
		.size = OFI_RX_DEPTH + OFI_TX_MAX + 1024,
		.format = FI_CQ_FORMAT_MSG,
		.wait_obj = dom->wait_fd ? FI_WAIT_FD : FI_WAIT_NONE,
	};
	int rc;

	port->ph.fd = -1;
	rc = fi_cq_open(dom->domain, &attr, &port->cq, port);
	if (rc == -FI_ENOSYS && attr.wait_obj == FI_WAIT_FD) {
		FERRYI_DBG(ctx, "ofi: %s CQs have no wait fd: %s", dom->prov_name,
			   dom->is_shm ? "using doorbells" : "polling");
		dom->wait_fd = false;
		attr.wait_obj = FI_WAIT_NONE;
		rc = fi_cq_open(dom->domain, &attr, &port->cq, port);
	}
	if (rc) {
		FERRYI_WARN(ctx, "ofi: %s: fi_cq_open: %s", dom->prov_name, fi_strerror(-rc));
		port->cq = NULL;
		return ofi_fi_err(-rc);
	}
	if (dom->wait_fd) {
		int fd = -1;
		rc = fi_control(&port->cq->fid, FI_GETWAIT, &fd);
		if (rc || fd < 0) {
			FERRYI_WARN(ctx, "ofi: %s: fi_control(FI_GETWAIT): %s; polling instead",
				    dom->prov_name, fi_strerror(-rc));
		} else {
			port->ph.fd = fd;
		}
	}
	return 0;
}

/* After the endpoint is enabled (shm: the region's name is known). */
int ofi_port_watch(struct ofi_port *port)
{
	struct ferry_ctx *ctx = ofi_ctx(port);
	int rc;

	if (port->ph.fd < 0 && port->dom->is_shm && port->shm_name[0]) {
		struct sockaddr_un sa;
		socklen_t len;
		int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			return -errno;
		ofi_doorbell_name(port->shm_name, &sa, &len);
		if (bind(fd, (struct sockaddr *)&sa, len) < 0) {
			rc = errno == EADDRINUSE ? FERRY_EADDRINUSE : -errno;
			FERRYI_WARN(ctx, "ofi: doorbell for shm region %s: bind: %s", port->shm_name,
				    strerror(errno));
			close(fd);
			return rc;
		}
		port->ph.fd = fd;
		port->doorbell = true;
		ofi_wake_open(port->dom->inst);
	}
	if (port->ph.fd < 0)
		return 0; /* polled by the progress hook and the timer only */
	port->ph.events = EPOLLIN;
	port->ph.fn = ofi_port_ready;
	port->ph.cold = true; /* the progress hook reads the CQ itself */
	rc = ferryi_poll_add(ctx, &port->ph);
	if (rc < 0)
		return rc;
	port->polled = true;
	return 0;
}

/* Stops readiness and retries; the CQ itself is closed after its endpoint. */
void ofi_port_unwatch(struct ofi_port *port)
{
	struct ferry_ctx *ctx = ofi_ctx(port);
	ferryi_timer_cancel(ctx, &port->timer);
	if (port->polled)
		ferryi_poll_del(ctx, &port->ph);
	port->polled = false;
	if (port->doorbell && port->ph.fd >= 0)
		close(port->ph.fd);
	port->doorbell = false;
	port->ph.fd = -1;
}

void ofi_port_cq_close(struct ofi_port *port)
{
	if (port->cq)
		fi_close(&port->cq->fid);
	port->cq = NULL;
}

void ofi_port_kick(struct ofi_port *port, uint64_t delay_ns)
{
	struct ferry_ctx *ctx = ofi_ctx(port);
	bool armed = ferryi_timer_armed(&port->timer);
	/* Busy passes kick every time: spare them the clock when the timer is soon enough
	 * by the pass's reading already (never ahead of now). */
	if (armed && port->timer.due_ns <= ferryi_ctx_pass_ns(ctx) + delay_ns)
		return;
	uint64_t due = ferryi_now_ns(ctx) + delay_ns;
	if (armed && port->timer.due_ns <= due)
		return;
	ferryi_timer_arm(ctx, &port->timer, due);
}

static void ofi_dispatch(struct ofi_port *port, void *ctxp, size_t len, int status,
			 const char *why)
{
	struct ofi_ctx *c = ctxp;
	if (!c) {
		/* An injected message failed: there is nothing to complete. */
		if (status < 0)
			FERRYI_DBG(ofi_ctx(port), "ofi: %s: a message without completion failed: %s",
				   port->dom->prov_name, why ? why : "");
		return;
	}
	switch (c->kind) {
	case OFI_CTX_RX:
		ofi_rx_complete((struct ofi_rxbuf *)c, len, status);
		break;
	case OFI_CTX_TX:
		ofi_tx_complete((struct ofi_txbuf *)c, status, why);
		break;
	case OFI_CTX_RMA:
		ofi_rma_complete((struct ofi_rma *)c, status, why);
		break;
	default:
		FERRYI_ERR(ofi_ctx(port), "ofi: completion with an unknown context %p", ctxp);
		break;
	}
}

/*
 * Reads the CQ until it is empty or the budget is spent; returns entries handled. A
 * busy pass (!until_empty) stops at a short read instead: asking again at once only
 * costs a provider progress call (on tcp a poll() system call) between a completion
 * and the caller who waits for it, and the next pass comes at once. A pass before a
 * sleep reads until libfabric says empty: its last look must see everything a peer
 * handed over before it saw our may-sleep word (shm's Dekker pattern above).
 */
static int ofi_cq_drain(struct ofi_port *port, int *budget, bool until_empty)
{
	struct fi_cq_msg_entry e[OFI_CQ_BATCH];
	int handled = 0;

	while (*budget > 0 && port->cq) {
		ssize_t n = fi_cq_read(port->cq, e, OFI_CQ_BATCH);
		if (n > 0) {
			for (ssize_t i = 0; i < n; i++)
				ofi_dispatch(port, e[i].op_context, e[i].len, 0, NULL);
			handled += (int)n;
			*budget -= (int)n;
			if (n < OFI_CQ_BATCH && !until_empty)
				break;
			continue;
		}
		if (n == -FI_EAVAIL) {
			struct fi_cq_err_entry err;
			char why[192];
			memset(&err, 0, sizeof(err));
			if (fi_cq_readerr(port->cq, &err, 0) != 1)
				break;
			struct ofi_ctx *c = err.op_context;
			bool rma = c && c->kind == OFI_CTX_RMA;
			int status = ofi_status_from_cqe(port, &err, rma);
			ofi_cqe_str(port, &err, why, sizeof(why));
			if (err.err == FI_ECANCELED && port->closing)
				status = FERRY_ECANCELED;
			ofi_dispatch(port, err.op_context, err.len, status, why);
			handled++;
			(*budget)--;
			continue;
		}
		if (n != -FI_EAGAIN)
			FERRYI_WARN(ofi_ctx(port), "ofi: %s: fi_cq_read: %s", port->dom->prov_name,
				    fi_strerror((int)-n));
		break;
	}
	return handled;
}

static bool ofi_port_has_blocked(const struct ofi_port *port)
{
	return !ferryi_list_empty(&port->ctlq) || !ferryi_list_empty(&port->blocked) ||
	       !ferryi_list_empty(&port->rma_retry) || !ferryi_list_empty(&port->rx_repost);
}

int ofi_port_progress(struct ofi_port *port, bool arm)
{
	int handled = 0, budget = OFI_CQ_BUDGET;
	bool settled = !arm || !port->dom->wait_fd || port->ph.fd < 0;

	if (!port->cq)
		return 0;
	port->refs++; /* the port outlives this pass even if its last endpoint goes */
	if (port->rx_ndone)
		ofi_rx_post_done(port); /* before the drain, which reads what they complete */
	port->rx_defer = !arm;
	for (int round = 0; round < OFI_TRYWAIT_ROUNDS; round++) {
		handled += ofi_cq_drain(port, &budget, arm);
		if (ofi_port_has_blocked(port))
			ofi_port_retry(port);
		if (settled || budget <= 0)
			break;
		struct fid *f = &port->cq->fid;
		int rc = fi_trywait(port->dom->fabric, &f, 1);
		if (rc == -FI_EAGAIN)
			continue; /* something arrived since the last read */
		settled = true;
		break;
	}
	port->rx_defer = false;
	if (budget <= 0 || !settled) {
		/* More to do than one pass may take: come back soon rather than spin. */
		ofi_port_kick(port, OFI_BACKOFF_MIN_NS);
	} else if (ofi_port_has_blocked(port)) {
		port->backoff_ns = port->backoff_ns ? port->backoff_ns * 2 : OFI_BACKOFF_MIN_NS;
		if (port->backoff_ns > OFI_BACKOFF_MAX_NS)
			port->backoff_ns = OFI_BACKOFF_MAX_NS;
		ofi_port_kick(port, port->backoff_ns);
	} else {
		port->backoff_ns = 0;
		if (port->ph.fd < 0 && port->refs > 1)
			ofi_port_kick(port, 1000000ull); /* no readiness source: poll */
		else if (port->doorbell && (port->tx_out || port->rma_out))
			ofi_port_kick(port, OFI_SAFETY_POLL_NS);
	}
	ofi_port_put(port);
	return handled;
}
