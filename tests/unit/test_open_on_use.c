/*
 * test_open_on_use.c - providers that open at their first use (provider.h,
 * open_on_use; lib/context.c): a second test provider, "late", runs the mock's
 * operations with open_on_use set, a private part in every region, and knobs that make
 * its opening or a registration fail. Checked: nothing is opened with the context; an
 * rkey packed for the user or a URI naming it opens it, once; the regions registered
 * before are registered with it then (and written over it); a failed opening or a
 * failed registration leaves it closed for good and everything else working; a peer's
 * key for it is checked before it opens; alone, it opens with the context.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mock_provider.h"

#include <stdlib.h>
#include <string.h>

#define LATE_PROV_ID 201
#define LATE_MARK 0x6c617465u /* written into the region's part by late's mr_reg */

struct late_mr {
	uint32_t mark;
	const struct ferry_mr *mr;
};

static struct {
	int inits, finis, regs, deregs;
	int fail_init;     /* inst_init returns this (0: succeeds)          */
	int fail_reg_at;   /* the n-th mr_reg (1-based) fails; 0: none does */
} late;

static struct ferryi_provider late_provider;

static int late_scheme_match(const char *scheme)
{
	return scheme && strcmp(scheme, "late") == 0;
}

static int late_inst_init(struct ferryi_prov_inst *pi)
{
	late.inits++;
	if (late.fail_init)
		return late.fail_init;
	return mock_provider.inst_init(pi);
}

static void late_inst_fini(struct ferryi_prov_inst *pi)
{
	late.finis++;
	mock_provider.inst_fini(pi);
}

static int late_mr_reg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	struct late_mr *lm = ferryi_mr_priv(mr, pi);
	if (++late.regs == late.fail_reg_at)
		return FERRY_ENOMEM;
	assert_int_equal(lm->mark, 0); /* its own zeroed part, shared with nobody */
	lm->mark = LATE_MARK;
	lm->mr = mr;
	return 0;
}

static void late_mr_dereg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	struct late_mr *lm = ferryi_mr_priv(mr, pi);
	assert_int_equal(lm->mark, LATE_MARK);
	assert_ptr_equal(lm->mr, mr);
	lm->mark = 0;
	late.deregs++;
}

static int late_rkey_check(const void *key, size_t len)
{
	(void)key;
	return len == 8 ? 0 : FERRY_EPROTO;
}

static int group_setup(void **state)
{
	(void)state;
	late_provider = mock_provider;
	late_provider.name = "late";
	late_provider.id = (enum ferryi_provider_id)LATE_PROV_ID;
	late_provider.open_on_use = true;
	late_provider.mr_size = sizeof(struct late_mr);
	late_provider.scheme_match = late_scheme_match;
	late_provider.inst_init = late_inst_init;
	late_provider.inst_fini = late_inst_fini;
	late_provider.mr_reg = late_mr_reg;
	late_provider.mr_dereg = late_mr_dereg;
	late_provider.rkey_check = late_rkey_check;
	if (mock_register() < 0)
		return -1;
	return ferryi_provider_register_test(&late_provider);
}

static struct ferry_ctx *ctxs[2];

static int setup(void **state)
{
	(void)state;
	mock_reset();
	memset(&late, 0, sizeof(late));
	ctxs[0] = ctxs[1] = NULL;
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	for (int i = 0; i < 2; i++)
		ferry_ctx_destroy(ctxs[i]);
	return 0;
}

static struct ferry_ctx *ctx_with(int i, const char *providers)
{
	struct ferry_config cfg;
	mt_config(&cfg);
	cfg.providers = providers;
	ctxs[i] = mt_ctx(&cfg, true);
	return ctxs[i];
}

static bool late_open(struct ferry_ctx *ctx)
{
	struct ferry_stats st;
	return ferry_stats_get(ctx, "late", &st) == 0;
}

static uint64_t late_mrs(struct ferry_ctx *ctx)
{
	struct ferry_stats st;
	assert_int_equal(ferry_stats_get(ctx, "late", &st), 0);
	return st.mrs_registered;
}

/* Provider entries in a packed blob (lib/rkey.c: byte 5). */
static int blob_entries(struct ferry_mr *mr)
{
	uint8_t blob[FERRY_RKEY_MAX];
	size_t len = sizeof(blob);
	assert_int_equal(ferry_mr_pack(mr, blob, &len), 0);
	return blob[5];
}

/* ------------------------------------------------------------------ tests */

