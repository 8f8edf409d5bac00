/*
 * conf_harness.h - shared harness of the provider conformance suite.
 *
 * Every conf_<area>.c is written once and run per provider: the provider comes from
 * FERRY_TEST_PROVIDER (tcp, verbs, ofi+tcp, ofi+shm, ofi+verbs; default tcp) and the
 * host from FERRY_TEST_HOST (default 127.0.0.1). FERRY_TEST_FILTER (a cmocka pattern,
 * e.g. 'test_msg_*') runs only the matching tests. The suite uses only the public API.
 *
 * Design notes:
 *   - Both sides live in one process and one thread: a server context and a client
 *     context. ferry_connect() blocks while driving only the client context, so the
 *     harness accepts on a helper thread (ferry_listener_accept drives the server).
 *     Everything else is single-threaded: conf_drive() sleeps in epoll on both
 *     contexts' fds (ferry_ctx_fd) and then drives both, so neither side starves and
 *     nothing busy-loops.
 *   - Every wait has a deadline that fails the test with what was seen so far; a
 *     conformance test must never hang.
 *   - A binary whose provider cannot run here prints "SKIP: <provider>: <reason>" and
 *     exits 77 (CTest SKIP_RETURN_CODE). TCP is always built and loopback always
 *     exists, so an unusable tcp is a failure, not a skip.
 *   - Objects a test creates through conf_alloc/conf_reg/conf_unpack are tracked and
 *     released by the per-test teardown, so a failing test does not cascade; the
 *     teardown then checks the leak gauges (eps_open, mrs_registered, ops in flight).
 */
#ifndef FERRY_CONF_HARNESS_H
#define FERRY_CONF_HARNESS_H

#include <ferry/ferry.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#define CONF_SKIP_RC 77
#define CONF_WAIT_MS 10000   /* default deadline of one wait: fail, never hang */
#define CONF_ADDR_MAX 1024

/* Filled by conf_run() before any test runs. */
extern const char *conf_prov;      /* "tcp", "verbs", "ofi+tcp", "ofi+shm", ...   */
extern const char *conf_prov_base; /* "tcp", "verbs", "ofi" (ferry_provider_list) */
bool conf_prov_pins_memory(void);  /* verbs, ofi+verbs: RLIMIT_MEMLOCK matters       */
extern const char *conf_host;      /* "127.0.0.1" or FERRY_TEST_HOST                */
extern char conf_listen_uri[256];  /* "<prov>://<host>:0"                          */

/* Two contexts, a listener on the server, and an epoll set over both contexts. */
struct conf_world {
	struct ferry_ctx *srv, *cli;
	struct ferry_listener *l;
	char addr[CONF_ADDR_MAX];  /* the listener's printable address              */
	int epfd;
};

struct conf_track; /* tracked allocations, regions and rkeys (conf_harness.c) */

/* cmocka state of every conformance file. */
struct conf {
	struct conf_world w;       /* group-wide: created by conf_group_setup        */
	struct ferry_ep *cep, *sep; /* per test: connected by conf_setup_pair        */
	struct conf_world w2;      /* per test, optional: a world the test may break;
				      the teardown destroys whatever is left of it   */
	struct conf_track *track;
};

/* ------------------------------------------------------------------ running */

/*
 * Checks that the provider can run here (else prints SKIP and returns 77), runs the
 * group and returns the process exit code. Also returns 77 if every test skipped.
 */
int conf_run(const char *area, const struct CMUnitTest *tests, size_t n);
#define CONF_RUN(area, tests) conf_run((area), (tests), sizeof(tests) / sizeof((tests)[0]))

/* Group fixtures: a world (both contexts and the listener). */
int conf_group_setup(void **state);
int conf_group_teardown(void **state);
/* Per-test fixtures: conf_setup_pair also connects cep<->sep; both teardowns close
 * whatever the test left, free tracked objects and check for leaks. */
int conf_setup_pair(void **state);
int conf_setup_none(void **state);
int conf_teardown(void **state);

/* Marks the current test skipped with a reason (printed "SKIP: ..."), then skip(). */
#define conf_skip(...)                                                               \
	do {                                                                         \
		conf_note_skip(__VA_ARGS__);                                         \
		skip();                                                              \
	} while (0)
