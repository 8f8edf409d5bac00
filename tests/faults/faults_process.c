/*
 * faults_process.c - process-level faults: the peer is a separate process (ft_peer)
 * that the test kills (SIGKILL) or stops (SIGSTOP, later SIGCONT) in the middle of
 * transfers.
 *
 *   faults_process CASE PATH/TO/ft_peer
 *
 *   kill_server   this process is the client; the server process is SIGKILLed: every
 *                 op in flight here fails within the probe window (the kernel resets
 *                 the connection at once), the endpoint leaves the pool. Over verbs
 *                 an op may still complete, with verified bytes: the peer's device
 *                 serves it until the dead process's queue pairs are gone.
 *   kill_client   this process is the server; the client process is SIGKILLed: the
 *                 server's endpoint is torn down with every op on it completed.
 *   kill_client_many  the same with 100 connections from the client process, all
 *                 reset at once.
 *   stop_server   the server process is SIGSTOPped: probes find it silent, ops fail
 *                 with FERRY_EPEERDEAD, the endpoint leaves the pool, a connect to the
 *                 stopped process fails; after SIGCONT a new connect works.
 *   stop_client   the client process is SIGSTOPped: the server declares it dead and
 *                 drops it; after SIGCONT the client reconnects and traffic resumes.
 *
 * Probes run at FERRY_PROBE_INTERVAL_MS=200, FERRY_PROBE_MISSES=3 unless the
 * environment says otherwise (the peer inherits them, and FERRY_TEST_PROVIDER: the
 * transport, tcp by default; CTest runs the kill cases over verbs and ofi+tcp too).
 */
#define _GNU_SOURCE
#include "ft.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define FT_SLACK_MS 1500
#define MiB (1ull << 20)

static const char *peer_bin;

static uint64_t probe_window_ms(struct ferry_ctx *ctx)
{
	const struct ferry_config *cfg = ferry_ctx_config(ctx);

	return (uint64_t)(cfg->probe_misses + 1) * cfg->probe_interval_ms;
}

static pid_t spawn_server(int *out, char *addr, size_t alen)
{
	char *argv[] = {(char *)peer_bin, "serve", "--ro-len", "16M", "--wr-max", "128M", NULL};
	pid_t pid = ft_spawn(argv, out);

	FT_ASSERT(pid > 0, "cannot start %s: %s", peer_bin, strerror(-pid));
	FT_ASSERT(ft_read_line(*out, "FT_PEER_ADDR", addr, alen, 10000),
		  "the server process did not say its address");
	ft_note("server process %d listens on %s", (int)pid, addr);
	return pid;
}

static pid_t spawn_client(const char *addr, int *out, bool many)
{
	char *argv[] = {(char *)peer_bin, "client", "--connect", (char *)addr, "--seconds", "60",
			"--sessions", many ? "100" : "2", "--window", many ? "1" : "4",
			"--max-msg", many ? "64K" : "16M", "--max-rma", many ? "64K" : "16M", NULL};
	pid_t pid = ft_spawn(argv, out);

	FT_ASSERT(pid > 0, "cannot start %s: %s", peer_bin, strerror(-pid));
	FT_ASSERT(ft_read_line(*out, "FT_PEER_READY", (char[8]){0}, 8, 10000),
		  "the client process did not get ready");
	ft_note("client process %d runs against %s", (int)pid, addr);
	return pid;
}

/* The client side in this process. */
struct cli {
	struct ferry_ctx *ctx;
	struct ft_tab tab;
	struct ft_counts counts;
	unsigned nrec, nfail, nok, ncorrupt;
	int codes[8];
	uint64_t since_ns, last_ns;
};

static struct cli *cur_cli;

static void cli_on_lop(struct ft_tab *t, struct ft_lop *l)
{
	struct cli *c = cur_cli;

	(void)t;
	if (!c || l->kind >= FT_INFO || l->t_done_ns < c->since_ns)
		return;
	c->nrec++;
	if (l->t_done_ns > c->last_ns)
		c->last_ns = l->t_done_ns;
	if (l->outcome == 2) {
		if (c->nfail < 8)
			c->codes[c->nfail] = l->status;
		c->nfail++;
	} else if (l->outcome == 0) {
		c->nok++;
	} else {
		c->ncorrupt++;
	}
}

