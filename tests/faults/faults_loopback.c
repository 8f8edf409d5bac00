/*
 * faults_loopback.c - faults made with the public API alone, no proxy, no second
 * process:
 *
 *   faults_loopback CASE
 *
 *   mass_close   100 connections whose peers all closed at once: the server context
 *                must tear every one of them down and stay responsive. (Regression
 *                test for a livelock: see RELIABILITY.md, "ferry_progress spins when 64
 *                or more closing endpoints have unread input".)
 *   close_inflight  300 closes with transfers in flight, buffers reused as soon as
 *                their operations complete: the server never receives wrong bytes.
 *
 * The progress call under test runs on a helper thread watched by a deadline, so a
 * hang inside ferry is reported, with every thread's stack when gdb is installed,
 * instead of waiting for the CTest timeout.
 */
#define _GNU_SOURCE
#include "ft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NCONN 100

struct progress_call {
	struct ferry_ctx *ctx;
	atomic_bool done;
	int rc;
};

static void *progress_thread(void *arg)
{
	struct progress_call *pc = arg;

	pc->rc = ferry_progress(pc->ctx);
	atomic_store(&pc->done, true);
	return NULL;
}

/* Runs ferry_progress(ctx) on a thread; false if it did not return within ms. */
static bool progress_bounded(struct ferry_ctx *ctx, int ms, int *rc)
{
	static struct progress_call pc; /* must outlive a stuck thread */
	pthread_t t;

	pc.ctx = ctx;
	atomic_store(&pc.done, false);
	FT_ASSERT(pthread_create(&t, NULL, progress_thread, &pc) == 0, "pthread_create");
	uint64_t end = ft_now_ms() + (uint64_t)ms;
	while (!atomic_load(&pc.done) && ft_now_ms() < end)
		ft_sleep_ms(5);
	if (!atomic_load(&pc.done))
		return false;
	pthread_join(t, NULL);
	*rc = pc.rc;
	return true;
}

static struct ferry_ctx *quiet_ctx(void)
{
	struct ferry_config cfg;
	struct ferry_ctx *ctx;

	/* No probes and no reaping: the poller thread has nothing to do and leaves the
	 * sockets to the progress call under test. */
	ferry_config_init(&cfg);
	cfg.providers = "tcp";
	cfg.probe_interval_ms = 0;
	cfg.idle_timeout_s = 0;
	FT_ASSERT_RC(ferry_ctx_create(&cfg, &ctx), 0);
	return ctx;
}

static void case_mass_close(void)
{
	struct ferry_ctx *sctx = quiet_ctx(), *cctx = quiet_ctx();
	struct ferry_listener *l;
	static struct ferry_ep *cep[NCONN], *sep[NCONN];
	char addr[256];
	size_t alen = sizeof(addr);
	int rc;

	FT_ASSERT_RC(ferry_listen(sctx, "tcp://127.0.0.1:0", NULL, &l), 0);
	FT_ASSERT_RC(ferry_listener_addr(l, addr, &alen), 0);
	for (int i = 0; i < NCONN; i++) {
		struct ferry_connect_attr ca = {.flags = FERRY_CONNECT_PRIVATE, .timeout_ms = 5000};

		FT_ASSERT_RC(ferry_connect(cctx, addr, &ca, &cep[i]), 0);
		FT_ASSERT_RC(ferry_listener_accept(l, &sep[i], 5000), 0);
	}
	/* Without a listener the server's poller sleeps: nothing drains the sockets. */
	ferry_listener_close(l);
	ft_note("mass_close: %d connections up; closing every client endpoint at once", NCONN);
	for (int i = 0; i < NCONN; i++)
		ferry_ep_close(cep[i]);
	for (int i = 0; i < 20; i++) {
		ferry_progress(cctx);
		ft_sleep_ms(5);
	}
	ft_sleep_ms(100);

	/* Every server socket now holds a GOODBYE and an end of stream. */
	uint64_t t0 = ft_now_ms();
	if (!progress_bounded(sctx, 5000, &rc)) {
		ft_fail_at(__FILE__, __LINE__, false,
			   "ferry_progress() on a context with %d endpoints whose peers closed did "
			   "not return within 5 s (it spins inside ferryi_progress_locked: "
			   "endpoints that began closing keep readable sockets in epoll, and "
			   "the epoll_wait loop repeats while it returns 64 events, so "
			   "ferryi_process_closes never runs)", NCONN);
		ft_stacks();
		printf("FAIL: mass_close (the context is stuck; not cleaning up)\n");
		fflush(stdout);
		_exit(1);
	}
	ft_note("mass_close: one progress pass took %llu ms (%s)",
		(unsigned long long)(ft_now_ms() - t0), ft_err(rc < 0 ? rc : 0));

	/* Every server endpoint learns that its peer left. */
	uint64_t end = ft_now_ms() + 5000;
	int down = 0;
	while (ft_now_ms() < end) {
		down = 0;
		for (int i = 0; i < NCONN; i++)
			down += ferry_ep_status(sep[i]) != 0;
		if (down == NCONN)
			break;
		if (!progress_bounded(sctx, 5000, &rc))
			FT_ASSERT(0, "ferry_progress() hangs");
		ft_sleep_ms(5);
	}
	FT_EXPECT(down == NCONN, "mass_close: %d of %d server endpoints saw the close", down,
		  NCONN);
	for (int i = 0; i < NCONN; i++)
		ferry_ep_close(sep[i]);
	FT_EXPECT(ft_ctx_clean(sctx, "server ctx", 5000), "server context leaked");
	FT_EXPECT(ft_ctx_clean(cctx, "client ctx", 5000), "client context leaked");
	ferry_ctx_destroy(cctx);
	ferry_ctx_destroy(sctx);
}

