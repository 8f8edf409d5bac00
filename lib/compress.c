/*
 * compress.c - zstd policy, sampling and the chunked segment codec (compress.h).
 *
 * Without zstd (FERRY_HAVE_ZSTD unset) everything still links: the policy says NONE,
 * no codec can be made, and the decoder refuses compressed chunks. A build without
 * zstd does not advertise the feature, so a conforming peer never sends it any.
 */
#include "compress.h"
#include "core.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef FERRY_HAVE_ZSTD
#include <zstd.h>
#endif

#define ZSAMPLE_SLICE 4096u
#define ZSAMPLE_SLICES 4u
#define ZSAMPLE_MAX (ZSAMPLE_SLICE * ZSAMPLE_SLICES)

enum { ZD_HDR = 1, ZD_DATA, ZD_DROP, ZD_DONE };

bool ferryi_compress_built(void)
{
#ifdef FERRY_HAVE_ZSTD
	return true;
#else
	return false;
#endif
}

enum ferryi_zmode ferryi_compress_mode(const struct ferry_config *cfg, unsigned op_flags,
				       uint64_t len)
{
	if (!ferryi_compress_built() || len < FERRYI_ZMIN_TRY || (op_flags & FERRY_OP_NO_COMPRESS))
		return FERRYI_ZMODE_NONE;
	if (op_flags & FERRY_OP_COMPRESS)
		return FERRYI_ZMODE_ON;
	switch (cfg->compress) {
	case FERRY_COMPRESS_ON:
		return FERRYI_ZMODE_ON;
	case FERRY_COMPRESS_AUTO:
		return len >= cfg->compress_min ? FERRYI_ZMODE_AUTO : FERRYI_ZMODE_NONE;
	default:
		return FERRYI_ZMODE_NONE;
	}
}

bool ferryi_zseg_pays(enum ferryi_zmode mode, uint64_t raw, uint64_t wire)
{
	if (mode == FERRYI_ZMODE_AUTO)
		return wire <= raw - raw / 16;
	return wire < raw;
}

uint64_t ferryi_zseg_bound(uint64_t raw)
{
	uint64_t n = (raw + FERRYI_ZCHUNK - 1) / FERRYI_ZCHUNK;

	return FERRYI_ZSEG_PRELUDE + n * FERRYI_ZCHUNK_HDR + raw;
}

int ferryi_zseg_check(uint64_t raw, uint64_t wire, uint64_t raw_max, char *why, size_t whylen)
{
	uint64_t n, lo, hi;

	if (raw == 0 || raw > raw_max) {
		if (why && whylen)
			snprintf(why, whylen, "compressed segment of %llu raw bytes (limit %llu)",
				 (unsigned long long)raw, (unsigned long long)raw_max);
		return FERRY_EPROTO;
	}
	n = raw / FERRYI_ZCHUNK + (raw % FERRYI_ZCHUNK != 0);
	lo = FERRYI_ZSEG_PRELUDE + n * (FERRYI_ZCHUNK_HDR + 1);
	hi = raw > UINT64_MAX - FERRYI_ZSEG_PRELUDE - n * FERRYI_ZCHUNK_HDR
		     ? UINT64_MAX
		     : FERRYI_ZSEG_PRELUDE + n * FERRYI_ZCHUNK_HDR + raw;
	if (wire < lo || wire > hi) {
		if (why && whylen)
			snprintf(why, whylen,
				 "compressed segment of %llu raw bytes (%llu chunks) is %llu bytes "
				 "on the wire, outside [%llu, %llu]",
				 (unsigned long long)raw, (unsigned long long)n,
				 (unsigned long long)wire, (unsigned long long)lo,
				 (unsigned long long)hi);
		return FERRY_EPROTO;
	}
	return 0;
}

/* ------------------------------------------------------------------ decoder */

void ferryi_zdec_init(struct ferryi_zdec *d)
{
	memset(d, 0, sizeof(*d));
	d->phase = ZD_DONE;
}

void ferryi_zdec_fini(struct ferryi_zdec *d)
{
	free(d->zin);
	d->zin = NULL;
	d->phase = ZD_DONE;
}

void ferryi_zdec_start(struct ferryi_zdec *d, uint64_t raw, uint64_t wire, void *out)
{
	d->out = out;
	d->raw_left = raw;
	d->wire_left = wire;
	d->err = 0;
	d->why[0] = '\0';
	d->phase = out ? ZD_HDR : ZD_DROP;
}

void ferryi_zdec_piece(const struct ferryi_zdec *d, uint8_t **dst, uint64_t *len)
{
	switch (d->phase) {
	case ZD_HDR:
		*dst = (uint8_t *)d->hdr;
		*len = FERRYI_ZCHUNK_HDR;
		return;
	case ZD_DATA:
		*dst = d->stored ? d->out : d->zin;
		*len = d->clen;
		return;
	case ZD_DROP:
		*dst = NULL;
		*len = d->wire_left;
		return;
	default:
		*dst = NULL;
		*len = 0;
		return;
	}
}

