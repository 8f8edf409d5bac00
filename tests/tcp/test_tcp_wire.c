/*
 * test_tcp_wire.c - the TCP provider against crafted bytes.
 *
 * A ferry context listens on loopback; the test talks to it over raw sockets with
 * frames it builds itself (tcp_proto.h's encoder, or by hand where the point is to
 * be wrong). Each malformed input must close only that connection, be counted, and
 * leave the context serving a good connection afterwards (check_serves). Refused
 * one-sided operations must be answered, not punished, and must not touch memory.
 * The proto_* cases unit-test the encoder and decoders directly.
 *
 * While waiting for bytes on a raw socket the test drives the context with
 * ferry_progress() (the context's poller thread drives it too); every wait has a
 * deadline.
 *
 *   test_tcp_wire            all cases
 *   test_tcp_wire CASE       one case (CTest registers each as tcp.wire.CASE)
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "core.h"
#include "core_priv.h"
#include "tcp_proto.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS 3000
#define HS_TIMEOUT_MS 300
#define MAX_FRAME (1u << 20)
#define EAGER_MAX 4096u

struct wire {
	struct ferry_ctx *ctx;
	struct ferry_listener *l;
	uint16_t port;
	bool hands_off; /* waits leave the context to its poller thread */
	uint64_t perr_mark; /* protocol_errors before the current connection misbehaved */
};

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct ferry_stats tcp_stats(struct wire *w)
{
	struct ferry_stats st;

	assert_int_equal(ferry_stats_get(w->ctx, "tcp", &st), 0);
	return st;
}

static uint16_t listener_port(struct ferry_listener *l)
{
	char addr[256];
	size_t len = sizeof(addr);

	assert_int_equal(ferry_listener_addr(l, addr, &len), 0);
	const char *colon = strrchr(addr, ':');
	assert_non_null(colon);
	return (uint16_t)atoi(colon + 1);
}

static int setup(void **state)
{
	struct wire *w = calloc(1, sizeof(*w));
	struct ferry_config cfg;

	assert_non_null(w);
	ferry_config_init(&cfg);
	cfg.providers = "tcp";
	cfg.log_level = FERRY_LOG_ERROR; /* FERRY_LOG=debug shows every refusal */
	cfg.handshake_timeout_ms = HS_TIMEOUT_MS;
	cfg.probe_interval_ms = 0; /* no probes interleaved with the frames we read */
	cfg.idle_timeout_s = 0;
	cfg.max_frame = MAX_FRAME;
	cfg.eager_max = EAGER_MAX;
	assert_int_equal(ferry_ctx_create(&cfg, &w->ctx), 0);
	assert_int_equal(ferry_listen(w->ctx, "tcp://127.0.0.1:0", NULL, &w->l), 0);
	w->port = listener_port(w->l);
	*state = w;
	return 0;
}

static int teardown(void **state)
{
	struct wire *w = *state;

	ferry_listener_close(w->l);
	ferry_ctx_destroy(w->ctx);
	free(w);
	return 0;
}

/* ------------------------------------------------------------------ raw socket helpers */

static int raw_connect(struct wire *w, uint16_t port)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	assert_true(fd >= 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	w->perr_mark = tcp_stats(w).protocol_errors;
	return fd;
}

/* Sends what the peer takes; false once it hung up (it may, on bad input). */
static bool raw_send_try(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		p += n;
		len -= (size_t)n;
	}
	return true;
}

static void raw_send(int fd, const void *buf, size_t len)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

		if (n < 0 && errno == EINTR)
			continue;
		assert_true(n > 0);
		p += n;
		len -= (size_t)n;
	}
}

/* Receives exactly len bytes while driving ctx: 0, FERRY_ECONNRESET (EOF or reset),
 * FERRY_ETIMEDOUT. */
static int raw_recv(struct wire *w, int fd, void *buf, size_t len, int timeout_ms)
{
	uint8_t *p = buf;
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	while (len) {
		ssize_t n = recv(fd, p, len, MSG_DONTWAIT);

		if (n > 0) {
			p += n;
			len -= (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			return FERRY_ECONNRESET;
		if (now_ms() > deadline)
			return FERRY_ETIMEDOUT;
		if (!w->hands_off)
			ferry_progress(w->ctx);
		struct pollfd pfd = {.fd = fd, .events = POLLIN};
		poll(&pfd, 1, 2);
	}
	return 0;
}

struct frame {
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e;
	uint8_t payload[4096];
};

/* Reads one frame the server sent and validates it with the provider's decoders. */
static int read_frame(struct wire *w, int fd, struct frame *f, int timeout_ms)
{
	const struct ferryi_tcp_limits lim = {.max_frame = UINT64_MAX, .eager_max = UINT64_MAX};
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	char why[200] = "";
	int rc;

	rc = raw_recv(w, fd, buf, FERRYI_TCP_HDR_LEN, timeout_ms);
	if (rc)
		return rc;
	rc = ferryi_tcp_hdr_decode(buf, &lim, &f->h, why, sizeof(why));
	if (rc) {
		print_error("server sent a bad header: %s\n", why);
		fail();
	}
	rc = raw_recv(w, fd, buf, ferryi_tcp_ext_len(f->h.type), timeout_ms);
	if (rc)
		return rc;
	rc = ferryi_tcp_ext_decode(f->h.type, buf, &lim, &f->e, why, sizeof(why));
	if (rc) {
		print_error("server sent a bad extension: %s\n", why);
		fail();
	}
	assert_true(f->h.len <= sizeof(f->payload));
	return raw_recv(w, fd, f->payload, (size_t)f->h.len, timeout_ms);
}

/*
 * Waits until the server closes fd (EOF or reset). Returns the status of an ERROR
 * frame that came before, or 0 if none did. Fails the test after WAIT_MS.
 */
static int expect_dropped(struct wire *w, int fd)
{
	struct frame f;
	int status = 0;

	for (;;) {
		int rc = read_frame(w, fd, &f, WAIT_MS);

		if (rc == FERRY_ECONNRESET)
			break;
		assert_int_equal(rc, 0); /* no timeout: the server must hang up */
		if (f.h.type == FERRYI_TCP_ERROR)
			status = f.e.status;
	}
	close(fd);
	return status;
}

static void send_frame(int fd, const struct ferryi_tcp_hdr *h, const struct ferryi_tcp_ext *e,
		       const void *payload, size_t len)
{
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	uint32_t n = ferryi_tcp_encode(buf, h, e);

	raw_send(fd, buf, n);
	if (len)
		raw_send(fd, payload, len);
}

static void send_hello(int fd)
{
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_HELLO};
	struct ferryi_tcp_ext e = {.info = {.version = FERRYI_PROTO_VERSION,
					    .max_frame = 1ull << 40,
					    .eager_max = 65536}};

	send_frame(fd, &h, &e, NULL, 0);
}

/* A raw client's handshake; returns the server's endpoint (accepted, held). */
static struct ferry_ep *raw_hello(struct wire *w, int fd)
{
	struct ferry_ep *ep = NULL;
	struct frame f;

	send_hello(fd);
	/* Endpoints that failed earlier in this test still wait in the accept queue. */
	for (;;) {
		assert_int_equal(ferry_listener_accept(w->l, &ep, WAIT_MS), 0);
		if (ferry_ep_status(ep) == 0)
			break;
		ferry_ep_close(ep);
	}
	assert_int_equal(read_frame(w, fd, &f, WAIT_MS), 0);
	assert_int_equal(f.h.type, FERRYI_TCP_HELLO_ACK);
	assert_int_equal(f.e.info.version, FERRYI_PROTO_VERSION);
	assert_int_equal(f.e.info.max_frame, MAX_FRAME);
	assert_int_equal(f.e.info.eager_max, EAGER_MAX);
	assert_string_equal(ferry_ep_provider(ep), "tcp");
	w->perr_mark = tcp_stats(w).protocol_errors;
	return ep;
}

static int wait_completion(struct wire *w, struct ferry_completion *c)
{
	int n = ferry_cq_wait(ferry_ctx_cq(w->ctx), c, 1, WAIT_MS);

	assert_int_equal(n, 1);
	return c->status;
}

/* A good raw client still gets served: handshake, message both ways, goodbye. */
static void check_serves(struct wire *w, uint16_t port)
{
	int fd = raw_connect(w, port);
	struct ferry_ep *ep = raw_hello(w, fd);
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_MSG, .len = 4, .tag = 7, .aux = 99};
	struct ferryi_msg m = {.type = FERRYI_MSG_EAGER};
	struct ferry_completion c;
	struct frame f;
	char buf[16] = "";

	assert_int_equal(ferry_recv(ep, buf, sizeof(buf), 7, ~0ull, NULL, NULL), 0);
	h.flags = ferryi_tcp_msg_flags(&m);
	send_frame(fd, &h, NULL, "ping", 4);
	assert_int_equal(wait_completion(w, &c), 0);
	assert_int_equal(c.type, FERRY_OP_RECV);
	assert_int_equal(c.len, 4);
	assert_int_equal(c.tag, 7);
	assert_memory_equal(buf, "ping", 4);

	assert_int_equal(ferry_send(ep, "pong", 4, 8, NULL, NULL), 0);
	assert_int_equal(read_frame(w, fd, &f, WAIT_MS), 0);
	assert_int_equal(f.h.type, FERRYI_TCP_MSG);
	assert_int_equal(f.h.flags & 0xff, FERRYI_MSG_EAGER);
	assert_int_equal(f.h.tag, 8);
	assert_int_equal(f.h.len, 4);
	assert_memory_equal(f.payload, "pong", 4);
	assert_int_equal(wait_completion(w, &c), 0);
	assert_int_equal(c.type, FERRY_OP_SEND);

	ferry_ep_close(ep);
	assert_int_equal(read_frame(w, fd, &f, WAIT_MS), 0); /* the core's GOODBYE */
	assert_int_equal(f.h.type, FERRYI_TCP_MSG);
	assert_int_equal(f.h.flags & 0xff, FERRYI_MSG_GOODBYE);
	assert_int_equal(expect_dropped(w, fd), 0);
}

/* The connection is dropped with a protocol error counted and reported to the peer. */
static void expect_proto_drop(struct wire *w, int fd, struct ferry_ep *ep, int code)
{
	assert_int_equal(expect_dropped(w, fd), code);
	assert_int_equal(tcp_stats(w).protocol_errors, w->perr_mark + 1);
	if (ep) {
		assert_int_equal(ferry_ep_status(ep), code);
		ferry_ep_close(ep);
	}
	check_serves(w, w->port);
}

