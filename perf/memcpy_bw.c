/*
 * memcpy_bw.c - the ceiling for any copy on this machine: single-threaded memcpy()
 * bandwidth at a few buffer sizes.
 *
 *   memcpy_bw [-s SIZE[,SIZE...]] [-D SECONDS] [--json]
 *
 * For each size, memcpy() from one page-aligned, pre-faulted buffer to another, again
 * and again for SECONDS. Bandwidth is bytes copied per second (each byte is read once
 * and written once). Small sizes stay in the caches; 64 MiB and above measure memory.
 * A TCP transfer over loopback copies every byte at least twice (user -> kernel ->
 * user), so memcpy bandwidth at the message size is an upper bound for one stream,
 * and half of it a rough bound for loopback TCP.
 *
 * Output: one line per size, or with --json one JSON object per size: bytes,
 * copies, bw_average (MB/sec, 2^20), gbytes_per_sec (10^9).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MBW_MAX_SIZES 16

static uint64_t mbw_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int mbw_size(const char *s, char **endp, size_t *out)
{
	unsigned long long v;

	errno = 0;
	v = strtoull(s, endp, 0);
	if (errno || *endp == s || s[0] == '-')
		return -1;
	switch (**endp) {
	case 'k': case 'K': v <<= 10; (*endp)++; break;
	case 'm': case 'M': v <<= 20; (*endp)++; break;
	case 'g': case 'G': v <<= 30; (*endp)++; break;
	default: break;
	}
	if (v == 0 || v > (4ull << 30))
		return -1;
	*out = (size_t)v;
	return 0;
}

/* The copy is behind a volatile pointer so the compiler cannot drop repeated copies. */
static void *(*volatile mbw_memcpy)(void *, const void *, size_t) = memcpy;

int main(int argc, char **argv)
{
	static const struct option longs[] = {
		{ "size", required_argument, NULL, 's' },
		{ "duration", required_argument, NULL, 'D' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	size_t sizes[MBW_MAX_SIZES] = { 1u << 20, 64u << 20 }, max = 0;
	int nsizes = 2, json = 0, c;
	double duration = 2;

	while ((c = getopt_long(argc, argv, "s:D:h", longs, NULL)) != -1) {
		char *end;

		switch (c) {
		case 's':
			nsizes = 0;
			end = optarg;
			do {
				if (nsizes == MBW_MAX_SIZES || mbw_size(end, &end, &sizes[nsizes++]))
					goto bad;
			} while (*end == ',' && *++end);
			if (*end)
				goto bad;
			break;
		case 'D':
			duration = strtod(optarg, NULL);
			if (!(duration > 0 && duration <= 600))
				goto bad;
			break;
		case 'j':
			json = 1;
			break;
		case 'h':
			printf("usage: memcpy_bw [-s SIZE[,SIZE...] (1M,64M)] [-D SECONDS per size (2)] [--json]\n");
			return 0;
		default:
			goto bad;
		}
	}
	if (optind != argc)
		goto bad;
	for (int i = 0; i < nsizes; i++)
		if (sizes[i] > max)
			max = sizes[i];

	char *src = aligned_alloc(4096, (max + 4095) & ~(size_t)4095);
	char *dst = aligned_alloc(4096, (max + 4095) & ~(size_t)4095);

	if (!src || !dst) {
		fprintf(stderr, "memcpy_bw: cannot allocate 2 x %zu bytes\n", max);
		return 1;
	}
	memset(src, 0x3c, max); /* fault every page in before timing */
	memset(dst, 0xc3, max);
	if (!json)
		printf(" #bytes       #copies      BW average[MB/sec]   BW average[GB/sec, 10^9]\n");
	for (int i = 0; i < nsizes; i++) {
		size_t sz = sizes[i];
		uint64_t copies = 0, batch = 1, t0, t1, end;

		/* warm up for a tenth of the run, then time batches of about 1 ms */
		t0 = mbw_now();
		end = t0 + (uint64_t)(duration * 1e8);
		while (mbw_now() < end) {
			mbw_memcpy(dst, src, sz);
			batch++;
		}
		batch = (uint64_t)((double)batch / (duration * 100)) + 1;
		t0 = mbw_now();
		end = t0 + (uint64_t)(duration * 1e9);
		do {
			for (uint64_t k = 0; k < batch; k++)
				mbw_memcpy(dst, src, sz);
			copies += batch;
			t1 = mbw_now();
		} while (t1 < end);

		double secs = (double)(t1 - t0) / 1e9;
		double bytes = (double)copies * (double)sz;

		if (json)
			printf("{\"test\":\"memcpy_bw\",\"bytes\":%zu,\"copies\":%" PRIu64
			       ",\"measured_s\":%.3f,\"bw_average\":%.2f,\"bw_unit\":\"MB/sec\","
			       "\"gbytes_per_sec\":%.4f}\n",
			       sz, copies, secs, bytes / secs / (1 << 20), bytes / secs / 1e9);
		else
			printf(" %-12zu %-12" PRIu64 " %-20.2f %.3f\n", sz, copies,
			       bytes / secs / (1 << 20), bytes / secs / 1e9);
		fflush(stdout);
	}
	free(src);
	free(dst);
	return 0;
bad:
	fprintf(stderr, "usage: memcpy_bw [-s SIZE[,SIZE...]] [-D SECONDS] [--json]\n");
	return 2;
}