void conf_note_skip(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Fails the test with a formatted message (cmocka's fail_msg without the limits). */
#define conf_fail(...) conf_fail_at(__FILE__, __LINE__, __VA_ARGS__)
void conf_fail_at(const char *file, int line, const char *fmt, ...)
	__attribute__((format(printf, 3, 4), noreturn));

/* Asserts a ferry return code equals want, naming both codes on failure. */
#define conf_assert_rc(got, want) conf_assert_rc_at(__FILE__, __LINE__, #got, (got), (want))
void conf_assert_rc_at(const char *file, int line, const char *expr, int got, int want);

/* ------------------------------------------------------------------ contexts */

/* The harness configuration: short timeouts, only the provider under test. */
void conf_config(struct ferry_config *cfg);
int conf_ctx_create(struct ferry_ctx **out);

/* Opens a world: server + client context, listener on conf_listen_uri, epoll set. */
void conf_world_open(struct conf_world *w);
/* The same with a config changed per side before the contexts are created. */
typedef void (*conf_tweak_fn)(struct ferry_config *cfg, bool server);
void conf_world_open_tweak(struct conf_world *w, conf_tweak_fn tweak);
/*
 * The same without asking for the contexts' fds (ferry_ctx_fd): providers may then
 * rely on threads that sleep telling them so. conf_drive does not sleep in such a
 * world; tests sleep through the API (ferry_cq_wait) or export an fd themselves.
 */
void conf_world_open_unexported(struct conf_world *w, conf_tweak_fn tweak);
/* Closes the listener, checks both contexts are clean (if check), destroys them.
 * A context already destroyed by the test must be set to NULL first. */
void conf_world_close(struct conf_world *w, bool check);

/* Background progress on one context (for tests where nobody accepts). */
struct conf_bg;
struct conf_bg *conf_bg_start(struct ferry_ctx *ctx);
void conf_bg_stop(struct conf_bg *bg);

/*
 * Connects n endpoints from w->cli to w->srv's listener (flags: FERRY_CONNECT_*),
 * accepting on a helper thread. On return cep[i] and sep[i] are the two ends of one
 * connection (paired by a message exchange when n > 1); each holds one reference.
 */
#define conf_connect_n(w, n, flags, cep, sep)                                         \
	conf_connect_n_at(__FILE__, __LINE__, (w), (n), (flags), (cep), (sep))
void conf_connect_n_at(const char *file, int line, struct conf_world *w, int n,
		       unsigned flags, struct ferry_ep **cep, struct ferry_ep **sep);
#define conf_connect(w, flags, cep, sep) conf_connect_n((w), 1, (flags), (cep), (sep))
/* Longest single ferry_connect() call of the last conf_connect_n, in ms. */
extern uint64_t conf_connect_worst_ms;

/* Drives both contexts once, sleeping in epoll up to wait_ms for work. */
void conf_drive(struct conf_world *w, int wait_ms);
/* Drives both contexts for about ms milliseconds. */
void conf_drive_for(struct conf_world *w, int ms);

/*
 * Waits (driving both contexts) until n completions arrived on cq; fails the test
 * after timeout_ms (< 0: CONF_WAIT_MS). Returns n.
 */
#define conf_wait(w, cq, out, n) conf_wait_at(__FILE__, __LINE__, (w), (cq), (out), (n), -1)
#define conf_wait_ms(w, cq, out, n, ms)                                              \
	conf_wait_at(__FILE__, __LINE__, (w), (cq), (out), (n), (ms))
int conf_wait_at(const char *file, int line, struct conf_world *w, struct ferry_cq *cq,
		 struct ferry_completion *out, int n, int timeout_ms);

/* Drives both contexts for ms and fails if any completion arrives on cq. */
#define conf_expect_none(w, cq, ms) conf_expect_none_at(__FILE__, __LINE__, (w), (cq), (ms))
void conf_expect_none_at(const char *file, int line, struct conf_world *w,
			 struct ferry_cq *cq, int ms);

#define CONF_ANY_ERROR 1  /* conf_expect_each_once: any status < 0 */
#define CONF_ANY_STATUS 2 /* conf_expect_each_once: any status at all */
/*
 * Checks that the n completions are exactly the n user contexts in ctxs, each once
 * (n <= 64), all with status want (a FERRY_E* code, 0, CONF_ANY_ERROR or
 * CONF_ANY_STATUS).
 */
void conf_expect_each_once(const struct ferry_completion *cmp, int n, void *const *ctxs,
			   int want);

/* Drives both contexts until pred(arg) is true; false after timeout_ms. */
bool conf_drive_until(struct conf_world *w, bool (*pred)(void *arg), void *arg,
		      int timeout_ms);

/* Drives until ferry_ep_status(ep) != 0; fails the test after CONF_WAIT_MS. */
#define conf_wait_ep_down(w, ep) conf_wait_ep_down_at(__FILE__, __LINE__, (w), (ep))
int conf_wait_ep_down_at(const char *file, int line, struct conf_world *w,
			 struct ferry_ep *ep);

/*
 * Leak check of one context after its objects are closed: drives w until the gauges
 * settle, then asserts eps_open == 0, mrs_registered == 0, ops_posted == ops_completed.
 */
#define conf_check_clean(w, ctx, who) conf_check_clean_at(__FILE__, __LINE__, (w), (ctx), (who))
void conf_check_clean_at(const char *file, int line, struct conf_world *w,
			 struct ferry_ctx *ctx, const char *who);

/* Polls and discards every completion waiting on cq (driving w). */
int conf_drain(struct conf_world *w, struct ferry_cq *cq);

/* ------------------------------------------------------------------ tracked objects */

/* Zeroed memory (mmap above 1 MiB), freed by the teardown unless conf_free()d. */
void *conf_alloc(struct conf *c, size_t len);
void conf_free(struct conf *c, void *p);

/* ferry_mr_reg that asserts success; deregistered by the teardown unless conf_dereg. */
struct ferry_mr *conf_reg(struct conf *c, struct ferry_ctx *ctx, void *addr, size_t len,
			  unsigned access);
void conf_dereg(struct conf *c, struct ferry_mr *mr);
/* Same, but returns ferry_mr_reg's code instead of asserting (tracked on success). */
int conf_try_reg(struct conf *c, struct ferry_ctx *ctx, void *addr, size_t len,
		 unsigned access, struct ferry_mr **out);

/* Packs mr on its side and unpacks it in ctx; destroyed by the teardown. */
struct ferry_rkey *conf_rkey(struct conf *c, struct ferry_ctx *ctx,
			     const struct ferry_mr *mr);
void conf_rkey_destroy(struct conf *c, struct ferry_rkey *rk);

/* Endpoints the teardown closes unless the test conf_close()s them first. */
void conf_own_ep(struct conf *c, struct ferry_ep *ep);
void conf_close(struct conf *c, struct ferry_ep *ep);

/* ------------------------------------------------------------------ data */

/* Deterministic pseudo-random bytes from seed; conf_check returns the first bad
 * offset or -1. */
void conf_fill(void *buf, size_t len, uint64_t seed);
long long conf_check(const void *buf, size_t len, uint64_t seed);
/* Asserts buf holds conf_fill(seed) bytes, reporting the first mismatch. */
#define conf_assert_pattern(buf, len, seed, what)                                    \
	conf_assert_pattern_at(__FILE__, __LINE__, (buf), (len), (seed), (what))
void conf_assert_pattern_at(const char *file, int line, const void *buf, size_t len,
			    uint64_t seed, const char *what);
/* Asserts every byte of buf equals b. */
#define conf_assert_bytes(buf, len, b, what)                                         \
	conf_assert_bytes_at(__FILE__, __LINE__, (buf), (len), (b), (what))
void conf_assert_bytes_at(const char *file, int line, const void *buf, size_t len,
			  int b, const char *what);

/* RLIMIT_MEMLOCK after raising the soft limit to the hard one (UINT64_MAX: none). */
uint64_t conf_memlock_limit(void);

/* Monotonic milliseconds. */
uint64_t conf_now_ms(void);

/* "EMSGSIZE(-90)" style name of a code, for messages. */
const char *conf_err(int rc);

#endif /* FERRY_CONF_HARNESS_H */
