/*
 * tcp_z.c - compression on the TCP provider: what to compress, the segments of items
 * sent in segments, and the decoding of compressed payloads.
 *
 * Sending. An item (a user MSG, a WRITE, or a READ_RESP) whose payload may be
 * compressed gets a mode, ON or AUTO (ferryi_tcp_z_mode), when it is posted. It is
 * then sent in segments, each prepared when the writer reaches it (ferryi_tcp_z_frame):
 *   - a MSG is one segment, the whole message (only messages up to FERRYI_TCP_ZSEG get
 *     a mode); WRITE and READ_RESP go in segments of FERRYI_TCP_ZSEG raw bytes, all but
 *     the last flagged MORE;
 *   - AUTO compresses only where that is faster: once the link has been measured (the
 *     rate of acknowledged bytes while the socket is full) and compressing moves at
 *     least an eighth more (min(compression speed, ratio x link) against the link).
 *     Until then, and on links faster than zstd (loopback, fast networks), it sends
 *     raw, compressing one segment in 32 (then 64 ... 1024) to measure again;
 *   - AUTO also samples a segment first (compress.h). A failed sample sends it raw,
 *     straight from the user's memory (zero-copy where that applies), and each further
 *     failure doubles the next raw segment, up to 64 MiB: incompressible data costs one
 *     16 KiB sample per 64 MiB. A segment that compressed well lets the next one skip
 *     its sample. Across items, an endpoint remembers too: after an item that did not
 *     compress, the next 1, 3, 7 ... 63 items go raw unsampled, so a stream of small
 *     incompressible messages pays one sample in 64;
 *   - compressing writes into the endpoint's staging buffer (one segment, bounded);
 *     when the result does not pay, the segment goes raw instead.
 * The staging buffer belongs to the first item, in writing order, that needs it. An
 * item further back that staged a segment but wrote no byte of it gives it up (and
 * prepares it again later), so the writer never waits on an item behind the one it
 * is writing.
 *
 * Receiving. A compressed frame is refused unless we advertised zstd. Its prelude
 * (the raw length) is read and checked first; then the frame's handler chooses the
 * destination for that raw length exactly as for a raw frame, and the chunks are
 * decoded into it piece by piece (ferryi_zdec). A chunk that does not decode spoils
 * its operation only: the rest of the frame is read and dropped, and the operation
 * completes with FERRY_EPROTO (a buffered unexpected message, which has no operation
 * yet, fails the endpoint instead).
 */
#define _GNU_SOURCE
#include "tcp_internal.h"

#include <inttypes.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define ZS_FL_SHIFT 8
#define ZS_FL_MASK (0xffull << ZS_FL_SHIFT)
#define ZS_BO_SHIFT 16
#define ZS_BO_MASK (0xffull << ZS_BO_SHIFT)
#define ZS_GOOD (1ull << 24)
/* Segments of at most this size are compressed without sampling first. */
#define Z_SAMPLE_FROM (16u * 1024u)
/* A link-rate sample: the socket full for this long, this many bytes acknowledged. */
#define Z_BL_MIN_NS (10u * 1000u * 1000u)
#define Z_BL_MIN_BYTES (256u * 1024u)
/*
 * Auto compresses only where that moves an eighth more than raw: compressed, a
 * connection moves min(compression speed, ratio x link) raw bytes per second, raw it
 * moves the link's rate (the speeds vary from run to run; a gain that small is not
 * worth the CPU). Where it does not, one segment in 32 is compressed to measure
 * again, then one in 64 ... 1024 while the answer stays the same.
 */
#define Z_SLOW_PROBE_MIN 32u
#define Z_SLOW_PROBE_MAX 1024u

bool ferryi_tcp_zauto_assume_slow;

