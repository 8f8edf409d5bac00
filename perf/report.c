/*
 * report.c - perftest's tables (same headers, same print formats, same arithmetic:
 * MB = 2^20 bytes, Gb = 10^9 bits, peak = best rate over any run of consecutive
 * operations, latency statistics over iteration-start deltas minus the two largest),
 * followed by two CPU columns (this side, the peer) and, with --check, a Check column.
 * --json prints one object per size with the same figures instead.
 */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "perf.h"

#define RPT_LINE "---------------------------------------------------------------------------------------\n"

#define RPT_FMT_BW " #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]"
#define RPT_FMT_BW_G " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]"
#define RPT_FMT_LAT " #bytes #iterations    t_min[usec]    t_max[usec]  t_typical[usec]    t_avg[usec]    t_stdev[usec]   99" "%" " percentile[usec]   99.9" "%" " percentile[usec] "
#define RPT_FMT_LAT_DUR " #bytes        #iterations       t_avg[usec]    tps average"
#define RPT_FMT_CPU "    CPU_Util[%]    Peer_CPU_Util[%]"
#define RPT_FMT_CHECK "    Check"

#define RPT_REPORT_BW " %-7" PRIu64 "    %-10" PRIu64 "       %-7.2lf            %-7.2lf\t\t   %-7.6lf"
#define RPT_REPORT_BW_EXT " %-7" PRIu64 "    %" PRIu64 "           %-7.6lf            %-7.6lf            %-7.6lf"
#define RPT_REPORT_LAT " %-7" PRIu64 " %-10" PRIu64 "    %-7.2f        %-7.2f      %-7.2f  \t       %-7.2f     \t%-7.2f\t\t%-7.2f \t\t%-7.2f"
#define RPT_REPORT_LAT_DUR " %-7" PRIu64 "       %-10" PRIu64 "        %-7.2f        %-7.2f"
#define RPT_REPORT_CPU "\t    %-7.2f\t    %-7.2f"

static const char *const rpt_titles[PERF_TEST_COUNT] = {
	[PERF_WRITE_BW] = "RDMA_Write BW Test",
	[PERF_WRITE_LAT] = "RDMA_Write Latency Test",
	[PERF_READ_BW] = "RDMA_Read BW Test",
	[PERF_READ_LAT] = "RDMA_Read Latency Test",
	[PERF_SEND_BW] = "Send BW Test",
	[PERF_SEND_LAT] = "Send Latency Test",
};

void perf_report_banner(const struct perf_params *p, const struct perf_conn *pc)
{
	if (p->json || p->quiet)
		return;
	printf(RPT_LINE);
	printf("                    %s\n", rpt_titles[p->test]);
	printf(" Provider        : %-14s Transport      : ferry %s\n", pc->provider ? pc->provider : "?",
	       ferry_version());
	printf(" URI             : %s\n", pc->uri);
	printf(" Peer            : %s\n", pc->peer);
	printf(" Number of qps   : %-14u Poll mode      : %s\n", p->qps,
	       p->poll == PERF_POLL_BUSY ? "busy (ferry_cq_poll)" : "wait (ferry_cq_wait)");
	if (p->test == PERF_SEND_BW && pc->server)
		printf(" RX depth        : %u\n", perf_rx_depth(p));
	else
		printf(" TX depth        : %u\n", p->depth);
	if (p->duration)
		printf(" Duration        : %.0f s (%.1f s margins excluded)\n", p->duration, p->margin);
	printf(" Check           : %s\n", p->check ? "ON (untimed round before each size)" : "OFF");
	printf(RPT_LINE);
}

void perf_report_header(const struct perf_params *p)
{
	const char *fmt;

	if (p->json || p->quiet)
		return;
	if (!p->is_lat)
		fmt = p->report_gbits ? RPT_FMT_BW_G : RPT_FMT_BW;
	else
		fmt = p->duration ? RPT_FMT_LAT_DUR : RPT_FMT_LAT;
	printf("%s%s%s\n", fmt, RPT_FMT_CPU, p->check ? RPT_FMT_CHECK : "");
	fflush(stdout);
}

void perf_report_footer(const struct perf_params *p)
{
	if (p->json || p->quiet)
		return;
	printf(RPT_LINE);
	fflush(stdout);
}

