/*
 * regcache.c - the registration cache and its userfaultfd memory monitor.
 *
 * Entries. An internal registration (rendezvous send or receive, one-sided op on an
 * unregistered local buffer) asks for [addr, addr+len) with some access. The cache
 * rounds that out to whole pages and looks for an entry of the same context covering
 * those pages with at least that access; on a miss it registers the page range with
 * every provider (a struct ferry_mr, internal) and keeps it. An entry counts its users
 * (ops): one in use is never deregistered, an unused one sits on an LRU list and is
 * evicted, oldest first, when the cache would exceed FERRY_REG_CACHE_BYTES or
 * FERRY_REG_CACHE_ENTRIES. A range that alone exceeds the bounds, or that cannot be
 * monitored, is registered for its op only, as without a cache. While unused, a
 * region's key is out of the context's key map, so TCP peers cannot reach it between
 * operations (an RDMA NIC's rkey stays valid while the region is cached).
 *
 * Invalidation. A cached, pinned registration keeps the *old* physical pages: once the
 * application frees the memory (munmap, or free() that munmaps or trims) and a new
 * mapping appears at the same address, an RDMA transfer through the old entry would
 * move the old pages' bytes. Symbol interposition misses glibc's internal munmap, so
 * the kernel tells us: one process-wide userfaultfd with the UNMAP, REMOVE (madvise
 * DONTNEED/REMOVE) and REMAP (mremap) events, and every cached range registered with
 * it in write-protect mode. Nothing is ever write-protected, so no fault is raised;
 * only the events come. The kernel holds the unmapping thread until its event is
 * read; the monitor thread reads events only while holding the cache lock (rc_g.lock)
 * and invalidates the entries they touch before dropping it, and every look-up takes
 * that lock. So an application that unmaps, maps again at the same address and posts
 * cannot hit the stale entry: its munmap returned only after the read, and its look-up
 * waits until the invalidation is applied.
 *
 * Locks: rc_g.lock guards the index and every cache's lists and counters; it is taken
 * under a context lock, never the other way round, and the monitor takes no other
 * lock. Nothing done under rc_g.lock may unmap user memory: that would wait for the
 * monitor, which waits for the lock. Even free() can (glibc trims the heap with brk,
 * which unmaps), so nothing is allocated, freed, registered or deregistered under it:
 * a new entry is watched and published as pending (no region yet) under the lock,
 * pinned without it, and completed under it again unless the monitor invalidated it
 * meanwhile (then the pinned pages may be the old ones: dropped, and the op gets a
 * registration of its own). Entries invalidated while unused are handed to their
 * context (the dead list) and deregistered under its lock at the next progress pass
 * or look-up.
 * The index (sorted by start) and the uffd registrations are shared by all contexts:
 * when an entry goes, only the pages no other entry covers are unregistered.
 */
#include "regcache.h"

#include "config.h"
#include "core_priv.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

struct ferryi_rc_ent {
	struct ferryi_rcache *rc;
	uintptr_t start, end;         /* page aligned                                  */
	struct ferry_mr *mr;          /* the entry's reference                         */
	uint32_t users;               /* ops using it                     (rc_g.lock) */
	bool valid;                   /* in the index                     (rc_g.lock) */
	bool hidden;                  /* key out of ctx->mr_by_key         (ctx lock) */
	struct ferryi_list_node link; /* rc->lru (valid, unused), rc->dead (invalid)   */
};

struct ferryi_rcache {
	struct ferry_ctx *ctx;
	uint64_t max_bytes, max_entries;
	uint64_t bytes, entries;      /* valid entries                                 */
	uint64_t busy;                /* entries in use, valid or not                  */
	struct ferryi_list lru;       /* valid and unused, least recently used first   */
	struct ferryi_list dead;      /* invalidated and unused: to deregister         */
	atomic_bool dead_pending;
	uint64_t hits, misses, evictions, invalidations, uncached;
	unsigned epoch;               /* rc_g.epoch when it joined the monitor         */
};