static uint64_t z_mono_ns(void)
{
	struct timespec ts;

	/* Real time even under a test clock: these are speeds of real things. */
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Bytes the peer has acknowledged on this socket (TCP_INFO), or 0 if unknown. */
static uint64_t z_bytes_acked(int fd)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);

	memset(&ti, 0, sizeof(ti));
	if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0 ||
	    len < offsetof(struct tcp_info, tcpi_bytes_acked) + sizeof(ti.tcpi_bytes_acked))
		return 0;
	return ti.tcpi_bytes_acked;
}

/*
 * Auto measures the link while the socket stays full (we offer more than it takes):
 * the bytes the peer acknowledged over such a window, at least 10 ms long, divided by
 * its length. Acknowledged bytes, not bytes written: those include the growth of the
 * socket buffer and the bursts a shaper lets through. The window ends when the queue
 * runs dry (ferryi_tcp_flush resets zbl_t0); samples are averaged (1/4 new).
 */
void ferryi_tcp_z_tx_full(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	uint64_t now, acked;

	now = z_mono_ns();
	if (te->zbl_t0 && now - te->zbl_t0 < Z_BL_MIN_NS)
		return; /* the window goes on */
	acked = z_bytes_acked(te->fd);
	if (te->zbl_t0 && acked >= te->zbl_bytes + Z_BL_MIN_BYTES) {
		uint64_t rate = (uint64_t)((double)(acked - te->zbl_bytes) * 1e9 /
					   (double)(now - te->zbl_t0));

		te->zwire_bps = te->zwire_bps ? (3 * te->zwire_bps + rate) / 4 : rate;
	}
	te->zbl_t0 = acked ? now : 0;
	te->zbl_bytes = acked; /* the window's start, in acknowledged bytes */
}

/*
 * Whether auto may compress now: only once the link is known to be slower than
 * compression. Elsewhere (loopback, a fast network) zstd, not the wire, would be the
 * bottleneck and the transfer slower than raw. Returns Z_LINK_SLOW (compress),
 * Z_LINK_UNKNOWN (raw until measured) or Z_LINK_FAST (raw; one segment now and then
 * compresses to measure again).
 */
enum { Z_LINK_SLOW, Z_LINK_UNKNOWN, Z_LINK_FAST };

static int z_auto_link(struct ferryi_tcp_ep *te)
{
	uint64_t link = te->zwire_bps;

	if (ferryi_tcp_zauto_assume_slow)
		return Z_LINK_SLOW; /* tests: judge the data, not the speeds */
	if (!link)
		return Z_LINK_UNKNOWN;
	/* ratio in 1/16ths, of the last segment that compressed (none yet: assume 2) */
	uint64_t by_ratio = link / 16 * (te->zratio16 ? te->zratio16 : 32);
	uint64_t gain = FERRYI_MIN(te->zcomp_bps, by_ratio);

	if (!te->zcomp_bps || gain > link + link / 8) {
		te->zslow_int = 0;
		return Z_LINK_SLOW;
	}
	if (te->zslow_skip) {
		te->zslow_skip--;
		return Z_LINK_FAST;
	}
	/* This one compresses, to measure again; the next probe comes later. */
	te->zslow_int = te->zslow_int ? FERRYI_MIN(te->zslow_int * 2, Z_SLOW_PROBE_MAX)
				      : Z_SLOW_PROBE_MIN;
	te->zslow_skip = te->zslow_int - 1;
	return Z_LINK_SLOW;
}

struct ferryi_tcp_inst *ferryi_tcp_inst(struct ferry_ep *ep)
{
	return ferryi_inst_priv(ep->pi);
}

struct ferryi_zcodec *ferryi_tcp_codec(struct ferry_ep *ep)
{
	struct ferryi_tcp_inst *ti = ferryi_tcp_inst(ep);

	if (!ti->z && !ti->z_failed) {
		int rc = ferryi_zcodec_new(&ti->z);

		if (rc < 0) {
			ti->z_failed = true;
			ti->z = NULL;
			FERRYI_WARN(ep->ctx, "tcp: no zstd contexts (%s): sending uncompressed",
				    ferry_strerror(rc));
		}
	}
	return ti->z;
}

