/*
 * mock_provider.c - an in-process provider for unit tests, the fake clock, and the
 * helpers the unit tests share.
 *
 * Design notes
 *   - Two endpoints (usually of two contexts) are joined by a pipe: two FIFOs of whole
 *     messages, one per direction. Pipes, listener entries, knobs and counters are
 *     process-global, under one leaf mutex (g.lock) that is taken after a context
 *     lock and never held across an upcall into the core.
 *   - No thread ever waits for a context lock while holding another: the accepting
 *     side of a connect runs under the listener's context lock, taken by the
 *     connector with trylock, or else by the listener context's own progress. So
 *     threads may connect in both directions at once. Callbacks the core defers on the
 *     listener's context run at that context's next unlock, on its own threads.
 *   - Each side's progress() delivers its inbound messages with ferryi_rx_msg(), in
 *     order, none before its deliver_at (the delay knob; head-of-line like a stream).
 *     A side whose peer detached sees ECONNRESET once its queue is empty (like EOF).
 *   - write/read are requests answered by the target's progress, which checks them
 *     with ferryi_mr_remote_get() on its own context (key: the region's 8-byte key, as
 *     TCP), so refusals are the core's, exactly as over TCP.
 *   - Re-entrancy: an upcall may close the endpoint being served; ep_close then defers
 *     ferryi_ep_gone() until the outermost mock frame on that endpoint returns.
 */
#define _GNU_SOURCE
#include "mock_provider.h"
#include "regcache.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ state */

enum mock_kind {
	MK_MSG = 1,   /* a core message (struct ferryi_msg + payload)     */
	MK_WRITE,     /* op_id, key, offset + payload                      */
	MK_WRITE_ACK, /* op_id, status                                     */
	MK_READ_REQ,  /* op_id, key, offset, length                        */
	MK_READ_RESP, /* op_id, status + payload                           */
};

#define MOCK_OP_WAIT 0x6d6f636bu /* op->prov[0]: awaiting the peer's answer */

struct mock_msg {
	struct mock_msg *next;
	uint8_t kind;
	struct ferryi_msg m;
	uint64_t op_id, key, offset, length;
	int status;
	uint64_t deliver_at;
	uint64_t len;
	max_align_t data[];
};

enum mock_pipe_state {
	PIPE_PENDING,   /* connect() ran; nobody accepted yet                  */
	PIPE_ACCEPTING, /* an acceptor works on it (holds a ref)               */
	PIPE_ACCEPTED,  /* side 1 exists; the connector has yet to hear        */
	PIPE_REFUSED,
};

struct mock_ep;
struct mock_entry;

struct mock_pipe {
	struct ferryi_list_node hs_link; /* g.handshakes until the connector heard */
	bool in_hs;
	enum mock_pipe_state state;
	int refuse_status;
	unsigned refs;                   /* attached sides, in_hs, a busy acceptor */
	unsigned id, pass;
	struct mock_entry *target;       /* NULL once its listener closed          */
	struct ferry_ctx *ctx[2];        /* 0: connector, 1: acceptor              */
	struct mock_ep *side[2];
	bool detached[2];
	struct ferryi_peer_info info[2];
	struct mock_msg *head[2], *tail[2]; /* [i]: inbound to side i             */
	unsigned queued[2];
};

struct mock_entry {
	struct ferryi_list_node link;
	char host[256];
	uint16_t port;
	struct ferryi_listener_part *lp;
	struct ferry_ctx *ctx;
};

struct mock_inst {
	struct ferryi_prov_inst *pi;
	struct ferryi_list eps; /* struct mock_ep, under the context lock */
};

struct mock_ep {
	struct ferry_ep *ep;
	struct mock_inst *mi;
	struct mock_pipe *pipe; /* changed under ctx lock + g.lock          */
	int side;
	struct ferryi_list_node link;
	struct ferryi_list wait; /* write/read ops awaiting the answer (qlink) */
	bool inited, connected, closed, gone_pending;
	bool refuse_pending;
	int refuse_status;
	unsigned depth;
	bool drop;
	uint64_t delay_ns;
};

struct mock_lp {
	struct mock_entry *entry;
};

static struct {
	pthread_mutex_t lock;
	struct ferryi_list entries, handshakes;
	unsigned next_port, next_pipe, pass;
	bool sync_connect, deferred_accept;
	int fail_n, fail_status;
	bool fail_at_once;
	unsigned count[MOCK_CNT_MAX_];
	uint64_t connect_ns[MOCK_CONNECT_LOG];
} g = { .lock = PTHREAD_MUTEX_INITIALIZER };

static pthread_once_t g_once = PTHREAD_ONCE_INIT;

static void g_init(void)
{
	ferryi_list_init(&g.entries);
	ferryi_list_init(&g.handshakes);
	g.next_port = 1;
}

static struct mock_ep *mep(struct ferry_ep *ep)
{
	return ferryi_ep_priv(ep);
}

static unsigned char *msg_data(struct mock_msg *m)
{
	return (unsigned char *)m->data;
}

/* ------------------------------------------------------------------ other contexts */

/* Never blocks, so it may be called with g.lock or another context lock held. */
static bool ctx_trylock(struct ferry_ctx *ctx)
{
	if (pthread_mutex_trylock(&ctx->lock) != 0)
		return false;
	ferryi_ctx_took_lock(ctx);
	return true;
}

/* Leaves deferred callbacks and pending closes to the context's own next unlock. */
static void ctx_unlock_raw(struct ferry_ctx *ctx)
{
	ferryi_ctx_wake(ctx);
	ctx->locked = false;
	pthread_mutex_unlock(&ctx->lock);
}

