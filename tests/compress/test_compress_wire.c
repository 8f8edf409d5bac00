/*
 * test_compress_wire.c - compressed TCP frames crafted by hand over raw sockets
 * against a listening context (in the manner of tests/tcp/test_tcp_wire.c).
 *
 * The raw client advertises zstd in its HELLO, then sends compressed MSG, WRITE and
 * READ_RESP frames, good and bad: corrupt chunks, chunk headers inconsistent with the
 * frame, decompression bombs, raw lengths above the limits, segments of a transfer
 * out of order. What the decoder can pin on one operation fails that operation and
 * the connection goes on; what breaks the framing or the limits drops the connection
 * with a protocol error; nothing writes outside the destination.
 *
 *   test_compress_wire            all cases
 *   test_compress_wire CASE       one case (CTest: compress.wire.CASE)
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "compress.h"
#include "core.h"
#include "cz_util.h"
#include "tcp_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define WAIT_MS 5000
#define MAX_FRAME (16u << 20)
#define EAGER_MAX 65536u
#define REGION (1u << 20)
#define GUARD 4096u

struct wire {
	struct ferry_ctx *ctx;
	struct ferry_listener *l;
	uint16_t port;
	uint8_t *mem;      /* REGION + GUARD bytes; the region is the first REGION */
	struct ferry_mr *mr;
	uint64_t key;
};

/* A build without zstd refuses every compressed frame: only not_accepted applies. */
#define NEED_ZSTD()                                                                  \
	do {                                                                         \
		if (!ferryi_compress_built())                                        \
			skip();                                                      \
	} while (0)

static struct ferry_stats tcp_stats(struct wire *w)
{
	return cz_stats(w->ctx);
}

static int setup_env(void **state, const char *env)
{
	struct wire *w = calloc(1, sizeof(*w));
	struct ferry_config cfg;
	char addr[256];
	size_t len = sizeof(addr);

	ferry_config_init(&cfg);
	cfg.providers = "tcp";
	cfg.log_level = FERRY_LOG_OFF; /* refusals are the point; FERRY_LOG=debug shows them */
	cfg.probe_interval_ms = 0;
	cfg.idle_timeout_s = 0;
	cfg.max_frame = MAX_FRAME;
	cfg.eager_max = EAGER_MAX;
	cfg.handshake_timeout_ms = 2000;
	if (env)
		putenv((char *)env);
	assert_int_equal(ferry_ctx_create(&cfg, &w->ctx), 0);
	if (env)
		unsetenv("FERRY_COMPRESS_ACCEPT");
	assert_int_equal(ferry_listen(w->ctx, "tcp://127.0.0.1:0", NULL, &w->l), 0);
	assert_int_equal(ferry_listener_addr(w->l, addr, &len), 0);
	w->port = (uint16_t)atoi(strrchr(addr, ':') + 1);
	w->mem = malloc(REGION + GUARD);
	memset(w->mem, 0x5a, REGION + GUARD);
	assert_int_equal(ferry_mr_reg(w->ctx, w->mem, REGION,
				      FERRY_ACCESS_REMOTE_WRITE | FERRY_ACCESS_REMOTE_READ, &w->mr),
			 0);
	w->key = w->mr->key;
	*state = w;
	return 0;
}

static int setup(void **state)
{
	return setup_env(state, NULL);
}

static int setup_no_accept(void **state)
{
	return setup_env(state, "FERRY_COMPRESS_ACCEPT=0");
}

static int teardown(void **state)
{
	struct wire *w = *state;

	if (!w)
		return 0;
	for (size_t g = 0; g < GUARD; g++)
		assert_int_equal(w->mem[REGION + g], 0x5a); /* never written past the region */
	ferry_mr_dereg(w->mr);
	ferry_listener_close(w->l);
	ferry_ctx_destroy(w->ctx);
	free(w->mem);
	free(w);
	return 0;
}

/* ------------------------------------------------------------------ raw client */

