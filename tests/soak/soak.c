/*
 * soak.c - many endpoints doing verified random work for minutes, with random closes,
 * idle reaping and a server process that restarts.
 *
 *   soak [--seconds N] PATH/TO/ft_peer
 *
 * Provider and host: FERRY_TEST_PROVIDER (default tcp) and FERRY_TEST_HOST, for both
 * servers and the client (the server process inherits them).
 *
 * Duration: --seconds N, else FERRY_SOAK_SECONDS, else 180.
 *
 * Layout:
 *   - this process: one client context shared by SOAK_WORKERS threads (each with its
 *     own completion queue and ledger), and an in-process server context (a service
 *     thread) that lives for the whole run;
 *   - a server process (ft_peer serve) on a fixed port, killed every few seconds
 *     (SIGKILL and SIGTERM in turn) and started again on the same port.
 * Each worker keeps SOAK_SLOTS sessions, half to each server, all on private
 * endpoints but one on the shared pool (two workers share each server's pooled
 * endpoint). A session posts random sends, receives,
 * writes and reads (1 byte .. 1 MiB, verified at both ends); now and then it is
 * closed with operations in flight, or goes idle long enough for the pool to reap its
 * endpoint (FERRY_IDLE_TIMEOUT=1), then reconnects.
 *
 * At the end: every ferry operation posted completed exactly once (per op id, in
 * every worker and in both servers), no operation delivered wrong bytes, both
 * contexts of this process are back to zero endpoints and regions, and the server
 * process checked the same on its side (exit status 0). The volume (ops, bytes),
 * the errors by code and the lifecycle counts are printed.
 */
#define _GNU_SOURCE
#include "ft.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define SOAK_WORKERS 4
#define SOAK_SLOTS 8 /* sessions per worker: 32 endpoints in all */
#define MiB (1ull << 20)

static const char *peer_bin;
static char addr_local[256], addr_peer[256];
static struct ferry_ctx *cctx;
static atomic_bool stop_flag;

struct slot {
	struct ft_sess *s;
	int target;       /* 0: in-process server, 1: server process */
	bool pooled;
	uint64_t retry_at, idle_until, active_until;
};

struct worker {
	int idx;
	pthread_t thr;
	struct ferry_cq *cq;
	struct ft_tab tab;
	struct ft_counts counts;
	struct slot slots[SOAK_SLOTS];
	uint64_t rng;
	uint64_t connects, connect_failures, random_closes, idles;
	struct ft_counts connect_errs; /* err histogram only */
	uint64_t lost, bogus;
	bool idle_ok;
	atomic_uint_fast64_t ok_so_far; /* read by the main thread's progress line */
};

static struct worker workers[SOAK_WORKERS];

static void worker_on_lop(struct ft_tab *t, struct ft_lop *l)
{
	struct worker *w = t->user;

	if (l->outcome == 0 && l->kind < FT_INFO)
		atomic_fetch_add_explicit(&w->ok_so_far, 1, memory_order_relaxed);
}

static void slot_close(struct worker *w, struct slot *sl, bool close_ep, bool free_region)
{
	ft_sess_close(sl->s, close_ep, free_region);
	sl->s = NULL;
	(void)w;
}

