/*
 * test_zerocopy.c - MSG_ZEROCOPY sends on the TCP provider.
 *
 * The property: an operation completes only when the kernel has let go of the
 * buffer's pages, so the user may overwrite the buffer the moment the completion is
 * polled and the peer still receives the old contents. The test sends from a buffer,
 * overwrites it as soon as the send (or write) completes, and checks every byte the
 * receiver got. The receiver is driven slowly (one pass in eight), so data sits in
 * the sender's socket queue, still referencing the user's pages, when a too-early
 * completion would come.
 *
 * On loopback the kernel copies zero-copy sends at delivery and says so
 * (SO_EE_CODE_ZEROCOPY_COPIED), and the provider then stops using zero-copy on that
 * endpoint; the test hook ferryi_tcp_zc_keep_copied keeps it on, so every large send
 * really takes the MSG_ZEROCOPY path. The provider's counters prove it did.
 *
 *   test_zerocopy [CASE]      CTest: compress.zerocopy.CASE
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core_priv.h"
#include "cz_util.h"
#include "tcp_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BIG (4u << 20)
#define ROUNDS 12

static struct ferryi_tcp_inst *tcp_inst(struct ferry_ctx *ctx)
{
	for (int i = 0; i < ctx->nprovs; i++)
		if (ctx->provs[i]->prov->id == FERRYI_PROV_TCP)
			return ferryi_inst_priv(ctx->provs[i]);
	fail();
	return NULL;
}

static void open_zc(struct cz_pair *p, const char *zmin, uint64_t eager)
{
	static char env[64];
	struct cz_side s, c;

	snprintf(env, sizeof(env), "FERRY_ZEROCOPY_MIN=%s", zmin);
	cz_side_init(&s);
	cz_side_init(&c);
	s.cfg.eager_max = c.cfg.eager_max = eager;
	s.env[0] = c.env[0] = env;
	cz_pair_open(p, &s, &c);
}

/* Pattern of round r: every 8-byte word says where it is and which round it is. */
static void pattern(uint8_t *b, size_t len, unsigned r)
{
	for (size_t i = 0; i + 8 <= len; i += 8) {
		uint64_t v = ((uint64_t)r << 48) ^ (i * 0x9E3779B97F4A7C15ull);

		memcpy(b + i, &v, 8);
	}
}

static void check(const uint8_t *got, size_t len, unsigned r, const char *what)
{
	uint8_t *want = malloc(len);

	pattern(want, len, r);
	for (size_t i = 0; i < len; i++) {
		if (got[i] != want[i]) {
			print_error("%s round %u: byte %zu of %zu is 0x%02x, expected 0x%02x (the "
				    "buffer was overwritten before the kernel was done with it)\n",
				    what, r, i, len, got[i], want[i]);
			fail();
		}
	}
	free(want);
}

static void reuse_sends(struct cz_pair *p, size_t len)
{
	uint8_t *buf = malloc(len), *dst = malloc(len);
	struct ferry_completion c;

	for (unsigned r = 0; r < ROUNDS; r++) {
		pattern(buf, len, r);
		memset(dst, 0, len);
		assert_int_equal(ferry_recv(p->sep, dst, len, r, ~0ull, NULL, NULL), 0);
		assert_int_equal(ferry_send(p->cep, buf, len, r, NULL, NULL), 0);
		cz_wait_every(p, p->cli, &c, 8); /* a slow receiver */
		assert_int_equal(c.status, 0);
		memset(buf, 0xEE, len); /* reuse at once */
		cz_wait(p, p->srv, &c);
		assert_int_equal(c.status, 0);
		check(dst, len, r, "send");
	}
	free(buf);
	free(dst);
}

static void reuse_send(void **state)
{
	struct cz_pair p;
	(void)state;

	ferryi_tcp_zc_keep_copied = true;
	/* Eager messages of 4 MiB: MSG frames from the user's buffer. */
	open_zc(&p, "64K", 8u << 20);
	reuse_sends(&p, BIG);
	assert_true(tcp_inst(p.cli)->zc_sends >= ROUNDS);
	cz_pair_close(&p);
	/* Rendezvous: the READ_RESP goes from the sender's buffer. */
	open_zc(&p, "64K", 65536);
	reuse_sends(&p, BIG);
	assert_true(tcp_inst(p.cli)->zc_sends >= ROUNDS);
	cz_pair_close(&p);
	ferryi_tcp_zc_keep_copied = false;
}

