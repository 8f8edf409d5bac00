/*
 * ft.h - shared harness of the fault-injection and soak tests.
 *
 * Only ferry's public API is used. The pieces:
 *
 *   - a small application protocol over ferry (tags below) so that every transfer is
 *     verified at both ends: data is a pattern derived from a seed and the position of
 *     each 8-byte word, the receiver checks it and both ends compute a checksum that
 *     the server reports back;
 *   - ft_tab: the exactly-once ledger. Every ferry operation gets a fresh 64-bit id
 *     (its user_ctx) entered in a live table before it is posted; a completion whose id
 *     is not live is a duplicate (or invented) completion and is counted as a bug, and
 *     ops still live at the end are lost completions;
 *   - ft_service: the server side of the protocol (accepts, serves requests, verifies
 *     writes), driven by one thread;
 *   - ft_sess: the client side: logical operations (send, recv, write, read), each
 *     made of one to four ferry operations, with outcomes OK (verified), CORRUPT
 *     (reported success but the bytes are wrong) or FAILED (an error status);
 *   - helpers: a stderr tee to search ferry's log, spawning peer processes, checks.
 *
 * A logical operation, client view (aid = application id, unique per process):
 *   SEND   recv REPLY|aid; send CTRL{SEND}; send DATA|aid -> server verifies, replies
 *   RECV   recv DATA|aid; send CTRL{RECV}                 -> server sends the pattern
 *   WRITE  write into the server's write region; then recv REPLY|aid and
 *          send CTRL{VERIFY} -> server verifies the region range, replies
 *   READ   read from the server's read-only pattern region; verified locally
 *   INFO   recv REPLY|aid; send CTRL{INFO} -> the reply carries both rkey blobs
 *
 * Every wait in this harness is bounded; nothing here needs root.
 */
#ifndef FERRY_TESTS_FT_H
#define FERRY_TESTS_FT_H

#include <ferry/ferry.h>

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define FT_SKIP_RC 77

/* ------------------------------------------------------------------ basics */

uint64_t ft_now_ns(void);
uint64_t ft_now_ms(void);
void ft_sleep_ms(unsigned ms);
uint64_t ft_rand(uint64_t *state);
/* Uniform in [lo, hi]. */
uint64_t ft_rand_range(uint64_t *state, uint64_t lo, uint64_t hi);

/* Pattern: word i of a buffer is mix(seed, word0 + i); any slice can be checked. */
void ft_fill(void *buf, size_t len, uint64_t seed, uint64_t word0);
/* Offset of the first wrong byte, or -1. */
long long ft_check(const void *buf, size_t len, uint64_t seed, uint64_t word0);
/* Position-dependent 64-bit checksum of the bytes. */
uint64_t ft_sum(const void *buf, size_t len);

/* "EPROTO(-71)" for a ferry code, "OK(0)" for 0. Thread-local ring of buffers. */
const char *ft_err(int rc);

/* ------------------------------------------------------------------ checks */

extern atomic_int ft_failures;

