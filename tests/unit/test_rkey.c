/*
 * test_rkey.c - remote keys and the target-side checks (lib/rkey.c, lib/mr.c): blob
 * round trip, every malformed variant refused with FERRY_EPROTO by both
 * ferry_rkey_unpack() and ferryi_rkey_decode(), unguessable and distinct keys, stale
 * keys refused after deregistration, and access and bounds refusals both where the
 * initiator checks (at post) and where the target checks (forged blobs).
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
static struct ferry_ctx *solo;

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
	solo = NULL;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	mt_pair_destroy(&P);
	ferry_ctx_destroy(solo);
	solo = NULL;
	return 0;
}

/* Blob layout (lib/rkey.c): header 24 bytes, entries {id, 0, le16 len, key}. */
#define OFF_MAGIC 0
#define OFF_VERSION 4
#define OFF_NENT 5
#define OFF_TOTAL 6
#define OFF_REGION_LEN 8
#define OFF_GEN 16
#define OFF_ACCESS 20
#define HDR 24

static struct ferry_ctx *ctx_with(const char *providers)
{
	struct ferry_config cfg;
	mt_config(&cfg);
	cfg.providers = providers;
	return mt_ctx(&cfg, true);
}

static void set_total(uint8_t *b, size_t len)
{
	ferryi_put_le16(b + OFF_TOTAL, (uint16_t)len);
}

/* Both entry points agree that the blob is malformed. */
static void expect_eproto(struct ferry_ctx *ctx, const uint8_t *blob, size_t len)
{
	struct ferry_rkey hdr, *rk = (struct ferry_rkey *)(uintptr_t)1;
	assert_int_equal(ferryi_rkey_decode(blob, len, &hdr), FERRY_EPROTO);
	assert_int_equal(ferry_rkey_unpack(ctx, blob, len, &rk), FERRY_EPROTO);
	assert_null(rk);
}

/* ------------------------------------------------------------------ round trip */

static void test_pack_unpack_roundtrip(void **state)
{
	(void)state;
	static uint8_t region[4096];
	uint8_t blob[FERRY_RKEY_MAX];
	size_t len = sizeof(blob);
	struct ferry_mr *mr;
	struct ferry_rkey *rk;
	struct ferry_rkey hdr;
	size_t klen;

	solo = ctx_with("mock,tcp");
	assert_int_equal(ferry_mr_reg(solo, region, sizeof(region),
				      FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE, &mr), 0);
	assert_ptr_equal(ferry_mr_addr(mr), region);
	assert_int_equal(ferry_mr_len(mr), sizeof(region));
	assert_int_equal(ferry_mr_pack(mr, blob, &len), 0);
	assert_int_equal(len, HDR + 2 * (4 + 8));

	/* Too small: the size needed comes back. */
	uint8_t small[16];
	size_t slen = sizeof(small);
	assert_int_equal(ferry_mr_pack(mr, small, &slen), FERRY_ENOBUFS);
	assert_int_equal(slen, len);
	assert_int_equal(ferry_mr_pack(NULL, blob, &slen), FERRY_EINVAL);

	assert_int_equal(ferryi_rkey_decode(blob, len, &hdr), 0);
	assert_int_equal(hdr.nent, 2);
	assert_true(hdr.region_len == sizeof(region));
	assert_int_equal(hdr.generation, mr->generation);
	assert_int_equal(hdr.access, FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE);

	/* Unpacked by another context, as a peer would. */
	P.a = ctx_with("mock,tcp");
	assert_int_equal(ferry_rkey_unpack(P.a, blob, len, &rk), 0);
	assert_true(ferry_rkey_len(rk) == sizeof(region));
	const uint8_t *k = ferryi_rkey_key(rk, (enum ferryi_provider_id)MOCK_PROV_ID, &klen);
	assert_non_null(k);
	assert_int_equal(klen, 8);
	assert_true(ferryi_get_le64(k) == mr->key);
	k = ferryi_rkey_key(rk, FERRYI_PROV_TCP, &klen);
	assert_non_null(k);
	assert_true(ferryi_get_le64(k) == mr->key);
	assert_null(ferryi_rkey_key(rk, FERRYI_PROV_VERBS, &klen));
	/* The rkey owns a copy: the blob may go away. */
	memset(blob, 0xee, sizeof(blob));
	assert_true(ferryi_get_le64(ferryi_rkey_key(rk, FERRYI_PROV_TCP, &klen)) == mr->key);
	ferry_rkey_destroy(rk);
	ferry_rkey_destroy(NULL);
	assert_true(ferry_rkey_len(NULL) == 0);

	assert_int_equal(ferry_mr_dereg(mr), 0);
	mt_assert_clean(solo);
	mt_assert_clean(P.a);
}

