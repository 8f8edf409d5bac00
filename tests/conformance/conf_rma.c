/*
 * conf_rma.c - one-sided write/read: bytes verified at several sizes and offsets,
 * bounds (including offsets that overflow), access flags, stale and malformed rkeys.
 *
 * A refusal may come back at once from ferry_write/ferry_read (the core checks the
 * rkey's length and flags before posting; the call then posted nothing) or in the
 * completion (the target refused). rma_expect() accepts either, nothing else; what
 * only the target can know (a stale key) must come in the completion.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RW (FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE)
#define FILL 0x5A

enum rma_kind { RMA_WRITE, RMA_READ };

/* Posts one write/read on the client and returns its final status (immediate refusal
 * or completion). Checks the completion's fields. */
static int rma_do(struct conf *c, enum rma_kind k, void *buf, size_t len,
		  struct ferry_mr *mr, const struct ferry_rkey *rk, uint64_t off, bool *immediate)
{
	struct ferry_completion cmp;
	int rc;

	if (k == RMA_WRITE)
		rc = ferry_write(c->cep, buf, len, mr, rk, off, buf, NULL);
	else
		rc = ferry_read(c->cep, buf, len, mr, rk, off, buf, NULL);
	if (immediate)
		*immediate = rc != 0;
	if (rc != 0)
		return rc;
	conf_wait_ms(&c->w, ferry_ctx_cq(c->w.cli), &cmp, 1, 30000);
	assert_ptr_equal(cmp.user_ctx, buf);
	assert_ptr_equal(cmp.ep, c->cep);
	assert_int_equal(cmp.type, k == RMA_WRITE ? FERRY_OP_WRITE : FERRY_OP_READ);
	if (cmp.status == 0 && cmp.len != len)
		conf_fail("%s of %zu bytes completed with len %llu",
			  k == RMA_WRITE ? "write" : "read", len, (unsigned long long)cmp.len);
	return cmp.status;
}

#define rma_expect(c, k, buf, len, mr, rk, off, want)                                  \
	rma_expect_at(__FILE__, __LINE__, (c), (k), (buf), (len), (mr), (rk), (off), (want))
static void rma_expect_at(const char *file, int line, struct conf *c, enum rma_kind k,
			  void *buf, size_t len, struct ferry_mr *mr,
			  const struct ferry_rkey *rk, uint64_t off, int want)
{
	bool imm;
	int st = rma_do(c, k, buf, len, mr, rk, off, &imm);

	if (st != want)
		conf_fail_at(file, line, "%s of %zu bytes at remote offset %llu (0x%llx): "
			     "expected %s, got %s (%s)",
			     k == RMA_WRITE ? "write" : "read", len, (unsigned long long)off,
			     (unsigned long long)off, conf_err(want), conf_err(st),
			     imm ? "returned by the call" : "in the completion");
}

/* The target's CPU posts nothing: a one-sided op never completes anything there. */
static void no_target_completions(struct conf *c)
{
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.srv), 20);
}