static void cli_open(struct cli *c)
{
	memset(c, 0, sizeof(*c));
	c->since_ns = UINT64_MAX;
	c->ctx = ft_ctx(NULL, NULL, NULL);
	ft_tab_init(&c->tab, c->ctx, NULL);
	c->tab.counts = &c->counts;
	c->tab.on_lop = cli_on_lop;
	cur_cli = c;
}

static struct ft_sess *cli_sess(struct cli *c, const char *addr, const struct ft_load *load,
				int timeout_ms, int *rc_out)
{
	struct ferry_connect_attr ca = {.timeout_ms = timeout_ms};
	struct ferry_ep *ep;
	struct ft_sess *s;
	int rc = ferry_connect(c->ctx, addr, &ca, &ep);

	*rc_out = rc;
	if (rc < 0)
		return NULL;
	ft_sess_open(&c->tab, ep, load, 1234, &s);
	*rc_out = ft_sess_wait_ready(s, 10000);
	return s;
}

static void cli_close(struct cli *c)
{
	FT_EXPECT(ft_tab_wait_idle(&c->tab, 20000, "client"), "client ops hang");
	FT_EXPECT(ft_tab_fini(&c->tab, "client") == 0, "client lost completions");
	FT_EXPECT(c->tab.bogus == 0, "client saw duplicate completions");
	FT_EXPECT(ft_ctx_clean(c->ctx, "client ctx", 5000), "client context leaked");
	ft_counts_print(&c->counts, "client");
	ferry_ctx_destroy(c->ctx);
	cur_cli = NULL;
}

/* Drives the client until at least n wire bytes moved (either way). */
static void cli_wait_traffic(struct cli *c, uint64_t n)
{
	uint64_t end = ft_now_ms() + 10000;
	struct ferry_stats st;

	do {
		ft_tab_poll(&c->tab, 5);
		ferry_stats_get(c->ctx, NULL, &st);
	} while (st.wire_bytes_sent + st.wire_bytes_received < n && ft_now_ms() < end);
	FT_ASSERT(st.wire_bytes_sent + st.wire_bytes_received >= n, "no traffic");
}

/* Posts big ops, applies the fault, checks that every op in flight failed in time. */
static void cli_fault_in_flight(struct cli *c, struct ft_sess *s, void (*fault)(pid_t),
				pid_t pid, int want, const char *what)
{
	uint64_t window = probe_window_ms(c->ctx);
	struct ferry_stats st;

	for (int k = 0; k < 4; k++)
		FT_ASSERT_RC(ft_sess_post(s, (enum ft_kind)k, 16 * MiB), 0);
	cli_wait_traffic(c, 4 * MiB);
	ferry_stats_get(c->ctx, NULL, &st);
	FT_EXPECT(st.eps_pooled == 1, "%s: eps_pooled %llu before the fault", what,
		  (unsigned long long)st.eps_pooled);
	c->since_ns = ft_now_ns();
	fault(pid);
	FT_EXPECT(ft_tab_wait_idle(&c->tab, (int)(window + FT_SLACK_MS + 3000), what),
		  "%s: ops in flight did not complete", what);
	uint64_t took = c->last_ns > c->since_ns ? (c->last_ns - c->since_ns) / 1000000 : 0;
	char codes[256] = "";
	size_t o = 0;
	for (unsigned i = 0; i < c->nfail && i < 8; i++)
		o += (size_t)snprintf(codes + o, sizeof(codes) - o, " %s", ft_err(c->codes[i]));
	ft_note("%s: %u ops in flight, %u failed (%s ), last %llu ms after the fault (probe "
		"window %llu ms)", what, c->nrec, c->nfail, codes, (unsigned long long)took,
		(unsigned long long)window);
	FT_EXPECT(c->nrec >= 1, "%s: nothing was in flight", what);
	FT_EXPECT(c->ncorrupt == 0, "%s: %u ops in flight delivered wrong bytes", what,
		  c->ncorrupt);
	/*
	 * Over TCP nothing serves a killed process's side: every op in flight fails. Over
	 * RDMA the peer's device (soft-RoCE: its kernel) answers reads and acknowledges
	 * what it had received until the process's queue pairs are torn down, so an op
	 * may still complete, with its bytes verified.
	 */
	bool rdma = strcmp(ft_provider(), "verbs") == 0;
	FT_EXPECT(c->nok == 0 || rdma, "%s: %u ops in flight did not fail", what, c->nok);
	if (c->nok)
		ft_note("%s: %u ops in flight completed with verified bytes (the peer's device "
			"served them)", what, c->nok);
	for (unsigned i = 0; i < c->nfail && i < 8; i++)
		FT_EXPECT(c->codes[i] < 0 && (!want || c->codes[i] == want),
			  "%s: op failed with %s, want %s", what, ft_err(c->codes[i]),
			  want ? ft_err(want) : "an error");
	FT_EXPECT(took <= window + FT_SLACK_MS, "%s: failing took %llu ms", what,
		  (unsigned long long)took);
	FT_EXPECT(ferry_ep_status(s->ep) != 0, "%s: endpoint still usable", what);
	ferry_stats_get(c->ctx, NULL, &st);
	FT_EXPECT(st.eps_pooled == 0, "%s: failed endpoint still pooled", what);
	c->since_ns = UINT64_MAX;
}