static void worker_step(struct worker *w, uint64_t now)
{
	struct ft_load load;

	ft_load_default(&load);
	load.window = 2;
	load.max_msg = load.max_rma = 1 * MiB;
	load.small_pct = 70;
	for (int i = 0; i < SOAK_SLOTS; i++) {
		struct slot *sl = &w->slots[i];

		if (sl->s && sl->s->state == FT_SESS_FAILED) {
			slot_close(w, sl, true, false);
			sl->retry_at = now + ft_rand_range(&w->rng, 20, 200);
		}
		if (!sl->s) {
			if (now < sl->retry_at || now < sl->idle_until)
				continue;
			struct ferry_connect_attr ca = {
				.flags = sl->pooled ? 0 : FERRY_CONNECT_PRIVATE, .timeout_ms = 2000};
			struct ferry_ep *ep;
			int rc = ferry_connect(cctx, sl->target ? addr_peer : addr_local, &ca, &ep);

			w->connects++;
			if (rc < 0) {
				w->connect_failures++;
				ft_counts_add_err(&w->connect_errs, rc);
				sl->retry_at = ft_now_ms() + ft_rand_range(&w->rng, 100, 400);
				continue;
			}
			ft_sess_open(&w->tab, ep, &load, ft_rand(&w->rng), &sl->s);
			sl->active_until = now + ft_rand_range(&w->rng, 300, 3000);
			continue;
		}
		if (sl->s->state != FT_SESS_READY)
			continue;
		if (sl->pooled && now >= sl->active_until) {
			/* Give the pooled endpoint back and stay away long enough for the pool
			 * to reap it, unless another worker is using it. */
			w->idles++;
			slot_close(w, sl, false, true);
			sl->idle_until = now + ft_rand_range(&w->rng, 1200, 3000);
			continue;
		}
		while (sl->s && ft_sess_can_post(sl->s)) {
			ft_sess_post_random(sl->s);
			uint64_t r = ft_rand(&w->rng) % 1000;
			if (r < 3) {
				/* Close with operations in flight: they complete, cancelled. */
				w->random_closes++;
				slot_close(w, sl, true, false);
				sl->retry_at = now + ft_rand_range(&w->rng, 0, 100);
			} else if (r < 5 && !sl->pooled) {
				/* A private endpoint goes quiet for a while, then is closed. */
				w->idles++;
				slot_close(w, sl, true, true);
				sl->idle_until = now + ft_rand_range(&w->rng, 200, 1500);
			}
		}
	}
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;

	while (!atomic_load(&stop_flag)) {
		worker_step(w, ft_now_ms());
		ft_tab_poll(&w->tab, 10);
	}
	for (int i = 0; i < SOAK_SLOTS; i++)
		if (w->slots[i].s)
			slot_close(w, &w->slots[i], true, false);
	char who[32];
	snprintf(who, sizeof(who), "worker %d", w->idx);
	w->idle_ok = ft_tab_wait_idle(&w->tab, 60000, who);
	w->bogus = w->tab.bogus;
	w->lost = ft_tab_fini(&w->tab, who);
	return NULL;
}

/* ------------------------------------------------------------------ the server process */

static pid_t peer_pid = -1;
static int peer_out = -1;
static uint16_t peer_port;
static uint64_t restarts_kill, restarts_term, peer_unclean;

static void peer_start(void)
{
	char listen[256], line[256];

	/* The provider and host under test (FERRY_TEST_PROVIDER, FERRY_TEST_HOST); the
	 * first start picks the port, the later ones take it again. */
	ft_listen_uri(listen, sizeof(listen), peer_port);
	for (int attempt = 0; attempt < 50; attempt++) {
		char *argv[] = {(char *)peer_bin, "serve", "--listen", listen, "--ro-len", "4M",
				"--wr-max", "8M", NULL};
		int out;
		pid_t pid = ft_spawn(argv, &out);

		FT_ASSERT(pid > 0, "cannot start %s", peer_bin);
		if (ft_read_line(out, "FT_PEER_ADDR", line, sizeof(line), 10000)) {
			peer_pid = pid;
			peer_out = out;
			if (!peer_port) {
				const char *colon = strrchr(line, ':');
				peer_port = (uint16_t)atoi(colon + 1);
				snprintf(addr_peer, sizeof(addr_peer), "%s", line);
			}
			return;
		}
		/* The port may still be held for a moment: try again. */
		ft_wait_child(pid, 5000);
		close(out);
		ft_sleep_ms(100);
	}
	FT_ASSERT(0, "the server process did not start again on port %u", (unsigned)peer_port);
}

static void peer_stop(bool kill9)
{
	char line[512];

	if (peer_pid <= 0)
		return;
	kill(peer_pid, kill9 ? SIGKILL : SIGTERM);
	if (!kill9 && ft_read_line(peer_out, "FT_PEER_DONE", line, sizeof(line), 30000))
		ft_note("server process %d: %s", (int)peer_pid, line);
	int st = ft_wait_child(peer_pid, 30000);
	if (kill9) {
		restarts_kill++;
	} else {
		restarts_term++;
		if (st == -1 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
			peer_unclean++;
			ft_fail_at(__FILE__, __LINE__, false,
				   "server process %d ended with status 0x%x after SIGTERM (a leak, "
				   "a lost or duplicated completion, or a hang on its side)",
				   (int)peer_pid, st);
		}
	}
	close(peer_out);
	peer_pid = -1;
	peer_out = -1;
}

/* ------------------------------------------------------------------ main */