static int raw_connect(struct wire *w)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(w->port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* Sends while driving the context (it must read for big frames to fit). */
static bool raw_send(struct wire *w, int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;
	uint64_t deadline = cz_now_ms() + WAIT_MS;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return false; /* the server hung up: fine for bad input */
		assert_true(cz_now_ms() < deadline);
		ferry_progress(w->ctx);
		usleep(200);
	}
	return true;
}

static int raw_recv(struct wire *w, int fd, void *buf, size_t len)
{
	uint8_t *p = buf;
	uint64_t deadline = cz_now_ms() + WAIT_MS;

	while (len) {
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return FERRY_ECONNRESET;
		if (cz_now_ms() > deadline)
			return FERRY_ETIMEDOUT;
		ferry_progress(w->ctx);
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		poll(&pfd, 1, 2);
	}
	return 0;
}

struct frame {
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e;
	uint8_t payload[8192];
};

static int read_frame(struct wire *w, int fd, struct frame *f)
{
	const struct ferryi_tcp_limits lim = {.max_frame = UINT64_MAX, .eager_max = UINT64_MAX};
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	char why[200] = "";
	int rc = raw_recv(w, fd, buf, FERRYI_TCP_HDR_LEN);

	if (rc)
		return rc;
	if (ferryi_tcp_hdr_decode(buf, &lim, &f->h, why, sizeof(why))) {
		print_error("server sent a bad header: %s\n", why);
		fail();
	}
	rc = raw_recv(w, fd, buf, ferryi_tcp_ext_len(f->h.type));
	if (rc)
		return rc;
	assert_int_equal(ferryi_tcp_ext_decode(f->h.type, buf, &lim, &f->e, why, sizeof(why)), 0);
	assert_true(f->h.len <= sizeof(f->payload));
	return raw_recv(w, fd, f->payload, (size_t)f->h.len);
}

/* The server hangs up; returns the status of the ERROR frame before, or 0. */
static int expect_dropped(struct wire *w, int fd)
{
	struct frame f;
	int status = 0;

	for (;;) {
		int rc = read_frame(w, fd, &f);

		if (rc == FERRY_ECONNRESET)
			break;
		assert_int_equal(rc, 0);
		if (f.h.type == FERRYI_TCP_ERROR)
			status = f.e.status;
	}
	close(fd);
	return status;
}

static void send_frame(struct wire *w, int fd, const struct ferryi_tcp_hdr *h,
		       const struct ferryi_tcp_ext *e, const void *payload, size_t len)
{
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	uint32_t n = ferryi_tcp_encode(buf, h, e);

	if (raw_send(w, fd, buf, n) && len)
		raw_send(w, fd, payload, len);
}

/* Handshake as a peer that decodes zstd; returns the server's endpoint. */
static struct ferry_ep *raw_hello(struct wire *w, int fd, uint32_t *srv_features)
{
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_HELLO};
	struct ferryi_tcp_ext e = {.info = {.version = FERRYI_PROTO_VERSION,
					    .features = FERRYI_FEAT_ZSTD,
					    .max_frame = 1ull << 40,
					    .eager_max = 65536}};
	struct ferry_ep *ep = NULL;
	struct frame f;

	send_frame(w, fd, &h, &e, NULL, 0);
	for (;;) {
		assert_int_equal(ferry_listener_accept(w->l, &ep, WAIT_MS), 0);
		if (ferry_ep_status(ep) == 0)
			break;
		ferry_ep_close(ep);
	}
	assert_int_equal(read_frame(w, fd, &f), 0);
	assert_int_equal(f.h.type, FERRYI_TCP_HELLO_ACK);
	if (srv_features)
		*srv_features = f.e.info.features;
	return ep;
}

static int wait_completion(struct wire *w, struct ferry_completion *c)
{
	assert_int_equal(ferry_cq_wait(ferry_ctx_cq(w->ctx), c, 1, WAIT_MS), 1);
	return c->status;
}

/* ------------------------------------------------------------------ frames */

static struct ferryi_zcodec *zc;

/* A compressed segment of src; caller frees. */
static uint8_t *zseg(const void *src, size_t len, uint64_t *wire)
{
	uint8_t *seg = malloc(ferryi_zseg_bound(len));

	assert_non_null(seg);
	*wire = ferryi_zseg_encode(zc, 1, seg, src, len);
	return seg;
}

