/*
 * tcp_provider.c - the TCP provider's ops table, instance, info and memory-region ops.
 *
 * TCP has no device: registration is bookkeeping only. A region's key on the wire is
 * mr->key, the random 64-bit id the core made; the target looks it up in the core's
 * registry (ferryi_mr_remote_get), so no pointer ever travels.
 */
#define _GNU_SOURCE
#include "tcp_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

int ferryi_tcp_errno(int err)
{
	switch (err) {
	case 0:
		return 0;
	case EPIPE:
		return FERRY_ECONNRESET;
	case EHOSTDOWN:
	case ENETDOWN:
		return FERRY_EHOSTUNREACH;
	case EMFILE:
	case ENFILE:
		return FERRY_ENOBUFS;
	case EAFNOSUPPORT:
	case EPROTONOSUPPORT:
		return FERRY_EADDRNOTAVAIL;
	default:
		/* ferry's codes are -errno where an errno exists */
		if (err > 0 && ferryi_tcp_status_known(-err))
			return -err;
		return FERRY_EIO;
	}
}

static int tcp_scheme_match(const char *scheme)
{
	return scheme && strcmp(scheme, "tcp") == 0;
}

static void tcp_info(struct ferry_provider_info *info)
{
	info->status = 0;
	snprintf(info->detail, sizeof(info->detail), "sockets (always available)");
}

static int tcp_inst_init(struct ferryi_prov_inst *pi)
{
	struct ferryi_tcp_inst *ti = ferryi_inst_priv(pi);

	memset(ti, 0, sizeof(*ti));
	ti->pi = pi;
	ferryi_list_init(&ti->corked);
	/* FERRY_ZEROCOPY_MIN, FERRY_COMPRESS_ACCEPT: no ferry_config field yet. */
	ferryi_config_ext_init(&ti->ext);
	(void)ferryi_config_ext_from_env(&ti->ext); /* a bad value is logged and ignored */
	return 0;
}

static void tcp_inst_fini(struct ferryi_prov_inst *pi)
{
	struct ferryi_tcp_inst *ti = ferryi_inst_priv(pi);

	/* Every endpoint and listener is gone: the zstd contexts and spare buffers remain. */
	ferryi_zcodec_free(ti->z);
	ti->z = NULL;
	ferryi_tcp_stage_spares_free(ti);
}

static int tcp_mr_reg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	struct ferryi_tcp_mr *tm = ferryi_mr_priv(mr, pi);

	tm->zflags = 0; /* set by the rendezvous send that registered it, if one did */
	return 0;
}

static void tcp_mr_dereg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	(void)pi;
	(void)mr;
}

static int tcp_mr_pack(struct ferryi_prov_inst *pi, const struct ferry_mr *mr, void *buf,
		       size_t len)
{
	(void)pi;
	if (len < 8)
		return FERRY_ENOBUFS;
	ferryi_put_le64(buf, mr->key);
	return 8;
}

static int tcp_rkey_check(const void *key, size_t len)
{
	(void)key;
	return len == 8 ? 0 : FERRY_EPROTO;
}

const struct ferryi_provider ferryi_tcp_provider = {
	.name = "tcp",
	.id = FERRYI_PROV_TCP,
	.caps = 0,
	.rank = 0, /* the fallback: every other provider goes first */
	.eager_max = FERRYI_TCP_EAGER_MAX,
	.inst_size = sizeof(struct ferryi_tcp_inst),
	.ep_size = sizeof(struct ferryi_tcp_ep),
	.listener_size = sizeof(struct ferryi_tcp_lp),
	.mr_size = sizeof(struct ferryi_tcp_mr),
	.scheme_match = tcp_scheme_match,
	.info = tcp_info,
	.inst_init = tcp_inst_init,
	.inst_fini = tcp_inst_fini,
	.progress = ferryi_tcp_uncork_all,
	.listen = ferryi_tcp_listen,
	.listen_close = ferryi_tcp_listen_close,
	.connect = ferryi_tcp_connect,
	.ep_close = ferryi_tcp_ep_close,
	.send = ferryi_tcp_send,
	.write = ferryi_tcp_write,
	.read = ferryi_tcp_read,
	.mr_reg = tcp_mr_reg,
	.mr_dereg = tcp_mr_dereg,
	.mr_pack = tcp_mr_pack,
	.rkey_check = tcp_rkey_check,
};
