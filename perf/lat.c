/*
 * lat.c - write_lat, read_lat and send_lat, as perftest runs them.
 *
 * write_lat: ping-pong through memory. Each side writes SIZE bytes into the other's
 * receive area (the upper half of its buffer) and waits for the last byte of its own
 * receive area to become the iteration counter. TCP's one-sided write is emulated in
 * software, so the wait loop must drive progress: it polls the completion queue (which
 * progresses the context) between looks at memory, or sleeps on the context fd with
 * --poll=wait.
 * read_lat: one synchronous read at a time; its latency is the whole read.
 * send_lat: ping-pong of tagged messages; each side posts its receive before sending.
 *
 * As perftest, the client stamps the start of each iteration and the report takes the
 * deltas between stamps: half of each for write/send, all of it for read.
 * Up to LAT_RING sends or writes stay in flight, so that a completion arriving after
 * the peer's answer does not hold up the next iteration. Writes (whose last byte is
 * the iteration counter) and checked rounds rotate over as many source slots; timed
 * send_lat rounds send one unchanged buffer every time, as perftest and fi_pingpong
 * do, so that a large message is read from the same warm cache lines as theirs.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf.h"

#define LAT_SIDE_CLIENT 1u
#define LAT_SIDE_SERVER 2u
#define LAT_RING 4u

struct lat_state {
	struct perf_conn *pc;
	const struct perf_round *r;
	struct perf_ep *pe;
	uint8_t *sbase;          /* source slots, in the lower half of the buffer */
	uint8_t *rbase;          /* receive area: the upper half */
	uint64_t roff;           /* the peer's receive area, as an offset in its region */
	uint32_t ring;
	int one_source;          /* every send from the first slot (see above) */
	uint64_t posted;         /* sends, writes or reads this side posted */
	uint64_t completed;
	uint64_t recvd;          /* send_lat: receives completed */
	uint64_t recv_tag, recv_len;
	struct perf_oob_op *stop_op; /* server: the client's DONE */
	int stop;
	uint64_t last;           /* stall detector: last completion (client) */
	int progressed;
	unsigned idle;
	uint64_t iter;           /* iterations this round, warm-up included */
};

/* Polls once (blocking allowed in wait mode) and accounts every completion. */
static int lat_poll(struct lat_state *st, int may_block)
{
	struct ferry_completion c[PERF_POLL_BATCH];
	int nc, rc;

	nc = perf_poll(st->pc, c, PERF_POLL_BATCH, may_block);
	if (nc < 0)
		return perf_call_failed(nc, "ferry_cq_poll");
	if (nc == 0) {
		if ((++st->idle & 0x3ff) && st->pc->p->poll == PERF_POLL_BUSY)
			return 0;
		if (st->progressed) {
			st->last = perf_now();
			st->progressed = 0;
		}
		return perf_stalled(st->pc, st->last, perf_test_name(st->pc->p->test));
	}
	st->progressed = 1;
	st->idle = 0;
	for (int i = 0; i < nc; i++) {
		if (!PERF_CTX_IS_DATA(c[i].user_ctx)) {
			rc = perf_oob_complete(&c[i]);
			if (rc)
				return rc;
			if (c[i].user_ctx == st->stop_op)
				st->stop = 1;
			continue;
		}
		if (c[i].status)
			return perf_op_failed(&c[i], perf_test_name(st->pc->p->test));
		if (c[i].type == FERRY_OP_RECV) {
			st->recvd++;
			st->recv_tag = c[i].tag;
			st->recv_len = c[i].len;
		} else {
			st->completed++;
		}
	}
	return nc;
}

static int lat_wait_completed(struct lat_state *st, uint64_t target)
{
	int rc;

	while (st->completed < target)
		if ((rc = lat_poll(st, 1)) < 0)
			return rc;
	return 0;
}

static int lat_wait_recvd(struct lat_state *st, uint64_t target)
{
	int rc;

	while (st->recvd < target && !st->stop)
		if ((rc = lat_poll(st, 1)) < 0)
			return rc;
	return 0;
}

/* Waits for the peer's write: the last byte of the receive area becomes v. */
static int lat_wait_mem(struct lat_state *st, const volatile uint8_t *p, uint8_t v)
{
	const int wait = st->pc->p->poll == PERF_POLL_WAIT;
	int rc;

	while (*p != v && !st->stop) {
		rc = lat_poll(st, 0); /* drives progress: the emulated write lands here */
		if (rc < 0)
			return rc;
		if (wait && rc == 0 && *p != v) {
			/* nothing completes on this side when the peer writes: sleep on the fd */
			rc = perf_wait_fd(st->pc, 100);
			if (rc < 0)
				return perf_call_failed(rc, "ferry_progress");
		}
	}
	return 0;
}

