/*
 * ofi_mr.c - memory registration for every mr_mode bit, and the rkey part we pack.
 *
 * A region is registered once per key space: per dom, or per port when the dom has
 * FI_MR_ENDPOINT (a registration then belongs to one fabric endpoint, bound with
 * fi_mr_bind and enabled with fi_mr_enable). Each key space has a random 32-bit id
 * (ksid) that the connection handshake tells the peer, so a peer picks the right key
 * out of an rkey that carries several.
 *
 * mr_mode bits:
 *   FI_MR_LOCAL      local buffers need a descriptor: our bounce buffers are
 *                    registered (ofi_mr_local), and one-sided ops use the region's
 *                    descriptor or a registration made for the op (ofi_ep.c)
 *   FI_MR_VIRT_ADDR  the target address is the region's virtual address + offset;
 *                    without it, offsets are relative to the region's start
 *   FI_MR_PROV_KEY   the provider picks the key (fi_mr_key); without it we ask for a
 *                    random key of mr_key_size bytes, unique in the domain
 *   FI_MR_ALLOCATED  only allocated memory may be registered: we register exactly the
 *                    user's buffers and our own heap buffers, never address ranges
 *   FI_MR_ENDPOINT   registrations per port, see above
 *   FI_MR_RAW        keys are opaque byte strings (fi_mr_raw_attr); the initiator
 *                    maps them with fi_mr_map_raw for each op and unmaps after
 *
 * Our part of an rkey blob (little-endian):
 *   0 u8 version (1)   1 u8 entry count   2 u16 0   4 u32 0
 *   8 u64 the core's region key (mr->key): what the target checks one-sided requests
 *         against (ferryi_mr_remote_get); the core's blob header does not carry it
 *   entries: u32 ksid, u8 flags (1 = virt addr, 2 = raw key), u8 0, u16 key length,
 *            u64 base address (raw: what fi_mr_raw_attr returned), u64 length,
 *            key bytes (8 for a plain key, up to OFI_RAW_KEY_MAX raw)
 */
#define _GNU_SOURCE
#include "ofi.h"

#include <stdlib.h>
#include <string.h>

#define MR_PACK_VERSION 1
#define MR_PACK_HDR 16
#define MR_ENT_HDR 24
#define MR_F_VIRT 1u
#define MR_F_RAW 2u

static int ofi_mr_err(struct ferry_ctx *ctx, int fi_rc, size_t len, const char *what)
{
	int rc = ofi_fi_err(-fi_rc);
	if (fi_rc == -FI_EACCES || fi_rc == -FI_EPERM || fi_rc == -FI_ENOMEM) {
		FERRYI_WARN(ctx, "ofi: registering %zu bytes (%s) failed: %s; pinned memory is "
				 "limited by RLIMIT_MEMLOCK (ulimit -l)",
			    len, what, fi_strerror(-fi_rc));
		if (fi_rc != -FI_ENOMEM)
			rc = FERRY_EPERM;
	} else {
		FERRYI_WARN(ctx, "ofi: registering %zu bytes (%s) failed: %s", len, what,
			    fi_strerror(-fi_rc));
	}
	return rc;
}

/* fi_mr_reg with a requested key when the provider does not pick keys itself. */
static int ofi_mr_reg_raw(struct ofi_dom *dom, struct ofi_port *port, void *buf, size_t len,
			  uint64_t access, struct fid_mr **out)
{
	uint64_t mask = dom->key_size >= 8 || dom->key_size == 0
				? UINT64_MAX
				: (1ull << (8 * dom->key_size)) - 1;
	int rc = -FI_ENOKEY;

	for (int attempt = 0; attempt < 8 && rc == -FI_ENOKEY; attempt++) {
		uint64_t key = (dom->mr_mode & FI_MR_PROV_KEY) ? 0 : ferryi_random64() & mask;
		rc = fi_mr_reg(dom->domain, buf, len, access, 0, key, 0, out, NULL);
		if (dom->mr_mode & FI_MR_PROV_KEY)
			break;
	}
	if (rc)
		return rc;
	if ((dom->mr_mode & FI_MR_ENDPOINT) && port) {
		rc = fi_mr_bind(*out, &port->ep->fid, 0);
		if (!rc)
			rc = fi_mr_enable(*out);
		if (rc) {
			fi_close(&(*out)->fid);
			*out = NULL;
		}
	}
	return rc;
}

int ofi_mr_local(struct ofi_port *port, void *buf, size_t len, uint64_t access,
		 struct fid_mr **mr, void **desc)
{
	struct ofi_dom *dom = port->dom;
	*mr = NULL;
	*desc = NULL;
	if (!(dom->mr_mode & FI_MR_LOCAL))
		return 0;
	int rc = ofi_mr_reg_raw(dom, port, buf, len, access, mr);
	if (rc)
		return ofi_mr_err(ofi_ctx(port), rc, len, "bounce buffers");
	*desc = fi_mr_desc(*mr);
	return 0;
}

