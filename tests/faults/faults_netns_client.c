/*
 * faults_netns_client.c - the client half of the network-namespace tests; run by
 * faults_netns.sh inside the client namespace, with the server (ft_peer serve) in the
 * other one:
 *
 *   faults_netns_client loss|tbf|linkdown SERVER_URI CLIENT_IFNAME
 *
 *   loss      random packet loss (nftables, set up by the script): every transfer
 *             completes with its bytes verified.
 *   tbf       a 100 mbit token bucket on both ends: every transfer completes.
 *   linkdown  the client's veth goes down in the middle of transfers (this program
 *             runs `ip link set dev IF down` itself, at the right moment): probes find
 *             the peer silent, every op in flight fails, the endpoint leaves the pool,
 *             a connect while the link is down fails; after `ip link set dev IF up` a
 *             new connect works.
 */
#define _GNU_SOURCE
#include "ft.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FT_SLACK_MS 1500
#define MiB (1ull << 20)

static const char *addr, *ifname;
static struct ferry_ctx *ctx;
static struct ft_tab tab;
static struct ft_counts counts;
static uint64_t since_ns = UINT64_MAX, last_ns;
static unsigned nrec, nfail, nbad;
static int codes[8];

static void on_lop(struct ft_tab *t, struct ft_lop *l)
{
	(void)t;
	if (l->kind >= FT_INFO || l->t_done_ns < since_ns)
		return;
	nrec++;
	if (l->t_done_ns > last_ns)
		last_ns = l->t_done_ns;
	if (l->outcome == 2) {
		if (nfail < 8)
			codes[nfail] = l->status;
		nfail++;
	} else {
		nbad++;
	}
}

static int sess(bool pooled, const struct ft_load *load, int timeout_ms, struct ft_sess **s)
{
	static uint64_t seed = 31;
	struct ferry_connect_attr ca = {.flags = pooled ? 0 : FERRY_CONNECT_PRIVATE,
					.timeout_ms = timeout_ms};
	struct ferry_ep *ep;
	int rc = ferry_connect(ctx, addr, &ca, &ep);

	*s = NULL;
	if (rc < 0)
		return rc;
	ft_sess_open(&tab, ep, load, ++seed, s);
	return ft_sess_wait_ready(*s, 10000);
}

static int ip_link(const char *state)
{
	char cmd[256];

	snprintf(cmd, sizeof(cmd), "ip link set dev %s %s", ifname, state);
	int rc = system(cmd);
	ft_note("%s -> %d", cmd, rc);
	return rc;
}

/* Loss or shaping: everything completes, verified. */
static void case_complete(const char *what, uint64_t max, unsigned nops)
{
	struct ft_load load;
	struct ft_sess *ss[2];
	uint64_t t0 = ft_now_ms();

	ft_load_default(&load);
	load.max_msg = load.max_rma = max;
	for (int i = 0; i < 2; i++)
		FT_ASSERT_RC(sess(false, &load, 10000, &ss[i]), 0);
	/* One op of each kind at the largest size, then random ones. */
	for (int k = 0; k < 4; k++)
		FT_ASSERT_RC(ft_sess_post(ss[k % 2], (enum ft_kind)k, max), 0);
	FT_EXPECT(ft_run(&tab, ss, 2, nops, 120000), "%s: ops did not finish", what);
	uint64_t ms = ft_now_ms() - t0;
	ft_note("%s: %llu ops verified (%.1f MiB) in %llu ms", what,
		(unsigned long long)ft_counts_total(&counts, 0), (double)counts.bytes_ok / MiB,
		(unsigned long long)ms);
	FT_EXPECT(ft_counts_total(&counts, 0) == nops + 4 && ft_counts_total(&counts, 1) == 0 &&
			  ft_counts_total(&counts, 2) == 0,
		  "%s: every op must complete verified", what);
	struct ferry_stats st;
	ferry_stats_get(ctx, NULL, &st);
	FT_EXPECT(st.peers_dead == 0 && st.eps_failed == 0,
		  "%s: a live peer was declared dead (%llu) or failed (%llu)", what,
		  (unsigned long long)st.peers_dead, (unsigned long long)st.eps_failed);
	for (int i = 0; i < 2; i++)
		ft_sess_close(ss[i], true, true);
}

