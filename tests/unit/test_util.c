/* test_util.c - hash map, hashes, randomness, lists and little-endian helpers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core.h"

#include <stdlib.h>
#include <string.h>

/* Deterministic test keys (xorshift64*), so a failure reproduces. */
static uint64_t rng_state = UINT64_C(0x9e3779b97f4a7c15);
static uint64_t rng(void)
{
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * UINT64_C(0x2545f4914f6cdd1d);
}

struct item {
	struct ferryi_hnode node;
	int in_map;
};

/* Structural invariants that hold between any two calls. */
static void check_invariants(const struct ferryi_hmap *m)
{
	size_t used = 0;

	if (m->cap == 0) {
		assert_int_equal(m->count, 0);
		return;
	}
	assert_int_equal(m->cap & (m->cap - 1), 0);
	for (size_t i = 0; i < m->cap; i++) {
		if (!m->slots[i])
			continue;
		used++;
		/* every member is reachable: no hole between its home slot and it */
		size_t home = (size_t)ferryi_hash64(m->slots[i]->key) & (m->cap - 1);
		for (size_t j = home; j != i; j = (j + 1) & (m->cap - 1))
			assert_non_null(m->slots[j]);
	}
	assert_int_equal(used, m->count);
	assert_true(m->count * 10 <= m->cap * 7);
}

/* ------------------------------------------------------------------ hashes */

static void test_hashes(void **state)
{
	(void)state;
	/* FNV-1a 64 reference vectors */
	assert_true(ferryi_hash_str("") == UINT64_C(0xcbf29ce484222325));
	assert_true(ferryi_hash_str("a") == UINT64_C(0xaf63dc4c8601ec8c));
	assert_true(ferryi_hash_str("foobar") == UINT64_C(0x85944171f73967e8));
	/* splitmix64 finaliser: a bijection that moves small keys far apart */
	assert_true(ferryi_hash64(0) == 0);
	assert_true(ferryi_hash64(1) != ferryi_hash64(2));
	assert_true((ferryi_hash64(1) ^ ferryi_hash64(2)) >> 32 != 0);
	/* splitmix64(seed 0) first output = finaliser(0x9e3779b97f4a7c15) */
	assert_true(ferryi_hash64(UINT64_C(0x9e3779b97f4a7c15)) == UINT64_C(0xe220a8397b1dcdaf));
}

static void test_random64(void **state)
{
	uint64_t or_bits = 0, and_bits = ~UINT64_C(0), prev = ferryi_random64();
	(void)state;

	for (int i = 0; i < 256; i++) {
		uint64_t v = ferryi_random64();
		assert_true(v != prev);
		or_bits |= v;
		and_bits &= v;
		prev = v;
	}
	/* every bit position is sometimes 1 and sometimes 0 */
	assert_true(or_bits == ~UINT64_C(0));
	assert_true(and_bits == 0);
}

/* ------------------------------------------------------------------ hash map */

static void test_hmap_empty(void **state)
{
	struct ferryi_hmap m;
	struct item it = {.node.key = 5};
	(void)state;

	ferryi_hmap_init(&m);
	assert_null(ferryi_hmap_find(&m, 5));
	ferryi_hmap_remove(&m, &it.node); /* not present: no effect */
	assert_int_equal(m.count, 0);
	ferryi_hmap_fini(&m);
	ferryi_hmap_fini(&m); /* fini leaves an empty, reusable map */
	assert_int_equal(ferryi_hmap_insert(&m, &it.node), 0);
	assert_ptr_equal(ferryi_hmap_find(&m, 5), &it.node);
	ferryi_hmap_fini(&m);
}

