/*
 * oob.c - connection set-up and the out-of-band exchange, carried by ferry itself.
 *
 * Client: connect endpoint 0, HELLO (test, endpoints, poll mode, buffer size) and its
 * answer, connect the other endpoints, then both sides swap an RKEY message on every
 * endpoint: the packed key of that endpoint's registered buffer plus the client's
 * endpoint index, by which the server orders the endpoints it accepted.
 * Control operations are posted with a struct perf_oob_op as user_ctx and waited for
 * here; the data loops in bw.c and lat.c pass any control completion they meet to
 * perf_oob_complete().
 */
#include <errno.h>
#include <sched.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "perf.h"

void perf_cpu_mark(struct perf_cpu *m)
{
	getrusage(RUSAGE_SELF, &m->ru);
	m->ns = perf_now();
}

void perf_stamps_to_ns(const struct perf_stamp_base *base, uint64_t *stamps, uint64_t n)
{
	uint64_t ns = perf_now(), ticks = perf_ticks();
	double rate = ticks > base->ticks ? (double)(ns - base->ns) / (double)(ticks - base->ticks)
					  : 1.0;

	for (uint64_t i = 0; i < n; i++)
		stamps[i] = base->ns + (uint64_t)((double)(stamps[i] - base->ticks) * rate + 0.5);
}

void perf_window_start(struct perf_window *w, const struct perf_round *r, uint64_t start)
{
	memset(w, 0, sizeof(*w));
	w->t_margin = start + (uint64_t)(r->margin * 1e9);
	w->t_stop = start + (uint64_t)((r->duration - r->margin) * 1e9);
	w->t_end = start + (uint64_t)(r->duration * 1e9);
}

int perf_window_step(struct perf_window *w, struct perf_measure *m, uint64_t now,
		     uint64_t ops)
{
	if (w->state == 0 && now >= w->t_margin) {
		w->state = 1;
		m->t0 = now;
		w->ops0 = ops;
		perf_cpu_mark(&m->cpu0);
	} else if (w->state == 1 && now >= w->t_stop) {
		w->state = 2;
		m->t1 = now;
		m->ops = ops - w->ops0;
		perf_cpu_mark(&m->cpu1);
	}
	return now >= w->t_end;
}

static double oob_tv(const struct timeval *tv)
{
	return (double)tv->tv_sec + (double)tv->tv_usec / 1e6;
}

double perf_cpu_pct(const struct perf_cpu *a, const struct perf_cpu *b)
{
	double cpu = oob_tv(&b->ru.ru_utime) - oob_tv(&a->ru.ru_utime) +
		     oob_tv(&b->ru.ru_stime) - oob_tv(&a->ru.ru_stime);
	double wall = (double)(b->ns - a->ns) / 1e9;

	return wall > 0 ? 100.0 * cpu / wall : 0.0;
}

int perf_call_failed(int rc, const char *call)
{
	fprintf(stderr, "ferry_perf: %s: %s (%s)\n", call, ferry_strerror(rc), ferry_errname(rc));
	return rc;
}

static const char *oob_op_name(enum ferry_op_type t)
{
	switch (t) {
	case FERRY_OP_SEND: return "send";
	case FERRY_OP_RECV: return "recv";
	case FERRY_OP_WRITE: return "write";
	case FERRY_OP_READ: return "read";
	}
	return "operation";
}

int perf_op_failed(const struct ferry_completion *c, const char *what)
{
	fprintf(stderr, "ferry_perf: %s: %s completion failed (len %" PRIu64 ", tag 0x%" PRIx64
			"): %s (%s)\n",
		what, oob_op_name(c->type), c->len, c->tag, ferry_strerror(c->status),
		ferry_errname(c->status));
	return c->status ? c->status : FERRY_EIO;
}

int perf_stalled(struct perf_conn *pc, uint64_t last_ns, const char *what)
{
	if (!pc->stall_ns || perf_now() - last_ns < pc->stall_ns)
		return 0;
	fprintf(stderr, "ferry_perf: %s: no completion for %.0f s, giving up\n", what,
		(double)pc->stall_ns / 1e9);
	return FERRY_ETIMEDOUT;
}

/* ------------------------------------------------------------------ polling */

#define PERF_YIELD_POLLS 256u

