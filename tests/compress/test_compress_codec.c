/*
 * test_compress_codec.c - lib/compress.c on its own: the policy, sampling, and the
 * segment codec, including everything a hostile peer can put in a segment: bad
 * chunk headers, corrupt zstd data, decompression bombs, random bytes. The decoder
 * must consume exactly the segment's wire bytes whatever they hold, never write past
 * the raw length it was given, and report what was wrong.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "compress.h"
#include "core.h"
#include "cz_util.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GUARD 4096

struct dec_result {
	int err;
	uint64_t consumed; /* wire bytes handed out as pieces, prelude included */
};

/* Decodes the segment seg (wire bytes) into out the way a stream provider does. */
static struct dec_result decode(struct ferryi_zcodec *z, const uint8_t *seg, uint64_t wire,
				uint8_t *out)
{
	struct dec_result r = {0};
	struct ferryi_zdec d;
	uint64_t raw = ferryi_get_le64(seg), pos = FERRYI_ZSEG_PRELUDE;

	ferryi_zdec_init(&d);
	ferryi_zdec_start(&d, raw, wire - FERRYI_ZSEG_PRELUDE, out);
	for (;;) {
		uint8_t *dst;
		uint64_t len;

		ferryi_zdec_piece(&d, &dst, &len);
		if (!len)
			break;
		assert_true(pos + len <= wire); /* never asks beyond the segment */
		if (dst)
			memcpy(dst, seg + pos, (size_t)len);
		pos += len;
		ferryi_zdec_advance(z, &d);
	}
	r.err = d.err;
	r.consumed = pos;
	if (d.err)
		assert_true(d.why[0] != '\0');
	ferryi_zdec_fini(&d);
	return r;
}

/* Without zstd in the build there is no codec to test (the stubs are tested by the
 * loopback tests of such a build: everything goes raw). */
#define NEED_ZSTD()                                                                  \
	do {                                                                         \
		if (!ferryi_compress_built())                                        \
			skip();                                                      \
	} while (0)

static struct ferryi_zcodec *codec(void)
{
	struct ferryi_zcodec *z = NULL;

	NEED_ZSTD();

	assert_int_equal(ferryi_zcodec_new(&z), 0);
	return z;
}


/* ------------------------------------------------------------------ policy */

static void policy(void **state)
{
	struct ferry_config c;
	(void)state;

	NEED_ZSTD();

	ferry_config_init(&c);
	assert_int_equal(ferryi_compress_mode(&c, 0, 1 << 20), FERRYI_ZMODE_NONE);
	assert_int_equal(ferryi_compress_mode(&c, FERRY_OP_COMPRESS, 1 << 20), FERRYI_ZMODE_ON);
	assert_int_equal(ferryi_compress_mode(&c, FERRY_OP_COMPRESS | FERRY_OP_NO_COMPRESS, 1 << 20),
			 FERRYI_ZMODE_NONE);
	assert_int_equal(ferryi_compress_mode(&c, FERRY_OP_COMPRESS, FERRYI_ZMIN_TRY - 1),
			 FERRYI_ZMODE_NONE);
	c.compress = FERRY_COMPRESS_ON;
	assert_int_equal(ferryi_compress_mode(&c, 0, 100), FERRYI_ZMODE_ON);
	assert_int_equal(ferryi_compress_mode(&c, FERRY_OP_NO_COMPRESS, 1 << 20), FERRYI_ZMODE_NONE);
	c.compress = FERRY_COMPRESS_AUTO;
	c.compress_min = 16384;
	assert_int_equal(ferryi_compress_mode(&c, 0, 16383), FERRYI_ZMODE_NONE);
	assert_int_equal(ferryi_compress_mode(&c, 0, 16384), FERRYI_ZMODE_AUTO);
	assert_int_equal(ferryi_compress_mode(&c, FERRY_OP_COMPRESS, 100), FERRYI_ZMODE_ON);

	assert_true(ferryi_zseg_pays(FERRYI_ZMODE_ON, 1000, 999));
	assert_false(ferryi_zseg_pays(FERRYI_ZMODE_ON, 1000, 1000));
	assert_true(ferryi_zseg_pays(FERRYI_ZMODE_AUTO, 1600, 1500));
	assert_false(ferryi_zseg_pays(FERRYI_ZMODE_AUTO, 1600, 1501));
}

