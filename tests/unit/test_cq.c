/*
 * test_cq.c - completion queues (lib/cq.c): reserve/push/poll in FIFO order across
 * the ring's wrap, a full queue refusing posts with FERRY_EAGAIN, ferry_cq_wait's
 * timeout and wake-up, destroy refused while busy, and the readiness fd.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mock_provider.h"

#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static struct mt_pair P;

static int group_setup(void **state)
{
	(void)state;
	return mock_register();
}

static int setup(void **state)
{
	(void)state;
	mock_reset();
	memset(&P, 0, sizeof(P));
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	mt_pair_destroy(&P);
	return 0;
}

static uint64_t real_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static bool fd_readable(int fd)
{
	struct pollfd pfd = { .fd = fd, .events = POLLIN };
	int rc = poll(&pfd, 1, 0);
	assert_true(rc >= 0);
	return rc == 1 && (pfd.revents & POLLIN);
}

static void open_pair(uint32_t cq_size, bool fake_clock)
{
	struct ferry_config ca, cb;
	mt_config(&ca);
	mt_config(&cb);
	ca.cq_size = cq_size;
	cb.cq_size = cq_size;
	mt_pair_open(&P, &ca, &cb, fake_clock);
	mt_pair_connect(&P, 0, &P.ea, &P.eb);
}

/* Reserve-and-push through the internal calls, as the core does for each op. */
static void push(struct ferry_cq *cq, struct ferry_ep *ep, uintptr_t id)
{
	struct ferry_completion c = {
		.user_ctx = (void *)id,
		.ep = ep,
		.status = -(int)(id % 7),
		.type = FERRY_OP_RECV,
		.tag = id * 3,
		.len = id * 5,
	};
	ferryi_ctx_lock(ep->ctx);
	assert_int_equal(ferryi_cq_reserve(cq), 0);
	ferryi_ep_ref(ep); /* the entry's reference, given back by the poll */
	ferryi_cq_push(cq, &c, ep->pi);
	ferryi_ctx_unlock(ep->ctx);
}

static void expect(const struct ferry_completion *c, struct ferry_ep *ep, uintptr_t id)
{
	assert_true((uintptr_t)c->user_ctx == id);
	assert_ptr_equal(c->ep, ep);
	assert_int_equal(c->status, -(int)(id % 7));
	assert_int_equal(c->type, FERRY_OP_RECV);
	assert_true(c->tag == id * 3);
	assert_true(c->len == id * 5);
}

/* ------------------------------------------------------------------ ring */

