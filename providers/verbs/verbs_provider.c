/*
 * verbs_provider.c - the verbs provider's ops table, per-context instance (devices,
 * protection domains, completion channels, the rdma_cm event channel), progress and
 * the device listing behind ferry_provider_list().
 *
 * Devices come from rdma_get_devices(): those are the very ibv_contexts librdmacm
 * hands out in cm_id->verbs, so a QP created on an id can use our PD and CQs.
 */
#include "verbs.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

int ferryi_verbs_errno(int err)
{
	switch (err) {
	case 0: return 0;
	case EPERM: return FERRY_EPERM;
	case ENOENT: return FERRY_ENOENT;
	case EINTR: return FERRY_EINTR;
	case EAGAIN: return FERRY_EAGAIN;
	case ENOMEM: return FERRY_ENOMEM;
	case EACCES: return FERRY_EACCES;
	case EFAULT: return FERRY_EFAULT;
	case EBUSY: return FERRY_EBUSY;
	case EEXIST: return FERRY_EEXIST;
	case ENODEV: return FERRY_ENODEV;
	case EINVAL: return FERRY_EINVAL;
	case ERANGE: return FERRY_ERANGE;
	case ENOSYS: case EOPNOTSUPP: return FERRY_ENOSYS;
	case EPROTO: return FERRY_EPROTO;
	case EMSGSIZE: return FERRY_EMSGSIZE;
	case EADDRINUSE: return FERRY_EADDRINUSE;
	case EADDRNOTAVAIL: return FERRY_EADDRNOTAVAIL;
	case ENETUNREACH: case ENETDOWN: return FERRY_ENETUNREACH;
	case ECONNABORTED: return FERRY_ECONNABORTED;
	case ECONNRESET: return FERRY_ECONNRESET;
	case ENOBUFS: return FERRY_ENOBUFS;
	case ENOTCONN: return FERRY_ENOTCONN;
	case ETIMEDOUT: return FERRY_ETIMEDOUT;
	case ECONNREFUSED: return FERRY_ECONNREFUSED;
	case EHOSTUNREACH: return FERRY_EHOSTUNREACH;
	case ECANCELED: return FERRY_ECANCELED;
	default: return FERRY_EIO;
	}
}

/* ------------------------------------------------------------------ tunables */

static uint64_t tun_env(struct ferry_ctx *ctx, const char *name, uint64_t def, uint64_t min,
			uint64_t max)
{
	const char *s = getenv(name);
	char *end;
	if (!s || !*s)
		return def;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 0);
	if (errno || *end || v < min || v > max) {
		FERRYI_WARN(ctx, "%s=%s: not a number in [%" PRIu64 ", %" PRIu64 "]; using %" PRIu64,
			    name, s, min, max, def);
		return def;
	}
	return v;
}

static void tun_load(struct ferry_ctx *ctx, struct ferryi_verbs_tun *t)
{
	t->rx_depth = (uint32_t)tun_env(ctx, "FERRY_VERBS_RX_DEPTH", 32, 4, 4096);
	t->tx_bufs = (uint32_t)tun_env(ctx, "FERRY_VERBS_TX_BUFS", 32, 2, 4096);
	t->sq_depth = (uint32_t)tun_env(ctx, "FERRY_VERBS_SQ_DEPTH", 128, 8, 16384);
	t->eager = (uint32_t)tun_env(ctx, "FERRY_VERBS_EAGER", FERRYI_VERBS_EAGER_DEFAULT, 64,
				     FERRYI_VERBS_EAGER_MAX);
	/* >= 1 KiB: a rendezvous announce (rkey blob) must fit one fragment. */
	t->frag = (uint32_t)tun_env(ctx, "FERRY_VERBS_FRAG", 8192, 1024, 65536);
	t->inline_max = (uint32_t)tun_env(ctx, "FERRY_VERBS_INLINE", 256, 0, 4096);
	t->cq_size = (uint32_t)tun_env(ctx, "FERRY_VERBS_CQ_SIZE", 8192, 64, 1u << 22);
	t->signal = (uint32_t)tun_env(ctx, "FERRY_VERBS_SIGNAL", 0, 0, 4096);
	t->max_msg = tun_env(ctx, "FERRY_VERBS_MAX_MSG", 1u << 20, 4096, UINT32_MAX);
	t->mr_chunk = tun_env(ctx, "FERRY_VERBS_MR_CHUNK", 0, 0, UINT64_MAX);
	t->linger_ms = (uint32_t)tun_env(ctx, "FERRY_VERBS_LINGER_MS", 1000, 0, 600000);
	t->drain_ms = (uint32_t)tun_env(ctx, "FERRY_VERBS_DRAIN_MS", 2000, 10, 600000);
}

