/*
 * test_race.c - threads against the lifetime machinery, for ThreadSanitizer (label
 * `threads`). Client threads on two contexts connect (pooled and private), send and
 * receive with every byte checked, hold and release, close endpoints other threads are
 * using, post receives with tiny deadlines, and pause so that the real poller threads
 * reap with FERRY_IDLE_TIMEOUT=1 -- over the mock provider and over TCP on 127.0.0.1.
 * A server context echoes what it gets on one pair of listeners and swallows it on
 * another (whose endpoints it leaves idle, so its own poller reaps them).
 *
 * At the end: every operation posted completed exactly once (counted per user_ctx),
 * nothing is left open or registered, and the sanitizer saw no race.
 *
 * FERRY_RACE_MS sets the run time (default 4000, at least 3500: the pauses need it).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "mock_provider.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_OPS (1u << 18)
#define MAX_CONNS 16384
#define SRV_BUF (160u * 1024u)
#define CLIENT_CTXS 2
#define THREADS_PER_CTX 3

enum job_kind { J_CRECV = 1, J_CSEND, J_SRECV, J_SSEND };

/* One posted operation; user_ctx is its index. Never freed during the run, so that a
 * second completion is counted, not a use-after-free. */
struct job {
	uint8_t kind;
	void *buf;
	size_t len;
	uint64_t seed;          /* client receive: the pattern its echo must carry */
	struct srv_conn *conn;  /* server ops */
};

struct srv_conn {
	struct ferry_ep *ep;
	atomic_bool released;
};

static struct job jobs[MAX_OPS];
static atomic_uint posted[MAX_OPS], completed[MAX_OPS];
static atomic_uint next_job = 1;

static struct {
	struct ferry_ctx *srv, *cli[CLIENT_CTXS];
	struct ferry_listener *l[4];
	char uri[4][FERRYI_URI_MAX]; /* echo mock, echo tcp, sink mock, sink tcp */
	atomic_bool stop_clients, stop_server;
	uint64_t start_ms, deadline_ms;
	pthread_mutex_t conns_lock;
	struct srv_conn *conns[MAX_CONNS];
	int nconns;
	atomic_uint exchanges_ok, exchanges_failed, connect_failed, bad_bytes, hangs;
	atomic_uint recv_timeouts, closes, reaps_seen;
} W = { .conns_lock = PTHREAD_MUTEX_INITIALIZER };

/*
 * cmocka's asserts longjmp and must stay on the main thread: worker threads count
 * their failures here, and the test asserts the count is zero.
 */
static atomic_uint thread_failures;
#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			atomic_fetch_add(&thread_failures, 1);                        \
			fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, \
				#cond);                                               \
		}                                                                     \
	} while (0)

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* A job slot, or 0 when the run used them all (the thread then stops posting). */
static uint32_t job_new(enum job_kind kind, size_t len)
{
	uint32_t id = atomic_fetch_add(&next_job, 1);
	if (id >= MAX_OPS)
		return 0;
	jobs[id].kind = (uint8_t)kind;
	jobs[id].len = len;
	jobs[id].buf = len ? malloc(len) : NULL;
	if (len && !jobs[id].buf) {
		CHECK(!"out of memory");
		return 0;
	}
	return id;
}

/* Called right before the post: the completion may run on another thread at once. */
static void job_posting(uint32_t id)
{
	atomic_store(&posted[id], 1);
}

static void job_refused(uint32_t id)
{
	atomic_store(&posted[id], 0);
	free(jobs[id].buf);
	jobs[id].buf = NULL;
}

/* Counts a completion; returns the job, or NULL for an id out of range. */
static struct job *job_completed(const struct ferry_completion *c)
{
	uintptr_t id = (uintptr_t)c->user_ctx;
	if (id == 0 || id >= MAX_OPS)
		return NULL;
	atomic_fetch_add(&completed[id], 1);
	return &jobs[id];
}

/* ------------------------------------------------------------------ server */

static void srv_conn_done(struct srv_conn *conn)
{
	if (!atomic_exchange(&conn->released, true))
		ferry_ep_release(conn->ep);
}

static bool srv_post_recv(struct srv_conn *conn)
{
	uint32_t id = job_new(J_SRECV, SRV_BUF);
	if (!id)
		return false;
	jobs[id].conn = conn;
	job_posting(id);
	if (ferry_recv(conn->ep, jobs[id].buf, SRV_BUF, 0, 0, (void *)(uintptr_t)id, NULL) != 0) {
		job_refused(id);
		return false;
	}
	return true;
}