static void test_hmap_duplicates(void **state)
{
	struct ferryi_hmap m;
	struct item a = {.node.key = 42}, b = {.node.key = 42};
	(void)state;

	ferryi_hmap_init(&m);
	assert_int_equal(ferryi_hmap_insert(&m, &a.node), 0);
	assert_int_equal(ferryi_hmap_insert(&m, &a.node), FERRY_EEXIST);
	assert_int_equal(ferryi_hmap_insert(&m, &b.node), FERRY_EEXIST);
	assert_int_equal(m.count, 1);
	/* removing another node with the same key leaves the member alone */
	ferryi_hmap_remove(&m, &b.node);
	assert_ptr_equal(ferryi_hmap_find(&m, 42), &a.node);
	ferryi_hmap_remove(&m, &a.node);
	assert_null(ferryi_hmap_find(&m, 42));
	ferryi_hmap_remove(&m, &a.node); /* twice: no effect */
	assert_int_equal(m.count, 0);
	/* keys 0 and UINT64_MAX are ordinary keys */
	struct item z = {.node.key = 0}, x = {.node.key = UINT64_MAX};
	assert_int_equal(ferryi_hmap_insert(&m, &z.node), 0);
	assert_int_equal(ferryi_hmap_insert(&m, &x.node), 0);
	assert_ptr_equal(ferryi_hmap_find(&m, 0), &z.node);
	assert_ptr_equal(ferryi_hmap_find(&m, UINT64_MAX), &x.node);
	ferryi_hmap_fini(&m);
}

#define NITEMS 5000

/* Random inserts, finds and removes checked against a reference array. */
static void test_hmap_random(void **state)
{
	struct ferryi_hmap m;
	struct item *items = calloc(NITEMS, sizeof(*items));
	size_t present = 0;
	(void)state;

	assert_non_null(items);
	ferryi_hmap_init(&m);
	for (size_t i = 0; i < NITEMS; i++) {
		/* half random, half small sequential keys (the worst case without mixing) */
		items[i].node.key = (i & 1) ? rng() : (uint64_t)i;
	}
	for (int round = 0; round < 200000; round++) {
		struct item *it = &items[rng() % NITEMS];
		switch (rng() % 3) {
		case 0:
			if (it->in_map) {
				assert_int_equal(ferryi_hmap_insert(&m, &it->node), FERRY_EEXIST);
			} else {
				assert_int_equal(ferryi_hmap_insert(&m, &it->node), 0);
				it->in_map = 1;
				present++;
			}
			break;
		case 1:
			ferryi_hmap_remove(&m, &it->node);
			if (it->in_map)
				present--;
			it->in_map = 0;
			break;
		default:
			assert_ptr_equal(ferryi_hmap_find(&m, it->node.key),
					 it->in_map ? &it->node : NULL);
			break;
		}
		assert_int_equal(m.count, present);
		if (round % 10000 == 0) {
			check_invariants(&m);
			for (size_t i = 0; i < NITEMS; i++)
				assert_ptr_equal(ferryi_hmap_find(&m, items[i].node.key),
						 items[i].in_map ? &items[i].node : NULL);
		}
	}
	check_invariants(&m);
	/* drain completely, verifying the rest after each removal batch */
	for (size_t i = 0; i < NITEMS; i++) {
		ferryi_hmap_remove(&m, &items[i].node);
		items[i].in_map = 0;
		if (i % 500 == 0) {
			check_invariants(&m);
			for (size_t j = i + 1; j < NITEMS; j++)
				assert_ptr_equal(ferryi_hmap_find(&m, items[j].node.key),
						 items[j].in_map ? &items[j].node : NULL);
		}
	}
	assert_int_equal(m.count, 0);
	ferryi_hmap_fini(&m);
	free(items);
}

/* Growth: the table doubles, stays a power of two and at most 70% full. */
static void test_hmap_growth(void **state)
{
	struct ferryi_hmap m;
	static struct item items[1000];
	size_t last_cap = 0;
	(void)state;

	ferryi_hmap_init(&m);
	for (size_t i = 0; i < 1000; i++) {
		items[i].node.key = i * 7919;
		assert_int_equal(ferryi_hmap_insert(&m, &items[i].node), 0);
		assert_true(m.count * 10 <= m.cap * 7);
		if (m.cap != last_cap) {
			assert_true(last_cap == 0 || m.cap == 2 * last_cap);
			last_cap = m.cap;
		}
	}
	check_invariants(&m);
	assert_int_equal(m.cap, 2048);
	for (size_t i = 0; i < 1000; i++)
		assert_ptr_equal(ferryi_hmap_find(&m, i * 7919), &items[i].node);
	ferryi_hmap_fini(&m);
}