/* ------------------------------------------------------------------ devices */

struct ferryi_verbs_dev *ferryi_verbs_dev_find(struct ferryi_verbs_inst *vi,
					       struct ibv_context *verbs)
{
	for (int i = 0; i < vi->ndev; i++)
		if (vi->devs[i].usable && !vi->devs[i].fatal && vi->devs[i].verbs == verbs)
			return &vi->devs[i];
	/* Not the same context object (should not happen): match the device itself. */
	for (int i = 0; i < vi->ndev; i++)
		if (vi->devs[i].usable && !vi->devs[i].fatal && verbs &&
		    vi->devs[i].verbs->device == verbs->device)
			return &vi->devs[i];
	return NULL;
}

static int dev_open(struct ferryi_verbs_inst *vi, struct ferryi_verbs_dev *dev,
		    struct ibv_context *verbs)
{
	struct ferry_ctx *ctx = vi->pi->ctx;
	int rc;

	dev->vi = vi;
	dev->verbs = verbs;
	dev->ph.fd = -1;
	ferryi_list_init(&dev->cqs);
	ferryi_hmap_init(&dev->qps);
	snprintf(dev->name, sizeof(dev->name), "%s", ibv_get_device_name(verbs->device));
	rc = ibv_query_device(verbs, &dev->attr);
	if (rc) {
		FERRYI_WARN(ctx, "verbs: %s: ibv_query_device: %s", dev->name, strerror(rc));
		return ferryi_verbs_errno(rc);
	}
	dev->guid = be64toh(dev->attr.node_guid);
	dev->mr_chunk = dev->attr.max_mr_size ? dev->attr.max_mr_size : UINT64_MAX;
	dev->pd = ibv_alloc_pd(verbs);
	if (!dev->pd) {
		rc = errno ? errno : ENOMEM;
		FERRYI_WARN(ctx, "verbs: %s: ibv_alloc_pd: %s", dev->name, strerror(rc));
		return ferryi_verbs_errno(rc);
	}
	rc = ferryi_verbs_dev_cq_open(dev);
	if (rc < 0) {
		ibv_dealloc_pd(dev->pd);
		dev->pd = NULL;
		return rc;
	}
	rc = ferryi_verbs_dev_async_open(dev);
	if (rc < 0) {
		ferryi_verbs_dev_cq_close(dev);
		ibv_dealloc_pd(dev->pd);
		dev->pd = NULL;
		return rc;
	}
	dev->usable = true;
	FERRYI_DBG(ctx, "verbs: %s open: guid %016" PRIx64 ", max_mr_size %" PRIu64
		   ", max_qp_wr %d, max_sge %d, max_cqe %d", dev->name, dev->guid,
		   (uint64_t)dev->attr.max_mr_size, dev->attr.max_qp_wr, dev->attr.max_sge,
		   dev->attr.max_cqe);
	return 0;
}

static void dev_close(struct ferryi_verbs_dev *dev)
{
	struct ferry_ctx *ctx = dev->vi->pi->ctx;
	if (!dev->verbs)
		return;
	if (dev->qps.count)
		FERRYI_WARN(ctx, "verbs: %s: %zu QPs still open at close", dev->name,
			    dev->qps.count);
	ferryi_verbs_dev_async_close(dev);
	ferryi_verbs_dev_cq_close(dev);
	if (dev->pd) {
		int rc = ibv_dealloc_pd(dev->pd);
		if (rc)
			FERRYI_WARN(ctx, "verbs: %s: ibv_dealloc_pd: %s (registrations left?)",
				    dev->name, strerror(rc));
		dev->pd = NULL;
	}
	ferryi_hmap_fini(&dev->qps);
	dev->usable = false;
}

