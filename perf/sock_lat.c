/*
 * sock_lat.c - the physical limit for small-message latency over TCP on this machine:
 * a minimal ping-pong of SIZE bytes between two processes over 127.0.0.1.
 *
 *   sock_lat [-s SIZE] [-n ITERS] [--poll=busy|wait] [--warmup N] [-p PORT] [--json]
 *
 * The process listens on 127.0.0.1 and forks the echo side; both set TCP_NODELAY.
 *  - busy (default, like perftest and ferry_perf's default): both sides spin on
 *    recv(MSG_DONTWAIT) until the whole message is there, send with MSG_DONTWAIT;
 *  - wait: plain blocking recv()/send(), the process sleeps in the kernel.
 * Latency is one way: half of each round trip, measured by the pinging side. As in
 * perftest (and ferry_perf), the two largest samples are dropped before statistics.
 *
 * Output: perftest's latency columns, or with --json one JSON object with the same
 * figures in usec (t_min, t_max, t_typical = median, t_avg, t_stdev, p99, p99_9) and
 * the CPU of both sides in % of one core.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <sched.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SLAT_TAIL 2 /* perftest drops the two largest samples */

struct slat_opts {
	size_t size;
	uint64_t iters;
	uint64_t warmup;
	int busy;
	int port;
	int json;
};

static uint64_t slat_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t slat_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

/* Whole message in or out; busy mode spins on EAGAIN instead of sleeping. */
static int slat_io(int fd, char *buf, size_t len, int busy, int out)
{
	int flags = busy ? MSG_DONTWAIT : 0;
	size_t done = 0;
	unsigned empty = 0;

	while (done < len) {
		ssize_t r = out ? send(fd, buf + done, len - done, flags | MSG_NOSIGNAL)
				: recv(fd, buf + done, len - done, flags);

		if (r > 0) {
			done += (size_t)r;
			continue;
		}
		if (r == 0)
			return -EPIPE;
		if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			return -errno;
		/* as ferry_perf's busy polling (perf/oob.c): the core is given away
		 * once per 256 empty tries, so both yardsticks behave alike when shared */
		if (++empty % 256 == 0)
			sched_yield();
	}
	return 0;
}

static void slat_usage(FILE *f)
{
	fprintf(f, "usage: sock_lat [-s SIZE (8)] [-n ITERS (100000)] [--poll=busy|wait] "
		   "[--warmup N (1000)] [-p PORT] [--json]\n"
		   "  TCP ping-pong over 127.0.0.1 with a forked echo process; one-way latency.\n");
}

