/*
 * fuzz_core_msg.c - the core's message receive path (ferryi_rx_msg: matching, the
 * unexpected queue, rendezvous announces with their rkey blobs, finishes, credit,
 * probes, goodbyes) on a real connected endpoint.
 *
 * Per input one context holds both ends of a TCP loopback connection: `a` (connected)
 * and `b` (accepted). Fuzzed core messages are injected into b with ferryi_rx_msg, as
 * a provider does once it has a whole message; what b sends in return (credit, FIN,
 * probe answers, rendezvous reads) travels to a over the real socket, so rendezvous
 * reads that name a real region really move data.
 *
 * Input: a sequence of records, each an opcode byte and its fields (little-endian;
 * missing bytes read as 0):
 *   0x00-0x7f  inject into b: type = op & 0x0f (0 and 8..15 are unknown types),
 *              flags u8, tag u64, aux u64, len u16, then len payload bytes (fewer if
 *              the input ends). aux = 0xFEEDF00D_000000kk names the k-th recorded
 *              op id (see 0x82, 0x83); FZKEYRW1 in a payload becomes the key of a
 *              64 KiB region with remote read + write.
 *   0x80  b posts a receive: tag u64, mask u64, size u16 (<= 16 KiB)
 *   0x81  b sends eager: tag u64, len u16 (<= 4 KiB)
 *   0x82  b sends by rendezvous: tag u64, len u16 * 8 + 4097; its id is recorded
 *   0x83  a sends to b: tag u64, len u16 * 4 (eager or rendezvous); id recorded
 *   0x84  a posts a receive: tag u64, mask u64, size u16 (<= 16 KiB)
 *   0x85  progress passes: count u8 % 8 + 1
 *   0x86  poll the completion queue
 *   0x87  b is closed by the user
 *   0x88  the (fake) clock advances by u16 ms, then one progress pass
 *   0x89  posts from now on carry timeout_ms = u16 (0 = none)
 *   0x8a  b writes (dir u8 even) or reads (odd) u16 bytes at offset u32 of the
 *         64 KiB region through its rkey: a is the target
 *   other no-op
 * The context runs on a fake clock that only 0x88 moves, so deadlines are
 * reproducible.
 *
 * At the end both endpoints are closed and the context driven until they are freed.
 * Checked: every op the harness posted completed exactly once, nothing is left in
 * flight (op slots, internal regions), no endpoint is left alive.
 */
#include "fuzz_common.h"
#include "regcache.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EAGER_MAX 4096u
#define REGION_LEN (64u * 1024u)
#define RECV_MAX (16u * 1024u)
#define MAX_RECVS 8
#define MAX_TRACK 48
#define MAX_IDS 8
#define SETTLE_ROUNDS 5000
#define ID_SELECTOR 0xFEEDF00Du

struct track {
	int posted, completed;
};

static struct {
	struct ferry_ctx *ctx;
	struct ferry_listener *l;
	char uri[256];
	struct ferry_mr *mr;
	struct ferry_rkey *rk;   /* the region's key, as a peer would unpack it */
	uint32_t base_mrs;
	uint64_t now_ns;         /* the fake clock                              */
	uint32_t timeout_ms;     /* attached to posts (0x89)                    */
	struct track track[MAX_TRACK];
	int ntrack;
	bool trace; /* FERRY_FUZZ_TRACE set: print each record */
	/* FERRY_FUZZ_SKIP (fz_skip): steer around known bugs, for campaigns */
	bool skip_goodbye_reenter, skip_rts_overflow;
} S;

static uint8_t region[REGION_LEN];
static uint8_t recv_bufs[2 * MAX_RECVS][RECV_MAX];
static uint8_t send_buf[8 * 65536 + 8192];
static uint8_t rma_buf[65536];

static uint64_t fake_clock(void *arg)
{
	(void)arg;
	return S.now_ns;
}

static const struct ferry_op_attr *attr(void)
{
	static struct ferry_op_attr a;

	a.timeout_ms = S.timeout_ms;
	return S.timeout_ms ? &a : NULL;
}

struct reader {
	const uint8_t *p, *end;
};

static uint64_t rd(struct reader *r, int bytes)
{
	uint64_t v = 0;

	for (int i = 0; i < bytes; i++) {
		uint64_t b = r->p < r->end ? *r->p++ : 0;

		v |= b << (8 * i);
	}
	return v;
}

static void tweak(struct ferry_config *cfg)
{
	cfg->eager_max = EAGER_MAX;
	cfg->max_frame = 1u << 20;
	cfg->unexpected_max = 256 * 1024;
}

static uint32_t count_mrs(void)
{
	uint32_t n = 0;
	struct ferryi_list_node *it;

	ferryi_ctx_lock(S.ctx);
	/* Regions the registration cache keeps unused are not leaks; used ones count. */
	for (it = S.ctx->mrs.head.next; it != &S.ctx->mrs.head; it = it->next)
		n += ferryi_container_of(it, struct ferry_mr, ctx_link)->cache_ent == NULL;
	n += (uint32_t)ferryi_regcache_busy(S.ctx);
	ferryi_ctx_unlock(S.ctx);
	return n;
}