static void reuse_write(void **state)
{
	struct cz_pair p;
	uint8_t *buf = malloc(BIG), *region = malloc(BIG), blob[FERRY_RKEY_MAX];
	size_t blen = sizeof(blob);
	struct ferry_mr *mr;
	struct ferry_rkey *rk;
	struct ferry_completion c;
	(void)state;

	ferryi_tcp_zc_keep_copied = true;
	open_zc(&p, "64K", 65536);
	assert_int_equal(ferry_mr_reg(p.srv, region, BIG, FERRY_ACCESS_REMOTE_WRITE, &mr), 0);
	assert_int_equal(ferry_mr_pack(mr, blob, &blen), 0);
	assert_int_equal(ferry_rkey_unpack(p.cli, blob, blen, &rk), 0);
	for (unsigned r = 0; r < ROUNDS; r++) {
		pattern(buf, BIG, r);
		assert_int_equal(ferry_write(p.cep, buf, BIG, NULL, rk, 0, NULL, NULL), 0);
		cz_wait_every(&p, p.cli, &c, 8);
		assert_int_equal(c.status, 0);
		memset(buf, 0xEE, BIG);
		check(region, BIG, r, "write");
	}
	assert_true(tcp_inst(p.cli)->zc_sends >= ROUNDS);
	ferry_rkey_destroy(rk);
	assert_int_equal(ferry_mr_dereg(mr), 0);
	cz_pair_close(&p);
	ferryi_tcp_zc_keep_copied = false;
	free(buf);
	free(region);
}

/*
 * Reads from a user region go out zero-copy from the region; the region stays in use
 * until the kernel is done, and deregistering it right after the read waits for
 * that instead of failing the endpoint.
 */
static void reuse_read(void **state)
{
	struct cz_pair p;
	uint8_t *region = malloc(BIG), *dst = malloc(BIG), blob[FERRY_RKEY_MAX];
	struct ferry_completion c;
	(void)state;

	ferryi_tcp_zc_keep_copied = true;
	open_zc(&p, "64K", 65536);
	for (unsigned r = 0; r < ROUNDS; r++) {
		struct ferry_mr *mr;
		struct ferry_rkey *rk;
		size_t blen = sizeof(blob);

		pattern(region, BIG, r);
		assert_int_equal(ferry_mr_reg(p.srv, region, BIG, FERRY_ACCESS_REMOTE_READ, &mr), 0);
		assert_int_equal(ferry_mr_pack(mr, blob, &blen), 0);
		assert_int_equal(ferry_rkey_unpack(p.cli, blob, blen, &rk), 0);
		assert_int_equal(ferry_read(p.cep, dst, BIG, NULL, rk, 0, NULL, NULL), 0);
		cz_wait(&p, p.cli, &c);
		assert_int_equal(c.status, 0);
		check(dst, BIG, r, "read");
		ferry_rkey_destroy(rk);
		assert_int_equal(ferry_mr_dereg(mr), 0);
		assert_int_equal(ferry_ep_status(p.sep), 0);
	}
	assert_true(tcp_inst(p.srv)->zc_sends >= ROUNDS);
	cz_pair_close(&p);
	ferryi_tcp_zc_keep_copied = false;
	free(region);
	free(dst);
}

/*
 * FERRY_ZEROCOPY_MIN=0: never. And without the test hook, loopback (where the kernel
 * copies anyway) turns zero-copy off after the first notification says so.
 */
static void off(void **state)
{
	struct cz_pair p;
	(void)state;

	open_zc(&p, "0", 8u << 20);
	reuse_sends(&p, BIG);
	assert_int_equal(tcp_inst(p.cli)->zc_sends, 0);
	cz_pair_close(&p);

	open_zc(&p, "64K", 8u << 20);
	reuse_sends(&p, BIG);
	struct ferryi_tcp_inst *ti = tcp_inst(p.cli);
	assert_true(ti->zc_sends >= 1);
	if (ti->zc_copied) /* the kernel copied: the endpoint stopped asking */
		assert_true(ti->zc_sends < ROUNDS);
	cz_pair_close(&p);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(reuse_send),
		cmocka_unit_test(reuse_write),
		cmocka_unit_test(reuse_read),
		cmocka_unit_test(off),
	};

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests_name("compress.zerocopy", tests, NULL, NULL);
}
