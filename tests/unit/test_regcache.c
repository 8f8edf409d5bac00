/*
 * test_regcache.c - the registration cache (lib/regcache.c) over the mock provider:
 * page-granular hits and misses, access as part of the match, the entry and byte
 * bounds with LRU eviction, entries in use never evicted, invalidation by munmap,
 * madvise(MADV_DONTNEED) and mremap (counted before the call returns), the rendezvous
 * staleness scenario end to end, a dead region a peer still holds, and the monitor
 * thread racing look-ups (label `threads`, run under ThreadSanitizer in CI).
 *
 * Tests skip when userfaultfd is unavailable here (the cache then turns itself off).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mock_provider.h"
#include "regcache.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif

static size_t PG;

/* ThreadSanitizer cannot start threads in a child forked from a threaded process. */
#if defined(__SANITIZE_THREAD__)
#define FORK_TESTS 0
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define FORK_TESTS 0
#endif
#endif
#ifndef FORK_TESTS
#define FORK_TESTS 1
#endif

static int group_setup(void **state)
{
	(void)state;
	PG = (size_t)sysconf(_SC_PAGESIZE);
	return mock_register();
}

static int setup(void **state)
{
	(void)state;
	mock_reset();
	unsetenv("FERRY_REG_CACHE_BYTES");
	unsetenv("FERRY_REG_CACHE_ENTRIES");
	return 0;
}

static struct ferry_ctx *cache_ctx(void)
{
	struct ferry_ctx *ctx = mt_ctx(NULL, true);
	struct ferry_stats st = mt_stats(ctx);
	if (st.reg_cache_state != FERRYI_RC_ON) {
		ferry_ctx_destroy(ctx);
		print_message("registration cache unavailable here (state %llu)\n",
			      (unsigned long long)st.reg_cache_state);
		skip();
	}
	return ctx;
}

static void *map(size_t len)
{
	void *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	assert_true(p != MAP_FAILED);
	memset(p, 1, len);
	return p;
}

/* get/put under the context lock, as the core calls them. */
static struct ferry_mr *get(struct ferry_ctx *ctx, void *addr, size_t len, unsigned access)
{
	struct ferry_mr *mr = NULL;
	ferryi_ctx_lock(ctx);
	int rc = ferryi_mr_internal_get(ctx, addr, len, access, true, &mr);
	ferryi_ctx_unlock(ctx);
	assert_int_equal(rc, 0);
	return mr;
}

static void put(struct ferry_ctx *ctx, struct ferry_mr *mr)
{
	ferryi_ctx_lock(ctx);
	ferryi_mr_internal_put(mr);
	ferryi_ctx_unlock(ctx);
}

static int mrs_alive(struct ferry_ctx *ctx)
{
	int n = 0;
	ferryi_ctx_lock(ctx);
	for (struct ferryi_list_node *it = ctx->mrs.head.next; it != &ctx->mrs.head; it = it->next)
		n++;
	ferryi_ctx_unlock(ctx);
	return n;
}