/* ------------------------------------------------------------------ pipes (g.lock) */

static void q_push(struct mock_pipe *p, int to, struct mock_msg *m)
{
	m->next = NULL;
	if (p->tail[to])
		p->tail[to]->next = m;
	else
		p->head[to] = m;
	p->tail[to] = m;
	p->queued[to]++;
}

static struct mock_msg *q_pop(struct mock_pipe *p, int from)
{
	struct mock_msg *m = p->head[from];
	if (!m)
		return NULL;
	p->head[from] = m->next;
	if (!p->head[from])
		p->tail[from] = NULL;
	p->queued[from]--;
	return m;
}

static void q_free(struct mock_pipe *p, int side)
{
	struct mock_msg *m;
	while ((m = q_pop(p, side)))
		free(m);
}

static void pipe_unref_locked(struct mock_pipe *p)
{
	if (--p->refs)
		return;
	q_free(p, 0);
	q_free(p, 1);
	free(p);
}

static struct mock_entry *entry_find(const char *host, uint16_t port)
{
	struct ferryi_list_node *n;
	for (n = g.entries.head.next; n != &g.entries.head; n = n->next) {
		struct mock_entry *e = ferryi_container_of(n, struct mock_entry, link);
		if (e->port == port && strcmp(e->host, host) == 0)
			return e;
	}
	return NULL;
}

static void count_msg_locked(const struct mock_msg *m)
{
	switch (m->kind) {
	case MK_MSG:
		if (m->m.type < FERRYI_MSG_MAX_)
			g.count[m->m.type]++;
		break;
	case MK_WRITE:
		g.count[MOCK_CNT_WRITE]++;
		break;
	case MK_WRITE_ACK:
		g.count[MOCK_CNT_WRITE_ACK]++;
		break;
	case MK_READ_REQ:
		g.count[MOCK_CNT_READ_REQ]++;
		break;
	case MK_READ_RESP:
		g.count[MOCK_CNT_READ_RESP]++;
		break;
	}
}

/* ------------------------------------------------------------------ endpoints */

static void mock_ep_init(struct mock_ep *me, struct ferry_ep *ep, struct mock_inst *mi)
{
	memset(me, 0, sizeof(*me));
	me->ep = ep;
	me->mi = mi;
	me->inited = true;
	ferryi_list_init(&me->wait);
	ferryi_list_push_back(&mi->eps, &me->link);
}

static void mock_finish(struct mock_ep *me)
{
	if (ferryi_node_linked(&me->link))
		ferryi_list_remove(&me->link);
	ferryi_ep_gone(me->ep); /* the endpoint may be freed from here on */
}

static void mock_enter(struct mock_ep *me)
{
	me->depth++;
}

static void mock_leave(struct mock_ep *me)
{
	if (--me->depth == 0 && me->gone_pending) {
		me->gone_pending = false;
		mock_finish(me);
	}
}

static struct mock_msg *msg_new(uint8_t kind, uint64_t len)
{
	struct mock_msg *m = calloc(1, sizeof(*m) + len);
	if (m) {
		m->kind = kind;
		m->len = len;
	}
	return m;
}

/* Hands msg to the peer (or drops it); the caller holds me's context lock. */
static void mock_enqueue(struct mock_ep *me, struct mock_msg *msg)
{
	msg->deliver_at = ferryi_now_ns(me->ep->ctx) + me->delay_ns;
	pthread_mutex_lock(&g.lock);
	count_msg_locked(msg);
	struct mock_pipe *p = me->pipe;
	int peer = 1 - me->side;
	if (me->drop || !p || !p->side[peer]) {
		g.count[MOCK_CNT_DROPPED]++;
		pthread_mutex_unlock(&g.lock);
		free(msg);
		return;
	}
	q_push(p, peer, msg);
	ferryi_ctx_wake(p->ctx[peer]);
	pthread_mutex_unlock(&g.lock);
}

static void mock_reply(struct mock_ep *me, uint8_t kind, uint64_t op_id, int status,
		       const void *data, uint64_t len)
{
	struct mock_msg *m = msg_new(kind, len);
	if (!m) {
		ferryi_ep_failed(me->ep, FERRY_ENOMEM, "mock: out of memory for an answer");
		return;
	}
	m->op_id = op_id;
	m->status = status;
	if (len)
		memcpy(msg_data(m), data, len);
	mock_enqueue(me, m);
}

/* Detaches me from its pipe: the peer sees the connection end (g.lock not held). */
static void mock_detach(struct mock_ep *me)
{
	pthread_mutex_lock(&g.lock);
	struct mock_pipe *p = me->pipe;
	if (p) {
		int s = me->side, o = 1 - s;
		p->side[s] = NULL;
		p->detached[s] = true;
		q_free(p, s);
		if (s == 0 && p->in_hs) {
			ferryi_list_remove(&p->hs_link);
			p->in_hs = false;
			pipe_unref_locked(p);
		}
		if (p->side[o])
			ferryi_ctx_wake(p->ctx[o]);
		me->pipe = NULL;
		pipe_unref_locked(p);
	}
	pthread_mutex_unlock(&g.lock);
}

/* ------------------------------------------------------------------ handshake */

