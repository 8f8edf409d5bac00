/*
 * ft_util.c - basics, checks, the stderr tee, peer processes and the exactly-once
 * ledger of the fault and soak tests (see ft.h).
 */
#define _GNU_SOURCE
#include "ft.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

atomic_int ft_failures;

/* ------------------------------------------------------------------ basics */

uint64_t ft_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t ft_now_ms(void)
{
	return ft_now_ns() / 1000000ull;
}

void ft_sleep_ms(unsigned ms)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static inline uint64_t ft_mix(uint64_t x)
{
	x += 0x9E3779B97F4A7C15ull;
	x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
	x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
	return x ^ (x >> 31);
}

uint64_t ft_rand(uint64_t *state)
{
	*state += 0x9E3779B97F4A7C15ull;
	return ft_mix(*state);
}

uint64_t ft_rand_range(uint64_t *state, uint64_t lo, uint64_t hi)
{
	if (hi <= lo)
		return lo;
	return lo + ft_rand(state) % (hi - lo + 1);
}

static inline uint64_t ft_word(uint64_t seed, uint64_t i)
{
	return ft_mix(seed * 0x100000001B3ull ^ ft_mix(i));
}

void ft_fill(void *buf, size_t len, uint64_t seed, uint64_t word0)
{
	unsigned char *p = buf;
	size_t words = len / 8;

	for (size_t i = 0; i < words; i++) {
		uint64_t v = ft_word(seed, word0 + i);
		memcpy(p + i * 8, &v, 8);
	}
	if (len % 8) {
		uint64_t v = ft_word(seed, word0 + words);
		memcpy(p + words * 8, &v, len % 8);
	}
}

long long ft_check(const void *buf, size_t len, uint64_t seed, uint64_t word0)
{
	const unsigned char *p = buf;
	size_t words = (len + 7) / 8;

	for (size_t i = 0; i < words; i++) {
		uint64_t v = ft_word(seed, word0 + i);
		size_t n = len - i * 8 < 8 ? len - i * 8 : 8;

		if (memcmp(p + i * 8, &v, n) != 0) {
			const unsigned char *e = (const unsigned char *)&v;
			for (size_t j = 0; j < n; j++)
				if (p[i * 8 + j] != e[j])
					return (long long)(i * 8 + j);
		}
	}
	return -1;
}

uint64_t ft_sum(const void *buf, size_t len)
{
	const unsigned char *p = buf;
	uint64_t h = 0xCBF29CE484222325ull ^ len;
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t w;
		memcpy(&w, p + i, 8);
		h = (h ^ ft_mix(w + i)) * 0x100000001B3ull;
		h = (h << 29) | (h >> 35);
	}
	if (i < len) {
		uint64_t w = 0;
		memcpy(&w, p + i, len - i);
		h = (h ^ ft_mix(w + i)) * 0x100000001B3ull;
	}
	return ft_mix(h);
}

const char *ft_err(int rc)
{
	static __thread char bufs[8][48];
	static __thread unsigned next;
	char *b = bufs[next++ % 8];

	if (rc == FT_ST_BADDATA)
		snprintf(b, sizeof(bufs[0]), "BADDATA(%d)", rc);
	else if (rc == FT_ST_BADREQ)
		snprintf(b, sizeof(bufs[0]), "BADREQ(%d)", rc);
	else
		snprintf(b, sizeof(bufs[0]), "%s(%d)", rc == 0 ? "OK" : ferry_errname(rc), rc);
	return b;
}

/* ------------------------------------------------------------------ checks */

void ft_note(const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	printf("# %s\n", line);
	fflush(stdout);
}

void ft_fail_at(const char *file, int line, bool fatal, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	atomic_fetch_add(&ft_failures, 1);
	printf("FAILED CHECK %s:%d: %s\n", file, line, msg);
	fflush(stdout);
	/* For debugging hangs: FT_GDB_ON_FAIL=1 prints every thread's stack once. */
	if (getenv("FT_GDB_ON_FAIL"))
		ft_stacks();
	if (fatal) {
		printf("FAIL: stopping at the first fatal check\n");
		fflush(stdout);
		exit(1);
	}
}

