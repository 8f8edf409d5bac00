/*
 * tcp_proto.h - the TCP provider's wire format: frame layout, encoders, and decoders
 * that validate every field. No state, no I/O, no context: a unit test or a fuzzer
 * can feed any bytes to the decoders.
 *
 * A frame is a fixed 32-byte header, a fixed-size extension whose length depends on
 * the frame type only, then hdr.len payload bytes. All integers are little-endian.
 *
 *   header  off size  field
 *           0   2     magic      FERRYI_TCP_MAGIC
 *           2   1     version    FERRYI_PROTO_VERSION
 *           3   1     type       enum ferryi_tcp_type
 *           4   4     flags      MSG: core msg type (bits 0-7) | msg flags (8-15);
 *                                WRITE, READ_RESP: ZSTD | MORE; READ_REQ: ZWANT or
 *                                ZNEVER; else 0 (FERRYI_TCP_F_*)
 *           8   8     len        payload bytes after the extension, as on the wire
 *           16  8     tag        MSG: tag; else 0
 *           24  8     aux        MSG: aux; RMA frames: initiator's op id; else 0
 *
 *   type        ext  payload        extension fields
 *   HELLO       40   none           ferryi_peer_info: version u32, features u32,
 *   HELLO_ACK   40   none             idle_timeout_ms u32, probe_interval_ms u32,
 *                                     max_frame u64, eager_max u64, rx_credit u64
 *   ERROR       8    none           status i32 (negative FERRY_E*), reserved u32 = 0
 *   MSG         0    <= limit       - (limit: max(eager_max advertised, 8 + RKEY_MAX))
 *   WRITE       16   <= max_frame   key u64, remote offset u64
 *   WRITE_ACK   8    none           status i32, reserved u32 = 0
 *   READ_REQ    24   none           key u64, remote offset u64, length u64 (<= max_frame)
 *   READ_RESP   8    length or 0    status i32, reserved u32 = 0 (payload only if 0)
 *
 * Compression (negotiated: a side sends it only to a peer whose HELLO advertised
 * FERRYI_FEAT_ZSTD). A compressed payload is a segment of lib/compress.h: an 8-byte
 * raw length, then chunks of at most 256 KiB raw, each stored or one zstd frame. It
 * is flagged with FERRYI_MSGF_COMPRESSED in a MSG (EAGER messages only) and with
 * FERRYI_TCP_F_ZSTD in WRITE and READ_RESP; hdr.len is always the length on the wire,
 * and the raw length is checked (limits, wire bounds) before any chunk is read.
 * Bulk transfers that are compressed go in segments (bounded staging on the sending
 * side): several WRITE frames (key, offset of the segment) or several READ_RESP
 * frames (in order, status 0) for one op, each segment compressed or raw, all but the
 * last with FERRYI_TCP_F_MORE. A target answers a segmented WRITE once, after the
 * last segment, with the first refusal of any segment; the segments of one transfer
 * are never interleaved with another transfer's. A READ_REQ carries the reader's
 * per-op preference (ZWANT, ZNEVER); the side that sends the bytes decides.
 *
 * Decoders return 0, FERRY_EPROTO (malformed) or FERRY_EVERSION (other version) and
 * describe the problem, with the offending numbers, in `why`.
 */
#ifndef FERRY_PROVIDERS_TCP_PROTO_H
#define FERRY_PROVIDERS_TCP_PROTO_H

#include "core.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#define FERRYI_TCP_MAGIC 0xFE27u
#define FERRYI_TCP_HDR_LEN 32u
#define FERRYI_TCP_EXT_MAX 40u
#define FERRYI_TCP_HELLO_LEN 40u

/* HELLO carries every field of ferryi_peer_info: a new field must be added here. */
_Static_assert(sizeof(struct ferryi_peer_info) == FERRYI_TCP_HELLO_LEN,
	       "struct ferryi_peer_info changed: update the HELLO encoding in tcp_proto.h");
#define FERRYI_TCP_PREFIX_MAX (FERRYI_TCP_HDR_LEN + FERRYI_TCP_EXT_MAX)

enum ferryi_tcp_type {
	FERRYI_TCP_HELLO = 1,
	FERRYI_TCP_HELLO_ACK = 2,
	FERRYI_TCP_ERROR = 3,
	FERRYI_TCP_MSG = 4,
	FERRYI_TCP_WRITE = 5,
	FERRYI_TCP_WRITE_ACK = 6,
	FERRYI_TCP_READ_REQ = 7,
	FERRYI_TCP_READ_RESP = 8,
	FERRYI_TCP_TYPE_MAX_,
};

