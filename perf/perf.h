/*
 * perf.h - shared declarations of ferry_perf, the perftest-style benchmark.
 *
 * Design notes
 *  - Public API only (ferry/ferry.h): ferry_perf is what a user could write.
 *  - One context, one completion queue (the context's default) and one thread per
 *    side. Data operations carry an odd user_ctx ((ep index << 1) | 1); control
 *    operations carry a pointer to their struct perf_oob_op, which is always even, so
 *    one poll loop tells them apart without a look-up.
 *  - Control messages travel over ferry itself as tagged sends. The top byte of a tag
 *    names its kind and control receives mask exactly that byte, so control never
 *    matches data and data never matches control.
 *  - Every message size is one "round": ROUND -> READY -> run -> DONE (each endpoint)
 *    -> DRAIN (send_bw) -> RESULT -> REPORT. With --check an untimed checking round
 *    runs before the timed one: bytes are never touched while timing.
 *  - The data path allocates nothing: buffers, timestamp arrays and counters are set
 *    up before a round starts; completions are polled up to PERF_POLL_BATCH at once.
 */
#ifndef FERRY_PERF_H
#define FERRY_PERF_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <sys/resource.h>

#include <ferry/ferry.h>

/* perftest's defaults (perftest_parameters.h) */
#define PERF_DEF_PORT 18515
#define PERF_DEF_SIZE_BW 65536
#define PERF_DEF_SIZE_LAT 2
#define PERF_DEF_ITERS_LAT 1000
#define PERF_DEF_ITERS_BW 5000
#define PERF_DEF_TX_BW 128
#define PERF_DEF_TX_LAT 1
#define PERF_DEF_RX_SEND 512        /* perftest's rx-depth for send tests */
#define PERF_MIN_ITERS 5
#define PERF_MAX_ITERS 100000000ull
#define PERF_MAX_TX 15000
#define PERF_MAX_QPS 16384
#define PERF_ALL_MIN_SIZE 2
#define PERF_ALL_MAX_SIZE (1ull << 23)
#define PERF_LAT_TAIL 2             /* perftest drops the two largest latency samples */
#define PERF_DEF_MARGIN_S 2.0       /* duration mode: warm-up/cool-down excluded */

#define PERF_POLL_BATCH 64
#define PERF_BUF_MIN (4u << 20)     /* per-endpoint buffer, at least 2 x largest size */
#define PERF_CHECK_MAX_ITERS 1000   /* a checking round verifies at most this many */

enum perf_test {
	PERF_WRITE_BW = 0,
	PERF_WRITE_LAT,
	PERF_READ_BW,
	PERF_READ_LAT,
	PERF_SEND_BW,
	PERF_SEND_LAT,
	PERF_TEST_COUNT,
};

enum perf_poll_mode {
	PERF_POLL_BUSY = 0, /* spin on ferry_cq_poll(), like perftest */
	PERF_POLL_WAIT,     /* sleep in ferry_cq_wait() / poll() on the context fd */
};

struct perf_params {
	enum perf_test test;
	int is_lat;
	uint64_t size;
	int all;                 /* -a: every power of two 2..2^23 */
	uint64_t iters;
	double duration;         /* -D seconds; 0 = iterations mode */
	double margin;           /* duration mode: seconds excluded at both ends */
	uint32_t depth;          /* -t: outstanding operations per endpoint */
	uint32_t qps;            /* -q: endpoints */
	uint32_t port;
	int port_set;
	int report_gbits;
	int no_more;        /* --no_more: bw posts without FERRY_OP_MORE */
	int json;
	int loopback;
	int check;
	int quiet;               /* the loopback child: errors only */
	enum perf_poll_mode poll;
	uint64_t warmup;         /* untimed iterations before each timed round */
	int warmup_set;
	const char *provider;    /* --provider: a name or a full URI */
	const char *host;        /* server's host; NULL on the server */
};

/* ------------------------------------------------------------------ tags */

enum perf_kind {
	PERF_K_HELLO = 1,
	PERF_K_RKEY,
	PERF_K_ROUND,
	PERF_K_READY,
	PERF_K_DONE,
	PERF_K_DRAIN,
	PERF_K_RESULT,
	PERF_K_REPORT,
	PERF_K_DATA = 0x40, /* send_bw payload, seq = per-endpoint sequence */
	PERF_K_PING,        /* send_lat, client -> server */
	PERF_K_PONG,        /* send_lat, server -> client */
};

