/*
 * fuzz_tcp_frame.c - the TCP provider's frame decoders (tcp_proto.h), called directly:
 * header, per-type extension, and the HELLO / HELLO_ACK handshake.
 *
 * Input: byte 0 picks the receive limits (see LIMITS); the rest is a stream of frames,
 * each a 32-byte header, its extension and the payload the header announces (skipped,
 * up to what is left). Decoding stops at the first frame refused.
 *
 * Invariants beyond "no crash":
 *   - decoders return 0, FERRY_EPROTO or FERRY_EVERSION, and always say why they
 *     refused (whatever the size of the `why` buffer, NUL-terminated, never overrun);
 *   - an accepted header respects the limits it was given, and its type is known;
 *   - an accepted extension respects the per-type rules (HELLO version and sizes,
 *     known statuses, READ_REQ length);
 *   - an accepted header + extension re-encodes (ferryi_tcp_encode) to exactly the
 *     input bytes: the format is canonical, so nothing reserved can carry data;
 *   - the extension decoder reads no more than ferryi_tcp_ext_len(type) bytes, for
 *     every known type and the one the input names (ASan, on exact-size copies).
 */
#include "fuzz_common.h"
#include "tcp_proto.h"

#include <stdlib.h>
#include <string.h>

static const struct ferryi_tcp_limits LIMITS[] = {
	{.max_frame = 1ull << 40, .eager_max = 65536},   /* the defaults               */
	{.max_frame = 1u << 20, .eager_max = 4096},      /* a small configuration      */
	{.max_frame = UINT64_MAX, .eager_max = UINT64_MAX}, /* anything goes           */
	{.max_frame = 0, .eager_max = 0},                /* nothing goes               */
};

static void check_why(const char *why, size_t cap)
{
	if (cap == 0)
		return;
	FZ_CHECK(memchr(why, '\0', cap) != NULL);
}

static bool status_known(int32_t st)
{
	switch (st) {
#define FZ_CASE_(name, value, text) case (value):
		FERRY_ERRORS(FZ_CASE_)
#undef FZ_CASE_
		return true;
	default:
		return false;
	}
}

/* The extension decoder on its own, for any type, on an exact-size copy. */
static void ext_any_type(unsigned type, const uint8_t *in, size_t avail,
			 const struct ferryi_tcp_limits *lim)
{
	uint32_t elen = ferryi_tcp_ext_len(type);
	struct ferryi_tcp_ext e;
	char why[96];

	FZ_CHECK(elen <= FERRYI_TCP_EXT_MAX);
	if (avail < elen)
		return;
	uint8_t *copy = malloc(elen ? elen : 1);
	FZ_CHECK(copy != NULL);
	memcpy(copy, in, elen);
	why[0] = '\0';
	int rc = ferryi_tcp_ext_decode(type, copy, lim, &e, why, sizeof(why));
	FZ_CHECK(rc == 0 || rc == FERRY_EPROTO || rc == FERRY_EVERSION);
	check_why(why, sizeof(why));
	if (rc < 0)
		FZ_CHECK(why[0] != '\0');
	free(copy);
	(void)ferryi_tcp_type_name(type);
}

static void check_ext(const struct ferryi_tcp_hdr *h, const struct ferryi_tcp_ext *e,
		      const struct ferryi_tcp_limits *lim)
{
	switch (h->type) {
	case FERRYI_TCP_HELLO:
	case FERRYI_TCP_HELLO_ACK:
		FZ_CHECK(e->info.version == FERRYI_PROTO_VERSION);
		FZ_CHECK(e->info.max_frame > 0 && e->info.eager_max <= e->info.max_frame);
		break;
	case FERRYI_TCP_ERROR:
		FZ_CHECK(e->status < 0 && status_known(e->status));
		break;
	case FERRYI_TCP_WRITE_ACK:
	case FERRYI_TCP_READ_RESP:
		FZ_CHECK(e->status <= 0 && status_known(e->status));
		break;
	case FERRYI_TCP_READ_REQ:
		FZ_CHECK(e->length <= lim->max_frame);
		break;
	default:
		break;
	}
}