static void echo_accept(struct ferry_listener *l, struct ferry_ep *ep, void *arg)
{
	(void)l;
	(void)arg;
	struct srv_conn *conn = calloc(1, sizeof(*conn));
	if (!conn) {
		CHECK(!"out of memory");
		ferry_ep_close(ep);
		return;
	}
	conn->ep = ep; /* the accept hold: an echo endpoint lives until its peer goes */
	pthread_mutex_lock(&W.conns_lock);
	bool room = W.nconns < MAX_CONNS;
	if (room)
		W.conns[W.nconns++] = conn;
	pthread_mutex_unlock(&W.conns_lock);
	if (!room) {
		free(conn);
		ferry_ep_close(ep);
		return;
	}
	if (!srv_post_recv(conn))
		srv_conn_done(conn);
}

static void sink_accept(struct ferry_listener *l, struct ferry_ep *ep, void *arg)
{
	(void)l;
	(void)arg;
	ferry_ep_release(ep); /* idle from now on: the server's poller reaps it */
}

static void srv_handle(const struct ferry_completion *c)
{
	struct job *j = job_completed(c);
	CHECK(j != NULL);
	if (!j)
		return;
	if (j->kind == J_SSEND) {
		free(j->buf);
		j->buf = NULL;
		return;
	}
	CHECK(j->kind == J_SRECV);
	struct srv_conn *conn = j->conn;
	if (c->status != 0) {
		free(j->buf);
		j->buf = NULL;
		srv_conn_done(conn);
		return;
	}
	/* Echo the message with its tag, from the receive's buffer, and receive again. */
	uintptr_t sid = job_new(J_SSEND, 0);
	if (sid) {
		jobs[sid].buf = j->buf;
		jobs[sid].len = c->len;
		j->buf = NULL;
		job_posting((uint32_t)sid);
		if (ferry_send(conn->ep, jobs[sid].buf, c->len, c->tag, (void *)sid, NULL) != 0)
			job_refused((uint32_t)sid);
	} else {
		free(j->buf);
		j->buf = NULL;
	}
	if (!srv_post_recv(conn))
		srv_conn_done(conn);
}

static void *server_main(void *arg)
{
	(void)arg;
	struct ferry_completion c[32];
	struct ferry_cq *cq = ferry_ctx_cq(W.srv);
	while (!atomic_load(&W.stop_server)) {
		int n = ferry_cq_wait(cq, c, 32, 20);
		if (n == FERRY_ETIMEDOUT)
			continue;
		CHECK(n > 0);
		for (int i = 0; i < n; i++)
			srv_handle(&c[i]);
	}
	return NULL;
}

/* ------------------------------------------------------------------ clients */

struct client {
	int index;
	struct ferry_ctx *ctx;
	struct ferry_cq *cq;
	uint64_t rs;
	unsigned pending;
	bool failed_wait;
};

static void client_handle(struct client *t, const struct ferry_completion *c)
{
	struct job *j = job_completed(c);
	CHECK(j != NULL);
	if (!j)
		return;
	t->pending--;
	if (j->kind == J_CRECV) {
		if (c->status == 0) {
			if (c->len != j->len || !mt_check_pattern(j->buf, j->len, j->seed))
				atomic_fetch_add(&W.bad_bytes, 1);
			else
				atomic_fetch_add(&W.exchanges_ok, 1);
		} else {
			atomic_fetch_add(&W.exchanges_failed, 1);
			if (c->status == FERRY_ETIMEDOUT)
				atomic_fetch_add(&W.recv_timeouts, 1);
		}
	}
	free(j->buf);
	j->buf = NULL;
}

/* Waits for this thread's ops in flight; a watchdog turns a hang into a failure. */
static void client_wait(struct client *t)
{
	struct ferry_completion c[16];
	uint64_t limit = now_ms() + 30000;
	while (t->pending > 0) {
		int n = ferry_cq_wait(t->cq, c, 16, 100);
		if (n == FERRY_ETIMEDOUT) {
			if (now_ms() > limit) {
				atomic_fetch_add(&W.hangs, 1);
				t->failed_wait = true;
				return;
			}
			continue;
		}
		CHECK(n > 0);
		if (n < 0)
			return;
		for (int i = 0; i < n; i++)
			client_handle(t, &c[i]);
	}
}

