/*
 * params.c - command line of ferry_perf: perftest's options and defaults, plus the
 * ferry-specific ones (--provider, --json, --loopback, --check, --poll).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf.h"

static const char *const prm_names[PERF_TEST_COUNT] = {
	[PERF_WRITE_BW] = "write_bw", [PERF_WRITE_LAT] = "write_lat",
	[PERF_READ_BW] = "read_bw",   [PERF_READ_LAT] = "read_lat",
	[PERF_SEND_BW] = "send_bw",   [PERF_SEND_LAT] = "send_lat",
};

const char *perf_test_name(enum perf_test t)
{
	return (unsigned)t < PERF_TEST_COUNT ? prm_names[t] : "?";
}

static int prm_test_lookup(const char *s)
{
	if (strncmp(s, "ib_", 3) == 0) /* accept perftest's program names too */
		s += 3;
	for (int i = 0; i < PERF_TEST_COUNT; i++)
		if (strcmp(s, prm_names[i]) == 0)
			return i;
	return -1;
}

static void prm_usage(FILE *f, const char *argv0)
{
	fprintf(f,
		"Usage: %s TEST [options] [server-host]\n"
		"  TEST: write_bw (default), write_lat, read_bw, read_lat, send_bw, send_lat\n"
		"  Without server-host: run as the server and wait for one client.\n"
		"\n"
		"Options (perftest's):\n"
		"  -s, --size=SIZE       message size (default 65536 bw, 2 lat; K/M suffixes)\n"
		"  -a, --all             every size from 2 to 2^23 bytes\n"
		"  -n, --iters=N         iterations (default 5000 bw, 1000 lat; min 5)\n"
		"  -D, --duration=SEC    run for SEC seconds instead of -n\n"
		"  -t, --tx-depth=N      outstanding operations per endpoint (default 128 bw, 1 lat)\n"
		"  -q, --qp=N            endpoints (private connections; bw tests)\n"
		"  -p, --port=PORT       port (default 18515)\n"
		"      --report_gbits    report bandwidth in Gb/sec\n"
		"Options (ferry's):\n"
		"      --provider=NAME|URI  tcp (default), verbs, ofi+tcp, ofi+shm, auto, or a\n"
		"                        full URI such as tcp://10.0.0.1:5000 used as is\n"
		"      --json            one JSON object per size instead of the table\n"
		"      --loopback        run both sides: fork a server on 127.0.0.1 (or the\n"
		"                        provider's address, or server-host if given)\n"
		"      --check           verify every byte in an untimed round before each\n"
		"                        timed one\n"
		"      --poll=busy|wait  spin on the completion queue (default) or sleep on its fd\n"
		"      --warmup=N        untimed iterations before each size (default: tx-depth\n"
		"                        for bw, 16 for lat)\n"
		"      --no_more         bw tests: post every operation on its own; by default\n"
		"                        all but the last of a burst carry FERRY_OP_MORE\n"
		"  -h, --help            this text\n",
		argv0);
}

static int prm_u64(const char *s, uint64_t min, uint64_t max, const char *name,
		   uint64_t *out)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || s[0] == '-')
		goto bad;
	switch (*end) {
	case 'k': case 'K': v <<= 10; end++; break;
	case 'm': case 'M': v <<= 20; end++; break;
	case 'g': case 'G': v <<= 30; end++; break;
	default: break;
	}
	if (*end || v < min || v > max)
		goto bad;
	*out = v;
	return 0;
bad:
	fprintf(stderr, " %s should be between %" PRIu64 " and %" PRIu64 "\n", name, min, max);
	return -1;
}

enum {
	PRM_OPT_GBITS = 256,
	PRM_OPT_PROVIDER,
	PRM_OPT_JSON,
	PRM_OPT_LOOPBACK,
	PRM_OPT_CHECK,
	PRM_OPT_POLL,
	PRM_OPT_WARMUP,
	PRM_OPT_NO_MORE,
};