static void send_zmsg(struct wire *w, int fd, uint64_t tag, const uint8_t *seg, uint64_t wire)
{
	struct ferryi_msg m = {.type = FERRYI_MSG_EAGER, .flags = FERRYI_MSGF_COMPRESSED};
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_MSG, .len = wire, .tag = tag, .aux = 1};

	h.flags = ferryi_tcp_msg_flags(&m);
	send_frame(w, fd, &h, NULL, seg, (size_t)wire);
}

static int write_status(struct wire *w, int fd, uint64_t opid, uint32_t flags, uint64_t off,
			const uint8_t *payload, uint64_t len, bool answer)
{
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_WRITE, .flags = flags, .len = len,
				   .aux = opid};
	struct ferryi_tcp_ext e = {.key = w->key, .offset = off};
	struct frame f;

	send_frame(w, fd, &h, &e, payload, (size_t)len);
	if (!answer)
		return 0;
	assert_int_equal(read_frame(w, fd, &f), 0);
	assert_int_equal(f.h.type, FERRYI_TCP_WRITE_ACK);
	assert_int_equal(f.h.aux, opid);
	return f.e.status;
}

/* The endpoint still works: a compressed message arrives intact. */
static void check_alive(struct wire *w, int fd, struct ferry_ep *ep)
{
	uint8_t src[30000], dst[30000];
	struct ferry_completion c;
	uint64_t wire;

	cz_fill(src, sizeof(src), CZ_JSON, 99);
	uint8_t *seg = zseg(src, sizeof(src), &wire);
	assert_true(wire < sizeof(src));
	assert_int_equal(ferry_recv(ep, dst, sizeof(dst), 77, ~0ull, NULL, NULL), 0);
	send_zmsg(w, fd, 77, seg, wire);
	assert_int_equal(wait_completion(w, &c), 0);
	assert_int_equal(c.len, sizeof(src));
	assert_memory_equal(dst, src, sizeof(src));
	assert_int_equal(ferry_ep_status(ep), 0);
	free(seg);
}

static void finish(struct wire *w, int fd, struct ferry_ep *ep)
{
	ferry_ep_close(ep);
	expect_dropped(w, fd);
}

/* ------------------------------------------------------------------ cases */

static void good_msg(void **state)
{
	struct wire *w = *state;

	NEED_ZSTD();
	int fd = raw_connect(w);
	uint32_t feat = 0;
	struct ferry_ep *ep = raw_hello(w, fd, &feat);

	assert_true(feat & FERRYI_FEAT_ZSTD); /* advertised whatever the policy (off) */
	check_alive(w, fd, ep);
	/* Unexpected (no receive posted yet), then matched. */
	uint8_t src[EAGER_MAX], dst[EAGER_MAX];
	uint64_t wire;
	struct ferry_completion c;
	cz_fill(src, sizeof(src), CZ_MIXED, 3);
	uint8_t *seg = zseg(src, sizeof(src), &wire);
	send_zmsg(w, fd, 5, seg, wire);
	for (int i = 0; i < 50; i++)
		ferry_progress(w->ctx);
	assert_int_equal(ferry_recv(ep, dst, sizeof(dst), 5, ~0ull, NULL, NULL), 0);
	assert_int_equal(wait_completion(w, &c), 0);
	assert_memory_equal(dst, src, sizeof(src));
	/* Too big for the receive: EMSGSIZE, the payload dropped undecoded. */
	assert_int_equal(ferry_recv(ep, dst, 100, 6, ~0ull, NULL, NULL), 0);
	send_zmsg(w, fd, 6, seg, wire);
	assert_int_equal(wait_completion(w, &c), FERRY_EMSGSIZE);
	assert_int_equal(c.len, sizeof(src));
	check_alive(w, fd, ep);
	assert_int_equal(tcp_stats(w).protocol_errors, 0);
	free(seg);
	finish(w, fd, ep);
}

