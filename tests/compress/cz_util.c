/*
 * cz_util.c - see cz_util.h.
 */
#define _GNU_SOURCE
#include "cz_util.h"

#include <setjmp.h>
#include <stdarg.h>
#include <cmocka.h>

#include <math.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

int cz_wait_ms = CZ_WAIT_MS;

uint64_t cz_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void cz_side_init(struct cz_side *s)
{
	memset(s, 0, sizeof(*s));
	ferry_config_init(&s->cfg);
	s->cfg.providers = "tcp";
	s->cfg.log_level = FERRY_LOG_ERROR;
	s->cfg.probe_interval_ms = 0;
	s->cfg.idle_timeout_s = 0;
	s->cfg.reconnect_attempts = 1;
}

static struct ferry_ctx *side_ctx(const struct cz_side *s)
{
	struct ferry_ctx *ctx = NULL;
	char names[8][64];
	int n = 0;

	for (; n < 8 && s->env[n]; n++) {
		const char *eq = strchr(s->env[n], '=');

		assert_non_null(eq);
		snprintf(names[n], sizeof(names[n]), "%.*s", (int)(eq - s->env[n]), s->env[n]);
		setenv(names[n], eq + 1, 1);
	}
	assert_int_equal(ferry_ctx_create(&s->cfg, &ctx), 0);
	while (n-- > 0)
		unsetenv(names[n]);
	return ctx;
}

void cz_pair_open(struct cz_pair *p, const struct cz_side *srv, const struct cz_side *cli)
{
	struct ferry_connect_attr ca = {.flags = FERRY_CONNECT_PRIVATE, .timeout_ms = CZ_WAIT_MS};
	struct ferry_listener *l = NULL;
	char addr[256];
	size_t len = sizeof(addr);

	memset(p, 0, sizeof(*p));
	p->srv = side_ctx(srv);
	p->cli = side_ctx(cli);
	assert_int_equal(ferry_listen(p->srv, "tcp://127.0.0.1:0", NULL, &l), 0);
	assert_int_equal(ferry_listener_addr(l, addr, &len), 0);
	/* The server's poller accepts while a listener is open (no thread needed). */
	assert_int_equal(ferry_connect(p->cli, addr, &ca, &p->cep), 0);
	assert_int_equal(ferry_listener_accept(l, &p->sep, CZ_WAIT_MS), 0);
	ferry_listener_close(l);
}

void cz_pair_close(struct cz_pair *p)
{
	if (p->cep)
		ferry_ep_close(p->cep);
	if (p->sep)
		ferry_ep_close(p->sep);
	ferry_ctx_destroy(p->cli);
	ferry_ctx_destroy(p->srv);
	memset(p, 0, sizeof(*p));
}

void cz_wait_every(struct cz_pair *p, struct ferry_ctx *ctx, struct ferry_completion *c,
		   unsigned srv_every)
{
	uint64_t deadline = cz_now_ms() + (uint64_t)cz_wait_ms;
	struct pollfd pfd[2] = {
		{.fd = ferry_ctx_fd(p->cli), .events = POLLIN},
		{.fd = ferry_ctx_fd(p->srv), .events = POLLIN},
	};

	for (unsigned i = 1;; i++) {
		int n = ferry_cq_poll(ferry_ctx_cq(ctx), c, 1);

		assert_true(n >= 0);
		if (n == 1)
			return;
		if (ctx != p->cli)
			ferry_progress(p->cli);
		if (ctx != p->srv && (srv_every <= 1 || i % srv_every == 0))
			ferry_progress(p->srv);
		if (cz_now_ms() > deadline) {
			print_error("no completion within %d ms\n", cz_wait_ms);
			fail();
		}
		if (srv_every <= 1)
			poll(pfd, 2, 1);
	}
}

struct ferry_stats cz_stats(struct ferry_ctx *ctx)
{
	struct ferry_stats st;

	assert_int_equal(ferry_stats_get(ctx, "tcp", &st), 0);
	return st;
}