void ft_stacks(void)
{
	static atomic_bool dumped;
	char cmd[256];

	if (atomic_exchange(&dumped, true))
		return;
	snprintf(cmd, sizeof(cmd),
		 "command -v gdb >/dev/null && gdb -p %d -batch -ex 'thread apply all bt 40' "
		 "2>/dev/null | grep -E '^(#|Thread)'", (int)getpid());
	fflush(stdout);
	(void)!system(cmd);
	fflush(stdout);
}

static unsigned wd_seconds;

static void *wd_main(void *arg)
{
	(void)arg;
	ft_sleep_ms(wd_seconds * 1000);
	printf("HANG: the test did not finish within %u s (its own watchdog); stacks follow\n",
	       wd_seconds);
	ft_stacks();
	printf("FAIL: watchdog\n");
	fflush(stdout);
	_exit(1);
	return NULL;
}

void ft_watchdog(unsigned seconds)
{
	pthread_t t;

	wd_seconds = seconds;
	if (pthread_create(&t, NULL, wd_main, NULL) == 0)
		pthread_detach(t);
}

void ft_watchdog_env(unsigned dflt)
{
	const char *wd = getenv("FT_WATCHDOG_S");
	unsigned s = wd && atoi(wd) > 0 ? (unsigned)atoi(wd) : dflt;

	if (s)
		ft_watchdog(s);
}

int ft_finish(const char *name)
{
	int n = atomic_load(&ft_failures);

	if (n == 0)
		printf("PASS: %s\n", name);
	else
		printf("FAIL: %s (%d failed checks)\n", name, n);
	fflush(stdout);
	return n == 0 ? 0 : 1;
}

const char *ft_provider(void)
{
	const char *p = getenv("FERRY_TEST_PROVIDER");
	return p && p[0] ? p : "tcp";
}

const char *ft_host(void)
{
	const char *h = getenv("FERRY_TEST_HOST");
	return h && h[0] ? h : "127.0.0.1";
}

void ft_listen_uri(char *buf, size_t len, unsigned port)
{
	const char *h = ft_host();
	if (strchr(h, ':') && h[0] != '[')
		snprintf(buf, len, "%s://[%s]:%u", ft_provider(), h, port);
	else
		snprintf(buf, len, "%s://%s:%u", ft_provider(), h, port);
}

enum { FT_PROBE_OK, FT_PROBE_SKIP, FT_PROBE_BROKEN };

