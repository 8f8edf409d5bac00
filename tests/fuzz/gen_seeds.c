/*
 * gen_seeds.c - writes the seed corpus of every fuzz target: small, meaningful inputs
 * (valid frames, valid rkeys, valid URIs, the interesting protocol exchanges) from
 * which the fuzzers mutate. tests/fuzz/corpus/ is this program's checked-in output.
 *
 *   fuzz_gen_seeds OUTDIR      writes OUTDIR/<target>/<name> (directories must exist)
 *
 * Each input's layout is described at the top of its harness (fuzz_<target>.c).
 */
#define _GNU_SOURCE
#include "compress.h"
#include "fuzz_common.h"
#include "tcp_proto.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *outdir;
static struct ferryi_zcodec *zc;

/* A compressed segment of raw bytes at level 1 (chunks that do not shrink stored). */
static size_t zseg(uint8_t *out, size_t cap, const void *raw, size_t len)
{
	FZ_CHECK(ferryi_zseg_bound(len) <= cap);
	return (size_t)ferryi_zseg_encode(zc, 1, out, raw, len);
}

/* Text that compresses well. */
static void text(uint8_t *out, size_t len)
{
	static const char words[] = "the quick brown ferry moves buffers zero copy ";

	for (size_t i = 0; i < len; i++)
		out[i] = (uint8_t)words[i % (sizeof(words) - 1)];
}

/* ------------------------------------------------------------------ a growable input */

struct buf {
	uint8_t b[8192];
	size_t n;
};

static void put(struct buf *b, const void *p, size_t n)
{
	FZ_CHECK(b->n + n <= sizeof(b->b));
	memcpy(b->b + b->n, p, n);
	b->n += n;
}

static void put8(struct buf *b, uint8_t v) { put(b, &v, 1); }

static void put16(struct buf *b, uint16_t v)
{
	uint8_t x[2];
	ferryi_put_le16(x, v);
	put(b, x, 2);
}

static void put32(struct buf *b, uint32_t v)
{
	uint8_t x[4];
	ferryi_put_le32(x, v);
	put(b, x, 4);
}

static void put64(struct buf *b, uint64_t v)
{
	uint8_t x[8];
	ferryi_put_le64(x, v);
	put(b, x, 8);
}

static void fill(struct buf *b, size_t n, uint8_t seed)
{
	for (size_t i = 0; i < n; i++)
		put8(b, (uint8_t)(seed + i));
}

static void emit(const char *target, const char *name, const struct buf *b)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", outdir, target, name);
	f = fopen(path, "wb");
	if (!f || fwrite(b->b, 1, b->n, f) != b->n || fclose(f) != 0)
		fz_fail(__FILE__, __LINE__, "cannot write %s", path);
}

static void emit_str(const char *target, const char *name, const char *s)
{
	struct buf b = {.n = 0};
	put(&b, s, strlen(s));
	emit(target, name, &b);
}

/* ------------------------------------------------------------------ wire pieces */

/* Header + extension of any frame type. */
static void frame(struct buf *b, uint8_t type, uint32_t flags, uint64_t len, uint64_t tag,
		  uint64_t aux, const struct ferryi_tcp_ext *e)
{
	struct ferryi_tcp_hdr h = {.type = type, .flags = flags, .len = len, .tag = tag,
				   .aux = aux};
	struct ferryi_tcp_ext z;
	uint8_t out[FERRYI_TCP_PREFIX_MAX];

	memset(&z, 0, sizeof(z));
	put(b, out, ferryi_tcp_encode(out, &h, e ? e : &z));
}

static void hello(struct buf *b, uint8_t type, uint64_t max_frame, uint64_t eager,
		  uint64_t credit)
{
	struct ferryi_tcp_ext e;

	memset(&e, 0, sizeof(e));
	e.info.version = FERRYI_PROTO_VERSION;
	e.info.features = FERRYI_FEAT_PROBES;
	e.info.idle_timeout_ms = 30000;
	e.info.probe_interval_ms = 1000;
	e.info.max_frame = max_frame;
	e.info.eager_max = eager;
	e.info.rx_credit = credit;
	frame(b, type, 0, 0, 0, 0, &e);
}

static void msg(struct buf *b, uint8_t type, uint64_t tag, uint64_t aux, uint64_t len)
{
	frame(b, FERRYI_TCP_MSG, type, len, tag, aux, NULL);
}

