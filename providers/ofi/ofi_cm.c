/*
 * ofi_cm.c - connection setup over RDM: the hello handshake, connect and listen, and
 * the probe that turns a silently retried connect into ECONNREFUSED.
 *
 * Hello (CONNREQ / CONNACK payload), little-endian:
 *   0 u32 "FOFI"   4 u16 wire version   6 u16 address length   8 u64 connection id
 *   16 u32 credits granted   20 u32 key space id
 *   24 ferryi_peer_info: u32 version, u32 features, u32 idle ms, u32 probe ms,
 *      u64 max frame, u64 eager max, u64 eager byte credit
 *   64 shm: the sender context's may-sleep page (ofi_cq.c): u32 pid, u32 memfd
 *      (0xffffffff: none), u64 token (0: none)
 *   80 the sender's fabric address (CONNREQ only)
 */
#define _GNU_SOURCE
#include "ofi.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#define OFI_HELLO_MAGIC 0x49464f46u /* "FOFI" */
#define OFI_WIRE_VERSION 3 /* 3: granted rendezvous reads, OFI_K_READS_OVER */
#define OFI_HELLO_LEN 80

struct ofi_hello {
	uint64_t conn;
	uint32_t credits, ksid;
	struct ferryi_peer_info info;
	uint32_t wake_pid, wake_fd;
	uint64_t wake_token;
	size_t addrlen;
	const uint8_t *addr;
};

/*
 * Hello (CONNREQ / CONNACK payload), little-endian:
 *   0 u32 "FOFI"   4 u16 wire version   6 u16 address length   8 u64 connection id
 *   16 u32 credits granted   20 u32 key space id
 *   24 ferryi_peer_info: u32 version, u32 features, u32 idle ms, u32 probe ms,
 *      u64 max frame, u64 eager max, u64 eager byte credit
 *   64 shm: the sender context's may-sleep page (ofi_cq.c): u32 pid, u32 memfd
 *      (0xffffffff: none), u64 token (0: none)
 *   80 the sender's fabric address (CONNREQ only)
 */
static size_t ofi_hello_put(uint8_t *b, const struct ofi_hello *h)
{
	ferryi_put_le32(b, OFI_HELLO_MAGIC);
	ferryi_put_le16(b + 4, OFI_WIRE_VERSION);
	ferryi_put_le16(b + 6, (uint16_t)h->addrlen);
	ferryi_put_le64(b + 8, h->conn);
	ferryi_put_le32(b + 16, h->credits);
	ferryi_put_le32(b + 20, h->ksid);
	ferryi_put_le32(b + 24, h->info.version);
	ferryi_put_le32(b + 28, h->info.features);
	ferryi_put_le32(b + 32, h->info.idle_timeout_ms);
	ferryi_put_le32(b + 36, h->info.probe_interval_ms);
	ferryi_put_le64(b + 40, h->info.max_frame);
	ferryi_put_le64(b + 48, h->info.eager_max);
	ferryi_put_le64(b + 56, h->info.rx_credit);
	ferryi_put_le32(b + 64, h->wake_pid);
	ferryi_put_le32(b + 68, h->wake_fd);
	ferryi_put_le64(b + 72, h->wake_token);
	if (h->addrlen)
		memcpy(b + OFI_HELLO_LEN, h->addr, h->addrlen);
	return OFI_HELLO_LEN + h->addrlen;
}

static int ofi_hello_get(const uint8_t *b, size_t len, struct ofi_hello *h)
{
	if (len < OFI_HELLO_LEN || ferryi_get_le32(b) != OFI_HELLO_MAGIC)
		return FERRY_EPROTO;
	if (ferryi_get_le16(b + 4) != OFI_WIRE_VERSION)
		return FERRY_EVERSION;
	h->addrlen = ferryi_get_le16(b + 6);
	if (h->addrlen > OFI_ADDR_MAX || h->addrlen != len - OFI_HELLO_LEN)
		return FERRY_EPROTO;
	h->conn = ferryi_get_le64(b + 8);
	h->credits = ferryi_get_le32(b + 16);
	h->ksid = ferryi_get_le32(b + 20);
	h->info.version = ferryi_get_le32(b + 24);
	h->info.features = ferryi_get_le32(b + 28);
	h->info.idle_timeout_ms = ferryi_get_le32(b + 32);
	h->info.probe_interval_ms = ferryi_get_le32(b + 36);
	h->info.max_frame = ferryi_get_le64(b + 40);
	h->info.eager_max = ferryi_get_le64(b + 48);
	h->info.rx_credit = ferryi_get_le64(b + 56);
	h->wake_pid = ferryi_get_le32(b + 64);
	h->wake_fd = ferryi_get_le32(b + 68);
	h->wake_token = ferryi_get_le64(b + 72);
	h->addr = b + OFI_HELLO_LEN;
	if (h->conn == 0 || h->credits == 0 || h->credits > 4096)
		return FERRY_EPROTO;
	return 0;
}