/* ------------------------------------------------------------------ proto unit tests */

static void proto_roundtrip(void **state)
{
	const struct ferryi_tcp_limits lim = {.max_frame = 1000, .eager_max = 100};
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	struct ferryi_tcp_hdr h, d;
	struct ferryi_tcp_ext e, de;
	char why[200];
	(void)state;

	for (unsigned t = 1; t < FERRYI_TCP_TYPE_MAX_; t++) {
		struct ferryi_msg m = {.type = FERRYI_MSG_RTS, .flags = FERRYI_MSGF_COMPRESSED};

		memset(&h, 0, sizeof(h));
		memset(&e, 0, sizeof(e));
		h.type = (uint8_t)t;
		switch (t) {
		case FERRYI_TCP_HELLO:
		case FERRYI_TCP_HELLO_ACK:
			e.info = (struct ferryi_peer_info){FERRYI_PROTO_VERSION, 3, 30000, 1000,
							   1000, 100, 1ull << 40};
			break;
		case FERRYI_TCP_ERROR:
			e.status = FERRY_EDRAINING;
			break;
		case FERRYI_TCP_MSG:
			h.flags = ferryi_tcp_msg_flags(&m);
			h.len = 100;
			h.tag = 0x0123456789abcdefull;
			h.aux = 0xfedcba9876543210ull;
			break;
		case FERRYI_TCP_WRITE:
			h.len = 1000;
			h.aux = 0x1122334455667788ull;
			e.key = 0xa5a5a5a55a5a5a5aull;
			e.offset = 0xffffffff00000001ull;
			break;
		case FERRYI_TCP_WRITE_ACK:
		case FERRYI_TCP_READ_RESP:
			h.aux = 42;
			e.status = FERRY_EBADKEY;
			break;
		case FERRYI_TCP_READ_REQ:
			h.aux = 43;
			e.key = 7;
			e.offset = 8;
			e.length = 1000;
			break;
		}
		uint32_t n = ferryi_tcp_encode(buf, &h, &e);
		assert_int_equal(n, FERRYI_TCP_HDR_LEN + ferryi_tcp_ext_len(t));
		assert_int_equal(ferryi_get_le16(buf), FERRYI_TCP_MAGIC);
		assert_int_equal(ferryi_tcp_hdr_decode(buf, &lim, &d, why, sizeof(why)), 0);
		assert_int_equal(d.type, t);
		assert_int_equal(d.flags, h.flags);
		assert_int_equal(d.len, h.len);
		assert_int_equal(d.tag, h.tag);
		assert_int_equal(d.aux, h.aux);
		assert_int_equal(ferryi_tcp_ext_decode(t, buf + FERRYI_TCP_HDR_LEN, &lim, &de, why,
						       sizeof(why)), 0);
		assert_int_equal(de.key, e.key);
		assert_int_equal(de.offset, e.offset);
		assert_int_equal(de.length, e.length);
		assert_int_equal(de.status, e.status);
		assert_memory_equal(&de.info, &e.info, sizeof(e.info));
		if (t == FERRYI_TCP_MSG) {
			struct ferryi_msg back;

			ferryi_tcp_msg_from_hdr(&d, &back);
			assert_int_equal(back.type, m.type);
			assert_int_equal(back.flags, m.flags);
			assert_int_equal(back.tag, h.tag);
			assert_int_equal(back.aux, h.aux);
		}
	}
	/* The wire is little-endian whatever the host: check one header byte by byte. */
	h = (struct ferryi_tcp_hdr){.type = FERRYI_TCP_WRITE, .len = 0x0102030405060708ull,
				    .aux = 0x1112131415161718ull};
	e = (struct ferryi_tcp_ext){.key = 0x2122232425262728ull, .offset = 1};
	ferryi_tcp_encode(buf, &h, &e);
	static const uint8_t want[48] = {
		0x27, 0xfe, FERRYI_PROTO_VERSION, FERRYI_TCP_WRITE, 0, 0, 0, 0,
		8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0,
		0x18, 0x17, 0x16, 0x15, 0x14, 0x13, 0x12, 0x11,
		0x28, 0x27, 0x26, 0x25, 0x24, 0x23, 0x22, 0x21,
		1, 0, 0, 0, 0, 0, 0, 0,
	};
	assert_memory_equal(buf, want, sizeof(want));
}

/* Encodes a header, lets `mut` spoil it, and returns what the decoder says. */
static int hdr_verdict(uint8_t type, uint32_t flags, uint64_t len, uint64_t tag, uint64_t aux,
		       void (*mut)(uint8_t *))
{
	const struct ferryi_tcp_limits lim = {.max_frame = 1000, .eager_max = 100};
	struct ferryi_tcp_hdr h = {.type = type, .flags = flags, .len = len, .tag = tag,
				   .aux = aux};
	struct ferryi_tcp_ext e = {.status = FERRY_EIO};
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	char why[200] = "";

	ferryi_tcp_encode(buf, &h, &e);
	if (mut)
		mut(buf);
	int rc = ferryi_tcp_hdr_decode(buf, &lim, &h, why, sizeof(why));
	if (rc)
		assert_true(why[0] != '\0'); /* every refusal explains itself */
	return rc;
}

static void spoil_magic(uint8_t *b) { b[0] ^= 0xff; }
static void spoil_version(uint8_t *b) { b[2] = FERRYI_PROTO_VERSION + 1; }
static void spoil_type0(uint8_t *b) { b[3] = 0; }
static void spoil_type_high(uint8_t *b) { b[3] = FERRYI_TCP_TYPE_MAX_; }
static void spoil_type_ff(uint8_t *b) { b[3] = 0xff; }

static void proto_hdr_rejects(void **state)
{
	const uint32_t eager = FERRYI_MSG_EAGER;
	(void)state;

	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager, 100, 1, 2, NULL), 0);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager, 0, 0, 0, spoil_magic), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager, 0, 0, 0, spoil_version),
			 FERRY_EVERSION);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager, 0, 0, 0, spoil_type0), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager, 0, 0, 0, spoil_type_high),
			 FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager, 0, 0, 0, spoil_type_ff), FERRY_EPROTO);
	/* lengths: MSG above eager_max, anything above max_frame, control with payload */
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager, 101, 0, 0, NULL), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager, UINT64_MAX, 0, 0, NULL), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_WRITE, 0, 1000, 0, 5, NULL), 0);
	assert_int_equal(hdr_verdict(FERRYI_TCP_WRITE, 0, 1001, 0, 5, NULL), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_READ_RESP, 0, 1001, 0, 5, NULL), FERRY_EPROTO);
	for (uint8_t t = 1; t < FERRYI_TCP_TYPE_MAX_; t++)
		if (t != FERRYI_TCP_MSG && t != FERRYI_TCP_WRITE && t != FERRYI_TCP_READ_RESP)
			assert_int_equal(hdr_verdict(t, 0, 1, 0, 0, NULL), FERRY_EPROTO);
	/* MSG flags: core message type range, unknown flag bits, high bits */
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, 0, 0, 0, 0, NULL), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, FERRYI_MSG_MAX_, 0, 0, 0, NULL), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager | (0x80u << 8), 0, 0, 0, NULL),
			 FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager | (1u << 16), 0, 0, 0, NULL),
			 FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_MSG, eager | (FERRYI_MSGF_COMPRESSED << 8), 0, 0,
				     0, NULL), 0);
	/* unused fields of other frames must be zero */
	assert_int_equal(hdr_verdict(FERRYI_TCP_WRITE_ACK, 1, 0, 0, 5, NULL), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_WRITE_ACK, 0, 0, 1, 5, NULL), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_HELLO, 0, 0, 0, 1, NULL), FERRY_EPROTO);
	assert_int_equal(hdr_verdict(FERRYI_TCP_ERROR, 0, 0, 0, 1, NULL), FERRY_EPROTO);
}

static int ext_verdict(uint8_t type, const uint8_t *raw)
{
	const struct ferryi_tcp_limits lim = {.max_frame = 1000, .eager_max = 100};
	struct ferryi_tcp_ext e;
	char why[200] = "";
	int rc = ferryi_tcp_ext_decode(type, raw, &lim, &e, why, sizeof(why));

	if (rc)
		assert_true(why[0] != '\0');
	return rc;
}

static void proto_ext_rejects(void **state)
{
	uint8_t b[FERRYI_TCP_EXT_MAX];
	(void)state;

	/* HELLO: version, max_frame 0, eager above max_frame */
	memset(b, 0, sizeof(b));
	ferryi_put_le32(b, FERRYI_PROTO_VERSION);
	ferryi_put_le64(b + 16, 1000);
	ferryi_put_le64(b + 24, 1000);
	assert_int_equal(ext_verdict(FERRYI_TCP_HELLO, b), 0);
	ferryi_put_le32(b, FERRYI_PROTO_VERSION + 1);
	assert_int_equal(ext_verdict(FERRYI_TCP_HELLO, b), FERRY_EVERSION);
	assert_int_equal(ext_verdict(FERRYI_TCP_HELLO_ACK, b), FERRY_EVERSION);
	ferryi_put_le32(b, FERRYI_PROTO_VERSION);
	ferryi_put_le64(b + 24, 1001);
	assert_int_equal(ext_verdict(FERRYI_TCP_HELLO, b), FERRY_EPROTO);
	ferryi_put_le64(b + 16, 0);
	ferryi_put_le64(b + 24, 0);
	assert_int_equal(ext_verdict(FERRYI_TCP_HELLO_ACK, b), FERRY_EPROTO);

	/* statuses: known codes only, ERROR never 0, reserved zero */
	memset(b, 0, sizeof(b));
	assert_int_equal(ext_verdict(FERRYI_TCP_WRITE_ACK, b), 0);
	assert_int_equal(ext_verdict(FERRYI_TCP_READ_RESP, b), 0);
	assert_int_equal(ext_verdict(FERRYI_TCP_ERROR, b), FERRY_EPROTO);
	ferryi_put_le32(b, (uint32_t)FERRY_ERANGE);
	assert_int_equal(ext_verdict(FERRYI_TCP_WRITE_ACK, b), 0);
	assert_int_equal(ext_verdict(FERRYI_TCP_ERROR, b), 0);
	ferryi_put_le32(b + 4, 1);
	assert_int_equal(ext_verdict(FERRYI_TCP_WRITE_ACK, b), FERRY_EPROTO);
	ferryi_put_le32(b + 4, 0);
	ferryi_put_le32(b, 5); /* positive: not a status */
	assert_int_equal(ext_verdict(FERRYI_TCP_READ_RESP, b), FERRY_EPROTO);
	ferryi_put_le32(b, (uint32_t)-999);
	assert_int_equal(ext_verdict(FERRYI_TCP_WRITE_ACK, b), FERRY_EPROTO);
	ferryi_put_le32(b, (uint32_t)INT32_MIN);
	assert_int_equal(ext_verdict(FERRYI_TCP_ERROR, b), FERRY_EPROTO);

	/* READ_REQ: length within max_frame; WRITE: any key and offset */
	memset(b, 0xff, sizeof(b));
	assert_int_equal(ext_verdict(FERRYI_TCP_WRITE, b), 0);
	ferryi_put_le64(b + 16, 1001);
	assert_int_equal(ext_verdict(FERRYI_TCP_READ_REQ, b), FERRY_EPROTO);
	ferryi_put_le64(b + 16, 1000);
	assert_int_equal(ext_verdict(FERRYI_TCP_READ_REQ, b), 0);

	assert_true(ferryi_tcp_status_known(0));
	assert_true(ferryi_tcp_status_known(FERRY_EDRAINING));
	assert_true(ferryi_tcp_status_known(FERRY_ECONNRESET));
	assert_false(ferryi_tcp_status_known(-1000));
	assert_false(ferryi_tcp_status_known(1));
}