/* The source slot for the next send or write, once its previous use completed. */
static int lat_slot(struct lat_state *st, uint64_t size, uint8_t **slot)
{
	int rc;

	if (st->posted >= st->ring) {
		rc = lat_wait_completed(st, st->posted - st->ring + 1);
		if (rc)
			return rc;
	}
	*slot = st->sbase + (st->one_source ? 0 : (st->posted % st->ring) * size);
	return 0;
}

static void lat_prepare(struct lat_state *st, struct perf_conn *pc, const struct perf_round *r)
{
	size_t half = pc->buf_len / 2;
	uint64_t ring = half / r->size;

	memset(st, 0, sizeof(*st));
	st->pc = pc;
	st->r = r;
	st->pe = &pc->eps[0];
	st->sbase = st->pe->buf;
	st->rbase = st->pe->buf + half;
	st->roff = pc->peer_buf_len / 2;
	st->ring = ring > LAT_RING ? LAT_RING : ring ? (uint32_t)ring : 1;
	st->one_source = pc->p->test == PERF_SEND_LAT && !r->check;
	st->last = perf_now();
	/* a stale counter from an earlier size must not look like this round's */
	memset(st->rbase, 0, r->size);
}

/* ------------------------------------------------------------------ one iteration */

static int lat_client_iter(struct lat_state *st)
{
	const enum perf_test test = st->pc->p->test;
	const int check = st->r->check;
	const uint64_t size = st->r->size, k = st->iter;
	struct perf_ep *pe = st->pe;
	char what[80];
	uint8_t *sb;
	int rc;

	switch (test) {
	case PERF_WRITE_LAT:
		rc = lat_slot(st, size, &sb);
		if (rc)
			return rc;
		if (check)
			perf_fill(sb, size - 1, perf_seed(LAT_SIDE_CLIENT, 0, k));
		sb[size - 1] = (uint8_t)(k + 1);
		rc = ferry_write(pe->ep, sb, size, pe->mr, pe->rkey, st->roff, PERF_DATA_CTX(0), NULL);
		if (rc)
			return perf_call_failed(rc, "ferry_write");
		st->posted++;
		rc = lat_wait_mem(st, st->rbase + size - 1, (uint8_t)(k + 1));
		if (rc)
			return rc;
		if (check) {
			snprintf(what, sizeof(what), "write_lat pong %" PRIu64, k);
			if (perf_verify(st->rbase, size - 1, perf_seed(LAT_SIDE_SERVER, 0, k), what))
				return FERRY_EIO;
		}
		break;

	case PERF_READ_LAT:
		if (check)
			memset(st->rbase, 0xee, size);
		rc = ferry_read(pe->ep, st->rbase, size, pe->mr, pe->rkey, 0, PERF_DATA_CTX(0), NULL);
		if (rc)
			return perf_call_failed(rc, "ferry_read");
		st->posted++;
		rc = lat_wait_completed(st, st->posted);
		if (rc)
			return rc;
		if (check) {
			snprintf(what, sizeof(what), "read %" PRIu64, k);
			if (perf_verify(st->rbase, size, perf_seed(LAT_SIDE_SERVER, 0, 0), what))
				return FERRY_EIO;
		}
		break;

	default: /* PERF_SEND_LAT */
		rc = lat_slot(st, size, &sb);
		if (rc)
			return rc;
		if (check)
			perf_fill(sb, size, perf_seed(LAT_SIDE_CLIENT, 0, k));
		rc = ferry_send(pe->ep, sb, size, PERF_TAG(PERF_K_PING, k), PERF_DATA_CTX(0), NULL);
		if (rc)
			return perf_call_failed(rc, "ferry_send");
		st->posted++;
		/* after the ping, off its path (as ucx_perftest does): see lat_server_iter */
		rc = ferry_recv(pe->ep, st->rbase, size, PERF_TAG(PERF_K_PONG, 0), PERF_KIND_MASK,
				PERF_DATA_CTX(0), NULL);
		if (rc)
			return perf_call_failed(rc, "ferry_recv");
		rc = lat_wait_recvd(st, k + 1);
		if (rc)
			return rc;
		if (check) {
			if ((st->recv_tag & PERF_SEQ_MASK) != k || st->recv_len != size) {
				fprintf(stderr, "ferry_perf: check failed: pong %" PRIu64 " has seq %"
						PRIu64 " and %" PRIu64 " bytes\n", k,
					st->recv_tag & PERF_SEQ_MASK, st->recv_len);
				return FERRY_EIO;
			}
			snprintf(what, sizeof(what), "send_lat pong %" PRIu64, k);
			if (perf_verify(st->rbase, size, perf_seed(LAT_SIDE_SERVER, 0, k), what))
				return FERRY_EIO;
		}
		break;
	}
	st->iter++;
	return 0;
}

