/*
 * regcache.h - the registration cache behind the core's internal registrations
 * (rendezvous sends and receives, one-sided ops on unregistered local buffers).
 *
 * Entries are page-granular regions registered with every provider of the context,
 * kept after the operation that needed them and found again by (range, access). A
 * process-wide userfaultfd monitor invalidates entries whose memory is unmapped,
 * remapped or discarded (munmap, mremap, madvise DONTNEED and glibc's free() that
 * ends in one of those), so a cached, pinned registration is never used for a new
 * mapping at the same address. See regcache.c for the design notes.
 *
 * Every function is called with the context lock held.
 */
#ifndef FERRY_LIB_REGCACHE_H
#define FERRY_LIB_REGCACHE_H

#include "core.h"

enum ferryi_rc_state {
	FERRYI_RC_OFF = 0,         /* FERRY_REG_CACHE_BYTES or _ENTRIES is 0           */
	FERRYI_RC_ON = 1,
	FERRYI_RC_UNAVAILABLE = 2, /* userfaultfd refused (ENOSYS, EPERM, seccomp ...) */
};

/* Opens ctx's cache from the environment; never fails (an unusable cache is off). */
void ferryi_regcache_init(struct ferry_ctx *ctx);
/* Deregisters every entry (all unused by then) and leaves the monitor. */
void ferryi_regcache_fini(struct ferry_ctx *ctx);

/*
 * Finds or adds a region covering [addr, addr+len) with at least access. Returns 0
 * with *out held for the caller (give it back with ferryi_regcache_put), 1 when the
 * range is not cacheable (cache off, larger than the cache, memory userfaultfd cannot
 * watch): the caller registers it itself; or a negative code when registering failed.
 */
int ferryi_regcache_get(struct ferry_ctx *ctx, void *addr, size_t len, unsigned access,
			struct ferry_mr **out);
/* The caller no longer uses mr (from ferryi_regcache_get); drops its reference too. */
void ferryi_regcache_put(struct ferry_mr *mr);

/* Deregisters entries the monitor invalidated while unused (cheap when none). */
void ferryi_regcache_progress(struct ferry_ctx *ctx);

/* Entries in use by operations (leak checks: 0 once every op completed). */
uint64_t ferryi_regcache_busy(struct ferry_ctx *ctx);

/* Fills the reg_cache_* fields of st. */
void ferryi_regcache_stats(struct ferry_ctx *ctx, struct ferry_stats *st);

#endif /* FERRY_LIB_REGCACHE_H */