/* ------------------------------------------------------------------ wire cases */

static void bad_magic(void **state)
{
	struct wire *w = *state;
	int fd = raw_connect(w, w->port);
	char junk[64];

	memset(junk, 0, sizeof(junk));
	snprintf(junk, sizeof(junk), "GET / HTTP/1.1\r\nHost: ferry\r\n\r\n");
	raw_send(fd, junk, sizeof(junk));
	expect_proto_drop(w, fd, NULL, FERRY_EPROTO);
}

static void wrong_version(void **state)
{
	struct wire *w = *state;
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_HELLO};
	struct ferryi_tcp_ext e = {.info = {.version = FERRYI_PROTO_VERSION, .max_frame = 1,
					    .eager_max = 1}};
	uint32_t n = ferryi_tcp_encode(buf, &h, &e);

	/* A newer peer: the frame header says so. */
	int fd = raw_connect(w, w->port);
	buf[2] = FERRYI_PROTO_VERSION + 1;
	raw_send(fd, buf, n);
	expect_proto_drop(w, fd, NULL, FERRY_EVERSION);

	/* A v1 frame whose HELLO advertises another protocol version. */
	fd = raw_connect(w, w->port);
	e.info.version = FERRYI_PROTO_VERSION + 1;
	n = ferryi_tcp_encode(buf, &h, &e);
	raw_send(fd, buf, n);
	expect_proto_drop(w, fd, NULL, FERRY_EVERSION);
}

static void truncated_header(void **state)
{
	struct wire *w = *state;
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_HELLO};
	struct ferryi_tcp_ext e = {.info = {.version = FERRYI_PROTO_VERSION, .max_frame = 1}};
	uint64_t failed = tcp_stats(w).eps_failed;

	ferryi_tcp_encode(buf, &h, &e);
	/* Before the handshake: 10 bytes of a header, then the peer hangs up. */
	int fd = raw_connect(w, w->port);
	raw_send(fd, buf, 10);
	for (int i = 0; i < 20; i++)
		ferry_progress(w->ctx);
	close(fd);

	/* After the handshake: half a MSG header, then hang up. */
	fd = raw_connect(w, w->port);
	struct ferry_ep *ep = raw_hello(w, fd);
	struct ferryi_tcp_hdr m = {.type = FERRYI_TCP_MSG, .flags = FERRYI_MSG_EAGER, .len = 1};
	ferryi_tcp_encode(buf, &m, NULL);
	raw_send(fd, buf, 17);
	close(fd);
	uint64_t deadline = now_ms() + WAIT_MS;
	while (ferry_ep_status(ep) == 0 && now_ms() < deadline) {
		ferry_progress(w->ctx);
		usleep(1000);
	}
	assert_int_equal(ferry_ep_status(ep), FERRY_ECONNRESET);
	/* Both connections failed (not protocol errors: the peer just went away). */
	deadline = now_ms() + WAIT_MS;
	while (tcp_stats(w).eps_failed < failed + 2 && now_ms() < deadline) {
		ferry_progress(w->ctx);
		usleep(1000);
	}
	assert_int_equal(tcp_stats(w).eps_failed, failed + 2);
	assert_int_equal(tcp_stats(w).protocol_errors, 0);
	ferry_ep_close(ep);
	check_serves(w, w->port);
}

static void oversized_length(void **state)
{
	struct wire *w = *state;
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_MSG, .flags = FERRYI_MSG_EAGER};
	struct ferryi_tcp_ext e = {.key = 1};
	int fd;

	/* MSG above the eager_max we advertised (the payload never needs to follow). */
	fd = raw_connect(w, w->port);
	struct ferry_ep *ep = raw_hello(w, fd);
	h.len = EAGER_MAX + 1;
	send_frame(fd, &h, NULL, NULL, 0);
	expect_proto_drop(w, fd, ep, FERRY_EPROTO);

	/* MSG with a 2^63 length. */
	fd = raw_connect(w, w->port);
	ep = raw_hello(w, fd);
	h.len = 1ull << 63;
	send_frame(fd, &h, NULL, NULL, 0);
	expect_proto_drop(w, fd, ep, FERRY_EPROTO);

	/* WRITE above max_frame. */
	fd = raw_connect(w, w->port);
	ep = raw_hello(w, fd);
	h = (struct ferryi_tcp_hdr){.type = FERRYI_TCP_WRITE, .len = MAX_FRAME + 1ull, .aux = 1};
	send_frame(fd, &h, &e, NULL, 0);
	expect_proto_drop(w, fd, ep, FERRY_EPROTO);

	/* READ_REQ asking for more than max_frame. */
	fd = raw_connect(w, w->port);
	ep = raw_hello(w, fd);
	h = (struct ferryi_tcp_hdr){.type = FERRYI_TCP_READ_REQ, .aux = 1};
	e.length = MAX_FRAME + 1ull;
	send_frame(fd, &h, &e, NULL, 0);
	expect_proto_drop(w, fd, ep, FERRY_EPROTO);

	/* A control frame with a payload, before the handshake. */
	fd = raw_connect(w, w->port);
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	struct ferryi_tcp_hdr hh = {.type = FERRYI_TCP_HELLO};
	struct ferryi_tcp_ext he = {.info = {.version = FERRYI_PROTO_VERSION, .max_frame = 1}};
	uint32_t n = ferryi_tcp_encode(buf, &hh, &he);
	ferryi_put_le64(buf + 8, 5);
	raw_send(fd, buf, n);
	raw_send(fd, "12345", 5);
	expect_proto_drop(w, fd, NULL, FERRY_EPROTO);
}

static void unknown_type(void **state)
{
	struct wire *w = *state;
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_WRITE_ACK, .aux = 1};
	struct ferryi_tcp_ext e = {.status = 0};

	int fd = raw_connect(w, w->port);
	struct ferry_ep *ep = raw_hello(w, fd);
	uint32_t n = ferryi_tcp_encode(buf, &h, &e);
	buf[3] = FERRYI_TCP_TYPE_MAX_;
	raw_send(fd, buf, n);
	expect_proto_drop(w, fd, ep, FERRY_EPROTO);

	/* Before the handshake too, and a core message type nobody knows. */
	fd = raw_connect(w, w->port);
	buf[3] = 0;
	raw_send(fd, buf, n);
	expect_proto_drop(w, fd, NULL, FERRY_EPROTO);

	fd = raw_connect(w, w->port);
	ep = raw_hello(w, fd);
	struct ferryi_tcp_hdr m = {.type = FERRYI_TCP_MSG, .flags = 200};
	send_frame(fd, &m, NULL, NULL, 0);
	expect_proto_drop(w, fd, ep, FERRY_EPROTO);
}

static void msg_before_hello(void **state)
{
	struct wire *w = *state;
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_MSG, .flags = FERRYI_MSG_EAGER, .len = 4,
				   .tag = 1};
	int fd = raw_connect(w, w->port);

	send_frame(fd, &h, NULL, "evil", 4);
	expect_proto_drop(w, fd, NULL, FERRY_EPROTO);

	/* A one-sided request before the handshake is no better. */
	struct ferryi_tcp_hdr r = {.type = FERRYI_TCP_READ_REQ, .aux = 1};
	struct ferryi_tcp_ext e = {.key = 1, .length = 8};
	fd = raw_connect(w, w->port);
	send_frame(fd, &r, &e, NULL, 0);
	expect_proto_drop(w, fd, NULL, FERRY_EPROTO);

	/* Nor is a second HELLO after it. */
	fd = raw_connect(w, w->port);
	struct ferry_ep *ep = raw_hello(w, fd);
	send_hello(fd);
	expect_proto_drop(w, fd, ep, FERRY_EPROTO);
}

static int write_status(struct wire *w, int fd, uint64_t opid, uint64_t key, uint64_t off,
			const void *data, size_t len)
{
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_WRITE, .len = len, .aux = opid};
	struct ferryi_tcp_ext e = {.key = key, .offset = off};
	struct frame f;

	send_frame(fd, &h, &e, data, len);
	assert_int_equal(read_frame(w, fd, &f, WAIT_MS), 0);
	assert_int_equal(f.h.type, FERRYI_TCP_WRITE_ACK);
	assert_int_equal(f.h.aux, opid);
	return f.e.status;
}

static int read_status(struct wire *w, int fd, uint64_t opid, uint64_t key, uint64_t off,
		       uint64_t len, struct frame *f)
{
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_READ_REQ, .aux = opid};
	struct ferryi_tcp_ext e = {.key = key, .offset = off, .length = len};

	send_frame(fd, &h, &e, NULL, 0);
	assert_int_equal(read_frame(w, fd, f, WAIT_MS), 0);
	assert_int_equal(f->h.type, FERRYI_TCP_READ_RESP);
	assert_int_equal(f->h.aux, opid);
	assert_int_equal(f->h.len, f->e.status == 0 ? len : 0);
	return f->e.status;
}

