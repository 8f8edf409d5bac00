/*
 * bw.c - write_bw, read_bw and send_bw, as perftest runs them.
 *
 * The client keeps tx-depth operations outstanding on every endpoint, stamping each
 * post and each completion (tposted/tcompleted, for perftest's peak and average),
 * and polls up to PERF_POLL_BATCH completions at once. For one-sided tests the server
 * only drives progress until every endpoint's DONE arrives; for send_bw it keeps
 * perftest's rx-depth (512) receives posted and re-posts each one as it completes.
 *
 * Timed rounds move every operation from and to the first slot of each side's buffer,
 * as perftest (its cycle buffer), iperf3 and fi_pingpong reuse one buffer: nothing is
 * verified, and a single warm 1 MiB buffer against two alternating ones made ofi+shm
 * send_bw here 10% faster in a quiet spell and up to a third in noisy ones (medians of
 * alternating runs; process_vm_readv's source and destination stay in cache).
 *
 * Checking rounds (--check) run window by window instead: fill W slots with
 * per-iteration patterns, transfer them, then verify (writes are read back from the
 * server's memory; the server also verifies what landed there at DONE).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf.h"

#define BW_SIDE_CLIENT 1u
#define BW_SIDE_SERVER 2u
#define BW_STAMPS_MAX (1ull << 24) /* beyond this many operations no peak (perftest's noPeak) */

struct bw_state {
	struct perf_conn *pc;
	const struct perf_round *r;
	uint64_t *scnt;  /* per endpoint: data operations posted this round */
	uint64_t *ccnt;  /* per endpoint: data operations completed this round */
	uint64_t *limit;
};

/* more: another post follows at once (FERRY_OP_MORE, unless --no_more). */
static int bw_post(struct perf_conn *pc, enum perf_test test, uint32_t e, uint64_t loff,
		   uint64_t roff, uint64_t size, uint64_t seq, int more)
{
	struct perf_ep *pe = &pc->eps[e];
	struct ferry_op_attr attr = { .flags = more && !pc->p->no_more ? FERRY_OP_MORE : 0 };

	switch (test) {
	case PERF_WRITE_BW:
		return ferry_write(pe->ep, pe->buf + loff, size, pe->mr, pe->rkey, roff,
				   PERF_DATA_CTX(e), &attr);
	case PERF_READ_BW:
		return ferry_read(pe->ep, pe->buf + loff, size, pe->mr, pe->rkey, roff,
				  PERF_DATA_CTX(e), &attr);
	default:
		return ferry_send(pe->ep, pe->buf + loff, size, PERF_TAG(PERF_K_DATA, seq),
				  PERF_DATA_CTX(e), &attr);
	}
}

static const char *bw_call(enum perf_test test)
{
	return test == PERF_WRITE_BW ? "ferry_write" : test == PERF_READ_BW ? "ferry_read"
									    : "ferry_send";
}

/*
 * Runs per_ep more operations on every endpoint (or, timed in duration mode, until the
 * duration ends), keeping depth outstanding per endpoint. m is filled when timed.
 */