static void test_pack_opens_and_registers_earlier_regions(void **state)
{
	(void)state;
	static char a[4096], b[4096], c[4096];
	struct ferry_ctx *ctx = ctx_with(0, "mock,late");
	struct ferry_mr *ma, *mb, *mc;

	assert_int_equal(late.inits, 0);
	assert_false(late_open(ctx));
	assert_int_equal(ferry_mr_reg(ctx, a, sizeof(a), FERRY_ACCESS_REMOTE_WRITE, &ma), 0);
	assert_int_equal(ferry_mr_reg(ctx, b, sizeof(b), FERRY_ACCESS_REMOTE_READ, &mb), 0);
	assert_int_equal(ferry_mr_dereg(mb), 0); /* gone before the opening: skipped */
	assert_int_equal(late.regs, 0);

	assert_int_equal(blob_entries(ma), 2); /* mock's key and late's */
	assert_int_equal(late.inits, 1);
	assert_int_equal(late.regs, 1);
	assert_true(late_open(ctx));
	assert_int_equal(late_mrs(ctx), 1);

	/* Open now: a new region is registered with it at once; nothing opens twice. */
	assert_int_equal(ferry_mr_reg(ctx, c, sizeof(c), FERRY_ACCESS_REMOTE_READ, &mc), 0);
	assert_int_equal(late.regs, 2);
	assert_int_equal(blob_entries(mc), 2);
	assert_int_equal(late.inits, 1);
	assert_int_equal(late_mrs(ctx), 2);
	assert_int_equal(ferry_mr_dereg(ma), 0);
	assert_int_equal(ferry_mr_dereg(mc), 0);
	assert_int_equal(late.deregs, 2);
	ferry_ctx_destroy(ctx);
	ctxs[0] = NULL;
	assert_int_equal(late.finis, 1);
}

/* A URI opens it on both sides; a region registered before is written over it. */
static void test_uri_opens_and_region_written(void **state)
{
	(void)state;
	static char region[4096];
	char src[4096], addr[FERRYI_URI_MAX];
	size_t addr_len = sizeof(addr);
	uint8_t blob[FERRY_RKEY_MAX];
	size_t blob_len = sizeof(blob);
	struct ferry_ctx *a = ctx_with(0, "mock,late"), *b = ctx_with(1, "mock,late");
	struct ferry_listener *l;
	struct ferry_ep *ea = NULL, *eb = NULL;
	struct ferry_rkey *rk;
	struct ferry_mr *mr;
	struct ferry_completion comp;

	memset(region, 0, sizeof(region));
	assert_int_equal(ferry_mr_reg(b, region, sizeof(region), FERRY_ACCESS_REMOTE_WRITE, &mr),
			 0);
	assert_int_equal(ferry_listen(b, "late://lateb:0", NULL, &l), 0);
	assert_true(late_open(b));
	assert_false(late_open(a));
	assert_int_equal(late_mrs(b), 1);
	assert_int_equal(ferry_listener_addr(l, addr, &addr_len), 0);
	assert_non_null(strstr(addr, "late://"));
	assert_int_equal(ferry_connect(a, addr, NULL, &ea), 0);
	assert_true(late_open(a));
	assert_string_equal(ferry_ep_provider(ea), "late");
	for (int i = 0; i < 100 && !eb; i++) {
		mt_progress(ctxs, 2, 1);
		if (ferry_listener_accept(l, &eb, 0) < 0)
			eb = NULL;
	}
	assert_non_null(eb);

	assert_int_equal(ferry_mr_pack(mr, blob, &blob_len), 0);
	assert_int_equal(ferry_rkey_unpack(a, blob, blob_len, &rk), 0);
	mt_fill_pattern(src, sizeof(src), 7);
	assert_int_equal(ferry_write(ea, src, sizeof(src), NULL, rk, 0, NULL, NULL), 0);
	int n = 0;
	for (int i = 0; i < 200 && n == 0; i++) {
		mt_progress(ctxs, 2, 1);
		n = ferry_cq_poll(ferry_ctx_cq(a), &comp, 1);
	}
	assert_int_equal(n, 1);
	assert_int_equal(comp.status, 0);
	assert_true(mt_check_pattern(region, sizeof(region), 7));
	assert_int_equal(late.inits, 2);

	ferry_rkey_destroy(rk);
	ferry_ep_close(ea);
	ferry_ep_close(eb);
	ferry_listener_close(l);
	mt_progress(ctxs, 2, 10);
	assert_int_equal(ferry_mr_dereg(mr), 0);
}