static void rma_refused(void **state)
{
	struct wire *w = *state;
	uint8_t *rw = malloc(4096), *ro = malloc(4096), data[256], expect[4096];
	struct ferry_mr *mr_rw, *mr_ro;
	struct frame f;

	memset(rw, 0xaa, 4096);
	memset(ro, 0xbb, 4096);
	memset(data, 0x55, sizeof(data));
	assert_int_equal(ferry_mr_reg(w->ctx, rw, 4096,
				      FERRY_ACCESS_REMOTE_WRITE | FERRY_ACCESS_REMOTE_READ, &mr_rw),
			 0);
	assert_int_equal(ferry_mr_reg(w->ctx, ro, 4096, FERRY_ACCESS_REMOTE_READ, &mr_ro), 0);
	/* The key the peer would find in the rkey blob. */
	uint8_t blob[FERRY_RKEY_MAX];
	size_t blen = sizeof(blob);
	struct ferry_rkey hdr;
	size_t klen = 0;
	assert_int_equal(ferry_mr_pack(mr_rw, blob, &blen), 0);
	assert_int_equal(ferryi_rkey_decode(blob, blen, &hdr), 0);
	const void *kb = ferryi_rkey_key(&hdr, FERRYI_PROV_TCP, &klen);
	assert_non_null(kb);
	assert_int_equal(klen, 8);
	uint64_t key_rw = ferryi_get_le64(kb), key_ro = mr_ro->key;
	assert_int_equal(key_rw, mr_rw->key);

	int fd = raw_connect(w, w->port);
	struct ferry_ep *ep = raw_hello(w, fd);
	uint64_t refusals = tcp_stats(w).rkey_refusals;

	assert_int_equal(write_status(w, fd, 0x1111, key_rw ^ 1, 0, data, 64), FERRY_EBADKEY);
	assert_int_equal(write_status(w, fd, 0x2222, key_rw, 4090, data, 64), FERRY_ERANGE);
	assert_int_equal(write_status(w, fd, 0x2223, key_rw, UINT64_MAX - 10, data, 64),
			 FERRY_ERANGE);
	assert_int_equal(write_status(w, fd, 0x2224, key_rw, 4097, data, 0), FERRY_ERANGE);
	assert_int_equal(write_status(w, fd, 0x3333, key_ro, 0, data, 64), FERRY_EACCES);
	memset(expect, 0xaa, sizeof(expect));
	assert_memory_equal(rw, expect, 4096);
	memset(expect, 0xbb, sizeof(expect));
	assert_memory_equal(ro, expect, 4096);

	assert_int_equal(read_status(w, fd, 0x4444, key_rw ^ 1, 0, 8, &f), FERRY_EBADKEY);
	assert_int_equal(read_status(w, fd, 0x4445, key_rw, 4000, 200, &f), FERRY_ERANGE);
	assert_int_equal(read_status(w, fd, 0x4446, key_ro + 1, 0, 8, &f), FERRY_EBADKEY);
	assert_int_equal(tcp_stats(w).rkey_refusals, refusals + 8);

	/* Refusals are answers, not protocol errors: the connection still works. */
	assert_int_equal(write_status(w, fd, 0x5555, key_rw, 100, data, 200), 0);
	memset(expect, 0xaa, sizeof(expect));
	memset(expect + 100, 0x55, 200);
	assert_memory_equal(rw, expect, 4096);
	assert_int_equal(read_status(w, fd, 0x6666, key_rw, 96, 256, &f), 0);
	assert_memory_equal(f.payload, expect + 96, 256);
	assert_int_equal(read_status(w, fd, 0x6667, key_ro, 4000, 96, &f), 0);
	assert_memory_equal(f.payload, ro, 96);
	assert_int_equal(ferry_ep_status(ep), 0);
	assert_int_equal(tcp_stats(w).protocol_errors, 0);

	/* A deregistered region is refused like an unknown one. */
	assert_int_equal(ferry_mr_dereg(mr_rw), 0);
	assert_int_equal(write_status(w, fd, 0x7777, key_rw, 0, data, 64), FERRY_EBADKEY);
	assert_memory_equal(rw, expect, 4096);

	ferry_ep_close(ep);
	expect_dropped(w, fd);
	assert_int_equal(ferry_mr_dereg(mr_ro), 0);
	free(rw);
	free(ro);
	check_serves(w, w->port);
}

static void unknown_op_id(void **state)
{
	struct wire *w = *state;
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_READ_RESP, .aux = 0xdeadbeef00000001ull};
	struct ferryi_tcp_ext e = {.status = 0};

	int fd = raw_connect(w, w->port);
	struct ferry_ep *ep = raw_hello(w, fd);
	send_frame(fd, &h, &e, NULL, 0);
	expect_proto_drop(w, fd, ep, FERRY_EPROTO);

	/* A READ_RESP with data for nobody. */
	fd = raw_connect(w, w->port);
	ep = raw_hello(w, fd);
	h.len = 4;
	send_frame(fd, &h, &e, "data", 4);
	expect_proto_drop(w, fd, ep, FERRY_EPROTO);

	/* A WRITE_ACK naming the id of a live op of another kind: a posted receive. */
	fd = raw_connect(w, w->port);
	ep = raw_hello(w, fd);
	char buf[8];
	assert_int_equal(ferry_recv(ep, buf, sizeof(buf), 0, 0, NULL, NULL), 0);
	struct ferryi_op *recv = NULL;
	ferryi_ctx_lock(w->ctx);
	struct ferryi_list_node *n = ferryi_list_first(&ep->recvs);
	if (n)
		recv = ferryi_container_of(n, struct ferryi_op, qlink);
	uint64_t id = recv ? ferryi_op_id(recv) : 0;
	ferryi_ctx_unlock(w->ctx);
	assert_non_null(recv);
	struct ferryi_tcp_hdr a = {.type = FERRYI_TCP_WRITE_ACK, .aux = id};
	send_frame(fd, &a, &e, NULL, 0);
	assert_int_equal(expect_dropped(w, fd), FERRY_EPROTO);
	struct ferry_completion c;
	assert_int_equal(wait_completion(w, &c), FERRY_EPROTO); /* the receive fails once */
	assert_int_equal(c.type, FERRY_OP_RECV);
	assert_int_equal(ferry_ep_status(ep), FERRY_EPROTO);
	assert_int_equal(tcp_stats(w).protocol_errors, w->perr_mark + 1);
	ferry_ep_close(ep);
	check_serves(w, w->port);
}

static void silent_peer(void **state)
{
	struct wire *w = *state;
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_HELLO};
	struct ferryi_tcp_ext e = {.info = {.version = FERRYI_PROTO_VERSION, .max_frame = 1}};

	/* Connects and says nothing. */
	uint64_t t0 = now_ms();
	int fd = raw_connect(w, w->port);
	int st = expect_dropped(w, fd);
	uint64_t took = now_ms() - t0;
	assert_true(took >= HS_TIMEOUT_MS - 50);
	assert_true(st == 0 || st == FERRY_ETIMEDOUT);

	/* Sends half a HELLO and stalls. */
	uint32_t n = ferryi_tcp_encode(buf, &h, &e);
	t0 = now_ms();
	fd = raw_connect(w, w->port);
	raw_send(fd, buf, n / 2);
	st = expect_dropped(w, fd);
	assert_true(now_ms() - t0 >= HS_TIMEOUT_MS - 50);
	assert_true(st == 0 || st == FERRY_ETIMEDOUT);
	assert_int_equal(tcp_stats(w).protocol_errors, 0);
	check_serves(w, w->port);
}

/* Frames that arrive one byte at a time are assembled, not misread. */
static void fragmented(void **state)
{
	struct wire *w = *state;
	uint8_t buf[FERRYI_TCP_PREFIX_MAX + 64];
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_HELLO};
	struct ferryi_tcp_ext e = {.info = {.version = FERRYI_PROTO_VERSION,
					    .max_frame = 1ull << 40, .eager_max = 65536}};
	struct ferry_ep *ep = NULL;
	struct ferry_completion c;
	char got[64] = "";
	int fd = raw_connect(w, w->port);
	uint32_t n = ferryi_tcp_encode(buf, &h, &e);

	for (uint32_t i = 0; i < n; i++) {
		raw_send(fd, buf + i, 1);
		ferry_progress(w->ctx);
		usleep(200);
	}
	assert_int_equal(ferry_listener_accept(w->l, &ep, WAIT_MS), 0);
	struct frame f;
	assert_int_equal(read_frame(w, fd, &f, WAIT_MS), 0);
	assert_int_equal(f.h.type, FERRYI_TCP_HELLO_ACK);

	struct ferryi_tcp_hdr m = {.type = FERRYI_TCP_MSG, .flags = FERRYI_MSG_EAGER, .len = 40,
				   .tag = 5};
	n = ferryi_tcp_encode(buf, &m, NULL);
	memcpy(buf + n, "0123456789012345678901234567890123456789", 40);
	assert_int_equal(ferry_recv(ep, got, sizeof(got), 5, ~0ull, NULL, NULL), 0);
	for (uint32_t i = 0; i < n + 40; i++) {
		raw_send(fd, buf + i, 1);
		ferry_progress(w->ctx);
	}
	assert_int_equal(wait_completion(w, &c), 0);
	assert_int_equal(c.len, 40);
	assert_memory_equal(got, buf + n, 40);
	ferry_ep_close(ep);
	expect_dropped(w, fd);
	check_serves(w, w->port);
}

struct accept_arg {
	struct ferry_listener *l;
	struct ferry_ep *ep;
	int rc;
};

static void *accept_thread(void *p)
{
	struct accept_arg *a = p;

	a->rc = ferry_listener_accept(a->l, &a->ep, WAIT_MS);
	return NULL;
}

static struct ferry_ctx *client_ctx_at(enum ferry_log_level level)
{
	struct ferry_ctx *cli;
	struct ferry_config cfg;

	ferry_config_init(&cfg);
	cfg.providers = "tcp";
	cfg.log_level = level;
	cfg.reconnect_attempts = 1;
	cfg.probe_interval_ms = 0;
	assert_int_equal(ferry_ctx_create(&cfg, &cli), 0);
	return cli;
}

