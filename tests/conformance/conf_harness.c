/*
 * conf_harness.c - see conf_harness.h for the design notes.
 */
#define _GNU_SOURCE
#include "conf_harness.h"
#include "ft.h" /* the hang watchdog, shared with the fault-injection suite */

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

const char *conf_prov = "tcp";
const char *conf_prov_base = "tcp";
const char *conf_host = "127.0.0.1";
char conf_listen_uri[256];
uint64_t conf_connect_worst_ms;

static const char *conf_area = "";
static size_t conf_nskipped;

#define CONF_MMAP_MIN (1u << 20)
#define CONF_PAIR_TAG 0xFE77A1C0DE000000ull
#define CONF_SETTLE_MS 5000

/* ------------------------------------------------------------------ messages */

uint64_t conf_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

const char *conf_err(int rc)
{
	static __thread char bufs[8][48];
	static __thread unsigned next;
	char *b = bufs[next++ % 8];

	snprintf(b, sizeof(bufs[0]), "%s(%d)", rc == 0 ? "OK" : ferry_errname(rc), rc);
	return b;
}

void conf_fail_at(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vprint_error(fmt, ap);
	va_end(ap);
	print_error("\n");
	_fail(file, line);
	abort(); /* _fail longjmps out of the test; never reached */
}

void conf_assert_rc_at(const char *file, int line, const char *expr, int got, int want)
{
	if (got != want)
		conf_fail_at(file, line, "%s: expected %s, got %s (%s)", expr, conf_err(want),
			     conf_err(got), ferry_strerror(got));
}