static void test_hit_miss_pages(void **state)
{
	(void)state;
	struct ferry_ctx *ctx = cache_ctx();
	char *buf = map(16 * PG);

	struct ferry_mr *a = get(ctx, buf + 100, 200, FERRY_ACCESS_LOCAL);
	assert_ptr_equal(a->addr, buf); /* rounded out to the page */
	assert_int_equal(a->len, PG);
	assert_non_null(a->cache_ent);
	struct ferry_mr *b = get(ctx, buf + 300, PG - 300, FERRY_ACCESS_LOCAL);
	assert_ptr_equal(a, b); /* same page: hit, also while in use */
	struct ferry_mr *c = get(ctx, buf + PG + 10, 100, FERRY_ACCESS_LOCAL);
	assert_ptr_not_equal(c, a);
	assert_ptr_equal(c->addr, buf + PG);
	/* Spanning two pages: neither one-page entry covers it. */
	struct ferry_mr *d = get(ctx, buf + PG - 1, 2, FERRY_ACCESS_LOCAL);
	assert_ptr_equal(d->addr, buf);
	assert_int_equal(d->len, 2 * PG);
	/* Access is part of the match: a local entry cannot serve remote read ... */
	struct ferry_mr *e = get(ctx, buf + 5, 10, FERRY_ACCESS_REMOTE_READ);
	assert_true(e != a && e != d);
	assert_true(e->access & FERRY_ACCESS_REMOTE_READ);
	/* ... but a remote-read entry serves local use (a superset). */
	struct ferry_mr *f = get(ctx, buf + 7, 1, FERRY_ACCESS_LOCAL);
	assert_true(f == a || f == d || f == e);

	struct ferry_stats st = mt_stats(ctx);
	assert_int_equal(st.reg_cache_misses, 4);
	assert_int_equal(st.reg_cache_hits, 2);
	assert_int_equal(st.reg_cache_entries, 4);
	assert_int_equal(st.reg_cache_bytes, 5 * PG);
	/* Registered regions seen by users: none (internal). */
	assert_int_equal(st.mrs_registered, 0);
	put(ctx, a);
	put(ctx, b);
	put(ctx, c);
	put(ctx, d);
	put(ctx, e);
	put(ctx, f);
	ferryi_ctx_lock(ctx);
	assert_int_equal(ferryi_regcache_busy(ctx), 0);
	ferryi_ctx_unlock(ctx);
	/* Unused entries stay cached, and are found again. */
	struct ferry_mr *g = get(ctx, buf + 1, 1, FERRY_ACCESS_LOCAL);
	assert_true(g == a || g == d || g == e);
	put(ctx, g);
	assert_int_equal(mt_stats(ctx).reg_cache_hits, 3);
	ferry_ctx_destroy(ctx);
	munmap(buf, 16 * PG);
}

/* An unused entry's key is out of the key map: peers cannot reach it between ops. */
static void test_unused_key_hidden(void **state)
{
	(void)state;
	struct ferry_ctx *ctx = cache_ctx();
	char *buf = map(PG);
	struct ferry_mr *a = get(ctx, buf, PG, FERRY_ACCESS_REMOTE_READ);
	uint64_t key = a->key;
	ferryi_ctx_lock(ctx);
	assert_non_null(ferryi_hmap_find(&ctx->mr_by_key, key));
	ferryi_ctx_unlock(ctx);
	put(ctx, a);
	ferryi_ctx_lock(ctx);
	assert_null(ferryi_hmap_find(&ctx->mr_by_key, key));
	ferryi_ctx_unlock(ctx);
	a = get(ctx, buf, PG, FERRY_ACCESS_REMOTE_READ);
	assert_int_equal(a->key, key);
	ferryi_ctx_lock(ctx);
	assert_non_null(ferryi_hmap_find(&ctx->mr_by_key, key));
	ferryi_ctx_unlock(ctx);
	put(ctx, a);
	ferry_ctx_destroy(ctx);
	munmap(buf, PG);
}

static void test_eviction_entries(void **state)
{
	(void)state;
	setenv("FERRY_REG_CACHE_ENTRIES", "4", 1);
	struct ferry_ctx *ctx = cache_ctx();
	char *buf = map(8 * PG);

	for (int i = 0; i < 6; i++)
		put(ctx, get(ctx, buf + (size_t)i * PG, PG, FERRY_ACCESS_LOCAL));
	struct ferry_stats st = mt_stats(ctx);
	assert_int_equal(st.reg_cache_entries, 4);
	assert_int_equal(st.reg_cache_evictions, 2);
	assert_int_equal(mrs_alive(ctx), 4);
	/* Least recently used first: pages 0 and 1 went, 2..5 stay. */
	put(ctx, get(ctx, buf + 2 * PG, PG, FERRY_ACCESS_LOCAL));
	assert_int_equal(mt_stats(ctx).reg_cache_hits, 1);
	put(ctx, get(ctx, buf, PG, FERRY_ACCESS_LOCAL)); /* miss: evicts page 3 (LRU) */
	st = mt_stats(ctx);
	assert_int_equal(st.reg_cache_misses, 7);
	assert_int_equal(st.reg_cache_evictions, 3);
	put(ctx, get(ctx, buf + 2 * PG, PG, FERRY_ACCESS_LOCAL)); /* still there */
	assert_int_equal(mt_stats(ctx).reg_cache_hits, 2);
	ferry_ctx_destroy(ctx);
	munmap(buf, 8 * PG);
}

