/*
 * conf_many.c - many concurrent endpoints, each doing send/recv, write and read at
 * the same time, all verified; then the same from several client threads at once.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NEP 64
#define SLICE (64 << 10)
#define RW (FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE)
#define TAG_MSG 0x100
#define TAG_REPLY 0x200

static size_t msg_len(int i)
{
	/* Mostly eager, every 8th by rendezvous. */
	return i % 8 == 0 ? (256 << 10) + (size_t)i : 4096 * (size_t)(i % 4 + 1) + (size_t)i;
}

struct slot {
	unsigned char *msg, *rmsg, *slice, *back, *reply, *rreply;
};

static void test_many_endpoints(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	struct ferry_ep *cep[NEP], *sep[NEP];
	struct slot s[NEP];
	unsigned char *region = conf_alloc(c, (size_t)NEP * SLICE);
	struct ferry_mr *rmr = conf_reg(c, w->srv, region, (size_t)NEP * SLICE, RW);
	struct ferry_rkey *rk = conf_rkey(c, w->cli, rmr);
	struct ferry_completion *cmp = calloc(4 * NEP, sizeof(*cmp));
	struct ferry_stats st;
	int i;

	assert_non_null(cmp);
	conf_connect_n(w, NEP, FERRY_CONNECT_PRIVATE, cep, sep);
	for (i = 0; i < NEP; i++) {
		conf_own_ep(c, cep[i]);
		conf_own_ep(c, sep[i]);
	}
	conf_assert_rc(ferry_stats_get(w->cli, NULL, &st), 0);
	assert_true(st.eps_open >= NEP);

	for (i = 0; i < NEP; i++) {
		s[i].msg = conf_alloc(c, msg_len(i));
		s[i].rmsg = conf_alloc(c, msg_len(i));
		s[i].slice = conf_alloc(c, SLICE);
		s[i].back = conf_alloc(c, SLICE);
		s[i].reply = conf_alloc(c, 1000);
		s[i].rreply = conf_alloc(c, 1000);
		conf_fill(s[i].msg, msg_len(i), 100 + (uint64_t)i);
		conf_fill(s[i].slice, SLICE, 200 + (uint64_t)i);
		conf_fill(s[i].reply, 1000, 300 + (uint64_t)i);
		conf_assert_rc(ferry_recv(sep[i], s[i].rmsg, msg_len(i), TAG_MSG + (uint64_t)i,
					  ~0ull, s[i].rmsg, NULL), 0);
		conf_assert_rc(ferry_recv(cep[i], s[i].rreply, 1000, TAG_REPLY, ~0ull,
					  s[i].rreply, NULL), 0);
	}
	/* Everything at once: a message and a write on every endpoint, replies back. */
	for (i = 0; i < NEP; i++) {
		conf_assert_rc(ferry_send(cep[i], s[i].msg, msg_len(i), TAG_MSG + (uint64_t)i,
					  s[i].msg, NULL), 0);
		conf_assert_rc(ferry_write(cep[i], s[i].slice, SLICE, NULL, rk,
					   (uint64_t)i * SLICE, s[i].slice, NULL), 0);
		conf_assert_rc(ferry_send(sep[i], s[i].reply, 1000, TAG_REPLY, s[i].reply, NULL), 0);
	}
	conf_wait_ms(w, ferry_ctx_cq(w->cli), cmp, 3 * NEP, 30000);
	for (i = 0; i < 3 * NEP; i++)
		if (cmp[i].status != 0)
			conf_fail("client completion %d (type %d) failed: %s", i, cmp[i].type,
				  conf_err(cmp[i].status));
	conf_wait_ms(w, ferry_ctx_cq(w->srv), cmp, 2 * NEP, 30000);
	for (i = 0; i < 2 * NEP; i++)
		if (cmp[i].status != 0)
			conf_fail("server completion %d (type %d) failed: %s", i, cmp[i].type,
				  conf_err(cmp[i].status));
	for (i = 0; i < NEP; i++) {
		char what[64];
		snprintf(what, sizeof(what), "message on endpoint %d", i);
		conf_assert_pattern(s[i].rmsg, msg_len(i), 100 + (uint64_t)i, what);
		snprintf(what, sizeof(what), "slice written by endpoint %d", i);
		conf_assert_pattern(region + (size_t)i * SLICE, SLICE, 200 + (uint64_t)i, what);
		snprintf(what, sizeof(what), "reply on endpoint %d", i);
		conf_assert_pattern(s[i].rreply, 1000, 300 + (uint64_t)i, what);
	}
	/* Read every slice back through a different endpoint than wrote it. */
	for (i = 0; i < NEP; i++)
		conf_assert_rc(ferry_read(cep[(i + 1) % NEP], s[i].back, SLICE, NULL, rk,
					  (uint64_t)i * SLICE, s[i].back, NULL), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->cli), cmp, NEP, 30000);
	for (i = 0; i < NEP; i++)
		conf_assert_rc(cmp[i].status, 0);
	for (i = 0; i < NEP; i++)
		conf_assert_pattern(s[i].back, SLICE, 200 + (uint64_t)i, "slice read back");
	for (i = 0; i < NEP; i++) {
		assert_int_equal(ferry_ep_status(cep[i]), 0);
		conf_close(c, cep[i]);
		conf_close(c, sep[i]);
	}
	free(cmp);
}