static void sig_kill(pid_t pid) { kill(pid, SIGKILL); }
static void sig_stop(pid_t pid) { kill(pid, SIGSTOP); }

static void load_big(struct ft_load *load)
{
	ft_load_default(load);
	load->max_msg = load->max_rma = 16 * MiB;
}

static void case_kill_server(void)
{
	struct cli c;
	struct ft_load load;
	char addr[256];
	int out, rc;
	pid_t pid = spawn_server(&out, addr, sizeof(addr));

	cli_open(&c);
	load_big(&load);
	struct ft_sess *s = cli_sess(&c, addr, &load, 5000, &rc);
	FT_ASSERT(rc == 0, "session: %s", ft_err(rc));
	cli_fault_in_flight(&c, s, sig_kill, pid, 0, "kill_server");
	int st = ft_wait_child(pid, 5000);
	FT_EXPECT(st != -1 && WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL,
		  "server process status 0x%x", st);
	struct ferry_ep *ep;
	struct ferry_connect_attr ca = {.timeout_ms = 2000};
	rc = ferry_connect(c.ctx, addr, &ca, &ep);
	ft_note("kill_server: connect to the dead server -> %s", ft_err(rc));
	FT_EXPECT(rc < 0, "connect to a killed server succeeded");
	if (rc == 0)
		ferry_ep_close(ep);
	ft_sess_close(s, true, false);
	cli_close(&c);
	close(out);
}