static void status_frame(struct buf *b, uint8_t type, uint64_t aux, int32_t status,
			 uint64_t len)
{
	struct ferryi_tcp_ext e;

	memset(&e, 0, sizeof(e));
	e.status = status;
	frame(b, type, 0, len, 0, aux, &e);
}

static void rma_frame(struct buf *b, uint8_t type, uint64_t aux, uint64_t key,
		      uint64_t off, uint64_t length, uint64_t len)
{
	struct ferryi_tcp_ext e;

	memset(&e, 0, sizeof(e));
	e.key = key;
	e.offset = off;
	e.length = length;
	frame(b, type, 0, len, 0, aux, &e);
}

static uint64_t mark(const char *m)
{
	return ferryi_get_le64((const uint8_t *)m);
}

/* An rkey blob by hand: one tcp key (8 bytes at `key`), then `extra` more entries. */
static size_t rkey_blob(uint8_t *out, uint64_t region_len, unsigned access,
			const uint8_t key[8], int extra)
{
	size_t off = 24;

	memcpy(out, "FRK1", 4);
	out[4] = 1;
	out[5] = (uint8_t)(1 + extra);
	ferryi_put_le64(out + 8, region_len);
	ferryi_put_le32(out + 16, 3);
	ferryi_put_le32(out + 20, access);
	out[off] = FERRYI_PROV_TCP;
	out[off + 1] = 0;
	ferryi_put_le16(out + off + 2, 8);
	memcpy(out + off + 4, key, 8);
	off += 12;
	for (int i = 0; i < extra; i++) {
		uint16_t klen = (uint16_t)(16 + 8 * i);

		out[off] = (uint8_t)(FERRYI_PROV_VERBS + i);
		out[off + 1] = 0;
		ferryi_put_le16(out + off + 2, klen);
		for (uint16_t k = 0; k < klen; k++)
			out[off + 4 + k] = (uint8_t)(0xa0 + k);
		off += 4 + klen;
	}
	ferryi_put_le16(out + 6, (uint16_t)off);
	return off;
}

/* A blob of exactly `total` bytes: a tcp key and one long key of provider 2 (verbs). */
static size_t big_blob(uint8_t *out, size_t total, uint64_t region_len, const char *key)
{
	size_t off = rkey_blob(out, region_len, FERRY_ACCESS_REMOTE_READ,
			       (const uint8_t *)key, 0);
	uint16_t klen = (uint16_t)(total - off - 4);

	out[5] = 2;
	out[off] = FERRYI_PROV_VERBS;
	out[off + 1] = 0;
	ferryi_put_le16(out + off + 2, klen);
	memset(out + off + 4, 0x41, klen);
	ferryi_put_le16(out + 6, (uint16_t)total);
	return total;
}

/* An RTS payload: u64 size, then the blob. */
static size_t rts_payload(uint8_t *out, uint64_t size, uint64_t region_len, const char *key)
{
	ferryi_put_le64(out, size);
	return 8 + rkey_blob(out + 8, region_len, FERRY_ACCESS_REMOTE_READ,
			     (const uint8_t *)key, 0);
}

/* ------------------------------------------------------------------ rkey */

static void seeds_rkey(void)
{
	static uint8_t mem[4096];
	struct ferry_ctx *ctx = fz_ctx_create(NULL);
	struct ferry_mr *mr;
	uint8_t blob[FERRY_RKEY_MAX];
	size_t len = sizeof(blob);
	struct buf b = {.n = 0};

	/* The real thing: what ferry_mr_pack makes. */
	FZ_CHECK(ferry_mr_reg(ctx, mem, sizeof(mem),
			      FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE, &mr) == 0);
	FZ_CHECK(ferry_mr_pack(mr, blob, &len) == 0);
	put(&b, blob, len);
	emit("rkey", "packed_rw", &b);
	put64(&b, 100);
	put64(&b, 200);
	emit("rkey", "packed_rw_range", &b);
	b.n = len;
	put64(&b, sizeof(mem));
	put64(&b, 0);
	emit("rkey", "packed_rw_range_end", &b);
	b.n = len;
	put64(&b, UINT64_MAX);
	put64(&b, 2);
	emit("rkey", "packed_rw_range_wrap", &b);
	ferry_mr_dereg(mr);

	len = sizeof(blob);
	FZ_CHECK(ferry_mr_reg(ctx, mem, 1, FERRY_ACCESS_REMOTE_READ, &mr) == 0);
	FZ_CHECK(ferry_mr_pack(mr, blob, &len) == 0);
	b.n = 0;
	put(&b, blob, len);
	emit("rkey", "packed_ro_1byte", &b);
	ferry_mr_dereg(mr);
	ferry_ctx_destroy(ctx);

	/* Several providers' keys, and the largest region length. */
	const uint8_t key[8] = {1, 2, 3, 4, 5, 6, 7, 8};
	b.n = rkey_blob(b.b, 1ull << 40, FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE,
			key, 2);
	emit("rkey", "three_providers", &b);
	b.n = rkey_blob(b.b, UINT64_MAX, 0, key, 0);
	put64(&b, UINT64_MAX - 1);
	put64(&b, 1);
	emit("rkey", "max_region_range", &b);
	b.n = rkey_blob(b.b, 0, FERRY_ACCESS_REMOTE_WRITE, key, 0);
	emit("rkey", "empty_region", &b);
	b.n = big_blob(b.b, FERRY_RKEY_MAX, 4096, "\x01\x02\x03\x04\x05\x06\x07\x08");
	emit("rkey", "largest_blob", &b);
}