static void case_linkdown(void)
{
	const struct ferry_config *cfg = ferry_ctx_config(ctx);
	uint64_t window = (uint64_t)(cfg->probe_misses + 1) * cfg->probe_interval_ms;
	struct ft_load load;
	struct ft_sess *s, *s2;
	struct ferry_stats st;
	struct ferry_ep *ep;

	ft_load_default(&load);
	load.max_msg = load.max_rma = 16 * MiB;
	FT_ASSERT_RC(sess(true, &load, 10000, &s), 0);
	for (int k = 0; k < 4; k++)
		FT_ASSERT_RC(ft_sess_post(s, (enum ft_kind)k, 16 * MiB), 0);
	uint64_t end = ft_now_ms() + 10000;
	do {
		ft_tab_poll(&tab, 5);
		ferry_stats_get(ctx, NULL, &st);
	} while (st.wire_bytes_sent + st.wire_bytes_received < 2 * MiB && ft_now_ms() < end);
	FT_ASSERT(tab.lops_live > 0, "everything finished before the link went down");

	since_ns = ft_now_ns();
	FT_ASSERT(ip_link("down") == 0, "cannot take %s down", ifname);
	FT_EXPECT(ft_tab_wait_idle(&tab, (int)(window + FT_SLACK_MS + 5000), "linkdown"),
		  "ops in flight did not complete");
	uint64_t took = last_ns > since_ns ? (last_ns - since_ns) / 1000000 : 0;
	char list[256] = "";
	size_t o = 0;
	for (unsigned i = 0; i < nfail && i < 8; i++)
		o += (size_t)snprintf(list + o, sizeof(list) - o, " %s", ft_err(codes[i]));
	ft_note("linkdown: %u ops in flight, %u failed (%s ), last %llu ms after the link went "
		"down (probe window %llu ms)", nrec, nfail, list, (unsigned long long)took,
		(unsigned long long)window);
	FT_EXPECT(nrec >= 1 && nbad == 0, "linkdown: %u of %u ops in flight did not fail",
		  nbad, nrec);
	for (unsigned i = 0; i < nfail && i < 8; i++)
		FT_EXPECT(codes[i] < 0, "linkdown: op failed without an error code");
	FT_EXPECT(took <= window + FT_SLACK_MS, "linkdown: failing took %llu ms",
		  (unsigned long long)took);
	FT_EXPECT(ferry_ep_status(s->ep) != 0, "linkdown: endpoint still usable");
	ferry_stats_get(ctx, NULL, &st);
	FT_EXPECT(st.eps_pooled == 0, "linkdown: the dead endpoint is still pooled");
	since_ns = UINT64_MAX;

	struct ferry_connect_attr ca = {.timeout_ms = 1000};
	int rc = ferry_connect(ctx, addr, &ca, &ep);
	ft_note("linkdown: connect while the link is down -> %s", ft_err(rc));
	FT_EXPECT(rc < 0, "connect over a link that is down succeeded");
	if (rc == 0)
		ferry_ep_close(ep);

	FT_ASSERT(ip_link("up") == 0, "cannot bring %s up", ifname);
	uint64_t up_ms = ft_now_ms();
	/* The route comes back with the link; give it a few tries. */
	end = ft_now_ms() + 10000;
	do {
		rc = sess(true, &load, 2000, &s2);
		if (rc == 0)
			break;
		if (s2)
			ft_sess_close(s2, true, false);
		ft_sleep_ms(200);
	} while (ft_now_ms() < end);
	FT_ASSERT(rc == 0, "connect after link up: %s", ft_err(rc));
	FT_EXPECT(s2->ep != s->ep, "the pool handed out the dead endpoint");
	s2->load.max_msg = s2->load.max_rma = 2 * MiB;
	struct ft_counts before = counts;
	FT_EXPECT(ft_run(&tab, &s2, 1, 16, 30000), "ops after link up hang");
	FT_EXPECT(ft_counts_total(&counts, 0) - ft_counts_total(&before, 0) == 16,
		  "ops after link up failed");
	ft_note("linkdown: after link up a new connect works (%llu ms after link up)",
		(unsigned long long)(ft_now_ms() - up_ms));
	ft_sess_close(s2, true, true);
	ft_sess_close(s, true, false);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc != 4) {
		fprintf(stderr, "usage: faults_netns_client loss|tbf|linkdown URI IFNAME\n");
		return 2;
	}
	addr = argv[2];
	ifname = argv[3];
	ft_watchdog(150);
	ctx = ft_ctx("tcp", NULL, NULL);
	ft_tab_init(&tab, ctx, NULL);
	tab.counts = &counts;
	tab.on_lop = on_lop;
	uint64_t t0 = ft_now_ms();
	if (!strcmp(argv[1], "loss"))
		case_complete("loss", 1 * MiB, 40);
	else if (!strcmp(argv[1], "tbf"))
		case_complete("tbf", 4 * MiB, 40);
	else if (!strcmp(argv[1], "linkdown"))
		case_linkdown();
	else {
		fprintf(stderr, "faults_netns_client: unknown case %s\n", argv[1]);
		return 2;
	}
	FT_EXPECT(ft_tab_wait_idle(&tab, 20000, "client"), "client ops hang");
	FT_EXPECT(ft_tab_fini(&tab, "client") == 0, "client lost completions");
	FT_EXPECT(tab.bogus == 0, "client saw duplicate completions");
	FT_EXPECT(ft_ctx_clean(ctx, "client ctx", 5000), "client context leaked");
	ft_counts_print(&counts, "client");
	ferry_ctx_destroy(ctx);
	ft_note("%s took %llu ms", argv[1], (unsigned long long)(ft_now_ms() - t0));
	char name[64];
	snprintf(name, sizeof(name), "netns.%s", argv[1]);
	return ft_finish(name);
}
