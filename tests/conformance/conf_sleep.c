/*
 * conf_sleep.c - wake-ups: blocking ping-pongs in which both sides sleep between
 * messages, through ferry_cq_wait or on the exported context fd.
 *
 * A provider may spare a peer's wake-up while that peer busy-polls (ofi+shm rings a
 * doorbell only for a context that said it may sleep). A wake-up lost in the race
 * between "I am going to sleep" and "a message arrived" shows here as a side that
 * sleeps through its message: nothing else happens in these worlds (no probes, no
 * keepalives, no reaping) that could wake it, so the wait runs into its deadline and
 * the test fails. Each round carries its number, so every message is checked to
 * arrive once and in order. Sizes cycle through a small message, one above shm's
 * inject size (its sender waits for the receiver to take it) and a rendezvous one.
 */
#define _GNU_SOURCE
#include "conf_harness.h"

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Rounds per ping-pong; FERRY_TEST_SLEEP_ROUNDS overrides (the nowait variant, whose
 * sleepers poll every millisecond, runs fewer: 3000 took it 100 s). */
#define ROUNDS_DEFAULT 3000
static int rounds(void)
{
	const char *env = getenv("FERRY_TEST_SLEEP_ROUNDS");
	int n = env ? atoi(env) : 0;
	return n > 0 ? n : ROUNDS_DEFAULT;
}
#define MAX_LEN (64u << 10)

static const size_t sizes[] = { 8, 6000, MAX_LEN };

struct side {
	struct ferry_ctx *ctx;
	struct ferry_ep *ep;
	bool first;        /* sends first in each round */
	bool on_fd;        /* sleeps in poll() on ferry_ctx_fd(), else in ferry_cq_wait() */
	bool busy;         /* never sleeps: polls */
	unsigned char *sbuf, *rbuf;
	int done;          /* rounds completed */
	char err[256];
};

static void quiet(struct ferry_config *cfg, bool server)
{
	(void)server;
	cfg->probe_interval_ms = 0;
	cfg->probe_idle_interval_ms = 0;
	cfg->idle_timeout_s = 0;
}

/* One completion, sleeping for it; 1, or FERRY_ETIMEDOUT after CONF_WAIT_MS. */
static int side_wait(struct side *s, struct ferry_completion *cmp)
{
	struct ferry_cq *cq = ferry_ctx_cq(s->ctx);
	uint64_t end = conf_now_ms() + CONF_WAIT_MS;

	if (!s->on_fd && !s->busy)
		return ferry_cq_wait(cq, cmp, 1, CONF_WAIT_MS);
	for (;;) {
		int rc = ferry_cq_poll(cq, cmp, 1);
		if (rc != 0)
			return rc;
		uint64_t now = conf_now_ms();
		if (now >= end)
			return FERRY_ETIMEDOUT;
		if (s->busy)
			continue;
		/* Exported here on first use, after busy passes: the provider learns late. */
		struct pollfd p = { .fd = ferry_ctx_fd(s->ctx), .events = POLLIN };
		(void)poll(&p, 1, (int)(end - now));
	}
}

/* Waits until the round's recv and (if posted) send have completed, once each. */
static bool side_collect(struct side *s, int round, bool want_recv, bool want_send)
{
	struct ferry_completion cmp;

	while (want_recv || want_send) {
		int rc = side_wait(s, &cmp);
		if (rc != 1) {
			snprintf(s->err, sizeof(s->err), "round %d: waiting for the %s: %s", round,
				 want_recv ? "message" : "send completion", conf_err(rc));
			return false;
		}
		if (cmp.status != 0) {
			snprintf(s->err, sizeof(s->err), "round %d: completion with %s", round,
				 conf_err(cmp.status));
			return false;
		}
		if (cmp.user_ctx == s->rbuf && want_recv) {
			size_t len = sizes[round % 3];
			if (cmp.tag != (uint64_t)round || cmp.len != len ||
			    memcmp(s->rbuf, &round, sizeof(round)) != 0) {
				snprintf(s->err, sizeof(s->err),
					 "round %d: got tag %llu, %llu bytes", round,
					 (unsigned long long)cmp.tag, (unsigned long long)cmp.len);
				return false;
			}
			want_recv = false;
		} else if (cmp.user_ctx == s->sbuf && want_send) {
			want_send = false;
		} else {
			snprintf(s->err, sizeof(s->err), "round %d: unexpected completion %p",
				 round, cmp.user_ctx);
			return false;
		}
	}
	return true;
}

