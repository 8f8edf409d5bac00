/*
 * compress_bench - effective throughput of ferry's TCP path with compression (and
 * zero-copy) settings, on generated data: JSON service logs, fp16 activations, random
 * bytes. Effective throughput = payload bytes delivered / time, whatever went over
 * the wire; the wire bytes are reported too.
 *
 *   compress_bench server [-p PORT] [-H HOST]
 *   compress_bench client HOST [-p PORT] [-d json|fp16|random] [-s SIZE] [-t TOTAL]
 *                  [-q DEPTH] [-o send|write] [-r REPEAT] [--zc-keep]
 *
 * The policy and everything else come from the environment of each side, as for any
 * ferry program (FERRY_COMPRESS=off|on|auto, FERRY_COMPRESS_LEVEL,
 * FERRY_ZEROCOPY_MIN, ...): the side that sends the bytes decides. The client moves
 * TOTAL bytes in messages (or writes) of SIZE with DEPTH in flight, REPEAT times, and
 * prints one line per run plus the median:
 *
 *   # data op size policy run MB/s wire_MB/s ratio cpu_s
 *
 * A send run ends when the server has received every byte (it answers an end marker
 * only then); a write run when the last write is acknowledged (the target has the
 * bytes). The server serves clients one after the other until it is killed.
 * --zc-keep keeps MSG_ZEROCOPY on where the kernel copies anyway (loopback, veth), to
 * measure what zero-copy costs there (a test hook of the library).
 */
#define _GNU_SOURCE
#include <ferry/ferry.h>

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "cz_data.h"

/* The library's test hook (ferry_internal): keep zero-copy where the kernel copies. */
extern bool ferryi_tcp_zc_keep_copied;

