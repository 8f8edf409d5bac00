/*
 * ofi_provider.c - the libfabric provider's ops table, context instance and info().
 *
 * One ferry provider, "ofi", serves every libfabric provider: ofi+tcp://, ofi+shm://,
 * ofi+verbs://, any other ofi+NAME:// (NAME is passed to fi_getinfo as prov_name), and
 * ofi:// (libfabric's own first choice). Per context, each libfabric provider in use
 * is a "dom": one fabric and one domain, shared by the ports (fabric endpoints) that
 * serve listeners and connects. tcp, shm and verbs are opened when the context opens,
 * wherever they work, so that a region registered before the first connect already
 * carries their keys in its rkey; other names open on first use.
 *
 * Capabilities: caps are static in the ops table, but whether a fabric is RDMA or
 * needs local registrations (FI_MR_LOCAL) is known only per dom at run time, so the
 * table claims neither: ofi+tcp and ofi+shm must not pass for RDMA in the fallback
 * policy, and local registrations are made by ofi_ep.c for the one dom that needs them.
 */
#define _GNU_SOURCE
#include "ofi.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The fabrics opened with every context, in this order. */
static const char *const ofi_eager_sels[] = { "tcp", "shm", "verbs" };

struct fi_info *ofi_hints(const char *prov_name)
{
	struct fi_info *h = fi_allocinfo();
	if (!h)
		return NULL;
	h->caps = FI_MSG | FI_RMA;
	h->mode = 0; /* no FI_CONTEXT: our contexts are not fi_context blocks */
	h->ep_attr->type = FI_EP_RDM;
	h->domain_attr->threading = FI_THREAD_DOMAIN; /* all calls under the ctx lock */
	h->domain_attr->mr_mode = FI_MR_LOCAL | FI_MR_VIRT_ADDR | FI_MR_ALLOCATED |
				  FI_MR_PROV_KEY | FI_MR_ENDPOINT | FI_MR_RAW;
	/* Sends of one connection must arrive in order. No RMA ordering is asked:
	 * shm then keeps its single-copy RMA path. */
	h->tx_attr->msg_order = FI_ORDER_SAS;
	h->rx_attr->msg_order = FI_ORDER_SAS;
	if (prov_name && prov_name[0]) {
		h->fabric_attr->prov_name = strdup(prov_name);
		if (!h->fabric_attr->prov_name) {
			fi_freeinfo(h);
			return NULL;
		}
	}
	return h;
}

static int ofi_scheme_match(const char *scheme)
{
	if (!scheme)
		return 0;
	if (strcmp(scheme, "ofi") == 0)
		return 1;
	return strncmp(scheme, "ofi+", 4) == 0 && scheme[4] != '\0';
}

/* ------------------------------------------------------------------ doms */

static int ofi_dom_open(struct ofi_inst *oi, const char *sel, struct fi_info *info,
			struct ofi_dom **out)
{
	struct ferry_ctx *ctx = oi->pi->ctx;
	struct ofi_dom *dom;
	int rc;