static void test_eviction_bytes(void **state)
{
	(void)state;
	char v[32];
	snprintf(v, sizeof(v), "%zu", 4 * PG);
	setenv("FERRY_REG_CACHE_BYTES", v, 1);
	struct ferry_ctx *ctx = cache_ctx();
	char *buf = map(16 * PG);

	put(ctx, get(ctx, buf, 2 * PG, FERRY_ACCESS_LOCAL));
	put(ctx, get(ctx, buf + 4 * PG, 2 * PG, FERRY_ACCESS_LOCAL));
	struct ferry_stats st = mt_stats(ctx);
	assert_int_equal(st.reg_cache_bytes, 4 * PG);
	put(ctx, get(ctx, buf + 8 * PG, 3 * PG, FERRY_ACCESS_LOCAL)); /* evicts both */
	st = mt_stats(ctx);
	assert_int_equal(st.reg_cache_bytes, 3 * PG);
	assert_int_equal(st.reg_cache_entries, 1);
	assert_int_equal(st.reg_cache_evictions, 2);
	/* Larger than the whole cache: registered for its use only. */
	struct ferry_mr *big = get(ctx, buf, 5 * PG, FERRY_ACCESS_LOCAL);
	assert_null(big->cache_ent);
	assert_int_equal(mt_stats(ctx).reg_cache_uncached, 1);
	put(ctx, big);
	assert_int_equal(mrs_alive(ctx), 1);
	ferry_ctx_destroy(ctx);
	munmap(buf, 16 * PG);
}

static void test_in_use_never_evicted(void **state)
{
	(void)state;
	setenv("FERRY_REG_CACHE_ENTRIES", "2", 1);
	struct ferry_ctx *ctx = cache_ctx();
	char *buf = map(4 * PG);

	struct ferry_mr *a = get(ctx, buf, PG, FERRY_ACCESS_LOCAL);
	struct ferry_mr *b = get(ctx, buf + PG, PG, FERRY_ACCESS_LOCAL);
	struct ferry_mr *c = get(ctx, buf + 2 * PG, PG, FERRY_ACCESS_LOCAL);
	assert_null(c->cache_ent); /* both entries busy: uncached, nothing evicted */
	struct ferry_stats st = mt_stats(ctx);
	assert_int_equal(st.reg_cache_evictions, 0);
	assert_int_equal(st.reg_cache_uncached, 1);
	put(ctx, c);
	put(ctx, a);
	struct ferry_mr *d = get(ctx, buf + 3 * PG, PG, FERRY_ACCESS_LOCAL);
	assert_non_null(d->cache_ent); /* evicted a, the unused one */
	assert_int_equal(mt_stats(ctx).reg_cache_evictions, 1);
	struct ferry_mr *b2 = get(ctx, buf + PG, PG, FERRY_ACCESS_LOCAL);
	assert_ptr_equal(b2, b); /* b, in use, is still there */
	put(ctx, b2);
	put(ctx, b);
	put(ctx, d);
	ferry_ctx_destroy(ctx);
	munmap(buf, 4 * PG);
}

enum inval_kind { BY_MUNMAP, BY_DONTNEED, BY_MREMAP };

