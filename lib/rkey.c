/*
 * rkey.c - the portable remote-key blob and its validation.
 *
 * Blob (little-endian):
 *   0  u32 magic "FRK1"      4  u8 version (1)    5  u8 entry count   6 u16 total length
 *   8  u64 region length    16  u32 generation   20  u32 access flags
 *   24 entries: u8 provider id, u8 reserved (0), u16 key length, key bytes
 * Every length is checked against the blob's real length before use; a provider
 * validates its own key bytes (rkey_check) before the key is accepted.
 */
#include "core_priv.h"

#include <stdlib.h>
#include <string.h>

#define RKEY_MAGIC 0x314b5246u /* "FRK1" */
#define RKEY_VERSION 1
#define RKEY_HDR 24
#define RKEY_ENT_HDR 4

int ferryi_mr_pack_locked(const struct ferry_mr *mr, const struct ferryi_prov_inst *only,
			  void *buf, size_t *len)
{
	struct ferry_ctx *ctx = mr->ctx;
	uint8_t tmp[FERRY_RKEY_MAX];
	size_t off = RKEY_HDR;
	int nent = 0;

	for (int i = 0; i < ctx->nprovs; i++) {
		struct ferryi_prov_inst *pi = ctx->provs[i];
		if (only && pi != only)
			continue;
		if (off + RKEY_ENT_HDR >= sizeof(tmp))
			return FERRY_ENOBUFS;
		int n = pi->prov->mr_pack(pi, mr, tmp + off + RKEY_ENT_HDR,
					  sizeof(tmp) - off - RKEY_ENT_HDR);
		if (n < 0)
			return n;
		if (n > UINT16_MAX)
			return FERRY_ENOBUFS;
		tmp[off] = (uint8_t)pi->prov->id;
		tmp[off + 1] = 0;
		ferryi_put_le16(tmp + off + 2, (uint16_t)n);
		off += RKEY_ENT_HDR + (size_t)n;
		nent++;
	}
	ferryi_put_le32(tmp, RKEY_MAGIC);
	tmp[4] = RKEY_VERSION;
	tmp[5] = (uint8_t)nent;
	ferryi_put_le16(tmp + 6, (uint16_t)off);
	ferryi_put_le64(tmp + 8, mr->len);
	ferryi_put_le32(tmp + 16, mr->generation);
	ferryi_put_le32(tmp + 20, mr->access);
	if (*len < off) {
		*len = off;
		return FERRY_ENOBUFS;
	}
	memcpy(buf, tmp, off);
	*len = off;
	return 0;
}

int ferry_mr_pack(const struct ferry_mr *mr, void *buf, size_t *len)
{
	if (!mr || !buf || !len)
		return FERRY_EINVAL;
	if (mr->dead)
		return FERRY_EINVAL;
	struct ferry_ctx *ctx = mr->ctx;
	ferryi_ctx_lock(ctx);
	/* The blob may travel anywhere and be used over any provider: all must be open. */
	ferryi_ctx_open_deferred_all(ctx);
	int rc = ferryi_mr_pack_locked(mr, NULL, buf, len);
	ferryi_ctx_unlock(ctx);
	return rc;
}

int ferryi_rkey_decode(const void *blob, size_t len, struct ferry_rkey *out)
{
	const uint8_t *p = blob;
	if (!blob || len < RKEY_HDR || len > FERRY_RKEY_MAX)
		return FERRY_EPROTO;
	if (ferryi_get_le32(p) != RKEY_MAGIC || p[4] != RKEY_VERSION)
		return FERRY_EPROTO;
	if (ferryi_get_le16(p + 6) != len)
		return FERRY_EPROTO;
	int nent = p[5];
	if (nent == 0 || nent > FERRYI_MAX_PROVS)
		return FERRY_EPROTO;
	out->region_len = ferryi_get_le64(p + 8);
	out->generation = ferryi_get_le32(p + 16);
	out->access = ferryi_get_le32(p + 20);
	if (out->access & ~(unsigned)(FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE))
		return FERRY_EPROTO;
	size_t off = RKEY_HDR;
	for (int i = 0; i < nent; i++) {
		if (len - off < RKEY_ENT_HDR)
			return FERRY_EPROTO;
		uint8_t id = p[off];
		uint16_t klen = ferryi_get_le16(p + off + 2);
		if (p[off + 1] != 0 || id == 0 || klen > len - off - RKEY_ENT_HDR)
			return FERRY_EPROTO;
		for (int j = 0; j < i; j++)
			if (out->ent[j].prov_id == id)
				return FERRY_EPROTO;
		out->ent[i].prov_id = id;
		out->ent[i].len = klen;
		out->ent[i].key = p + off + RKEY_ENT_HDR;
		off += RKEY_ENT_HDR + klen;
	}
	if (off != len)
		return FERRY_EPROTO;
	out->nent = nent;
	return 0;
}

