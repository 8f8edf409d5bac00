/*
 * conf_connect.c - connect and close, connection errors, posting on dead endpoints,
 * the peer closing under posted operations, listener behaviour.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <pthread.h>
#include <stdatomic.h>
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

/*
 * Messages that arrived unmatched before the peer closed stay receivable: the peer saw
 * those sends complete, so dropping them with the endpoint would lose them silently.
 * Receives take them in order (two share a tag); a rendezvous the closer had only
 * announced is gone with it (its send failed there), and once nothing matches, a
 * receive is refused as on any closed endpoint. One is left for the teardown's close
 * to free (the sanitizer builds would report it leaked otherwise).
 */
static void test_peer_close_keeps_arrived(void **state)
{
	struct conf *c = *state;
	enum { N = 4, NRECV = 3, SMALL = 48, BIG = 4 << 20 };
	static const uint64_t tags[N] = { 500, 501, 500, 502 };
	/* Received by tag 501, then 500 twice; 502 is left to the close (freed, logged). */
	static const int order[NRECV] = { 1, 0, 2 };
	unsigned char out[N][SMALL], in[N][SMALL], spare[SMALL];
	unsigned char *big = conf_alloc(c, BIG);
	struct ferry_completion cmp[N];
	int i;

	for (i = 0; i < N; i++) {
		conf_fill(out[i], SMALL, 40 + (uint64_t)i);
		conf_assert_rc(ferry_send(c->cep, out[i], SMALL, tags[i], out[i], NULL), 0);
	}
	conf_wait(&c->w, ferry_ctx_cq(c->w.cli), cmp, N);
	for (i = 0; i < N; i++)
		if (cmp[i].status != 0)
			conf_fail("send %d: %s", i, conf_err(cmp[i].status));
	/* Announced, never fetched: the server posts nothing for it before the close. */
	conf_fill(big, BIG, 49);
	conf_assert_rc(ferry_send(c->cep, big, BIG, 600, big, NULL), 0);
	conf_drive_for(&c->w, 50);
	ferry_ep_close(c->cep);
	c->cep = NULL;
	conf_wait(&c->w, ferry_ctx_cq(c->w.cli), cmp, 1);
	if (cmp[0].user_ctx != big || cmp[0].status >= 0)
		conf_fail("the closer's unfetched rendezvous send completed with %s, expected an "
			  "error", conf_err(cmp[0].status));
	conf_wait_ep_down(&c->w, c->sep);

	for (i = 0; i < NRECV; i++) {
		int k = order[i];
		memset(in[k], 0, SMALL);
		conf_assert_rc(ferry_recv(c->sep, in[k], SMALL, tags[k], ~0ull, in[k], NULL), 0);
		conf_wait(&c->w, ferry_ctx_cq(c->w.srv), cmp, 1);
		if (cmp[0].status != 0 || cmp[0].user_ctx != in[k] || cmp[0].len != SMALL ||
		    cmp[0].tag != tags[k] || cmp[0].type != FERRY_OP_RECV)
			conf_fail("receive %d after the peer closed: status %s, len %llu, tag %llu",
				  k, conf_err(cmp[0].status), (unsigned long long)cmp[0].len,
				  (unsigned long long)cmp[0].tag);
		conf_assert_pattern(in[k], SMALL, 40 + (uint64_t)k, "a message received after the peer closed");
	}
	conf_assert_rc(ferry_recv(c->sep, big, BIG, 600, ~0ull, big, NULL), FERRY_ENOTCONN);
	conf_assert_rc(ferry_recv(c->sep, spare, SMALL, 500, ~0ull, spare, NULL),
		       FERRY_ENOTCONN);
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.srv), 50);
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

/* Accepted endpoints go to the callback, not the queue; the callee owns a reference. */
static _Atomic(struct ferry_ep *) acb_ep;
static atomic_int acb_calls;

static void accept_cb(struct ferry_listener *l, struct ferry_ep *ep, void *arg)
{
	(void)l;
	(void)arg;
	atomic_fetch_add(&acb_calls, 1);
	atomic_store(&acb_ep, ep);
}

static bool acb_fired(void *arg)
{
	(void)arg;
	return atomic_load(&acb_ep) != NULL;
}