/* Creates the accepting endpoint on t (whose lock the caller holds). */
static void mock_accept(struct mock_pipe *p, struct ferry_ctx *t)
{
	struct ferry_ep *ep = NULL;
	struct mock_entry *e;
	char uri[FERRYI_URI_MAX];
	bool detached;
	int rc = 0;

	/* The entry cannot go away meanwhile: listen_close needs t's lock. */
	pthread_mutex_lock(&g.lock);
	e = p->target;
	detached = p->detached[0];
	snprintf(uri, sizeof(uri), "%s://conn%u:%u", e ? e->lp->pi->prov->name : "mock", p->id,
		 e ? e->port : 0u);
	pthread_mutex_unlock(&g.lock);

	if (!e)
		rc = FERRY_ECONNREFUSED;
	else if (detached)
		rc = FERRY_ECONNABORTED;
	else if ((rc = ferryi_ctx_admission(t)) < 0)
		;
	else if (!(ep = ferryi_ep_accepted(e->lp, uri)))
		rc = FERRY_ENOBUFS; /* a limit refused it, as TCP's ERROR frame says */
	if (rc < 0) {
		pthread_mutex_lock(&g.lock);
		p->state = PIPE_REFUSED;
		p->refuse_status = rc;
		if (!p->detached[0])
			ferryi_ctx_wake(p->ctx[0]);
		pipe_unref_locked(p); /* the acceptor's */
		pthread_mutex_unlock(&g.lock);
		return;
	}

	struct mock_ep *mb = mep(ep);
	struct ferryi_peer_info mine, theirs;
	mock_ep_init(mb, ep, ferryi_inst_priv(e->lp->pi));
	ferryi_local_info(t, &mine);
	pthread_mutex_lock(&g.lock);
	mb->pipe = p;
	mb->side = 1;
	p->side[1] = mb;
	p->ctx[1] = t;
	p->info[1] = mine;
	theirs = p->info[0];
	p->state = PIPE_ACCEPTED;
	g.count[MOCK_CNT_ACCEPTS]++;
	if (!p->detached[0])
		ferryi_ctx_wake(p->ctx[0]);
	/* the acceptor's reference becomes side 1's */
	pthread_mutex_unlock(&g.lock);

	mb->connected = true;
	mock_enter(mb);
	ferryi_ep_connected(ep, &theirs);
	mock_leave(mb);
}

/* The connector learns the outcome (its context lock held). */
static void mock_complete(struct mock_pipe *p)
{
	pthread_mutex_lock(&g.lock);
	enum mock_pipe_state st = p->state;
	int status = p->refuse_status;
	struct mock_ep *me = p->side[0];
	struct ferryi_peer_info info = p->info[1];
	if (p->in_hs) {
		ferryi_list_remove(&p->hs_link);
		p->in_hs = false;
		pipe_unref_locked(p); /* side 0 still holds it when me != NULL */
	}
	pthread_mutex_unlock(&g.lock);
	if (!me || me->closed)
		return;
	mock_enter(me);
	if (st == PIPE_ACCEPTED) {
		me->connected = true;
		ferryi_ep_connected(me->ep, &info);
	} else {
		ferryi_ep_failed(me->ep, status, "mock: connection refused");
	}
	mock_leave(me);
}

enum { HS_NONE, HS_ACCEPT, HS_COMPLETE };

/* Handshake work this context can do now: accept for its listeners, finish connects. */
static int mock_handshakes(struct mock_inst *mi)
{
	struct ferry_ctx *ctx = mi->pi->ctx;
	int done = 0;

	pthread_mutex_lock(&g.lock);
	unsigned pass = ++g.pass;
	pthread_mutex_unlock(&g.lock);
	for (;;) {
		struct mock_pipe *todo = NULL;
		struct ferry_ctx *other = NULL;
		int action = HS_NONE;
		struct ferryi_list_node *n;

		pthread_mutex_lock(&g.lock);
		for (n = g.handshakes.head.next; n != &g.handshakes.head && !todo; n = n->next) {
			struct mock_pipe *p = ferryi_container_of(n, struct mock_pipe, hs_link);
			if (p->pass == pass)
				continue;
			if (p->state == PIPE_PENDING && p->target) {
				struct ferry_ctx *t = p->target->ctx;
				if (t == ctx) {
					action = HS_ACCEPT;
				} else if (p->ctx[0] == ctx && !g.deferred_accept) {
					if (ctx_trylock(t)) {
						action = HS_ACCEPT;
						other = t;
					} else {
						p->pass = pass; /* busy: its own progress will do it */
					}
				}
			} else if ((p->state == PIPE_ACCEPTED || p->state == PIPE_REFUSED) &&
				   p->ctx[0] == ctx) {
				action = HS_COMPLETE;
			}
			if (action != HS_NONE) {
				todo = p;
				if (action == HS_ACCEPT) {
					p->state = PIPE_ACCEPTING;
					p->refs++;
				}
			}
		}
		pthread_mutex_unlock(&g.lock);
		if (!todo)
			break;
		if (action == HS_ACCEPT) {
			mock_accept(todo, other ? other : ctx);
			if (other)
				ctx_unlock_raw(other);
		} else {
			mock_complete(todo);
		}
		done++;
	}
	return done;
}

/* ------------------------------------------------------------------ receive */