int ferryi_rkey_unpack_locked(struct ferry_ctx *ctx, const void *blob, size_t len,
			      struct ferry_rkey **out)
{
	struct ferry_rkey hdr;
	int rc = ferryi_rkey_decode(blob, len, &hdr);
	if (rc < 0) {
		FERRYI_DBG(ctx, "rkey blob of %zu bytes rejected: malformed", len);
		return rc;
	}
	/* Providers not open yet may open and use the key later: they check it too. */
	for (int i = 0; i < hdr.nent; i++) {
		for (int j = 0; j < ctx->nprovs + ctx->nunopened; j++) {
			const struct ferryi_provider *p = j < ctx->nprovs ?
				ctx->provs[j]->prov : ctx->unopened[j - ctx->nprovs]->prov;
			if ((uint8_t)p->id == hdr.ent[i].prov_id && p->rkey_check &&
			    p->rkey_check(hdr.ent[i].key, hdr.ent[i].len) < 0) {
				FERRYI_DBG(ctx, "rkey blob rejected: bad %s key", p->name);
				return FERRY_EPROTO;
			}
		}
	}
	struct ferry_rkey *rk = malloc(sizeof(*rk) + len);
	if (!rk)
		return FERRY_ENOMEM;
	*rk = hdr;
	rk->ctx = ctx;
	atomic_init(&rk->refs, 1);
	rk->blob_len = len;
	memcpy(rk->blob, blob, len);
	for (int i = 0; i < rk->nent; i++)
		rk->ent[i].key = rk->blob + (hdr.ent[i].key - (const uint8_t *)blob);
	ferryi_list_push_back(&ctx->rkeys, &rk->ctx_link);
	*out = rk;
	return 0;
}

int ferry_rkey_unpack(struct ferry_ctx *ctx, const void *blob, size_t len, struct ferry_rkey **out)
{
	if (!ctx || !out)
		return FERRY_EINVAL;
	*out = NULL;
	if (!blob)
		return FERRY_EPROTO;
	ferryi_ctx_lock(ctx);
	int rc = ferryi_rkey_unpack_locked(ctx, blob, len, out);
	ferryi_ctx_unlock(ctx);
	return rc;
}

const void *ferryi_rkey_key(const struct ferry_rkey *rk, enum ferryi_provider_id id, size_t *len)
{
	for (int i = 0; i < rk->nent; i++)
		if (rk->ent[i].prov_id == (uint8_t)id) {
			*len = rk->ent[i].len;
			return rk->ent[i].key;
		}
	return NULL;
}

uint64_t ferry_rkey_len(const struct ferry_rkey *rkey)
{
	return rkey ? rkey->region_len : 0;
}

void ferryi_rkey_ref(struct ferry_rkey *rk)
{
	atomic_fetch_add_explicit(&rk->refs, 1, memory_order_relaxed);
}

void ferryi_rkey_unref(struct ferry_rkey *rk)
{
	if (atomic_fetch_sub_explicit(&rk->refs, 1, memory_order_acq_rel) != 1)
		return;
	ferryi_list_remove(&rk->ctx_link);
	free(rk);
}

void ferry_rkey_destroy(struct ferry_rkey *rkey)
{
	if (!rkey)
		return;
	struct ferry_ctx *ctx = rkey->ctx;
	ferryi_ctx_lock(ctx);
	ferryi_rkey_unref(rkey);
	ferryi_ctx_unlock(ctx);
}

void ferryi_rkeys_fini(struct ferry_ctx *ctx)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&ctx->rkeys, n, t) {
		ferryi_list_remove(n);
		free(ferryi_container_of(n, struct ferry_rkey, ctx_link));
	}
}