/* ------------------------------------------------------------------ malformed */

static void test_malformed_blobs(void **state)
{
	(void)state;
	static uint8_t region[256];
	uint8_t good[FERRY_RKEY_MAX], b[FERRY_RKEY_MAX + 8];
	size_t len = sizeof(good);

	memset(b, 0, sizeof(b));
	struct ferry_mr *mr;
	struct ferry_rkey hdr, *rk;

	solo = ctx_with("mock,tcp");
	assert_int_equal(ferry_mr_reg(solo, region, sizeof(region), FERRY_ACCESS_REMOTE_READ, &mr), 0);
	assert_int_equal(ferry_mr_pack(mr, good, &len), 0);
	assert_int_equal(len, 48);
	const size_t e0 = HDR, e1 = HDR + 12; /* the two entries */

#define RESET() memcpy(b, good, len)
	/* short */
	RESET();
	for (size_t l = 0; l < len; l++)
		expect_eproto(solo, b, l);
	assert_int_equal(ferryi_rkey_decode(NULL, len, &hdr), FERRY_EPROTO);
	rk = NULL;
	assert_int_equal(ferry_rkey_unpack(solo, NULL, len, &rk), FERRY_EPROTO);
	/* long: a trailing byte, with and without the total length telling */
	RESET();
	b[len] = 0;
	expect_eproto(solo, b, len + 1);
	set_total(b, len + 1);
	expect_eproto(solo, b, len + 1);
	/* longer than any blob may be */
	uint8_t *huge = calloc(1, 4096);
	assert_non_null(huge);
	memcpy(huge, good, len);
	expect_eproto(solo, huge, FERRY_RKEY_MAX + 1);
	expect_eproto(solo, huge, 4096);
	free(huge);
	/* magic, version */
	for (int i = 0; i < 4; i++) {
		RESET();
		b[OFF_MAGIC + i] ^= 0x20;
		expect_eproto(solo, b, len);
	}
	for (int v = 0; v < 256; v++) {
		if (v == 1)
			continue;
		RESET();
		b[OFF_VERSION] = (uint8_t)v;
		expect_eproto(solo, b, len);
	}
	/* total length field disagreeing with the real length */
	RESET();
	set_total(b, len - 1);
	expect_eproto(solo, b, len);
	RESET();
	set_total(b, 0xffff);
	expect_eproto(solo, b, len);
	/* entry counts: none, too many, more than present, fewer than present */
	const uint8_t counts[] = { 0, 3, 8, 9, 255, 1 };
	for (size_t i = 0; i < sizeof(counts); i++) {
		RESET();
		b[OFF_NENT] = counts[i];
		expect_eproto(solo, b, len);
	}
	/* reserved byte, provider id 0 */
	RESET();
	b[e1 + 1] = 1;
	expect_eproto(solo, b, len);
	RESET();
	b[e0] = 0;
	expect_eproto(solo, b, len);
	/* duplicate provider entries */
	RESET();
	b[e1] = b[e0];
	expect_eproto(solo, b, len);
	/* key lengths past the end, and an entry swallowing the next one (overlap) */
	const uint16_t klens[] = { 0xffff, (uint16_t)(len - e0 - 4 + 1), 20, 9 };
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(klens); i++) {
		RESET();
		ferryi_put_le16(b + e0 + 2, klens[i]);
		expect_eproto(solo, b, len);
		RESET();
		ferryi_put_le16(b + e1 + 2, klens[i]);
		expect_eproto(solo, b, len);
	}
	/* an entry header cut short at the end */
	RESET();
	set_total(b, len + 2);
	b[len] = (uint8_t)FERRYI_PROV_VERBS;
	b[len + 1] = 0;
	b[OFF_NENT] = 3;
	expect_eproto(solo, b, len + 2);
	/* unknown access bits */
	const uint32_t bad_access[] = { 1u << 2, 1u << 7, 1u << 31, 0xffffffffu };
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(bad_access); i++) {
		RESET();
		ferryi_put_le32(b + OFF_ACCESS, bad_access[i]);
		expect_eproto(solo, b, len);
	}

	/*
	 * Well-formed blob, but a key of the wrong size for a provider this context has:
	 * the format decodes, the provider's rkey_check refuses it at unpack.
	 */
	RESET();
	ferryi_put_le16(b + e0 + 2, 7);
	memmove(b + e0 + 4 + 7, b + e0 + 4 + 8, len - (e0 + 4 + 8));
	set_total(b, len - 1);
	assert_int_equal(ferryi_rkey_decode(b, len - 1, &hdr), 0);
	rk = NULL;
	assert_int_equal(ferry_rkey_unpack(solo, b, len - 1, &rk), FERRY_EPROTO);
	assert_null(rk);

	/* Keys for a provider we do not have are carried, not refused. */
	RESET();
	b[e1] = 77;
	assert_int_equal(ferryi_rkey_decode(b, len, &hdr), 0);
	assert_int_equal(ferry_rkey_unpack(solo, b, len, &rk), 0);
	ferry_rkey_destroy(rk);

	/* Random damage: never a crash, and the two entry points agree. */
	uint64_t rs = 99;
	for (int i = 0; i < 20000; i++) {
		RESET();
		size_t blen = len;
		int flips = 1 + (int)(mt_rand(&rs) % 3);
		for (int f = 0; f < flips; f++)
			b[mt_rand(&rs) % len] = (uint8_t)mt_rand(&rs);
		if (mt_rand(&rs) % 8 == 0)
			blen = (size_t)(mt_rand(&rs) % (len + 8));
		int d = ferryi_rkey_decode(b, blen, &hdr);
		rk = NULL;
		int u = ferry_rkey_unpack(solo, b, blen, &rk);
		assert_true(d == 0 || d == FERRY_EPROTO);
		if (d < 0)
			assert_int_equal(u, FERRY_EPROTO);
		if (u == 0) {
			assert_int_equal(d, 0);
			ferry_rkey_destroy(rk);
		} else {
			assert_null(rk);
		}
	}