static uint64_t ofi_access(const struct ferry_mr *mr)
{
	uint64_t a = FI_READ | FI_WRITE;
	if (mr->access & FERRY_ACCESS_REMOTE_READ)
		a |= FI_REMOTE_READ;
	if (mr->access & FERRY_ACCESS_REMOTE_WRITE)
		a |= FI_REMOTE_WRITE;
	return a;
}

static int ofi_mreg_add(struct ofi_mr *om, struct ofi_dom *dom, struct ofi_port *port)
{
	struct ofi_mreg *r = calloc(1, sizeof(*r));
	int rc;

	if (!r)
		return FERRY_ENOMEM;
	rc = ofi_mr_reg_raw(dom, port, om->mr->addr, om->mr->len, ofi_access(om->mr), &r->mr);
	if (rc) {
		free(r);
		return ofi_mr_err(om->mr->ctx, rc, om->mr->len, dom->prov_name);
	}
	r->dom = dom;
	r->port = port;
	r->ksid = port ? port->ksid : dom->ksid;
	r->key = fi_mr_key(r->mr);
	r->desc = fi_mr_desc(r->mr);
	r->next = om->regs;
	om->regs = r;
	return 0;
}

static void ofi_mreg_drop_if(struct ofi_mr *om, struct ofi_dom *dom, struct ofi_port *port)
{
	struct ofi_mreg **pp = &om->regs;
	while (*pp) {
		struct ofi_mreg *r = *pp;
		if ((!dom || r->dom == dom) && (!port || r->port == port)) {
			*pp = r->next;
			fi_close(&r->mr->fid);
			free(r);
		} else {
			pp = &r->next;
		}
	}
}

int ofi_mr_reg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	struct ofi_inst *oi = ofi_inst(pi);
	struct ofi_mr *om = ferryi_mr_priv(mr, pi);
	int rc = 0;

	memset(om, 0, sizeof(*om));
	om->mr = mr;
	for (int i = 0; i < oi->ndoms && rc == 0; i++) {
		struct ofi_dom *dom = oi->doms[i];
		if (dom->mr_mode & FI_MR_ENDPOINT) {
			struct ferryi_list_node *n, *t;
			ferryi_list_foreach_safe(&dom->ports, n, t) {
				struct ofi_port *port = ferryi_container_of(n, struct ofi_port, link);
				if (!port->closing && (rc = ofi_mreg_add(om, dom, port)) < 0)
					break;
			}
		} else {
			rc = ofi_mreg_add(om, dom, NULL);
		}
	}
	if (rc < 0) {
		ofi_mreg_drop_if(om, NULL, NULL);
		return rc;
	}
	ferryi_list_push_back(&oi->mrs, &om->link);
	om->linked = true;
	return 0;
}

void ofi_mr_dereg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	struct ofi_mr *om = ferryi_mr_priv(mr, pi);
	if (om->mr != mr)
		return; /* never registered with us */
	ofi_mreg_drop_if(om, NULL, NULL);
	if (om->linked)
		ferryi_list_remove(&om->link);
	om->linked = false;
}

int ofi_mr_add_dom(struct ofi_inst *oi, struct ofi_dom *dom)
{
	struct ferryi_list_node *n, *t;
	if (dom->mr_mode & FI_MR_ENDPOINT)
		return 0; /* per port, when ports open */
	ferryi_list_foreach_safe(&oi->mrs, n, t) {
		struct ofi_mr *om = ferryi_container_of(n, struct ofi_mr, link);
		int rc = ofi_mreg_add(om, dom, NULL);
		if (rc < 0) {
			ofi_mr_drop_dom(oi, dom);
			return rc;
		}
	}
	return 0;
}

int ofi_mr_add_port(struct ofi_inst *oi, struct ofi_port *port)
{
	struct ferryi_list_node *n, *t;
	if (!(port->dom->mr_mode & FI_MR_ENDPOINT))
		return 0;
	ferryi_list_foreach_safe(&oi->mrs, n, t) {
		struct ofi_mr *om = ferryi_container_of(n, struct ofi_mr, link);
		int rc = ofi_mreg_add(om, port->dom, port);
		if (rc < 0) {
			ofi_mr_drop_port(oi, port);
			return rc;
		}
	}
	return 0;
}

void ofi_mr_drop_port(struct ofi_inst *oi, struct ofi_port *port)
{
	struct ferryi_list_node *n, *t;
	if (!(port->dom->mr_mode & FI_MR_ENDPOINT))
		return;
	ferryi_list_foreach_safe(&oi->mrs, n, t)
		ofi_mreg_drop_if(ferryi_container_of(n, struct ofi_mr, link), port->dom, port);
}

void ofi_mr_drop_dom(struct ofi_inst *oi, struct ofi_dom *dom)
{
	struct ferryi_list_node *n, *t;
	ferryi_list_foreach_safe(&oi->mrs, n, t)
		ofi_mreg_drop_if(ferryi_container_of(n, struct ofi_mr, link), dom, NULL);
}