int perf_params_parse(int argc, char **argv, struct perf_params *p)
{
	static const struct option opts[] = {
		{ .name = "size", .has_arg = required_argument, .val = 's' },
		{ .name = "all", .has_arg = no_argument, .val = 'a' },
		{ .name = "iters", .has_arg = required_argument, .val = 'n' },
		{ .name = "duration", .has_arg = required_argument, .val = 'D' },
		{ .name = "tx-depth", .has_arg = required_argument, .val = 't' },
		{ .name = "qp", .has_arg = required_argument, .val = 'q' },
		{ .name = "port", .has_arg = required_argument, .val = 'p' },
		{ .name = "report_gbits", .has_arg = no_argument, .val = PRM_OPT_GBITS },
		{ .name = "provider", .has_arg = required_argument, .val = PRM_OPT_PROVIDER },
		{ .name = "json", .has_arg = no_argument, .val = PRM_OPT_JSON },
		{ .name = "loopback", .has_arg = no_argument, .val = PRM_OPT_LOOPBACK },
		{ .name = "check", .has_arg = no_argument, .val = PRM_OPT_CHECK },
		{ .name = "poll", .has_arg = required_argument, .val = PRM_OPT_POLL },
		{ .name = "warmup", .has_arg = required_argument, .val = PRM_OPT_WARMUP },
		{ .name = "no_more", .has_arg = no_argument, .val = PRM_OPT_NO_MORE },
		{ .name = "help", .has_arg = no_argument, .val = 'h' },
		{ 0 },
	};
	int size_set = 0, iters_set = 0, depth_set = 0, test_set = 0;
	uint64_t v;
	int c;

	memset(p, 0, sizeof(*p));
	p->test = PERF_WRITE_BW;
	p->qps = 1;
	p->port = PERF_DEF_PORT;
	p->provider = "tcp";
	p->poll = PERF_POLL_BUSY;

	while ((c = getopt_long(argc, argv, "s:an:D:t:q:p:h", opts, NULL)) != -1) {
		switch (c) {
		case 's':
			if (prm_u64(optarg, 1, 1ull << 30, "Size", &p->size))
				return -1;
			size_set = 1;
			break;
		case 'a':
			p->all = 1;
			break;
		case 'n':
			if (prm_u64(optarg, PERF_MIN_ITERS, PERF_MAX_ITERS, "Iteration num", &p->iters))
				return -1;
			iters_set = 1;
			break;
		case 'D':
			if (prm_u64(optarg, 1, 86400, "Duration", &v))
				return -1;
			p->duration = (double)v;
			break;
		case 't':
			if (prm_u64(optarg, 1, PERF_MAX_TX, "Tx depth", &v))
				return -1;
			p->depth = (uint32_t)v;
			depth_set = 1;
			break;
		case 'q':
			if (prm_u64(optarg, 1, PERF_MAX_QPS, "Num of qp", &v))
				return -1;
			p->qps = (uint32_t)v;
			break;
		case 'p':
			if (prm_u64(optarg, 0, 65535, "Port", &v))
				return -1;
			p->port = (uint32_t)v;
			p->port_set = 1;
			break;
		case PRM_OPT_GBITS:
			p->report_gbits = 1;
			break;
		case PRM_OPT_PROVIDER:
			p->provider = optarg;
			break;
		case PRM_OPT_JSON:
			p->json = 1;
			break;
		case PRM_OPT_LOOPBACK:
			p->loopback = 1;
			break;
		case PRM_OPT_NO_MORE:
			p->no_more = 1;
			break;
		case PRM_OPT_CHECK:
			p->check = 1;
			break;
		case PRM_OPT_POLL:
			if (strcmp(optarg, "busy") == 0) {
				p->poll = PERF_POLL_BUSY;
			} else if (strcmp(optarg, "wait") == 0) {
				p->poll = PERF_POLL_WAIT;
			} else {
				fprintf(stderr, " --poll takes busy or wait\n");
				return -1;
			}
			break;
		case PRM_OPT_WARMUP:
			if (prm_u64(optarg, 0, PERF_MAX_ITERS, "Warm-up", &p->warmup))
				return -1;
			p->warmup_set = 1;
			break;
		case 'h':
			prm_usage(stdout, argv[0]);
			return 1;
		default:
			prm_usage(stderr, argv[0]);
			return -1;
		}
	}

	/* Positional: TEST (first, optional) then the server's host. */
	for (int i = optind; i < argc; i++) {
		int t = test_set ? -1 : prm_test_lookup(argv[i]);

		if (t >= 0) {
			p->test = (enum perf_test)t;
			test_set = 1;
		} else if (!p->host) {
			p->host = argv[i];
			test_set = 1; /* a test name after the host is a mistake */
		} else {
			fprintf(stderr, " unexpected argument '%s'\n", argv[i]);
			prm_usage(stderr, argv[0]);
			return -1;
		}
	}

	p->is_lat = p->test == PERF_WRITE_LAT || p->test == PERF_READ_LAT ||
		    p->test == PERF_SEND_LAT;
	if (!size_set)
		p->size = p->is_lat ? PERF_DEF_SIZE_LAT : PERF_DEF_SIZE_BW;
	if (!iters_set)
		p->iters = p->is_lat ? PERF_DEF_ITERS_LAT : PERF_DEF_ITERS_BW;
	if (!depth_set || p->is_lat)
		p->depth = p->is_lat ? PERF_DEF_TX_LAT : PERF_DEF_TX_BW;
	if (!p->warmup_set)
		p->warmup = p->is_lat ? 16 : p->depth;
	if (!p->duration && p->warmup > p->iters)
		p->warmup = p->iters;

	if (p->is_lat && p->qps > 1) {
		fprintf(stderr, " Multiple endpoints (-q) are supported in bw tests only\n");
		return -1;
	}
	if (p->all && size_set) {
		fprintf(stderr, " -a and -s are exclusive\n");
		return -1;
	}
	if (p->duration && iters_set) {
		fprintf(stderr, " -D and -n are exclusive\n");
		return -1;
	}
	if (p->duration) {
		/* perftest keeps 2 s margins; keep at least half of short runs measured */
		p->margin = p->duration >= 4 * PERF_DEF_MARGIN_S ? PERF_DEF_MARGIN_S
								 : p->duration / 4;
	}
	if (p->check && p->duration) {
		fprintf(stderr, " note: --check verifies up to %d iterations per size before "
				"each timed run\n", PERF_CHECK_MAX_ITERS);
	}
	if (!p->provider[0]) {
		fprintf(stderr, " --provider needs a name or URI\n");
		return -1;
	}
	return 0;
}