/* ------------------------------------------------------------------ addr */

static void seeds_addr(void)
{
	emit_str("addr", "tcp_v4", "tcp://127.0.0.1:4791");
	emit_str("addr", "tcp_wild", "tcp://*:0");
	emit_str("addr", "tcp_name", "tcp://node-1.example_lab:65535");
	emit_str("addr", "verbs_v6_zone", "verbs://[fe80::1%eth0]:18515");
	emit_str("addr", "v6_long", "tcp://[2001:0db8:0000:0000:0000:ff00:0042:8329]:80");
	emit_str("addr", "v6_mapped", "tcp://[::ffff:10.0.0.1]:1");
	emit_str("addr", "ofi_shm", "ofi+shm://worker_3:0");
	emit_str("addr", "auto_upper", "AUTO://LocalHost:09");
	emit_str("addr", "list2", "verbs://10.0.0.1:4791, tcp://10.0.0.1:4791");
	emit_str("addr", "list8",
		 "tcp://a:1,tcp://b:2,tcp://c:3,tcp://d:4,tcp://e:5,tcp://f:6,tcp://g:7,"
		 "tcp://h:8");
	emit_str("addr", "bad_v4", "tcp://10.1:5");
}

/* ------------------------------------------------------------------ tcp_frame */

static void seeds_tcp_frame(void)
{
	struct buf b = {.n = 0};

	put8(&b, 0);
	hello(&b, FERRYI_TCP_HELLO, 1ull << 40, 65536, 64u << 20);
	emit("tcp_frame", "hello", &b);

	b.n = 0;
	put8(&b, 1);
	hello(&b, FERRYI_TCP_HELLO_ACK, 1u << 20, 4096, 0);
	emit("tcp_frame", "hello_ack_small", &b);

	b.n = 0;
	put8(&b, 0);
	status_frame(&b, FERRYI_TCP_ERROR, 0, FERRY_EDRAINING, 0);
	emit("tcp_frame", "error", &b);

	b.n = 0;
	put8(&b, 1);
	msg(&b, FERRYI_MSG_EAGER, 42, 0x100000001ull, 16);
	fill(&b, 16, 1);
	msg(&b, FERRYI_MSG_PROBE, 0, 7, 0);
	msg(&b, FERRYI_MSG_CREDIT, 0, 4096, 0);
	emit("tcp_frame", "msgs", &b);

	b.n = 0;
	put8(&b, 0);
	uint8_t rts[600];
	size_t rl = rts_payload(rts, 100000, 1u << 20, "\x11\x22\x33\x44\x55\x66\x77\x88");
	msg(&b, FERRYI_MSG_RTS, 9, 0x200000003ull, rl);
	put(&b, rts, rl);
	msg(&b, FERRYI_MSG_FIN, (uint64_t)(int64_t)FERRY_EMSGSIZE, 0x200000003ull, 0);
	emit("tcp_frame", "rts_fin", &b);

	b.n = 0;
	put8(&b, 1);
	rma_frame(&b, FERRYI_TCP_WRITE, 0x300000004ull, 0xdeadbeefcafef00dull, 64, 0, 32);
	fill(&b, 32, 7);
	status_frame(&b, FERRYI_TCP_WRITE_ACK, 0x300000004ull, 0, 0);
	rma_frame(&b, FERRYI_TCP_READ_REQ, 0x400000005ull, 0xdeadbeefcafef00dull, 0, 128, 0);
	status_frame(&b, FERRYI_TCP_READ_RESP, 0x400000005ull, 0, 8);
	fill(&b, 8, 3);
	status_frame(&b, FERRYI_TCP_READ_RESP, 0x400000006ull, FERRY_ERANGE, 0);
	emit("tcp_frame", "rma", &b);

	b.n = 0;
	put8(&b, 2);
	frame(&b, FERRYI_TCP_MSG, FERRYI_MSG_EAGER | (FERRYI_MSGF_COMPRESSED << 8), 4, 1, 2, NULL);
	fill(&b, 4, 0);
	msg(&b, FERRYI_MSG_GOODBYE, (uint64_t)(int64_t)FERRY_ECONNRESET, 0, 0);
	emit("tcp_frame", "compressed_goodbye", &b);
}

