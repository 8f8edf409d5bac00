/*
 * faults_proxy.c - ferry client -> fault proxy -> ferry server, over tcp:// on
 * loopback, one fault per case:
 *
 *   faults_proxy CASE        (CASE: see the table at the end of this file)
 *
 * Every case checks the same invariants besides its own: every ferry operation
 * completes exactly once (the ledger in ft_util.c), every logical operation either
 * completes with its bytes verified at both ends or fails with an error code, no wait
 * is unbounded, and at the end both contexts are clean (no endpoint, region or
 * operation left) and the server lost no completion either.
 *
 * Probe timing comes from the environment; cases about dead peers set
 * FERRY_PROBE_INTERVAL_MS=200 and FERRY_PROBE_MISSES=3 themselves (unless already
 * set), so a peer is declared dead after about (3 + 1) * 200 ms of silence. Bounds
 * on detection add FT_SLACK_MS for a loaded 2-core machine and sanitizer builds:
 * they catch a hang or a missed detection, they are not performance thresholds.
 */
#define _GNU_SOURCE
#include "fault_proxy.h"
#include "ft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FT_SLACK_MS 1500
#define MiB (1ull << 20)
#define KiB (1ull << 10)

struct world {
	struct ferry_ctx *sctx, *cctx;
	struct ft_service *svc;
	struct fp_proxy *px;
	char uri[64];
	struct ft_tab tab;
	struct ft_counts counts;
	bool allow_bad; /* corruption cases: the server may see wrong bytes */
};

/* Outcomes of logical ops that finished after `since` (set by a case). */
#define REC_MAX 4096
static struct rec {
	enum ft_kind kind;
	int status, outcome;
	uint64_t len, done_ns;
} recs[REC_MAX];
static unsigned nrecs;
static uint64_t rec_since_ns = UINT64_MAX;

static void on_lop(struct ft_tab *t, struct ft_lop *l)
{
	(void)t;
	if (l->kind >= FT_INFO || l->t_done_ns < rec_since_ns || nrecs >= REC_MAX)
		return;
	recs[nrecs++] = (struct rec){.kind = l->kind, .status = l->status,
				     .outcome = l->outcome, .len = l->len,
				     .done_ns = l->t_done_ns};
}

static void rec_start(void)
{
	nrecs = 0;
	rec_since_ns = ft_now_ns();
}

static void env_default(const char *name, const char *value)
{
	setenv(name, value, 0);
}

static void probes_fast(void)
{
	env_default("FERRY_PROBE_INTERVAL_MS", "200");
	env_default("FERRY_PROBE_MISSES", "3");
}

/* Time a dead peer takes to be declared dead, from the last input. */
static uint64_t probe_window_ms(struct ferry_ctx *ctx)
{
	const struct ferry_config *cfg = ferry_ctx_config(ctx);

	return (uint64_t)(cfg->probe_misses + 1) * cfg->probe_interval_ms;
}

static void w_open(struct world *w, uint64_t ro_len, uint64_t wr_max)
{
	/* w_check_healthy's sessions ask for 4 x 256 KiB */
	struct ft_service_cfg scfg = {.ro_len = ro_len < 1 * MiB ? 1 * MiB : ro_len,
				      .wr_max = wr_max < 1 * MiB ? 1 * MiB : wr_max};
	const char *colon;

	memset(w, 0, sizeof(*w));
	w->sctx = ft_ctx("tcp", NULL, NULL);
	w->cctx = ft_ctx("tcp", NULL, NULL);
	FT_ASSERT_RC(ft_service_create(w->sctx, &scfg, &w->svc), 0);
	FT_ASSERT_RC(ft_service_start_thread(w->svc), 0);
	colon = strrchr(ft_service_addr(w->svc), ':');
	FT_ASSERT(colon, "service address %s", ft_service_addr(w->svc));
	FT_ASSERT_RC(fp_start("127.0.0.1", (uint16_t)atoi(colon + 1), &w->px), 0);
	fp_uri(w->px, w->uri, sizeof(w->uri));
	ft_tab_init(&w->tab, w->cctx, NULL);
	w->tab.counts = &w->counts;
	w->tab.on_lop = on_lop;
	ft_note("server %s, proxy %s", ft_service_addr(w->svc), w->uri);
}

static int w_connect(struct world *w, bool pooled, struct ferry_ep **ep)
{
	struct ferry_connect_attr ca = {.flags = pooled ? 0 : FERRY_CONNECT_PRIVATE,
					.timeout_ms = 5000};

	return ferry_connect(w->cctx, w->uri, &ca, ep);
}

/* A ready session through the proxy (asserts). */
static struct ft_sess *w_sess(struct world *w, bool pooled, const struct ft_load *load)
{
	static uint64_t seed = 1000;
	struct ferry_ep *ep;
	struct ft_sess *s;

	FT_ASSERT_RC(w_connect(w, pooled, &ep), 0);
	ft_sess_open(&w->tab, ep, load, ++seed, &s);
	FT_ASSERT_RC(ft_sess_wait_ready(s, 10000), 0);
	return s;
}

static void w_service_stats(struct world *w, struct ft_service_stats *st)
{
	ft_service_get_stats(w->svc, st);
}

static void w_dump(struct world *w, const char *why)
{
	struct ferry_stats cs, ss;
	struct ft_service_stats sst;

	ferry_stats_get(w->cctx, NULL, &cs);
	ferry_stats_get(w->sctx, NULL, &ss);
	w_service_stats(w, &sst);
	ft_note("dump (%s): client eps_open %llu ops %llu/%llu; server eps_open %llu ops "
		"%llu/%llu; service conns_live %llu accepted %llu", why,
		(unsigned long long)cs.eps_open, (unsigned long long)cs.ops_posted,
		(unsigned long long)cs.ops_completed, (unsigned long long)ss.eps_open,
		(unsigned long long)ss.ops_posted, (unsigned long long)ss.ops_completed,
		(unsigned long long)sst.conns_live, (unsigned long long)sst.accepted);
	fp_dump(w->px, 12);
}

/* Waits (driving the client) until the server has no endpoint left. */
static bool w_server_idle(struct world *w, int timeout_ms)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;
	struct ft_service_stats st;

	for (;;) {
		w_service_stats(w, &st);
		if (st.conns_live == 0)
			return true;
		if (ft_now_ms() >= end) {
			ft_ctx_stuck_exit(w->sctx, "server");
			w_dump(w, "server still holds connections");
			return false;
		}
		ft_tab_poll(&w->tab, 10);
	}
}

