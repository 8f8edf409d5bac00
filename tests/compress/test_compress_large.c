/*
 * test_compress_large.c - one compressed transfer of each kind above 4 GiB (4.5 GiB):
 * a rendezvous send (READ_RESP in 4608 segments), a write and a read, bytes verified
 * by sampling and at the ends.
 *
 * The data is compressible on purpose (so the test is quick): every 4 KiB page is one
 * block of log text, the same for every page, except its first 8 bytes, which encode
 * the page's index. Every page's index is checked (lost, duplicated or misplaced
 * pages show), and dense windows at both ends and around 2 GiB and 4 GiB are compared
 * byte for byte, where 32-bit length bugs would show.
 *
 * Needs about 2 x 4.5 GiB of memory: with less available, it exits 77 (skipped) and
 * says why. Label `large`.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "compress.h"
#include "cz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define LARGE ((size_t)9 << 29) /* 4.5 GiB */
#define PAGE 4096u
#define WINDOW ((size_t)2 << 20)

static uint8_t *src, *dst;
static uint8_t text[PAGE];

static void fill_src(void)
{
	cz_fill(text, PAGE, CZ_JSON, 17);
	for (size_t off = 0; off < LARGE; off += PAGE) {
		uint64_t idx = off / PAGE ^ 0xF00DF00Dull;

		memcpy(src + off, text, PAGE);
		memcpy(src + off, &idx, 8);
	}
}

static void spoil_dst(void)
{
	/* Cheap: every page's index word and the windows, so stale bytes show. */
	for (size_t off = 0; off < LARGE; off += PAGE)
		memset(dst + off, 0xCC, 8);
	memset(dst, 0xCC, WINDOW);
	memset(dst + LARGE - WINDOW, 0xCC, WINDOW);
	memset(dst + ((size_t)1 << 31) - WINDOW / 2, 0xCC, WINDOW);
	memset(dst + ((size_t)1 << 32) - WINDOW / 2, 0xCC, WINDOW);
}

static void verify(const char *what)
{
	const size_t marks[] = {0, LARGE - WINDOW, ((size_t)1 << 31) - WINDOW / 2,
				((size_t)1 << 32) - WINDOW / 2};

	for (size_t off = 0; off < LARGE; off += PAGE) {
		if (memcmp(dst + off, src + off, 8) != 0) {
			print_error("%s: page %zu (offset %zu) has the wrong index\n", what,
				    off / PAGE, off);
			fail();
		}
	}
	for (size_t i = 0; i < sizeof(marks) / sizeof(marks[0]); i++) {
		if (memcmp(dst + marks[i], src + marks[i], WINDOW) != 0) {
			print_error("%s: the %zu-byte window at %zu differs\n", what, WINDOW,
				    marks[i]);
			fail();
		}
	}
	/* And a page here and there, whole. */
	for (size_t k = 1; k < 64; k++) {
		size_t off = (LARGE / PAGE * k / 64) * PAGE;

		assert_memory_equal(dst + off, src + off, PAGE);
	}
}

static void large(void **state)
{
	struct cz_pair p;
	struct cz_side s, c;
	struct ferry_completion comp;
	struct ferry_mr *mr;
	struct ferry_rkey *rk;
	uint8_t blob[FERRY_RKEY_MAX];
	size_t blen;
	(void)state;

	cz_wait_ms = 600000;
	cz_side_init(&s);
	cz_side_init(&c);
	s.cfg.compress = c.cfg.compress = FERRY_COMPRESS_ON;
	cz_pair_open(&p, &s, &c);
	fill_src();

	/* send/recv: the rendezvous, READ_RESP in compressed segments */
	spoil_dst();
	uint64_t z0 = cz_stats(p.cli).compressed_in;
	assert_int_equal(ferry_recv(p.sep, dst, LARGE, 1, ~0ull, NULL, NULL), 0);
	assert_int_equal(ferry_send(p.cep, src, LARGE, 1, NULL, NULL), 0);
	cz_wait(&p, p.cli, &comp);
	assert_int_equal(comp.status, 0);
	cz_wait(&p, p.srv, &comp);
	assert_int_equal(comp.status, 0);
	assert_int_equal(comp.len, LARGE);
	verify("send");
	struct ferry_stats st = cz_stats(p.cli);
	assert_int_equal(st.compressed_in - z0, LARGE);
	printf("# send: %zu bytes, %llu on the wire\n", LARGE,
	       (unsigned long long)st.compressed_out);

	/* write into a region of the server */
	spoil_dst();
	blen = sizeof(blob);
	assert_int_equal(ferry_mr_reg(p.srv, dst, LARGE, FERRY_ACCESS_REMOTE_WRITE, &mr), 0);
	assert_int_equal(ferry_mr_pack(mr, blob, &blen), 0);
	assert_int_equal(ferry_rkey_unpack(p.cli, blob, blen, &rk), 0);
	assert_int_equal(ferry_write(p.cep, src, LARGE, NULL, rk, 0, NULL, NULL), 0);
	cz_wait(&p, p.cli, &comp);
	assert_int_equal(comp.status, 0);
	verify("write");
	ferry_rkey_destroy(rk);
	assert_int_equal(ferry_mr_dereg(mr), 0);

	/* read from a region of the server (the server compresses its answer) */
	spoil_dst();
	blen = sizeof(blob);
	z0 = cz_stats(p.srv).compressed_in;
	assert_int_equal(ferry_mr_reg(p.srv, src, LARGE, FERRY_ACCESS_REMOTE_READ, &mr), 0);
	assert_int_equal(ferry_mr_pack(mr, blob, &blen), 0);
	assert_int_equal(ferry_rkey_unpack(p.cli, blob, blen, &rk), 0);
	assert_int_equal(ferry_read(p.cep, dst, LARGE, NULL, rk, 0, NULL, NULL), 0);
	cz_wait(&p, p.cli, &comp);
	assert_int_equal(comp.status, 0);
	verify("read");
	assert_int_equal(cz_stats(p.srv).compressed_in - z0, LARGE);
	ferry_rkey_destroy(rk);
	assert_int_equal(ferry_mr_dereg(mr), 0);
	cz_pair_close(&p);
}

static uint64_t mem_available(void)
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
	return (uint64_t)kb << 10;
}

int main(void)
{
	const struct CMUnitTest tests[] = {cmocka_unit_test(large)};
	uint64_t need = 2 * (uint64_t)LARGE + ((uint64_t)1 << 30);
	int rc;

	if (!ferryi_compress_built()) {
		printf("SKIP: compress.large: this build has no zstd\n");
		return 77;
	}
	if (mem_available() < need) {
		printf("SKIP: compress.large: needs %llu MiB of available memory, %llu MiB "
		       "available\n", (unsigned long long)(need >> 20),
		       (unsigned long long)(mem_available() >> 20));
		return 77;
	}
	src = mmap(NULL, LARGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	dst = mmap(NULL, LARGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (src == MAP_FAILED || dst == MAP_FAILED) {
		printf("SKIP: compress.large: cannot map 2 x %zu bytes\n", LARGE);
		return 77;
	}
	rc = cmocka_run_group_tests_name("compress.large", tests, NULL, NULL);
	munmap(src, LARGE);
	munmap(dst, LARGE);
	return rc;
}
