/*
 * conf_connect.c - connect and close, connection errors, posting on dead endpoints,
 * the peer closing under posted operations, listener behaviour.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <stdio.h>
#include <string.h>

#define TAG_PING 0x5049u

/* One small message each way proves the link carries data. */
static void ping_pong(struct conf_world *w, struct ferry_ep *a, struct ferry_ep *b)
{
	struct ferry_completion cmp;
	char out[32] = "ping", in[32];
	int dir;

	for (dir = 0; dir < 2; dir++) {
		struct ferry_ep *tx = dir ? b : a, *rx = dir ? a : b;
		struct ferry_ctx *txc = dir ? w->srv : w->cli, *rxc = dir ? w->cli : w->srv;

		memset(in, 0, sizeof(in));
		conf_assert_rc(ferry_recv(rx, in, sizeof(in), TAG_PING, ~0ull, in, NULL), 0);
		conf_assert_rc(ferry_send(tx, out, 5, TAG_PING, out, NULL), 0);
		conf_wait(w, ferry_ctx_cq(txc), &cmp, 1);
		conf_assert_rc(cmp.status, 0);
		assert_int_equal(cmp.type, FERRY_OP_SEND);
		assert_ptr_equal(cmp.user_ctx, out);
		conf_wait(w, ferry_ctx_cq(rxc), &cmp, 1);
		conf_assert_rc(cmp.status, 0);
		assert_int_equal(cmp.type, FERRY_OP_RECV);
		assert_ptr_equal(cmp.user_ctx, in);
		assert_ptr_equal(cmp.ep, rx);
		assert_int_equal(cmp.len, 5);
		assert_int_equal(cmp.tag, TAG_PING);
		assert_string_equal(in, "ping");
	}
}

static void test_connect_basic(void **state)
{
	struct conf *c = *state;
	struct ferry_stats st;
	char prefix[64];
	struct ferry_ep *ep = NULL;

	snprintf(prefix, sizeof(prefix), "%s://", conf_prov);
	assert_true(strncmp(ferry_ep_peer(c->cep), prefix, strlen(prefix)) == 0);
	assert_true(strncmp(ferry_ep_peer(c->sep), prefix, strlen(prefix)) == 0);
	ping_pong(&c->w, c->cep, c->sep);

	conf_assert_rc(ferry_stats_get(c->w.cli, NULL, &st), 0);
	assert_true(st.eps_created >= 1);
	assert_true(st.eps_open >= 1);
	conf_assert_rc(ferry_stats_get(c->w.srv, NULL, &st), 0);
	assert_true(st.eps_accepted >= 1);
	assert_true(st.eps_open >= 1);
	conf_assert_rc(ferry_stats_get(c->w.cli, conf_prov_base, &st), 0);
	assert_true(st.eps_open >= 1);

	/* Nothing else pending: accepting without waiting times out at once. */
	conf_assert_rc(ferry_listener_accept(c->w.l, &ep, 0), FERRY_ETIMEDOUT);
	assert_null(ep);
}

/* Connect and close repeatedly: each round is a fresh, working connection. */
static void test_connect_close_repeat(void **state)
{
	struct conf *c = *state;
	struct ferry_stats before, after;
	int i;

	conf_assert_rc(ferry_stats_get(c->w.srv, NULL, &before), 0);
	for (i = 0; i < 5; i++) {
		struct ferry_ep *cep, *sep;

		conf_connect(&c->w, i % 2 ? FERRY_CONNECT_PRIVATE : 0, &cep, &sep);
		ping_pong(&c->w, cep, sep);
		ferry_ep_close(cep);
		conf_wait_ep_down(&c->w, sep);
		ferry_ep_close(sep);
	}
	conf_assert_rc(ferry_stats_get(c->w.srv, NULL, &after), 0);
	assert_int_equal(after.eps_accepted - before.eps_accepted, 5);
}