static void test_rma_write_read_sizes(void **state)
{
	struct conf *c = *state;
	enum { REG = (8 << 20) + 4096 };
	/* 256, 257: at and past the inline size verbs asks for (FERRY_VERBS_INLINE) */
	static const size_t sizes[] = { 1, 7, 8, 256, 257, 4096, 65535, 65536, 65537,
					(1 << 20) + 13, 8 << 20 };
	unsigned char *region = conf_alloc(c, REG);
	unsigned char *src = conf_alloc(c, 8 << 20), *dst = conf_alloc(c, (8 << 20) + 64);
	struct ferry_mr *rmr = conf_reg(c, c->w.srv, region, REG, RW);
	struct ferry_mr *smr = conf_reg(c, c->w.cli, src, 8 << 20, FERRY_ACCESS_LOCAL);
	struct ferry_mr *dmr = conf_reg(c, c->w.cli, dst, (8 << 20) + 64, FERRY_ACCESS_LOCAL);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, rmr);
	size_t i, j;
	int n = 0;

	assert_int_equal(ferry_rkey_len(rk), REG);
	assert_ptr_equal(ferry_mr_addr(rmr), region);
	assert_int_equal(ferry_mr_len(rmr), REG);
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t len = sizes[i];
		uint64_t offs[] = { 0, 1, 4093, REG - len };
		for (j = 0; j < 4; j++, n++) {
			uint64_t off = offs[j], seed = 1000 + (uint64_t)n;
			bool use_mr = n % 2 == 0; /* with and without a local region */
			char what[128];

			memset(region, FILL, REG);
			conf_fill(src, len, seed);
			rma_expect(c, RMA_WRITE, src, len, use_mr ? smr : NULL, rk, off, 0);
			snprintf(what, sizeof(what), "target after a %zu-byte write at %llu", len,
				 (unsigned long long)off);
			conf_assert_pattern(region + off, len, seed, what);
			conf_assert_bytes(region, off, FILL, "target before the written range");
			conf_assert_bytes(region + off + len, REG - off - len, FILL,
					  "target after the written range");
			memset(dst, 0xEE, len + 64);
			rma_expect(c, RMA_READ, dst, len, use_mr ? dmr : NULL, rk, off, 0);
			snprintf(what, sizeof(what), "%zu-byte read back at %llu", len,
				 (unsigned long long)off);
			conf_assert_pattern(dst, len, seed, what);
			conf_assert_bytes(dst + len, 64, 0xEE, "local bytes after the read");
		}
	}
	no_target_completions(c);
}

/* The server initiates, the client is the target. */
static void test_rma_reverse(void **state)
{
	struct conf *c = *state;
	enum { REG = 1 << 20 };
	unsigned char *region = conf_alloc(c, REG), *buf = conf_alloc(c, REG);
	struct ferry_mr *rmr = conf_reg(c, c->w.cli, region, REG, RW);
	struct ferry_rkey *rk = conf_rkey(c, c->w.srv, rmr);
	struct ferry_completion cmp;

	conf_fill(buf, REG - 100, 55);
	conf_assert_rc(ferry_write(c->sep, buf, REG - 100, NULL, rk, 100, buf, NULL), 0);
	conf_wait(&c->w, ferry_ctx_cq(c->w.srv), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	conf_assert_pattern(region + 100, REG - 100, 55, "client region written by server");
	conf_assert_bytes(region, 100, 0, "client region before the write");
	memset(buf, 0, REG);
	memset(region, 0, 100);
	conf_fill(region + 100, 1000, 56);
	conf_assert_rc(ferry_read(c->sep, buf, 1000, NULL, rk, 100, buf, NULL), 0);
	conf_wait(&c->w, ferry_ctx_cq(c->w.srv), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	conf_assert_pattern(buf, 1000, 56, "server read of the client region");
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.cli), 20);
}

/*
 * ferry_stats' wire bytes count one-sided data on every provider: a write's as sent
 * by the initiator, a read's as received, and the messages around them (a provider
 * that checks keys first adds a round trip of its own).
 */
