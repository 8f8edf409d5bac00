/*
 * main.c - ferry_perf: client, server and --loopback (both, in one command).
 *
 * The client drives: one round per size (two with --check: an untimed checking
 * round, then the timed one), then an END round. The server runs one client's session
 * and exits; it takes the test and its settings from the client's HELLO and ROUNDs.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "perf.h"

static void main_round_msg(const struct perf_round *r, struct perf_msg *m)
{
	memset(m, 0, sizeof(*m));
	m->flags = r->check ? PERF_ROUND_CHECK : 0;
	m->size = r->size;
	m->iters = r->iters;
	m->warmup = r->warmup;
	m->duration_ms = (uint64_t)(r->duration * 1000);
	m->depth = r->depth;
	m->nslots = r->nslots;
}

static void main_measure_free(struct perf_measure *m)
{
	free(m->tposted);
	free(m->tcompleted);
	free(m->tlat);
	free(m->scratch);
	memset(m, 0, sizeof(*m));
}

/* ------------------------------------------------------------------ client */

static int main_client_round(struct perf_conn *pc, const struct perf_round *r,
			     struct perf_measure *m)
{
	const struct perf_params *p = pc->p;
	struct perf_msg msg;
	int rc;

	main_round_msg(r, &msg);
	rc = perf_oob_send(pc, 0, PERF_K_ROUND, &msg);
	if (!rc)
		rc = perf_oob_recv(pc, 0, PERF_K_READY, &msg);
	if (rc)
		return rc;
	if (msg.status) {
		fprintf(stderr, "ferry_perf: the server cannot run size %" PRIu64 ": %s\n", r->size,
			ferry_strerror(msg.status));
		return msg.status;
	}
	m->size = r->size;
	rc = p->is_lat ? perf_lat_client(pc, r, m) : perf_bw_client(pc, r, m);
	if (rc)
		return rc;
	rc = perf_oob_recv(pc, 0, PERF_K_RESULT, &msg);
	if (rc)
		return rc;
	if (msg.status || msg.errors) {
		fprintf(stderr, "ferry_perf: the server reports %s (%" PRIu64 " mismatches)\n",
			ferry_strerror(msg.status), msg.errors);
		return msg.status ? msg.status : FERRY_EIO;
	}
	m->cpu_peer = msg.cpu;
	m->peer_verified = msg.verified;
	if (r->check && !m->verified && !m->peer_verified) {
		fprintf(stderr, "ferry_perf: check round verified nothing\n");
		return FERRY_EIO;
	}
	return 0;
}

static int main_client(const struct perf_params *p, const char *uri)
{
	struct perf_conn pc;
	struct perf_measure m = { 0 };
	struct perf_msg msg;
	char line[FERRY_RKEY_MAX];
	uint64_t size, last, checked = 0;
	int rc;

	rc = perf_conn_open(&pc, p, 0);
	if (rc)
		return rc;
	rc = perf_conn_connect(&pc, uri);
	if (rc)
		goto out;
	perf_report_banner(p, &pc);
	perf_report_header(p);

	size = p->all ? PERF_ALL_MIN_SIZE : p->size;
	last = p->all ? PERF_ALL_MAX_SIZE : p->size;
	for (; size <= last; size *= 2) {
		struct perf_round r = {
			.size = size,
			.depth = p->depth,
		};

		if (p->check) {
			r.check = 1;
			r.iters = p->iters < PERF_CHECK_MAX_ITERS ? p->iters : PERF_CHECK_MAX_ITERS;
			r.nslots = perf_nslots(p, size, pc.buf_len, 1);
			rc = main_client_round(&pc, &r, &m);
			checked = m.verified + m.peer_verified;
			main_measure_free(&m);
			if (rc)
				goto out;
		}
		r.check = 0;
		r.iters = p->iters;
		r.warmup = p->warmup;
		r.duration = p->duration;
		r.margin = p->margin;
		r.nslots = perf_nslots(p, size, pc.buf_len, 0);
		rc = main_client_round(&pc, &r, &m);
		if (rc)
			goto out;
		m.verified = checked; /* reported with the timed line */
		perf_report_round(p, &pc, &m, line, sizeof(line));
		main_measure_free(&m);
		memset(&msg, 0, sizeof(msg));
		snprintf((char *)msg.blob, sizeof(msg.blob), "%s", line);
		rc = perf_oob_send(&pc, 0, PERF_K_REPORT, &msg);
		if (rc)
			goto out;
	}
	perf_report_footer(p);

	/* END, and wait for the server's answer so that nothing is lost in the close */
	memset(&msg, 0, sizeof(msg));
	msg.flags = PERF_ROUND_END;
	rc = perf_oob_send(&pc, 0, PERF_K_ROUND, &msg);
	if (!rc)
		rc = perf_oob_recv(&pc, 0, PERF_K_READY, &msg);
out:
	main_measure_free(&m);
	perf_conn_close(&pc);
	return rc;
}

