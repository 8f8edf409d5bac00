/*
 * fuzz_rkey.c - remote-key blobs from a peer: ferryi_rkey_decode, ferry_rkey_unpack on
 * a real (tcp-only) context, and the bounds arithmetic a key's region length feeds.
 *
 * Input: an rkey blob, optionally followed by a 16-byte trailer (u64 offset, u64
 * length, little-endian). The whole input is tried as a blob, and so is the input
 * without its last 16 bytes, whose trailer then gives the offset and length to check
 * against the unpacked key's region.
 *
 * Invariants checked beyond "no crash, no leak":
 *   - a blob decode accepts re-encodes to exactly the same bytes (the format is
 *     canonical: nothing is accepted that the packer would not produce), its entries
 *     lie inside the blob, and its access flags are known ones;
 *   - unpack accepts exactly what decode accepts, minus blobs whose tcp key is not
 *     8 bytes, and reports the decoded region length;
 *   - ferryi_range_ok(region, off, len) equals off + len <= region computed without
 *     overflow (128-bit), for the trailer's values and edge values around them.
 */
#include "fuzz_common.h"

#include <stdlib.h>
#include <string.h>

#define RKEY_HDR 24

static struct ferry_ctx *fz_ctx;

static void check_range(uint64_t region, uint64_t off, uint64_t len)
{
	bool want = (unsigned __int128)off + len <= region;

	if (ferryi_range_ok(region, off, len) != want)
		fz_fail(__FILE__, __LINE__,
			"ferryi_range_ok(%llu, %llu, %llu) = %d, expected %d",
			(unsigned long long)region, (unsigned long long)off,
			(unsigned long long)len, !want, want);
}

static void check_ranges(uint64_t region, uint64_t off, uint64_t len)
{
	const uint64_t edge[] = {0, 1, region - 1, region, region + 1, UINT64_MAX,
				 UINT64_MAX - region, off, len};

	check_range(region, off, len);
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(edge); i++) {
		check_range(region, edge[i], len);
		check_range(region, off, edge[i]);
		check_range(region, edge[i], region - edge[i]);
		check_range(region, edge[i], region - edge[i] + 1);
	}
}

/* Rebuilds the blob from what decode returned; it must be the input byte for byte. */
static void check_reencode(const uint8_t *blob, size_t len, const struct ferry_rkey *h)
{
	uint8_t re[FERRY_RKEY_MAX];
	size_t off = RKEY_HDR;

	FZ_CHECK(len >= RKEY_HDR && len <= FERRY_RKEY_MAX);
	FZ_CHECK(h->nent >= 1 && h->nent <= FERRYI_MAX_PROVS);
	FZ_CHECK((h->access & ~(unsigned)(FERRY_ACCESS_REMOTE_READ |
					  FERRY_ACCESS_REMOTE_WRITE)) == 0);
	memcpy(re, "FRK1", 4);
	re[4] = 1;
	re[5] = (uint8_t)h->nent;
	ferryi_put_le16(re + 6, (uint16_t)len);
	ferryi_put_le64(re + 8, h->region_len);
	ferryi_put_le32(re + 16, h->generation);
	ferryi_put_le32(re + 20, h->access);
	for (int i = 0; i < h->nent; i++) {
		const struct ferryi_rkey_ent *e = &h->ent[i];

		FZ_CHECK(e->prov_id != 0);
		/* The key points into the input, right after its entry header. */
		FZ_CHECK(e->key == blob + off + 4);
		FZ_CHECK(off + 4 + e->len <= len);
		for (int j = 0; j < i; j++)
			FZ_CHECK(h->ent[j].prov_id != e->prov_id);
		re[off] = e->prov_id;
		re[off + 1] = 0;
		ferryi_put_le16(re + off + 2, e->len);
		memcpy(re + off + 4, e->key, e->len);
		off += 4 + (size_t)e->len;
	}
	FZ_CHECK(off == len);
	FZ_CHECK(memcmp(re, blob, len) == 0);
}

static void one_blob_exact(const uint8_t *blob, size_t len, const uint8_t *trailer);

/* Decode may read only [blob, blob + len): an exact-size copy lets ASan see more. */
static void one_blob(const uint8_t *data, size_t len, const uint8_t *trailer)
{
	uint8_t *copy = malloc(len ? len : 1);

	FZ_CHECK(copy != NULL);
	if (len)
		memcpy(copy, data, len);
	one_blob_exact(copy, len, trailer);
	free(copy);
}

static void one_blob_exact(const uint8_t *blob, size_t len, const uint8_t *trailer)
{
	struct ferry_rkey hdr;
	struct ferry_rkey *rk = NULL;
	int drc, urc;

	memset(&hdr, 0, sizeof(hdr));
	drc = ferryi_rkey_decode(blob, len, &hdr);
	FZ_CHECK(drc == 0 || drc == FERRY_EPROTO);
	if (drc == 0)
		check_reencode(blob, len, &hdr);

	urc = ferry_rkey_unpack(fz_ctx, blob, len, &rk);
	if (urc < 0) {
		FZ_CHECK(rk == NULL);
		FZ_CHECK(urc == FERRY_EPROTO);
		if (drc == 0) {
			/* Only the tcp provider's own check may refuse a well-formed blob. */
			bool bad_tcp = false;

			for (int i = 0; i < hdr.nent; i++)
				if (hdr.ent[i].prov_id == FERRYI_PROV_TCP && hdr.ent[i].len != 8)
					bad_tcp = true;
			FZ_CHECK(bad_tcp);
		}
		return;
	}
	FZ_CHECK(drc == 0);
	FZ_CHECK(rk != NULL);
	FZ_CHECK(ferry_rkey_len(rk) == hdr.region_len);
	FZ_CHECK(rk->nent == hdr.nent && rk->access == hdr.access &&
		 rk->generation == hdr.generation && rk->blob_len == len);

	size_t klen = 0;
	const uint8_t *key = ferryi_rkey_key(rk, FERRYI_PROV_TCP, &klen);
	if (key) {
		FZ_CHECK(klen == 8);
		/* The key lives in the rkey's own copy of the blob, not in the input. */
		FZ_CHECK(key >= rk->blob && key + klen <= rk->blob + rk->blob_len);
	}
	for (int i = 0; i < rk->nent; i++) {
		FZ_CHECK(rk->ent[i].key >= rk->blob &&
			 rk->ent[i].key + rk->ent[i].len <= rk->blob + rk->blob_len);
		FZ_CHECK(memcmp(rk->ent[i].key, hdr.ent[i].key, hdr.ent[i].len) == 0);
	}

	uint64_t off = 0, n = 0;
	if (trailer) {
		off = ferryi_get_le64(trailer);
		n = ferryi_get_le64(trailer + 8);
	}
	check_ranges(rk->region_len, off, n);
	ferry_rkey_destroy(rk);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!fz_ctx) {
		fz_ctx = fz_ctx_create(NULL);
		struct ferry_rkey *rk = (struct ferry_rkey *)1;
		FZ_CHECK(ferry_rkey_unpack(fz_ctx, NULL, 0, &rk) == FERRY_EPROTO && !rk);
	}
	one_blob(data, size, NULL);
	if (size >= RKEY_HDR + 16)
		one_blob(data, size - 16, data + size - 16);
	return 0;
}