static void mock_handle(struct mock_ep *me, struct mock_msg *msg)
{
	struct ferry_ep *ep = me->ep;
	struct ferryi_mr_use use;
	void *ptr = NULL;
	int rc;

	ferryi_ep_rx_activity(ep);
	switch (msg->kind) {
	case MK_MSG:
		rc = ferryi_rx_msg(ep, &msg->m, msg_data(msg), msg->len);
		if (rc < 0)
			ferryi_ep_failed(ep, rc, "mock: message refused by the core");
		break;
	case MK_WRITE:
		rc = ferryi_mr_remote_get(ep, msg->key, msg->offset, msg->len,
					  FERRY_ACCESS_REMOTE_WRITE, &use, &ptr);
		if (rc == 0) {
			if (msg->len)
				memcpy(ptr, msg_data(msg), msg->len);
			ferryi_mr_remote_put(&use);
		}
		mock_reply(me, MK_WRITE_ACK, msg->op_id, rc, NULL, 0);
		break;
	case MK_READ_REQ:
		rc = ferryi_mr_remote_get(ep, msg->key, msg->offset, msg->length,
					  FERRY_ACCESS_REMOTE_READ, &use, &ptr);
		if (rc == 0) {
			mock_reply(me, MK_READ_RESP, msg->op_id, 0, ptr, msg->length);
			ferryi_mr_remote_put(&use);
		} else {
			mock_reply(me, MK_READ_RESP, msg->op_id, rc, NULL, 0);
		}
		break;
	case MK_WRITE_ACK:
	case MK_READ_RESP: {
		uint64_t want = msg->kind == MK_WRITE_ACK ? MK_WRITE : MK_READ_REQ;
		struct ferryi_op *op = ferryi_op_find(ep, msg->op_id);
		if (!op || !op->provider_owned || op->prov[0] != MOCK_OP_WAIT ||
		    op->prov[1] != want) {
			ferryi_ep_failed(ep, FERRY_EPROTO, "mock: answer for no waiting operation");
			break;
		}
		if (msg->kind == MK_READ_RESP && msg->status == 0) {
			if (msg->len != op->len) {
				ferryi_ep_failed(ep, FERRY_EPROTO, "mock: read answer of a wrong size");
				break;
			}
			if (msg->len)
				memcpy(op->buf, msg_data(msg), msg->len);
		}
		ferryi_list_remove(&op->qlink);
		op->prov[0] = 0;
		ferryi_op_done(op, msg->status);
		break;
	}
	}
}

/* Delivers what is due to me (entered by the caller). */
static int mock_ep_deliver(struct mock_ep *me, uint64_t now)
{
	int handled = 0;

	for (int budget = 1024; budget > 0; budget--) {
		struct mock_msg *msg = NULL;
		bool peer_gone = false;

		if (me->closed || me->ep->state != FERRYI_EP_CONNECTED)
			break;
		pthread_mutex_lock(&g.lock);
		struct mock_pipe *p = me->pipe;
		if (p) {
			int s = me->side;
			if (p->head[s] && p->head[s]->deliver_at <= now)
				msg = q_pop(p, s);
			else if (!p->head[s] && p->detached[1 - s])
				peer_gone = true;
		}
		pthread_mutex_unlock(&g.lock);
		if (peer_gone) {
			ferryi_ep_failed(me->ep, FERRY_ECONNRESET, "mock: the peer closed the connection");
			handled++;
			break;
		}
		if (!msg)
			break;
		mock_handle(me, msg);
		free(msg);
		handled++;
	}
	return handled;
}

/* ------------------------------------------------------------------ ops */

static int mock_scheme_match(const char *scheme)
{
	return scheme && strcmp(scheme, "mock") == 0;
}

static void mock_info(struct ferry_provider_info *info)
{
	info->status = 0;
	snprintf(info->detail, sizeof(info->detail), "in-process mock for unit tests");
}

static int mock_inst_init(struct ferryi_prov_inst *pi)
{
	struct mock_inst *mi = ferryi_inst_priv(pi);
	pthread_once(&g_once, g_init);
	mi->pi = pi;
	ferryi_list_init(&mi->eps);
	return 0;
}

static void mock_inst_fini(struct ferryi_prov_inst *pi)
{
	(void)pi; /* every endpoint and listener is gone already */
}

static int mock_progress(struct ferryi_prov_inst *pi)
{
	struct mock_inst *mi = ferryi_inst_priv(pi);
	int n = mock_handshakes(mi);
	uint64_t now = ferryi_now_ns(pi->ctx);
	struct ferryi_list_node *node = mi->eps.head.next;

	while (node != &mi->eps.head) {
		struct mock_ep *me = ferryi_container_of(node, struct mock_ep, link);
		mock_enter(me);
		if (me->refuse_pending && !me->closed) {
			me->refuse_pending = false;
			ferryi_ep_failed(me->ep, me->refuse_status, "mock: connection refused (injected)");
			n++;
		} else if (me->connected && !me->closed) {
			n += mock_ep_deliver(me, now);
		}
		/* me stays listed while entered; the next node is read after serving it */
		node = node->next;
		mock_leave(me);
	}
	return n;
}

static int mock_listen(struct ferryi_listener_part *lp, const struct ferryi_addr *addr,
		       char *uri, size_t uri_len)
{
	struct mock_lp *ml = ferryi_lp_priv(lp);
	struct mock_entry *e = calloc(1, sizeof(*e));

	ml->entry = NULL;
	if (!e)
		return FERRY_ENOMEM;
	snprintf(e->host, sizeof(e->host), "%s", addr->host);
	e->lp = lp;
	e->ctx = lp->pi->ctx;
	pthread_mutex_lock(&g.lock);
	e->port = addr->port;
	if (e->port == 0) {
		do
			e->port = (uint16_t)(1000 + g.next_port++ % 60000);
		while (entry_find(e->host, e->port));
	} else if (entry_find(e->host, e->port)) {
		pthread_mutex_unlock(&g.lock);
		free(e);
		return FERRY_EADDRINUSE;
	}
	ferryi_list_push_back(&g.entries, &e->link);
	ml->entry = e;
	pthread_mutex_unlock(&g.lock);
	/* The name of the provider listening: another test provider may reuse these ops. */
	snprintf(uri, uri_len, "%s://%s:%u", lp->pi->prov->name, e->host, e->port);
	return 0;
}