/* ------------------------------------------------------------------ tcp_stream */

enum {
	M_HELLO = 0x01, M_RECVS = 0x02, M_RNDV = 0x04, M_RMA = 0x08, M_EAGER = 0x10,
	M_SEG = 0x20, M_SMALL = 0x40,
	O_LATE = 0x40, O_CLIENT = 0x80, /* byte 1 */
};

static void stream_start(struct buf *b, uint8_t mode, uint8_t seg)
{
	b->n = 0;
	put8(b, mode);
	put8(b, seg);
}

static void seeds_tcp_stream(void)
{
	struct buf b;
	uint8_t rts[600];
	size_t rl;

	/* The handshake is part of the fuzzed bytes. */
	stream_start(&b, 0, 0);
	hello(&b, FERRYI_TCP_HELLO, 1u << 20, 4096, 0);
	msg(&b, FERRYI_MSG_EAGER, 1, 0, 10);
	fill(&b, 10, 0);
	emit("tcp_stream", "raw_hello_eager", &b);

	stream_start(&b, 0, 0);
	put(&b, "GET / HTTP/1.0\r\n\r\n", 18);
	emit("tcp_stream", "raw_http", &b);

	stream_start(&b, M_HELLO, 0);
	msg(&b, FERRYI_MSG_EAGER, 5, 0, 100);
	fill(&b, 100, 1);
	msg(&b, FERRYI_MSG_EAGER, 6, 0, 0);
	emit("tcp_stream", "eager_unexpected", &b);

	stream_start(&b, M_HELLO | M_RECVS, 0);
	msg(&b, FERRYI_MSG_EAGER, 5, 0, 100);
	fill(&b, 100, 1);
	msg(&b, FERRYI_MSG_EAGER, 6, 0, 4000);
	fill(&b, 4000, 2);
	emit("tcp_stream", "eager_matched", &b);

	stream_start(&b, M_HELLO, 0);
	rma_frame(&b, FERRYI_TCP_WRITE, 0x100000001ull, mark(FZ_MARK_KEY_RW), 0, 0, 64);
	fill(&b, 64, 9);
	rma_frame(&b, FERRYI_TCP_READ_REQ, 0x100000002ull, mark(FZ_MARK_KEY_RO), 4000, 96, 0);
	emit("tcp_stream", "target_write_read", &b);

	stream_start(&b, M_HELLO, 0);
	rma_frame(&b, FERRYI_TCP_WRITE, 0x100000001ull, mark(FZ_MARK_KEY_RO), 0, 0, 8);
	fill(&b, 8, 9);
	rma_frame(&b, FERRYI_TCP_WRITE, 0x100000001ull, mark(FZ_MARK_KEY_RW), 4090, 0, 8);
	fill(&b, 8, 9);
	rma_frame(&b, FERRYI_TCP_READ_REQ, 0x100000002ull, 12345, 0, 16, 0);
	emit("tcp_stream", "target_refusals", &b);

	stream_start(&b, M_HELLO | M_RNDV, 0);
	msg(&b, FERRYI_MSG_FIN, 0, mark(FZ_MARK_OP_SEND), 0);
	emit("tcp_stream", "rndv_fin", &b);

	stream_start(&b, M_HELLO | M_RNDV, 0);
	rma_frame(&b, FERRYI_TCP_READ_REQ, 0x100000002ull, 0, 0, 65536, 0);
	msg(&b, FERRYI_MSG_FIN, (uint64_t)(int64_t)FERRY_EMSGSIZE, mark(FZ_MARK_OP_SEND), 0);
	emit("tcp_stream", "rndv_fin_error", &b);

	stream_start(&b, M_HELLO | M_RMA, 0);
	status_frame(&b, FERRYI_TCP_WRITE_ACK, mark(FZ_MARK_OP_WRITE), 0, 0);
	status_frame(&b, FERRYI_TCP_READ_RESP, mark(FZ_MARK_OP_READ), 0, 300);
	fill(&b, 300, 4);
	emit("tcp_stream", "initiator_acks", &b);

	stream_start(&b, M_HELLO | M_RMA, 0);
	status_frame(&b, FERRYI_TCP_WRITE_ACK, mark(FZ_MARK_OP_WRITE), FERRY_EBADKEY, 0);
	status_frame(&b, FERRYI_TCP_READ_RESP, mark(FZ_MARK_OP_READ), FERRY_EACCES, 0);
	emit("tcp_stream", "initiator_refused", &b);

	stream_start(&b, M_HELLO | M_RECVS, 0);
	rl = rts_payload(rts, 1000, 4096, FZ_MARK_KEY_RW);
	msg(&b, FERRYI_MSG_RTS, 0, 0x100000009ull, rl);
	put(&b, rts, rl);
	emit("tcp_stream", "rts_matched", &b);

	stream_start(&b, M_HELLO, 0);
	rl = rts_payload(rts, 100, 4096, FZ_MARK_KEY_RO);
	msg(&b, FERRYI_MSG_RTS, 3, 0x100000009ull, rl);
	put(&b, rts, rl);
	emit("tcp_stream", "rts_unexpected", &b);

	stream_start(&b, M_HELLO | M_EAGER, 0);
	msg(&b, FERRYI_MSG_PROBE, 0, 1, 0);
	msg(&b, FERRYI_MSG_PROBE_ACK, 0, 1, 0);
	msg(&b, FERRYI_MSG_CREDIT, 0, UINT64_MAX, 0);
	msg(&b, FERRYI_MSG_GOODBYE, (uint64_t)(int64_t)FERRY_ECONNRESET, 0, 0);
	emit("tcp_stream", "control", &b);

	stream_start(&b, M_HELLO | M_SMALL | M_EAGER | M_RNDV, 0);
	msg(&b, FERRYI_MSG_CREDIT, 0, 512, 0);
	msg(&b, FERRYI_MSG_CREDIT, 0, 1u << 20, 0);
	emit("tcp_stream", "credit_small", &b);

	stream_start(&b, M_HELLO | M_SEG | M_RECVS, 0);
	msg(&b, FERRYI_MSG_EAGER, 5, 0, 20);
	fill(&b, 20, 1);
	rma_frame(&b, FERRYI_TCP_WRITE, 0x100000001ull, mark(FZ_MARK_KEY_RW), 16, 0, 20);
	fill(&b, 20, 5);
	emit("tcp_stream", "segmented", &b);

	stream_start(&b, M_HELLO, 0);
	status_frame(&b, FERRYI_TCP_ERROR, 0, FERRY_EDRAINING, 0);
	emit("tcp_stream", "error_frame", &b);

	stream_start(&b, M_HELLO, 0);
	hello(&b, FERRYI_TCP_HELLO, 1u << 20, 4096, 0);
	emit("tcp_stream", "second_hello", &b);

	stream_start(&b, M_HELLO | M_RECVS, O_LATE);
	msg(&b, FERRYI_MSG_EAGER, 5, 0, 30);
	fill(&b, 30, 1);
	rl = rts_payload(rts, 2000, 4096, FZ_MARK_KEY_RW);
	msg(&b, FERRYI_MSG_RTS, 0, 0x100000009ull, rl);
	put(&b, rts, rl);
	emit("tcp_stream", "late_recvs", &b);

	/* Compressed payloads (ferry advertises zstd by default: FERRY_COMPRESS_ACCEPT). */
	{
		uint8_t raw[2000], seg[2200];
		size_t n;

		text(raw, sizeof(raw));
		n = zseg(seg, sizeof(seg), raw, 1000);
		stream_start(&b, M_HELLO | M_RECVS, 0);
		frame(&b, FERRYI_TCP_MSG, FERRYI_MSG_EAGER | (FERRYI_MSGF_COMPRESSED << 8), n, 5, 0, NULL);
		put(&b, seg, n);
		frame(&b, FERRYI_TCP_MSG, FERRYI_MSG_EAGER | (FERRYI_MSGF_COMPRESSED << 8), n, 6, 0, NULL);
		put(&b, seg, n);
		emit("tcp_stream", "zstd_eager", &b);

		stream_start(&b, M_HELLO, 0);
		frame(&b, FERRYI_TCP_WRITE, FERRYI_TCP_F_ZSTD | FERRYI_TCP_F_MORE, n, 0,
		      0x100000001ull, NULL);
		b.n -= 16; /* the extension: key, offset */
		put64(&b, mark(FZ_MARK_KEY_RW));
		put64(&b, 0);
		put(&b, seg, n);
		n = zseg(seg, sizeof(seg), raw, 2000);
		frame(&b, FERRYI_TCP_WRITE, FERRYI_TCP_F_ZSTD, n, 0, 0x100000001ull, NULL);
		b.n -= 16;
		put64(&b, mark(FZ_MARK_KEY_RW));
		put64(&b, 1000);
		put(&b, seg, n);
		emit("tcp_stream", "zstd_write_segments", &b);

		n = zseg(seg, sizeof(seg), raw, 1000);
		seg[n - 5] ^= 0x55; /* a corrupt chunk: the checksum refuses it */
		stream_start(&b, M_HELLO | M_RECVS, 0);
		frame(&b, FERRYI_TCP_MSG, FERRYI_MSG_EAGER | (FERRYI_MSGF_COMPRESSED << 8), n, 5, 0, NULL);
		put(&b, seg, n);
		frame(&b, FERRYI_TCP_MSG, FERRYI_MSG_EAGER | (FERRYI_MSGF_COMPRESSED << 8), n, 6, 0, NULL);
		put(&b, seg, n);
		emit("tcp_stream", "zstd_corrupt_chunk", &b);

		stream_start(&b, M_HELLO | M_RMA, 0x20);
		frame(&b, FERRYI_TCP_READ_REQ, FERRYI_TCP_F_ZWANT, 0, 0, 0x100000002ull, NULL);
		b.n -= 24;
		put64(&b, mark(FZ_MARK_KEY_RO));
		put64(&b, 0);
		put64(&b, 4096);
		n = zseg(seg, sizeof(seg), raw, 300);
		frame(&b, FERRYI_TCP_READ_RESP, FERRYI_TCP_F_ZSTD, n, 0, mark(FZ_MARK_OP_READ),
		      NULL);
		put(&b, seg, n);
		emit("tcp_stream", "zstd_read_both_ways", &b);
	}

	/* Client role: ferry connected to us; the bytes are the server's answer. */
	stream_start(&b, 0, O_CLIENT);
	hello(&b, FERRYI_TCP_HELLO_ACK, 1u << 20, 4096, 0);
	msg(&b, FERRYI_MSG_PROBE, 0, 3, 0);
	emit("tcp_stream", "client_hello_ack", &b);

	stream_start(&b, 0, O_CLIENT);
	status_frame(&b, FERRYI_TCP_ERROR, 0, FERRY_EDRAINING, 0);
	emit("tcp_stream", "client_refused", &b);

	stream_start(&b, 0, O_CLIENT | 7);
	hello(&b, FERRYI_TCP_HELLO_ACK, 64, 64, 128);
	emit("tcp_stream", "client_small_peer", &b);

	stream_start(&b, M_HELLO | M_RECVS | M_RMA | M_RNDV, O_CLIENT);
	msg(&b, FERRYI_MSG_EAGER, 5, 0, 30);
	fill(&b, 30, 1);
	status_frame(&b, FERRYI_TCP_WRITE_ACK, mark(FZ_MARK_OP_WRITE), 0, 0);
	status_frame(&b, FERRYI_TCP_READ_RESP, mark(FZ_MARK_OP_READ), 0, 300);
	fill(&b, 300, 4);
	msg(&b, FERRYI_MSG_FIN, 0, mark(FZ_MARK_OP_SEND), 0);
	msg(&b, FERRYI_MSG_GOODBYE, (uint64_t)(int64_t)FERRY_ECONNRESET, 0, 0);
	emit("tcp_stream", "client_session", &b);
}