static size_t pick_size(struct client *t)
{
	uint64_t r = mt_rand(&t->rs) % 100;
	if (r < 60)
		return 1 + mt_rand(&t->rs) % 512;
	if (r < 85)
		return 513 + mt_rand(&t->rs) % 3584;           /* up to the mock's eager max */
	if (r < 97)
		return 4097 + mt_rand(&t->rs) % 20000;         /* mock rendezvous           */
	return 65537 + mt_rand(&t->rs) % 65536;             /* tcp rendezvous too        */
}

/* Sends nmsg messages to an echo endpoint and receives them back, bytes checked. */
static void client_echo(struct client *t, struct ferry_ep *ep, int nmsg)
{
	struct ferry_op_attr attr = { .cq = t->cq };
	for (int k = 0; k < nmsg; k++) {
		size_t len = pick_size(t);
		uint32_t rid = job_new(J_CRECV, len), sid = job_new(J_CSEND, len);
		if (!rid || !sid)
			return;
		uint64_t tag = ((uint64_t)sid << 8) | (uint64_t)t->index;
		jobs[rid].seed = sid;
		mt_fill_pattern(jobs[sid].buf, len, sid);
		struct ferry_op_attr rattr = attr;
		if (mt_rand(&t->rs) % 50 == 0)
			rattr.timeout_ms = 1 + (uint32_t)(mt_rand(&t->rs) % 3); /* races the echo */
		job_posting(rid);
		if (ferry_recv(ep, jobs[rid].buf, len, tag, ~0ull, (void *)(uintptr_t)rid, &rattr) != 0) {
			job_refused(rid);
			job_refused(sid);
			atomic_fetch_add(&W.exchanges_failed, 1);
			break;
		}
		t->pending++;
		job_posting(sid);
		/* Sometimes held back (FERRY_OP_MORE) with nothing after it: the waiters'
		 * progress, woken for it, must send it. */
		struct ferry_op_attr sattr = attr;
		if (mt_rand(&t->rs) % 4 == 0)
			sattr.flags |= FERRY_OP_MORE;
		if (ferry_send(ep, jobs[sid].buf, len, tag, (void *)(uintptr_t)sid, &sattr) != 0) {
			job_refused(sid);
			break; /* the endpoint closed: the receive completes with it */
		}
		t->pending++;
	}
	client_wait(t);
}

/* One-way messages to a sink endpoint. */
static void client_sink(struct client *t, struct ferry_ep *ep)
{
	struct ferry_op_attr attr = { .cq = t->cq };
	int n = 1 + (int)(mt_rand(&t->rs) % 3);
	for (int k = 0; k < n; k++) {
		size_t len = 1 + mt_rand(&t->rs) % 2048;
		uint32_t sid = job_new(J_CSEND, len);
		if (!sid)
			return;
		memset(jobs[sid].buf, 0x5a, len);
		job_posting(sid);
		if (ferry_send(ep, jobs[sid].buf, len, 1, (void *)(uintptr_t)sid, &attr) != 0) {
			job_refused(sid);
			break;
		}
		t->pending++;
	}
	client_wait(t);
}