static struct {
	pthread_mutex_t lock;         /* the cache lock: see the notes above           */
	struct ferryi_rc_ent **idx;   /* valid entries of every context, by start      */
	size_t n, cap;
	uintptr_t max_len;            /* no entry is longer: bounds index scans        */
	/* the monitor, started with the first cache and stopped with the last */
	pthread_mutex_t life;         /* serialises start and stop                     */
	unsigned users;
	unsigned epoch;               /* changes in a forked child                     */
	int uffd, stop_fd;
	pthread_t thread;
} rc_g = {
	.lock = PTHREAD_MUTEX_INITIALIZER,
	.life = PTHREAD_MUTEX_INITIALIZER,
	.uffd = -1,
	.stop_fd = -1,
};

static uintptr_t rc_page_size(void)
{
	return (uintptr_t)sysconf(_SC_PAGESIZE);
}

/* ------------------------------------------------------------------ index (rc_g.lock) */

/* First position whose entry starts at or after start. */
static size_t idx_lower(uintptr_t start)
{
	size_t lo = 0, hi = rc_g.n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (rc_g.idx[mid]->start < start)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

/* The first position that may hold an entry ending after a. */
static size_t idx_first_reaching(uintptr_t a)
{
	return idx_lower(a > rc_g.max_len ? a - rc_g.max_len : 0);
}

/*
 * Makes room for one more entry, allocating without the lock (see the notes at the
 * top). Another context may take that room before the caller locks again: idx_insert
 * then refuses.
 */
static int idx_reserve(void)
{
	for (;;) {
		pthread_mutex_lock(&rc_g.lock);
		size_t cap = rc_g.cap ? rc_g.cap * 2 : 64;
		bool room = rc_g.n + 1 <= rc_g.cap;
		pthread_mutex_unlock(&rc_g.lock);
		if (room)
			return 0;
		struct ferryi_rc_ent **p = malloc(cap * sizeof(*p)), **drop = p;
		if (!p)
			return FERRY_ENOMEM;
		pthread_mutex_lock(&rc_g.lock);
		if (cap > rc_g.cap) {
			if (rc_g.n) /* the first index is NULL: memcpy's arguments must not be */
				memcpy(p, rc_g.idx, rc_g.n * sizeof(*p));
			drop = rc_g.idx;
			rc_g.idx = p;
			rc_g.cap = cap;
		}
		pthread_mutex_unlock(&rc_g.lock);
		free(drop);
	}
}

/* Inserts e; false when there is no room (see idx_reserve). */
static bool idx_insert(struct ferryi_rc_ent *e)
{
	if (rc_g.n == rc_g.cap)
		return false;
	size_t i = idx_lower(e->start);
	memmove(rc_g.idx + i + 1, rc_g.idx + i, (rc_g.n - i) * sizeof(*rc_g.idx));
	rc_g.idx[i] = e;
	rc_g.n++;
	if (e->end - e->start > rc_g.max_len)
		rc_g.max_len = e->end - e->start;
	e->valid = true;
	return true;
}

static void idx_remove(struct ferryi_rc_ent *e)
{
	for (size_t i = idx_lower(e->start); i < rc_g.n && rc_g.idx[i]->start == e->start; i++) {
		if (rc_g.idx[i] != e)
			continue;
		memmove(rc_g.idx + i, rc_g.idx + i + 1, (rc_g.n - i - 1) * sizeof(*rc_g.idx));
		rc_g.n--;
		break;
	}
	if (rc_g.n == 0)
		rc_g.max_len = 0;
	e->valid = false;
}

static struct ferryi_rc_ent *idx_find(struct ferryi_rcache *rc, uintptr_t s, uintptr_t e,
				      unsigned access)
{
	for (size_t i = idx_first_reaching(e); i < rc_g.n && rc_g.idx[i]->start <= s; i++) {
		struct ferryi_rc_ent *x = rc_g.idx[i];
		if (x->rc == rc && x->mr && x->end >= e && (x->mr->access & access) == access)
			return x;
	}
	return NULL;
}

/* ------------------------------------------------------------------ userfaultfd */

static int uffd_register(uintptr_t s, uintptr_t e)
{
	struct uffdio_register r = {
		.range = { .start = s, .len = e - s },
		.mode = UFFDIO_REGISTER_MODE_WP,
	};
	return ioctl(rc_g.uffd, UFFDIO_REGISTER, &r) == 0 ? 0 : -errno;
}

static void uffd_unregister(uintptr_t s, uintptr_t e)
{
	struct uffdio_range r = { .start = s, .len = e - s };
	if (s < e)
		(void)ioctl(rc_g.uffd, UFFDIO_UNREGISTER, &r); /* gone already: fine */
}

/* Stops watching the pages of [s, e) that no entry left in the index covers. */
static void uffd_unregister_uncovered(uintptr_t s, uintptr_t e)
{
	uintptr_t cur = s;
	for (size_t i = idx_first_reaching(s); i < rc_g.n && rc_g.idx[i]->start < e; i++) {
		struct ferryi_rc_ent *x = rc_g.idx[i];
		if (x->end <= cur)
			continue;
		if (x->start > cur)
			uffd_unregister(cur, x->start);
		cur = x->end;
		if (cur >= e)
			return;
	}
	uffd_unregister(cur, e);
}

/* Monitor thread, rc_g.lock held: the pages [a, b) changed mapping. */
static void rc_invalidate(uintptr_t a, uintptr_t b)
{
	size_t i = idx_first_reaching(a);
	while (i < rc_g.n && rc_g.idx[i]->start < b) {
		struct ferryi_rc_ent *x = rc_g.idx[i];
		if (x->end <= a) {
			i++;
			continue;
		}
		struct ferryi_rcache *rc = x->rc;
		idx_remove(x); /* the next candidate moves to position i */
		rc->invalidations++;
		rc->bytes -= x->end - x->start;
		rc->entries--;
		if (x->users == 0) {
			ferryi_list_remove(&x->link);
			ferryi_list_push_back(&rc->dead, &x->link);
			atomic_store(&rc->dead_pending, true);
		}
	}
}

static void *rc_monitor(void *arg)
{
	struct pollfd fds[2] = {
		{ .fd = rc_g.uffd, .events = POLLIN },
		{ .fd = rc_g.stop_fd, .events = POLLIN },
	};
	struct uffd_msg msgs[32];
	(void)arg;
	(void)prctl(PR_SET_NAME, "ferry-regcache");
	for (;;) {
		if (poll(fds, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			FERRYI_ERR(NULL, "registration cache monitor: poll: %s; stopping",
				   strerror(errno));
			return NULL;
		}
		if (fds[1].revents)
			return NULL;
		/* Read and apply under the lock: see the notes at the top. */
		pthread_mutex_lock(&rc_g.lock);
		for (;;) {
			ssize_t n = read(rc_g.uffd, msgs, sizeof(msgs));
			if (n <= 0)
				break; /* EAGAIN: drained (EINTR: poll again) */
			for (size_t k = 0; k < (size_t)n / sizeof(msgs[0]); k++) {
				const struct uffd_msg *m = &msgs[k];
				switch (m->event) {
				case UFFD_EVENT_UNMAP:
				case UFFD_EVENT_REMOVE:
					rc_invalidate(m->arg.remove.start, m->arg.remove.end);
					break;
				case UFFD_EVENT_REMAP:
					rc_invalidate(m->arg.remap.from,
						      m->arg.remap.from + m->arg.remap.len);
					break;
				case UFFD_EVENT_PAGEFAULT: {
					/* Never write-protected by us; release the thread anyway. */
					uintptr_t pg = m->arg.pagefault.address & ~(rc_page_size() - 1);
					struct uffdio_writeprotect wp = {
						.range = { .start = pg, .len = rc_page_size() },
						.mode = 0,
					};
					(void)ioctl(rc_g.uffd, UFFDIO_WRITEPROTECT, &wp);
					break;
				}
				default:
					break;
				}
			}
		}
		pthread_mutex_unlock(&rc_g.lock);
	}
}

/* Opens the userfaultfd and checks write-protect registration of anonymous memory. */
static int rc_monitor_open(const char **why)
{
	int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
	if (fd < 0 && errno == EINVAL) /* before Linux 5.11: no user-mode-only flag */
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd < 0) {
		*why = "userfaultfd";
		return -errno;
	}
	struct uffdio_api api = {
		.api = UFFD_API,
		.features = UFFD_FEATURE_EVENT_UNMAP | UFFD_FEATURE_EVENT_REMOVE |
			    UFFD_FEATURE_EVENT_REMAP,
	};
	if (ioctl(fd, UFFDIO_API, &api) < 0) {
		int err = -errno;
		*why = "UFFDIO_API with the unmap, remove and remap events";
		close(fd);
		return err;
	}
	rc_g.uffd = fd;
	void *pg = mmap(NULL, rc_page_size(), PROT_READ | PROT_WRITE,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	int rc = pg == MAP_FAILED ? -errno : uffd_register((uintptr_t)pg,
							   (uintptr_t)pg + rc_page_size());
	if (pg != MAP_FAILED) {
		if (rc == 0)
			uffd_unregister((uintptr_t)pg, (uintptr_t)pg + rc_page_size());
		munmap(pg, rc_page_size());
	}
	if (rc < 0) {
		*why = "write-protect registration of anonymous memory";
		rc_g.uffd = -1;
		close(fd);
		return rc;
	}
	return 0;
}

/*
 * A forked child has the parent's userfaultfd, bound to the parent's address space,
 * and no monitor thread: it starts afresh (contexts copied from the parent find an
 * empty index and register per operation).
 */
static void rc_atfork_child(void)
{
	pthread_mutex_init(&rc_g.lock, NULL);
	pthread_mutex_init(&rc_g.life, NULL);
	if (rc_g.uffd >= 0)
		close(rc_g.uffd);
	if (rc_g.stop_fd >= 0)
		close(rc_g.stop_fd);
	rc_g.uffd = rc_g.stop_fd = -1;
	rc_g.users = 0;
	rc_g.epoch++;
	rc_g.idx = NULL; /* the parent's entries: not ours to free */
	rc_g.n = rc_g.cap = 0;
	rc_g.max_len = 0;
}

static void rc_atfork_once(void)
{
	(void)pthread_atfork(NULL, NULL, rc_atfork_child);
}

static int rc_monitor_acquire(struct ferry_ctx *ctx, unsigned *epoch)
{
	static pthread_once_t once = PTHREAD_ONCE_INIT;
	int rc = 0;
	pthread_once(&once, rc_atfork_once);
	pthread_mutex_lock(&rc_g.life);
	if (rc_g.users == 0) {
		const char *why = "";
		rc = rc_monitor_open(&why);
		if (rc < 0) {
			FERRYI_INFO(ctx, "registration cache off: %s unavailable (%s); internal "
				    "registrations are made per operation", why, strerror(-rc));
			goto out;
		}
		rc_g.stop_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (rc_g.stop_fd < 0 || pthread_create(&rc_g.thread, NULL, rc_monitor, NULL) != 0) {
			rc = FERRY_ENOMEM;
			FERRYI_INFO(ctx, "registration cache off: cannot start its monitor thread");
			if (rc_g.stop_fd >= 0)
				close(rc_g.stop_fd);
			close(rc_g.uffd);
			rc_g.stop_fd = rc_g.uffd = -1;
			goto out;
		}
	}
	rc_g.users++;
	*epoch = rc_g.epoch;
out:
	pthread_mutex_unlock(&rc_g.life);
	return rc;
}

static void rc_monitor_release(unsigned epoch)
{
	pthread_mutex_lock(&rc_g.life);
	if (epoch != rc_g.epoch || rc_g.users == 0) {
		/* A context the parent created, destroyed in a forked child. */
		pthread_mutex_unlock(&rc_g.life);
		return;
	}
	if (--rc_g.users == 0) {
		uint64_t one = 1;
		(void)!write(rc_g.stop_fd, &one, sizeof(one));
		pthread_join(rc_g.thread, NULL);
		close(rc_g.stop_fd);
		close(rc_g.uffd); /* drops every registration left */
		rc_g.stop_fd = rc_g.uffd = -1;
		free(rc_g.idx);
		rc_g.idx = NULL;
		rc_g.n = rc_g.cap = 0;
	}
	pthread_mutex_unlock(&rc_g.life);
}

/* ------------------------------------------------------------------ the cache */

/* Whether this process may pin memory beyond RLIMIT_MEMLOCK (CAP_IPC_LOCK). */
static bool rc_cap_ipc_lock(void)
{
	char line[256];
	bool cap = false;
	FILE *f = fopen("/proc/self/status", "re");
	if (!f)
		return false;
	while (fgets(line, sizeof(line), f)) {
		unsigned long long eff;
		if (sscanf(line, "CapEff: %llx", &eff) == 1) {
			cap = (eff >> 14) & 1; /* CAP_IPC_LOCK */
			break;
		}
	}
	fclose(f);
	return cap;
}

/*
 * Cached registrations stay pinned: under a locked-memory limit the default lets them
 * use a quarter of it, so user regions and the providers' own buffers still fit.
 */
static uint64_t rc_default_bytes(struct ferry_ctx *ctx, uint64_t dflt)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_MEMLOCK, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur / 4 >= dflt || rc_cap_ipc_lock())
		return dflt;
	FERRYI_DBG(ctx, "registration cache: RLIMIT_MEMLOCK is %llu bytes: caching at most a "
		   "quarter of it", (unsigned long long)rl.rlim_cur);
	return rl.rlim_cur / 4;
}