/* ------------------------------------------------------------------ instance */

static void verbs_inst_fini(struct ferryi_prov_inst *pi)
{
	struct ferryi_verbs_inst *vi = ferryi_verbs_inst(pi);

	for (int i = 0; i < vi->ndev; i++)
		dev_close(&vi->devs[i]);
	free(vi->devs);
	vi->devs = NULL;
	vi->ndev = 0;
	if (vi->rdevs) {
		rdma_free_devices(vi->rdevs);
		vi->rdevs = NULL;
	}
	if (vi->cm_polled) {
		ferryi_poll_del(pi->ctx, &vi->cm_ph);
		vi->cm_polled = false;
	}
	if (vi->cm_ch) {
		rdma_destroy_event_channel(vi->cm_ch);
		vi->cm_ch = NULL;
	}
}

static int verbs_inst_init(struct ferryi_prov_inst *pi)
{
	struct ferryi_verbs_inst *vi = ferryi_verbs_inst(pi);
	struct ferry_ctx *ctx = pi->ctx;
	int n = 0, usable = 0, rc;

	memset(vi, 0, sizeof(*vi));
	vi->pi = pi;
	vi->cm_ph.fd = -1;
	vi->instance = (uint32_t)ferryi_random64();
	tun_load(ctx, &vi->tun);

	vi->rdevs = rdma_get_devices(&n);
	if (!vi->rdevs || n <= 0) {
		FERRYI_INFO(ctx, "verbs: no RDMA device (rdma_get_devices found none)");
		rc = FERRY_ENODEV;
		goto err;
	}
	vi->cm_ch = rdma_create_event_channel();
	if (!vi->cm_ch) {
		FERRYI_INFO(ctx, "verbs: rdma_cm unavailable (/dev/infiniband/rdma_cm: %s; "
				 "is rdma_ucm loaded?)", strerror(errno));
		rc = FERRY_ENODEV;
		goto err;
	}
	int fl = fcntl(vi->cm_ch->fd, F_GETFL);
	if (fl < 0 || fcntl(vi->cm_ch->fd, F_SETFL, fl | O_NONBLOCK) < 0) {
		rc = ferryi_verbs_errno(errno);
		FERRYI_WARN(ctx, "verbs: rdma_cm channel non-blocking: %s", strerror(errno));
		goto err;
	}
	vi->devs = calloc((size_t)n, sizeof(*vi->devs));
	if (!vi->devs) {
		rc = FERRY_ENOMEM;
		goto err;
	}
	vi->ndev = n;
	vi->mr_chunk = vi->tun.mr_chunk ? vi->tun.mr_chunk : UINT64_MAX;
	for (int i = 0; i < n; i++) {
		vi->devs[i].index = i;
		if (dev_open(vi, &vi->devs[i], vi->rdevs[i]) == 0) {
			usable++;
			if (vi->devs[i].mr_chunk < vi->mr_chunk)
				vi->mr_chunk = vi->devs[i].mr_chunk;
		}
	}
	if (!usable) {
		FERRYI_INFO(ctx, "verbs: no usable RDMA device among %d", n);
		rc = FERRY_ENODEV;
		goto err;
	}
	/* Chunks of whole pages, so that a split never cuts a page between two ibv_mrs. */
	long page = sysconf(_SC_PAGESIZE);
	uint64_t pg = page > 0 ? (uint64_t)page : 4096;
	vi->mr_chunk -= vi->mr_chunk % pg;
	if (vi->mr_chunk < pg)
		vi->mr_chunk = pg;

	vi->cm_ph.fd = vi->cm_ch->fd;
	vi->cm_ph.events = EPOLLIN;
	vi->cm_ph.fn = ferryi_verbs_cm_event_fn;
	vi->cm_ph.cold = true; /* connection management only */
	vi->cm_ph.wakes_poller = true; /* connect requests, for applications that do not poll */
	rc = ferryi_poll_add(ctx, &vi->cm_ph);
	if (rc < 0)
		goto err;
	vi->cm_polled = true;
	FERRYI_DBG(ctx, "verbs: %d device(s) usable; rx depth %u x %u B, eager %u, sq %u",
		   usable, vi->tun.rx_depth, vi->tun.frag, vi->tun.eager, vi->tun.sq_depth);
	return 0;

err:
	verbs_inst_fini(pi);
	return rc;
}