static void init(void)
{
	size_t len = sizeof(S.uri);

	S.trace = getenv("FERRY_FUZZ_TRACE") != NULL;
	S.skip_goodbye_reenter = fz_skip("goodbye_reenter");
	S.skip_rts_overflow = fz_skip("rts_overflow");
	S.ctx = fz_ctx_create(tweak);
	FZ_CHECK(ferry_listen(S.ctx, "tcp://127.0.0.1:0", NULL, &S.l) == 0);
	FZ_CHECK(ferry_listener_addr(S.l, S.uri, &len) == 0);
	FZ_CHECK(ferry_mr_reg(S.ctx, region, sizeof(region),
			      FERRY_ACCESS_REMOTE_READ | FERRY_ACCESS_REMOTE_WRITE, &S.mr) == 0);
	for (size_t i = 0; i < sizeof(send_buf); i++)
		send_buf[i] = (uint8_t)(i * 7);
	uint8_t blob[FERRY_RKEY_MAX];
	size_t blen = sizeof(blob);
	FZ_CHECK(ferry_mr_pack(S.mr, blob, &blen) == 0);
	FZ_CHECK(ferry_rkey_unpack(S.ctx, blob, blen, &S.rk) == 0);
	S.base_mrs = count_mrs();
	S.now_ns = 1000000000000ull;
	ferryi_ctx_set_clock(S.ctx, fake_clock, NULL);
}

static struct track *track_new(void)
{
	return S.ntrack < MAX_TRACK ? &S.track[S.ntrack++] : NULL;
}

static void track_post(struct track *t, int rc)
{
	if (rc == 0) {
		t->posted = 1;
		return;
	}
	/* Refused posts never complete; these are the refusals a live test can see. */
	if (rc != FERRY_ENOTCONN && rc != FERRY_EMSGSIZE && rc != FERRY_EAGAIN)
		fz_fail(__FILE__, __LINE__, "post refused with %s", ferry_errname(rc));
}

static void poll_cq(void)
{
	struct ferry_completion c[32];
	int n;

	while ((n = ferry_cq_poll(ferry_ctx_cq(S.ctx), c, 32)) > 0) {
		for (int i = 0; i < n; i++) {
			struct track *t = c[i].user_ctx;

			FZ_CHECK(t >= S.track && t < S.track + MAX_TRACK && t->posted);
			if (++t->completed > 1)
				fz_fail(__FILE__, __LINE__, "op %d completed twice (status %s)",
					(int)(t - S.track), ferry_errname(c[i].status));
		}
	}
	FZ_CHECK(n == 0);
}

/* Both ends of a fresh connection, each held once. */
static void pair(struct ferry_ep **a, struct ferry_ep **b)
{
	struct ferry_connect_attr attr = {.flags = FERRY_CONNECT_PRIVATE, .timeout_ms = 5000};

	FZ_CHECK(ferry_connect(S.ctx, S.uri, &attr, a) == 0);
	*b = NULL;
	for (int i = 0; i < 1000 && !*b; i++) {
		fz_progress(S.ctx);
		(void)ferry_listener_accept(S.l, b, 0);
	}
	FZ_CHECK(*b != NULL);
}

static void inject(struct ferry_ep *b, uint8_t op, struct reader *r, const uint64_t *ids)
{
	struct ferryi_msg m;
	uint8_t payload[EAGER_MAX + 512];

	memset(&m, 0, sizeof(m));
	m.type = op & 0x0f;
	m.flags = (uint8_t)rd(r, 1);
	m.tag = rd(r, 8);
	m.aux = rd(r, 8);
	size_t len = (size_t)rd(r, 2);
	if ((m.aux >> 32) == ID_SELECTOR)
		m.aux = ids[m.aux & (MAX_IDS - 1)];
	len = FERRYI_MIN(len, (size_t)(r->end - r->p));
	len = FERRYI_MIN(len, sizeof(payload));
	if (S.skip_rts_overflow && m.type == FERRYI_MSG_RTS && len > FERRYI_RX_INLINE)
		len = FERRYI_RX_INLINE;
	memcpy(payload, r->p, len);
	r->p += len;

	const struct fz_subst subst[] = {{FZ_MARK_KEY_RW, S.mr->key, true}};
	fz_substitute(payload, len, subst, 1);

	/* Exactly len bytes in their own block, so ASan sees reads past the payload. */
	uint8_t *data = malloc(len ? len : 1);
	FZ_CHECK(data != NULL);
	memcpy(data, payload, len);
	ferryi_ctx_lock(S.ctx);
	int rc = ferryi_rx_msg(b, &m, data, len);
	if (rc < 0)
		/* What a provider does with a refused message. */
		ferryi_ep_failed(b, rc, "fuzz: message refused by the core");
	ferryi_ctx_unlock(S.ctx);
	free(data);
}

