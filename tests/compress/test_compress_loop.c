/*
 * test_compress_loop.c - zstd on the TCP provider, end to end over loopback: round
 * trips of compressible, incompressible and mixed data through send/recv (eager and
 * rendezvous), write and read, every byte verified; the policy (off/on/auto), the
 * per-operation flags and who decides for a rendezvous; a peer that does not decode
 * zstd; the compressed_in/out counters.
 *
 * Loopback is faster than any compressor, so auto (which compresses only where the
 * link is the bottleneck) would send everything raw here: the cases that test what
 * auto compresses pretend the link is slow (the hook ferryi_tcp_zauto_assume_slow), and
 * auto_fast_link checks that on the real loopback it stays (almost) raw.
 *
 *   test_compress_loop            all cases
 *   test_compress_loop CASE       one case (CTest: compress.loop.CASE)
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "compress.h"
#include "cz_util.h"
#include "tcp_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EAGER 65536u

/* A build without zstd compresses nothing, whatever it is asked: every transfer must
 * still arrive intact, and every counter stay at zero. */
static bool zstd;

#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* Sizes: empty, tiny, below and at the auto threshold, the eager boundary, rendezvous
 * sizes of one segment, several segments with a short last chunk, and more. */
static const size_t sizes[] = {
	0, 1, 100, 4096, 16384, EAGER - 1, EAGER, EAGER + 1, 300000,
	(1u << 20), (3u << 20) + 123, (9u << 20) + 7,
};

enum op_kind { K_SEND, K_WRITE, K_READ };

static const char *kind_name(enum op_kind k)
{
	return k == K_SEND ? "send" : k == K_WRITE ? "write" : "read";
}

static uint64_t mismatch(const uint8_t *a, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (a[i] != b[i])
			return i;
	return UINT64_MAX;
}

/*
 * Moves len bytes of src from the client to the server (send, write) or from the
 * server to the client (read) with the given op flags, and checks they arrived.
 * The destination starts filled with a different pattern.
 */
static void move(struct cz_pair *p, enum op_kind k, const uint8_t *src, size_t len,
		 unsigned flags)
{
	struct ferry_op_attr attr = {.flags = flags};
	struct ferry_completion c;
	size_t cap = len ? len : 1;
	uint8_t *dst = malloc(cap), *sbuf = malloc(cap);
	struct ferry_mr *mr = NULL;

	assert_non_null(dst);
	assert_non_null(sbuf);
	memcpy(sbuf, src, len);
	memset(dst, 0xA5, cap);
	if (k == K_SEND) {
		assert_int_equal(ferry_recv(p->sep, dst, len, 9, ~0ull, NULL, NULL), 0);
		assert_int_equal(ferry_send(p->cep, sbuf, len, 9, NULL, &attr), 0);
		cz_wait(p, p->cli, &c);
		assert_int_equal(c.status, 0);
		assert_int_equal(c.type, FERRY_OP_SEND);
		cz_wait(p, p->srv, &c);
		assert_int_equal(c.status, 0);
		assert_int_equal(c.type, FERRY_OP_RECV);
		assert_int_equal(c.len, len);
	} else if (len) {
		/* write: client's sbuf -> server's region dst; read: server's region sbuf
		 * -> client's dst */
		uint8_t blob[FERRY_RKEY_MAX];
		size_t blen = sizeof(blob);
		struct ferry_rkey *rk = NULL;

		assert_int_equal(ferry_mr_reg(p->srv, k == K_WRITE ? dst : sbuf, len,
					      FERRY_ACCESS_REMOTE_WRITE | FERRY_ACCESS_REMOTE_READ,
					      &mr),
				 0);
		assert_int_equal(ferry_mr_pack(mr, blob, &blen), 0);
		assert_int_equal(ferry_rkey_unpack(p->cli, blob, blen, &rk), 0);
		if (k == K_WRITE)
			assert_int_equal(ferry_write(p->cep, sbuf, len, NULL, rk, 0, NULL, &attr),
					 0);
		else
			assert_int_equal(ferry_read(p->cep, dst, len, NULL, rk, 0, NULL, &attr), 0);
		cz_wait(p, p->cli, &c);
		assert_int_equal(c.status, 0);
		assert_int_equal(c.len, len);
		ferry_rkey_destroy(rk);
		assert_int_equal(ferry_mr_dereg(mr), 0);
	}
	uint64_t bad = mismatch(dst, src, len);
	if (bad != UINT64_MAX) {
		print_error("%s of %zu bytes: first wrong byte at %llu (0x%02x, want 0x%02x)\n",
			    kind_name(k), len, (unsigned long long)bad, dst[bad], src[bad]);
		fail();
	}
	free(dst);
	free(sbuf);
}