/*
 * Close with transfers in flight, hundreds of times: the client posts sends, writes
 * and receives of up to 4 MiB, closes the endpoint a few milliseconds later, and
 * scribbles over each buffer as soon as its operation completed (cancelled): the
 * buffer is the application's again. Whatever the server receives completely must be
 * the bytes that were sent; a transfer that still read a buffer after its operation
 * completed shows up as wrong bytes at the server.
 */
static void case_close_inflight(void)
{
	struct ferry_ctx *sctx = ft_ctx("tcp", NULL, NULL), *cctx = ft_ctx("tcp", NULL, NULL);
	struct ft_service_cfg scfg = {.ro_len = 4u << 20, .wr_max = 8u * (4u << 20)};
	struct ft_service *svc;
	struct ft_tab tab;
	struct ft_counts counts = {0};
	struct ft_load load;
	struct ft_service_stats st;
	uint64_t rng = 4242, iters = 300, posted = 0;

	FT_ASSERT_RC(ft_service_create(sctx, &scfg, &svc), 0);
	FT_ASSERT_RC(ft_service_start_thread(svc), 0);
	ft_tab_init(&tab, cctx, NULL);
	tab.counts = &counts;
	ft_load_default(&load);
	load.window = 8;
	load.max_msg = load.max_rma = 4u << 20;
	load.small_pct = 30;
	load.w[FT_SEND] = 4;
	load.w[FT_READ] = 0;
	for (uint64_t it = 0; it < iters; it++) {
		struct ferry_connect_attr ca = {.flags = FERRY_CONNECT_PRIVATE, .timeout_ms = 5000};
		struct ferry_ep *ep;
		struct ft_sess *s;

		FT_ASSERT_RC(ferry_connect(cctx, ft_service_addr(svc), &ca, &ep), 0);
		ft_sess_open(&tab, ep, &load, ft_rand(&rng), &s);
		FT_ASSERT_RC(ft_sess_wait_ready(s, 5000), 0);
		while (ft_sess_can_post(s)) {
			ft_sess_post_random(s);
			posted++;
		}
		uint64_t end = ft_now_ms() + ft_rand_range(&rng, 0, 6);
		while (ft_now_ms() < end)
			ft_tab_poll(&tab, 1);
		ft_sess_close(s, true, false);
		FT_ASSERT(ft_tab_wait_idle(&tab, 10000, "close_inflight"), "ops hang after close");
	}
	uint64_t end = ft_now_ms() + 10000;
	do {
		ft_service_get_stats(svc, &st);
		if (st.conns_live == 0)
			break;
		ft_sleep_ms(10);
	} while (ft_now_ms() < end);
	ft_note("close_inflight: %llu closes, %llu ops posted; server verified %llu ok, %llu "
		"WRONG", (unsigned long long)iters, (unsigned long long)posted,
		(unsigned long long)st.verified_ok, (unsigned long long)st.verified_bad);
	ft_counts_print(&counts, "close_inflight client");
	FT_EXPECT(st.verified_bad == 0,
		  "close_inflight: the server received %llu complete messages or writes with "
		  "wrong bytes: a transfer read the sender's buffer after its operation had "
		  "completed", (unsigned long long)st.verified_bad);
	FT_EXPECT(ft_counts_total(&counts, 1) == 0, "close_inflight: corrupt ops");
	FT_EXPECT(st.conns_live == 0, "close_inflight: server still holds endpoints");
	FT_EXPECT(ft_tab_fini(&tab, "client") == 0 && tab.bogus == 0,
		  "close_inflight: lost or duplicate completions");
	FT_EXPECT(ft_service_destroy(svc, 10000) == 0, "close_inflight: server ledger");
	FT_EXPECT(ft_ctx_clean(cctx, "client ctx", 5000), "client context leaked");
	FT_EXPECT(ft_ctx_clean(sctx, "server ctx", 5000), "server context leaked");
	ferry_ctx_destroy(cctx);
	ferry_ctx_destroy(sctx);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 2 || (strcmp(argv[1], "mass_close") != 0 &&
			  strcmp(argv[1], "close_inflight") != 0)) {
		fprintf(stderr, "usage: faults_loopback mass_close|close_inflight\n");
		return 2;
	}
	ft_watchdog(100);
	uint64_t t0 = ft_now_ms();
	if (!strcmp(argv[1], "mass_close"))
		case_mass_close();
	else
		case_close_inflight();
	ft_note("%s took %llu ms", argv[1], (unsigned long long)(ft_now_ms() - t0));
	return ft_finish(argv[1]);
}
