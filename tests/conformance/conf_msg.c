/*
 * conf_msg.c - tagged send/recv: sizes 0 B..64 MiB with the bytes verified, tag masks,
 * unexpected messages, ordering, truncation, many messages in flight, completion
 * queues, per-operation deadlines, the peer's limits.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 64
#define GUARD_BYTE 0xA5

/* Sends len bytes tx->rx with the recv posted first (or after, if unexpected) and
 * checks both completions, the bytes and the guard after them. */
static void xfer(struct conf *c, bool c2s, size_t len, uint64_t tag, uint64_t seed,
		 bool unexpected)
{
	struct conf_world *w = &c->w;
	struct ferry_ep *tx = c2s ? c->cep : c->sep, *rx = c2s ? c->sep : c->cep;
	struct ferry_cq *txq = ferry_ctx_cq(c2s ? w->cli : w->srv);
	struct ferry_cq *rxq = ferry_ctx_cq(c2s ? w->srv : w->cli);
	unsigned char *sbuf = conf_alloc(c, len ? len : 1);
	unsigned char *rbuf = conf_alloc(c, len + GUARD);
	struct ferry_completion cmp;
	char what[96];

	conf_fill(sbuf, len, seed);
	memset(rbuf, GUARD_BYTE, len + GUARD);
	if (!unexpected)
		conf_assert_rc(ferry_recv(rx, rbuf, len + GUARD, tag, ~0ull, rbuf, NULL), 0);
	conf_assert_rc(ferry_send(tx, sbuf, len, tag, sbuf, NULL), 0);
	if (unexpected) {
		/* Let the message (or its announcement) arrive before the recv exists. */
		conf_drive_for(w, 20);
		conf_assert_rc(ferry_recv(rx, rbuf, len + GUARD, tag, ~0ull, rbuf, NULL), 0);
	}
	conf_wait_ms(w, rxq, &cmp, 1, 30000);
	snprintf(what, sizeof(what), "recv of %zu bytes (%s)", len, c2s ? "c->s" : "s->c");
	if (cmp.status != 0)
		conf_fail("%s completed with %s", what, conf_err(cmp.status));
	assert_int_equal(cmp.type, FERRY_OP_RECV);
	assert_ptr_equal(cmp.user_ctx, rbuf);
	assert_ptr_equal(cmp.ep, rx);
	assert_int_equal(cmp.tag, tag);
	if (cmp.len != len)
		conf_fail("%s: completion len %llu", what, (unsigned long long)cmp.len);
	conf_wait_ms(w, txq, &cmp, 1, 30000);
	if (cmp.status != 0)
		conf_fail("send of %zu bytes completed with %s", len, conf_err(cmp.status));
	assert_int_equal(cmp.type, FERRY_OP_SEND);
	assert_ptr_equal(cmp.user_ctx, sbuf);
	assert_ptr_equal(cmp.ep, tx);
	assert_int_equal(cmp.tag, tag);
	if (cmp.len != len)
		conf_fail("send of %zu bytes: completion len %llu", len,
			  (unsigned long long)cmp.len);
	conf_assert_pattern(rbuf, len, seed, what);
	conf_assert_bytes(rbuf + len, GUARD, GUARD_BYTE, "bytes after the message");
	conf_assert_pattern(sbuf, len, seed, "send buffer after the send");
	conf_free(c, sbuf);
	conf_free(c, rbuf);
}

static const size_t sizes[] = {
	0,     1,     7,          8,          63,           64,        4095,
	4096,  4097,  65535,      65536,      65537,        262144 + 3, 1 << 20,
	(4 << 20) + 1, 16 << 20,  64 << 20,
};

static void test_msg_sizes(void **state)
{
	struct conf *c = *state;
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		xfer(c, true, sizes[i], 0x1000 + i, 11 + i, false);
}

static void test_msg_sizes_reverse(void **state)
{
	struct conf *c = *state;
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i += 2)
		xfer(c, false, sizes[i], 0x2000 + i, 101 + i, false);
}

static void test_msg_unexpected_sizes(void **state)
{
	struct conf *c = *state;
	size_t i;

	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]) - 1; i++)
		xfer(c, true, sizes[i], 0x3000 + i, 201 + i, true);
}

/* Tag masks: (msg & mask) == (tag & mask). */
static void test_msg_tag_mask(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	struct {
		uint64_t tag, mask;
		uint64_t want; /* tag of the message it must get */
	} r[] = {
		{ 0xAB00, 0xFF00, 0xAB12 },
		{ 0x0001, 0x00FF, 0x5501 },
		{ 0x0077, ~0ull, 0x0077 },
		{ 0xFFFFFFFF00000000ull, 0xFFFFFFFF00000000ull, 0xFFFFFFFF12345678ull },
		{ 0x8000000000000000ull, 0x8000000000000000ull, 0x8000000000000000ull },
		{ 0x1234, 0, 0x7777 }, /* mask 0 matches anything: gets the first left */
	};
	/* Sent in this order; 0x7777 matches only the wildcard. */
	const uint64_t msgs[] = { 0x7777, 0x0077, 0xAB12, 0x5501, 0xFFFFFFFF12345678ull,
				  0x8000000000000000ull };
	enum { N = sizeof(msgs) / sizeof(msgs[0]) };
	uint64_t in[N], out[N];
	struct ferry_completion cmp[N];
	int i, k;

	for (i = 0; i < N; i++) {
		in[i] = 0;
		conf_assert_rc(ferry_recv(c->sep, &in[i], sizeof(in[i]), r[i].tag, r[i].mask,
					  &in[i], NULL), 0);
	}
	for (i = 0; i < N; i++) {
		out[i] = msgs[i];
		conf_assert_rc(ferry_send(c->cep, &out[i], sizeof(out[i]), msgs[i], &out[i],
					  NULL), 0);
	}
	conf_wait(w, ferry_ctx_cq(w->srv), cmp, N);
	for (i = 0; i < N; i++) {
		k = (int)((uint64_t *)cmp[i].user_ctx - in);
		assert_true(k >= 0 && k < N);
		conf_assert_rc(cmp[i].status, 0);
		if (cmp[i].tag != r[k].want || in[k] != r[k].want)
			conf_fail("recv (tag 0x%llx mask 0x%llx) got message 0x%llx (completion "
				  "tag 0x%llx), expected 0x%llx",
				  (unsigned long long)r[k].tag, (unsigned long long)r[k].mask,
				  (unsigned long long)in[k], (unsigned long long)cmp[i].tag,
				  (unsigned long long)r[k].want);
	}
	conf_wait(w, ferry_ctx_cq(w->cli), cmp, N);
	for (i = 0; i < N; i++)
		conf_assert_rc(cmp[i].status, 0);
}