/* Can the provider under test run here? Fills reason when not. */
static int ft_probe(const char *prov, const char *base, char *reason, size_t len)
{
	struct ferry_provider_info info[16];
	struct ferry_config cfg;
	struct ferry_ctx *ctx = NULL;
	struct ferry_listener *l = NULL;
	char uri[300];
	int n, i, rc;

	n = ferry_provider_list(info, 16);
	if (n < 0) {
		snprintf(reason, len, "ferry_provider_list: %s", ft_err(n));
		return FT_PROBE_BROKEN;
	}
	for (i = 0; i < n && i < 16; i++)
		if (info[i].name && strcmp(info[i].name, base) == 0)
			break;
	if (i == n || i == 16) {
		snprintf(reason, len, "provider '%s' unknown to ferry_provider_list", base);
		return FT_PROBE_SKIP;
	}
	if (!info[i].built) {
		snprintf(reason, len, "not built into this library (%s)", info[i].detail);
		return FT_PROBE_SKIP;
	}
	if (info[i].status != 0) {
		snprintf(reason, len, "%s: %s", ferry_errname(info[i].status), info[i].detail);
		return FT_PROBE_SKIP;
	}
	if (strncmp(prov, "ofi+", 4) == 0) {
		/* The ofi detail names each fabric it opens with every context, e.g.
		 * "ofi+verbs: no (no RDMA device)": that is the reason, where listen
		 * would only say EPROTONOSUPPORT. */
		char want[48];
		const char *d = info[i].detail, *hit;
		snprintf(want, sizeof(want), "%s: no", prov);
		hit = strstr(d, want);
		if (hit && (hit == d || hit[-1] == ' ')) {
			hit += strlen(want);
			snprintf(reason, len, "libfabric: not usable here%.*s",
				 (int)strcspn(hit, ";"), hit);
			return FT_PROBE_SKIP;
		}
	}
	ferry_config_init(&cfg);
	cfg.providers = base;
	rc = ferry_ctx_create(&cfg, &ctx);
	if (rc != 0) {
		snprintf(reason, len, "ferry_ctx_create: %s", ft_err(rc));
		return rc == FERRY_ENODEV ? FT_PROBE_SKIP : FT_PROBE_BROKEN;
	}
	ft_listen_uri(uri, sizeof(uri), 0);
	rc = ferry_listen(ctx, uri, NULL, &l);
	ferry_listener_close(l);
	ferry_ctx_destroy(ctx);
	if (rc != 0) {
		snprintf(reason, len, "ferry_listen(%s): %s", uri, ft_err(rc));
		return rc == FERRY_ENODEV || rc == FERRY_EPROTONOSUPPORT ? FT_PROBE_SKIP
									 : FT_PROBE_BROKEN;
	}
	return FT_PROBE_OK;
}

void ft_require_provider(void)
{
	const char *prov = ft_provider();
	char base[32], reason[600];

	snprintf(base, sizeof(base), "%.*s", (int)strcspn(prov, "+"), prov);
	int st = ft_probe(prov, base, reason, sizeof(reason));
	if (st == FT_PROBE_OK)
		return;
	if (st == FT_PROBE_SKIP && strcmp(prov, "tcp") != 0) {
		printf("SKIP: %s: %s\n", prov, reason);
		exit(77);
	}
	/* TCP is always built and loopback always exists: never skip it. */
	printf("FAIL: %s: provider unusable: %s\n", prov, reason);
	exit(1);
}

struct ferry_ctx *ft_ctx(const char *providers, ferry_event_fn ev, void *arg)
{
	struct ferry_config cfg;
	struct ferry_ctx *ctx = NULL;
	char prov[32];

	if (!providers) { /* "ofi+shm" -> "ofi" */
		snprintf(prov, sizeof(prov), "%.*s", (int)strcspn(ft_provider(), "+"),
			 ft_provider());
		providers = prov;
	}
	ferry_config_init(&cfg);
	cfg.providers = providers;
	cfg.event_fn = ev;
	cfg.event_arg = arg;
	FT_ASSERT_RC(ferry_ctx_create(&cfg, &ctx), 0);
	return ctx;
}

bool ft_ctx_clean(struct ferry_ctx *ctx, const char *who, int timeout_ms)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;
	struct ferry_stats st;

	for (;;) {
		ferry_progress(ctx);
		if (ferry_stats_get(ctx, NULL, &st) == 0 && st.eps_open == 0 &&
		    st.mrs_registered == 0 && st.ops_posted == st.ops_completed)
			return true;
		if (ft_now_ms() >= end)
			break;
		ft_sleep_ms(10);
	}
	printf("LEAK %s: eps_open %llu mrs_registered %llu ops posted %llu completed %llu\n",
	       who, (unsigned long long)st.eps_open, (unsigned long long)st.mrs_registered,
	       (unsigned long long)st.ops_posted, (unsigned long long)st.ops_completed);
	fflush(stdout);
	return false;
}

struct resp_call {
	struct ferry_ctx *ctx;
	atomic_bool done;
};