static int bw_run(struct bw_state *st, uint64_t per_ep, struct perf_measure *m, int timed)
{
	struct perf_conn *pc = st->pc;
	const struct perf_round *r = st->r;
	const enum perf_test test = pc->p->test;
	const uint64_t size = r->size;
	const uint32_t n = pc->n, depth = r->depth;
	const int duration = timed && r->duration > 0;
	uint64_t *tp = timed && !duration ? m->tposted : NULL;
	uint64_t *tc = timed && !duration ? m->tcompleted : NULL;
	struct ferry_completion c[PERF_POLL_BATCH];
	uint64_t posted = 0, completed = 0, total = duration ? UINT64_MAX : per_ep * n;
	uint64_t start, now, last;
	struct perf_stamp_base base;
	struct perf_window win = { 0 };
	int stopping = 0, progressed = 0, nc, rc;
	unsigned idle = 0;
	uint32_t e;

	for (e = 0; e < n; e++)
		st->limit[e] = duration ? UINT64_MAX : st->scnt[e] + per_ep;
	if (timed && !duration)
		perf_cpu_mark(&m->cpu0);
	perf_stamp_base(&base);
	start = last = now = base.ns;
	if (timed) {
		m->t0 = start;
		if (duration)
			perf_window_start(&win, r, start);
	}

	while (completed < total) {
		for (e = 0; e < n && !stopping; e++) {
			uint64_t s = st->scnt[e];

			while (s < st->limit[e] && s - st->ccnt[e] < depth) {
				if (tp)
					tp[posted] = perf_ticks();
				rc = bw_post(pc, test, e, 0, 0, size, s,
					     s + 1 < st->limit[e] && s + 1 - st->ccnt[e] < depth);
				if (rc == FERRY_EAGAIN)
					break; /* queue full: poll, then post again */
				if (rc)
					return perf_call_failed(rc, bw_call(test));
				s++;
				posted++;
			}
			st->scnt[e] = s;
		}
		if (stopping && completed == posted)
			break;

		nc = perf_poll(pc, c, PERF_POLL_BATCH, 1);
		if (nc < 0)
			return perf_call_failed(nc, "ferry_cq_poll");
		if (nc == 0) {
			/* reading the clock on every empty poll would cost more than the poll */
			if ((++idle & 0x3ff) && pc->p->poll == PERF_POLL_BUSY)
				continue;
			now = perf_now();
			if (progressed) {
				last = now;
				progressed = 0;
			}
			rc = perf_stalled(pc, last, perf_test_name(test));
			if (rc)
				return rc;
		} else {
			now = duration ? perf_now() : tc ? perf_ticks() : 0;
			progressed = 1;
			idle = 0;
		}
		for (int i = 0; i < nc; i++) {
			if (!PERF_CTX_IS_DATA(c[i].user_ctx)) {
				rc = perf_oob_complete(&c[i]);
				if (rc)
					return rc;
				continue;
			}
			if (c[i].status)
				return perf_op_failed(&c[i], perf_test_name(test));
			st->ccnt[PERF_CTX_EP(c[i].user_ctx)]++;
			if (tc)
				tc[completed] = now;
			completed++;
		}
		if (duration && now && perf_window_step(&win, m, now, completed))
			stopping = 1;
	}
	if (timed && !duration) {
		if (tp) {
			perf_stamps_to_ns(&base, tp, posted);
			perf_stamps_to_ns(&base, tc, completed);
		}
		perf_cpu_mark(&m->cpu1);
		m->t1 = m->cpu1.ns;
		m->ops = completed;
		m->nstamps = completed;
	}
	if (duration && win.state < 2) {
		fprintf(stderr, "ferry_perf: the measured window never closed\n");
		return FERRY_EIO;
	}
	return 0;
}

/* Waits until count more data operations have completed on endpoint e. */
static int bw_wait(struct bw_state *st, uint32_t e, uint64_t target)
{
	struct perf_conn *pc = st->pc;
	struct ferry_completion c[PERF_POLL_BATCH];
	uint64_t last = perf_now();
	int nc, rc;

	while (st->ccnt[e] < target) {
		nc = perf_poll(pc, c, PERF_POLL_BATCH, 1);
		if (nc < 0)
			return perf_call_failed(nc, "ferry_cq_poll");
		if (nc == 0) {
			rc = perf_stalled(pc, last, "check");
			if (rc)
				return rc;
			continue;
		}
		last = perf_now();
		for (int i = 0; i < nc; i++) {
			if (!PERF_CTX_IS_DATA(c[i].user_ctx)) {
				rc = perf_oob_complete(&c[i]);
				if (rc)
					return rc;
				continue;
			}
			if (c[i].status)
				return perf_op_failed(&c[i], perf_test_name(pc->p->test));
			st->ccnt[PERF_CTX_EP(c[i].user_ctx)]++;
		}
	}
	return 0;
}