static int slat_parse(int argc, char **argv, struct slat_opts *o)
{
	static const struct option longs[] = {
		{ "size", required_argument, NULL, 's' },
		{ "iters", required_argument, NULL, 'n' },
		{ "poll", required_argument, NULL, 'P' },
		{ "warmup", required_argument, NULL, 'w' },
		{ "port", required_argument, NULL, 'p' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	o->size = 8;
	o->iters = 100000;
	o->warmup = 1000;
	o->busy = 1;
	o->port = 0;
	o->json = 0;
	while ((c = getopt_long(argc, argv, "s:n:p:h", longs, NULL)) != -1) {
		switch (c) {
		case 's':
			o->size = (size_t)strtoull(optarg, NULL, 0);
			if (!o->size || o->size > (64u << 20))
				goto bad;
			break;
		case 'n':
			o->iters = strtoull(optarg, NULL, 0);
			if (o->iters < 5 || o->iters > 100000000ull)
				goto bad;
			break;
		case 'P':
			if (strcmp(optarg, "busy") == 0)
				o->busy = 1;
			else if (strcmp(optarg, "wait") == 0 || strcmp(optarg, "block") == 0)
				o->busy = 0;
			else
				goto bad;
			break;
		case 'w':
			o->warmup = strtoull(optarg, NULL, 0);
			break;
		case 'p':
			o->port = atoi(optarg);
			if (o->port < 0 || o->port > 65535)
				goto bad;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'h':
			slat_usage(stdout);
			exit(0);
		default:
			goto bad;
		}
	}
	if (optind != argc)
		goto bad;
	return 0;
bad:
	slat_usage(stderr);
	return -1;
}

/* Busy mode uses MSG_DONTWAIT per call, so the socket itself stays blocking. */
static void slat_nodelay(int fd)
{
	int one = 1;

	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* The echo side: bounce every message until the pinger closes; report its CPU. */
static int slat_echo(const struct slat_opts *o, const struct sockaddr_in *sa, int report_fd)
{
	uint64_t c0, t0, c1, t1;
	double cpu = 0;
	char *buf = malloc(o->size);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int rc = 1;

	if (!buf || fd < 0 || connect(fd, (const struct sockaddr *)sa, sizeof(*sa)))
		goto out;
	slat_nodelay(fd);
	c0 = slat_cpu_ns();
	t0 = slat_now();
	for (;;) {
		if (slat_io(fd, buf, o->size, o->busy, 0))
			break; /* EOF: the pinger is done */
		if (slat_io(fd, buf, o->size, o->busy, 1))
			break;
	}
	c1 = slat_cpu_ns();
	t1 = slat_now();
	cpu = t1 > t0 ? 100.0 * (double)(c1 - c0) / (double)(t1 - t0) : 0;
	rc = 0;
out:
	if (write(report_fd, &cpu, sizeof(cpu)) != (ssize_t)sizeof(cpu))
		rc = 1;
	if (fd >= 0)
		close(fd);
	free(buf);
	return rc;
}

static int slat_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	struct slat_opts o;
	struct sockaddr_in sa = { 0 };
	socklen_t salen = sizeof(sa);
	uint64_t *rtt, c0, c1, t0, t1;
	double peer_cpu = 0;
	int lfd, fd, pipefd[2], status, one = 1, rc = 0;
	char *buf;
	pid_t pid;

	if (slat_parse(argc, argv, &o))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	buf = malloc(o.size);
	rtt = malloc(o.iters * sizeof(*rtt));
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (!buf || !rtt || lfd < 0) {
		perror("sock_lat: setup");
		return 1;
	}
	memset(buf, 0x5a, o.size);
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)o.port);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &salen) || pipe(pipefd)) {
		perror("sock_lat: listen");
		return 1;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("sock_lat: fork");
		return 1;
	}
	if (pid == 0) {
		close(lfd);
		close(pipefd[0]);
		_exit(slat_echo(&o, &sa, pipefd[1]));
	}
	close(pipefd[1]);
	fd = accept(lfd, NULL, NULL);
	close(lfd);
	if (fd < 0) {
		perror("sock_lat: accept");
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return 1;
	}
	slat_nodelay(fd);

	for (uint64_t i = 0; i < o.warmup && !rc; i++) {
		rc = slat_io(fd, buf, o.size, o.busy, 1);
		if (!rc)
			rc = slat_io(fd, buf, o.size, o.busy, 0);
	}
	c0 = slat_cpu_ns();
	t0 = slat_now();
	for (uint64_t i = 0; i < o.iters && !rc; i++) {
		uint64_t s = slat_now();

		rc = slat_io(fd, buf, o.size, o.busy, 1);
		if (!rc)
			rc = slat_io(fd, buf, o.size, o.busy, 0);
		rtt[i] = slat_now() - s;
	}
	t1 = slat_now();
	c1 = slat_cpu_ns();
	close(fd);
	if (read(pipefd[0], &peer_cpu, sizeof(peer_cpu)) != (ssize_t)sizeof(peer_cpu))
		peer_cpu = -1;
	waitpid(pid, &status, 0);
	if (rc) {
		fprintf(stderr, "sock_lat: ping-pong failed: %s\n", strerror(-rc));
		return 1;
	}

	uint64_t n = o.iters - SLAT_TAIL;
	double sum = 0, sq = 0;

	qsort(rtt, o.iters, sizeof(*rtt), slat_cmp);
	for (uint64_t i = 0; i < n; i++)
		sum += (double)rtt[i] / 2000.0;
	double avg = sum / (double)n;
	for (uint64_t i = 0; i < n; i++) {
		double d = (double)rtt[i] / 2000.0 - avg;

		sq += d * d;
	}
	double tmin = (double)rtt[0] / 2000.0, tmax = (double)rtt[n - 1] / 2000.0;
	double med = (double)rtt[n / 2] / 2000.0;
	double p99 = (double)rtt[(uint64_t)((double)n * 0.99)] / 2000.0;
	double p999 = (double)rtt[(uint64_t)((double)n * 0.999)] / 2000.0;
	double stdev = sqrt(sq / (double)n);
	double cpu = 100.0 * (double)(c1 - c0) / (double)(t1 - t0);

	if (o.json) {
		printf("{\"test\":\"sock_lat\",\"poll\":\"%s\",\"bytes\":%zu,\"iterations\":%" PRIu64
		       ",\"t_min\":%.3f,\"t_max\":%.3f,\"t_typical\":%.3f,\"t_avg\":%.3f,"
		       "\"t_stdev\":%.3f,\"p99\":%.3f,\"p99_9\":%.3f,\"lat_unit\":\"usec\","
		       "\"cpu_util\":%.2f,\"peer_cpu_util\":%.2f}\n",
		       o.busy ? "busy" : "wait", o.size, o.iters, tmin, tmax, med, avg, stdev, p99,
		       p999, cpu, peer_cpu);
	} else {
		printf(" sock_lat: TCP ping-pong over 127.0.0.1, %s (%s), one-way latency\n",
		       o.busy ? "busy polling" : "blocking",
		       o.busy ? "recv/send with MSG_DONTWAIT, spinning" : "blocking recv/send");
		printf(" #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    "
		       "t_avg[usec]    t_stdev[usec]   99%% percentile[usec]   99.9%% percentile[usec]"
		       "    CPU_Util[%%]    Peer_CPU_Util[%%]\n");
		printf(" %-7zu %-10" PRIu64 "    %-7.2f        %-7.2f      %-7.2f  \t       %-7.2f     "
		       "\t%-7.2f\t\t%-7.2f \t\t%-7.2f\t    %-7.2f\t    %-7.2f\n",
		       o.size, o.iters, tmin, tmax, med, avg, stdev, p99, p999, cpu, peer_cpu);
	}
	free(rtt);
	free(buf);
	return 0;
}
