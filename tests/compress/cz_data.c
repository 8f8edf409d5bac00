/*
 * cz_data.c - data generators for the compression tests and compress_bench: service
 * logs as JSON lines, fp16 activations, random bytes, and a mix. No test framework:
 * perf/compress_bench builds this file too.
 */
#include "cz_data.h"

#include <stdio.h>
#include <string.h>

#define CZ_MIN(a, b) ((a) < (b) ? (a) : (b))

static uint64_t xs(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*s = x;
	return x * 0x2545F4914F6CDD1Dull;
}

const char *cz_data_name(enum cz_data d)
{
	static const char *const n[] = {"json", "random", "mixed", "fp16"};

	return n[d];
}

static void fill_random(uint8_t *p, size_t len, uint64_t *s)
{
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t v = xs(s);

		memcpy(p + i, &v, 8);
	}
	for (; i < len; i++)
		p[i] = (uint8_t)xs(s);
}

/* Service logs as JSON lines: what a log shipper or a tracing sidecar moves. */
static void fill_json(uint8_t *p, size_t len, uint64_t *s)
{
	static const char *const lvl[] = {"INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"};
	static const char *const svc[] = {"api-gateway", "kv-cache", "scheduler", "prefill",
					  "decode-worker", "tokenizer"};
	static const char *const msg[] = {
		"request completed", "cache hit", "cache miss, fetching from peer",
		"batch scheduled", "sequence evicted", "connection reused from pool",
		"slow request", "retrying after timeout"};
	static const char *const path[] = {"/v1/completions", "/v1/chat/completions",
					   "/v1/embeddings", "/health", "/metrics"};
	char line[512];
	size_t off = 0;

	while (off < len) {
		uint64_t r = xs(s), t = xs(s);
		int n = snprintf(line, sizeof(line),
				 "{\"ts\":\"2024-06-%02uT%02u:%02u:%02u.%03uZ\",\"level\":\"%s\","
				 "\"service\":\"%s\",\"host\":\"node-%02u\",\"trace_id\":"
				 "\"%016llx\",\"path\":\"%s\",\"status\":%u,\"latency_ms\":%u.%u,"
				 "\"tokens\":%u,\"msg\":\"%s\"}\n",
				 (unsigned)(1 + r % 28), (unsigned)(r >> 8) % 24,
				 (unsigned)(r >> 16) % 60, (unsigned)(r >> 24) % 60,
				 (unsigned)(r >> 32) % 1000, lvl[(r >> 42) % 6], svc[(r >> 45) % 6],
				 (unsigned)(r >> 48) % 32, (unsigned long long)t,
				 path[(r >> 53) % 5], (r >> 56) % 10 ? 200u : 503u,
				 (unsigned)(t % 900), (unsigned)(t >> 20) % 10,
				 (unsigned)(t >> 24) % 4096, msg[(t >> 40) % 8]);
		size_t k = CZ_MIN((size_t)n, len - off);

		memcpy(p + off, line, k);
		off += k;
	}
}

static uint16_t to_half(float f)
{
	uint32_t x;
	uint32_t sign, exp, man;

	memcpy(&x, &f, 4);
	sign = (x >> 16) & 0x8000u;
	exp = (x >> 23) & 0xffu;
	man = x & 0x7fffffu;
	if (exp < 103)
		return (uint16_t)sign; /* underflow to zero */
	if (exp > 142)
		return (uint16_t)(sign | 0x7c00u);
	if (exp < 113) /* subnormal */
		return (uint16_t)(sign | ((man | 0x800000u) >> (126 - exp)));
	return (uint16_t)(sign | ((exp - 112) << 10) | (man >> 13));
}

/*
 * fp16 activations as an inference server moves them (KV cache, hidden states): about
 * half exact zeros (ReLU/SwiGLU sparsity, padding), the rest roughly normal with
 * magnitudes around 1 and 6 significant mantissa bits (values that went through an
 * 8-bit quantisation and back).
 */
static void fill_fp16(uint8_t *p, size_t len, uint64_t *s)
{
	size_t i = 0;

	for (; i + 2 <= len; i += 2) {
		uint64_t r = xs(s);
		uint16_t h = 0;

		if (r & 1) {
			/* Irwin-Hall(4) ~ normal, scaled */
			double u = ((r >> 8) & 0xffff) + ((r >> 24) & 0xffff) + ((r >> 40) & 0xffff) +
				   (double)(xs(s) & 0xffff);
			float v = (float)((u / 65536.0 - 2.0) * 1.7);

			h = to_half(v) & 0xfff0u; /* 6 mantissa bits kept */
		}
		memcpy(p + i, &h, 2);
	}
	if (i < len)
		p[i] = 0;
}

void cz_fill(void *buf, size_t len, enum cz_data d, uint64_t seed)
{
	uint64_t s = seed * 0x9E3779B97F4A7C15ull + 0x1234567ull;
	uint8_t *p = buf;

	if (!s)
		s = 1;
	switch (d) {
	case CZ_JSON:
		fill_json(p, len, &s);
		break;
	case CZ_RANDOM:
		fill_random(p, len, &s);
		break;
	case CZ_FP16:
		fill_fp16(p, len, &s);
		break;
	case CZ_MIXED:
		/*
		 * Per 2 MiB: one MiB of 96 KiB logs / 160 KiB random blocks (chunks of each
		 * kind in one segment), then one MiB of random (a segment with nothing to
		 * gain).
		 */
		for (size_t off = 0; off < len;) {
			size_t pos = off % ((size_t)2 << 20), k;

			if (pos >= ((size_t)1 << 20)) {
				k = CZ_MIN(len - off, ((size_t)2 << 20) - pos);
				fill_random(p + off, k, &s);
			} else if (pos % ((size_t)256 << 10) < ((size_t)96 << 10)) {
				k = CZ_MIN(len - off, ((size_t)96 << 10) - pos % ((size_t)256 << 10));
				fill_json(p + off, k, &s);
			} else {
				k = CZ_MIN(len - off, ((size_t)256 << 10) - pos % ((size_t)256 << 10));
				fill_random(p + off, k, &s);
			}
			off += k;
		}
		break;
	}
}

int cz_data_parse(const char *name, enum cz_data *out)
{
	for (int d = CZ_JSON; d <= CZ_FP16; d++) {
		if (strcmp(name, cz_data_name((enum cz_data)d)) == 0) {
			*out = (enum cz_data)d;
			return 0;
		}
	}
	return -1;
}