#undef RESET
	assert_int_equal(ferry_mr_dereg(mr), 0);
	mt_assert_clean(solo);
}

/* ------------------------------------------------------------------ keys */

static void test_keys_differ(void **state)
{
	(void)state;
	enum { N = 256 };
	static uint8_t region[N][64];
	static struct ferry_mr *mr[N];
	static uint64_t keys[2 * N];
	uint64_t or_bits = 0, and_bits = ~0ull;
	uint32_t last_gen = 0;

	solo = ctx_with("mock");
	for (int i = 0; i < N; i++) {
		/* Half of them register the same buffer again: still a new key. */
		void *addr = i % 2 ? region[0] : region[i];
		assert_int_equal(ferry_mr_reg(solo, addr, 64, FERRY_ACCESS_REMOTE_READ, &mr[i]), 0);
		keys[i] = mr[i]->key;
		assert_true(keys[i] != 0);
		assert_true(mr[i]->generation > last_gen);
		last_gen = mr[i]->generation;
		or_bits |= keys[i];
		and_bits &= keys[i];
	}
	/* Random 64-bit keys: every bit is sometimes set, sometimes clear. */
	assert_true(or_bits == ~0ull);
	assert_true(and_bits == 0);
	/* Deregister and register again: no key ever comes back. */
	for (int i = 0; i < N; i++) {
		assert_int_equal(ferry_mr_dereg(mr[i]), 0);
		assert_int_equal(ferry_mr_reg(solo, region[i], 64, FERRY_ACCESS_REMOTE_READ, &mr[i]), 0);
		keys[N + i] = mr[i]->key;
		assert_true(mr[i]->generation > last_gen);
		last_gen = mr[i]->generation;
	}
	for (int i = 0; i < 2 * N; i++)
		for (int j = i + 1; j < 2 * N; j++)
			assert_true(keys[i] != keys[j]);
	/* Not addresses either. */
	for (int i = 0; i < N; i++)
		assert_true(keys[N + i] != (uint64_t)(uintptr_t)region[i]);
	for (int i = 0; i < N; i++)
		assert_int_equal(ferry_mr_dereg(mr[i]), 0);
	mt_assert_clean(solo);
}