static struct ferry_ctx *client_ctx(void)
{
	return client_ctx_at(FERRY_LOG_ERROR);
}

/* cli connects to l; ferry_connect drives only the client, so the listener's side
 * accepts on a thread. */
static void connect_pair(struct ferry_ctx *cli, struct ferry_listener *l, struct ferry_ep **cep,
			 struct ferry_ep **sep)
{
	struct ferry_connect_attr ca = {.flags = FERRY_CONNECT_PRIVATE, .timeout_ms = WAIT_MS};
	struct accept_arg a = {.l = l};
	char addr[256];
	size_t len = sizeof(addr);
	pthread_t t;

	assert_int_equal(ferry_listener_addr(l, addr, &len), 0);
	assert_int_equal(pthread_create(&t, NULL, accept_thread, &a), 0);
	int rc = ferry_connect(cli, addr, &ca, cep);
	pthread_join(t, NULL);
	assert_int_equal(rc, 0);
	assert_int_equal(a.rc, 0);
	*sep = a.ep;
}

/* Several listeners on several ports serve at once, raw clients and ferry clients. */
static void two_listeners(void **state)
{
	struct wire *w = *state;
	struct ferry_listener *l1 = w->l, *l2;
	struct ferry_completion c;
	struct ferry_ep *cep = NULL, *sep = NULL;
	char got[8] = "";

	assert_int_equal(ferry_listen(w->ctx, "tcp://127.0.0.1:0", NULL, &l2), 0);
	uint16_t port2 = listener_port(l2);
	assert_int_not_equal(port2, w->port);
	check_serves(w, w->port);
	w->l = l2;
	check_serves(w, port2);
	w->l = l1;

	/* A ferry client (its own context) to the second listener. */
	struct ferry_ctx *cli = client_ctx();
	connect_pair(cli, l2, &cep, &sep);
	assert_int_equal(ferry_recv(sep, got, sizeof(got), 3, ~0ull, NULL, NULL), 0);
	assert_int_equal(ferry_send(cep, "hi", 2, 3, NULL, NULL), 0);
	assert_int_equal(wait_completion(w, &c), 0);
	assert_int_equal(c.len, 2);
	assert_memory_equal(got, "hi", 2);
	assert_int_equal(ferry_cq_wait(ferry_ctx_cq(cli), &c, 1, WAIT_MS), 1);
	assert_int_equal(c.status, 0);
	ferry_ep_close(cep);
	ferry_ep_close(sep);
	ferry_ctx_destroy(cli);
	ferry_listener_close(l2);
	check_serves(w, w->port);
}

/* A raw server for the client side: reads the HELLO, answers as told. */
enum { SRV_ERROR_DRAINING, SRV_ACK_BAD_VERSION, SRV_ACK_BAD_MAGIC, SRV_ACK_TRUNCATED };

struct raw_srv {
	int lfd;
	uint16_t port;
	int mode;
	bool hello_ok;
	uint64_t hello_max_frame;
};