/* ------------------------------------------------------------------ core_msg */

static void inj(struct buf *b, uint8_t type, uint8_t flags, uint64_t tag, uint64_t aux,
		const void *payload, uint16_t len)
{
	put8(b, type);
	put8(b, flags);
	put64(b, tag);
	put64(b, aux);
	put16(b, len);
	if (len)
		put(b, payload, len);
}

static void recv_b(struct buf *b, uint64_t tag, uint64_t mask, uint16_t size)
{
	put8(b, 0x80);
	put64(b, tag);
	put64(b, mask);
	put16(b, size);
}

static void progress(struct buf *b, uint8_t n)
{
	put8(b, 0x85);
	put8(b, n);
}

static void seeds_core_msg(void)
{
	struct buf b;
	uint8_t pl[4096], rts[600];
	size_t rl;

	for (size_t i = 0; i < sizeof(pl); i++)
		pl[i] = (uint8_t)i;

	b.n = 0;
	inj(&b, FERRYI_MSG_EAGER, 0, 5, 0, pl, 100);
	recv_b(&b, 5, UINT64_MAX, 200);
	put8(&b, 0x86);
	emit("core_msg", "eager_unexpected_then_recv", &b);

	b.n = 0;
	recv_b(&b, 0x10, 0xf0, 64);
	inj(&b, FERRYI_MSG_EAGER, 0, 0x1f, 0, pl, 64);
	inj(&b, FERRYI_MSG_EAGER, 0, 0x1f, 0, pl, 65);
	recv_b(&b, 0, 0, 16);
	put8(&b, 0x86);
	emit("core_msg", "recv_then_eager_truncated", &b);

	b.n = 0;
	recv_b(&b, 7, UINT64_MAX, 4096);
	rl = rts_payload(rts, 3000, 65536, FZ_MARK_KEY_RW);
	inj(&b, FERRYI_MSG_RTS, 0, 7, 0x100000001ull, rts, (uint16_t)rl);
	progress(&b, 7);
	progress(&b, 7);
	put8(&b, 0x86);
	emit("core_msg", "rts_matched_reads", &b);

	b.n = 0;
	rl = rts_payload(rts, 65536, 65536, FZ_MARK_KEY_RW);
	inj(&b, FERRYI_MSG_RTS, 0, 8, 0x100000001ull, rts, (uint16_t)rl);
	recv_b(&b, 8, UINT64_MAX, 100);
	progress(&b, 3);
	emit("core_msg", "rts_unexpected_too_big", &b);

	b.n = 0;
	rl = rts_payload(rts, 10, 65536, FZ_MARK_KEY_RW);
	inj(&b, FERRYI_MSG_RTS, 0, 8, 0x100000001ull, rts, (uint16_t)(rl + 8));
	emit("core_msg", "rts_bad_blob_len", &b);

	/* The largest announce that fits the inline buffer: 8 + a 504-byte blob. */
	b.n = 0;
	recv_b(&b, 8, UINT64_MAX, 200);
	ferryi_put_le64(rts, 150);
	rl = 8 + big_blob(rts + 8, FERRYI_RX_INLINE - 8, 65536, FZ_MARK_KEY_RW);
	inj(&b, FERRYI_MSG_RTS, 0, 8, 0x100000001ull, rts, (uint16_t)rl);
	progress(&b, 7);
	emit("core_msg", "rts_large_blob", &b);

	b.n = 0;
	put8(&b, 0x82);
	put64(&b, 11);
	put16(&b, 100);
	inj(&b, FERRYI_MSG_FIN, 0, 0, ((uint64_t)0xFEEDF00Du << 32) | 0, NULL, 0);
	inj(&b, FERRYI_MSG_FIN, 0, (uint64_t)(int64_t)FERRY_EIO,
	    ((uint64_t)0xFEEDF00Du << 32) | 0, NULL, 0);
	progress(&b, 7);
	put8(&b, 0x86);
	emit("core_msg", "fin_for_rndv_send", &b);

	b.n = 0;
	inj(&b, FERRYI_MSG_FIN, 0, 0x7fffffff, 12345, NULL, 0);
	emit("core_msg", "fin_unknown", &b);

	b.n = 0;
	inj(&b, FERRYI_MSG_CREDIT, 0, 0, UINT64_MAX, NULL, 0);
	put8(&b, 0x81);
	put64(&b, 1);
	put16(&b, 4000);
	inj(&b, FERRYI_MSG_CREDIT, 0, 0, 1, NULL, 0);
	inj(&b, FERRYI_MSG_PROBE, 0, 0, 99, NULL, 0);
	inj(&b, FERRYI_MSG_PROBE_ACK, 0, 0, 99, NULL, 0);
	progress(&b, 2);
	emit("core_msg", "credit_probe", &b);

	b.n = 0;
	put8(&b, 0x83);
	put64(&b, 3);
	put16(&b, 10);
	put8(&b, 0x83);
	put64(&b, 4);
	put16(&b, 5000);
	recv_b(&b, 3, UINT64_MAX, 100);
	recv_b(&b, 4, UINT64_MAX, 16384);
	progress(&b, 7);
	progress(&b, 7);
	put8(&b, 0x86);
	emit("core_msg", "peer_sends", &b);

	b.n = 0;
	recv_b(&b, 0, 0, 100);
	inj(&b, FERRYI_MSG_GOODBYE, 0, (uint64_t)(int64_t)FERRY_ECONNRESET, 0, NULL, 0);
	inj(&b, FERRYI_MSG_EAGER, 0, 0, 0, pl, 10);
	emit("core_msg", "goodbye", &b);

	b.n = 0;
	put8(&b, 0x84);
	put64(&b, 0);
	put64(&b, 0);
	put16(&b, 4096);
	put8(&b, 0x81);
	put64(&b, 1);
	put16(&b, 3000);
	put8(&b, 0x87);
	progress(&b, 3);
	emit("core_msg", "close_b", &b);

	b.n = 0;
	inj(&b, 9, 0, 0, 0, NULL, 0);
	emit("core_msg", "unknown_type", &b);

	b.n = 0;
	inj(&b, FERRYI_MSG_PROBE, 0, 0, 0, pl, 4);
	emit("core_msg", "control_with_payload", &b);

	/* Deadlines on the fake clock: a receive that waits, a rendezvous in flight. */
	b.n = 0;
	put8(&b, 0x89);
	put16(&b, 5);
	recv_b(&b, 1, UINT64_MAX, 100);
	put8(&b, 0x82);
	put64(&b, 2);
	put16(&b, 1000);
	put8(&b, 0x84);
	put64(&b, 2);
	put64(&b, UINT64_MAX);
	put16(&b, 16384);
	progress(&b, 0);
	put8(&b, 0x88);
	put16(&b, 10);
	progress(&b, 7);
	put8(&b, 0x86);
	emit("core_msg", "deadlines", &b);

	/* One-sided from b into the region, a serving: in range, at the edge, beyond. */
	b.n = 0;
	put8(&b, 0x8a);
	put8(&b, 0);
	put16(&b, 1000);
	put32(&b, 0);
	put8(&b, 0x8a);
	put8(&b, 1);
	put16(&b, 16);
	put32(&b, 65536 - 16);
	put8(&b, 0x8a);
	put8(&b, 0);
	put16(&b, 17);
	put32(&b, 65536 - 16);
	progress(&b, 7);
	put8(&b, 0x86);
	emit("core_msg", "rma_into_region", &b);
}