/* ------------------------------------------------------------------ server */

static int main_round_valid(const struct perf_conn *pc, const struct perf_msg *m)
{
	const struct perf_params *p = pc->p;
	uint64_t need;

	if (!m->size || m->size > pc->buf_len / 2 || !m->depth || m->depth > PERF_MAX_TX ||
	    !m->nslots || (!m->iters && !m->duration_ms))
		return 0;
	need = m->size * m->nslots;
	if ((m->flags & PERF_ROUND_CHECK) && p->test == PERF_WRITE_BW)
		need *= 2;
	return p->is_lat ? m->nslots == 1 : need <= pc->buf_len;
}

/* After END: let the client close first, so that our answer is not cut off. */
static void main_linger(struct perf_conn *pc)
{
	uint64_t until = perf_now() + 2000000000ull;

	while (ferry_ep_status(pc->eps[0].ep) == 0 && perf_now() < until)
		perf_wait_fd(pc, 10);
}

static int main_server(struct perf_params *p, const char *uri, int notify_fd, int timeout_ms)
{
	struct perf_conn pc;
	struct perf_msg msg, res;
	int rc, header = 0;

	rc = perf_conn_open(&pc, p, 1);
	if (rc)
		return rc;
	pc.stall_ns = 0; /* a server waits for its client as long as it takes */
	rc = perf_conn_listen(&pc, uri, notify_fd);
	if (rc)
		goto out;
	if (notify_fd >= 0)
		close(notify_fd);
	if (!p->quiet && !p->json) {
		printf("\n************************************\n"
		       "* Waiting for client to connect... *\n"
		       "************************************\n");
		printf(" Listening on    : %s\n", pc.uri);
		fflush(stdout);
	}
	rc = perf_conn_accept(&pc, timeout_ms);
	if (rc)
		goto out;

	for (;;) {
		struct perf_round r = { 0 };

		rc = perf_oob_recv(&pc, 0, PERF_K_ROUND, &msg);
		if (rc)
			goto out;
		if (msg.flags & PERF_ROUND_END) {
			memset(&msg, 0, sizeof(msg));
			rc = perf_oob_send(&pc, 0, PERF_K_READY, &msg);
			if (!rc)
				main_linger(&pc);
			break;
		}
		if (!header) {
			/* the client's settings are known from its first round */
			p->depth = (uint32_t)msg.depth;
			p->duration = (double)msg.duration_ms / 1000;
			p->check = p->check || (msg.flags & PERF_ROUND_CHECK);
			perf_report_banner(p, &pc);
			header = 1;
		}
		if (!main_round_valid(&pc, &msg)) {
			fprintf(stderr, "ferry_perf: bad ROUND from the client (size %" PRIu64 ")\n",
				msg.size);
			memset(&msg, 0, sizeof(msg));
			msg.status = FERRY_EINVAL;
			perf_oob_send(&pc, 0, PERF_K_READY, &msg);
			rc = FERRY_EPROTO;
			goto out;
		}
		r.size = msg.size;
		r.iters = msg.iters;
		r.warmup = msg.warmup;
		r.duration = (double)msg.duration_ms / 1000;
		r.depth = (uint32_t)msg.depth;
		r.nslots = msg.nslots;
		r.check = !!(msg.flags & PERF_ROUND_CHECK);

		memset(&res, 0, sizeof(res));
		rc = p->is_lat ? perf_lat_server(&pc, &r, &res) : perf_bw_server(&pc, &r, &res);
		if (rc)
			goto out;
		rc = perf_oob_send(&pc, 0, PERF_K_RESULT, &res);
		if (rc)
			goto out;
		if (!r.check) {
			rc = perf_oob_recv(&pc, 0, PERF_K_REPORT, &msg);
			if (rc)
				goto out;
			msg.blob[sizeof(msg.blob) - 1] = '\0';
			if (!p->quiet && !p->json) {
				if (header == 1) {
					perf_report_header(p);
					header = 2;
				}
				printf("%s\n", (char *)msg.blob);
				fflush(stdout);
			}
		}
	}
	if (header == 2)
		perf_report_footer(p);
out:
	perf_conn_close(&pc);
	return rc;
}

/* ------------------------------------------------------------------ loopback */

/* verbs needs the RDMA device's address, not 127.0.0.1: take it from the provider list. */
static void main_loopback_host(const struct perf_params *p, char *host, size_t len)
{
	struct ferry_provider_info info[8];
	char name[64];
	int n;

	snprintf(host, len, "127.0.0.1");
	if (p->host) {
		snprintf(host, len, "%s", p->host);
		return;
	}
	perf_provider_name(p, name, sizeof(name));
	if (strcmp(name, "verbs") != 0)
		return;
	n = ferry_provider_list(info, 8);
	for (int i = 0; i < n && i < 8; i++) {
		unsigned a, b, c, d;
		const char *s;

		if (strcmp(info[i].name, "verbs") || info[i].status)
			continue;
		/* detail looks like "rxe0 port 1 ACTIVE 10.0.0.1": the first dotted quad */
		for (s = info[i].detail; *s; s++) {
			if (sscanf(s, "%u.%u.%u.%u", &a, &b, &c, &d) == 4 && a < 256 && b < 256 &&
			    c < 256 && d < 256 && (s == info[i].detail || s[-1] == ' ')) {
				snprintf(host, len, "%u.%u.%u.%u", a, b, c, d);
				return;
			}
		}
	}
}