static void test_rma_wire_bytes(void **state)
{
	struct conf *c = *state;
	enum { REG = 1 << 20 };
	unsigned char *region = conf_alloc(c, REG), *buf = conf_alloc(c, REG);
	struct ferry_mr *rmr = conf_reg(c, c->w.srv, region, REG, RW);
	struct ferry_mr *lmr = conf_reg(c, c->w.cli, buf, REG, FERRY_ACCESS_LOCAL);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, rmr);
	struct ferry_stats before, mid, after;

	conf_fill(buf, REG, 57);
	conf_assert_rc(ferry_stats_get(c->w.cli, conf_prov_base, &before), 0);
	rma_expect(c, RMA_WRITE, buf, REG, lmr, rk, 0, 0);
	conf_assert_rc(ferry_stats_get(c->w.cli, conf_prov_base, &mid), 0);
	rma_expect(c, RMA_READ, buf, REG, lmr, rk, 0, 0);
	conf_assert_rc(ferry_stats_get(c->w.cli, conf_prov_base, &after), 0);
	print_message("wire bytes: write sent %llu, read received %llu (1 MiB each)\n",
		      (unsigned long long)(mid.wire_bytes_sent - before.wire_bytes_sent),
		      (unsigned long long)(after.wire_bytes_received - mid.wire_bytes_received));
	if (mid.wire_bytes_sent - before.wire_bytes_sent < REG)
		conf_fail("a 1 MiB write counted %llu wire bytes sent",
			  (unsigned long long)(mid.wire_bytes_sent - before.wire_bytes_sent));
	if (after.wire_bytes_received - mid.wire_bytes_received < REG)
		conf_fail("a 1 MiB read counted %llu wire bytes received",
			  (unsigned long long)(after.wire_bytes_received - mid.wire_bytes_received));
	conf_assert_pattern(region, REG, 57, "the target region after the write");
}

/*
 * Many one-sided ops to one peer at once, more pieces than a provider lets into one
 * connection (ofi on tcp holds pieces back per peer): each op completes exactly once,
 * with its own bytes, writes and reads mixed.
 */
static void test_rma_many_in_flight(void **state)
{
	struct conf *c = *state;
	enum { N = 16, SLOT = 2 << 20 };
	unsigned char *region = conf_alloc(c, (size_t)N * SLOT);
	unsigned char *wbuf = conf_alloc(c, (size_t)N * SLOT), *rbuf = conf_alloc(c, (size_t)N * SLOT);
	struct ferry_mr *rmr = conf_reg(c, c->w.srv, region, (size_t)N * SLOT, RW);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, rmr);
	struct ferry_completion cmp[N];
	unsigned seen[2 * N] = { 0 };

	for (int i = 0; i < N; i++)
		conf_fill(wbuf + (size_t)i * SLOT, SLOT, 300 + (uint64_t)i);
	for (int i = 0; i < N; i++)
		conf_assert_rc(ferry_write(c->cep, wbuf + (size_t)i * SLOT, SLOT, NULL, rk,
					   (uint64_t)i * SLOT, &seen[i], NULL), 0);
	conf_wait_ms(&c->w, ferry_ctx_cq(c->w.cli), cmp, N, 60000);
	for (int i = 0; i < N; i++) {
		conf_assert_rc(cmp[i].status, 0);
		(*(unsigned *)cmp[i].user_ctx)++;
	}
	for (int i = 0; i < N; i++) {
		assert_int_equal(seen[i], 1);
		conf_assert_pattern(region + (size_t)i * SLOT, SLOT, 300 + (uint64_t)i,
				    "region slot written");
	}

	/* Reads of the first half while the second half is written again. */
	for (int i = 0; i < N / 2; i++)
		conf_assert_rc(ferry_read(c->cep, rbuf + (size_t)i * SLOT, SLOT, NULL, rk,
					  (uint64_t)i * SLOT, &seen[N + i], NULL), 0);
	for (int i = N / 2; i < N; i++) {
		conf_fill(wbuf + (size_t)i * SLOT, SLOT, 400 + (uint64_t)i);
		conf_assert_rc(ferry_write(c->cep, wbuf + (size_t)i * SLOT, SLOT, NULL, rk,
					   (uint64_t)i * SLOT, &seen[N + i], NULL), 0);
	}
	conf_wait_ms(&c->w, ferry_ctx_cq(c->w.cli), cmp, N, 60000);
	for (int i = 0; i < N; i++) {
		conf_assert_rc(cmp[i].status, 0);
		(*(unsigned *)cmp[i].user_ctx)++;
	}
	for (int i = 0; i < N / 2; i++) {
		assert_int_equal(seen[N + i], 1);
		conf_assert_pattern(rbuf + (size_t)i * SLOT, SLOT, 300 + (uint64_t)i,
				    "slot read back");
	}
	for (int i = N / 2; i < N; i++) {
		assert_int_equal(seen[N + i], 1);
		conf_assert_pattern(region + (size_t)i * SLOT, SLOT, 400 + (uint64_t)i,
				    "region slot written again");
	}
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.cli), 20);
}