static void test_reserve_push_poll_fifo(void **state)
{
	(void)state;
	struct ferry_completion c[8];
	uintptr_t next_push = 1, next_pop = 1;

	open_pair(4, true);
	struct ferry_cq *cq = ferry_ctx_cq(P.a);

	/* Reservations count against the capacity like waiting entries do. */
	ferryi_ctx_lock(P.a);
	for (int i = 0; i < 4; i++)
		assert_int_equal(ferryi_cq_reserve(cq), 0);
	assert_int_equal(ferryi_cq_reserve(cq), FERRY_EAGAIN);
	for (int i = 0; i < 4; i++)
		ferryi_cq_unreserve(cq);
	ferryi_ctx_unlock(P.a);

	/* Uneven push/poll rounds walk head and tail around the 4-entry ring. */
	for (int round = 0; round < 25; round++) {
		int npush = 1 + round % 3;
		for (int i = 0; i < npush; i++)
			push(cq, P.ea, next_push++);
		assert_int_equal(ferryi_cq_count(cq), (uint32_t)(next_push - next_pop));
		int want = (int)(next_push - next_pop);
		int take = round % 2 ? want : (want + 1) / 2;
		int got = ferry_cq_poll(cq, c, take);
		assert_int_equal(got, take);
		for (int i = 0; i < got; i++)
			expect(&c[i], P.ea, next_pop++);
	}
	int got = ferry_cq_poll(cq, c, 8);
	for (int i = 0; i < got; i++)
		expect(&c[i], P.ea, next_pop++);
	assert_true(next_pop == next_push);
	assert_int_equal(ferry_cq_poll(cq, c, 8), 0);
	assert_int_equal(ferry_cq_poll(cq, c, 0), FERRY_EINVAL);
	assert_int_equal(ferry_cq_poll(NULL, c, 1), FERRY_EINVAL);
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ full queue */

static void test_full_queue_refuses_posts(void **state)
{
	(void)state;
	struct ferry_completion c[8];
	uint64_t rbuf[8] = { 0 }, sbuf[8] = { 0 };
	struct ferry_ctx *both[2];

	open_pair(4, true);
	both[0] = P.a;
	both[1] = P.b;

	for (int i = 0; i < 4; i++)
		assert_int_equal(ferry_recv(P.eb, &rbuf[i], 8, 100 + i, ~0ull, &rbuf[i], NULL), 0);
	/* Four ops in flight on a 4-entry queue: the fifth post is refused, any kind. */
	assert_int_equal(ferry_recv(P.eb, &rbuf[4], 8, 104, ~0ull, &rbuf[4], NULL), FERRY_EAGAIN);
	assert_int_equal(ferry_send(P.eb, &sbuf[0], 8, 1, NULL, NULL), FERRY_EAGAIN);
	assert_int_equal(mt_stats(P.b).ops_posted, 4);

	/* A queue of its own takes posts while the default one is full. */
	struct ferry_cq *own;
	struct ferry_op_attr attr = { 0 };
	assert_int_equal(ferry_cq_create(P.b, &own), 0);
	attr.cq = own;
	assert_int_equal(ferry_recv(P.eb, &rbuf[5], 8, 105, ~0ull, &rbuf[5], &attr), 0);

	/* The sender's queue fills with send completions the same way. */
	for (int i = 0; i < 4; i++) {
		sbuf[i] = 1000 + (uint64_t)i;
		assert_int_equal(ferry_send(P.ea, &sbuf[i], 8, 100 + (uint64_t)i, &sbuf[i], NULL), 0);
	}
	assert_int_equal(ferry_send(P.ea, &sbuf[4], 8, 104, &sbuf[4], NULL), FERRY_EAGAIN);

	/* Completed but unpolled entries still count. */
	mt_progress(both, 2, 3);
	assert_int_equal(ferryi_cq_count(ferry_ctx_cq(P.b)), 4);
	assert_int_equal(ferry_recv(P.eb, &rbuf[4], 8, 104, ~0ull, &rbuf[4], NULL), FERRY_EAGAIN);
	assert_int_equal(ferry_cq_poll(ferry_ctx_cq(P.b), c, 2), 2);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(c[i].status, 0);
		assert_true(*(uint64_t *)c[i].user_ctx == 1000 + (uint64_t)i);
	}
	assert_int_equal(ferry_recv(P.eb, &rbuf[6], 8, 106, ~0ull, &rbuf[6], NULL), 0);
	assert_int_equal(ferry_recv(P.eb, &rbuf[7], 8, 107, ~0ull, &rbuf[7], NULL), 0);
	assert_int_equal(ferry_recv(P.eb, &rbuf[4], 8, 104, ~0ull, &rbuf[4], NULL), FERRY_EAGAIN);
	assert_int_equal(ferry_cq_poll(ferry_ctx_cq(P.a), c, 8), 4);

	/*
	 * Control traffic never needs a queue entry: with b's queue full again the peer's
	 * goodbye still gets through, and the receives in flight complete into the
	 * entries they reserved.
	 */
	ferry_ep_close(P.ea);
	P.ea = NULL;
	mt_progress(both, 2, 3);
	assert_int_equal(ferry_ep_status(P.eb), FERRY_ECONNRESET);
	int got = mt_drain(ferry_ctx_cq(P.b), c, 8, both, 2);
	assert_int_equal(got, 4);
	for (int i = 0; i < 2; i++)
		assert_int_equal(c[i].status, 0);
	for (int i = 2; i < 4; i++)
		assert_int_equal(c[i].status, FERRY_ECONNRESET);
	assert_int_equal(mt_drain(own, c, 8, both, 2), 1);
	assert_int_equal(c[0].status, FERRY_ECONNRESET);
	assert_true(c[0].user_ctx == &rbuf[5]);
	assert_int_equal(ferry_cq_destroy(own), 0);
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ wait */

struct late_send {
	struct ferry_ep *ep;
	uint64_t value;
	int rc;
};

static void *late_send_main(void *arg)
{
	struct late_send *ls = arg;
	usleep(30000);
	ls->rc = ferry_send(ls->ep, &ls->value, sizeof(ls->value), 9, NULL, NULL);
	return NULL;
}

static void test_cq_wait(void **state)
{
	(void)state;
	struct ferry_completion c;
	uint64_t in = 0, out = 77;

	open_pair(64, false); /* real clock: ferry_cq_wait sleeps for real */
	struct ferry_cq *cq = ferry_ctx_cq(P.b);

	uint64_t t0 = real_ms();
	assert_int_equal(ferry_cq_wait(cq, &c, 1, 30), FERRY_ETIMEDOUT);
	uint64_t dt = real_ms() - t0;
	assert_true(dt >= 29);
	assert_true(dt < 5000);
	assert_int_equal(ferry_cq_wait(cq, &c, 1, 0), FERRY_ETIMEDOUT);

	/* A completion that is waiting already is returned without sleeping. */
	assert_int_equal(ferry_recv(P.eb, &in, 8, 9, ~0ull, &in, NULL), 0);
	assert_int_equal(ferry_send(P.ea, &out, 8, 9, &out, NULL), 0);
	assert_int_equal(ferry_cq_wait(cq, &c, 1, -1), 1);
	assert_int_equal(c.status, 0);
	assert_true(c.user_ctx == &in);
	assert_true(in == 77);

	/* A sleeper wakes when another thread's send makes its completion. */
	struct late_send ls = { .ep = P.ea, .value = 78 };
	pthread_t th;
	in = 0;
	assert_int_equal(ferry_recv(P.eb, &in, 8, 9, ~0ull, &in, NULL), 0);
	assert_int_equal(pthread_create(&th, NULL, late_send_main, &ls), 0);
	t0 = real_ms();
	int rc = ferry_cq_wait(cq, &c, 1, 10000);
	dt = real_ms() - t0;
	pthread_join(th, NULL);
	assert_int_equal(ls.rc, 0);
	assert_int_equal(rc, 1);
	assert_true(in == 78);
	assert_true(dt < 5000);
	struct ferry_completion sc[4];
	assert_int_equal(ferry_cq_wait(ferry_ctx_cq(P.a), sc, 4, 1000), 2);
	assert_int_equal(ferry_cq_wait(NULL, &c, 1, 0), FERRY_EINVAL);
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ destroy */

static void test_destroy_busy_queue(void **state)
{
	(void)state;
	struct ferry_completion c;
	struct ferry_cq *cq;
	struct ferry_op_attr attr = { 0 };
	uint64_t in = 0, out = 5;
	struct ferry_ctx *both[2];

	open_pair(64, true);
	both[0] = P.a;
	both[1] = P.b;
	assert_int_equal(ferry_cq_destroy(ferry_ctx_cq(P.b)), FERRY_EINVAL);
	assert_int_equal(ferry_cq_destroy(NULL), FERRY_EINVAL);

	assert_int_equal(ferry_cq_create(P.b, &cq), 0);
	attr.cq = cq;
	assert_int_equal(ferry_recv(P.eb, &in, 8, 1, ~0ull, &in, &attr), 0);
	assert_int_equal(ferry_cq_destroy(cq), FERRY_EBUSY); /* an op reports to it */
	assert_int_equal(ferry_send(P.ea, &out, 8, 1, NULL, NULL), 0);
	mt_progress(both, 2, 2);
	assert_int_equal(ferry_cq_destroy(cq), FERRY_EBUSY); /* its completion waits */
	assert_int_equal(ferry_cq_poll(cq, &c, 1), 1);
	assert_int_equal(c.status, 0);
	assert_true(in == 5);

	/* An op failed by a close still reports to its queue before it may go. */
	assert_int_equal(ferry_recv(P.eb, &in, 8, 2, ~0ull, &in, &attr), 0);
	ferry_ep_close(P.eb);
	P.eb = NULL;
	assert_int_equal(ferry_cq_destroy(cq), FERRY_EBUSY);
	assert_int_equal(mt_drain(cq, &c, 1, both, 2), 1);
	assert_int_equal(c.status, FERRY_ECANCELED);
	assert_int_equal(ferry_cq_destroy(cq), 0);
	mt_drain(ferry_ctx_cq(P.a), &c, 1, both, 2);
	mt_pair_close(&P);
}

/* ------------------------------------------------------------------ fd */

static void test_fd_readable_when_completion_waits(void **state)
{
	(void)state;
	struct ferry_completion c[2];
	uint64_t in[2] = { 0 }, out = 3;
	struct ferry_ctx *a_only[1];

	open_pair(64, true);
	a_only[0] = P.a;
	struct ferry_cq *cq = ferry_ctx_cq(P.b);
	int fd = ferry_cq_fd(cq);
	assert_true(fd >= 0);
	assert_int_equal(fd, ferry_ctx_fd(P.b));
	assert_int_equal(ferry_cq_fd(NULL), FERRY_EINVAL);

	ferry_progress(P.b);
	assert_false(fd_readable(fd));

	assert_int_equal(ferry_recv(P.eb, &in[0], 8, 1, ~0ull, &in[0], NULL), 0);
	assert_int_equal(ferry_recv(P.eb, &in[1], 8, 1, ~0ull, &in[1], NULL), 0);
	ferry_progress(P.b);
	assert_false(fd_readable(fd)); /* nothing to do yet */
	assert_int_equal(ferry_send(P.ea, &out, 8, 1, NULL, NULL), 0);
	assert_true(fd_readable(fd)); /* input waits */
	ferry_progress(P.b);
	assert_true(fd_readable(fd)); /* a completion waits */
	assert_int_equal(ferry_cq_poll(cq, c, 2), 1);
	ferry_progress(P.b);
	assert_false(fd_readable(fd)); /* nothing waits */

	/* Two waiting, one taken: still readable. */
	assert_int_equal(ferry_recv(P.eb, &in[0], 8, 1, ~0ull, &in[0], NULL), 0);
	assert_int_equal(ferry_send(P.ea, &out, 8, 1, NULL, NULL), 0);
	assert_int_equal(ferry_send(P.ea, &out, 8, 1, NULL, NULL), 0);
	ferry_progress(P.b);
	assert_int_equal(ferry_cq_poll(cq, c, 1), 1);
	ferry_progress(P.b);
	assert_true(fd_readable(fd));
	assert_int_equal(ferry_cq_poll(cq, c, 2), 1);
	ferry_progress(P.b);
	assert_false(fd_readable(fd));
	mt_drain(ferry_ctx_cq(P.a), c, 2, a_only, 1);
	mt_drain(ferry_ctx_cq(P.a), c, 2, a_only, 1);
	mt_pair_close(&P);
}

/*
 * The fd is level-triggered "readable when the context has work (... completions to
 * poll)" also for completions pushed before the fd was first asked for. (Found by this
 * test: the push only woke once fd_exported was set; ferry_ctx_fd() now checks for
 * waiting completions when it exports.)
 */
static void test_fd_exported_after_completion(void **state)
{
	(void)state;
	struct ferry_completion c;
	uint64_t in = 0, out = 4;
	struct ferry_ctx *both[2];

	open_pair(64, true);
	both[0] = P.a;
	both[1] = P.b;
	assert_int_equal(ferry_recv(P.eb, &in, 8, 1, ~0ull, &in, NULL), 0);
	assert_int_equal(ferry_send(P.ea, &out, 8, 1, NULL, NULL), 0);
	ferry_progress(P.b);
	assert_int_equal(ferryi_cq_count(ferry_ctx_cq(P.b)), 1);

	int fd = ferry_cq_fd(ferry_ctx_cq(P.b));
	bool readable = fd_readable(fd);
	assert_int_equal(mt_drain(ferry_ctx_cq(P.b), &c, 1, both, 2), 1);
	mt_drain(ferry_ctx_cq(P.a), &c, 1, both, 2);
	mt_pair_close(&P);
	assert_true(readable);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_reserve_push_poll_fifo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_full_queue_refuses_posts, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cq_wait, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_busy_queue, setup, teardown),
		cmocka_unit_test_setup_teardown(test_fd_readable_when_completion_waits, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_fd_exported_after_completion, setup,
						teardown),
	};
	return cmocka_run_group_tests_name("unit.cq", tests, group_setup, NULL);
}