/* Drives the client until the proxy moved at least n bytes in direction dir. */
static bool w_wait_bytes(struct world *w, int dir, uint64_t n, int timeout_ms)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;
	struct fp_stats st;

	for (;;) {
		fp_get_stats(w->px, &st);
		if (st.bytes[dir] >= n)
			return true;
		if (ft_now_ms() >= end)
			return false;
		ft_tab_poll(&w->tab, 5);
	}
}

/* A fresh connection runs n verified ops without a single failure. */
static void w_check_healthy(struct world *w, unsigned n, const char *what)
{
	struct ft_load load;
	struct ft_counts before = w->counts;

	ft_load_default(&load);
	load.max_msg = 1 * MiB;
	load.max_rma = 256 * KiB;
	struct ft_sess *s = w_sess(w, false, &load);
	FT_EXPECT(ft_run(&w->tab, &s, 1, n, 20000), "%s: ops did not finish", what);
	FT_EXPECT(ft_counts_total(&w->counts, 0) - ft_counts_total(&before, 0) == n,
		  "%s: %llu of %u ops verified", what,
		  (unsigned long long)(ft_counts_total(&w->counts, 0) -
				       ft_counts_total(&before, 0)),
		  n);
	ft_sess_close(s, true, true);
	ft_note("%s: a new connection works (%u verified ops)", what, n);
}

static void w_close(struct world *w)
{
	FT_EXPECT(ft_tab_wait_idle(&w->tab, 20000, "client"), "client ops did not finish");
	uint64_t lost = ft_tab_fini(&w->tab, "client");
	FT_EXPECT(lost == 0, "client: %llu operations never completed",
		  (unsigned long long)lost);
	FT_EXPECT(w->tab.bogus == 0, "client: %llu duplicate completions",
		  (unsigned long long)w->tab.bogus);
	struct ft_service_stats sst;
	w_service_stats(w, &sst);
	FT_EXPECT(w->allow_bad || sst.verified_bad == 0,
		  "server: %llu complete messages or writes arrived with wrong bytes",
		  (unsigned long long)sst.verified_bad);
	int problems = ft_service_destroy(w->svc, 10000);
	FT_EXPECT(problems == 0, "server: %d lost or duplicate completions", problems);
	FT_EXPECT(ft_ctx_clean(w->cctx, "client ctx", 5000), "client context leaked");
	FT_EXPECT(ft_ctx_clean(w->sctx, "server ctx", 5000), "server context leaked");
	ft_counts_print(&w->counts, "client totals");
	ferry_ctx_destroy(w->cctx);
	ferry_ctx_destroy(w->sctx);
	struct fp_stats ps;
	fp_get_stats(w->px, &ps);
	ft_note("proxy: %llu connections, c2s %llu bytes, s2c %llu bytes, %llu+%llu flipped, "
		"%llu+%llu dropped, %llu cuts",
		(unsigned long long)ps.conns_accepted, (unsigned long long)ps.bytes[0],
		(unsigned long long)ps.bytes[1], (unsigned long long)ps.flips[0],
		(unsigned long long)ps.flips[1], (unsigned long long)ps.dropped[0],
		(unsigned long long)ps.dropped[1], (unsigned long long)ps.cuts);
	fp_stop(w->px);
}

/* Every op that finished since rec_start() failed, with `want` if want != 0. */
static void check_all_failed(int want, const char *what)
{
	unsigned bad = 0;

	for (unsigned i = 0; i < nrecs; i++) {
		struct rec *r = &recs[i];
		if (r->outcome == 1)
			ft_fail_at(__FILE__, __LINE__, false,
				   "%s: %s of %llu bytes delivered wrong bytes as success", what,
				   ft_kind_names[r->kind], (unsigned long long)r->len);
		else if (r->outcome == 0 || (want && r->status != want))
			bad++;
	}
	FT_EXPECT(bad == 0, "%s: %u of %u ops in flight did not fail with %s", what, bad,
		  nrecs, want ? ft_err(want) : "an error");
}

static void print_recs(const char *what)
{
	for (unsigned i = 0; i < nrecs && i < 12; i++)
		ft_note("%s: %s %llu bytes -> %s %s after %.0f ms", what,
			ft_kind_names[recs[i].kind], (unsigned long long)recs[i].len,
			recs[i].outcome == 0 ? "ok" : recs[i].outcome == 1 ? "CORRUPT" : "failed",
			ft_err(recs[i].status),
			(double)(recs[i].done_ns - rec_since_ns) / 1e6);
}

/* ------------------------------------------------------------------ clean paths */

static void case_passthrough(void)
{
	struct world w;
	struct ft_load load;

	w_open(&w, 32 * MiB, 4 * 32 * MiB);
	ft_load_default(&load);
	load.max_msg = load.max_rma = 32 * MiB;
	load.small_pct = 70;
	struct ft_sess *ss[2] = {w_sess(&w, false, &load), w_sess(&w, true, &load)};
	/* The largest sizes of each kind first, then random sizes. */
	for (int k = 0; k < 4; k++)
		FT_ASSERT_RC(ft_sess_post(ss[k % 2], (enum ft_kind)k, 32 * MiB), 0);
	FT_EXPECT(ft_run(&w.tab, ss, 2, 80, 120000), "ops did not finish");
	FT_EXPECT(ft_counts_total(&w.counts, 1) == 0 && ft_counts_total(&w.counts, 2) == 0,
		  "a clean proxy saw corrupt or failed ops");
	FT_EXPECT(ft_counts_total(&w.counts, 0) == 84, "%llu of 84 ops verified",
		  (unsigned long long)ft_counts_total(&w.counts, 0));
	ft_sess_close(ss[0], true, true);
	ft_sess_close(ss[1], false, true);
	w_close(&w);
}

static void case_delay(void)
{
	struct world w;
	struct ft_load load;
	struct fp_dir_cfg d = {.delay_ms = 2, .chunk_max = 3000, .chunk_random = 1,
			       .seed = 42};

	w_open(&w, 8 * MiB, 4 * 2 * MiB);
	/* Every chunk held 2 ms and cut at random sizes: frames split everywhere. */
	fp_set_defaults(w.px, &d, &d);
	ft_load_default(&load);
	load.max_msg = load.max_rma = 2 * MiB;
	struct ft_sess *s = w_sess(&w, false, &load);
	FT_EXPECT(ft_run(&w.tab, &s, 1, 60, 60000), "ops did not finish");
	FT_EXPECT(ft_counts_total(&w.counts, 0) == 60, "%llu of 60 ops verified",
		  (unsigned long long)ft_counts_total(&w.counts, 0));
	ft_sess_close(s, true, true);
	w_close(&w);
}

/*
 * Opens a world behind a proxy throttled to rate_bps each way, with fast probes, and a
 * session whose ops are at most max bytes; posts one op of each kind (send, recv,
 * write, read) of len bytes.
 */