void ferryi_regcache_init(struct ferry_ctx *ctx)
{
	struct ferryi_config_ext x;
	ferryi_config_ext_init(&x);
	const char *env = getenv("FERRY_REG_CACHE_BYTES");
	if (!env || !env[0])
		x.reg_cache_bytes = rc_default_bytes(ctx, x.reg_cache_bytes);
	(void)ferryi_config_ext_from_env(&x); /* a bad value is logged and ignored */
	ctx->rcache = NULL;
	ctx->rcache_state = FERRYI_RC_OFF;
	if (!x.reg_cache_bytes || !x.reg_cache_entries) {
		FERRYI_DBG(ctx, "registration cache off (FERRY_REG_CACHE_BYTES=%llu, "
			   "FERRY_REG_CACHE_ENTRIES=%u)", (unsigned long long)x.reg_cache_bytes,
			   x.reg_cache_entries);
		return;
	}
	struct ferryi_rcache *rc = calloc(1, sizeof(*rc));
	if (!rc)
		return;
	if (rc_monitor_acquire(ctx, &rc->epoch) < 0) {
		free(rc);
		ctx->rcache_state = FERRYI_RC_UNAVAILABLE;
		return;
	}
	rc->ctx = ctx;
	rc->max_bytes = x.reg_cache_bytes;
	rc->max_entries = x.reg_cache_entries;
	ferryi_list_init(&rc->lru);
	ferryi_list_init(&rc->dead);
	atomic_init(&rc->dead_pending, false);
	ctx->rcache = rc;
	ctx->rcache_state = FERRYI_RC_ON;
	FERRYI_DBG(ctx, "registration cache: %llu bytes, %llu regions",
		   (unsigned long long)rc->max_bytes, (unsigned long long)rc->max_entries);
}