enum ferryi_zmode ferryi_tcp_z_mode(struct ferry_ep *ep, unsigned op_flags, uint64_t len)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	/* Negotiated: only toward a peer that said it decodes zstd. */
	if (!(te->peer.features & FERRYI_FEAT_ZSTD))
		return FERRYI_ZMODE_NONE;
	return ferryi_compress_mode(ferry_ctx_config(ep->ctx), op_flags, len);
}

/* ------------------------------------------------------------------ sending */

struct z_item {
	uint64_t *zs;
	const uint64_t *sent;
	const uint8_t *src;
	uint64_t total;
	unsigned kind;
};

static void z_item(struct ferryi_op *op, struct ferryi_tcp_ctl *ctl, struct z_item *it)
{
	if (op) {
		it->zs = &op->prov[FERRYI_TCP_OP_ZS];
		it->sent = &op->prov[FERRYI_TCP_OP_SENT];
		it->src = op->buf;
		it->total = op->len;
		it->kind = (unsigned)op->prov[FERRYI_TCP_OP_KIND];
	} else {
		it->zs = ctl->zs;
		it->sent = &ctl->sent;
		it->src = ctl->payload;
		it->total = ctl->payload_len;
		it->kind = FERRYI_TCP_READ_RESP;
	}
}

void ferryi_tcp_z_unstage(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	uint64_t *zs = te->ztx_zs;

	if (!zs)
		return;
	/* Its segment is forgotten; it prepares one again when the writer reaches it. */
	zs[FERRYI_TCP_ZS_SEG] = 0;
	zs[FERRYI_TCP_ZS_WIRE] = 0;
	zs[FERRYI_TCP_ZS_CTL] &= ~ZS_FL_MASK;
	te->ztx_zs = NULL;
	te->ztx_sent = NULL;
}

/* Takes the staging buffer for it: 1, 0 = wait (an item ahead holds it), -1 = none. */
static int z_stage_get(struct ferry_ep *ep, struct z_item *it, bool first)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	if (te->ztx_zs && te->ztx_zs != it->zs) {
		/* Its holder is ahead of us if this batch has it or it wrote bytes already
		 * (a frame written in part always goes first); else it is behind us. */
		bool ahead = te->ztx_gen == te->batch_gen || *te->ztx_sent != 0;

		if (ahead && !first)
			return 0;
		ferryi_tcp_z_unstage(ep);
	}
	if (!te->ztx) {
		te->ztx = malloc(ferryi_zseg_bound(FERRYI_TCP_ZSEG));
		if (!te->ztx) {
			FERRYI_DBG(ep->ctx, "tcp: no memory for a compression buffer: sending raw");
			return -1;
		}
	}
	te->ztx_zs = it->zs;
	te->ztx_sent = it->sent;
	return 1;
}