static struct ft_sess *throttled_burst(struct world *w, uint64_t rate_bps, uint64_t max,
				       uint64_t len)
{
	struct fp_dir_cfg d = {.rate_bps = rate_bps};
	struct ft_load load;

	probes_fast();
	w_open(w, 2 * max, 4 * max);
	fp_set_defaults(w->px, &d, &d);
	ft_load_default(&load);
	load.max_msg = load.max_rma = max;
	load.small_pct = 100;
	struct ft_sess *s = w_sess(w, false, &load);
	for (int k = 0; k < 4; k++)
		FT_ASSERT_RC(ft_sess_post(s, (enum ft_kind)k, len), 0);
	return s;
}

/* Fails the case if either side declared its peer dead; fills both sides' stats. */
static void expect_none_dead(struct world *w, struct ferry_stats *cs, struct ferry_stats *ss)
{
	ferry_stats_get(w->cctx, NULL, cs);
	ferry_stats_get(w->sctx, NULL, ss);
	FT_EXPECT(cs->peers_dead == 0 && ss->peers_dead == 0,
		  "a slow but live peer was declared dead (client %llu, server %llu)",
		  (unsigned long long)cs->peers_dead, (unsigned long long)ss->peers_dead);
}

static void case_throttle(void)
{
	struct world w;
	struct ferry_stats cs, ss;
	uint64_t t0 = ft_now_ms();
	/* One 3 MiB frame alone takes longer than the probe window at this rate. */
	struct ft_sess *s = throttled_burst(&w, 4000000, 4 * MiB, 3 * MiB);

	FT_EXPECT(ft_run(&w.tab, &s, 1, 20, 60000), "ops did not finish");
	ft_note("throttled to 4 MB/s each way: 24 ops, 12 MiB in %llu ms (probe window %llu ms)",
		(unsigned long long)(ft_now_ms() - t0),
		(unsigned long long)probe_window_ms(w.cctx));
	FT_EXPECT(ft_counts_total(&w.counts, 0) == 24, "%llu of 24 ops verified",
		  (unsigned long long)ft_counts_total(&w.counts, 0));
	expect_none_dead(&w, &cs, &ss);
	ft_sess_close(s, true, true);
	w_close(&w);
}

/*
 * A slow reader: once the streaming side wrote its last byte it hears nothing from
 * its own writes, and its probes wait behind everything the sockets and the proxy
 * still buffer; at 1 MB/s that takes longer than the probe window to drain. Only
 * the reader's beats (it reads, and has told the peer nothing for an interval)
 * keep the streaming side from declaring it dead. Both directions stream.
 */
static void case_slow_reader(void)
{
	struct world w;
	struct ferry_stats cs, ss;
	uint64_t t0 = ft_now_ms();
	struct ft_sess *s = throttled_burst(&w, 1000000, 2 * MiB, 2 * MiB);

	FT_EXPECT(ft_tab_wait_idle(&w.tab, 60000, "slow_reader"), "ops hang");
	expect_none_dead(&w, &cs, &ss);
	ft_note("1 MB/s each way: 4 x 2 MiB in %llu ms (probe window %llu ms); beats sent: "
		"client %llu, server %llu",
		(unsigned long long)(ft_now_ms() - t0),
		(unsigned long long)probe_window_ms(w.cctx), (unsigned long long)cs.beats_sent,
		(unsigned long long)ss.beats_sent);
	FT_EXPECT(ft_counts_total(&w.counts, 0) == 4 && ft_counts_total(&w.counts, 2) == 0,
		  "a slow but live reader failed ops");
	FT_EXPECT(cs.beats_sent > 0 && ss.beats_sent > 0,
		  "a side that read for seconds sent no beat (client %llu, server %llu)",
		  (unsigned long long)cs.beats_sent, (unsigned long long)ss.beats_sent);
	ft_sess_close(s, true, true);
	w_close(&w);
}

static void case_stall_short(void)
{
	struct world w;
	struct ft_load load;

	probes_fast();
	w_open(&w, 16 * MiB, 4 * 8 * MiB);
	ft_load_default(&load);
	load.max_msg = load.max_rma = 8 * MiB;
	load.small_pct = 0;
	struct ft_sess *s = w_sess(&w, false, &load);
	uint32_t stall = (uint32_t)probe_window_ms(w.cctx) * 3 / 8; /* 300 ms of 800 */
	for (int k = 0; k < 4; k++)
		FT_ASSERT_RC(ft_sess_post(s, (enum ft_kind)k, 8 * MiB), 0);
	FT_ASSERT(w_wait_bytes(&w, FP_C2S, 1 * MiB, 10000), "no traffic");
	fp_stall(w.px, FP_BOTH, stall);
	ft_note("stalled both directions for %u ms", stall);
	FT_EXPECT(ft_tab_wait_idle(&w.tab, 30000, "stall_short"), "ops hang");
	FT_EXPECT(ft_counts_total(&w.counts, 0) == 4 && ft_counts_total(&w.counts, 2) == 0,
		  "a stall shorter than the probe window failed ops");
	FT_EXPECT(ft_run(&w.tab, &s, 1, 12, 30000), "ops did not finish");
	ft_sess_close(s, true, true);
	w_close(&w);
}

/* ------------------------------------------------------------------ dead peers */

/*
 * Big ops in flight on a pooled endpoint, then `fault` makes the peer silent. Every
 * op fails with want (0 = any error) within the probe window, the endpoint leaves the
 * pool, the server drops its side too, and a new connect works afterwards.
 */