/* Header flags of the non-MSG frames. */
enum ferryi_tcp_flags {
	FERRYI_TCP_F_ZSTD = 1u << 0,   /* WRITE, READ_RESP: the payload is a zstd segment   */
	FERRYI_TCP_F_MORE = 1u << 1,   /* WRITE, READ_RESP: a segment; more of it follow    */
	FERRYI_TCP_F_ZWANT = 1u << 2,  /* READ_REQ: the reader's op asks for compression    */
	FERRYI_TCP_F_ZNEVER = 1u << 3, /* READ_REQ: the reader's op forbids it              */
};

struct ferryi_tcp_hdr {
	uint16_t magic;
	uint8_t version;
	uint8_t type;
	uint32_t flags;
	uint64_t len;
	uint64_t tag;
	uint64_t aux;
};

/* Whether a frame's payload is a compressed segment (lib/compress.h). */
static inline bool ferryi_tcp_hdr_zstd(const struct ferryi_tcp_hdr *h)
{
	if (h->type == FERRYI_TCP_MSG)
		return ((h->flags >> 8) & FERRYI_MSGF_COMPRESSED) != 0;
	return (h->type == FERRYI_TCP_WRITE || h->type == FERRYI_TCP_READ_RESP) &&
	       (h->flags & FERRYI_TCP_F_ZSTD);
}

/* The decoded extension; which fields mean something depends on the type. */
struct ferryi_tcp_ext {
	uint64_t key;
	uint64_t offset;
	uint64_t length;
	int32_t status;
	struct ferryi_peer_info info;
};

/* What this side accepts: its max_frame and the MSG payload limit (the eager_max it
 * advertised, raised to fit core control messages). */
struct ferryi_tcp_limits {
	uint64_t max_frame;
	uint64_t eager_max;
};

static inline const char *ferryi_tcp_type_name(unsigned type)
{
	static const char *const names[] = {
		"?", "HELLO", "HELLO_ACK", "ERROR", "MSG",
		"WRITE", "WRITE_ACK", "READ_REQ", "READ_RESP",
	};
	return type < FERRYI_TCP_TYPE_MAX_ ? names[type] : "?";
}

/* Extension length of a frame type (0 for unknown types: the header is refused). */
static inline uint32_t ferryi_tcp_ext_len(unsigned type)
{
	switch (type) {
	case FERRYI_TCP_HELLO:
	case FERRYI_TCP_HELLO_ACK:
		return FERRYI_TCP_HELLO_LEN;
	case FERRYI_TCP_ERROR:
	case FERRYI_TCP_WRITE_ACK:
	case FERRYI_TCP_READ_RESP:
		return 8;
	case FERRYI_TCP_WRITE:
		return 16;
	case FERRYI_TCP_READ_REQ:
		return 24;
	default:
		return 0;
	}
}

/* A status from the wire must be 0 or one of ferry's own codes. */
static inline bool ferryi_tcp_status_known(int32_t status)
{
	switch (status) {
#define FERRYI_TCP_STATUS_CASE_(name, value, text) case (value):
		FERRY_ERRORS(FERRYI_TCP_STATUS_CASE_)
#undef FERRYI_TCP_STATUS_CASE_
		return true;
	default:
		return false;
	}
}

/* Packs a core message's type and flags into the MSG header's flags. */
static inline uint32_t ferryi_tcp_msg_flags(const struct ferryi_msg *m)
{
	return (uint32_t)m->type | ((uint32_t)m->flags << 8);
}

static inline void ferryi_tcp_msg_from_hdr(const struct ferryi_tcp_hdr *h,
					   struct ferryi_msg *m)
{
	m->type = (uint8_t)(h->flags & 0xffu);
	m->flags = (uint8_t)((h->flags >> 8) & 0xffu);
	m->tag = h->tag;
	m->aux = h->aux;
}

/*
 * Encodes header and extension into out (at least FERRYI_TCP_PREFIX_MAX bytes).
 * magic and version are always ours, whatever h says. Returns the bytes written.
 */
