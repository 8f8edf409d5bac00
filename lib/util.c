/*
 * util.c - the open-addressing hash map, hashes and kernel randomness.
 *
 * Hash map: slots hold pointers to intrusive nodes, so the map never owns or copies
 * the objects. Linear probing from hash64(key); the table doubles before it passes
 * 70% load, which keeps probe sequences short. Deletion shifts later members of the
 * cluster back instead of leaving tombstones, so lookups never slow down with churn
 * and a NULL slot always ends a search.
 */
#include "core.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <unistd.h>

#define HMAP_MIN_CAP 8
/* Grow when count would exceed 7/10 of cap. */
#define HMAP_LOAD_NUM 7
#define HMAP_LOAD_DEN 10

uint64_t ferryi_hash64(uint64_t x)
{
	/* splitmix64's finaliser: every input bit affects every output bit. */
	x ^= x >> 30;
	x *= UINT64_C(0xbf58476d1ce4e5b9);
	x ^= x >> 27;
	x *= UINT64_C(0x94d049bb133111eb);
	x ^= x >> 31;
	return x;
}

uint64_t ferryi_hash_str(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325); /* FNV-1a 64 offset basis */

	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		h ^= *p;
		h *= UINT64_C(0x100000001b3);
	}
	return h;
}

void ferryi_hmap_init(struct ferryi_hmap *m)
{
	m->slots = NULL;
	m->cap = 0;
	m->count = 0;
}

void ferryi_hmap_fini(struct ferryi_hmap *m)
{
	free(m->slots);
	ferryi_hmap_init(m);
}

static size_t hmap_home(size_t cap, uint64_t key)
{
	return (size_t)ferryi_hash64(key) & (cap - 1);
}

/* Places n in the first free slot of its probe sequence; the key is known absent. */
static void hmap_place(struct ferryi_hnode **slots, size_t cap, struct ferryi_hnode *n)
{
	size_t i = hmap_home(cap, n->key);

	while (slots[i])
		i = (i + 1) & (cap - 1);
	slots[i] = n;
}

static int hmap_grow(struct ferryi_hmap *m)
{
	size_t ncap = m->cap ? m->cap * 2 : HMAP_MIN_CAP;
	struct ferryi_hnode **ns;

	if (ncap < m->cap || ncap > SIZE_MAX / sizeof(*ns))
		return FERRY_ENOMEM;
	ns = calloc(ncap, sizeof(*ns));
	if (!ns)
		return FERRY_ENOMEM;
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i])
			hmap_place(ns, ncap, m->slots[i]);
	free(m->slots);
	m->slots = ns;
	m->cap = ncap;
	return 0;
}

/* The slot holding key, or cap if absent. */
static size_t hmap_lookup(const struct ferryi_hmap *m, uint64_t key)
{
	if (m->cap == 0)
		return 0;
	for (size_t i = hmap_home(m->cap, key);; i = (i + 1) & (m->cap - 1)) {
		if (!m->slots[i])
			return m->cap;
		if (m->slots[i]->key == key)
			return i;
	}
}

int ferryi_hmap_insert(struct ferryi_hmap *m, struct ferryi_hnode *n)
{
	if (hmap_lookup(m, n->key) < m->cap)
		return FERRY_EEXIST;
	/* Check before inserting, so the table never holds more than 70% at rest. */
	if ((m->count + 1) * HMAP_LOAD_DEN > m->cap * HMAP_LOAD_NUM) {
		int rc = hmap_grow(m);
		if (rc < 0)
			return rc;
	}
	hmap_place(m->slots, m->cap, n);
	m->count++;
	return 0;
}

struct ferryi_hnode *ferryi_hmap_find(const struct ferryi_hmap *m, uint64_t key)
{
	size_t i = hmap_lookup(m, key);

	return i < m->cap ? m->slots[i] : NULL;
}

void ferryi_hmap_remove(struct ferryi_hmap *m, struct ferryi_hnode *n)
{
	size_t mask = m->cap - 1;
	size_t hole = hmap_lookup(m, n->key);

	if (hole >= m->cap || m->slots[hole] != n)
		return;
	m->slots[hole] = NULL;
	m->count--;

	/*
	 * Backward shift: walk the rest of the cluster; a member may move into the hole
	 * when the hole lies on its probe path, i.e. is no further from its home slot
	 * than its current slot is.
	 */
	for (size_t j = (hole + 1) & mask; m->slots[j]; j = (j + 1) & mask) {
		size_t home = hmap_home(m->cap, m->slots[j]->key);
		if (((j - home) & mask) >= ((j - hole) & mask)) {
			m->slots[hole] = m->slots[j];
			m->slots[j] = NULL;
			hole = j;
		}
	}
}

/* ------------------------------------------------------------------ randomness */

static void rand_fill_urandom(void *buf, size_t len)
{
	unsigned char *p = buf;
	int fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "ferry: no kernel randomness (getrandom and /dev/urandom: %s)\n",
			strerror(errno));
		abort();
	}
	while (len > 0) {
		ssize_t n = read(fd, p, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			fprintf(stderr, "ferry: reading /dev/urandom failed: %s\n",
				n < 0 ? strerror(errno) : "end of file");
			abort();
		}
		p += n;
		len -= (size_t)n;
	}
	close(fd);
}

void ferryi_random_fill(void *buf, size_t len)
{
	unsigned char *p = buf;

	/*
	 * Keys handed to peers must be unguessable, so there is no weak fallback: either
	 * the kernel CSPRNG answers or the process stops rather than hand out a
	 * predictable key.
	 */
	while (len > 0) {
		ssize_t n = getrandom(p, len, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			/* Kernels older than 3.17, or seccomp filters that deny the call. */
			if (errno == ENOSYS || errno == EPERM) {
				rand_fill_urandom(p, len);
				return;
			}
			fprintf(stderr, "ferry: getrandom failed: %s\n", strerror(errno));
			abort();
		}
		p += n;
		len -= (size_t)n;
	}
}

uint64_t ferryi_random64(void)
{
	uint64_t v;
	ferryi_random_fill(&v, sizeof(v));
	return v;
}
