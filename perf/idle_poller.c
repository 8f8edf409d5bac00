/*
 * idle_poller.c - what idle endpoints cost, and how fast a dead peer is noticed
 * (the benchmarks of issue 3; reported in docs/BENCHMARKS.md).
 *
 *   idle_poller [-c COUNT] [-D SECONDS] [--death-probe LIST] [--death-signal LIST]
 *               [--no-idle] [--no-death] [--json]
 *
 * Idle cost. Two contexts in this process (TCP only), A listening on 127.0.0.1 and B
 * connecting COUNT private connections to it (a thread of ours accepts on A while they
 * connect, then stops), so that each context holds COUNT endpoints. Every endpoint
 * stays open, held by the program, with no traffic, under the library's defaults
 * (idle timeout, probes every FERRY_PROBE_INTERVAL_MS, ...). Then for SECONDS the main
 * thread sleeps and we measure:
 *   - the CPU time of the library's threads (the two pollers: whatever threads each
 *     context started), read per thread from its CPU clock, as CPU seconds per minute
 *     of wall time and % of one core, in all and per context;
 *   - user-space memory per idle endpoint: growth of the resident set (and of the
 *     malloc heap, mallinfo2) from before the first connect to after the last,
 *     divided by the 2 x COUNT endpoints (each connection is an endpoint on both sides,
 *     both in this process). Kernel socket buffers are not user-space memory.
 * RLIMIT_NOFILE is raised to what 2 x COUNT sockets need; if it cannot be, COUNT is
 * lowered to fit and the output says so.
 *
 * Death. For each probe interval in LIST ("default" = the library's default, or ms)
 * and each signal in LIST (KILL, STOP): a child process (this program again, so that
 * nothing is forked from a threaded process) listens; we connect 4 endpoints and post
 * on each a receive that nothing will match and a 1 MiB send (rendezvous) that the
 * child never receives, so 8 operations are in flight. We check that none completes,
 * send the signal, and time until each operation completes with an error. SIGKILL
 * makes the child's kernel close its sockets (the survivor sees the connection end);
 * SIGSTOP leaves them open and silent, so only the health probes can tell: after
 * FERRY_PROBE_MISSES unanswered probes the peer is declared dead.
 *
 * Never asserts a speed: exit status 0 unless something could not run.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <malloc.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <ferry/ferry.h>

#define IP_MAX_THREADS 64
#define IP_DEATH_EPS 4
#define IP_DEATH_SEND (1u << 20)
#define IP_FD_SPARE 256      /* fds beyond the sockets: epoll, eventfds, stdio, ... */
#define IP_MAX_DEATH_RUNS 8

struct ip_opts {
	uint32_t count;
	double duration;
	double settle;
	int idle;
	int death;
	int json;
	char death_probe[128];
	char death_signal[64];
};

struct ip_threads {
	int n;
	pid_t tid[IP_MAX_THREADS];
};

struct ip_death {
	char probe[16];          /* "default" or the interval in ms, as given */
	uint32_t probe_ms;       /* effective interval */
	uint32_t misses;         /* effective FERRY_PROBE_MISSES */
	const char *signame;
	int ops, failed, ok, early;
	double first_ms, last_ms;
	char statuses[128];
	char error[160];         /* why the run could not be made, or "" */
};

static uint64_t ip_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void ip_sleep(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* ------------------------------------------------------------------ threads and memory */

static void ip_tasks(struct ip_threads *t)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;

	t->n = 0;
	if (!d)
		return;
	while ((e = readdir(d)) && t->n < IP_MAX_THREADS) {
		if (e->d_name[0] != '.')
			t->tid[t->n++] = (pid_t)atoi(e->d_name);
	}
	closedir(d);
}

/* Threads in b that were not in a. */
static void ip_tasks_new(const struct ip_threads *a, const struct ip_threads *b,
			 struct ip_threads *out)
{
	out->n = 0;
	for (int i = 0; i < b->n; i++) {
		int seen = 0;

		for (int j = 0; j < a->n && !seen; j++)
			seen = a->tid[j] == b->tid[i];
		if (!seen && out->n < IP_MAX_THREADS)
			out->tid[out->n++] = b->tid[i];
	}
}

/*
 * CPU time of a thread of this process, in ns: its per-thread CPU clock (the clock
 * id glibc's pthread_getcpuclockid() builds from a tid), else /proc's tick counts.
 */