static int verbs_progress(struct ferryi_prov_inst *pi)
{
	struct ferryi_verbs_inst *vi = ferryi_verbs_inst(pi);
	int n = 0;

	/* The application may sleep on the context fd after this pass. */
	if (ferryi_ctx_fd_exported(pi->ctx))
		return ferryi_verbs_cq_arm_all(pi);

	for (int i = 0; i < vi->ndev; i++) {
		struct ferryi_verbs_dev *dev = &vi->devs[i];
		struct ferryi_list_node *node, *tmp;
		if (!dev->usable)
			continue;
		ferryi_list_foreach_safe(&dev->cqs, node, tmp) {
			struct ferryi_verbs_cq *vcq =
				ferryi_container_of(node, struct ferryi_verbs_cq, link);
			n += ferryi_verbs_cq_poll(vcq);
		}
	}
	return n;
}

/* ------------------------------------------------------------------ info */

static void info_append(char *buf, size_t len, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void info_append(char *buf, size_t len, const char *fmt, ...)
{
	size_t used = strlen(buf);
	va_list ap;
	if (used + 1 >= len)
		return;
	va_start(ap, fmt);
	vsnprintf(buf + used, len - used, fmt, ap);
	va_end(ap);
}

static const char *port_state(enum ibv_port_state st)
{
	switch (st) {
	case IBV_PORT_DOWN: return "DOWN";
	case IBV_PORT_INIT: return "INIT";
	case IBV_PORT_ARMED: return "ARMED";
	case IBV_PORT_ACTIVE: return "ACTIVE";
	case IBV_PORT_ACTIVE_DEFER: return "ACTIVE_DEFER";
	default: return "UNKNOWN";
	}
}

/* The netdev behind a port: RoCE names it per GID, IPoIB sits under device/net. */
static int port_netdev(const char *dev, int port, char *out, size_t len)
{
	char path[256];
	FILE *f;
	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/ports/%d/gid_attrs/ndevs/0", dev,
		 port);
	f = fopen(path, "r");
	if (f) {
		char name[IF_NAMESIZE + 2] = "";
		bool ok = fgets(name, sizeof(name), f) != NULL;
		fclose(f);
		name[strcspn(name, "\n")] = '\0';
		if (ok && name[0]) {
			snprintf(out, len, "%s", name);
			return 0;
		}
	}
	snprintf(path, sizeof(path), "/sys/class/infiniband/%s/device/net", dev);
	DIR *d = opendir(path);
	if (d) {
		struct dirent *e;
		while ((e = readdir(d))) {
			if (e->d_name[0] == '.')
				continue;
			size_t n = strnlen(e->d_name, len - 1);
			memcpy(out, e->d_name, n);
			out[n] = '\0';
			closedir(d);
			return 0;
		}
		closedir(d);
	}
	return -1;
}

static void info_netdev_ips(const char *netdev, char *buf, size_t len)
{
	struct ifaddrs *ifa, *p;
	int n = 0;
	if (getifaddrs(&ifa) < 0)
		return;
	for (p = ifa; p; p = p->ifa_next) {
		char ip[INET6_ADDRSTRLEN];
		if (!p->ifa_addr || strcmp(p->ifa_name, netdev) != 0)
			continue;
		if (p->ifa_addr->sa_family == AF_INET)
			inet_ntop(AF_INET, &((struct sockaddr_in *)(void *)p->ifa_addr)->sin_addr,
				  ip, sizeof(ip));
		else if (p->ifa_addr->sa_family == AF_INET6 &&
			 !IN6_IS_ADDR_LINKLOCAL(&((struct sockaddr_in6 *)(void *)p->ifa_addr)->sin6_addr))
			inet_ntop(AF_INET6,
				  &((struct sockaddr_in6 *)(void *)p->ifa_addr)->sin6_addr, ip,
				  sizeof(ip));
		else
			continue;
		info_append(buf, len, "%s%s", n++ ? "," : " ", ip);
	}
	if (!n)
		info_append(buf, len, " (no IP)");
	freeifaddrs(ifa);
}

