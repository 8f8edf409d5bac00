/*
 * verbs_mr.c - memory registration, the verbs part of rkey blobs, and their parsing.
 *
 * A region is registered on every usable device of the instance (a peer may reach us
 * through any of them) in chunks of at most the smallest max_mr_size (whole pages;
 * FERRY_VERBS_MR_CHUNK lowers it for tests). Access bits follow the region's
 * FERRY_ACCESS_* flags exactly: the NIC is the target-side check of one-sided
 * operations, so REMOTE_READ/WRITE are granted only when asked for. LOCAL_WRITE is
 * always set (RDMA READ lands in local memory, and the verbs spec requires it for
 * REMOTE_WRITE).
 *
 * The packed entry (format in verbs.h) lists, per device, its node GUID and the rkey of
 * every chunk; the initiator picks the entry whose GUID the peer named in its
 * handshake. Registration caching for unregistered user buffers lives in the core
 * (it fills op->mr); this file registers exactly what it is asked to.
 */
#include "verbs.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

/* Whether the process may pin memory beyond RLIMIT_MEMLOCK (CAP_IPC_LOCK, bit 14). */
static bool has_ipc_lock(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	bool cap = false;
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long v;
		if (sscanf(line, "CapEff: %llx", &v) == 1) {
			cap = (v >> 14) & 1;
			break;
		}
	}
	fclose(f);
	return cap;
}

/* Translates an ibv_reg_mr failure, naming RLIMIT_MEMLOCK when that is the cause. */
int ferryi_verbs_reg_error(struct ferry_ctx *ctx, const char *dev, size_t len, int err)
{
	struct rlimit rl;
	if ((err == ENOMEM || err == EPERM || err == EAGAIN) && getrlimit(RLIMIT_MEMLOCK, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY && !has_ipc_lock()) {
		char hard[32] = "unlimited";
		if (rl.rlim_max != RLIM_INFINITY)
			snprintf(hard, sizeof(hard), "%llu", (unsigned long long)rl.rlim_max);
		FERRYI_ERR(ctx, "verbs: %s: cannot pin %zu bytes: RLIMIT_MEMLOCK is %llu bytes "
				"(soft; hard %s). Raise it (ulimit -l unlimited, or memlock "
				"in /etc/security/limits.conf / LimitMEMLOCK= for systemd)",
			   dev, len, (unsigned long long)rl.rlim_cur, hard);
		return FERRY_EPERM;
	}
	FERRYI_ERR(ctx, "verbs: %s: ibv_reg_mr(%zu bytes): %s", dev, len, strerror(err));
	return err == EPERM ? FERRY_EPERM : err == ENOMEM ? FERRY_ENOMEM : ferryi_verbs_errno(err);
}

static void mr_free(struct ferryi_verbs_mr *vm)
{
	if (vm->mrs) {
		for (uint64_t i = 0; i < (uint64_t)vm->ndev * vm->nchunks; i++)
			if (vm->mrs[i])
				ibv_dereg_mr(vm->mrs[i]);
		free(vm->mrs);
	}
	memset(vm, 0, sizeof(*vm));
}

int ferryi_verbs_mr_reg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	struct ferryi_verbs_inst *vi = ferryi_verbs_inst(pi);
	struct ferryi_verbs_mr *vm = ferryi_mr_priv(mr, pi);
	int access = IBV_ACCESS_LOCAL_WRITE;
	int rc;

	memset(vm, 0, sizeof(*vm));
	if (!mr->len || !mr->addr)
		return FERRY_EINVAL;
	if (mr->access & FERRY_ACCESS_REMOTE_READ)
		access |= IBV_ACCESS_REMOTE_READ;
	if (mr->access & FERRY_ACCESS_REMOTE_WRITE)
		access |= IBV_ACCESS_REMOTE_WRITE;
	uint64_t nchunks = mr->len / vi->mr_chunk + (mr->len % vi->mr_chunk != 0);
	if (nchunks > UINT32_MAX)
		return FERRY_EINVAL;
	vm->ndev = (uint32_t)vi->ndev;
	vm->nchunks = (uint32_t)nchunks;
	vm->chunk = vi->mr_chunk;
	vm->mrs = calloc((size_t)vm->ndev * vm->nchunks, sizeof(*vm->mrs));
	if (!vm->mrs) {
		memset(vm, 0, sizeof(*vm));
		return FERRY_ENOMEM;
	}
	for (int d = 0; d < vi->ndev; d++) {
		struct ferryi_verbs_dev *dev = &vi->devs[d];
		if (!dev->usable)
			continue;
		for (uint32_t c = 0; c < vm->nchunks; c++) {
			uint64_t off = (uint64_t)c * vm->chunk;
			size_t len = (size_t)FERRYI_MIN((uint64_t)mr->len - off, vm->chunk);
			struct ibv_mr *m = ibv_reg_mr(dev->pd, (uint8_t *)mr->addr + off, len, access);
			if (!m) {
				rc = ferryi_verbs_reg_error(pi->ctx, dev->name, len,
							    errno ? errno : ENOMEM);
				mr_free(vm);
				return rc;
			}
			vm->mrs[(size_t)d * vm->nchunks + c] = m;
		}
	}
	if (vm->nchunks > 1)
		FERRYI_DBG(pi->ctx, "verbs: region of %zu bytes split into %u ibv_mrs of %" PRIu64,
			   mr->len, vm->nchunks, vm->chunk);
	return 0;
}