static void *raw_srv_thread(void *p)
{
	struct raw_srv *s = p;
	const struct ferryi_tcp_limits lim = {.max_frame = UINT64_MAX, .eager_max = UINT64_MAX};
	struct timeval tv = {.tv_sec = 3};
	uint8_t buf[FERRYI_TCP_PREFIX_MAX];
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e = {0};
	size_t got = 0;
	int fd = accept(s->lfd, NULL, NULL);

	if (fd < 0)
		return NULL;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	const size_t hello = FERRYI_TCP_HDR_LEN + FERRYI_TCP_HELLO_LEN;

	while (got < hello) {
		ssize_t n = recv(fd, buf + got, hello - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	s->hello_ok = got == hello && ferryi_tcp_hdr_decode(buf, &lim, &h, NULL, 0) == 0 &&
		      h.type == FERRYI_TCP_HELLO &&
		      ferryi_tcp_ext_decode(h.type, buf + 32, &lim, &e, NULL, 0) == 0;
	s->hello_max_frame = e.info.max_frame;

	memset(&h, 0, sizeof(h));
	memset(&e, 0, sizeof(e));
	h.type = FERRYI_TCP_HELLO_ACK;
	e.info = (struct ferryi_peer_info){.version = FERRYI_PROTO_VERSION, .max_frame = 1 << 20,
					   .eager_max = 4096};
	if (s->mode == SRV_ERROR_DRAINING) {
		h.type = FERRYI_TCP_ERROR;
		e.status = FERRY_EDRAINING;
	} else if (s->mode == SRV_ACK_BAD_VERSION) {
		e.info.version = FERRYI_PROTO_VERSION + 1;
	}
	uint32_t n = ferryi_tcp_encode(buf, &h, &e);
	if (s->mode == SRV_ACK_BAD_MAGIC)
		buf[1] = 0;
	if (s->mode == SRV_ACK_TRUNCATED)
		n = 40;
	send(fd, buf, n, MSG_NOSIGNAL);
	if (s->mode == SRV_ACK_TRUNCATED)
		shutdown(fd, SHUT_WR);
	while (recv(fd, buf, sizeof(buf), 0) > 0) /* until the client hangs up */
		;
	close(fd);
	return NULL;
}

static int connect_to_raw_srv(struct ferry_ctx *cli, struct raw_srv *s)
{
	struct ferry_connect_attr ca = {.flags = FERRY_CONNECT_PRIVATE, .timeout_ms = WAIT_MS};
	struct ferry_ep *ep = NULL;
	char uri[64];
	pthread_t t;

	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%u", s->port);
	assert_int_equal(pthread_create(&t, NULL, raw_srv_thread, s), 0);
	int rc = ferry_connect(cli, uri, &ca, &ep);
	pthread_join(t, NULL);
	assert_null(ep);
	return rc;
}

/* The connecting side validates the answer to its HELLO like any other input. */
static void client_side(void **state)
{
	struct ferry_ctx *cli = client_ctx();
	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t slen = sizeof(sa);
	struct raw_srv s = {0};
	struct ferry_stats st;
	struct ferry_connect_attr ca = {.flags = FERRY_CONNECT_PRIVATE, .timeout_ms = 500};
	struct ferry_ep *ep = NULL;
	char uri[64];
	(void)state;

	s.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(s.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(s.lfd, (struct sockaddr *)&sa, &slen), 0);
	s.port = ntohs(sa.sin_port);

	/* Nobody listens yet: refused. */
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%u", s.port);
	assert_int_equal(ferry_connect(cli, uri, &ca, &ep), FERRY_ECONNREFUSED);
	assert_int_equal(listen(s.lfd, 4), 0);

	s.mode = SRV_ERROR_DRAINING;
	assert_int_equal(connect_to_raw_srv(cli, &s), FERRY_EDRAINING);
	assert_true(s.hello_ok);
	assert_int_equal(s.hello_max_frame, ferry_ctx_config(cli)->max_frame);
	s.mode = SRV_ACK_BAD_VERSION;
	assert_int_equal(connect_to_raw_srv(cli, &s), FERRY_EVERSION);
	s.mode = SRV_ACK_BAD_MAGIC;
	assert_int_equal(connect_to_raw_srv(cli, &s), FERRY_EPROTO);
	s.mode = SRV_ACK_TRUNCATED;
	assert_int_equal(connect_to_raw_srv(cli, &s), FERRY_ECONNRESET);
	assert_int_equal(ferry_stats_get(cli, "tcp", &st), 0);
	assert_int_equal(st.protocol_errors, 2);
	close(s.lfd);
	ferry_ctx_destroy(cli);
}

struct progress_arg {
	struct ferry_ctx *ctx;
	atomic_bool stop;
};

static void *progress_thread(void *p)
{
	struct progress_arg *a = p;

	while (!atomic_load(&a->stop)) {
		ferry_progress(a->ctx);
		usleep(200);
	}
	return NULL;
}

/* A draining context answers a HELLO with ERROR(EDRAINING); clients see that code. */
static void draining(void **state)
{
	struct wire *w = *state;
	struct ferry_connect_attr ca = {.flags = FERRY_CONNECT_PRIVATE, .timeout_ms = WAIT_MS};
	struct progress_arg pa = {.ctx = w->ctx};
	struct ferry_ep *ep = NULL;
	char addr[256];
	size_t len = sizeof(addr);
	pthread_t t;

	assert_int_equal(ferry_ctx_drain(w->ctx, 0), 0);
	int fd = raw_connect(w, w->port);
	send_hello(fd);
	assert_int_equal(expect_dropped(w, fd), FERRY_EDRAINING);
	assert_int_equal(tcp_stats(w).protocol_errors, 0);

	struct ferry_ctx *cli = client_ctx();
	assert_int_equal(ferry_listener_addr(w->l, addr, &len), 0);
	assert_int_equal(pthread_create(&t, NULL, progress_thread, &pa), 0);
	int rc = ferry_connect(cli, addr, &ca, &ep);
	atomic_store(&pa.stop, true);
	pthread_join(t, NULL);
	assert_int_equal(rc, FERRY_EDRAINING);
	assert_null(ep);
	ferry_ctx_destroy(cli);
}

struct late_frame {
	int fd;
	uint64_t tag;
};

/* Sends a 4-byte message a little later, while the test's thread waits. */
static void *late_frame_thread(void *p)
{
	struct late_frame *lf = p;
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_MSG, .len = 4, .tag = lf->tag};
	struct ferryi_msg m = {.type = FERRYI_MSG_EAGER};

	usleep(100 * 1000);
	h.flags = ferryi_tcp_msg_flags(&m);
	send_frame(lf->fd, &h, NULL, "late", 4);
	return NULL;
}

/* Busy passes until the context took its sockets out of epoll (FERRYI_PARK_PASSES). */
static void busy_until_parked(struct wire *w)
{
	struct ferry_completion c;

	for (int i = 0; i < 100000 && !w->ctx->parked; i++)
		assert_int_equal(ferry_cq_poll(ferry_ctx_cq(w->ctx), &c, 1), 0);
	assert_true(w->ctx->parked > 0);
}

/*
 * A busy-polling context reads its few sockets directly and, after a while, takes them
 * out of epoll. A thread that then sleeps, and an application that then waits on the
 * context fd, must still be woken by the next message: both put the sockets back. A
 * wait that never returns is the failure (the test's timeout).
 */
static void parked_fds(void **state)
{
	struct wire *w = *state;
	int fd = raw_connect(w, w->port);
	struct ferry_ep *ep = raw_hello(w, fd);
	struct late_frame lf = {.fd = fd};
	struct ferry_completion c;
	char buf[16];
	pthread_t t;

	/* ferry_cq_wait without a deadline: its sleep must see the socket */
	lf.tag = 1;
	assert_int_equal(ferry_recv(ep, buf, sizeof(buf), lf.tag, ~0ull, NULL, NULL), 0);
	busy_until_parked(w);
	assert_int_equal(pthread_create(&t, NULL, late_frame_thread, &lf), 0);
	assert_int_equal(ferry_cq_wait(ferry_ctx_cq(w->ctx), &c, 1, -1), 1);
	pthread_join(t, NULL);
	assert_int_equal(c.status, 0);
	assert_int_equal(c.tag, lf.tag);
	assert_memory_equal(buf, "late", 4);
	assert_int_equal(w->ctx->parked, 0);

	/* the context fd, taken while parked: readable when the message arrives */
	lf.tag = 2;
	assert_int_equal(ferry_recv(ep, buf, sizeof(buf), lf.tag, ~0ull, NULL, NULL), 0);
	busy_until_parked(w);
	struct pollfd pfd = {.fd = ferry_ctx_fd(w->ctx), .events = POLLIN};
	assert_int_equal(pthread_create(&t, NULL, late_frame_thread, &lf), 0);
	assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
	pthread_join(t, NULL);
	assert_int_equal(wait_completion(w, &c), 0);
	assert_int_equal(c.tag, lf.tag);

	/* with the fd exported, busy passes leave the sockets in epoll */
	for (int i = 0; i < 1000; i++)
		assert_int_equal(ferry_cq_poll(ferry_ctx_cq(w->ctx), &c, 1), 0);
	assert_int_equal(w->ctx->parked, 0);
	ferry_ep_close(ep);
	close(fd);
}

static uint64_t rng_state;

static uint64_t rng(void)
{
	/* xorshift64*: reproducible from FERRY_TEST_SEED */
	rng_state ^= rng_state >> 12;
	rng_state ^= rng_state << 25;
	rng_state ^= rng_state >> 27;
	return rng_state * 0x2545F4914F6CDD1Dull;
}

static uint64_t rng_len(uint64_t max)
{
	switch (rng() % 4) {
	case 0:
		return 0;
	case 1:
		return rng() % 16;
	case 2:
		return rng() % (max + 1);
	default:
		return max + (rng() % 3); /* at and just past the limit */
	}
}

/*
 * Random frames with a valid magic and version (so they get past the first check):
 * random types, flags, lengths, op ids, statuses, keys and offsets, some aimed at a
 * real region. Whatever happens, the process must not crash or touch memory outside
 * the region (run it under FERRY_SANITIZER=address), and the context must serve.
 */
static void random_frames(void **state)
{
	struct wire *w = *state;
	const char *env = getenv("FERRY_TEST_SEED");
	uint8_t *region = calloc(1, 4096), payload[EAGER_MAX + 8], buf[FERRYI_TCP_PREFIX_MAX];
	struct ferry_mr *mr;
	int rounds = 300;

	rng_state = env ? strtoull(env, NULL, 0) : 0x5eed5eedull;
	if (!rng_state)
		rng_state = 1;
	assert_int_equal(ferry_mr_reg(w->ctx, region, 4096,
				      FERRY_ACCESS_REMOTE_WRITE | FERRY_ACCESS_REMOTE_READ, &mr),
			 0);
	for (size_t i = 0; i < sizeof(payload); i++)
		payload[i] = (uint8_t)rng();

	for (int r = 0; r < rounds; r++) {
		int fd = raw_connect(w, w->port);
		struct ferry_ep *ep = NULL;

		if (rng() % 5)
			ep = raw_hello(w, fd);
		for (int k = 0, nf = 1 + (int)(rng() % 4); k < nf; k++) {
			struct ferryi_tcp_hdr h = {.type = (uint8_t)(1 + rng() % FERRYI_TCP_TYPE_MAX_)};
			struct ferryi_tcp_ext e = {0};

			h.aux = rng() % 3 ? rng() : 0;
			if (h.type == FERRYI_TCP_MSG) {
				h.flags = (uint32_t)(rng() % (FERRYI_MSG_MAX_ + 1));
				if (rng() % 8 == 0)
					h.flags |= (uint32_t)(rng() & 0xff00);
				h.len = rng_len(EAGER_MAX);
				h.tag = rng();
			} else if (h.type == FERRYI_TCP_WRITE || h.type == FERRYI_TCP_READ_RESP) {
				h.len = rng_len(4096);
			}
			e.key = rng() % 2 ? mr->key : rng();
			e.offset = rng() % 2 ? rng() % 4200 : rng();
			e.length = rng_len(4096);
			e.status = (int32_t)(rng() % 2 ? -(int64_t)(rng() % 120) : (int64_t)rng());
			e.info = (struct ferryi_peer_info){.version = FERRYI_PROTO_VERSION,
							   .max_frame = rng_len(1 << 20),
							   .eager_max = rng_len(4096)};
			uint32_t n = ferryi_tcp_encode(buf, &h, &e);
			if (rng() % 10 == 0)
				buf[4 + rng() % (n - 4)] ^= (uint8_t)(1u << (rng() % 8));
			if (!raw_send_try(fd, buf, n) ||
			    (h.len && !raw_send_try(fd, payload,
						    (size_t)FERRYI_MIN(h.len, sizeof(payload)))))
				break;
		}
		shutdown(fd, SHUT_WR);
		expect_dropped(w, fd); /* every frame the server sends back must decode */
		if (ep)
			ferry_ep_close(ep);
	}
	assert_int_equal(ferry_mr_dereg(mr), 0);
	free(region);
	check_serves(w, w->port);
}

/* Voluntary context switches of this process's ferry-poller threads so far. */
static uint64_t poller_wakeups(void)
{
	uint64_t sum = 0;
	DIR *d = opendir("/proc/self/task");
	struct dirent *de;

	assert_non_null(d);
	while ((de = readdir(d))) {
		char path[300], line[128];
		FILE *f;

		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/comm", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue; /* a thread that just ended */
		bool poller = fgets(line, sizeof(line), f) && strcmp(line, "ferry-poller\n") == 0;
		fclose(f);
		if (!poller)
			continue;
		snprintf(path, sizeof(path), "/proc/self/task/%s/status", de->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (strncmp(line, "voluntary_ctxt_switches:", 24) == 0)
				sum += strtoull(line + 24, NULL, 10);
		fclose(f);
	}
	closedir(d);
	return sum;
}

/*
 * A listening context whose application does not progress: its poller sleeps on the
 * listening socket instead of waking every few ms to look, and still accepts and
 * answers a hello on its own (the test does not call into the context meanwhile).
 */
static void idle_listener(void **state)
{
	struct wire *w = *state;
	struct timespec half = {0, 500 * 1000 * 1000};
	struct frame f;

	nanosleep(&(struct timespec){0, 50 * 1000 * 1000}, NULL); /* the listen's kick */
	uint64_t before = poller_wakeups();
	nanosleep(&half, NULL);
	uint64_t woke = poller_wakeups() - before;
	/* A 10 ms accept tick would be about 50; nothing is due here, not even probes. */
	if (woke > 5)
		fail_msg("the idle listening context's poller woke %" PRIu64 " times in 500 ms",
			 woke);

	w->hands_off = true;
	for (int i = 0; i < 2; i++) {
		int fd = raw_connect(w, w->port);

		send_hello(fd);
		assert_int_equal(read_frame(w, fd, &f, WAIT_MS), 0);
		assert_int_equal(f.h.type, FERRYI_TCP_HELLO_ACK);
		close(fd);
	}
	w->hands_off = false;
}

/* ------------------------------------------------------------------ main */

/* ------------------------------------------------------------------ congestion control */

/* The congestion control of this process's connected TCP socket with those ports. */
static void sock_cc(uint16_t lport, uint16_t rport, char *cc, size_t len)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *de;
	bool found = false;

	assert_non_null(d);
	while (!found && (de = readdir(d)) != NULL) {
		struct sockaddr_in la, ra;
		socklen_t lalen = sizeof(la), ralen = sizeof(ra), cclen = (socklen_t)len;
		int fd = atoi(de->d_name);

		if (fd <= 2 || fd == dirfd(d) || getsockname(fd, (struct sockaddr *)&la, &lalen) ||
		    la.sin_family != AF_INET || getpeername(fd, (struct sockaddr *)&ra, &ralen) ||
		    ntohs(la.sin_port) != lport || ntohs(ra.sin_port) != rport)
			continue;
		memset(cc, 0, len);
		assert_int_equal(getsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, &cclen), 0);
		found = true;
	}
	closedir(d);
	if (!found)
		fail_msg("no socket 127.0.0.1:%u -> :%u in this process", lport, rport);
}

/* A context made with FERRY_TCP_CONGESTION=cc (NULL: unset). */
static struct ferry_ctx *cc_ctx(const char *cc, enum ferry_log_level level)
{
	if (cc)
		setenv("FERRY_TCP_CONGESTION", cc, 1);
	else
		unsetenv("FERRY_TCP_CONGESTION");
	struct ferry_ctx *ctx = client_ctx_at(level);
	unsetenv("FERRY_TCP_CONGESTION");
	return ctx;
}

/* connect_pair, returning cli's local port (as the accepted side sees it). */
static uint16_t cc_connect(struct ferry_ctx *cli, struct ferry_listener *l, struct ferry_ep **cep,
			   struct ferry_ep **sep)
{
	connect_pair(cli, l, cep, sep);
	const char *peer = ferry_ep_peer(*sep);
	assert_non_null(peer);
	assert_non_null(strrchr(peer, ':'));
	return (uint16_t)atoi(strrchr(peer, ':') + 1);
}

/*
 * A connection from con to a listener of lis over loopback: the accepted socket runs
 * lis_cc, the connecting one con_cc. Both endpoints are closed again.
 */
