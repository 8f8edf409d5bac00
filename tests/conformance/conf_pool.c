/*
 * conf_pool.c - endpoint pool and pin basics: a pooled connect reuses the live
 * endpoint, FERRY_CONNECT_PRIVATE never does, a released endpoint stays pooled, a
 * closed or failed one leaves the pool at once and the next connect gets a fresh one.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <string.h>

/* One 8-byte message a -> b, verified. */
static void one_msg(struct conf_world *w, struct ferry_ep *a, struct ferry_ctx *actx,
		    struct ferry_ep *b, struct ferry_ctx *bctx, uint64_t v)
{
	uint64_t in = 0, out = v;
	struct ferry_completion cmp;

	conf_assert_rc(ferry_recv(b, &in, sizeof(in), 0x99, ~0ull, &in, NULL), 0);
	conf_assert_rc(ferry_send(a, &out, sizeof(out), 0x99, &out, NULL), 0);
	conf_wait(w, ferry_ctx_cq(actx), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	conf_wait(w, ferry_ctx_cq(bctx), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	assert_ptr_equal(cmp.ep, b);
	assert_int_equal(in, v);
}

static uint64_t accepted(struct ferry_ctx *ctx)
{
	struct ferry_stats st;

	conf_assert_rc(ferry_stats_get(ctx, NULL, &st), 0);
	return st.eps_accepted;
}

static void test_pool_same_endpoint(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *ep2 = NULL;
	uint64_t acc = accepted(c->w.srv);
	struct ferry_stats st;

	conf_assert_rc(ferry_connect(c->w.cli, c->w.addr, NULL, &ep2), 0);
	assert_ptr_equal(ep2, c->cep);
	conf_assert_rc(ferry_stats_get(c->w.cli, NULL, &st), 0);
	assert_true(st.eps_pooled >= 1);
	/* The reuse is a hold: both references work, giving one back keeps it alive. */
	ferry_ep_release(ep2);
	one_msg(&c->w, c->cep, c->w.cli, c->sep, c->w.srv, 1);
	conf_drive_for(&c->w, 20);
	assert_int_equal(accepted(c->w.srv), acc);
}

static void test_pool_private_differs(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *pcep, *psep, *again = NULL;
	uint64_t acc = accepted(c->w.srv);

	conf_connect(&c->w, FERRY_CONNECT_PRIVATE, &pcep, &psep);
	conf_own_ep(c, pcep);
	conf_own_ep(c, psep);
	assert_ptr_not_equal(pcep, c->cep);
	assert_ptr_not_equal(psep, c->sep);
	assert_int_equal(accepted(c->w.srv), acc + 1);
	/* Independent connections: each carries its own traffic. */
	one_msg(&c->w, pcep, c->w.cli, psep, c->w.srv, 2);
	one_msg(&c->w, c->cep, c->w.cli, c->sep, c->w.srv, 3);
	/* A private endpoint is never handed out by the pool. */
	conf_assert_rc(ferry_connect(c->w.cli, c->w.addr, NULL, &again), 0);
	assert_ptr_equal(again, c->cep);
	ferry_ep_release(again);
	conf_close(c, pcep);
	conf_close(c, psep);
}

static void test_pool_released_stays_pooled(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *ep = c->cep, *again = NULL;
	uint64_t acc = accepted(c->w.srv);

	ferry_ep_hold(ep);
	ferry_ep_release(ep);
	ferry_ep_release(ep); /* the pool's own reference keeps it */
	c->cep = NULL;
	conf_drive_for(&c->w, 50);
	conf_assert_rc(ferry_connect(c->w.cli, c->w.addr, NULL, &again), 0);
	c->cep = again;
	assert_ptr_equal(again, ep);
	assert_int_equal(ferry_ep_status(again), 0);
	one_msg(&c->w, again, c->w.cli, c->sep, c->w.srv, 4);
	assert_int_equal(accepted(c->w.srv), acc);
}

/* After close, the next pooled connect makes a new connection that works. */
static void test_pool_closed_leaves(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *old_sep = c->sep;
	uint64_t acc = accepted(c->w.srv);

	ferry_ep_close(c->cep);
	c->cep = NULL;
	conf_wait_ep_down(&c->w, old_sep);
	ferry_ep_close(old_sep);
	c->sep = NULL;
	conf_connect(&c->w, 0, &c->cep, &c->sep);
	assert_int_equal(accepted(c->w.srv), acc + 1);
	one_msg(&c->w, c->cep, c->w.cli, c->sep, c->w.srv, 5);
}

/* The peer closes: the pooled endpoint is dead and never handed out again. */
static void test_pool_peer_closed_not_reused(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *dead = c->cep, *cep2, *sep2;

	ferry_ep_close(c->sep);
	c->sep = NULL;
	conf_wait_ep_down(&c->w, dead);
	conf_connect(&c->w, 0, &cep2, &sep2);
	conf_own_ep(c, cep2);
	conf_own_ep(c, sep2);
	assert_int_equal(ferry_ep_status(cep2), 0);
	one_msg(&c->w, cep2, c->w.cli, sep2, c->w.srv, 6);
	one_msg(&c->w, sep2, c->w.srv, cep2, c->w.cli, 7);
	assert_true(ferry_ep_status(dead) != 0);
	ferry_ep_close(dead);
	c->cep = NULL;
	conf_close(c, cep2);
	conf_close(c, sep2);
}

/* Pins: several holds and releases leave the endpoint usable and connected. */
static void test_pin_hold_release(void **state)
{
	struct conf *c = *state;
	struct ferry_stats st;
	int i;

	for (i = 0; i < 3; i++)
		ferry_ep_hold(c->cep);
	conf_assert_rc(ferry_stats_get(c->w.cli, NULL, &st), 0);
	assert_true(st.eps_pinned >= 1);
	for (i = 0; i < 3; i++)
		ferry_ep_release(c->cep);
	one_msg(&c->w, c->cep, c->w.cli, c->sep, c->w.srv, 8);
	assert_int_equal(ferry_ep_status(c->cep), 0);
}

static void pool_of_two(struct ferry_config *cfg, bool server)
{
	if (!server)
		cfg->pool_max = 2;
}

/*
 * Capacity: with pool_max 2, a third pooled endpoint closes the least recently used
 * idle one; a pinned (held) endpoint is never the victim, however old.
 */
static void test_pool_capacity(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w2, sub[3];
	struct ferry_listener *extra[2] = { NULL, NULL };
	struct ferry_ep *cep[3], *sep[3], *again = NULL;
	struct ferry_stats st;
	int i;

	conf_world_open_tweak(w, pool_of_two);
	for (i = 0; i < 3; i++) {
		size_t len = sizeof(sub[i].addr);
		sub[i] = *w;
		if (i > 0) {
			conf_assert_rc(ferry_listen(w->srv, conf_listen_uri, NULL, &extra[i - 1]), 0);
			sub[i].l = extra[i - 1];
			conf_assert_rc(ferry_listener_addr(sub[i].l, sub[i].addr, &len), 0);
		}
	}
	/* A: pinned (the connect's hold is kept). B, C: released at once, idle. */
	for (i = 0; i < 3; i++) {
		conf_connect(&sub[i], 0, &cep[i], &sep[i]);
		if (i > 0)
			ferry_ep_release(cep[i]);
		conf_drive_for(w, 20); /* distinct use times for the LRU order */
	}
	conf_drive_for(w, 50);
	conf_assert_rc(ferry_stats_get(w->cli, NULL, &st), 0);
	if (st.eps_pooled > 2)
		conf_fail("pool_max 2: stats.eps_pooled is %llu after 3 pooled connects",
			  (unsigned long long)st.eps_pooled);
	/* B was the least recently used idle one: closed, its peer told so. */
	conf_wait_ep_down(w, sep[1]);
	assert_int_equal(ferry_ep_status(sep[0]), 0);
	assert_int_equal(ferry_ep_status(sep[2]), 0);
	assert_int_equal(ferry_ep_status(cep[0]), 0);
	one_msg(w, cep[0], w->cli, sep[0], w->srv, 9);
	/* C is still pooled and handed out again. */
	conf_assert_rc(ferry_connect(w->cli, sub[2].addr, NULL, &again), 0);
	assert_ptr_equal(again, cep[2]);
	ferry_ep_close(again);
	ferry_ep_close(cep[0]);
	for (i = 0; i < 3; i++)
		ferry_ep_close(sep[i]);
	for (i = 0; i < 2; i++)
		ferry_listener_close(extra[i]);
	conf_world_close(w, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pool_same_endpoint, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_pool_private_differs, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_pool_released_stays_pooled, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_pool_closed_leaves, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_pool_peer_closed_not_reused, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_pin_hold_release, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_pool_capacity, conf_setup_none, conf_teardown),
	};

	return CONF_RUN("pool", tests);
}
