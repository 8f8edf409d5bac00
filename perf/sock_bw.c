/*
 * sock_bw.c - the physical limit for streaming over TCP on this machine: a minimal
 * socket loop, nothing but send() and recv() of fixed-size messages on 127.0.0.1.
 *
 *   sock_bw [-s SIZE] [-D SECONDS] [-p PORT] [-C ALGO] [--json]
 *
 * The process listens on 127.0.0.1 and forks the sender, which connects and sends
 * SIZE-byte messages back to back (blocking send(), partial sends finished) for
 * SECONDS; the parent receives into a SIZE-byte buffer and measures. As in ferry_perf's
 * duration mode, min(2 s, SECONDS/4) at each end is not measured. Socket buffers are
 * left to the kernel's autotuning and Nagle is left on, as iperf3 does: the point is
 * what a plain socket program gets, not a tuned one. -C sets both sockets' congestion
 * control (TCP_CONGESTION), as iperf3 -C does; the default is the system's.
 *
 * Output: a perftest-like line (MB = 2^20 bytes) or, with --json, one JSON object:
 * bytes, messages, bw_average (MB/sec), gbytes_per_sec (10^9), msg_rate_mpps,
 * cpu_util (receiver) and peer_cpu_util (sender), in % of one core over the window.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
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

struct sbw_opts {
	size_t size;
	double duration;
	double margin;
	int port;
	int json;
	const char *cc; /* -C: congestion control, NULL = the system's */
};

/* What the sender tells the receiver at the end, through a pipe. */
struct sbw_report {
	double cpu;       /* sender's CPU over its own measured window, % of a core */
	uint64_t messages;
	int err;          /* errno of a failed send, 0 */
};

static uint64_t sbw_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t sbw_cpu_ns(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ((uint64_t)ru.ru_utime.tv_sec + (uint64_t)ru.ru_stime.tv_sec) * 1000000000ull +
	       ((uint64_t)ru.ru_utime.tv_usec + (uint64_t)ru.ru_stime.tv_usec) * 1000ull;
}

/* -C: the socket's congestion control (accepted sockets inherit the listener's). */
static int sbw_set_cc(int fd, const char *cc)
{
	return cc ? setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc)) : 0;
}

static int sbw_size(const char *s, size_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || s[0] == '-')
		return -1;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	default: break;
	}
	if (*end || v == 0 || v > (1ull << 30))
		return -1;
	*out = (size_t)v;
	return 0;
}

static void sbw_usage(FILE *f)
{
	fprintf(f, "usage: sock_bw [-s SIZE (1M)] [-D SECONDS (10)] [-p PORT (0: any)] [-C ALGO]\n"
		   "               [--json]\n"
		   "  TCP streaming over 127.0.0.1: a forked sender, this process receives.\n");
}