int perf_poll(struct perf_conn *pc, struct ferry_completion *c, int max, int may_block)
{
	int rc;

	if (may_block && pc->p->poll == PERF_POLL_WAIT) {
		/* a bounded sleep lets callers check their clock and the stall detector */
		rc = ferry_cq_wait(pc->cq, c, max, 100);
		return rc == FERRY_ETIMEDOUT ? 0 : rc;
	}
	rc = ferry_cq_poll(pc->cq, c, max);
	/*
	 * Busy polling spins, but gives its core away once per PERF_YIELD_POLLS empty
	 * polls: with both sides of --loopback on a 2-core machine, a spinner that the
	 * scheduler put on its peer's core (or any other runnable thread) would
	 * otherwise stall the transfer for a whole time slice. sched_yield() returns at
	 * once when nothing else wants the core.
	 */
	if (rc == 0 && ++pc->empty_polls % PERF_YIELD_POLLS == 0)
		sched_yield();
	else if (rc != 0)
		pc->empty_polls = 0;
	return rc;
}

int perf_wait_fd(struct perf_conn *pc, int timeout_ms)
{
	struct pollfd pfd = { .fd = ferry_ctx_fd(pc->ctx), .events = POLLIN };

	if (pfd.fd >= 0 && poll(&pfd, 1, timeout_ms) < 0 && errno != EINTR)
		return -errno;
	return ferry_progress(pc->ctx);
}

int perf_oob_complete(const struct ferry_completion *c)
{
	struct perf_oob_op *op = c->user_ctx;

	op->status = c->status;
	op->tag = c->tag;
	op->len = c->len;
	op->done = 1;
	if (c->status)
		perf_op_failed(c, "control");
	return c->status;
}

int perf_oob_wait(struct perf_conn *pc, struct perf_oob_op *op)
{
	struct ferry_completion c[PERF_POLL_BATCH];
	int n, rc;

	while (!op->done) {
		n = perf_poll(pc, c, PERF_POLL_BATCH, 1);
		if (n < 0)
			return perf_call_failed(n, "ferry_cq_poll");
		for (int i = 0; i < n; i++) {
			if (PERF_CTX_IS_DATA(c[i].user_ctx)) {
				if (c[i].status)
					return perf_op_failed(&c[i], "data");
				fprintf(stderr, "ferry_perf: unexpected %s completion on endpoint %u"
						" (tag 0x%" PRIx64 ", %" PRIu64 " bytes)\n",
					oob_op_name(c[i].type), PERF_CTX_EP(c[i].user_ctx), c[i].tag,
					c[i].len);
				return FERRY_EPROTO;
			}
			rc = perf_oob_complete(&c[i]);
			if (rc && c[i].user_ctx != op)
				return rc; /* some other control operation failed */
		}
	}
	return op->status;
}

int perf_oob_post_recv(struct perf_conn *pc, uint32_t e, uint32_t kind, struct perf_msg *m,
		       struct perf_oob_op *op)
{
	int rc;

	memset(op, 0, sizeof(*op));
	rc = ferry_recv(pc->eps[e].ep, m, sizeof(*m), PERF_TAG(kind, 0), PERF_KIND_MASK, op,
			NULL);
	return rc ? perf_call_failed(rc, "ferry_recv (control)") : 0;
}

static int oob_check_msg(const struct perf_msg *m, const struct perf_oob_op *op,
			 uint32_t kind)
{
	if (op->len != sizeof(*m) || m->magic != PERF_MAGIC || m->kind != kind) {
		if (m->magic == __builtin_bswap32(PERF_MAGIC))
			fprintf(stderr, "ferry_perf: the peer has another byte order\n");
		else
			fprintf(stderr, "ferry_perf: malformed control message (kind %u, %" PRIu64
					" bytes): is the peer ferry_perf of the same version?\n",
				kind, op->len);
		return FERRY_EPROTO;
	}
	return 0;
}

int perf_oob_recv(struct perf_conn *pc, uint32_t e, uint32_t kind, struct perf_msg *m)
{
	struct perf_oob_op op;
	int rc;

	rc = perf_oob_post_recv(pc, e, kind, m, &op);
	if (!rc)
		rc = perf_oob_wait(pc, &op);
	if (!rc)
		rc = oob_check_msg(m, &op, kind);
	return rc;
}

int perf_oob_post_send(struct perf_conn *pc, uint32_t e, uint32_t kind, struct perf_msg *m,
		       struct perf_oob_op *op)
{
	int rc;

	memset(op, 0, sizeof(*op));
	m->magic = PERF_MAGIC;
	m->kind = kind;
	rc = ferry_send(pc->eps[e].ep, m, sizeof(*m), PERF_TAG(kind, 0), op, NULL);
	return rc ? perf_call_failed(rc, "ferry_send (control)") : 0;
}