static void verbs_info(struct ferry_provider_info *info)
{
	struct ibv_device **list;
	int n = 0, active = 0;

	info->detail[0] = '\0';
	list = ibv_get_device_list(&n);
	if (!list || n == 0) {
		info->status = FERRY_ENODEV;
		snprintf(info->detail, sizeof(info->detail), "no RDMA device");
		if (list)
			ibv_free_device_list(list);
		return;
	}
	for (int i = 0; i < n; i++) {
		const char *name = ibv_get_device_name(list[i]);
		struct ibv_context *vctx = ibv_open_device(list[i]);
		struct ibv_device_attr da;
		if (!vctx) {
			info_append(info->detail, sizeof(info->detail), "%s%s (cannot open: %s)",
				    i ? "; " : "", name, strerror(errno));
			continue;
		}
		if (ibv_query_device(vctx, &da)) {
			ibv_close_device(vctx);
			continue;
		}
		for (int port = 1; port <= da.phys_port_cnt; port++) {
			struct ibv_port_attr pa;
			char nd[IF_NAMESIZE + 1];
			if (ibv_query_port(vctx, (uint8_t)port, &pa))
				continue;
			active += pa.state == IBV_PORT_ACTIVE;
			info_append(info->detail, sizeof(info->detail), "%s%s port %d %s",
				    strlen(info->detail) ? "; " : "", name, port,
				    port_state(pa.state));
			if (port_netdev(name, port, nd, sizeof(nd)) == 0) {
				info_append(info->detail, sizeof(info->detail), " %s", nd);
				info_netdev_ips(nd, info->detail, sizeof(info->detail));
			}
		}
		ibv_close_device(vctx);
	}
	ibv_free_device_list(list);

	struct rdma_event_channel *ch = rdma_create_event_channel();
	if (!ch) {
		info->status = FERRY_ENODEV;
		info_append(info->detail, sizeof(info->detail),
			    "; rdma_cm unavailable (%s: is rdma_ucm loaded?)", strerror(errno));
		return;
	}
	rdma_destroy_event_channel(ch);
	info->status = active ? 0 : FERRY_ENODEV;
	if (!active)
		info_append(info->detail, sizeof(info->detail), "; no ACTIVE port");
}

static int verbs_scheme_match(const char *scheme)
{
	return strcmp(scheme, "verbs") == 0;
}

const struct ferryi_provider ferryi_verbs_provider = {
	.name = "verbs",
	.id = FERRYI_PROV_VERBS,
	.caps = FERRYI_CAP_RDMA | FERRYI_CAP_NEED_LOCAL_MR,
	.rank = 100,
	.eager_max = FERRYI_VERBS_EAGER_MAX,
	.inst_size = sizeof(struct ferryi_verbs_inst),
	.ep_size = sizeof(struct ferryi_verbs_ep),
	.listener_size = sizeof(struct ferryi_verbs_lp),
	.mr_size = sizeof(struct ferryi_verbs_mr),
	.scheme_match = verbs_scheme_match,
	.info = verbs_info,
	.inst_init = verbs_inst_init,
	.inst_fini = verbs_inst_fini,
	.progress = verbs_progress,
	.prepare_sleep = ferryi_verbs_cq_arm_all,
	.listen = ferryi_verbs_listen,
	.listen_close = ferryi_verbs_listen_close,
	.connect = ferryi_verbs_connect,
	.ep_close = ferryi_verbs_ep_close,
	.send = ferryi_verbs_send,
	.write = ferryi_verbs_write,
	.read = ferryi_verbs_read,
	.mr_reg = ferryi_verbs_mr_reg,
	.mr_dereg = ferryi_verbs_mr_dereg,
	.mr_pack = ferryi_verbs_mr_pack,
	.rkey_check = ferryi_verbs_rkey_check,
};