static void *resp_thread(void *arg)
{
	struct resp_call *rc = arg;
	struct ferry_stats st;

	ferry_stats_get(rc->ctx, NULL, &st);
	atomic_store(&rc->done, true);
	return NULL;
}

bool ft_ctx_responsive(struct ferry_ctx *ctx, int timeout_ms)
{
	struct resp_call *rc = calloc(1, sizeof(*rc)); /* leaked if the call never returns */
	pthread_t t;

	FT_ASSERT(rc, "out of memory");
	rc->ctx = ctx;
	FT_ASSERT(pthread_create(&t, NULL, resp_thread, rc) == 0, "pthread_create");
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;
	while (!atomic_load(&rc->done) && ft_now_ms() < end)
		ft_sleep_ms(5);
	if (!atomic_load(&rc->done)) {
		pthread_detach(t);
		return false;
	}
	pthread_join(t, NULL);
	free(rc);
	return true;
}

void ft_ctx_stuck_exit(struct ferry_ctx *ctx, const char *who)
{
	if (ft_ctx_responsive(ctx, 3000))
		return;
	ft_fail_at(__FILE__, __LINE__, false,
		   "%s: the context does not respond (ferry_stats_get blocked for 3 s on the "
		   "context lock): a ferry thread is stuck; stacks follow", who);
	ft_stacks();
	printf("FAIL: %s context stuck (not cleaning up)\n", who);
	fflush(stdout);
	_exit(1);
}

/* ------------------------------------------------------------------ stderr tee */

static int tee_file = -1;

int ft_logtee_start(void)
{
	char path[] = "/tmp/ferry-ft-log-XXXXXX";
	int pp[2], orig;
	pid_t pid;

	if (tee_file >= 0)
		return 0;
	tee_file = mkostemp(path, O_CLOEXEC);
	if (tee_file < 0)
		return -errno;
	unlink(path); /* both processes keep their descriptor */
	if (pipe2(pp, O_CLOEXEC) < 0)
		return -errno;
	orig = fcntl(2, F_DUPFD_CLOEXEC, 3);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -errno;
	if (pid == 0) {
		char buf[16384];
		ssize_t n;

		/* The tee outlives a crashing parent: it ends at EOF, when every writer
		 * (the test and the peers it spawned) is gone. */
		signal(SIGINT, SIG_IGN);
		signal(SIGTERM, SIG_IGN);
		close(pp[1]);
		close(2);
		while ((n = read(pp[0], buf, sizeof(buf))) != 0) {
			if (n < 0) {
				if (errno == EINTR)
					continue;
				break;
			}
			(void)!write(orig, buf, (size_t)n);
			(void)!write(tee_file, buf, (size_t)n);
		}
		_exit(0);
	}
	dup2(pp[1], 2);
	close(pp[1]);
	close(pp[0]);
	close(orig);
	return 0;
}

static char *tee_read_from(uint64_t off, size_t *len)
{
	struct stat sb;
	char *buf;
	ssize_t n;

	if (fstat(tee_file, &sb) < 0 || (uint64_t)sb.st_size <= off) {
		*len = 0;
		return NULL;
	}
	*len = (size_t)((uint64_t)sb.st_size - off);
	buf = malloc(*len + 1);
	if (!buf)
		return NULL;
	n = pread(tee_file, buf, *len, (off_t)off);
	*len = n > 0 ? (size_t)n : 0;
	buf[*len] = '\0';
	return buf;
}

uint64_t ft_logtee_mark(void)
{
	static unsigned seq;
	char marker[64];
	struct stat sb;

	if (tee_file < 0)
		return 0;
	snprintf(marker, sizeof(marker), "# ft-log-mark %d.%u\n", (int)getpid(), ++seq);
	fstat(tee_file, &sb);
	uint64_t from = (uint64_t)sb.st_size;
	(void)!write(2, marker, strlen(marker));
	for (int i = 0; i < 200; i++) {
		size_t len;
		char *buf = tee_read_from(from, &len);
		char *at = buf ? strstr(buf, marker) : NULL;

		if (at) {
			uint64_t m = from + (uint64_t)(at - buf) + strlen(marker);
			free(buf);
			return m;
		}
		free(buf);
		ft_sleep_ms(10);
	}
	return from;
}