/* Posts one operation, polling while the queue is full. */
static int bw_post_retry(struct bw_state *st, enum perf_test test, uint32_t e, uint64_t loff,
			 uint64_t roff, uint64_t size, uint64_t seq, uint64_t *posted)
{
	int rc;

	while ((rc = bw_post(st->pc, test, e, loff, roff, size, seq, 0)) == FERRY_EAGAIN) {
		rc = bw_wait(st, e, st->ccnt[e] + 1);
		if (rc)
			return rc;
	}
	if (rc)
		return perf_call_failed(rc, bw_call(test));
	(*posted)++;
	return 0;
}

static int bw_client_check(struct bw_state *st, struct perf_measure *m)
{
	struct perf_conn *pc = st->pc;
	const struct perf_round *r = st->r;
	const enum perf_test test = pc->p->test;
	const uint64_t size = r->size, W = r->nslots, N = r->iters;
	char what[96];
	int rc;

	for (uint32_t e = 0; e < pc->n; e++) {
		struct perf_ep *pe = &pc->eps[e];
		uint64_t posted = 0;

		for (uint64_t b = 0; b < N; b += W) {
			uint64_t w = N - b < W ? N - b : W;

			for (uint64_t s = 0; s < w; s++) {
				uint64_t i = b + s, off = s * size;

				if (test == PERF_READ_BW)
					memset(pe->buf + off, 0xee, size);
				else
					perf_fill(pe->buf + off, size, perf_seed(BW_SIDE_CLIENT, e, i));
				rc = bw_post_retry(st, test, e, off, off, size, st->scnt[e], &posted);
				if (rc)
					return rc;
				st->scnt[e]++;
			}
			rc = bw_wait(st, e, posted);
			if (rc)
				return rc;
			if (test == PERF_WRITE_BW) {
				/* read the slots back from the server's memory into [W, 2W) */
				for (uint64_t s = 0; s < w; s++) {
					uint64_t loff = (W + s) * size;

					memset(pe->buf + loff, 0xee, size);
					rc = bw_post_retry(st, PERF_READ_BW, e, loff, s * size, size, 0,
							   &posted);
					if (rc)
						return rc;
				}
				rc = bw_wait(st, e, posted);
				if (rc)
					return rc;
			}
			for (uint64_t s = 0; s < w; s++) {
				uint64_t i = b + s;

				switch (test) {
				case PERF_WRITE_BW:
					snprintf(what, sizeof(what), "write %" PRIu64 " read back", i);
					rc = perf_verify(pe->buf + (W + s) * size, size,
							 perf_seed(BW_SIDE_CLIENT, e, i), what);
					break;
				case PERF_READ_BW:
					snprintf(what, sizeof(what), "read %" PRIu64 " (slot %" PRIu64 ")",
						 i, s);
					rc = perf_verify(pe->buf + s * size, size,
							 perf_seed(BW_SIDE_SERVER, e, s), what);
					break;
				default:
					rc = 0; /* the server verifies what it received */
					break;
				}
				if (rc) {
					m->errors++;
					return FERRY_EIO;
				}
				if (test != PERF_SEND_BW)
					m->verified++;
			}
		}
	}
	return 0;
}

static void bw_measure_free(struct perf_measure *m)
{
	free(m->tposted);
	free(m->tcompleted);
	m->tposted = m->tcompleted = NULL;
}