/* Deregisters an entry that left the cache (ctx lock held, rc_g.lock not). */
static void ent_destroy(struct ferryi_rc_ent *e)
{
	ferryi_mr_dereg_locked(e->mr);
	ferryi_mr_unref(e->mr);
	free(e);
}

static void rc_destroy_list(struct ferryi_list *l)
{
	struct ferryi_list_node *n;
	while ((n = ferryi_list_pop_front(l)))
		ent_destroy(ferryi_container_of(n, struct ferryi_rc_ent, link));
}

void ferryi_regcache_progress(struct ferry_ctx *ctx)
{
	struct ferryi_rcache *rc = ctx->rcache;
	struct ferryi_list todo;
	if (!rc || !atomic_load_explicit(&rc->dead_pending, memory_order_acquire))
		return;
	ferryi_list_init(&todo);
	pthread_mutex_lock(&rc_g.lock);
	atomic_store(&rc->dead_pending, false);
	struct ferryi_list_node *n;
	while ((n = ferryi_list_pop_front(&rc->dead)))
		ferryi_list_push_back(&todo, n);
	pthread_mutex_unlock(&rc_g.lock);
	rc_destroy_list(&todo);
}

void ferryi_regcache_fini(struct ferry_ctx *ctx)
{
	struct ferryi_rcache *rc = ctx->rcache;
	struct ferryi_list todo;
	if (!rc)
		return;
	ferryi_list_init(&todo);
	pthread_mutex_lock(&rc_g.lock);
	for (size_t i = 0; i < rc_g.n;) {
		struct ferryi_rc_ent *e = rc_g.idx[i];
		if (e->rc != rc) {
			i++;
			continue;
		}
		idx_remove(e);
		uffd_unregister_uncovered(e->start, e->end);
		if (e->users)
			FERRYI_ERR(ctx, "BUG: cached region %p in use at context destroy",
				   (void *)e->start);
		if (ferryi_node_linked(&e->link))
			ferryi_list_remove(&e->link);
		ferryi_list_push_back(&todo, &e->link);
	}
	struct ferryi_list_node *n;
	while ((n = ferryi_list_pop_front(&rc->dead)))
		ferryi_list_push_back(&todo, n);
	pthread_mutex_unlock(&rc_g.lock);
	rc_destroy_list(&todo);
	unsigned epoch = rc->epoch;
	ctx->rcache = NULL;
	free(rc);
	rc_monitor_release(epoch);
}