/* "# ..." progress line on stdout. */
void ft_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void ft_fail_at(const char *file, int line, bool fatal, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* FT_EXPECT records a failure and goes on; FT_ASSERT stops the test (exit 1). */
#define FT_EXPECT(cond, ...)                                                         \
	do {                                                                         \
		if (!(cond))                                                         \
			ft_fail_at(__FILE__, __LINE__, false, __VA_ARGS__);          \
	} while (0)
#define FT_ASSERT(cond, ...)                                                         \
	do {                                                                         \
		if (!(cond))                                                         \
			ft_fail_at(__FILE__, __LINE__, true, __VA_ARGS__);           \
	} while (0)
#define FT_ASSERT_RC(expr, want)                                                     \
	do {                                                                         \
		int ft_rc_ = (expr);                                                 \
		if (ft_rc_ != (want))                                                \
			ft_fail_at(__FILE__, __LINE__, true, "%s: expected %s, got %s", \
				   #expr, ft_err(want), ft_err(ft_rc_));             \
	} while (0)

/* Prints every thread's stack (through gdb, when installed), once per process. */
void ft_stacks(void);
/* After `seconds`, prints "HANG: ...", the stacks, and exits 1: a hang inside a ferry
 * call is reported with where it hangs, before the CTest timeout kills the test. */
void ft_watchdog(unsigned seconds);
/* ft_watchdog(FT_WATCHDOG_S) when that is set and positive, else ft_watchdog(dflt);
 * dflt 0: no watchdog. */
void ft_watchdog_env(unsigned dflt);

/* Prints "PASS: name" or "FAIL: name (n failures)"; returns the exit code. */
int ft_finish(const char *name);

/* The provider under test, as the conformance suite names it: FERRY_TEST_PROVIDER,
 * "tcp" (default), "verbs", "ofi+tcp", "ofi+shm", ..., on the host FERRY_TEST_HOST
 * (default 127.0.0.1; for verbs the RDMA device's address). Used by the conformance
 * harness and faults.process.*; ft_peer inherits both. */
const char *ft_provider(void);
const char *ft_host(void);
/* "<provider>://<host>:<port>" (an IPv6 host in brackets; port 0: any). */
void ft_listen_uri(char *buf, size_t len, unsigned port);
/* Whether ft_provider() can run here: ferry_provider_list (for ofi+NAME, the fabric
 * NAME itself), a context and a listener. Else exits: 77 with "SKIP: <provider>:
 * <reason>" for a provider that is absent here, 1 ("FAIL") for tcp (always built, and
 * loopback always exists) or an error that is not absence. */
void ft_require_provider(void);

/* A context from the environment plus these overrides; fails the test on error.
 * providers NULL: the provider of ft_provider() ("ofi" for "ofi+tcp"). */
struct ferry_ctx *ft_ctx(const char *providers, ferry_event_fn ev, void *arg);

/* Leak gauges of a context: eps_open and mrs_registered back to 0, every op that
 * was posted completed. Drives progress for up to timeout_ms while they settle.
 * Returns true when clean (prints what is not). */
bool ft_ctx_clean(struct ferry_ctx *ctx, const char *who, int timeout_ms);

/* Whether a call that takes the context lock (ferry_stats_get) returns within
 * timeout_ms, tried on a helper thread. */
bool ft_ctx_responsive(struct ferry_ctx *ctx, int timeout_ms);
/* If ctx does not respond within 3 s: fails, prints the stacks and exits 1 (a stuck
 * context cannot be cleaned up). */
void ft_ctx_stuck_exit(struct ferry_ctx *ctx, const char *who);

/* ------------------------------------------------------------------ stderr tee */

/*
 * Redirects fd 2 into a pipe read by a forked tee process that copies every byte to
 * the original stderr and to a temporary file, so the test can search ferry's log
 * while nothing (not even a sanitizer report at abort) is lost. Returns 0 or -errno.
 */
int ft_logtee_start(void);
/* Bytes logged so far: a mark to search from. */
uint64_t ft_logtee_mark(void);
/* Waits up to timeout_ms until needle appears in the log after mark. */
bool ft_logtee_find(uint64_t mark, const char *needle, int timeout_ms);

/* ------------------------------------------------------------------ processes */

/*
 * Forks and execs argv with stdout on a pipe (*out_fd, close-on-exec) and stderr
 * inherited. The child dies with the parent (PR_SET_PDEATHSIG). Returns the pid or
 * -errno.
 */
pid_t ft_spawn(char *const argv[], int *out_fd);
/* Reads lines from fd until one starts with prefix; copies the rest (trimmed) into
 * buf. false after timeout_ms or EOF. Other lines are echoed with "# peer: ". */
bool ft_read_line(int fd, const char *prefix, char *buf, size_t len, int timeout_ms);
/* waitpid with a deadline; returns the wait status, or -1 after timeout (the child
 * is then SIGKILLed and reaped). */
int ft_wait_child(pid_t pid, int timeout_ms);

/* ------------------------------------------------------------------ the ledger */

/* Header embedded in every record that stands for one posted ferry operation. */
struct ft_tab;
struct ft_op {
	uint64_t id;
	enum ferry_op_type type;
	uint64_t posted_ns;
	void (*done)(struct ft_tab *t, struct ft_op *op, const struct ferry_completion *c);
};

struct ft_slot {
	uint64_t id;
	struct ft_op *op;
};

struct ft_tab {
	struct ferry_ctx *ctx;
	struct ferry_cq *cq;
	struct ft_slot *slots;
	size_t mask;
	uint64_t next_id;
	uint64_t live;
	uint64_t posted, completed, refused; /* refused: the post call itself failed */
	uint64_t bogus;                      /* completions for ids not live: duplicates */
	uint64_t type_mismatch;
	uint64_t last_done_ns;
	struct ft_lop *lops;                 /* client: logical ops in flight          */
	uint64_t lops_live;
	struct ft_counts *counts;            /* client: outcomes                       */
	void (*on_lop)(struct ft_tab *t, struct ft_lop *lop); /* optional, at finish   */
	void *user;
	struct ft_sess *zombies;             /* closed sessions with ops in flight       */
};

void ft_tab_init(struct ft_tab *t, struct ferry_ctx *ctx, struct ferry_cq *cq);
/* Frees the table; ops still live are reported as lost (returns their number). */
uint64_t ft_tab_fini(struct ft_tab *t, const char *who);
/* Enters op in the live table with a fresh id; returns the user_ctx to post with. */
void *ft_tab_arm(struct ft_tab *t, struct ft_op *op, enum ferry_op_type type,
		 void (*done)(struct ft_tab *, struct ft_op *, const struct ferry_completion *));
/* The post call failed: removes op again. */
void ft_tab_unarm(struct ft_tab *t, struct ft_op *op);
/* Waits up to timeout_ms for completions and dispatches them; returns the number
 * dispatched (0 on timeout) or a negative error. */
int ft_tab_poll(struct ft_tab *t, int timeout_ms);
/* Prints the live ops (for a test that timed out). */
void ft_tab_dump(struct ft_tab *t, const char *who, unsigned max);

/* ------------------------------------------------------------------ protocol */

enum ft_kind { FT_SEND = 0, FT_RECV, FT_WRITE, FT_READ, FT_INFO, FT_FREE, FT_NKINDS };
extern const char *const ft_kind_names[FT_NKINDS];

#define FT_TAG_KIND(k) ((uint64_t)(k) << 56)
#define FT_TAG_KIND_MASK (0xFFull << 56)
#define FT_TAG_AID_MASK ((1ull << 56) - 1)
enum { FT_K_CTRL = 0xC1, FT_K_REPLY = 0xA2, FT_K_DATA = 0xD3 };
#define FT_TAG(k, aid) (FT_TAG_KIND(k) | ((aid) & FT_TAG_AID_MASK))

#define FT_MAGIC 0xF7F7C0DEu
#define FT_RO_SEED 0x0DDBA11ull

enum ft_cmd { FT_CMD_INFO = 1, FT_CMD_SEND, FT_CMD_RECV, FT_CMD_VERIFY, FT_CMD_FREE };

/* Reply status beyond ferry's codes: the server saw wrong bytes / a bad request. */
#define FT_ST_BADDATA 1
#define FT_ST_BADREQ 2

struct ft_ctrl {
	uint32_t magic, cmd;
	uint64_t aid, len, seed, offset, region;
};

struct ft_reply {
	uint32_t magic;
	int32_t status;
	uint64_t aid, len, sum;
	uint64_t region, ro_len, wr_len;
	uint32_t ro_blob_len, wr_blob_len;
	uint8_t blobs[2 * FERRY_RKEY_MAX];
};

/* ------------------------------------------------------------------ server */

struct ft_service_cfg {
	const char *listen_uri; /* default ft_listen_uri()                                 */
	uint64_t ro_len;        /* read-only pattern region (default 16 MiB)               */
	uint64_t wr_max;        /* largest write region one INFO may ask (default 64 MiB)  */
	unsigned ctrl_depth;    /* control receives kept posted per endpoint (default 4)   */
	uint32_t max_connections;
};

struct ft_service_stats {
	uint64_t accepted, conns_live, conns_closed;
	uint64_t cmds[FT_NKINDS + 1];
	uint64_t verified_ok, verified_bad, bytes_in, bytes_out;
	uint64_t ep_failures;
	int last_failure;  /* status of the last endpoint failure seen */
	uint64_t fail_codes[8];
	int fail_code_val[8];
};

struct ft_service;
int ft_service_create(struct ferry_ctx *ctx, const struct ft_service_cfg *cfg,
		      struct ft_service **out);
const char *ft_service_addr(const struct ft_service *s);
/* One round: accept what is waiting, then wait up to timeout_ms for completions. */
int ft_service_step(struct ft_service *s, int timeout_ms);
/* Runs steps on a thread of its own until ft_service_stop_thread(). */
int ft_service_start_thread(struct ft_service *s);
void ft_service_stop_thread(struct ft_service *s);
void ft_service_get_stats(struct ft_service *s, struct ft_service_stats *out);
/* Closes the listener and every endpoint, waits (bounded) for every op, frees all.
 * Returns the number of problems (lost or duplicate completions). */
int ft_service_destroy(struct ft_service *s, int timeout_ms);

/* ------------------------------------------------------------------ client */

struct ft_load {
	uint32_t window;        /* logical ops in flight per session (<= 64)          */
	uint64_t max_msg;       /* send/recv length up to this                        */
	uint64_t max_rma;       /* write/read length up to this                       */
	uint64_t eager;         /* "small" means at most this (default 64 KiB)        */
	unsigned small_pct;     /* % of random lengths that are small                 */
	unsigned w[4];          /* weights of SEND, RECV, WRITE, READ                 */
	uint32_t op_timeout_ms; /* per ferry op deadline (0 = none)                   */
};
void ft_load_default(struct ft_load *l);

struct ft_counts {
	uint64_t ok[FT_NKINDS], corrupt[FT_NKINDS], failed[FT_NKINDS];
	uint64_t bytes_ok;
	int err_code[16];
	uint64_t err_count[16];
};
void ft_counts_add_err(struct ft_counts *c, int code);
uint64_t ft_counts_total(const struct ft_counts *c, int which); /* 0 ok 1 corrupt 2 failed */
void ft_counts_print(const struct ft_counts *c, const char *who);

struct ft_lop {
	struct ft_lop *prev, *next;
	struct ft_sess *s;
	enum ft_kind kind;
	uint64_t aid, len, seed, offset;
	int slot;
	uint8_t *buf;
	uint64_t sum_local;
	struct ft_ctrl ctrl;
	struct ft_reply reply;
	struct ft_sub {
		struct ft_op op;
		struct ft_lop *lop;
		int role;
	} sub[3];
	unsigned nsub, pending;
	int stage;
	int status;              /* first error of any ferry op                        */
	bool got_reply, data_ok, data_checked;
	uint64_t t_post_ns, t_done_ns;
	int outcome;             /* 0 ok, 1 corrupt, 2 failed                           */
	long long bad_at;        /* first wrong byte (CORRUPT)                          */
};

enum ft_sess_state { FT_SESS_OPENING, FT_SESS_READY, FT_SESS_FAILED };

struct ft_sess {
	struct ft_tab *tab;
	struct ferry_ep *ep;
	enum ft_sess_state state;
	int status;              /* why FAILED                                          */
	struct ferry_rkey *ro, *wr;
	uint64_t ro_len, wr_len, region;
	struct ft_load load;
	uint64_t rng;
	uint64_t slots_busy;
	uint32_t inflight;       /* logical ops                                         */
	bool closed;             /* ep given back; freed when inflight reaches 0        */
	uint64_t done, failed;
	struct ft_sess *znext;   /* zombie list                                         */
};

/*
 * Starts a session on ep (taking over the caller's reference): posts INFO asking for
 * a write region of window * max_rma bytes. Returns 0, or the post error (the session
 * then exists in state FAILED and must still be closed).
 */
int ft_sess_open(struct ft_tab *t, struct ferry_ep *ep, const struct ft_load *load,
		 uint64_t seed, struct ft_sess **out);
/* Polls the tab until the session is READY (0) or FAILED (its status), or timeout
 * (FERRY_ETIMEDOUT). */
int ft_sess_wait_ready(struct ft_sess *s, int timeout_ms);
/* Posts one logical op; len 0 = random by the load. Returns 0 or the post error of
 * its first ferry op (then nothing is in flight for it). */
int ft_sess_post(struct ft_sess *s, enum ft_kind kind, uint64_t len);
int ft_sess_post_random(struct ft_sess *s);
/* True when the session can take another op (READY and below its window). */
bool ft_sess_can_post(const struct ft_sess *s);
/*
 * Ends the session: sends FREE for its write region when healthy (if free_region),
 * then closes (close_ep) or releases the endpoint; the endpoint handle is not used
 * again. The session is freed when its last op completes (in ft_tab_poll).
 */
void ft_sess_close(struct ft_sess *s, bool close_ep, bool free_region);
/* Waits until every logical op of the tab finished; false after timeout (dumps). */
bool ft_tab_wait_idle(struct ft_tab *t, int timeout_ms, const char *who);

/*
 * Runs `nops` random logical ops over the sessions (keeping each one's window
 * full) and waits until every one finished; false after timeout_ms.
 */
bool ft_run(struct ft_tab *t, struct ft_sess **ss, int nsess, uint64_t nops,
	    int timeout_ms);

#endif /* FERRY_TESTS_FT_H */