static void test_listener_accept_fn(void **state)
{
	struct conf *c = *state;
	struct ferry_listen_attr la = { .accept_fn = accept_cb };
	struct ferry_listener *l = NULL;
	struct ferry_ep *cep = NULL, *sep, *q = NULL;
	char uri[CONF_ADDR_MAX];
	size_t len = sizeof(uri);
	int rc;

	atomic_store(&acb_ep, NULL);
	atomic_store(&acb_calls, 0);
	conf_assert_rc(ferry_listen(c->w.srv, conf_listen_uri, &la, &l), 0);
	conf_assert_rc(ferry_listener_addr(l, uri, &len), 0);
	/* Nobody drives the server here: the library accepts and calls back by itself. */
	rc = ferry_connect(c->w.cli, uri, NULL, &cep);
	if (rc != 0) {
		ferry_listener_close(l);
		conf_fail("ferry_connect to a listener with an accept callback: %s",
			  conf_err(rc));
	}
	conf_own_ep(c, cep);
	if (!conf_drive_until(&c->w, acb_fired, NULL, CONF_WAIT_MS)) {
		ferry_listener_close(l);
		conf_fail("accept callback never ran");
	}
	sep = atomic_load(&acb_ep);
	conf_own_ep(c, sep);
	assert_string_equal(ferry_ep_provider(sep), conf_prov);
	/* The callback replaces the queue. */
	rc = ferry_listener_accept(l, &q, 0);
	if (rc != FERRY_ETIMEDOUT && rc != FERRY_EINVAL)
		conf_fail("ferry_listener_accept on a callback listener: %s", conf_err(rc));
	ping_pong(&c->w, cep, sep);
	ferry_listener_close(l);
	/* Accepted endpoints outlive their listener. */
	ping_pong(&c->w, cep, sep);
	assert_int_equal(atomic_load(&acb_calls), 1);
	conf_close(c, cep);
	conf_close(c, sep);
}

/* max_connections: past it new connections are refused, live ones keep working. */
static void test_listener_max_connections(void **state)
{
	struct conf *c = *state;
	struct ferry_listen_attr la = { .max_connections = 1 };
	struct ferry_connect_attr priv = { .flags = FERRY_CONNECT_PRIVATE };
	struct ferry_listener *l = NULL;
	struct ferry_ep *cep = NULL, *sep = NULL, *cep2 = NULL, *sep2 = NULL;
	struct conf_bg *bg;
	char uri[CONF_ADDR_MAX];
	size_t len = sizeof(uri);
	int rc, rc2;

	conf_assert_rc(ferry_listen(c->w.srv, conf_listen_uri, &la, &l), 0);
	conf_assert_rc(ferry_listener_addr(l, uri, &len), 0);
	bg = conf_bg_start(c->w.srv);
	rc = ferry_connect(c->w.cli, uri, &priv, &cep);
	rc2 = rc == 0 ? ferry_listener_accept(l, &sep, 5000) : 0;
	conf_bg_stop(bg);
	if (cep)
		conf_own_ep(c, cep);
	if (sep)
		conf_own_ep(c, sep);
	if (rc != 0 || rc2 != 0) {
		ferry_listener_close(l);
		conf_fail("first connect: %s, accept: %s", conf_err(rc), conf_err(rc2));
	}
	rc = ferry_connect(c->w.cli, uri, &priv, &cep2);
	if (cep2)
		conf_own_ep(c, cep2);
	if (rc == 0) {
		/* Accepted by the transport but must not become a live endpoint. */
		(void)ferry_listener_accept(l, &sep2, 200);
		if (sep2)
			conf_own_ep(c, sep2);
		rc = sep2 ? 0 : conf_wait_ep_down(&c->w, cep2);
	}
	print_message("second connect past max_connections=1: %s\n", conf_err(rc));
	ferry_listener_close(l);
	if (rc == 0)
		conf_fail("a second connection to a listener with max_connections=1 was "
			  "accepted");
	ping_pong(&c->w, cep, sep);
	conf_close(c, cep);
	conf_close(c, sep);
}

/* One listener on two URIs: the printable address lists both, each one works. */
static void test_listen_two_uris(void **state)
{
	struct conf *c = *state;
	struct ferry_listener *l = NULL;
	char uris[600], addr[CONF_ADDR_MAX], one[2][CONF_ADDR_MAX];
	size_t len = sizeof(addr);
	struct conf_world w;
	int i;

	snprintf(uris, sizeof(uris), "%s,%s", conf_listen_uri, conf_listen_uri);
	conf_assert_rc(ferry_listen(c->w.srv, uris, NULL, &l), 0);
	conf_assert_rc(ferry_listener_addr(l, addr, &len), 0);
	if (!strchr(addr, ',')) {
		ferry_listener_close(l);
		conf_fail("listener on two URIs reports one address: '%s'", addr);
	}
	snprintf(one[0], sizeof(one[0]), "%.*s", (int)strcspn(addr, ","), addr);
	snprintf(one[1], sizeof(one[1]), "%s", strchr(addr, ',') + 1);
	if (strcmp(one[0], one[1]) == 0 || strchr(one[1], ',')) {
		ferry_listener_close(l);
		conf_fail("listener address '%s': expected two distinct URIs", addr);
	}
	/* A borrowed world: same contexts, this listener. */
	w = c->w;
	w.l = l;
	for (i = 0; i < 2; i++) {
		struct ferry_ep *cep, *sep;
		memcpy(w.addr, one[i], strlen(one[i]) + 1); /* both CONF_ADDR_MAX */
		conf_connect(&w, FERRY_CONNECT_PRIVATE, &cep, &sep);
		ping_pong(&w, cep, sep);
		ferry_ep_close(cep);
		ferry_ep_close(sep);
	}
	/* The whole list is a valid connect address too. */
	snprintf(w.addr, sizeof(w.addr), "%s", addr);
	{
		struct ferry_ep *cep, *sep;
		conf_connect(&w, FERRY_CONNECT_PRIVATE, &cep, &sep);
		ping_pong(&w, cep, sep);
		ferry_ep_close(cep);
		ferry_ep_close(sep);
	}
	ferry_listener_close(l);
}