static void cc_expect(struct ferry_ctx *lis, struct ferry_ctx *con, const char *lis_cc,
		      const char *con_cc)
{
	struct ferry_ep *cep, *sep;
	struct ferry_listener *l;
	char got[32];

	assert_int_equal(ferry_listen(lis, "tcp://127.0.0.1:0", NULL, &l), 0);
	uint16_t lport = listener_port(l), cport = cc_connect(con, l, &cep, &sep);
	sock_cc(lport, cport, got, sizeof(got));
	assert_string_equal(got, lis_cc);
	sock_cc(cport, lport, got, sizeof(got));
	assert_string_equal(got, con_cc);
	ferry_ep_close(cep);
	ferry_ep_close(sep);
	ferry_listener_close(l);
}

/*
 * FERRY_TCP_CONGESTION=NAME sets the congestion control of the connections a context
 * makes and accepts, and of no others; =system keeps the system's default; unset, a
 * connection inside this host runs CUBIC (on both ends, each end's own choice); a
 * name the kernel refuses is said once and the connections keep the system's default.
 * (That a connection between two hosts keeps the default when unset is checked by
 * faults.netns.tbf, between two network namespaces.)
 */
static void congestion(void **state)
{
	char def[32] = "", got[32];
	FILE *f = fopen("/proc/sys/net/ipv4/tcp_congestion_control", "r");
	struct ferry_ep *cep, *sep;
	struct ferry_listener *l;
	(void)state;

	assert_non_null(f);
	assert_non_null(fgets(def, sizeof(def), f));
	fclose(f);
	def[strcspn(def, "\n")] = '\0';
	/* reno is always built in; when it is the default, cubic is nearly always there. */
	const char *pick = strcmp(def, "reno") ? "reno" : "cubic";

	struct ferry_ctx *set = cc_ctx(pick, FERRY_LOG_ERROR);
	struct ferry_ctx *plain = cc_ctx("system", FERRY_LOG_ERROR);
	struct ferry_ctx *unset = cc_ctx(NULL, FERRY_LOG_ERROR);

	cc_expect(unset, unset, "cubic", "cubic"); /* unset on both ends: CUBIC on both */
	cc_expect(plain, unset, def, "cubic");     /* unset on one end: that end only */
	cc_expect(unset, plain, "cubic", def);
	ferry_ctx_destroy(unset);
	cc_expect(set, plain, pick, def); /* a name: the connections of that context */
	cc_expect(plain, set, def, pick);
	ferry_ctx_destroy(set);

	/* A name the kernel does not have: logged once, the connections work as before. */
	int saved = dup(STDERR_FILENO), pipefd[2];
	char log[4096] = "";
	assert_int_equal(pipe(pipefd), 0);
	assert_true(dup2(pipefd[1], STDERR_FILENO) >= 0);
	close(pipefd[1]);
	struct ferry_ctx *bad = cc_ctx("no-such-cc", FERRY_LOG_WARN);
	assert_int_equal(ferry_listen(plain, "tcp://127.0.0.1:0", NULL, &l), 0);
	uint16_t lport = listener_port(l), cport;
	for (int i = 0; i < 2; i++) {
		struct ferry_completion c;
		char buf[4] = "";

		cport = cc_connect(bad, l, &cep, &sep);
		sock_cc(cport, lport, got, sizeof(got));
		assert_string_equal(got, def);
		assert_int_equal(ferry_recv(sep, buf, sizeof(buf), 5, ~0ull, NULL, NULL), 0);
		assert_int_equal(ferry_send(cep, "hi", 2, 5, NULL, NULL), 0);
		assert_int_equal(ferry_cq_wait(ferry_ctx_cq(bad), &c, 1, WAIT_MS), 1);
		assert_int_equal(c.status, 0);
		assert_int_equal(ferry_cq_wait(ferry_ctx_cq(plain), &c, 1, WAIT_MS), 1);
		assert_int_equal(c.status, 0);
		assert_memory_equal(buf, "hi", 2);
		ferry_ep_close(cep);
		ferry_ep_close(sep);
	}
	ferry_listener_close(l);
	ferry_ctx_destroy(bad);
	ferry_ctx_destroy(plain);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	ssize_t n = read(pipefd[0], log, sizeof(log) - 1);
	close(pipefd[0]);
	assert_true(n > 0);
	log[n] = '\0';
	const char *first = strstr(log, "FERRY_TCP_CONGESTION=no-such-cc refused");
	if (!first || strstr(first + 1, "FERRY_TCP_CONGESTION=no-such-cc refused"))
		fail_msg("expected the refusal logged exactly once, got: %s", log);
}

/* ------------------------------------------------------------------ one-sided window */

/* Set by a case that cannot run here; main() then exits 77 (CTest: skipped). */
static const char *skip_reason;

static int setup_bbr(void **state)
{
	setenv("FERRY_TCP_CONGESTION", "bbr", 1);
	int rc = setup(state);
	unsetenv("FERRY_TCP_CONGESTION");
	return rc;
}

/* Reads one frame's header and extension; its payload (h.len bytes) into buf. */
static void read_frame_into(struct wire *w, int fd, struct ferryi_tcp_hdr *h,
			    struct ferryi_tcp_ext *e, uint8_t *buf, size_t cap)
{
	const struct ferryi_tcp_limits lim = {.max_frame = UINT64_MAX, .eager_max = UINT64_MAX};
	uint8_t pre[FERRYI_TCP_PREFIX_MAX];
	char why[200] = "";

	assert_int_equal(raw_recv(w, fd, pre, FERRYI_TCP_HDR_LEN, WAIT_MS), 0);
	if (ferryi_tcp_hdr_decode(pre, &lim, h, why, sizeof(why)))
		fail_msg("server sent a bad header: %s", why);
	assert_int_equal(raw_recv(w, fd, pre, ferryi_tcp_ext_len(h->type), WAIT_MS), 0);
	if (ferryi_tcp_ext_decode(h->type, pre, &lim, e, why, sizeof(why)))
		fail_msg("server sent a bad extension: %s", why);
	assert_true(h->len <= cap);
	assert_int_equal(raw_recv(w, fd, buf, (size_t)h->len, WAIT_MS), 0);
}

static void expect_write(struct wire *w, int fd, uint64_t off, const uint8_t *src, uint64_t len,
			 uint8_t *scratch, uint64_t *opid)
{
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e;

	read_frame_into(w, fd, &h, &e, scratch, len);
	assert_int_equal(h.type, FERRYI_TCP_WRITE);
	assert_int_equal(e.offset, off);
	assert_int_equal(h.len, len);
	assert_memory_equal(scratch, src, len);
	*opid = h.aux;
}

static void answer_write(int fd, uint64_t opid)
{
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_WRITE_ACK, .aux = opid};
	struct ferryi_tcp_ext e = {.status = 0};

	send_frame(fd, &h, &e, NULL, 0);
}

/* Drives the context without sleeping until it no longer counts as sleeping. */
static void poll_until_awake(struct wire *w)
{
	uint64_t deadline = now_ms() + WAIT_MS;

	while (ferryi_ctx_sleeps(w->ctx)) {
		assert_true(now_ms() < deadline);
		ferry_progress(w->ctx);
	}
}

/* Nothing arrives on fd for ms milliseconds while the context progresses. */
static void expect_quiet(struct wire *w, int fd, int ms)
{
	uint8_t b;

	assert_int_equal(raw_recv(w, fd, &b, 1, ms), FERRY_ETIMEDOUT);
}

/* A raw peer on a BBR connection, with a region whose rkey ferry may write and read. */
struct window_peer {
	int fd;
	struct ferry_ep *ep;
	struct ferry_mr *mr;
	struct ferry_rkey *rkey;
};

/*
 * Connects a raw peer and registers src (len bytes, filled with a pattern); leaves the
 * context awake (the window applies while the application polls; the accept slept).
 * Returns false, with skip_reason set and src freed, where BBR is not available.
 */
static bool window_open(struct wire *w, struct window_peer *wp, uint8_t *src, size_t len)
{
	uint8_t blob[FERRY_RKEY_MAX];
	size_t blen = sizeof(blob);
	struct sockaddr_in me;
	socklen_t melen = sizeof(me);
	char cc[32];

	assert_non_null(src);
	for (size_t i = 0; i < len; i++)
		src[i] = (uint8_t)(i * 7 + i / 4096);
	wp->fd = raw_connect(w, w->port);
	assert_int_equal(getsockname(wp->fd, (struct sockaddr *)&me, &melen), 0);
	wp->ep = raw_hello(w, wp->fd);
	sock_cc(w->port, ntohs(me.sin_port), cc, sizeof(cc));
	if (strcmp(cc, "bbr") != 0) {
		skip_reason = "BBR is not available here (FERRY_TCP_CONGESTION=bbr refused): the "
			      "one-sided window applies only under BBR";
		ferry_ep_close(wp->ep);
		close(wp->fd);
		free(src);
		return false;
	}
	/* Any key will do: the raw peer takes what it is sent. */
	assert_int_equal(ferry_mr_reg(w->ctx, src, len,
				      FERRY_ACCESS_REMOTE_WRITE | FERRY_ACCESS_REMOTE_READ, &wp->mr),
			 0);
	assert_int_equal(ferry_mr_pack(wp->mr, blob, &blen), 0);
	assert_int_equal(ferry_rkey_unpack(w->ctx, blob, blen, &wp->rkey), 0);
	poll_until_awake(w);
	return true;
}

/*
 * FERRY_TCP_RMA_WINDOW (1M by default) on a connection inside this host under BBR: a
 * write or read request that would take the one-sided bytes written and not yet
 * answered past the window waits for answers, and what was posted after it waits in
 * order (a message never overtakes a write it may announce). A probe's answer does
 * not wait. Every op completes once, with its bytes. Only while the application
 * polls: one that sleeps is not held back.
 */