static void test_rma_bounds(void **state)
{
	struct conf *c = *state;
	enum { REG = 64 << 10 };
	unsigned char *region = conf_alloc(c, REG), *buf = conf_alloc(c, REG + 64);
	struct ferry_mr *rmr = conf_reg(c, c->w.srv, region, REG, RW);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, rmr);
	const struct {
		uint64_t off;
		size_t len;
	} bad[] = {
		{ REG, 1 },
		{ REG - 1, 2 },
		{ REG - 8, 9 },
		{ 0, REG + 1 },
		{ REG + 4096, 8 },
		{ 1ull << 32, 8 },
		{ 1ull << 63, 8 },
		{ UINT64_MAX, 1 },
		{ UINT64_MAX - 7, 16 },  /* offset + len wraps to 8    */
		{ UINT64_MAX - 4, 16 },  /* wraps to 11, inside the region */
		{ (uint64_t)0 - REG, REG }, /* wraps to exactly 0         */
	};
	size_t i;

	memset(region, FILL, REG);
	conf_fill(buf, REG + 64, 3);
	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		rma_expect(c, RMA_WRITE, buf, bad[i].len, NULL, rk, bad[i].off, FERRY_ERANGE);
		conf_assert_bytes(region, REG, FILL, "region after a refused write");
		memset(buf, 0xEE, REG + 64);
		rma_expect(c, RMA_READ, buf, bad[i].len, NULL, rk, bad[i].off, FERRY_ERANGE);
		conf_assert_bytes(buf, REG + 64, 0xEE, "local buffer after a refused read");
		conf_fill(buf, REG + 64, 3);
	}
	/* The edges are fine. */
	rma_expect(c, RMA_WRITE, buf, 1, NULL, rk, REG - 1, 0);
	rma_expect(c, RMA_WRITE, buf, REG, NULL, rk, 0, 0);
	rma_expect(c, RMA_READ, buf, 1, NULL, rk, REG - 1, 0);
	assert_int_equal(ferry_ep_status(c->cep), 0);
	assert_int_equal(ferry_ep_status(c->sep), 0);
	no_target_completions(c);
}

/* Access flags are enforced for each direction. */
static void access_case(struct conf *c, unsigned access)
{
	enum { REG = 8192 };
	unsigned char *region = conf_alloc(c, REG), *buf = conf_alloc(c, REG);
	struct ferry_mr *rmr = conf_reg(c, c->w.srv, region, REG, access);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, rmr);
	int want_w = access & FERRY_ACCESS_REMOTE_WRITE ? 0 : FERRY_EACCES;
	int want_r = access & FERRY_ACCESS_REMOTE_READ ? 0 : FERRY_EACCES;

	conf_fill(region, REG, 21);
	memset(buf, FILL, REG);
	rma_expect(c, RMA_WRITE, buf, 100, NULL, rk, 10, want_w);
	if (want_w)
		conf_assert_pattern(region, REG, 21, "read-only region after a refused write");
	else
		conf_assert_bytes(region + 10, 100, FILL, "region after an allowed write");
	conf_fill(region, REG, 22);
	memset(buf, 0xEE, REG);
	rma_expect(c, RMA_READ, buf, REG, NULL, rk, 0, want_r);
	if (want_r)
		conf_assert_bytes(buf, REG, 0xEE, "local buffer after a refused read");
	else
		conf_assert_pattern(buf, REG, 22, "allowed read");
	assert_int_equal(ferry_ep_status(c->cep), 0);
	no_target_completions(c);
}