#define TAG_DATA 1
#define TAG_DONE 2
#define TAG_END 3
#define TAG_RKEY 4
#define MAXDEPTH 64

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double cpu_s(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void die(const char *what, int rc)
{
	fprintf(stderr, "compress_bench: %s: %s\n", what, ferry_strerror(rc));
	exit(1);
}

static void wait1(struct ferry_ctx *ctx, struct ferry_completion *c)
{
	for (;;) {
		int n = ferry_cq_wait(ferry_ctx_cq(ctx), c, 1, 120000);

		if (n != 1)
			die("waiting for a completion", n < 0 ? n : FERRY_ETIMEDOUT);
		/* Receives left posted on an endpoint closed after a run end so. */
		if (c->status == FERRY_ECANCELED && c->type == FERRY_OP_RECV)
			continue;
		if (c->status)
			die("operation failed", c->status);
		return;
	}
}

static size_t parse_size(const char *s)
{
	char *end;
	double v = strtod(s, &end);

	switch (*end) {
	case 'k': case 'K': v *= 1024; break;
	case 'm': case 'M': v *= 1024 * 1024; break;
	case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
	default: break;
	}
	return (size_t)v;
}

/* ------------------------------------------------------------------ server */

static int server(const char *host, int port)
{
	struct ferry_ctx *ctx;
	struct ferry_listener *l;
	struct ferry_ep *ep;
	struct ferry_completion c;
	char uri[256];
	int rc;

	if ((rc = ferry_ctx_create(NULL, &ctx)) < 0)
		die("ferry_ctx_create", rc);
	snprintf(uri, sizeof(uri), "tcp://%s:%d", host, port);
	if ((rc = ferry_listen(ctx, uri, NULL, &l)) < 0)
		die("ferry_listen", rc);
	if ((rc = ferry_listener_accept(l, &ep, -1)) < 0)
		die("accept", rc);
	for (;;) {
		/* Each run: a header {op, size, depth} then the data. */
		uint64_t hdr[3];

		/*
		 * The next run's header, or the client is gone: it closes when it is done,
		 * and a message it sent just before is dropped with the endpoint if no
		 * receive was posted for it, so closing is the goodbye.
		 */
		rc = ferry_recv(ep, hdr, sizeof(hdr), TAG_DATA, ~0ull, NULL, NULL);
		while (rc == 0) {
			rc = ferry_cq_wait(ferry_ctx_cq(ctx), &c, 1, -1);
			if (rc == 1 && c.ep != ep)
				rc = 0; /* left over from the previous client's endpoint */
			else if (rc == 1)
				rc = c.status < 0 ? c.status : 1;
		}
		if (rc < 0 || c.len != sizeof(hdr)) {
			ferry_ep_close(ep);
			if ((rc = ferry_listener_accept(l, &ep, -1)) < 0)
				die("accept", rc);
			continue;
		}
		size_t size = hdr[1];
		int depth = (int)hdr[2];
		uint8_t *buf = malloc(size * (size_t)depth);

		if (!buf)
			die("malloc", FERRY_ENOMEM);
		if (hdr[0] == 1) { /* write: give the client a region, wait for its end */
			struct ferry_mr *mr;
			uint8_t blob[FERRY_RKEY_MAX];
			size_t blen = sizeof(blob);
			uint64_t end;

			if ((rc = ferry_mr_reg(ctx, buf, size * (size_t)depth,
					       FERRY_ACCESS_REMOTE_WRITE, &mr)) < 0)
				die("mr_reg", rc);
			ferry_mr_pack(mr, blob, &blen);
			ferry_recv(ep, &end, sizeof(end), TAG_END, ~0ull, NULL, NULL);
			ferry_send(ep, blob, blen, TAG_RKEY, NULL, NULL);
			wait1(ctx, &c); /* send */
			wait1(ctx, &c); /* the end marker */
			ferry_mr_dereg(mr);
		} else { /* send: receive until the end marker says how much, then answer */
			uint64_t want = UINT64_MAX, got = 0, end = 0;
			int posted = 0;

			ferry_recv(ep, &end, sizeof(end), TAG_END, ~0ull, NULL, NULL);
			for (int i = 0; i < depth; i++, posted++)
				ferry_recv(ep, buf + (size_t)i * size, size, TAG_DATA, ~0ull,
					   (void *)(uintptr_t)i, NULL);
			while (got < want) {
				wait1(ctx, &c);
				if (c.tag == TAG_END) {
					want = end;
					continue;
				}
				got += c.len;
				int i = (int)(uintptr_t)c.user_ctx;
				ferry_recv(ep, buf + (size_t)i * size, size, TAG_DATA, ~0ull,
					   (void *)(uintptr_t)i, NULL);
				posted++;
			}
			ferry_send(ep, &got, sizeof(got), TAG_DONE, NULL, NULL);
			wait1(ctx, &c);
			/* The receives still posted complete with the close, not counted. */
			ferry_ep_close(ep);
			free(buf);
			if ((rc = ferry_listener_accept(l, &ep, -1)) < 0)
				die("accept", rc);
			continue;
		}
		free(buf);
	}
	ferry_ep_close(ep);
	ferry_listener_close(l);
	ferry_ctx_destroy(ctx);
	return 0;
}

/* ------------------------------------------------------------------ client */

struct run {
	double mbps, wire_mbps, ratio, cpu;
};

static struct ferry_ep *connect_to(struct ferry_ctx *ctx, const char *host, int port)
{
	struct ferry_connect_attr ca = {.flags = FERRY_CONNECT_PRIVATE, .timeout_ms = 20000};
	struct ferry_ep *ep;
	char uri[256];
	int rc;

	snprintf(uri, sizeof(uri), "tcp://%s:%d", host, port);
	if ((rc = ferry_connect(ctx, uri, &ca, &ep)) < 0)
		die("ferry_connect", rc);
	return ep;
}

static struct run one_run(struct ferry_ctx *ctx, struct ferry_ep **epp, const char *host,
			  int port, bool write, uint8_t **bufs, size_t size, int depth,
			  uint64_t total)
{
	struct ferry_ep *ep = *epp;
	struct ferry_completion c;
	struct ferry_stats s0, s1;
	uint64_t hdr[3] = {write ? 1 : 0, size, (uint64_t)depth}, posted = 0, done = 0, got = 0;
	struct ferry_rkey *rk = NULL;
	struct run r;
	double t0, t1, c0;
	int inflight = 0;

	ferry_send(ep, hdr, sizeof(hdr), TAG_DATA, NULL, NULL);
	wait1(ctx, &c);
	if (write) {
		uint8_t blob[FERRY_RKEY_MAX];

		ferry_recv(ep, blob, sizeof(blob), TAG_RKEY, ~0ull, NULL, NULL);
		wait1(ctx, &c);
		if (ferry_rkey_unpack(ctx, blob, c.len, &rk) < 0)
			die("rkey", FERRY_EPROTO);
	} else {
		ferry_recv(ep, &got, sizeof(got), TAG_DONE, ~0ull, NULL, NULL);
	}
	ferry_stats_get(ctx, "tcp", &s0);
	c0 = cpu_s();
	t0 = now_s();
	while (done < total) {
		while (inflight < depth && posted < total) {
			int i = (int)((posted / size) % (uint64_t)depth);
			int rc = write ? ferry_write(ep, bufs[i], size, NULL, rk,
						     (uint64_t)i * size, NULL, NULL)
				       : ferry_send(ep, bufs[i], size, TAG_DATA, NULL, NULL);
			if (rc < 0)
				die("post", rc);
			posted += size;
			inflight++;
		}
		wait1(ctx, &c);
		if (c.type == FERRY_OP_RECV)
			continue;
		done += size;
		inflight--;
	}
	if (write) {
		uint64_t end = total;

		ferry_send(ep, &end, sizeof(end), TAG_END, NULL, NULL);
		wait1(ctx, &c);
		t1 = now_s();
		ferry_rkey_destroy(rk);
	} else {
		uint64_t end = total;

		ferry_send(ep, &end, sizeof(end), TAG_END, NULL, NULL);
		do /* the end marker's send, then the server's answer */
			wait1(ctx, &c);
		while (c.type != FERRY_OP_RECV);
		t1 = now_s();
		if (got != total)
			die("the server counted other bytes", FERRY_EPROTO);
		/* The server reconnects per send run (its receives are then all gone). */
		ferry_ep_close(ep);
		*epp = connect_to(ctx, host, port);
	}
	ferry_stats_get(ctx, "tcp", &s1);
	r.cpu = cpu_s() - c0;
	r.mbps = (double)total / (t1 - t0) / 1e6;
	r.wire_mbps = (double)(s1.wire_bytes_sent - s0.wire_bytes_sent) / (t1 - t0) / 1e6;
	r.ratio = (double)total / (double)(s1.wire_bytes_sent - s0.wire_bytes_sent);
	return r;
}

static int cmp_run(const void *a, const void *b)
{
	double x = ((const struct run *)a)->mbps, y = ((const struct run *)b)->mbps;

	return (x > y) - (x < y);
}

static int client(const char *host, int port, const char *data, size_t size, uint64_t total,
		  int depth, bool write, int repeat)
{
	struct ferry_ctx *ctx;
	struct ferry_ep *ep;
	struct run runs[32];
	uint8_t *bufs[MAXDEPTH];
	const char *policy = getenv("FERRY_COMPRESS");
	int rc;

	if ((rc = ferry_ctx_create(NULL, &ctx)) < 0)
		die("ferry_ctx_create", rc);
	ep = connect_to(ctx, host, port);
	enum cz_data kind;

	if (cz_data_parse(data, &kind) < 0)
		die("-d: json, fp16, random or mixed", FERRY_EINVAL);
	for (int i = 0; i < depth; i++) {
		bufs[i] = malloc(size);
		if (!bufs[i])
			die("malloc", FERRY_ENOMEM);
		cz_fill(bufs[i], size, kind, (uint64_t)i + 1);
	}
	total = (total + size - 1) / size * size;
	for (int k = 0; k < repeat; k++) {
		runs[k] = one_run(ctx, &ep, host, port, write, bufs, size, depth, total);
		printf("# %s %s %zu %s run%d %.1f %.1f %.2f %.2f\n", data, write ? "write" : "send",
		       size, policy ? policy : "off", k, runs[k].mbps, runs[k].wire_mbps,
		       runs[k].ratio, runs[k].cpu);
		fflush(stdout);
	}
	qsort(runs, (size_t)repeat, sizeof(runs[0]), cmp_run);
	struct run *m = &runs[repeat / 2];
	printf("%s %s %zu %s median %.1f %.1f %.2f %.2f\n", data, write ? "write" : "send", size,
	       policy ? policy : "off", m->mbps, m->wire_mbps, m->ratio, m->cpu);
	ferry_ep_close(ep); /* the server takes that as the end of this client */
	for (int i = 0; i < depth; i++)
		free(bufs[i]);
	ferry_ctx_destroy(ctx);
	return 0;
}

int main(int argc, char **argv)
{
	const char *host = NULL, *data = "json", *bind = "0.0.0.0";
	size_t size = 4u << 20;
	uint64_t total = 256u << 20;
	int port = 18600, depth = 4, repeat = 3;
	bool write = false, srv;

	if (argc < 2 || (strcmp(argv[1], "server") && strcmp(argv[1], "client"))) {
		fprintf(stderr, "usage: %s server|client [HOST] [options] (see the source)\n",
			argv[0]);
		return 2;
	}
	srv = strcmp(argv[1], "server") == 0;
	for (int i = 2; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "-p") && v)
			port = atoi(v), i++;
		else if (!strcmp(a, "-H") && v)
			bind = v, i++;
		else if (!strcmp(a, "-d") && v)
			data = v, i++;
		else if (!strcmp(a, "-s") && v)
			size = parse_size(v), i++;
		else if (!strcmp(a, "-t") && v)
			total = parse_size(v), i++;
		else if (!strcmp(a, "-q") && v)
			depth = atoi(v), i++;
		else if (!strcmp(a, "-r") && v)
			repeat = atoi(v), i++;
		else if (!strcmp(a, "-o") && v)
			write = !strcmp(v, "write"), i++;
		else if (!strcmp(a, "--zc-keep"))
			ferryi_tcp_zc_keep_copied = true;
		else if (!host && a[0] != '-')
			host = a;
		else {
			fprintf(stderr, "unknown option %s\n", a);
			return 2;
		}
	}
	if (depth < 1 || depth > MAXDEPTH || repeat < 1 || repeat > 32 || size < 8) {
		fprintf(stderr, "bad -q, -r or -s\n");
		return 2;
	}
	if (srv)
		return server(bind, port);
	if (!host) {
		fprintf(stderr, "client: which host?\n");
		return 2;
	}
	return client(host, port, data, size, total, depth, write, repeat);
}