static void dead_peer_case(const char *what, void (*fault)(struct world *w), int want,
			   uint32_t fault_ms)
{
	struct world w;
	struct ft_load load;
	struct ferry_stats st;
	struct ft_service_stats sst;

	probes_fast();
	w_open(&w, 16 * MiB, 4 * 16 * MiB);
	ft_load_default(&load);
	load.max_msg = load.max_rma = 16 * MiB;
	load.small_pct = 0;
	struct ft_sess *s = w_sess(&w, true, &load);
	struct ferry_ep *old = s->ep;
	uint64_t window = probe_window_ms(w.cctx);

	for (int k = 0; k < 4; k++)
		FT_ASSERT_RC(ft_sess_post(s, (enum ft_kind)k, 16 * MiB), 0);
	FT_ASSERT(w_wait_bytes(&w, FP_C2S, 1 * MiB, 10000), "no traffic");
	ferry_stats_get(w.cctx, NULL, &st);
	FT_EXPECT(st.eps_pooled == 1, "eps_pooled %llu before the fault",
		  (unsigned long long)st.eps_pooled);
	rec_start();
	uint64_t t0 = ft_now_ns();
	fault(&w);
	FT_EXPECT(ft_tab_wait_idle(&w.tab, (int)(window + FT_SLACK_MS + 3000), what),
		  "%s: ops in flight did not complete", what);
	uint64_t took = nrecs ? (recs[nrecs - 1].done_ns - t0) / 1000000 : 0;
	for (unsigned i = 0; i < nrecs; i++)
		if ((recs[i].done_ns - t0) / 1000000 > took)
			took = (recs[i].done_ns - t0) / 1000000;
	print_recs(what);
	ft_note("%s: %u ops in flight failed %llu ms after the fault (probe window %llu ms)",
		what, nrecs, (unsigned long long)took, (unsigned long long)window);
	FT_EXPECT(nrecs >= 1, "%s: no op was in flight at the fault", what);
	check_all_failed(want, what);
	FT_EXPECT(took <= window + FT_SLACK_MS, "%s: detection took %llu ms (window %llu ms)",
		  what, (unsigned long long)took, (unsigned long long)window);
	FT_EXPECT(ferry_ep_status(old) != 0 && (!want || ferry_ep_status(old) == want),
		  "%s: endpoint status %s, want %s", what, ft_err(ferry_ep_status(old)),
		  want ? ft_err(want) : "an error");
	ferry_stats_get(w.cctx, NULL, &st);
	FT_EXPECT(st.eps_pooled == 0, "%s: the failed endpoint is still pooled (%llu)", what,
		  (unsigned long long)st.eps_pooled);
	if (want == FERRY_EPEERDEAD)
		FT_EXPECT(st.peers_dead >= 1, "%s: peers_dead %llu", what,
			  (unsigned long long)st.peers_dead);

	/* The server side does not keep a dead connection either. */
	FT_EXPECT(w_server_idle(&w, (int)(window + FT_SLACK_MS + 1000)),
		  "%s: the server still holds the connection", what);
	w_service_stats(&w, &sst);
	ft_note("%s: server dropped its side (%llu endpoint failures, last %s)", what,
		(unsigned long long)sst.ep_failures, ft_err(sst.last_failure));

	/* After the fault, a pooled connect gets a fresh endpoint (the old one is still
	 * held by the session, so the pointers cannot coincide). */
	uint64_t elapsed = (ft_now_ns() - t0) / 1000000;
	if (fault_ms > elapsed)
		ft_sleep_ms((unsigned)(fault_ms - elapsed + 50));
	struct ferry_ep *fresh;
	FT_ASSERT_RC(w_connect(&w, true, &fresh), 0);
	FT_EXPECT(fresh != old, "%s: the pool handed out the dead endpoint", what);
	FT_EXPECT(ferry_ep_status(fresh) == 0, "%s: fresh endpoint status %s", what,
		  ft_err(ferry_ep_status(fresh)));
	struct ft_sess *s2;
	ft_sess_open(&w.tab, fresh, &load, 77, &s2);
	FT_ASSERT_RC(ft_sess_wait_ready(s2, 10000), 0);
	struct ft_counts before = w.counts;
	s2->load.small_pct = 70;
	s2->load.max_msg = s2->load.max_rma = 2 * MiB;
	FT_EXPECT(ft_run(&w.tab, &s2, 1, 16, 30000), "ops after reconnect did not finish");
	FT_EXPECT(ft_counts_total(&w.counts, 0) - ft_counts_total(&before, 0) == 16,
		  "%s: ops after the reconnect failed", what);
	ft_note("%s: reconnect after the fault works", what);
	ft_sess_close(s, true, false);
	ft_sess_close(s2, false, true);
	w_close(&w);
}

static uint32_t stall_ms = 2500;
static void fault_stall(struct world *w)
{
	fp_stall(w->px, FP_BOTH, stall_ms);
}
static void fault_drop_both(struct world *w)
{
	fp_silence(w->px, FP_BOTH, FP_SILENCE_DROP);
}
static void fault_drop_s2c(struct world *w)
{
	fp_silence(w->px, FP_DIR_MASK(FP_S2C), FP_SILENCE_DROP);
}
static void fault_drop_c2s(struct world *w)
{
	fp_silence(w->px, FP_DIR_MASK(FP_C2S), FP_SILENCE_DROP);
}
static void fault_freeze_both(struct world *w)
{
	fp_silence(w->px, FP_BOTH, FP_SILENCE_FREEZE);
}

static void case_stall_long(void)
{
	dead_peer_case("stall_long", fault_stall, FERRY_EPEERDEAD, stall_ms);
}
static void case_silent_both(void)
{
	dead_peer_case("silent_both", fault_drop_both, FERRY_EPEERDEAD, 0);
}
static void case_silent_s2c(void)
{
	dead_peer_case("silent_s2c", fault_drop_s2c, FERRY_EPEERDEAD, 0);
}
static void case_silent_c2s(void)
{
	/* The server hears nothing and declares the client dead; the client then sees
	 * the server's close, not silence: any error will do. */
	dead_peer_case("silent_c2s", fault_drop_c2s, 0, 0);
}
static void case_freeze_both(void)
{
	dead_peer_case("freeze_both", fault_freeze_both, FERRY_EPEERDEAD, 0);
}

/*
 * A silent peer whose kernel keeps swallowing data (the proxy reads and discards)
 * while the application keeps sending: the sender's socket never fills, so only the
 * eager credit stops it; the peer must still be found dead, within the probe window
 * once the sender has nothing left it may write.
 */