/* After DONE: the server says how many of its receives are still posted; fill them. */
static int bw_client_drain(struct bw_state *st)
{
	struct perf_conn *pc = st->pc;
	struct perf_msg msg;
	uint64_t posted;
	int rc;

	for (uint32_t e = 0; e < pc->n; e++) {
		rc = perf_oob_recv(pc, e, PERF_K_DRAIN, &msg);
		if (rc)
			return rc;
		posted = st->ccnt[e];
		for (uint64_t k = 0; k < msg.count; k++) {
			rc = bw_post_retry(st, PERF_SEND_BW, e, 0, 0, st->r->size, st->scnt[e]++,
					   &posted);
			if (rc)
				return rc;
		}
		rc = bw_wait(st, e, posted);
		if (rc)
			return rc;
	}
	return 0;
}

int perf_bw_client(struct perf_conn *pc, const struct perf_round *r, struct perf_measure *m)
{
	struct bw_state st = { .pc = pc, .r = r };
	struct perf_msg msg;
	uint64_t nops = r->iters * pc->n;
	int rc = FERRY_ENOMEM;

	st.scnt = calloc(pc->n, sizeof(*st.scnt));
	st.ccnt = calloc(pc->n, sizeof(*st.ccnt));
	st.limit = calloc(pc->n, sizeof(*st.limit));
	if (!st.scnt || !st.ccnt || !st.limit)
		goto out;

	if (r->check) {
		rc = bw_client_check(&st, m);
	} else {
		if (!r->duration && nops <= BW_STAMPS_MAX) {
			m->tposted = malloc(nops * sizeof(uint64_t));
			m->tcompleted = malloc(nops * sizeof(uint64_t));
			if (!m->tposted || !m->tcompleted)
				goto out;
			/* fault the pages in before the clock starts */
			memset(m->tposted, 0, nops * sizeof(uint64_t));
			memset(m->tcompleted, 0, nops * sizeof(uint64_t));
		}
		rc = r->warmup ? bw_run(&st, r->warmup, m, 0) : 0;
		if (!rc)
			rc = bw_run(&st, r->iters, m, 1);
		m->iters = r->duration ? m->ops : r->iters;
	}
	if (rc)
		goto out;

	for (uint32_t e = 0; e < pc->n; e++) {
		memset(&msg, 0, sizeof(msg));
		msg.count = st.scnt[e];
		msg.nslots = r->nslots;
		rc = perf_oob_send(pc, e, PERF_K_DONE, &msg);
		if (rc)
			goto out;
	}
	if (pc->p->test == PERF_SEND_BW)
		rc = bw_client_drain(&st);
out:
	if (rc == FERRY_ENOMEM && !(st.scnt && st.ccnt && st.limit))
		perf_call_failed(rc, "malloc");
	if (rc)
		bw_measure_free(m);
	free(st.scnt);
	free(st.ccnt);
	free(st.limit);
	return rc;
}

/* ------------------------------------------------------------------ server */

struct bw_srv {
	struct perf_msg *done_msg;
	struct perf_oob_op *done_op;
	uint64_t *expected; /* send_bw: messages this endpoint will receive */
	uint64_t *posted;   /* send_bw: receives posted */
	uint64_t *recvd;    /* send_bw: receives completed */
	uint64_t rxn;       /* send_bw: receives kept posted per endpoint */
};

static int bw_srv_post_recv(struct perf_conn *pc, struct bw_srv *sv, const struct perf_round *r,
			    uint32_t e)
{
	struct perf_ep *pe = &pc->eps[e];
	uint64_t k = sv->posted[e];
	int rc;

	/* timing: every receive into the first slot; checking has rxn == nslots */
	rc = ferry_recv(pe->ep, pe->buf + (r->check ? (k % r->nslots) * r->size : 0), r->size,
			PERF_TAG(PERF_K_DATA, 0), PERF_KIND_MASK, PERF_DATA_CTX(e), NULL);
	if (rc)
		return perf_call_failed(rc, "ferry_recv");
	sv->posted[e]++;
	return 0;
}

