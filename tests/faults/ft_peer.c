/*
 * ft_peer.c - a peer process for the process-level fault tests, the namespace tests
 * and the soak: the same verified protocol as the in-process tests (ft.h), in a
 * process that a test can kill, stop, restart or run inside a network namespace.
 *
 *   ft_peer serve [--listen URI] [--ro-len BYTES] [--wr-max BYTES]
 *       Prints "FT_PEER_ADDR <uri>" once listening and serves until SIGTERM/SIGINT;
 *       then closes everything, checks that nothing leaked and no completion was lost
 *       or duplicated, prints "FT_PEER_DONE ..." and exits 0 (3 when not clean).
 *
 *   ft_peer client --connect URI [--seconds S] [--sessions N] [--window W]
 *                  [--max-msg BYTES] [--max-rma BYTES] [--pooled]
 *       Runs random verified operations on N sessions until S seconds passed (default
 *       10) or SIGTERM, reconnecting after failures. Prints "FT_PEER_READY" when the
 *       first session is ready and "FT_PEER_STATS ..." at the end; exits 0 unless an
 *       operation delivered wrong bytes or a completion was lost or duplicated.
 *
 * Configuration comes from the FERRY_* environment, as for any ferry application.
 */
#define _GNU_SOURCE
#include "ft.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t peer_stop;

static void peer_on_signal(int sig)
{
	(void)sig;
	peer_stop = 1;
}

static uint64_t peer_num(const char *s)
{
	char *end;
	uint64_t v = strtoull(s, &end, 0);

	if (*end == 'k' || *end == 'K')
		v <<= 10;
	else if (*end == 'm' || *end == 'M')
		v <<= 20;
	else if (*end == 'g' || *end == 'G')
		v <<= 30;
	return v;
}