static void run(const uint8_t *data, size_t size)
{
	struct reader r = {data, data + size};
	struct ferry_ep *a, *b;
	uint64_t ids[MAX_IDS] = {0};
	int nids = 0, nrecv = 0;

	memset(S.track, 0, sizeof(S.track));
	S.ntrack = 0;
	S.timeout_ms = 0;
	FZ_CHECK(fz_ep_count(S.ctx) == 0);
	pair(&a, &b);

	for (int steps = 0; r.p < r.end && steps < 256; steps++) {
		uint8_t op = (uint8_t)rd(&r, 1);
		struct track *t;

		if (S.trace)
			fprintf(stderr, "fuzz_core_msg: record 0x%02x at %zu\n", op,
				(size_t)(r.p - 1 - data));

		if (op < 0x80) {
			if (b)
				inject(b, op, &r, ids);
			continue;
		}
		switch (op) {
		case 0x80:
		case 0x84: {
			uint64_t tag = rd(&r, 8), mask = rd(&r, 8);
			size_t len = (size_t)rd(&r, 2); /* not inside FERRYI_MIN: it reads twice */

			len = FERRYI_MIN(len, (size_t)RECV_MAX);
			struct ferry_ep *ep = op == 0x80 ? b : a;

			if (!ep || nrecv >= 2 * MAX_RECVS || !(t = track_new()))
				break;
			track_post(t, ferry_recv(ep, recv_bufs[nrecv++], len, tag, mask, t, attr()));
			break;
		}
		case 0x81: {
			uint64_t tag = rd(&r, 8);
			size_t len = (size_t)rd(&r, 2);

			len = FERRYI_MIN(len, (size_t)EAGER_MAX);

			if (b && (t = track_new()))
				track_post(t, ferry_send(b, send_buf, len, tag, t, attr()));
			break;
		}
		case 0x82:
		case 0x83: {
			uint64_t tag = rd(&r, 8), v = rd(&r, 2);
			size_t len = op == 0x82 ? (size_t)v * 8 + EAGER_MAX + 1 : (size_t)v * 4;
			struct ferry_ep *ep = op == 0x82 ? b : a;

			if (!ep || !(t = track_new()))
				break;
			int rc = ferry_send(ep, send_buf, len, tag, t, attr());
			track_post(t, rc);
			if (rc == 0)
				ids[nids++ % MAX_IDS] = fz_last_op_id(ep);
			break;
		}
		case 0x85: {
			int n = (int)(rd(&r, 1) % 8) + 1;

			for (int i = 0; i < n; i++)
				fz_progress(S.ctx);
			break;
		}
		case 0x86:
			poll_cq();
			break;
		case 0x87:
			if (b) {
				ferry_ep_close(b);
				b = NULL;
			}
			break;
		case 0x88:
			S.now_ns += rd(&r, 2) * 1000000ull;
			fz_progress(S.ctx);
			break;
		case 0x89:
			S.timeout_ms = (uint32_t)rd(&r, 2);
			break;
		case 0x8a: {
			bool wr = rd(&r, 1) % 2 == 0;
			size_t len = (size_t)rd(&r, 2);
			uint64_t off = rd(&r, 4);

			if (!b || !(t = track_new()))
				break;
			int rc = wr ? ferry_write(b, rma_buf, len, NULL, S.rk, off, t, attr())
				    : ferry_read(b, rma_buf, len, NULL, S.rk, off, t, attr());
			/* Out of range is refused at the post, before any byte moves. */
			if (rc == FERRY_ERANGE) {
				FZ_CHECK(off + len > REGION_LEN);
				rc = FERRY_ENOTCONN; /* "refused": never completes */
			}
			track_post(t, rc);
			break;
		}
		default:
			break;
		}
	}

	if (S.skip_goodbye_reenter)
		for (int i = 0; i < 4; i++)
			fz_progress(S.ctx); /* a reads a reset first: no GOODBYE to fail */
	ferry_ep_close(a);
	if (b)
		ferry_ep_close(b);
	for (int i = 0; i < SETTLE_ROUNDS && fz_ep_count(S.ctx) != 0; i++) {
		fz_progress(S.ctx);
		poll_cq();
	}
	poll_cq();
	if (fz_ep_count(S.ctx) != 0)
		fz_fail(__FILE__, __LINE__, "%u endpoint(s) still alive after closing both ends",
			fz_ep_count(S.ctx));
	FZ_CHECK(fz_ops_in_use(S.ctx) == 0);
	FZ_CHECK(count_mrs() == S.base_mrs);
	for (int i = 0; i < S.ntrack; i++)
		if (S.track[i].posted && S.track[i].completed != 1)
			fz_fail(__FILE__, __LINE__, "op %d completed %d times", i,
				S.track[i].completed);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!S.ctx)
		init();
	run(data, size);
	return 0;
}