static void case_stop_server(void)
{
	struct cli c;
	struct ft_load load;
	char addr[256], line[256];
	int out, rc;
	pid_t pid = spawn_server(&out, addr, sizeof(addr));

	cli_open(&c);
	load_big(&load);
	struct ft_sess *s = cli_sess(&c, addr, &load, 5000, &rc);
	FT_ASSERT(rc == 0, "session: %s", ft_err(rc));
	struct ferry_ep *old = s->ep;
	cli_fault_in_flight(&c, s, sig_stop, pid, FERRY_EPEERDEAD, "stop_server");

	/* A stopped process's kernel still completes TCP handshakes; ferry's does not. */
	struct ferry_ep *ep;
	struct ferry_connect_attr ca = {.timeout_ms = 1000};
	uint64_t t0 = ft_now_ms();
	rc = ferry_connect(c.ctx, addr, &ca, &ep);
	ft_note("stop_server: connect to the stopped server -> %s after %llu ms", ft_err(rc),
		(unsigned long long)(ft_now_ms() - t0));
	FT_EXPECT(rc < 0, "connect to a stopped server succeeded");
	if (rc == 0)
		ferry_ep_close(ep);

	kill(pid, SIGCONT);
	struct ft_sess *s2 = cli_sess(&c, addr, &load, 5000, &rc);
	FT_EXPECT(rc == 0, "connect after SIGCONT: %s", ft_err(rc));
	if (s2) {
		FT_EXPECT(s2->ep != old, "the pool handed out the dead endpoint");
		struct ft_counts before = c.counts;
		s2->load.max_msg = s2->load.max_rma = 2 * MiB;
		FT_EXPECT(ft_run(&c.tab, &s2, 1, 16, 30000), "ops after SIGCONT hang");
		FT_EXPECT(ft_counts_total(&c.counts, 0) - ft_counts_total(&before, 0) == 16,
			  "ops after SIGCONT failed");
		ft_note("stop_server: after SIGCONT a new connect works");
		ft_sess_close(s2, true, true);
	}
	ft_sess_close(s, true, false);
	cli_close(&c);
	kill(pid, SIGTERM);
	if (ft_read_line(out, "FT_PEER_DONE", line, sizeof(line), 15000))
		ft_note("server process: %s", line);
	int st = ft_wait_child(pid, 15000);
	FT_EXPECT(st != -1 && WIFEXITED(st) && WEXITSTATUS(st) == 0,
		  "server process ended with status 0x%x (leak or lost completion there)", st);
	close(out);
}

/*
 * This process serves; the client is the peer process (with 2 sessions moving big
 * transfers, or with 100 sessions of small ones: then 100 connections reset at once).
 */