static bool side_send(struct side *s, int round)
{
	memcpy(s->sbuf, &round, sizeof(round));
	int rc = ferry_send(s->ep, s->sbuf, sizes[round % 3], (uint64_t)round, s->sbuf, NULL);
	if (rc != 0)
		snprintf(s->err, sizeof(s->err), "round %d: ferry_send: %s", round, conf_err(rc));
	return rc == 0;
}

static void *side_run(void *arg)
{
	struct side *s = arg;

	for (int i = 0; i < rounds(); i++) {
		int rc = ferry_recv(s->ep, s->rbuf, MAX_LEN, (uint64_t)i, ~0ull, s->rbuf, NULL);
		if (rc != 0) {
			snprintf(s->err, sizeof(s->err), "round %d: ferry_recv: %s", i, conf_err(rc));
			return NULL;
		}
		if (s->first) {
			if (!side_send(s, i) || !side_collect(s, i, true, true))
				return NULL;
		} else {
			if (!side_collect(s, i, true, false) || !side_send(s, i) ||
			    !side_collect(s, i, false, true))
				return NULL;
		}
		s->done = i + 1;
	}
	return NULL;
}

enum mode { CQ_WAIT, ON_FD, BUSY };

static void pingpong(struct conf *c, enum mode srv_mode, enum mode cli_mode)
{
	struct conf_world *w = &c->w2;
	struct side srv = { .on_fd = srv_mode == ON_FD, .busy = srv_mode == BUSY };
	struct side cli = { .first = true, .on_fd = cli_mode == ON_FD, .busy = cli_mode == BUSY };
	pthread_t th;

	conf_world_open_unexported(w, quiet);
	conf_connect(w, 0, &cli.ep, &srv.ep);
	srv.ctx = w->srv;
	cli.ctx = w->cli;
	srv.sbuf = conf_alloc(c, MAX_LEN);
	srv.rbuf = conf_alloc(c, MAX_LEN);
	cli.sbuf = conf_alloc(c, MAX_LEN);
	cli.rbuf = conf_alloc(c, MAX_LEN);
	if (pthread_create(&th, NULL, side_run, &srv) != 0)
		conf_fail("pthread_create failed");
	side_run(&cli);
	if (cli.err[0])
		ferry_ep_close(cli.ep); /* the server's wait then ends too */
	pthread_join(th, NULL);
	if (!cli.err[0])
		ferry_ep_close(cli.ep);
	ferry_ep_close(srv.ep);
	if (cli.err[0] || srv.err[0])
		conf_fail("blocking ping-pong: client after %d rounds: %s; server after %d "
			  "rounds: %s", cli.done, cli.err[0] ? cli.err : "fine", srv.done,
			  srv.err[0] ? srv.err : "fine");
	assert_int_equal(cli.done, rounds());
	assert_int_equal(srv.done, rounds());
	conf_world_close(w, true);
}

/* Both sides sleep in ferry_cq_wait for every message and every send completion. */
static void test_sleep_cq_wait(void **state)
{
	pingpong(*state, CQ_WAIT, CQ_WAIT);
}

/*
 * The server answers at once while the client is on its way to sleep: the answer
 * lands in the window between the client's last look and its sleep, if there is one.
 */
static void test_sleep_busy_peer(void **state)
{
	pingpong(*state, BUSY, CQ_WAIT);
}

/* The server sleeps on its context fd, exported only once the connection is up. */
static void test_sleep_ctx_fd(void **state)
{
	pingpong(*state, ON_FD, CQ_WAIT);
}

/* Both sleep on their exported fds. */
static void test_sleep_both_fds(void **state)
{
	pingpong(*state, ON_FD, ON_FD);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_sleep_cq_wait, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_sleep_busy_peer, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_sleep_ctx_fd, conf_setup_none, conf_teardown),
		cmocka_unit_test_setup_teardown(test_sleep_both_fds, conf_setup_none, conf_teardown),
	};

	return CONF_RUN("sleep", tests);
}