/*
 * Makes room for len more bytes: evicts unused entries, oldest first (rc_g.lock). When
 * even evicting every unused entry would not do (the rest is in use), evicts nothing.
 */
static bool rc_make_room(struct ferryi_rcache *rc, uint64_t len, struct ferryi_list *victims)
{
	if (rc->bytes + len <= rc->max_bytes && rc->entries + 1 <= rc->max_entries)
		return true;
	uint64_t idle_bytes = 0, idle = 0;
	struct ferryi_list_node *it, *tmp;
	ferryi_list_foreach_safe(&rc->lru, it, tmp) {
		struct ferryi_rc_ent *e = ferryi_container_of(it, struct ferryi_rc_ent, link);
		idle_bytes += e->end - e->start;
		idle++;
	}
	if (rc->bytes - idle_bytes + len > rc->max_bytes ||
	    rc->entries - idle + 1 > rc->max_entries)
		return false;
	while (rc->bytes + len > rc->max_bytes || rc->entries + 1 > rc->max_entries) {
		struct ferryi_list_node *n = ferryi_list_pop_front(&rc->lru);
		if (!n)
			return false; /* the rest is in use */
		struct ferryi_rc_ent *e = ferryi_container_of(n, struct ferryi_rc_ent, link);
		idx_remove(e);
		uffd_unregister_uncovered(e->start, e->end);
		rc->bytes -= e->end - e->start;
		rc->entries--;
		rc->evictions++;
		ferryi_list_push_back(victims, &e->link);
	}
	return true;
}