/* The context that compresses a transfer: the sender of the bytes. */
static struct ferry_ctx *compressor(struct cz_pair *p, enum op_kind k)
{
	return k == K_READ ? p->srv : p->cli;
}

static void pair_policy(struct cz_pair *p, enum ferry_compress policy,
			const char *const *srv_env, const char *const *cli_env)
{
	struct cz_side s, c;

	cz_side_init(&s);
	cz_side_init(&c);
	s.cfg.compress = c.cfg.compress = policy;
	s.cfg.eager_max = c.cfg.eager_max = EAGER;
	for (int i = 0; srv_env && srv_env[i]; i++)
		s.env[i] = srv_env[i];
	for (int i = 0; cli_env && cli_env[i]; i++)
		c.env[i] = cli_env[i];
	cz_pair_open(p, &s, &c);
}

/* Every size and data kind through one op kind under a policy; checks the counters. */
static void sweep(enum ferry_compress policy, enum op_kind k)
{
	struct cz_pair p;
	size_t max = sizes[NSIZES - 1];
	uint8_t *src = malloc(max);

	assert_non_null(src);
	pair_policy(&p, policy, NULL, NULL);
	for (int d = CZ_JSON; d <= CZ_MIXED; d++) {
		for (size_t i = 0; i < NSIZES; i++) {
			size_t len = sizes[i];
			struct ferry_stats before = cz_stats(compressor(&p, k));

			cz_fill(src, len, (enum cz_data)d, len + (uint64_t)d);
			move(&p, k, src, len, 0);
			struct ferry_stats after = cz_stats(compressor(&p, k));
			uint64_t zin = after.compressed_in - before.compressed_in;
			uint64_t zout = after.compressed_out - before.compressed_out;

			/* Random bytes never go compressed; logs do where the policy says. */
			if (d == CZ_RANDOM)
				assert_int_equal(zin, 0);
			bool expect = zstd && d == CZ_JSON && len >= 128 &&
				      (policy == FERRY_COMPRESS_ON || len >= 16384);
			/* All of it compressed, but maybe a short last segment (a few hundred
			 * bytes may not shrink). */
			if (expect && !(zin + 1024 >= len && zout > 0 && zout * 2 < zin)) {
				print_error("%s %s %zu bytes under %s: compressed_in %llu, out %llu\n",
					    kind_name(k), cz_data_name((enum cz_data)d), len,
					    policy == FERRY_COMPRESS_ON ? "on" : "auto",
					    (unsigned long long)zin, (unsigned long long)zout);
				fail();
			}
			if (zstd && d == CZ_MIXED && policy == FERRY_COMPRESS_AUTO &&
			    len >= (3u << 20))
				assert_true(zin > 0 && zin < len); /* some segments each way */
			assert_true(zout <= zin);
		}
	}
	/* Everything the receiving side decoded it counted nowhere: only senders count. */
	struct ferry_stats rs = cz_stats(k == K_READ ? p.cli : p.srv);
	assert_int_equal(rs.compressed_in, 0);
	assert_int_equal(rs.protocol_errors, 0);
	cz_pair_close(&p);
	free(src);
}

static void send_on(void **state) { (void)state; sweep(FERRY_COMPRESS_ON, K_SEND); }
static void send_auto(void **state) { (void)state; sweep(FERRY_COMPRESS_AUTO, K_SEND); }
static void write_on(void **state) { (void)state; sweep(FERRY_COMPRESS_ON, K_WRITE); }
static void write_auto(void **state) { (void)state; sweep(FERRY_COMPRESS_AUTO, K_WRITE); }
static void read_on(void **state) { (void)state; sweep(FERRY_COMPRESS_ON, K_READ); }
static void read_auto(void **state) { (void)state; sweep(FERRY_COMPRESS_AUTO, K_READ); }

/* Policy off: nothing is compressed, and no per-op flag: the fast path. */
static void policy_off(void **state)
{
	struct cz_pair p;
	size_t len = 2u << 20;
	uint8_t *src = malloc(len);
	(void)state;

	pair_policy(&p, FERRY_COMPRESS_OFF, NULL, NULL);
	cz_fill(src, len, CZ_JSON, 1);
	for (int k = K_SEND; k <= K_READ; k++) {
		move(&p, (enum op_kind)k, src, len, 0);
		move(&p, (enum op_kind)k, src, 1000, 0);
	}
	assert_int_equal(cz_stats(p.cli).compressed_in, 0);
	assert_int_equal(cz_stats(p.srv).compressed_in, 0);
	/* Without compression the wire carries the payload plus framing only. */
	struct ferry_stats st = cz_stats(p.cli);
	assert_true(st.wire_bytes_sent >= st.bytes_sent);
	cz_pair_close(&p);
	free(src);
}