static void check_hdr(const struct ferryi_tcp_hdr *h, const struct ferryi_tcp_limits *lim)
{
	FZ_CHECK(h->magic == FERRYI_TCP_MAGIC && h->version == FERRYI_PROTO_VERSION);
	FZ_CHECK(h->type > 0 && h->type < FERRYI_TCP_TYPE_MAX_);
	FZ_CHECK(h->len <= lim->max_frame);
	if (h->type == FERRYI_TCP_MSG) {
		struct ferryi_msg m;

		FZ_CHECK(h->len <= lim->eager_max);
		ferryi_tcp_msg_from_hdr(h, &m);
		FZ_CHECK(m.type > 0 && m.type < FERRYI_MSG_MAX_);
		FZ_CHECK((m.flags & ~(unsigned)(FERRYI_MSGF_COMPRESSED | FERRYI_MSGF_RNDV_OFFSET)) ==
			 0);
		FZ_CHECK(ferryi_tcp_msg_flags(&m) == h->flags);
	} else {
		uint32_t allowed = 0;

		if (h->type == FERRYI_TCP_WRITE || h->type == FERRYI_TCP_READ_RESP)
			allowed = FERRYI_TCP_F_ZSTD | FERRYI_TCP_F_MORE;
		if (h->type == FERRYI_TCP_READ_REQ) {
			allowed = FERRYI_TCP_F_ZWANT | FERRYI_TCP_F_ZNEVER;
			/* A preference is one of the two, never both. */
			FZ_CHECK((h->flags & allowed) != allowed);
		}
		FZ_CHECK((h->flags & ~allowed) == 0 && h->tag == 0);
		if (h->type != FERRYI_TCP_WRITE && h->type != FERRYI_TCP_READ_RESP)
			FZ_CHECK(h->len == 0);
		if (h->type == FERRYI_TCP_HELLO || h->type == FERRYI_TCP_HELLO_ACK ||
		    h->type == FERRYI_TCP_ERROR)
			FZ_CHECK(h->aux == 0);
	}
}

/* Decodes one frame at in; returns the bytes it spans, or 0 to stop. */
static size_t one_frame(const uint8_t *in, size_t avail, const struct ferryi_tcp_limits *lim,
			unsigned whysel)
{
	static const size_t why_caps[] = {200, 1, 8, 0};
	size_t cap = why_caps[whysel % FERRYI_ARRAY_LEN(why_caps)];
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e;
	char *why = cap ? malloc(cap) : NULL;
	size_t span = 0;
	int rc;

	if (avail < FERRYI_TCP_HDR_LEN)
		goto out;
	uint8_t hdr[FERRYI_TCP_HDR_LEN];
	memcpy(hdr, in, sizeof(hdr));
	if (why)
		why[0] = '\0';
	rc = ferryi_tcp_hdr_decode(hdr, lim, &h, why, cap);
	FZ_CHECK(rc == 0 || rc == FERRY_EPROTO || rc == FERRY_EVERSION);
	check_why(why, cap);
	if (rc < 0) {
		if (cap > 1)
			FZ_CHECK(why[0] != '\0');
		goto out;
	}
	check_hdr(&h, lim);

	uint32_t elen = ferryi_tcp_ext_len(h.type);
	if (avail < FERRYI_TCP_HDR_LEN + elen)
		goto out;
	uint8_t *ext = malloc(elen ? elen : 1);
	FZ_CHECK(ext != NULL);
	memcpy(ext, in + FERRYI_TCP_HDR_LEN, elen);
	if (why)
		why[0] = '\0';
	rc = ferryi_tcp_ext_decode(h.type, ext, lim, &e, why, cap);
	free(ext);
	FZ_CHECK(rc == 0 || rc == FERRY_EPROTO || rc == FERRY_EVERSION);
	check_why(why, cap);
	if (rc < 0) {
		if (cap > 1)
			FZ_CHECK(why[0] != '\0');
		goto out;
	}
	check_ext(&h, &e, lim);

	/* Canonical: encoding what was decoded gives the same bytes back. */
	uint8_t re[FERRYI_TCP_PREFIX_MAX];
	uint32_t n = ferryi_tcp_encode(re, &h, &e);
	FZ_CHECK(n == FERRYI_TCP_HDR_LEN + elen);
	if (memcmp(re, in, n) != 0)
		fz_fail(__FILE__, __LINE__, "%s frame accepted but does not re-encode to the "
			"same %u bytes", ferryi_tcp_type_name(h.type), n);

	span = FERRYI_TCP_HDR_LEN + elen;
	span += (size_t)FERRYI_MIN(h.len, (uint64_t)(avail - span));
out:
	free(why);
	return span;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const struct ferryi_tcp_limits *lim = &LIMITS[data[0] % FERRYI_ARRAY_LEN(LIMITS)];
	unsigned whysel = data[0] >> 2;
	const uint8_t *p = data + 1;
	size_t left = size - 1;

	/* The extension decoder for every known type (and the first header's type, known
	 * or not) on the bytes after the first header. */
	if (left > FERRYI_TCP_HDR_LEN) {
		for (unsigned t = 0; t <= FERRYI_TCP_TYPE_MAX_; t++)
			ext_any_type(t, p + FERRYI_TCP_HDR_LEN, left - FERRYI_TCP_HDR_LEN, lim);
		ext_any_type(p[3], p + FERRYI_TCP_HDR_LEN, left - FERRYI_TCP_HDR_LEN, lim);
	}

	for (int frames = 0; frames < 64 && left > 0; frames++) {
		size_t span = one_frame(p, left, lim, whysel + (unsigned)frames);

		if (span == 0)
			break;
		p += span;
		left -= span;
	}
	return 0;
}