static void stats_line(const char *who, struct ferry_ctx *ctx)
{
	struct ferry_stats st;

	ferry_stats_get(ctx, NULL, &st);
	ft_note("%s: endpoints created %llu accepted %llu closed %llu failed %llu reaped %llu; "
		"probes sent %llu missed %llu, peers dead %llu; connect failures %llu, "
		"reconnects %llu; protocol errors %llu; ops posted %llu completed %llu failed "
		"%llu; payload %.1f MiB out %.1f MiB in",
		who, (unsigned long long)st.eps_created, (unsigned long long)st.eps_accepted,
		(unsigned long long)st.eps_closed, (unsigned long long)st.eps_failed,
		(unsigned long long)st.eps_reaped, (unsigned long long)st.probes_sent,
		(unsigned long long)st.probes_missed, (unsigned long long)st.peers_dead,
		(unsigned long long)st.connect_failures, (unsigned long long)st.reconnects,
		(unsigned long long)st.protocol_errors, (unsigned long long)st.ops_posted,
		(unsigned long long)st.ops_completed, (unsigned long long)st.ops_failed,
		(double)st.bytes_sent / MiB, (double)st.bytes_received / MiB);
}

int main(int argc, char **argv)
{
	unsigned seconds = 0;
	const char *env;

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
			seconds = (unsigned)atoi(argv[++i]);
		else
			peer_bin = argv[i];
	}
	if (!peer_bin) {
		fprintf(stderr, "usage: soak [--seconds N] PATH/TO/ft_peer\n");
		return 2;
	}
	if (!seconds && (env = getenv("FERRY_SOAK_SECONDS")) && atoi(env) > 0)
		seconds = (unsigned)atoi(env);
	if (!seconds)
		seconds = 180;
	/* A hang inside ferry is reported with the stacks, not left to the CTest timeout:
	 * the run itself, then at most ~3 minutes of draining and checks. */
	ft_watchdog(seconds + 200);

	/* Short timeouts, so that reaping, probes and reconnects happen often. The
	 * server process inherits them. Set variables win. */
	setenv("FERRY_IDLE_TIMEOUT", "1", 0);
	setenv("FERRY_PROBE_INTERVAL_MS", "500", 0);
	setenv("FERRY_PROBE_MISSES", "3", 0);
	setenv("FERRY_CONNECT_TIMEOUT_MS", "2000", 0);
	setenv("FERRY_RECONNECT_INITIAL_MS", "100", 0);
	setenv("FERRY_RECONNECT_MAX_MS", "500", 0);
	setenv("FERRY_RECONNECT_ATTEMPTS", "3", 0);

	ft_require_provider();
	struct ferry_ctx *sctx = ft_ctx(NULL, NULL, NULL);
	struct ft_service_cfg scfg = {.ro_len = 4 * MiB, .wr_max = 8 * MiB};
	struct ft_service *svc;
	FT_ASSERT_RC(ft_service_create(sctx, &scfg, &svc), 0);
	FT_ASSERT_RC(ft_service_start_thread(svc), 0);
	snprintf(addr_local, sizeof(addr_local), "%s", ft_service_addr(svc));
	peer_start();
	cctx = ft_ctx(NULL, NULL, NULL);
	ft_note("soak: %u s, %d workers x %d sessions, servers %s (in process) and %s "
		"(process, restarted)", seconds, SOAK_WORKERS, SOAK_SLOTS, addr_local, addr_peer);

	for (int i = 0; i < SOAK_WORKERS; i++) {
		struct worker *w = &workers[i];

		w->idx = i;
		w->rng = 0x50A4ull * (uint64_t)(i + 1);
		FT_ASSERT_RC(ferry_cq_create(cctx, &w->cq), 0);
		ft_tab_init(&w->tab, cctx, w->cq);
		w->tab.counts = &w->counts;
		w->tab.on_lop = worker_on_lop;
		w->tab.user = w;
		for (int k = 0; k < SOAK_SLOTS; k++) {
			w->slots[k].target = k % 2;
			/* One pooled slot per worker; two workers share each server's pooled
			 * endpoint, so it is sometimes shared, sometimes idle and reaped. */
			w->slots[k].pooled = k == (i < SOAK_WORKERS / 2 ? 0 : 1);
		}
		FT_ASSERT(pthread_create(&w->thr, NULL, worker_main, w) == 0, "pthread_create");
	}

	/* The server process restarts every 5-12 s, SIGKILL and SIGTERM in turn. */
	uint64_t t0 = ft_now_ms(), end = t0 + (uint64_t)seconds * 1000, last_report = t0;
	uint64_t rng = 77, next_restart = t0 + ft_rand_range(&rng, 5000, 12000);
	bool kill9 = true;
	while (ft_now_ms() < end) {
		ft_sleep_ms(100);
		uint64_t now = ft_now_ms();
		if (now >= next_restart && now + 3000 < end) {
			peer_stop(kill9);
			ft_note("server process %s, restarting (%llu s into the run)",
				kill9 ? "killed (SIGKILL)" : "stopped (SIGTERM)",
				(unsigned long long)((now - t0) / 1000));
			kill9 = !kill9;
			peer_start();
			next_restart = ft_now_ms() + ft_rand_range(&rng, 5000, 12000);
		}
		if (now - last_report >= 30000) {
			uint64_t ok = 0;
			for (int i = 0; i < SOAK_WORKERS; i++)
				ok += atomic_load_explicit(&workers[i].ok_so_far,
							   memory_order_relaxed);
			ft_note("%llu s: %llu ops verified so far",
				(unsigned long long)((now - t0) / 1000), (unsigned long long)ok);
			last_report = now;
		}
	}
	atomic_store(&stop_flag, true);
	for (int i = 0; i < SOAK_WORKERS; i++)
		pthread_join(workers[i].thr, NULL);

	/* Totals. */
	struct ft_counts tot = {0};
	uint64_t connects = 0, cfail = 0, closes = 0, idles = 0;
	for (int i = 0; i < SOAK_WORKERS; i++) {
		struct worker *w = &workers[i];
		for (int k = 0; k < FT_NKINDS; k++) {
			tot.ok[k] += w->counts.ok[k];
			tot.corrupt[k] += w->counts.corrupt[k];
			tot.failed[k] += w->counts.failed[k];
		}
		tot.bytes_ok += w->counts.bytes_ok;
		for (int e = 0; e < 16 && w->counts.err_count[e]; e++)
			for (uint64_t n = 0; n < w->counts.err_count[e]; n++)
				ft_counts_add_err(&tot, w->counts.err_code[e]);
		connects += w->connects;
		cfail += w->connect_failures;
		closes += w->random_closes;
		idles += w->idles;
		FT_EXPECT(w->idle_ok, "worker %d: operations did not complete at the end", i);
		FT_EXPECT(w->lost == 0, "worker %d: %llu completions lost", i,
			  (unsigned long long)w->lost);
		FT_EXPECT(w->bogus == 0, "worker %d: %llu duplicate completions", i,
			  (unsigned long long)w->bogus);
		if (w->connect_failures) {
			char who[48];
			snprintf(who, sizeof(who), "worker %d connect failures", i);
			ft_counts_print(&w->connect_errs, who);
		}
	}
	ft_counts_print(&tot, "soak ops");
	ft_note("soak: %llu connects (%llu failed), %llu closes with ops in flight, %llu idle "
		"periods, server process restarts: %llu SIGKILL + %llu SIGTERM",
		(unsigned long long)connects, (unsigned long long)cfail,
		(unsigned long long)closes, (unsigned long long)idles,
		(unsigned long long)restarts_kill, (unsigned long long)restarts_term);
	FT_EXPECT(ft_counts_total(&tot, 1) == 0, "%llu ops delivered wrong bytes",
		  (unsigned long long)ft_counts_total(&tot, 1));
	for (int k = 0; k < 4; k++)
		FT_EXPECT(tot.ok[k] > 0, "no %s ever succeeded", ft_kind_names[k]);

	peer_stop(false);
	stats_line("client ctx", cctx);
	struct ft_service_stats sst;
	ft_service_get_stats(svc, &sst);
	ft_note("in-process server: accepted %llu, verified %llu ok / %llu bad, endpoint "
		"failures %llu", (unsigned long long)sst.accepted,
		(unsigned long long)sst.verified_ok, (unsigned long long)sst.verified_bad,
		(unsigned long long)sst.ep_failures);
	FT_EXPECT(sst.verified_bad == 0, "the in-process server received wrong bytes");
	int problems = ft_service_destroy(svc, 20000);
	FT_EXPECT(problems == 0, "in-process server: %d lost or duplicate completions", problems);
	stats_line("server ctx", sctx);
	for (int i = 0; i < SOAK_WORKERS; i++)
		FT_EXPECT(ferry_cq_destroy(workers[i].cq) == 0, "worker %d: cq not empty", i);
	FT_EXPECT(ft_ctx_clean(cctx, "client ctx", 10000), "client context leaked");
	FT_EXPECT(ft_ctx_clean(sctx, "server ctx", 10000), "server context leaked");
	ferry_ctx_destroy(cctx);
	ferry_ctx_destroy(sctx);
	FT_EXPECT(peer_unclean == 0, "%llu server process runs ended unclean",
		  (unsigned long long)peer_unclean);
	ft_note("soak took %llu s", (unsigned long long)((ft_now_ms() - t0) / 1000));
	return ft_finish("soak");
}