static void mock_listen_close(struct ferryi_listener_part *lp)
{
	struct mock_lp *ml = ferryi_lp_priv(lp);
	struct mock_entry *e = ml->entry;
	struct ferryi_list_node *n;

	if (!e)
		return;
	pthread_mutex_lock(&g.lock);
	ferryi_list_remove(&e->link);
	for (n = g.handshakes.head.next; n != &g.handshakes.head; n = n->next) {
		struct mock_pipe *p = ferryi_container_of(n, struct mock_pipe, hs_link);
		if (p->target != e)
			continue;
		p->target = NULL;
		if (p->state == PIPE_PENDING) {
			p->state = PIPE_REFUSED;
			p->refuse_status = FERRY_ECONNREFUSED;
			ferryi_ctx_wake(p->ctx[0]);
		}
	}
	pthread_mutex_unlock(&g.lock);
	free(e);
	ml->entry = NULL;
}

static int mock_connect(struct ferry_ep *ep, const struct ferryi_addr *addr)
{
	struct mock_inst *mi = ferryi_inst_priv(ep->pi);
	struct mock_ep *me = mep(ep);
	struct ferry_ctx *ctx = ep->ctx, *t;
	struct ferryi_peer_info info;
	bool have = false, sync;

	ferryi_local_info(ctx, &info);
	struct mock_pipe *p = calloc(1, sizeof(*p));
	if (!p)
		return FERRY_ENOMEM;
	pthread_mutex_lock(&g.lock);
	unsigned i = g.count[MOCK_CNT_CONNECTS]++;
	if (i < MOCK_CONNECT_LOG)
		g.connect_ns[i] = ferryi_now_ns(ctx);
	if (g.fail_n > 0) {
		int rc = g.fail_status;
		bool at_once = g.fail_at_once;
		g.fail_n--;
		pthread_mutex_unlock(&g.lock);
		free(p);
		if (at_once)
			return rc;
		mock_ep_init(me, ep, mi);
		me->refuse_pending = true;
		me->refuse_status = rc;
		ferryi_ctx_wake(ctx);
		return 0;
	}
	struct mock_entry *e = entry_find(addr->host, addr->port);
	if (!e) {
		pthread_mutex_unlock(&g.lock);
		free(p);
		return FERRY_ECONNREFUSED;
	}
	mock_ep_init(me, ep, mi);
	p->id = ++g.next_pipe;
	p->state = PIPE_PENDING;
	p->target = e;
	p->ctx[0] = ctx;
	p->side[0] = me;
	p->info[0] = info;
	p->refs = 2; /* side 0, in_hs */
	p->in_hs = true;
	ferryi_list_push_back(&g.handshakes, &p->hs_link);
	me->pipe = p;
	me->side = 0;
	t = e->ctx;
	if (t != ctx && !g.deferred_accept && ctx_trylock(t))
		have = true;
	else
		ferryi_ctx_wake(t);
	if (have) {
		p->state = PIPE_ACCEPTING;
		p->refs++;
	}
	sync = g.sync_connect;
	pthread_mutex_unlock(&g.lock);
	if (have) {
		mock_accept(p, t);
		ctx_unlock_raw(t);
		if (sync)
			mock_complete(p);
	}
	return 0;
}

static void mock_ep_close(struct ferry_ep *ep, int reason, int graceful)
{
	struct mock_ep *me = mep(ep);
	struct ferryi_list_node *n;

	(void)graceful; /* the core's GOODBYE is queued already; nothing else lingers */
	if (!me->inited) {
		ferryi_ep_gone(ep);
		return;
	}
	if (me->closed)
		return;
	me->closed = true;
	if (reason >= 0)
		reason = FERRY_ECANCELED;
	mock_enter(me);
	while ((n = ferryi_list_pop_front(&me->wait))) {
		struct ferryi_op *op = ferryi_container_of(n, struct ferryi_op, qlink);
		op->prov[0] = 0;
		ferryi_op_done(op, reason);
	}
	mock_detach(me);
	if (--me->depth == 0)
		mock_finish(me);
	else
		me->gone_pending = true;
}

static int mock_send(struct ferry_ep *ep, struct ferryi_op *op)
{
	struct mock_ep *me = mep(ep);

	if (!me->connected || me->closed)
		return FERRY_ENOTCONN;
	if (op->len > MOCK_EAGER_MAX)
		return FERRY_EMSGSIZE; /* the core must never ask for this */
	struct mock_msg *m = msg_new(MK_MSG, op->len);
	if (!m)
		return FERRY_ENOMEM;
	m->m = op->msg;
	if (op->len)
		memcpy(msg_data(m), op->buf, op->len);
	mock_enqueue(me, m);
	mock_enter(me);
	ferryi_op_done(op, 0); /* copied: the buffer may be reused */
	mock_leave(me);
	return 0;
}

static int mock_rma(struct ferry_ep *ep, struct ferryi_op *op, uint8_t kind)
{
	struct mock_ep *me = mep(ep);
	const void *key = NULL;
	size_t klen = 0;

	if (!me->connected || me->closed)
		return FERRY_ENOTCONN;
	if (op->rkey)
		key = ferryi_rkey_key(op->rkey, (enum ferryi_provider_id)MOCK_PROV_ID, &klen);
	if (!key || klen != 8) {
		mock_enter(me);
		ferryi_op_done(op, FERRY_EBADKEY);
		mock_leave(me);
		return 0;
	}
	struct mock_msg *m = msg_new(kind, kind == MK_WRITE ? op->len : 0);
	if (!m)
		return FERRY_ENOMEM;
	m->op_id = ferryi_op_id(op);
	m->key = ferryi_get_le64(key);
	m->offset = op->remote_offset;
	m->length = op->len;
	if (kind == MK_WRITE && op->len)
		memcpy(msg_data(m), op->buf, op->len);
	op->prov[0] = MOCK_OP_WAIT;
	op->prov[1] = kind;
	ferryi_list_push_back(&me->wait, &op->qlink);
	mock_enqueue(me, m);
	return 0;
}