static void case_silent_stream(void)
{
	struct world w;
	struct ft_load load;
	struct ferry_stats st;

	probes_fast();
	w_open(&w, 4 * MiB, 64 * 64 * KiB);
	ft_load_default(&load);
	load.max_msg = 60 * KiB;
	load.max_rma = 64 * KiB;
	load.w[FT_RECV] = load.w[FT_WRITE] = load.w[FT_READ] = 0; /* sends only */
	load.window = 64;
	struct ft_sess *s = w_sess(&w, false, &load);
	uint64_t window = probe_window_ms(w.cctx);

	FT_ASSERT(ft_run(&w.tab, &s, 1, 64, 10000), "warm-up sends did not finish");
	fp_silence(w.px, FP_BOTH, FP_SILENCE_DROP);
	rec_start();
	uint64_t t0 = ft_now_ms(), posted = 0;
	/* Keep the window full of sends until the session fails. */
	while (s->state == FT_SESS_READY && ft_now_ms() < t0 + 30000) {
		while (ft_sess_can_post(s)) {
			ft_sess_post_random(s);
			posted++;
		}
		ft_tab_poll(&w.tab, 5);
	}
	uint64_t took = ft_now_ms() - t0;
	struct fp_stats ps;
	fp_get_stats(w.px, &ps);
	ft_note("silent_stream: %llu sends posted into the black hole (%llu bytes swallowed); "
		"session failed with %s after %llu ms (probe window %llu ms)",
		(unsigned long long)posted, (unsigned long long)ps.dropped[FP_C2S],
		ft_err(s->status), (unsigned long long)took, (unsigned long long)window);
	FT_EXPECT(s->state == FT_SESS_FAILED, "silent_stream: the peer was never found dead");
	FT_EXPECT(ft_tab_wait_idle(&w.tab, 5000, "silent_stream"), "ops hang");
	ferry_stats_get(w.cctx, NULL, &st);
	FT_EXPECT(st.peers_dead >= 1, "silent_stream: peers_dead %llu",
		  (unsigned long long)st.peers_dead);
	check_all_failed(0, "silent_stream");
	FT_EXPECT(took <= 4 * window + FT_SLACK_MS, "silent_stream: detection took %llu ms",
		  (unsigned long long)took);
	ft_sess_close(s, true, false);
	FT_EXPECT(w_server_idle(&w, (int)(window + FT_SLACK_MS)), "server holds the connection");
	w_check_healthy(&w, 12, "silent_stream");
	w_close(&w);
}

/* ------------------------------------------------------------------ cuts */

static void cut_case(enum fp_dir dir, enum fp_cut how, const char *what)
{
	struct world w;
	struct ft_load load;

	probes_fast();
	w_open(&w, 16 * MiB, 4 * 16 * MiB);
	ft_load_default(&load);
	load.max_msg = load.max_rma = 16 * MiB;
	struct ft_sess *s = w_sess(&w, false, &load);
	uint64_t window = probe_window_ms(w.cctx);

	FT_ASSERT_RC(ft_sess_post(s, FT_SEND, 16 * MiB), 0);
	FT_ASSERT_RC(ft_sess_post(s, FT_RECV, 16 * MiB), 0);
	FT_ASSERT_RC(ft_sess_post(s, FT_WRITE, 8 * MiB), 0);
	FT_ASSERT_RC(ft_sess_post(s, FT_READ, 8 * MiB), 0);
	FT_ASSERT(w_wait_bytes(&w, (int)dir, 512 * KiB, 10000), "no traffic");
	rec_start();
	/* 1 MiB + 13 bytes further: in the middle of a payload, never on a boundary. */
	fp_cut(w.px, dir, 1 * MiB + 13, how);
	struct fp_stats ps;
	uint64_t end = ft_now_ms() + 10000;
	do {
		ft_tab_poll(&w.tab, 2);
		fp_get_stats(w.px, &ps);
	} while (ps.cuts == 0 && w.tab.lops_live > 0 && ft_now_ms() < end);
	FT_ASSERT(ps.cuts == 1, "%s: the cut did not happen (%llu)", what,
		  (unsigned long long)ps.cuts);
	uint64_t t0 = ft_now_ns();
	FT_EXPECT(ft_tab_wait_idle(&w.tab, (int)(window + FT_SLACK_MS + 3000), what),
		  "%s: ops did not complete", what);
	uint64_t took = 0;
	unsigned failed = 0, ok = 0;
	for (unsigned i = 0; i < nrecs; i++) {
		if (recs[i].done_ns > t0 && (recs[i].done_ns - t0) / 1000000 > took)
			took = (recs[i].done_ns - t0) / 1000000;
		if (recs[i].outcome == 2)
			failed++;
		else if (recs[i].outcome == 0)
			ok++;
		FT_EXPECT(recs[i].outcome != 1, "%s: %s of %llu bytes delivered wrong bytes",
			  what, ft_kind_names[recs[i].kind], (unsigned long long)recs[i].len);
		FT_EXPECT(recs[i].outcome != 2 || recs[i].status < 0,
			  "%s: failed without an error code", what);
	}
	print_recs(what);
	ft_note("%s: %u ops failed, %u completed verified, last one %llu ms after the cut",
		what, failed, ok, (unsigned long long)took);
	FT_EXPECT(failed >= 1, "%s: nothing failed after a cut mid-frame", what);
	FT_EXPECT(took <= window + FT_SLACK_MS, "%s: failing took %llu ms", what,
		  (unsigned long long)took);
	FT_EXPECT(ferry_ep_status(s->ep) != 0, "%s: endpoint still usable after a cut", what);
	FT_EXPECT(w_server_idle(&w, (int)(window + FT_SLACK_MS)),
		  "%s: the server still holds the connection", what);
	w_check_healthy(&w, 12, what);
	ft_sess_close(s, true, false);
	w_close(&w);
}

static void case_cut_c2s_close(void) { cut_case(FP_C2S, FP_CUT_CLOSE, "cut_c2s_close"); }
static void case_cut_c2s_rst(void) { cut_case(FP_C2S, FP_CUT_RST, "cut_c2s_rst"); }
static void case_cut_s2c_close(void) { cut_case(FP_S2C, FP_CUT_CLOSE, "cut_s2c_close"); }
static void case_cut_s2c_rst(void) { cut_case(FP_S2C, FP_CUT_RST, "cut_s2c_rst"); }

/* Cuts at random offsets (handshake included), random direction and kind. */
static void case_cut_random(void)
{
	struct world w;
	struct ft_load load;
	uint64_t rng = 0xC0FFEE;
	unsigned iters = 16, conn_failed = 0, clean = 0;

	probes_fast();
	w_open(&w, 4 * MiB, 4 * 2 * MiB);
	ft_load_default(&load);
	load.max_msg = load.max_rma = 2 * MiB;
	for (unsigned it = 0; it < iters; it++) {
		struct fp_dir_cfg d[2] = {{0}};
		int dir = (int)(ft_rand(&rng) % 2);
		uint64_t off = it < 4 ? ft_rand_range(&rng, 0, 200) : ft_rand_range(&rng, 0, 3 * MiB);
		struct ferry_ep *ep;
		struct ft_sess *s;

		d[dir].cut = ft_rand(&rng) % 2 ? FP_CUT_RST : FP_CUT_CLOSE;
		d[dir].cut_after = off;
		fp_push_conn(w.px, &d[0], &d[1]);
		int rc = w_connect(&w, false, &ep);
		if (rc < 0) {
			conn_failed++;
			ft_note("cut %s at %llu: connect failed with %s", dir ? "s2c" : "c2s",
				(unsigned long long)off, ft_err(rc));
			continue;
		}
		ft_sess_open(&w.tab, ep, &load, ft_rand(&rng), &s);
		rc = ft_sess_wait_ready(s, 5000);
		if (rc == 0) {
			ft_run(&w.tab, &s, 1, 40, 10000);
			if (s->state == FT_SESS_READY)
				clean++;
		}
		FT_EXPECT(ft_tab_wait_idle(&w.tab, 10000, "cut_random"), "ops hang");
		ft_note("cut %s at %llu (%s): session %s, %llu ops ok, %llu failed",
			dir ? "s2c" : "c2s", (unsigned long long)off,
			d[dir].cut == FP_CUT_RST ? "rst" : "fin",
			s->state == FT_SESS_READY ? "survived" : ft_err(s->status),
			(unsigned long long)s->done, (unsigned long long)s->failed);
		ft_sess_close(s, true, s->state == FT_SESS_READY);
		FT_EXPECT(w_server_idle(&w, 5000), "server still holds the connection");
	}
	FT_EXPECT(ft_counts_total(&w.counts, 1) == 0, "cuts delivered wrong bytes");
	ft_note("%u cuts: %u during connect, %u past all traffic", iters, conn_failed, clean);
	w_check_healthy(&w, 12, "cut_random");
	w_close(&w);
}