/* A listener that existed and is gone: its port is closed. */
static void closed_port_uri(struct conf *c, char *uri, size_t len)
{
	struct ferry_listener *l = NULL;

	conf_assert_rc(ferry_listen(c->w.srv, conf_listen_uri, NULL, &l), 0);
	conf_assert_rc(ferry_listener_addr(l, uri, &len), 0);
	ferry_listener_close(l);
}

static void test_connect_refused(void **state)
{
	struct conf *c = *state;
	struct ferry_connect_attr priv = { .flags = FERRY_CONNECT_PRIVATE };
	struct ferry_stats before, after;
	char uri[CONF_ADDR_MAX];
	struct ferry_ep *ep = NULL;

	closed_port_uri(c, uri, sizeof(uri));
	conf_assert_rc(ferry_stats_get(c->w.cli, NULL, &before), 0);
	conf_assert_rc(ferry_connect(c->w.cli, uri, NULL, &ep), FERRY_ECONNREFUSED);
	assert_null(ep);
	conf_assert_rc(ferry_connect(c->w.cli, uri, &priv, &ep), FERRY_ECONNREFUSED);
	assert_null(ep);
	conf_assert_rc(ferry_stats_get(c->w.cli, NULL, &after), 0);
	assert_true(after.connect_failures >= before.connect_failures + 2);

	/* The context keeps working. */
	conf_connect(&c->w, 0, &c->cep, &c->sep);
	ping_pong(&c->w, c->cep, c->sep);
}

static void test_connect_unresolvable(void **state)
{
	struct conf *c = *state;
	char uri[256];
	struct ferry_ep *ep = NULL;

	/* RFC 6761: .invalid never resolves. */
	snprintf(uri, sizeof(uri), "%s://ferry-conformance.invalid:4791", conf_prov);
	conf_assert_rc(ferry_connect(c->w.cli, uri, NULL, &ep), FERRY_EHOSTUNREACH);
	assert_null(ep);
}

static void test_connect_bad_uri(void **state)
{
	struct conf *c = *state;
	const char *fmt[] = {
		"",
		"%s",                   /* scheme only          */
		"%s:/%s:1",             /* one slash            */
		"%s//%s:1",             /* no colon             */
		"://%s:1",              /* empty scheme         */
		"%s://%s:",             /* empty port           */
		"%s://%s:notaport",
		"%s://%s:65536",
		"%s://%s:-1",
		"%s://%s:99999999999999999999",
		"%s://[::1:4791",       /* unterminated bracket */
	};
	char uri[512];
	size_t i;

	for (i = 0; i < sizeof(fmt) / sizeof(fmt[0]); i++) {
		struct ferry_ep *ep = NULL;
		struct ferry_listener *l = NULL;
		int rc;

		if (strncmp(fmt[i], "://", 3) == 0)
			snprintf(uri, sizeof(uri), fmt[i], conf_host);
		else
			snprintf(uri, sizeof(uri), fmt[i], conf_prov, conf_host);
		rc = ferry_connect(c->w.cli, uri, NULL, &ep);
		if (rc != FERRY_EINVAL)
			conf_fail("ferry_connect(\"%s\"): expected EINVAL, got %s", uri,
				  conf_err(rc));
		assert_null(ep);
		rc = ferry_listen(c->w.srv, uri, NULL, &l);
		if (rc != FERRY_EINVAL) {
			ferry_listener_close(l);
			conf_fail("ferry_listen(\"%s\"): expected EINVAL, got %s", uri,
				  conf_err(rc));
		}
	}
	conf_assert_rc(ferry_connect(c->w.cli, NULL, NULL, &(struct ferry_ep *){ NULL }),
		       FERRY_EINVAL);
}