static void sampling(void **state)
{
	struct ferryi_zcodec *z = codec();
	size_t len = 4u << 20;
	uint8_t *buf = malloc(len);
	(void)state;

	NEED_ZSTD();

	cz_fill(buf, len, CZ_JSON, 1);
	assert_true(ferryi_compress_sample(z, 1, buf, len));
	assert_true(ferryi_compress_sample(z, 1, buf, 5000)); /* small: sampled whole */
	cz_fill(buf, len, CZ_FP16, 1);
	assert_true(ferryi_compress_sample(z, 1, buf, len));
	cz_fill(buf, len, CZ_RANDOM, 1);
	assert_false(ferryi_compress_sample(z, 1, buf, len));
	assert_false(ferryi_compress_sample(z, 3, buf, 20000));
	assert_false(ferryi_compress_sample(z, 1, buf, 10)); /* too small to bother */
	free(buf);
	ferryi_zcodec_free(z);
}

/* ------------------------------------------------------------------ round trips */

static void roundtrip(void **state)
{
	static const size_t sizes[] = {
		1, 63, 64, 65, 1000, FERRYI_ZCHUNK - 1, FERRYI_ZCHUNK, FERRYI_ZCHUNK + 1,
		(1u << 20), (1u << 20) + 5, 3 * FERRYI_ZCHUNK + 77,
	};
	static const int levels[] = {1, -7, 3, 19};
	struct ferryi_zcodec *z = codec();
	size_t max = (1u << 20) + 5;
	uint8_t *src = malloc(max), *seg = malloc(ferryi_zseg_bound(max)), *out = malloc(max + GUARD);
	(void)state;

	NEED_ZSTD();

	for (int d = CZ_JSON; d <= CZ_FP16; d++) {
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			size_t len = sizes[i];
			int level = levels[(i + (size_t)d) % 4];

			cz_fill(src, len, (enum cz_data)d, i);
			uint64_t wire = ferryi_zseg_encode(z, level, seg, src, len);
			assert_true(wire <= ferryi_zseg_bound(len));
			assert_int_equal(ferryi_get_le64(seg), len);
			assert_int_equal(ferryi_zseg_check(len, wire, len, NULL, 0), 0);
			if (d == CZ_RANDOM) /* stored, chunk by chunk */
				assert_int_equal(wire, ferryi_zseg_bound(len));
			if (d == CZ_JSON && len >= 1000)
				assert_true(wire * 2 < len);
			memset(out, 0x5a, len + GUARD);
			struct dec_result r = decode(z, seg, wire, out);
			assert_int_equal(r.err, 0);
			assert_int_equal(r.consumed, wire);
			assert_memory_equal(out, src, len);
			for (size_t g = 0; g < GUARD; g++)
				assert_int_equal(out[len + g], 0x5a);
			/* out NULL: the whole segment is dropped unread, cleanly */
			struct ferryi_zdec dd;
			uint8_t *dst;
			uint64_t plen;
			ferryi_zdec_init(&dd);
			ferryi_zdec_start(&dd, len, wire - 8, NULL);
			ferryi_zdec_piece(&dd, &dst, &plen);
			assert_null(dst);
			assert_int_equal(plen, wire - 8);
			ferryi_zdec_advance(z, &dd);
			ferryi_zdec_piece(&dd, &dst, &plen);
			assert_int_equal(plen, 0);
			assert_int_equal(dd.err, 0);
			ferryi_zdec_fini(&dd);
		}
	}
	free(src);
	free(seg);
	free(out);
	ferryi_zcodec_free(z);
}