/* A flipped byte in a chunk fails that receive or write; the connection goes on. */
static void corrupt_chunk(void **state)
{
	struct wire *w = *state;

	NEED_ZSTD();
	int fd = raw_connect(w);
	struct ferry_ep *ep = raw_hello(w, fd, NULL);
	uint8_t src[EAGER_MAX], dst[EAGER_MAX];
	struct ferry_completion c;
	uint64_t wire;

	cz_fill(src, sizeof(src), CZ_JSON, 4);
	uint8_t *seg = zseg(src, sizeof(src), &wire);
	seg[8 + 8 + 30] ^= 0x10;
	assert_int_equal(ferry_recv(ep, dst, sizeof(dst), 1, ~0ull, NULL, NULL), 0);
	send_zmsg(w, fd, 1, seg, wire);
	assert_int_equal(wait_completion(w, &c), FERRY_EPROTO);
	assert_int_equal(c.type, FERRY_OP_RECV);
	assert_int_equal(tcp_stats(w).protocol_errors, 1);
	check_alive(w, fd, ep);

	/* The same as a WRITE: answered with EPROTO. */
	uint8_t big[REGION / 2];
	cz_fill(big, sizeof(big), CZ_JSON, 5);
	free(seg);
	seg = zseg(big, sizeof(big), &wire);
	seg[wire - 3] ^= 0x01; /* in the last chunk: its checksum */
	assert_int_equal(write_status(w, fd, 0x77, FERRYI_TCP_F_ZSTD, 4096, seg, wire, true),
			 FERRY_EPROTO);
	check_alive(w, fd, ep);
	free(seg);

	/* A message bound for the unexpected queue has no op to fail: the endpoint goes. */
	seg = zseg(src, sizeof(src), &wire);
	seg[8 + 8 + 30] ^= 0x10;
	send_zmsg(w, fd, 2, seg, wire);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	assert_int_equal(ferry_ep_status(ep), FERRY_EPROTO);
	ferry_ep_close(ep);
	free(seg);
}

/* Chunk headers that contradict the frame: the op fails, the stream stays framed. */
static void bad_chunk_headers(void **state)
{
	struct wire *w = *state;

	NEED_ZSTD();
	int fd = raw_connect(w);
	struct ferry_ep *ep = raw_hello(w, fd, NULL);
	uint8_t src[EAGER_MAX], dst[EAGER_MAX];
	struct ferry_completion c;
	uint64_t wire;

	cz_fill(src, sizeof(src), CZ_JSON, 8);
	uint8_t *seg = zseg(src, sizeof(src), &wire);
	uint32_t clen = ferryi_get_le32(seg + 12);
	const uint32_t bad[][2] = {
		{EAGER_MAX + 1, clen},            /* decodes to more than is due */
		{EAGER_MAX - 1, clen},            /* to less */
		{EAGER_MAX, clen + 1},            /* data longer than the frame */
		{EAGER_MAX, clen - 1},            /* shorter: the frame has bytes left */
		{EAGER_MAX, FERRYI_ZCHUNK_STORED | clen}, /* "stored" but not raw-sized */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint8_t *mod = malloc(wire);
		memcpy(mod, seg, wire);
		ferryi_put_le32(mod + 8, bad[i][0]);
		ferryi_put_le32(mod + 12, bad[i][1]);
		assert_int_equal(ferry_recv(ep, dst, sizeof(dst), 3, ~0ull, NULL, NULL), 0);
		send_zmsg(w, fd, 3, mod, wire);
		assert_int_equal(wait_completion(w, &c), FERRY_EPROTO);
		free(mod);
	}
	check_alive(w, fd, ep);
	free(seg);
	finish(w, fd, ep);
}