/* Keys whose mixed hash has the given low 16 bits: same home slot at any cap <= 64Ki. */
static size_t keys_with_home(uint64_t low16, uint64_t *out, size_t n, uint64_t start)
{
	size_t got = 0;
	for (uint64_t k = start; got < n; k++)
		if ((ferryi_hash64(k) & 0xffff) == low16)
			out[got++] = k;
	return got;
}

/*
 * Clusters: 12 keys that all hash to the last slot (so the cluster wraps around to
 * slot 0) and 6 that hash to slot 0 and 1 and so sit behind them. Removing members in
 * every position must keep all others findable (the backward shift must neither lose
 * a wrapped member nor move one before its home).
 */
static void test_hmap_collisions(void **state)
{
	uint64_t last[12], first[3], second[3];
	struct item items[18];
	(void)state;

	keys_with_home(0xffff, last, 12, 1);
	keys_with_home(0x0000, first, 3, 1);
	keys_with_home(0x0001, second, 3, 1);
	for (size_t i = 0; i < 12; i++)
		items[i].node.key = last[i];
	for (size_t i = 0; i < 3; i++) {
		items[12 + i].node.key = first[i];
		items[15 + i].node.key = second[i];
	}

	/* several removal orders: front, back, middle, interleaved */
	static const int orders[][18] = {
		{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17},
		{17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0},
		{6, 12, 15, 0, 11, 13, 5, 16, 1, 10, 14, 2, 17, 9, 3, 8, 4, 7},
		{12, 0, 13, 1, 14, 2, 15, 3, 16, 4, 17, 5, 6, 7, 8, 9, 10, 11},
	};
	for (size_t o = 0; o < sizeof(orders) / sizeof(orders[0]); o++) {
		struct ferryi_hmap m;
		ferryi_hmap_init(&m);
		for (size_t i = 0; i < 18; i++) {
			assert_int_equal(ferryi_hmap_insert(&m, &items[i].node), 0);
			items[i].in_map = 1;
		}
		check_invariants(&m);
		for (size_t r = 0; r < 18; r++) {
			struct item *it = &items[orders[o][r]];
			ferryi_hmap_remove(&m, &it->node);
			it->in_map = 0;
			check_invariants(&m);
			for (size_t i = 0; i < 18; i++)
				assert_ptr_equal(ferryi_hmap_find(&m, items[i].node.key),
						 items[i].in_map ? &items[i].node : NULL);
			/* put one back now and then: insert into a just-shifted cluster */
			if (r == 8) {
				assert_int_equal(ferryi_hmap_insert(&m, &it->node), 0);
				assert_ptr_equal(ferryi_hmap_find(&m, it->node.key), &it->node);
				ferryi_hmap_remove(&m, &it->node);
			}
		}
		assert_int_equal(m.count, 0);
		ferryi_hmap_fini(&m);
	}
}

/* ------------------------------------------------------------------ lists */

struct lnode {
	int v;
	struct ferryi_list_node link;
};

static void list_expect(struct ferryi_list *l, const int *want, size_t n)
{
	struct ferryi_list_node *p, *tmp;
	size_t i = 0;

	ferryi_list_foreach_safe(l, p, tmp)
	{
		assert_true(i < n);
		assert_int_equal(ferryi_container_of(p, struct lnode, link)->v, want[i]);
		assert_ptr_equal(p->next->prev, p);
		i++;
	}
	assert_int_equal(i, n);
	assert_int_equal(ferryi_list_empty(l), n == 0);
}

