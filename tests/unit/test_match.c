/*
 * test_match.c - tag matching and the message paths (lib/msg.c) over the mock:
 * masks, posting order, unexpected-queue order, FERRY_EMSGSIZE with the message
 * dropped, rendezvous (RTS -> read -> FIN) above the mock's 4096-byte eager limit, an
 * RTS that arrives before its receive, credit flow control and the unexpected-message
 * budget, malformed core messages, and per-op deadlines (each op completes exactly
 * once).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mock_provider.h"

#include <stdlib.h>
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

static void open_with(const struct ferry_config *ca, const struct ferry_config *cb)
{
	mt_pair_open(&P, ca, cb, true);
	mt_pair_connect(&P, 0, &P.ea, &P.eb);
	both[0] = P.a;
	both[1] = P.b;
}

static void open_default(void)
{
	open_with(NULL, NULL);
}

static struct ferry_completion poll_one(struct ferry_ctx *ctx)
{
	struct ferry_completion c;
	memset(&c, 0, sizeof(c));
	assert_int_equal(mt_poll1(ferry_ctx_cq(ctx), &c, both, 2), 1);
	return c;
}

/* Exactly one completion is waiting on ctx's queue (draining both sides): for user_ctx,
 * with status. */
static void expect_only(struct ferry_ctx *ctx, const void *user_ctx, int status)
{
	struct ferry_completion c[8];
	assert_int_equal(mt_drain(ferry_ctx_cq(ctx), c, 8, both, 2), 1);
	assert_ptr_equal(c[0].user_ctx, user_ctx);
	assert_int_equal(c[0].status, status);
}

/* Opens the pair and starts a rendezvous of len bytes from s into r, up to b's read
 * request going out. */
static void rndv_read_requested(uint8_t *s, uint8_t *r, size_t len, uint64_t tag,
				const struct ferry_op_attr *send_attr)
{
	open_default();
	assert_int_equal(ferry_recv(P.eb, r, len, tag, ~0ull, r, NULL), 0);
	assert_int_equal(ferry_send(P.ea, s, len, tag, s, send_attr), 0);
	ferry_progress(P.b); /* RTS matched: the read request is on its way */
	assert_int_equal(mock_count(MOCK_CNT_READ_REQ), 1);
}

static void expect_none(struct ferry_ctx *ctx)
{
	struct ferry_completion c;
	mt_progress(both, 2, 3);
	assert_int_equal(ferry_cq_poll(ferry_ctx_cq(ctx), &c, 1), 0);
}

/* ------------------------------------------------------------------ matching */

static void test_tag_masks(void **state)
{
	(void)state;
	uint64_t r[5] = { 0 };
	uint64_t s[5];
	struct ferry_completion c;

	open_default();
	/* R0: upper byte 0x12; R1: exactly 0xabc; R2: bit 63 set; R3: anything. */
	assert_int_equal(ferry_recv(P.eb, &r[0], 8, 0x12ff, 0xff00, &r[0], NULL), 0);
	assert_int_equal(ferry_recv(P.eb, &r[1], 8, 0xabc, ~0ull, &r[1], NULL), 0);
	assert_int_equal(ferry_recv(P.eb, &r[2], 8, 1ull << 63, 1ull << 63, &r[2], NULL), 0);
	assert_int_equal(ferry_recv(P.eb, &r[3], 8, 0xdead, 0, &r[3], NULL), 0);

	const uint64_t tags[4] = { 0xabd, 0x1234, 0xabc, (1ull << 63) | 7 };
	/* 0xabd: not R0 (0x0a00), not R1, not R2 -> R3 (the wildcard) */
	/* 0x1234 -> R0; 0xabc -> R1; 1<<63|7 -> R2 */
	for (int i = 0; i < 4; i++) {
		s[i] = 100 + (uint64_t)i;
		assert_int_equal(ferry_send(P.ea, &s[i], 8, tags[i], &s[i], NULL), 0);
	}
	const int want_recv[4] = { 3, 0, 1, 2 };
	for (int i = 0; i < 4; i++) {
		c = poll_one(P.b);
		assert_int_equal(c.status, 0);
		assert_int_equal(c.type, FERRY_OP_RECV);
		assert_ptr_equal(c.ep, P.eb);
		assert_true(c.len == 8);
		int k = (int)((uint64_t *)c.user_ctx - r);
		assert_true(k >= 0 && k < 4);
		/* which message landed where, and the completion carries the message's tag */
		int m = (int)(r[k] - 100);
		assert_true(m >= 0 && m < 4);
		assert_int_equal(want_recv[m], k);
		assert_true(c.tag == tags[m]);
	}
	for (int i = 0; i < 4; i++) {
		c = poll_one(P.a);
		assert_int_equal(c.status, 0);
		assert_int_equal(c.type, FERRY_OP_SEND);
		assert_true(c.tag == tags[(uint64_t *)c.user_ctx - s]);
	}
	mt_pair_close(&P);
}

