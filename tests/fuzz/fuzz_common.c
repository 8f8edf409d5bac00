/*
 * fuzz_common.c - helpers shared by the fuzz harnesses (see fuzz_common.h).
 *
 * The harnesses link with -Wl,--wrap=ferryi_log: every log line of the library comes
 * through __wrap_ferryi_log, which turns the library's own "BUG:" reports (an op
 * completed twice, a provider completing an op it does not own) into crashes, and
 * keeps the fuzzer's output quiet unless FERRY_LOG asks for the lines.
 */
#define _GNU_SOURCE
#include "fuzz_common.h"
#include "tcp_proto.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void fz_fail(const char *file, int line, const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "FUZZ INVARIANT FAILED at %s:%d: ", file, line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	abort();
}

/* ------------------------------------------------------------------ log hook */

void __real_ferryi_log(const struct ferry_ctx *ctx, enum ferry_log_level lvl,
		       const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void __wrap_ferryi_log(const struct ferry_ctx *ctx, enum ferry_log_level lvl,
		       const char *fmt, ...) __attribute__((format(printf, 3, 4)));

void __wrap_ferryi_log(const struct ferry_ctx *ctx, enum ferry_log_level lvl,
		       const char *fmt, ...)
{
	static int verbose = -1;
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (strncmp(line, "BUG", 3) == 0)
		fz_fail(__FILE__, __LINE__, "the library reported: %s", line);
	if (verbose < 0)
		verbose = getenv("FERRY_LOG") != NULL;
	if (verbose)
		__real_ferryi_log(ctx, lvl, "%s", line);
}

bool fz_skip(const char *name)
{
	const char *list = getenv("FERRY_FUZZ_SKIP");
	size_t n = strlen(name);

	for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
		if (strncmp(p, name, n) == 0 && (p[n] == ',' || p[n] == '\0'))
			return true;
	return false;
}

/* ------------------------------------------------------------------ context */

struct ferry_ctx *fz_ctx_create(void (*tweak)(struct ferry_config *cfg))
{
	struct ferry_config cfg;
	struct ferry_ctx *ctx = NULL;
	int rc;

	ferry_config_init(&cfg);
	cfg.providers = "tcp";
	/* Errors reach __wrap_ferryi_log, which watches for "BUG:" reports. */
	cfg.log_level = FERRY_LOG_ERROR;
	cfg.idle_timeout_s = 0;
	cfg.probe_interval_ms = 0;
	cfg.reconnect_attempts = 1;
	if (tweak)
		tweak(&cfg);
	rc = ferry_ctx_create(&cfg, &ctx);
	if (rc < 0 || !ctx)
		fz_fail(__FILE__, __LINE__, "ferry_ctx_create: %s", ferry_strerror(rc));
	/* Only the harness drives progress: a run is the same every time. */
	ferryi_poller_stop(ctx);
	return ctx;
}

void fz_substitute(uint8_t *buf, size_t len, const struct fz_subst *s, int n)
{
	if (len < 8)
		return;
	for (size_t i = 0; i + 8 <= len; i++) {
		if (buf[i] != 'F' || buf[i + 1] != 'Z')
			continue;
		for (int k = 0; k < n; k++) {
			if (s[k].valid && memcmp(buf + i, s[k].mark, 8) == 0) {
				ferryi_put_le64(buf + i, s[k].value);
				i += 7;
				break;
			}
		}
	}
}

uint64_t fz_last_op_id(struct ferry_ep *ep)
{
	uint64_t id = 0;

	ferryi_ctx_lock(ep->ctx);
	if (!ferryi_list_empty(&ep->ops)) {
		struct ferryi_op *op =
			ferryi_container_of(ep->ops.head.prev, struct ferryi_op, link);
		id = ferryi_op_id(op);
	}
	ferryi_ctx_unlock(ep->ctx);
	return id;
}

/*
 * A busy progress pass reads cold fds (a listener, and every socket while more than a
 * few are hot) at most every FERRYI_COLD_EPOLL_NS. The harnesses decide that nothing
 * more will happen after some quiet passes, which passes that skipped epoll would fool:
 * a connection accepted only after the check outlives its input.
 */
int fz_progress(struct ferry_ctx *ctx)
{
	ferryi_ctx_lock(ctx);
	ctx->last_epoll_ns = 0;
	ferryi_ctx_unlock(ctx);
	return ferry_progress(ctx);
}

uint32_t fz_ep_count(struct ferry_ctx *ctx)
{
	ferryi_ctx_lock(ctx);
	uint32_t n = ctx->ep_count;
	ferryi_ctx_unlock(ctx);
	return n;
}

uint32_t fz_ops_in_use(struct ferry_ctx *ctx)
{
	ferryi_ctx_lock(ctx);
	uint32_t n = ctx->nslots - ctx->nfree;
	ferryi_ctx_unlock(ctx);
	return n;
}

/* ------------------------------------------------------------------ raw sockets */

uint16_t fz_listener_port(struct ferry_listener *l)
{
	char addr[512];
	size_t len = sizeof(addr);

	FZ_CHECK(ferry_listener_addr(l, addr, &len) == 0);
	const char *colon = strrchr(addr, ':');
	FZ_CHECK(colon != NULL);
	return (uint16_t)atoi(colon + 1);
}

int fz_raw_connect(uint16_t port)
{
	static uint32_t next_src;
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
	struct sockaddr_in src = {.sin_family = AF_INET};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

	if (fd < 0)
		fz_fail(__FILE__, __LINE__, "socket: %s", strerror(errno));
	/*
	 * From a different 127.x.y.z each time: thousands of inputs a second wrap the
	 * ephemeral port range within seconds, and a SYN that lands on the listener's
	 * TIME_WAIT of the same 4-tuple may be answered with an ACK instead of a
	 * SYN-ACK, which costs a 1 s SYN retransmission (and libFuzzer's SIGALRM then
	 * interrupts the connect).
	 */
	next_src = next_src % 0xfffffdu + 1; /* 127.0.0.2 .. 127.255.255.254 */
	src.sin_addr.s_addr = htonl(0x7f000000u | (next_src + 1));
	if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0)
		fz_fail(__FILE__, __LINE__, "bind to a loopback source: %s", strerror(errno));
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	/*
	 * Blocking on purpose: on loopback the kernel completes it from the backlog. A
	 * signal (libFuzzer's timer) may still interrupt it; the connection then goes on
	 * in the background and poll() says when it is done.
	 */
	int rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
	if (rc < 0 && errno == EINTR) {
		struct pollfd pfd = {.fd = fd, .events = POLLOUT};
		int err = 0;
		socklen_t elen = sizeof(err);

		while ((rc = poll(&pfd, 1, 10000)) < 0 && errno == EINTR)
			;
		if (rc == 1 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &elen) == 0 && !err) {
			rc = 0;
		} else {
			errno = rc == 0 ? ETIMEDOUT : err ? err : errno;
			rc = -1;
		}
	}
	if (rc < 0)
		fz_fail(__FILE__, __LINE__, "connect to 127.0.0.1:%u: %s", port,
			strerror(errno));
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	(void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
	return fd;
}