static void prelude_check(void **state)
{
	char why[200];
	uint64_t n3 = 3;
	(void)state;

	assert_int_equal(ferryi_zseg_check(0, 17, 100, why, sizeof(why)), FERRY_EPROTO);
	assert_int_equal(ferryi_zseg_check(101, 17, 100, why, sizeof(why)), FERRY_EPROTO);
	assert_int_equal(ferryi_zseg_check(1, 17, 100, why, sizeof(why)), 0);
	assert_int_equal(ferryi_zseg_check(1, 16, 100, why, sizeof(why)), FERRY_EPROTO);
	assert_int_equal(ferryi_zseg_check(1, 18, 100, why, sizeof(why)), FERRY_EPROTO);
	/* three chunks: 8 + 3 * 9 .. 8 + 3 * 8 + raw */
	uint64_t raw = 2 * FERRYI_ZCHUNK + 10;
	assert_int_equal(ferryi_zseg_check(raw, 8 + n3 * 9, raw, NULL, 0), 0);
	assert_int_equal(ferryi_zseg_check(raw, 8 + n3 * 9 - 1, raw, NULL, 0), FERRY_EPROTO);
	assert_int_equal(ferryi_zseg_check(raw, 8 + n3 * 8 + raw, raw, NULL, 0), 0);
	assert_int_equal(ferryi_zseg_check(raw, 8 + n3 * 8 + raw + 1, raw, NULL, 0), FERRY_EPROTO);
	/* no overflow near 2^64 */
	assert_int_equal(ferryi_zseg_check(UINT64_MAX - 3, UINT64_MAX, UINT64_MAX, NULL, 0), 0);
	assert_int_equal(ferryi_zseg_check(UINT64_MAX, 17, UINT64_MAX, why, sizeof(why)),
			 FERRY_EPROTO);
}

/* ------------------------------------------------------------------ hostile input */

/* A JSON segment of 3 chunks, all compressed; returns its wire length. */
static uint64_t good_segment(struct ferryi_zcodec *z, uint8_t *src, uint8_t *seg, size_t len)
{
	cz_fill(src, len, CZ_JSON, 42);
	return ferryi_zseg_encode(z, 1, seg, src, len);
}

static void bad_headers(void **state)
{
	struct ferryi_zcodec *z = codec();
	size_t len = 2 * FERRYI_ZCHUNK + 1000;
	uint8_t *src = malloc(len), *seg = malloc(ferryi_zseg_bound(len)),
		*mod = malloc(ferryi_zseg_bound(len)), *out = malloc(len + GUARD);
	uint64_t wire = good_segment(z, src, seg, len);
	uint32_t c0 = ferryi_get_le32(seg + 12) & ~FERRYI_ZCHUNK_STORED;
	uint8_t *h1 = mod + 8 + 8 + c0; /* second chunk header */
	struct {
		const char *what;
		size_t off; /* offset in the segment: 8 = first header, h1 - mod = second */
		uint32_t raw, info;
		bool set_raw, set_info;
	} cases[] = {
		{"raw too big", 8, FERRYI_ZCHUNK + 1, 0, true, false},
		{"raw too small", 8, FERRYI_ZCHUNK - 1, 0, true, false},
		{"raw zero", 8, 0, 0, true, false},
		{"len zero", 8, 0, 0, false, true},
		{"len = raw, not stored", 8, 0, FERRYI_ZCHUNK, false, true},
		{"len beyond the segment", 8, 0, 0x7fffffffu, false, true},
		{"stored with len != raw", 8, 0, FERRYI_ZCHUNK_STORED | 100, false, true},
		{"second: raw of the last chunk", (size_t)(h1 - mod), 1000, 0, true, false},
		{"second: stored, short", (size_t)(h1 - mod), 0, FERRYI_ZCHUNK_STORED | 5, false,
		 true},
	};
	(void)state;

	NEED_ZSTD();

	assert_true(c0 > 0 && c0 < FERRYI_ZCHUNK);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		memcpy(mod, seg, wire);
		if (cases[i].set_raw)
			ferryi_put_le32(mod + cases[i].off, cases[i].raw);
		if (cases[i].set_info)
			ferryi_put_le32(mod + cases[i].off + 4, cases[i].info);
		memset(out, 0x5a, len + GUARD);
		struct dec_result r = decode(z, mod, wire, out);
		if (r.err != FERRY_EPROTO) {
			print_error("case '%s' decoded with %d\n", cases[i].what, r.err);
			fail();
		}
		assert_int_equal(r.consumed, wire); /* the rest is dropped, the stream stays framed */
		for (size_t g = 0; g < GUARD; g++)
			assert_int_equal(out[len + g], 0x5a);
	}
	/* A segment one byte longer than its chunks say: the last chunk must end it. */
	memcpy(mod, seg, wire);
	mod[wire] = 0;
	struct dec_result r = decode(z, mod, wire + 1, out);
	assert_int_equal(r.err, FERRY_EPROTO);
	assert_int_equal(r.consumed, wire + 1);
	free(src);
	free(seg);
	free(mod);
	free(out);
	ferryi_zcodec_free(z);
}