static void test_rma_access_read_only(void **state)
{
	access_case(*state, FERRY_ACCESS_REMOTE_READ);
}

static void test_rma_access_write_only(void **state)
{
	access_case(*state, FERRY_ACCESS_REMOTE_WRITE);
}

static void test_rma_access_local_only(void **state)
{
	access_case(*state, FERRY_ACCESS_LOCAL);
}

/* After ferry_mr_dereg the rkey is refused by the target, also when the same memory
 * is registered again (a new generation), and the memory is not touched. */
static void test_rma_stale_rkey(void **state)
{
	struct conf *c = *state;
	enum { REG = 65536 };
	unsigned char *region = conf_alloc(c, REG), *buf = conf_alloc(c, REG);
	struct ferry_mr *mr = conf_reg(c, c->w.srv, region, REG, RW), *mr2;
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, mr), *rk2;
	struct ferry_stats before, after;

	conf_fill(buf, REG, 31);
	rma_expect(c, RMA_WRITE, buf, REG, NULL, rk, 0, 0);
	conf_assert_pattern(region, REG, 31, "write before dereg");
	conf_dereg(c, mr);
	memset(region, FILL, REG);
	conf_assert_rc(ferry_stats_get(c->w.srv, NULL, &before), 0);

	const char *check = getenv("FERRY_OFI_RMA_CHECK");
	if (strcmp(conf_prov, "verbs") == 0 ||
	    (strcmp(conf_prov, "ofi+verbs") == 0 && check && strcmp(check, "0") == 0)) {
		/*
		 * On RDMA the target NIC refuses the key, not its CPU: the op completes
		 * with EBADKEY, and on a reliable connection the refusal also breaks the
		 * queue pair (IB semantics), so the endpoint goes down. The memory is
		 * untouched either way; that is what matters. (ofi+verbs asks the
		 * target's CPU first unless FERRY_OFI_RMA_CHECK=0: refused like tcp,
		 * the endpoint stays up.)
		 */
		rma_expect(c, RMA_WRITE, buf, 64, NULL, rk, 0, FERRY_EBADKEY);
		conf_assert_bytes(region, REG, FILL, "deregistered memory after a stale-key write");
		conf_wait_ep_down(&c->w, c->cep);
		no_target_completions(c);
		return;
	}
	rma_expect(c, RMA_WRITE, buf, 64, NULL, rk, 0, FERRY_EBADKEY);
	memset(buf, 0xEE, REG);
	rma_expect(c, RMA_READ, buf, 64, NULL, rk, 0, FERRY_EBADKEY);
	conf_assert_bytes(buf, 64, 0xEE, "local buffer after a stale-key read");
	conf_assert_bytes(region, REG, FILL, "deregistered memory after stale-key ops");

	/* Same memory, registered again: the old key still does not reach it. */
	mr2 = conf_reg(c, c->w.srv, region, REG, RW);
	conf_fill(buf, REG, 32);
	rma_expect(c, RMA_WRITE, buf, 64, NULL, rk, 0, FERRY_EBADKEY);
	rma_expect(c, RMA_READ, buf, 64, NULL, rk, 0, FERRY_EBADKEY);
	conf_assert_bytes(region, REG, FILL, "re-registered memory after stale-key ops");
	conf_assert_rc(ferry_stats_get(c->w.srv, NULL, &after), 0);
	if (after.rkey_refusals < before.rkey_refusals + 4)
		conf_fail("server stats.rkey_refusals went %llu -> %llu over 4 refusals",
			  (unsigned long long)before.rkey_refusals,
			  (unsigned long long)after.rkey_refusals);

	/* The new key works, and the endpoint survived the refusals. */
	rk2 = conf_rkey(c, c->w.cli, mr2);
	conf_fill(buf, REG, 33);
	rma_expect(c, RMA_WRITE, buf, REG, NULL, rk2, 0, 0);
	conf_assert_pattern(region, REG, 33, "write with the new key");
	assert_int_equal(ferry_ep_status(c->cep), 0);
	no_target_completions(c);
}