/*
 * A region deregistered while our own write/read ops still post from it keeps its
 * ibv_mrs until the last of them completes: those ops were accepted and must finish
 * normally, and the NIC would fail them (and the QP) on a dead lkey. Remote access
 * through its rkeys then also lasts until that moment; with no local op in flight
 * (the usual case) it stops at once.
 */
void ferryi_verbs_mr_dereg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	struct ferryi_verbs_mr *vm = ferryi_mr_priv(mr, pi);
	if (vm->users) {
		FERRYI_DBG(pi->ctx, "verbs: region %p deregistered with %u local ops in flight: "
				    "its ibv_mrs go when they complete", mr->addr, vm->users);
		vm->dereg_pending = true;
		return;
	}
	mr_free(vm);
}

void ferryi_verbs_mr_use(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	struct ferryi_verbs_mr *vm = ferryi_mr_priv(mr, pi);
	vm->users++;
}

void ferryi_verbs_mr_unuse(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	struct ferryi_verbs_mr *vm = ferryi_mr_priv(mr, pi);
	if (vm->users && --vm->users == 0 && vm->dereg_pending)
		mr_free(vm);
}

uint32_t ferryi_verbs_mr_lkey(struct ferryi_prov_inst *pi, const struct ferry_mr *mr,
			      const struct ferryi_verbs_dev *dev, uint64_t off, uint64_t *left)
{
	const struct ferryi_verbs_mr *vm = ferryi_mr_priv(mr, pi);
	uint64_t c = off / vm->chunk;
	struct ibv_mr *m = vm->mrs[(size_t)dev->index * vm->nchunks + c];
	*left = (c + 1) * vm->chunk - off;
	return m->lkey;
}

static uint32_t fnv1a32(const uint8_t *p, size_t n)
{
	uint32_t h = 0x811c9dc5u;
	for (size_t i = 0; i < n; i++) {
		h ^= p[i];
		h *= 0x01000193u;
	}
	return h;
}