static void corrupt_data(void **state)
{
	struct ferryi_zcodec *z = codec();
	size_t len = 2 * FERRYI_ZCHUNK + 1000;
	uint8_t *src = malloc(len), *seg = malloc(ferryi_zseg_bound(len)),
		*mod = malloc(ferryi_zseg_bound(len)), *out = malloc(len + GUARD);
	uint64_t wire = good_segment(z, src, seg, len);
	uint32_t c0 = ferryi_get_le32(seg + 12);
	(void)state;

	NEED_ZSTD();

	/* Flip bytes all over the first chunk's zstd frame: magic, header, blocks, the
	 * checksum. Every one is caught (the checksum sees what the structure does not). */
	for (uint32_t at = 0; at < c0; at += 1 + c0 / 97) {
		memcpy(mod, seg, wire);
		mod[16 + at] ^= 0x41;
		memset(out, 0x5a, len + GUARD);
		struct dec_result r = decode(z, mod, wire, out);
		if (r.err != FERRY_EPROTO) {
			print_error("byte %u of %u flipped: decoded with %d\n", at, c0, r.err);
			fail();
		}
		assert_int_equal(r.consumed, wire);
		for (size_t g = 0; g < GUARD; g++)
			assert_int_equal(out[len + g], 0x5a);
	}
	free(src);
	free(seg);
	free(mod);
	free(out);
	ferryi_zcodec_free(z);
}

/*
 * A zstd frame made by hand: it announces `fcs` raw bytes (0 = no size field) and
 * carries `blocks` RLE blocks of 128 KiB each, so it expands to blocks * 128 KiB.
 */
static size_t bomb_frame(uint8_t *out, uint64_t fcs, unsigned blocks)
{
	size_t n = 0;

	ferryi_put_le32(out, 0xFD2FB528u);
	n = 4;
	if (fcs) {
		out[n++] = 0xA0; /* FCS field 4 bytes, single segment, no checksum */
		ferryi_put_le32(out + n, (uint32_t)fcs);
		n += 4;
	} else {
		out[n++] = 0x00;              /* no FCS, window descriptor follows */
		out[n++] = (uint8_t)(10 << 3); /* window 2^20 */
	}
	for (unsigned i = 0; i < blocks; i++) {
		uint32_t bh = (131072u << 3) | (1u << 1) | (i + 1 == blocks ? 1u : 0u);

		out[n++] = (uint8_t)bh;
		out[n++] = (uint8_t)(bh >> 8);
		out[n++] = (uint8_t)(bh >> 16);
		out[n++] = 0x42; /* the byte repeated */
	}
	return n;
}

