/*
 * test_pool.c - the endpoint pool and pins (lib/endpoint.c) over the mock: a pooled
 * connect reuses the live endpoint, FERRY_CONNECT_PRIVATE never does, the pool's
 * capacity closes the least recently used idle endpoint, closed and failed endpoints
 * leave the pool at once, hold/release counts (stats eps_pinned), and destroying a
 * context with pins and ops in flight.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mock_provider.h"

#include <stdio.h>
#include <string.h>

static struct mt_pair P;
static struct ferry_ctx *both[2];

static int group_setup(void **state)
{
	(void)state;
	return mock_register();
}

static int setup(void **state)
{
	(void)state;
	mock_reset();
	memset(&P, 0, sizeof(P));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	mt_pair_destroy(&P);
	return 0;
}

static void open_with(const struct ferry_config *ca)
{
	mt_pair_open(&P, ca, NULL, true);
	both[0] = P.a;
	both[1] = P.b;
}

static struct ferry_ep *connect_to(const char *uri, unsigned flags)
{
	struct ferry_connect_attr attr = { .flags = flags };
	struct ferry_ep *ep = NULL;
	assert_int_equal(ferry_connect(P.a, uri, &attr, &ep), 0);
	assert_non_null(ep);
	return ep;
}

/* Takes the endpoint the last connect created on b (from listener l). */
static struct ferry_ep *accept_on(struct ferry_listener *l)
{
	struct ferry_ep *ep = NULL;
	int rc = FERRY_ETIMEDOUT;
	for (int i = 0; i < 50 && rc == FERRY_ETIMEDOUT; i++) {
		rc = ferry_listener_accept(l, &ep, 0);
		if (rc == FERRY_ETIMEDOUT)
			mt_progress(both, 2, 1);
	}
	assert_int_equal(rc, 0);
	return ep;
}

/* One verified message from a to b over the given pair of endpoints. */
static void exchange(struct ferry_ep *ea, struct ferry_ep *eb, uint64_t v)
{
	uint64_t in = 0;
	struct ferry_completion c;
	assert_int_equal(ferry_recv(eb, &in, 8, 0x77, ~0ull, &in, NULL), 0);
	assert_int_equal(ferry_send(ea, &v, 8, 0x77, &v, NULL), 0);
	assert_int_equal(mt_poll1(ferry_ctx_cq(P.b), &c, both, 2), 1);
	assert_int_equal(c.status, 0);
	assert_ptr_equal(c.ep, eb);
	assert_true(in == v);
	assert_int_equal(mt_poll1(ferry_ctx_cq(P.a), &c, both, 2), 1);
	assert_int_equal(c.status, 0);
}

static void settle(void)
{
	mt_progress(both, 2, 5);
}

/* ------------------------------------------------------------------ reuse */

static void test_connect_twice_same_endpoint(void **state)
{
	(void)state;
	open_with(NULL);
	struct ferry_ep *e1 = connect_to(P.uri, 0);
	struct ferry_ep *eb = accept_on(P.l);
	struct ferry_ep *e2 = connect_to(P.uri, 0);
	assert_ptr_equal(e1, e2);
	assert_int_equal(mock_count(MOCK_CNT_CONNECTS), 1);
	assert_int_equal(mock_count(MOCK_CNT_ACCEPTS), 1);
	struct ferry_stats st = mt_stats(P.a);
	assert_int_equal(st.eps_created, 1);
	assert_int_equal(st.eps_open, 1);
	assert_int_equal(st.eps_pooled, 1);
	assert_int_equal(st.eps_pinned, 1); /* one endpoint, held twice */
	assert_int_equal(e1->holds, 2);
	exchange(e2, eb, 1);

	/* Released, it stays pooled and open; the next connect gets it again. */
	ferry_ep_release(e1);
	ferry_ep_release(e2);
	st = mt_stats(P.a);
	assert_int_equal(st.eps_pinned, 0);
	assert_int_equal(st.eps_open, 1);
	assert_int_equal(st.eps_pooled, 1);
	struct ferry_ep *e3 = connect_to(P.uri, 0);
	assert_ptr_equal(e3, e1);
	assert_int_equal(mock_count(MOCK_CNT_CONNECTS), 1);
	exchange(e3, eb, 2);
	P.ea = e3;
	P.eb = eb;
	mt_pair_close(&P);
}