static void invalidation(enum inval_kind kind, bool in_use)
{
	struct ferry_ctx *ctx = cache_ctx();
	char *buf = map(4 * PG);
	struct ferry_mr *a = get(ctx, buf + PG, 2 * PG, FERRY_ACCESS_LOCAL);
	if (!in_use)
		put(ctx, a);
	assert_int_equal(mt_stats(ctx).reg_cache_entries, 1);
	void *moved = NULL;
	switch (kind) {
	case BY_MUNMAP:
		munmap(buf, 4 * PG);
		break;
	case BY_DONTNEED:
		assert_int_equal(madvise(buf + 2 * PG, PG, MADV_DONTNEED), 0);
		break;
	case BY_MREMAP:
		/*
		 * Moved for sure: onto a mapping of our own (growing in place moves
		 * nothing). The watched pages are a mapping of their own (mremap works
		 * within one).
		 */
		moved = map(8 * PG);
		assert_ptr_equal(mremap(buf + PG, 2 * PG, 2 * PG, MREMAP_MAYMOVE | MREMAP_FIXED,
					moved), moved);
		break;
	}
	/* Counted before the call returned: the monitor read the event under the lock. */
	struct ferry_stats st = mt_stats(ctx);
	assert_int_equal(st.reg_cache_invalidations, 1);
	assert_int_equal(st.reg_cache_entries, 0);
	assert_int_equal(st.reg_cache_bytes, 0);
	if (in_use) {
		assert_int_equal(mrs_alive(ctx), 1); /* deregistered only once unused */
		put(ctx, a);
	} else {
		ferry_progress(ctx); /* the context deregisters what the monitor dropped */
	}
	assert_int_equal(mrs_alive(ctx), 0);
	if (kind == BY_DONTNEED) {
		/* The same range again: a new entry (a miss), not the stale one. */
		struct ferry_mr *b = get(ctx, buf + PG, 2 * PG, FERRY_ACCESS_LOCAL);
		assert_int_equal(mt_stats(ctx).reg_cache_misses, 2);
		put(ctx, b);
		munmap(buf, 4 * PG);
	} else if (kind == BY_MREMAP) {
		munmap(moved, 8 * PG);
		munmap(buf, 4 * PG);
	}
	ferry_ctx_destroy(ctx);
}

static void test_inval_munmap(void **state)
{
	(void)state;
	invalidation(BY_MUNMAP, false);
}

static void test_inval_munmap_in_use(void **state)
{
	(void)state;
	invalidation(BY_MUNMAP, true);
}

static void test_inval_dontneed(void **state)
{
	(void)state;
	invalidation(BY_DONTNEED, false);
}

static void test_inval_mremap(void **state)
{
	(void)state;
	invalidation(BY_MREMAP, false);
}

/* Unmapping memory next to an entry leaves it alone. */
static void test_inval_neighbour(void **state)
{
	(void)state;
	struct ferry_ctx *ctx = cache_ctx();
	char *buf = map(4 * PG);
	put(ctx, get(ctx, buf + PG, PG, FERRY_ACCESS_LOCAL));
	munmap(buf, PG);
	munmap(buf + 2 * PG, 2 * PG);
	struct ferry_stats st = mt_stats(ctx);
	assert_int_equal(st.reg_cache_invalidations, 0);
	assert_int_equal(st.reg_cache_entries, 1);
	put(ctx, get(ctx, buf + PG, 10, FERRY_ACCESS_LOCAL));
	assert_int_equal(mt_stats(ctx).reg_cache_hits, 1);
	munmap(buf + PG, PG);
	assert_int_equal(mt_stats(ctx).reg_cache_invalidations, 1);
	ferry_ctx_destroy(ctx);
}

/* A connected pair (ea on a, eb on b) whose context a caches; skips otherwise. */
static void cache_pair(struct mt_pair *P)
{
	memset(P, 0, sizeof(*P));
	mt_pair_open(P, NULL, NULL, true);
	if (mt_stats(P->a).reg_cache_state != FERRYI_RC_ON) {
		mt_pair_destroy(P);
		skip();
	}
	mt_pair_connect(P, 0, &P->ea, &P->eb);
}

/*
 * ea's peer holds len bytes of a cached remote-read region over buf, as libfabric's
 * checked reads do (RMA_REQ to RMA_DONE), after the op that used it has ended.
 */
static void peer_hold(struct mt_pair *P, void *buf, size_t len, size_t held,
		      struct ferryi_mr_use *use)
{
	void *ptr = NULL;
	struct ferry_mr *mr = get(P->a, buf, len, FERRY_ACCESS_REMOTE_READ);
	ferryi_ctx_lock(P->a);
	assert_int_equal(ferryi_mr_remote_get(P->ea, mr->key, 0, held,
					      FERRY_ACCESS_REMOTE_READ, use, &ptr), 0);
	ferryi_ctx_unlock(P->a);
	put(P->a, mr);
}

static void peer_release(struct mt_pair *P, struct ferryi_mr_use *use)
{
	ferryi_ctx_lock(P->a);
	ferryi_mr_remote_put(use);
	ferryi_ctx_unlock(P->a);
}