static void bombs(void **state)
{
	struct ferryi_zcodec *z = codec();
	size_t raw = FERRYI_ZCHUNK; /* one chunk of 256 KiB */
	uint8_t *seg = malloc(FERRYI_ZCHUNK), *out = malloc(raw + GUARD);
	struct {
		const char *what;
		uint64_t fcs;
		unsigned blocks;
	} cases[] = {
		/* announces the chunk's size, expands to 1 GiB: stopped at 256 KiB */
		{"lies about its size", FERRYI_ZCHUNK, 8192},
		/* says 1 GiB: refused before decompressing */
		{"announces 1 GiB", 1u << 30, 8192},
		/* says nothing: refused (our frames always carry the size) */
		{"no size", 0, 8192},
		/* announces and holds exactly 2 x 128 KiB: this one is fine */
		{"honest", FERRYI_ZCHUNK, 2},
	};
	(void)state;

	NEED_ZSTD();

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		size_t flen = bomb_frame(seg + 16, cases[i].fcs, cases[i].blocks);

		assert_true(flen < raw);
		ferryi_put_le64(seg, raw);
		ferryi_put_le32(seg + 8, (uint32_t)raw);
		ferryi_put_le32(seg + 12, (uint32_t)flen);
		memset(out, 0x5a, raw + GUARD);
		struct dec_result r = decode(z, seg, 16 + flen, out);
		assert_int_equal(r.consumed, 16 + flen);
		for (size_t g = 0; g < GUARD; g++)
			assert_int_equal(out[raw + g], 0x5a);
		if (i == 3) {
			assert_int_equal(r.err, 0);
			for (size_t k = 0; k < raw; k++)
				assert_int_equal(out[k], 0x42);
		} else if (r.err != FERRY_EPROTO) {
			print_error("bomb '%s' decoded with %d\n", cases[i].what, r.err);
			fail();
		}
	}
	free(seg);
	free(out);
	ferryi_zcodec_free(z);
}

/* Random bytes after a valid prelude: refused or not, framed, bounded. */
static void random_segments(void **state)
{
	struct ferryi_zcodec *z = codec();
	size_t max = 4 * FERRYI_ZCHUNK;
	uint8_t *seg = malloc(max + 64), *out = malloc(max + GUARD);
	uint64_t s = 0x1234;
	(void)state;

	NEED_ZSTD();

	for (int round = 0; round < 300; round++) {
		s = s * 6364136223846793005ull + 1442695040888963407ull;
		uint64_t raw = 1 + (s >> 33) % max;
		uint64_t n = (raw + FERRYI_ZCHUNK - 1) / FERRYI_ZCHUNK;
		uint64_t lo = 8 + 9 * n, hi = 8 + 8 * n + raw;
		uint64_t wire = lo + (s >> 7) % (hi - lo + 1);

		cz_fill(seg, (size_t)wire, CZ_RANDOM, (uint64_t)round);
		ferryi_put_le64(seg, raw);
		/* Plausible chunk headers half of the time, so the data gets looked at. */
		if (round % 2) {
			ferryi_put_le32(seg + 8, (uint32_t)FERRYI_MIN(raw, (uint64_t)FERRYI_ZCHUNK));
			ferryi_put_le32(seg + 12, (uint32_t)((s >> 20) % FERRYI_MIN(raw, wire - 16)));
			if (round % 4 == 1)
				ferryi_put_le32(seg + 16, 0xFD2FB528u);
		}
		memset(out, 0x5a, raw + GUARD);
		struct dec_result r = decode(z, seg, wire, out);
		assert_int_equal(r.consumed, wire);
		for (size_t g = 0; g < GUARD; g++)
			assert_int_equal(out[raw + g], 0x5a);
	}
	free(seg);
	free(out);
	ferryi_zcodec_free(z);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(policy),
		cmocka_unit_test(sampling),
		cmocka_unit_test(roundtrip),
		cmocka_unit_test(prelude_check),
		cmocka_unit_test(bad_headers),
		cmocka_unit_test(corrupt_data),
		cmocka_unit_test(bombs),
		cmocka_unit_test(random_segments),
	};

	return cmocka_run_group_tests_name("compress.codec", tests, NULL, NULL);
}