int ferryi_regcache_get(struct ferry_ctx *ctx, void *addr, size_t len, unsigned access,
			struct ferry_mr **out)
{
	struct ferryi_rcache *rc = ctx->rcache;
	struct ferryi_list victims;
	struct ferryi_rc_ent *e;
	int rc_err;

	if (!rc || !len)
		return 1;
	ferryi_regcache_progress(ctx);
	uintptr_t ps = rc_page_size();
	uintptr_t s = (uintptr_t)addr & ~(ps - 1);
	if ((uintptr_t)addr + len < (uintptr_t)addr || (uintptr_t)addr + len > UINTPTR_MAX - ps)
		return 1;
	uintptr_t end = ((uintptr_t)addr + len + ps - 1) & ~(ps - 1);

	pthread_mutex_lock(&rc_g.lock);
	e = idx_find(rc, s, end, access);
	if (e) {
		if (e->users++ == 0) {
			ferryi_list_remove(&e->link);
			rc->busy++;
		}
		rc->hits++;
		pthread_mutex_unlock(&rc_g.lock);
		if (e->hidden) {
			/* Only a key collision or no memory can refuse it: use it uncached. */
			if (ferryi_hmap_insert(&ctx->mr_by_key, &e->mr->hnode) < 0) {
				ferryi_mr_ref(e->mr);
				ferryi_regcache_put(e->mr);
				return 1;
			}
			e->hidden = false;
		}
		ferryi_mr_ref(e->mr);
		*out = e->mr;
		return 0;
	}
	rc->misses++;
	bool cacheable = end - s <= rc->max_bytes;
	pthread_mutex_unlock(&rc_g.lock);
	if (!cacheable)
		goto uncached;