/* The staleness scenario over a rendezvous: new memory at the same address is sent. */
static void test_rendezvous_stale(void **state)
{
	(void)state;
	struct mt_pair P;
	cache_pair(&P);
	struct ferry_ctx *both[2] = { P.a, P.b };
	size_t len = 16 * PG + 123; /* above the mock's eager limit: rendezvous */
	char *rbuf = malloc(len);
	char *sbuf = map(len);
	struct ferry_completion c;

	for (int round = 0; round < 3; round++) {
		mt_fill_pattern(sbuf + 1, len - 1, 10 + (uint64_t)round);
		assert_int_equal(ferry_recv(P.eb, rbuf, len, 1, ~0ull, NULL, NULL), 0);
		assert_int_equal(ferry_send(P.ea, sbuf + 1, len - 1, 1, NULL, NULL), 0);
		assert_int_equal(mt_poll1(ferry_ctx_cq(P.b), &c, both, 2), 1);
		assert_int_equal(c.status, 0);
		assert_int_equal(mt_poll1(ferry_ctx_cq(P.a), &c, both, 2), 1);
		assert_int_equal(c.status, 0);
		assert_true(mt_check_pattern(rbuf, len - 1, 10 + (uint64_t)round));
		if (round == 0) {
			/* The same buffer again: served by the cache (round 1). */
			continue;
		}
		if (round == 1) {
			assert_int_equal(mt_stats(P.a).reg_cache_hits, 1);
			munmap(sbuf, len);
			void *again = mmap(sbuf, len, PROT_READ | PROT_WRITE,
					   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
			assert_ptr_equal(again, sbuf);
			assert_int_equal(mt_stats(P.a).reg_cache_invalidations, 1);
		}
	}
	struct ferry_stats st = mt_stats(P.a);
	assert_int_equal(st.reg_cache_misses, 2); /* the first send and the one after remap */
	assert_int_equal(st.reg_cache_hits, 1);
	assert_int_equal(mock_count(MOCK_CNT_RTS), 3);
	mt_pair_close(&P);
	free(rbuf);
	munmap(sbuf, len);
}

/*
 * A peer still holds a cached region (as libfabric's checked reads do, RMA_REQ to
 * RMA_DONE) when its memory is unmapped; the next look-up, inside a post on that very
 * endpoint, deregisters it and fails the endpoint. The teardown must wait for the end
 * of the call: run from inside the look-up, it completed the half-built send, which
 * the post then discarded again (an op completed twice, the endpoint freed under a
 * queued completion; found with a peer that never sent RMA_DONE, under ASan).
 */
static void test_dead_region_held_by_peer(void **state)
{
	(void)state;
	struct mt_pair P;
	cache_pair(&P);
	struct ferry_ctx *both[2] = { P.a, P.b };
	size_t len = 16 * PG; /* above the mock's eager limit: rendezvous */
	char *held = map(len);
	char *sbuf = map(len);
	struct ferryi_mr_use use;

	peer_hold(&P, held, len, len, &use);
	munmap(held, len);
	assert_int_equal(mt_stats(P.a).reg_cache_invalidations, 1);

	int rc = ferry_send(P.ea, sbuf, len, 1, NULL, NULL);
	assert_true(rc == 0 || rc == FERRY_ENOTCONN);
	struct ferry_completion c[4];
	int n = mt_drain(ferry_ctx_cq(P.a), c, 4, both, 2);
	assert_int_equal(n, rc == 0 ? 1 : 0);
	if (n)
		assert_int_equal(c[0].status, FERRY_EBADKEY);
	struct ferry_stats st = mt_stats(P.a);
	assert_int_equal(st.ops_posted, st.ops_completed);
	assert_int_equal(st.eps_failed, 1);

	peer_release(&P, &use);
	mt_pair_close(&P);
	munmap(sbuf, len);
}

/*
 * The same dead region found by a progress pass (the context deregisters what the
 * monitor dropped): the pass closes the endpoints it failed before it returns, so a
 * thread about to sleep in ferry_cq_wait finds their ops' completions instead of
 * sleeping past them.
 */
static void test_dead_region_closed_in_pass(void **state)
{
	(void)state;
	struct mt_pair P;
	cache_pair(&P);
	struct ferry_ctx *both[2] = { P.a, P.b };
	char *held = map(4 * PG);
	char rbuf[64];
	struct ferryi_mr_use use;

	peer_hold(&P, held, 4 * PG, PG, &use);
	assert_int_equal(ferry_recv(P.ea, rbuf, sizeof(rbuf), 1, ~0ull, NULL, NULL), 0);
	munmap(held, 4 * PG);
	/* Read under the cache's lock: the monitor has dropped the entry (see above). */
	assert_int_equal(mt_stats(P.a).reg_cache_invalidations, 1);

	struct ferry_cq *cq = ferry_ctx_cq(P.a);
	ferryi_ctx_lock(P.a);
	(void)ferryi_progress_hooks_locked(P.a, ferryi_now_ns(P.a));
	bool none_queued = ferryi_list_empty(&P.a->closing);
	uint32_t waiting = ferryi_cq_count(cq);
	ferryi_ctx_unlock(P.a);
	assert_true(none_queued);
	assert_int_equal(waiting, 1);
	struct ferry_completion c;
	assert_int_equal(mt_poll1(cq, &c, both, 2), 1);
	assert_int_equal(c.status, FERRY_EBADKEY);

	peer_release(&P, &use);
	mt_pair_close(&P);
}

/* The monitor thread against look-ups from two threads (ThreadSanitizer). */
struct race_arg {
	struct ferry_ctx *ctx;
	int iters;
};

static void *race_thread(void *p)
{
	struct race_arg *ra = p;
	for (int i = 0; i < ra->iters; i++) {
		size_t len = (size_t)(1 + i % 4) * PG;
		char *b = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
			       -1, 0);
		if (b == MAP_FAILED)
			continue;
		b[0] = 1;
		struct ferry_mr *mr = NULL;
		ferryi_ctx_lock(ra->ctx);
		int rc = ferryi_mr_internal_get(ra->ctx, b, len, FERRY_ACCESS_LOCAL, true, &mr);
		ferryi_ctx_unlock(ra->ctx);
		if (rc == 0) {
			if (i % 3 == 0) {
				munmap(b, len); /* in use: invalidated, deregistered at put */
				b = NULL;
			}
			ferryi_ctx_lock(ra->ctx);
			ferryi_mr_internal_put(mr);
			ferryi_ctx_unlock(ra->ctx);
		}
		if (b)
			munmap(b, len);
		if (i % 8 == 0)
			ferry_progress(ra->ctx);
	}
	return NULL;
}