#define PERF_KIND_SHIFT 56
#define PERF_KIND_MASK (UINT64_C(0xff) << PERF_KIND_SHIFT)
#define PERF_SEQ_MASK ((UINT64_C(1) << PERF_KIND_SHIFT) - 1)
#define PERF_SEQ_STOP (UINT64_C(1) << 55) /* send_lat in duration mode: the last ping */
#define PERF_TAG(kind, seq) (((uint64_t)(kind) << PERF_KIND_SHIFT) | ((seq) & PERF_SEQ_MASK))
#define PERF_TAG_KIND(tag) ((unsigned)((tag) >> PERF_KIND_SHIFT))

#define PERF_DATA_CTX(e) ((void *)(((uintptr_t)(e) << 1) | 1u))
#define PERF_CTX_IS_DATA(p) (((uintptr_t)(p)) & 1u)
#define PERF_CTX_EP(p) ((uint32_t)(((uintptr_t)(p)) >> 1))

/* ------------------------------------------------------------------ control messages */

#define PERF_MAGIC 0x50595246u /* "FRYP" little-endian; reads reversed across byte orders */
#define PERF_PROTO_VERSION 1
#define PERF_HELLO_CHECK 1u
#define PERF_HELLO_GBITS 2u
#define PERF_ROUND_CHECK 1u
#define PERF_ROUND_END 2u

/* One struct for every control message; each kind uses the fields named beside it. */
struct perf_msg {
	uint32_t magic;
	uint32_t kind;
	int32_t status;       /* READY, RESULT: 0 or the FERRY_E* that failed */
	uint32_t flags;       /* ROUND: PERF_ROUND_* */
	uint64_t test;        /* HELLO */
	uint64_t qps;         /* HELLO */
	uint64_t poll;        /* HELLO */
	uint64_t buf_len;     /* HELLO: each side's per-endpoint buffer */
	uint64_t size;        /* ROUND */
	uint64_t iters;       /* ROUND: timed iterations per endpoint */
	uint64_t warmup;      /* ROUND */
	uint64_t duration_ms; /* ROUND: 0 = iterations mode */
	uint64_t depth;       /* ROUND */
	uint64_t nslots;      /* ROUND: buffer slots of size bytes used per endpoint */
	uint64_t count;       /* DONE: data operations this endpoint ran; DRAIN: extra sends */
	uint64_t verified;    /* RESULT: transfers the server verified */
	uint64_t errors;      /* RESULT: mismatches the server found */
	double cpu;           /* RESULT: server's CPU utilisation over the run, in % */
	uint32_t ep_index;    /* RKEY */
	uint32_t blob_len;    /* RKEY */
	uint8_t blob[FERRY_RKEY_MAX]; /* RKEY: ferry_mr_pack() output; REPORT: text line */
};

/* ------------------------------------------------------------------ connection */

struct perf_ep {
	struct ferry_ep *ep;
	uint8_t *buf;            /* buf_len bytes, page aligned, registered as mr */
	struct ferry_mr *mr;
	struct ferry_rkey *rkey; /* the peer's buffer on this endpoint */
	uint64_t rkey_len;
};

/* Control operation in flight; its address is the operation's (even) user_ctx. */
struct perf_oob_op {
	int done;
	int status;
	uint64_t tag;
	uint64_t len;
};

struct perf_conn {
	const struct perf_params *p;
	int server;
	struct ferry_ctx *ctx;
	struct ferry_cq *cq;     /* the context's default queue: every operation reports here */
	struct ferry_listener *listener;
	struct perf_ep *eps;
	uint32_t n;
	size_t buf_len;          /* own per-endpoint buffer */
	size_t peer_buf_len;
	char uri[512];           /* connected to (client) or listening on (server) */
	const char *provider;    /* ferry_ep_provider() of the first endpoint */
	char peer[256];
	uint64_t stall_ns;       /* client: no completion for this long is an error */
	unsigned empty_polls;    /* busy polling: polls in a row that found nothing */
	struct perf_msg ready_msg; /* server: READY, see perf_oob_send_ready() */
	struct perf_oob_op ready_op;
};

