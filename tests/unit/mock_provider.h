/*
 * mock_provider.h - an in-process provider for unit tests, a fake clock, and the
 * helpers the unit tests share.
 *
 * The mock ("mock://NAME:PORT", provider id 200, eager_max 4096, no caps) joins two
 * endpoints of one process through in-memory queues: listen registers NAME:PORT in a
 * process-global table, connect finds it and creates the accepting endpoint there.
 * Messages are delivered by the receiving context's progress; write/read are
 * requests that the target's progress checks with ferryi_mr_remote_get(), like TCP.
 *
 * Knobs simulate what a unit test cannot get from a real network: a silent peer
 * (drop), a slow one (delay), refused connects, an injected failure.
 *
 * Threads: every function may be called from any thread. The ep knobs take the
 * endpoint's context lock, so do not call them while holding it.
 */
#ifndef FERRY_TESTS_UNIT_MOCK_PROVIDER_H
#define FERRY_TESTS_UNIT_MOCK_PROVIDER_H

#include "core_priv.h"

#include <stdbool.h>
#include <stdint.h>

#define MOCK_PROV_ID 200
#define MOCK_EAGER_MAX 4096

extern const struct ferryi_provider mock_provider;

/* Registers the mock as the test provider. Call once, before the first context. */
int mock_register(void);

/* Knobs and counters back to their defaults (call at the start of every test). */
void mock_reset(void);

/*
 * Connector side of the handshake: by default the connector's ferryi_ep_connected()
 * runs in its context's next progress pass (as with a real network); sync = true
 * makes connect() call it before returning.
 */
void mock_set_sync_connect(bool sync);

/*
 * By default the connector accepts on the listener's behalf when it can take the
 * listener's context lock at once (trylock). deferred = true leaves every accept to
 * the listener context's own progress.
 */
void mock_set_deferred_accept(bool deferred);

/*
 * The next n connects fail with status: at once (connect() returns it) or, with
 * at_once false, through ferryi_ep_failed() in the connector's next progress pass.
 */
void mock_fail_connects(int n, int status, bool at_once);

/* Messages ep sends from now on vanish silently (a silent peer). */
void mock_ep_set_drop(struct ferry_ep *ep, bool drop);

/* Messages ep sends from now on are delivered no earlier than delay_ns later. */
void mock_ep_set_delay(struct ferry_ep *ep, uint64_t delay_ns);

/* The provider reports a connection failure on ep (ferryi_ep_failed). */
void mock_ep_fail(struct ferry_ep *ep, int status);

/*
 * Sends a core message from ep to its peer exactly as given, bypassing the core: a
 * peer that ignores flow control or sends malformed messages. Returns 0 or
 * FERRY_ENOTCONN.
 */
int mock_ep_inject(struct ferry_ep *ep, const struct ferryi_msg *m, const void *data,
		   size_t len);

/* Messages waiting to be delivered to ep. */
unsigned mock_ep_queued(struct ferry_ep *ep);

/* Counters since mock_reset(). */
enum mock_counter {
	MOCK_CNT_EAGER = FERRYI_MSG_EAGER, /* core messages sent, by ferryi_msg_type  */
	MOCK_CNT_RTS = FERRYI_MSG_RTS,
	MOCK_CNT_FIN = FERRYI_MSG_FIN,
	MOCK_CNT_PROBE = FERRYI_MSG_PROBE,
	MOCK_CNT_PROBE_ACK = FERRYI_MSG_PROBE_ACK,
	MOCK_CNT_GOODBYE = FERRYI_MSG_GOODBYE,
	MOCK_CNT_CREDIT = FERRYI_MSG_CREDIT,
	MOCK_CNT_FIN_ACK = FERRYI_MSG_FIN_ACK,
	MOCK_CNT_WRITE = FERRYI_MSG_MAX_,  /* one-sided requests and answers          */
	MOCK_CNT_WRITE_ACK,
	MOCK_CNT_READ_REQ,
	MOCK_CNT_READ_RESP,
	MOCK_CNT_DROPPED,                  /* vanished: drop knob or peer gone        */
	MOCK_CNT_CONNECTS,                 /* connect() calls                         */
	MOCK_CNT_ACCEPTS,                  /* endpoints created on a listener         */
	MOCK_CNT_MAX_,
};
unsigned mock_count(enum mock_counter c);