static void test_connect_unknown_scheme(void **state)
{
	struct conf *c = *state;
	struct ferry_listener *l = NULL;
	struct ferry_ep *ep = NULL;
	char uri[256];

	snprintf(uri, sizeof(uri), "bogus://%s:4791", conf_host);
	conf_assert_rc(ferry_connect(c->w.cli, uri, NULL, &ep), FERRY_EPROTONOSUPPORT);
	assert_null(ep);
	snprintf(uri, sizeof(uri), "bogus://%s:0", conf_host);
	conf_assert_rc(ferry_listen(c->w.srv, uri, NULL, &l), FERRY_EPROTONOSUPPORT);
	assert_null(l);
	if (strcmp(conf_prov, "tcp") == 0) {
		/* A real scheme whose provider this context may not use (tcp only). */
		snprintf(uri, sizeof(uri), "verbs://%s:4791", conf_host);
		conf_assert_rc(ferry_connect(c->w.cli, uri, NULL, &ep), FERRY_EPROTONOSUPPORT);
		assert_null(ep);
	}
}

/* The listener's own address is taken while it listens. */
static void test_listen_in_use(void **state)
{
	struct conf *c = *state;
	struct ferry_listener *l = NULL;
	char uri[CONF_ADDR_MAX];
	int rc;

	/* Only the first URI of the printable list (a single one here). */
	snprintf(uri, sizeof(uri), "%.*s", (int)strcspn(c->w.addr, ","), c->w.addr);
	rc = ferry_listen(c->w.srv, uri, NULL, &l);
	if (rc != FERRY_EADDRINUSE) {
		ferry_listener_close(l);
		conf_fail("ferry_listen(\"%s\") while listening there: expected EADDRINUSE, "
			  "got %s", uri, conf_err(rc));
	}
	/* Same from another context. */
	rc = ferry_listen(c->w.cli, uri, NULL, &l);
	if (rc != FERRY_EADDRINUSE) {
		ferry_listener_close(l);
		conf_fail("ferry_listen(\"%s\") from a second context: expected EADDRINUSE, "
			  "got %s", uri, conf_err(rc));
	}
}

static void test_post_on_closed(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *cep = c->cep, *sep = c->sep;
	unsigned char *region = conf_alloc(c, 4096), buf[64] = { 0 };
	struct ferry_mr *mr = conf_reg(c, c->w.srv, region, 4096,
				       FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, mr);
	int st;

	/* Keep a reference across the close: close gives back only the caller's. */
	ferry_ep_hold(cep);
	ferry_ep_close(cep);
	c->cep = NULL;
	st = ferry_ep_status(cep);
	if (st == 0)
		conf_fail("ferry_ep_status after ferry_ep_close is still 0");
	conf_assert_rc(ferry_send(cep, buf, 8, 1, buf, NULL), FERRY_ENOTCONN);
	conf_assert_rc(ferry_recv(cep, buf, 8, 1, ~0ull, buf, NULL), FERRY_ENOTCONN);
	conf_assert_rc(ferry_write(cep, buf, 8, NULL, rk, 0, buf, NULL), FERRY_ENOTCONN);
	conf_assert_rc(ferry_read(cep, buf, 8, NULL, rk, 0, buf, NULL), FERRY_ENOTCONN);
	ferry_ep_release(cep);

	/* The peer learns of the close; its endpoint refuses new work too. */
	st = conf_wait_ep_down(&c->w, sep);
	print_message("peer's endpoint status after close: %s\n", conf_err(st));
	conf_assert_rc(ferry_send(sep, buf, 8, 1, buf, NULL), FERRY_ENOTCONN);
	conf_assert_rc(ferry_recv(sep, buf, 8, 1, ~0ull, buf, NULL), FERRY_ENOTCONN);
	/* A refused post reports nothing. */
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.cli), 100);
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.srv), 1);
}

/*
 * The peer closes while operations are in flight on our side: every one of them
 * completes exactly once with an error, and nothing else shows up.
 */