/* Prepares it's next segment. Returns false when it must wait for the staging buffer. */
static bool z_prepare(struct ferry_ep *ep, struct z_item *it, bool first)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_inst *ti = ferryi_tcp_inst(ep);
	const struct ferry_config *cfg = ferry_ctx_config(ep->ctx);
	uint64_t ctl = it->zs[FERRYI_TCP_ZS_CTL], off = it->zs[FERRYI_TCP_ZS_OFF];
	uint64_t left = it->total - off, wire;
	enum ferryi_zmode mode = (enum ferryi_zmode)(ctl & 0xff);
	unsigned backoff = (unsigned)((ctl & ZS_BO_MASK) >> ZS_BO_SHIFT), fl = 0;
	bool segmented = it->kind != FERRYI_TCP_MSG, sampled_out = false;
	uint64_t seg = segmented ? FERRYI_MIN(left, (uint64_t)FERRYI_TCP_ZSEG) : left;
	struct ferryi_zcodec *z = ferryi_tcp_codec(ep);
	bool try_z = z != NULL, judged = false;
	int link = try_z && mode == FERRYI_ZMODE_AUTO ? z_auto_link(te) : Z_LINK_SLOW;

	if (link != Z_LINK_SLOW) {
		/* The link is faster than compression, or not measured yet: raw, without
		 * judging the data; on a fast link in 16 MiB segments (fewer frames),
		 * until it is measured in one (the rest may compress). */
		try_z = false;
		if (segmented && link == Z_LINK_FAST)
			seg = FERRYI_MIN(left, (uint64_t)FERRYI_TCP_ZSEG << 4);
	} else if (try_z && mode == FERRYI_ZMODE_AUTO && !(ctl & ZS_GOOD)) {
		if (off == 0 && te->zauto_skip) {
			/* Recent items on this endpoint did not compress: trust that. */
			te->zauto_skip--;
			try_z = false;
			sampled_out = true;
		} else if (seg > Z_SAMPLE_FROM) {
			ti->z_samples++;
			try_z = ferryi_compress_sample(z, cfg->compress_level, it->src + off, seg);
			sampled_out = !try_z;
			judged = off == 0;
		} else {
			judged = off == 0; /* small: judged by compressing it */
		}
	}
	if (try_z) {
		int r = z_stage_get(ep, it, first);

		if (r == 0)
			return false;
		try_z = r > 0;
	}
	if (try_z) {
		uint64_t t0 = mode == FERRYI_ZMODE_AUTO ? z_mono_ns() : 0;

		wire = ferryi_zseg_encode(z, cfg->compress_level, te->ztx, it->src + off, seg);
		te->tx_zcharge += seg;
		if (t0 && seg >= Z_BL_MIN_BYTES) {
			uint64_t dt = z_mono_ns() - t0;
			uint64_t rate = (uint64_t)((double)seg * 1e9 / (double)(dt ? dt : 1));

			te->zcomp_bps = te->zcomp_bps ? (3 * te->zcomp_bps + rate) / 4 : rate;
		}
		if (ferryi_zseg_pays(mode, seg, wire)) {
			/* The ratio the link decision assumes: of data that compresses (what
			 * does not is the sampling's business, not the link's). */
			if (t0)
				te->zratio16 = (uint32_t)FERRYI_MIN(seg * 16 / wire, 16u * 1024u);
			fl = FERRYI_TCP_F_ZSTD;
			ctl |= ZS_GOOD;
			backoff = 0;
		} else {
			te->ztx_zs = NULL; /* raw after all: the staging buffer is free again */
			te->ztx_sent = NULL;
			ctl &= ~ZS_GOOD;
		}
	}
	if (judged) {
		/*
		 * The endpoint's memory for auto: items that do not compress make the next
		 * 1, 3, 7 ... 63 items skip their sample and go raw (a stream of small
		 * incompressible messages then samples once in 64); one that compresses
		 * resets it.
		 */
		if (fl & FERRYI_TCP_F_ZSTD) {
			te->zauto_bo = 0;
		} else {
			if (te->zauto_bo < FERRYI_TCP_ZBACKOFF_MAX)
				te->zauto_bo++;
			te->zauto_skip = (1u << te->zauto_bo) - 1;
		}
	}
	if (fl & FERRYI_TCP_F_ZSTD) {
		ti->z_segments++;
	} else {
		ti->z_raw_segments++;
		if (sampled_out && segmented) {
			/* Raw, and more of it the longer the data has not compressed (this
			 * item's failures, or this endpoint's recent items'). */
			unsigned bo = FERRYI_MAX(backoff, (unsigned)te->zauto_bo);

			seg = FERRYI_MIN(left, (uint64_t)FERRYI_TCP_ZSEG << bo);
			if (backoff < FERRYI_TCP_ZBACKOFF_MAX)
				backoff++;
		}
		wire = seg;
	}
	if (segmented && seg < left)
		fl |= FERRYI_TCP_F_MORE;
	ctl &= ~(ZS_FL_MASK | ZS_BO_MASK);
	ctl |= (uint64_t)fl << ZS_FL_SHIFT | (uint64_t)backoff << ZS_BO_SHIFT;
	it->zs[FERRYI_TCP_ZS_CTL] = ctl;
	it->zs[FERRYI_TCP_ZS_SEG] = seg;
	it->zs[FERRYI_TCP_ZS_WIRE] = wire;
	return true;
}

