/*
 * conf_async.c - verbs asynchronous events: the port under connected endpoints goes
 * down (its netdev is set down), the device reports IBV_EVENT_PORT_ERR, and both
 * endpoints must fail at once with FERRY_ENETUNREACH (not later, by a timeout or
 * missed probes), every op in flight completing exactly once with an error.
 *
 * It takes a network interface down, so it runs only where that is harmless: in the
 * soft-RoCE VM (FERRY_SOFTROCE=vm, as root), or where FERRY_TEST_PORT_DOWN=1 says so.
 * It needs RXE_NETDEV (the netdev under the device), set by ci/softroce.sh.
 */
#include "conf_harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NRECV 4
#define NSEND 4
#define LEN (256u << 10) /* rendezvous: the sender waits for the receiver's finish */
#define RLEN (32u << 20)  /* reads the NIC is likely still moving when the link goes */
#define NREAD 8

static char netdev[64];

static bool may_take_port_down(char *why, size_t len)
{
	const char *mode = getenv("FERRY_SOFTROCE"), *force = getenv("FERRY_TEST_PORT_DOWN");
	const char *nd = getenv("RXE_NETDEV");
	if (strcmp(conf_prov, "verbs") != 0) {
		snprintf(why, len, "verbs only");
		return false;
	}
	if (!(mode && strcmp(mode, "vm") == 0) && !(force && strcmp(force, "1") == 0)) {
		snprintf(why, len, "takes a netdev down: runs in the soft-RoCE VM "
			 "(FERRY_SOFTROCE=vm) or with FERRY_TEST_PORT_DOWN=1");
		return false;
	}
	if (!nd || !*nd || strlen(nd) >= sizeof(netdev) || strspn(nd, "abcdefghijklmnopqrstuvwxyz0123456789._-") != strlen(nd)) {
		snprintf(why, len, "RXE_NETDEV (the netdev under the RDMA device) not set");
		return false;
	}
	if (geteuid() != 0) {
		snprintf(why, len, "needs root to set %s down", nd);
		return false;
	}
	snprintf(netdev, sizeof(netdev), "%s", nd);
	return true;
}

static void link_set(const char *state)
{
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "ip link set %s %s", netdev, state);
	if (system(cmd) != 0)
		conf_fail("'%s' failed", cmd);
}

static void test_async_port_down(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	char why[200];
	struct ferry_completion cmp[16];
	int seen[2 * NRECV + NSEND + NREAD];
	int *reads = &seen[2 * NRECV + NSEND];
	int reads_ok = 0, reads_failed = 0;

	if (!may_take_port_down(why, sizeof(why)))
		conf_skip("%s", why);
	char *rbuf = conf_alloc(c, (NRECV * 2) * 4096);
	char *sbuf = conf_alloc(c, LEN);
	char *src = conf_alloc(c, RLEN), *dst = conf_alloc(c, RLEN);
	struct ferry_mr *mr = conf_reg(c, w->srv, src, RLEN, FERRY_ACCESS_REMOTE_READ);
	struct ferry_rkey *rk = conf_rkey(c, w->cli, mr);
	memset(seen, 0, sizeof(seen));
	/* Core-owned receives on both sides, and rendezvous sends nobody receives: the
	 * server holds their announces, the senders wait for a finish. */
	for (int i = 0; i < NRECV; i++) {
		conf_assert_rc(ferry_recv(c->sep, rbuf + i * 4096, 4096, 100, ~0ull,
					  &seen[i], NULL), 0);
		conf_assert_rc(ferry_recv(c->cep, rbuf + (NRECV + i) * 4096, 4096, 100, ~0ull,
					  &seen[NRECV + i], NULL), 0);
	}
	for (int i = 0; i < NSEND; i++)
		conf_assert_rc(ferry_send(c->cep, sbuf, LEN, 200, &seen[2 * NRECV + i], NULL), 0);
	conf_drive_for(w, 100);
	assert_int_equal(ferry_ep_status(c->cep), 0);
	assert_int_equal(ferry_ep_status(c->sep), 0);

	/* Provider-owned: the NIC moves them on its own, likely still when the link goes. */
	for (int i = 0; i < NREAD; i++)
		conf_assert_rc(ferry_read(c->cep, dst, RLEN, NULL, rk, 0, &reads[i], NULL), 0);
	uint64_t t0 = conf_now_ms();
	link_set("down");
	conf_wait_ep_down(w, c->cep);
	conf_wait_ep_down(w, c->sep);
	print_message("both endpoints failed %llu ms after the link went down\n",
		      (unsigned long long)(conf_now_ms() - t0));
	int sc = ferry_ep_status(c->cep), ss = ferry_ep_status(c->sep);
	link_set("up");
	if (sc != FERRY_ENETUNREACH || ss != FERRY_ENETUNREACH)
		conf_fail("endpoint status client %s, server %s: expected ENETUNREACH from the "
			  "port error event", conf_err(sc), conf_err(ss));

	/* Every op completes once, with an error; nothing comes twice. */
	int got = 0, want = (int)(sizeof(seen) / sizeof(seen[0]));
	uint64_t deadline = conf_now_ms() + 10000;
	while (got < want) {
		if (conf_now_ms() > deadline)
			conf_fail("%d of %d ops completed 10 s after the endpoints failed", got, want);
		conf_drive(w, 10);
		for (int side = 0; side < 2; side++) {
			struct ferry_cq *cq = ferry_ctx_cq(side ? w->srv : w->cli);
			int n = ferry_cq_poll(cq, cmp, 16);
			for (int i = 0; i < n; i++) {
				int *p = cmp[i].user_ctx;
				if (p < seen || p >= seen + want)
					conf_fail("completion with an unknown context %p",
						  cmp[i].user_ctx);
				if (++*p != 1)
					conf_fail("op %d completed twice", (int)(p - seen));
				bool is_read = p >= reads && p < reads + NREAD;
				if (cmp[i].status >= 0 && !is_read)
					conf_fail("op %d completed with status %d after the port "
						  "went down", (int)(p - seen), cmp[i].status);
				if (is_read && cmp[i].status == 0)
					reads_ok++;
				else if (is_read)
					reads_failed++;
				got++;
			}
		}
	}
	print_message("reads: %d finished before the link went, %d failed with it\n",
		      reads_ok, reads_failed);
	conf_expect_none(w, ferry_ctx_cq(w->cli), 200);
	conf_expect_none(w, ferry_ctx_cq(w->srv), 1);

	/*
	 * Not checked: a new connection once the port is back. On soft-RoCE (rdma_rxe,
	 * Linux 6.1 guest) a port bounce under live connections leaves the device
	 * accepting no new connection at all for a while, from any process (rping
	 * neither), so this test runs after every other verbs test (DEPENDS).
	 */
	conf_free(c, rbuf);
	conf_free(c, sbuf);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_async_port_down, conf_setup_pair, conf_teardown),
	};

	return CONF_RUN("async", tests);
}