/* ------------------------------------------------------------------ client */

static int lat_client_run(struct lat_state *st, uint64_t count, struct perf_measure *m,
			  int timed)
{
	const struct perf_round *r = st->r;
	const int duration = timed && r->duration > 0;
	struct perf_stamp_base base;
	struct perf_window win = { 0 };
	int rc;

	if (timed && !duration)
		perf_cpu_mark(&m->cpu0);
	perf_stamp_base(&base);
	if (duration) {
		perf_window_start(&win, r, base.ns);
		count = UINT64_MAX;
	}
	for (uint64_t k = 0; k < count; k++) {
		if (timed && !duration) {
			m->tlat[k] = perf_ticks();
		} else if (timed && perf_window_step(&win, m, perf_now(), k)) {
			break;
		}
		rc = lat_client_iter(st);
		if (rc)
			return rc;
	}
	if (timed && !duration) {
		perf_stamps_to_ns(&base, m->tlat, count);
		perf_cpu_mark(&m->cpu1);
		m->t0 = m->tlat[0];
		m->t1 = m->cpu1.ns;
		m->ops = count;
		m->nlat = count;
	}
	if (duration && win.state < 2) {
		fprintf(stderr, "ferry_perf: the measured window never closed\n");
		return FERRY_EIO;
	}
	return 0;
}

int perf_lat_client(struct perf_conn *pc, const struct perf_round *r, struct perf_measure *m)
{
	struct lat_state st;
	struct perf_msg msg;
	int rc;

	lat_prepare(&st, pc, r);
	if (!r->check && !r->duration) {
		m->tlat = malloc(r->iters * sizeof(uint64_t));
		m->scratch = malloc(r->iters * sizeof(uint64_t));
		if (!m->tlat || !m->scratch)
			return perf_call_failed(FERRY_ENOMEM, "malloc");
		memset(m->tlat, 0, r->iters * sizeof(uint64_t));
		memset(m->scratch, 0, r->iters * sizeof(uint64_t));
	}

	if (r->check) {
		rc = lat_client_run(&st, r->iters, m, 0);
		m->verified = r->iters;
	} else {
		rc = r->warmup ? lat_client_run(&st, r->warmup, m, 0) : 0;
		if (!rc)
			rc = lat_client_run(&st, r->iters, m, 1);
		m->iters = r->duration ? m->ops : r->iters;
	}
	if (!rc && r->duration && pc->p->test == PERF_SEND_LAT) {
		/* the server has a receive posted for the next ping: this one says stop */
		uint8_t *sb;

		rc = lat_slot(&st, r->size, &sb);
		if (!rc)
			rc = ferry_send(st.pe->ep, sb, r->size,
					PERF_TAG(PERF_K_PING, PERF_SEQ_STOP | st.iter), PERF_DATA_CTX(0),
					NULL);
		if (!rc)
			st.posted++;
		else
			perf_call_failed(rc, "ferry_send");
	}
	if (!rc)
		rc = lat_wait_completed(&st, st.posted);
	if (!rc) {
		memset(&msg, 0, sizeof(msg));
		msg.count = st.iter;
		rc = perf_oob_send(pc, 0, PERF_K_DONE, &msg);
	}
	return rc;
}

/* ------------------------------------------------------------------ server */