void perf_provider_name(const struct perf_params *p, char *buf, size_t len)
{
	const char *sep = strstr(p->provider, "://");
	size_t n = sep ? (size_t)(sep - p->provider) : strlen(p->provider);

	if (n >= len)
		n = len - 1;
	memcpy(buf, p->provider, n);
	buf[n] = '\0';
}

int perf_uri_build(const struct perf_params *p, const char *host, char *buf, size_t len)
{
	int n;

	if (strstr(p->provider, "://")) {
		n = snprintf(buf, len, "%s", p->provider);
	} else {
		/* an IPv6 literal needs brackets before the port */
		int v6 = strchr(host, ':') && host[0] != '[';

		n = snprintf(buf, len, "%s://%s%s%s:%u", p->provider, v6 ? "[" : "", host,
			     v6 ? "]" : "", p->port);
	}
	if (n < 0 || (size_t)n >= len) {
		fprintf(stderr, " URI too long\n");
		return -1;
	}
	return 0;
}

size_t perf_buf_len(const struct perf_params *p)
{
	uint64_t max = p->all ? PERF_ALL_MAX_SIZE : p->size;
	uint64_t len = 2 * max;

	if (len < PERF_BUF_MIN)
		len = PERF_BUF_MIN;
	return (size_t)((len + 4095) & ~4095ull);
}

uint32_t perf_rx_depth(const struct perf_params *p)
{
	return p->depth > PERF_DEF_RX_SEND ? p->depth : PERF_DEF_RX_SEND;
}

uint64_t perf_nslots(const struct perf_params *p, uint64_t size, size_t buf_len, int check)
{
	uint64_t fit, want;

	if (p->is_lat)
		return 1;
	/* write checks read every slot back into the buffer's second half */
	fit = buf_len / size / (check && p->test == PERF_WRITE_BW ? 2 : 1);
	want = p->test == PERF_SEND_BW ? perf_rx_depth(p) : p->depth;
	if (fit > want)
		fit = want;
	return fit ? fit : 1;
}