static uint64_t ip_thread_cpu_ns(pid_t tid)
{
	clockid_t cid = (clockid_t)(((unsigned)~tid << 3) | 6u);
	struct timespec ts;
	char path[64], buf[1024], *p;
	unsigned long ut, st;
	FILE *f;

	if (clock_gettime(cid, &ts) == 0)
		return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	snprintf(path, sizeof(path), "/proc/self/task/%d/stat", (int)tid);
	f = fopen(path, "r");
	if (!f)
		return 0;
	p = fgets(buf, sizeof(buf), f);
	fclose(f);
	if (!p || !(p = strrchr(buf, ')')))
		return 0;
	/* after the command: state ppid pgrp session tty tpgid flags minflt cminflt majflt
	 * cmajflt utime stime */
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &st) != 2)
		return 0;
	return (uint64_t)(ut + st) * (1000000000ull / (uint64_t)sysconf(_SC_CLK_TCK));
}

static uint64_t ip_threads_cpu_ns(const struct ip_threads *t)
{
	uint64_t sum = 0;

	for (int i = 0; i < t->n; i++)
		sum += ip_thread_cpu_ns(t->tid[i]);
	return sum;
}

static uint64_t ip_process_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

static uint64_t ip_rss_bytes(void)
{
	FILE *f = fopen("/proc/self/statm", "r");
	unsigned long size, rss = 0;

	if (f) {
		if (fscanf(f, "%lu %lu", &size, &rss) != 2)
			rss = 0;
		fclose(f);
	}
	return (uint64_t)rss * (uint64_t)sysconf(_SC_PAGESIZE);
}

static uint64_t ip_heap_bytes(void)
{
	struct mallinfo2 mi = mallinfo2();

	return (uint64_t)mi.uordblks + (uint64_t)mi.hblkhd;
}

/* Raises RLIMIT_NOFILE to need if it can; returns the usable limit and notes why not. */
static uint64_t ip_nofile(uint64_t need, char *note, size_t len)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl))
		return 1024;
	if (rl.rlim_cur >= need)
		return rl.rlim_cur;
	if (rl.rlim_max < need) {
		struct rlimit up = { need, need };

		if (setrlimit(RLIMIT_NOFILE, &up) == 0)
			return need;
		snprintf(note, len, "RLIMIT_NOFILE hard limit %llu < %llu needed and cannot be raised "
			 "(%s)", (unsigned long long)rl.rlim_max, (unsigned long long)need,
			 strerror(errno));
		rl.rlim_cur = rl.rlim_max;
	} else {
		rl.rlim_cur = need;
	}
	if (setrlimit(RLIMIT_NOFILE, &rl))
		return 1024;
	return rl.rlim_cur;
}

/* ------------------------------------------------------------------ contexts */

static int ip_ctx(const char *probe, struct ferry_ctx **out)
{
	struct ferry_config cfg;

	ferry_config_init(&cfg);
	cfg.providers = "tcp";
	cfg.log_level = FERRY_LOG_ERROR;
	if (probe && strcmp(probe, "default") != 0)
		cfg.probe_interval_ms = (uint32_t)strtoul(probe, NULL, 10);
	return ferry_ctx_create(&cfg, out);
}

static int ip_listen(struct ferry_ctx *ctx, struct ferry_listener **l, char *addr, size_t len)
{
	int rc = ferry_listen(ctx, "tcp://127.0.0.1:0", NULL, l);

	if (rc)
		return rc;
	rc = ferry_listener_addr(*l, addr, &len);
	if (!rc) {
		char *comma = strchr(addr, ',');

		if (comma)
			*comma = '\0';
	}
	return rc;
}

/* ------------------------------------------------------------------ idle cost */

struct ip_acceptor {
	struct ferry_listener *l;
	struct ferry_ep **eps;
	uint32_t want;
	_Atomic uint32_t got;
	_Atomic int stop;
	int err;
};

static void *ip_accept_main(void *arg)
{
	struct ip_acceptor *a = arg;

	while (!atomic_load(&a->stop) && atomic_load(&a->got) < a->want) {
		struct ferry_ep *ep;
		int rc = ferry_listener_accept(a->l, &ep, 200);

		if (rc == FERRY_ETIMEDOUT)
			continue;
		if (rc) {
			a->err = rc;
			break;
		}
		a->eps[atomic_load(&a->got)] = ep;
		atomic_fetch_add(&a->got, 1);
	}
	return NULL;
}

struct ip_idle {
	uint32_t requested, connections;
	uint64_t nofile;
	char note[256];
	double setup_s, wall_s;
	uint32_t probe_ms, idle_timeout_s;
	int lib_threads;
	double lib_cpu_s, proc_cpu_s;
	double ctx_cpu_s[2];             /* A (listening side), B (connecting side) */
	double probes_per_s;
	uint64_t failed_eps;
	int64_t rss_delta, heap_delta;
	int warm_rc;                     /* 0, or why the traffic round failed */
	int64_t rss_used, heap_used;     /* deltas again, after a round of traffic */
};