bool ft_logtee_find(uint64_t mark, const char *needle, int timeout_ms)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;

	if (tee_file < 0)
		return false;
	for (;;) {
		size_t len;
		char *buf = tee_read_from(mark, &len);
		bool found = buf && strstr(buf, needle);

		free(buf);
		if (found)
			return true;
		if (ft_now_ms() >= end)
			return false;
		ft_sleep_ms(10);
	}
}

/* ------------------------------------------------------------------ processes */

pid_t ft_spawn(char *const argv[], int *out_fd)
{
	int pp[2];
	pid_t parent = getpid(), pid;

	if (pipe2(pp, O_CLOEXEC) < 0)
		return -errno;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		int err = errno;
		close(pp[0]);
		close(pp[1]);
		return -err;
	}
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() != parent)
			_exit(127);
		dup2(pp[1], 1);
		execv(argv[0], argv);
		fprintf(stderr, "ft_spawn: exec %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(pp[1]);
	*out_fd = pp[0];
	return pid;
}

bool ft_read_line(int fd, const char *prefix, char *buf, size_t len, int timeout_ms)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;
	char line[1024];
	size_t n = 0;

	for (;;) {
		uint64_t now = ft_now_ms();
		struct pollfd p = {.fd = fd, .events = POLLIN};

		if (now >= end)
			return false;
		int rc = poll(&p, 1, (int)(end - now));
		if (rc < 0 && errno == EINTR)
			continue;
		if (rc <= 0)
			return false;
		char ch;
		ssize_t r = read(fd, &ch, 1);
		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			return false;
		}
		if (ch != '\n') {
			if (n < sizeof(line) - 1)
				line[n++] = ch;
			continue;
		}
		line[n] = '\0';
		n = 0;
		size_t pl = strlen(prefix);
		if (strncmp(line, prefix, pl) == 0) {
			const char *v = line + pl;
			while (*v == ' ')
				v++;
			snprintf(buf, len, "%s", v);
			return true;
		}
		printf("# peer: %s\n", line);
		fflush(stdout);
	}
}

int ft_wait_child(pid_t pid, int timeout_ms)
{
	uint64_t end = ft_now_ms() + (uint64_t)timeout_ms;
	int status;

	for (;;) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid)
			return status;
		if (r < 0 && errno != EINTR)
			return -1;
		if (ft_now_ms() >= end)
			break;
		ft_sleep_ms(10);
	}
	kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	return -1;
}

/* ------------------------------------------------------------------ the ledger */

void ft_tab_init(struct ft_tab *t, struct ferry_ctx *ctx, struct ferry_cq *cq)
{
	memset(t, 0, sizeof(*t));
	t->ctx = ctx;
	t->cq = cq ? cq : ferry_ctx_cq(ctx);
	t->mask = 1023;
	t->slots = calloc(t->mask + 1, sizeof(*t->slots));
	FT_ASSERT(t->slots, "out of memory");
	t->next_id = 1;
}

void ft_tab_dump(struct ft_tab *t, const char *who, unsigned max)
{
	uint64_t now = ft_now_ns();
	unsigned shown = 0;

	printf("# %s: %llu ferry ops still in flight, %llu logical ops\n", who,
	       (unsigned long long)t->live, (unsigned long long)t->lops_live);
	for (size_t i = 0; i <= t->mask && shown < max; i++) {
		struct ft_slot *s = &t->slots[i];
		if (!s->op)
			continue;
		printf("#   op id %llu type %d posted %llu ms ago\n", (unsigned long long)s->id,
		       (int)s->op->type,
		       (unsigned long long)((now - s->op->posted_ns) / 1000000ull));
		shown++;
	}
	shown = 0;
	for (struct ft_lop *l = t->lops; l && shown < max; l = l->next, shown++)
		printf("#   logical %s aid %llu len %llu stage %d pending %u status %s\n",
		       ft_kind_names[l->kind], (unsigned long long)l->aid,
		       (unsigned long long)l->len, l->stage, l->pending, ft_err(l->status));
	fflush(stdout);
}