/* A chunk that announces its size but expands to 1 GiB stops at that size. */
static void bomb(void **state)
{
	struct wire *w = *state;

	NEED_ZSTD();
	int fd = raw_connect(w);
	struct ferry_ep *ep = raw_hello(w, fd, NULL);
	uint8_t *seg = malloc(64 << 10);
	size_t n = 16;

	/* segment: raw 256 KiB, one chunk: a frame claiming 256 KiB, 8192 RLE blocks */
	ferryi_put_le64(seg, FERRYI_ZCHUNK);
	ferryi_put_le32(seg + 16, 0xFD2FB528u);
	seg[20] = 0xA0;
	ferryi_put_le32(seg + 21, FERRYI_ZCHUNK);
	n = 25;
	for (unsigned i = 0; i < 8192; i++) {
		uint32_t bh = (131072u << 3) | (1u << 1) | (i == 8191 ? 1u : 0u);
		seg[n++] = (uint8_t)bh;
		seg[n++] = (uint8_t)(bh >> 8);
		seg[n++] = (uint8_t)(bh >> 16);
		seg[n++] = 0xEE;
	}
	ferryi_put_le32(seg + 8, FERRYI_ZCHUNK);
	ferryi_put_le32(seg + 12, (uint32_t)(n - 16));
	/* into the last 256 KiB of the region: a byte too many would hit the guard */
	assert_int_equal(write_status(w, fd, 0x99, FERRYI_TCP_F_ZSTD, REGION - FERRYI_ZCHUNK,
				      seg, n, true),
			 FERRY_EPROTO);
	check_alive(w, fd, ep);
	free(seg);
	finish(w, fd, ep); /* teardown checks the guard */
}

/* Raw lengths above the limits, wire lengths outside a segment's bounds. */
static void oversized(void **state)
{
	struct wire *w = *state;

	NEED_ZSTD();
	uint8_t src[4096], pre[64];
	uint64_t wire;
	cz_fill(src, sizeof(src), CZ_JSON, 1);
	uint8_t *seg = zseg(src, sizeof(src), &wire);

	/* MSG announcing more than the eager limit: the connection goes. */
	int fd = raw_connect(w);
	struct ferry_ep *ep = raw_hello(w, fd, NULL);
	uint64_t perr = tcp_stats(w).protocol_errors;
	memcpy(pre, seg, 32);
	ferryi_put_le64(pre, EAGER_MAX + 1);
	send_zmsg(w, fd, 1, pre, 32);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	assert_int_equal(tcp_stats(w).protocol_errors, perr + 1);
	ferry_ep_close(ep);

	/* WRITE announcing more than max_frame. */
	fd = raw_connect(w);
	ep = raw_hello(w, fd, NULL);
	ferryi_put_le64(pre, (uint64_t)MAX_FRAME + 1);
	write_status(w, fd, 1, FERRYI_TCP_F_ZSTD, 0, pre, 32, false);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	ferry_ep_close(ep);

	/* A raw length the wire length cannot hold (2^40 bytes in 32). */
	fd = raw_connect(w);
	ep = raw_hello(w, fd, NULL);
	ferryi_put_le64(pre, 1ull << 40);
	write_status(w, fd, 1, FERRYI_TCP_F_ZSTD, 0, pre, 32, false);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	ferry_ep_close(ep);

	/* Shorter than any segment. */
	fd = raw_connect(w);
	ep = raw_hello(w, fd, NULL);
	send_zmsg(w, fd, 1, seg, 12);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	ferry_ep_close(ep);

	/* Above the region: an answer (ERANGE), not a protocol error; nothing written. */
	fd = raw_connect(w);
	ep = raw_hello(w, fd, NULL);
	assert_int_equal(write_status(w, fd, 2, FERRYI_TCP_F_ZSTD, REGION - 100, seg, wire, true),
			 FERRY_ERANGE);
	for (size_t i = REGION - 100; i < REGION; i++)
		assert_int_equal(w->mem[i], 0x5a);
	check_alive(w, fd, ep);
	finish(w, fd, ep);
	free(seg);
}

/* A side that does not decode zstd refuses compressed frames. */
static void not_accepted(void **state)
{
	struct wire *w = *state;
	int fd = raw_connect(w);
	uint32_t feat = FERRYI_FEAT_ZSTD;
	struct ferry_ep *ep = raw_hello(w, fd, &feat);
	uint8_t src[4096];
	uint64_t wire;

	assert_false(feat & FERRYI_FEAT_ZSTD);
	cz_fill(src, sizeof(src), CZ_JSON, 1);
	uint8_t *seg = zseg(src, sizeof(src), &wire);
	send_zmsg(w, fd, 1, seg, wire);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	assert_int_equal(ferry_ep_status(ep), FERRY_EPROTO);
	ferry_ep_close(ep);
	free(seg);
}