/* ------------------------------------------------------------------ target checks */

static int remote_get(struct ferry_ep *ep, uint64_t key, uint64_t off, uint64_t len,
		      unsigned access)
{
	struct ferryi_mr_use use;
	void *ptr = NULL;
	ferryi_ctx_lock(ep->ctx);
	int rc = ferryi_mr_remote_get(ep, key, off, len, access, &use, &ptr);
	if (rc == 0)
		ferryi_mr_remote_put(&use);
	ferryi_ctx_unlock(ep->ctx);
	return rc;
}

static struct ferry_rkey *unpack_of(struct ferry_ctx *ctx, struct ferry_mr *mr, uint8_t *blob,
				    size_t *len)
{
	struct ferry_rkey *rk;
	*len = FERRY_RKEY_MAX;
	assert_int_equal(ferry_mr_pack(mr, blob, len), 0);
	assert_int_equal(ferry_rkey_unpack(ctx, blob, *len, &rk), 0);
	return rk;
}

/* Posts one write or read and returns its completion status. */
static int rma(bool write, void *buf, size_t len, const struct ferry_rkey *rk, uint64_t off)
{
	struct ferry_ctx *both[2] = { P.a, P.b };
	struct ferry_completion c;
	int rc = write ? ferry_write(P.ea, buf, len, NULL, rk, off, buf, NULL)
		       : ferry_read(P.ea, buf, len, NULL, rk, off, buf, NULL);
	if (rc < 0)
		return 1000 + rc; /* refused at post: distinguishable from a completion */
	assert_int_equal(mt_poll1(ferry_ctx_cq(P.a), &c, both, 2), 1);
	assert_ptr_equal(c.user_ctx, buf);
	assert_int_equal(c.type, write ? FERRY_OP_WRITE : FERRY_OP_READ);
	return c.status;
}

static void test_stale_key_refused(void **state)
{
	(void)state;
	static uint8_t region[1024], data[64];
	uint8_t blob[FERRY_RKEY_MAX];
	size_t blen;
	struct ferry_mr *mr, *mr2;

	mt_pair_open(&P, NULL, NULL, true);
	mt_pair_connect(&P, 0, &P.ea, &P.eb);
	memset(region, 0, sizeof(region));
	assert_int_equal(ferry_mr_reg(P.b, region, sizeof(region),
				      FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE, &mr), 0);
	uint64_t key = mr->key;
	struct ferry_rkey *rk = unpack_of(P.a, mr, blob, &blen);

	assert_int_equal(remote_get(P.eb, key, 0, 16, FERRY_ACCESS_REMOTE_WRITE), 0);
	memset(data, 0xab, sizeof(data));
	assert_int_equal(rma(true, data, sizeof(data), rk, 10), 0);
	assert_int_equal(region[10], 0xab);
	assert_int_equal(region[9], 0);

	/* Deregistered: refused at once, and the memory is never touched again. */
	assert_int_equal(ferry_mr_dereg(mr), 0);
	uint64_t refusals = mt_stats(P.b).rkey_refusals;
	assert_int_equal(remote_get(P.eb, key, 0, 16, FERRY_ACCESS_REMOTE_WRITE), FERRY_EBADKEY);
	assert_int_equal(remote_get(P.eb, key, 0, 16, FERRY_ACCESS_REMOTE_READ), FERRY_EBADKEY);
	assert_int_equal(mt_stats(P.b).rkey_refusals, refusals + 2);
	memset(data, 0xcd, sizeof(data));
	assert_int_equal(rma(true, data, sizeof(data), rk, 100), FERRY_EBADKEY);
	assert_int_equal(region[100], 0);
	assert_int_equal(rma(false, data, sizeof(data), rk, 0), FERRY_EBADKEY);
	assert_int_equal(data[0], 0xcd);

	/* The same memory registered again has a new key: the old rkey stays refused. */
	assert_int_equal(ferry_mr_reg(P.b, region, sizeof(region),
				      FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE, &mr2), 0);
	assert_true(mr2->key != key);
	assert_int_equal(rma(true, data, sizeof(data), rk, 100), FERRY_EBADKEY);
	assert_int_equal(region[100], 0);
	assert_int_equal(remote_get(P.eb, 0, 0, 1, FERRY_ACCESS_REMOTE_READ), FERRY_EBADKEY);
	assert_int_equal(remote_get(P.eb, key ^ 1, 0, 1, FERRY_ACCESS_REMOTE_READ), FERRY_EBADKEY);
	assert_int_equal(ferry_ep_status(P.ea), 0); /* refusals do not break the connection */
	ferry_rkey_destroy(rk);
	assert_int_equal(ferry_mr_dereg(mr2), 0);
	mt_pair_close(&P);
}

