/*
 * conf_destroy.c - tearing things down under load: destroying a context with
 * operations in flight (returns, no crash, no leak under ASan), the peer's view of
 * it, closing an endpoint with operations posted (each completes once, ECANCELED),
 * idempotent close, completion-queue lifetime.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RW (FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE)

/* ferry_ep_close fails what is in flight with ECANCELED, each exactly once. */
static void test_close_cancels_posted(void **state)
{
	struct conf *c = *state;
	enum { NR = 5, BIG = 8 << 20 };
	unsigned char rb[NR][32];
	unsigned char *big = conf_alloc(c, BIG);
	void *ctxs[NR + 1];
	struct ferry_completion cmp[NR + 1];
	int i;

	for (i = 0; i < NR; i++) {
		ctxs[i] = rb[i];
		conf_assert_rc(ferry_recv(c->cep, rb[i], sizeof(rb[i]), 1000 + (uint64_t)i,
					  ~0ull, rb[i], NULL), 0);
	}
	/* A rendezvous send the server never receives cannot finish before the close. */
	ctxs[NR] = big;
	conf_assert_rc(ferry_send(c->cep, big, BIG, 77, big, NULL), 0);
	conf_drive_for(&c->w, 50);
	ferry_ep_close(c->cep);
	c->cep = NULL;
	conf_wait(&c->w, ferry_ctx_cq(c->w.cli), cmp, NR + 1);
	conf_expect_each_once(cmp, NR + 1, ctxs, FERRY_ECANCELED);
	conf_expect_none(&c->w, ferry_ctx_cq(c->w.cli), 200);
}

/* Close is idempotent; other holders see ENOTCONN, the last release frees. */
static void test_close_idempotent(void **state)
{
	struct conf *c = *state;
	struct ferry_ep *ep = c->cep;
	unsigned char b[8] = { 0 };

	ferry_ep_hold(ep);
	ferry_ep_hold(ep);
	ferry_ep_close(ep);
	c->cep = NULL;
	ferry_ep_close(ep);
	assert_true(ferry_ep_status(ep) != 0);
	conf_assert_rc(ferry_send(ep, b, sizeof(b), 1, b, NULL), FERRY_ENOTCONN);
	ferry_ep_release(ep);
	ferry_ep_release(NULL);
	ferry_ep_close(c->sep);
	c->sep = NULL;
}

/* A completion queue lives while operations report to it or completions wait. */
static void test_cq_lifetime(void **state)
{
	struct conf *c = *state;
	struct ferry_cq *cq = NULL;
	struct ferry_op_attr a = { 0 };
	unsigned char b[8];
	struct ferry_completion cmp;

	conf_assert_rc(ferry_cq_create(c->w.cli, &cq), 0);
	a.cq = cq;
	conf_assert_rc(ferry_recv(c->cep, b, sizeof(b), 1, ~0ull, b, &a), 0);
	conf_assert_rc(ferry_cq_destroy(cq), FERRY_EBUSY);
	ferry_ep_close(c->cep);
	c->cep = NULL;
	conf_drive_for(&c->w, 50);
	conf_assert_rc(ferry_cq_destroy(cq), FERRY_EBUSY);
	conf_wait(&c->w, cq, &cmp, 1);
	conf_assert_rc(cmp.status, FERRY_ECANCELED);
	conf_assert_rc(ferry_cq_destroy(cq), 0);
	conf_assert_rc(ferry_cq_destroy(ferry_ctx_cq(c->w.cli)), FERRY_EINVAL);
}

/*
 * Destroy the client context with everything in flight and alive: posted recvs, a
 * rendezvous send, a write and a read, an extra queue with an unpolled completion, a
 * registered region, an unpacked rkey, a pooled idle endpoint and a private one.
 * ferry_ctx_destroy must return; ASan/LSan see no error or leak. The server sees its
 * endpoints fail, and its own recvs complete with an error exactly once. Each server
 * endpoint has a receive posted: on a connectionless fabric (ofi) a goodbye lost in
 * the teardown leaves only the probes, and those watch endpoints with work at the
 * probe interval; an idle one learns at its next keepalive (30 s by default).
 */