uint64_t ft_tab_fini(struct ft_tab *t, const char *who)
{
	uint64_t lost = t->live;

	if (lost) {
		printf("LOST %s: %llu operations never completed\n", who,
		       (unsigned long long)lost);
		ft_tab_dump(t, who, 16);
	}
	free(t->slots);
	t->slots = NULL;
	return lost;
}

static void tab_grow(struct ft_tab *t)
{
	size_t nmask = t->mask * 2 + 1;

	for (;;) {
		struct ft_slot *ns = calloc(nmask + 1, sizeof(*ns));
		bool clash = false;

		FT_ASSERT(ns, "out of memory");
		for (size_t i = 0; i <= t->mask && !clash; i++) {
			struct ft_slot *s = &t->slots[i];
			if (!s->op)
				continue;
			struct ft_slot *d = &ns[s->id & nmask];
			if (d->op)
				clash = true;
			else
				*d = *s;
		}
		if (!clash) {
			free(t->slots);
			t->slots = ns;
			t->mask = nmask;
			return;
		}
		free(ns);
		nmask = nmask * 2 + 1;
	}
}

void *ft_tab_arm(struct ft_tab *t, struct ft_op *op, enum ferry_op_type type,
		 void (*done)(struct ft_tab *, struct ft_op *, const struct ferry_completion *))
{
	op->id = t->next_id++;
	op->type = type;
	op->done = done;
	op->posted_ns = ft_now_ns();
	while (t->slots[op->id & t->mask].op)
		tab_grow(t);
	t->slots[op->id & t->mask] = (struct ft_slot){.id = op->id, .op = op};
	t->live++;
	t->posted++;
	return (void *)(uintptr_t)op->id;
}

void ft_tab_unarm(struct ft_tab *t, struct ft_op *op)
{
	struct ft_slot *s = &t->slots[op->id & t->mask];

	FT_ASSERT(s->op == op && s->id == op->id, "unarm of an op that is not live");
	*s = (struct ft_slot){0};
	t->live--;
	t->posted--;
	t->refused++;
}

int ft_tab_poll(struct ft_tab *t, int timeout_ms)
{
	struct ferry_completion c[32];
	int n = ferry_cq_wait(t->cq, c, 32, timeout_ms);

	if (n == FERRY_ETIMEDOUT)
		return 0;
	if (n < 0)
		return n;
	for (int i = 0; i < n; i++) {
		uint64_t id = (uint64_t)(uintptr_t)c[i].user_ctx;
		struct ft_slot *s = &t->slots[id & t->mask];

		if (id == 0 || s->id != id || !s->op) {
			t->bogus++;
			ft_fail_at(__FILE__, __LINE__, false,
				   "completion for op id %llu that is not in flight (a duplicate "
				   "or invented completion): type %d status %s len %llu",
				   (unsigned long long)id, (int)c[i].type, ft_err(c[i].status),
				   (unsigned long long)c[i].len);
			continue;
		}
		struct ft_op *op = s->op;
		*s = (struct ft_slot){0};
		t->live--;
		t->completed++;
		t->last_done_ns = ft_now_ns();
		if (c[i].type != op->type) {
			t->type_mismatch++;
			ft_fail_at(__FILE__, __LINE__, false,
				   "op id %llu posted as type %d completed as type %d",
				   (unsigned long long)id, (int)op->type, (int)c[i].type);
		}
		op->done(t, op, &c[i]);
	}
	return n;
}