int perf_oob_send(struct perf_conn *pc, uint32_t e, uint32_t kind, struct perf_msg *m)
{
	struct perf_oob_op op;
	int rc;

	rc = perf_oob_post_send(pc, e, kind, m, &op);
	return rc ? rc : perf_oob_wait(pc, &op);
}

int perf_oob_send_ready(struct perf_conn *pc)
{
	memset(&pc->ready_msg, 0, sizeof(pc->ready_msg));
	return perf_oob_post_send(pc, 0, PERF_K_READY, &pc->ready_msg, &pc->ready_op);
}

int perf_oob_ready_wait(struct perf_conn *pc)
{
	return pc->ready_op.done ? pc->ready_op.status : perf_oob_wait(pc, &pc->ready_op);
}

/* ------------------------------------------------------------------ set-up */

int perf_conn_open(struct perf_conn *pc, const struct perf_params *p, int server)
{
	struct ferry_config cfg;
	char name[64];
	uint64_t want;
	int rc;

	memset(pc, 0, sizeof(*pc));
	pc->p = p;
	pc->server = server;
	pc->stall_ns = 60ull * 1000000000ull;

	ferry_config_init(&cfg);
	perf_provider_name(p, name, sizeof(name));
	/*
	 * A benchmark must measure the provider it was asked for, never a fallback. Only
	 * an RDMA scheme has one (FERRY_FALLBACK=require: RDMA or fail); ofi+tcp and
	 * ofi+shm name one transport and no other, and require would refuse them.
	 */
	size_t nl = strlen(name);
	if (nl >= 5 && strcmp(name + nl - 5, "verbs") == 0)
		cfg.fallback = FERRY_FALLBACK_REQUIRE;
	/*
	 * Busy polling never sleeps on a libfabric CQ, so it needs no wait object, which
	 * costs tcp two system calls per message (providers/ofi: FERRY_OFI_WAIT_FD);
	 * fi_pingpong's default spin mode opens its CQ without one too. A value the user
	 * set wins.
	 */
	if (p->poll == PERF_POLL_BUSY)
		setenv("FERRY_OFI_WAIT_FD", "0", 0);
	want = (uint64_t)p->qps * (p->depth > PERF_DEF_RX_SEND ? p->depth : PERF_DEF_RX_SEND) +
	       1024;
	if (want > cfg.cq_size)
		cfg.cq_size = want > (1u << 24) ? (1u << 24) : (uint32_t)want;
	rc = ferry_ctx_create(&cfg, &pc->ctx);
	if (rc)
		return perf_call_failed(rc, "ferry_ctx_create");
	pc->cq = ferry_ctx_cq(pc->ctx);
	return 0;
}

static int oob_buf_setup(struct perf_conn *pc, struct perf_ep *pe)
{
	void *buf;
	int rc;

	rc = posix_memalign(&buf, 4096, pc->buf_len);
	if (rc)
		return perf_call_failed(FERRY_ENOMEM, "posix_memalign");
	/* touch every page now so that page faults never land in a timed loop */
	memset(buf, 0, pc->buf_len);
	pe->buf = buf;
	rc = ferry_mr_reg(pc->ctx, buf, pc->buf_len,
			  FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE, &pe->mr);
	if (rc)
		return perf_call_failed(rc, "ferry_mr_reg");
	return 0;
}

static int oob_send_rkey(struct perf_conn *pc, uint32_t e, struct perf_msg *m)
{
	size_t len = sizeof(m->blob);
	int rc;

	memset(m, 0, sizeof(*m));
	rc = ferry_mr_pack(pc->eps[e].mr, m->blob, &len);
	if (rc)
		return perf_call_failed(rc, "ferry_mr_pack");
	m->blob_len = (uint32_t)len;
	m->ep_index = e;
	return perf_oob_send(pc, e, PERF_K_RKEY, m);
}

static int oob_take_rkey(struct perf_conn *pc, struct perf_ep *pe, const struct perf_msg *m)
{
	int rc;

	if (m->blob_len > sizeof(m->blob)) {
		fprintf(stderr, "ferry_perf: rkey blob of %u bytes\n", m->blob_len);
		return FERRY_EPROTO;
	}
	rc = ferry_rkey_unpack(pc->ctx, m->blob, m->blob_len, &pe->rkey);
	if (rc)
		return perf_call_failed(rc, "ferry_rkey_unpack");
	pe->rkey_len = ferry_rkey_len(pe->rkey);
	if (pe->rkey_len < pc->peer_buf_len) {
		fprintf(stderr, "ferry_perf: peer's region is %" PRIu64 " bytes, expected %zu\n",
			pe->rkey_len, pc->peer_buf_len);
		return FERRY_EPROTO;
	}
	return 0;
}