/* A local operation already posted on a region finishes normally if the region is
 * deregistered under it (the operation holds the region). */
static void test_rma_dereg_local_in_flight(void **state)
{
	struct conf *c = *state;
	enum { LEN = 8 << 20 };
	unsigned char *region = conf_alloc(c, LEN), *src = conf_alloc(c, LEN);
	struct ferry_mr *rmr = conf_reg(c, c->w.srv, region, LEN, RW);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, rmr);
	struct ferry_mr *smr = conf_reg(c, c->w.cli, src, LEN, FERRY_ACCESS_LOCAL);
	struct ferry_completion cmp;

	conf_fill(src, LEN, 41);
	conf_assert_rc(ferry_write(c->cep, src, LEN, smr, rk, 0, src, NULL), 0);
	conf_dereg(c, smr);
	conf_wait(&c->w, ferry_ctx_cq(c->w.cli), &cmp, 1);
	conf_assert_rc(cmp.status, 0);
	conf_assert_pattern(region, LEN, 41, "write whose local region was deregistered");
}

static void test_rma_rkey_malformed(void **state)
{
	struct conf *c = *state;
	enum { REG = 4096, SLACK = 4096 };
	unsigned char *mem = conf_alloc(c, REG + SLACK), *buf = conf_alloc(c, 64);
	struct ferry_mr *mr = conf_reg(c, c->w.srv, mem, REG, RW);
	unsigned char blob[FERRY_RKEY_MAX + 64], mut[FERRY_RKEY_MAX + 64];
	size_t len = FERRY_RKEY_MAX, i, accepted = 0;
	struct ferry_rkey *rk = NULL;
	uint64_t rnd = 99;
	int rc;

	conf_assert_rc(ferry_mr_pack(mr, blob, &len), 0);
	memset(mem, FILL, REG + SLACK);

	/* Every truncation. */
	rc = ferry_rkey_unpack(c->w.cli, blob, 0, &rk);
	if (rc != FERRY_EPROTO && rc != FERRY_EINVAL)
		conf_fail("ferry_rkey_unpack of 0 bytes: expected EPROTO or EINVAL, got %s",
			  conf_err(rc));
	for (i = 1; i < len; i++) {
		rk = NULL;
		rc = ferry_rkey_unpack(c->w.cli, blob, i, &rk);
		if (rc != FERRY_EPROTO) {
			ferry_rkey_destroy(rk);
			conf_fail("ferry_rkey_unpack of the first %zu of %zu bytes: expected "
				  "EPROTO, got %s", i, len, conf_err(rc));
		}
	}
	/* Trailing bytes. */
	memcpy(mut, blob, len);
	mut[len] = 0;
	rk = NULL;
	rc = ferry_rkey_unpack(c->w.cli, mut, len + 1, &rk);
	if (rc != FERRY_EPROTO) {
		ferry_rkey_destroy(rk);
		conf_fail("ferry_rkey_unpack of a %zu-byte blob plus one byte: expected "
			  "EPROTO, got %s", len, conf_err(rc));
	}
	/* Garbage. */
	for (i = 0; i < 3; i++) {
		size_t n = i == 2 ? sizeof(mut) : 64, k;
		for (k = 0; k < n; k++) {
			rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
			mut[k] = i == 0 ? 0 : i == 1 ? (unsigned char)rnd : 0xFF;
		}
		rk = NULL;
		rc = ferry_rkey_unpack(c->w.cli, mut, n, &rk);
		if (rc != FERRY_EPROTO) {
			ferry_rkey_destroy(rk);
			conf_fail("ferry_rkey_unpack of %zu garbage bytes (kind %zu): expected "
				  "EPROTO, got %s", n, i, conf_err(rc));
		}
	}
	/*
	 * Every single-byte corruption: refused, or accepted and then harmless (key
	 * bytes are opaque). An accepted blob that claims a longer region must still
	 * not reach past the real one: the target checks its own registry.
	 */
	for (i = 0; i < len; i++) {
		memcpy(mut, blob, len);
		mut[i] ^= 0xFF;
		rk = NULL;
		rc = ferry_rkey_unpack(c->w.cli, mut, len, &rk);
		if (rc == FERRY_EPROTO)
			continue;
		if (rc != 0)
			conf_fail("ferry_rkey_unpack with byte %zu flipped: expected 0 or "
				  "EPROTO, got %s", i, conf_err(rc));
		accepted++;
		if (ferry_rkey_len(rk) > REG) {
			int st;
			memset(buf, 0x11, 64);
			rc = ferry_write(c->cep, buf, 64, NULL, rk, REG, buf, NULL);
			if (rc == 0) {
				struct ferry_completion cmp;
				conf_wait(&c->w, ferry_ctx_cq(c->w.cli), &cmp, 1);
				st = cmp.status;
			} else {
				st = rc;
			}
			if (st == 0)
				conf_fail("a write past the real region with a blob whose byte "
					  "%zu was flipped succeeded", i);
		}
		ferry_rkey_destroy(rk);
	}
	print_message("%zu of %zu single-byte corruptions were accepted by unpack\n",
		      accepted, len);
	conf_assert_bytes(mem, REG + SLACK, FILL, "region and memory after it");
	assert_int_equal(ferry_ep_status(c->cep), 0);
}

