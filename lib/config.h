/*
 * config.h - configuration helpers beyond the public ferry_config_* functions.
 *
 * config.c keeps every FERRY_* variable in one table (name, field, kind, limits); the
 * environment parser, ferryi_config_check() and ferryi_config_describe() all read
 * that table, so the documentation a tool prints cannot drift from what is parsed.
 */
#ifndef FERRY_LIB_CONFIG_H
#define FERRY_LIB_CONFIG_H

#include "ferry/ferry.h"

#include <stdint.h>
#include <stdio.h>

/*
 * Prints one line per environment variable, in table order:
 *     FERRY_NAME=value  # default D
 * where value is cfg's (NULL = the defaults) in a form ferry_config_from_env() accepts
 * back, and D is the default from ferry_config_init(). Byte sizes use the largest exact
 * K/M/G/T suffix; an unset string prints as empty, its default as "(unset)".
 * Returns 0, or FERRY_EIO if writing to out failed. Any thread.
 */
int ferryi_config_describe(const struct ferry_config *cfg, FILE *out);

/*
 * Tunables that have no field in struct ferry_config yet (the public struct is a
 * contract; they move there when it gains the fields). They come from the
 * environment only, through the same table machinery (kinds, limits, warnings), and
 * ferryi_config_describe() lists them after the struct's variables. A provider reads
 * them once per context (ferryi_config_ext_init, then _from_env).
 */
struct ferryi_config_ext {
	uint64_t zerocopy_min;  /* FERRY_ZEROCOPY_MIN (256K): TCP payloads of at least
				   this many bytes go out with MSG_ZEROCOPY; 0 = never */
	int compress_accept;    /* FERRY_COMPRESS_ACCEPT (1): advertise that this
				   context decodes zstd; 0 makes it look like a build
				   without zstd (peers then send it raw)              */
	uint64_t reg_cache_bytes; /* FERRY_REG_CACHE_BYTES (256M; unset, regcache.c
				   lowers it to a quarter of RLIMIT_MEMLOCK when that
				   is lower and the process lacks CAP_IPC_LOCK):
				   pinned bytes the registration cache keeps; 0 turns
				   the cache off                                   */
	uint32_t reg_cache_entries; /* FERRY_REG_CACHE_ENTRIES (1024): regions it
				   keeps; 0 turns the cache off                    */
	const char *tcp_congestion; /* FERRY_TCP_CONGESTION: the congestion control
				   of every TCP connection ferry makes; "system":
				   net.ipv4.tcp_congestion_control; unset: CUBIC
				   inside this host, the system's elsewhere        */
	uint64_t tcp_rma_window; /* FERRY_TCP_RMA_WINDOW (1M): one-sided bytes a TCP
				   connection under BBR between two addresses of
				   this host keeps unanswered; 0 = no limit        */
};

/* Fills x with the defaults. */
void ferryi_config_ext_init(struct ferryi_config_ext *x);

/* Applies FERRY_* variables to x, like ferry_config_from_env() (same return). */
int ferryi_config_ext_from_env(struct ferryi_config_ext *x);

#endif /* FERRY_LIB_CONFIG_H */