/* A send_bw receive completed: check order and (check rounds) bytes, then re-post. */
static int bw_srv_recv_done(struct perf_conn *pc, struct bw_srv *sv, const struct perf_round *r,
			    const struct ferry_completion *c, struct perf_msg *res)
{
	uint32_t e = PERF_CTX_EP(c->user_ctx);
	uint64_t k = sv->recvd[e]++;
	uint64_t seq = c->tag & PERF_SEQ_MASK;
	char what[96];

	if (r->check && k < sv->expected[e]) {
		if (seq != k || c->len != r->size) {
			fprintf(stderr, "ferry_perf: check failed: endpoint %u message %" PRIu64
					" has seq %" PRIu64 " and %" PRIu64 " bytes (expected %" PRIu64
					")\n", e, k, seq, c->len, r->size);
			res->errors++;
			return FERRY_EIO;
		}
		snprintf(what, sizeof(what), "send %" PRIu64 " received", seq);
		if (perf_verify(pc->eps[e].buf + (k % r->nslots) * r->size, r->size,
				perf_seed(BW_SIDE_CLIENT, e, seq), what)) {
			res->errors++;
			return FERRY_EIO;
		}
		res->verified++;
	}
	if (sv->posted[e] < sv->expected[e])
		return bw_srv_post_recv(pc, sv, r, e);
	return 0;
}

static int bw_srv_loop(struct perf_conn *pc, struct bw_srv *sv, const struct perf_round *r,
		       struct perf_msg *res, int draining)
{
	const int is_send = pc->p->test == PERF_SEND_BW;
	struct ferry_completion c[PERF_POLL_BATCH];
	int nc, rc;

	for (;;) {
		uint32_t e;

		for (e = 0; e < pc->n; e++) {
			if (!sv->done_op[e].done)
				break;
			if (is_send && sv->recvd[e] < (draining ? sv->posted[e] : sv->expected[e]))
				break;
		}
		if (e == pc->n)
			return 0;

		nc = perf_poll(pc, c, PERF_POLL_BATCH, 1);
		if (nc < 0)
			return perf_call_failed(nc, "ferry_cq_poll");
		for (int i = 0; i < nc; i++) {
			if (!PERF_CTX_IS_DATA(c[i].user_ctx)) {
				struct perf_oob_op *op = c[i].user_ctx;

				rc = perf_oob_complete(&c[i]);
				if (rc)
					return rc;
				if (op >= sv->done_op && op < sv->done_op + pc->n) {
					e = (uint32_t)(op - sv->done_op);
					if (!draining && sv->done_msg[e].magic != PERF_MAGIC) {
						fprintf(stderr, "ferry_perf: malformed DONE\n");
						return FERRY_EPROTO;
					}
					if (is_send && !draining) {
						sv->expected[e] = sv->done_msg[e].count;
						while (sv->posted[e] < sv->expected[e] &&
						       sv->posted[e] - sv->recvd[e] < sv->rxn) {
							rc = bw_srv_post_recv(pc, sv, r, e);
							if (rc)
								return rc;
						}
					}
				}
				continue;
			}
			if (c[i].status)
				return perf_op_failed(&c[i], perf_test_name(pc->p->test));
			if (is_send) {
				rc = bw_srv_recv_done(pc, sv, r, &c[i], res);
				if (rc)
					return rc;
			}
		}
	}
}

/* Check rounds of write_bw: the last write into each slot must be in this memory. */
static int bw_srv_check_writes(struct perf_conn *pc, struct bw_srv *sv, const struct perf_round *r,
			       struct perf_msg *res)
{
	char what[96];

	for (uint32_t e = 0; e < pc->n; e++) {
		uint64_t N = sv->done_msg[e].count, W = sv->done_msg[e].nslots;

		if (W != r->nslots) {
			fprintf(stderr, "ferry_perf: DONE names %" PRIu64 " slots, round %" PRIu64 "\n",
				W, r->nslots);
			return FERRY_EPROTO;
		}
		for (uint64_t s = 0; s < W && s < N; s++) {
			uint64_t i = s + W * ((N - 1 - s) / W);

			snprintf(what, sizeof(what), "write %" PRIu64 " in server memory", i);
			if (perf_verify(pc->eps[e].buf + s * r->size, r->size,
					perf_seed(BW_SIDE_CLIENT, e, i), what)) {
				res->errors++;
				return FERRY_EIO;
			}
			res->verified++;
		}
	}
	return 0;
}