/* "tcp://0.0.0.0:40123,verbs://..." -> the first URI, with a wildcard host replaced. */
static int main_connect_uri(const char *addr, const char *host, char *out, size_t len)
{
	char first[512];
	char *comma, *sep, *port;

	snprintf(first, sizeof(first), "%s", addr);
	comma = strchr(first, ',');
	if (comma)
		*comma = '\0';
	sep = strstr(first, "://");
	port = strrchr(first, ':');
	if (!sep || !port || port < sep + 3)
		return -1;
	int n;

	*sep = '\0';
	if (strncmp(sep + 3, "0.0.0.0:", 8) == 0 || strncmp(sep + 3, "[::]:", 5) == 0 ||
	    strncmp(sep + 3, ":", 1) == 0)
		n = snprintf(out, len, "%s://%s%s", first, host, port);
	else
		n = snprintf(out, len, "%s://%s", first, sep + 3);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int main_loopback(struct perf_params *p)
{
	char host[256], listen_uri[512], addr[512], uri[512];
	struct pollfd pfd;
	size_t got = 0;
	int fds[2], status, rc;
	pid_t pid;

	main_loopback_host(p, host, sizeof(host));
	{
		/* a free port unless -p was given: parallel runs must not collide */
		struct perf_params lp = *p;

		lp.port = p->port_set ? p->port : 0;
		if (perf_uri_build(&lp, host, listen_uri, sizeof(listen_uri)))
			return FERRY_EINVAL;
	}
	if (pipe(fds))
		return perf_call_failed(-errno, "pipe");
	fflush(stdout);
	pid = fork();
	if (pid < 0)
		return perf_call_failed(-errno, "fork");
	if (pid == 0) {
		struct perf_params sp = *p;

		close(fds[0]);
		prctl(PR_SET_PDEATHSIG, SIGTERM); /* never outlive the client */
		sp.host = NULL;
		sp.quiet = 1;
		sp.loopback = 0;
		rc = main_server(&sp, listen_uri, fds[1], 30000);
		_exit(rc ? 1 : 0);
	}
	close(fds[1]);

	/* the child writes its listener's address once it listens */
	pfd.fd = fds[0];
	pfd.events = POLLIN;
	while (got < sizeof(addr) - 1) {
		ssize_t r;

		if (poll(&pfd, 1, 30000) <= 0)
			break;
		r = read(fds[0], addr + got, sizeof(addr) - 1 - got);
		if (r <= 0)
			break;
		got += (size_t)r;
		if (memchr(addr, '\0', got))
			break;
	}
	close(fds[0]);
	addr[got < sizeof(addr) ? got : sizeof(addr) - 1] = '\0';
	if (!got || main_connect_uri(addr, host, uri, sizeof(uri))) {
		fprintf(stderr, "ferry_perf: the loopback server did not start\n");
		kill(pid, SIGTERM);
		waitpid(pid, &status, 0);
		return FERRY_EIO;
	}

	rc = main_client(p, uri);
	if (rc) {
		/* the server may still wait for a round that will never come */
		usleep(200000);
		if (waitpid(pid, &status, WNOHANG) == 0) {
			kill(pid, SIGTERM);
			waitpid(pid, &status, 0);
		}
		return rc;
	}
	if (waitpid(pid, &status, 0) < 0)
		return perf_call_failed(-errno, "waitpid");
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		if (WIFSIGNALED(status))
			fprintf(stderr, "ferry_perf: the loopback server died of signal %d\n",
				WTERMSIG(status));
		else
			fprintf(stderr, "ferry_perf: the loopback server exited with %d\n",
				WEXITSTATUS(status));
		return FERRY_EIO;
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct perf_params p;
	char uri[512];
	int rc;

	rc = perf_params_parse(argc, argv, &p);
	if (rc)
		return rc > 0 ? 0 : 2;
	signal(SIGPIPE, SIG_IGN);

	if (p.loopback) {
		rc = main_loopback(&p);
	} else if (p.host) {
		rc = perf_uri_build(&p, p.host, uri, sizeof(uri));
		rc = rc ? FERRY_EINVAL : main_client(&p, uri);
	} else {
		rc = perf_uri_build(&p, "0.0.0.0", uri, sizeof(uri));
		rc = rc ? FERRY_EINVAL : main_server(&p, uri, -1, -1);
	}
	return rc ? 1 : 0;
}