uint32_t ferryi_tcp_z_frame(struct ferry_ep *ep, struct ferryi_op *op,
			    struct ferryi_tcp_ctl *ctl, bool first, uint8_t *prefix,
			    const void **payload, uint64_t *plen, bool *more, bool *from_user)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e;
	struct z_item it;
	unsigned fl;
	uint64_t off;

	z_item(op, ctl, &it);
	if (!it.zs[FERRYI_TCP_ZS_SEG] && !z_prepare(ep, &it, first))
		return 0;
	fl = (unsigned)((it.zs[FERRYI_TCP_ZS_CTL] & ZS_FL_MASK) >> ZS_FL_SHIFT);
	off = it.zs[FERRYI_TCP_ZS_OFF];
	if (fl & FERRYI_TCP_F_ZSTD)
		te->ztx_gen = te->batch_gen; /* in this batch: items behind it must wait */

	memset(&h, 0, sizeof(h));
	memset(&e, 0, sizeof(e));
	h.len = it.zs[FERRYI_TCP_ZS_WIRE];
	switch (it.kind) {
	case FERRYI_TCP_MSG: {
		struct ferryi_msg m = op->msg;

		if (fl & FERRYI_TCP_F_ZSTD)
			m.flags |= FERRYI_MSGF_COMPRESSED;
		h.type = FERRYI_TCP_MSG;
		h.flags = ferryi_tcp_msg_flags(&m);
		h.tag = m.tag;
		h.aux = m.aux;
		break;
	}
	case FERRYI_TCP_WRITE:
		h.type = FERRYI_TCP_WRITE;
		h.flags = fl;
		h.aux = ferryi_op_id(op);
		e.key = op->prov[FERRYI_TCP_OP_KEY];
		e.offset = op->remote_offset + off;
		break;
	default:
		h.type = FERRYI_TCP_READ_RESP;
		h.flags = fl;
		h.aux = ctl->aux;
		e.status = 0;
		break;
	}
	*payload = (fl & FERRYI_TCP_F_ZSTD) ? (const void *)te->ztx : (const void *)(it.src + off);
	*plen = h.len;
	*more = (fl & FERRYI_TCP_F_MORE) != 0;
	*from_user = !(fl & FERRYI_TCP_F_ZSTD);
	return ferryi_tcp_encode(prefix, &h, &e);
}

bool ferryi_tcp_z_frame_done(struct ferry_ep *ep, struct ferryi_op *op,
			     struct ferryi_tcp_ctl *ctl)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	struct z_item it;

	z_item(op, ctl, &it);
	if (it.zs[FERRYI_TCP_ZS_CTL] & ((uint64_t)FERRYI_TCP_F_ZSTD << ZS_FL_SHIFT)) {
		struct ferry_stats *st = ferryi_stats(ep->pi);

		st->compressed_in += it.zs[FERRYI_TCP_ZS_SEG];
		st->compressed_out += it.zs[FERRYI_TCP_ZS_WIRE];
		if (te->ztx_zs == it.zs) {
			te->ztx_zs = NULL;
			te->ztx_sent = NULL;
		}
	}
	it.zs[FERRYI_TCP_ZS_OFF] += it.zs[FERRYI_TCP_ZS_SEG];
	it.zs[FERRYI_TCP_ZS_SEG] = 0;
	it.zs[FERRYI_TCP_ZS_WIRE] = 0;
	it.zs[FERRYI_TCP_ZS_CTL] &= ~ZS_FL_MASK;
	return it.zs[FERRYI_TCP_ZS_OFF] >= it.total;
}

