/*
 * cz_data.h - generated test data: what an inference service's TCP traffic carries.
 */
#ifndef FERRY_TESTS_CZ_DATA_H
#define FERRY_TESTS_CZ_DATA_H

#include <stddef.h>
#include <stdint.h>

enum cz_data {
	CZ_JSON,   /* service logs, one JSON object per line (compresses ~4-5x)          */
	CZ_RANDOM, /* random bytes: encrypted or already-compressed payloads          */
	CZ_MIXED,  /* per 2 MiB: 1 MiB of 96 KiB logs / 160 KiB random, 1 MiB random     */
	CZ_FP16,   /* fp16 activations: half zeros, 6 mantissa bits (compresses ~2x)     */
};

const char *cz_data_name(enum cz_data d);       /* "json", "random", "mixed", "fp16" */
int cz_data_parse(const char *name, enum cz_data *out); /* 0 or -1 */
/* Fills buf with len bytes of kind d; seed varies the content. */
void cz_fill(void *buf, size_t len, enum cz_data d, uint64_t seed);

#endif /* FERRY_TESTS_CZ_DATA_H */