/*
 * Per-op flags beat the policy. A rendezvous send's flags reach the READ_RESP that
 * carries its bytes (the sender decides); a read's flags reach the target.
 */
static void op_flags(void **state)
{
	struct cz_pair p;
	size_t big = 2u << 20, small = 20000;
	uint8_t *src = malloc(big);
	(void)state;

	cz_fill(src, big, CZ_JSON, 7);
	pair_policy(&p, FERRY_COMPRESS_OFF, NULL, NULL);
	for (int k = K_SEND; k <= K_READ; k++) {
		struct ferry_ctx *z = compressor(&p, (enum op_kind)k);
		uint64_t before = cz_stats(z).compressed_in;

		move(&p, (enum op_kind)k, src, small, FERRY_OP_COMPRESS); /* eager for send */
		move(&p, (enum op_kind)k, src, big, FERRY_OP_COMPRESS);   /* rendezvous  */
		assert_int_equal(cz_stats(z).compressed_in - before, zstd ? small + big : 0);
	}
	cz_pair_close(&p);

	pair_policy(&p, FERRY_COMPRESS_ON, NULL, NULL);
	for (int k = K_SEND; k <= K_READ; k++) {
		move(&p, (enum op_kind)k, src, small, FERRY_OP_NO_COMPRESS);
		move(&p, (enum op_kind)k, src, big, FERRY_OP_NO_COMPRESS);
	}
	assert_int_equal(cz_stats(p.cli).compressed_in, 0);
	assert_int_equal(cz_stats(p.srv).compressed_in, 0);
	/* Both flags: NO_COMPRESS wins. */
	move(&p, K_SEND, src, big, FERRY_OP_COMPRESS | FERRY_OP_NO_COMPRESS);
	assert_int_equal(cz_stats(p.cli).compressed_in, 0);
	cz_pair_close(&p);
	free(src);
}

/*
 * The rendezvous without flags: the sender's policy decides, whatever the
 * receiver's. Sender auto / receiver off: compressed; sender off / receiver on: raw.
 */
static void rendezvous_decider(void **state)
{
	struct cz_pair p;
	struct cz_side s, c;
	size_t len = 4u << 20;
	uint8_t *src = malloc(len);
	(void)state;

	cz_fill(src, len, CZ_JSON, 3);
	cz_side_init(&s);
	cz_side_init(&c);
	c.cfg.compress = FERRY_COMPRESS_AUTO;
	s.cfg.compress = FERRY_COMPRESS_OFF;
	cz_pair_open(&p, &s, &c);
	move(&p, K_SEND, src, len, 0);
	assert_int_equal(cz_stats(p.cli).compressed_in, zstd ? len : 0);
	cz_pair_close(&p);

	c.cfg.compress = FERRY_COMPRESS_OFF;
	s.cfg.compress = FERRY_COMPRESS_ON;
	cz_pair_open(&p, &s, &c);
	move(&p, K_SEND, src, len, 0);
	assert_int_equal(cz_stats(p.cli).compressed_in, 0);
	assert_int_equal(cz_stats(p.srv).compressed_in, 0);
	cz_pair_close(&p);
	free(src);
}

/*
 * A peer that does not decode zstd (FERRY_COMPRESS_ACCEPT=0, as a build without zstd
 * advertises) connects and talks raw, even with policy on and per-op flags on the
 * other side; it may still compress toward a peer that does decode.
 */
static void peer_without_zstd(void **state)
{
	static const char *const no_zstd[] = {"FERRY_COMPRESS_ACCEPT=0", NULL};
	struct cz_pair p;
	size_t len = 3u << 20;
	uint8_t *src = malloc(len);
	(void)state;

	cz_fill(src, len, CZ_JSON, 5);
	/* The server does not decode: the client sends, writes raw. */
	pair_policy(&p, FERRY_COMPRESS_ON, no_zstd, NULL);
	for (int k = K_SEND; k <= K_WRITE; k++) {
		move(&p, (enum op_kind)k, src, 30000, FERRY_OP_COMPRESS);
		move(&p, (enum op_kind)k, src, len, FERRY_OP_COMPRESS);
	}
	assert_int_equal(cz_stats(p.cli).compressed_in, 0);
	/* ... but the server compresses what the client reads: the client decodes. */
	move(&p, K_READ, src, len, 0);
	assert_int_equal(cz_stats(p.srv).compressed_in, zstd ? len : 0);
	cz_pair_close(&p);

	/* The client does not decode: the server answers its reads raw, even asked. */
	pair_policy(&p, FERRY_COMPRESS_ON, NULL, no_zstd);
	move(&p, K_READ, src, len, FERRY_OP_COMPRESS);
	move(&p, K_READ, src, 30000, 0);
	assert_int_equal(cz_stats(p.srv).compressed_in, 0);
	assert_int_equal(cz_stats(p.cli).protocol_errors, 0);
	assert_int_equal(cz_stats(p.srv).protocol_errors, 0);
	cz_pair_close(&p);
	free(src);
}