static void peer_close_case(struct conf *c, bool client_closes)
{
	struct ferry_ep *closer = client_closes ? c->cep : c->sep;
	struct ferry_ep *victim = client_closes ? c->sep : c->cep;
	struct ferry_ctx *vctx = client_closes ? c->w.srv : c->w.cli;
	enum { NRECV = 3, BIG = 4 << 20 };
	unsigned char rbuf[NRECV][64];
	unsigned char *big = conf_alloc(c, BIG);
	struct ferry_completion cmp[NRECV + 1];
	bool seen[NRECV + 1] = { false };
	int i, st;

	for (i = 0; i < NRECV; i++)
		conf_assert_rc(ferry_recv(victim, rbuf[i], sizeof(rbuf[i]), 100 + (uint64_t)i,
					  ~0ull, rbuf[i], NULL), 0);
	/* A rendezvous send the closing side never receives. */
	conf_fill(big, BIG, 7);
	conf_assert_rc(ferry_send(victim, big, BIG, 999, big, NULL), 0);
	conf_drive_for(&c->w, 50);

	ferry_ep_close(closer);
	if (client_closes)
		c->cep = NULL;
	else
		c->sep = NULL;

	conf_wait(&c->w, ferry_ctx_cq(vctx), cmp, NRECV + 1);
	for (i = 0; i < NRECV + 1; i++) {
		int idx = -1, k;

		for (k = 0; k < NRECV; k++)
			if (cmp[i].user_ctx == rbuf[k])
				idx = k;
		if (cmp[i].user_ctx == big)
			idx = NRECV;
		if (idx < 0)
			conf_fail("completion with unknown user_ctx %p", cmp[i].user_ctx);
		if (seen[idx])
			conf_fail("operation %d completed twice", idx);
		seen[idx] = true;
		assert_ptr_equal(cmp[i].ep, victim);
		assert_int_equal(cmp[i].type, idx == NRECV ? FERRY_OP_SEND : FERRY_OP_RECV);
		if (cmp[i].status >= 0)
			conf_fail("%s in flight when the peer closed completed with %s, "
				  "expected an error", idx == NRECV ? "send" : "recv",
				  conf_err(cmp[i].status));
		print_message("in-flight %s after peer close: %s\n",
			      idx == NRECV ? "send" : "recv", conf_err(cmp[i].status));
	}
	conf_expect_none(&c->w, ferry_ctx_cq(vctx), 200);
	st = conf_wait_ep_down(&c->w, victim);
	(void)st;
	conf_assert_rc(ferry_recv(victim, rbuf[0], 8, 1, ~0ull, rbuf[0], NULL), FERRY_ENOTCONN);
}

static void test_peer_close_client_closes(void **state)
{
	peer_close_case(*state, true);
}

static void test_peer_close_server_closes(void **state)
{
	peer_close_case(*state, false);
}

/* Endpoints still waiting in the accept queue are closed with the listener. */
static void test_listener_close_pending(void **state)
{
	struct conf *c = *state;
	struct ferry_listener *l = NULL;
	struct conf_bg *bg;
	char uri[CONF_ADDR_MAX];
	size_t len = sizeof(uri);
	struct ferry_ep *ep = NULL;
	int rc, st;

	conf_assert_rc(ferry_listen(c->w.srv, conf_listen_uri, NULL, &l), 0);
	conf_assert_rc(ferry_listener_addr(l, uri, &len), 0);
	/* Nobody accepts: a background thread only drives the server's handshakes. */
	bg = conf_bg_start(c->w.srv);
	rc = ferry_connect(c->w.cli, uri, NULL, &ep);
	conf_bg_stop(bg);
	if (rc != 0) {
		ferry_listener_close(l);
		conf_fail("ferry_connect(%s) to a listener nobody accepts on: %s", uri,
			  conf_err(rc));
	}
	conf_own_ep(c, ep);
	ferry_listener_close(l);
	st = conf_wait_ep_down(&c->w, ep);
	print_message("client endpoint after the listener closed its pending peer: %s\n",
		      conf_err(st));
	conf_close(c, ep);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_connect_basic, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_connect_close_repeat, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_connect_refused, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_connect_unresolvable, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_connect_bad_uri, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_connect_unknown_scheme, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_listen_in_use, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_post_on_closed, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_peer_close_client_closes, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_peer_close_server_closes, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_listener_close_pending, conf_setup_none, conf_teardown),
	};

	return CONF_RUN("connect", tests);
}