/* ------------------------------------------------------------------ bandwidth */

/*
 * perftest's peak: the least time per operation over any run of consecutive
 * operations i..j, from post i to completion j. Quadratic, as in perftest; past
 * RPT_PEAK_WORK pairs only every stride-th start is tried.
 */
#define RPT_PEAK_WORK 40000000ull

static double rpt_peak_ns(const uint64_t *tp, const uint64_t *tc, uint64_t n)
{
	double best = 0;
	uint64_t stride = 1;

	if (n * n / 2 > RPT_PEAK_WORK)
		stride = n * n / 2 / RPT_PEAK_WORK + 1;
	for (uint64_t i = 0; i < n; i += stride) {
		for (uint64_t j = i; j < n; j++) {
			double t = (double)(tc[j] - tp[i]) / (double)(j - i + 1);

			if (t > 0 && (best == 0 || t < best))
				best = t;
		}
	}
	return best;
}

struct rpt_bw {
	double peak, avg, rate;
};

static void rpt_bw_compute(const struct perf_params *p, const struct perf_measure *m,
			   struct rpt_bw *b)
{
	const double factor = p->report_gbits ? 125000000.0 : (double)(1 << 20);
	double secs, peak_ns;

	if (m->tposted && m->nstamps) {
		secs = (double)(m->tcompleted[m->nstamps - 1] - m->tposted[0]) / 1e9;
		peak_ns = rpt_peak_ns(m->tposted, m->tcompleted, m->nstamps);
		b->peak = peak_ns > 0 ? (double)m->size / (peak_ns / 1e9) / factor : 0;
	} else {
		secs = (double)(m->t1 - m->t0) / 1e9;
		b->peak = 0; /* perftest prints no peak in duration mode */
	}
	if (secs <= 0)
		secs = 1e-9;
	b->avg = (double)m->size * (double)m->ops / secs / factor;
	b->rate = (double)m->ops / secs / 1e6;
}

/* ------------------------------------------------------------------ latency */

static int rpt_u64_cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

struct rpt_lat {
	double min, max, typical, avg, stdev, p99, p999; /* usec */
	double tps;                                      /* duration mode */
};

static void rpt_lat_compute(const struct perf_params *p, const struct perf_measure *m,
			    struct rpt_lat *l)
{
	const double rtt = p->test == PERF_READ_LAT ? 1.0 : 2.0;
	const double q = 1000.0 * rtt; /* ns -> usec of one way */
	uint64_t *d = m->scratch, cnt, i, i99, i999, median;
	double sum = 0, var = 0;

	memset(l, 0, sizeof(*l));
	if (!m->tlat) {
		double secs = (double)(m->t1 - m->t0) / 1e9;

		l->avg = m->ops ? secs * 1e6 / rtt / (double)m->ops : 0;
		l->tps = secs > 0 ? (double)m->ops / secs : 0;
		return;
	}
	if (m->nlat < 2)
		return;
	cnt = m->nlat - 1;
	for (i = 0; i < cnt; i++)
		d[i] = m->tlat[i + 1] - m->tlat[i];
	qsort(d, cnt, sizeof(*d), rpt_u64_cmp);
	if (cnt > PERF_LAT_TAIL + 1)
		cnt -= PERF_LAT_TAIL; /* as perftest: the largest samples are not counted */
	/* perftest's get_median() */
	median = ((cnt - 1) % 2) ? (d[cnt / 2] + d[cnt / 2 - 1]) / 2 : d[cnt / 2];
	for (i = 0; i < cnt; i++)
		sum += (double)d[i] / q;
	l->avg = sum / (double)cnt;
	for (i = 0; i < cnt; i++) {
		double x = (double)d[i] / q - l->avg;

		var += x * x;
	}
	l->stdev = sqrt(var / (double)cnt);
	i99 = (uint64_t)ceil((double)cnt * 0.99);
	i999 = (uint64_t)ceil((double)cnt * 0.999);
	if (i99 >= m->nlat - 1)
		i99 = m->nlat - 2;
	if (i999 >= m->nlat - 1)
		i999 = m->nlat - 2;
	l->min = (double)d[0] / q;
	l->max = (double)d[cnt < m->nlat - 1 ? cnt : cnt - 1] / q;
	l->typical = (double)median / q;
	l->p99 = (double)d[i99] / q;
	l->p999 = (double)d[i999] / q;
}