/*
 * One round of traffic on every connection, both ways: IP_WARM_MSGS messages of
 * IP_WARM_LEN bytes, all written before the receiver reads, so that whatever buffers
 * a receiver stages bytes in are filled once, as on any endpoint that has been used.
 */
#define IP_WARM_MSGS 16
#define IP_WARM_LEN 4096

static int ip_wait_ops(struct ferry_cq *cq, int want)
{
	struct ferry_completion c[IP_WARM_MSGS];
	uint64_t until = ip_now() + 10000000000ull;

	while (want > 0) {
		int n = ferry_cq_poll(cq, c, IP_WARM_MSGS);

		if (n < 0)
			return n;
		for (int i = 0; i < n; i++)
			if (c[i].status)
				return c[i].status;
		want -= n;
		if (n == 0 && ip_now() > until)
			return FERRY_ETIMEDOUT;
	}
	return 0;
}

static int ip_warm_one(struct ferry_ep *from, struct ferry_cq *from_cq, struct ferry_ep *to,
		       struct ferry_cq *to_cq, char *buf)
{
	int rc = 0;

	for (int k = 0; k < IP_WARM_MSGS && !rc; k++)
		rc = ferry_send(from, buf + k * IP_WARM_LEN, IP_WARM_LEN, 1, NULL, NULL);
	if (!rc)
		rc = ip_wait_ops(from_cq, IP_WARM_MSGS);
	for (int k = 0; k < IP_WARM_MSGS && !rc; k++)
		rc = ferry_recv(to, buf + (IP_WARM_MSGS + k) * IP_WARM_LEN, IP_WARM_LEN, 1, ~0ull,
				NULL, NULL);
	if (!rc)
		rc = ip_wait_ops(to_cq, IP_WARM_MSGS);
	return rc;
}

static int ip_warm(struct ferry_ctx *a, struct ferry_ep **eps_a, struct ferry_ctx *b,
		   struct ferry_ep **eps_b, uint32_t n)
{
	char *buf = calloc(2 * IP_WARM_MSGS, IP_WARM_LEN);
	int rc = buf ? 0 : FERRY_ENOMEM;

	for (uint32_t i = 0; i < n && !rc; i++) {
		rc = ip_warm_one(eps_b[i], ferry_ctx_cq(b), eps_a[i], ferry_ctx_cq(a), buf);
		if (!rc)
			rc = ip_warm_one(eps_a[i], ferry_ctx_cq(a), eps_b[i], ferry_ctx_cq(b), buf);
	}
	free(buf);
	return rc;
}

/*
 * Closes the endpoints a few at a time on both sides, driving both contexts between
 * batches, rather than ending thousands of connections at once by destroying one
 * context: before commit fa43420 ferry's progress loop never returned while 64 or more
 * of its sockets reported end-of-file, and the other context's destroy then waited
 * forever for its poller (found by this program). Kept: it costs nothing and the
 * teardown is not what is measured.
 */
#define IP_CLOSE_BATCH 16

static void ip_teardown(struct ferry_ctx *a, struct ferry_ep **eps_a, struct ferry_ctx *b,
			struct ferry_ep **eps_b, uint32_t nb, uint32_t na)
{
	uint32_t n = na > nb ? na : nb;

	for (uint32_t i = 0; i < n; i += IP_CLOSE_BATCH) {
		for (uint32_t k = i; k < i + IP_CLOSE_BATCH && k < n; k++) {
			if (k < nb && eps_b[k])
				ferry_ep_close(eps_b[k]);
			if (k < na && eps_a[k])
				ferry_ep_close(eps_a[k]);
		}
		ferry_progress(a);
		ferry_progress(b);
	}
	for (int k = 0; k < 10; k++) {
		ferry_progress(a);
		ferry_progress(b);
	}
}

