/*
 * compress.h - zstd for providers: when to compress (policy and sampling), and the
 * segment format that carries a compressed payload in bounded chunks.
 *
 * Segment: the payload of one compressed frame. All integers little-endian.
 *
 *     raw_len  u64        bytes the segment decodes to (>= 1; the frame's limit)
 *     chunk    x n        n = ceil(raw_len / FERRYI_ZCHUNK), in order
 *   chunk:
 *     raw      u32        min(FERRYI_ZCHUNK, raw bytes still to come): fixed by raw_len
 *     info     u32        bit 31 STORED; bits 0-30: data bytes that follow
 *     data                STORED: the raw bytes themselves (length == raw);
 *                         else one zstd frame, 0 < length < raw, with the zstd magic,
 *                         content size == raw and a checksum
 *
 * A decoder therefore knows every chunk's output size before it decompresses: each
 * chunk lands straight in the destination (a posted receive buffer, a registered
 * region) with the output bounded by that size, so a decompression bomb has nowhere
 * to grow, and the only buffer it needs is one FERRYI_ZCHUNK for the compressed bytes
 * of the chunk in progress. The segment's length on the wire (prelude included) lies
 * in [8 + 9n, 8 + 8n + raw_len]; each chunk header is checked against what is left of
 * it before its data is read. A malformed chunk spoils that segment only: the decoder
 * records the error and drops the rest of the segment's bytes, so the stream around
 * it stays framed.
 *
 * Threads: a codec and a decoder are used under their owner's lock (the context
 * lock); nothing here locks.
 */
#ifndef FERRY_LIB_COMPRESS_H
#define FERRY_LIB_COMPRESS_H

#include "ferry/ferry.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define FERRYI_ZCHUNK (256u * 1024u)   /* raw bytes per chunk (the last may be less) */
#define FERRYI_ZCHUNK_HDR 8u
#define FERRYI_ZCHUNK_STORED 0x80000000u
#define FERRYI_ZSEG_PRELUDE 8u
/* Payloads below this never compress (a zstd frame alone costs ~20 bytes). */
#define FERRYI_ZMIN_TRY 64u

/* Whether this build has zstd. */
bool ferryi_compress_built(void);

/* ------------------------------------------------------------------ policy */

enum ferryi_zmode {
	FERRYI_ZMODE_NONE = 0, /* send raw                                              */
	FERRYI_ZMODE_ON,       /* compress; raw only where it saves nothing at all      */
	FERRYI_ZMODE_AUTO,     /* compress where a sample says it pays                  */
};

/*
 * The mode for one payload of len bytes, from the operation's FERRY_OP_* flags and
 * the context policy: FERRY_OP_NO_COMPRESS wins, then FERRY_OP_COMPRESS (ON), then
 * cfg->compress (auto only for len >= cfg->compress_min). NONE without zstd and for
 * payloads below FERRYI_ZMIN_TRY. Whether the peer decodes is the caller's check.
 */
enum ferryi_zmode ferryi_compress_mode(const struct ferry_config *cfg, unsigned op_flags,
				       uint64_t len);

/* ------------------------------------------------------------------ codec */

/* Compression and decompression state, one per provider instance (context). */
struct ferryi_zcodec;

/* Returns 0, FERRY_ENOMEM, or FERRY_ENOSYS (built without zstd). */
int ferryi_zcodec_new(struct ferryi_zcodec **out);
void ferryi_zcodec_free(struct ferryi_zcodec *z); /* NULL is accepted */

/*
 * Samples [src, src+len): up to four 4 KiB slices spread over it, compressed at level
 * min(level, 1). True when the sample shrinks to at most 7/8: worth compressing.
 */
bool ferryi_compress_sample(struct ferryi_zcodec *z, int level, const void *src,
			    uint64_t len);

/*
 * Whether a segment that encoded raw bytes into wire bytes is worth sending compressed
 * rather than raw: ON wants any saving, AUTO at least 1/16 (below that the receiver's
 * decompression costs more than the link saves).
 */
bool ferryi_zseg_pays(enum ferryi_zmode mode, uint64_t raw, uint64_t wire);

/* ------------------------------------------------------------------ encoder */

/* Bytes a segment of raw bytes may need (every chunk stored): 8 + 8n + raw. */
uint64_t ferryi_zseg_bound(uint64_t raw);

/*
 * Encodes src (raw >= 1 bytes) into dst (ferryi_zseg_bound(raw) bytes) at the given
 * zstd level; chunks that do not shrink are stored. Returns the segment's length.
 */
uint64_t ferryi_zseg_encode(struct ferryi_zcodec *z, int level, void *dst, const void *src,
			    uint64_t raw);

/* ------------------------------------------------------------------ decoder */

/*
 * Checks a segment's prelude before anything else is read: raw in [1, raw_max] and the
 * segment's wire length (prelude included) within the bounds its chunk count allows.
 * Returns 0 or FERRY_EPROTO with the numbers in why.
 */
int ferryi_zseg_check(uint64_t raw, uint64_t wire, uint64_t raw_max, char *why,
		      size_t whylen);

/*
 * Incremental decoder of one segment's chunks (after the prelude), for stream
 * providers that read straight into the destination:
 *
 *     ferryi_zdec_start(d, raw, wire - 8, out);
 *     for (;;) {
 *             ferryi_zdec_piece(d, &dst, &len);   // where the next wire bytes go
 *             if (!len) break;                    // segment complete
 *             ... receive exactly len bytes into dst (NULL: read and drop them) ...
 *             ferryi_zdec_advance(z, d);
 *     }
 *     d->err: 0, or why the segment was refused (the rest of it was dropped).
 *
 * out NULL drops the whole segment unread. Stored chunks arrive straight in out;
 * compressed ones in the decoder's chunk buffer (allocated on first use, kept until
 * ferryi_zdec_fini) and are decompressed into out, at most the chunk's raw size.
 */
struct ferryi_zdec {
	uint8_t *out;        /* where the next chunk's raw bytes go; NULL = dropping */
	uint64_t raw_left;   /* raw bytes still to produce                          */
	uint64_t wire_left;  /* segment bytes not yet handed out as pieces          */
	uint32_t craw, clen; /* chunk in progress                                   */
	bool stored;
	uint8_t phase;
	int err;             /* 0, FERRY_EPROTO (malformed), FERRY_ENOMEM           */
	uint8_t hdr[FERRYI_ZCHUNK_HDR];
	uint8_t *zin;        /* FERRYI_ZCHUNK bytes, or NULL until needed           */
	char why[160];       /* what was wrong, when err != 0                       */
};

void ferryi_zdec_init(struct ferryi_zdec *d);
void ferryi_zdec_fini(struct ferryi_zdec *d);
void ferryi_zdec_start(struct ferryi_zdec *d, uint64_t raw, uint64_t wire, void *out);
void ferryi_zdec_piece(const struct ferryi_zdec *d, uint8_t **dst, uint64_t *len);
void ferryi_zdec_advance(struct ferryi_zcodec *z, struct ferryi_zdec *d);

#endif /* FERRY_LIB_COMPRESS_H */
