/*
 * conf_large.c - one send and one write above 4 GiB (4.5 GiB each), bytes verified
 * by sampling. Buffers come from mmap; the machine needs about 2 x 4.5 GiB of free
 * memory, else the tests skip with the reason (and the binary exits 77). Labelled `large`, but part of the
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

/*
 * The two buffers are shared by both tests: first-touching 9 GiB dominates the run
 * time on small VMs. The write uses another seed, so what the send left there can
 * never pass for written data.
 */
static unsigned char *g_src, *g_dst;
static const char *g_why;
static char g_whybuf[256];

#define DST_LEN (LARGE + PAGE)

/* Maps the buffers once, or says why this machine cannot. */
static bool large_buffers(void)
{
	unsigned long long need = (unsigned long long)LARGE + DST_LEN + (512ull << 20);
	unsigned long long avail;

	if (g_src)
		return true;
	if (g_why)
		return false;
	avail = mem_available();
	if (conf_prov_pins_memory() && conf_memlock_limit() < need) {
		snprintf(g_whybuf, sizeof(g_whybuf), "%s pins registered memory: "
			 "RLIMIT_MEMLOCK is %llu KiB, needs %llu MiB (ulimit -l unlimited)",
			 conf_prov, (unsigned long long)conf_memlock_limit() >> 10, need >> 20);
		g_why = g_whybuf;
		return false;
	}
	if (sizeof(size_t) < 8) {
		g_why = "needs a 64-bit size_t";
		return false;
	}
	if (avail < need) {
		snprintf(g_whybuf, sizeof(g_whybuf), "needs %llu MiB of available memory for "
			 "two 4.5 GiB buffers, MemAvailable is %llu MiB", need >> 20,
			 avail >> 20);
		g_why = g_whybuf;
		return false;
	}
	g_src = mmap(NULL, LARGE, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	g_dst = mmap(NULL, DST_LEN, PROT_READ | PROT_WRITE,
		     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (g_src == MAP_FAILED || g_dst == MAP_FAILED) {
		snprintf(g_whybuf, sizeof(g_whybuf), "mmap of 2 x 4.5 GiB failed: %s",
			 strerror(errno));
		g_why = g_whybuf;
		if (g_src != MAP_FAILED)
			munmap(g_src, LARGE);
		if (g_dst != MAP_FAILED)
			munmap(g_dst, DST_LEN);
		g_src = g_dst = NULL;
		return false;
	}
	return true;
}

#define SEED_SEND 0x5EED0001ull
#define SEED_WRITE 0x5EED0002ull

static void test_large_send(void **state)
{
	struct conf *c = *state;
	struct ferry_completion cmp;

	if (!large_buffers()) {
		conf_skip("%s", g_why);
		return;
	}
	fill_words(g_src, LARGE, SEED_SEND);
	conf_assert_rc(ferry_recv(c->sep, g_dst, DST_LEN, 1, ~0ull, g_dst, NULL), 0);
	conf_assert_rc(ferry_send(c->cep, g_src, LARGE, 1, g_src, NULL), 0);
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
	check_sampled(g_dst, LARGE, SEED_SEND, "4.5 GiB message");
	conf_assert_bytes(g_dst + LARGE, PAGE, 0, "bytes after the message");
}

static void test_large_write(void **state)
{
	struct conf *c = *state;
	struct ferry_mr *smr, *dmr;
	struct ferry_rkey *rk;
	struct ferry_completion cmp;
	int rc;

	if (!large_buffers()) {
		conf_skip("%s", g_why);
		return;
	}
	fill_words(g_src, LARGE, SEED_WRITE);
	/* Whatever the send test left in the first page must survive the write. */
	fill_words(g_dst, PAGE, SEED_SEND);
	rc = conf_try_reg(c, c->w.srv, g_dst, DST_LEN, FERRY_ACCESS_REMOTE_WRITE, &dmr);
	if (rc == FERRY_EPERM) {
		/* Pinning refused (RLIMIT_MEMLOCK): the machine, not the library. */
		conf_skip("registering 4.5 GiB: %s", conf_err(rc));
		return;
	}
	conf_assert_rc(rc, 0);
	smr = conf_reg(c, c->w.cli, g_src, LARGE, FERRY_ACCESS_LOCAL);
	rk = conf_rkey(c, c->w.cli, dmr);
	assert_int_equal(ferry_rkey_len(rk), DST_LEN);
	/* At an offset, so the 4 GiB boundary falls elsewhere than in the source. */
	conf_assert_rc(ferry_write(c->cep, g_src, LARGE, smr, rk, PAGE, g_src, NULL), 0);
	conf_wait_ms(&c->w, ferry_ctx_cq(c->w.cli), &cmp, 1, WAIT_MS);
	if (cmp.status != 0)
		conf_fail("write of 4.5 GiB completed with %s", conf_err(cmp.status));
	assert_int_equal(cmp.len, LARGE);
	check_range(g_dst, 0, PAGE, SEED_SEND, "target bytes before the write offset");
	check_sampled(g_dst + PAGE, LARGE, SEED_WRITE, "4.5 GiB write");
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.srv), 10);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_large_send, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_large_write, conf_setup_pair, conf_teardown),
	};

	int rc = CONF_RUN("large", tests);

	if (g_src) {
		munmap(g_src, LARGE);
		munmap(g_dst, DST_LEN);
	}
	return rc;
}