static void serve_fault_client(bool stop, bool many)
{
	const char *what = stop ? "stop_client" : many ? "kill_client_many" : "kill_client";
	struct ferry_ctx *ctx = ft_ctx(NULL, NULL, NULL);
	struct ft_service_cfg cfg = {.ro_len = 16 * MiB, .wr_max = 128 * MiB};
	struct ft_service *svc;
	struct ft_service_stats st;
	char line[512];
	int out;

	FT_ASSERT_RC(ft_service_create(ctx, &cfg, &svc), 0);
	FT_ASSERT_RC(ft_service_start_thread(svc), 0);
	uint64_t window = probe_window_ms(ctx);
	pid_t pid = spawn_client(ft_service_addr(svc), &out, many);
	uint64_t end = ft_now_ms() + 15000, want_conns = many ? 100 : 1;
	do {
		ft_sleep_ms(10);
		ft_service_get_stats(svc, &st);
	} while ((st.bytes_in + st.bytes_out < 8 * MiB || st.conns_live < want_conns) &&
		 ft_now_ms() < end);
	FT_ASSERT(st.bytes_in + st.bytes_out >= 8 * MiB, "no traffic from the client");
	FT_ASSERT(st.conns_live >= want_conns, "%llu connections, want %llu",
		  (unsigned long long)st.conns_live, (unsigned long long)want_conns);
	uint64_t accepted = st.accepted, fails = st.ep_failures;

	/* With 100 connections, let all the resets arrive before anyone reads them (a
	 * server thread busy elsewhere); only ferry's poller drives the context then. */
	if (many)
		ft_service_stop_thread(svc);
	uint64_t t0 = ft_now_ms();
	kill(pid, stop ? SIGSTOP : SIGKILL);
	if (many) {
		ft_sleep_ms(100);
		FT_ASSERT_RC(ft_service_start_thread(svc), 0);
	}
	end = t0 + window + FT_SLACK_MS + 3000;
	do {
		ft_sleep_ms(5);
		ft_service_get_stats(svc, &st);
	} while (st.conns_live > 0 && ft_now_ms() < end);
	uint64_t took = ft_now_ms() - t0;
	ft_note("%s: the server dropped %llu endpoints %llu ms after the fault (failures: %llu, "
		"last %s; probe window %llu ms)", what,
		(unsigned long long)(st.conns_closed), (unsigned long long)took,
		(unsigned long long)(st.ep_failures - fails), ft_err(st.last_failure),
		(unsigned long long)window);
	/* A torn-down endpoint means every op on it completed (ft_service.c). */
	FT_EXPECT(st.conns_live == 0, "%s: %llu endpoints still held by the server", what,
		  (unsigned long long)st.conns_live);
	/* The server context still answers: a stats call returns (it takes the lock). */
	if (st.conns_live)
		ft_ctx_stuck_exit(ctx, "server");
	FT_EXPECT(took <= window + FT_SLACK_MS, "%s: took %llu ms", what,
		  (unsigned long long)took);
	FT_EXPECT(st.ep_failures > fails, "%s: no endpoint failure seen", what);
	if (stop)
		FT_EXPECT(st.last_failure == FERRY_EPEERDEAD, "%s: server endpoint failed with %s",
			  what, ft_err(st.last_failure));
	FT_EXPECT(st.verified_bad == 0, "%s: the server received wrong bytes", what);

	if (stop) {
		uint64_t ok_before = st.verified_ok;

		kill(pid, SIGCONT);
		end = ft_now_ms() + 15000;
		do {
			ft_sleep_ms(10);
			ft_service_get_stats(svc, &st);
		} while ((st.accepted == accepted || st.verified_ok < ok_before + 8) &&
			 ft_now_ms() < end);
		FT_EXPECT(st.accepted > accepted && st.verified_ok >= ok_before + 8,
			  "%s: the client did not reconnect after SIGCONT (accepted %llu -> %llu)",
			  what, (unsigned long long)accepted, (unsigned long long)st.accepted);
		ft_note("%s: after SIGCONT the client reconnected (%llu new endpoints) and "
			"traffic resumed", what, (unsigned long long)(st.accepted - accepted));
		kill(pid, SIGTERM);
		if (ft_read_line(out, "FT_PEER_STATS", line, sizeof(line), 20000))
			ft_note("client process: %s", line);
		int ws = ft_wait_child(pid, 20000);
		FT_EXPECT(ws != -1 && WIFEXITED(ws) && WEXITSTATUS(ws) == 0,
			  "client process ended with status 0x%x", ws);
	} else {
		int ws = ft_wait_child(pid, 5000);
		FT_EXPECT(ws != -1 && WIFSIGNALED(ws), "client process status 0x%x", ws);
	}
	int problems = ft_service_destroy(svc, 10000);
	FT_EXPECT(problems == 0, "server: %d lost or duplicate completions", problems);
	FT_EXPECT(ft_ctx_clean(ctx, "server ctx", 5000), "server context leaked");
	ferry_ctx_destroy(ctx);
	close(out);
}

static void case_kill_client(void) { serve_fault_client(false, false); }
static void case_kill_client_many(void) { serve_fault_client(false, true); }
static void case_stop_client(void) { serve_fault_client(true, false); }

int main(int argc, char **argv)
{
	static const struct {
		const char *name;
		void (*fn)(void);
	} cases[] = {
		{"kill_server", case_kill_server},
		{"kill_client", case_kill_client},
		{"kill_client_many", case_kill_client_many},
		{"stop_server", case_stop_server},
		{"stop_client", case_stop_client},
	};

	setvbuf(stdout, NULL, _IOLBF, 0);
	signal(SIGPIPE, SIG_IGN);
	if (argc != 3) {
		fprintf(stderr, "usage: faults_process kill_server|kill_client|stop_server|"
				"stop_client PATH/TO/ft_peer\n");
		return 2;
	}
	peer_bin = argv[2];
	ft_require_provider();
	ft_watchdog(100);
	setenv("FERRY_PROBE_INTERVAL_MS", "200", 0);
	setenv("FERRY_PROBE_MISSES", "3", 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		if (strcmp(argv[1], cases[i].name) != 0)
			continue;
		uint64_t t0 = ft_now_ms();
		cases[i].fn();
		ft_note("%s took %llu ms", cases[i].name, (unsigned long long)(ft_now_ms() - t0));
		return ft_finish(cases[i].name);
	}
	fprintf(stderr, "faults_process: unknown case %s\n", argv[1]);
	return 2;
}
