/*
 * conf_regcache.c - the registration cache against memory that changes under it.
 *
 * The core caches the registrations it makes for rendezvous buffers and unregistered
 * local buffers of one-sided ops. A cached registration pins the pages it was made
 * for: when the application unmaps the memory and maps new memory at the same address
 * (or discards it with madvise), a stale entry would make an RDMA NIC move the old
 * pages' bytes. Each test here transfers from (or into) a buffer, replaces the memory
 * behind that address, transfers again, and checks the bytes are the new ones. On TCP
 * this checks the bookkeeping (invalidation counted, offsets right); on verbs a stale
 * entry really delivers old bytes.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <string.h>
#include <sys/mman.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

#define LEN (1u << 20) /* far above every eager limit: rendezvous */

static struct ferry_stats stats(struct ferry_ctx *ctx)
{
	struct ferry_stats st;
	conf_assert_rc(ferry_stats_get(ctx, NULL, &st), 0);
	return st;
}

static void *map_at(void *want, size_t len)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | (want ? MAP_FIXED_NOREPLACE : 0);
	void *p = mmap(want, len, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (p == MAP_FAILED)
		conf_fail("mmap(%p, %zu) failed", want, len);
	if (want && p != want) {
		munmap(p, len);
		conf_skip("the kernel ignores MAP_FIXED_NOREPLACE: cannot map at %p again", want);
	}
	return p;
}

/* One rendezvous message client -> server, checked on arrival. */
static void send_one(struct conf *c, void *sbuf, void *rbuf, uint64_t seed, const char *what)
{
	struct conf_world *w = &c->w;
	struct ferry_completion cmp;

	memset(rbuf, 0, LEN);
	conf_assert_rc(ferry_recv(c->sep, rbuf, LEN, 7, ~0ull, rbuf, NULL), 0);
	conf_assert_rc(ferry_send(c->cep, sbuf, LEN, 7, sbuf, NULL), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->srv), &cmp, 1, 30000);
	if (cmp.status != 0 || cmp.len != LEN)
		conf_fail("%s: recv completed with %s, %llu bytes", what, conf_err(cmp.status),
			  (unsigned long long)cmp.len);
	conf_wait_ms(w, ferry_ctx_cq(w->cli), &cmp, 1, 30000);
	if (cmp.status != 0)
		conf_fail("%s: send completed with %s", what, conf_err(cmp.status));
	conf_assert_pattern(rbuf, LEN, seed, what);
}

/* Asserts ctx's cache saw at least one more invalidation than before (if it runs). */
static void assert_invalidated(struct ferry_ctx *ctx, const struct ferry_stats *before,
			       const char *who)
{
	struct ferry_stats st = stats(ctx);
	if (st.reg_cache_state != 1) {
		print_message("registration cache of the %s is not running (state %llu): "
			      "data checked only\n", who, (unsigned long long)st.reg_cache_state);
		return;
	}
	if (st.reg_cache_invalidations <= before->reg_cache_invalidations)
		conf_fail("%s: no invalidation counted (%llu before, %llu after)", who,
			  (unsigned long long)before->reg_cache_invalidations,
			  (unsigned long long)st.reg_cache_invalidations);
}

/* The staleness scenario: send, munmap, map new memory at the same address, send. */
static void test_regcache_send_after_remap(void **state)
{
	struct conf *c = *state;
	void *rbuf = conf_alloc(c, LEN);
	void *sbuf = map_at(NULL, LEN);

	conf_fill(sbuf, LEN, 101);
	send_one(c, sbuf, rbuf, 101, "first send");
	struct ferry_stats before = stats(c->w.cli);
	munmap(sbuf, LEN);
	void *again = map_at(sbuf, LEN);
	conf_fill(again, LEN, 202);
	send_one(c, again, rbuf, 202, "send from new memory at the same address");
	assert_invalidated(c->w.cli, &before, "sender");
	munmap(again, LEN);
	conf_free(c, rbuf);
}