	if (oi->ndoms >= OFI_MAX_DOMS)
		return FERRY_ENOBUFS;
	dom = calloc(1, sizeof(*dom));
	if (!dom)
		return FERRY_ENOMEM;
	dom->inst = oi;
	snprintf(dom->sel, sizeof(dom->sel), "%s", sel);
	snprintf(dom->prov_name, sizeof(dom->prov_name), "%s", info->fabric_attr->prov_name);
	ferryi_list_init(&dom->ports);
	dom->info = fi_dupinfo(info);
	if (!dom->info) {
		rc = FERRY_ENOMEM;
		goto err_free;
	}
	rc = fi_fabric(dom->info->fabric_attr, &dom->fabric, NULL);
	if (rc) {
		FERRYI_INFO(ctx, "ofi: %s: fi_fabric: %s", dom->prov_name, fi_strerror(-rc));
		rc = ofi_fi_err(-rc);
		goto err_info;
	}
	rc = fi_domain(dom->fabric, dom->info, &dom->domain, NULL);
	if (rc) {
		FERRYI_INFO(ctx, "ofi: %s: fi_domain: %s", dom->prov_name, fi_strerror(-rc));
		rc = ofi_fi_err(-rc);
		goto err_fabric;
	}
	dom->mr_mode = dom->info->domain_attr->mr_mode;
	/* FI_MR_BASIC / FI_MR_SCALABLE of old providers, spelled as bits. */
	if (dom->mr_mode == FI_MR_BASIC)
		dom->mr_mode = FI_MR_VIRT_ADDR | FI_MR_ALLOCATED | FI_MR_PROV_KEY;
	else if (dom->mr_mode == FI_MR_SCALABLE)
		dom->mr_mode = 0;
	dom->key_size = dom->info->domain_attr->mr_key_size;
	dom->inject = dom->info->tx_attr->inject_size;
	dom->max_msg = dom->info->ep_attr->max_msg_size;
	if (dom->max_msg == 0 || dom->max_msg > OFI_RMA_PIECE_MAX)
		dom->max_msg = OFI_RMA_PIECE_MAX;
	dom->is_shm = strcmp(dom->prov_name, "shm") == 0;
	dom->is_verbs = strncmp(dom->prov_name, "verbs", 5) == 0;
	/*
	 * tcp and verbs carry everything to a peer in one ordered stream (rxm's tcp
	 * connection, an RC queue pair whose responder serves requests in order): a
	 * probe or its answer sent behind a window of pieces waits for all their data.
	 * 4 x 4 MiB took over 200 ms on soft-RoCE under emulation and on tcp under
	 * ThreadSanitizer (fast probe settings call that silence death: the 256 MiB
	 * send of msg.long_transfer_probes failed every time on ofi+tcp under TSan,
	 * three probes queued behind the data); 4 x 1 MiB still fills real links.
	 * shm copies a piece inside the post and has no stream to queue behind.
	 */
	dom->rma_piece = dom->is_shm ? OFI_RMA_PIECE : OFI_RMA_PIECE_STREAM;
	if (dom->rma_piece > dom->max_msg)
		dom->rma_piece = dom->max_msg;
	/*
	 * On tcp, pieces of several ops in flight to one peer at once cost bandwidth:
	 * ferry_perf send_bw 1 MiB with 128 outstanding (up to 32 rendezvous reads at
	 * once) made a median 4.5 GB/s, with at most 2 pieces per peer 5.8 (4: 5.7, 1:
	 * 4.0; 5 runs each, alternated; docs/BENCHMARKS.md). Not on shm (each piece is
	 * a copy inside the post) nor on verbs (an RC responder pipelines reads).
	 */
	dom->rma_peer_max = dom->is_shm || dom->is_verbs ? UINT_MAX : OFI_RMA_TCP_PEER;
	dom->wait_fd = oi->wait_fd; /* until a CQ says otherwise */
	/* A write completes when the data is at the target, as on verbs and ferry's tcp;
	 * shm's single-copy writes are synchronous already. */
	dom->write_dc = !dom->is_shm;
	do
		dom->ksid = (uint32_t)ferryi_random64();
	while (dom->ksid == 0);
	dom->idx = (uint8_t)oi->ndoms;
	oi->doms[oi->ndoms++] = dom;
	rc = ofi_mr_add_dom(oi, dom);
	if (rc < 0) {
		oi->doms[--oi->ndoms] = NULL;
		goto err_domain;
	}
	FERRYI_DBG(ctx, "ofi: opened %s (fabric %s, domain %s, mr_mode 0x%llx, inject %zu, "
			"max_msg %llu)",
		   dom->prov_name, dom->info->fabric_attr->name, dom->info->domain_attr->name,
		   (unsigned long long)dom->mr_mode, dom->inject,
		   (unsigned long long)dom->max_msg);
	*out = dom;
	return 0;

err_domain:
	fi_close(&dom->domain->fid);
err_fabric:
	fi_close(&dom->fabric->fid);
err_info:
	fi_freeinfo(dom->info);
err_free:
	free(dom);
	return rc;
}