static void test_destroy_client_in_flight(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w2;
	enum { BIG = 16 << 20, REG = 8 << 20 };
	struct ferry_ep *cep, *sep, *pcep, *psep, *ep2 = NULL;
	unsigned char *big = conf_alloc(c, BIG), *region = conf_alloc(c, REG);
	unsigned char *wbuf = conf_alloc(c, REG), *rbuf = conf_alloc(c, REG);
	unsigned char rb[4][16], srb[3][16], tiny[8] = { 1 };
	unsigned char blob[FERRY_RKEY_MAX];
	size_t blen = sizeof(blob);
	struct ferry_mr *smr = NULL, *cmr = NULL;
	struct ferry_rkey *rk = NULL;
	struct ferry_cq *xcq = NULL;
	struct ferry_op_attr xa = { 0 };
	struct ferry_completion cmp[4];
	void *sctx[3] = { srb[0], srb[1], srb[2] };
	int i;

	conf_world_open(w);
	conf_connect(w, 0, &cep, &sep);
	conf_connect(w, FERRY_CONNECT_PRIVATE, &pcep, &psep);
	conf_assert_rc(ferry_mr_reg(w->srv, region, REG, RW, &smr), 0);
	conf_assert_rc(ferry_mr_pack(smr, blob, &blen), 0);
	conf_assert_rc(ferry_rkey_unpack(w->cli, blob, blen, &rk), 0);
	conf_assert_rc(ferry_mr_reg(w->cli, wbuf, REG, FERRY_ACCESS_LOCAL, &cmr), 0);
	conf_assert_rc(ferry_cq_create(w->cli, &xcq), 0);
	xa.cq = xcq;

	for (i = 0; i < 3; i++)
		conf_assert_rc(ferry_recv(i < 2 ? sep : psep, srb[i], sizeof(srb[i]),
					  500 + (uint64_t)i, ~0ull, srb[i], NULL), 0);
	for (i = 0; i < 4; i++)
		conf_assert_rc(ferry_recv(i % 2 ? pcep : cep, rb[i], sizeof(rb[i]), 9, ~0ull,
					  rb[i], NULL), 0);
	conf_assert_rc(ferry_send(cep, big, BIG, 1, big, NULL), 0);
	conf_assert_rc(ferry_write(cep, wbuf, REG, cmr, rk, 0, wbuf, NULL), 0);
	conf_assert_rc(ferry_read(pcep, rbuf, REG, NULL, rk, 0, rbuf, NULL), 0);
	conf_assert_rc(ferry_send(pcep, tiny, sizeof(tiny), 2, tiny, &xa), 0);
	/* Let some of it move; the 8-byte send completes into the unpolled queue. */
	conf_drive_for(w, 20);
	/* A second pooled reference released at once: an idle pooled endpoint. */
	conf_assert_rc(ferry_connect(w->cli, w->addr, NULL, &ep2), 0);
	assert_ptr_equal(ep2, cep);
	ferry_ep_release(ep2);

	ferry_ctx_destroy(w->cli);
	w->cli = NULL;

	/* The server's side: both endpoints fail, its recvs complete once with an error. */
	conf_wait_ep_down(w, sep);
	conf_wait_ep_down(w, psep);
	conf_wait(w, ferry_ctx_cq(w->srv), cmp, 3);
	conf_expect_each_once(cmp, 3, sctx, CONF_ANY_ERROR);
	conf_expect_none(w, ferry_ctx_cq(w->srv), 100);
	ferry_ep_close(sep);
	ferry_ep_close(psep);
	conf_assert_rc(ferry_mr_dereg(smr), 0);
	conf_world_close(w, true);
}

/* Destroy the server context in the middle of a large transfer and a read: the
 * client's operations fail exactly once, its endpoint goes down, it stays clean. */