/* ------------------------------------------------------------------ corruption */

#define HELLO_LEN 72 /* 32-byte header + 40-byte HELLO extension, each way */

static void corrupt_header_case(enum fp_dir dir, const char *what)
{
	struct world w;
	struct ft_load load;
	struct fp_dir_cfg d[2] = {{0}};
	struct ferry_stats st;
	struct ft_service_stats sst;
	struct ferry_ep *ep;
	struct ft_sess *s;

	w_open(&w, 1 * MiB, 4 * 1 * MiB);
	ft_load_default(&load);
	load.max_msg = load.max_rma = 1 * MiB;
	/* The magic of the first frame after the handshake. */
	d[dir].flips[0] = (struct fp_flip){.offset = HELLO_LEN, .xor_mask = 0x5a};
	d[dir].nflips = 1;
	fp_push_conn(w.px, &d[0], &d[1]);
	uint64_t mark = ft_logtee_mark();
	FT_ASSERT_RC(w_connect(&w, false, &ep), 0);
	ft_sess_open(&w.tab, ep, &load, 5, &s);
	int rc = ft_sess_wait_ready(s, 10000);
	ft_note("%s: session on the corrupted connection: %s, endpoint status %s", what,
		ft_err(rc), ft_err(ferry_ep_status(ep)));
	FT_EXPECT(rc < 0 && rc != FERRY_ETIMEDOUT, "%s: expected a failure, got %s", what,
		  ft_err(rc));
	FT_EXPECT(ft_tab_wait_idle(&w.tab, 5000, what), "ops hang");
	FT_EXPECT(w_server_idle(&w, 5000), "%s: server still holds the connection", what);
	w_service_stats(&w, &sst);
	if (dir == FP_C2S) {
		/* The server read the bad frame, possibly before the application accepted
		 * the endpoint (then the listener drops it and the service never sees it). */
		FT_EXPECT(sst.ep_failures == 0 || sst.last_failure == FERRY_EPROTO,
			  "%s: server endpoint failed with %s", what, ft_err(sst.last_failure));
		ferry_stats_get(w.sctx, NULL, &st);
		FT_EXPECT(st.eps_failed >= 1, "%s: server eps_failed %llu", what,
			  (unsigned long long)st.eps_failed);
		FT_EXPECT(st.protocol_errors >= 1, "%s: server protocol_errors %llu", what,
			  (unsigned long long)st.protocol_errors);
	} else {
		FT_EXPECT(ferry_ep_status(ep) == FERRY_EPROTO, "%s: client endpoint status %s",
			  what, ft_err(ferry_ep_status(ep)));
		FT_EXPECT(rc == FERRY_EPROTO, "%s: client op failed with %s", what, ft_err(rc));
		ferry_stats_get(w.cctx, NULL, &st);
		FT_EXPECT(st.protocol_errors >= 1, "%s: client protocol_errors %llu", what,
			  (unsigned long long)st.protocol_errors);
	}
	FT_EXPECT(ft_logtee_find(mark, "bad magic", 3000),
		  "%s: no log line names the bad frame", what);
	ft_sess_close(s, true, false);
	/* The rest of both contexts is unaffected. */
	w_check_healthy(&w, 20, what);
	w_close(&w);
}

static void case_corrupt_header_c2s(void) { corrupt_header_case(FP_C2S, "corrupt_header_c2s"); }
static void case_corrupt_header_s2c(void) { corrupt_header_case(FP_S2C, "corrupt_header_s2c"); }

static void case_corrupt_handshake(void)
{
	struct world w;

	w_open(&w, 1 * MiB, 4 * 1 * MiB);
	for (int dir = 0; dir < 2; dir++) {
		struct fp_dir_cfg d[2] = {{0}};
		struct ferry_ep *ep;

		d[dir].flips[0] = (struct fp_flip){.offset = 0, .xor_mask = 0xff};
		d[dir].nflips = 1;
		fp_push_conn(w.px, &d[0], &d[1]);
		uint64_t t0 = ft_now_ms();
		int rc = w_connect(&w, false, &ep);
		ft_note("HELLO%s magic flipped: connect -> %s after %llu ms", dir ? "_ACK" : "",
			ft_err(rc), (unsigned long long)(ft_now_ms() - t0));
		FT_EXPECT(rc < 0, "connect succeeded over a corrupted handshake");
		if (rc == 0)
			ferry_ep_close(ep);
		FT_EXPECT(rc == FERRY_EPROTO || dir == FP_C2S,
			  "corrupted HELLO_ACK: connect returned %s, want EPROTO", ft_err(rc));
		FT_EXPECT(w_server_idle(&w, 6000), "server still holds the connection");
	}
	w_check_healthy(&w, 12, "corrupt_handshake");
	w_close(&w);
}

/*
 * One byte flipped at each offset of the handshake frame and of the first frame
 * after it, in each direction: 2 x 104 connections at once, each running one op of
 * each kind with a deadline. Whatever a flip does, nothing may be delivered wrong,
 * hang or complete twice.
 */