static int mock_write(struct ferry_ep *ep, struct ferryi_op *op)
{
	return mock_rma(ep, op, MK_WRITE);
}

static int mock_read(struct ferry_ep *ep, struct ferryi_op *op)
{
	return mock_rma(ep, op, MK_READ_REQ);
}

static int mock_mr_reg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	(void)pi;
	(void)mr;
	return 0;
}

static void mock_mr_dereg(struct ferryi_prov_inst *pi, struct ferry_mr *mr)
{
	(void)pi;
	(void)mr;
}

static int mock_mr_pack(struct ferryi_prov_inst *pi, const struct ferry_mr *mr, void *buf,
			size_t len)
{
	(void)pi;
	if (len < 8)
		return FERRY_ENOBUFS;
	ferryi_put_le64(buf, mr->key);
	return 8;
}

static int mock_rkey_check(const void *key, size_t len)
{
	(void)key;
	return len == 8 ? 0 : FERRY_EPROTO;
}

const struct ferryi_provider mock_provider = {
	.name = "mock",
	.id = (enum ferryi_provider_id)MOCK_PROV_ID,
	.caps = 0,
	.rank = -1, /* below tcp: auto:// never picks it first */
	.eager_max = MOCK_EAGER_MAX,
	.inst_size = sizeof(struct mock_inst),
	.ep_size = sizeof(struct mock_ep),
	.listener_size = sizeof(struct mock_lp),
	.mr_size = 0,
	.scheme_match = mock_scheme_match,
	.info = mock_info,
	.inst_init = mock_inst_init,
	.inst_fini = mock_inst_fini,
	.progress = mock_progress,
	.listen = mock_listen,
	.listen_close = mock_listen_close,
	.connect = mock_connect,
	.ep_close = mock_ep_close,
	.send = mock_send,
	.write = mock_write,
	.read = mock_read,
	.mr_reg = mock_mr_reg,
	.mr_dereg = mock_mr_dereg,
	.mr_pack = mock_mr_pack,
	.rkey_check = mock_rkey_check,
};

/* ------------------------------------------------------------------ knobs */

int mock_register(void)
{
	pthread_once(&g_once, g_init);
	return ferryi_provider_register_test(&mock_provider);
}

void mock_reset(void)
{
	pthread_once(&g_once, g_init);
	pthread_mutex_lock(&g.lock);
	g.sync_connect = false;
	g.deferred_accept = false;
	g.fail_n = 0;
	g.fail_status = 0;
	g.fail_at_once = false;
	memset(g.count, 0, sizeof(g.count));
	memset(g.connect_ns, 0, sizeof(g.connect_ns));
	pthread_mutex_unlock(&g.lock);
}

void mock_set_sync_connect(bool sync)
{
	pthread_mutex_lock(&g.lock);
	g.sync_connect = sync;
	pthread_mutex_unlock(&g.lock);
}

void mock_set_deferred_accept(bool deferred)
{
	pthread_mutex_lock(&g.lock);
	g.deferred_accept = deferred;
	pthread_mutex_unlock(&g.lock);
}

void mock_fail_connects(int n, int status, bool at_once)
{
	pthread_mutex_lock(&g.lock);
	g.fail_n = n;
	g.fail_status = status;
	g.fail_at_once = at_once;
	pthread_mutex_unlock(&g.lock);
}

static struct mock_ep *mep_checked(struct ferry_ep *ep)
{
	assert_non_null(ep);
	assert_ptr_equal(ep->pi->prov, &mock_provider);
	return mep(ep);
}

void mock_ep_set_drop(struct ferry_ep *ep, bool drop)
{
	struct mock_ep *me = mep_checked(ep);
	ferryi_ctx_lock(ep->ctx);
	me->drop = drop;
	ferryi_ctx_unlock(ep->ctx);
}

void mock_ep_set_delay(struct ferry_ep *ep, uint64_t delay_ns)
{
	struct mock_ep *me = mep_checked(ep);
	ferryi_ctx_lock(ep->ctx);
	me->delay_ns = delay_ns;
	ferryi_ctx_unlock(ep->ctx);
}

void mock_ep_fail(struct ferry_ep *ep, int status)
{
	mep_checked(ep);
	ferryi_ctx_lock(ep->ctx);
	ferryi_ep_failed(ep, status, "mock: injected failure");
	ferryi_ctx_unlock(ep->ctx);
}

int mock_ep_inject(struct ferry_ep *ep, const struct ferryi_msg *m, const void *data,
		   size_t len)
{
	struct mock_ep *me = mep_checked(ep);
	int rc = 0;
	ferryi_ctx_lock(ep->ctx);
	if (!me->connected || me->closed) {
		rc = FERRY_ENOTCONN;
	} else {
		struct mock_msg *msg = msg_new(MK_MSG, len);
		assert_non_null(msg);
		msg->m = *m;
		if (len)
			memcpy(msg_data(msg), data, len);
		mock_enqueue(me, msg);
	}
	ferryi_ctx_unlock(ep->ctx);
	return rc;
}

unsigned mock_ep_queued(struct ferry_ep *ep)
{
	struct mock_ep *me = mep_checked(ep);
	unsigned n = 0;
	ferryi_ctx_lock(ep->ctx);
	pthread_mutex_lock(&g.lock);
	if (me->pipe)
		n = me->pipe->queued[me->side];
	pthread_mutex_unlock(&g.lock);
	ferryi_ctx_unlock(ep->ctx);
	return n;
}