size_t fz_raw_write(struct ferry_ctx *ctx, int fd, const void *buf, size_t len, int rounds)
{
	const uint8_t *p = buf;
	size_t done = 0;

	while (done < len) {
		ssize_t n = send(fd, p + done, len - done, MSG_NOSIGNAL | MSG_DONTWAIT);

		if (n > 0) {
			done += (size_t)n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && rounds-- > 0) {
			/* The peer's buffer is full: let ferry read, and read what it sent. */
			fz_progress(ctx);
			(void)fz_raw_drain(fd, NULL, 0, NULL);
			continue;
		}
		break; /* reset, or the peer stopped reading */
	}
	return done;
}

long fz_raw_drain(int fd, uint8_t *keep, size_t keep_len, size_t *kept)
{
	uint8_t buf[16384];
	long total = 0;

	for (;;) {
		ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);

		if (n > 0) {
			if (keep && kept && *kept < keep_len) {
				size_t c = FERRYI_MIN((size_t)n, keep_len - *kept);

				memcpy(keep + *kept, buf, c);
				*kept += c;
			}
			total += n;
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return total;
		return -1; /* EOF or reset */
	}
}

size_t fz_hello(uint8_t *out, uint64_t max_frame, uint64_t eager_max, uint64_t rx_credit,
		uint32_t features)
{
	struct ferryi_tcp_hdr h = {.type = FERRYI_TCP_HELLO};
	struct ferryi_tcp_ext e = {
		.info = {
			.version = FERRYI_PROTO_VERSION,
			.features = features,
			.max_frame = max_frame,
			.eager_max = eager_max,
			.rx_credit = rx_credit,
		},
	};

	return ferryi_tcp_encode(out, &h, &e);
}

size_t fz_msg_hdr(uint8_t *out, uint8_t type, uint64_t tag, uint64_t aux, uint64_t len)
{
	struct ferryi_tcp_hdr h = {
		.type = FERRYI_TCP_MSG,
		.flags = type,
		.len = len,
		.tag = tag,
		.aux = aux,
	};
	struct ferryi_tcp_ext e;

	memset(&e, 0, sizeof(e));
	return ferryi_tcp_encode(out, &h, &e);
}