/* Where shm peers find our may-sleep word. */
static void ofi_hello_wake(const struct ofi_port *port, struct ofi_hello *h)
{
	const struct ofi_inst *oi = port->dom->inst;
	h->wake_fd = UINT32_MAX;
	if (!port->dom->is_shm || !oi->wake)
		return;
	h->wake_pid = (uint32_t)getpid();
	h->wake_fd = (uint32_t)oi->wake_fd;
	h->wake_token = oi->wake->token;
}

/*
 * rxm over tcp retries a refused connection silently: sends just keep returning
 * -FI_EAGAIN, and the connect would end in a timeout instead of ECONNREFUSED. When a
 * connect request is held up like that, one plain TCP connect to the same address
 * tells whether anybody listens there (the listener's rxm drops the empty connection).
 * rxm over verbs does the same; its probe is an rdma_cm request (ofi_rdmacm.c).
 */
void ofi_probe_stop(struct ofi_ep *oep)
{
	if (oep->cmprobe) {
		ofi_cmprobe_stop(oep);
		return;
	}
	if (oep->probe.fd < 0)
		return;
	ferryi_poll_del(oep->ep->ctx, &oep->probe);
	close(oep->probe.fd);
	oep->probe.fd = -1;
}

static void ofi_probe_result(struct ofi_ep *oep, int err)
{
	ofi_probe_stop(oep);
	if (oep->lingering) {
		ofi_ep_linger_probed(oep, err);
		return;
	}
	if (oep->state != OFI_EP_REQ_SENT || oep->closing)
		return;
	if (err == ECONNREFUSED)
		ferryi_ep_failed(oep->ep, FERRY_ECONNREFUSED, "nobody listens at that address");
	else if (err == EHOSTUNREACH || err == ENETUNREACH)
		ferryi_ep_failed(oep->ep, FERRY_EHOSTUNREACH, "host unreachable");
}