static inline uint32_t ferryi_tcp_encode(uint8_t *out, const struct ferryi_tcp_hdr *h,
					 const struct ferryi_tcp_ext *e)
{
	uint8_t *x = out + FERRYI_TCP_HDR_LEN;
	uint32_t elen = ferryi_tcp_ext_len(h->type);

	ferryi_put_le16(out, FERRYI_TCP_MAGIC);
	out[2] = FERRYI_PROTO_VERSION;
	out[3] = h->type;
	ferryi_put_le32(out + 4, h->flags);
	ferryi_put_le64(out + 8, h->len);
	ferryi_put_le64(out + 16, h->tag);
	ferryi_put_le64(out + 24, h->aux);

	switch (h->type) {
	case FERRYI_TCP_HELLO:
	case FERRYI_TCP_HELLO_ACK:
		ferryi_put_le32(x, e->info.version);
		ferryi_put_le32(x + 4, e->info.features);
		ferryi_put_le32(x + 8, e->info.idle_timeout_ms);
		ferryi_put_le32(x + 12, e->info.probe_interval_ms);
		ferryi_put_le64(x + 16, e->info.max_frame);
		ferryi_put_le64(x + 24, e->info.eager_max);
		ferryi_put_le64(x + 32, e->info.rx_credit);
		break;
	case FERRYI_TCP_ERROR:
	case FERRYI_TCP_WRITE_ACK:
	case FERRYI_TCP_READ_RESP:
		ferryi_put_le32(x, (uint32_t)e->status);
		ferryi_put_le32(x + 4, 0);
		break;
	case FERRYI_TCP_WRITE:
		ferryi_put_le64(x, e->key);
		ferryi_put_le64(x + 8, e->offset);
		break;
	case FERRYI_TCP_READ_REQ:
		ferryi_put_le64(x, e->key);
		ferryi_put_le64(x + 8, e->offset);
		ferryi_put_le64(x + 16, e->length);
		break;
	default:
		break;
	}
	return FERRYI_TCP_HDR_LEN + elen;
}

#define FERRYI_TCP_WHY_(why, whylen, ...)                                            \
	do {                                                                         \
		if ((why) && (whylen))                                               \
			snprintf((why), (whylen), __VA_ARGS__);                      \
	} while (0)

/*
 * Decodes and validates a 32-byte header against the limits of this side. Checks,
 * in order: magic (EPROTO), version (EVERSION), type, then per type the flags, tag,
 * aux and the payload length (control frames carry none; MSG at most
 * lim->eager_max; WRITE and READ_RESP at most lim->max_frame). Lengths are on-wire
 * lengths; a compressed payload's raw length is checked when its prelude arrives.
 */
static inline int ferryi_tcp_hdr_decode(const uint8_t *in,
					const struct ferryi_tcp_limits *lim,
					struct ferryi_tcp_hdr *h, char *why, size_t whylen)
{
	uint32_t allowed = 0; /* header flags a non-MSG frame of this type may carry */

	h->magic = ferryi_get_le16(in);
	h->version = in[2];
	h->type = in[3];
	h->flags = ferryi_get_le32(in + 4);
	h->len = ferryi_get_le64(in + 8);
	h->tag = ferryi_get_le64(in + 16);
	h->aux = ferryi_get_le64(in + 24);

	if (h->magic != FERRYI_TCP_MAGIC) {
		FERRYI_TCP_WHY_(why, whylen, "bad magic 0x%04x (want 0x%04x)", h->magic,
				FERRYI_TCP_MAGIC);
		return FERRY_EPROTO;
	}
	if (h->version != FERRYI_PROTO_VERSION) {
		FERRYI_TCP_WHY_(why, whylen, "frame version %u, this side speaks %u",
				h->version, FERRYI_PROTO_VERSION);
		return FERRY_EVERSION;
	}
	if (h->type == 0 || h->type >= FERRYI_TCP_TYPE_MAX_) {
		FERRYI_TCP_WHY_(why, whylen, "unknown frame type %u", h->type);
		return FERRY_EPROTO;
	}
	if (h->len > lim->max_frame) {
		FERRYI_TCP_WHY_(why, whylen,
				"%s payload length %" PRIu64 " above max_frame %" PRIu64,
				ferryi_tcp_type_name(h->type), h->len, lim->max_frame);
		return FERRY_EPROTO;
	}

	switch (h->type) {
	case FERRYI_TCP_MSG: {
		unsigned mtype = h->flags & 0xffu, mflags = (h->flags >> 8) & 0xffu;

		if (mtype == 0 || mtype >= FERRYI_MSG_MAX_ || (h->flags >> 16) != 0 ||
		    (mflags & ~(unsigned)(FERRYI_MSGF_COMPRESSED | FERRYI_MSGF_RNDV_OFFSET)) != 0) {
			FERRYI_TCP_WHY_(why, whylen,
					"MSG flags 0x%08" PRIx32 ": bad message type %u or "
					"unknown flags", h->flags, mtype);
			return FERRY_EPROTO;
		}
		if (h->len > lim->eager_max) {
			FERRYI_TCP_WHY_(why, whylen,
					"MSG payload length %" PRIu64
					" above the message limit %" PRIu64,
					h->len, lim->eager_max);
			return FERRY_EPROTO;
		}
		return 0;
	}
	case FERRYI_TCP_WRITE:
	case FERRYI_TCP_READ_RESP:
		/* payload allowed up to max_frame (checked above) */
		allowed = FERRYI_TCP_F_ZSTD | FERRYI_TCP_F_MORE;
		break;
	default:
		if (h->len != 0) {
			FERRYI_TCP_WHY_(why, whylen,
					"control frame %s with payload length %" PRIu64,
					ferryi_tcp_type_name(h->type), h->len);
			return FERRY_EPROTO;
		}
		/* A reader's preference: one of the two, never both. */
		if (h->type == FERRYI_TCP_READ_REQ &&
		    (h->flags & (FERRYI_TCP_F_ZWANT | FERRYI_TCP_F_ZNEVER)) !=
			    (FERRYI_TCP_F_ZWANT | FERRYI_TCP_F_ZNEVER))
			allowed = FERRYI_TCP_F_ZWANT | FERRYI_TCP_F_ZNEVER;
		break;
	}
	if ((h->flags & ~allowed) != 0 || h->tag != 0) {
		FERRYI_TCP_WHY_(why, whylen,
				"%s with unknown flags 0x%08" PRIx32 " or non-zero tag 0x%" PRIx64,
				ferryi_tcp_type_name(h->type), h->flags, h->tag);
		return FERRY_EPROTO;
	}
	if ((h->type == FERRYI_TCP_HELLO || h->type == FERRYI_TCP_HELLO_ACK ||
	     h->type == FERRYI_TCP_ERROR) && h->aux != 0) {
		FERRYI_TCP_WHY_(why, whylen, "%s with non-zero aux 0x%" PRIx64,
				ferryi_tcp_type_name(h->type), h->aux);
		return FERRY_EPROTO;
	}
	return 0;
}