/* A message no posted recv matches waits; it does not go to a non-matching recv. */
static void test_msg_tag_nomatch_waits(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	uint64_t in = 0, out = 42, in2 = 0;
	struct ferry_completion cmp;

	conf_assert_rc(ferry_recv(c->sep, &in, sizeof(in), 0x10, ~0ull, &in, NULL), 0);
	conf_assert_rc(ferry_send(c->cep, &out, sizeof(out), 0x11, &out, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->cli), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	conf_expect_none(w, ferry_ctx_cq(w->srv), 100);
	assert_int_equal(in, 0);
	conf_assert_rc(ferry_recv(c->sep, &in2, sizeof(in2), 0x11, ~0ull, &in2, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), &cmp, 1);
	assert_ptr_equal(cmp.user_ctx, &in2);
	conf_assert_rc(cmp.status, 0);
	assert_int_equal(in2, 42);
	/* The first recv is still posted and gets the next matching message. */
	out = 43;
	conf_assert_rc(ferry_send(c->cep, &out, sizeof(out), 0x10, &out, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), &cmp, 1);
	assert_ptr_equal(cmp.user_ctx, &in);
	assert_int_equal(in, 43);
	conf_wait(w, ferry_ctx_cq(w->cli), &cmp, 1);
}

/* Unexpected messages of mixed sizes, received later by exact tag in reverse order,
 * and a wildcard recv takes the oldest unexpected message. */
static void test_msg_unexpected_reverse(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	static const size_t len[] = { 0, 100, 4096, 65536, 65537, 1 << 20, 3 };
	enum { N = sizeof(len) / sizeof(len[0]) };
	unsigned char *s[N], *r[N];
	struct ferry_completion cmp[N];
	int i;

	for (i = 0; i < N; i++) {
		s[i] = conf_alloc(c, len[i] + 1);
		r[i] = conf_alloc(c, len[i] + GUARD);
		conf_fill(s[i], len[i], 300 + (uint64_t)i);
		memset(r[i], GUARD_BYTE, len[i] + GUARD);
		conf_assert_rc(ferry_send(c->cep, s[i], len[i], 0x500 + (uint64_t)i, s[i], NULL), 0);
	}
	conf_drive_for(w, 50);
	/* The last one (3 bytes) by wildcard would take the oldest: do the exact ones
	 * in reverse first, except message 0, then the wildcard must get message 0. */
	for (i = N - 1; i >= 1; i--)
		conf_assert_rc(ferry_recv(c->sep, r[i], len[i] + GUARD, 0x500 + (uint64_t)i,
					  ~0ull, r[i], NULL), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->srv), cmp, N - 1, 20000);
	for (i = 0; i < N - 1; i++)
		conf_assert_rc(cmp[i].status, 0);
	conf_assert_rc(ferry_recv(c->sep, r[0], len[0] + GUARD, 0, 0, r[0], NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), cmp, 1);
	conf_assert_rc(cmp[0].status, 0);
	assert_int_equal(cmp[0].tag, 0x500);
	for (i = 0; i < N; i++) {
		conf_assert_pattern(r[i], len[i], 300 + (uint64_t)i, "unexpected message");
		conf_assert_bytes(r[i] + len[i], GUARD, GUARD_BYTE, "after the message");
	}
	conf_wait(w, ferry_ctx_cq(w->cli), cmp, N);
	for (i = 0; i < N; i++)
		conf_assert_rc(cmp[i].status, 0);
}

/* Same tag, one stream: the i-th message lands in the i-th posted recv, across eager
 * and rendezvous sizes; once with recvs posted first, once with all unexpected. */
static void ordering_case(struct conf *c, bool unexpected,
			  const struct ferry_op_attr *send_attr)
{
	struct conf_world *w = &c->w;
	enum { N = 400 };
	static const size_t cyc[] = { 8, 1000, 70000, 16, 0, 200000, 65536 };
	unsigned char *s[N], *r[N];
	size_t len[N];
	struct ferry_completion *cmp = calloc(N, sizeof(*cmp));
	int i;

	assert_non_null(cmp);
	for (i = 0; i < N; i++) {
		len[i] = cyc[i % 7] + (size_t)(i % 5);
		s[i] = conf_alloc(c, len[i] + 1);
		r[i] = conf_alloc(c, len[i] + GUARD);
		conf_fill(s[i], len[i], 5000 + (uint64_t)i);
	}
	if (!unexpected)
		for (i = 0; i < N; i++)
			conf_assert_rc(ferry_recv(c->sep, r[i], len[i] + GUARD, 7, 0, r[i], NULL), 0);
	for (i = 0; i < N; i++)
		conf_assert_rc(ferry_send(c->cep, s[i], len[i], 7, s[i], send_attr), 0);
	if (unexpected) {
		conf_drive_for(w, 50);
		for (i = 0; i < N; i++)
			conf_assert_rc(ferry_recv(c->sep, r[i], len[i] + GUARD, 7, 0, r[i], NULL), 0);
	}
	conf_wait_ms(w, ferry_ctx_cq(w->srv), cmp, N, 30000);
	for (i = 0; i < N; i++) {
		unsigned char *b = cmp[i].user_ctx;
		int k;
		for (k = 0; k < N && r[k] != b; k++)
			;
		assert_true(k < N);
		if (cmp[i].status != 0 || cmp[i].len != len[k])
			conf_fail("recv #%d: status %s len %llu, expected message #%d of %zu "
				  "bytes", k, conf_err(cmp[i].status),
				  (unsigned long long)cmp[i].len, k, len[k]);
	}
	for (i = 0; i < N; i++) {
		char what[64];
		snprintf(what, sizeof(what), "recv #%d (message order)", i);
		conf_assert_pattern(r[i], len[i], 5000 + (uint64_t)i, what);
	}
	conf_wait_ms(w, ferry_ctx_cq(w->cli), cmp, N, 30000);
	for (i = 0; i < N; i++)
		conf_assert_rc(cmp[i].status, 0);
	free(cmp);
}

