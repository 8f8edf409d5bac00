/*
 * check.c - byte patterns for --check. Each transfer's bytes derive from a seed that
 * names the side, the endpoint and the iteration (or slot), and from the offset, so a
 * misplaced, stale, truncated or reordered transfer shows as a mismatch.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "perf.h"

uint64_t perf_seed(uint32_t side, uint32_t e, uint64_t i)
{
	return ((uint64_t)(side & 0xff) << 56) ^ ((uint64_t)(e & 0xffff) << 40) ^
	       (i & ((1ull << 40) - 1)) ^ 0x5ca1ab1e00000000ull;
}

/* splitmix64 finaliser: cheap, and every bit of (seed, word) reaches every bit. */
static inline uint64_t chk_word(uint64_t seed, uint64_t w)
{
	uint64_t x = seed + (w + 1) * 0x9e3779b97f4a7c15ull;

	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

void perf_fill(void *buf, size_t len, uint64_t seed)
{
	uint8_t *b = buf;
	size_t words = len / 8, w;
	uint64_t x;

	for (w = 0; w < words; w++) {
		x = chk_word(seed, w);
		memcpy(b + w * 8, &x, 8);
	}
	if (len % 8) {
		x = chk_word(seed, w);
		memcpy(b + w * 8, &x, len % 8);
	}
}

int perf_verify(const void *buf, size_t len, uint64_t seed, const char *what)
{
	const uint8_t *b = buf;
	size_t words = len / 8, w, off;
	uint64_t x;

	for (w = 0; w < words; w++) {
		x = chk_word(seed, w);
		if (memcmp(b + w * 8, &x, 8))
			goto mismatch;
	}
	if (len % 8) {
		x = chk_word(seed, w);
		if (memcmp(b + w * 8, &x, len % 8))
			goto mismatch;
	}
	return 0;
mismatch:
	for (off = w * 8; off < len && off < w * 8 + 8; off++)
		if (b[off] != ((const uint8_t *)&x)[off - w * 8])
			break;
	fprintf(stderr, "ferry_perf: check failed: %s: byte %zu of %zu is 0x%02x, expected 0x%02x"
			" (seed 0x%016" PRIx64 ")\n",
		what, off, len, b[off], ((const uint8_t *)&x)[off - w * 8], seed);
	return -1;
}