int ferryi_verbs_mr_pack(struct ferryi_prov_inst *pi, const struct ferry_mr *mr, void *buf,
			 size_t len)
{
	const struct ferryi_verbs_mr *vm = ferryi_mr_priv(mr, pi);
	struct ferryi_verbs_inst *vi = ferryi_verbs_inst(pi);
	uint8_t *p = buf;
	uint32_t ndev = 0;

	if (!vm->mrs || vm->dereg_pending)
		return FERRY_EINVAL;
	for (int d = 0; d < vi->ndev; d++)
		ndev += vi->devs[d].usable && vm->mrs[(size_t)d * vm->nchunks] != NULL;
	size_t need = FERRYI_VERBS_RKEY_HDR + (size_t)ndev * (8 + 4 * (size_t)vm->nchunks) +
		      FERRYI_VERBS_RKEY_TRAILER;
	if (ndev == 0 || ndev > 255)
		return FERRY_EINVAL;
	if (need > len) {
		FERRYI_WARN(pi->ctx, "verbs: rkey of a region in %u ibv_mrs needs %zu bytes, "
				     "%zu left in the blob (raise FERRY_VERBS_MR_CHUNK)",
			    vm->nchunks, need, len);
		return FERRY_ENOBUFS;
	}
	p[0] = FERRYI_VERBS_RKEY_FMT;
	p[1] = (uint8_t)ndev;
	p[2] = (uint8_t)(mr->access & (FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE));
	p[3] = 0;
	ferryi_put_le32(p + 4, vm->nchunks);
	ferryi_put_le64(p + 8, (uint64_t)(uintptr_t)mr->addr);
	ferryi_put_le64(p + 16, vm->chunk);
	ferryi_put_le64(p + 24, mr->len);
	ferryi_put_le32(p + 32, vi->instance);
	ferryi_put_le32(p + 36, 0);
	p += FERRYI_VERBS_RKEY_HDR;
	for (int d = 0; d < vi->ndev; d++) {
		if (!vi->devs[d].usable || !vm->mrs[(size_t)d * vm->nchunks])
			continue;
		ferryi_put_le64(p, vi->devs[d].guid);
		p += 8;
		for (uint32_t c = 0; c < vm->nchunks; c++, p += 4)
			ferryi_put_le32(p, vm->mrs[(size_t)d * vm->nchunks + c]->rkey);
	}
	ferryi_put_le32(p, fnv1a32(buf, need - FERRYI_VERBS_RKEY_TRAILER));
	return (int)need;
}

int ferryi_verbs_rkey_check(const void *key, size_t len)
{
	const uint8_t *p = key;
	if (len < FERRYI_VERBS_RKEY_HDR + FERRYI_VERBS_RKEY_TRAILER ||
	    p[0] != FERRYI_VERBS_RKEY_FMT || p[1] == 0 || p[3] != 0 ||
	    (p[2] & ~(FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE)))
		return FERRY_EPROTO;
	uint64_t nchunks = ferryi_get_le32(p + 4);
	uint64_t base = ferryi_get_le64(p + 8);
	uint64_t chunk = ferryi_get_le64(p + 16);
	uint64_t rlen = ferryi_get_le64(p + 24);
	if (nchunks == 0 || chunk == 0 || rlen == 0 || ferryi_get_le32(p + 36) != 0)
		return FERRY_EPROTO;
	/* Exact length, computed in 64 bits: no overflow for any 32-bit nchunks. */
	if ((uint64_t)len != FERRYI_VERBS_RKEY_HDR + (uint64_t)p[1] * (8 + 4 * nchunks) +
				     FERRYI_VERBS_RKEY_TRAILER)
		return FERRY_EPROTO;
	if (ferryi_get_le32(p + len - FERRYI_VERBS_RKEY_TRAILER) !=
	    fnv1a32(p, len - FERRYI_VERBS_RKEY_TRAILER))
		return FERRY_EPROTO;
	/* The chunks cover exactly the region, inside the address space. */
	if (chunk > UINT64_MAX / nchunks || rlen > chunk * nchunks ||
	    rlen <= chunk * (nchunks - 1) || base > UINT64_MAX - rlen)
		return FERRY_EPROTO;
	return 0;
}

int ferryi_verbs_rkey_parse(const void *key, size_t len, uint64_t guid,
			    struct ferryi_verbs_rkey *out)
{
	const uint8_t *p = key;
	if (ferryi_verbs_rkey_check(key, len) < 0)
		return FERRY_EBADKEY;
	out->access = p[2];
	out->nchunks = ferryi_get_le32(p + 4);
	out->base_va = ferryi_get_le64(p + 8);
	out->chunk = ferryi_get_le64(p + 16);
	out->len = ferryi_get_le64(p + 24);
	out->instance = ferryi_get_le32(p + 32);
	unsigned ndev = p[1];
	p += FERRYI_VERBS_RKEY_HDR;
	for (unsigned d = 0; d < ndev; d++) {
		if (ferryi_get_le64(p) == guid) {
			out->rkeys = p + 8;
			return 0;
		}
		p += 8 + 4 * (size_t)out->nchunks;
	}
	return FERRY_EBADKEY; /* no key for the device the peer talks to us through */
}