/* ------------------------------------------------------------------ threads */

#define NTHR 4
#define PER (NEP / NTHR)

struct worker {
	struct conf_world *w;
	int id;
	struct ferry_ep **cep;
	const struct ferry_rkey *rk;
	struct slot *s;
	atomic_int *done;
	char err[256];
};

#define WFAIL(wk, ...)                                                                \
	do {                                                                         \
		snprintf((wk)->err, sizeof((wk)->err), __VA_ARGS__);                 \
		goto out;                                                            \
	} while (0)

/* Waits on the worker's own queue; only the main thread touches cmocka. */
static int worker_wait(struct worker *wk, struct ferry_cq *cq, int n)
{
	struct ferry_completion cmp[16];
	uint64_t end = conf_now_ms() + 30000;
	int got = 0;

	while (got < n) {
		int want = n - got < 16 ? n - got : 16;
		int r = ferry_cq_wait(cq, cmp, want, 50);
		if (r == FERRY_ETIMEDOUT)
			r = 0;
		if (r < 0) {
			snprintf(wk->err, sizeof(wk->err), "ferry_cq_wait: %s", conf_err(r));
			return -1;
		}
		for (int k = 0; k < r; k++)
			if (cmp[k].status != 0) {
				snprintf(wk->err, sizeof(wk->err),
					 "thread %d: completion type %d failed: %s", wk->id,
					 cmp[k].type, conf_err(cmp[k].status));
				return -1;
			}
		got += r;
		if (conf_now_ms() > end) {
			snprintf(wk->err, sizeof(wk->err),
				 "thread %d: timed out with %d of %d completions", wk->id, got, n);
			return -1;
		}
	}
	return 0;
}

static void *worker_main(void *arg)
{
	struct worker *wk = arg;
	struct ferry_cq *cq = NULL;
	struct ferry_op_attr a = { 0 };
	int i, rc;

	rc = ferry_cq_create(wk->w->cli, &cq);
	if (rc != 0)
		WFAIL(wk, "ferry_cq_create: %s", conf_err(rc));
	a.cq = cq;
	for (i = wk->id * PER; i < (wk->id + 1) * PER; i++) {
		struct slot *s = &wk->s[i];
		rc = ferry_recv(wk->cep[i], s->rreply, 1000, TAG_REPLY, ~0ull, s->rreply, &a);
		if (rc != 0)
			WFAIL(wk, "ferry_recv on ep %d: %s", i, conf_err(rc));
		rc = ferry_send(wk->cep[i], s->msg, msg_len(i), TAG_MSG + (uint64_t)i, s->msg, &a);
		if (rc != 0)
			WFAIL(wk, "ferry_send on ep %d: %s", i, conf_err(rc));
		rc = ferry_write(wk->cep[i], s->slice, SLICE, NULL, wk->rk, (uint64_t)i * SLICE,
				 s->slice, &a);
		if (rc != 0)
			WFAIL(wk, "ferry_write on ep %d: %s", i, conf_err(rc));
	}
	if (worker_wait(wk, cq, 3 * PER) != 0)
		goto out;
	for (i = wk->id * PER; i < (wk->id + 1) * PER; i++) {
		rc = ferry_read(wk->cep[i], wk->s[i].back, SLICE, NULL, wk->rk,
				(uint64_t)i * SLICE, wk->s[i].back, &a);
		if (rc != 0)
			WFAIL(wk, "ferry_read on ep %d: %s", i, conf_err(rc));
	}
	if (worker_wait(wk, cq, PER) != 0)
		goto out;
	for (i = wk->id * PER; i < (wk->id + 1) * PER; i++) {
		if (conf_check(wk->s[i].back, SLICE, 200 + (uint64_t)i) >= 0)
			WFAIL(wk, "ep %d: slice read back differs", i);
		if (conf_check(wk->s[i].rreply, 1000, 300 + (uint64_t)i) >= 0)
			WFAIL(wk, "ep %d: reply differs", i);
	}
out:
	if (cq) {
		rc = ferry_cq_destroy(cq);
		if (rc != 0 && !wk->err[0])
			snprintf(wk->err, sizeof(wk->err), "ferry_cq_destroy: %s", conf_err(rc));
	}
	atomic_fetch_add(wk->done, 1);
	return NULL;
}

