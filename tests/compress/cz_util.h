/*
 * cz_util.h - shared by the compression and zero-copy tests: two contexts connected
 * over TCP loopback, a loop that drives both until a completion arrives (the data
 * generators are in cz_data.h).
 *
 * Both contexts live in one thread. The server context has no probes and no idle
 * reaping and its listener is closed once the pair is connected, so its poller never
 * drives it behind the test's back: only cz_wait() moves its data (the zero-copy test
 * relies on a receiver that is slow when the test says so).
 */
#ifndef FERRY_TESTS_CZ_UTIL_H
#define FERRY_TESTS_CZ_UTIL_H

#include <ferry/ferry.h>

#include "cz_data.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CZ_WAIT_MS 20000
/* Deadline of cz_wait (default CZ_WAIT_MS); the large test raises it. */
extern int cz_wait_ms;

struct cz_side {
	struct ferry_config cfg;
	const char *env[8]; /* "NAME=value" set while this side's context is created */
};

struct cz_pair {
	struct ferry_ctx *srv, *cli;
	struct ferry_ep *sep, *cep; /* server's and client's end */
};

/* Fills s with test defaults: tcp only, no probes, no reaping, log level error. */
void cz_side_init(struct cz_side *s);

/* Creates both contexts and connects them; fails the test on error. */
void cz_pair_open(struct cz_pair *p, const struct cz_side *srv, const struct cz_side *cli);
void cz_pair_close(struct cz_pair *p);

/*
 * Drives both contexts (client every call, the server every `srv_every` calls) until
 * ctx's default queue yields one completion; fails the test after cz_wait_ms.
 */
void cz_wait_every(struct cz_pair *p, struct ferry_ctx *ctx, struct ferry_completion *c,
		   unsigned srv_every);
static inline void cz_wait(struct cz_pair *p, struct ferry_ctx *ctx,
			   struct ferry_completion *c)
{
	cz_wait_every(p, ctx, c, 1);
}

/* Tcp stats of a context. */
struct ferry_stats cz_stats(struct ferry_ctx *ctx);


uint64_t cz_now_ms(void);

#endif /* FERRY_TESTS_CZ_UTIL_H */
