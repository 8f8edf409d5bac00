/*
 * conf_async.c - verbs asynchronous events: the port under connected endpoints goes
 * down (its netdev is set down), the device reports IBV_EVENT_PORT_ERR, and both
 * endpoints must fail at once with FERRY_ENETUNREACH (not later, by a timeout or
 * missed probes), every op in flight completing exactly once with an error. Then the
 * port comes back and a new connection works.
 *
 * It takes a network interface down, so it runs only where that is harmless: in the
 * soft-RoCE VM (FERRY_SOFTROCE=vm, as root), or where FERRY_TEST_PORT_DOWN=1 says so.
 * It needs RXE_NETDEV (the netdev under the device), set by ci/softroce.sh.
 */
#include "conf_harness.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NRECV 4
#define NSEND 4
#define LEN (256u << 10) /* rendezvous: the sender waits for the receiver's finish */

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

/* Reads the first line of a sysfs file into buf; false if unreadable. */
static bool read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	if (!f)
		return false;
	bool ok = fgets(buf, (int)len, f) != NULL;
	fclose(f);
	return ok;
}

/*
 * The RoCE GID of the test address went with the link and comes back a little after
 * it (perhaps at another index): wait until some GID of the port is that address.
 */
static void wait_gid_back(void)
{
	const char *dev = getenv("FERRY_TEST_VERBS_DEV"), *port = getenv("FERRY_TEST_VERBS_PORT");
	struct in_addr ip;
	char want[64], path[256], buf[128];
	if (!dev || !*dev || inet_pton(AF_INET, conf_host, &ip) != 1)
		return;
	const uint8_t *b = (const uint8_t *)&ip;
	snprintf(want, sizeof(want), "0000:0000:0000:0000:0000:ffff:%02x%02x:%02x%02x", b[0],
		 b[1], b[2], b[3]);
	for (int i = 0; i < 200; i++) {
		for (int g = 0; g < 64; g++) {
			snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%s/gids/%d",
				 dev, port && *port ? port : "1", g);
			if (!read_line(path, buf, sizeof(buf)))
				break;
			if (strncmp(buf, want, strlen(want)) == 0)
				return;
		}
		usleep(100000);
	}
	conf_fail("no GID %s on %s 20 s after %s came up", want, dev, netdev);
}

struct acceptor {
	struct ferry_listener *l;
	struct ferry_ep *ep;
	int rc;
};

static void *accept_thread(void *arg)
{
	struct acceptor *a = arg;
	a->rc = ferry_listener_accept(a->l, &a->ep, 3000);
	return NULL;
}

/* One connection attempt, accepted on a helper thread: 0 or an error code. */
static int try_connect(struct conf_world *w, struct ferry_ep **ce, struct ferry_ep **se)
{
	struct acceptor a = { .l = w->l };
	struct ferry_connect_attr attr = { .flags = FERRY_CONNECT_PRIVATE };
	pthread_t th;
	*ce = *se = NULL;
	if (pthread_create(&th, NULL, accept_thread, &a) != 0)
		return FERRY_ENOMEM;
	int rc = ferry_connect(w->cli, w->addr, &attr, ce);
	pthread_join(th, NULL);
	if (rc == 0 && a.rc == 0) {
		*se = a.ep;
		return 0;
	}
	if (*ce)
		ferry_ep_close(*ce);
	if (a.rc == 0)
		ferry_ep_close(a.ep);
	*ce = NULL;
	return rc ? rc : a.rc;
}

/* Waits until the device's port is ACTIVE again (sysfs), up to 20 s. */
static void wait_port_active(void)
{
	const char *dev = getenv("FERRY_TEST_VERBS_DEV"), *port = getenv("FERRY_TEST_VERBS_PORT");
	char path[256], buf[64];
	if (!dev || !*dev)
		return;
	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%s/state", dev,
		 port && *port ? port : "1");
	for (int i = 0; i < 200; i++) {
		if (!read_line(path, buf, sizeof(buf)) || strstr(buf, "ACTIVE"))
			return;
		usleep(100000);
	}
	conf_fail("%s not ACTIVE 20 s after %s came up", path, netdev);
}

static void test_async_port_down(void **state)
{
	struct conf *c = *state;
	struct conf_world *w = &c->w;
	char why[200];
	struct ferry_completion cmp[16];
	int seen[2 * NRECV + NSEND];

	if (!may_take_port_down(why, sizeof(why)))
		conf_skip("%s", why);
	char *rbuf = conf_alloc(c, (NRECV * 2) * 4096);
	char *sbuf = conf_alloc(c, LEN);
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
				if (cmp[i].status >= 0)
					conf_fail("op %d completed with status %d after the port "
						  "went down", (int)(p - seen), cmp[i].status);
				got++;
			}
		}
	}
	conf_expect_none(w, ferry_ctx_cq(w->cli), 200);
	conf_expect_none(w, ferry_ctx_cq(w->srv), 1);

	/* The port is back: a new connection works (the device was not written off). */
	t0 = conf_now_ms();
	wait_port_active();
	wait_gid_back();
	ferry_ep_close(c->cep);
	ferry_ep_close(c->sep);
	c->cep = c->sep = NULL;
	struct ferry_ep *ce = NULL, *se = NULL;
	int rc = FERRY_ETIMEDOUT;
	for (int attempt = 0; attempt < 10 && rc != 0; attempt++)
		rc = try_connect(w, &ce, &se);
	if (rc != 0)
		conf_fail("no connection 10 attempts after the port came back: %s", conf_err(rc));
	print_message("connected again %llu ms after the link came up\n",
		      (unsigned long long)(conf_now_ms() - t0));
	conf_own_ep(c, ce);
	conf_own_ep(c, se);
	conf_assert_rc(ferry_recv(se, rbuf, 4096, 7, ~0ull, rbuf, NULL), 0);
	conf_fill(sbuf, 4096, 77);
	conf_assert_rc(ferry_send(ce, sbuf, 4096, 7, sbuf, NULL), 0);
	conf_wait(w, ferry_ctx_cq(w->srv), cmp, 1);
	conf_assert_rc(cmp[0].status, 0);
	conf_wait(w, ferry_ctx_cq(w->cli), cmp, 1);
	conf_assert_rc(cmp[0].status, 0);
	conf_assert_pattern(rbuf, 4096, 77, "message after the port came back");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_async_port_down, conf_setup_pair, conf_teardown),
	};

	return CONF_RUN("async", tests);
}