/* A URI list is tried in order: a dead first entry falls through to a live one. */
static void test_connect_list_fallthrough(void **state)
{
	struct conf *c = *state;
	char dead[CONF_ADDR_MAX], list[2 * CONF_ADDR_MAX + 2];
	struct conf_world w = c->w;
	struct ferry_ep *cep, *sep;

	closed_port_uri(c, dead, sizeof(dead));
	if (snprintf(list, sizeof(list), "%s,%s", dead, c->w.addr) >= (int)sizeof(w.addr))
		conf_fail("URI list too long: %s,%s", dead, c->w.addr);
	memcpy(w.addr, list, strlen(list) + 1);
	conf_connect(&w, FERRY_CONNECT_PRIVATE, &cep, &sep);
	ping_pong(&c->w, cep, sep);
	ferry_ep_close(cep);
	ferry_ep_close(sep);
}

/* auto:// reaches a tcp listener over tcp (only meaningful for the tcp run). */
static void test_connect_auto(void **state)
{
	struct conf *c = *state;
	struct conf_world w = c->w;
	const char *hostport;
	struct ferry_ep *cep, *sep;

	if (strcmp(conf_prov, "tcp") != 0) {
		conf_skip("auto:// is exercised by the tcp run");
		return;
	}
	hostport = strstr(c->w.addr, "://") + 3;
	if (snprintf(w.addr, sizeof(w.addr), "auto://%.*s", (int)(sizeof(w.addr) - 8),
		     hostport) >= (int)sizeof(w.addr))
		conf_fail("address too long: %s", hostport);
	conf_connect(&w, FERRY_CONNECT_PRIVATE, &cep, &sep);
	ping_pong(&c->w, cep, sep);
	ferry_ep_close(cep);
	ferry_ep_close(sep);
}

/* ------------------------------------------------------------------ events */

#define MAXEV 32
static pthread_mutex_t ev_lock = PTHREAD_MUTEX_INITIALIZER;
static struct {
	struct ferry_ctx *ctx;
	enum ferry_event_type type;
	struct ferry_ep *ep;
	int status;
} evs[MAXEV];
static int nev;

static void on_event(struct ferry_ctx *ctx, const struct ferry_event *ev, void *arg)
{
	(void)arg;
	pthread_mutex_lock(&ev_lock);
	if (nev < MAXEV) {
		evs[nev].ctx = ctx;
		evs[nev].type = ev->type;
		evs[nev].ep = ev->ep;
		evs[nev].status = ev->status;
		nev++;
	}
	pthread_mutex_unlock(&ev_lock);
}

static void with_events(struct ferry_config *cfg, bool server)
{
	(void)server;
	cfg->event_fn = on_event;
}

static int count_ev(struct ferry_ctx *ctx, enum ferry_event_type t, struct ferry_ep *ep,
		    int *status)
{
	int i, n = 0;

	pthread_mutex_lock(&ev_lock);
	for (i = 0; i < nev; i++)
		if (evs[i].ctx == ctx && evs[i].type == t && (!ep || evs[i].ep == ep)) {
			n++;
			if (status)
				*status = evs[i].status;
		}
	pthread_mutex_unlock(&ev_lock);
	return n;
}

struct ev_want {
	struct ferry_ctx *ctx;
	enum ferry_event_type type;
	struct ferry_ep *ep;
};

static bool ev_seen(void *arg)
{
	struct ev_want *w = arg;
	return count_ev(w->ctx, w->type, w->ep, NULL) > 0;
}

static const char *ev_name(enum ferry_event_type t)
{
	switch (t) {
	case FERRY_EVENT_EP_CONNECTED: return "EP_CONNECTED";
	case FERRY_EVENT_EP_CLOSED: return "EP_CLOSED";
	case FERRY_EVENT_EP_FAILED: return "EP_FAILED";
	case FERRY_EVENT_EP_REAPED: return "EP_REAPED";
	case FERRY_EVENT_FALLBACK: return "FALLBACK";
	}
	return "?";
}