/* The same with madvise(MADV_DONTNEED): same mapping, new pages. */
static void test_regcache_send_after_dontneed(void **state)
{
	struct conf *c = *state;
	void *rbuf = conf_alloc(c, LEN);
	void *sbuf = map_at(NULL, LEN);

	conf_fill(sbuf, LEN, 303);
	send_one(c, sbuf, rbuf, 303, "first send");
	struct ferry_stats before = stats(c->w.cli);
	assert_int_equal(madvise(sbuf, LEN, MADV_DONTNEED), 0);
	conf_fill(sbuf, LEN, 404);
	send_one(c, sbuf, rbuf, 404, "send after MADV_DONTNEED");
	assert_invalidated(c->w.cli, &before, "sender");
	munmap(sbuf, LEN);
	conf_free(c, rbuf);
}

/* The receiving side: new memory behind the receive buffer must get the bytes. */
static void test_regcache_recv_after_remap(void **state)
{
	struct conf *c = *state;
	void *sbuf = conf_alloc(c, LEN);
	void *rbuf = map_at(NULL, LEN);

	conf_fill(sbuf, LEN, 505);
	struct ferry_stats first = stats(c->w.srv);
	send_one(c, sbuf, rbuf, 505, "first receive");
	struct ferry_stats before = stats(c->w.srv);
	munmap(rbuf, LEN);
	void *again = map_at(rbuf, LEN);
	conf_fill(sbuf, LEN, 606);
	send_one(c, sbuf, again, 606, "receive into new memory at the same address");
	/* Only providers that register local buffers (RDMA) cache the receive side. */
	if (before.reg_cache_misses > first.reg_cache_misses)
		assert_invalidated(c->w.srv, &before, "receiver");
	munmap(again, LEN);
	conf_free(c, sbuf);
}

/* A buffer sent twice unchanged is found in the cache the second time. */
static void test_regcache_hit(void **state)
{
	struct conf *c = *state;
	void *rbuf = conf_alloc(c, LEN);
	char *sbuf = conf_alloc(c, LEN + 8192);

	conf_fill(sbuf, LEN, 707);
	send_one(c, sbuf, rbuf, 707, "first send");
	struct ferry_stats before = stats(c->w.cli);
	send_one(c, sbuf, rbuf, 707, "second send");
	/* Another buffer inside the same pages, at an offset into the cached region. */
	conf_fill(sbuf + 100, LEN, 708);
	send_one(c, sbuf + 100, rbuf, 708, "send at an offset");
	struct ferry_stats st = stats(c->w.cli);
	if (st.reg_cache_state == 1 && st.reg_cache_hits < before.reg_cache_hits + 1)
		conf_fail("no cache hit: hits %llu -> %llu",
			  (unsigned long long)before.reg_cache_hits,
			  (unsigned long long)st.reg_cache_hits);
	conf_free(c, sbuf);
	conf_free(c, rbuf);
}

/* One-sided write from an unregistered local buffer whose memory is replaced. */
static void test_regcache_write_after_remap(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	struct ferry_completion cmp;
	void *dst = conf_alloc(c, LEN);
	struct ferry_mr *mr = conf_reg(c, w->srv, dst, LEN, FERRY_ACCESS_REMOTE_WRITE);
	struct ferry_rkey *rk = conf_rkey(c, w->cli, mr);
	void *src = map_at(NULL, LEN);

	conf_fill(src, LEN, 808);
	struct ferry_stats first = stats(w->cli);
	conf_assert_rc(ferry_write(c->cep, src, LEN, NULL, rk, 0, src, NULL), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->cli), &cmp, 1, 30000);
	conf_assert_rc(cmp.status, 0);
	conf_assert_pattern(dst, LEN, 808, "first write");
	struct ferry_stats before = stats(w->cli);
	munmap(src, LEN);
	void *again = map_at(src, LEN);
	conf_fill(again, LEN, 909);
	conf_assert_rc(ferry_write(c->cep, again, LEN, NULL, rk, 0, again, NULL), 0);
	conf_wait_ms(w, ferry_ctx_cq(w->cli), &cmp, 1, 30000);
	conf_assert_rc(cmp.status, 0);
	conf_assert_pattern(dst, LEN, 909, "write from new memory at the same address");
	/* Only providers that register local buffers (RDMA) use the cache here. */
	if (before.reg_cache_misses > first.reg_cache_misses)
		assert_invalidated(w->cli, &before, "writer");
	munmap(again, LEN);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_regcache_send_after_remap, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_regcache_send_after_dontneed, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_regcache_recv_after_remap, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_regcache_hit, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_regcache_write_after_remap, conf_setup_pair, conf_teardown),
	};

	return CONF_RUN("regcache", tests);
}