static void test_msg_ordering(void **state)
{
	ordering_case(*state, false, NULL);
}

static void test_msg_ordering_unexpected(void **state)
{
	ordering_case(*state, true, NULL);
}

/* A message larger than the posted recv: EMSGSIZE with the real length, nothing
 * written past the posted length, the message dropped, the endpoint still fine. */
static void truncation_case(struct conf *c, size_t msg, size_t posted)
{
	struct conf_world *w = &c->w;
	unsigned char *s = conf_alloc(c, msg), *r = conf_alloc(c, posted + 4096);
	uint64_t next_out = 0x1122334455667788ull, next_in = 0;
	struct ferry_completion cmp;

	conf_fill(s, msg, 77);
	memset(r, GUARD_BYTE, posted + 4096);
	conf_assert_rc(ferry_recv(c->sep, r, posted, 9, ~0ull, r, NULL), 0);
	conf_assert_rc(ferry_send(c->cep, s, msg, 9, s, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), &cmp, 1);
	assert_ptr_equal(cmp.user_ctx, r);
	if (cmp.status != FERRY_EMSGSIZE)
		conf_fail("recv of %zu bytes posted for a %zu-byte message: expected "
			  "EMSGSIZE, got %s", posted, msg, conf_err(cmp.status));
	if (cmp.len != msg)
		conf_fail("truncated recv: completion len %llu, expected the message "
			  "length %zu", (unsigned long long)cmp.len, msg);
	conf_assert_bytes(r + posted, 4096, GUARD_BYTE, "bytes past the posted length");
	conf_wait(w, ferry_ctx_cq(w->cli), &cmp, 1);
	assert_ptr_equal(cmp.user_ctx, s);
	/* An eager message left; a rendezvous sender may hear that it was refused. */
	if (cmp.status != 0 && !(msg > 65536 && cmp.status == FERRY_EMSGSIZE))
		conf_fail("send of a %zu-byte message truncated at the receiver completed "
			  "with %s", msg, conf_err(cmp.status));
	print_message("sender of a truncated %zu-byte message: %s\n", msg,
		      conf_err(cmp.status));
	conf_expect_none(w, ferry_ctx_cq(w->srv), 50);

	/* Dropped, not redelivered: the next recv gets the next message. */
	conf_assert_rc(ferry_recv(c->sep, &next_in, sizeof(next_in), 0, 0, &next_in, NULL), 0);
	conf_assert_rc(ferry_send(c->cep, &next_out, sizeof(next_out), 10, &next_out, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	assert_int_equal(cmp.tag, 10);
	assert_int_equal(next_in, next_out);
	conf_wait(w, ferry_ctx_cq(w->cli), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	assert_int_equal(ferry_ep_status(c->sep), 0);
	assert_int_equal(ferry_ep_status(c->cep), 0);
}

static void test_msg_truncation_eager(void **state)
{
	truncation_case(*state, 1000, 100);
}

static void test_msg_truncation_rndv(void **state)
{
	truncation_case(*state, 1 << 20, 4096);
}

static void test_msg_truncation_zero(void **state)
{
	truncation_case(*state, 1, 0);
}

/* Many messages in flight at once, matched by exact tag with recvs in shuffled
 * order, half posted before the sends and half after. */
static void test_msg_many_in_flight(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	enum { N = 1024 };
	unsigned char **s = calloc(N, sizeof(*s)), **r = calloc(N, sizeof(*r));
	size_t *len = calloc(N, sizeof(*len));
	int *order = calloc(N, sizeof(*order));
	struct ferry_completion *cmp = calloc(N, sizeof(*cmp));
	uint64_t rnd = 12345;
	int i;

	assert_non_null(s);
	assert_non_null(r);
	assert_non_null(len);
	assert_non_null(order);
	assert_non_null(cmp);
	for (i = 0; i < N; i++) {
		len[i] = i % 16 == 0 ? (128 << 10) + (size_t)i : 512 + (size_t)i;
		s[i] = conf_alloc(c, len[i]);
		r[i] = conf_alloc(c, len[i]);
		conf_fill(s[i], len[i], 9000 + (uint64_t)i);
		order[i] = i;
	}
	for (i = N - 1; i > 0; i--) {
		int j, t;
		rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
		j = (int)(rnd % (uint64_t)(i + 1));
		t = order[i], order[i] = order[j], order[j] = t;
	}
	for (i = 0; i < N / 2; i++)
		conf_assert_rc(ferry_recv(c->sep, r[order[i]], len[order[i]],
					  (uint64_t)order[i], ~0ull, r[order[i]], NULL), 0);
	for (i = 0; i < N; i++)
		conf_assert_rc(ferry_send(c->cep, s[i], len[i], (uint64_t)i, s[i], NULL), 0);
	for (i = N / 2; i < N; i++)
		conf_assert_rc(ferry_recv(c->sep, r[order[i]], len[order[i]],
					  (uint64_t)order[i], ~0ull, r[order[i]], NULL), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->srv), cmp, N, 60000);
	for (i = 0; i < N; i++)
		if (cmp[i].status != 0)
			conf_fail("recv (tag %llu) completed with %s",
				  (unsigned long long)cmp[i].tag, conf_err(cmp[i].status));
	conf_wait_ms(w, ferry_ctx_cq(w->cli), cmp, N, 60000);
	for (i = 0; i < N; i++)
		conf_assert_rc(cmp[i].status, 0);
	for (i = 0; i < N; i++)
		conf_assert_pattern(r[i], len[i], 9000 + (uint64_t)i, "message in flight");
	free(cmp);
	free(order);
	free(len);
	free(r);
	free(s);
}

/*
 * FERRY_OP_MORE on every send, the last one included: nothing else is posted, yet
 * everything arrives, in order, bytes intact, because a progress pass (here: the
 * harness waiting on the contexts' fds, which the held posts make readable) sends
 * what was held. Then sends held on an endpoint closed before any progress: each
 * completes exactly once.
 */
static void test_msg_more_flag(void **state)
{
	struct conf *c = *state;
	struct ferry_op_attr more = { .flags = FERRY_OP_MORE };
	struct ferry_completion cmp[16];
	unsigned char buf[16][64];
	void *ctxs[16];

	ordering_case(c, false, &more);

	ferry_ep_hold(c->cep);
	struct ferry_ep *cep = c->cep;
	for (int i = 0; i < 16; i++) {
		ctxs[i] = buf[i];
		conf_assert_rc(ferry_send(cep, buf[i], sizeof(buf[i]), 6, buf[i], &more), 0);
	}
	ferry_ep_close(cep);
	c->cep = NULL;
	conf_wait_ms(&c->w, ferry_ctx_cq(c->w.cli), cmp, 16, 10000);
	/* delivered by the graceful close (tcp) or cancelled (ofi): either, once each */
	conf_expect_each_once(cmp, 16, ctxs, CONF_ANY_STATUS);
	print_message("held send after close: %s\n", conf_err(cmp[0].status));
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.cli), 100);
	ferry_ep_release(cep);
}