/* A write in segments, compressed and raw: answered once, after the last. */
static void segmented_write(void **state)
{
	struct wire *w = *state;

	NEED_ZSTD();
	int fd = raw_connect(w);
	struct ferry_ep *ep = raw_hello(w, fd, NULL);
	size_t len = 3 * 100000;
	uint8_t *src = malloc(len);
	uint64_t w0, w2;
	struct frame f;

	cz_fill(src, len, CZ_MIXED, 2);
	uint8_t *s0 = zseg(src, 100000, &w0), *s2 = zseg(src + 200000, 100000, &w2);
	assert_int_equal(write_status(w, fd, 0x10, FERRYI_TCP_F_ZSTD | FERRYI_TCP_F_MORE, 1000,
				      s0, w0, false), 0);
	assert_int_equal(write_status(w, fd, 0x10, FERRYI_TCP_F_MORE, 101000, src + 100000,
				      100000, false), 0);
	assert_int_equal(write_status(w, fd, 0x10, FERRYI_TCP_F_ZSTD, 201000, s2, w2, true), 0);
	assert_memory_equal(w->mem + 1000, src, len);

	/* The middle segment out of bounds: one answer at the end, with that refusal. */
	assert_int_equal(write_status(w, fd, 0x11, FERRYI_TCP_F_MORE, 0, src, 1000, false), 0);
	assert_int_equal(write_status(w, fd, 0x11, FERRYI_TCP_F_ZSTD | FERRYI_TCP_F_MORE,
				      REGION - 10, s0, w0, false), 0);
	assert_int_equal(write_status(w, fd, 0x11, 0, 2000, src, 1000, true), FERRY_ERANGE);
	/* Nothing else was answered in between. */
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	for (int i = 0; i < 20; i++)
		ferry_progress(w->ctx);
	assert_int_equal(poll(&pfd, 1, 50), 0);
	(void)f;
	check_alive(w, fd, ep);
	free(s0);
	free(s2);
	free(src);
	finish(w, fd, ep);
}

/* Helpers for reads the server makes from the raw client. */
static struct ferry_rkey *fake_rkey(struct wire *w, uint64_t len)
{
	/* Any region's blob names a tcp key; the raw client answers whatever it is. */
	struct ferry_mr *mr;
	struct ferry_rkey *rk;
	uint8_t blob[FERRY_RKEY_MAX];
	size_t blen = sizeof(blob);
	uint8_t *mem = malloc(len);

	assert_int_equal(ferry_mr_reg(w->ctx, mem, len, FERRY_ACCESS_REMOTE_READ, &mr), 0);
	assert_int_equal(ferry_mr_pack(mr, blob, &blen), 0);
	assert_int_equal(ferry_rkey_unpack(w->ctx, blob, blen, &rk), 0);
	ferry_mr_dereg(mr);
	free(mem);
	return rk;
}

static void send_read_resp(struct wire *w, int fd, uint64_t opid, uint32_t flags,
			   const uint8_t *payload, uint64_t len)
{
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_READ_RESP, .flags = flags, .len = len,
				   .aux = opid};
	struct ferryi_tcp_ext e = {.status = 0};

	send_frame(w, fd, &h, &e, payload, (size_t)len);
}