void *ofi_mr_desc(struct ofi_port *port, struct ferry_mr *mr)
{
	struct ofi_mr *om;
	if (!mr)
		return NULL;
	om = ferryi_mr_priv(mr, port->dom->inst->pi);
	if (om->mr != mr)
		return NULL;
	for (struct ofi_mreg *r = om->regs; r; r = r->next)
		if (r->dom == port->dom && (!r->port || r->port == port))
			return r->desc;
	return NULL;
}

/* ------------------------------------------------------------------ packing */

int ofi_mr_pack(struct ferryi_prov_inst *pi, const struct ferry_mr *mr, void *buf, size_t len)
{
	const struct ofi_mr *om = ferryi_mr_priv(mr, pi);
	uint8_t *p = buf;
	size_t off = MR_PACK_HDR;
	int nent = 0;

	if (len < MR_PACK_HDR)
		return FERRY_ENOBUFS;
	if (om->mr != mr)
		return FERRY_EINVAL;
	for (const struct ofi_mreg *r = om->regs; r; r = r->next) {
		struct ofi_dom *dom = r->dom;
		uint8_t raw[OFI_RAW_KEY_MAX];
		size_t keylen = 8;
		uint64_t base = (dom->mr_mode & FI_MR_VIRT_ADDR) ? (uint64_t)(uintptr_t)mr->addr : 0;
		uint8_t flags = (dom->mr_mode & FI_MR_VIRT_ADDR) ? MR_F_VIRT : 0;

		if (dom->mr_mode & FI_MR_RAW) {
			uint64_t raw_base = 0;
			keylen = sizeof(raw);
			int rc = fi_mr_raw_attr(r->mr, &raw_base, raw, &keylen, 0);
			if (rc) {
				FERRYI_WARN(mr->ctx, "ofi: fi_mr_raw_attr: %s", fi_strerror(-rc));
				return rc == -FI_ETOOSMALL ? FERRY_ENOBUFS : ofi_fi_err(-rc);
			}
			base = raw_base;
			flags |= MR_F_RAW;
		} else {
			ferryi_put_le64(raw, r->key);
		}
		if (off + MR_ENT_HDR + keylen > len || nent == 255)
			return FERRY_ENOBUFS;
		ferryi_put_le32(p + off, r->ksid);
		p[off + 4] = flags;
		p[off + 5] = 0;
		ferryi_put_le16(p + off + 6, (uint16_t)keylen);
		ferryi_put_le64(p + off + 8, base);
		ferryi_put_le64(p + off + 16, mr->len);
		memcpy(p + off + MR_ENT_HDR, raw, keylen);
		off += MR_ENT_HDR + keylen;
		nent++;
	}
	memset(p, 0, 8);
	p[0] = MR_PACK_VERSION;
	p[1] = (uint8_t)nent;
	ferryi_put_le64(p + 8, mr->key);
	return (int)off;
}

/* Validates our part of a blob; with out, finds the entry for want (returns 1). */
static int ofi_rkey_walk(const uint8_t *p, size_t len, uint32_t want, struct ofi_rkey_ent *out)
{
	size_t off = MR_PACK_HDR;
	if (len < MR_PACK_HDR || p[0] != MR_PACK_VERSION || p[2] || p[3] ||
	    ferryi_get_le32(p + 4) != 0)
		return FERRY_EPROTO;
	for (int i = 0; i < p[1]; i++) {
		if (len - off < MR_ENT_HDR)
			return FERRY_EPROTO;
		uint8_t flags = p[off + 4];
		uint16_t keylen = ferryi_get_le16(p + off + 6);
		if ((flags & ~(MR_F_VIRT | MR_F_RAW)) || p[off + 5] != 0)
			return FERRY_EPROTO;
		if (keylen > len - off - MR_ENT_HDR || keylen == 0 ||
		    (!(flags & MR_F_RAW) && keylen != 8) || keylen > OFI_RAW_KEY_MAX)
			return FERRY_EPROTO;
		uint32_t ksid = ferryi_get_le32(p + off);
		if (out && ksid == want) {
			out->ksid = ksid;
			out->virt = flags & MR_F_VIRT;
			out->raw = flags & MR_F_RAW;
			out->base = ferryi_get_le64(p + off + 8);
			out->len = ferryi_get_le64(p + off + 16);
			out->keylen = keylen;
			out->key = p + off + MR_ENT_HDR;
			out->region_key = ferryi_get_le64(p + 8);
			return 1;
		}
		off += MR_ENT_HDR + keylen;
	}
	return off == len ? 0 : FERRY_EPROTO;
}

int ofi_rkey_check(const void *key, size_t len)
{
	return ofi_rkey_walk(key, len, 0, NULL) < 0 ? FERRY_EPROTO : 0;
}

int ofi_rkey_find(const struct ferry_rkey *rk, uint32_t ksid, struct ofi_rkey_ent *out)
{
	size_t len;
	const uint8_t *p = ferryi_rkey_key(rk, FERRYI_PROV_OFI, &len);
	if (!p)
		return FERRY_EBADKEY;
	int rc = ofi_rkey_walk(p, len, ksid, out);
	return rc == 1 ? 0 : FERRY_EBADKEY;
}