static void test_list(void **state)
{
	struct ferryi_list l;
	struct lnode n[5];
	struct ferryi_list_node *p, *tmp;
	(void)state;

	ferryi_list_init(&l);
	assert_true(ferryi_list_empty(&l));
	assert_null(ferryi_list_first(&l));
	assert_null(ferryi_list_pop_front(&l));
	for (int i = 0; i < 5; i++) {
		n[i].v = i;
		ferryi_node_init(&n[i].link);
		assert_false(ferryi_node_linked(&n[i].link));
	}

	ferryi_list_push_back(&l, &n[1].link);
	ferryi_list_push_back(&l, &n[2].link);
	ferryi_list_push_front(&l, &n[0].link);
	ferryi_list_push_back(&l, &n[3].link);
	ferryi_list_push_back(&l, &n[4].link);
	list_expect(&l, (const int[]){0, 1, 2, 3, 4}, 5);
	assert_true(ferryi_node_linked(&n[2].link));

	ferryi_list_remove(&n[2].link);
	assert_false(ferryi_node_linked(&n[2].link));
	list_expect(&l, (const int[]){0, 1, 3, 4}, 4);

	/* LRU touch: move to the tail */
	ferryi_list_remove(&n[0].link);
	ferryi_list_push_back(&l, &n[0].link);
	list_expect(&l, (const int[]){1, 3, 4, 0}, 4);

	assert_ptr_equal(ferryi_list_pop_front(&l), &n[1].link);
	assert_false(ferryi_node_linked(&n[1].link));
	list_expect(&l, (const int[]){3, 4, 0}, 3);

	/* removal of the current node while iterating */
	ferryi_list_foreach_safe(&l, p, tmp)
	{
		if (ferryi_container_of(p, struct lnode, link)->v != 0)
			ferryi_list_remove(p);
	}
	list_expect(&l, (const int[]){0}, 1);
	ferryi_list_foreach_safe(&l, p, tmp) ferryi_list_remove(p);
	list_expect(&l, NULL, 0);
}

static void test_le(void **state)
{
	uint8_t b[8];
	(void)state;

	ferryi_put_le16(b, 0x1234);
	assert_int_equal(b[0], 0x34);
	assert_int_equal(b[1], 0x12);
	assert_int_equal(ferryi_get_le16(b), 0x1234);
	ferryi_put_le32(b, 0xdeadbeef);
	assert_int_equal(b[0], 0xef);
	assert_int_equal(b[3], 0xde);
	assert_true(ferryi_get_le32(b) == 0xdeadbeef);
	ferryi_put_le64(b, UINT64_C(0x0102030405060708));
	assert_int_equal(b[0], 0x08);
	assert_int_equal(b[7], 0x01);
	assert_true(ferryi_get_le64(b) == UINT64_C(0x0102030405060708));
	ferryi_put_le64(b, UINT64_MAX);
	assert_true(ferryi_get_le64(b) == UINT64_MAX);

	/* Wire fields sit at any offset: unaligned stores and loads (UBSan watches). */
	uint8_t u[16] = {0};
	ferryi_put_le64(u + 3, UINT64_C(0x1122334455667788));
	ferryi_put_le32(u + 11, 0xa1b2c3d4);
	assert_int_equal(u[3], 0x88);
	assert_int_equal(u[10], 0x11);
	assert_int_equal(u[11], 0xd4);
	assert_int_equal(u[2], 0);
	assert_int_equal(u[15], 0);
	assert_true(ferryi_get_le64(u + 3) == UINT64_C(0x1122334455667788));
	assert_true(ferryi_get_le32(u + 11) == 0xa1b2c3d4);
	assert_int_equal(ferryi_get_le16(u + 9), 0x1122);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_hashes),
		cmocka_unit_test(test_random64),
		cmocka_unit_test(test_hmap_empty),
		cmocka_unit_test(test_hmap_duplicates),
		cmocka_unit_test(test_hmap_random),
		cmocka_unit_test(test_hmap_growth),
		cmocka_unit_test(test_hmap_collisions),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_le),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