/* ------------------------------------------------------------------ compress */

static void seeds_compress(void)
{
	static uint8_t raw[300 * 1024], seg[310 * 1024];
	struct buf *b = malloc(sizeof(*b) + sizeof(seg));
	size_t n;

	FZ_CHECK(b != NULL);
	text(raw, 1000);
	n = zseg(seg, sizeof(seg), raw, 1000);
	b->n = 0;
	put8(b, 0);
	put8(b, 0); /* raw_max 4 KiB */
	put(b, seg, n);
	emit("compress", "text_1k", b);

	for (size_t i = 0; i < 100; i++)
		raw[i] = (uint8_t)(i * 151 + 7);
	n = zseg(seg, sizeof(seg), raw, 100);
	b->n = 0;
	put8(b, 0);
	put8(b, 0);
	put(b, seg, n);
	emit("compress", "stored_100", b);

	b->n = 0;
	put8(b, 2); /* dropped */
	put8(b, 0);
	put(b, seg, n);
	emit("compress", "stored_100_dropped", b);

	memset(raw, 0, sizeof(raw));
	n = zseg(seg, sizeof(seg), raw, sizeof(raw)); /* two chunks */
	FZ_CHECK(n < 4096);
	b->n = 0;
	put8(b, 0);
	put8(b, 255); /* raw_max 1 MiB */
	put(b, seg, n);
	emit("compress", "zeros_300k_two_chunks", b);

	text(raw, 1000);
	b->n = 0;
	put8(b, 1);
	put8(b, 3);
	put(b, raw, 1000);
	emit("compress", "roundtrip_text", b);

	b->n = 0;
	put8(b, 1);
	put8(b, 0);
	put(b, "x", 1);
	emit("compress", "roundtrip_1byte", b);
	free(b);
}

int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s OUTDIR (with OUTDIR/<target>/ for each target)\n",
			argv[0]);
		return 2;
	}
	outdir = argv[1];
	if (ferryi_zcodec_new(&zc) < 0)
		zc = NULL; /* no zstd: segments are all stored */
	seeds_compress();
	seeds_rkey();
	seeds_addr();
	seeds_tcp_frame();
	seeds_tcp_stream();
	seeds_core_msg();
	return 0;
}