static int ip_idle_run(const struct ip_opts *o, struct ip_idle *r)
{
	struct ip_threads t0, t1, t2, lib_a, lib_b, lib;
	struct ferry_ctx *a = NULL, *b = NULL;
	struct ferry_listener *l = NULL;
	struct ferry_ep **eps_a = NULL, **eps_b = NULL;
	struct ip_acceptor acc = { 0 };
	struct ferry_stats sa0, sb0, sa1, sb1;
	pthread_t th;
	char addr[256];
	uint64_t rss0, heap0, start, c0, c1, ca0, ca1, p0, p1, w0, w1;
	uint32_t n = 0;
	int rc, started = 0;

	memset(r, 0, sizeof(*r));
	r->requested = o->count;
	r->nofile = ip_nofile(2ull * o->count + IP_FD_SPARE, r->note, sizeof(r->note));
	n = o->count;
	if (2ull * n + IP_FD_SPARE > r->nofile) {
		n = r->nofile > IP_FD_SPARE ? (uint32_t)((r->nofile - IP_FD_SPARE) / 2) : 0;
		size_t l0 = strlen(r->note);
		snprintf(r->note + l0, sizeof(r->note) - l0, "%sendpoints lowered from %u to %u",
			 l0 ? ": " : "", o->count, n);
	}
	if (!n)
		return FERRY_ENOBUFS;
	eps_a = calloc(n, sizeof(*eps_a));
	eps_b = calloc(n, sizeof(*eps_b));
	if (!eps_a || !eps_b)
		return FERRY_ENOMEM;

	ip_tasks(&t0);
	rc = ip_ctx(NULL, &a);
	if (rc)
		goto out;
	ip_tasks(&t1);
	rc = ip_ctx(NULL, &b);
	if (rc)
		goto out;
	ip_tasks(&t2);
	ip_tasks_new(&t0, &t1, &lib_a);
	ip_tasks_new(&t1, &t2, &lib_b);
	lib = lib_a;
	for (int i = 0; i < lib_b.n && lib.n < IP_MAX_THREADS; i++)
		lib.tid[lib.n++] = lib_b.tid[i];
	r->lib_threads = lib.n;
	r->probe_ms = ferry_ctx_config(a)->probe_interval_ms;
	r->idle_timeout_s = ferry_ctx_config(a)->idle_timeout_s;
	rc = ip_listen(a, &l, addr, sizeof(addr));
	if (rc)
		goto out;

	malloc_trim(0);
	rss0 = ip_rss_bytes();
	heap0 = ip_heap_bytes();
	start = ip_now();

	acc.l = l;
	acc.eps = eps_a;
	acc.want = n;
	if (pthread_create(&th, NULL, ip_accept_main, &acc)) {
		rc = FERRY_ENOMEM;
		goto out;
	}
	started = 1;
	for (uint32_t i = 0; i < n; i++) {
		struct ferry_connect_attr ca = { .flags = FERRY_CONNECT_PRIVATE, .timeout_ms = 0 };

		rc = ferry_connect(b, addr, &ca, &eps_b[i]);
		if (rc) {
			fprintf(stderr, "idle_poller: connect %u of %u failed: %s\n", i + 1, n,
				ferry_strerror(rc));
			break;
		}
		r->connections = i + 1;
		if (!o->json && (i + 1) % 2000 == 0)
			fprintf(stderr, "idle_poller: %u endpoints connected\n", i + 1);
	}
	/* the last handshakes may still be in the accept queue */
	for (uint64_t until = ip_now() + 30000000000ull;
	     atomic_load(&acc.got) < r->connections && ip_now() < until;)
		ip_sleep(0.01);
	atomic_store(&acc.stop, 1);
	pthread_join(th, NULL);
	started = 0;
	if (rc || atomic_load(&acc.got) < r->connections) {
		if (!rc)
			rc = acc.err ? acc.err : FERRY_ETIMEDOUT;
		goto out;
	}
	r->setup_s = (double)(ip_now() - start) / 1e9;

	/* let the first probes and handshake leftovers pass, then measure a quiet window */
	ip_sleep(o->settle);
	r->rss_delta = (int64_t)ip_rss_bytes() - (int64_t)rss0;
	r->heap_delta = (int64_t)ip_heap_bytes() - (int64_t)heap0;
	ferry_stats_get(a, NULL, &sa0);
	ferry_stats_get(b, NULL, &sb0);
	ca0 = ip_threads_cpu_ns(&lib_a);
	c0 = ip_threads_cpu_ns(&lib);
	p0 = ip_process_cpu_ns();
	w0 = ip_now();
	ip_sleep(o->duration);
	w1 = ip_now();
	c1 = ip_threads_cpu_ns(&lib);
	ca1 = ip_threads_cpu_ns(&lib_a);
	p1 = ip_process_cpu_ns();
	ferry_stats_get(a, NULL, &sa1);
	ferry_stats_get(b, NULL, &sb1);
	r->wall_s = (double)(w1 - w0) / 1e9;
	r->lib_cpu_s = (double)(c1 - c0) / 1e9;
	r->ctx_cpu_s[0] = (double)(ca1 - ca0) / 1e9;
	r->ctx_cpu_s[1] = r->lib_cpu_s - r->ctx_cpu_s[0];
	r->proc_cpu_s = (double)(p1 - p0) / 1e9;
	r->probes_per_s = (double)(sa1.probes_sent - sa0.probes_sent + sb1.probes_sent -
				   sb0.probes_sent) / r->wall_s;
	for (uint32_t i = 0; i < r->connections; i++)
		r->failed_eps += (ferry_ep_status(eps_a[i]) != 0) + (ferry_ep_status(eps_b[i]) != 0);

	/* memory again once every endpoint has carried traffic (and is idle again) */
	r->warm_rc = ip_warm(a, eps_a, b, eps_b, r->connections);
	r->rss_used = (int64_t)ip_rss_bytes() - (int64_t)rss0;
	r->heap_used = (int64_t)ip_heap_bytes() - (int64_t)heap0;
out:
	if (started) {
		atomic_store(&acc.stop, 1);
		pthread_join(th, NULL);
	}
	ferry_listener_close(l);
	ip_teardown(a, eps_a, b, eps_b, r->connections, atomic_load(&acc.got));
	ferry_ctx_destroy(b);
	ferry_ctx_destroy(a);
	free(eps_a);
	free(eps_b);
	return rc;
}

