/*
 * fuzz_tcp_stream.c - the TCP provider's whole receive path, end to end, over real
 * loopback sockets: per input a raw socket writes fuzzed bytes to a ferry endpoint.
 *
 * Server role (default): the context listens on 127.0.0.1 and the harness connects.
 * Client role: the harness listens with a raw socket and the context connects to it
 * (started without blocking, as ferry_connect does inside), so the fuzzed bytes are
 * what a server answers: HELLO_ACK decoding and the client side of everything else.
 *
 * Input:
 *   byte 0  mode bits:
 *           0x01  do a valid handshake first (server role: send HELLO and wait for the
 *                 accept; client role: read ferry's HELLO, answer HELLO_ACK), so the
 *                 fuzzed bytes reach the post-handshake state machine; without it
 *                 they are the first thing ferry reads
 *           0x02  (handshake) post two receives (64 B, 64 KiB) on the endpoint
 *           0x04  (handshake) post a rendezvous send from ferry: its op id replaces
 *                 the marker FZOPSND1 in the input (so FINs can name it)
 *           0x08  (handshake) post a one-sided write and read to the raw peer: their
 *                 ids replace FZOPWR01 / FZOPRD01 (WRITE_ACK / READ_RESP can name them)
 *           0x10  (handshake) post a small eager send from ferry
 *           0x20  write the bytes in segments, driving progress between them
 *           0x40  (handshake) advertise a small eager_max (64) and rx_credit (1024)
 *   byte 1  bits 0-4: segment length - 1 for 0x20 (at most 64 segments)
 *           0x20  (handshake) the raw peer advertises zstd: ferry may compress what
 *                 it sends (READ_RESP to a READ_REQ with ZWANT, sends with 0x10/0x04)
 *           0x40  receives (0x02) are posted after the bytes, not before: unexpected
 *                 messages meet their receive
 *           0x80  client role
 *   rest    bytes written to the socket; FZKEYRW1 / FZKEYRO1 become the keys of a
 *           read-write and a read-only region registered in the context
 *
 * After the bytes, the harness drives progress (fz_progress) until the connection is closed
 * or quiet (bounded, no sleeping), closes both ends, and checks: the endpoint is
 * freed (no leak, no hang), no op slot is left in use, every op the harness posted
 * completed exactly once, and (white box) the endpoint's receive state stayed sane.
 * Every CHECK_EVERY inputs (and on the first) a fresh good connection must still get
 * through the handshake and answer a PROBE.
 */
#define _GNU_SOURCE
#include "fuzz_common.h"
#include "tcp_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_FRAME (1u << 20)
#define EAGER_MAX 4096u
#define REGION_LEN 4096u
#define CHECK_EVERY 64
#define QUIET_ROUNDS 3
#define DRIVE_ROUNDS 64
#define SETTLE_ROUNDS 2000

enum {
	MODE_HELLO = 0x01,
	MODE_RECVS = 0x02,
	MODE_RNDV = 0x04,
	MODE_RMA = 0x08,
	MODE_EAGER = 0x10,
	MODE_SEGMENTS = 0x20,
	MODE_SMALL = 0x40,
	OPT_ZSTD = 0x20,       /* byte 1 */
	OPT_LATE_RECVS = 0x40, /* byte 1 */
	OPT_CLIENT = 0x80,     /* byte 1 */
};

struct track {
	int posted, completed;
};

enum { T_RECV_SMALL, T_RECV_BIG, T_RNDV, T_WRITE, T_READ, T_EAGER, T_MAX };

static struct {
	struct ferry_ctx *ctx;
	struct ferry_listener *l;
	uint16_t port;
	struct ferry_mr *mr_rw, *mr_ro;
	struct ferry_rkey *peer_rkey; /* names a region "on the raw peer" */
	int raw_lfd;                  /* client role: the harness's listening socket */
	struct ferryi_addr raw_addr;
	unsigned long inputs;
	struct track track[T_MAX];
} S;