unsigned mock_count(enum mock_counter c)
{
	pthread_mutex_lock(&g.lock);
	unsigned v = (unsigned)c < MOCK_CNT_MAX_ ? g.count[c] : 0;
	pthread_mutex_unlock(&g.lock);
	return v;
}

uint64_t mock_connect_time(unsigned i)
{
	pthread_mutex_lock(&g.lock);
	uint64_t v = i < MOCK_CONNECT_LOG ? g.connect_ns[i] : 0;
	pthread_mutex_unlock(&g.lock);
	return v;
}

/* ------------------------------------------------------------------ fake clock */

static _Atomic uint64_t mt_clock = UINT64_C(1000000000000);

uint64_t mt_clock_fn(void *arg)
{
	(void)arg;
	return atomic_load(&mt_clock);
}

uint64_t mt_clock_now(void)
{
	return atomic_load(&mt_clock);
}

void mt_clock_advance_ns(uint64_t ns)
{
	atomic_fetch_add(&mt_clock, ns);
}

void mt_clock_advance_ms(uint64_t ms)
{
	mt_clock_advance_ns(ms * 1000000ull);
}

static struct {
	pthread_t th;
	atomic_bool run;
	struct ferry_ctx *ctx;
	uint64_t step;
	bool on;
} warp;

static bool warp_woken(void)
{
	struct pollfd pfd = { .fd = warp.ctx->wake.fd, .events = POLLIN };
	return poll(&pfd, 1, 0) == 1;
}

static void *warp_main(void *arg)
{
	(void)arg;
	while (atomic_load(&warp.run)) {
		if (atomic_load(&warp.ctx->sleepers) == 0) {
			usleep(20);
			continue;
		}
		mt_clock_advance_ns(warp.step);
		ferryi_ctx_wake(warp.ctx);
		/* One step per sleep: wait until a progress pass has drained the wake-up. */
		for (int i = 0; i < 100000 && atomic_load(&warp.run) && warp_woken(); i++)
			usleep(2);
	}
	return NULL;
}

void mt_warp_start(struct ferry_ctx *ctx, uint64_t step_ns)
{
	assert_false(warp.on);
	warp.ctx = ctx;
	warp.step = step_ns;
	atomic_store(&warp.run, true);
	assert_int_equal(pthread_create(&warp.th, NULL, warp_main, NULL), 0);
	warp.on = true;
}

void mt_warp_stop(void)
{
	if (!warp.on)
		return;
	atomic_store(&warp.run, false);
	pthread_join(warp.th, NULL);
	warp.on = false;
}

/* ------------------------------------------------------------------ helpers */

void mt_config(struct ferry_config *cfg)
{
	ferry_config_init(cfg);
	cfg->providers = "mock";
	cfg->log_level = FERRY_LOG_ERROR;
	cfg->idle_timeout_s = 0;
	cfg->probe_interval_ms = 0;
	cfg->reconnect_attempts = 1;
	cfg->connect_timeout_ms = 1000;
	cfg->handshake_timeout_ms = 1000;
}

struct ferry_ctx *mt_ctx(const struct ferry_config *cfg, bool fake_clock)
{
	struct ferry_config def;
	struct ferry_ctx *ctx = NULL;

	if (!cfg) {
		mt_config(&def);
		cfg = &def;
	}
	assert_int_equal(ferry_ctx_create(cfg, &ctx), 0);
	assert_non_null(ctx);
	ferryi_poller_stop(ctx);
	if (fake_clock)
		ferryi_ctx_set_clock(ctx, mt_clock_fn, NULL);
	return ctx;
}

void mt_tick(struct ferry_ctx *ctx)
{
	/* The tick skips its own progress pass when the application just made one. */
	ferryi_ctx_lock(ctx);
	(void)ferryi_progress_locked(ctx);
	(void)ferryi_poller_tick(ctx);
	ferryi_ctx_unlock(ctx);
}

void mt_progress(struct ferry_ctx *const *ctxs, int n, int rounds)
{
	for (int r = 0; r < rounds; r++)
		for (int i = 0; i < n; i++)
			if (ctxs[i])
				assert_true(ferry_progress(ctxs[i]) >= 0);
}

void mt_advance(struct ferry_ctx *const *ctxs, int n, uint64_t total_ms, uint64_t step_ms)
{
	for (uint64_t t = 0; t < total_ms; t += step_ms) {
		mt_clock_advance_ms(step_ms < total_ms - t ? step_ms : total_ms - t);
		for (int i = 0; i < n; i++)
			if (ctxs[i])
				mt_tick(ctxs[i]);
	}
}

int mt_poll1(struct ferry_cq *cq, struct ferry_completion *out, struct ferry_ctx *const *ctxs,
	     int n)
{
	for (int r = 0; r < 1000; r++) {
		int rc = ferry_cq_poll(cq, out, 1);
		assert_true(rc >= 0);
		if (rc == 1)
			return 1;
		mt_progress(ctxs, n, 1);
	}
	return 0;
}

int mt_drain(struct ferry_cq *cq, struct ferry_completion *out, int max,
	     struct ferry_ctx *const *ctxs, int n)
{
	int got = 0;
	mt_progress(ctxs, n, 4);
	while (got < max) {
		int rc = ferry_cq_poll(cq, out + got, max - got);
		assert_true(rc >= 0);
		if (rc == 0)
			break;
		got += rc;
	}
	return got;
}