/* ------------------------------------------------------------------ output */

static void rpt_json_str(char *out, size_t len, const char *s)
{
	size_t o = 0;

	for (; s && *s && o + 3 < len; s++) {
		if (*s == '"' || *s == '\\')
			out[o++] = '\\';
		out[o++] = (unsigned char)*s < 0x20 ? '?' : *s;
	}
	out[o] = '\0';
}

int perf_report_round(const struct perf_params *p, const struct perf_conn *pc,
		      struct perf_measure *m, char *line, size_t len)
{
	char prov[64], uri[600], extra[96] = "", json[1536];
	int n = 0;

	m->cpu_local = perf_cpu_pct(&m->cpu0, &m->cpu1);
	if (!p->is_lat) {
		struct rpt_bw b;

		rpt_bw_compute(p, m, &b);
		if (p->report_gbits && b.avg < 0.1)
			n = snprintf(line, len, RPT_REPORT_BW_EXT, m->size, m->iters, b.peak, b.avg,
				     b.rate);
		else
			n = snprintf(line, len, RPT_REPORT_BW, m->size, m->iters, b.peak, b.avg,
				     b.rate);
		snprintf(json, sizeof(json),
			 "\"bytes\":%" PRIu64 ",\"iterations\":%" PRIu64 ",\"bw_peak\":%.4f,"
			 "\"bw_average\":%.4f,\"bw_unit\":\"%s\",\"msg_rate_mpps\":%.6f",
			 m->size, m->iters, b.peak, b.avg, p->report_gbits ? "Gb/sec" : "MB/sec",
			 b.rate);
	} else if (!m->tlat) {
		struct rpt_lat l;

		rpt_lat_compute(p, m, &l);
		n = snprintf(line, len, RPT_REPORT_LAT_DUR, m->size, m->iters, l.avg, l.tps);
		snprintf(json, sizeof(json),
			 "\"bytes\":%" PRIu64 ",\"iterations\":%" PRIu64 ",\"t_avg_usec\":%.4f,"
			 "\"tps_average\":%.2f",
			 m->size, m->iters, l.avg, l.tps);
	} else {
		struct rpt_lat l;

		rpt_lat_compute(p, m, &l);
		n = snprintf(line, len, RPT_REPORT_LAT, m->size, m->iters, l.min, l.max, l.typical,
			     l.avg, l.stdev, l.p99, l.p999);
		snprintf(json, sizeof(json),
			 "\"bytes\":%" PRIu64 ",\"iterations\":%" PRIu64 ",\"t_min_usec\":%.4f,"
			 "\"t_max_usec\":%.4f,\"t_typical_usec\":%.4f,\"t_avg_usec\":%.4f,"
			 "\"t_stdev_usec\":%.4f,\"p99_usec\":%.4f,\"p99_9_usec\":%.4f",
			 m->size, m->iters, l.min, l.max, l.typical, l.avg, l.stdev, l.p99, l.p999);
	}
	if (n > 0 && (size_t)n < len)
		snprintf(line + n, len - (size_t)n, RPT_REPORT_CPU "%s", m->cpu_local, m->cpu_peer,
			 p->check ? "\t    OK" : "");

	if (!p->json) {
		printf("%s\n", line);
		fflush(stdout);
		return 0;
	}
	rpt_json_str(prov, sizeof(prov), pc->provider);
	rpt_json_str(uri, sizeof(uri), pc->uri);
	if (p->check)
		snprintf(extra, sizeof(extra), ",\"check\":\"ok\",\"verified\":%" PRIu64,
			 m->verified + m->peer_verified);
	printf("{\"test\":\"%s\",\"provider\":\"%s\",\"uri\":\"%s\",\"qps\":%u,\"tx_depth\":%u,"
	       "\"poll\":\"%s\",\"mode\":\"%s\",%s,\"cpu_util\":%.2f,\"peer_cpu_util\":%.2f%s}\n",
	       perf_test_name(p->test), prov, uri, p->qps, p->depth,
	       p->poll == PERF_POLL_BUSY ? "busy" : "wait", p->duration ? "duration" : "iterations",
	       json, m->cpu_local, m->cpu_peer, extra);
	fflush(stdout);
	return 0;
}