static void ofi_dom_close(struct ofi_inst *oi, struct ofi_dom *dom)
{
	struct ferryi_list_node *n;

	/* Ports still open here belong to endpoints the core gave up on. */
	while ((n = ferryi_list_first(&dom->ports)))
		ofi_port_destroy(ferryi_container_of(n, struct ofi_port, link));
	ofi_mr_drop_dom(oi, dom);
	if (dom->leaked) {
		ofi_keep_open(dom);
		/* Endpoints left open keep their domain and fabric (see ofi_port_destroy). */
		FERRYI_WARN(oi->pi->ctx, "ofi: %s: %u fabric endpoints left open at context "
					 "destroy", dom->prov_name, dom->leaked);
		return;
	}
	fi_close(&dom->domain->fid);
	fi_close(&dom->fabric->fid);
	fi_freeinfo(dom->info);
	free(dom);
}

/* Opens the dom for a libfabric provider name; 0 and *out, or an error. */
static int ofi_dom_try(struct ofi_inst *oi, const char *sel, struct ofi_dom **out)
{
	struct fi_info *hints = ofi_hints(sel), *info = NULL;
	int rc;

	if (!hints)
		return FERRY_ENOMEM;
	rc = fi_getinfo(OFI_API_VERSION, NULL, NULL, 0, hints, &info);
	fi_freeinfo(hints);
	if (rc) {
		FERRYI_DBG(oi->pi->ctx, "ofi: %s not usable: fi_getinfo: %s", sel[0] ? sel : "default",
			   fi_strerror(-rc));
		return rc == -FI_ENODATA ? FERRY_ENODEV : ofi_fi_err(-rc);
	}
	rc = ofi_dom_open(oi, sel, info, out);
	fi_freeinfo(info);
	return rc;
}

struct ofi_dom *ofi_dom_by_scheme(struct ofi_inst *oi, const char *scheme)
{
	const char *sel;
	struct ofi_dom *dom = NULL;

	if (strcmp(scheme, "ofi") == 0)
		return oi->def;
	if (strncmp(scheme, "ofi+", 4) != 0 || !scheme[4])
		return NULL;
	sel = scheme + 4;
	for (int i = 0; i < oi->ndoms; i++)
		if (strcmp(oi->doms[i]->sel, sel) == 0)
			return oi->doms[i];
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(ofi_eager_sels); i++)
		if (strcmp(ofi_eager_sels[i], sel) == 0)
			return NULL; /* tried at init: not usable here */
	/* Another libfabric provider: open it now (regions registered before carry no
	 * key for it in rkeys packed before). */
	if (ofi_dom_try(oi, sel, &dom) < 0)
		return NULL;
	return dom;
}

/* ------------------------------------------------------------------ instance */