void conf_note_skip(const char *fmt, ...)
{
	char reason[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	printf("SKIP: %s: %s: %s\n", conf_prov, conf_area, reason);
	fflush(stdout);
	conf_nskipped++;
}

/* ------------------------------------------------------------------ data */

static inline uint64_t conf_mix(uint64_t x)
{
	/* splitmix64: every 8-byte word encodes its position, so misplaced data shows. */
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

void conf_fill(void *buf, size_t len, uint64_t seed)
{
	unsigned char *p = buf;
	size_t words = len / 8, i;

	for (i = 0; i < words; i++) {
		uint64_t v = conf_mix(seed * 0x100000001B3ull + i);
		memcpy(p + i * 8, &v, 8);
	}
	if (len % 8) {
		uint64_t v = conf_mix(seed * 0x100000001B3ull + words);
		memcpy(p + words * 8, &v, len % 8);
	}
}

long long conf_check(const void *buf, size_t len, uint64_t seed)
{
	const unsigned char *p = buf;
	size_t words = (len + 7) / 8, i, j;

	for (i = 0; i < words; i++) {
		uint64_t v = conf_mix(seed * 0x100000001B3ull + i);
		size_t n = len - i * 8 < 8 ? len - i * 8 : 8;
		if (memcmp(p + i * 8, &v, n) != 0) {
			const unsigned char *e = (const unsigned char *)&v;
			for (j = 0; j < n; j++)
				if (p[i * 8 + j] != e[j])
					return (long long)(i * 8 + j);
		}
	}
	return -1;
}

void conf_assert_pattern_at(const char *file, int line, const void *buf, size_t len,
			    uint64_t seed, const char *what)
{
	long long bad = conf_check(buf, len, seed);

	if (bad >= 0) {
		unsigned char exp[8];
		size_t w = (size_t)bad / 8;
		uint64_t v = conf_mix(seed * 0x100000001B3ull + w);
		size_t nbad = 0, i;

		memcpy(exp, &v, 8);
		for (i = (size_t)bad; i < len; i++) {
			uint64_t vv = conf_mix(seed * 0x100000001B3ull + i / 8);
			if (((const unsigned char *)buf)[i] != ((unsigned char *)&vv)[i % 8])
				nbad++;
		}
		conf_fail_at(file, line,
			     "%s: %zu bytes, first mismatch at offset %lld: got 0x%02x, "
			     "expected 0x%02x; %zu bytes differ from there on",
			     what, len, bad, ((const unsigned char *)buf)[bad],
			     exp[(size_t)bad % 8], nbad);
	}
}

void conf_assert_bytes_at(const char *file, int line, const void *buf, size_t len, int b,
			  const char *what)
{
	const unsigned char *p = buf;
	size_t i;

	for (i = 0; i < len; i++)
		if (p[i] != (unsigned char)b)
			conf_fail_at(file, line,
				     "%s: byte %zu of %zu is 0x%02x, expected 0x%02x (untouched)",
				     what, i, len, p[i], (unsigned char)b);
}

/* ------------------------------------------------------------------ tracking */

enum conf_kind { CONF_T_ALLOC = 1, CONF_T_MR, CONF_T_RKEY, CONF_T_EP };

struct conf_ent {
	enum conf_kind kind;
	void *p;
	size_t len;
	bool mapped;
};

struct conf_track {
	struct conf_ent *v;
	size_t n, cap;
};

static void conf_track_add(struct conf *c, enum conf_kind kind, void *p, size_t len,
			   bool mapped)
{
	struct conf_track *t = c->track;

	if (t->n == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 64;
		struct conf_ent *v = realloc(t->v, cap * sizeof(*v));
		assert_non_null(v);
		t->v = v;
		t->cap = cap;
	}
	t->v[t->n++] = (struct conf_ent){ .kind = kind, .p = p, .len = len, .mapped = mapped };
}

static struct conf_ent *conf_track_find(struct conf *c, enum conf_kind kind, void *p)
{
	size_t i;

	for (i = 0; i < c->track->n; i++)
		if (c->track->v[i].kind == kind && c->track->v[i].p == p)
			return &c->track->v[i];
	return NULL;
}

static void conf_track_del(struct conf *c, struct conf_ent *e)
{
	*e = c->track->v[--c->track->n];
}

void *conf_alloc(struct conf *c, size_t len)
{
	void *p;
	bool mapped = len >= CONF_MMAP_MIN;

	if (mapped) {
		p = mmap(NULL, len, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
		if (p == MAP_FAILED)
			conf_fail("mmap(%zu): %s", len, strerror(errno));
	} else {
		p = calloc(1, len ? len : 1);
		assert_non_null(p);
	}
	conf_track_add(c, CONF_T_ALLOC, p, len, mapped);
	return p;
}

static void conf_free_ent(struct conf_ent *e)
{
	if (e->mapped)
		munmap(e->p, e->len);
	else
		free(e->p);
}

void conf_free(struct conf *c, void *p)
{
	struct conf_ent *e = conf_track_find(c, CONF_T_ALLOC, p);

	assert_non_null(e);
	conf_free_ent(e);
	conf_track_del(c, e);
}

struct ferry_mr *conf_reg(struct conf *c, struct ferry_ctx *ctx, void *addr, size_t len,
			  unsigned access)
{
	struct ferry_mr *mr = NULL;
	int rc = ferry_mr_reg(ctx, addr, len, access, &mr);

	if (rc != 0)
		conf_fail("ferry_mr_reg(%zu bytes, access 0x%x): %s", len, access, conf_err(rc));
	assert_non_null(mr);
	conf_track_add(c, CONF_T_MR, mr, 0, false);
	return mr;
}

int conf_try_reg(struct conf *c, struct ferry_ctx *ctx, void *addr, size_t len,
		 unsigned access, struct ferry_mr **out)
{
	int rc = ferry_mr_reg(ctx, addr, len, access, out);

	if (rc == 0)
		conf_track_add(c, CONF_T_MR, *out, 0, false);
	return rc;
}

void conf_dereg(struct conf *c, struct ferry_mr *mr)
{
	struct conf_ent *e = conf_track_find(c, CONF_T_MR, mr);

	assert_non_null(e);
	conf_track_del(c, e);
	conf_assert_rc(ferry_mr_dereg(mr), 0);
}

struct ferry_rkey *conf_rkey(struct conf *c, struct ferry_ctx *ctx,
			     const struct ferry_mr *mr)
{
	unsigned char blob[FERRY_RKEY_MAX];
	size_t len = sizeof(blob);
	struct ferry_rkey *rk = NULL;

	conf_assert_rc(ferry_mr_pack(mr, blob, &len), 0);
	assert_true(len > 0 && len <= FERRY_RKEY_MAX);
	conf_assert_rc(ferry_rkey_unpack(ctx, blob, len, &rk), 0);
	assert_non_null(rk);
	conf_track_add(c, CONF_T_RKEY, rk, 0, false);
	return rk;
}

void conf_rkey_destroy(struct conf *c, struct ferry_rkey *rk)
{
	struct conf_ent *e = conf_track_find(c, CONF_T_RKEY, rk);

	assert_non_null(e);
	conf_track_del(c, e);
	ferry_rkey_destroy(rk);
}

void conf_own_ep(struct conf *c, struct ferry_ep *ep)
{
	assert_non_null(ep);
	conf_track_add(c, CONF_T_EP, ep, 0, false);
}

void conf_close(struct conf *c, struct ferry_ep *ep)
{
	struct conf_ent *e = conf_track_find(c, CONF_T_EP, ep);

	assert_non_null(e);
	conf_track_del(c, e);
	ferry_ep_close(ep);
}

/* ------------------------------------------------------------------ contexts */

void conf_config(struct ferry_config *cfg)
{
	ferry_config_init(cfg);
	cfg->log_level = FERRY_LOG_WARN;
	cfg->providers = conf_prov_base;
	/*
	 * The provider under test or nothing: a silent fallback would test TCP twice. Only
	 * the provider under test is open (cfg->providers), and every connection is checked
	 * to run on it; REQUIRE additionally refuses any non-RDMA candidate for RDMA ones.
	 */
	cfg->fallback = strcmp(conf_prov, "tcp") == 0 ? FERRY_FALLBACK_TCP_ONLY
			: conf_prov_pins_memory()	     ? FERRY_FALLBACK_REQUIRE
							     : FERRY_FALLBACK_PREFER;
	cfg->connect_timeout_ms = 2000;
	cfg->handshake_timeout_ms = 2000;
	cfg->reconnect_initial_ms = 50;
	cfg->reconnect_max_ms = 200;
}

int conf_ctx_create(struct ferry_ctx **out)
{
	struct ferry_config cfg;

	conf_config(&cfg);
	return ferry_ctx_create(&cfg, out);
}

static int conf_ctx_create_tweak(struct ferry_ctx **out, conf_tweak_fn tweak, bool server)
{
	struct ferry_config cfg;

	conf_config(&cfg);
	if (tweak)
		tweak(&cfg, server);
	return ferry_ctx_create(&cfg, out);
}

static void conf_epoll_add(int epfd, struct ferry_ctx *ctx)
{
	struct epoll_event ev = { .events = EPOLLIN, .data.ptr = ctx };
	int fd = ferry_ctx_fd(ctx);

	if (fd < 0)
		conf_fail("ferry_ctx_fd: %s", conf_err(fd));
	if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0)
		conf_fail("epoll_ctl(ADD, ferry_ctx_fd %d): %s", fd, strerror(errno));
}

void conf_world_open(struct conf_world *w)
{
	conf_world_open_tweak(w, NULL);
}

static void conf_world_open_at(struct conf_world *w, conf_tweak_fn tweak, bool export_fds);

void conf_world_open_tweak(struct conf_world *w, conf_tweak_fn tweak)
{
	conf_world_open_at(w, tweak, true);
}

void conf_world_open_unexported(struct conf_world *w, conf_tweak_fn tweak)
{
	conf_world_open_at(w, tweak, false);
}

static void conf_world_open_at(struct conf_world *w, conf_tweak_fn tweak, bool export_fds)
{
	size_t len = sizeof(w->addr);
	char prefix[64];
	int rc;

	memset(w, 0, sizeof(*w));
	w->epfd = -1;
	rc = conf_ctx_create_tweak(&w->srv, tweak, true);
	if (rc != 0)
		conf_fail("ferry_ctx_create (server): %s", conf_err(rc));
	rc = conf_ctx_create_tweak(&w->cli, tweak, false);
	if (rc != 0)
		conf_fail("ferry_ctx_create (client): %s", conf_err(rc));
	rc = ferry_listen(w->srv, conf_listen_uri, NULL, &w->l);
	if (rc != 0)
		conf_fail("ferry_listen(%s): %s", conf_listen_uri, conf_err(rc));
	rc = ferry_listener_addr(w->l, w->addr, &len);
	if (rc != 0)
		conf_fail("ferry_listener_addr: %s", conf_err(rc));
	assert_int_equal(len, strlen(w->addr));
	snprintf(prefix, sizeof(prefix), "%s://", conf_prov);
	if (strncmp(w->addr, prefix, strlen(prefix)) != 0 || strstr(w->addr, ":0,") ||
	    (strlen(w->addr) > 2 && strcmp(w->addr + strlen(w->addr) - 2, ":0") == 0))
		conf_fail("listener address '%s' for '%s': expected %s... with a real port",
			  w->addr, conf_listen_uri, prefix);
	if (!export_fds)
		return;
	w->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (w->epfd < 0)
		conf_fail("epoll_create1: %s", strerror(errno));
	conf_epoll_add(w->epfd, w->srv);
	conf_epoll_add(w->epfd, w->cli);
}

void conf_world_close(struct conf_world *w, bool check)
{
	if (w->l) {
		ferry_listener_close(w->l);
		w->l = NULL;
	}
	if (check) {
		if (w->srv) {
			conf_drain(w, ferry_ctx_cq(w->srv));
			conf_check_clean(w, w->srv, "server");
		}
		if (w->cli) {
			conf_drain(w, ferry_ctx_cq(w->cli));
			conf_check_clean(w, w->cli, "client");
		}
	}
	ferry_ctx_destroy(w->cli);
	w->cli = NULL;
	ferry_ctx_destroy(w->srv);
	w->srv = NULL;
	if (w->epfd >= 0)
		close(w->epfd);
	w->epfd = -1;
}

struct conf_bg {
	struct ferry_ctx *ctx;
	atomic_bool stop;
	pthread_t th;
};

static void *conf_bg_thread(void *arg)
{
	struct conf_bg *bg = arg;
	struct pollfd pfd = { .fd = ferry_ctx_fd(bg->ctx), .events = POLLIN };

	while (!atomic_load(&bg->stop)) {
		(void)poll(&pfd, 1, 5);
		(void)ferry_progress(bg->ctx);
	}
	return NULL;
}

struct conf_bg *conf_bg_start(struct ferry_ctx *ctx)
{
	struct conf_bg *bg = calloc(1, sizeof(*bg));

	assert_non_null(bg);
	bg->ctx = ctx;
	atomic_init(&bg->stop, false);
	if (pthread_create(&bg->th, NULL, conf_bg_thread, bg) != 0)
		conf_fail("pthread_create failed");
	return bg;
}

void conf_bg_stop(struct conf_bg *bg)
{
	if (!bg)
		return;
	atomic_store(&bg->stop, true);
	pthread_join(bg->th, NULL);
	free(bg);
}

/* ------------------------------------------------------------------ driving */

void conf_drive(struct conf_world *w, int wait_ms)
{
	struct epoll_event ev[2];
	int rc;

	if (w->epfd >= 0 && wait_ms > 0)
		(void)epoll_wait(w->epfd, ev, 2, wait_ms);
	if (w->srv && (rc = ferry_progress(w->srv)) < 0)
		conf_fail("ferry_progress (server): %s", conf_err(rc));
	if (w->cli && (rc = ferry_progress(w->cli)) < 0)
		conf_fail("ferry_progress (client): %s", conf_err(rc));
}

void conf_drive_for(struct conf_world *w, int ms)
{
	uint64_t end = conf_now_ms() + (uint64_t)ms;

	while (conf_now_ms() < end)
		conf_drive(w, 2);
}

bool conf_drive_until(struct conf_world *w, bool (*pred)(void *arg), void *arg,
		      int timeout_ms)
{
	uint64_t end = conf_now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		if (pred(arg))
			return true;
		if (conf_now_ms() >= end)
			return false;
		conf_drive(w, 2);
	}
}

static const char *conf_op_name(enum ferry_op_type t)
{
	switch (t) {
	case FERRY_OP_SEND: return "send";
	case FERRY_OP_RECV: return "recv";
	case FERRY_OP_WRITE: return "write";
	case FERRY_OP_READ: return "read";
	}
	return "?";
}

int conf_wait_at(const char *file, int line, struct conf_world *w, struct ferry_cq *cq,
		 struct ferry_completion *out, int n, int timeout_ms)
{
	uint64_t end = conf_now_ms() + (uint64_t)(timeout_ms < 0 ? CONF_WAIT_MS : timeout_ms);
	int got = 0;

	for (;;) {
		int r = ferry_cq_poll(cq, out + got, n - got);
		if (r < 0)
			conf_fail_at(file, line, "ferry_cq_poll: %s", conf_err(r));
		if (r > n - got)
			conf_fail_at(file, line, "ferry_cq_poll returned %d > max %d", r, n - got);
		got += r;
		if (got >= n) {
			/*
			 * Both ends share this process. What the other side's threads did
			 * before this completion reached us through a socket (e.g. writing
			 * the target region) is ordered before it in reality, but TSan cannot
			 * see through sockets: taking both contexts' locks once makes the
			 * order visible, so a test may then touch that memory.
			 */
			conf_drive(w, 0);
			return n;
		}
		if (conf_now_ms() >= end) {
			char seen[512] = "";
			size_t off = 0;
			int i;
			for (i = 0; i < got && off < sizeof(seen) - 64; i++)
				off += (size_t)snprintf(seen + off, sizeof(seen) - off,
							" [%s %s ctx=%p]",
							conf_op_name(out[i].type),
							conf_err(out[i].status), out[i].user_ctx);
			conf_fail_at(file, line,
				     "timed out waiting for %d completions: got %d:%s", n, got,
				     seen);
		}
		conf_drive(w, 2);
	}
}

void conf_expect_each_once(const struct ferry_completion *cmp, int n, void *const *ctxs,
			   int want)
{
	bool seen[64] = { false };
	int i, k;

	assert_true(n <= 64);
	for (i = 0; i < n; i++) {
		for (k = 0; k < n && ctxs[k] != cmp[i].user_ctx; k++)
			;
		if (k == n)
			conf_fail("completion with unknown user_ctx %p (status %s)",
				  cmp[i].user_ctx, conf_err(cmp[i].status));
		if (seen[k])
			conf_fail("operation #%d completed twice", k);
		seen[k] = true;
		bool ok = want == CONF_ANY_STATUS ? true
			  : want == CONF_ANY_ERROR ? cmp[i].status < 0
						   : cmp[i].status == want;
		if (!ok)
			conf_fail("operation #%d (type %d) completed with %s, expected %s", k,
				  cmp[i].type, conf_err(cmp[i].status),
				  want == CONF_ANY_ERROR ? "an error" : conf_err(want));
	}
}

void conf_expect_none_at(const char *file, int line, struct conf_world *w,
			 struct ferry_cq *cq, int ms)
{
	uint64_t end = conf_now_ms() + (uint64_t)ms;
	struct ferry_completion c;

	for (;;) {
		int r = ferry_cq_poll(cq, &c, 1);
		if (r < 0)
			conf_fail_at(file, line, "ferry_cq_poll: %s", conf_err(r));
		if (r > 0)
			conf_fail_at(file, line,
				     "unexpected extra completion: %s status %s user_ctx %p "
				     "len %llu",
				     conf_op_name(c.type), conf_err(c.status), c.user_ctx,
				     (unsigned long long)c.len);
		if (conf_now_ms() >= end)
			return;
		conf_drive(w, 5);
	}
}

int conf_drain(struct conf_world *w, struct ferry_cq *cq)
{
	struct ferry_completion c[64];
	int total = 0, r;

	(void)w;
	while ((r = ferry_cq_poll(cq, c, 64)) > 0)
		total += r;
	return total;
}

static bool conf_ep_down(void *arg)
{
	return ferry_ep_status(arg) != 0;
}

int conf_wait_ep_down_at(const char *file, int line, struct conf_world *w,
			 struct ferry_ep *ep)
{
	if (!conf_drive_until(w, conf_ep_down, ep, CONF_WAIT_MS))
		conf_fail_at(file, line, "endpoint still reports status 0 after %d ms",
			     CONF_WAIT_MS);
	return ferry_ep_status(ep);
}

struct conf_clean_arg {
	struct conf_world *w;
	struct ferry_ctx *ctx;
};

static bool conf_is_clean(void *arg)
{
	struct conf_clean_arg *a = arg;
	struct ferry_stats st;

	if (ferry_stats_get(a->ctx, NULL, &st) != 0)
		return false;
	return st.eps_open == 0 && st.mrs_registered == 0 && st.ops_posted == st.ops_completed;
}

void conf_check_clean_at(const char *file, int line, struct conf_world *w,
			 struct ferry_ctx *ctx, const char *who)
{
	struct conf_clean_arg a = { .w = w, .ctx = ctx };
	struct ferry_stats st;
	int rc;

	(void)conf_drive_until(w, conf_is_clean, &a, CONF_SETTLE_MS);
	rc = ferry_stats_get(ctx, NULL, &st);
	if (rc != 0)
		conf_fail_at(file, line, "%s: ferry_stats_get: %s", who, conf_err(rc));
	if (st.eps_open != 0)
		conf_fail_at(file, line, "%s: leak: stats.eps_open = %llu after closing every "
			     "endpoint (eps_created %llu, eps_accepted %llu, eps_closed %llu)",
			     who, (unsigned long long)st.eps_open,
			     (unsigned long long)st.eps_created,
			     (unsigned long long)st.eps_accepted,
			     (unsigned long long)st.eps_closed);
	if (st.mrs_registered != 0)
		conf_fail_at(file, line, "%s: leak: stats.mrs_registered = %llu after "
			     "deregistering every region",
			     who, (unsigned long long)st.mrs_registered);
	if (st.ops_posted != st.ops_completed)
		conf_fail_at(file, line, "%s: leak: stats.ops_posted %llu != ops_completed %llu "
			     "(ops_failed %llu)",
			     who, (unsigned long long)st.ops_posted,
			     (unsigned long long)st.ops_completed,
			     (unsigned long long)st.ops_failed);
}

/* ------------------------------------------------------------------ connecting */

struct conf_acceptor {
	struct ferry_listener *l;
	int n, got, rc, timeout_ms;
	struct ferry_ep **eps;
};

static void *conf_accept_thread(void *arg)
{
	struct conf_acceptor *a = arg;

	for (a->got = 0; a->got < a->n; a->got++) {
		a->rc = ferry_listener_accept(a->l, &a->eps[a->got], a->timeout_ms);
		if (a->rc != 0)
			break;
	}
	return NULL;
}

static void conf_assert_ep(const char *file, int line, struct ferry_ep *ep,
			   const char *side)
{
	const char *prov = ferry_ep_provider(ep);
	const char *peer = ferry_ep_peer(ep);
	int st = ferry_ep_status(ep);

	if (!prov || strcmp(prov, conf_prov) != 0)
		conf_fail_at(file, line, "%s endpoint runs on provider '%s', expected '%s'",
			     side, prov ? prov : "(null)", conf_prov);
	if (!peer || !*peer)
		conf_fail_at(file, line, "%s endpoint: ferry_ep_peer is empty", side);
	if (st != 0)
		conf_fail_at(file, line, "%s endpoint: status %s right after connecting",
			     side, conf_err(st));
}

/* Pairs cep[i] with the sep that received i (accept order is not a contract). */
static void conf_pair_up(const char *file, int line, struct conf_world *w, int n,
			 struct ferry_ep **cep, struct ferry_ep **sep)
{
	struct ferry_cq *ccq = NULL, *scq = NULL;
	struct ferry_op_attr ca = { 0 }, sa = { 0 };
	struct ferry_completion *comp = calloc((size_t)n, sizeof(*comp));
	uint32_t *out = calloc((size_t)n, sizeof(*out));
	uint32_t *in = calloc((size_t)n, sizeof(*in));
	struct ferry_ep **sorted = calloc((size_t)n, sizeof(*sorted));
	int i, rc;

	assert_non_null(comp);
	assert_non_null(out);
	assert_non_null(in);
	assert_non_null(sorted);
	conf_assert_rc(ferry_cq_create(w->cli, &ccq), 0);
	conf_assert_rc(ferry_cq_create(w->srv, &scq), 0);
	ca.cq = ccq;
	sa.cq = scq;
	for (i = 0; i < n; i++) {
		in[i] = UINT32_MAX;
		rc = ferry_recv(sep[i], &in[i], sizeof(in[i]), CONF_PAIR_TAG, ~0ull, &in[i], &sa);
		if (rc != 0)
			conf_fail_at(file, line, "pairing: ferry_recv on accepted ep %d: %s", i,
				     conf_err(rc));
	}
	for (i = 0; i < n; i++) {
		out[i] = (uint32_t)i;
		rc = ferry_send(cep[i], &out[i], sizeof(out[i]), CONF_PAIR_TAG, &out[i], &ca);
		if (rc != 0)
			conf_fail_at(file, line, "pairing: ferry_send on connected ep %d: %s", i,
				     conf_err(rc));
	}
	conf_wait_at(file, line, w, ccq, comp, n, -1);
	for (i = 0; i < n; i++)
		if (comp[i].status != 0)
			conf_fail_at(file, line, "pairing: send completed with %s",
				     conf_err(comp[i].status));
	conf_wait_at(file, line, w, scq, comp, n, -1);
	for (i = 0; i < n; i++)
		if (comp[i].status != 0 || comp[i].len != sizeof(uint32_t))
			conf_fail_at(file, line, "pairing: recv completed with %s len %llu",
				     conf_err(comp[i].status), (unsigned long long)comp[i].len);
	for (i = 0; i < n; i++) {
		if (in[i] >= (uint32_t)n || sorted[in[i]])
			conf_fail_at(file, line, "pairing: accepted ep %d got index %u", i, in[i]);
		sorted[in[i]] = sep[i];
	}
	memcpy(sep, sorted, (size_t)n * sizeof(*sep));
	conf_assert_rc(ferry_cq_destroy(ccq), 0);
	conf_assert_rc(ferry_cq_destroy(scq), 0);
	free(sorted);
	free(in);
	free(out);
	free(comp);
}

void conf_connect_n_at(const char *file, int line, struct conf_world *w, int n,
		       unsigned flags, struct ferry_ep **cep, struct ferry_ep **sep)
{
	struct conf_acceptor a = { .l = w->l, .n = n, .eps = sep, .timeout_ms = 5000 };
	struct ferry_connect_attr attr = { .flags = flags };
	pthread_t th;
	int i, rc = 0, connected = 0;

	if (n > 1 && !(flags & FERRY_CONNECT_PRIVATE))
		conf_fail_at(file, line, "conf_connect_n: n > 1 needs FERRY_CONNECT_PRIVATE");
	memset(cep, 0, (size_t)n * sizeof(*cep));
	memset(sep, 0, (size_t)n * sizeof(*sep));
	if (pthread_create(&th, NULL, conf_accept_thread, &a) != 0)
		conf_fail_at(file, line, "pthread_create failed");
	conf_connect_worst_ms = 0;
	for (i = 0; i < n; i++) {
		uint64_t t0 = conf_now_ms(), dt;

		rc = ferry_connect(w->cli, w->addr, &attr, &cep[i]);
		dt = conf_now_ms() - t0;
		if (dt > conf_connect_worst_ms)
			conf_connect_worst_ms = dt;
		if (rc != 0)
			break;
		connected++;
	}
	pthread_join(th, NULL);
	if (rc != 0 || a.rc != 0 || a.got != n) {
		for (i = 0; i < connected; i++)
			ferry_ep_close(cep[i]);
		for (i = 0; i < a.got; i++)
			ferry_ep_close(sep[i]);
		memset(cep, 0, (size_t)n * sizeof(*cep));
		memset(sep, 0, (size_t)n * sizeof(*sep));
		conf_fail_at(file, line,
			     "connecting %d endpoint(s) to %s: ferry_connect #%d: %s; "
			     "ferry_listener_accept: %s after %d",
			     n, w->addr, connected, conf_err(rc), conf_err(a.rc), a.got);
	}
	for (i = 0; i < n; i++) {
		conf_assert_ep(file, line, cep[i], "connected");
		conf_assert_ep(file, line, sep[i], "accepted");
	}
	if (n > 1)
		conf_pair_up(file, line, w, n, cep, sep);
}

/* ------------------------------------------------------------------ fixtures */

int conf_group_setup(void **state)
{
	struct conf *c = calloc(1, sizeof(*c));

	assert_non_null(c);
	c->track = calloc(1, sizeof(*c->track));
	assert_non_null(c->track);
	*state = c;
	conf_world_open(&c->w);
	return 0;
}

int conf_group_teardown(void **state)
{
	struct conf *c = *state;

	if (!c)
		return 0;
	conf_world_close(&c->w, true);
	free(c->track->v);
	free(c->track);
	free(c);
	*state = NULL;
	return 0;
}

int conf_setup_none(void **state)
{
	struct conf *c = *state;

	c->cep = c->sep = NULL;
	memset(&c->w2, 0, sizeof(c->w2));
	c->w2.epfd = -1;
	return 0;
}

int conf_setup_pair(void **state)
{
	struct conf *c = *state;

	conf_setup_none(state);
	conf_connect(&c->w, 0, &c->cep, &c->sep);
	return 0;
}

static bool conf_eps_closed(void *arg)
{
	struct conf_world *w = arg;
	struct ferry_stats s1, s2;

	conf_drain(w, ferry_ctx_cq(w->srv));
	conf_drain(w, ferry_ctx_cq(w->cli));
	if (ferry_stats_get(w->srv, NULL, &s1) != 0 || ferry_stats_get(w->cli, NULL, &s2) != 0)
		return false;
	return s1.eps_open == 0 && s2.eps_open == 0 && s1.ops_posted == s1.ops_completed &&
	       s2.ops_posted == s2.ops_completed;
}

int conf_teardown(void **state)
{
	struct conf *c = *state;
	struct conf_track *t = c->track;
	size_t i;

	if (c->cep)
		ferry_ep_close(c->cep);
	if (c->sep)
		ferry_ep_close(c->sep);
	c->cep = c->sep = NULL;
	for (i = 0; i < t->n; i++)
		if (t->v[i].kind == CONF_T_EP)
			ferry_ep_close(t->v[i].p);
	/* A second world the test opened is not checked: the test did that, or failed. */
	if (c->w2.srv || c->w2.cli || c->w2.l)
		conf_world_close(&c->w2, false);
	/* Let cancelled operations complete before their buffers and regions go. */
	(void)conf_drive_until(&c->w, conf_eps_closed, &c->w, CONF_SETTLE_MS);
	for (i = 0; i < t->n; i++)
		if (t->v[i].kind == CONF_T_RKEY)
			ferry_rkey_destroy(t->v[i].p);
	for (i = 0; i < t->n; i++)
		if (t->v[i].kind == CONF_T_MR)
			(void)ferry_mr_dereg(t->v[i].p);
	for (i = 0; i < t->n; i++)
		if (t->v[i].kind == CONF_T_ALLOC)
			conf_free_ent(&t->v[i]);
	t->n = 0;
	conf_drain(&c->w, ferry_ctx_cq(c->w.srv));
	conf_drain(&c->w, ferry_ctx_cq(c->w.cli));
	conf_check_clean(&c->w, c->w.srv, "server");
	conf_check_clean(&c->w, c->w.cli, "client");
	return 0;
}

/* ------------------------------------------------------------------ running */

/* RDMA providers pin what they register: the suite registers up to ~200 MiB at once
 * (the large test checks for its own 9 GiB). */
#define CONF_MEMLOCK_MIN (1ull << 30)

/* RDMA providers pin registered memory (RLIMIT_MEMLOCK); ofi+tcp and ofi+shm do not. */
bool conf_prov_pins_memory(void)
{
	return strcmp(conf_prov, "verbs") == 0 || strcmp(conf_prov, "ofi+verbs") == 0;
}

uint64_t conf_memlock_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_MEMLOCK, &rl) != 0)
		return 0;
	/* Raising the soft limit up to the hard one needs no privilege. */
	if (rl.rlim_cur != rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_MEMLOCK, &rl);
		(void)getrlimit(RLIMIT_MEMLOCK, &rl);
	}
	return rl.rlim_cur == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_cur;
}