/* One round's settings, shared by both sides (from the ROUND message). */
struct perf_round {
	uint64_t size;
	uint64_t iters;          /* timed iterations per endpoint (iterations mode) */
	uint64_t warmup;
	double duration;         /* seconds; 0 = iterations mode */
	double margin;
	uint32_t depth;
	uint64_t nslots;
	int check;
};

struct perf_cpu {
	struct rusage ru;
	uint64_t ns;
};

/* What the client measured in one round. */
struct perf_measure {
	uint64_t size;
	uint64_t iters;          /* reported #iterations (per endpoint, like perftest) */
	uint64_t ops;            /* operations over the measured interval, all endpoints */
	uint64_t t0, t1;         /* measured interval (ns) */
	uint64_t *tposted;       /* bw, iterations mode: per post / per completion */
	uint64_t *tcompleted;
	uint64_t nstamps;
	uint64_t *tlat;          /* lat, iterations mode: start of each iteration */
	uint64_t nlat;
	uint64_t *scratch;       /* nlat deltas for the statistics */
	struct perf_cpu cpu0, cpu1;
	double cpu_local, cpu_peer;
	uint64_t verified;       /* check rounds: transfers verified by the client */
	uint64_t peer_verified;
	uint64_t errors;         /* mismatches, both sides */
};

/* ------------------------------------------------------------------ time and cpu */

static inline uint64_t perf_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/*
 * A cycle counter for the per-iteration stamps, as perftest's get_cycles():
 * CLOCK_MONOTONIC is a system call where the kernel does not trust the TSC (1.2 us a
 * reading in the soft-RoCE VM, QEMU without KVM), and a stamp per iteration would add
 * that to every measured round trip. perf_stamps_to_ns() turns the stamps into
 * perf_now() nanoseconds at the rate measured over the same interval.
 */
static inline uint64_t perf_ticks(void)
{
#if defined(__x86_64__)
	uint32_t lo, hi;

	__asm__ __volatile__("rdtsc" : "=a"(lo), "=d"(hi));
	return (uint64_t)hi << 32 | lo;
#elif defined(__aarch64__)
	uint64_t v;

	__asm__ __volatile__("isb; mrs %0, cntvct_el0" : "=r"(v));
	return v;
#else
	return perf_now();
#endif
}

struct perf_stamp_base {
	uint64_t ns, ticks;
};

static inline void perf_stamp_base(struct perf_stamp_base *b)
{
	b->ns = perf_now();
	b->ticks = perf_ticks();
}

/* Converts n perf_ticks() stamps taken since base (now over) into nanoseconds. */
void perf_stamps_to_ns(const struct perf_stamp_base *base, uint64_t *stamps, uint64_t n);

/*
 * Duration mode's measured window, as perftest: r->margin seconds cut off at both ends.
 * perf_window_step() takes the clock and the operations done so far: it opens the
 * window (m->t0, cpu0), closes it (m->t1, m->ops, cpu1), and returns 1 once the whole
 * duration is over. state is 2 when the window closed.
 */
struct perf_window {
	uint64_t t_margin, t_stop, t_end;
	uint64_t ops0;
	int state;
};

void perf_window_start(struct perf_window *w, const struct perf_round *r, uint64_t start);
int perf_window_step(struct perf_window *w, struct perf_measure *m, uint64_t now,
		     uint64_t ops);

void perf_cpu_mark(struct perf_cpu *m);
/* User + system time between two marks over wall time, in percent. */
double perf_cpu_pct(const struct perf_cpu *a, const struct perf_cpu *b);

/* ------------------------------------------------------------------ params.c */

/* @return 0 to run, 1 when help was printed, -1 on a usage error (printed). */
int perf_params_parse(int argc, char **argv, struct perf_params *p);
const char *perf_test_name(enum perf_test t);
/* Builds "PROVIDER://host:port" from --provider, host and -p (full URIs as given). */
int perf_uri_build(const struct perf_params *p, const char *host, char *buf, size_t len);
/* The provider's name as given to ferry (text before "://", or the bare name). */
void perf_provider_name(const struct perf_params *p, char *buf, size_t len);
/* Buffer slots of size bytes a round uses on each endpoint. */
uint64_t perf_nslots(const struct perf_params *p, uint64_t size, size_t buf_len, int check);
size_t perf_buf_len(const struct perf_params *p);
uint32_t perf_rx_depth(const struct perf_params *p);