static void test_destroy_server_mid_transfer(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w2;
	enum { BIG = 256 << 20, REG = 64 << 20 };
	struct ferry_ep *cep, *sep;
	unsigned char *sbuf = conf_alloc(c, BIG), *rbuf = conf_alloc(c, BIG);
	unsigned char *region = conf_alloc(c, REG), *lbuf = conf_alloc(c, REG);
	unsigned char blob[FERRY_RKEY_MAX], rb[16];
	size_t blen = sizeof(blob);
	struct ferry_mr *smr = NULL;
	struct ferry_rkey *rk = NULL;
	struct ferry_completion cmp[3];
	void *ctxs[3] = { sbuf, lbuf, rb };
	int st;

	conf_world_open(w);
	conf_connect(w, 0, &cep, &sep);
	conf_assert_rc(ferry_mr_reg(w->srv, region, REG, RW, &smr), 0);
	conf_assert_rc(ferry_mr_pack(smr, blob, &blen), 0);
	conf_assert_rc(ferry_rkey_unpack(w->cli, blob, blen, &rk), 0);

	conf_assert_rc(ferry_recv(sep, rbuf, BIG, 1, ~0ull, rbuf, NULL), 0);
	conf_assert_rc(ferry_recv(cep, rb, sizeof(rb), 2, ~0ull, rb, NULL), 0);
	conf_assert_rc(ferry_send(cep, sbuf, BIG, 1, sbuf, NULL), 0);
	conf_assert_rc(ferry_read(cep, lbuf, REG, NULL, rk, 0, lbuf, NULL), 0);
	conf_drive(w, 1);
	conf_drive(w, 1);

	ferry_ctx_destroy(w->srv);
	w->srv = NULL;
	w->l = NULL; /* went with its context */
	/* Each operation completes exactly once, whatever had finished. */
	conf_wait(w, ferry_ctx_cq(w->cli), cmp, 3);
	for (int i = 0; i < 3; i++)
		print_message("client op %p after the server was destroyed: %s\n",
			      cmp[i].user_ctx, conf_err(cmp[i].status));
	{
		/* The recv can only fail; the send and read may have completed. */
		int k;
		bool seen[3] = { false };
		for (int i = 0; i < 3; i++) {
			for (k = 0; k < 3 && ctxs[k] != cmp[i].user_ctx; k++)
				;
			assert_true(k < 3);
			assert_false(seen[k]);
			seen[k] = true;
			if (k == 2 && cmp[i].status >= 0)
				conf_fail("recv completed with %s after the peer was destroyed",
					  conf_err(cmp[i].status));
		}
	}
	conf_expect_none(w, ferry_ctx_cq(w->cli), 100);
	st = conf_wait_ep_down(w, cep);
	print_message("client endpoint status: %s\n", conf_err(st));
	conf_assert_rc(ferry_send(cep, rb, 1, 1, rb, NULL), FERRY_ENOTCONN);
	ferry_ep_close(cep);
	ferry_rkey_destroy(rk);
	conf_world_close(w, true);
}

/* Destroying a context with idle objects of every kind frees them all. */
static void test_destroy_idle_objects(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w2;
	struct ferry_ep *cep, *sep, *pending = NULL;
	struct ferry_listener *l2 = NULL;
	struct ferry_cq *cq = NULL;
	struct ferry_mr *mr = NULL;
	struct ferry_rkey *rk = NULL;
	struct conf_bg *bg;
	unsigned char *mem = conf_alloc(c, 1 << 16), blob[FERRY_RKEY_MAX];
	size_t blen = sizeof(blob);
	char uri[CONF_ADDR_MAX];
	size_t ulen = sizeof(uri);
	int rc;

	conf_world_open(w);
	conf_connect(w, 0, &cep, &sep);
	conf_assert_rc(ferry_cq_create(w->srv, &cq), 0);
	conf_assert_rc(ferry_mr_reg(w->srv, mem, 1 << 16, RW, &mr), 0);
	conf_assert_rc(ferry_mr_pack(mr, blob, &blen), 0);
	conf_assert_rc(ferry_rkey_unpack(w->srv, blob, blen, &rk), 0);
	/* A second listener with a connection waiting in its accept queue. */
	conf_assert_rc(ferry_listen(w->srv, conf_listen_uri, NULL, &l2), 0);
	conf_assert_rc(ferry_listener_addr(l2, uri, &ulen), 0);
	bg = conf_bg_start(w->srv);
	rc = ferry_connect(w->cli, uri, &(struct ferry_connect_attr){
		.flags = FERRY_CONNECT_PRIVATE }, &pending);
	conf_bg_stop(bg);
	conf_assert_rc(rc, 0);
	(void)sep;

	ferry_ctx_destroy(w->srv);
	w->srv = NULL;
	w->l = NULL; /* went with its context */
	conf_wait_ep_down(w, cep);
	conf_wait_ep_down(w, pending);
	ferry_ep_close(cep);
	ferry_ep_close(pending);
	conf_world_close(w, true);
}

/* Destroying a context right after creating it, and NULL. */
static void test_destroy_trivial(void **state)
{
	struct ferry_ctx *ctx = NULL;

	(void)state;
	conf_assert_rc(conf_ctx_create(&ctx), 0);
	ferry_ctx_destroy(ctx);
	ferry_ctx_destroy(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_close_cancels_posted, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_close_idempotent, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_cq_lifetime, conf_setup_pair, conf_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_client_in_flight, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_server_mid_transfer, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_idle_objects, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_destroy_trivial, conf_setup_none, conf_teardown),
	};

	return CONF_RUN("destroy", tests);
}