static int peer_serve(int argc, char **argv)
{
	struct ft_service_cfg cfg = {0};
	struct ft_service *svc;
	struct ferry_ctx *ctx;
	int rc, problems;

	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--listen") && i + 1 < argc)
			cfg.listen_uri = argv[++i];
		else if (!strcmp(argv[i], "--ro-len") && i + 1 < argc)
			cfg.ro_len = peer_num(argv[++i]);
		else if (!strcmp(argv[i], "--wr-max") && i + 1 < argc)
			cfg.wr_max = peer_num(argv[++i]);
		else {
			fprintf(stderr, "ft_peer serve: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	ctx = ft_ctx(NULL, NULL, NULL); /* FERRY_TEST_PROVIDER's */
	rc = ft_service_create(ctx, &cfg, &svc);
	if (rc < 0) {
		fprintf(stderr, "ft_peer serve: cannot listen on %s: %s\n",
			cfg.listen_uri ? cfg.listen_uri : "default", ft_err(rc));
		ferry_ctx_destroy(ctx);
		return 2;
	}
	printf("FT_PEER_ADDR %s\n", ft_service_addr(svc));
	fflush(stdout);
	while (!peer_stop)
		ft_service_step(svc, 50);

	struct ft_service_stats st;
	ft_service_get_stats(svc, &st);
	problems = ft_service_destroy(svc, 10000);
	bool clean = ft_ctx_clean(ctx, "ft_peer serve", 5000);
	ferry_ctx_destroy(ctx);
	printf("FT_PEER_DONE accepted %llu verified_ok %llu verified_bad %llu problems %d "
	       "clean %d\n",
	       (unsigned long long)st.accepted, (unsigned long long)st.verified_ok,
	       (unsigned long long)st.verified_bad, problems, clean);
	fflush(stdout);
	return problems == 0 && clean ? 0 : 3;
}

static int peer_client(int argc, char **argv)
{
	const char *uri = NULL;
	unsigned seconds = 10, nsess = 2;
	bool pooled = false;
	struct ft_load load;
	struct ft_tab tab;
	struct ft_counts counts = {0};
	struct ferry_ctx *ctx;
	uint64_t connect_failures = 0, connects = 0, seed = (uint64_t)getpid() * 7919;
	bool ready_said = false;

	ft_load_default(&load);
	load.max_msg = load.max_rma = 4u << 20;
	for (int i = 0; i < argc; i++) {
		if (!strcmp(argv[i], "--connect") && i + 1 < argc)
			uri = argv[++i];
		else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = (unsigned)peer_num(argv[++i]);
		else if (!strcmp(argv[i], "--sessions") && i + 1 < argc)
			nsess = (unsigned)peer_num(argv[++i]);
		else if (!strcmp(argv[i], "--window") && i + 1 < argc)
			load.window = (uint32_t)peer_num(argv[++i]);
		else if (!strcmp(argv[i], "--max-msg") && i + 1 < argc)
			load.max_msg = peer_num(argv[++i]);
		else if (!strcmp(argv[i], "--max-rma") && i + 1 < argc)
			load.max_rma = peer_num(argv[++i]);
		else if (!strcmp(argv[i], "--pooled"))
			pooled = true;
		else {
			fprintf(stderr, "ft_peer client: unknown argument %s\n", argv[i]);
			return 2;
		}
	}
	if (!uri || nsess == 0 || nsess > 256) {
		fprintf(stderr, "ft_peer client: --connect URI required (1-256 sessions)\n");
		return 2;
	}
	ctx = ft_ctx(NULL, NULL, NULL); /* FERRY_TEST_PROVIDER's */
	ft_tab_init(&tab, ctx, NULL);
	tab.counts = &counts;

	struct ft_sess **ss = calloc(nsess, sizeof(*ss));
	uint64_t *retry_at = calloc(nsess, sizeof(*retry_at));
	uint64_t end = ft_now_ms() + (uint64_t)seconds * 1000;
	FT_ASSERT(ss && retry_at, "out of memory");

	while (!peer_stop && ft_now_ms() < end) {
		uint64_t now = ft_now_ms();

		for (unsigned i = 0; i < nsess; i++) {
			if (ss[i] && ss[i]->state == FT_SESS_FAILED) {
				ft_sess_close(ss[i], true, false);
				ss[i] = NULL;
				retry_at[i] = now + 100;
			}
			if (!ss[i] && now >= retry_at[i]) {
				struct ferry_connect_attr ca = {
					.flags = pooled ? 0 : FERRY_CONNECT_PRIVATE,
					.timeout_ms = 1000};
				struct ferry_ep *ep;
				int rc = ferry_connect(ctx, uri, &ca, &ep);

				connects++;
				if (rc < 0) {
					connect_failures++;
					retry_at[i] = ft_now_ms() + 200;
					continue;
				}
				ft_sess_open(&tab, ep, &load, ++seed, &ss[i]);
			}
			while (ss[i] && ft_sess_can_post(ss[i]))
				ft_sess_post_random(ss[i]);
			if (ss[i] && ss[i]->state == FT_SESS_READY && !ready_said) {
				printf("FT_PEER_READY\n");
				fflush(stdout);
				ready_said = true;
			}
		}
		ft_tab_poll(&tab, 20);
	}
	for (unsigned i = 0; i < nsess; i++)
		if (ss[i])
			ft_sess_close(ss[i], true, false);
	bool idle = ft_tab_wait_idle(&tab, 10000, "ft_peer client");
	uint64_t lost = ft_tab_fini(&tab, "ft_peer client");
	bool clean = ft_ctx_clean(ctx, "ft_peer client", 5000);
	ft_counts_print(&counts, "ft_peer client");
	printf("FT_PEER_STATS ok %llu corrupt %llu failed %llu connects %llu "
	       "connect_failures %llu bogus %llu lost %llu clean %d\n",
	       (unsigned long long)ft_counts_total(&counts, 0),
	       (unsigned long long)ft_counts_total(&counts, 1),
	       (unsigned long long)ft_counts_total(&counts, 2), (unsigned long long)connects,
	       (unsigned long long)connect_failures, (unsigned long long)tab.bogus,
	       (unsigned long long)lost, clean);
	fflush(stdout);
	ferry_ctx_destroy(ctx);
	free(ss);
	free(retry_at);
	return idle && clean && lost == 0 && tab.bogus == 0 &&
			       ft_counts_total(&counts, 1) == 0
		       ? 0
		       : 3;
}

int main(int argc, char **argv)
{
	struct sigaction sa = {.sa_handler = peer_on_signal};

	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 2 && !strcmp(argv[1], "serve"))
		return peer_serve(argc - 2, argv + 2);
	if (argc >= 2 && !strcmp(argv[1], "client"))
		return peer_client(argc - 2, argv + 2);
	fprintf(stderr, "usage: ft_peer serve|client [options] (see ft_peer.c)\n");
	return 2;
}