__attribute__((format(printf, 3, 4)))
static void zdec_fail(struct ferryi_zdec *d, int err, const char *fmt, ...)
{
	va_list ap;

	if (!d->err) {
		d->err = err;
		va_start(ap, fmt);
		vsnprintf(d->why, sizeof(d->why), fmt, ap);
		va_end(ap);
	}
	d->phase = d->wire_left ? ZD_DROP : ZD_DONE;
}

static int zdec_chunk(struct ferryi_zcodec *z, struct ferryi_zdec *d);

void ferryi_zdec_advance(struct ferryi_zcodec *z, struct ferryi_zdec *d)
{
	switch (d->phase) {
	case ZD_HDR: {
		uint32_t info, want = (uint32_t)FERRYI_MIN(d->raw_left, (uint64_t)FERRYI_ZCHUNK);

		/* The prelude check guarantees room for this header; stay defensive. */
		if (d->wire_left < FERRYI_ZCHUNK_HDR) {
			zdec_fail(d, FERRY_EPROTO, "segment ends inside a chunk header");
			return;
		}
		d->wire_left -= FERRYI_ZCHUNK_HDR;
		d->craw = ferryi_get_le32(d->hdr);
		info = ferryi_get_le32(d->hdr + 4);
		d->stored = (info & FERRYI_ZCHUNK_STORED) != 0;
		d->clen = info & ~FERRYI_ZCHUNK_STORED;
		if (d->craw != want) {
			zdec_fail(d, FERRY_EPROTO, "chunk of %u raw bytes where %u are due",
				  d->craw, want);
			return;
		}
		if (d->stored ? d->clen != d->craw : (d->clen == 0 || d->clen >= d->craw)) {
			zdec_fail(d, FERRY_EPROTO, "%s chunk of %u raw bytes carries %u",
				  d->stored ? "stored" : "compressed", d->craw, d->clen);
			return;
		}
		/* The last chunk ends the segment exactly; others leave room for a header. */
		if (d->craw == d->raw_left ? d->clen != d->wire_left
					   : d->wire_left < (uint64_t)d->clen + FERRYI_ZCHUNK_HDR + 1) {
			zdec_fail(d, FERRY_EPROTO,
				  "chunk of %u bytes does not fit the %llu segment bytes left "
				  "(%llu raw bytes to come)",
				  d->clen, (unsigned long long)d->wire_left,
				  (unsigned long long)d->raw_left);
			return;
		}
		if (!d->stored && !d->zin) {
			d->zin = malloc(FERRYI_ZCHUNK);
			if (!d->zin) {
				zdec_fail(d, FERRY_ENOMEM, "out of memory for a chunk buffer");
				return;
			}
		}
		d->phase = ZD_DATA;
		return;
	}
	case ZD_DATA:
		d->wire_left -= d->clen;
		if (!d->stored && zdec_chunk(z, d) < 0)
			return;
		d->out += d->craw;
		d->raw_left -= d->craw;
		d->phase = d->raw_left ? ZD_HDR : ZD_DONE;
		return;
	case ZD_DROP:
		d->wire_left = 0;
		d->phase = ZD_DONE;
		return;
	default:
		return;
	}
}

/* ------------------------------------------------------------------ zstd */

#ifdef FERRY_HAVE_ZSTD

struct ferryi_zcodec {
	ZSTD_CCtx *cctx;
	ZSTD_DCtx *dctx;
	int level;          /* level set on cctx, or INT32_MIN */
	uint8_t sample[ZSAMPLE_MAX];
	uint8_t sample_out[ZSAMPLE_MAX + 1024];
};

int ferryi_zcodec_new(struct ferryi_zcodec **out)
{
	struct ferryi_zcodec *z = calloc(1, sizeof(*z));

	if (!z)
		return FERRY_ENOMEM;
	z->cctx = ZSTD_createCCtx();
	z->dctx = ZSTD_createDCtx();
	if (!z->cctx || !z->dctx ||
	    /* The checksum turns a corrupt chunk into an error instead of wrong bytes. */
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_checksumFlag, 1)) ||
	    ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_contentSizeFlag, 1))) {
		ferryi_zcodec_free(z);
		return FERRY_ENOMEM;
	}
	z->level = INT32_MIN;
	*out = z;
	return 0;
}

void ferryi_zcodec_free(struct ferryi_zcodec *z)
{
	if (!z)
		return;
	ZSTD_freeCCtx(z->cctx);
	ZSTD_freeDCtx(z->dctx);
	free(z);
}

bool ferryi_compress_sample(struct ferryi_zcodec *z, int level, const void *src, uint64_t len)
{
	const uint8_t *s = src;
	size_t n;

	if (len <= ZSAMPLE_MAX) {
		n = (size_t)len;
	} else {
		/* Slices at both ends and evenly between: headers, bodies and tails differ. */
		uint64_t step = (len - ZSAMPLE_SLICE) / (ZSAMPLE_SLICES - 1);

		for (unsigned i = 0; i < ZSAMPLE_SLICES; i++)
			memcpy(z->sample + i * ZSAMPLE_SLICE, s + i * step, ZSAMPLE_SLICE);
		s = z->sample;
		n = ZSAMPLE_MAX;
	}
	if (n < FERRYI_ZMIN_TRY)
		return false;
	/* ZSTD_compressCCtx ignores (and keeps) the sticky parameters of the real codec. */
	size_t c = ZSTD_compressCCtx(z->cctx, z->sample_out, sizeof(z->sample_out), s, n,
				     level < 1 ? level : 1);
	return !ZSTD_isError(c) && (uint64_t)c * 8 <= (uint64_t)n * 7;
}