int perf_bw_server(struct perf_conn *pc, const struct perf_round *r, struct perf_msg *res)
{
	const enum perf_test test = pc->p->test;
	struct bw_srv sv = { 0 };
	struct perf_cpu c0, c1;
	uint32_t e, n = pc->n;
	int rc = FERRY_ENOMEM;

	sv.done_msg = calloc(n, sizeof(*sv.done_msg));
	sv.done_op = calloc(n, sizeof(*sv.done_op));
	sv.expected = calloc(n, sizeof(*sv.expected));
	sv.posted = calloc(n, sizeof(*sv.posted));
	sv.recvd = calloc(n, sizeof(*sv.recvd));
	if (!sv.done_msg || !sv.done_op || !sv.expected || !sv.posted || !sv.recvd) {
		perf_call_failed(rc, "calloc");
		goto out;
	}

	if (test == PERF_READ_BW && r->check) {
		for (e = 0; e < n; e++)
			for (uint64_t s = 0; s < r->nslots; s++)
				perf_fill(pc->eps[e].buf + s * r->size, r->size,
					  perf_seed(BW_SIDE_SERVER, e, s));
	}
	for (e = 0; e < n; e++) {
		rc = perf_oob_post_recv(pc, e, PERF_K_DONE, &sv.done_msg[e], &sv.done_op[e]);
		if (rc)
			goto out;
	}
	if (test == PERF_SEND_BW) {
		uint64_t cap = (ferry_ctx_config(pc->ctx)->cq_size - 256) / n;

		/* each posted receive owns a slot while checking; timing may share them */
		sv.rxn = r->check ? r->nslots : perf_rx_depth(pc->p);
		if (sv.rxn > cap)
			sv.rxn = cap ? cap : 1;
		for (e = 0; e < n; e++) {
			sv.expected[e] = r->duration ? UINT64_MAX : r->iters + r->warmup;
			while (sv.posted[e] < sv.rxn && sv.posted[e] < sv.expected[e]) {
				rc = bw_srv_post_recv(pc, &sv, r, e);
				if (rc)
					goto out;
			}
		}
	}

	rc = perf_oob_send_ready(pc);
	if (rc)
		goto out;
	perf_cpu_mark(&c0);
	rc = bw_srv_loop(pc, &sv, r, res, 0);
	perf_cpu_mark(&c1);
	if (rc)
		goto out;
	res->cpu = perf_cpu_pct(&c0, &c1);

	if (test == PERF_WRITE_BW && r->check)
		rc = bw_srv_check_writes(pc, &sv, r, res);
	if (!rc && test == PERF_SEND_BW) {
		/*
		 * Receives posted beyond what the client sent (duration mode): ask the
		 * client for that many more. Posted at once on every endpoint, because
		 * the client's extra messages may arrive while another DRAIN is in flight.
		 */
		for (e = 0; e < n && !rc; e++) {
			memset(&sv.done_msg[e], 0, sizeof(sv.done_msg[e]));
			sv.done_msg[e].count = sv.posted[e] - sv.recvd[e];
			rc = perf_oob_post_send(pc, e, PERF_K_DRAIN, &sv.done_msg[e], &sv.done_op[e]);
		}
		if (!rc)
			rc = bw_srv_loop(pc, &sv, r, res, 1);
	}
	if (!rc)
		rc = perf_oob_ready_wait(pc);
out:
	free(sv.done_msg);
	free(sv.done_op);
	free(sv.expected);
	free(sv.posted);
	free(sv.recvd);
	return rc;
}