/*
 * Decodes and validates the extension of a frame of `type` (ferryi_tcp_ext_len(type)
 * bytes at in). HELLO/HELLO_ACK: protocol version (EVERSION), max_frame > 0 and
 * eager_max <= max_frame. Statuses: known codes only (ERROR: negative). READ_REQ:
 * length <= lim->max_frame.
 */
static inline int ferryi_tcp_ext_decode(unsigned type, const uint8_t *in,
					const struct ferryi_tcp_limits *lim,
					struct ferryi_tcp_ext *e, char *why, size_t whylen)
{
	memset(e, 0, sizeof(*e));
	switch (type) {
	case FERRYI_TCP_HELLO:
	case FERRYI_TCP_HELLO_ACK:
		e->info.version = ferryi_get_le32(in);
		e->info.features = ferryi_get_le32(in + 4);
		e->info.idle_timeout_ms = ferryi_get_le32(in + 8);
		e->info.probe_interval_ms = ferryi_get_le32(in + 12);
		e->info.max_frame = ferryi_get_le64(in + 16);
		e->info.eager_max = ferryi_get_le64(in + 24);
		e->info.rx_credit = ferryi_get_le64(in + 32); /* 0 = no limit: any value */
		if (e->info.version != FERRYI_PROTO_VERSION) {
			FERRYI_TCP_WHY_(why, whylen, "peer protocol version %" PRIu32
					", this side speaks %u",
					e->info.version, FERRYI_PROTO_VERSION);
			return FERRY_EVERSION;
		}
		if (e->info.max_frame == 0 || e->info.eager_max > e->info.max_frame) {
			FERRYI_TCP_WHY_(why, whylen,
					"%s with max_frame %" PRIu64 " and eager_max %" PRIu64,
					ferryi_tcp_type_name(type), e->info.max_frame,
					e->info.eager_max);
			return FERRY_EPROTO;
		}
		return 0;
	case FERRYI_TCP_ERROR:
	case FERRYI_TCP_WRITE_ACK:
	case FERRYI_TCP_READ_RESP: {
		uint32_t rsv = ferryi_get_le32(in + 4);

		e->status = (int32_t)ferryi_get_le32(in);
		if (!ferryi_tcp_status_known(e->status) || rsv != 0 ||
		    (type == FERRYI_TCP_ERROR && e->status == 0)) {
			FERRYI_TCP_WHY_(why, whylen,
					"%s with status %" PRId32 " (reserved 0x%" PRIx32 ")",
					ferryi_tcp_type_name(type), e->status, rsv);
			return FERRY_EPROTO;
		}
		return 0;
	}
	case FERRYI_TCP_WRITE:
		e->key = ferryi_get_le64(in);
		e->offset = ferryi_get_le64(in + 8);
		return 0;
	case FERRYI_TCP_READ_REQ:
		e->key = ferryi_get_le64(in);
		e->offset = ferryi_get_le64(in + 8);
		e->length = ferryi_get_le64(in + 16);
		if (e->length > lim->max_frame) {
			FERRYI_TCP_WHY_(why, whylen,
					"READ_REQ length %" PRIu64 " above max_frame %" PRIu64,
					e->length, lim->max_frame);
			return FERRY_EPROTO;
		}
		return 0;
	case FERRYI_TCP_MSG:
		return 0;
	default:
		FERRYI_TCP_WHY_(why, whylen, "unknown frame type %u", type);
		return FERRY_EPROTO;
	}
}

#endif /* FERRY_PROVIDERS_TCP_PROTO_H */