/* ------------------------------------------------------------------ receiving */

void ferryi_tcp_z_rx_begin(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	const struct ferryi_tcp_hdr *h = &te->rh;
	const char *name = ferryi_tcp_type_name(h->type);

	if (!te->zaccept) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
				      "compressed %s frame, but this side did not advertise zstd",
				      name);
		return;
	}
	if (h->type == FERRYI_TCP_MSG && (h->flags & 0xffu) != FERRYI_MSG_EAGER) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
				      "compressed core message of type %u (only user messages "
				      "are compressed)", (unsigned)(h->flags & 0xffu));
		return;
	}
	if (h->type == FERRYI_TCP_READ_RESP && te->rext.status != 0) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO, "compressed READ_RESP with status %d",
				      (int)te->rext.status);
		return;
	}
	if (h->len < FERRYI_ZSEG_PRELUDE + FERRYI_ZCHUNK_HDR + 1) {
		ferryi_tcp_proto_fail(ep, FERRY_EPROTO,
				      "compressed %s frame of %" PRIu64 " bytes: shorter than "
				      "any segment", name, h->len);
		return;
	}
	if (!ferryi_tcp_codec(ep)) {
		ferryi_tcp_fail(ep, FERRY_ENOMEM, "no zstd context to decode a %s frame", name);
		return;
	}
	/* First the prelude: the raw length everything else is checked against. */
	te->rz_on = true;
	te->rz_body = false;
	te->rx_state = FERRYI_TCP_RX_PAYLOAD;
	te->rx_kind = h->type;
	te->rx_dst = te->rz_pre;
	te->rx_left = FERRYI_ZSEG_PRELUDE;
	te->rx_total = h->len;
}

static void z_rx_next(struct ferryi_tcp_ep *te)
{
	uint8_t *dst;
	uint64_t len;

	ferryi_zdec_piece(&te->zrx, &dst, &len);
	te->rx_dst = dst;
	te->rx_left = len;
}

void ferryi_tcp_z_rx_payload(struct ferry_ep *ep, void *dst, uint64_t raw)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	ferryi_zdec_start(&te->zrx, raw, te->rh.len - FERRYI_ZSEG_PRELUDE, dst);
	z_rx_next(te);
}

bool ferryi_tcp_z_rx_piece(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	uint64_t before;

	if (!te->rz_body) {
		uint64_t raw = ferryi_get_le64(te->rz_pre);
		uint64_t limit = te->rh.type == FERRYI_TCP_MSG ? te->lim.eager_max
							       : te->lim.max_frame;
		char why[200];

		if (ferryi_zseg_check(raw, te->rh.len, limit, why, sizeof(why)) < 0) {
			ferryi_tcp_proto_fail(ep, FERRY_EPROTO, "bad compressed %s frame: %s",
					      ferryi_tcp_type_name(te->rh.type), why);
			return false;
		}
		te->rz_body = true;
		te->rx_raw = raw;
		te->rx_left = 0;
		/* The handler picks the destination; ferryi_tcp_rx_payload lands here. */
		ferryi_tcp_rx_body(ep);
		return false;
	}
	before = te->zrx.raw_left;
	ferryi_zdec_advance(ferryi_tcp_inst(ep)->z, &te->zrx);
	te->rx_zcharge += before - te->zrx.raw_left;
	z_rx_next(te);
	return te->rx_left == 0;
}

void ferryi_tcp_z_ep_fini(struct ferry_ep *ep)
{
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);

	te->ztx_zs = NULL;
	te->ztx_sent = NULL;
	free(te->ztx);
	te->ztx = NULL;
	ferryi_zdec_fini(&te->zrx);
}