static int oob_connect_one(struct perf_conn *pc, const char *uri, struct ferry_ep **ep)
{
	/* private: a benchmark endpoint is never shared with (or reused from) a pool */
	struct ferry_connect_attr attr = { .flags = FERRY_CONNECT_PRIVATE };
	int rc = ferry_connect(pc->ctx, uri, &attr, ep);

	if (rc)
		fprintf(stderr, "ferry_perf: ferry_connect(%s): %s (%s)\n", uri, ferry_strerror(rc),
			ferry_errname(rc));
	return rc;
}

int perf_conn_connect(struct perf_conn *pc, const char *uri)
{
	const struct perf_params *p = pc->p;
	struct perf_msg m;
	uint32_t e;
	int rc;

	snprintf(pc->uri, sizeof(pc->uri), "%s", uri);
	pc->buf_len = perf_buf_len(p);
	pc->eps = calloc(p->qps, sizeof(*pc->eps));
	if (!pc->eps)
		return perf_call_failed(FERRY_ENOMEM, "calloc");

	rc = oob_connect_one(pc, uri, &pc->eps[0].ep);
	if (rc)
		return rc;
	pc->n = 1;
	pc->provider = ferry_ep_provider(pc->eps[0].ep);
	snprintf(pc->peer, sizeof(pc->peer), "%s", ferry_ep_peer(pc->eps[0].ep));

	memset(&m, 0, sizeof(m));
	m.test = p->test;
	m.qps = p->qps;
	m.poll = p->poll;
	m.buf_len = pc->buf_len;
	m.flags = (p->check ? PERF_HELLO_CHECK : 0) | (p->report_gbits ? PERF_HELLO_GBITS : 0);
	rc = perf_oob_send(pc, 0, PERF_K_HELLO, &m);
	if (!rc)
		rc = perf_oob_recv(pc, 0, PERF_K_HELLO, &m);
	if (rc)
		return rc;
	if (m.status) {
		fprintf(stderr, "ferry_perf: the server refused: %s\n", ferry_strerror(m.status));
		return m.status;
	}
	pc->peer_buf_len = m.buf_len;

	for (e = 1; e < p->qps; e++) {
		rc = oob_connect_one(pc, uri, &pc->eps[e].ep);
		if (rc)
			return rc;
		pc->n = e + 1;
	}
	for (e = 0; e < pc->n; e++) {
		rc = oob_buf_setup(pc, &pc->eps[e]);
		if (rc)
			return rc;
	}
	for (e = 0; e < pc->n; e++) {
		rc = oob_send_rkey(pc, e, &m);
		if (rc)
			return rc;
	}
	for (e = 0; e < pc->n; e++) {
		rc = perf_oob_recv(pc, e, PERF_K_RKEY, &m);
		if (!rc && m.ep_index != e) {
			fprintf(stderr, "ferry_perf: server answered for endpoint %u on %u\n",
				m.ep_index, e);
			rc = FERRY_EPROTO;
		}
		if (!rc)
			rc = oob_take_rkey(pc, &pc->eps[e], &m);
		if (rc)
			return rc;
	}
	return 0;
}

int perf_conn_listen(struct perf_conn *pc, const char *uri, int notify_fd)
{
	size_t len = sizeof(pc->uri) - 1;
	int rc;

	rc = ferry_listen(pc->ctx, uri, NULL, &pc->listener);
	if (rc) {
		fprintf(stderr, "ferry_perf: ferry_listen(%s): %s (%s)\n", uri, ferry_strerror(rc),
			ferry_errname(rc));
		return rc;
	}
	rc = ferry_listener_addr(pc->listener, pc->uri, &len);
	if (rc)
		snprintf(pc->uri, sizeof(pc->uri), "%s", uri);
	if (notify_fd >= 0) {
		size_t n = strlen(pc->uri) + 1;

		if (write(notify_fd, pc->uri, n) != (ssize_t)n)
			return perf_call_failed(FERRY_EIO, "write (loopback notify)");
	}
	return 0;
}

/*
 * Accepts endpoint 0 and its HELLO, adopts the client's test settings into the
 * params (pc->p points to the server's own, writable copy), then the other endpoints.
 */