static void test_monitor_race(void **state)
{
	(void)state;
	setenv("FERRY_REG_CACHE_ENTRIES", "16", 1);
	struct ferry_ctx *c1 = cache_ctx();
	struct ferry_ctx *c2 = mt_ctx(NULL, true);
	struct race_arg a1 = { c1, 400 }, a2 = { c2, 400 }, a3 = { c1, 400 };
	pthread_t t[3];
	assert_int_equal(pthread_create(&t[0], NULL, race_thread, &a1), 0);
	assert_int_equal(pthread_create(&t[1], NULL, race_thread, &a2), 0);
	assert_int_equal(pthread_create(&t[2], NULL, race_thread, &a3), 0);
	for (int i = 0; i < 3; i++)
		pthread_join(t[i], NULL);
	ferry_progress(c1);
	ferry_progress(c2);
	struct ferry_stats s1 = mt_stats(c1), s2 = mt_stats(c2);
	/* Every buffer was unmapped: nothing cached is left valid. */
	assert_int_equal(s1.reg_cache_entries, 0);
	assert_int_equal(s2.reg_cache_entries, 0);
	assert_true(s1.reg_cache_invalidations > 0);
	assert_int_equal(mrs_alive(c1), 0);
	assert_int_equal(mrs_alive(c2), 0);
	ferry_ctx_destroy(c1);
	ferry_ctx_destroy(c2);
}

/*
 * fork(): the child inherits the parent's userfaultfd (bound to the parent's memory)
 * but no monitor thread. A context the child creates gets a monitor of its own and
 * sees its own unmaps; the parent's cache goes on working.
 */