/* A key from another peer (here: a region of the initiator's own context) is unknown
 * to the target: refused, nothing touched. */
static void test_rma_rkey_other_peer(void **state)
{
	struct conf *c = *state;
	enum { REG = 4096 };
	unsigned char *mine = conf_alloc(c, REG), *theirs = conf_alloc(c, REG);
	unsigned char *buf = conf_alloc(c, REG);
	struct ferry_mr *own = conf_reg(c, c->w.cli, mine, REG, RW);
	struct ferry_mr *srv = conf_reg(c, c->w.srv, theirs, REG, RW);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, own);

	(void)srv;
	memset(mine, FILL, REG);
	memset(theirs, FILL, REG);
	conf_fill(buf, REG, 71);
	rma_expect(c, RMA_WRITE, buf, 64, NULL, rk, 0, FERRY_EBADKEY);
	rma_expect(c, RMA_READ, buf, 64, NULL, rk, 0, FERRY_EBADKEY);
	conf_assert_bytes(mine, REG, FILL, "initiator's own region");
	conf_assert_bytes(theirs, REG, FILL, "target's region");
	assert_int_equal(ferry_ep_status(c->cep), 0);
}

/* A local region that does not contain the buffer is a caller error, refused at once
 * (the header names no code: EINVAL, or ERANGE as in "outside the region"). */
#define assert_refused(expr)                                                           \
	do {                                                                         \
		int rc_ = (expr);                                                    \
		if (rc_ != FERRY_EINVAL && rc_ != FERRY_ERANGE)                      \
			conf_fail("%s: expected EINVAL or ERANGE, got %s", #expr,     \
				  conf_err(rc_));                                    \
	} while (0)

static void test_rma_local_mr_mismatch(void **state)
{
	struct conf *c = *state;
	unsigned char *region = conf_alloc(c, 8192), *a = conf_alloc(c, 8192);
	unsigned char *b = conf_alloc(c, 8192);
	struct ferry_mr *rmr = conf_reg(c, c->w.srv, region, 8192, RW);
	struct ferry_mr *amr = conf_reg(c, c->w.cli, a, 4096, FERRY_ACCESS_LOCAL);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, rmr);

	(void)rmr;
	assert_refused(ferry_write(c->cep, b, 64, amr, rk, 0, b, NULL));
	assert_refused(ferry_read(c->cep, b, 64, amr, rk, 0, b, NULL));
	/* Starts inside, ends past it. */
	assert_refused(ferry_write(c->cep, a + 4000, 200, amr, rk, 0, a, NULL));
	conf_assert_rc(ferry_write(c->cep, b, 64, NULL, NULL, 0, b, NULL), FERRY_EINVAL);
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.cli), 20);
}