static void test_posting_order(void **state)
{
	(void)state;
	enum { N = 16 };
	uint32_t r[N], s[N];
	struct ferry_completion c;

	open_default();
	/* All match everything: the i-th message goes to the i-th receive posted. */
	for (int i = 0; i < N; i++)
		assert_int_equal(ferry_recv(P.eb, &r[i], 4, i % 2 ? 7 : 0, i % 2 ? ~0ull : 0,
					    &r[i], NULL), 0);
	for (int i = 0; i < N; i++) {
		s[i] = (uint32_t)i;
		assert_int_equal(ferry_send(P.ea, &s[i], 4, 7, NULL, NULL), 0);
	}
	for (int i = 0; i < N; i++) {
		c = poll_one(P.b);
		assert_ptr_equal(c.user_ctx, &r[i]);
		assert_int_equal(r[i], i);
	}
	for (int i = 0; i < N; i++)
		poll_one(P.a);
	mt_pair_close(&P);
}

static void test_unexpected_order(void **state)
{
	(void)state;
	static uint8_t big[3][10000];
	static uint8_t rbig[10000];
	uint64_t s[8], r = 0;
	struct ferry_completion c;

	open_default();
	/* Arrival: tag 1, 2, 1, 2, 1 -- nothing posted yet. */
	const uint64_t tags[5] = { 1, 2, 1, 2, 1 };
	for (int i = 0; i < 5; i++) {
		s[i] = (uint64_t)i;
		assert_int_equal(ferry_send(P.ea, &s[i], 8, tags[i], NULL, NULL), 0);
	}
	mt_progress(both, 2, 3);
	assert_true(P.eb->unexpected_bytes > 0);
	/* Each receive takes the oldest message it matches. */
	const struct {
		uint64_t tag, mask, want;
	} order[5] = { { 2, ~0ull, 1 }, { 1, ~0ull, 0 }, { 0, 0, 2 }, { 0, 0, 3 }, { 1, ~0ull, 4 } };
	for (int i = 0; i < 5; i++) {
		assert_int_equal(ferry_recv(P.eb, &r, 8, order[i].tag, order[i].mask, &r, NULL), 0);
		c = poll_one(P.b); /* delivered from the queue at post time */
		assert_int_equal(c.status, 0);
		assert_true(r == order[i].want);
		assert_true(c.tag == tags[order[i].want]);
	}
	assert_true(P.eb->unexpected_bytes == 0);

	/* Eager and rendezvous announcements keep one arrival order. */
	for (int i = 0; i < 3; i++)
		mt_fill_pattern(big[i], sizeof(big[i]), 10 + (uint64_t)i);
	s[5] = 55;
	assert_int_equal(ferry_send(P.ea, &s[5], 8, 9, NULL, NULL), 0);
	assert_int_equal(ferry_send(P.ea, big[0], sizeof(big[0]), 9, NULL, NULL), 0);
	s[6] = 66;
	assert_int_equal(ferry_send(P.ea, &s[6], 8, 9, NULL, NULL), 0);
	mt_progress(both, 2, 3);
	assert_int_equal(ferry_recv(P.eb, rbig, sizeof(rbig), 9, ~0ull, rbig, NULL), 0);
	c = poll_one(P.b);
	assert_true(c.len == 8);
	assert_true(*(uint64_t *)rbig == 55);
	assert_int_equal(ferry_recv(P.eb, rbig, sizeof(rbig), 9, ~0ull, rbig, NULL), 0);
	c = poll_one(P.b);
	assert_int_equal(c.status, 0);
	assert_true(c.len == sizeof(big[0]));
	assert_true(mt_check_pattern(rbig, sizeof(rbig), 10));
	assert_int_equal(ferry_recv(P.eb, rbig, sizeof(rbig), 9, ~0ull, rbig, NULL), 0);
	c = poll_one(P.b);
	assert_true(*(uint64_t *)rbig == 66);
	for (int i = 0; i < 8; i++)
		poll_one(P.a);
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ EMSGSIZE */

static void test_emsgsize_drops_message(void **state)
{
	(void)state;
	static uint8_t small[8], big[100], next[100], rbig[20000], rsmall[5000];
	uint64_t v = 0x1122334455667788ull;
	struct ferry_completion c;

	open_default();
	mt_fill_pattern(big, sizeof(big), 1);

	/* Posted first: matched on arrival, payload discarded, buffer untouched. */
	memset(small, 0x5a, sizeof(small));
	assert_int_equal(ferry_recv(P.eb, small, sizeof(small), 3, ~0ull, small, NULL), 0);
	assert_int_equal(ferry_recv(P.eb, next, sizeof(next), 3, ~0ull, next, NULL), 0);
	assert_int_equal(ferry_send(P.ea, big, sizeof(big), 3, NULL, NULL), 0);
	assert_int_equal(ferry_send(P.ea, &v, 8, 3, NULL, NULL), 0);
	c = poll_one(P.b);
	assert_ptr_equal(c.user_ctx, small);
	assert_int_equal(c.status, FERRY_EMSGSIZE);
	assert_true(c.len == sizeof(big)); /* the message's length */
	assert_true(c.tag == 3);
	for (size_t i = 0; i < sizeof(small); i++)
		assert_int_equal(small[i], 0x5a);
	c = poll_one(P.b); /* the next message matches the next receive */
	assert_ptr_equal(c.user_ctx, next);
	assert_int_equal(c.status, 0);
	assert_true(c.len == 8);
	assert_memory_equal(next, &v, 8);

	/* From the unexpected queue: same outcome, and the message is gone. */
	assert_int_equal(ferry_send(P.ea, big, sizeof(big), 4, NULL, NULL), 0);
	assert_int_equal(ferry_send(P.ea, &v, 8, 4, NULL, NULL), 0);
	mt_progress(both, 2, 3);
	assert_int_equal(ferry_recv(P.eb, small, sizeof(small), 4, ~0ull, small, NULL), 0);
	c = poll_one(P.b);
	assert_int_equal(c.status, FERRY_EMSGSIZE);
	assert_true(c.len == sizeof(big));
	memset(next, 0, sizeof(next));
	assert_int_equal(ferry_recv(P.eb, next, sizeof(next), 4, ~0ull, next, NULL), 0);
	c = poll_one(P.b);
	assert_int_equal(c.status, 0);
	assert_memory_equal(next, &v, 8);
	assert_true(P.eb->unexpected_bytes == 0);

	/* Rendezvous: the receive and the send both learn it; the next one works. */
	static uint8_t huge[10000];
	mt_fill_pattern(huge, sizeof(huge), 2);
	assert_int_equal(ferry_recv(P.eb, rsmall, sizeof(rsmall), 5, ~0ull, rsmall, NULL), 0);
	assert_int_equal(ferry_recv(P.eb, rbig, sizeof(rbig), 5, ~0ull, rbig, NULL), 0);
	assert_int_equal(ferry_send(P.ea, huge, sizeof(huge), 5, huge, NULL), 0);
	assert_int_equal(ferry_send(P.ea, huge, sizeof(huge), 5, rbig, NULL), 0);
	c = poll_one(P.b);
	assert_ptr_equal(c.user_ctx, rsmall);
	assert_int_equal(c.status, FERRY_EMSGSIZE);
	assert_true(c.len == sizeof(huge));
	c = poll_one(P.b);
	assert_ptr_equal(c.user_ctx, rbig);
	assert_int_equal(c.status, 0);
	assert_true(mt_check_pattern(rbig, sizeof(huge), 2));
	int seen = 0;
	for (int i = 0; i < 6; i++) {
		c = poll_one(P.a);
		if (c.user_ctx == huge) {
			assert_int_equal(c.status, FERRY_EMSGSIZE);
			seen |= 1;
		} else if (c.user_ctx == rbig) {
			assert_int_equal(c.status, 0);
			seen |= 2;
		}
	}
	assert_int_equal(seen, 3);
	assert_int_equal(ferry_ep_status(P.ea), 0);
	assert_int_equal(ferry_ep_status(P.eb), 0);
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ rendezvous */

static void test_rendezvous(void **state)
{
	(void)state;
	const size_t sizes[] = { MOCK_EAGER_MAX, MOCK_EAGER_MAX + 1, 65536, (1u << 20) + 3 };
	struct ferry_completion c;
	unsigned rndv = 0;

	open_default();
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(sizes); i++) {
		size_t len = sizes[i];
		uint8_t *s = malloc(len), *r = calloc(1, len + 16);
		assert_non_null(s);
		assert_non_null(r);
		mt_fill_pattern(s, len, 100 + i);
		assert_int_equal(ferry_recv(P.eb, r, len + 16, 77, ~0ull, r, NULL), 0);
		assert_int_equal(ferry_send(P.ea, s, len, 77, s, NULL), 0);
		c = poll_one(P.b);
		assert_int_equal(c.status, 0);
		assert_true(c.len == len);
		assert_true(c.tag == 77);
		assert_true(mt_check_pattern(r, len, 100 + i));
		c = poll_one(P.a);
		assert_ptr_equal(c.user_ctx, s);
		assert_int_equal(c.status, 0);
		assert_true(c.len == len);
		rndv += len > MOCK_EAGER_MAX;
		free(s);
		free(r);
	}
	/* Eager up to the limit, then RTS -> read -> FIN -> FIN_ACK. */
	assert_int_equal(mock_count(MOCK_CNT_EAGER), 1);
	assert_int_equal(mock_count(MOCK_CNT_RTS), rndv);
	assert_int_equal(mock_count(MOCK_CNT_READ_REQ), rndv);
	assert_int_equal(mock_count(MOCK_CNT_READ_RESP), rndv);
	assert_int_equal(mock_count(MOCK_CNT_FIN), rndv);
	assert_int_equal(mock_count(MOCK_CNT_FIN_ACK), rndv);
	struct ferry_stats st = mt_stats(P.a);
	assert_true(st.bytes_sent == MOCK_EAGER_MAX + MOCK_EAGER_MAX + 1 + 65536 + (1u << 20) + 3);
	mt_pair_close(&P);
}

static void test_rts_before_recv(void **state)
{
	(void)state;
	enum { LEN = 100000 };
	static uint8_t s[LEN], r[LEN];
	struct ferry_completion c;

	open_default();
	mt_fill_pattern(s, LEN, 9);
	assert_int_equal(ferry_send(P.ea, s, LEN, 0xab01, s, NULL), 0);
	mt_progress(both, 2, 5);
	/* Announced, waiting: nothing read yet, nothing completed. */
	assert_int_equal(mock_count(MOCK_CNT_RTS), 1);
	assert_int_equal(mock_count(MOCK_CNT_READ_REQ), 0);
	assert_int_equal(ferry_cq_poll(ferry_ctx_cq(P.a), &c, 1), 0);
	/* A masked receive picks it up; the payload moves straight into it. */
	assert_int_equal(ferry_recv(P.eb, r, LEN, 0xab00, 0xff00, r, NULL), 0);
	c = poll_one(P.b);
	assert_int_equal(c.status, 0);
	assert_true(c.tag == 0xab01);
	assert_true(c.len == LEN);
	assert_true(mt_check_pattern(r, LEN, 9));
	c = poll_one(P.a);
	assert_int_equal(c.status, 0);
	assert_int_equal(mock_count(MOCK_CNT_FIN), 1);
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ budget */

/*
 * Flow control: the receiver advertises FERRY_UNEXPECTED_MAX as credit, so a sender
 * that outpaces the receives waits instead of overrunning it; nothing is dropped and
 * the order holds.
 */
static void test_credit_flow_control(void **state)
{
	(void)state;
	enum { N = 12, LEN = 400 };
	static uint8_t s[N][LEN], r[N][LEN];
	struct ferry_config cb;
	struct ferry_completion c[N];

	mt_config(&cb);
	cb.unexpected_max = 2000;
	open_with(NULL, &cb);
	for (int i = 0; i < N; i++) {
		mt_fill_pattern(s[i], LEN, 1000 + (uint64_t)i);
		assert_int_equal(ferry_send(P.ea, s[i], LEN, 3, s[i], NULL), 0);
	}
	mt_progress(both, 2, 5);
	/* Only what fits in b's budget went out. */
	unsigned sent = mock_count(MOCK_CNT_EAGER);
	assert_true(sent >= 1 && sent < N);
	assert_true(P.eb->unexpected_bytes <= cb.unexpected_max);
	assert_int_equal(ferry_ep_status(P.eb), 0);
	int done_a = mt_drain(ferry_ctx_cq(P.a), c, N, both, 2);
	assert_int_equal(done_a, (int)sent);
	/* Receives consume, credit flows back, the rest follows in order. */
	for (int i = 0; i < N; i++)
		assert_int_equal(ferry_recv(P.eb, r[i], LEN, 3, ~0ull, r[i], NULL), 0);
	for (int i = 0; i < N; i++) {
		struct ferry_completion one = poll_one(P.b);
		assert_int_equal(one.status, 0);
		assert_ptr_equal(one.user_ctx, r[i]);
		assert_true(mt_check_pattern(r[i], LEN, 1000 + (uint64_t)i));
	}
	assert_int_equal(mock_count(MOCK_CNT_EAGER), N);
	assert_true(mock_count(MOCK_CNT_CREDIT) >= 1);
	done_a += mt_drain(ferry_ctx_cq(P.a), c, N, both, 2);
	assert_int_equal(done_a, N);
	assert_int_equal(ferry_ep_status(P.ea), 0);
	assert_int_equal(ferry_ep_status(P.eb), 0);
	mt_pair_close(&P);
}

/*
 * A peer that ignores the credit overruns the budget: the endpoint fails, ENOBUFS;
 * what was within the budget can still be received.
 */
static void test_unexpected_budget_fails_endpoint(void **state)
{
	(void)state;
	static uint8_t msg[400];
	uint64_t r = 0;
	struct ferry_config cb;
	struct ferry_completion c;
	struct ferryi_msg m = { .type = FERRYI_MSG_EAGER, .tag = 1 };

	mt_config(&cb);
	cb.unexpected_max = 2 * (FERRYI_EAGER_CHARGE + sizeof(msg)) + 10;
	open_with(NULL, &cb);
	assert_int_equal(ferry_recv(P.eb, &r, 8, 999, ~0ull, &r, NULL), 0);
	for (int i = 0; i < 2; i++)
		assert_int_equal(mock_ep_inject(P.ea, &m, msg, sizeof(msg)), 0);
	mt_progress(both, 2, 3);
	assert_int_equal(ferry_ep_status(P.eb), 0); /* two fit */
	assert_int_equal(mock_ep_inject(P.ea, &m, msg, sizeof(msg)), 0);
	mt_progress(both, 2, 3);
	assert_int_equal(ferry_ep_status(P.eb), FERRY_ENOBUFS);
	c = poll_one(P.b);
	assert_ptr_equal(c.user_ctx, &r);
	assert_int_equal(c.status, FERRY_ENOBUFS);
	assert_int_equal(mt_stats(P.b).eps_failed, 1);
	/* The two that fit had arrived whole: still receivable, then nothing. */
	for (int i = 0; i < 2; i++) {
		static uint8_t got[sizeof(msg)];
		assert_int_equal(ferry_recv(P.eb, got, sizeof(got), 1, ~0ull, got, NULL), 0);
		c = poll_one(P.b);
		assert_ptr_equal(c.user_ctx, got);
		assert_int_equal(c.status, 0);
		assert_int_equal(c.len, sizeof(msg));
	}
	assert_int_equal(ferry_recv(P.eb, &r, 8, 1, ~0ull, &r, NULL), FERRY_ENOTCONN);
	assert_int_equal(ferry_ep_status(P.ea), FERRY_ECONNRESET);
	mt_pair_close(&P);
}

/*
 * Rendezvous announcements take credit like eager messages; one larger than the
 * receiver's whole budget goes anyway and is refused there (ENOBUFS), never waits.
 */
static void test_unexpected_budget_rts(void **state)
{
	(void)state;
	static uint8_t big[8192];
	struct ferry_config cb;
	struct ferry_completion c;

	mt_config(&cb);
	cb.unexpected_max = 64;
	open_with(NULL, &cb);
	assert_int_equal(ferry_send(P.ea, big, sizeof(big), 1, big, NULL), 0);
	mt_progress(both, 2, 5);
	assert_int_equal(ferry_ep_status(P.eb), FERRY_ENOBUFS);
	c = poll_one(P.a); /* the send, waiting for a finish that cannot come */
	assert_ptr_equal(c.user_ctx, big);
	assert_int_equal(c.status, FERRY_ECONNRESET);
	expect_none(P.a);
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ bad input */

/* Each malformed core message fails only its endpoint, with FERRY_EPROTO. */
static void test_bad_core_messages(void **state)
{
	(void)state;
	static uint8_t payload[MOCK_EAGER_MAX + 1];
	uint8_t rts[8 + FERRY_RKEY_MAX];
	size_t blen;
	struct ferry_mr *mr;
	static uint8_t region[256];

	struct {
		const char *what;
		struct ferryi_msg m;
		size_t len;
		int kind; /* 0: payload as is, 1: RTS with a good key, 2: RTS, bad key */
		uint64_t rts_size;
	} cases[] = {
		{ "unknown type", { .type = 0 }, 0, 0, 0 },
		{ "type past the last", { .type = FERRYI_MSG_MAX_ }, 0, 0, 0 },
		{ "type 255", { .type = 255 }, 8, 0, 0 },
		{ "eager above the limit", { .type = FERRYI_MSG_EAGER }, MOCK_EAGER_MAX + 1, 0, 0 },
		{ "probe with a payload", { .type = FERRYI_MSG_PROBE }, 1, 0, 0 },
		{ "goodbye with a payload", { .type = FERRYI_MSG_GOODBYE }, 4, 0, 0 },
		{ "fin with a payload", { .type = FERRYI_MSG_FIN }, 8, 0, 0 },
		{ "fin with an unknown status", { .type = FERRYI_MSG_FIN, .tag = 12345 }, 0, 0, 0 },
		{ "fin with a positive status", { .type = FERRYI_MSG_FIN, .tag = 1 }, 0, 0, 0 },
		{ "rts too short", { .type = FERRYI_MSG_RTS }, 8, 0, 0 },
		{ "rts with a malformed key", { .type = FERRYI_MSG_RTS }, 8 + 24, 2, 100 },
		{ "rts larger than its region", { .type = FERRYI_MSG_RTS }, 0, 1, 257 },
		{ "rts above max frame", { .type = FERRYI_MSG_RTS }, 0, 1, UINT64_MAX },
	};

	for (size_t i = 0; i < FERRYI_ARRAY_LEN(cases); i++) {
		open_default();
		const void *data = payload;
		size_t len = cases[i].len;
		if (cases[i].kind) {
			blen = FERRY_RKEY_MAX;
			assert_int_equal(ferry_mr_reg(P.a, region, sizeof(region),
						      FERRY_ACCESS_REMOTE_READ, &mr), 0);
			assert_int_equal(ferry_mr_pack(mr, rts + 8, &blen), 0);
			ferryi_put_le64(rts, cases[i].rts_size);
			if (cases[i].kind == 2)
				rts[8] ^= 0xff; /* magic */
			data = rts;
			len = 8 + blen;
		}
		uint64_t perr = mt_stats(P.b).protocol_errors;
		assert_int_equal(mock_ep_inject(P.ea, &cases[i].m, data, len), 0);
		mt_progress(both, 2, 3);
		if (ferry_ep_status(P.eb) != FERRY_EPROTO)
			print_error("case '%s'\n", cases[i].what);
		assert_int_equal(ferry_ep_status(P.eb), FERRY_EPROTO);
		assert_int_equal(mt_stats(P.b).protocol_errors, perr + 1);
		assert_int_equal(ferry_ep_status(P.ea), FERRY_ECONNRESET);
		if (cases[i].kind)
			assert_int_equal(ferry_mr_dereg(mr), 0);
		mt_pair_close(&P);
	}

	/* Harmless surprises are ignored: a finish for no send, a stray probe answer. */
	open_default();
	struct ferryi_msg fin = { .type = FERRYI_MSG_FIN, .tag = 0, .aux = 0x123456789ull };
	struct ferryi_msg ack = { .type = FERRYI_MSG_PROBE_ACK, .aux = 77 };
	assert_int_equal(mock_ep_inject(P.ea, &fin, NULL, 0), 0);
	assert_int_equal(mock_ep_inject(P.ea, &ack, NULL, 0), 0);
	mt_progress(both, 2, 3);
	assert_int_equal(ferry_ep_status(P.eb), 0);
	uint64_t v = 5, in = 0;
	assert_int_equal(ferry_recv(P.eb, &in, 8, 1, ~0ull, &in, NULL), 0);
	assert_int_equal(ferry_send(P.ea, &v, 8, 1, NULL, NULL), 0);
	assert_int_equal(poll_one(P.b).status, 0);
	assert_int_equal(poll_one(P.a).status, 0);
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ deadlines */

static void test_recv_deadline(void **state)
{
	(void)state;
	uint64_t r1 = 0, r2 = 0, r3 = 0, v = 42;
	struct ferry_op_attr attr = { .timeout_ms = 100 };
	struct ferry_completion c[8];
	int n1 = 0;

	open_default();
	/* r1 never matches; r2 matches before its deadline. */
	assert_int_equal(ferry_recv(P.eb, &r1, 8, 5, ~0ull, &r1, &attr), 0);
	assert_int_equal(ferry_recv(P.eb, &r2, 8, 6, ~0ull, &r2, &attr), 0);
	assert_int_equal(ferry_send(P.ea, &v, 8, 6, NULL, NULL), 0);
	assert_int_equal(poll_one(P.b).status, 0);
	assert_true(r2 == 42);

	mt_advance(both, 2, 99, 33);
	mt_progress(both, 2, 2);
	assert_int_equal(ferry_cq_poll(ferry_ctx_cq(P.b), c, 8), 0);
	mt_advance(both, 2, 1, 1);
	int got = mt_drain(ferry_ctx_cq(P.b), c, 8, both, 2);
	assert_int_equal(got, 1);
	assert_ptr_equal(c[0].user_ctx, &r1);
	assert_int_equal(c[0].status, FERRY_ETIMEDOUT);
	assert_true(c[0].len == 0);

	/* The receive is gone: a late message waits for the next one. */
	assert_int_equal(ferry_send(P.ea, &v, 8, 5, NULL, NULL), 0);
	mt_advance(both, 2, 500, 50);
	assert_int_equal(ferry_cq_poll(ferry_ctx_cq(P.b), c, 8), 0);
	assert_int_equal(ferry_recv(P.eb, &r3, 8, 5, ~0ull, &r3, NULL), 0);
	assert_ptr_equal(poll_one(P.b).user_ctx, &r3);
	assert_true(r1 == 0);
	assert_true(r3 == 42);

	/* Nothing more for r1 or r2, ever: not later, not at close. */
	ferry_ep_close(P.eb);
	P.eb = NULL;
	mt_advance(both, 2, 500, 50);
	got = mt_drain(ferry_ctx_cq(P.b), c, 8, both, 2);
	for (int i = 0; i < got; i++)
		n1 += c[i].user_ctx == &r1 || c[i].user_ctx == &r2;
	assert_int_equal(n1, 0);
	mt_drain(ferry_ctx_cq(P.a), c, 8, both, 2);
	mt_pair_close(&P);
}

/*
 * A deadline while the payload is moving cannot abandon the transfer alone: the
 * endpoint fails with the timeout, and each op completes once.
 */
static void test_recv_deadline_while_moving(void **state)
{
	(void)state;
	enum { LEN = 20000 };
	static uint8_t s[LEN], r[LEN];
	struct ferry_op_attr attr = { .timeout_ms = 100 };
	struct ferry_completion c[8];

	open_default();
	assert_int_equal(ferry_recv(P.eb, r, LEN, 1, ~0ull, r, &attr), 0);
	assert_int_equal(ferry_send(P.ea, s, LEN, 1, s, NULL), 0);
	ferry_progress(P.b); /* RTS matched: the read request is on its way */
	assert_int_equal(mock_count(MOCK_CNT_READ_REQ), 1);
	mock_ep_set_delay(P.ea, 500 * 1000000ull); /* the payload takes 500 ms */
	ferry_progress(P.a);
	mt_advance(both, 2, 100, 10);
	assert_int_equal(ferry_ep_status(P.eb), FERRY_ETIMEDOUT);
	int got = mt_drain(ferry_ctx_cq(P.b), c, 8, both, 2);
	assert_int_equal(got, 1);
	assert_ptr_equal(c[0].user_ctx, r);
	assert_int_equal(c[0].status, FERRY_ETIMEDOUT);
	mt_advance(both, 2, 1000, 100);
	got = mt_drain(ferry_ctx_cq(P.a), c, 8, both, 2);
	assert_int_equal(got, 1);
	assert_ptr_equal(c[0].user_ctx, s);
	assert_int_equal(c[0].status, FERRY_ECONNRESET);
	assert_int_equal(mt_drain(ferry_ctx_cq(P.b), c, 8, both, 2), 0);
	mt_pair_close(&P);
}

/*
 * A rendezvous send past its deadline while the receiver has not asked yet: the send
 * completes with the timeout and its region is gone, so the late receiver's read is
 * refused (FERRY_EBADKEY) rather than served from a buffer the sender reuses.
 */
static void test_send_deadline_rendezvous(void **state)
{
	(void)state;
	enum { LEN = 10000 };
	static uint8_t s[LEN], r[LEN];
	struct ferry_op_attr attr = { .timeout_ms = 100 };
	struct ferry_completion c[8];

	open_default();
	assert_int_equal(ferry_send(P.ea, s, LEN, 2, s, &attr), 0);
	mt_advance(both, 2, 100, 10);
	int got = mt_drain(ferry_ctx_cq(P.a), c, 8, both, 2);
	assert_int_equal(got, 1);
	assert_int_equal(c[0].status, FERRY_ETIMEDOUT);
	assert_int_equal(ferry_recv(P.eb, r, LEN, 2, ~0ull, r, NULL), 0);
	got = mt_drain(ferry_ctx_cq(P.b), c, 8, both, 2);
	assert_int_equal(got, 1);
	assert_int_equal(c[0].status, FERRY_EBADKEY);
	assert_int_equal(mt_drain(ferry_ctx_cq(P.a), c, 8, both, 2), 0);
	assert_int_equal(ferry_ep_status(P.ea), 0);
	assert_int_equal(ferry_ep_status(P.eb), 0);
	mt_pair_close(&P);
}

/*
 * A rendezvous send past its deadline after the receiver read its buffer but before
 * the receiver's finish arrived: the send completes with the timeout and its buffer is
 * the application's again, so the sender cannot vouch for what was read: it answers
 * the finish with ECANCELED, and the receive fails too. Both sides agree.
 */
static void test_send_deadline_before_finish(void **state)
{
	(void)state;
	enum { LEN = 10000 };
	static uint8_t s[LEN], r[LEN];
	struct ferry_op_attr attr = { .timeout_ms = 100 };
	struct ferry_completion c;

	mt_fill_pattern(s, LEN, 9);
	rndv_read_requested(s, r, LEN, 3, &attr);
	mock_ep_set_delay(P.eb, 300 * 1000000ull); /* b's finish takes 300 ms */
	mt_advance(both, 2, 150, 10);
	assert_int_equal(mock_count(MOCK_CNT_READ_RESP), 1);
	expect_only(P.a, s, FERRY_ETIMEDOUT);
	memset(s, 0xee, LEN); /* the application reuses its buffer */
	assert_int_equal(ferry_cq_poll(ferry_ctx_cq(P.b), &c, 1), 0); /* read, unconfirmed */
	mt_advance(both, 2, 300, 10);
	expect_only(P.b, r, FERRY_ECANCELED);
	assert_int_equal(mock_count(MOCK_CNT_FIN_ACK), 1);
	assert_int_equal(ferry_ep_status(P.ea), 0);
	assert_int_equal(ferry_ep_status(P.eb), 0);
	mt_pair_close(&P);
}

/*
 * The sender closes while the receiver's read of its buffer is still on its way: the
 * send completes (ECANCELED) and the receive never succeeds, although the read itself
 * ends well (its answer left before the goodbye).
 */
static void test_sender_close_before_finish(void **state)
{
	(void)state;
	enum { LEN = 10000 };
	static uint8_t s[LEN], r[LEN];

	rndv_read_requested(s, r, LEN, 4, NULL);
	mock_ep_set_delay(P.ea, 200 * 1000000ull); /* the read's answer, then the goodbye */
	mt_progress(both, 2, 2);
	assert_int_equal(mock_count(MOCK_CNT_READ_RESP), 1);
	ferry_ep_close(P.ea);
	P.ea = NULL;
	expect_only(P.a, s, FERRY_ECANCELED);
	mt_advance(both, 2, 400, 10);
	expect_only(P.b, r, FERRY_ECONNRESET);
	mt_pair_close(&P);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tag_masks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_posting_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unexpected_order, setup, teardown),
		cmocka_unit_test_setup_teardown(test_emsgsize_drops_message, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rendezvous, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rts_before_recv, setup, teardown),
		cmocka_unit_test_setup_teardown(test_credit_flow_control, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unexpected_budget_fails_endpoint, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unexpected_budget_rts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_bad_core_messages, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recv_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recv_deadline_while_moving, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_deadline_rendezvous, setup, teardown),
		cmocka_unit_test_setup_teardown(test_send_deadline_before_finish, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sender_close_before_finish, setup, teardown),
	};
	return cmocka_run_group_tests_name("unit.match", tests, group_setup, NULL);
}