/* ------------------------------------------------------------------ oob.c */

int perf_conn_open(struct perf_conn *pc, const struct perf_params *p, int server);
int perf_conn_connect(struct perf_conn *pc, const char *uri);
/* Listens; writes the listener's address to notify_fd (loopback) when >= 0. */
int perf_conn_listen(struct perf_conn *pc, const char *uri, int notify_fd);
int perf_conn_accept(struct perf_conn *pc, int timeout_ms);
void perf_conn_close(struct perf_conn *pc);

int perf_oob_send(struct perf_conn *pc, uint32_t e, uint32_t kind, struct perf_msg *m);
int perf_oob_recv(struct perf_conn *pc, uint32_t e, uint32_t kind, struct perf_msg *m);
/* Posts without waiting; m and op must live until op->done (see perf_oob_complete). */
int perf_oob_post_send(struct perf_conn *pc, uint32_t e, uint32_t kind, struct perf_msg *m,
		       struct perf_oob_op *op);
int perf_oob_post_recv(struct perf_conn *pc, uint32_t e, uint32_t kind, struct perf_msg *m,
		       struct perf_oob_op *op);
int perf_oob_wait(struct perf_conn *pc, struct perf_oob_op *op);
/*
 * Server: tells the client to start the round. Not waited for here: the client may
 * start sending before this send completes (ofi+tcp's rxm completed it after the first
 * data arrived), so the round's own loop accounts for its completion like any control
 * op's, and perf_oob_ready_wait() makes sure of it once the round's data is done.
 */
int perf_oob_send_ready(struct perf_conn *pc);
int perf_oob_ready_wait(struct perf_conn *pc);
/* Hands a control completion to its perf_oob_op; returns its status. */
int perf_oob_complete(const struct ferry_completion *c);

/*
 * Polls the queue once (busy) or, if may_block and --poll=wait, sleeps until
 * something completes. Returns the number of completions or a negative error.
 */
int perf_poll(struct perf_conn *pc, struct ferry_completion *c, int max, int may_block);
/* Waits until the context's fd is readable (--poll=wait), then drives progress. */
int perf_wait_fd(struct perf_conn *pc, int timeout_ms);
/* Prints a failed completion (ferry_strerror) and returns its status. */
int perf_op_failed(const struct ferry_completion *c, const char *what);
/* Prints a failed call and returns rc. */
int perf_call_failed(int rc, const char *call);
/* Stall detector for loops that expect completions; returns FERRY_ETIMEDOUT. */
int perf_stalled(struct perf_conn *pc, uint64_t last_ns, const char *what);

/* ------------------------------------------------------------------ check.c */

uint64_t perf_seed(uint32_t side, uint32_t e, uint64_t i);
void perf_fill(void *buf, size_t len, uint64_t seed);
/* 0 when buf holds seed's pattern; else prints the first mismatch and returns -1. */
int perf_verify(const void *buf, size_t len, uint64_t seed, const char *what);

/* ------------------------------------------------------------------ bw.c / lat.c */

int perf_bw_client(struct perf_conn *pc, const struct perf_round *r, struct perf_measure *m);
int perf_bw_server(struct perf_conn *pc, const struct perf_round *r, struct perf_msg *result);
int perf_lat_client(struct perf_conn *pc, const struct perf_round *r, struct perf_measure *m);
int perf_lat_server(struct perf_conn *pc, const struct perf_round *r, struct perf_msg *result);

/* ------------------------------------------------------------------ report.c */

void perf_report_banner(const struct perf_params *p, const struct perf_conn *pc);
void perf_report_header(const struct perf_params *p);
void perf_report_footer(const struct perf_params *p);
/* Formats the round's table line (no newline) and prints it (text or JSON). */
int perf_report_round(const struct perf_params *p, const struct perf_conn *pc,
		      struct perf_measure *m, char *line, size_t len);

#endif /* FERRY_PERF_H */