static void ofi_probe_ready(struct ferryi_poll_handle *h, uint32_t events)
{
	struct ofi_ep *oep = ferryi_container_of(h, struct ofi_ep, probe);
	int err = 0;
	socklen_t len = sizeof(err);
	(void)events;
	if (getsockopt(h->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	ofi_probe_result(oep, err);
}

/* One plain TCP connect to the peer's fabric address; the result comes to
 * ofi_probe_result. Only for tcp (shm has no address to probe, verbs its own). */
static void ofi_probe_tcp(struct ofi_ep *oep)
{
	const struct sockaddr *sa = (const struct sockaddr *)oep->peer->addr;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int err;
	if (fd < 0) {
		err = errno;
	} else if (connect(fd, sa, (socklen_t)oep->peer->addrlen) == 0) {
		err = 0;
		close(fd);
	} else if (errno != EINPROGRESS) {
		err = errno;
		close(fd);
	} else {
		oep->probe.fd = fd;
		oep->probe.events = EPOLLOUT;
		oep->probe.fn = ofi_probe_ready;
		oep->probe.cold = true; /* connection set-up only */
		if (ferryi_poll_add(oep->ep->ctx, &oep->probe) == 0)
			return;
		err = errno ? errno : ENOMEM;
		close(fd);
	}
	oep->probe.fd = -1;
	ofi_probe_result(oep, err);
}

static bool ofi_probe_inet(const struct ofi_ep *oep)
{
	const struct sockaddr *sa = (const struct sockaddr *)oep->peer->addr;
	return !oep->port->dom->is_shm && oep->peer->addrlen >= sizeof(struct sockaddr_in) &&
	       (sa->sa_family == AF_INET || sa->sa_family == AF_INET6);
}

void ofi_probe_start(struct ofi_ep *oep)
{
	if (oep->probed || !ofi_probe_inet(oep))
		return;
	oep->probed = true;
	if (oep->port->dom->is_verbs) {
		/* rdma_cm, not TCP: the listener's port lives in the RDMA port space. */
		const struct sockaddr *sa = (const struct sockaddr *)oep->peer->addr;
		ofi_cmprobe_start(oep, sa, oep->peer->addrlen);
		return;
	}
	ofi_probe_tcp(oep);
}

/*
 * An endpoint that failed while the peer's reads of our memory were granted or under
 * way waits for the peer's READS_OVER (ofi_ep_close). rxm reports a peer that died
 * only as transfers it cancelled, which it also does on connections that still carry
 * read responses, so that is no proof; a refused connect to the peer's fabric address
 * is: its fabric endpoint, which alone could read our memory, is closed. On tcp only;
 * the result goes to ofi_ep_linger_probed.
 */
void ofi_linger_probe_start(struct ofi_ep *oep)
{
	if (ofi_probe_inet(oep) && !oep->port->dom->is_verbs)
		ofi_probe_tcp(oep);
}

static void ofi_peer_uri(struct ofi_port *port, const uint8_t *addr, size_t len, char *uri,
			 size_t ulen)
{
	struct sockaddr_storage ss;
	if (port->dom->is_shm) {
		char name[OFI_ADDR_MAX + 1];
		memcpy(name, addr, len);
		name[len] = '\0';
		name[strcspn(name, ":/")] = '\0';
		snprintf(uri, ulen, "%s://%s:0", port->scheme, name[0] ? name : "?");
		return;
	}
	memset(&ss, 0, sizeof(ss));
	if (len <= sizeof(ss)) {
		memcpy(&ss, addr, len);
		if ((ss.ss_family == AF_INET || ss.ss_family == AF_INET6) &&
		    ferryi_addr_format(port->scheme, &ss, uri, ulen) == 0)
			return;
	}
	snprintf(uri, ulen, "%s://?:0", port->scheme);
}

void ofi_on_connreq(struct ofi_port *port, const struct ofi_hdr *h, const uint8_t *pl,
		    size_t plen)
{
	struct ofi_inst *oi = port->dom->inst;
	struct ferry_ctx *ctx = oi->pi->ctx;
	struct ofi_hello hello;
	struct ofi_peer *peer;
	struct ferry_ep *ep = NULL;
	char uri[FERRYI_URI_MAX];
	int status;

	if (h->dst != 0 || ofi_hello_get(pl, plen, &hello) < 0 || hello.addrlen == 0) {
		FERRYI_DBG(ctx, "ofi: %s: malformed connect request dropped", port->dom->prov_name);
		return;
	}
	if (ofi_peer_get(port, hello.addr, hello.addrlen, &peer) < 0)
		return; /* cannot even answer */
	ofi_peer_uri(port, hello.addr, hello.addrlen, uri, sizeof(uri));
	if (!port->lp)
		status = FERRY_ECONNREFUSED;
	else if (hello.info.version != FERRYI_PROTO_VERSION)
		status = FERRY_EVERSION;
	else
		status = ferryi_ctx_admission(ctx);
	if (status == 0) {
		ep = ferryi_ep_accepted(port->lp, uri);
		if (!ep)
			status = FERRY_ENOBUFS;
	}
	if (status) {
		FERRYI_INFO(ctx, "ofi: refusing %s: %s", uri, ferry_strerror(status));
		(void)ofi_ctl_queue(port, peer, NULL, OFI_K_CONNREJ, hello.conn,
				    (uint64_t)(int64_t)status, 0, NULL, 0);
		ofi_peer_put(port, peer);
		return;
	}

	struct ofi_ep *oep = ofi_ep(ep);
	ofi_ep_init(oep, ep);
	oep->port = port;
	port->refs++;
	oep->peer = peer; /* our reference from ofi_peer_get */
	peer->eps++;
	oep->remote_conn = hello.conn;
	oep->remote_ksid = hello.ksid;
	oep->credits = hello.credits;
	oep->remote = hello.info;
	ofi_wake_map(port, peer, hello.wake_pid, hello.wake_fd, hello.wake_token);
	ferryi_local_info(ctx, &oep->local);
	oep->local.eager_max = ofi_eager_limit(port, peer, oep->local.eager_max);
	if (ofi_conn_add(oi, oep) < 0) {
		/* The core closes the endpoint; ep_close releases what we took. */
		oep->state = OFI_EP_CLOSED;
		ferryi_ep_failed(ep, FERRY_ENOMEM, "out of memory");
		return;
	}
	uint8_t buf[OFI_HELLO_LEN];
	struct ofi_hello mine = {
		.conn = oep->hnode.key, .credits = OFI_CREDITS, .ksid = port->ksid,
		.info = oep->local,
	};
	ofi_hello_wake(port, &mine);
	size_t len = ofi_hello_put(buf, &mine);
	oep->state = OFI_EP_ACK_SENT;
	if (ofi_ctl_queue(port, peer, ep, OFI_K_CONNACK, hello.conn, 0, 0, buf, len) < 0)
		ferryi_ep_failed(ep, FERRY_ENOMEM, "out of memory");
}

void ofi_on_connack(struct ofi_ep *oep, const uint8_t *pl, size_t plen)
{
	struct ofi_hello hello;
	int rc;

	if (oep->state != OFI_EP_REQ_SENT)
		return;
	rc = ofi_hello_get(pl, plen, &hello);
	if (rc < 0) {
		ferryi_ep_failed(oep->ep, rc, "malformed connect answer");
		return;
	}
	if (hello.info.version != FERRYI_PROTO_VERSION) {
		ferryi_ep_failed(oep->ep, FERRY_EVERSION, "peer speaks another protocol version");
		return;
	}
	oep->remote_conn = hello.conn;
	oep->remote_ksid = hello.ksid;
	oep->credits = hello.credits;
	oep->remote = hello.info;
	ofi_wake_map(oep->port, oep->peer, hello.wake_pid, hello.wake_fd, hello.wake_token);
	ofi_probe_stop(oep);
	ofi_ep_up(oep);
}

/*
 * host:port as a socket address when the dom speaks sockaddrs: getaddrinfo is what
 * fi_getinfo would do too, without walking every interface over netlink first.
 */
static bool ofi_sockaddr(const struct ofi_dom *dom, const struct ferryi_addr *addr, int passive,
			 uint8_t *out, size_t *outlen)
{
	uint32_t fmt = dom->info->addr_format;
	struct sockaddr_storage ss;
	unsigned sl = sizeof(ss);

	if (fmt != FI_SOCKADDR_IN && fmt != FI_SOCKADDR_IN6 && fmt != FI_SOCKADDR)
		return false;
	if (ferryi_addr_resolve(addr, passive, &ss, &sl) < 0 || sl > OFI_ADDR_MAX)
		return false;
	if ((fmt == FI_SOCKADDR_IN && ss.ss_family != AF_INET) ||
	    (fmt == FI_SOCKADDR_IN6 && ss.ss_family != AF_INET6))
		return false;
	memcpy(out, &ss, sl);
	*outlen = sl;
	return true;
}

/* The peer's fabric address for host:port, in the dom's address format. */
static int ofi_resolve(struct ofi_dom *dom, const struct ferryi_addr *addr, uint8_t *out,
		       size_t *outlen)
{
	struct ferry_ctx *ctx = dom->inst->pi->ctx;
	char service[16];

	if (dom->is_shm) {
		/* The host must at least exist (it names this machine); the port names
		 * the region. */
		struct sockaddr_storage ss;
		unsigned sl = sizeof(ss);
		if (addr->host[0] && ferryi_addr_resolve(addr, 0, &ss, &sl) < 0)
			return FERRY_EHOSTUNREACH;
		int n = snprintf((char *)out, OFI_ADDR_MAX, "ferry-%u", (unsigned)addr->port);
		*outlen = (size_t)n + 1;
		return 0;
	}
	if (ofi_sockaddr(dom, addr, 0, out, outlen))
		return 0;
	struct fi_info *hints = ofi_hints(dom->prov_name), *info = NULL;
	if (!hints)
		return FERRY_ENOMEM;
	hints->addr_format = dom->info->addr_format;
	snprintf(service, sizeof(service), "%u", (unsigned)addr->port);
	int rc = fi_getinfo(OFI_API_VERSION, addr->host[0] ? addr->host : "localhost", service, 0,
			    hints, &info);
	fi_freeinfo(hints);
	if (rc || !info->dest_addr || info->dest_addrlen > OFI_ADDR_MAX) {
		FERRYI_INFO(ctx, "ofi: cannot resolve %s with %s: %s", addr->uri, dom->prov_name,
			    rc ? fi_strerror(-rc) : "no address");
		if (info)
			fi_freeinfo(info);
		return FERRY_EHOSTUNREACH;
	}
	memcpy(out, info->dest_addr, info->dest_addrlen);
	*outlen = info->dest_addrlen;
	fi_freeinfo(info);
	return 0;
}

int ofi_connect(struct ferry_ep *ep, const struct ferryi_addr *addr)
{
	struct ofi_inst *oi = ofi_inst(ep->pi);
	struct ofi_ep *oep = ofi_ep(ep);
	struct ofi_dom *dom;
	struct ofi_port *port;
	struct ofi_peer *peer;
	uint8_t daddr[OFI_ADDR_MAX];
	size_t dlen = 0;
	int rc;

	ofi_ep_init(oep, ep);
	dom = ofi_dom_by_scheme(oi, addr->scheme);
	if (!dom)
		return FERRY_EPROTONOSUPPORT;
	rc = ofi_resolve(dom, addr, daddr, &dlen);
	if (rc < 0)
		return rc;
	if (dom->is_shm) {
		/* A listener's region is a file in /dev/shm: none there, nobody listens. */
		char path[OFI_ADDR_MAX + 16];
		snprintf(path, sizeof(path), "/dev/shm/%s", (const char *)daddr);
		if (access(path, F_OK) != 0) {
			FERRYI_DBG(ep->ctx, "ofi: %s: no shm region %s", addr->uri, path);
			return FERRY_ECONNREFUSED;
		}
	}
	rc = ofi_client_port(dom, &port);
	if (rc < 0)
		return rc;
	snprintf(port->scheme, sizeof(port->scheme), "%s", addr->scheme);
	rc = ofi_peer_get(port, daddr, dlen, &peer);
	if (rc < 0) {
		ofi_port_put(port);
		return rc == FERRY_EINVAL ? FERRY_EHOSTUNREACH : rc;
	}
	rc = ofi_conn_add(oi, oep);
	if (rc < 0) {
		ofi_peer_put(port, peer);
		ofi_port_put(port);
		return rc;
	}
	oep->port = port;
	oep->peer = peer;
	peer->eps++;
	ferryi_local_info(ep->ctx, &oep->local);
	oep->local.eager_max = ofi_eager_limit(port, peer, oep->local.eager_max);

	uint8_t buf[OFI_HELLO_LEN + OFI_ADDR_MAX];
	struct ofi_hello mine = {
		.conn = oep->hnode.key, .credits = OFI_CREDITS, .ksid = port->ksid,
		.info = oep->local, .addrlen = port->namelen, .addr = port->name,
	};
	ofi_hello_wake(port, &mine);
	size_t len = ofi_hello_put(buf, &mine);
	oep->state = OFI_EP_REQ_SENT;
	rc = ofi_ctl_queue(port, peer, ep, OFI_K_CONNREQ, 0, 0, 0, buf, len);
	if (rc < 0) {
		ofi_conn_del(oi, oep);
		oep->port = NULL;
		oep->peer = NULL;
		peer->eps--;
		ofi_peer_put(port, peer);
		ofi_port_put(port);
		return rc;
	}
	FERRYI_DBG(ep->ctx, "ofi: connecting to %s over %s", addr->uri, dom->prov_name);
	return 0;
}

/* The URI a listener reports: its actual address (the port chosen for port 0). */
static void ofi_listen_uri(struct ofi_port *port, const struct ferryi_addr *addr, char *uri,
			   size_t uri_len)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (port->namelen <= sizeof(ss))
		memcpy(&ss, port->name, port->namelen);
	if ((ss.ss_family != AF_INET && ss.ss_family != AF_INET6) ||
	    ferryi_addr_format(addr->scheme, &ss, uri, uri_len) < 0)
		snprintf(uri, uri_len, "%s", addr->uri);
}

int ofi_listen(struct ferryi_listener_part *lp, const struct ferryi_addr *addr, char *uri,
	       size_t uri_len)
{
	uint8_t src[OFI_ADDR_MAX];
	size_t srclen = 0;
	struct ofi_inst *oi = ofi_inst(lp->pi);
	struct ofi_port **lpp = ferryi_lp_priv(lp);
	struct ofi_dom *dom = ofi_dom_by_scheme(oi, addr->scheme);
	struct ofi_port *port = NULL;
	int rc;

	if (!dom)
		return FERRY_EPROTONOSUPPORT;
	if (dom->is_shm) {
		/* shm addresses are names: port P listens as region "ferry-P". */
		unsigned pnum = addr->port;
		for (int attempt = 0; attempt < 64; attempt++) {
			char name[32];
			if (addr->port == 0)
				pnum = OFI_SHM_PORT_MIN +
				       (unsigned)(ferryi_random64() % OFI_SHM_PORT_RANGE);
			snprintf(name, sizeof(name), "ferry-%u", pnum);
			/* libfabric's shm unlinks the name when creating a second region of
			 * that name fails, killing the first listener: look first. */
			char path[64];
			snprintf(path, sizeof(path), "/dev/shm/%s", name);
			if (access(path, F_OK) == 0) {
				rc = FERRY_EADDRINUSE;
				if (addr->port != 0)
					break;
				continue;
			}
			rc = ofi_port_open(dom, NULL, 0, name, &port);
			if (rc != FERRY_EADDRINUSE || addr->port != 0)
				break;
		}
		if (rc == FERRY_EADDRINUSE)
			FERRYI_INFO(lp->pi->ctx, "ofi: %s: shm region ferry-%u exists (another "
						 "listener, or left by a crashed process)",
				    addr->uri, pnum);
		if (rc < 0)
			return rc;
		snprintf(uri, uri_len, "%s://%s:%u", addr->scheme,
			 addr->host[0] ? addr->host : "localhost", pnum);
	} else if (ofi_sockaddr(dom, addr, 1, src, &srclen)) {
		rc = ofi_port_open(dom, src, srclen, NULL, &port);
		if (rc < 0 && dom->is_verbs && addr->port != 0) {
			/* rxm says only "no data" when the address is taken: ask rdma_cm. */
			int why = ofi_rdmacm_bind_check(src, srclen);
			if (why < 0) {
				FERRYI_INFO(lp->pi->ctx, "ofi: cannot listen on %s: %s", addr->uri,
					    ferry_strerror(why));
				rc = why;
			}
		}
		if (rc < 0)
			return rc;
		ofi_listen_uri(port, addr, uri, uri_len);
	} else {
		char service[16];
		struct fi_info *hints = ofi_hints(dom->prov_name), *info = NULL;
		if (!hints)
			return FERRY_ENOMEM;
		hints->addr_format = dom->info->addr_format;
		snprintf(service, sizeof(service), "%u", (unsigned)addr->port);
		const char *node = addr->host[0] && strcmp(addr->host, "*") != 0 ? addr->host : NULL;
		rc = fi_getinfo(OFI_API_VERSION, node, service, FI_SOURCE, hints, &info);
		fi_freeinfo(hints);
		if (rc || !info->src_addr) {
			FERRYI_INFO(lp->pi->ctx, "ofi: cannot listen on %s with %s: %s", addr->uri,
				    dom->prov_name, rc ? fi_strerror(-rc) : "no address");
			if (info)
				fi_freeinfo(info);
			return rc == -FI_ENODATA ? FERRY_EADDRNOTAVAIL : FERRY_EINVAL;
		}
		rc = ofi_port_open(dom, info->src_addr, info->src_addrlen, NULL, &port);
		fi_freeinfo(info);
		if (rc < 0)
			return rc;
		ofi_listen_uri(port, addr, uri, uri_len);
	}
	snprintf(port->scheme, sizeof(port->scheme), "%s", addr->scheme);
	port->lp = lp;
	*lpp = port;
	FERRYI_DBG(lp->pi->ctx, "ofi: listening on %s (%s)", uri, dom->prov_name);
	return 0;
}

void ofi_listen_close(struct ferryi_listener_part *lp)
{
	struct ofi_port **lpp = ferryi_lp_priv(lp);
	struct ofi_port *port = *lpp;
	if (!port)
		return;
	/* Endpoints accepted here keep the port; new requests are refused. */
	port->lp = NULL;
	*lpp = NULL;
	ofi_port_put(port);
}