static void test_private_differs(void **state)
{
	(void)state;
	open_with(NULL);
	struct ferry_ep *pooled = connect_to(P.uri, 0);
	struct ferry_ep *bp = accept_on(P.l);
	struct ferry_ep *p1 = connect_to(P.uri, FERRY_CONNECT_PRIVATE);
	struct ferry_ep *b1 = accept_on(P.l);
	struct ferry_ep *p2 = connect_to(P.uri, FERRY_CONNECT_PRIVATE);
	struct ferry_ep *b2 = accept_on(P.l);
	assert_ptr_not_equal(p1, pooled);
	assert_ptr_not_equal(p2, pooled);
	assert_ptr_not_equal(p1, p2);
	assert_int_equal(mock_count(MOCK_CNT_CONNECTS), 3);
	struct ferry_stats st = mt_stats(P.a);
	assert_int_equal(st.eps_open, 3);
	assert_int_equal(st.eps_pooled, 1);
	assert_int_equal(st.eps_pinned, 3);
	/* A pooled connect never hands out a private endpoint. */
	struct ferry_ep *again = connect_to(P.uri, 0);
	assert_ptr_equal(again, pooled);
	ferry_ep_release(again);
	exchange(p1, b1, 11);
	exchange(p2, b2, 12);
	exchange(pooled, bp, 13);

	/* The last release of a private endpoint closes it, and the peer hears. */
	ferry_ep_release(p1);
	settle();
	st = mt_stats(P.a);
	assert_int_equal(st.eps_open, 2);
	assert_int_equal(st.eps_pooled, 1);
	assert_int_equal(ferry_ep_status(b1), FERRY_ECONNRESET);
	ferry_ep_close(p2);
	settle();
	assert_int_equal(ferry_ep_status(b2), FERRY_ECONNRESET);
	assert_int_equal(mt_stats(P.a).eps_open, 1);
	ferry_ep_release(b1);
	ferry_ep_release(b2);
	P.ea = pooled;
	P.eb = bp;
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ capacity */

static void test_pool_max_closes_lru(void **state)
{
	(void)state;
	struct ferry_config ca;
	struct ferry_listener *l[3];
	char uri[3][FERRYI_URI_MAX];
	struct ferry_ep *ea[3], *eb[3];

	mt_config(&ca);
	ca.pool_max = 2;
	open_with(&ca);
	l[0] = P.l;
	snprintf(uri[0], sizeof(uri[0]), "%s", P.uri);
	for (int i = 1; i < 3; i++) {
		size_t len = sizeof(uri[i]);
		char want[64];
		snprintf(want, sizeof(want), "mock://lru%d:0", i);
		assert_int_equal(ferry_listen(P.b, want, NULL, &l[i]), 0);
		assert_int_equal(ferry_listener_addr(l[i], uri[i], &len), 0);
	}

	/* u0 and u1 idle in the pool; u0 used again, so u1 is the least recent. */
	for (int i = 0; i < 2; i++) {
		ea[i] = connect_to(uri[i], 0);
		eb[i] = accept_on(l[i]);
		ferry_ep_release(ea[i]);
	}
	struct ferry_ep *again = connect_to(uri[0], 0);
	assert_ptr_equal(again, ea[0]);
	ferry_ep_release(again);
	assert_int_equal(mt_stats(P.a).eps_pooled, 2);

	/* A third pooled endpoint: the LRU idle one (u1) is closed, with a goodbye. */
	ea[2] = connect_to(uri[2], 0);
	eb[2] = accept_on(l[2]);
	settle();
	struct ferry_stats st = mt_stats(P.a);
	assert_int_equal(st.eps_pooled, 2);
	assert_int_equal(st.eps_open, 2);
	assert_int_equal(st.eps_closed, 1);
	assert_int_equal(mock_count(MOCK_CNT_GOODBYE), 1);
	assert_int_equal(ferry_ep_status(eb[1]), FERRY_ECONNRESET);
	assert_int_equal(ferry_ep_status(eb[0]), 0);
	/* u0 survived (pooled, same endpoint); u1 needs a new one. */
	again = connect_to(uri[0], 0);
	assert_ptr_equal(again, ea[0]);
	exchange(again, eb[0], 21);
	unsigned connects = mock_count(MOCK_CNT_CONNECTS);
	struct ferry_ep *u1 = connect_to(uri[1], 0);
	struct ferry_ep *u1b = accept_on(l[1]);
	assert_int_equal(mock_count(MOCK_CNT_CONNECTS), connects + 1);
	exchange(u1, u1b, 22);

	/* All three are held now: the pool goes over capacity rather than close one. */
	assert_int_equal(mt_stats(P.a).eps_pooled, 3);
	assert_int_equal(mt_stats(P.a).eps_closed, 1);
	ferry_ep_release(eb[1]);
	ferry_ep_release(u1b);
	ferry_ep_release(eb[0]);
	ferry_ep_release(eb[2]);
	ferry_ep_release(again);
	ferry_ep_release(u1);
	ferry_ep_release(ea[2]);
	P.ea = NULL;
	P.eb = NULL;
	mt_pair_close(&P);
}

static void test_pool_max_spares_pinned(void **state)
{
	(void)state;
	struct ferry_config ca;
	struct ferry_listener *l[3];
	char uri[3][FERRYI_URI_MAX];
	struct ferry_ep *ea[3], *eb[3];

	mt_config(&ca);
	ca.pool_max = 2;
	open_with(&ca);
	l[0] = P.l;
	snprintf(uri[0], sizeof(uri[0]), "%s", P.uri);
	for (int i = 1; i < 3; i++) {
		size_t len = sizeof(uri[i]);
		char want[64];
		snprintf(want, sizeof(want), "mock://pin%d:0", i);
		assert_int_equal(ferry_listen(P.b, want, NULL, &l[i]), 0);
		assert_int_equal(ferry_listener_addr(l[i], uri[i], &len), 0);
	}
	/* u0 held by the user, u1 pinned by a receive in flight: neither is idle. */
	uint64_t in = 0;
	for (int i = 0; i < 3; i++) {
		ea[i] = connect_to(uri[i], 0);
		eb[i] = accept_on(l[i]);
		if (i == 1) {
			assert_int_equal(ferry_recv(ea[1], &in, 8, 1, ~0ull, &in, NULL), 0);
			ferry_ep_release(ea[1]);
		}
	}
	settle();
	struct ferry_stats st = mt_stats(P.a);
	assert_int_equal(st.eps_pooled, 3);
	assert_int_equal(st.eps_closed, 0);
	assert_int_equal(ferry_ep_status(ea[0]), 0);
	assert_int_equal(mock_count(MOCK_CNT_GOODBYE), 0);
	ferry_ep_release(ea[0]);
	ferry_ep_release(ea[2]);
	for (int i = 0; i < 3; i++)
		ferry_ep_release(eb[i]);
	P.ea = NULL;
	P.eb = NULL;
	/* the receive completes with the close, and is polled by the leak check */
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ leaving the pool */

static void test_closed_or_failed_leaves_pool(void **state)
{
	(void)state;
	open_with(NULL);

	/* Closed by the user. */
	struct ferry_ep *e1 = connect_to(P.uri, 0);
	struct ferry_ep *b1 = accept_on(P.l);
	ferry_ep_close(e1);
	assert_int_equal(mt_stats(P.a).eps_pooled, 0);
	struct ferry_ep *e2 = connect_to(P.uri, 0);
	struct ferry_ep *b2 = accept_on(P.l);
	assert_int_equal(mt_stats(P.a).eps_created, 2);
	exchange(e2, b2, 31);

	/* Failed under a holder: out of the pool at once, the holder sees why. */
	mock_ep_fail(e2, FERRY_EIO);
	assert_int_equal(mt_stats(P.a).eps_pooled, 0);
	assert_int_equal(ferry_ep_status(e2), FERRY_EIO);
	uint64_t v = 1;
	assert_int_equal(ferry_send(e2, &v, 8, 1, NULL, NULL), FERRY_ENOTCONN);
	struct ferry_ep *e3 = connect_to(P.uri, 0);
	assert_ptr_not_equal(e3, e2);
	struct ferry_ep *b3 = accept_on(P.l);
	exchange(e3, b3, 32);
	ferry_ep_release(e2);

	/* Closed by the peer: the goodbye takes it out of the pool. */
	ferry_ep_release(e3);
	ferry_ep_close(b3);
	settle();
	struct ferry_stats st = mt_stats(P.a);
	assert_int_equal(st.eps_pooled, 0);
	assert_int_equal(st.eps_open, 0);
	struct ferry_ep *e4 = connect_to(P.uri, 0);
	struct ferry_ep *b4 = accept_on(P.l);
	assert_int_equal(mt_stats(P.a).eps_created, 4);
	exchange(e4, b4, 33);
	settle();
	assert_int_equal(ferry_ep_status(b1), FERRY_ECONNRESET);
	assert_int_equal(ferry_ep_status(b2), FERRY_ECONNRESET);
	ferry_ep_release(b1);
	ferry_ep_release(b2);
	P.ea = e4;
	P.eb = b4;
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ pins */

static void test_hold_release_counts(void **state)
{
	(void)state;
	open_with(NULL);
	struct ferry_ep *e1 = connect_to(P.uri, 0);
	struct ferry_ep *b1 = accept_on(P.l);
	assert_int_equal(mt_stats(P.a).eps_pinned, 1);
	assert_int_equal(mt_stats(P.b).eps_pinned, 1); /* the accepted one, until released */

	ferry_ep_hold(e1);
	ferry_ep_hold(e1);
	assert_int_equal(e1->holds, 3);
	assert_int_equal(mt_stats(P.a).eps_pinned, 1);
	struct ferry_ep *e2 = connect_to(P.uri, FERRY_CONNECT_PRIVATE);
	struct ferry_ep *b2 = accept_on(P.l);
	assert_int_equal(mt_stats(P.a).eps_pinned, 2);
	ferry_ep_release(e1);
	ferry_ep_release(e1);
	assert_int_equal(mt_stats(P.a).eps_pinned, 2);
	ferry_ep_release(e1);
	assert_int_equal(mt_stats(P.a).eps_pinned, 1);
	assert_int_equal(e1->holds, 0);
	assert_int_equal(mt_stats(P.a).eps_open, 2); /* pooled: still open */

	/* A release without a hold is refused (logged), not a double free. */
	ferry_ep_release(e1);
	assert_int_equal(mt_stats(P.a).eps_open, 2);
	assert_int_equal(mt_stats(P.a).eps_pinned, 1);
	ferry_ep_release(NULL);
	ferry_ep_hold(NULL);

	struct ferry_ep *e3 = connect_to(P.uri, 0);
	assert_ptr_equal(e3, e1);
	exchange(e3, b1, 41);
	ferry_ep_release(b1);
	ferry_ep_release(b2);
	assert_int_equal(mt_stats(P.b).eps_pinned, 0);
	ferry_ep_release(e2); /* private: closes */
	settle();
	assert_int_equal(mt_stats(P.a).eps_pinned, 1);
	assert_int_equal(mt_stats(P.a).eps_open, 1);
	P.ea = e3;
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ destroy */

/*
 * Destroying a context with pinned endpoints and operations of every kind in flight
 * frees everything (ASan checks) and the peer's operations complete once each.
 */
static void test_destroy_with_pins_and_ops(void **state)
{
	(void)state;
	static uint8_t big[10000], region[64];
	uint8_t blob[FERRY_RKEY_MAX];
	uint64_t ra = 0, rb = 0, w = 1;
	struct ferry_mr *mr;
	struct ferry_rkey *rk;
	struct ferry_completion c[8];

	for (int round = 0; round < 2; round++) {
		open_with(NULL);
		mt_pair_connect(&P, 0, &P.ea, &P.eb);
		size_t blen = sizeof(blob);
		assert_int_equal(ferry_mr_reg(P.b, region, sizeof(region), FERRY_ACCESS_REMOTE_WRITE,
					      &mr), 0);
		assert_int_equal(ferry_mr_pack(mr, blob, &blen), 0);
		assert_int_equal(ferry_rkey_unpack(P.a, blob, blen, &rk), 0);
		ferry_ep_hold(P.ea);
		mock_ep_set_drop(P.eb, true); /* a's write and rendezvous never finish */
		assert_int_equal(ferry_recv(P.ea, &ra, 8, 1, ~0ull, &ra, NULL), 0);
		assert_int_equal(ferry_send(P.ea, big, sizeof(big), 2, big, NULL), 0);
		assert_int_equal(ferry_write(P.ea, &w, 8, NULL, rk, 0, &w, NULL), 0);
		assert_int_equal(ferry_recv(P.eb, &rb, 8, 99, ~0ull, &rb, NULL), 0);
		settle();

		struct ferry_ctx *gone = round == 0 ? P.a : P.b;
		struct ferry_ctx *left = round == 0 ? P.b : P.a;
		struct ferry_ep *left_ep = round == 0 ? P.eb : P.ea;
		if (round == 1)
			assert_int_equal(ferry_mr_dereg(mr), 0); /* b's region goes with b */
		ferry_ctx_destroy(gone);
		if (round == 0)
			P.a = NULL;
		else
			P.b = NULL;
		both[0] = left;
		both[1] = NULL;

		/* The survivor's ops end once each, with the connection. */
		for (int i = 0; i < 20; i++)
			mt_progress(both, 1, 1);
		assert_int_equal(ferry_ep_status(left_ep), FERRY_ECONNRESET);
		int got = mt_drain(ferry_ctx_cq(left), c, 8, both, 1);
		if (round == 0) {
			assert_int_equal(got, 1);
			assert_ptr_equal(c[0].user_ctx, &rb);
			assert_int_equal(c[0].status, FERRY_ECONNRESET);
			assert_int_equal(ferry_mr_dereg(mr), 0);
			ferry_ep_release(P.eb);
		} else {
			assert_int_equal(got, 3);
			for (int i = 0; i < got; i++)
				assert_int_equal(c[i].status, FERRY_ECONNRESET);
			ferry_rkey_destroy(rk);
			ferry_ep_release(P.ea);
			ferry_ep_release(P.ea);
		}
		P.ea = P.eb = NULL;
		mt_close_pool(left);
		mt_progress(both, 1, 3);
		mt_assert_clean(left);
		ferry_ctx_destroy(left);
		memset(&P, 0, sizeof(P));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_connect_twice_same_endpoint, setup, teardown),
		cmocka_unit_test_setup_teardown(test_private_differs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pool_max_closes_lru, setup, teardown),
		cmocka_unit_test_setup_teardown(test_pool_max_spares_pinned, setup, teardown),
		cmocka_unit_test_setup_teardown(test_closed_or_failed_leaves_pool, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hold_release_counts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_with_pins_and_ops, setup, teardown),
	};
	return cmocka_run_group_tests_name("unit.pool", tests, group_setup, NULL);
}