static void test_fork_child(void **state)
{
	(void)state;
	if (!FORK_TESTS)
		skip();
	struct ferry_ctx *parent = cache_ctx();
	char *buf = map(2 * PG);
	put(parent, get(parent, buf, PG, FERRY_ACCESS_LOCAL));
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct ferry_ctx *ctx = mt_ctx(NULL, true);
		struct ferry_mr *mr = NULL;
		int ok = mt_stats(ctx).reg_cache_state == FERRYI_RC_ON;
		ferryi_ctx_lock(ctx);
		ok &= ferryi_mr_internal_get(ctx, buf + PG, 10, 0, true, &mr) == 0 &&
		      mr->cache_ent != NULL;
		ferryi_mr_internal_put(mr);
		ferryi_ctx_unlock(ctx);
		munmap(buf + PG, PG);
		ok &= mt_stats(ctx).reg_cache_invalidations == 1;
		ferry_ctx_destroy(ctx);
		_exit(ok ? 0 : 1);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	/* The parent's entry is untouched by the child's unmap, and still watched. */
	assert_int_equal(mt_stats(parent).reg_cache_invalidations, 0);
	munmap(buf, 2 * PG);
	assert_int_equal(mt_stats(parent).reg_cache_invalidations, 1);
	ferry_ctx_destroy(parent);
}

/*
 * No userfaultfd (a seccomp filter refuses it, as container runtimes do): the cache
 * turns itself off, says so in the stats, and registrations are per operation.
 */
static void test_unavailable(void **state)
{
	(void)state;
	if (!FORK_TESTS)
		skip();
	fflush(NULL);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sock_filter f[] = {
			BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
			BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_userfaultfd, 0, 1),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
			BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		};
		struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };
		if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP,
								     SECCOMP_MODE_FILTER, &prog))
			_exit(77);
		struct ferry_ctx *ctx = mt_ctx(NULL, true);
		int ok = mt_stats(ctx).reg_cache_state == FERRYI_RC_UNAVAILABLE;
		char *buf = map(PG);
		struct ferry_mr *mr = NULL;
		ferryi_ctx_lock(ctx);
		ok &= ferryi_mr_internal_get(ctx, buf, 10, 0, true, &mr) == 0 && !mr->cache_ent;
		ferryi_mr_internal_put(mr);
		ferryi_ctx_unlock(ctx);
		ferry_ctx_destroy(ctx);
		_exit(ok ? 0 : 1);
	}
	int st = 0;
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st));
	if (WEXITSTATUS(st) == 77)
		skip();
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* FERRY_REG_CACHE_BYTES=0: off, every internal registration is per operation. */
static void test_disabled(void **state)
{
	(void)state;
	setenv("FERRY_REG_CACHE_BYTES", "0", 1);
	struct ferry_ctx *ctx = mt_ctx(NULL, true);
	assert_int_equal(mt_stats(ctx).reg_cache_state, FERRYI_RC_OFF);
	char *buf = map(PG);
	struct ferry_mr *a = get(ctx, buf, 10, FERRY_ACCESS_LOCAL);
	assert_null(a->cache_ent);
	assert_ptr_equal(a->addr, buf);
	assert_int_equal(a->len, 10);
	put(ctx, a);
	assert_int_equal(mrs_alive(ctx), 0);
	ferry_ctx_destroy(ctx);
	munmap(buf, PG);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_hit_miss_pages, setup),
		cmocka_unit_test_setup(test_unused_key_hidden, setup),
		cmocka_unit_test_setup(test_eviction_entries, setup),
		cmocka_unit_test_setup(test_eviction_bytes, setup),
		cmocka_unit_test_setup(test_in_use_never_evicted, setup),
		cmocka_unit_test_setup(test_inval_munmap, setup),
		cmocka_unit_test_setup(test_inval_munmap_in_use, setup),
		cmocka_unit_test_setup(test_inval_dontneed, setup),
		cmocka_unit_test_setup(test_inval_mremap, setup),
		cmocka_unit_test_setup(test_inval_neighbour, setup),
		cmocka_unit_test_setup(test_rendezvous_stale, setup),
		cmocka_unit_test_setup(test_dead_region_held_by_peer, setup),
		cmocka_unit_test_setup(test_dead_region_closed_in_pass, setup),
		cmocka_unit_test_setup(test_monitor_race, setup),
		cmocka_unit_test_setup(test_fork_child, setup),
		cmocka_unit_test_setup(test_unavailable, setup),
		cmocka_unit_test_setup(test_disabled, setup),
	};
	return cmocka_run_group_tests(tests, group_setup, NULL);
}