int perf_conn_accept(struct perf_conn *pc, int timeout_ms)
{
	struct perf_params *p = (struct perf_params *)pc->p;
	struct perf_ep *accepted = NULL, *sorted;
	struct perf_msg m;
	uint32_t e, n;
	int rc;

	pc->eps = calloc(1, sizeof(*pc->eps));
	if (!pc->eps)
		return perf_call_failed(FERRY_ENOMEM, "calloc");
	rc = ferry_listener_accept(pc->listener, &pc->eps[0].ep, timeout_ms);
	if (rc)
		return perf_call_failed(rc, "ferry_listener_accept");
	pc->n = 1;
	pc->provider = ferry_ep_provider(pc->eps[0].ep);
	snprintf(pc->peer, sizeof(pc->peer), "%s", ferry_ep_peer(pc->eps[0].ep));

	rc = perf_oob_recv(pc, 0, PERF_K_HELLO, &m);
	if (rc)
		return rc;
	if (m.test >= PERF_TEST_COUNT || !m.qps || m.qps > PERF_MAX_QPS ||
	    m.poll > PERF_POLL_WAIT || m.buf_len < PERF_BUF_MIN || m.buf_len > (1ull << 36)) {
		fprintf(stderr, "ferry_perf: bad HELLO from the client\n");
		return FERRY_EPROTO;
	}
	p->test = (enum perf_test)m.test;
	p->is_lat = p->test == PERF_WRITE_LAT || p->test == PERF_READ_LAT ||
		    p->test == PERF_SEND_LAT;
	p->qps = (uint32_t)m.qps;
	p->poll = (enum perf_poll_mode)m.poll;
	p->check = !!(m.flags & PERF_HELLO_CHECK);
	p->report_gbits = !!(m.flags & PERF_HELLO_GBITS);
	pc->buf_len = (size_t)m.buf_len; /* both sides use the client's buffer size */
	pc->peer_buf_len = (size_t)m.buf_len;

	memset(&m, 0, sizeof(m));
	m.buf_len = pc->buf_len;
	rc = perf_oob_send(pc, 0, PERF_K_HELLO, &m);
	if (rc)
		return rc;

	n = p->qps;
	accepted = calloc(n, sizeof(*accepted));
	if (!accepted)
		return perf_call_failed(FERRY_ENOMEM, "calloc");
	accepted[0].ep = pc->eps[0].ep;
	free(pc->eps);
	pc->eps = accepted;
	for (e = 1; e < n; e++) {
		rc = ferry_listener_accept(pc->listener, &pc->eps[e].ep, timeout_ms);
		if (rc)
			return perf_call_failed(rc, "ferry_listener_accept");
		pc->n = e + 1;
	}

	/* Order the endpoints as the client numbered them (its RKEY says which is which). */
	sorted = calloc(n, sizeof(*sorted));
	if (!sorted)
		return perf_call_failed(FERRY_ENOMEM, "calloc");
	for (e = 0; e < n; e++) {
		rc = perf_oob_recv(pc, e, PERF_K_RKEY, &m);
		if (rc)
			break;
		if (m.ep_index >= n || sorted[m.ep_index].ep || (e == 0 && m.ep_index != 0)) {
			fprintf(stderr, "ferry_perf: bad endpoint index %u from the client\n",
				m.ep_index);
			rc = FERRY_EPROTO;
			break;
		}
		sorted[m.ep_index].ep = pc->eps[e].ep;
		rc = oob_take_rkey(pc, &sorted[m.ep_index], &m);
		if (rc)
			break;
	}
	if (rc) {
		for (e = 0; e < n; e++)
			ferry_rkey_destroy(sorted[e].rkey);
		free(sorted);
		return rc;
	}
	free(pc->eps);
	pc->eps = sorted;

	for (e = 0; e < n; e++) {
		rc = oob_buf_setup(pc, &pc->eps[e]);
		if (rc)
			return rc;
	}
	for (e = 0; e < n; e++) {
		rc = oob_send_rkey(pc, e, &m);
		if (rc)
			return rc;
	}
	return 0;
}

void perf_conn_close(struct perf_conn *pc)
{
	uint32_t e;

	if (!pc->ctx)
		return;
	for (e = 0; e < pc->n; e++) {
		if (pc->eps[e].ep)
			ferry_ep_close(pc->eps[e].ep);
		ferry_rkey_destroy(pc->eps[e].rkey);
		if (pc->eps[e].mr)
			ferry_mr_dereg(pc->eps[e].mr);
	}
	ferry_listener_close(pc->listener);
	ferry_ctx_destroy(pc->ctx);
	pc->ctx = NULL;
	/* buffers last: nothing in the library may reference them any more */
	for (e = 0; e < pc->n; e++)
		free(pc->eps[e].buf);
	free(pc->eps);
	pc->eps = NULL;
	pc->n = 0;
}