static uint8_t region_rw[REGION_LEN], region_ro[REGION_LEN];
static uint8_t recv_small[64], recv_big[65536], send_big[128 * 1024], send_small[200];
static uint8_t rma_wbuf[300], rma_rbuf[300];

static void tweak(struct ferry_config *cfg)
{
	cfg->max_frame = MAX_FRAME;
	cfg->eager_max = EAGER_MAX;
	cfg->unexpected_max = 64 * 1024; /* small enough for inputs to exhaust */
}

static void init(void)
{
	uint8_t blob[64];

	S.ctx = fz_ctx_create(tweak);
	FZ_CHECK(ferry_listen(S.ctx, "tcp://127.0.0.1:0", NULL, &S.l) == 0);
	S.port = fz_listener_port(S.l);
	FZ_CHECK(ferry_mr_reg(S.ctx, region_rw, sizeof(region_rw),
			      FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE, &S.mr_rw) == 0);
	FZ_CHECK(ferry_mr_reg(S.ctx, region_ro, sizeof(region_ro), FERRY_ACCESS_REMOTE_READ,
			      &S.mr_ro) == 0);

	/* A key for a 1 MiB read-write region of the raw peer (which has none, of course). */
	memset(blob, 0, sizeof(blob));
	memcpy(blob, "FRK1", 4);
	blob[4] = 1;
	blob[5] = 1;
	ferryi_put_le16(blob + 6, 24 + 4 + 8);
	ferryi_put_le64(blob + 8, 1u << 20);
	ferryi_put_le32(blob + 16, 1);
	ferryi_put_le32(blob + 20, FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE);
	blob[24] = FERRYI_PROV_TCP;
	ferryi_put_le16(blob + 26, 8);
	ferryi_put_le64(blob + 28, 0x1122334455667788ull);
	FZ_CHECK(ferry_rkey_unpack(S.ctx, blob, 24 + 4 + 8, &S.peer_rkey) == 0);
	for (size_t i = 0; i < sizeof(send_big); i++)
		send_big[i] = (uint8_t)i;

	struct sockaddr_in sa = {.sin_family = AF_INET};
	socklen_t salen = sizeof(sa);
	char uri[64];

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	S.raw_lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	FZ_CHECK(S.raw_lfd >= 0);
	FZ_CHECK(bind(S.raw_lfd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
	FZ_CHECK(listen(S.raw_lfd, 16) == 0);
	FZ_CHECK(getsockname(S.raw_lfd, (struct sockaddr *)&sa, &salen) == 0);
	snprintf(uri, sizeof(uri), "tcp://127.0.0.1:%u", ntohs(sa.sin_port));
	FZ_CHECK(ferryi_addr_parse(uri, &S.raw_addr) == 0);
}

static void poll_cq(void)
{
	struct ferry_completion c[32];
	int n;

	while ((n = ferry_cq_poll(ferry_ctx_cq(S.ctx), c, 32)) > 0) {
		for (int i = 0; i < n; i++) {
			struct track *t = c[i].user_ctx;

			FZ_CHECK(t >= S.track && t < S.track + T_MAX);
			FZ_CHECK(t->posted);
			if (++t->completed > 1)
				fz_fail(__FILE__, __LINE__, "op %d completed twice (status %s)",
					(int)(t - S.track), ferry_errname(c[i].status));
		}
	}
	FZ_CHECK(n == 0);
}

static void post(int which, int rc)
{
	/* A post may be refused (the endpoint already failed): then it never completes. */
	if (rc == 0)
		S.track[which].posted = 1;
	else
		FZ_CHECK(rc == FERRY_ENOTCONN || rc == FERRY_EMSGSIZE);
}

/* Accepted endpoints nobody took from the queue (a HELLO among the fuzzed bytes). */
static void drain_acceptq(struct ferry_ep *keep)
{
	struct ferry_ep *ep;

	while (ferry_listener_accept(S.l, &ep, 0) == 0) {
		FZ_CHECK(ep != keep);
		ferry_ep_release(ep);
	}
}

/*
 * The TCP endpoint's receive state is consistent (white box: tcp_internal.h). Memory
 * corruption inside the endpoint object is invisible to ASan; these catch some of it.
 */
static void tcp_invariants(struct ferry_ep *ep)
{
	if (!ep)
		return;
	ferryi_ctx_lock(S.ctx);
	struct ferryi_tcp_ep *te = ferryi_tcp_ep(ep);
	if (ep->state != FERRYI_EP_CLOSED && !te->closed) {
		FZ_CHECK(te->rs <= te->re && te->re <= FERRYI_TCP_STAGE_SIZE);
		FZ_CHECK(te->rx_state == FERRYI_TCP_RX_HDR || te->rx_state == FERRYI_TCP_RX_PAYLOAD);
		uint8_t held; /* as a byte: a corrupted bool is no valid bool */

		memcpy(&held, &te->rx_use_held, 1);
		if ((held > 1 || (held && !te->rx_use.mr)) && !fz_skip("rts_overflow"))
			fz_fail(__FILE__, __LINE__, "tcp endpoint: rx_use_held is 0x%02x while "
				"%s region is held (overwritten?)", held, te->rx_use.mr ? "a" : "no");
		FZ_CHECK(te->nctl <= FERRYI_TCP_CTL_MAX);
	}
	ferryi_ctx_unlock(S.ctx);
}

/* HELLO, accept, HELLO_ACK: returns the accepted endpoint (held). */
static struct ferry_ep *handshake(int fd, uint64_t eager, uint64_t credit, uint32_t feat)
{
	uint8_t hello[FERRYI_TCP_PREFIX_MAX], ack[FERRYI_TCP_PREFIX_MAX];
	size_t n = fz_hello(hello, MAX_FRAME, eager, credit, feat), kept = 0;
	struct ferry_ep *ep = NULL;

	FZ_CHECK(fz_raw_write(S.ctx, fd, hello, n, 8) == n);
	for (int i = 0; i < 200 && !ep; i++) {
		fz_progress(S.ctx);
		(void)ferry_listener_accept(S.l, &ep, 0);
	}
	if (!ep)
		fz_fail(__FILE__, __LINE__, "a valid HELLO was not accepted");
	for (int i = 0; i < 200 && kept < FERRYI_TCP_HDR_LEN + FERRYI_TCP_HELLO_LEN; i++) {
		FZ_CHECK(fz_raw_drain(fd, ack, sizeof(ack), &kept) >= 0);
		if (kept < FERRYI_TCP_HDR_LEN + FERRYI_TCP_HELLO_LEN)
			fz_progress(S.ctx);
	}
	FZ_CHECK(kept == FERRYI_TCP_HDR_LEN + FERRYI_TCP_HELLO_LEN);

	const struct ferryi_tcp_limits lim = {.max_frame = UINT64_MAX, .eager_max = UINT64_MAX};
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e;
	FZ_CHECK(ferryi_tcp_hdr_decode(ack, &lim, &h, NULL, 0) == 0);
	FZ_CHECK(h.type == FERRYI_TCP_HELLO_ACK);
	FZ_CHECK(ferryi_tcp_ext_decode(h.type, ack + FERRYI_TCP_HDR_LEN, &lim, &e, NULL, 0) == 0);
	FZ_CHECK(e.info.max_frame == MAX_FRAME && e.info.eager_max > 0 &&
		 e.info.eager_max <= EAGER_MAX);
	return ep;
}

/*
 * Client role: the context connects to the harness's raw listener the way
 * ferry_connect does inside, without blocking. Returns the endpoint with a reference
 * of the harness's own (released by client_close) and the accepted raw socket.
 */
static struct ferry_ep *client_connect(int *fd)
{
	struct ferry_ep *ep;
	struct pollfd pfd = {.fd = S.raw_lfd, .events = POLLIN};

	ferryi_ctx_lock(S.ctx);
	struct ferryi_prov_inst *pi = ferryi_ctx_inst_by_scheme(S.ctx, "tcp");
	FZ_CHECK(pi != NULL);
	ep = ferryi_ep_alloc(S.ctx, pi, FERRYI_EP_CONNECTING, S.raw_addr.uri);
	FZ_CHECK(ep != NULL);
	int rc = pi->prov->connect(ep, &S.raw_addr);
	if (rc < 0)
		fz_fail(__FILE__, __LINE__, "tcp connect to %s: %s", S.raw_addr.uri,
			ferry_strerror(rc));
	ferryi_ep_ref(ep); /* ours, as connect_once holds one while it waits */
	ferryi_ctx_unlock(S.ctx);

	FZ_CHECK(poll(&pfd, 1, 2000) == 1);
	*fd = accept4(S.raw_lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (*fd < 0)
		fz_fail(__FILE__, __LINE__, "accept: %s", strerror(errno));
	return ep;
}

static int ep_state(struct ferry_ep *ep)
{
	ferryi_ctx_lock(S.ctx);
	int st = ep->state;
	ferryi_ctx_unlock(S.ctx);
	return st;
}

/* Client role handshake: ferry's HELLO must arrive and decode; we answer HELLO_ACK. */
static void client_handshake(struct ferry_ep *ep, int fd, uint64_t eager, uint64_t credit,
			     uint32_t feat)
{
	uint8_t hello[FERRYI_TCP_PREFIX_MAX], ack[FERRYI_TCP_PREFIX_MAX];
	size_t kept = 0, n;
	const size_t want = FERRYI_TCP_HDR_LEN + FERRYI_TCP_HELLO_LEN;

	for (int i = 0; i < 200 && kept < want; i++) {
		fz_progress(S.ctx);
		FZ_CHECK(fz_raw_drain(fd, hello, sizeof(hello), &kept) >= 0);
	}
	FZ_CHECK(kept == want);

	const struct ferryi_tcp_limits lim = {.max_frame = UINT64_MAX, .eager_max = UINT64_MAX};
	struct ferryi_tcp_hdr h;
	struct ferryi_tcp_ext e;
	FZ_CHECK(ferryi_tcp_hdr_decode(hello, &lim, &h, NULL, 0) == 0);
	FZ_CHECK(h.type == FERRYI_TCP_HELLO);
	FZ_CHECK(ferryi_tcp_ext_decode(h.type, hello + FERRYI_TCP_HDR_LEN, &lim, &e, NULL, 0) == 0);

	n = fz_hello(ack, MAX_FRAME, eager, credit, feat);
	ack[3] = FERRYI_TCP_HELLO_ACK;
	FZ_CHECK(fz_raw_write(S.ctx, fd, ack, n, 8) == n);
	for (int i = 0; i < 200 && ep_state(ep) == FERRYI_EP_CONNECTING; i++)
		fz_progress(S.ctx);
	FZ_CHECK(ep_state(ep) == FERRYI_EP_CONNECTED);
}

/* Client role: closes the endpoint as ferry_ep_close would, and drops our reference. */
static void client_close(struct ferry_ep *ep)
{
	ferryi_ctx_lock(S.ctx);
	if (ep->state == FERRYI_EP_CONNECTING) {
		/* What the connect deadline does to a handshake that never finished. */
		ferryi_ep_failed(ep, FERRY_ETIMEDOUT, "fuzz: connect abandoned");
	} else if (ep->state != FERRYI_EP_CLOSED) {
		ep->user_closed = true;
		ferryi_ep_begin_close(ep, FERRY_ENOTCONN, true, FERRY_EVENT_EP_CLOSED,
				      "fuzz: closed");
	}
	ferryi_ep_unref(ep);
	ferryi_ctx_unlock(S.ctx);
}

/* Drives the context until every endpoint is gone; fails the run if it is not. */
static void settle(struct ferry_ep *ep)
{
	if (ep)
		ferry_ep_release(ep);
	for (int i = 0; i < SETTLE_ROUNDS; i++) {
		fz_progress(S.ctx);
		poll_cq();
		drain_acceptq(NULL);
		if (fz_ep_count(S.ctx) == 0)
			break;
	}
	if (fz_ep_count(S.ctx) != 0)
		fz_fail(__FILE__, __LINE__,
			"%u endpoint(s) still alive %d progress passes after the peer closed",
			fz_ep_count(S.ctx), SETTLE_ROUNDS);
	poll_cq();
	FZ_CHECK(fz_ops_in_use(S.ctx) == 0);
	for (int i = 0; i < T_MAX; i++)
		if (S.track[i].posted && S.track[i].completed != 1)
			fz_fail(__FILE__, __LINE__, "op %d completed %d times", i,
				S.track[i].completed);
}

/* The context still serves: a fresh connection shakes hands and answers a probe. */
static void check_serves(void)
{
	uint8_t probe[FERRYI_TCP_PREFIX_MAX], ans[FERRYI_TCP_HDR_LEN];
	const uint64_t seq = 0x5eed0000u + S.inputs;
	int fd = fz_raw_connect(S.port);
	struct ferry_ep *ep = handshake(fd, EAGER_MAX, 0, 0);
	size_t n = fz_msg_hdr(probe, FERRYI_MSG_PROBE, 0, seq, 0), kept = 0;

	FZ_CHECK(fz_raw_write(S.ctx, fd, probe, n, 8) == n);
	for (int i = 0; i < 200 && kept < sizeof(ans); i++) {
		fz_progress(S.ctx);
		FZ_CHECK(fz_raw_drain(fd, ans, sizeof(ans), &kept) >= 0);
	}
	if (kept < sizeof(ans))
		fz_fail(__FILE__, __LINE__, "no answer to a PROBE on a fresh connection");

	const struct ferryi_tcp_limits lim = {.max_frame = UINT64_MAX, .eager_max = UINT64_MAX};
	struct ferryi_tcp_hdr h;
	FZ_CHECK(ferryi_tcp_hdr_decode(ans, &lim, &h, NULL, 0) == 0);
	FZ_CHECK(h.type == FERRYI_TCP_MSG && (h.flags & 0xff) == FERRYI_MSG_PROBE_ACK);
	FZ_CHECK(h.aux == seq);
	close(fd);
	settle(ep);
}

static void post_recvs(struct ferry_ep *ep)
{
	post(T_RECV_SMALL, ferry_recv(ep, recv_small, sizeof(recv_small), 0, 0,
				      &S.track[T_RECV_SMALL], NULL));
	post(T_RECV_BIG, ferry_recv(ep, recv_big, sizeof(recv_big), 0, 0,
				    &S.track[T_RECV_BIG], NULL));
}

static void post_ops(struct ferry_ep *ep, uint8_t mode, struct fz_subst *subst, bool z)
{
	/* Toward a peer that advertised zstd, ask for compression (payloads that pay). */
	const struct ferry_op_attr za = {.flags = FERRY_OP_COMPRESS};
	const struct ferry_op_attr *attr = z ? &za : NULL;

	if (mode & MODE_RNDV) {
		int rc = ferry_send(ep, send_big, sizeof(send_big), 7, &S.track[T_RNDV], attr);

		post(T_RNDV, rc);
		if (rc == 0) {
			subst[2].value = fz_last_op_id(ep);
			subst[2].valid = true;
		}
	}
	if (mode & MODE_RMA) {
		int rc = ferry_write(ep, rma_wbuf, sizeof(rma_wbuf), NULL, S.peer_rkey, 64,
				     &S.track[T_WRITE], attr);

		post(T_WRITE, rc);
		if (rc == 0) {
			subst[3].value = fz_last_op_id(ep);
			subst[3].valid = true;
		}
		rc = ferry_read(ep, rma_rbuf, sizeof(rma_rbuf), NULL, S.peer_rkey, 128,
				&S.track[T_READ], attr);
		post(T_READ, rc);
		if (rc == 0) {
			subst[4].value = fz_last_op_id(ep);
			subst[4].valid = true;
		}
	}
	if (mode & MODE_EAGER)
		post(T_EAGER, ferry_send(ep, send_small, sizeof(send_small), 9,
					 &S.track[T_EAGER], attr));
}

static void run(const uint8_t *data, size_t size)
{
	uint8_t mode = size > 0 ? data[0] : 0, opt = size > 1 ? data[1] : 0;
	size_t seg = (size_t)(opt & 0x1f) + 1;
	size_t blen = size > 2 ? size - 2 : 0;
	uint8_t *body = malloc(blen ? blen : 1);
	struct ferry_ep *ep = NULL, *cep = NULL;
	struct fz_subst subst[] = {
		{FZ_MARK_KEY_RW, S.mr_rw->key, true},
		{FZ_MARK_KEY_RO, S.mr_ro->key, true},
		{FZ_MARK_OP_SEND, 0, false},
		{FZ_MARK_OP_WRITE, 0, false},
		{FZ_MARK_OP_READ, 0, false},
	};
	bool small = mode & MODE_SMALL, late = opt & OPT_LATE_RECVS;
	uint32_t feat = opt & OPT_ZSTD ? FERRYI_FEAT_ZSTD : 0;
	int fd;

	FZ_CHECK(body != NULL);
	if (blen)
		memcpy(body, data + 2, blen);
	memset(S.track, 0, sizeof(S.track));
	FZ_CHECK(fz_ep_count(S.ctx) == 0);

	if (opt & OPT_CLIENT) {
		cep = client_connect(&fd);
		if (mode & MODE_HELLO) {
			client_handshake(cep, fd, small ? 64 : EAGER_MAX, small ? 1024 : 0, feat);
			ep = cep;
		}
	} else {
		fd = fz_raw_connect(S.port);
		if (mode & MODE_HELLO)
			ep = handshake(fd, small ? 64 : EAGER_MAX, small ? 1024 : 0, feat);
	}
	if (ep) {
		if ((mode & MODE_RECVS) && !late)
			post_recvs(ep);
		post_ops(ep, mode, subst, feat != 0);
		fz_progress(S.ctx);
		(void)fz_raw_drain(fd, NULL, 0, NULL);
	}
	fz_substitute(body, blen, subst, (int)FERRYI_ARRAY_LEN(subst));

	/* The bytes: at once, or in at most 64 segments with progress in between. */
	if (!(mode & MODE_SEGMENTS) || seg >= blen)
		seg = blen;
	else if (blen / seg > 64)
		seg = (blen + 63) / 64;
	bool hung_up = false;
	for (size_t off = 0; off < blen && !hung_up; off += seg) {
		size_t n = FERRYI_MIN(seg, blen - off);

		if (fz_raw_write(S.ctx, fd, body + off, n, 16) < n)
			hung_up = true;
		fz_progress(S.ctx);
		tcp_invariants(ep);
		if (fz_raw_drain(fd, NULL, 0, NULL) < 0)
			hung_up = true;
	}

	if (ep && (mode & MODE_RECVS) && late) {
		post_recvs(ep);
		fz_progress(S.ctx);
	}

	/* Until ferry hangs up, or nothing happens for a few passes. */
	for (int i = 0, quiet = 0; i < DRIVE_ROUNDS && !hung_up && quiet < QUIET_ROUNDS; i++) {
		int ev = fz_progress(S.ctx);
		long got = fz_raw_drain(fd, NULL, 0, NULL);

		tcp_invariants(ep);
		poll_cq();
		if (got < 0)
			hung_up = true;
		quiet = ev == 0 && got == 0 ? quiet + 1 : 0;
	}
	if (cep) {
		/* Close ferry's side first: its GOODBYE then meets an open socket. */
		client_close(cep);
		fz_progress(S.ctx);
		close(fd);
		settle(NULL);
	} else {
		close(fd);
		settle(ep);
	}
	free(body);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!S.ctx)
		init();
	if (S.inputs++ % CHECK_EVERY == 0)
		check_serves();
	run(data, size);
	return 0;
}