static int lat_server_iter(struct lat_state *st, uint64_t total)
{
	const enum perf_test test = st->pc->p->test;
	const int check = st->r->check;
	const uint64_t size = st->r->size, k = st->iter;
	struct perf_ep *pe = st->pe;
	char what[80];
	uint8_t *sb;
	int rc;

	if (test == PERF_WRITE_LAT) {
		rc = lat_wait_mem(st, st->rbase + size - 1, (uint8_t)(k + 1));
		if (rc || st->stop)
			return rc;
		if (check) {
			snprintf(what, sizeof(what), "write_lat ping %" PRIu64, k);
			if (perf_verify(st->rbase, size - 1, perf_seed(LAT_SIDE_CLIENT, 0, k), what))
				return FERRY_EIO;
		}
		rc = lat_slot(st, size, &sb);
		if (rc)
			return rc;
		if (check)
			perf_fill(sb, size - 1, perf_seed(LAT_SIDE_SERVER, 0, k));
		sb[size - 1] = (uint8_t)(k + 1);
		rc = ferry_write(pe->ep, sb, size, pe->mr, pe->rkey, st->roff, PERF_DATA_CTX(0), NULL);
		if (rc)
			return perf_call_failed(rc, "ferry_write");
		st->posted++;
		st->iter++;
		return 0;
	}

	/* send_lat: the receive for ping k is posted */
	rc = lat_wait_recvd(st, k + 1);
	if (rc || st->stop)
		return rc;
	if (st->recv_tag & PERF_SEQ_STOP) {
		st->stop = 1;
		return 0;
	}
	if (check) {
		if ((st->recv_tag & PERF_SEQ_MASK) != k || st->recv_len != size) {
			fprintf(stderr, "ferry_perf: check failed: ping %" PRIu64 " has seq %" PRIu64
					" and %" PRIu64 " bytes\n", k, st->recv_tag & PERF_SEQ_MASK,
				st->recv_len);
			return FERRY_EIO;
		}
		snprintf(what, sizeof(what), "send_lat ping %" PRIu64, k);
		if (perf_verify(st->rbase, size, perf_seed(LAT_SIDE_CLIENT, 0, k), what))
			return FERRY_EIO;
	}
	rc = lat_slot(st, size, &sb);
	if (rc)
		return rc;
	if (check)
		perf_fill(sb, size, perf_seed(LAT_SIDE_SERVER, 0, k));
	rc = ferry_send(pe->ep, sb, size, PERF_TAG(PERF_K_PONG, k), PERF_DATA_CTX(0), NULL);
	if (rc)
		return perf_call_failed(rc, "ferry_send");
	st->posted++;
	/*
	 * The receive for the next ping is posted after the pong, as ucx_perftest's
	 * ping-pong does: its cost then overlaps the round trip instead of adding to it.
	 * A ping that arrives first waits in the unexpected queue and is matched by this
	 * call (--check covers both orders).
	 */
	if (k + 1 < total) {
		rc = ferry_recv(pe->ep, st->rbase, size, PERF_TAG(PERF_K_PING, 0), PERF_KIND_MASK,
				PERF_DATA_CTX(0), NULL);
		if (rc)
			return perf_call_failed(rc, "ferry_recv");
	}
	st->iter++;
	return 0;
}

int perf_lat_server(struct perf_conn *pc, const struct perf_round *r, struct perf_msg *res)
{
	const enum perf_test test = pc->p->test;
	uint64_t total = r->duration ? UINT64_MAX : r->iters + r->warmup;
	struct perf_oob_op done_op;
	struct perf_msg done;
	struct perf_cpu c0, c1;
	struct lat_state st;
	int rc;

	lat_prepare(&st, pc, r);
	st.stop_op = &done_op;
	if (test == PERF_READ_LAT && r->check)
		perf_fill(st.pe->buf, r->size, perf_seed(LAT_SIDE_SERVER, 0, 0)); /* read at 0 */
	rc = perf_oob_post_recv(pc, 0, PERF_K_DONE, &done, &done_op);
	if (rc)
		return rc;
	if (test == PERF_SEND_LAT) {
		rc = ferry_recv(st.pe->ep, st.rbase, r->size, PERF_TAG(PERF_K_PING, 0),
				PERF_KIND_MASK, PERF_DATA_CTX(0), NULL);
		if (rc)
			return perf_call_failed(rc, "ferry_recv");
	}

	rc = perf_oob_send_ready(pc);
	if (rc)
		return rc;
	perf_cpu_mark(&c0);
	if (test != PERF_READ_LAT) {
		while (!rc && !st.stop && st.iter < total)
			rc = lat_server_iter(&st, total);
	}
	if (!rc)
		rc = lat_wait_completed(&st, st.posted);
	while (!rc && !done_op.done) {
		int nc = lat_poll(&st, 1);

		rc = nc < 0 ? nc : 0;
	}
	perf_cpu_mark(&c1);
	if (!rc)
		rc = perf_oob_ready_wait(pc);
	if (rc)
		return rc;
	if (done.magic != PERF_MAGIC || (!r->duration && done.count != total)) {
		fprintf(stderr, "ferry_perf: DONE says %" PRIu64 " iterations, expected %" PRIu64 "\n",
			done.count, total);
		return FERRY_EPROTO;
	}
	res->cpu = perf_cpu_pct(&c0, &c1);
	if (r->check && test != PERF_READ_LAT)
		res->verified = st.iter;
	return 0;
}