static void case_corrupt_header_sweep(void)
{
	enum { NOFF = HELLO_LEN + 32 };
	struct world w;
	struct ft_load load;
	static struct ft_sess *ss[2][NOFF];
	static int conn_rc[2][NOFF];

	w_open(&w, 1 * MiB, 4 * 64 * KiB);
	ft_load_default(&load);
	load.max_msg = load.max_rma = 64 * KiB;
	load.window = 4;
	load.op_timeout_ms = 2000;
	uint64_t t0 = ft_now_ms();
	for (int dir = 0; dir < 2; dir++) {
		for (int off = 0; off < NOFF; off++) {
			struct fp_dir_cfg d[2] = {{0}};
			struct ferry_ep *ep;
			struct ferry_connect_attr ca = {.flags = FERRY_CONNECT_PRIVATE,
							.timeout_ms = 3000};

			d[dir].flips[0] = (struct fp_flip){.offset = (uint64_t)off, .xor_mask = 0x10};
			d[dir].nflips = 1;
			fp_push_conn(w.px, &d[0], &d[1]);
			conn_rc[dir][off] = ferry_connect(w.cctx, w.uri, &ca, &ep);
			if (conn_rc[dir][off] == 0)
				ft_sess_open(&w.tab, ep, &load, (uint64_t)(dir * 1000 + off), &ss[dir][off]);
			ft_tab_poll(&w.tab, 0);
		}
	}
	ft_note("sweep: %d connections in %llu ms", 2 * NOFF,
		(unsigned long long)(ft_now_ms() - t0));
	/* Each ready session gets one op of each kind, once. */
	uint64_t end = ft_now_ms() + 15000;
	bool posted[2][NOFF] = {{false}};
	while (ft_now_ms() < end) {
		bool opening = false;
		for (int dir = 0; dir < 2; dir++)
			for (int off = 0; off < NOFF; off++) {
				struct ft_sess *s = ss[dir][off];
				if (!s)
					continue;
				if (s->state == FT_SESS_OPENING)
					opening = true;
				if (s->state == FT_SESS_READY && !posted[dir][off]) {
					posted[dir][off] = true;
					for (int k = 0; k < 4; k++)
						ft_sess_post(s, (enum ft_kind)k, 0);
				}
			}
		if (!opening && w.tab.lops_live == 0)
			break;
		ft_tab_poll(&w.tab, 20);
	}
	FT_EXPECT(w.tab.lops_live == 0, "sweep: %llu ops still in flight after 15 s",
		  (unsigned long long)w.tab.lops_live);
	if (w.tab.lops_live)
		ft_tab_dump(&w.tab, "sweep", 16);

	/* Lines of 24 offsets per direction: offset:result. */
	ft_note("sweep legend: offset:result; C connect failed, S session (first op) failed, "
		"F a later op failed; offsets 0-31 HELLO header, 32-71 HELLO extension, 72-103 "
		"header of the first frame after the handshake");
	for (int dir = 0; dir < 2; dir++) {
		char line[1024];
		size_t o = 0;
		unsigned nok = 0, nconn = 0, nfail = 0;

		for (int off = 0; off < NOFF; off++) {
			struct ft_sess *s = ss[dir][off];
			const char *r;
			char buf[48];

			if (conn_rc[dir][off] < 0) {
				snprintf(buf, sizeof(buf), "C:%s", ferry_errname(conn_rc[dir][off]));
				r = buf;
				nconn++;
			} else if (s->state == FT_SESS_READY && s->failed == 0) {
				r = "ok";
				nok++;
			} else {
				snprintf(buf, sizeof(buf), "%s:%s",
					 s->state == FT_SESS_READY ? "F" : "S",
					 ferry_errname(s->status) ? ferry_errname(s->status) : "?");
				r = buf;
				nfail++;
			}
			o += (size_t)snprintf(line + o, sizeof(line) - o, " %d:%s", off, r);
			if (off % 24 == 23 || off == NOFF - 1) {
				ft_note("sweep %s:%s", dir ? "s2c" : "c2s", line);
				o = 0;
				line[0] = '\0';
			}
		}
		ft_note("sweep %s: %u unaffected, %u connects failed, %u failed later",
			dir ? "s2c" : "c2s", nok, nconn, nfail);
	}
	FT_EXPECT(ft_counts_total(&w.counts, 1) == 0,
		  "sweep: %llu ops delivered wrong bytes as success",
		  (unsigned long long)ft_counts_total(&w.counts, 1));
	for (int dir = 0; dir < 2; dir++)
		for (int off = 0; off < NOFF; off++)
			if (ss[dir][off])
				ft_sess_close(ss[dir][off], true, false);
	FT_EXPECT(ft_tab_wait_idle(&w.tab, 10000, "sweep close"), "ops hang after close");
	FT_EXPECT(w_server_idle(&w, 10000), "server still holds connections");
	w_check_healthy(&w, 12, "header_sweep");
	w_close(&w);
}

/*
 * Flipped payload bytes. ferry's TCP frames have no payload checksum (TCP's own
 * 16-bit checksum is all there is): a flipped payload byte is delivered as is. This
 * case documents that and checks only that nothing crashes, hangs or completes
 * twice; the application-level check (ft_check, ft_sum) is what notices.
 */
static void case_corrupt_payload(void)
{
	struct world w;
	struct ft_load load;
	struct {
		enum fp_dir dir;
		enum ft_kind kind;
		uint64_t len, at;
		unsigned n;
	} t[] = {
		{FP_C2S, FT_SEND, 8 * MiB, 4 * MiB, 1},   /* rendezvous: read response  */
		{FP_S2C, FT_RECV, 8 * MiB, 4 * MiB, 1},   /* rendezvous the other way   */
		{FP_C2S, FT_WRITE, 8 * MiB, 4 * MiB, 1},  /* WRITE payload              */
		{FP_S2C, FT_READ, 8 * MiB, 4 * MiB, 1},   /* READ_RESP payload          */
		{FP_C2S, FT_SEND, 50 * KiB, 1 * MiB + 5, 40}, /* eager messages          */
	};
	unsigned delivered = 0, failed = 0, injected = 0;

	w_open(&w, 8 * MiB, 8 * MiB);
	w.allow_bad = true;
	ft_load_default(&load);
	load.max_msg = load.max_rma = 8 * MiB;
	load.window = 1;
	for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
		struct fp_dir_cfg d[2] = {{0}};

		d[t[i].dir].flips[0] = (struct fp_flip){.offset = t[i].at, .xor_mask = 0x01};
		d[t[i].dir].nflips = 1;
		fp_push_conn(w.px, &d[0], &d[1]);
		struct ft_sess *s = w_sess(&w, false, &load);
		struct ft_counts before = w.counts;
		for (unsigned k = 0; k < t[i].n; k++) {
			if (ft_sess_post(s, t[i].kind, t[i].len) < 0)
				break;
			FT_EXPECT(ft_tab_wait_idle(&w.tab, 20000, "corrupt_payload"), "ops hang");
		}
		uint64_t c = ft_counts_total(&w.counts, 1) - ft_counts_total(&before, 1);
		uint64_t f = ft_counts_total(&w.counts, 2) - ft_counts_total(&before, 2);
		injected++;
		delivered += c ? 1 : 0;
		failed += f ? 1 : 0;
		ft_note("payload flip %s at stream offset %llu during %u x %s of %llu bytes: %llu "
			"op(s) reported success with a wrong byte, %llu failed",
			t[i].dir == FP_C2S ? "c2s" : "s2c", (unsigned long long)t[i].at, t[i].n,
			ft_kind_names[t[i].kind], (unsigned long long)t[i].len,
			(unsigned long long)c, (unsigned long long)f);
		ft_sess_close(s, true, false);
	}
	ft_note("known limit: %u of %u flipped payload bytes were delivered as success "
		"(no payload checksum on ferry's TCP path), %u made an op fail",
		delivered, injected, failed);
	FT_EXPECT(w_server_idle(&w, 5000), "server still holds connections");
	w_check_healthy(&w, 12, "corrupt_payload");
	w_close(&w);
}