/* An opening that fails is not retried, and leaves the rest as it was. */
static void test_failed_open_stays_closed(void **state)
{
	(void)state;
	static char a[4096];
	struct ferry_ctx *ctx = ctx_with(0, "mock,late");
	struct ferry_listener *l = NULL;
	struct ferry_ep *ep = NULL;
	struct ferry_mr *ma;

	late.fail_init = FERRY_ENODEV;
	assert_int_equal(ferry_mr_reg(ctx, a, sizeof(a), FERRY_ACCESS_REMOTE_WRITE, &ma), 0);
	assert_int_equal(ferry_listen(ctx, "late://x:0", NULL, &l), FERRY_EPROTONOSUPPORT);
	assert_null(l);
	assert_int_equal(late.inits, 1);
	assert_int_equal(ferry_connect(ctx, "late://x:1", NULL, &ep), FERRY_EPROTONOSUPPORT);
	assert_int_equal(blob_entries(ma), 1); /* mock's only */
	assert_int_equal(late.inits, 1);
	assert_false(late_open(ctx));
	assert_int_equal(late.regs, 0);
	assert_int_equal(late.finis, 0);
	assert_int_equal(ferry_mr_dereg(ma), 0);
}

/* A region that cannot be registered with it at its opening closes it again. */
static void test_failed_registration_closes_again(void **state)
{
	(void)state;
	static char a[4096], b[4096], c[4096];
	struct ferry_ctx *ctx = ctx_with(0, "mock,late");
	struct ferry_mr *ma, *mb, *mc;
	struct ferry_listener *l = NULL;

	assert_int_equal(ferry_mr_reg(ctx, a, sizeof(a), FERRY_ACCESS_REMOTE_WRITE, &ma), 0);
	assert_int_equal(ferry_mr_reg(ctx, b, sizeof(b), FERRY_ACCESS_REMOTE_WRITE, &mb), 0);
	assert_int_equal(ferry_mr_reg(ctx, c, sizeof(c), FERRY_ACCESS_REMOTE_WRITE, &mc), 0);
	late.fail_reg_at = 2;
	assert_int_equal(blob_entries(mb), 1);
	assert_int_equal(late.inits, 1);
	assert_int_equal(late.regs, 2);   /* a, then b failed: c not tried */
	assert_int_equal(late.deregs, 1); /* a given back */
	assert_int_equal(late.finis, 1);
	assert_false(late_open(ctx));
	assert_int_equal(ferry_listen(ctx, "late://y:0", NULL, &l), FERRY_EPROTONOSUPPORT);
	assert_int_equal(late.inits, 1);
	/* The regions are intact for the providers that are open. */
	assert_int_equal(ferry_mr_dereg(ma), 0);
	assert_int_equal(ferry_mr_dereg(mb), 0);
	assert_int_equal(ferry_mr_dereg(mc), 0);
	assert_int_equal(late.deregs, 1);
}

/* A peer's key for a provider not open yet is checked at unpack all the same. */
static void test_unopened_key_checked(void **state)
{
	(void)state;
	static char a[4096];
	struct ferry_ctx *src = ctx_with(0, "mock,late"), *dst = ctx_with(1, "mock,late");
	uint8_t blob[FERRY_RKEY_MAX];
	size_t len = sizeof(blob);
	struct ferry_rkey *rk = NULL;
	struct ferry_mr *mr;

	assert_int_equal(ferry_mr_reg(src, a, sizeof(a), FERRY_ACCESS_REMOTE_WRITE, &mr), 0);
	assert_int_equal(ferry_mr_pack(mr, blob, &len), 0);
	assert_int_equal(blob[5], 2);
	assert_int_equal(ferry_rkey_unpack(dst, blob, len, &rk), 0);
	ferry_rkey_destroy(rk);
	rk = NULL;
	assert_false(late_open(dst));

	/* Shorten late's key (the last entry) by one byte: 7 bytes, which it refuses. */
	size_t last = len - 8 - 4;
	assert_int_equal(blob[last], LATE_PROV_ID);
	ferryi_put_le16(blob + last + 2, 7);
	ferryi_put_le16(blob + 6, (uint16_t)(len - 1));
	assert_int_equal(ferry_rkey_unpack(dst, blob, len - 1, &rk), FERRY_EPROTO);
	assert_null(rk);
	assert_false(late_open(dst));
	assert_int_equal(ferry_mr_dereg(mr), 0);
}

/* With nothing else allowed, it opens with the context. */
static void test_alone_opens_at_once(void **state)
{
	(void)state;
	struct ferry_ctx *ctx = ctx_with(0, "late");
	assert_int_equal(late.inits, 1);
	assert_true(late_open(ctx));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_pack_opens_and_registers_earlier_regions,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_uri_opens_and_region_written, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_failed_open_stays_closed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_registration_closes_again, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_unopened_key_checked, setup, teardown),
		cmocka_unit_test_setup_teardown(test_alone_opens_at_once, setup, teardown),
	};
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