/* Segments of reads and writes out of line with their transfer. */
static void bad_segments(void **state)
{
	struct wire *w = *state;

	NEED_ZSTD();
	size_t len = 200000;
	uint8_t *src = malloc(len), *dst = malloc(len);
	struct ferry_completion c;
	struct frame f;
	uint64_t w0;

	cz_fill(src, len, CZ_JSON, 6);
	uint8_t *s0 = zseg(src, 100000, &w0);

	/* A read answered in two segments, compressed then raw: fine. The READ_REQ
	 * carries the read's wish (ZWANT), since we advertised zstd. */
	int fd = raw_connect(w);
	struct ferry_ep *ep = raw_hello(w, fd, NULL);
	struct ferry_rkey *rk = fake_rkey(w, len);
	struct ferry_op_attr attr = {.flags = FERRY_OP_COMPRESS};
	assert_int_equal(ferry_read(ep, dst, len, NULL, rk, 0, NULL, &attr), 0);
	assert_int_equal(read_frame(w, fd, &f), 0);
	assert_int_equal(f.h.type, FERRYI_TCP_READ_REQ);
	assert_int_equal(f.h.flags, FERRYI_TCP_F_ZWANT);
	assert_int_equal(f.e.length, len);
	send_read_resp(w, fd, f.h.aux, FERRYI_TCP_F_ZSTD | FERRYI_TCP_F_MORE, s0, w0);
	send_read_resp(w, fd, f.h.aux, 0, src + 100000, 100000);
	assert_int_equal(wait_completion(w, &c), 0);
	assert_memory_equal(dst, src, len);

	/* A corrupt first segment fails the read at its end; the connection goes on. */
	memset(dst, 0, len);
	assert_int_equal(ferry_read(ep, dst, len, NULL, rk, 0, NULL, NULL), 0);
	assert_int_equal(read_frame(w, fd, &f), 0);
	assert_int_equal(f.h.flags, 0);
	s0[20] ^= 0x22;
	send_read_resp(w, fd, f.h.aux, FERRYI_TCP_F_ZSTD | FERRYI_TCP_F_MORE, s0, w0);
	send_read_resp(w, fd, f.h.aux, 0, src + 100000, 100000);
	assert_int_equal(wait_completion(w, &c), FERRY_EPROTO);
	s0[20] ^= 0x22;
	check_alive(w, fd, ep);

	/* Segments adding up to more than the read: the connection goes. */
	assert_int_equal(ferry_read(ep, dst, len, NULL, rk, 0, NULL, NULL), 0);
	assert_int_equal(read_frame(w, fd, &f), 0);
	send_read_resp(w, fd, f.h.aux, FERRYI_TCP_F_MORE, src, 150000);
	send_read_resp(w, fd, f.h.aux, FERRYI_TCP_F_ZSTD, s0, w0);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	assert_int_equal(wait_completion(w, &c), FERRY_EPROTO);
	ferry_ep_close(ep);

	/* A final segment that leaves the read short: the connection goes. */
	fd = raw_connect(w);
	ep = raw_hello(w, fd, NULL);
	assert_int_equal(ferry_read(ep, dst, len, NULL, rk, 0, NULL, NULL), 0);
	assert_int_equal(read_frame(w, fd, &f), 0);
	send_read_resp(w, fd, f.h.aux, FERRYI_TCP_F_ZSTD, s0, w0);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	assert_int_equal(wait_completion(w, &c), FERRY_EPROTO);
	ferry_ep_close(ep);

	/* A write segment of another transfer in the middle of one: the connection goes. */
	fd = raw_connect(w);
	ep = raw_hello(w, fd, NULL);
	write_status(w, fd, 0x20, FERRYI_TCP_F_MORE, 0, src, 1000, false);
	write_status(w, fd, 0x21, 0, 1000, src, 1000, false);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	ferry_ep_close(ep);

	ferry_rkey_destroy(rk);
	free(s0);
	free(src);
	free(dst);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(good_msg, setup, teardown),
		cmocka_unit_test_setup_teardown(corrupt_chunk, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_chunk_headers, setup, teardown),
		cmocka_unit_test_setup_teardown(bomb, setup, teardown),
		cmocka_unit_test_setup_teardown(oversized, setup, teardown),
		cmocka_unit_test_setup_teardown(not_accepted, setup_no_accept, teardown),
		cmocka_unit_test_setup_teardown(segmented_write, setup, teardown),
		cmocka_unit_test_setup_teardown(bad_segments, setup, teardown),
	};
	int rc;

	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	if (ferryi_compress_built())
		assert_int_equal(ferryi_zcodec_new(&zc), 0);
	rc = cmocka_run_group_tests_name("compress.wire", tests, NULL, NULL);
	ferryi_zcodec_free(zc);
	return rc;
}