	/* Allocations happen outside the lock: see the notes at the top. */
	e = calloc(1, sizeof(*e));
	if (!e || idx_reserve() < 0) {
		free(e);
		return FERRY_ENOMEM;
	}
	ferryi_list_init(&victims);
	pthread_mutex_lock(&rc_g.lock);
	if (rc_g.n == rc_g.cap || !rc_make_room(rc, end - s, &victims)) {
		pthread_mutex_unlock(&rc_g.lock);
		rc_destroy_list(&victims);
		free(e);
		goto uncached;
	}
	/*
	 * Watch first, then publish a pending entry, then pin without the lock: an unmap
	 * racing with the pinning invalidates the pending entry, and we see it below.
	 */
	rc_err = uffd_register(s, end);
	if (rc_err < 0) {
		pthread_mutex_unlock(&rc_g.lock);
		rc_destroy_list(&victims);
		free(e);
		/* File-backed, another monitor's (EBUSY), not mapped: not cacheable. */
		FERRYI_DBG(ctx, "registration cache: %p+%zu cannot be watched (%s): registered "
			   "for this operation only", addr, len, strerror(-rc_err));
		goto uncached;
	}
	e->rc = rc;
	e->start = s;
	e->end = end;
	e->users = 1;
	(void)idx_insert(e); /* room checked above, under this hold of the lock */
	rc->bytes += end - s;
	rc->entries++;
	rc->busy++;
	pthread_mutex_unlock(&rc_g.lock);
	rc_destroy_list(&victims);

	struct ferry_mr *mr = NULL;
	rc_err = ferryi_mr_reg_locked(ctx, (void *)s, end - s, access, true, &mr);
	pthread_mutex_lock(&rc_g.lock);
	bool stale = !e->valid;
	if (rc_err == 0 && !stale) {
		e->mr = mr;
		pthread_mutex_unlock(&rc_g.lock);
		mr->cache_ent = e;
		ferryi_mr_ref(mr);
		*out = mr;
		return 0;
	}
	if (!stale) {
		idx_remove(e);
		uffd_unregister_uncovered(s, end);
		rc->bytes -= end - s;
		rc->entries--;
	}
	rc->busy--;
	pthread_mutex_unlock(&rc_g.lock);
	free(e);
	if (rc_err < 0)
		return rc_err;
	/* The memory changed while it was being pinned: what is mapped now, uncached. */
	ferryi_mr_dereg_locked(mr);
	ferryi_mr_unref(mr);
uncached:
	pthread_mutex_lock(&rc_g.lock);
	rc->uncached++;
	pthread_mutex_unlock(&rc_g.lock);
	return 1;
}

void ferryi_regcache_put(struct ferry_mr *mr)
{
	struct ferryi_rc_ent *e = mr->cache_ent;
	struct ferry_ctx *ctx = mr->ctx;
	bool hide = false, destroy = false;

	pthread_mutex_lock(&rc_g.lock);
	if (--e->users == 0) {
		e->rc->busy--;
		if (e->valid) {
			ferryi_list_push_back(&e->rc->lru, &e->link);
			hide = true;
		} else {
			destroy = true;
		}
	}
	pthread_mutex_unlock(&rc_g.lock);
	if (hide && !e->hidden) {
		ferryi_hmap_remove(&ctx->mr_by_key, &mr->hnode);
		e->hidden = true;
	}
	ferryi_mr_unref(mr); /* the caller's reference; the entry keeps its own */
	if (destroy)
		ent_destroy(e);
}

uint64_t ferryi_regcache_busy(struct ferry_ctx *ctx)
{
	struct ferryi_rcache *rc = ctx->rcache;
	if (!rc)
		return 0;
	pthread_mutex_lock(&rc_g.lock);
	uint64_t n = rc->busy;
	pthread_mutex_unlock(&rc_g.lock);
	return n;
}

void ferryi_regcache_stats(struct ferry_ctx *ctx, struct ferry_stats *st)
{
	struct ferryi_rcache *rc = ctx->rcache;
	st->reg_cache_state = ctx->rcache_state;
	if (!rc)
		return;
	pthread_mutex_lock(&rc_g.lock);
	st->reg_cache_hits = rc->hits;
	st->reg_cache_misses = rc->misses;
	st->reg_cache_evictions = rc->evictions;
	st->reg_cache_invalidations = rc->invalidations;
	st->reg_cache_uncached = rc->uncached;
	st->reg_cache_bytes = rc->bytes;
	st->reg_cache_entries = rc->entries;
	pthread_mutex_unlock(&rc_g.lock);
}