static void test_many_threads(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	struct ferry_ep *cep[NEP], *sep[NEP];
	struct slot s[NEP];
	struct worker wk[NTHR];
	pthread_t th[NTHR];
	atomic_int done;
	unsigned char *region = conf_alloc(c, (size_t)NEP * SLICE);
	struct ferry_mr *rmr = conf_reg(c, w->srv, region, (size_t)NEP * SLICE, RW);
	struct ferry_rkey *rk = conf_rkey(c, w->cli, rmr);
	struct ferry_completion cmp[16];
	uint64_t end;
	int i, got = 0;

	conf_connect_n(w, NEP, FERRY_CONNECT_PRIVATE, cep, sep);
	for (i = 0; i < NEP; i++) {
		conf_own_ep(c, cep[i]);
		conf_own_ep(c, sep[i]);
		s[i].msg = conf_alloc(c, msg_len(i));
		s[i].rmsg = conf_alloc(c, msg_len(i));
		s[i].slice = conf_alloc(c, SLICE);
		s[i].back = conf_alloc(c, SLICE);
		s[i].reply = conf_alloc(c, 1000);
		s[i].rreply = conf_alloc(c, 1000);
		conf_fill(s[i].msg, msg_len(i), 100 + (uint64_t)i);
		conf_fill(s[i].slice, SLICE, 200 + (uint64_t)i);
		conf_fill(s[i].reply, 1000, 300 + (uint64_t)i);
		conf_assert_rc(ferry_recv(sep[i], s[i].rmsg, msg_len(i), TAG_MSG + (uint64_t)i,
					  ~0ull, &s[i], NULL), 0);
	}
	atomic_init(&done, 0);
	for (i = 0; i < NTHR; i++) {
		wk[i] = (struct worker){ .w = w, .id = i, .cep = cep, .rk = rk, .s = s,
					 .done = &done };
		assert_int_equal(pthread_create(&th[i], NULL, worker_main, &wk[i]), 0);
	}
	/* The main thread serves: each message received is answered on its endpoint. */
	end = conf_now_ms() + 60000;
	while (atomic_load(&done) < NTHR && conf_now_ms() < end) {
		int r = ferry_cq_poll(ferry_ctx_cq(w->srv), cmp, 16);
		assert_true(r >= 0);
		for (int k = 0; k < r; k++) {
			struct slot *sl = cmp[k].user_ctx;
			int idx;
			if (cmp[k].type != FERRY_OP_RECV)
				continue; /* our replies' send completions */
			idx = (int)(sl - s);
			if (cmp[k].status != 0)
				break;
			got++;
			(void)ferry_send(sep[idx], s[idx].reply, 1000, TAG_REPLY, s[idx].reply, NULL);
		}
		conf_drive(w, 2);
	}
	for (i = 0; i < NTHR; i++)
		pthread_join(th[i], NULL);
	for (i = 0; i < NTHR; i++)
		if (wk[i].err[0])
			conf_fail("worker %d: %s", i, wk[i].err);
	assert_int_equal(got, NEP);
	for (i = 0; i < NEP; i++) {
		conf_assert_pattern(s[i].rmsg, msg_len(i), 100 + (uint64_t)i, "message");
		conf_assert_pattern(region + (size_t)i * SLICE, SLICE, 200 + (uint64_t)i, "slice");
	}
	for (i = 0; i < NEP; i++) {
		conf_close(c, cep[i]);
		conf_close(c, sep[i]);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_many_endpoints, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_many_threads, conf_setup_none, conf_teardown),
	};

	return CONF_RUN("many", tests);
}