/*
 * Random bit flips in both directions while a mixed load runs, reconnecting after
 * each failure: counts what happened; nothing may hang, crash or complete twice.
 * Phase 1 moves bulk data (flips land in payloads); phase 2 moves small messages
 * with a higher flip rate, so that headers get hit too.
 */
static void corrupt_random_phase(struct world *w, const char *what, uint64_t max,
				 unsigned small_pct, double rate, uint64_t target)
{
	struct ft_load load;
	struct fp_dir_cfg d = {.flip_rate = rate, .seed = 99 + target};
	struct ft_sess *s = NULL;
	struct ft_counts before = w->counts;
	struct fp_stats ps0, ps;
	uint64_t end, posted = 0, sessions = 0, rng = 5 + target;

	fp_get_stats(w->px, &ps0);
	fp_set_defaults(w->px, &d, &d);
	ft_load_default(&load);
	load.max_msg = load.max_rma = max;
	load.small_pct = small_pct;
	load.op_timeout_ms = 2000;
	end = ft_now_ms() + 30000;
	while (posted < target && ft_now_ms() < end) {
		if (!s || s->state == FT_SESS_FAILED) {
			struct ferry_ep *ep;
			if (s)
				ft_sess_close(s, true, false);
			s = NULL;
			if (w_connect(w, false, &ep) < 0)
				continue;
			ft_sess_open(&w->tab, ep, &load, ft_rand(&rng), &s);
			sessions++;
		}
		while (ft_sess_can_post(s) && posted < target) {
			ft_sess_post_random(s);
			posted++;
		}
		ft_tab_poll(&w->tab, 20);
	}
	FT_EXPECT(ft_tab_wait_idle(&w->tab, 15000, what), "%s: ops hang", what);
	if (s)
		ft_sess_close(s, true, false);
	FT_EXPECT(ft_tab_wait_idle(&w->tab, 5000, what), "%s: ops hang after close", what);
	fp_set_defaults(w->px, NULL, NULL);
	fp_get_stats(w->px, &ps);
	struct ft_counts c = w->counts;
	for (int k = 0; k < FT_NKINDS; k++) {
		c.ok[k] -= before.ok[k];
		c.corrupt[k] -= before.corrupt[k];
		c.failed[k] -= before.failed[k];
	}
	memset(c.err_code, 0, sizeof(c.err_code));
	memset(c.err_count, 0, sizeof(c.err_count));
	ft_note("%s: %llu bytes flipped at random over %llu sessions (%.1f MiB through the "
		"proxy), %llu ops posted", what,
		(unsigned long long)(ps.flips[0] + ps.flips[1] - ps0.flips[0] - ps0.flips[1]),
		(unsigned long long)sessions,
		(double)(ps.bytes[0] + ps.bytes[1] - ps0.bytes[0] - ps0.bytes[1]) / MiB,
		(unsigned long long)posted);
	ft_note("%s: ops ok %llu, delivered with wrong bytes %llu (no payload checksum), "
		"failed %llu", what, (unsigned long long)ft_counts_total(&c, 0),
		(unsigned long long)ft_counts_total(&c, 1),
		(unsigned long long)ft_counts_total(&c, 2));
}

static void case_corrupt_random(void)
{
	struct world w;

	w_open(&w, 2 * MiB, 4 * 512 * KiB);
	w.allow_bad = true;
	corrupt_random_phase(&w, "random flips, bulk", 512 * KiB, 60, 1.0 / (1 << 20), 300);
	corrupt_random_phase(&w, "random flips, small messages", 2 * KiB, 100,
			     1.0 / (32 << 10), 3000);
	ft_counts_print(&w.counts, "corrupt_random");
	FT_EXPECT(w_server_idle(&w, 5000), "server still holds connections");
	w_check_healthy(&w, 12, "corrupt_random");
	w_close(&w);
}

/* ------------------------------------------------------------------ main */

static const struct {
	const char *name;
	void (*fn)(void);
} cases[] = {
	{"passthrough", case_passthrough},
	{"delay", case_delay},
	{"throttle", case_throttle},
	{"slow_reader", case_slow_reader},
	{"stall_short", case_stall_short},
	{"stall_long", case_stall_long},
	{"silent_both", case_silent_both},
	{"silent_s2c", case_silent_s2c},
	{"silent_c2s", case_silent_c2s},
	{"freeze_both", case_freeze_both},
	{"silent_stream", case_silent_stream},
	{"cut_c2s_close", case_cut_c2s_close},
	{"cut_c2s_rst", case_cut_c2s_rst},
	{"cut_s2c_close", case_cut_s2c_close},
	{"cut_s2c_rst", case_cut_s2c_rst},
	{"cut_random", case_cut_random},
	{"corrupt_header_c2s", case_corrupt_header_c2s},
	{"corrupt_header_s2c", case_corrupt_header_s2c},
	{"corrupt_handshake", case_corrupt_handshake},
	{"corrupt_header_sweep", case_corrupt_header_sweep},
	{"corrupt_payload", case_corrupt_payload},
	{"corrupt_random", case_corrupt_random},
};

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 2) {
		fprintf(stderr, "usage: faults_proxy CASE\ncases:");
		for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
			fprintf(stderr, " %s", cases[i].name);
		fprintf(stderr, "\n");
		return 2;
	}
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (strcmp(argv[1], cases[i].name) != 0)
			continue;
		FT_ASSERT(ft_logtee_start() == 0, "cannot tee stderr");
		ft_watchdog_env(100);
		uint64_t t0 = ft_now_ms();
		cases[i].fn();
		ft_note("%s took %llu ms", cases[i].name, (unsigned long long)(ft_now_ms() - t0));
		return ft_finish(cases[i].name);
	}
	fprintf(stderr, "faults_proxy: unknown case %s\n", argv[1]);
	return 2;
}
