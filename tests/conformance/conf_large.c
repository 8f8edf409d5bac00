/*
 * conf_large.c - one send and one write above 4 GiB (4.5 GiB each), bytes verified
 * by sampling. Buffers come from mmap; the machine needs about 2 x 4.5 GiB of free
 * memory, else the tests skip with the reason. Labelled `large`, but part of the
 * default run, so it stays at one transfer of each kind.
 *
 * Every 8-byte word of the source encodes its own position, so a sample anywhere
 * catches lost, duplicated or misplaced data; dense windows around 2 GiB, 4 GiB and
 * both ends catch the 32-bit boundary bugs this test exists for.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>

#define LARGE ((size_t)9 << 29) /* 4.5 GiB */
#define PAGE 4096
#define WINDOW ((size_t)1 << 20)
#define WAIT_MS 240000

static inline uint64_t word_at(uint64_t i, uint64_t seed)
{
	return (i + 1) * 0x9E3779B97F4A7C15ull ^ seed;
}

static void fill_words(unsigned char *p, size_t len, uint64_t seed)
{
	uint64_t *w = (uint64_t *)(void *)p;
	size_t i, n = len / 8;

	for (i = 0; i < n; i++)
		w[i] = word_at(i, seed);
}

/* Checks words [from, to) of a buffer holding fill_words(seed) shifted by base. */
static void check_range(const unsigned char *p, size_t from, size_t to, uint64_t seed,
			const char *what)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	size_t i;

	for (i = from / 8; i < to / 8; i++)
		if (w[i] != word_at(i, seed))
			conf_fail("%s: word at byte offset %zu (0x%zx) is 0x%016llx, expected "
				  "0x%016llx", what, i * 8, i * 8, (unsigned long long)w[i],
				  (unsigned long long)word_at(i, seed));
}

static void check_sampled(const unsigned char *p, size_t len, uint64_t seed,
			  const char *what)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	size_t pg, marks[] = { 0, (size_t)1 << 31, (size_t)1 << 32, len - WINDOW };
	size_t k;

	/* One word per page, at a varying place in the page. */
	for (pg = 0; pg < len / PAGE; pg++) {
		size_t i = pg * (PAGE / 8) + (pg * 37) % (PAGE / 8);
		if (w[i] != word_at(i, seed))
			conf_fail("%s: sampled word at byte offset %zu (0x%zx) is 0x%016llx, "
				  "expected 0x%016llx", what, i * 8, i * 8,
				  (unsigned long long)w[i], (unsigned long long)word_at(i, seed));
	}
	for (k = 0; k < sizeof(marks) / sizeof(marks[0]); k++) {
		size_t from = marks[k] >= WINDOW ? marks[k] - WINDOW : 0;
		size_t to = marks[k] + WINDOW <= len ? marks[k] + WINDOW : len;
		check_range(p, from, to, seed, what);
	}
}

static unsigned long long mem_available(void)
{
	FILE *f = fopen("/proc/meminfo", "r");
	char line[256];
	unsigned long long kb = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "MemAvailable: %llu kB", &kb) == 1)
			break;
	fclose(f);
	return kb << 10;
}

/* Maps two LARGE buffers or skips the test, saying why. */
static bool large_buffers(struct conf *c, unsigned char **src, unsigned char **dst,
			  size_t dst_len)
{
	unsigned long long need = (unsigned long long)LARGE + dst_len + (512ull << 20);
	unsigned long long avail = mem_available();

	if (sizeof(size_t) < 8) {
		conf_note_skip("needs a 64-bit size_t");
		return false;
	}
	if (avail < need) {
		conf_note_skip("needs %llu MiB of available memory for two 4.5 GiB buffers, "
			       "MemAvailable is %llu MiB", need >> 20, avail >> 20);
		return false;
	}
	*src = conf_alloc(c, LARGE);
	*dst = conf_alloc(c, dst_len);
	return true;
}

static void test_large_send(void **state)
{
	struct conf *c = *state;
	unsigned char *src, *dst;
	struct ferry_completion cmp;
	uint64_t seed = 0x5EED0001;

	if (!large_buffers(c, &src, &dst, LARGE + PAGE)) {
		skip();
		return;
	}
	fill_words(src, LARGE, seed);
	conf_assert_rc(ferry_recv(c->sep, dst, LARGE + PAGE, 1, ~0ull, dst, NULL), 0);
	conf_assert_rc(ferry_send(c->cep, src, LARGE, 1, src, NULL), 0);
	conf_wait_ms(&c->w, ferry_ctx_cq(c->w.srv), &cmp, 1, WAIT_MS);
	if (cmp.status != 0)
		conf_fail("recv of a 4.5 GiB message completed with %s", conf_err(cmp.status));
	if (cmp.len != LARGE)
		conf_fail("recv of a 4.5 GiB message: completion len %llu, expected %zu",
			  (unsigned long long)cmp.len, LARGE);
	conf_wait_ms(&c->w, ferry_ctx_cq(c->w.cli), &cmp, 1, WAIT_MS);
	if (cmp.status != 0)
		conf_fail("send of 4.5 GiB completed with %s", conf_err(cmp.status));
	assert_int_equal(cmp.len, LARGE);
	check_sampled(dst, LARGE, seed, "4.5 GiB message");
	conf_assert_bytes(dst + LARGE, PAGE, 0, "bytes after the message");
}

static void test_large_write(void **state)
{
	struct conf *c = *state;
	unsigned char *src, *dst;
	struct ferry_mr *smr, *dmr;
	struct ferry_rkey *rk;
	struct ferry_completion cmp;
	uint64_t seed = 0x5EED0002;
	int rc;

	if (!large_buffers(c, &src, &dst, PAGE + LARGE)) {
		skip();
		return;
	}
	fill_words(src, LARGE, seed);
	rc = conf_try_reg(c, c->w.srv, dst, PAGE + LARGE, FERRY_ACCESS_REMOTE_WRITE, &dmr);
	if (rc == FERRY_EPERM) {
		/* Pinning refused (RLIMIT_MEMLOCK): the machine, not the library. */
		conf_skip("registering 4.5 GiB: %s", conf_err(rc));
		return;
	}
	conf_assert_rc(rc, 0);
	smr = conf_reg(c, c->w.cli, src, LARGE, FERRY_ACCESS_LOCAL);
	rk = conf_rkey(c, c->w.cli, dmr);
	assert_int_equal(ferry_rkey_len(rk), PAGE + LARGE);
	/* At an offset, so the 4 GiB boundary falls mid-page in the target. */
	conf_assert_rc(ferry_write(c->cep, src, LARGE, smr, rk, PAGE, src, NULL), 0);
	conf_wait_ms(&c->w, ferry_ctx_cq(c->w.cli), &cmp, 1, WAIT_MS);
	if (cmp.status != 0)
		conf_fail("write of 4.5 GiB completed with %s", conf_err(cmp.status));
	assert_int_equal(cmp.len, LARGE);
	conf_assert_bytes(dst, PAGE, 0, "target bytes before the write offset");
	check_sampled(dst + PAGE, LARGE, seed, "4.5 GiB write");
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.srv), 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_large_send, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_large_write, conf_setup_pair, conf_teardown),
	};

	return CONF_RUN("large", tests);
}
