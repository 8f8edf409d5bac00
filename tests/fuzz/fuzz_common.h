/*
 * fuzz_common.h - what the libFuzzer harnesses share: invariant checks that abort (so
 * libFuzzer records a crash), a quiet tcp-only context, raw loopback sockets, and the
 * markers that let a fuzzed input name values it cannot guess (region keys, op ids).
 *
 * Every harness defines LLVMFuzzerTestOneInput and initialises itself on the first
 * call, so the same source runs under libFuzzer (FERRY_FUZZ=ON, clang) and under the
 * replay driver (fuzz_replay.c) of an ordinary build.
 */
#ifndef FERRY_TESTS_FUZZ_COMMON_H
#define FERRY_TESTS_FUZZ_COMMON_H

#include "core_priv.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* An invariant of the library failed: print it and abort (a crash for libFuzzer). */
#define FZ_CHECK(cond)                                                               \
	do {                                                                         \
		if (!(cond))                                                         \
			fz_fail(__FILE__, __LINE__, "%s", #cond);                    \
	} while (0)

void fz_fail(const char *file, int line, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 3, 4)));

/*
 * A context on the TCP provider only, logging errors (FERRY_LOG overrides), with its
 * poller thread stopped: the harness drives progress itself, so a run is reproducible.
 * tweak, if not NULL, adjusts the config first. Aborts on failure.
 */
struct ferry_ctx *fz_ctx_create(void (*tweak)(struct ferry_config *cfg));

/*
 * Whether FERRY_FUZZ_SKIP (comma-separated names) asks to steer around a known,
 * reported bug (regressions/FINDINGS.md), so that a campaign finds other ones.
 * Regression replays and CTest never set it.
 */
bool fz_skip(const char *name);

/*
 * Markers: an input carrying one of these 8-byte strings (at any offset) gets it
 * replaced by the real value before the bytes reach ferry. Each is eight ASCII bytes,
 * read as a little-endian u64 by the wire formats.
 */
#define FZ_MARK_KEY_RW "FZKEYRW1"  /* key of a region with remote read + write   */
#define FZ_MARK_KEY_RO "FZKEYRO1"  /* key of a read-only region                  */
#define FZ_MARK_OP_SEND "FZOPSND1" /* op id of the harness's rendezvous send     */
#define FZ_MARK_OP_WRITE "FZOPWR01" /* op id of the harness's one-sided write    */
#define FZ_MARK_OP_READ "FZOPRD01" /* op id of the harness's one-sided read       */

struct fz_subst {
	const char *mark; /* 8 bytes */
	uint64_t value;
	bool valid;       /* false: leave the marker as it is */
};

/* Replaces every marker in buf[0, len) by its value (little-endian). */
void fz_substitute(uint8_t *buf, size_t len, const struct fz_subst *s, int n);

/* Wire id of the op last posted on ep (ctx lock taken here), or 0 if none. */
uint64_t fz_last_op_id(struct ferry_ep *ep);

/* Numbers of live endpoints and op slots in use (ctx lock taken here). */
/* ferry_progress, reading epoll on every pass (see fuzz_common.c). */
int fz_progress(struct ferry_ctx *ctx);
uint32_t fz_ep_count(struct ferry_ctx *ctx);
uint32_t fz_ops_in_use(struct ferry_ctx *ctx);

/* ------------------------------------------------------------------ raw sockets */

/* Port of a listener listening on exactly one tcp:// URI. */
uint16_t fz_listener_port(struct ferry_listener *l);

/* A connected, non-blocking TCP socket to 127.0.0.1:port (aborts on failure). */
int fz_raw_connect(uint16_t port);

/*
 * Writes what the socket takes without blocking, driving ctx between attempts (at
 * most `rounds` times). Returns the bytes written; fewer when the peer hung up or
 * stopped reading.
 */
size_t fz_raw_write(struct ferry_ctx *ctx, int fd, const void *buf, size_t len, int rounds);

/*
 * Reads and throws away whatever is waiting. Returns the bytes read, or -1 when the
 * peer closed or reset the connection. When keep is not NULL the first keep_len
 * bytes read are copied there (*kept counts them).
 */
long fz_raw_drain(int fd, uint8_t *keep, size_t keep_len, size_t *kept);

/* A HELLO (header + extension, FERRYI_TCP_HDR_LEN + FERRYI_TCP_HELLO_LEN bytes). */
size_t fz_hello(uint8_t *out, uint64_t max_frame, uint64_t eager_max, uint64_t rx_credit,
		uint32_t features);

/* One MSG frame header for a core message (no payload bytes). */
size_t fz_msg_hdr(uint8_t *out, uint8_t type, uint64_t tag, uint64_t aux, uint64_t len);

#endif /* FERRY_TESTS_FUZZ_COMMON_H */