/* When the i-th connect() since mock_reset() was called, in its context's clock. */
#define MOCK_CONNECT_LOG 64
uint64_t mock_connect_time(unsigned i);

/* ------------------------------------------------------------------ fake clock */

/* One clock shared by every context that uses it (starts at 1000 s). */
uint64_t mt_clock_fn(void *arg);
uint64_t mt_clock_now(void);
void mt_clock_advance_ms(uint64_t ms);
void mt_clock_advance_ns(uint64_t ns);

/*
 * Time warp for tests that block inside ferry (connect backoff): while running, a
 * thread advances the fake clock by step_ns whenever a thread sleeps in ctx's epoll,
 * and wakes it. Sleeps in ferry thereby last step_ns of fake time and almost no real
 * time.
 */
void mt_warp_start(struct ferry_ctx *ctx, uint64_t step_ns);
void mt_warp_stop(void);

/* ------------------------------------------------------------------ test helpers */

/*
 * Unit-test defaults on top of ferry_config_init(): providers "mock", log errors only,
 * no reaping, no probes, no connect retries, 1 s connect and handshake timeouts.
 */
void mt_config(struct ferry_config *cfg);

/*
 * Creates a context, stops its poller thread (tests drive time themselves) and, with
 * fake_clock, puts it on the fake clock. Asserts success.
 */
struct ferry_ctx *mt_ctx(const struct ferry_config *cfg, bool fake_clock);

/* A progress pass, then one poller pass (reaping, probes, timers), under the lock. */
void mt_tick(struct ferry_ctx *ctx);

/* Progress passes on each context, rounds times (ctxs may contain NULLs). */
void mt_progress(struct ferry_ctx *const *ctxs, int n, int rounds);

/* Advances the fake clock by total_ms in steps of step_ms, ticking every context. */
void mt_advance(struct ferry_ctx *const *ctxs, int n, uint64_t total_ms, uint64_t step_ms);

/*
 * Polls cq for one completion, driving progress on ctxs between attempts (at most
 * 1000 rounds, no sleeping). Returns 1 with *out filled, or 0.
 */
int mt_poll1(struct ferry_cq *cq, struct ferry_completion *out,
	     struct ferry_ctx *const *ctxs, int n);

/* Polls every waiting completion of cq (after progress on ctxs); returns the count. */
int mt_drain(struct ferry_cq *cq, struct ferry_completion *out, int max,
	     struct ferry_ctx *const *ctxs, int n);

/* Closes every endpoint still in ctx's pool (test teardown). */
void mt_close_pool(struct ferry_ctx *ctx);

/* Stats of the whole context. */
struct ferry_stats mt_stats(struct ferry_ctx *ctx);

/*
 * The end-of-test leak check: no endpoint open, no region registered, every posted
 * operation completed, no completion left unpolled in the default queue.
 */
void mt_assert_clean(struct ferry_ctx *ctx);

/*
 * A client context a, a server context b listening on "mock://NAME:0" and, after
 * mt_pair_connect(), one connection between them (ea on a, eb on b, each held once).
 */
struct mt_pair {
	struct ferry_ctx *a, *b;
	struct ferry_listener *l;
	char uri[FERRYI_URI_MAX];
	struct ferry_ep *ea, *eb;
};

/* NULL configs mean mt_config(). */
void mt_pair_open(struct mt_pair *p, const struct ferry_config *ca,
		  const struct ferry_config *cb, bool fake_clock);
/* Connects a to b (flags: FERRY_CONNECT_*) and accepts on b; asserts success. */
void mt_pair_connect(struct mt_pair *p, unsigned flags, struct ferry_ep **ea,
		     struct ferry_ep **eb);
/*
 * Gives back what the pair still holds, closes pooled endpoints, drives both sides
 * until every endpoint is gone, checks both contexts for leaks and destroys them.
 */
void mt_pair_close(struct mt_pair *p);
/* Destroys whatever the pair still has, without checks (teardown after a failure). */
void mt_pair_destroy(struct mt_pair *p);

/* Deterministic pseudo-random numbers (xorshift64*). */
uint64_t mt_rand(uint64_t *state);
/* Fills buf with a pattern derived from seed; mt_check_pattern verifies it. */
void mt_fill_pattern(void *buf, size_t len, uint64_t seed);
bool mt_check_pattern(const void *buf, size_t len, uint64_t seed);

#endif /* FERRY_TESTS_UNIT_MOCK_PROVIDER_H */