/* Both directions at once, many round trips. */
static void test_msg_ping_pong(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	unsigned char a[256], b[256], ra[256], rb[256];
	struct ferry_completion cmp[2];
	int i;

	for (i = 0; i < 200; i++) {
		conf_fill(a, sizeof(a), (uint64_t)i);
		conf_fill(b, sizeof(b), (uint64_t)i + 1000000);
		conf_assert_rc(ferry_recv(c->sep, ra, sizeof(ra), 1, ~0ull, ra, NULL), 0);
		conf_assert_rc(ferry_recv(c->cep, rb, sizeof(rb), 2, ~0ull, rb, NULL), 0);
		conf_assert_rc(ferry_send(c->cep, a, sizeof(a), 1, a, NULL), 0);
		conf_assert_rc(ferry_send(c->sep, b, sizeof(b), 2, b, NULL), 0);
		conf_wait(w, ferry_ctx_cq(w->srv), cmp, 2);
		conf_assert_rc(cmp[0].status, 0);
		conf_assert_rc(cmp[1].status, 0);
		conf_wait(w, ferry_ctx_cq(w->cli), cmp, 2);
		conf_assert_rc(cmp[0].status, 0);
		conf_assert_rc(cmp[1].status, 0);
		conf_assert_pattern(ra, sizeof(ra), (uint64_t)i, "ping");
		conf_assert_pattern(rb, sizeof(rb), (uint64_t)i + 1000000, "pong");
	}
}