/*
 * The target deregisters a region while a large write into it is in flight: once
 * ferry_mr_dereg has returned, the memory is never written again. The write
 * completes exactly once (done before the dereg returned, or refused/failed). The
 * initiator keeps driving its own progress meanwhile (a background thread), as a
 * real peer process would; the dereg may wait for the write.
 */
static void test_rma_dereg_under_remote_write(void **state)
{
	struct conf *c = *state;
	enum { LEN = 64 << 20 };
	unsigned char *region = conf_alloc(c, LEN), *src = conf_alloc(c, LEN);
	unsigned char *snap = conf_alloc(c, LEN);
	struct ferry_mr *rmr = conf_reg(c, c->w.srv, region, LEN, RW);
	struct ferry_rkey *rk = conf_rkey(c, c->w.cli, rmr);
	struct ferry_completion cmp;
	struct conf_bg *bg;
	uint64_t t0;

	memset(region, FILL, LEN);
	conf_fill(src, LEN, 81);
	conf_assert_rc(ferry_write(c->cep, src, LEN, NULL, rk, 0, src, NULL), 0);
	conf_drive(&c->w, 1);
	conf_drive(&c->w, 1);
	bg = conf_bg_start(c->w.cli);
	t0 = conf_now_ms();
	conf_dereg(c, rmr);
	conf_bg_stop(bg);
	print_message("ferry_mr_dereg under a remote write returned after %llu ms\n",
		      (unsigned long long)(conf_now_ms() - t0));
	memcpy(snap, region, LEN);
	conf_wait_ms(&c->w, ferry_ctx_cq(c->w.cli), &cmp, 1, 30000);
	print_message("the write completed with %s\n", conf_err(cmp.status));
	if (cmp.status == 0 && memcmp(snap, region, LEN) == 0)
		conf_assert_pattern(region, LEN, 81, "write that finished before dereg");
	if (memcmp(snap, region, LEN) != 0) {
		size_t i;
		for (i = 0; i < LEN && snap[i] == region[i]; i++)
			;
		conf_fail("memory written after ferry_mr_dereg returned (first changed byte "
			  "at offset %zu)", i);
	}
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.cli), 100);
}

static void test_rma_pack_and_reg_args(void **state)
{
	struct conf *c = *state;
	unsigned char *mem = conf_alloc(c, 4096), blob[FERRY_RKEY_MAX];
	struct ferry_mr *mr = conf_reg(c, c->w.srv, mem, 4096, RW), *bad = NULL;
	size_t len = 1, need;

	conf_assert_rc(ferry_mr_pack(mr, blob, &len), FERRY_ENOBUFS);
	need = len;
	assert_true(need > 1 && need <= FERRY_RKEY_MAX);
	len = need;
	conf_assert_rc(ferry_mr_pack(mr, blob, &len), 0);
	assert_int_equal(len, need);

	conf_assert_rc(ferry_mr_reg(c->w.srv, mem, 0, RW, &bad), FERRY_EINVAL);
	assert_null(bad);
	conf_assert_rc(ferry_mr_reg(c->w.srv, NULL, 4096, RW, &bad), FERRY_EINVAL);
	assert_null(bad);
	conf_assert_rc(ferry_mr_dereg(NULL), FERRY_EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_rma_write_read_sizes, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_reverse, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_wire_bytes, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_many_in_flight, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_bounds, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_access_read_only, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_access_write_only, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_access_local_only, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_stale_rkey, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_dereg_local_in_flight, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_rkey_malformed, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_pack_and_reg_args, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_rkey_other_peer, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_local_mr_mismatch, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_rma_dereg_under_remote_write, conf_setup_pair, conf_teardown),
	};

	return CONF_RUN("rma", tests);
}