/* The counters: exact for one segment of logs; the wire shows the saving. */
static void stats(void **state)
{
	struct cz_pair p;
	size_t len = 1u << 20;
	uint8_t *src = malloc(len);
	(void)state;

	cz_fill(src, len, CZ_JSON, 11);
	pair_policy(&p, FERRY_COMPRESS_ON, NULL, NULL);
	struct ferry_stats b = cz_stats(p.cli), rb = cz_stats(p.srv);
	move(&p, K_WRITE, src, len, 0);
	struct ferry_stats a = cz_stats(p.cli), ra = cz_stats(p.srv);
	uint64_t zin = a.compressed_in - b.compressed_in, zout = a.compressed_out - b.compressed_out;

	if (!zstd) {
		assert_int_equal(zin, 0);
		cz_pair_close(&p);
		free(src);
		return;
	}
	assert_int_equal(zin, len);
	assert_true(zout > 0 && zout < len / 3);
	/* On the wire: the compressed bytes and a little framing, both ways. */
	uint64_t wire = a.wire_bytes_sent - b.wire_bytes_sent;
	assert_true(wire >= zout && wire < zout + 1024);
	assert_int_equal(ra.wire_bytes_received - rb.wire_bytes_received, wire);
	assert_int_equal(a.bytes_sent - b.bytes_sent, len); /* payload, before compression */
	char json[8192];
	size_t jl = sizeof(json);
	assert_int_equal(ferry_stats_json(p.cli, json, &jl), 0);
	assert_non_null(strstr(json, "\"compressed_in\":"));
	cz_pair_close(&p);
	free(src);
}

/* Level and threshold: a negative level still round-trips; auto leaves small alone. */
static void level_and_min(void **state)
{
	struct cz_pair p;
	struct cz_side s, c;
	size_t len = 600000;
	uint8_t *src = malloc(len);
	(void)state;

	cz_fill(src, len, CZ_FP16, 13);
	cz_side_init(&s);
	cz_side_init(&c);
	c.cfg.compress = FERRY_COMPRESS_AUTO;
	c.cfg.compress_level = -5;
	c.cfg.compress_min = 500000;
	cz_pair_open(&p, &s, &c);
	move(&p, K_WRITE, src, 400000, 0); /* below compress_min: raw */
	assert_int_equal(cz_stats(p.cli).compressed_in, 0);
	move(&p, K_WRITE, src, len, 0);    /* fp16 activations compress */
	assert_int_equal(cz_stats(p.cli).compressed_in, zstd ? len : 0);
	cz_pair_close(&p);
	free(src);
}

/*
 * Auto on the real loopback: the link drains a full socket faster than zstd
 * compresses, so a large compressible transfer goes raw but for the segment that
 * measures compression and one probe in 32.
 */
static void auto_fast_link(void **state)
{
	struct cz_pair p;
	size_t len = 64u << 20;
	uint8_t *src = malloc(len);
	(void)state;

	ferryi_tcp_zauto_assume_slow = false;
	cz_fill(src, len, CZ_JSON, 21);
	pair_policy(&p, FERRY_COMPRESS_AUTO, NULL, NULL);
	for (int i = 0; i < 3; i++)
		move(&p, K_WRITE, src, len, 0);
	uint64_t zin = cz_stats(p.cli).compressed_in;
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(p.cep);
	print_message("loopback: link %llu MB/s, compression %llu MB/s, %llu of %zu bytes "
		      "compressed\n", (unsigned long long)(te->zwire_bps / 1000000),
		      (unsigned long long)(te->zcomp_bps / 1000000), (unsigned long long)zin,
		      3 * len);
	if (zstd && te->zcomp_bps && te->zwire_bps > te->zcomp_bps * 2)
		assert_true(zin <= 3 * len / 8);
	cz_pair_close(&p);
	free(src);
	ferryi_tcp_zauto_assume_slow = true;
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(send_on),      cmocka_unit_test(send_auto),
		cmocka_unit_test(write_on),     cmocka_unit_test(write_auto),
		cmocka_unit_test(read_on),      cmocka_unit_test(read_auto),
		cmocka_unit_test(policy_off),   cmocka_unit_test(op_flags),
		cmocka_unit_test(rendezvous_decider),
		cmocka_unit_test(peer_without_zstd),
		cmocka_unit_test(stats),        cmocka_unit_test(level_and_min),
		cmocka_unit_test(auto_fast_link),
	};

	zstd = ferryi_compress_built();
	ferryi_tcp_zauto_assume_slow = true; /* auto judges the data, not the link */
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests_name("compress.loop", tests, NULL, NULL);
}