/* Operations report to the queue they name, never to the default one. */
static void test_msg_own_cq(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	struct ferry_cq *scq = NULL, *ccq = NULL;
	struct ferry_op_attr sa = { 0 }, ca = { 0 };
	uint64_t in = 0, out = 5;
	struct ferry_completion cmp;

	conf_assert_rc(ferry_cq_create(w->srv, &scq), 0);
	conf_assert_rc(ferry_cq_create(w->cli, &ccq), 0);
	assert_int_equal(ferry_cq_fd(scq), ferry_ctx_fd(w->srv));
	sa.cq = scq;
	ca.cq = ccq;
	conf_assert_rc(ferry_recv(c->sep, &in, sizeof(in), 3, ~0ull, &in, &sa), 0);
	/* A queue that an operation in flight reports to refuses to go. */
	conf_assert_rc(ferry_cq_destroy(scq), FERRY_EBUSY);
	conf_assert_rc(ferry_send(c->cep, &out, sizeof(out), 3, &out, &ca), 0);
	conf_wait(w, ccq, &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	assert_ptr_equal(cmp.user_ctx, &out);
	conf_drive_for(w, 50);
	/* Done or not, the recv's completion is not polled yet: still busy. */
	conf_assert_rc(ferry_cq_destroy(scq), FERRY_EBUSY);
	conf_expect_none(w, ferry_ctx_cq(w->srv), 20);
	conf_expect_none(w, ferry_ctx_cq(w->cli), 1);
	conf_wait(w, scq, &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	assert_ptr_equal(cmp.user_ctx, &in);
	assert_int_equal(in, 5);
	conf_assert_rc(ferry_cq_destroy(scq), 0);
	conf_assert_rc(ferry_cq_destroy(ccq), 0);
	conf_assert_rc(ferry_cq_destroy(ferry_ctx_cq(w->srv)), FERRY_EINVAL);
}

/* ferry_cq_wait sleeps and times out; it returns as soon as a completion exists. */
static void test_msg_cq_wait(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	struct ferry_completion cmp;
	uint64_t t0 = conf_now_ms(), in = 0, out = 9;

	conf_assert_rc(ferry_cq_wait(ferry_ctx_cq(w->cli), &cmp, 1, 100), FERRY_ETIMEDOUT);
	assert_true(conf_now_ms() - t0 >= 90);
	conf_assert_rc(ferry_cq_wait(ferry_ctx_cq(w->cli), &cmp, 1, 0), FERRY_ETIMEDOUT);
	conf_assert_rc(ferry_recv(c->sep, &in, sizeof(in), 1, ~0ull, &in, NULL), 0);
	conf_assert_rc(ferry_send(c->cep, &out, sizeof(out), 1, &out, NULL), 0);
	/* An eager send completes without the peer: the client waits alone. */
	{
		int rc = ferry_cq_wait(ferry_ctx_cq(w->cli), &cmp, 1, 5000);
		if (rc != 1)
			conf_fail("ferry_cq_wait for a send completion: %s", conf_err(rc));
		conf_assert_rc(cmp.status, 0);
	}
	conf_wait(w, ferry_ctx_cq(w->srv), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
}

/* An operation past its deadline completes with ETIMEDOUT, once. */
static void test_msg_op_timeout(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	struct ferry_op_attr a = { .timeout_ms = 100 };
	uint64_t in = 0, out = 1, t0;
	struct ferry_completion cmp;

	t0 = conf_now_ms();
	conf_assert_rc(ferry_recv(c->sep, &in, sizeof(in), 0x77, ~0ull, &in, &a), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->srv), &cmp, 1, 5000);
	if (cmp.status != FERRY_ETIMEDOUT)
		conf_fail("recv with a 100 ms deadline and no sender: expected ETIMEDOUT, "
			  "got %s", conf_err(cmp.status));
	assert_true(conf_now_ms() - t0 >= 90);
	conf_expect_none(w, ferry_ctx_cq(w->srv), 100);
	/* The timed-out recv is gone: a later message goes to a new recv. */
	conf_assert_rc(ferry_send(c->cep, &out, sizeof(out), 0x77, &out, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->cli), &cmp, 1);
	conf_assert_rc(ferry_recv(c->sep, &in, sizeof(in), 0x77, ~0ull, &out, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	assert_ptr_equal(cmp.user_ctx, &out);
}

/*
 * A rendezvous send past its deadline before the receiver asked for it: the send
 * completes with ETIMEDOUT and the application overwrites its buffer. The late receive
 * must not deliver that buffer as the message: it fails (EBADKEY where ferry serves the
 * read itself, ECANCELED where the fabric does and the sender then disowns the finish),
 * and the endpoint carries the next message.
 */
static void test_msg_rndv_deadline_then_recv(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	enum { LEN = 1 << 20 };
	struct ferry_op_attr a = { .timeout_ms = 100 };
	uint8_t *s = conf_alloc(c, LEN), *r = conf_alloc(c, LEN);
	uint64_t in = 0, out = 5;
	struct ferry_completion cmp;

	memset(s, 0x11, LEN);
	conf_assert_rc(ferry_send(c->cep, s, LEN, 0x78, s, &a), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->cli), &cmp, 1, 5000);
	if (cmp.status != FERRY_ETIMEDOUT)
		conf_fail("rendezvous send with a 100 ms deadline and no receiver: expected "
			  "ETIMEDOUT, got %s", conf_err(cmp.status));
	memset(s, 0xee, LEN); /* the application's again */
	conf_assert_rc(ferry_recv(c->sep, r, LEN, 0x78, ~0ull, r, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), &cmp, 1);
	if (cmp.status == 0)
		conf_fail("a receive matched a rendezvous whose send had timed out and succeeded "
			  "(first byte 0x%02x): the sender's reused buffer was delivered", r[0]);
	if (cmp.status != FERRY_EBADKEY && cmp.status != FERRY_ECANCELED)
		conf_fail("late receive of a timed-out rendezvous: expected EBADKEY or "
			  "ECANCELED, got %s", conf_err(cmp.status));
	conf_assert_rc(ferry_recv(c->sep, &in, sizeof(in), 0x79, ~0ull, &in, NULL), 0);
	conf_assert_rc(ferry_send(c->cep, &out, sizeof(out), 0x79, &out, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->cli), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	conf_wait(w, ferry_ctx_cq(w->srv), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	assert_true(in == 5);
}

/*
 * A close must not wait out the handshake timeout for a peer that answers: on
 * libfabric a rendezvous announce grants the peer's read, and the sender holds its
 * buffer until the peer's finish or, when an endpoint closes first, until the peer's
 * endpoint says it reads nothing more. The worlds of these tests wait up to 60 s for
 * handshakes; each completion is awaited for at most CONF_WAIT_MS.
 */
static void long_handshake(struct ferry_config *cfg, bool server)
{
	(void)server;
	cfg->handshake_timeout_ms = 60000;
}

/* A pair in c->w2 with a 1 MiB rendezvous send from *cep that nobody receives. */
static void rndv_unread_pair(struct conf *c, uint64_t tag, struct ferry_ep **cep,
			     struct ferry_ep **sep)
{
	enum { LEN = 1 << 20 };
	uint8_t *s = conf_alloc(c, LEN);

	conf_world_open_tweak(&c->w2, long_handshake);
	conf_connect(&c->w2, 0, cep, sep);
	conf_assert_rc(ferry_send(*cep, s, LEN, tag, s, NULL), 0);
	conf_drive_for(&c->w2, 20); /* the announce reaches the receiver */
}

/* The sender closes with a rendezvous send the receiver never matched. */
static void test_msg_rndv_sender_closes_unread(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *cep, *sep;
	struct ferry_completion cmp;

	rndv_unread_pair(c, 0x80, &cep, &sep);
	ferry_ep_close(cep);
	conf_wait(&c->w2, ferry_ctx_cq(c->w2.cli), &cmp, 1);
	if (cmp.status != FERRY_ECANCELED)
		conf_fail("unread rendezvous send at its endpoint's close: expected ECANCELED, "
			  "got %s", conf_err(cmp.status));
	conf_expect_none(&c->w2, ferry_ctx_cq(c->w2.cli), 100); /* exactly once */
	conf_wait_ep_down(&c->w2, sep);
	ferry_ep_close(sep);
	conf_world_close(&c->w2, true);
}

/* The receiver closes with a rendezvous message it never received. */
static void test_msg_rndv_receiver_closes_unread(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *cep, *sep;
	struct ferry_completion cmp;

	rndv_unread_pair(c, 0x81, &cep, &sep);
	ferry_ep_close(sep);
	conf_wait(&c->w2, ferry_ctx_cq(c->w2.cli), &cmp, 1);
	if (cmp.status == 0)
		conf_fail("a rendezvous send to a receiver that closed without receiving it "
			  "succeeded");
	conf_expect_none(&c->w2, ferry_ctx_cq(c->w2.cli), 100); /* exactly once */
	ferry_ep_close(cep);
	conf_world_close(&c->w2, true);
}

static void small_limits(struct ferry_config *cfg, bool server)
{
	if (server) {
		cfg->max_frame = 1 << 20;
		cfg->unexpected_max = 256 << 10;
	}
}

/* Sends above the peer's max frame are refused at post time. */
static void test_msg_peer_max_frame(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *cep, *sep;
	unsigned char *b = conf_alloc(c, 2 << 20);
	struct ferry_completion cmp;

	conf_world_open_tweak(&c->w2, small_limits);
	conf_connect(&c->w2, 0, &cep, &sep);
	conf_assert_rc(ferry_send(cep, b, (2 << 20), 1, b, NULL), FERRY_EMSGSIZE);
	conf_assert_rc(ferry_send(cep, b, (1 << 20) + 1, 1, b, NULL), FERRY_EMSGSIZE);
	/* At the limit it goes through. */
	conf_fill(b, 1 << 20, 4);
	conf_assert_rc(ferry_recv(sep, b + (1 << 20), 1 << 20, 1, ~0ull, b, NULL), 0);
	conf_assert_rc(ferry_send(cep, b, 1 << 20, 1, b, NULL), 0);
	conf_wait(&c->w2, ferry_ctx_cq(c->w2.srv), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	conf_wait(&c->w2, ferry_ctx_cq(c->w2.cli), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	conf_assert_pattern(b + (1 << 20), 1 << 20, 4, "message at the max frame");
	ferry_ep_close(cep);
	ferry_ep_close(sep);
	conf_world_close(&c->w2, true);
}

/*
 * ferry.h: "FERRY_UNEXPECTED_MAX: bytes of unmatched eager messages buffered per
 * endpoint; past it the endpoint fails with FERRY_ENOBUFS". Every send completes once;
 * the rest of the context keeps working.
 */
static bool ep_failed(void *arg)
{
	return ferry_ep_status(arg) != 0;
}

/*
 * Eager flow control: with a 256 KiB FERRY_UNEXPECTED_MAX on the receiver and no
 * receives posted, a sender of 32 x 16 KiB is held back (its sends wait for credit)
 * instead of overrunning the receiver; the endpoint stays healthy, and once receives
 * are posted every message arrives, in order, and every send completes once.
 */
static void test_msg_unexpected_limit(void **state)
{
	struct conf *c = *state;
	enum { N = 32, LEN = 16 << 10 };
	struct ferry_ep *cep, *sep;
	unsigned char *b = conf_alloc(c, (size_t)N * LEN);
	unsigned char *r = conf_alloc(c, (size_t)N * LEN);
	struct ferry_completion cmp[N];
	int i, done = 0;

	for (i = 0; i < N; i++)
		memset(b + (size_t)i * LEN, 0x40 + i, LEN);
	conf_world_open_tweak(&c->w2, small_limits);
	conf_connect(&c->w2, 0, &cep, &sep);
	for (i = 0; i < N; i++)
		conf_assert_rc(ferry_send(cep, b + (size_t)i * LEN, LEN, (uint64_t)i, b, NULL), 0);
	/* Let the sender run out of credit; nothing may fail meanwhile. */
	conf_drive_until(&c->w2, ep_failed, sep, 500);
	conf_assert_rc(ferry_ep_status(sep), 0);
	conf_assert_rc(ferry_ep_status(cep), 0);
	int sent = 0, n;
	while ((n = ferry_cq_poll(ferry_ctx_cq(c->w2.cli), cmp, N)) > 0)
		sent += n; /* sends that went out within the credit */
	if (sent >= N)
		conf_fail("all %d sends completed against a 256 KiB budget: no flow control", N);
	for (i = 0; i < N; i++)
		conf_assert_rc(ferry_recv(sep, r + (size_t)i * LEN, LEN, (uint64_t)i, ~0ull,
					  r + (size_t)i * LEN, NULL), 0);
	while (done < N) {
		n = conf_wait(&c->w2, ferry_ctx_cq(c->w2.srv), cmp, 1);
		for (int k = 0; k < n; k++, done++) {
			conf_assert_rc(cmp[k].status, 0);
			assert_int_equal(cmp[k].tag, (uint64_t)done); /* in order */
		}
	}
	assert_memory_equal(b, r, (size_t)N * LEN);
	while (sent < N) {
		n = conf_wait(&c->w2, ferry_ctx_cq(c->w2.cli), cmp, 1);
		for (int k = 0; k < n; k++)
			conf_assert_rc(cmp[k].status, 0);
		sent += n;
	}
	conf_assert_rc(ferry_ep_status(sep), 0);
	ferry_ep_close(cep);
	ferry_ep_close(sep);
	conf_world_close(&c->w2, true);
}

/* Two connections to the same peer never exchange each other's messages, even with
 * wildcard receives on both. */
static void test_msg_endpoint_isolation(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	struct ferry_ep *cep[2], *sep[2];
	uint64_t in[2] = { 0, 0 }, out[2] = { 0xA, 0xB };
	struct ferry_completion cmp[2];
	int i;

	conf_connect_n(w, 2, FERRY_CONNECT_PRIVATE, cep, sep);
	for (i = 0; i < 2; i++) {
		conf_own_ep(c, cep[i]);
		conf_own_ep(c, sep[i]);
	}
	for (i = 0; i < 2; i++)
		conf_assert_rc(ferry_recv(sep[i], &in[i], sizeof(in[i]), 0, 0, &in[i], NULL), 0);
	/* Only the second connection carries a message first. */
	conf_assert_rc(ferry_send(cep[1], &out[1], sizeof(out[1]), 1, &out[1], NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), cmp, 1);
	assert_ptr_equal(cmp[0].user_ctx, &in[1]);
	assert_ptr_equal(cmp[0].ep, sep[1]);
	assert_int_equal(in[1], 0xB);
	assert_int_equal(in[0], 0);
	conf_assert_rc(ferry_send(cep[0], &out[0], sizeof(out[0]), 1, &out[0], NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), cmp, 1);
	assert_ptr_equal(cmp[0].user_ctx, &in[0]);
	assert_int_equal(in[0], 0xA);
	conf_wait(w, ferry_ctx_cq(w->cli), cmp, 2);
	for (i = 0; i < 2; i++) {
		conf_close(c, cep[i]);
		conf_close(c, sep[i]);
	}
}

/* Invalid arguments are refused at once and post nothing. */
static void test_msg_bad_args(void **state)
{
	struct conf *c = *state;

	conf_assert_rc(ferry_send(c->cep, NULL, 16, 1, NULL, NULL), FERRY_EINVAL);
	conf_assert_rc(ferry_recv(c->sep, NULL, 16, 1, ~0ull, NULL, NULL), FERRY_EINVAL);
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.cli), 20);
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.srv), 1);
}

static void fast_probes(struct ferry_config *cfg, bool server)
{
	(void)server;
	cfg->probe_interval_ms = 50;
	/* 200 ms of silence: no longer than the transfers, above scheduling hiccups of a
	 * loaded 2-core machine (2 misses = 100 ms flaked on ofi+shm under ctest -j2). */
	cfg->probe_misses = 4;
}

/*
 * A transfer that lasts several probe intervals is not a dead peer: the sending side
 * gets no input while it streams one large frame, and its probe queues behind that
 * frame, yet the peer is alive and reading. 256 MiB each way lasts about as long as
 * the 200 ms of silence this configuration allows: here the send takes 150-300 ms
 * (the receiver's pages fault in), the write 40-90 ms, on tcp, ofi+tcp and ofi+shm
 * alike; seconds on soft-RoCE in the VM.
 */
static void test_msg_long_transfer_probes(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w2;
	enum { LEN = 256 << 20 };
	struct ferry_ep *cep, *sep;
	unsigned char *src = conf_alloc(c, LEN), *dst = conf_alloc(c, LEN);
	unsigned char blob[FERRY_RKEY_MAX];
	size_t blen = sizeof(blob);
	struct ferry_mr *mr = NULL;
	struct ferry_rkey *rk = NULL;
	struct ferry_completion cmp;
	struct ferry_stats st;
	uint64_t t0;

	conf_world_open_tweak(w, fast_probes);
	conf_connect(w, 0, &cep, &sep);
	conf_fill(src, LEN, 61);
	t0 = conf_now_ms();
	conf_assert_rc(ferry_recv(sep, dst, LEN, 1, ~0ull, dst, NULL), 0);
	conf_assert_rc(ferry_send(cep, src, LEN, 1, src, NULL), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->srv), &cmp, 1, 60000);
	if (cmp.status != 0)
		conf_fail("recv of 256 MiB with 50 ms probes completed with %s after %llu ms",
			  conf_err(cmp.status), (unsigned long long)(conf_now_ms() - t0));
	conf_wait_ms(w, ferry_ctx_cq(w->cli), &cmp, 1, 60000);
	conf_assert_rc(cmp.status, 0);
	print_message("256 MiB send: %llu ms\n", (unsigned long long)(conf_now_ms() - t0));
	conf_assert_pattern(dst, LEN, 61, "256 MiB message");

	conf_assert_rc(ferry_mr_reg(w->srv, dst, LEN, FERRY_ACCESS_REMOTE_WRITE, &mr), 0);
	conf_assert_rc(ferry_mr_pack(mr, blob, &blen), 0);
	conf_assert_rc(ferry_rkey_unpack(w->cli, blob, blen, &rk), 0);
	conf_fill(src, LEN, 62);
	t0 = conf_now_ms();
	conf_assert_rc(ferry_write(cep, src, LEN, NULL, rk, 0, src, NULL), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->cli), &cmp, 1, 60000);
	if (cmp.status != 0)
		conf_fail("write of 256 MiB with 50 ms probes completed with %s after %llu ms",
			  conf_err(cmp.status), (unsigned long long)(conf_now_ms() - t0));
	print_message("256 MiB write: %llu ms\n", (unsigned long long)(conf_now_ms() - t0));
	conf_assert_pattern(dst, LEN, 62, "256 MiB write");
	conf_assert_rc(ferry_stats_get(w->cli, NULL, &st), 0);
	assert_int_equal(st.peers_dead, 0);
	ferry_rkey_destroy(rk);
	ferry_ep_close(cep);
	ferry_ep_close(sep);
	conf_assert_rc(ferry_mr_dereg(mr), 0);
	conf_world_close(w, true);
}

/* Small messages sent across the group world by a thread of their own. */
struct side_traffic {
	struct conf_world *w;
	struct ferry_ep *cep, *sep;
	atomic_int messages;
	atomic_bool stop, failed; /* failed: err is written (read it after the join) */
	char err[160];
};

/*
 * Sends one message from the client side's tx to the server side's rx of one world
 * and drives both contexts (as conf_drive does) until the receive has completed on
 * the server's queue and the send on the client's, each exactly once, with the tag
 * and length sent. Returns a FERRY_E* code rather than failing: it also runs off the
 * test's thread. A completion of anything else is FERRY_EPROTO.
 */
static int pair_message(struct conf_world *w, struct ferry_ep *tx, struct ferry_ep *rx,
			void *sbuf, void *rbuf, size_t len, uint64_t tag)
{
	struct ferry_cq *cqs[2] = { ferry_ctx_cq(w->srv), ferry_ctx_cq(w->cli) };
	void *want[2] = { rbuf, sbuf };
	bool done[2] = { false, false };
	uint64_t deadline = conf_now_ms() + 60000;
	struct ferry_completion cmp;
	int rc;

	if ((rc = ferry_recv(rx, rbuf, len, tag, ~0ull, rbuf, NULL)) ||
	    (rc = ferry_send(tx, sbuf, len, tag, sbuf, NULL)))
		return rc;
	while (!done[0] || !done[1]) {
		if (conf_now_ms() > deadline)
			return FERRY_ETIMEDOUT;
		for (int q = 0; q < 2; q++) {
			rc = ferry_cq_poll(cqs[q], &cmp, 1);
			if (rc < 0)
				return rc;
			if (rc == 0)
				continue;
			if (cmp.status != 0)
				return cmp.status;
			if (cmp.user_ctx != want[q] || done[q])
				return FERRY_EPROTO; /* a stray or a second completion */
			if (q == 0 && (cmp.len != len || cmp.tag != tag))
				return FERRY_EPROTO;
			done[q] = true;
		}
	}
	return 0;
}

static void *side_traffic_run(void *arg)
{
	struct side_traffic *t = arg;

	for (uint64_t i = 0; !atomic_load(&t->stop); i++) {
		uint64_t sbuf = i, rbuf = UINT64_MAX;
		int rc = pair_message(t->w, t->cep, t->sep, &sbuf, &rbuf, sizeof(i), i);
		if (rc == 0 && rbuf != i)
			rc = FERRY_EPROTO;
		if (rc != 0) {
			snprintf(t->err, sizeof(t->err), "message %llu: %s",
				 (unsigned long long)i, conf_err(rc));
			atomic_store(&t->failed, true);
			return NULL;
		}
		atomic_fetch_add(&t->messages, 1);
	}
	return NULL;
}

/*
 * Contexts of one process are independent: a stream of large messages on one pair,
 * driven by one thread, must not hold off another pair's small messages on another
 * thread. ofi+shm posts to in-process peers under a process-wide lock; while that was
 * a mutex, one thread's back-to-back copies starved every other context's posts (~3
 * messages got through per 64 MiB message here, against thousands), a probe included,
 * which then declared a live peer dead. Counted per streamed message, not in time.
 */
static void test_msg_contexts_independent(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w2;
	enum { LEN = 64 << 20, MSGS = 8, MIN_PER_MSG = 32 };
	unsigned char *src = conf_alloc(c, LEN), *dst = conf_alloc(c, LEN);
	struct side_traffic t = { .w = &c->w, .cep = c->cep, .sep = c->sep };
	struct ferry_ep *cep, *sep;
	pthread_t th;
	int rc = 0, i;

	conf_world_open(w);
	conf_connect(w, 0, &cep, &sep);
	conf_fill(src, LEN, 63);
	memset(dst, 0, LEN); /* faulted in: the stream is copies, not page faults */
	if (pthread_create(&th, NULL, side_traffic_run, &t) != 0)
		conf_fail("pthread_create failed");
	while (atomic_load(&t.messages) < 10 && !atomic_load(&t.failed))
		;
	int before = atomic_load(&t.messages);
	/* No assertion while the thread runs: a failure would tear its world down. */
	for (i = 0; i < MSGS && rc == 0; i++)
		rc = pair_message(w, cep, sep, src, dst, LEN, (uint64_t)i);
	int during = atomic_load(&t.messages) - before;
	atomic_store(&t.stop, true);
	pthread_join(th, NULL);
	if (rc != 0)
		conf_fail("64 MiB message %d: %s", i - 1, conf_err(rc));
	if (t.err[0])
		conf_fail("the other pair's small messages: %s", t.err);
	print_message("other pair: %d small messages while %d x %d MiB streamed\n", during,
		      MSGS, LEN >> 20);
	if (during < MSGS * MIN_PER_MSG)
		conf_fail("the other pair sent %d messages while %d large ones streamed: held "
			  "off (expected at least %d per large message)",
			  during, MSGS, MIN_PER_MSG);
	conf_assert_pattern(dst, LEN, 63, "64 MiB message");
	ferry_ep_close(cep);
	ferry_ep_close(sep);
	conf_world_close(w, true);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_msg_sizes, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_sizes_reverse, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_unexpected_sizes, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_tag_mask, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_tag_nomatch_waits, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_unexpected_reverse, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_ordering, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_ordering_unexpected, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_truncation_eager, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_truncation_rndv, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_truncation_zero, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_many_in_flight, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_more_flag, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_ping_pong, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_own_cq, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_cq_wait, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_op_timeout, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_rndv_deadline_then_recv, conf_setup_pair,
						conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_rndv_sender_closes_unread, conf_setup_none,
						conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_rndv_receiver_closes_unread, conf_setup_none,
						conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_peer_max_frame, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_unexpected_limit, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_long_transfer_probes, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_endpoint_isolation, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_contexts_independent, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_msg_bad_args, conf_setup_pair, conf_teardown),
	};

	return CONF_RUN("msg", tests);
}