static void rma_window(void **state)
{
	enum { HALF = 512 * 1024, QUART = 256 * 1024 };
	struct wire *w = *state;
	uint8_t *src = malloc(4 * HALF), *dst = malloc(QUART), *scratch = malloc(HALF);
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e;
	struct ferry_completion c;
	struct window_peer wp;
	uint64_t id[3];

	assert_non_null(dst);
	assert_non_null(scratch);
	if (!window_open(w, &wp, src, 4 * HALF)) {
		free(dst);
		free(scratch);
		skip();
	}
	int fd = wp.fd;
	struct ferry_ep *ep = wp.ep;
	struct ferry_mr *mr = wp.mr;
	struct ferry_rkey *rkey = wp.rkey;
	uint64_t waits = tcp_stats(w).rma_window_waits;

	/* Two halves fill the window; the third, the message and the read wait. */
	for (int k = 0; k < 3; k++)
		assert_int_equal(ferry_write(ep, src + (size_t)k * HALF, HALF, mr, rkey,
					     (uint64_t)k * HALF, (void *)(uintptr_t)(1 + k), NULL),
				 0);
	assert_int_equal(ferry_send(ep, "after", 5, 77, (void *)(uintptr_t)4, NULL), 0);
	assert_int_equal(ferry_read(ep, dst, QUART, NULL, rkey, 3 * HALF, (void *)(uintptr_t)5, NULL),
			 0);
	expect_write(w, fd, 0, src, HALF, scratch, &id[0]);
	expect_write(w, fd, HALF, src + HALF, HALF, scratch, &id[1]);
	expect_quiet(w, fd, 200);
	assert_int_equal(tcp_stats(w).rma_window_waits, waits + 1);

	/* A probe is answered at once, ahead of what waits. */
	struct ferryi_msg probe = {.type = FERRYI_MSG_PROBE, .aux = 0x1234};
	struct ferryi_tcp_hdr ph = {.type = FERRYI_TCP_MSG,
				    .flags = ferryi_tcp_msg_flags(&probe),
				    .aux = probe.aux};
	struct ferryi_tcp_ext pe;
	struct ferryi_msg got;
	memset(&pe, 0, sizeof(pe));
	send_frame(fd, &ph, &pe, NULL, 0);
	read_frame_into(w, fd, &h, &e, scratch, HALF);
	assert_int_equal(h.type, FERRYI_TCP_MSG);
	ferryi_tcp_msg_from_hdr(&h, &got);
	assert_int_equal(got.type, FERRYI_MSG_PROBE_ACK);
	assert_int_equal(got.aux, 0x1234);
	expect_quiet(w, fd, 100);

	/* The first answer lets the third write go, then the message; the read still
	 * waits (1 MiB unanswered). */
	answer_write(fd, id[0]);
	expect_write(w, fd, 2 * HALF, src + 2 * HALF, HALF, scratch, &id[2]);
	read_frame_into(w, fd, &h, &e, scratch, HALF);
	assert_int_equal(h.type, FERRYI_TCP_MSG);
	ferryi_tcp_msg_from_hdr(&h, &got);
	assert_int_equal(got.type, FERRYI_MSG_EAGER);
	assert_int_equal(got.tag, 77);
	assert_memory_equal(scratch, "after", 5);
	expect_quiet(w, fd, 100);
	assert_int_equal(tcp_stats(w).rma_window_waits, waits + 2);

	/* The second answer lets the read go; answer it with its bytes. */
	answer_write(fd, id[1]);
	read_frame_into(w, fd, &h, &e, scratch, HALF);
	assert_int_equal(h.type, FERRYI_TCP_READ_REQ);
	assert_int_equal(e.offset, 3 * HALF);
	assert_int_equal(e.length, QUART);
	struct ferryi_tcp_hdr rh = {.type = FERRYI_TCP_READ_RESP, .aux = h.aux, .len = QUART};
	struct ferryi_tcp_ext re = {.status = 0};
	send_frame(fd, &rh, &re, src + 3 * HALF, QUART);
	answer_write(fd, id[2]);

	/* Every op completes once, with status 0; the read brought its bytes. */
	bool seen[6] = {false};
	for (int n = 0; n < 5; n++) {
		assert_int_equal(wait_completion(w, &c), 0);
		uintptr_t k = (uintptr_t)c.user_ctx;
		assert_true(k >= 1 && k <= 5);
		assert_false(seen[k]);
		seen[k] = true;
	}
	assert_int_equal(ferry_cq_wait(ferry_ctx_cq(w->ctx), &c, 1, 100), FERRY_ETIMEDOUT);
	assert_memory_equal(dst, src + 3 * HALF, QUART);
	assert_int_equal(ferry_ep_status(ep), 0);
	assert_int_equal(tcp_stats(w).protocol_errors, w->perr_mark);

	/* An application that has just slept (the waits above) is not held back: a wake-up
	 * per transfer would cost it more than the queue. */
	assert_true(ferryi_ctx_sleeps(w->ctx));
	waits = tcp_stats(w).rma_window_waits;
	for (int k = 0; k < 3; k++)
		assert_int_equal(ferry_write(ep, src + (size_t)k * HALF, HALF, mr, rkey,
					     (uint64_t)k * HALF, (void *)(uintptr_t)(1 + k), NULL),
				 0);
	for (int k = 0; k < 3; k++)
		expect_write(w, fd, (uint64_t)k * HALF, src + (size_t)k * HALF, HALF, scratch, &id[k]);
	for (int k = 0; k < 3; k++)
		answer_write(fd, id[k]);
	for (int k = 0; k < 3; k++)
		assert_int_equal(wait_completion(w, &c), 0);
	assert_int_equal(tcp_stats(w).rma_window_waits, waits);

	ferry_rkey_destroy(rkey);
	ferry_ep_close(ep);
	expect_dropped(w, fd);
	assert_int_equal(ferry_mr_dereg(mr), 0);
	free(src);
	free(dst);
	free(scratch);
}

/*
 * Ops held by the window complete once, with an error, when the endpoint fails with
 * them: the peer hanging up, or the application closing the endpoint.
 */
static void rma_window_close(void **state)
{
	enum { HALF = 512 * 1024 };
	struct wire *w = *state;
	uint8_t *src = malloc(3 * HALF), *scratch = malloc(HALF);
	struct ferry_completion c;
	struct window_peer wp;
	uint64_t id;

	assert_non_null(scratch);
	/* The peer dies, the endpoint is closed, the context is destroyed. */
	for (int round = 0; round < 3; round++) {
		if (!window_open(w, &wp, src, 3 * HALF)) {
			free(scratch);
			skip();
		}
		uint64_t waits = tcp_stats(w).rma_window_waits;
		for (int k = 0; k < 3; k++)
			assert_int_equal(ferry_write(wp.ep, src + (size_t)k * HALF, HALF, wp.mr,
						     wp.rkey, (uint64_t)k * HALF,
						     (void *)(uintptr_t)(1 + k), NULL),
					 0);
		assert_int_equal(ferry_send(wp.ep, "held", 4, 9, (void *)(uintptr_t)4, NULL), 0);
		expect_write(w, wp.fd, 0, src, HALF, scratch, &id);
		expect_write(w, wp.fd, HALF, src + HALF, HALF, scratch, &id);
		expect_quiet(w, wp.fd, 100);
		assert_int_equal(tcp_stats(w).rma_window_waits, waits + 1);
		if (round == 2) {
			/*
			 * Everything goes with the context: the four ops complete into the
			 * queue, which is discarded, and the socket closes. An op that never
			 * completed would keep its memory and its endpoint reference
			 * (LeakSanitizer); a second completion is refused by the op's own
			 * guard. The raw peer sees the hang-up.
			 */
			ferry_ctx_destroy(w->ctx);
			w->ctx = NULL; /* raw_recv's ferry_progress(NULL) and teardown accept it */
			w->l = NULL;
			expect_dropped(w, wp.fd);
			break;
		}
		if (round == 0) {
			close(wp.fd); /* the peer dies with two writes unanswered, two held */
		} else {
			ferry_ep_close(wp.ep);
			expect_dropped(w, wp.fd);
		}
		bool seen[5] = {false};
		for (int n = 0; n < 4; n++) {
			assert_int_equal(ferry_cq_wait(ferry_ctx_cq(w->ctx), &c, 1, WAIT_MS), 1);
			uintptr_t k = (uintptr_t)c.user_ctx;
			assert_true(k >= 1 && k <= 4);
			assert_false(seen[k]);
			seen[k] = true;
			assert_true(c.status < 0);
		}
		assert_int_equal(ferry_cq_wait(ferry_ctx_cq(w->ctx), &c, 1, 100), FERRY_ETIMEDOUT);
		if (round == 0)
			ferry_ep_close(wp.ep);
		ferry_rkey_destroy(wp.rkey);
		assert_int_equal(ferry_mr_dereg(wp.mr), 0);
	}
	free(src);
	free(scratch);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(proto_roundtrip),
		cmocka_unit_test(proto_hdr_rejects),
		cmocka_unit_test(proto_ext_rejects),
		cmocka_unit_test_setup_teardown(bad_magic, setup, teardown),
		cmocka_unit_test_setup_teardown(wrong_version, setup, teardown),
		cmocka_unit_test_setup_teardown(truncated_header, setup, teardown),
		cmocka_unit_test_setup_teardown(oversized_length, setup, teardown),
		cmocka_unit_test_setup_teardown(unknown_type, setup, teardown),
		cmocka_unit_test_setup_teardown(msg_before_hello, setup, teardown),
		cmocka_unit_test_setup_teardown(rma_refused, setup, teardown),
		cmocka_unit_test_setup_teardown(unknown_op_id, setup, teardown),
		cmocka_unit_test_setup_teardown(silent_peer, setup, teardown),
		cmocka_unit_test_setup_teardown(fragmented, setup, teardown),
		cmocka_unit_test_setup_teardown(two_listeners, setup, teardown),
		cmocka_unit_test(client_side),
		cmocka_unit_test_setup_teardown(draining, setup, teardown),
		cmocka_unit_test_setup_teardown(parked_fds, setup, teardown),
		cmocka_unit_test_setup_teardown(random_frames, setup, teardown),
		cmocka_unit_test_setup_teardown(idle_listener, setup, teardown),
		cmocka_unit_test(congestion),
		cmocka_unit_test_setup_teardown(rma_window, setup_bbr, teardown),
		cmocka_unit_test_setup_teardown(rma_window_close, setup_bbr, teardown),
	};

	if (argc > 1) {
		bool known = false;

		for (size_t i = 0; i < FERRYI_ARRAY_LEN(tests); i++)
			known |= strcmp(tests[i].name, argv[1]) == 0;
		if (!known) {
			fprintf(stderr, "unknown case '%s'\n", argv[1]);
			return 2;
		}
		cmocka_set_test_filter(argv[1]);
	}
	int failed = cmocka_run_group_tests_name("tcp.wire", tests, NULL, NULL);
	if (failed == 0 && skip_reason) {
		fprintf(stderr, "SKIPPED: %s\n", skip_reason);
		return 77;
	}
	return failed;
}