static void *client_main(void *arg)
{
	struct client *t = arg;
	/*
	 * All threads of a context pause together, longer than the idle timeout, so its
	 * pooled endpoints go idle: context 0 (idle 1 s) reaps its own; context 1 (idle
	 * 2 s) leaves it to the server (idle 1 s) to reap the sink endpoints first.
	 */
	int ci = t->index / THREADS_PER_CTX;
	uint64_t pause_at = W.start_ms + 1000 + 200 * (uint64_t)ci;
	uint64_t pause_ms = 1400 + 600 * (uint64_t)ci;
	bool paused = false;

	if (ferry_cq_create(t->ctx, &t->cq) != 0) {
		CHECK(!"ferry_cq_create");
		return NULL;
	}
	while (now_ms() < W.deadline_ms && !t->failed_wait &&
	       atomic_load(&next_job) < MAX_OPS - 64) {
		if (!paused && now_ms() >= pause_at) {
			paused = true;
			usleep((useconds_t)(pause_ms * 1000));
			continue;
		}
		uint64_t r = mt_rand(&t->rs) % 100;
		bool tcp = mt_rand(&t->rs) % 3 == 0;
		bool sink = r >= 85;
		const char *uri = W.uri[(sink ? 2 : 0) + (tcp ? 1 : 0)];
		struct ferry_connect_attr cattr = { 0 };
		bool private = !sink && r < 15;
		if (private)
			cattr.flags = FERRY_CONNECT_PRIVATE;
		if (r == 99)
			uri = "mock://nobody:9"; /* refused: the retry path, concurrently */
		struct ferry_ep *ep = NULL;
		if (ferry_connect(t->ctx, uri, &cattr, &ep) != 0) {
			atomic_fetch_add(&W.connect_failed, 1);
			continue;
		}
		bool extra = mt_rand(&t->rs) % 4 == 0;
		if (extra)
			ferry_ep_hold(ep);
		if (sink)
			client_sink(t, ep);
		else
			client_echo(t, ep, 1 + (int)(mt_rand(&t->rs) % 4));
		if (extra)
			ferry_ep_release(ep);
		if (!private && mt_rand(&t->rs) % 25 == 0) {
			atomic_fetch_add(&W.closes, 1);
			ferry_ep_close(ep); /* under the feet of other threads sharing it */
		} else {
			ferry_ep_release(ep);
		}
	}
	client_wait(t);
	if (!t->failed_wait)
		CHECK(ferry_cq_destroy(t->cq) == 0);
	return NULL;
}

/* ------------------------------------------------------------------ the test */

static struct ferry_ctx *race_ctx(uint32_t idle_s)
{
	struct ferry_config cfg;
	struct ferry_ctx *ctx = NULL;
	mt_config(&cfg);
	cfg.providers = "mock,tcp";
	cfg.idle_timeout_s = idle_s;
	cfg.probe_interval_ms = 300;
	cfg.probe_idle_interval_ms = 300; /* keepalives racing with everything else too */
	cfg.probe_misses = 10; /* sanitizers slow everything: probes must not kill */
	cfg.reconnect_attempts = 2;
	cfg.reconnect_initial_ms = 5;
	cfg.connect_timeout_ms = 10000;
	cfg.handshake_timeout_ms = 10000;
	assert_int_equal(ferry_ctx_create(&cfg, &ctx), 0); /* real clock, real poller */
	return ctx;
}

static int group_setup(void **state)
{
	(void)state;
	return mock_register();
}

static void listen_on(int i, const char *uri, ferry_accept_fn fn)
{
	struct ferry_listen_attr attr = { .accept_fn = fn };
	size_t len = sizeof(W.uri[i]);
	assert_int_equal(ferry_listen(W.srv, uri, &attr, &W.l[i]), 0);
	assert_int_equal(ferry_listener_addr(W.l[i], W.uri[i], &len), 0);
}

static int nconns(void)
{
	pthread_mutex_lock(&W.conns_lock);
	int n = W.nconns;
	pthread_mutex_unlock(&W.conns_lock);
	return n;
}

static bool all_closed(void)
{
	if (mt_stats(W.srv).eps_open)
		return false;
	for (int i = 0; i < CLIENT_CTXS; i++)
		if (mt_stats(W.cli[i]).eps_open)
			return false;
	return true;
}

