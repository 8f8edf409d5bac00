/*
 * util.h - intrusive containers used across the core and providers: a circular
 * doubly-linked list and a 64-bit-keyed open hash map of intrusive nodes.
 */
#ifndef FERRY_LIB_UTIL_H
#define FERRY_LIB_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define ferryi_container_of(ptr, type, member)                                       \
	((type *)(void *)((char *)(ptr)-offsetof(type, member)))

#define FERRYI_MIN(a, b) ((a) < (b) ? (a) : (b))
#define FERRYI_MAX(a, b) ((a) > (b) ? (a) : (b))
#define FERRYI_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* ------------------------------------------------------------------ list */

struct ferryi_list_node {
	struct ferryi_list_node *next, *prev;
};

struct ferryi_list {
	struct ferryi_list_node head;
};

static inline void ferryi_list_init(struct ferryi_list *l)
{
	l->head.next = l->head.prev = &l->head;
}

static inline void ferryi_node_init(struct ferryi_list_node *n)
{
	n->next = n->prev = NULL;
}

static inline bool ferryi_node_linked(const struct ferryi_list_node *n)
{
	return n->next != NULL;
}

static inline bool ferryi_list_empty(const struct ferryi_list *l)
{
	return l->head.next == &l->head;
}

static inline void ferryi_list_insert_before_(struct ferryi_list_node *pos,
					      struct ferryi_list_node *n)
{
	n->next = pos;
	n->prev = pos->prev;
	pos->prev->next = n;
	pos->prev = n;
}

static inline void ferryi_list_push_back(struct ferryi_list *l, struct ferryi_list_node *n)
{
	ferryi_list_insert_before_(&l->head, n);
}

static inline void ferryi_list_push_front(struct ferryi_list *l, struct ferryi_list_node *n)
{
	ferryi_list_insert_before_(l->head.next, n);
}

static inline void ferryi_list_remove(struct ferryi_list_node *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = NULL;
}

static inline struct ferryi_list_node *ferryi_list_first(const struct ferryi_list *l)
{
	return ferryi_list_empty(l) ? NULL : l->head.next;
}

static inline struct ferryi_list_node *ferryi_list_pop_front(struct ferryi_list *l)
{
	struct ferryi_list_node *n = ferryi_list_first(l);
	if (n)
		ferryi_list_remove(n);
	return n;
}

/* Iterate safely against removal of the current node. */
#define ferryi_list_foreach_safe(l, n, tmp)                                          \
	for ((n) = (l)->head.next, (tmp) = (n)->next; (n) != &(l)->head;             \
	     (n) = (tmp), (tmp) = (n)->next)

/* ------------------------------------------------------------------ hash map */

/*
 * Map of uint64_t keys to intrusive nodes; open addressing with linear probing and
 * backward-shift deletion. Keys are expected to be random already (rkeys) or are
 * mixed (ferryi_hash64). No allocation on lookup.
 */
struct ferryi_hnode {
	uint64_t key;
};

struct ferryi_hmap {
	struct ferryi_hnode **slots;
	size_t cap; /* power of two, or 0 */
	size_t count;
};

void ferryi_hmap_init(struct ferryi_hmap *m);
void ferryi_hmap_fini(struct ferryi_hmap *m);
/* Returns 0, FERRY_EEXIST or FERRY_ENOMEM. */
int ferryi_hmap_insert(struct ferryi_hmap *m, struct ferryi_hnode *n);
struct ferryi_hnode *ferryi_hmap_find(const struct ferryi_hmap *m, uint64_t key);
/* Removes the node with n's key if it is n itself. */
void ferryi_hmap_remove(struct ferryi_hmap *m, struct ferryi_hnode *n);

uint64_t ferryi_hash64(uint64_t x);
uint64_t ferryi_hash_str(const char *s);

/* ------------------------------------------------------------------ misc */

/*
 * Zeroes n bytes through libc's memset, never the compiler's inline expansion: for a
 * constant size of a few hundred bytes gcc's generic tuning emits `rep stosq`, whose
 * start-up cost (about 57 cycles for 272 bytes on this project's Xeons, against 14 for
 * libc's vector memset) was the largest single cost of posting an operation. The
 * volatile pointer keeps the call a call.
 */
static inline void ferryi_zero(void *p, size_t n)
{
	static void *(*volatile const zero_fn)(void *, int, size_t) = memset;
	zero_fn(p, 0, n);
}

/* 64 random bits from the kernel's CSPRNG (getrandom); never fails silently. */
uint64_t ferryi_random64(void);
void ferryi_random_fill(void *buf, size_t len);

/*
 * Little-endian stores/loads for wire formats. One unaligned access each (memcpy), not
 * a byte loop: every frame header goes through these, and gcc -O2 kept the loops as
 * loops (about 180 instructions per ofi header decoded, as many to encode).
 */
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
#define FERRYI_LE16(v) __builtin_bswap16(v)
#define FERRYI_LE32(v) __builtin_bswap32(v)
#define FERRYI_LE64(v) __builtin_bswap64(v)
#else
#define FERRYI_LE16(v) (v)
#define FERRYI_LE32(v) (v)
#define FERRYI_LE64(v) (v)
#endif
static inline void ferryi_put_le16(uint8_t *p, uint16_t v)
{
	v = FERRYI_LE16(v);
	memcpy(p, &v, sizeof(v));
}
static inline void ferryi_put_le32(uint8_t *p, uint32_t v)
{
	v = FERRYI_LE32(v);
	memcpy(p, &v, sizeof(v));
}
static inline void ferryi_put_le64(uint8_t *p, uint64_t v)
{
	v = FERRYI_LE64(v);
	memcpy(p, &v, sizeof(v));
}
static inline uint16_t ferryi_get_le16(const uint8_t *p)
{
	uint16_t v;
	memcpy(&v, p, sizeof(v));
	return FERRYI_LE16(v);
}
static inline uint32_t ferryi_get_le32(const uint8_t *p)
{
	uint32_t v;
	memcpy(&v, p, sizeof(v));
	return FERRYI_LE32(v);
}
static inline uint64_t ferryi_get_le64(const uint8_t *p)
{
	uint64_t v;
	memcpy(&v, p, sizeof(v));
	return FERRYI_LE64(v);
}

#endif /* FERRY_LIB_UTIL_H */