static void test_access_and_bounds(void **state)
{
	(void)state;
	enum { LEN = 4096 };
	static uint8_t r_only[LEN], w_only[LEN], rw[LEN], local[LEN];
	uint8_t blob[FERRY_RKEY_MAX];
	size_t blen;
	struct ferry_mr *mr_r, *mr_w, *mr_rw, *mr_local;
	struct ferry_rkey *rk_r, *rk_w, *rk_rw, *forged;

	mt_pair_open(&P, NULL, NULL, true);
	mt_pair_connect(&P, 0, &P.ea, &P.eb);
	assert_int_equal(ferry_mr_reg(P.b, r_only, LEN, FERRY_ACCESS_REMOTE_READ, &mr_r), 0);
	assert_int_equal(ferry_mr_reg(P.b, w_only, LEN, FERRY_ACCESS_REMOTE_WRITE, &mr_w), 0);
	assert_int_equal(ferry_mr_reg(P.b, rw, LEN,
				      FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE, &mr_rw), 0);
	assert_int_equal(ferry_mr_reg(P.b, local, LEN, 1u << 5, &mr_local), FERRY_EINVAL);
	assert_int_equal(ferry_mr_reg(P.b, local, 0, 0, &mr_local), FERRY_EINVAL);
	assert_int_equal(ferry_mr_reg(P.b, local, LEN, 0, &mr_local), 0);

	/* Target side, directly. */
	struct {
		struct ferry_mr *mr;
		uint64_t off, len;
		unsigned access;
		int rc;
	} cases[] = {
		{ mr_r, 0, 16, FERRY_ACCESS_REMOTE_WRITE, FERRY_EACCES },
		{ mr_w, 0, 16, FERRY_ACCESS_REMOTE_READ, FERRY_EACCES },
		{ mr_local, 0, 16, FERRY_ACCESS_REMOTE_READ, FERRY_EACCES },
		{ mr_local, 0, 16, FERRY_ACCESS_REMOTE_WRITE, FERRY_EACCES },
		{ mr_rw, 0, LEN, FERRY_ACCESS_REMOTE_READ, 0 },
		{ mr_rw, 0, LEN, FERRY_ACCESS_REMOTE_WRITE, 0 },
		{ mr_rw, LEN, 0, FERRY_ACCESS_REMOTE_WRITE, 0 },
		{ mr_rw, LEN - 1, 1, FERRY_ACCESS_REMOTE_WRITE, 0 },
		{ mr_rw, LEN, 1, FERRY_ACCESS_REMOTE_WRITE, FERRY_ERANGE },
		{ mr_rw, LEN + 1, 0, FERRY_ACCESS_REMOTE_WRITE, FERRY_ERANGE },
		{ mr_rw, LEN - 1, 2, FERRY_ACCESS_REMOTE_READ, FERRY_ERANGE },
		{ mr_rw, 0, LEN + 1, FERRY_ACCESS_REMOTE_READ, FERRY_ERANGE },
		{ mr_rw, UINT64_MAX, 1, FERRY_ACCESS_REMOTE_READ, FERRY_ERANGE },
		{ mr_rw, 1, UINT64_MAX, FERRY_ACCESS_REMOTE_READ, FERRY_ERANGE },
		{ mr_rw, UINT64_MAX, UINT64_MAX, FERRY_ACCESS_REMOTE_WRITE, FERRY_ERANGE },
		{ mr_rw, UINT64_MAX - 10, 20, FERRY_ACCESS_REMOTE_WRITE, FERRY_ERANGE },
		{ mr_rw, 16, UINT64_MAX - 8, FERRY_ACCESS_REMOTE_WRITE, FERRY_ERANGE },
		{ mr_rw, UINT64_MAX - LEN + 1, LEN, FERRY_ACCESS_REMOTE_WRITE, FERRY_ERANGE },
	};
	uint64_t refusals = mt_stats(P.b).rkey_refusals, refused = 0;
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(cases); i++) {
		int rc = remote_get(P.eb, cases[i].mr->key, cases[i].off, cases[i].len,
				    cases[i].access);
		if (rc != cases[i].rc)
			print_error("case %zu: got %d\n", i, rc);
		assert_int_equal(rc, cases[i].rc);
		refused += rc != 0;
	}
	assert_int_equal(mt_stats(P.b).rkey_refusals, refusals + refused);

	/* Initiator side: refused at post from what the rkey says; nothing is posted. */
	rk_r = unpack_of(P.a, mr_r, blob, &blen);
	rk_w = unpack_of(P.a, mr_w, blob, &blen);
	rk_rw = unpack_of(P.a, mr_rw, blob, &blen);
	static uint8_t buf[LEN + 16];
	uint64_t posted = mt_stats(P.a).ops_posted;
	assert_int_equal(rma(true, buf, 16, rk_r, 0), 1000 + FERRY_EACCES);
	assert_int_equal(rma(false, buf, 16, rk_w, 0), 1000 + FERRY_EACCES);
	assert_int_equal(rma(true, buf, 16, rk_rw, LEN - 15), 1000 + FERRY_ERANGE);
	assert_int_equal(rma(false, buf, LEN + 1, rk_rw, 0), 1000 + FERRY_ERANGE);
	assert_int_equal(rma(true, buf, 1, rk_rw, UINT64_MAX), 1000 + FERRY_ERANGE);
	assert_int_equal(rma(true, buf, 16, rk_rw, UINT64_MAX - 8), 1000 + FERRY_ERANGE);
	assert_int_equal(ferry_write(P.ea, buf, 16, NULL, NULL, 0, NULL, NULL), FERRY_EINVAL);
	/* A local region that does not contain the buffer. */
	struct ferry_mr *mine;
	static uint8_t mybuf[64];
	assert_int_equal(ferry_mr_reg(P.a, mybuf, 32, 0, &mine), 0);
	assert_int_equal(ferry_write(P.ea, mybuf + 16, 32, mine, rk_rw, 0, NULL, NULL),
			 FERRY_ERANGE);
	assert_int_equal(ferry_write(P.ea, buf, 8, mine, rk_rw, 0, NULL, NULL), FERRY_ERANGE);
	assert_int_equal(mt_stats(P.a).ops_posted, posted);

	/* What is allowed works, bytes checked. */
	mt_fill_pattern(mybuf, 32, 5);
	assert_int_equal(ferry_write(P.ea, mybuf, 32, mine, rk_rw, LEN - 32, mybuf, NULL), 0);
	struct ferry_completion c;
	struct ferry_ctx *both[2] = { P.a, P.b };
	assert_int_equal(mt_poll1(ferry_ctx_cq(P.a), &c, both, 2), 1);
	assert_int_equal(c.status, 0);
	assert_true(c.len == 32);
	assert_true(mt_check_pattern(rw + LEN - 32, 32, 5));
	memset(buf, 0, sizeof(buf));
	assert_int_equal(rma(false, buf, 32, rk_rw, LEN - 32), 0);
	assert_true(mt_check_pattern(buf, 32, 5));
	mt_fill_pattern(r_only, LEN, 6);
	assert_int_equal(rma(false, buf, LEN, rk_r, 0), 0);
	assert_true(mt_check_pattern(buf, LEN, 6));
	assert_int_equal(rma(true, buf, 0, rk_w, LEN), 0); /* empty, at the very end */

	/*
	 * Target side, through forged blobs: the initiator's checks pass, the target's
	 * own registry refuses, and the region is not touched.
	 */
	memset(rw, 0x11, LEN);
	memset(r_only, 0x22, LEN);
	refusals = mt_stats(P.b).rkey_refusals;
	/* claims write access to a read-only region */
	blen = sizeof(blob);
	assert_int_equal(ferry_mr_pack(mr_r, blob, &blen), 0);
	ferryi_put_le32(blob + OFF_ACCESS, FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE);
	assert_int_equal(ferry_rkey_unpack(P.a, blob, blen, &forged), 0);
	memset(buf, 0x33, 64);
	assert_int_equal(rma(true, buf, 64, forged, 0), FERRY_EACCES);
	assert_int_equal(r_only[0], 0x22);
	ferry_rkey_destroy(forged);
	/* claims a region of 2^64-1 bytes */
	blen = sizeof(blob);
	assert_int_equal(ferry_mr_pack(mr_rw, blob, &blen), 0);
	ferryi_put_le64(blob + OFF_REGION_LEN, UINT64_MAX);
	assert_int_equal(ferry_rkey_unpack(P.a, blob, blen, &forged), 0);
	assert_int_equal(rma(true, buf, 64, forged, LEN - 63), FERRY_ERANGE);
	assert_int_equal(rma(true, buf, 10, forged, UINT64_MAX - 100), FERRY_ERANGE);
	assert_int_equal(rma(true, buf, 1, forged, UINT64_MAX - 1), FERRY_ERANGE);
	assert_int_equal(rma(false, buf, 1, forged, LEN), FERRY_ERANGE);
	assert_int_equal(rma(false, buf, LEN + 16, forged, 0), FERRY_ERANGE);
	assert_int_equal(rw[LEN - 1], 0x11);
	ferry_rkey_destroy(forged);
	/* a key nobody handed out */
	blen = sizeof(blob);
	assert_int_equal(ferry_mr_pack(mr_rw, blob, &blen), 0);
	ferryi_put_le64(blob + HDR + 4, ferryi_random64() | 1);
	assert_int_equal(ferry_rkey_unpack(P.a, blob, blen, &forged), 0);
	assert_int_equal(rma(true, buf, 8, forged, 0), FERRY_EBADKEY);
	assert_int_equal(rw[0], 0x11);
	ferry_rkey_destroy(forged);
	assert_int_equal(mt_stats(P.b).rkey_refusals, refusals + 7);
	/* a blob without a key for this endpoint's provider */
	blen = sizeof(blob);
	assert_int_equal(ferry_mr_pack(mr_rw, blob, &blen), 0);
	blob[HDR] = (uint8_t)FERRYI_PROV_TCP;
	assert_int_equal(ferry_rkey_unpack(P.a, blob, blen, &forged), 0);
	assert_int_equal(rma(true, buf, 8, forged, 0), 1000 + FERRY_EBADKEY);
	ferry_rkey_destroy(forged);
	assert_int_equal(ferry_ep_status(P.ea), 0);

	ferry_rkey_destroy(rk_r);
	ferry_rkey_destroy(rk_w);
	ferry_rkey_destroy(rk_rw);
	assert_int_equal(ferry_mr_dereg(mine), 0);
	assert_int_equal(ferry_mr_dereg(mr_r), 0);
	assert_int_equal(ferry_mr_dereg(mr_w), 0);
	assert_int_equal(ferry_mr_dereg(mr_rw), 0);
	assert_int_equal(ferry_mr_dereg(mr_local), 0);
	mt_pair_close(&P);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pack_unpack_roundtrip, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_blobs, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keys_differ, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stale_key_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_access_and_bounds, setup, teardown),
	};
	return cmocka_run_group_tests_name("unit.rkey", tests, group_setup, NULL);
}