static int ofi_inst_init(struct ferryi_prov_inst *pi)
{
	struct ofi_inst *oi = ofi_inst(pi);
	struct ferry_ctx *ctx = pi->ctx;
	const char *env;
	struct ofi_dom *dom;

	const char *why;
	if (ofi_lib_open(&why) < 0) {
		if (ofi_lib_chosen())
			FERRYI_WARN(ctx, "ofi: FERRY_OFI_LIBRARY: %s", why);
		else
			FERRYI_INFO(ctx, "ofi: %s", why);
		return FERRY_ENODEV;
	}
	oi->pi = pi;
	oi->db_fd = -1;
	oi->wake_fd = -1;
	ferryi_list_init(&oi->mrs);
	ferryi_hmap_init(&oi->conns);
	env = getenv("FERRY_OFI_RMA_CHECK");
	oi->rma_check = !(env && strcmp(env, "0") == 0);
	/*
	 * A CQ with a wait fd lets threads sleep on it, but libfabric 1.17's tcp then
	 * signals it with a write on every send and a read on every CQ read: two system
	 * calls per message, 1.3 us of a 10 us ping-pong on loopback. Applications that
	 * only busy-poll can do without (sleepers then poll the CQ every millisecond).
	 */
	env = getenv("FERRY_OFI_WAIT_FD");
	oi->wait_fd = !(env && strcmp(env, "0") == 0);
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(ofi_eager_sels); i++)
		(void)ofi_dom_try(oi, ofi_eager_sels[i], &dom);

	/* ofi://: libfabric's own first choice, shared with a dom already open. */
	struct fi_info *hints = ofi_hints(NULL), *info = NULL;
	if (hints && fi_getinfo(OFI_API_VERSION, NULL, NULL, 0, hints, &info) == 0) {
		for (int i = 0; i < oi->ndoms; i++)
			if (strcmp(oi->doms[i]->prov_name, info->fabric_attr->prov_name) == 0)
				oi->def = oi->doms[i];
		if (!oi->def && ofi_dom_open(oi, "", info, &dom) == 0)
			oi->def = dom;
		fi_freeinfo(info);
	}
	if (hints)
		fi_freeinfo(hints);

	if (oi->ndoms == 0) {
		FERRYI_INFO(ctx, "ofi: no usable libfabric provider (tcp, shm, verbs)");
		ferryi_hmap_fini(&oi->conns);
		return FERRY_ENODEV;
	}
	return 0;
}

static void ofi_inst_fini(struct ferryi_prov_inst *pi)
{
	struct ofi_inst *oi = ofi_inst(pi);

	for (int i = oi->ndoms - 1; i >= 0; i--) {
		ofi_dom_close(oi, oi->doms[i]);
		oi->doms[i] = NULL;
	}
	oi->ndoms = 0;
	ferryi_hmap_fini(&oi->conns);
	if (oi->db_fd >= 0)
		close(oi->db_fd);
	oi->db_fd = -1;
	ofi_wake_close(oi);
}

static int ofi_progress_all(struct ferryi_prov_inst *pi, bool arm)
{
	struct ofi_inst *oi = ofi_inst(pi);
	int events = 0;

	for (int i = 0; i < oi->ndoms; i++) {
		struct ferryi_list *ports = &oi->doms[i]->ports;
		struct ferryi_list_node *n = ferryi_list_first(ports);
		struct ofi_port *port = n ? ferryi_container_of(n, struct ofi_port, link) : NULL;
		/* A port may close while another is driven (its last endpoint goes): the
		 * next one is held while the current one runs. */
		if (port)
			port->refs++;
		while (port) {
			struct ofi_port *next = NULL;
			if (port->link.next && port->link.next != &ports->head) {
				next = ferryi_container_of(port->link.next, struct ofi_port, link);
				next->refs++;
			}
			events += ofi_port_progress(port, arm);
			ofi_port_put(port);
			port = next;
		}
	}
	return events;
}

/* A context being destroyed waits for nobody's reads: no progress follows it. */
static void ofi_end_all_lingering(struct ofi_inst *oi)
{
	for (int i = 0; i < oi->ndoms; i++) {
		struct ferryi_list_node *pn, *pt;
		ferryi_list_foreach_safe(&oi->doms[i]->ports, pn, pt) {
			struct ofi_port *port = ferryi_container_of(pn, struct ofi_port, link);
			struct ferryi_list_node *n, *t;
			port->refs++;
			ferryi_list_foreach_safe(&port->peers, n, t) {
				struct ofi_peer *peer = ferryi_container_of(n, struct ofi_peer, link);
				if (!ferryi_list_empty(&peer->lingering))
					ofi_peer_end_lingering(port, peer, true, true);
			}
			ofi_port_put(port);
		}
	}
}