static int sbw_parse(int argc, char **argv, struct sbw_opts *o)
{
	static const struct option longs[] = {
		{ "size", required_argument, NULL, 's' },
		{ "duration", required_argument, NULL, 'D' },
		{ "port", required_argument, NULL, 'p' },
		{ "congestion", required_argument, NULL, 'C' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	o->size = 1u << 20;
	o->duration = 10;
	o->port = 0;
	o->json = 0;
	o->cc = NULL;
	while ((c = getopt_long(argc, argv, "s:D:p:C:h", longs, NULL)) != -1) {
		switch (c) {
		case 's':
			if (sbw_size(optarg, &o->size))
				goto bad;
			break;
		case 'D':
			o->duration = strtod(optarg, NULL);
			if (!(o->duration > 0 && o->duration <= 3600))
				goto bad;
			break;
		case 'p':
			o->port = atoi(optarg);
			if (o->port < 0 || o->port > 65535)
				goto bad;
			break;
		case 'C':
			o->cc = optarg;
			break;
		case 'j':
			o->json = 1;
			break;
		case 'h':
			sbw_usage(stdout);
			exit(0);
		default:
			goto bad;
		}
	}
	if (optind != argc)
		goto bad;
	o->margin = o->duration >= 8 ? 2.0 : o->duration / 4;
	return 0;
bad:
	sbw_usage(stderr);
	return -1;
}

/* The child: connect, send for the whole duration, report its CPU, exit. */
static int sbw_sender(const struct sbw_opts *o, const struct sockaddr_in *sa, int report_fd)
{
	struct sbw_report rep = { 0 };
	uint64_t start, m0, m1, end, c0 = 0, c1 = 0, t0 = 0, t1 = 0;
	char *buf;
	int fd;

	buf = malloc(o->size);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (!buf || fd < 0 || sbw_set_cc(fd, o->cc) ||
	    connect(fd, (const struct sockaddr *)sa, sizeof(*sa))) {
		rep.err = errno ? errno : ENOMEM;
		goto out;
	}
	memset(buf, 0xa5, o->size);
	start = sbw_now();
	m0 = start + (uint64_t)(o->margin * 1e9);
	m1 = start + (uint64_t)((o->duration - o->margin) * 1e9);
	end = start + (uint64_t)(o->duration * 1e9);
	for (;;) {
		uint64_t now = sbw_now();
		size_t off = 0;

		if (!t0 && now >= m0) {
			t0 = now;
			c0 = sbw_cpu_ns();
		}
		if (t0 && !t1 && now >= m1) {
			t1 = now;
			c1 = sbw_cpu_ns();
		}
		if (now >= end)
			break;
		while (off < o->size) {
			ssize_t r = send(fd, buf + off, o->size - off, 0);

			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0) {
				rep.err = r < 0 ? errno : EPIPE;
				goto out;
			}
			off += (size_t)r;
		}
		rep.messages++;
	}
	if (t1 > t0)
		rep.cpu = 100.0 * (double)(c1 - c0) / (double)(t1 - t0);
out:
	if (fd >= 0)
		close(fd); /* the receiver sees EOF: the end of the run */
	free(buf);
	if (write(report_fd, &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		return 1;
	return rep.err ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct sbw_opts o;
	struct sockaddr_in sa = { 0 };
	socklen_t salen = sizeof(sa);
	struct sbw_report rep = { 0 };
	uint64_t start = 0, m0 = 0, m1 = 0, t0 = 0, t1 = 0, c0 = 0, c1 = 0;
	uint64_t total = 0, b0 = 0, b1 = 0;
	int lfd, fd, pipefd[2], status, one = 1;
	char *buf;
	pid_t pid;

	if (sbw_parse(argc, argv, &o))
		return 2;
	signal(SIGPIPE, SIG_IGN);
	buf = malloc(o.size);
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (!buf || lfd < 0) {
		perror("sock_bw: socket");
		return 1;
	}
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sbw_set_cc(lfd, o.cc)) {
		fprintf(stderr, "sock_bw: congestion control %s: %s\n", o.cc, strerror(errno));
		return 1;
	}
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	sa.sin_port = htons((uint16_t)o.port);
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) || listen(lfd, 1) ||
	    getsockname(lfd, (struct sockaddr *)&sa, &salen) || pipe(pipefd)) {
		perror("sock_bw: listen");
		return 1;
	}
	fflush(stdout);
	pid = fork();
	if (pid < 0) {
		perror("sock_bw: fork");
		return 1;
	}
	if (pid == 0) {
		close(lfd);
		close(pipefd[0]);
		_exit(sbw_sender(&o, &sa, pipefd[1]));
	}
	close(pipefd[1]);
	fd = accept(lfd, NULL, NULL);
	close(lfd);
	if (fd < 0) {
		perror("sock_bw: accept");
		kill(pid, SIGKILL);
		waitpid(pid, &status, 0);
		return 1;
	}

	/* the receiver's window is its own clock's: from accept, margins at both ends */
	start = sbw_now();
	m0 = start + (uint64_t)(o.margin * 1e9);
	m1 = start + (uint64_t)((o.duration - o.margin) * 1e9);
	for (;;) {
		ssize_t r = recv(fd, buf, o.size, 0);
		uint64_t now;

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		total += (uint64_t)r;
		now = sbw_now();
		if (!t0 && now >= m0) {
			t0 = now;
			b0 = total;
			c0 = sbw_cpu_ns();
		}
		if (t0 && !t1 && now >= m1) {
			t1 = now;
			b1 = total;
			c1 = sbw_cpu_ns();
		}
	}
	close(fd);
	if (read(pipefd[0], &rep, sizeof(rep)) != (ssize_t)sizeof(rep))
		rep.err = EPIPE;
	waitpid(pid, &status, 0);
	if (rep.err || !t1) {
		fprintf(stderr, "sock_bw: %s\n", rep.err ? strerror(rep.err) : "run too short");
		return 1;
	}

	double secs = (double)(t1 - t0) / 1e9;
	double bytes = (double)(b1 - b0);
	double mbps = bytes / secs / (1 << 20);
	double msgs = bytes / (double)o.size;
	double cpu = 100.0 * (double)(c1 - c0) / (double)(t1 - t0);

	if (o.json) {
		printf("{\"test\":\"sock_bw\",\"bytes\":%zu,\"duration\":%.3f,\"measured_s\":%.3f,"
		       "\"messages\":%.0f,\"bw_average\":%.2f,\"bw_unit\":\"MB/sec\","
		       "\"gbytes_per_sec\":%.4f,\"msg_rate_mpps\":%.6f,\"cpu_util\":%.2f,"
		       "\"peer_cpu_util\":%.2f}\n",
		       o.size, o.duration, secs, msgs, mbps, bytes / secs / 1e9, msgs / secs / 1e6,
		       cpu, rep.cpu);
	} else {
		printf(" sock_bw: TCP over 127.0.0.1, %zu-byte messages, %.1f s (%.2f s margins)\n",
		       o.size, o.duration, o.margin);
		printf(" #bytes     #messages    BW average[MB/sec]   MsgRate[Mpps]    "
		       "CPU_Util[%%] (recv)    Peer_CPU_Util[%%] (send)\n");
		printf(" %-10zu %-12.0f %-20.2f %-16.6f %-22.2f %.2f\n", o.size, msgs, mbps,
		       msgs / secs / 1e6, cpu, rep.cpu);
	}
	free(buf);
	return 0;
}