static void dump_events(void)
{
	int i;

	pthread_mutex_lock(&ev_lock);
	for (i = 0; i < nev; i++)
		print_message("  event %d: %s ctx %p ep %p status %s\n", i, ev_name(evs[i].type),
			      (void *)evs[i].ctx, (void *)evs[i].ep, conf_err(evs[i].status));
	pthread_mutex_unlock(&ev_lock);
}

/*
 * Events: both sides hear EP_CONNECTED once; the side that closes hears EP_CLOSED,
 * and so does the peer, which got a goodbye: a graceful close is not a failure.
 */
static void test_events_connect_close(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w2;
	struct ferry_ep *cep, *sep;
	struct ev_want want;
	int st = 0;

	nev = 0;
	conf_world_open_tweak(w, with_events);
	conf_connect(w, 0, &cep, &sep);
	want = (struct ev_want){ w->srv, FERRY_EVENT_EP_CONNECTED, sep };
	if (!conf_drive_until(w, ev_seen, &want, CONF_WAIT_MS)) {
		dump_events();
		conf_fail("no EP_CONNECTED event for the accepted endpoint");
	}
	want = (struct ev_want){ w->cli, FERRY_EVENT_EP_CONNECTED, cep };
	if (!conf_drive_until(w, ev_seen, &want, CONF_WAIT_MS)) {
		dump_events();
		conf_fail("no EP_CONNECTED event for the connected endpoint");
	}
	ferry_ep_hold(sep); /* keep the pointer meaningful for matching events */
	ferry_ep_close(cep);
	conf_wait_ep_down(w, sep);
	want = (struct ev_want){ w->srv, FERRY_EVENT_EP_CLOSED, sep };
	conf_drive_until(w, ev_seen, &want, 1000);
	conf_drive_for(w, 50);
	print_message("events:\n");
	dump_events();
	assert_int_equal(count_ev(w->cli, FERRY_EVENT_EP_CONNECTED, NULL, NULL), 1);
	assert_int_equal(count_ev(w->srv, FERRY_EVENT_EP_CONNECTED, NULL, NULL), 1);
	if (count_ev(w->srv, FERRY_EVENT_EP_FAILED, sep, &st) > 0)
		conf_fail("the peer of a gracefully closed endpoint got EP_FAILED (%s), "
			  "expected EP_CLOSED (closed by the peer's goodbye)", conf_err(st));
	if (count_ev(w->srv, FERRY_EVENT_EP_CLOSED, sep, NULL) != 1)
		conf_fail("the peer of a gracefully closed endpoint got %d EP_CLOSED events",
			  count_ev(w->srv, FERRY_EVENT_EP_CLOSED, sep, NULL));
	ferry_ep_close(sep);
	ferry_ep_release(sep);
	conf_world_close(w, true);
}

/*
 * A connect returns when its handshake is done, not when some later timer fires: on
 * loopback every one of these must return in a fraction of the connect timeout
 * (2000 ms here). A connect that succeeds only after sleeping half its deadline
 * slept through its own completion (a lost wakeup). Not a performance bound: a
 * loopback handshake takes about a millisecond; the bound is 500 times that.
 */
static void test_connect_no_lost_wakeup(void **state)
{
	struct conf *c = *state;
	enum { N = 64, BOUND_MS = 500 };
	uint64_t worst = 0, slow = 0;
	int i;

	/* The race is timing-dependent: many tries, but stop after a few hits. */
	for (i = 0; i < N && slow < 3; i++) {
		struct ferry_ep *cep, *sep;
		uint64_t dt;

		conf_connect(&c->w, FERRY_CONNECT_PRIVATE, &cep, &sep);
		dt = conf_connect_worst_ms; /* the ferry_connect() call alone */
		worst = dt > worst ? dt : worst;
		slow += dt >= BOUND_MS;
		ferry_ep_close(cep);
		ferry_ep_close(sep);
	}
	if (slow)
		conf_fail("%llu of %d loopback connects took %d ms or more in ferry_connect (worst %llu "
			  "ms, connect timeout 2000 ms) although the server accepted at once: "
			  "the call slept past its own completion", (unsigned long long)slow, i, BOUND_MS,
			  (unsigned long long)worst);
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
		cmocka_unit_test_setup_teardown(test_peer_close_keeps_arrived, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_listener_close_pending, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_listener_accept_fn, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_listener_max_connections, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_listen_two_uris, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_connect_list_fallthrough, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_connect_auto, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_events_connect_close, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_connect_no_lost_wakeup, conf_setup_none, conf_teardown),
	};

	return CONF_RUN("connect", tests);
}