/* ------------------------------------------------------------------ death */

/* The child: listen, accept the survivor's endpoints, keep them, answer probes. */
static int ip_death_child(const char *probe, uint32_t neps)
{
	struct ferry_ctx *ctx;
	struct ferry_listener *l;
	struct ferry_ep *eps[IP_DEATH_EPS];
	struct ferry_completion c[16];
	char addr[256];
	int rc;

	rc = ip_ctx(probe, &ctx);
	if (!rc)
		rc = ip_listen(ctx, &l, addr, sizeof(addr));
	if (rc) {
		fprintf(stderr, "idle_poller child: %s\n", ferry_strerror(rc));
		return 1;
	}
	printf("%s\n", addr);
	fflush(stdout);
	for (uint32_t i = 0; i < neps && i < IP_DEATH_EPS; i++) {
		rc = ferry_listener_accept(l, &eps[i], 30000);
		if (rc) {
			fprintf(stderr, "idle_poller child: accept: %s\n", ferry_strerror(rc));
			return 1;
		}
	}
	/* posts nothing: the survivor's operations stay in flight until we die */
	for (;;)
		ferry_cq_wait(ferry_ctx_cq(ctx), c, 16, 1000);
}

static void ip_death_run(const char *self, const char *probe, int sig, struct ip_death *d)
{
	struct ferry_ctx *ctx = NULL;
	struct ferry_ep *eps[IP_DEATH_EPS] = { 0 };
	static char rbuf[IP_DEATH_EPS][64];
	char *sbuf = NULL, addr[256], nbuf[16];
	int fds[2] = { -1, -1 }, status, rc, got = 0;
	int counts[8] = { 0 }, codes[8] = { 0 }, ncodes = 0;
	uint64_t tkill = 0;
	struct pollfd pfd;
	pid_t pid = -1;
	size_t alen = 0;

	memset(d, 0, sizeof(*d));
	snprintf(d->probe, sizeof(d->probe), "%s", probe);
	d->signame = sig == SIGKILL ? "KILL" : "STOP";
	d->ops = 2 * IP_DEATH_EPS;
	if (pipe(fds)) {
		snprintf(d->error, sizeof(d->error), "pipe: %s", strerror(errno));
		return;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid == 0) {
		snprintf(nbuf, sizeof(nbuf), "%d", IP_DEATH_EPS);
		dup2(fds[1], STDOUT_FILENO);
		close(fds[0]);
		close(fds[1]);
		execl(self, self, "--death-child", probe, nbuf, (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	if (pid < 0) {
		snprintf(d->error, sizeof(d->error), "fork: %s", strerror(errno));
		goto out;
	}
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	while (alen < sizeof(addr) - 1 && !memchr(addr, '\n', alen)) {
		ssize_t n;

		if (poll(&pfd, 1, 10000) <= 0)
			break;
		n = read(fds[0], addr + alen, sizeof(addr) - 1 - alen);
		if (n <= 0)
			break;
		alen += (size_t)n;
	}
	addr[alen] = '\0';
	if (!strchr(addr, '\n')) {
		snprintf(d->error, sizeof(d->error), "the child did not start");
		goto out;
	}
	*strchr(addr, '\n') = '\0';

	rc = ip_ctx(probe, &ctx);
	if (rc) {
		snprintf(d->error, sizeof(d->error), "ferry_ctx_create: %s", ferry_strerror(rc));
		goto out;
	}
	d->probe_ms = ferry_ctx_config(ctx)->probe_interval_ms;
	d->misses = ferry_ctx_config(ctx)->probe_misses;
	sbuf = calloc(1, IP_DEATH_SEND);
	for (int i = 0; i < IP_DEATH_EPS && sbuf; i++) {
		struct ferry_connect_attr ca = { .flags = FERRY_CONNECT_PRIVATE, .timeout_ms = 0 };

		rc = ferry_connect(ctx, addr, &ca, &eps[i]);
		if (!rc)
			rc = ferry_recv(eps[i], rbuf[i], sizeof(rbuf[i]), 7, ~0ull, NULL, NULL);
		if (!rc)
			rc = ferry_send(eps[i], sbuf, IP_DEATH_SEND, 8, NULL, NULL);
		if (rc) {
			snprintf(d->error, sizeof(d->error), "endpoint %d: %s", i, ferry_strerror(rc));
			goto out;
		}
	}
	if (!sbuf) {
		snprintf(d->error, sizeof(d->error), "out of memory");
		goto out;
	}
	/* nothing may complete while the child lives: that is what "in flight" means */
	for (uint64_t until = ip_now() + 300000000ull; ip_now() < until;) {
		struct ferry_completion c[16];
		int n = ferry_cq_wait(ferry_ctx_cq(ctx), c, 16, 50);

		if (n > 0)
			d->early += n;
	}
	tkill = ip_now();
	kill(pid, sig);
	while (got + d->early < d->ops && ip_now() - tkill < 30000000000ull) {
		struct ferry_completion c[16];
		int n = ferry_cq_wait(ferry_ctx_cq(ctx), c, 16, 100);
		uint64_t now = ip_now();

		for (int i = 0; i < n; i++) {
			double ms = (double)(now - tkill) / 1e6;
			int k;

			if (!got)
				d->first_ms = ms;
			d->last_ms = ms;
			got++;
			if (c[i].status == 0) {
				d->ok++;
				continue;
			}
			d->failed++;
			for (k = 0; k < ncodes && codes[k] != c[i].status; k++)
				;
			if (k == ncodes && ncodes < 8)
				codes[ncodes++] = c[i].status;
			if (k < 8)
				counts[k]++;
		}
	}
	for (int k = 0; k < ncodes; k++) {
		size_t l0 = strlen(d->statuses);

		snprintf(d->statuses + l0, sizeof(d->statuses) - l0, "%s%s:%d", k ? "," : "",
			 ferry_errname(codes[k]), counts[k]);
	}
	if (got + d->early < d->ops)
		snprintf(d->error, sizeof(d->error), "%d of %d operations still in flight after 30 s",
			 d->ops - got - d->early, d->ops);
out:
	if (pid > 0) {
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
	}
	if (fds[0] >= 0)
		close(fds[0]);
	ferry_ctx_destroy(ctx);
	free(sbuf);
}

/* ------------------------------------------------------------------ main */

static void ip_usage(FILE *f)
{
	fprintf(f,
		"usage: idle_poller [options]\n"
		"  -c, --count N            idle connections (default 10000; 2 endpoints each)\n"
		"  -D, --duration SEC       measured window (default 60)\n"
		"      --settle SEC         wait after connecting, before measuring (default 3)\n"
		"      --death-probe LIST   probe intervals for the death test: \"default\" or ms,\n"
		"                           comma separated (default \"default,100\")\n"
		"      --death-signal LIST  KILL and/or STOP (default \"KILL,STOP\")\n"
		"      --no-idle, --no-death  skip a part\n"
		"      --json               one JSON object\n");
}

static int ip_parse(int argc, char **argv, struct ip_opts *o)
{
	static const struct option longs[] = {
		{ "count", required_argument, NULL, 'c' },
		{ "duration", required_argument, NULL, 'D' },
		{ "settle", required_argument, NULL, 's' },
		{ "death-probe", required_argument, NULL, 'P' },
		{ "death-signal", required_argument, NULL, 'S' },
		{ "no-idle", no_argument, NULL, 'I' },
		{ "no-death", no_argument, NULL, 'X' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	memset(o, 0, sizeof(*o));
	o->count = 10000;
	o->duration = 60;
	o->settle = 3;
	o->idle = 1;
	o->death = 1;
	snprintf(o->death_probe, sizeof(o->death_probe), "default,100");
	snprintf(o->death_signal, sizeof(o->death_signal), "KILL,STOP");
	while ((c = getopt_long(argc, argv, "c:D:h", longs, NULL)) != -1) {
		switch (c) {
		case 'c':
			o->count = (uint32_t)strtoul(optarg, NULL, 0);
			if (!o->count || o->count > 1000000)
				goto bad;
			break;
		case 'D':
			o->duration = strtod(optarg, NULL);
			if (!(o->duration > 0 && o->duration <= 3600))
				goto bad;
			break;
		case 's':
			o->settle = strtod(optarg, NULL);
			if (!(o->settle >= 0 && o->settle <= 600))
				goto bad;
			break;
		case 'P':
			snprintf(o->death_probe, sizeof(o->death_probe), "%s", optarg);
			break;
		case 'S':
			snprintf(o->death_signal, sizeof(o->death_signal), "%s", optarg);
			break;
		case 'I':
			o->idle = 0;
			break;
		case 'X':
			o->death = 0;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'h':
			ip_usage(stdout);
			exit(0);
		default:
			goto bad;
		}
	}
	if (optind != argc)
		goto bad;
	return 0;
bad:
	ip_usage(stderr);
	return -1;
}

static void ip_print_idle(const struct ip_opts *o, const struct ip_idle *r, int rc)
{
	double eps = 2.0 * r->connections;
	double per_min = r->wall_s > 0 ? r->lib_cpu_s * 60 / r->wall_s : 0;
	double pct = r->wall_s > 0 ? 100 * r->lib_cpu_s / r->wall_s : 0;
	double proc = r->wall_s > 0 ? r->proc_cpu_s * 60 / r->wall_s : 0;
	double ctx_pct[2] = { r->wall_s > 0 ? 100 * r->ctx_cpu_s[0] / r->wall_s : 0,
			      r->wall_s > 0 ? 100 * r->ctx_cpu_s[1] / r->wall_s : 0 };

	if (o->json) {
		printf("\"idle\":{\"status\":\"%s\",\"requested\":%u,\"connections\":%u,"
		       "\"endpoints\":%.0f,\"nofile\":%" PRIu64 ",\"note\":\"%s\","
		       "\"probe_interval_ms\":%u,\"idle_timeout_s\":%u,\"setup_s\":%.3f,"
		       "\"wall_s\":%.3f,\"lib_threads\":%d,\"lib_cpu_s\":%.4f,"
		       "\"lib_cpu_s_per_min\":%.4f,\"lib_core_pct\":%.4f,"
		       "\"ctx_core_pct\":[%.4f,%.4f],\"ctx_core_pct_max\":%.4f,"
		       "\"process_cpu_s_per_min\":%.4f,\"probes_per_s\":%.1f,\"failed_eps\":%" PRIu64
		       ",\"rss_delta\":%" PRId64 ",\"heap_delta\":%" PRId64
		       ",\"rss_per_ep\":%.1f,\"heap_per_ep\":%.1f,\"warm\":\"%s\","
		       "\"rss_used_per_ep\":%.1f,\"heap_used_per_ep\":%.1f}",
		       rc ? ferry_errname(rc) : "ok", r->requested, r->connections, eps, r->nofile,
		       r->note, r->probe_ms, r->idle_timeout_s, r->setup_s, r->wall_s, r->lib_threads,
		       r->lib_cpu_s, per_min, pct, ctx_pct[0], ctx_pct[1],
		       ctx_pct[0] > ctx_pct[1] ? ctx_pct[0] : ctx_pct[1], proc, r->probes_per_s,
		       r->failed_eps,
		       r->rss_delta, r->heap_delta, eps ? (double)r->rss_delta / eps : 0,
		       eps ? (double)r->heap_delta / eps : 0, r->warm_rc ? ferry_errname(r->warm_rc) : "ok",
		       eps ? (double)r->rss_used / eps : 0, eps ? (double)r->heap_used / eps : 0);
		return;
	}
	printf("Idle endpoints (TCP, two contexts in one process, probes every %u ms, idle "
	       "timeout %u s, endpoints held)\n", r->probe_ms, r->idle_timeout_s);
	if (r->note[0])
		printf("  note: %s\n", r->note);
	if (rc) {
		printf("  FAILED: %s after %u connections\n", ferry_strerror(rc), r->connections);
		return;
	}
	printf("  connections          %u (%.0f endpoints), set up in %.1f s\n", r->connections,
	       eps, r->setup_s);
	printf("  library threads      %d, CPU %.3f s in %.1f s = %.3f CPU s per minute = %.3f %% "
	       "of one core\n", r->lib_threads, r->lib_cpu_s, r->wall_s, per_min, pct);
	printf("  per context          %.3f %% (A, listening) and %.3f %% (B, connecting) of one "
	       "core, %u endpoints each\n", ctx_pct[0], ctx_pct[1], r->connections);
	printf("  whole process        %.3f CPU s per minute\n", proc);
	printf("  probes sent          %.0f per second (both contexts)\n", r->probes_per_s);
	printf("  memory per endpoint  %.0f B resident, %.0f B malloc'd (deltas %.1f MiB, %.1f "
	       "MiB over %.0f endpoints)\n", (double)r->rss_delta / eps, (double)r->heap_delta / eps,
	       (double)r->rss_delta / 1048576, (double)r->heap_delta / 1048576, eps);
	if (r->warm_rc)
		printf("  after traffic        FAILED: %s\n", ferry_strerror(r->warm_rc));
	else
		printf("  after traffic        %.0f B resident, %.0f B malloc'd per endpoint (%d x %d B "
		       "each way on every connection)\n", (double)r->rss_used / eps,
		       (double)r->heap_used / eps, IP_WARM_MSGS, IP_WARM_LEN);
	printf("  endpoints failed     %" PRIu64 "\n", r->failed_eps);
}

int main(int argc, char **argv)
{
	struct ip_opts o;
	struct ip_idle idle;
	struct ip_death deaths[IP_MAX_DEATH_RUNS];
	char self[4096], probes[128], sigs[64], *ps, *ss, *p, *s;
	int ndeath = 0, rc = 0, idle_rc = 0;
	ssize_t sl;

	if (argc == 4 && strcmp(argv[1], "--death-child") == 0)
		return ip_death_child(argv[2], (uint32_t)atoi(argv[3]));
	if (ip_parse(argc, argv, &o))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	sl = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (sl <= 0) {
		perror("idle_poller: /proc/self/exe");
		return 1;
	}
	self[sl] = '\0';

	/* death first: its children are started before this process has many threads */
	if (o.death) {
		snprintf(probes, sizeof(probes), "%s", o.death_probe);
		for (p = strtok_r(probes, ",", &ps); p; p = strtok_r(NULL, ",", &ps)) {
			snprintf(sigs, sizeof(sigs), "%s", o.death_signal);
			for (s = strtok_r(sigs, ",", &ss); s && ndeath < IP_MAX_DEATH_RUNS;
			     s = strtok_r(NULL, ",", &ss)) {
				int sig = strcasecmp(s, "STOP") == 0 || strcasecmp(s, "SIGSTOP") == 0
						  ? SIGSTOP
						  : SIGKILL;

				if (!o.json)
					fprintf(stderr, "idle_poller: death test, probes %s, SIG%s\n", p,
						sig == SIGKILL ? "KILL" : "STOP");
				ip_death_run(self, p, sig, &deaths[ndeath]);
				if (deaths[ndeath].error[0])
					rc = 1;
				ndeath++;
			}
		}
	}
	if (o.idle) {
		if (!o.json)
			fprintf(stderr, "idle_poller: connecting %u endpoints\n", o.count);
		idle_rc = ip_idle_run(&o, &idle);
		if (idle_rc)
			rc = 1;
	}

	if (o.json)
		printf("{\"test\":\"idle_poller\"");
	if (o.idle) {
		printf(o.json ? "," : "");
		ip_print_idle(&o, &idle, idle_rc);
	}
	if (o.json && o.death)
		printf(",\"death\":[");
	else if (o.death)
		printf("\nPeer death: time from the signal to the failure of the survivor's %d "
		       "operations in flight (%d endpoints: a receive and a 1 MiB send each)\n"
		       "  probes    misses  signal  first[ms]   last[ms]   failed  statuses\n",
		       2 * IP_DEATH_EPS, IP_DEATH_EPS);
	for (int i = 0; i < ndeath; i++) {
		struct ip_death *d = &deaths[i];

		if (o.json)
			printf("%s{\"probe\":\"%s\",\"probe_interval_ms\":%u,\"probe_misses\":%u,"
			       "\"signal\":\"%s\",\"ops\":%d,\"failed\":%d,\"ok\":%d,\"early\":%d,"
			       "\"first_ms\":%.2f,\"last_ms\":%.2f,\"statuses\":\"%s\",\"error\":\"%s\"}",
			       i ? "," : "", d->probe, d->probe_ms, d->misses, d->signame, d->ops,
			       d->failed, d->ok, d->early, d->first_ms, d->last_ms, d->statuses,
			       d->error);
		else if (d->error[0] && !d->failed)
			printf("  %-9s %-7u SIG%-4s  %s\n", d->probe, d->misses, d->signame, d->error);
		else
			printf("  %-4u ms   %-7u SIG%-4s  %-10.1f  %-10.1f %d/%d    %s%s%s\n",
			       d->probe_ms, d->misses, d->signame, d->first_ms, d->last_ms, d->failed,
			       d->ops, d->statuses, d->error[0] ? "  " : "", d->error);
	}
	if (o.json)
		printf("%s}\n", o.death ? "]" : "");
	return rc;
}