int conf_run(const char *area, const struct CMUnitTest *tests, size_t n)
{
	static char base[32];
	char name[128];
	int rc;

	setvbuf(stdout, NULL, _IOLBF, 0);
	/*
	 * CTest sets FT_WATCHDOG_S a little below its own timeout: a hang anywhere (the
	 * provider probe included) is then reported with every thread's stack instead of a
	 * bare CTest timeout. Unset (a binary run by hand): no watchdog.
	 */
	ft_watchdog_env(0);
	conf_area = area;
	conf_prov = ft_provider();
	conf_host = ft_host();
	snprintf(base, sizeof(base), "%.*s", (int)strcspn(conf_prov, "+"), conf_prov);
	conf_prov_base = base;
	ft_listen_uri(conf_listen_uri, sizeof(conf_listen_uri), 0);

	ft_require_provider(); /* SKIP (exit 77) or FAIL when it cannot run here */
	if (conf_prov_pins_memory() && conf_memlock_limit() < CONF_MEMLOCK_MIN) {
		printf("SKIP: %s: RLIMIT_MEMLOCK is %llu KiB, the suite pins up to 1 GiB "
		       "(ulimit -l unlimited)\n", conf_prov,
		       (unsigned long long)conf_memlock_limit() >> 10);
		return CONF_SKIP_RC;
	}
	/* FERRY_TEST_FILTER: run only the tests whose name matches (cmocka's '*' / '?'
	 * pattern), to chase one failure without the rest of the area. */
	const char *filter = getenv("FERRY_TEST_FILTER");
	if (filter && *filter)
		cmocka_set_test_filter(filter);
	snprintf(name, sizeof(name), "conf.%s.%s", conf_prov, area);
	rc = _cmocka_run_group_tests(name, tests, n, conf_group_setup, conf_group_teardown);
	if (rc != 0)
		return 1;
	if (n > 0 && conf_nskipped >= n)
		return CONF_SKIP_RC;
	return 0;
}