uint64_t ferryi_zseg_encode(struct ferryi_zcodec *z, int level, void *dst, const void *src,
			    uint64_t raw)
{
	uint8_t *out = dst;
	const uint8_t *in = src;
	uint64_t pos = FERRYI_ZSEG_PRELUDE;

	if (level != z->level &&
	    !ZSTD_isError(ZSTD_CCtx_setParameter(z->cctx, ZSTD_c_compressionLevel, level)))
		z->level = level;
	ferryi_put_le64(out, raw);
	for (uint64_t off = 0; off < raw;) {
		uint32_t n = (uint32_t)FERRYI_MIN(raw - off, (uint64_t)FERRYI_ZCHUNK);
		uint8_t *h = out + pos, *d = h + FERRYI_ZCHUNK_HDR;
		size_t c = 0;

		/* Room for less than n bytes: a chunk that does not shrink fails fast. */
		if (n >= FERRYI_ZMIN_TRY)
			c = ZSTD_compress2(z->cctx, d, n - 1, in + off, n);
		ferryi_put_le32(h, n);
		if (n < FERRYI_ZMIN_TRY || ZSTD_isError(c) || c == 0 || c >= n) {
			memcpy(d, in + off, n);
			ferryi_put_le32(h + 4, FERRYI_ZCHUNK_STORED | n);
			c = n;
		} else {
			ferryi_put_le32(h + 4, (uint32_t)c);
		}
		pos += FERRYI_ZCHUNK_HDR + c;
		off += n;
	}
	return pos;
}

static int zdec_chunk(struct ferryi_zcodec *z, struct ferryi_zdec *d)
{
	unsigned long long fcs;
	size_t fsz, r;

	/* Exactly one plain zstd frame that says it holds exactly this chunk. */
	if (d->clen < 4 || ferryi_get_le32(d->zin) != ZSTD_MAGICNUMBER) {
		zdec_fail(d, FERRY_EPROTO, "chunk is not a zstd frame");
		return FERRY_EPROTO;
	}
	fcs = ZSTD_getFrameContentSize(d->zin, d->clen);
	fsz = ZSTD_findFrameCompressedSize(d->zin, d->clen);
	if (fcs != d->craw || ZSTD_isError(fsz) || fsz != d->clen) {
		zdec_fail(d, FERRY_EPROTO,
			  "zstd frame of %u bytes announces %llu raw bytes (chunk: %u) or "
			  "spans %lld bytes", d->clen, fcs, d->craw,
			  ZSTD_isError(fsz) ? -1LL : (long long)fsz);
		return FERRY_EPROTO;
	}
	/* Output bounded by the chunk's announced size: a bomb stops at craw bytes. */
	r = ZSTD_decompressDCtx(z->dctx, d->out, d->craw, d->zin, d->clen);
	if (ZSTD_isError(r) || r != d->craw) {
		zdec_fail(d, FERRY_EPROTO, "chunk of %u raw bytes does not decode: %s", d->craw,
			  ZSTD_isError(r) ? ZSTD_getErrorName(r) : "short output");
		return FERRY_EPROTO;
	}
	return 0;
}

#else /* !FERRY_HAVE_ZSTD */

int ferryi_zcodec_new(struct ferryi_zcodec **out)
{
	*out = NULL;
	return FERRY_ENOSYS;
}

void ferryi_zcodec_free(struct ferryi_zcodec *z)
{
	(void)z;
}

bool ferryi_compress_sample(struct ferryi_zcodec *z, int level, const void *src, uint64_t len)
{
	(void)z;
	(void)level;
	(void)src;
	(void)len;
	return false;
}

uint64_t ferryi_zseg_encode(struct ferryi_zcodec *z, int level, void *dst, const void *src,
			    uint64_t raw)
{
	uint8_t *out = dst;
	uint64_t pos = FERRYI_ZSEG_PRELUDE;

	(void)z;
	(void)level;
	ferryi_put_le64(out, raw);
	for (uint64_t off = 0; off < raw;) {
		uint32_t n = (uint32_t)FERRYI_MIN(raw - off, (uint64_t)FERRYI_ZCHUNK);

		ferryi_put_le32(out + pos, n);
		ferryi_put_le32(out + pos + 4, FERRYI_ZCHUNK_STORED | n);
		memcpy(out + pos + FERRYI_ZCHUNK_HDR, (const uint8_t *)src + off, n);
		pos += FERRYI_ZCHUNK_HDR + n;
		off += n;
	}
	return pos;
}

static int zdec_chunk(struct ferryi_zcodec *z, struct ferryi_zdec *d)
{
	(void)z;
	zdec_fail(d, FERRY_EPROTO, "compressed chunk, but this build has no zstd");
	return FERRY_EPROTO;
}

#endif
