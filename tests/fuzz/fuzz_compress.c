/*
 * fuzz_compress.c - compressed segments from a peer (lib/compress.h): the prelude
 * check ferryi_zseg_check and the incremental decoder ferryi_zdec, fed exactly the
 * pieces it asks for, as the TCP provider does; plus encode/decode round trips.
 *
 * Input: byte 0 mode, byte 1 parameter, then the data.
 *   mode & 1 == 0  decode: the data is a segment (u64 raw length, then chunks).
 *                  raw_max = (parameter + 1) * 4 KiB; mode & 2: decode with no
 *                  destination (the receiver drops the payload).
 *   mode & 1 == 1  round trip: the data is raw bytes (at least one), encoded at level
 *                  parameter % 8 - 2, then decoded.
 *
 * Invariants beyond "no crash, no leak":
 *   - a refused prelude says why; an accepted one has 1 <= raw <= raw_max;
 *   - the decoder asks only for bytes the segment has, and hands out only memory it
 *     owns or the destination's [out, out + raw) (pieces checked against both);
 *   - whatever the chunks hold, the decoder consumes exactly the segment's bytes (the
 *     stream around it stays framed), and without an error it produced all raw bytes;
 *   - a segment the encoder made is within ferryi_zseg_bound, passes the prelude
 *     check, and decodes to the original bytes.
 */
#include "fuzz_common.h"
#include "compress.h"

#include <stdlib.h>
#include <string.h>

static struct ferryi_zcodec *fz_z;
static bool fz_z_ready;

static bool in_range(const uint8_t *p, uint64_t len, const uint8_t *base, uint64_t size)
{
	return base && p >= base && len <= size && (uint64_t)(p - base) <= size - len;
}

/* Decodes seg[0, wire) (prelude included) into out (raw bytes) or drops it. */
static int decode(const uint8_t *seg, uint64_t wire, uint64_t raw, uint8_t *out)
{
	struct ferryi_zdec d;
	uint64_t pos = FERRYI_ZSEG_PRELUDE;
	int err;

	ferryi_zdec_init(&d);
	ferryi_zdec_start(&d, raw, wire - FERRYI_ZSEG_PRELUDE, out);
	for (int steps = 0;; steps++) {
		uint8_t *dst;
		uint64_t len;

		/* Two pieces per chunk (header, data), a chunk per raw byte at the most. */
		FZ_CHECK(steps <= 2 * (int)(wire + 2));
		ferryi_zdec_piece(&d, &dst, &len);
		if (!len)
			break;
		if (len > wire - pos)
			fz_fail(__FILE__, __LINE__, "decoder asks for %llu bytes, %llu left in the "
				"segment", (unsigned long long)len,
				(unsigned long long)(wire - pos));
		if (dst) {
			bool ok = in_range(dst, len, d.hdr, sizeof(d.hdr)) ||
				  in_range(dst, len, d.zin, FERRYI_ZCHUNK) ||
				  in_range(dst, len, out, raw);
			if (!ok)
				fz_fail(__FILE__, __LINE__, "decoder hands out %llu bytes at %p: not "
					"its own memory nor the destination",
					(unsigned long long)len, (void *)dst);
			memcpy(dst, seg + pos, (size_t)len);
		}
		pos += len;
		ferryi_zdec_advance(fz_z, &d);
	}
	if (pos != wire)
		fz_fail(__FILE__, __LINE__, "decoder consumed %llu of the segment's %llu bytes",
			(unsigned long long)pos, (unsigned long long)wire);
	err = d.err;
	FZ_CHECK(err == 0 || err == FERRY_EPROTO || err == FERRY_ENOMEM);
	if (err)
		FZ_CHECK(memchr(d.why, '\0', sizeof(d.why)) && d.why[0] != '\0');
	else
		FZ_CHECK(d.raw_left == 0 || !out);
	ferryi_zdec_fini(&d);
	return err;
}

static void fuzz_decode(const uint8_t *seg, size_t wire, uint64_t raw_max, bool drop)
{
	char why[160];

	if (wire < FERRYI_ZSEG_PRELUDE)
		return;
	uint64_t raw = ferryi_get_le64(seg);
	why[0] = '\0';
	int rc = ferryi_zseg_check(raw, wire, raw_max, why, sizeof(why));
	if (rc < 0) {
		FZ_CHECK(rc == FERRY_EPROTO && why[0] != '\0');
		return;
	}
	FZ_CHECK(rc == 0 && raw >= 1 && raw <= raw_max);
	uint8_t *out = drop ? NULL : malloc((size_t)raw);
	FZ_CHECK(drop || out);
	(void)decode(seg, wire, raw, out);
	free(out);
}

static void fuzz_roundtrip(const uint8_t *src, size_t raw, int level)
{
	uint64_t bound = ferryi_zseg_bound(raw);
	uint8_t *seg = malloc((size_t)bound), *out = malloc(raw);
	char why[160];

	FZ_CHECK(seg && out);
	uint64_t wire = ferryi_zseg_encode(fz_z, level, seg, src, raw);
	FZ_CHECK(wire >= FERRYI_ZSEG_PRELUDE && wire <= bound);
	FZ_CHECK(ferryi_get_le64(seg) == raw);
	if (ferryi_zseg_check(raw, wire, raw, why, sizeof(why)) != 0)
		fz_fail(__FILE__, __LINE__, "an encoded segment fails the prelude check: %s", why);
	int err = decode(seg, wire, raw, out);
	if (err)
		fz_fail(__FILE__, __LINE__, "an encoded segment of %zu bytes does not decode "
			"(%s)", raw, ferry_errname(err));
	FZ_CHECK(memcmp(out, src, raw) == 0);
	(void)ferryi_compress_sample(fz_z, level, src, raw);
	(void)ferryi_zseg_pays(FERRYI_ZMODE_AUTO, raw, wire);
	free(seg);
	free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!fz_z_ready) {
		/* Without zstd in the build fz_z stays NULL: stored chunks still decode. */
		int rc = ferryi_zcodec_new(&fz_z);
		FZ_CHECK(rc == 0 || (rc == FERRY_ENOSYS && !ferryi_compress_built()));
		fz_z_ready = true;
	}
	if (size < 2)
		return 0;
	uint8_t mode = data[0], param = data[1];
	const uint8_t *p = data + 2;
	size_t n = size - 2;

	if (mode & 1) {
		if (n >= 1)
			fuzz_roundtrip(p, n, (int)(param % 8) - 2);
	} else {
		/* An exact-size copy: ASan sees any read past the segment. */
		uint8_t *seg = malloc(n ? n : 1);
		FZ_CHECK(seg != NULL);
		memcpy(seg, p, n);
		fuzz_decode(seg, n, ((uint64_t)param + 1) * 4096, mode & 2);
		free(seg);
	}
	return 0;
}