static int ofi_progress(struct ferryi_prov_inst *pi)
{
	if (ferryi_ctx_destroying(pi->ctx))
		ofi_end_all_lingering(ofi_inst(pi));
	/* Busy: shm peers stop ringing us once nobody sleeps (ofi_cq.c). */
	ofi_wake_sleepy(ofi_inst(pi), ferryi_ctx_may_sleep(pi->ctx));
	return ofi_progress_all(pi, ferryi_ctx_fd_exported(pi->ctx));
}

static int ofi_prepare_sleep(struct ferryi_prov_inst *pi)
{
	ofi_wake_sleepy(ofi_inst(pi), true); /* before the last look at the CQs */
	return ofi_progress_all(pi, true);
}

/* ------------------------------------------------------------------ info */

static void ofi_info(struct ferry_provider_info *info)
{
	char *p = info->detail;
	size_t left = sizeof(info->detail);
	int usable = 0;
	const char *why;

	if (ofi_lib_open(&why) < 0) {
		snprintf(info->detail, sizeof(info->detail), "%s", why);
		info->status = FERRY_ENODEV;
		return;
	}
	for (size_t i = 0; i < FERRYI_ARRAY_LEN(ofi_eager_sels); i++) {
		const char *sel = ofi_eager_sels[i];
		struct fi_info *hints = ofi_hints(sel), *fi = NULL;
		int rc = hints ? fi_getinfo(OFI_API_VERSION, NULL, NULL, 0, hints, &fi) : -FI_ENOMEM;
		int n;

		if (rc == 0) {
			usable++;
			n = snprintf(p, left, "%sofi+%s: ok (%s, %s)", i ? "; " : "", sel,
				     fi->fabric_attr->prov_name, fi->domain_attr->name);
		} else if (rc == -FI_ENODATA) {
			n = snprintf(p, left, "%sofi+%s: no (%s)", i ? "; " : "", sel,
				     strcmp(sel, "verbs") == 0 ? "no RDMA device" :
				     "libfabric has no such provider with FI_MSG|FI_RMA RDM");
		} else {
			n = snprintf(p, left, "%sofi+%s: no (%s)", i ? "; " : "", sel,
				     fi_strerror(-rc));
		}
		if (n > 0 && (size_t)n < left) {
			p += n;
			left -= (size_t)n;
		}
		if (fi)
			fi_freeinfo(fi);
		if (hints)
			fi_freeinfo(hints);
	}
	info->status = usable ? 0 : FERRY_ENODEV;
}

const struct ferryi_provider ferryi_ofi_provider = {
	.name = "ofi",
	.id = FERRYI_PROV_OFI,
	.caps = 0, /* see the comment at the top of this file */
	.rank = 50, /* between tcp (0) and verbs; auto:// skips ofi anyway */
	.eager_max = OFI_EAGER_MAX,
	.inst_size = sizeof(struct ofi_inst),
	.ep_size = sizeof(struct ofi_ep),
	.listener_size = sizeof(struct ofi_port *),
	.mr_size = sizeof(struct ofi_mr),
	.open_on_use = true, /* loading libfabric costs ~0.35 s (libinfinipath sleeps) */
	.scheme_match = ofi_scheme_match,
	.info = ofi_info,
	.inst_init = ofi_inst_init,
	.inst_fini = ofi_inst_fini,
	.progress = ofi_progress,
	.prepare_sleep = ofi_prepare_sleep,
	.listen = ofi_listen,
	.listen_close = ofi_listen_close,
	.connect = ofi_connect,
	.ep_close = ofi_ep_close,
	.send = ofi_send,
	.write = ofi_write,
	.read = ofi_read,
	.rndv_grant = ofi_rndv_grant,
	.rndv_release = ofi_rndv_release,
	.mr_reg = ofi_mr_reg,
	.mr_dereg = ofi_mr_dereg,
	.mr_pack = ofi_mr_pack,
	.rkey_check = ofi_rkey_check,
};