static void test_race(void **state)
{
	(void)state;
	pthread_t srv_th, th[CLIENT_CTXS * THREADS_PER_CTX];
	static struct client cl[CLIENT_CTXS * THREADS_PER_CTX];
	const char *env = getenv("FERRY_RACE_MS");
	uint64_t run_ms = env ? strtoull(env, NULL, 10) : 4000;

	mock_reset();
	W.srv = race_ctx(1);
	for (int i = 0; i < CLIENT_CTXS; i++)
		W.cli[i] = race_ctx(1 + (uint32_t)i);
	listen_on(0, "mock://echo:0", echo_accept);
	listen_on(1, "tcp://127.0.0.1:0", echo_accept);
	listen_on(2, "mock://sink:0", sink_accept);
	listen_on(3, "tcp://127.0.0.1:0", sink_accept);

	W.start_ms = now_ms();
	W.deadline_ms = W.start_ms + (run_ms > 3500 ? run_ms : 3500);
	assert_int_equal(pthread_create(&srv_th, NULL, server_main, NULL), 0);
	for (int i = 0; i < CLIENT_CTXS * THREADS_PER_CTX; i++) {
		cl[i].index = i;
		cl[i].ctx = W.cli[i / THREADS_PER_CTX];
		cl[i].rs = 0x1234567ull * (uint64_t)(i + 1) | 1;
		assert_int_equal(pthread_create(&th[i], NULL, client_main, &cl[i]), 0);
	}
	for (int i = 0; i < CLIENT_CTXS * THREADS_PER_CTX; i++)
		pthread_join(th[i], NULL);

	/* Close what the clients' pools still hold; the server hears and lets go. */
	for (int i = 0; i < CLIENT_CTXS; i++)
		mt_close_pool(W.cli[i]);
	uint64_t limit = now_ms() + 30000;
	while (!all_closed() && now_ms() < limit)
		usleep(10000);
	atomic_store(&W.stop_server, true);
	pthread_join(srv_th, NULL);
	struct ferry_completion c[64];
	int n;
	while ((n = ferry_cq_poll(ferry_ctx_cq(W.srv), c, 64)) > 0)
		for (int i = 0; i < n; i++)
			srv_handle(&c[i]);

	print_message("race: %u jobs, %u echoes ok, %u failed (%u deadlines), %u connects failed, "
		      "%u closes, %u server endpoints\n",
		      atomic_load(&next_job) - 1, atomic_load(&W.exchanges_ok),
		      atomic_load(&W.exchanges_failed), atomic_load(&W.recv_timeouts),
		      atomic_load(&W.connect_failed), atomic_load(&W.closes), nconns());
	struct ferry_stats ss = mt_stats(W.srv), s0 = mt_stats(W.cli[0]), s1 = mt_stats(W.cli[1]);
	print_message("race: reaped server %llu, clients %llu; probes sent %llu\n",
		      (unsigned long long)ss.eps_reaped,
		      (unsigned long long)(s0.eps_reaped + s1.eps_reaped),
		      (unsigned long long)(ss.probes_sent + s0.probes_sent + s1.probes_sent));

	/* Exactly once, every one. */
	unsigned double_done = 0, never_done = 0, spurious = 0;
	uint32_t used = atomic_load(&next_job);
	if (used > MAX_OPS)
		used = MAX_OPS;
	for (uint32_t id = 1; id < used; id++) {
		unsigned p = atomic_load(&posted[id]), d = atomic_load(&completed[id]);
		double_done += d > 1;
		never_done += p == 1 && d == 0;
		spurious += p == 0 && d > 0;
	}
	assert_int_equal(atomic_load(&thread_failures), 0);
	assert_int_equal(atomic_load(&W.hangs), 0);
	assert_int_equal(double_done, 0);
	assert_int_equal(never_done, 0);
	assert_int_equal(spurious, 0);
	assert_int_equal(atomic_load(&W.bad_bytes), 0);
	assert_true(atomic_load(&W.exchanges_ok) > 0);
	assert_true(all_closed());

	/*
	 * The pollers really reaped, and both providers carried traffic. Which side of
	 * an idle connection reaps first is a race of equal timeouts (and of the
	 * machine's load): each side's reaping is checked deterministically in
	 * unit.poller (fake clock); here it is enough that reaping ran at all.
	 */
	assert_true(ss.eps_reaped + s0.eps_reaped + s1.eps_reaped > 0);
	struct ferry_stats st;
	assert_int_equal(ferry_stats_get(W.srv, "tcp", &st), 0);
	assert_true(st.eps_accepted > 0 && st.ops_completed > 0);
	assert_int_equal(ferry_stats_get(W.srv, "mock", &st), 0);
	assert_true(st.eps_accepted > 0 && st.ops_completed > 0);

	for (int i = 0; i < 4; i++)
		ferry_listener_close(W.l[i]);
	mt_assert_clean(W.srv);
	for (int i = 0; i < CLIENT_CTXS; i++)
		mt_assert_clean(W.cli[i]);
	for (int i = 0; i < CLIENT_CTXS; i++)
		ferry_ctx_destroy(W.cli[i]);
	ferry_ctx_destroy(W.srv);
	for (int i = 0; i < nconns(); i++)
		free(W.conns[i]);
	for (uint32_t id = 1; id < used; id++)
		free(jobs[id].buf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_race),
	};
	return cmocka_run_group_tests_name("unit.race", tests, group_setup, NULL);
}