void mt_close_pool(struct ferry_ctx *ctx)
{
	struct ferryi_list_node *n;

	ferryi_ctx_lock(ctx);
	while ((n = ferryi_list_first(&ctx->pool))) {
		struct ferry_ep *ep = ferryi_container_of(n, struct ferry_ep, pool_link);
		ep->user_closed = true;
		ferryi_ep_begin_close(ep, FERRY_ENOTCONN, true, FERRY_EVENT_EP_CLOSED,
				      "test teardown");
	}
	ferryi_ctx_unlock(ctx);
}

struct ferry_stats mt_stats(struct ferry_ctx *ctx)
{
	struct ferry_stats st;
	assert_int_equal(ferry_stats_get(ctx, NULL, &st), 0);
	return st;
}

void mt_assert_clean(struct ferry_ctx *ctx)
{
	struct ferry_completion c[64];
	int n;

	while ((n = ferry_cq_poll(ferry_ctx_cq(ctx), c, 64)) > 0)
		;
	assert_int_equal(n, 0);
	struct ferry_stats st = mt_stats(ctx);
	assert_int_equal(st.eps_open, 0);
	assert_int_equal(st.eps_pooled, 0);
	assert_int_equal(st.eps_pinned, 0);
	assert_int_equal(st.mrs_registered, 0);
	assert_int_equal(st.ops_posted, st.ops_completed);
	/* What the gauges cannot see: internal ops, regions and rkeys. */
	ferryi_ctx_lock(ctx);
	bool ops_left = false;
	for (uint32_t i = 0; i < ctx->nslots; i++)
		ops_left |= ctx->slots[i] != NULL;
	/* Cached internal regions outlive their ops, unused; any other one is a leak. */
	bool mrs_left = ferryi_regcache_busy(ctx) != 0;
	struct ferryi_list_node *mn;
	for (mn = ctx->mrs.head.next; mn != &ctx->mrs.head; mn = mn->next)
		mrs_left |= ferryi_container_of(mn, struct ferry_mr, ctx_link)->cache_ent == NULL;
	bool rkeys_left = !ferryi_list_empty(&ctx->rkeys);
	uint32_t eps = ctx->ep_count;
	ferryi_ctx_unlock(ctx);
	assert_false(ops_left);
	assert_false(mrs_left);
	assert_false(rkeys_left);
	assert_int_equal(eps, 0);
}

static atomic_uint pair_seq;

void mt_pair_open(struct mt_pair *p, const struct ferry_config *ca,
		  const struct ferry_config *cb, bool fake_clock)
{
	char uri[64];
	size_t len = sizeof(p->uri);

	memset(p, 0, sizeof(*p));
	p->a = mt_ctx(ca, fake_clock);
	p->b = mt_ctx(cb, fake_clock);
	snprintf(uri, sizeof(uri), "mock://srv%u:0", atomic_fetch_add(&pair_seq, 1) + 1);
	assert_int_equal(ferry_listen(p->b, uri, NULL, &p->l), 0);
	assert_int_equal(ferry_listener_addr(p->l, p->uri, &len), 0);
}

void mt_pair_connect(struct mt_pair *p, unsigned flags, struct ferry_ep **ea,
		     struct ferry_ep **eb)
{
	struct ferry_connect_attr attr = { .flags = flags };
	struct ferry_ctx *both[2] = { p->a, p->b };
	int rc = FERRY_ETIMEDOUT;

	assert_int_equal(ferry_connect(p->a, p->uri, &attr, ea), 0);
	for (int i = 0; i < 100 && rc == FERRY_ETIMEDOUT; i++) {
		rc = ferry_listener_accept(p->l, eb, 0);
		if (rc == FERRY_ETIMEDOUT)
			mt_progress(both, 2, 1);
	}
	assert_int_equal(rc, 0);
}

void mt_pair_close(struct mt_pair *p)
{
	struct ferry_ctx *both[2] = { p->a, p->b };

	if (p->ea)
		ferry_ep_release(p->ea);
	if (p->eb)
		ferry_ep_release(p->eb);
	p->ea = p->eb = NULL;
	mt_close_pool(p->a);
	mt_close_pool(p->b);
	for (int i = 0; i < 200; i++) {
		mt_progress(both, 2, 1);
		if (mt_stats(p->a).eps_open == 0 && mt_stats(p->b).eps_open == 0)
			break;
	}
	mt_assert_clean(p->a);
	mt_assert_clean(p->b);
	ferry_ctx_destroy(p->a);
	ferry_ctx_destroy(p->b);
	memset(p, 0, sizeof(*p));
}

void mt_pair_destroy(struct mt_pair *p)
{
	ferry_ctx_destroy(p->a);
	ferry_ctx_destroy(p->b);
	memset(p, 0, sizeof(*p));
}

uint64_t mt_rand(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * UINT64_C(0x2545f4914f6cdd1d);
}

void mt_fill_pattern(void *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed * UINT64_C(0x9e3779b97f4a7c15) | 1;
	unsigned char *b = buf;
	for (size_t i = 0; i < len; i++) {
		if (i % 8 == 0)
			(void)mt_rand(&s);
		b[i] = (unsigned char)(s >> (8 * (i % 8)));
	}
}

bool mt_check_pattern(const void *buf, size_t len, uint64_t seed)
{
	uint64_t s = seed * UINT64_C(0x9e3779b97f4a7c15) | 1;
	const unsigned char *b = buf;
	for (size_t i = 0; i < len; i++) {
		if (i % 8 == 0)
			(void)mt_rand(&s);
		if (b[i] != (unsigned char)(s >> (8 * (i % 8))))
			return false;
	}
	return true;
}
